//! Issue 4 against a real FHIR server: the service, sent no prefetch, fetches the record from the
//! EHR's FHIR server (`fhirServer` + `fhirAuthorization`) and decides exactly as it does from prefetch.
//!
//! The server is `tests/fhir-server/server.js` (Medplum's FHIR router over an in-memory store, behind
//! bearer-token access control, paging two entries at a time), driven by `support/fhir_server.rs`.
//! The first tests check the server itself, so that a failure of the acceptance test can be blamed on
//! the service and not on the test bed. The acceptance test itself, the whole case table sent
//! without prefetch against this server, is `tests/it/cases.rs` (fetch mode), beside the same table
//! sent with prefetch; here are the server's own checks, the discovery query against it, and
//! the failure modes (nothing listening, a server that never answers).

use crate::common;
use crate::common::crd;
use crate::support::fhir_server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use fhir_server::{FhirServer, next_link};
use reqwest::StatusCode;
use serde_json::{Value, json};

const SERVICE: &str = "/cds-services/iort-coverage";
const TOKEN: &str = "test-token-7c1f0e9a";

// -------------------------------------------------------------------------------------------------
// Data

fn patient(id: &str) -> Value {
    json!({"resourceType": "Patient", "id": id, "name": [{"family": "Test", "given": ["Pat"]}], "gender": "female"})
}

fn condition(id: &str, patient: &str, icd10: &str) -> Value {
    json!({
        "resourceType": "Condition", "id": id,
        "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": icd10}]},
        "subject": {"reference": format!("Patient/{patient}")}
    })
}

