//! Regression tests for what hardening found (issue 6), each through the real server:
//!
//! - **Stack exhaustion.** A request whose prefetch nested ~30 `contained` resources (68 JSON
//!   levels, well inside serde_json's limit of 128), or whose extensions nested 55 deep (118
//!   levels), overflowed a 2 MiB worker stack in fhirbolt and aborted the whole process (every
//!   in-flight request lost, the service down). Now the depth is bounded on the bytes
//!   (`limits.max_json_depth`) and resources nested in resources on the value, before anything
//!   recursive runs: 400, and the server keeps serving.
//! - **Unbounded shapes.** A body within `max_body_bytes` could still hold thousands of
//!   resources whose facts are related pairwise (time grew faster than linearly), strings of
//!   megabytes, or JSON deeper than serde's limit (answered "syntax error", which named nothing).
//!   Each is now bounded by a `[limits]` setting and answered 400 or `indeterminate`.
//! - **Fuzzer finds.** Every input in `tests/regressions/<target>/` (the fuzz target's name) is
//!   replayed here the way its fuzz target runs it; `fuzz/seed.sh` also feeds them back to the
//!   fuzzers. See README, "Fuzzing".

use crate::common;
use crate::common::crd;

use std::path::{Path, PathBuf};

use common::{TestApp, spawn_app, spawn_app_with};
use iort_cds::configuration::{Overrides, Settings};
use iort_cds::gather::allow_list::BaseUrl;
use iort_cds::gather::fhir_client::Query;
use iort_cds::gather::prefetch::RecordBuilder;
use iort_cds::limits::Limits;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SERVICE: &str = "/cds-services/iort-coverage";

/// Case 001: rectal cancer, pT4a, involved margin: covered.
fn covered_request() -> Value {
    common::cases::request("001-covered-pt4a-involved-margin-cpt-77425.json")
}

fn contained_chain(levels: usize) -> Value {
    let mut c = json!({"resourceType": "Condition", "id": "c0"});
    for i in 1..levels {
        c = json!({"resourceType": "Condition", "id": format!("c{i}"), "contained": [c]});
    }
    c
}

fn extension_chain(levels: usize) -> Value {
    let mut e = json!({"url": "http://example.org/x", "valueString": "x"});
    for _ in 0..levels {
        e = json!({"url": "http://example.org/x", "extension": [e]});
    }
    e
}

/// POST and return status and JSON body.
async fn post(app: &TestApp, path: &str, body: Vec<u8>) -> (u16, Value) {
    let res = app.post_raw(path, "application/json", body).await;
    let status = res.status().as_u16();
    let text = res.text().await.expect("a body");
    (
        status,
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}")),
    )
}

