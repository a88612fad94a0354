//! Black-box tests of fetching what prefetch lacks from the EHR's FHIR server, against wiremock
//! servers playing a well-behaved, a slow, a broken and a hostile FHIR server.
//!
//! Whatever the FHIR server does, the service answers a 200 CDS response within its deadline
//! (an `indeterminate` outcome saying, in one neutral sentence, that the record could not be
//! read; the precise cause is logged with the request id), never sends the bearer token
//! anywhere but the request's `fhirServer`, and never contacts a server its rules refuse.
//!
//! These tests capture the process's log (one capture per test binary, shared by its tests):
//! a cause is looked for on a line carrying the call's own request id.

use crate::common;
use crate::common::crd;

use std::time::Duration;

use common::spawn_app_with;
use iort_cds::gather::RECORD_UNREADABLE;
use serde_json::{Value, json};
use wiremock::matchers::{header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SERVICE: &str = "/cds-services/iort-coverage";
const TOKEN: &str = "eyJhbGciOiJub25lIn0.tok-Sekr3t_value";
const KEYS: [&str; 5] = [
    "patient",
    "coverage",
    "conditions",
    "procedures",
    "observations",
];

fn example() -> Value {
    serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap()
}

/// The resource path each prefetch key's query asks for (from the service's templates).
fn path_of(key: &str) -> &'static str {
    match key {
        "patient" => "/fhir/Patient/pat-rc-001",
        "coverage" => "/fhir/Coverage",
        "conditions" => "/fhir/Condition",
        "procedures" => "/fhir/Procedure",
        "observations" => "/fhir/Observation",
        other => panic!("unknown key {other}"),
    }
}

/// The example request with `drop` removed from its prefetch, fetching from `fhir_server`.
fn request(fhir_server: &str, drop: &[&str], with_token: bool) -> Value {
    let mut v = example();
    let prefetch = v["prefetch"].as_object_mut().unwrap();
    for k in drop {
        prefetch.remove(*k);
    }
    if prefetch.is_empty() {
        v.as_object_mut().unwrap().remove("prefetch");
    }
    v["fhirServer"] = json!(fhir_server);
    if with_token {
        v["fhirAuthorization"] = json!({"access_token": TOKEN, "token_type": "Bearer",
            "expires_in": 300, "scope": "patient/*.read", "subject": "iort-cds"});
    }
    v
}

/// Serve the example's prefetch values where the service's queries look for them, each only
/// for the example patient and with `Accept: application/fhir+json`.
async fn mount_example(server: &MockServer) {
    let prefetch = example()["prefetch"].as_object().unwrap().clone();
    for (key, value) in prefetch {
        let mut m = Mock::given(method("GET"))
            .and(path(path_of(&key)))
            .and(header("accept", "application/fhir+json"));
        if key != "patient" {
            m = m.and(query_param("patient", "pat-rc-001"));
        }
        m.respond_with(ResponseTemplate::new(200).set_body_json(value))
            .named(key)
            .mount(server)
            .await;
    }
}

/// `fhirServer` for a mock: its `/fhir` base.
fn base(server: &MockServer) -> String {
    format!("{}/fhir", server.uri())
}

/// POST a hook call; the status and the body as JSON, and the raw text for leak checks.
async fn call(app: &common::TestApp, body: &Value) -> (u16, Value, String) {
    let (status, json, text, _) = call_logged(app, body).await;
    (status, json, text)
}

/// [`call`], with the request id the service gave the call (`x-request-id`), which its log
/// lines carry.
async fn call_logged(app: &common::TestApp, body: &Value) -> (u16, Value, String, String) {
    common::logs::capture();
    let res = app.post_json(SERVICE, body).await;
    let status = res.status().as_u16();
    let request_id = res
        .headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text, request_id)
}