fn observation(id: &str, patient: &str, system: &str, code: &str) -> Value {
    json!({
        "resourceType": "Observation", "id": id, "status": "final",
        "code": {"coding": [{"system": system, "code": code}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "effectiveDateTime": "2025-03-14"
    })
}

fn coverage(id: &str, patient: &str, status: &str) -> Value {
    json!({
        "resourceType": "Coverage", "id": id, "status": status,
        "beneficiary": {"reference": format!("Patient/{patient}")},
        "payor": [{"display": "Blue Cross Blue Shield of Arizona"}]
    })
}

fn ids(resources: &[Value]) -> Vec<String> {
    let mut v: Vec<String> = resources
        .iter()
        .map(|r| {
            format!(
                "{}/{}",
                r["resourceType"].as_str().unwrap_or("?"),
                r["id"].as_str().unwrap_or("?")
            )
        })
        .collect();
    v.sort();
    v
}

/// The test-bed record: one patient with three conditions, five observations with different codes,
/// an active and a cancelled coverage, and another patient's resources beside them.
fn smoke_record() -> Vec<Value> {
    vec![
        patient("p1"),
        patient("p2"),
        condition("c1", "p1", "C20"),
        condition("c2", "p1", "I10"),
        condition("c3", "p1", "E11.9"),
        condition("c-other", "p2", "C20"),
        observation("o-t", "p1", "http://loinc.org", "21905-5"),
        observation("o-margin", "p1", "http://snomed.info/sct", "395536008"),
        observation("o-dist", "p1", "http://loinc.org", "33737-8"),
        observation("o-bp", "p1", "http://loinc.org", "85354-9"),
        // the same code under another system must not match `http://loinc.org|33737-8`
        observation(
            "o-wrong-system",
            "p1",
            "http://example.org/codes",
            "33737-8",
        ),
        observation("o-other", "p2", "http://loinc.org", "21905-5"),
        coverage("cov-active", "p1", "active"),
        coverage("cov-cancelled", "p1", "cancelled"),
    ]
}

// -------------------------------------------------------------------------------------------------
// The test bed itself

#[tokio::test]
async fn the_fhir_server_requires_its_token_pages_by_two_and_searches_like_fhir() {
    let server = FhirServer::start(Some(TOKEN)).await;
    assert!(
        server.base_url().starts_with("http://127.0.0.1:")
            && server.base_url().ends_with("/fhir/R4")
    );
    server.load(smoke_record()).await;
    let base = server.root();

    // Access control: no token, a wrong token, a prefix of the token -> 401; so is another scheme.
    for token in [None, Some("wrong"), Some("test-token-7c1f0e9")] {
        let (status, body) = base.get_with("Patient/p1", token).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{token:?}");
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert!(
            !body.to_string().contains(TOKEN),
            "the token is never echoed"
        );
    }
    let basic = reqwest::Client::new()
        .get(format!("{}/Patient/p1", server.base_url()))
        .header("Authorization", format!("Basic {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(basic.status(), StatusCode::UNAUTHORIZED);
    assert!(
        basic.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer")
    );

    // Reads.
    let (status, p1) = server.get("Patient/p1").await;
    assert_eq!(status, StatusCode::OK, "{p1}");
    assert_eq!(
        (p1["resourceType"].as_str(), p1["id"].as_str()),
        (Some("Patient"), Some("p1"))
    );
    let (status, missing) = server.get("Patient/nobody").await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(missing["resourceType"], "OperationOutcome");

    // Paging: three conditions of p1 come two at a time, with a working `next` link on the same base.
    let (status, page1) = server.get("Condition?patient=p1").await;
    assert_eq!(status, StatusCode::OK, "{page1}");
    assert_eq!(page1["type"], "searchset");
    assert_eq!(page1["total"], 3);
    assert_eq!(page1["entry"].as_array().unwrap().len(), 2);
    for e in page1["entry"].as_array().unwrap() {
        assert_eq!(e["search"]["mode"], "match");
        let full_url = e["fullUrl"].as_str().unwrap();
        assert_eq!(
            full_url,
            format!(
                "{}/Condition/{}",
                server.base_url(),
                e["resource"]["id"].as_str().unwrap()
            )
        );
    }
    let next = next_link(&page1).expect("a next link on page 1").to_owned();
    assert!(
        next.starts_with(&format!("{}/Condition?", server.base_url())),
        "{next}"
    );
    let (status, page2) = server.get(&next).await;
    assert_eq!(status, StatusCode::OK, "{page2}");
    assert_eq!(page2["entry"].as_array().unwrap().len(), 1);
    assert!(next_link(&page2).is_none(), "no next link on the last page");
    let (all, pages) = base.search_all("Condition?patient=p1", 10).await;
    assert_eq!(pages, 2);
    assert_eq!(ids(&all), ["Condition/c1", "Condition/c2", "Condition/c3"]);
    // `_count` is honoured, and the next link of a bigger page still works.
    let (all, pages) = base
        .search_all("Condition?patient=Patient/p1&_count=10", 10)
        .await;
    assert_eq!((all.len(), pages), (3, 1));

    // Token OR: `code=a|b,c|d` matches either code, with the system respected.
    let query = "Observation?patient=p1&code=http://loinc.org|21905-5,http://snomed.info/sct|395536008,http://loinc.org|33737-8";
    let (found, pages) = base.search_all(query, 10).await;
    assert_eq!(
        ids(&found),
        [
            "Observation/o-dist",
            "Observation/o-margin",
            "Observation/o-t"
        ]
    );
    assert_eq!(pages, 2);
    let (found, _) = base
        .search_all("Observation?patient=p2&code=http://loinc.org|21905-5", 10)
        .await;
    assert_eq!(
        ids(&found),
        ["Observation/o-other"],
        "other patients' data stays apart"
    );

    // Coverage by patient and status.
    let (found, _) = base
        .search_all("Coverage?patient=p1&status=active", 10)
        .await;
    assert_eq!(ids(&found), ["Coverage/cov-active"]);

    // Procedure search with nothing to find: an empty searchset, not an error.
    let (status, empty) = server.get("Procedure?patient=p1").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(empty["total"], 0);
    assert!(empty.get("entry").is_none());

    // Strict search: an unknown parameter is refused, not ignored.
    let (status, _) = server.get("Observation?patient=p1&no-such-param=1").await;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A transaction Bundle loads data too, into a partition that shares nothing with the root store.
    let part = server.partition("smoke");
    let (status, _) = part.get("Patient/p1").await;
    assert_eq!(status, StatusCode::NOT_FOUND, "a partition starts empty");
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": patient("p9"), "request": {"method": "PUT", "url": "Patient/p9"}},
        {"resource": condition("c9", "p9", "C20"), "request": {"method": "PUT", "url": "Condition/c9"}}
    ]});
    let (status, response) = part.post_bundle(&bundle).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["type"], "transaction-response");
    let (found, _) = part.search_all("Condition?patient=p9", 10).await;
    assert_eq!(ids(&found), ["Condition/c9"]);
    let (status, _) = server.get("Patient/p9").await;
    assert_eq!(
        status,
        StatusCode::NOT_FOUND,
        "the root store does not see the partition's data"
    );

    // The server exits by itself when its stdin closes (as when the test process dies).
    let exit = server.close_stdin_and_wait(Duration::from_secs(10)).await;
    assert!(
        exit.is_some(),
        "the server did not exit when its stdin closed"
    );
}

