//! The demo patients (`examples/demo/`) and the README walkthrough "Try it in the CDS Hooks
//! Sandbox", checked end to end on loopback:
//!
//! - the demo Bundle is valid FHIR R4, one patient per outcome, and loads into a real FHIR server;
//! - each patient-view request, sent as the Sandbox sends it against an open FHIR server (no
//!   prefetch, `fhirServer`, no `fhirAuthorization`), gets the card the README promises;
//! - each order-sign example carries exactly that patient's record as prefetch and is decided
//!   as the README says;
//! - the server searches as the CDS Hooks Sandbox asks it to fill prefetch (`POST {type}/_search`
//!   with a form body) exactly as by GET, and refuses an unknown search parameter either way
//!   (issue 15);
//! - `scripts/demo-fhir-server.sh` starts the server with CORS, loads the Bundle and stops
//!   cleanly.
//!
//! The table [`DEMO`] is the README's table; change both together.

use crate::common;
use crate::common::crd;
use crate::common::crd::type_id;
use crate::support::fhir_server;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use fhir_server::{FhirServer, resources_in};
use fhirbolt::model::r4::Resource;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

const SIGN: &str = "/cds-services/iort-coverage";
const PREVIEW: &str = "/cds-services/iort-coverage-preview";

/// One demo patient: id, the order-sign outcome, how the order-sign summary starts, how the
/// patient-view summary starts, and a phrase of the patient-view summary that names the reason.
struct Demo {
    patient: &'static str,
    outcome: &'static str,
    sign_summary: &'static str,
    view_summary: &'static str,
    view_reason: &'static str,
}