/// A WARN line of the call `request_id` names `cause`, and no log line carries the token.
fn assert_logged(request_id: &str, cause: &str) {
    assert!(!request_id.is_empty(), "no x-request-id");
    let logs = common::logs::text();
    assert!(
        logs.lines().any(|l| l.contains("WARN")
            && l.contains(&format!("request_id={request_id}"))
            && l.contains(cause)),
        "no WARN line of request {request_id} says {cause:?}:\n{}",
        logs.lines()
            .filter(|l| l.contains(request_id))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(!logs.contains("Sekr3t"), "the token was logged");
    assert!(
        !logs.contains("patient=pat-rc-001"),
        "a query's values were logged"
    );
    if std::env::var_os("SHOW_CAUSES").is_some() {
        for l in logs
            .lines()
            .filter(|l| l.contains(request_id) && l.contains("WARN"))
        {
            eprintln!("{l}");
        }
    }
}

/// Every card's summary and detail, for asserting what the clinician is told.
fn card_text(response: &Value) -> String {
    response["cards"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| format!("{} {}", c["summary"], c["detail"]))
        .collect()
}

/// An indeterminate 200 answer whose card says `what`, with no token anywhere.
fn assert_indeterminate(status: u16, body: &Value, text: &str, what: &str) {
    assert_eq!(status, 200, "{text}");
    assert_eq!(crd::covered_codes(body), vec!["indeterminate"], "{text}");
    assert!(
        card_text(body).contains(what),
        "card should say {what:?}: {}",
        card_text(body)
    );
    assert!(
        !text.contains(TOKEN) && !text.contains("Sekr3t"),
        "token leaked: {text}"
    );
}

#[tokio::test]
async fn a_full_fetch_gives_the_same_outcome_as_the_prefetched_example() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let app = spawn_app_with(|_| {}).await;

    let (status, prefetched, _) = call(&app, &example()).await;
    assert_eq!(status, 200);
    let expected = crd::covered_codes(&prefetched);
    assert_eq!(expected.len(), 1, "{prefetched}");
    assert_ne!(
        expected,
        vec!["indeterminate"],
        "the example is decidable: {prefetched}"
    );

    let (status, fetched, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(crd::covered_codes(&fetched), expected, "{text}");
    let summaries = |v: &Value| -> Vec<Value> {
        v["cards"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["summary"].clone())
            .collect()
    };
    assert_eq!(summaries(&fetched), summaries(&prefetched));

    let seen = server.received_requests().await.unwrap();
    assert_eq!(seen.len(), 5, "one request per missing key");
    for r in &seen {
        assert_eq!(r.method.as_str(), "GET");
        assert_eq!(
            r.headers["authorization"],
            format!("Bearer {TOKEN}").as_str()
        );
        assert_eq!(r.headers["accept"], "application/fhir+json");
    }
    let mut paths: Vec<&str> = seen.iter().map(|r| r.url.path()).collect();
    paths.sort_unstable();
    let mut want: Vec<&str> = KEYS.iter().map(|k| path_of(k)).collect();
    want.sort_unstable();
    assert_eq!(paths, want);
    let obs = seen
        .iter()
        .find(|r| r.url.path() == "/fhir/Observation")
        .unwrap();
    let code = obs
        .url
        .query_pairs()
        .find(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned());
    assert!(
        code.is_some_and(|c| c.contains("http://loinc.org|33737-8")),
        "{}",
        obs.url
    );
}

#[tokio::test]
async fn no_authorization_header_without_fhir_authorization() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, false)).await;
    assert_eq!(status, 200, "{text}");
    assert_ne!(crd::covered_codes(&body), vec!["indeterminate"], "{text}");
    let seen = server.received_requests().await.unwrap();
    assert_eq!(seen.len(), 5);
    assert!(
        seen.iter()
            .all(|r| !r.headers.contains_key("authorization"))
    );
}

#[tokio::test]
async fn partial_prefetch_fetches_only_the_missing_keys() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text) = call(
        &app,
        &request(&base(&server), &["observations", "coverage"], true),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(
        crd::covered_codes(&body),
        crd::covered_codes(&call(&app, &example()).await.1)
    );
    let seen = server.received_requests().await.unwrap();
    let mut paths: Vec<&str> = seen.iter().map(|r| r.url.path()).collect();
    paths.sort_unstable();
    assert_eq!(paths, vec!["/fhir/Coverage", "/fhir/Observation"]);
}

#[tokio::test]
async fn server_errors_make_the_answer_indeterminate() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    Mock::given(path("/fhir/Observation"))
        .respond_with(ResponseTemplate::new(500))
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text, id) = call_logged(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert!(
        !text.contains("500"),
        "the status reached the caller: {text}"
    );
    assert_logged(&id, "Observation query: the FHIR server answered 500");
}