#[tokio::test]
async fn an_open_fhir_server_needs_no_token_and_stops_on_sigterm() {
    let mut server = FhirServer::start(None).await;
    server.load(vec![patient("p1")]).await;
    let (status, body) = server.root().get_with("Patient/p1", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let pid = server.pid().expect("the server runs").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let exit = server.wait_or_kill(Duration::from_secs(10)).await;
    assert!(exit.is_some_and(|s| s.success()), "SIGTERM: {exit:?}");
}

/// The `observations` query as served by discovery, run against a real server as an EHR (or the
/// service) would run it: it must find an Observation of every code it names, so the escaping of
/// the token list (`%7C` for `|`) is read back as FHIR means it; and nothing else.
#[tokio::test]
async fn the_discovery_observations_query_finds_every_code_it_names_on_a_real_server() {
    let server = FhirServer::start(None).await;
    let app = common::spawn_app().await;
    let discovery: Value = app.get("/cds-services").await.json().await.unwrap();
    let template = discovery["services"][0]["prefetch"]["observations"]
        .as_str()
        .expect("an observations prefetch")
        .to_owned();
    let url = reqwest::Url::parse(&format!("http://x/{template}")).unwrap();
    let list = url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .expect("a code parameter");
    let mut record = vec![patient("p1"), patient("p2")];
    let mut wanted = Vec::new();
    for (i, token) in list.split(',').enumerate() {
        let (system, code) = token.split_once('|').expect("system|code");
        record.push(observation(&format!("o{i}"), "p1", system, code));
        record.push(observation(&format!("other{i}"), "p2", system, code));
        wanted.push(format!("Observation/o{i}"));
    }
    assert!(wanted.len() >= 15, "{list}");
    record.push(observation("o-bp", "p1", "http://loinc.org", "85354-9"));
    server.load(record).await;
    let query = template.replace("{{context.patientId}}", "p1");
    let (found, _) = server.root().search_all(&query, 100).await;
    wanted.sort();
    assert_eq!(ids(&found), wanted, "{query}");
}

// -------------------------------------------------------------------------------------------------
// The case table without a server (the table itself runs in fetch mode in tests/it/cases.rs)

struct Case {
    request: Value,
    /// `ServiceRequest/<id>` -> covered | not-covered | conditional | indeterminate
    orders: BTreeMap<String, String>,
    not_iort: Vec<String>,
}

fn cases() -> Vec<Case> {
    common::cases::files()
        .into_iter()
        .map(|(_, path)| {
            let case = common::cases::read(&path);
            let orders = case["expect"]["orders"]
                .as_object()
                .unwrap_or_else(|| panic!("{}: expect.orders", path.display()))
                .iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                .collect();
            let not_iort = case["expect"]["notIort"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect();
            Case {
                request: case["request"].clone(),
                orders,
                not_iort,
            }
        })
        .collect()
}

/// The request without prefetch, pointing the service at `fhir_base` with the token.
fn without_prefetch(request: &Value, fhir_base: &str, token: &str) -> Value {
    let mut r = request.clone();
    let obj = r.as_object_mut().expect("a request object");
    obj.remove("prefetch");
    obj.insert("fhirServer".into(), json!(fhir_base));
    obj.insert(
        "fhirAuthorization".into(),
        json!({
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": 300,
            "scope": "patient/Patient.read patient/Condition.read patient/Procedure.read patient/Observation.read patient/Coverage.read",
            "subject": "iort-cds"
        }),
    );
    r
}

/// `Type/id` -> the `covered` code of each update action's coverage-information extension. An order
/// with several actions or extensions shows them all, comma-separated, so that is caught too.
fn outcomes(response: &Value) -> BTreeMap<String, String> {
    crd::covered_by_order(response)
        .into_iter()
        .map(|(order, codes)| (order, codes.join(",")))
        .collect()
}

async fn post(app: &common::TestApp, request: &Value) -> (StatusCode, Value) {
    let res = tokio::time::timeout(Duration::from_secs(30), app.post_json(SERVICE, request))
        .await
        .expect("the service answers within 30 s (a hang guard, not a speed check)");
    let status = res.status();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

// -------------------------------------------------------------------------------------------------
// No server

/// The case with two IORT orders and a medication order.
fn two_order_case() -> Case {
    cases()
        .into_iter()
        .find(|c| c.orders.len() >= 2 && !c.not_iort.is_empty())
        .expect("a case with two IORT orders and a non-IORT order")
}

fn assert_all_indeterminate(case: &Case, body: &Value, what: &str) {
    let got = outcomes(body);
    let want: BTreeMap<String, String> = case
        .orders
        .keys()
        .map(|k| (k.clone(), "indeterminate".to_owned()))
        .collect();
    assert_eq!(got, want, "{what}: {body}");
    for order in &case.not_iort {
        assert!(
            !got.contains_key(order),
            "{what}: an action on non-IORT {order}"
        );
    }
}

#[tokio::test]
async fn with_nothing_listening_every_iort_order_is_indeterminate_within_the_deadline() {
    // A port that was free a moment ago: nothing listens there now (as when the EHR's server is down).
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = common::spawn_app().await;
    let case = two_order_case();
    let request = without_prefetch(
        &case.request,
        &format!("http://127.0.0.1:{port}/fhir/R4"),
        TOKEN,
    );
    let (status, body) = post(&app, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_all_indeterminate(&case, &body, "connection refused");
}

#[tokio::test]
async fn with_a_server_that_never_answers_every_iort_order_is_indeterminate_within_the_deadline() {
    // Accepts connections and reads nothing, answers nothing: only the deadline ends the wait.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    let silent = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    let app = common::spawn_app().await;
    let case = two_order_case();
    let request = without_prefetch(
        &case.request,
        &format!("http://127.0.0.1:{port}/fhir/R4"),
        TOKEN,
    );
    // A silent server holds every connection forever: only the deadline ends the call (the
    // post's own timeout guards against a hang).
    let (status, body) = post(&app, &request).await;
    silent.abort();
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_all_indeterminate(&case, &body, "silent server");
    // Indeterminate because the server kept silent, not because nothing was asked of it.
    assert!(
        accepted.load(Ordering::SeqCst) > 0,
        "the service never connected to the fhirServer"
    );
}

// -------------------------------------------------------------------------------------------------
// Issue 12: the order's reason, read by id

/// The example order-sign request, with full prefetch whose `conditions` lack the order's
/// reason (`Condition/cond-rectal-ca`), and that Condition.
fn example_without_its_reason() -> (Value, Value) {
    let mut request: Value =
        serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap();
    let reason = request["prefetch"]["conditions"]["entry"][0]["resource"].clone();
    assert_eq!(reason["id"], "cond-rectal-ca");
    request["prefetch"]["conditions"] = json!({"resourceType": "Bundle", "type": "searchset",
        "total": 0});
    (request, reason)
}

#[tokio::test]
async fn an_orders_reason_missing_from_full_prefetch_is_read_from_the_fhir_server() {
    let server = FhirServer::start(Some(TOKEN)).await;
    let (request, reason) = example_without_its_reason();
    server.load(vec![patient("pat-rc-001"), reason]).await;
    let app = common::spawn_app().await;

    // Without a fhirServer the reason stays unknown: not covered as such.
    let (status, body) = post(&app, &request).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let unknown = outcomes(&body);
    assert_eq!(
        unknown.values().collect::<Vec<_>>(),
        ["conditional"],
        "{body}"
    );

    // With one, every prefetch key sent: the Condition is read by id and decides.
    let mut with_server = request.clone();
    with_server["fhirServer"] = json!(server.base_url());
    with_server["fhirAuthorization"] = json!({"access_token": TOKEN, "token_type": "Bearer",
        "expires_in": 300, "scope": "patient/Condition.read", "subject": "iort-cds"});
    let (status, body) = post(&app, &with_server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        outcomes(&body).values().collect::<Vec<_>>(),
        ["covered"],
        "{body}"
    );

    // The same Condition named by an absolute URL on another host: never contacted (nor
    // sent the token), and the indication is unknown again.
    let elsewhere = wiremock::MockServer::start().await;
    let mut off_server = with_server.clone();
    off_server["context"]["draftOrders"]["entry"][0]["resource"]["reasonReference"] =
        json!([{"reference": format!("{}/fhir/R4/Condition/cond-rectal-ca", elsewhere.uri())}]);
    let (status, body) = post(&app, &off_server).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        outcomes(&body).values().collect::<Vec<_>>(),
        ["conditional"],
        "{body}"
    );
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "a reason off the fhirServer was contacted"
    );
}