/// The server still answers: liveness and a full covered determination.
async fn assert_still_serving(app: &TestApp) {
    assert_eq!(app.get("/healthz").await.status(), 200);
    let (status, body) = post(app, SERVICE, covered_request().to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(crd::covered_codes(&body), ["covered"]);
}

fn diagnostics(body: &Value) -> String {
    body["issue"][0]["diagnostics"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn nested_contained_resources_answer_400_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    for (where_, pointer) in [
        ("prefetch", "/prefetch/conditions/entry/0/resource"),
        ("draft order", "/context/draftOrders/entry/0/resource"),
    ] {
        let mut request = covered_request();
        let resource = request.pointer_mut(pointer).expect("the resource");
        resource["contained"] = json!([contained_chain(30)]);
        let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
        assert_eq!(status, 400, "{where_}: {body}");
        assert_eq!(body["issue"][0]["code"], "too-costly", "{body}");
        assert!(diagnostics(&body).contains("nested"), "{body}");
    }
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn deeply_nested_extensions_answer_400_naming_the_limit() {
    let app = spawn_app().await;
    for pointer in [
        "/prefetch/conditions/entry/0/resource",
        "/context/draftOrders/entry/0/resource",
    ] {
        let mut request = covered_request();
        request.pointer_mut(pointer).expect("the resource")["extension"] =
            json!([extension_chain(55)]);
        let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
        assert_eq!(status, 400, "{body}");
        assert!(
            diagnostics(&body).contains("limits.max_json_depth = 64"),
            "{body}"
        );
    }
    // Deeper than serde_json's own limit: named as the depth limit, not "syntax error".
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let (status, body) = post(&app, SERVICE, deep.into_bytes()).await;
    assert_eq!(status, 400);
    assert!(
        diagnostics(&body).contains("limits.max_json_depth"),
        "{body}"
    );
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn a_realistic_depth_still_passes() {
    let app = spawn_app().await;
    let mut request = covered_request();
    request["prefetch"]["conditions"]["entry"][0]["resource"]["extension"] =
        json!([extension_chain(10)]);
    request["prefetch"]["conditions"]["entry"][0]["resource"]["contained"] = json!([{"resourceType": "Observation", "id": "inline", "status": "final",
                "code": {"text": "x"}}]);
    let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(crd::covered_codes(&body), ["covered"]);
}

#[tokio::test]
async fn long_strings_answer_400_without_echoing_them() {
    let app = spawn_app_with(|s| s.limits.max_string_bytes = 4096).await;
    let mut request = covered_request();
    request["prefetch"]["conditions"]["entry"][0]["resource"]["note"] =
        json!([{"text": format!("SECRET{}", "x".repeat(5000))}]);
    let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["issue"][0]["code"], "too-long");
    let d = diagnostics(&body);
    assert!(d.contains("limits.max_string_bytes = 4096"), "{d}");
    assert!(!d.contains("SECRET"), "{d}");
    assert_still_serving(&app).await;
}

#[tokio::test]
async fn too_many_draft_orders_answer_400() {
    let app = spawn_app_with(|s| s.limits.max_draft_orders = 3).await;
    let mut request = covered_request();
    let order = request["context"]["draftOrders"]["entry"][0].clone();
    let entries: Vec<Value> = (0..4)
        .map(|i| {
            let mut e = order.clone();
            e["resource"]["id"] = json!(format!("iort-{i}"));
            e
        })
        .collect();
    request["context"]["draftOrders"]["entry"] = json!(entries);
    let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        diagnostics(&body).contains("limits.max_draft_orders = 3"),
        "{body}"
    );
    // three are fine
    request["context"]["draftOrders"]["entry"]
        .as_array_mut()
        .expect("entries")
        .pop();
    let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(crd::covered_codes(&body), ["covered", "covered", "covered"]);
}

/// `n` copies of the case's first Condition, with distinct ids (the first keeps its own: the
/// order names it as its reason).
fn many_conditions(request: &mut Value, n: usize) {
    let first = request["prefetch"]["conditions"]["entry"][0].clone();
    let entries: Vec<Value> = (0..n)
        .map(|i| {
            let mut e = first.clone();
            if i > 0 {
                e["resource"]["id"] = json!(format!("copy-{i}"));
            }
            e
        })
        .collect();
    request["prefetch"]["conditions"]["entry"] = json!(entries);
}

#[tokio::test]
async fn a_record_over_the_limits_is_indeterminate_not_guessed() {
    let app = spawn_app_with(|s| {
        s.limits.max_bundle_entries = 5;
        s.limits.max_record_resources = 8;
    })
    .await;
    // one prefetch Bundle with too many entries
    let mut request = covered_request();
    many_conditions(&mut request, 6);
    let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(crd::covered_codes(&body), ["indeterminate"]);
    // Bundles within the entry limit, but too many resources in all
    let mut request = covered_request();
    many_conditions(&mut request, 5);
    let (_, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(crd::covered_codes(&body), ["indeterminate"], "{body}");
    // within both: decided
    let mut request = covered_request();
    many_conditions(&mut request, 2);
    let (_, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(crd::covered_codes(&body), ["covered"], "{body}");
}

/// The covered request with its observations left to be fetched from `server`.
fn fetching_request(server: &MockServer) -> Value {
    let mut request = covered_request();
    if let Some(p) = request["prefetch"].as_object_mut() {
        p.remove("observations");
    }
    request["fhirServer"] = json!(format!("{}/fhir", server.uri()));
    request
}

#[tokio::test]
async fn fhir_server_answers_over_the_limits_are_indeterminate() {
    let app = spawn_app_with(|s| s.limits.max_bundle_entries = 5).await;
    let good = covered_request()["prefetch"]["observations"].clone();
    let mut deep = good.clone();
    deep["entry"][0]["resource"]["contained"] = json!([contained_chain(30)]);
    let mut wide = good.clone();
    let first = good["entry"][0].clone();
    wide["entry"] = json!(vec![first; 6]);
    let mut long = good.clone();
    long["entry"][0]["resource"]["extension"] = json!([extension_chain(70)]);
    for (name, answer, expected) in [
        ("as prefetched", good, "covered"),
        ("nested resources", deep, "indeterminate"),
        ("too many entries", wide, "indeterminate"),
        ("too deep", long, "indeterminate"),
    ] {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Observation"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
        let request = fetching_request(&server);
        let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
        assert_eq!(status, 200, "{name}: {body}");
        assert_eq!(crd::covered_codes(&body), [expected], "{name}: {body}");
    }
    assert_still_serving(&app).await;
}

#[test]
fn limits_are_configurable_and_checked_at_start_up() {
    let dir = std::env::temp_dir().join(format!("iort-limits-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let write = |name: &str, text: &str| {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("written");
        p
    };
    let ok = write(
        "ok.toml",
        "[limits]\nmax_json_depth = 32\nmax_string_bytes = 2048\nmax_bundle_entries = 50\nmax_record_resources = 60\nmax_inflight_body_bytes = 9000000\nmax_json_values = 5000\nbody_timeout_ms = 5000\nmin_body_bytes_per_sec = 1024\nmax_connections = 64\nidle_timeout_ms = 2000\n",
    );
    let s = Settings::load(Some(&ok), Overrides::default()).expect("valid limits");
    assert_eq!(
        s.limits,
        Limits {
            max_json_depth: 32,
            max_string_bytes: 2048,
            max_draft_orders: 1000,
            max_bundle_entries: 50,
            max_record_resources: 60,
            max_inflight_body_bytes: 9_000_000,
            max_json_values: 5000,
            body_timeout_ms: 5000,
            min_body_bytes_per_sec: 1024,
            max_connections: 64,
            idle_timeout_ms: 2000,
        }
    );
    assert_eq!(
        Settings::load(None, Overrides::default())
            .expect("defaults")
            .limits,
        Limits::default()
    );
    for (text, setting) in [
        ("[limits]\nmax_json_depth = 128\n", "limits.max_json_depth"),
        ("[limits]\nmax_json_values = 10\n", "limits.max_json_values"),
        ("[limits]\nmax_connections = 0\n", "limits.max_connections"),
        ("[limits]\nbody_timeout_ms = 10\n", "limits.body_timeout_ms"),
        (
            "[limits]\nmin_body_bytes_per_sec = 0\n",
            "limits.min_body_bytes_per_sec",
        ),
        (
            "[limits]\nmax_string_bytes = 10\n",
            "limits.max_string_bytes",
        ),
        (
            "[limits]\nmax_bundle_entries = 0\n",
            "limits.max_bundle_entries",
        ),
        ("[limits]\nmax_entries = 3\n", "max_entries"),
    ] {
        let p = write("bad.toml", text);
        let e = Settings::load(Some(&p), Overrides::default())
            .expect_err(text)
            .to_string();
        assert!(e.contains(setting), "{text}: {e}");
    }
    std::fs::remove_dir_all(&dir).expect("cleaned up");
}

#[test]
fn the_release_profile_unwinds_so_panics_stay_per_request() {
    let manifest: toml::Table = toml::from_str(include_str!("../../Cargo.toml")).expect("TOML");
    for profile in ["release", "dev"] {
        let panic = manifest
            .get("profile")
            .and_then(|p| p.get(profile))
            .and_then(|p| p.get("panic"))
            .and_then(toml::Value::as_str);
        assert_ne!(
            panic,
            Some("abort"),
            "[profile.{profile}] panic = \"abort\" would turn a caught panic into a crash"
        );
    }
}

// ---- fuzzer finds, replayed as their targets run them ----

/// The files in `tests/regressions/<target>/`, sorted.
fn inputs(target: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/regressions")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.is_file());
    files.sort();
    files
}

/// `hook_request`: the first byte picks the service (its index in discovery), the rest is
/// the body; through the real server, which must answer with JSON and never 500.
#[tokio::test]
async fn hook_request_finds_get_well_formed_answers() {
    let app = spawn_app().await;
    let discovery: Value = app.get("/cds-services").await.json().await.expect("JSON");
    let services: Vec<String> = discovery["services"]
        .as_array()
        .expect("services")
        .iter()
        .filter_map(|s| s["id"].as_str().map(str::to_owned))
        .collect();
    let files = inputs("hook_request");
    assert!(!files.is_empty(), "the stack-overflow inputs are kept");
    for file in files {
        let data = std::fs::read(&file).expect("readable");
        let Some((&selector, body)) = data.split_first() else {
            continue;
        };
        let service = &services[usize::from(selector) % services.len()];
        let (status, body) = post(&app, &format!("/cds-services/{service}"), body.to_vec()).await;
        assert!(
            matches!(status, 200 | 400 | 412),
            "{}: {status} {body}",
            file.display()
        );
    }
    assert_still_serving(&app).await;
}

/// `fhir_response`: the bytes as a FHIR server's 200 answer to a search and to a read, and as
/// a value for the record builder.
#[test]
fn fhir_response_finds_are_read_without_panicking() {
    let base = BaseUrl::parse("https://ehr.example.org/fhir").expect("base");
    let search = Query::new("observations", "Observation?patient=pat-001", &base).expect("q");
    let read = Query::new("patient", "Patient/pat-001", &base).expect("q");
    let limits = Limits::default();
    let terminology =
        iort_cds::terminology::Terminology::load(&iort_cds::assets::Assets::embedded())
            .expect("terminology");
    for file in inputs("fhir_response") {
        let data = std::fs::read(&file).expect("readable");
        let mut b = RecordBuilder::new("pat-001", &terminology);
        for q in [&search, &read] {
            if let Ok(answer) = q.read_answer(reqwest::StatusCode::OK, &data, &limits)
                && let Some(v) = answer.value
            {
                b.add_value(&q.key, v);
            }
        }
        if iort_cds::limits::check_json(&data, &limits).is_ok()
            && let Ok(v) = serde_json::from_slice::<Value>(&data)
        {
            b.add_value("conditions", v);
        }
        assert_eq!(b.finish().patient_id, "pat-001", "{}", file.display());
    }
}

/// Found by fuzzing (prefetch_facts): a draft ServiceRequest with an unknown element whose value
/// is an array (`meta.profila: [...]`, `note2: []`) fails the strict parse and was re-read in
/// fhirbolt's lax mode, which never returns on such elements: the worker spun at 100% CPU for
/// good. Now it is answered, and the order is still recognised as IORT.
#[tokio::test]
async fn unknown_array_elements_in_a_draft_order_do_not_hang_the_worker() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client");
    for extra in [
        json!({"note2": []}),
        json!({"meta": {"profila": ["x"]}}),
        json!({"foo": [1, {"a": []}], "extension2": [{}]}),
    ] {
        let mut request = covered_request();
        let order = &mut request["context"]["draftOrders"]["entry"][0]["resource"];
        for (k, v) in extra.as_object().expect("object") {
            order[k] = v.clone();
        }
        let res = client
            .post(format!("{}{SERVICE}", app.address))
            .header("Content-Type", "application/json")
            .body(request.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{extra}: no answer in time: {e}"));
        assert_eq!(res.status(), 200, "{extra}");
        let body: Value = res.json().await.expect("JSON");
        assert_eq!(crd::covered_codes(&body), ["covered"], "{extra}: {body}");
    }
    assert_still_serving(&app).await;
}

/// `prefetch_facts`: the JSON through the record builder, facts and decision, as the fuzz
/// target runs it; each must finish (a hang is a failure here, not a stuck test run).
#[test]
fn prefetch_facts_finds_finish() {
    use iort_cds::hook::HookRequest;
    use iort_cds::pipeline::Engine;
    let engine = std::sync::Arc::new(Engine::load(&Settings::default()).expect("engine"));
    let files = inputs("prefetch_facts");
    assert!(!files.is_empty(), "the lax-mode hang input is kept");
    for file in files {
        let data = std::fs::read(&file).expect("readable");
        let engine = engine.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut outcomes = Vec::new();
            if let Ok(mut doc) = serde_json::from_slice::<Value>(&data) {
                if let Some(r) = doc.get_mut("request").map(Value::take) {
                    doc = r;
                }
                if let Ok(request) = HookRequest::from_json(doc) {
                    let record = engine.record_of(&request);
                    let orders = engine.iort_orders(&request.context.draft_orders);
                    for d in engine.assess(orders, &record) {
                        outcomes.push(d.covered.code());
                    }
                }
            }
            let _ = tx.send(outcomes);
        });
        let outcomes = rx
            .recv_timeout(std::time::Duration::from_secs(30))
            .unwrap_or_else(|_| panic!("{} did not finish", file.display()));
        assert!(outcomes.len() <= 10, "{}", file.display());
    }
}

/// Issue 13: FHIR forbids empty arrays and buggy systems send them; an array where a primitive
/// belongs too. They panicked the FHIR parser and the call answered 500. Now, at every entry
/// point, they are invalid resources: the request's own order is re-read leniently (empty
/// arrays dropped, as unknown elements are) and answered; a prefetch resource is skipped and
/// noted (200); a FHIR server resource the same.
#[tokio::test]
async fn empty_arrays_and_type_confusion_never_answer_500() {
    let app = spawn_app().await;
    // The request's own draft order.
    for (pointer, bad) in [
        ("/code/coding/0/code", json!([])),
        ("/category", json!([])),
        ("/code/coding/0/code", json!(["77425"])),
        ("/code/coding/0/code", json!({"value": "77425"})),
    ] {
        let mut request = covered_request();
        let order = &mut request["context"]["draftOrders"]["entry"][0]["resource"];
        *order.pointer_mut(pointer).expect("pointer into the order") = bad.clone();
        let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
        assert!(
            status == 200 || status == 400,
            "{pointer} = {bad}: {status} {body}"
        );
    }
    let mut request = covered_request();
    request["context"]["draftOrders"]["entry"][0]["resource"]["category"] = json!([]);
    let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        crd::covered_codes(&body),
        ["covered"],
        "an empty array says nothing: {body}"
    );

    // Prefetch resources: skipped, noted, answered.
    let mutations: Vec<(&str, Value)> = vec![
        ("/category", json!([])),
        ("/code/coding", json!([])),
        ("/code/coding/0/code", json!([])),
        ("/code/coding/0/code", json!(["C20"])),
        ("/code/coding/0/code", json!({"value": "C20"})),
        ("/subject", json!([])),
    ];
    for (pointer, bad) in &mutations {
        for key in ["conditions", "observations", "procedures"] {
            let mut request = covered_request();
            let resource = &mut request["prefetch"][key]["entry"][0]["resource"];
            // (not every resource kind has every element: those are skipped)
            let Some(slot) = resource.pointer_mut(pointer) else {
                continue;
            };
            *slot = bad.clone();
            let (status, body) = post(&app, SERVICE, request.to_string().into_bytes()).await;
            assert_eq!(status, 200, "{key}{pointer}: {body}");
            assert_eq!(crd::covered_codes(&body).len(), 1, "{key}{pointer}: {body}");
        }
    }

    // The same from a FHIR server: answered 200 with a determination, not 500.
    for (pointer, bad) in &mutations {
        let mut answer = covered_request()["prefetch"]["observations"].clone();
        if let Some(slot) = answer["entry"][0]["resource"].pointer_mut(pointer) {
            *slot = bad.clone();
        }
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .and(path("/fhir/Observation"))
            .respond_with(ResponseTemplate::new(200).set_body_json(answer))
            .mount(&server)
            .await;
        let (status, body) = post(
            &app,
            SERVICE,
            fetching_request(&server).to_string().into_bytes(),
        )
        .await;
        assert_eq!(status, 200, "FHIR server{pointer}: {body}");
        assert_eq!(crd::covered_codes(&body).len(), 1, "{body}");
    }
}

/// Issue 13: a hostile FHIR server answering an Observation search with pages of small JSON
/// numbers (tiny on the wire, 30-80 bytes each once parsed) and a `next` link back to itself,
/// for ever. Before the fetched-data budget, each page was kept until the query ended: two such
/// calls took the process to gigabytes, and a call ran until `fhir.max_pages` or its deadline.
/// Now the values are counted on the bytes of each page and the call stops at
/// `fhir.max_call_values`: 200, `indeterminate`, the log naming the setting (the card says
/// only that the record could not be read, issue 14; never content), well before the deadline,
/// and the server keeps serving.
#[tokio::test]
async fn a_hostile_fhir_server_with_endless_pages_of_numbers_is_stopped_by_the_call_budget() {
    common::logs::capture();
    let app = spawn_app_with(|s| {
        // Pages and time enough that only the value budget can end the call early.
        s.fhir.max_pages = 1000;
        s.fhir.timeout_ms = 30_000;
        s.fhir.max_call_values = 20_000;
        // Two calls' worth: room a call holds is given back only when it ends, so calls that
        // each hold part of a smaller room could wait on each other until their deadline.
        s.fhir.max_inflight_values = 40_000;
    })
    .await;
    let server = MockServer::start().await;
    let next = format!(
        "{}/fhir/Observation?patient=pat-001&page=next",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/fhir/Observation"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "resourceType": "Bundle",
            "type": "searchset",
            "entry": [],
            "x": vec![1; 3000],
            "link": [{"relation": "next", "url": next}],
        })))
        .mount(&server)
        .await;
    // Twice at once, sharing the process-wide room.
    let request = fetching_request(&server).to_string().into_bytes();
    let (first, second) = tokio::join!(
        post(&app, SERVICE, request.clone()),
        post(&app, SERVICE, request)
    );
    for (status, body) in [first, second] {
        assert_eq!(status, 200, "{body}");
        assert_eq!(crd::covered_codes(&body), ["indeterminate"], "{body}");
        let text = body.to_string();
        assert!(
            text.contains(iort_cds::gather::RECORD_UNREADABLE),
            "the card says the record could not be read: {body}"
        );
        assert!(!text.contains("[1,1"), "no content echoed: {body}");
    }
    let logs = common::logs::text();
    assert!(
        logs.lines()
            .filter(|l| l.contains("FHIR fetch failed")
                && l.contains("too large")
                && l.contains("fhir.max_call_values = 20000"))
            .count()
            >= 2,
        "the log names the budget for both calls"
    );
    // Each call read about seven pages, not a thousand: the budget, not the deadline, ended it.
    let pages = server.received_requests().await.map_or(0, |r| r.len());
    assert!(pages <= 2 * 9, "{pages} pages read");
    assert_still_serving(&app).await;
}