#[tokio::test]
async fn a_401_is_named_and_not_retried_elsewhere() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text, id) =
        call_logged(&app, &request(&base(&server), &["conditions"], true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(&id, "the FHIR server refused access (401)");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_slow_server_is_cut_off_at_the_deadline() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"resourceType": "Bundle", "type": "searchset"}))
                .set_delay(Duration::from_secs(10)),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_with(|s| s.fhir.timeout_ms = 600).await;
    // Had the deadline not held, the empty Bundles would have arrived after 10 s and the
    // answer would be a determination, not `indeterminate` with the deadline in the log.
    let (status, body, text, id) = call_logged(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(&id, "did not answer within 600 ms");
}

#[tokio::test]
async fn garbage_bodies_are_failures() {
    for (garbage, what) in [
        (
            ResponseTemplate::new(200).set_body_string("<html>oops</html>"),
            "is not JSON",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!([1, 2])),
            "is not a FHIR resource",
        ),
        (
            ResponseTemplate::new(200).set_body_json(json!({"resourceType": "Patient", "id": "x"})),
            "is not a Bundle",
        ),
    ] {
        let server = MockServer::start().await;
        mount_example(&server).await;
        Mock::given(path("/fhir/Condition"))
            .respond_with(garbage)
            .with_priority(1)
            .mount(&server)
            .await;
        let app = spawn_app_with(|_| {}).await;
        let (status, body, text, id) =
            call_logged(&app, &request(&base(&server), &KEYS, true)).await;
        assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
        assert_logged(&id, what);
    }
}

#[tokio::test]
async fn an_oversized_body_is_refused() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    Mock::given(path("/fhir/Observation"))
        .respond_with(ResponseTemplate::new(200).set_body_string(" ".repeat(64 * 1024)))
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_with(|s| s.fhir.max_response_bytes = 16 * 1024).await;
    let (status, body, text, id) = call_logged(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(&id, "larger than 16384 bytes");
}

#[tokio::test]
async fn an_endless_next_chain_is_bounded() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let next = format!(
        "{}/fhir/Observation?patient=pat-rc-001&_page=again",
        server.uri()
    );
    Mock::given(path("/fhir/Observation"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle", "type": "searchset",
            "link": [{"relation": "next", "url": next}]})))
        .with_priority(1)
        .expect(4)
        .mount(&server)
        .await;
    let app = spawn_app_with(|s| s.fhir.max_pages = 4).await;
    let (status, body, text, id) = call_logged(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(&id, "more than 4 pages");
    server.verify().await;
}

#[tokio::test]
async fn a_cross_origin_next_link_is_not_followed() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200).set_body_json(json!({"resourceType": "Bundle",
            "type": "searchset"})),
        )
        .mount(&elsewhere)
        .await;
    mount_example(&server).await;
    for (p, next) in [
        (
            "/fhir/Observation",
            format!("{}/fhir/Observation?page=2", elsewhere.uri()),
        ),
        // same host and port, but outside the fhirServer base
        (
            "/fhir/Condition",
            format!("{}/admin/Condition?page=2", server.uri()),
        ),
    ] {
        Mock::given(path(p))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({
                "resourceType": "Bundle", "type": "searchset",
                "link": [{"relation": "next", "url": next}]})))
            .with_priority(1)
            .mount(&server)
            .await;
    }
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text, id) = call_logged(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(
        &id,
        "Observation query: a next-page link leads outside the FHIR server",
    );
    assert_logged(
        &id,
        "Condition query: a next-page link leads outside the FHIR server",
    );
    assert!(
        elsewhere.received_requests().await.unwrap().is_empty(),
        "followed to another origin"
    );
    let seen = server.received_requests().await.unwrap();
    assert!(seen.iter().all(|r| r.url.path().starts_with("/fhir/")));
}