/// What README.md promises for each demo patient.
const DEMO: [Demo; 5] = [
    Demo {
        patient: "demo-rc-t4-positive",
        outcome: "covered",
        sign_summary: "IORT (CPT 77425) meets BCBSAZ criteria",
        view_summary: "IORT would meet the BCBSAZ coverage criteria",
        view_reason: "positive margin, T4",
    },
    Demo {
        patient: "demo-rc-recurrent-close",
        outcome: "covered",
        sign_summary: "IORT (CPT 77425) meets BCBSAZ criteria",
        view_summary: "IORT would meet the BCBSAZ coverage criteria",
        view_reason: "close margin, recurrent disease",
    },
    Demo {
        patient: "demo-rc-clear-margin",
        outcome: "not-covered",
        sign_summary: "IORT (CPT 77425) does not meet BCBSAZ criteria",
        view_summary: "IORT would not meet the BCBSAZ coverage criteria",
        view_reason: "(margins clear)",
    },
    Demo {
        patient: "demo-breast",
        outcome: "not-covered",
        sign_summary: "IORT (CPT 77424) does not meet BCBSAZ criteria",
        view_summary: "IORT would not meet the BCBSAZ coverage criteria",
        view_reason: "not rectal cancer",
    },
    Demo {
        patient: "demo-rc-no-margin",
        outcome: "conditional",
        sign_summary: "IORT (CPT 77425) may meet BCBSAZ criteria",
        view_summary: "IORT would need: margin status",
        view_reason: "margin status",
    },
];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read_json(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn demo_file(name: &str) -> Value {
    read_json(&root().join("examples").join("demo").join(name))
}

fn bundle() -> Value {
    demo_file("patients.json")
}

/// The patient a resource is about (`Patient` itself, `subject`, or a Coverage's `beneficiary`).
fn patient_of(r: &Value) -> Option<String> {
    if r["resourceType"] == "Patient" {
        return r["id"].as_str().map(str::to_owned);
    }
    let reference = r["subject"]["reference"]
        .as_str()
        .or_else(|| r["beneficiary"]["reference"].as_str())?;
    reference.strip_prefix("Patient/").map(str::to_owned)
}

/// The Bundle's resources about `patient`, by `Type/id`.
fn bundle_resources_of(patient: &str) -> BTreeMap<String, Value> {
    bundle()["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["resource"].clone())
        .filter(|r| patient_of(r).as_deref() == Some(patient))
        .map(|r| (type_id(&r), r))
        .collect()
}

fn cards(response: &Value) -> &[Value] {
    response["cards"].as_array().map_or(&[], Vec::as_slice)
}

/// The CRD `covered` code of each order in the response's update actions.
fn outcomes(response: &Value) -> BTreeMap<String, String> {
    crd::covered_by_order(response)
        .into_iter()
        .map(|(order, codes)| (order, codes.join(",")))
        .collect()
}

async fn post_ok(app: &common::TestApp, path: &str, body: &Value) -> Value {
    let res = tokio::time::timeout(Duration::from_secs(30), app.post_json(path, body))
        .await
        .expect("the service answers within 30 s");
    let status = res.status();
    let body: Value = res.json().await.expect("a JSON body");
    assert_eq!(status, StatusCode::OK, "{path}: {body}");
    body
}

/// The patient-view example of a demo patient, pointed at `fhir_base`.
fn patient_view(patient: &str, fhir_base: &str) -> Value {
    let mut r = demo_file(&format!("patient-view-{patient}.json"));
    assert!(
        r.get("prefetch").is_none(),
        "{patient}: the Sandbox-style call has no prefetch"
    );
    assert!(
        r.get("fhirAuthorization").is_none(),
        "{patient}: an open server needs no token"
    );
    r["fhirServer"] = json!(fhir_base);
    r
}

/// The card README promises for a patient-view call.
fn assert_view_card(d: &Demo, body: &Value) {
    assert!(body.get("systemActions").is_none(), "{}: {body}", d.patient);
    let [card] = cards(body) else {
        panic!("{}: one card expected: {body}", d.patient)
    };
    let summary = card["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with(d.view_summary) && summary.contains(d.view_reason),
        "{}: {summary}",
        d.patient
    );
    assert_eq!(card["indicator"], "info", "{}", d.patient);
    assert!(
        card["detail"]
            .as_str()
            .is_some_and(|t| t.starts_with("**No IORT order exists yet.**")),
        "{}: {card}",
        d.patient
    );
}

#[test]
fn the_demo_bundle_is_valid_r4_with_one_patient_per_outcome() {
    let b = bundle();
    assert_eq!(b["resourceType"], "Bundle");
    assert_eq!(b["type"], "transaction");
    let mut seen = BTreeSet::new();
    let mut kinds: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (i, e) in b["entry"].as_array().expect("entries").iter().enumerate() {
        let r = &e["resource"];
        let key = type_id(r);
        assert!(seen.insert(key.clone()), "entry {i}: {key} twice");
        assert_eq!(e["request"]["method"], "PUT", "{key}");
        assert_eq!(e["request"]["url"], json!(key), "PUT at Type/id");
        assert!(
            r["meta"]["tag"]
                .as_array()
                .is_some_and(|t| t.iter().any(|c| c["code"] == "HTEST")),
            "{key}: tagged as test data"
        );
        // Strict FHIR R4 (through the Resource enum, as the service reads them).
        if let Err(err) = fhirbolt::json::from_json_value::<Resource>(r.clone(), None) {
            panic!("{key} is not valid FHIR R4: {err}");
        }
        if let Some(p) = patient_of(r) {
            kinds
                .entry(p)
                .or_default()
                .insert(r["resourceType"].as_str().unwrap_or("?").to_owned());
        }
    }
    let patients: BTreeSet<&str> = DEMO.iter().map(|d| d.patient).collect();
    assert_eq!(
        kinds.keys().map(String::as_str).collect::<BTreeSet<_>>(),
        patients,
        "one patient per README row"
    );
    for (patient, types) in &kinds {
        for t in [
            "Patient",
            "Condition",
            "Procedure",
            "Observation",
            "Coverage",
        ] {
            assert!(types.contains(t), "{patient} has no {t}");
        }
    }
    // Every reference inside the Bundle resolves inside the Bundle (a self-contained demo).
    let text = b.to_string();
    for r in regex_references(&text) {
        assert!(seen.contains(&r), "dangling reference {r}");
    }
}

/// The README names each demo patient, beside its id, as the Sandbox's "Change Patient" list
/// shows it: `given family, birthDate` (cds-hooks/sandbox,
/// src/retrieve-data-helpers/all-patient-retrieval.js), from the Bundle.
#[test]
fn the_readme_names_each_demo_patient_as_the_sandbox_lists_it() {
    let readme = include_str!("../../README.md");
    let mut named = 0;
    for e in bundle()["entry"].as_array().expect("entries") {
        let r = &e["resource"];
        if r["resourceType"] != "Patient" {
            continue;
        }
        let id = r["id"].as_str().expect("an id");
        let name = &r["name"][0];
        let given: Vec<&str> = name["given"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        let label = format!(
            "{} {}, {}",
            given.join(" "),
            name["family"].as_str().unwrap_or_default(),
            r["birthDate"].as_str().unwrap_or_default()
        );
        let row = format!("| `{id}` | {label} |");
        assert!(
            readme.lines().any(|l| l.starts_with(&row)),
            "README has no row starting {row}"
        );
        named += 1;
    }
    assert_eq!(named, DEMO.len());
}

/// `"reference":"Type/id"` values in a JSON text.
fn regex_references(text: &str) -> Vec<String> {
    let re = regex::Regex::new(r#""reference":"([A-Z][A-Za-z]+/[A-Za-z0-9.-]+)""#).expect("regex");
    re.captures_iter(text).map(|c| c[1].to_owned()).collect()
}

#[tokio::test]
async fn each_order_sign_example_carries_its_patients_record_and_is_decided_as_promised() {
    let app = common::spawn_app().await;
    for d in &DEMO {
        let request = demo_file(&format!("order-sign-{}.json", d.patient));
        assert_eq!(request["context"]["patientId"], d.patient);
        let mut prefetched = BTreeMap::new();
        for value in request["prefetch"].as_object().expect("prefetch").values() {
            for r in resources_in(value) {
                prefetched.insert(type_id(&r), r);
            }
        }
        assert_eq!(
            prefetched,
            bundle_resources_of(d.patient),
            "{}: the prefetch must be exactly the Bundle's record",
            d.patient
        );
        let body = post_ok(&app, SIGN, &request).await;
        let expected: BTreeMap<String, String> =
            [("ServiceRequest/iort-1".to_owned(), d.outcome.to_owned())].into();
        assert_eq!(outcomes(&body), expected, "{}", d.patient);
        let summary = cards(&body)[0]["summary"].as_str().unwrap_or_default();
        assert!(
            summary.starts_with(d.sign_summary),
            "{}: {summary}",
            d.patient
        );
    }
}

#[tokio::test]
async fn the_demo_bundle_loads_and_patient_view_answers_each_patient_as_the_readme_promises() {
    let server = FhirServer::start(None).await;
    let (status, response) = server.root().post_bundle(&bundle()).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    assert_eq!(response["type"], "transaction-response");
    let statuses: Vec<&str> = response["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["response"]["status"].as_str())
        .collect();
    assert_eq!(
        statuses.len(),
        bundle()["entry"].as_array().map_or(0, Vec::len)
    );
    assert!(
        statuses
            .iter()
            .all(|s| s.starts_with("201") || s.starts_with("200")),
        "{statuses:?}"
    );
    // What the service's queries will find.
    let (found, _) = server
        .root()
        .search_all(
            "Observation?patient=demo-rc-t4-positive&code=http://snomed.info/sct|395536008",
            5,
        )
        .await;
    assert_eq!(found.len(), 1);

    let app = common::spawn_app().await;
    for d in &DEMO {
        let body = post_ok(&app, PREVIEW, &patient_view(d.patient, server.base_url())).await;
        assert_view_card(d, &body);
    }
    // A patient the server does not know: nothing recorded, so no cancer, so no card.
    let mut unknown = patient_view("demo-breast", server.base_url());
    unknown["context"]["patientId"] = json!("nobody");
    assert_eq!(post_ok(&app, PREVIEW, &unknown).await, json!({"cards": []}));
}

/// The form body the CDS Hooks Sandbox POSTs to `{type}/_search` to fill a prefetch key: the
/// template's query decoded and re-encoded as `application/x-www-form-urlencoded`
/// (cds-hooks/sandbox, src/retrieve-data-helpers/service-exchange.js, `prefetchDataPromises`:
/// `new URLSearchParams(query).toString()`).
fn sandbox_form(query: &str) -> String {
    let decoded = reqwest::Url::parse(&format!("http://x/?{query}")).expect("a query");
    let mut form = reqwest::Url::parse("http://x/").expect("a URL");
    form.query_pairs_mut().extend_pairs(decoded.query_pairs());
    form.query().unwrap_or_default().to_owned()
}

/// `POST {url}` with a form body and the Sandbox's headers (it asks for `application/json+fhir`),
/// plus a `Prefer` header when given.
async fn post_search(
    client: &reqwest::Client,
    url: &str,
    form: &str,
    prefer: Option<&str>,
) -> (StatusCode, Value) {
    let mut rb = client
        .post(url)
        .header("Accept", "application/json+fhir")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(form.to_owned());
    if let Some(p) = prefer {
        rb = rb.header("Prefer", p);
    }
    let res = rb
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// GET with a `Prefer` header.
async fn get_preferring(client: &reqwest::Client, url: &str, prefer: &str) -> (StatusCode, Value) {
    let res = client
        .get(url)
        .header("Accept", "application/fhir+json")
        .header("Prefer", prefer)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// The `Type/id`s of a searchset's `match` entries, in order.
fn matches(searchset: &Value) -> Vec<String> {
    searchset["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["search"]["mode"] == "match")
        .map(|e| type_id(&e["resource"]))
        .collect()
}

fn is_operation_outcome_error(body: &Value) -> bool {
    body["resourceType"] == "OperationOutcome"
        && body["issue"]
            .as_array()
            .is_some_and(|i| i.iter().any(|x| x["severity"] == "error"))
}

/// Issue 15, item 1: the Sandbox fills prefetch with `POST {type}/_search` and a form body; the
/// server must search by the body's parameters exactly as by a GET's query (it used to read only
/// the URL, and `patient=demo-breast` found all five patients' Conditions).
#[tokio::test]
async fn a_search_posted_as_the_sandbox_posts_it_finds_what_get_finds_for_that_patient_only() {
    let server = FhirServer::start(None).await;
    let (status, response) = server.root().post_bundle(&bundle()).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let base = server.base_url();
    let client = reqwest::Client::new();

    // The prefetch templates exactly as the Sandbox reads them from discovery.
    let app = common::spawn_app().await;
    let discovery: Value = app.get("/cds-services").await.json().await.expect("JSON");
    let service = discovery["services"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|s| format!("/cds-services/{}", s["id"].as_str().unwrap_or("")) == PREVIEW)
        .expect("the patient-view service in discovery");
    let mut searches = 0;
    for d in &DEMO {
        let record = bundle_resources_of(d.patient);
        for (key, template) in service["prefetch"].as_object().expect("prefetch") {
            let filled = template
                .as_str()
                .expect("a template")
                .replace("{{context.patientId}}", d.patient);
            let Some((resource_type, query)) = filled.split_once('?') else {
                continue; // an instance read: GET either way
            };
            let what = format!("{} {key}", d.patient);
            let url = format!("{base}/{resource_type}/_search");
            let (status, posted) = post_search(&client, &url, &sandbox_form(query), None).await;
            assert_eq!(status, StatusCode::OK, "{what}: {posted}");
            let (status, got) = fhir_get(&client, &format!("{base}/{filled}")).await;
            assert_eq!(status, StatusCode::OK, "{what}: {got}");
            assert_eq!(posted["total"], got["total"], "{what}");
            assert_eq!(matches(&posted), matches(&got), "{what}");
            for e in posted["entry"].as_array().into_iter().flatten() {
                assert_eq!(
                    patient_of(&e["resource"]).as_deref(),
                    Some(d.patient),
                    "{what}: another patient's record"
                );
            }
            // A search by patient alone finds the patient's whole record of that type.
            if query == format!("patient={}", d.patient) {
                let expected = record
                    .keys()
                    .filter(|k| k.starts_with(&format!("{resource_type}/")))
                    .count();
                assert_eq!(posted["total"], json!(expected), "{what}");
            }
            searches += 1;
        }
    }
    assert_eq!(searches, DEMO.len() * 4, "four searches per patient");

    // Parameters in the URL and in the body of one POST are one search (FHIR R4 3.1.1.1).
    let url = format!("{base}/Observation/_search?patient=demo-rc-t4-positive");
    let (status, merged) = post_search(
        &client,
        &url,
        "code=http%3A%2F%2Fsnomed.info%2Fsct%7C395536008",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{merged}");
    assert_eq!(
        matches(&merged),
        ["Observation/demo-rc-t4-positive-margin"],
        "{merged}"
    );
    // A search's body is a form, not a resource.
    let res = client
        .post(format!("{base}/Condition/_search"))
        .header("Content-Type", "application/fhir+json")
        .body(json!({"patient": "demo-breast"}).to_string())
        .send()
        .await
        .expect("POST");
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
}

/// Issue 15, item 1: an unknown search parameter is an error (400, OperationOutcome) by GET and by
/// POST alike, as under FHIR's strict handling; a client that prefers lenient handling has it
/// ignored and reported in an `outcome` entry.
#[tokio::test]
async fn an_unknown_search_parameter_is_refused_by_get_and_post_unless_the_client_prefers_lenient()
{
    let server = FhirServer::start(None).await;
    let (status, response) = server.root().post_bundle(&bundle()).await;
    assert_eq!(status, StatusCode::OK, "{response}");
    let base = server.base_url();
    let client = reqwest::Client::new();
    let query = "patient=demo-breast&no-such-param=value-1";
    let get_url = format!("{base}/Condition?{query}");
    let post_url = format!("{base}/Condition/_search");

    for prefer in [None, Some("handling=strict")] {
        let (status, body) = match prefer {
            None => fhir_get(&client, &get_url).await,
            Some(p) => get_preferring(&client, &get_url, p).await,
        };
        assert_eq!(status, StatusCode::BAD_REQUEST, "GET {prefer:?}: {body}");
        assert!(is_operation_outcome_error(&body), "GET {prefer:?}: {body}");
        let (status, body) = post_search(&client, &post_url, query, prefer).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "POST {prefer:?}: {body}");
        assert!(is_operation_outcome_error(&body), "POST {prefer:?}: {body}");
    }
    // In the URL of a POST as much as in its body.
    let (status, body) = post_search(
        &client,
        &format!("{post_url}?no-such-param=1"),
        "patient=demo-breast",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    let lenient = "return=representation, handling=lenient";
    let (status, got) = get_preferring(&client, &get_url, lenient).await;
    let (post_status, posted) = post_search(&client, &post_url, query, Some(lenient)).await;
    for (method, status, body) in [("GET", status, &got), ("POST", post_status, &posted)] {
        assert_eq!(status, StatusCode::OK, "{method}: {body}");
        assert_eq!(
            matches(body),
            ["Condition/demo-breast-cancer"],
            "{method}: the parameter ignored, the rest applied"
        );
        let outcomes: Vec<&Value> = body["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["search"]["mode"] == "outcome")
            .map(|e| &e["resource"])
            .collect();
        let [outcome] = outcomes.as_slice() else {
            panic!("{method}: one outcome entry expected: {body}")
        };
        assert_eq!(outcome["resourceType"], "OperationOutcome");
        let text = outcome.to_string();
        assert!(text.contains("no-such-param"), "{method}: {text}");
        assert!(
            !text.contains("value-1"),
            "{method}: no query values: {text}"
        );
        let links = body["link"].to_string();
        assert!(links.contains("patient=demo-breast"), "{method}: {links}");
        assert!(
            !links.contains("no-such-param"),
            "{method}: the self link says what was used: {links}"
        );
    }
}

#[tokio::test]
async fn the_demo_script_serves_the_demo_patients_with_cors_and_stops_cleanly() {
    // Make sure the server's npm packages are installed (under the harness's lock) first.
    FhirServer::start(None).await.stop().await;

    let mut child = tokio::process::Command::new("bash")
        .arg(root().join("scripts").join("demo-fhir-server.sh"))
        .args(["--port", "0"])
        .current_dir(root())
        .stdin(Stdio::piped()) // closes when this test ends: the servers exit with it
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("bash scripts/demo-fhir-server.sh");
    let _stdin = child.stdin.take();
    let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
    let mut printed = Vec::new();
    let base = tokio::time::timeout(Duration::from_secs(90), async {
        while let Ok(Some(line)) = lines.next_line().await {
            printed.push(line.clone());
            if let Some(url) = line.strip_prefix("fhirServer: ") {
                return url.trim().to_owned();
            }
        }
        panic!("the script ended without printing the fhirServer URL: {printed:?}")
    })
    .await
    .expect("the script prints the fhirServer URL within 90 s");
    assert!(
        base.starts_with("http://127.0.0.1:") && base.ends_with("/fhir/R4"),
        "{base}"
    );
    // The rest of the banner: each patient's id, then its name and birth date (what the
    // Sandbox's patient list shows).
    for _ in 0..DEMO.len() + 1 {
        if let Ok(Some(line)) = lines.next_line().await {
            printed.push(line);
        }
    }
    for d in &DEMO {
        let birth_date =
            bundle_resources_of(d.patient)[&format!("Patient/{}", d.patient)]["birthDate"]
                .as_str()
                .expect("a birth date")
                .to_owned();
        assert!(
            printed.iter().any(|l| {
                let l = l.trim();
                l.starts_with(&format!("{}  (", d.patient))
                    && l.ends_with(&format!(", {birth_date})"))
            }),
            "{} not listed with its name and birth date: {printed:?}",
            d.patient
        );
    }

    // A browser page (the Sandbox) may read it: CORS, and Chrome's private-network preflight.
    let client = reqwest::Client::new();
    let origin = "https://sandbox.cds-hooks.org";
    let res = client
        .get(format!("{base}/Patient/demo-breast"))
        .header("Origin", origin)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .expect("GET through the script's server");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()["access-control-allow-origin"], origin);
    let preflight = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{base}/Condition?patient=demo-breast"),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "GET")
        .header("Access-Control-Request-Headers", "authorization")
        .header("Access-Control-Request-Private-Network", "true")
        .send()
        .await
        .expect("preflight");
    assert!(preflight.status().is_success(), "{}", preflight.status());
    assert_eq!(
        preflight.headers()["access-control-allow-private-network"],
        "true"
    );
    // Search results link back through the CORS front, so a browser can follow them.
    let (_, searchset) = fhir_get(&client, &format!("{base}/Condition?patient=demo-breast")).await;
    let full_url = searchset["entry"][0]["fullUrl"]
        .as_str()
        .unwrap_or_default();
    assert!(full_url.starts_with(&base), "{full_url}");

    // The Sandbox fills prefetch by POST _search through the same front: one patient's records.
    let (status, posted) = post_search(
        &client,
        &format!("{base}/Condition/_search"),
        "patient=demo-breast",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{posted}");
    assert_eq!(
        matches(&posted),
        ["Condition/demo-breast-cancer"],
        "{posted}"
    );

    // And the service answers the Sandbox-style call against it.
    let app = common::spawn_app().await;
    let d = &DEMO[3];
    let body = post_ok(&app, PREVIEW, &patient_view(d.patient, &base)).await;
    assert_view_card(d, &body);

    // SIGTERM (as Ctrl-C would) stops the script and both servers behind it.
    let pid = child.id().expect("the script runs").to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let exit = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("the script exits within 15 s of SIGTERM")
        .expect("wait");
    // The TERM trap exits 143 after stopping both servers.
    assert_eq!(exit.code(), Some(143), "{exit:?}");
    let gone = client
        .get(format!("{base}/metadata"))
        .timeout(Duration::from_secs(5))
        .send()
        .await;
    assert!(
        gone.is_err(),
        "the FHIR server still answers after the script stopped"
    );
}

async fn fhir_get(client: &reqwest::Client, url: &str) -> (StatusCode, Value) {
    let res = client
        .get(url)
        .header("Accept", "application/fhir+json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let status = res.status();
    (status, res.json().await.unwrap_or(Value::Null))
}
