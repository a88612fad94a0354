//! Black-box tests of fetching what prefetch lacks from the EHR's FHIR server, against wiremock
//! servers playing a well-behaved, a slow, a broken and a hostile FHIR server.
//!
//! Whatever the FHIR server does, the service answers a 200 CDS response within its deadline
//! (an `indeterminate` outcome naming what failed), never sends the bearer token anywhere but
//! the request's `fhirServer`, and never contacts a server its rules refuse.

mod common;

use std::time::{Duration, Instant};

use common::spawn_app_with;
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
    serde_json::from_str(include_str!("../examples/order-sign-iort.json")).unwrap()
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
    let res = app.post_json(SERVICE, body).await;
    let status = res.status().as_u16();
    let text = res.text().await.unwrap();
    let json = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, json, text)
}

/// The `covered` value of every CRD coverage-information extension in `systemActions`.
fn covered(response: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for action in response["systemActions"].as_array().into_iter().flatten() {
        for ext in action["resource"]["extension"]
            .as_array()
            .into_iter()
            .flatten()
        {
            if !ext["url"]
                .as_str()
                .unwrap_or("")
                .ends_with("ext-coverage-information")
            {
                continue;
            }
            for part in ext["extension"].as_array().into_iter().flatten() {
                if part["url"] == "covered" {
                    out.push(part["valueCode"].as_str().unwrap_or("").to_owned());
                }
            }
        }
    }
    out
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

/// An indeterminate 200 answer whose card names `what`, with no token anywhere.
fn assert_indeterminate(status: u16, body: &Value, text: &str, what: &str) {
    assert_eq!(status, 200, "{text}");
    assert_eq!(covered(body), vec!["indeterminate"], "{text}");
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
    let expected = covered(&prefetched);
    assert_eq!(expected.len(), 1, "{prefetched}");
    assert_ne!(
        expected,
        vec!["indeterminate"],
        "the example is decidable: {prefetched}"
    );

    let (status, fetched, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(covered(&fetched), expected, "{text}");
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
    assert_ne!(covered(&body), vec!["indeterminate"], "{text}");
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
    assert_eq!(covered(&body), covered(&call(&app, &example()).await.1));
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
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(
        status,
        &body,
        &text,
        "Observation query: the FHIR server answered 500",
    );
}

#[tokio::test]
async fn a_401_is_named_and_not_retried_elsewhere() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(401))
        .mount(&server)
        .await;
    let app = spawn_app_with(|_| {}).await;
    let (status, body, text) = call(&app, &request(&base(&server), &["conditions"], true)).await;
    assert_indeterminate(status, &body, &text, "the FHIR server refused access (401)");
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
    let started = Instant::now();
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(600 + 900),
        "answered after {took:?}"
    );
    assert_indeterminate(status, &body, &text, "did not answer within 600 ms");
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
        let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
        assert_indeterminate(status, &body, &text, what);
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
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, "larger than 16384 bytes");
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
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, "more than 4 pages");
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
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(status, &body, &text, "leads outside the FHIR server");
    assert!(
        card_text(&body).contains("Condition query"),
        "{}",
        card_text(&body)
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
    let (status, body, text) = call(&app, &request(&base(&server), &KEYS, true)).await;
    assert_indeterminate(
        status,
        &body,
        &text,
        "answered 307 (redirects are not followed)",
    );
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
    assert_ne!(covered(&body), vec!["indeterminate"]);
}

#[tokio::test]
async fn plain_http_to_a_non_loopback_host_is_refused() {
    let app = spawn_app_with(|_| {}).await;
    for server in [
        "http://ehr.example.org/fhir",
        "http://10.255.255.1:8080/fhir",
    ] {
        let started = Instant::now();
        let (status, body, text) = call(&app, &request(server, &["conditions"], true)).await;
        assert_eq!(status, 400, "{server}: {text}");
        let diagnostics = body["issue"][0]["diagnostics"].as_str().unwrap();
        assert!(diagnostics.contains("uses http"), "{diagnostics}");
        assert!(!text.contains("Sekr3t"), "{text}");
        // refused without trying: no connect timeout was waited for
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "{:?}",
            started.elapsed()
        );
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
    assert_eq!(covered(&body), ["covered"], "{text}");
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
    assert_eq!(covered(&body), ["covered"], "{text}");
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
    assert_eq!(covered(&body), ["covered"], "{text}");
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
    assert_eq!(covered(&body), ["covered"], "{text}");
    let seen = server.received_requests().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].url.path(), "/fhir/Condition/cond-rectal-ca");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {TOKEN}").as_str()
    );
}