#[tokio::test]
async fn a_redirect_is_not_followed() {
    let server = MockServer::start().await;
    let elsewhere = MockServer::start().await;
    mount_example(&server).await;
    Mock::given(path("/fhir/Procedure"))
        .respond_with(
            ResponseTemplate::new(307)
                .insert_header("location", format!("{}/fhir/Procedure", elsewhere.uri())),
        )
        .with_priority(1)
        .mount(&server)
        .await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text, id) = call_logged(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(&id, "answered 307 (redirects are not followed)");
    assert!(elsewhere.received_requests().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_fhir_server_outside_the_allow_list_is_refused_before_any_connection() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let app = spawn_app_with(|s| {
        s.fhir.allowed_base_urls = vec!["https://ehr.example.org/fhir".to_owned()]
    })
    .await;
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_eq!(status, 400, "{text}");
    assert_eq!(body["resourceType"], "OperationOutcome");
    let diagnostics = body["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains("fhir.allowed_base_urls"),
        "{diagnostics}"
    );
    assert!(!text.contains("Sekr3t"), "{text}");
    assert!(server.received_requests().await.unwrap().is_empty());

    // a server on the list is used
    let app = spawn_app_with(|s| s.fhir.allowed_base_urls = vec![base(&server)]).await;
    let (status, body, _) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_eq!(status, 200);
    assert_ne!(crd::covered_codes(&body), vec!["indeterminate"]);
}

#[tokio::test]
async fn plain_http_to_a_non_loopback_host_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    for server in [
        "http://ehr.example.org/fhir",
        "http://10.255.255.1:8080/fhir",
    ] {
        let (status, body, text) = call(&app, &request(server, &["conditions"], true)).await;
        assert_eq!(status, 400, "{server}: {text}");
        // Refused by the check on the URL, before any connection.
        let diagnostics = body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains("uses http"), "{diagnostics}");
        assert!(!text.contains("Sekr3t"), "{text}");
    }
}

#[tokio::test]
async fn user_info_in_fhir_server_is_refused() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let app = spawn_app_with(|_| {}).await;
    let with_user = base(&server).replace("http://", "http://admin:pw@");
    let (status, body, text) = call(&app, &request(&with_user, &KEYS, false)).await;
    assert_eq!(status, 400, "{text}");
    let diagnostics = body["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains("user name or password") && !diagnostics.contains("admin:pw"),
        "{diagnostics}"
    );
    assert!(server.received_requests().await.unwrap().is_empty());
}

/// `n` vital signs (heart rate) of the example patient, as search entries.
fn vitals(n: usize) -> Vec<Value> {
    (0..n)
        .map(|i| {
            json!({"fullUrl": format!("https://ehr.example.org/fhir/Observation/hr-{i}"),
                "search": {"mode": "match"},
                "resource": {"resourceType": "Observation", "id": format!("hr-{i}"),
                    "status": "final", "subject": {"reference": "Patient/pat-rc-001"},
                    "category": [{"coding": [{"system":
                        "http://terminology.hl7.org/CodeSystem/observation-category",
                        "code": "vital-signs"}]}],
                    "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
                    "effectiveDateTime": "2025-01-01",
                    "valueQuantity": {"value": 72, "unit": "/min"}}})
        })
        .collect()
}

/// The example's Observations, with `noise` vital signs and a search outcome entry, as real
/// servers send them (Epic adds an OperationOutcome entry to its pages).
fn observations_with(noise: usize) -> Value {
    let mut bundle = example()["prefetch"]["observations"].clone();
    let entries = bundle["entry"].as_array_mut().unwrap();
    entries.extend(vitals(noise));
    entries.push(json!({"search": {"mode": "outcome"},
        "resource": {"resourceType": "OperationOutcome", "issue": [{"severity": "warning",
            "code": "processing", "diagnostics": "Some results may be suppressed"}]}}));
    bundle
}

#[tokio::test]
async fn a_full_epic_page_with_an_outcome_entry_is_assessed() {
    // The old default bound: a 1,000-resource page plus its outcome entry used to pass it.
    let app = spawn_app_with(|s| s.limits.max_bundle_entries = 1000).await;
    let mut request = example();
    request["prefetch"]["observations"] = observations_with(998);
    assert_eq!(
        request["prefetch"]["observations"]["entry"]
            .as_array()
            .unwrap()
            .len(),
        1001
    );
    let (status, body, text) = call(&app, &request).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(crd::covered_codes(&body), ["covered"], "{text}");
    assert!(!card_text(&body).contains("Record incomplete"), "{text}");
}