// The structure-aware mutations of the `fhir_shapes` fuzz target, compiled here too so its
// finds replay exactly (and a fixed sample runs in every `cargo test`).
#[path = "../../fuzz/src/structured.rs"]
mod structured;

/// `fhir_shapes`: each find in `tests/regressions/fhir_shapes/`, then 200 choice strings from a
/// fixed generator, mutated as the fuzz target mutates them (empty arrays, arrays for
/// primitives, numbers for strings, nulls, removed elements ...), through `Engine::parse_call`
/// and the pipeline (no `fhirServer`), and each prefetch value as a FHIR server's answer. A
/// panic that escapes the guards fails the test (the route would have answered 500).
#[tokio::test]
async fn fhir_shapes_mutations_never_escape_the_guards() {
    use iort_cds::pipeline::Engine;
    let engine = Engine::load(&Settings::default()).expect("engine");
    let base = BaseUrl::parse("https://ehr.example.org/fhir").expect("base");
    let search = Query::new("observations", "Observation?patient=pat-001", &base).expect("q");
    let limits = Limits::default();
    let mut inputs: Vec<(String, Vec<u8>)> = inputs("fhir_shapes")
        .into_iter()
        .map(|f| {
            (
                f.display().to_string(),
                std::fs::read(&f).expect("readable"),
            )
        })
        .collect();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    for i in 0..200 {
        let bytes: Vec<u8> = (0..32)
            .map(|_| {
                // xorshift64*: the same 200 inputs on every run
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
            })
            .collect();
        inputs.push((format!("generated #{i}"), bytes));
    }
    let (mut answered, mut mutated) = (0, 0);
    for (name, data) in &inputs {
        let doc = structured::mutate(data);
        let seed = usize::from(data.first().copied().unwrap_or(0)) % structured::SEEDS.len();
        mutated += usize::from(doc != structured::SEEDS[seed]);
        let body = serde_json::to_vec(&doc).expect("serialises");
        if let Ok((service, mut request)) = engine.parse_call("iort-coverage", &body) {
            request.fhir_server = None;
            request.fhir_authorization = None;
            let _ = engine.run(service, request, None).await;
            answered += 1;
        }
        if let Some(Value::Object(prefetch)) = doc.get("prefetch") {
            let mut b = RecordBuilder::new("pat-001", engine.terminology());
            for value in prefetch.values() {
                let bytes = serde_json::to_vec(value).expect("serialises");
                if let Ok(answer) = search.read_answer(reqwest::StatusCode::OK, &bytes, &limits)
                    && let Some(v) = answer.value
                {
                    b.add_value(&search.key, v);
                }
            }
            assert_eq!(b.finish().patient_id, "pat-001", "{name}");
        }
    }
    // The sample reaches the pipeline, mutated (not only the schema's refusals).
    assert!(mutated > 150, "{mutated} of {} mutated", inputs.len());
    assert!(answered > 20, "only {answered} of {} parsed", inputs.len());
}

/// Issue 15: one setting, one name. `public_base_url` is a top-level setting; under `[auth]`
/// it is refused as unknown, and messages name it as the file does.
#[test]
fn public_base_url_has_one_name() {
    let dir = std::env::temp_dir().join(format!("iort-pbu-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let top = dir.join("top.toml");
    std::fs::write(&top, "public_base_url = \"https://cds.example.org\"\n").unwrap();
    let s = Settings::load(Some(&top), Overrides::default()).expect("top-level is read");
    assert_eq!(
        s.auth.public_base_url.as_deref(),
        Some("https://cds.example.org")
    );
    let nested = dir.join("nested.toml");
    std::fs::write(
        &nested,
        "[auth]\npublic_base_url = \"https://cds.example.org\"\n",
    )
    .unwrap();
    let e = Settings::load(Some(&nested), Overrides::default())
        .expect_err("not an [auth] setting")
        .to_string();
    assert!(e.contains("public_base_url"), "{e}");
    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "public_base_url = \"cds.example.org\"\n").unwrap();
    let e = Settings::load(Some(&bad), Overrides::default())
        .expect_err("not a URL")
        .to_string();
    assert!(
        e.contains("public_base_url") && !e.contains("auth.public_base_url"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).ok();
}