#[tokio::test]
async fn a_server_ignoring_the_code_filter_still_gives_the_right_answer() {
    // Thousands of vitals and labs in one page (no paging, `code` ignored): with the default
    // limits, the answer is the one the filtered query gives.
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .and(query_param("patient", "pat-rc-001"))
        .respond_with(ResponseTemplate::new(200).set_body_json(observations_with(6000)))
        .mount(&server)
        .await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text) = call(&app, &request(&base(&server), &["observations"], true)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(crd::covered_codes(&body), ["covered"], "{text}");
    assert_eq!(server.received_requests().await.unwrap().len(), 1);
}

#[tokio::test]
async fn only_iort_orders_reasons_are_read() {
    let server = MockServer::start().await;
    let app = spawn_app_with(|_| {}).await;
    // Full prefetch holding the IORT order's reason, and a CT order naming another Condition.
    let mut request = request(&base(&server), &[], true);
    let ct = json!({"resource": {"resourceType": "ServiceRequest", "id": "sr-ct-1",
        "status": "draft", "intent": "order", "subject": {"reference": "Patient/pat-rc-001"},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72193"}]},
        "reasonReference": [{"reference": "Condition/not-an-iort-reason"}]}});
    request["context"]["draftOrders"]["entry"]
        .as_array_mut()
        .unwrap()
        .push(ct);
    let (status, body, text) = call(&app, &request).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(crd::covered_codes(&body), ["covered"], "{text}");
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "a non-IORT order's reason was read"
    );
    // The IORT order's own reason, once missing from the record, is read.
    request["prefetch"]["conditions"] = json!({"resourceType": "Bundle", "type": "searchset"});
    Mock::given(method("GET"))
        .and(path("/fhir/Condition/cond-rectal-ca"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(example()["prefetch"]["conditions"]["entry"][0]["resource"].clone()),
        )
        .mount(&server)
        .await;
    let (status, body, text) = call(&app, &request).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(crd::covered_codes(&body), ["covered"], "{text}");
    let seen = server.received_requests().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].url.path(), "/fhir/Condition/cond-rectal-ca");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
}

/// Issue 14, item 3: with no allow-list, a `fhirServer` at a link-local, private or otherwise
/// non-public IP address, in any spelling, is refused with a 400 naming the setting, before
/// any connection (no connect timeout is waited for). Never sends a packet: the refusal comes
/// from the URL alone.
#[tokio::test]
async fn a_non_public_address_is_refused_before_any_connection_without_an_allow_list() {
    let app = spawn_app_with(|_| {}).await;
    for (server, category) in [
        ("https://169.254.169.254/fhir", "link-local"),
        ("https://0xA9FEA9FE/fhir", "link-local"),
        ("https://2852039166/fhir", "link-local"),
        ("https://169.254.43518/fhir", "link-local"),
        ("https://[::ffff:169.254.169.254]/fhir", "link-local"),
        ("https://[64:ff9b::a9fe:a9fe]/fhir", "link-local"),
        ("https://[fe80::1]/fhir", "link-local"),
        ("https://10.0.0.5/fhir", "private"),
        ("https://192.168.0.10:8443/fhir", "private"),
        ("https://100.100.100.200/fhir", "shared"),
        ("https://[fd00::1]/fhir", "unique-local"),
        ("https://0.0.0.0/fhir", "unspecified"),
    ] {
        let (status, body, text, id) =
            call_logged(&app, &request(server, &["conditions"], true)).await;
        assert_eq!(status, 400, "{server}: {text}");
        assert_eq!(body["resourceType"], "OperationOutcome", "{text}");
        let diagnostics = body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(
            diagnostics.contains("fhir.allowed_base_urls") && diagnostics.contains(category),
            "{server}: {diagnostics}"
        );
        assert!(!text.contains("Sekr3t"), "{text}");
        // Refused by the check on the URL, before any connection (no timed assert: the log
        // line is written by the check itself).
        assert_logged(&id, "refused to contact the request's fhirServer");
    }
}

/// A service published on another host (`public_base_url`) takes remote calls even on a
/// loopback listener, so loopback is refused to it: as an IP literal with a 400, and as a name
/// (`localhost`, resolved without any network) at connect time, by the client's resolver,
/// with the same neutral card as any failure. The mock on loopback sees nothing. Listing the
/// server in `fhir.allowed_base_urls` lets it through.
#[tokio::test]
async fn loopback_is_refused_to_a_service_published_elsewhere_unless_listed() {
    let server = MockServer::start().await;
    mount_example(&server).await;
    let port = server.address().port();
    let published = |s: &mut iort_cds::configuration::Settings| {
        s.public_base_url = Some("https://cds.example.org".to_owned());
        s.auth.public_base_url = s.public_base_url.clone();
        s.insecure_no_auth = true;
    };
    let app = spawn_app_with(published).await;

    let literal = format!("http://127.0.0.1:{port}/fhir");
    let (status, body, text) = call(&app, &request(&literal, &KEYS, true)).await;
    assert_eq!(status, 400, "{text}");
    let diagnostics = body["issue"][0]["diagnostics"].as_str().unwrap();
    assert!(
        diagnostics.contains("loopback") && diagnostics.contains("fhir.allowed_base_urls"),
        "{diagnostics}"
    );

    let named = format!("http://localhost:{port}/fhir");
    let (status, body, text, id) = call_logged(&app, &request(&named, &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
    assert_logged(&id, "localhost resolves to a loopback address");
    assert!(
        server.received_requests().await.unwrap().is_empty(),
        "a refused address was contacted"
    );

    // Listed: reached, by name and by address.
    let app = spawn_app_with(|s| {
        published(s);
        s.fhir.allowed_base_urls = vec![named.clone(), literal.clone()];
    })
    .await;
    for server_url in [&named, &literal] {
        let (status, body, text) = call(&app, &request(server_url, &KEYS, true)).await;
        assert_eq!(status, 200, "{text}");
        assert_ne!(crd::covered_codes(&body), vec!["indeterminate"], "{text}");
    }
    assert_eq!(server.received_requests().await.unwrap().len(), 10);
}

/// Issue 14, item 4: a closed port, a service that does not speak HTTP and an HTTP service
/// answering 405 give the caller the same card, word for word; only the log tells them apart.
#[tokio::test]
async fn what_listens_where_is_not_told_to_the_caller() {
    // A closed port: bound, then released.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // Not HTTP: greets like an SSH server and hangs up.
    let not_http = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let not_http_port = not_http.local_addr().unwrap().port();
    std::thread::spawn(move || {
        use std::io::Write;
        for stream in not_http.incoming().flatten() {
            let mut stream = stream;
            let _ = stream.write_all(b"SSH-2.0-OpenSSH_9.6\r\n");
        }
    });
    // An HTTP service that is not a FHIR server.
    let http = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(405))
        .mount(&http)
        .await;

    let app = spawn_app_with(|_| {}).await;
    let mut cards = Vec::new();
    for (server, cause) in [
        (
            format!("http://127.0.0.1:{closed}/fhir"),
            "could not be reached",
        ),
        (
            format!("http://127.0.0.1:{not_http_port}/fhir"),
            "the request to the FHIR server failed",
        ),
        (
            format!("{}/fhir", http.uri()),
            "the FHIR server answered 405",
        ),
    ] {
        let (status, body, text, id) =
            call_logged(&app, &request(&server, &["conditions"], true)).await;
        assert_indeterminate(status, &body, &text, RECORD_UNREADABLE);
        assert_logged(&id, cause);
        // The coverage-information extensions, less their per-call assertion id.
        let mut reasons = Vec::new();
        for action in body["systemActions"].as_array().into_iter().flatten() {
            for ext in action["resource"]["extension"]
                .as_array()
                .into_iter()
                .flatten()
            {
                let mut ext = ext.clone();
                if let Some(parts) = ext["extension"].as_array_mut() {
                    parts.retain(|p| p["url"] != "coverage-assertion-id");
                }
                reasons.push(ext);
            }
        }
        assert!(!reasons.is_empty(), "{text}");
        cards.push((card_text(&body), reasons));
    }
    assert_eq!(cards[0], cards[1], "closed port vs not HTTP");
    assert_eq!(cards[0], cards[2], "closed port vs an HTTP 405");
}
