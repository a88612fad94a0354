//! Black-box tests of the HTTP API: every endpoint and every error path, through the real
//! server on a random port.

use crate::common;
// The benchmarks' record generator (a 1,000-resource record for the test below).
use crate::records;

use common::{fixture, spawn_app};
use serde_json::{Value, json};

const SERVICE: &str = "/cds-services/iort-coverage";

fn medication_request() -> Value {
    serde_json::from_str(include_str!("../../examples/order-sign-medication.json")).unwrap()
}

async fn assert_outcome(res: reqwest::Response, status: u16) -> Value {
    assert_eq!(res.status().as_u16(), status);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/json"), "content-type {ct}");
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["resourceType"], "OperationOutcome", "{body}");
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .is_some_and(|d| !d.is_empty()),
        "{body}"
    );
    body
}

/// No `null`, `""`, `[]` or `{}` anywhere (CDS Hooks JSON rule).
fn assert_no_empty(v: &Value, path: &str) {
    match v {
        Value::Null => panic!("null at {path}"),
        Value::String(s) => assert!(!s.is_empty(), "empty string at {path}"),
        Value::Array(a) => {
            assert!(!a.is_empty() || path == "cards", "empty array at {path}");
            a.iter()
                .enumerate()
                .for_each(|(i, x)| assert_no_empty(x, &format!("{path}[{i}]")));
        }
        Value::Object(o) => {
            assert!(!o.is_empty(), "empty object at {path}");
            o.iter()
                .for_each(|(k, x)| assert_no_empty(x, &format!("{path}.{k}")));
        }
        _ => {}
    }
}

#[tokio::test]
async fn discovery_lists_the_order_sign_service_with_2_0_prefetch_tokens() {
    let app = spawn_app().await;
    let res = app.get("/cds-services").await;
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let body: Value = res.json().await.unwrap();
    assert_no_empty(&body, "");
    let s = body["services"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == "iort-coverage")
        .expect("iort-coverage service");
    assert_eq!(s["hook"], "order-sign");
    assert!(s["title"].as_str().is_some());
    assert!(s["description"].as_str().is_some());
    let prefetch = s["prefetch"].as_object().unwrap();
    for key in [
        "patient",
        "coverage",
        "conditions",
        "procedures",
        "observations",
    ] {
        let q = prefetch[key].as_str().unwrap();
        assert!(q.contains("{{context.patientId}}"), "{key}: {q}");
        assert!(
            !q.contains("draftOrders"),
            "{key}: nested tokens are not 2.0"
        );
    }
    let ext = &s["extension"];
    assert!(ext["davinci-crd.version"].as_str().is_some());
    let codes: Vec<&str> = ext["davinci-crd.configuration-options"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["code"].as_str().unwrap())
        .collect();
    assert!(codes.contains(&"coverage-info") && codes.contains(&"max-cards"));
}

/// The Observation codes rules.md names as read from Observations (T category, stage group,
/// margin finding, R classification, margin distance): written out here, apart from the value
/// set files, so that a code dropped from a file is caught too.
const OBSERVATION_CODES_IN_THE_RULES: [(&str, &str); 15] = [
    ("http://snomed.info/sct", "78873005"),
    ("http://snomed.info/sct", "399504009"),
    ("http://snomed.info/sct", "384625004"),
    ("http://loinc.org", "21905-5"),
    ("http://loinc.org", "21899-0"),
    ("http://loinc.org", "21911-3"),
    ("http://snomed.info/sct", "399390009"),
    ("http://snomed.info/sct", "399537006"),
    ("http://snomed.info/sct", "399588009"),
    ("http://loinc.org", "21908-9"),
    ("http://loinc.org", "21902-2"),
    ("http://loinc.org", "21914-7"),
    ("http://snomed.info/sct", "395536008"),
    ("http://loinc.org", "84892-9"),
    ("http://loinc.org", "33737-8"),
];

/// Every `(system, code)` of the value sets of Observation codes, read from the files as
/// written: by the project's naming rule each is `fhir-profiles/valuesets/*-observation.json`.
/// Included value sets are followed; a regex filter fails the test (such a set cannot be asked
/// for code by code).
fn observation_value_set_codes() -> Vec<(String, String, String)> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fhir-profiles/valuesets");
    let mut by_url = std::collections::BTreeMap::new();
    let mut observation_sets = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let vs: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        if name.ends_with("-observation.json") {
            observation_sets.push(vs["url"].as_str().unwrap().to_owned());
        }
        by_url.insert(vs["url"].as_str().unwrap().to_owned(), (name, vs));
    }
    assert!(observation_sets.len() >= 4, "{observation_sets:?}");
    fn walk(
        url: &str,
        by_url: &std::collections::BTreeMap<String, (String, Value)>,
        out: &mut Vec<(String, String, String)>,
    ) {
        let (file, vs) = by_url
            .get(url)
            .unwrap_or_else(|| panic!("no value set {url}"));
        for inc in vs["compose"]["include"].as_array().unwrap() {
            assert!(
                inc.get("filter").is_none(),
                "{file}: a filter cannot be enumerated"
            );
            for child in inc["valueSet"].as_array().into_iter().flatten() {
                walk(child.as_str().unwrap(), by_url, out);
            }
            for c in inc["concept"].as_array().into_iter().flatten() {
                out.push((
                    file.clone(),
                    inc["system"].as_str().unwrap().to_owned(),
                    c["code"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    let mut out = Vec::new();
    for url in &observation_sets {
        walk(url, &by_url, &mut out);
    }
    out
}

/// The `(system, code)` tokens of the `code` parameter of a served query, as a FHIR server reads
/// them: percent-decoded, split on unescaped `,` and the first unescaped `|`, unescaped.
fn code_tokens(query: &str) -> Vec<(Option<String>, String)> {
    let url = reqwest::Url::parse(&format!("https://ehr.example.org/fhir/{query}"))
        .unwrap_or_else(|e| panic!("{query}: {e}"));
    let values: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(values.len(), 1, "one `code` parameter in {query}");
    let mut tokens = Vec::new();
    let (mut system, mut current) = (None, String::new());
    let mut chars = values[0].chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => current.extend(chars.next()),
            '|' if system.is_none() => system = Some(std::mem::take(&mut current)),
            ',' => tokens.push((system.take(), std::mem::take(&mut current))),
            other => current.push(other),
        }
    }
    tokens.push((system, current));
    tokens
}

#[tokio::test]
async fn discovery_asks_for_every_observation_code_the_facts_read() {
    let app = spawn_app().await;
    let res = app.get("/cds-services").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let from_files = observation_value_set_codes();
    let required: Vec<(String, String, String)> = OBSERVATION_CODES_IN_THE_RULES
        .iter()
        .map(|(s, c)| ("rules.md".to_owned(), (*s).to_owned(), (*c).to_owned()))
        .chain(from_files)
        .collect();
    let mut services = 0;
    for s in body["services"].as_array().unwrap() {
        let Some(query) = s["prefetch"]["observations"].as_str() else {
            continue;
        };
        services += 1;
        let id = s["id"].as_str().unwrap();
        assert!(
            query.starts_with("Observation?patient={{context.patientId}}&code="),
            "{id}: {query}"
        );
        // A valid URL query as served: RFC 3986 characters only (a raw `|` is refused by
        // strict HTTP servers), no marker left over.
        let rest = query.replace("{{context.patientId}}", "");
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?&=,%".contains(&b)),
            "{id}: {query}"
        );
        let tokens = code_tokens(query);
        for (file, system, code) in &required {
            assert!(
                tokens
                    .iter()
                    .any(|(s, c)| c == code && s.as_deref() == Some(system.as_str())),
                "{id}: the observations prefetch does not ask for {system}|{code} ({file})"
            );
        }
        for (system, code) in &tokens {
            assert!(
                system.is_some() && !code.is_empty(),
                "{id}: a token without system or code: {system:?}|{code}"
            );
        }
    }
    assert_eq!(services, 3, "every service has an observations prefetch");
}

#[tokio::test]
async fn cors_preflight_allows_authorization_and_content_type_on_every_endpoint() {
    let app = spawn_app().await;
    for path in [
        "/cds-services",
        SERVICE,
        "/cds-services/iort-coverage/feedback",
    ] {
        let res = app
            .client
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.address))
            .header("Origin", "http://localhost:3000")
            .header("Access-Control-Request-Method", "POST")
            .header(
                "Access-Control-Request-Headers",
                "authorization,content-type",
            )
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "{path}: {}", res.status());
        let h = res.headers();
        assert!(h.contains_key("access-control-allow-origin"), "{path}");
        let allowed = h["access-control-allow-headers"]
            .to_str()
            .unwrap()
            .to_ascii_lowercase();
        assert!(
            allowed.contains("authorization") && allowed.contains("content-type"),
            "{allowed}"
        );
        assert!(
            h["access-control-allow-methods"]
                .to_str()
                .unwrap()
                .contains("POST")
        );
    }
    // Chrome's Private Network Access preflight (an https page such as the Sandbox calling
    // a service on loopback)
    let res = app
        .client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{SERVICE}", app.address),
        )
        .header("Origin", "https://sandbox.cds-hooks.org")
        .header("Access-Control-Request-Method", "POST")
        .header("Access-Control-Request-Private-Network", "true")
        .send()
        .await
        .unwrap();
    assert_eq!(
        res.headers()["access-control-allow-private-network"],
        "true"
    );
    // and the actual response carries the CORS header too
    let res = app
        .client
        .get(format!("{}/cds-services", app.address))
        .header("Origin", "http://localhost:3000")
        .send()
        .await
        .unwrap();
    assert!(res.headers().contains_key("access-control-allow-origin"));
}

/// A CORS preflight of the service endpoint from `origin`.
async fn preflight(app: &common::TestApp, origin: &str) -> reqwest::Response {
    app.client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}{SERVICE}", app.address),
        )
        .header("Origin", origin)
        .header("Access-Control-Request-Method", "POST")
        .send()
        .await
        .unwrap()
}

/// The origin an answer allows, if any.
fn allowed(res: &reqwest::Response) -> Option<String> {
    res.headers()
        .get("access-control-allow-origin")
        .map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn cors_origins_are_configurable() {
    let app = common::spawn_app_with(|s| {
        s.cors_allowed_origins = Some(vec!["https://sandbox.cds-hooks.org".into()])
    })
    .await;
    let ok = preflight(&app, "https://sandbox.cds-hooks.org").await;
    assert_eq!(
        allowed(&ok).as_deref(),
        Some("https://sandbox.cds-hooks.org")
    );
    let refused = preflight(&app, "https://evil.example").await;
    assert_eq!(allowed(&refused), None);
}

/// Issue 14, item 8: the permissive default is for loopback only, and `null` never passes.
#[tokio::test]
async fn cors_default_is_loopback_only_and_never_null() {
    // loopback, not configured: any origin, echoed, but never `null`
    let local = spawn_app().await;
    let sandbox = preflight(&local, "https://sandbox.cds-hooks.org").await;
    assert_eq!(
        allowed(&sandbox).as_deref(),
        Some("https://sandbox.cds-hooks.org")
    );
    assert_eq!(allowed(&preflight(&local, "null").await), None);
    let get = local
        .client
        .get(format!("{}/cds-services", local.address))
        .header("Origin", "null")
        .send()
        .await
        .unwrap();
    assert_eq!(allowed(&get), None, "no CORS header for the null origin");
    // `*` configured: the same, `null` still refused
    let star = common::spawn_app_with(|s| s.cors_allowed_origins = Some(vec!["*".into()])).await;
    assert_eq!(allowed(&preflight(&star, "null").await), None);
    assert!(allowed(&preflight(&star, "https://a.example").await).is_some());
    // every interface (reached here through loopback), not configured: no origin at all
    let wide = common::spawn_app_with(|s| {
        s.listen = "0.0.0.0:0".parse().unwrap();
        s.insecure_no_auth = true;
    })
    .await;
    assert_eq!(
        allowed(&preflight(&wide, "https://sandbox.cds-hooks.org").await),
        None
    );
    let get = wide
        .client
        .get(format!("{}/cds-services", wide.address))
        .header("Origin", "https://sandbox.cds-hooks.org")
        .send()
        .await
        .unwrap();
    assert_eq!(get.status(), 200, "non-browser callers are unaffected");
    assert_eq!(allowed(&get), None);
    // behind a proxy (loopback listener, public URL elsewhere): the same
    let proxied = common::spawn_app_with(|s| {
        s.public_base_url = Some("https://cds.example.org".into());
        s.insecure_no_auth = true;
    })
    .await;
    assert_eq!(
        allowed(&preflight(&proxied, "https://sandbox.cds-hooks.org").await),
        None
    );
    // beyond loopback, configured: exactly those
    let listed = common::spawn_app_with(|s| {
        s.listen = "0.0.0.0:0".parse().unwrap();
        s.insecure_no_auth = true;
        s.cors_allowed_origins = Some(vec!["https://sandbox.cds-hooks.org".into()]);
    })
    .await;
    assert_eq!(
        allowed(&preflight(&listed, "https://sandbox.cds-hooks.org").await).as_deref(),
        Some("https://sandbox.cds-hooks.org")
    );
    assert_eq!(
        allowed(&preflight(&listed, "https://evil.example").await),
        None
    );
}

#[test]
fn a_null_or_malformed_cors_origin_is_refused_at_start_up() {
    for (origins, why) in [
        (vec!["null"], "null"),
        (vec!["https://sandbox.cds-hooks.org", "NULL"], "null"),
        (vec!["https://sandbox.cds-hooks.org/path"], "without a path"),
        (vec!["sandbox.cds-hooks.org"], "scheme://host"),
    ] {
        let mut o = iort_cds::configuration::Overrides::default();
        o.serve.cors_allowed_origins = Some(origins.iter().map(|s| s.to_string()).collect());
        let e = iort_cds::configuration::Settings::load(None, o)
            .expect_err("refused")
            .to_string();
        assert!(e.contains("cors_allowed_origins") && e.contains(why), "{e}");
    }
}

#[tokio::test]
async fn a_valid_request_without_iort_orders_gets_no_cards() {
    let app = spawn_app().await;
    let res = app.post_json(SERVICE, &medication_request()).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"cards": []}));
}

#[tokio::test]
async fn malformed_json_is_400_with_its_position() {
    let app = spawn_app().await;
    let res = app
        .post_raw(SERVICE, "application/json", b"{\"hook\": ".to_vec())
        .await;
    let body = assert_outcome(res, 400).await;
    assert!(
        body["issue"][0]["diagnostics"]
            .as_str()
            .unwrap()
            .contains("line 1")
    );
}

#[tokio::test]
async fn schema_violations_are_400_naming_the_path() {
    let app = spawn_app().await;
    let mut r = medication_request();
    r.as_object_mut().unwrap().remove("hookInstance");
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert!(body.to_string().contains("hookInstance"), "{body}");

    let mut r = medication_request();
    r["context"]["userId"] = json!("Nobody");
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert_eq!(
        body["issue"][0]["expression"][0], "context.userId",
        "{body}"
    );
    assert!(
        !body.to_string().contains("Nobody"),
        "values are not echoed: {body}"
    );

    let mut r = medication_request();
    r["context"]["draftOrders"]["entry"][0]["resource"]["resourceType"] = json!("Patient");
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert_eq!(
        body["issue"][0]["expression"][0], "context.draftOrders.entry[0].resource.resourceType",
        "{body}"
    );

    let mut r = medication_request();
    r["fhirAuthorization"] = json!({"access_token": "tok", "token_type": "Bearer", "expires_in": 300, "scope": "patient/*.read", "subject": "x"});
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert!(body.to_string().contains("fhirServer"), "{body}");
    assert!(!body.to_string().contains("tok\""), "{body}");
}

#[tokio::test]
async fn another_hook_is_400() {
    let app = spawn_app().await;
    let mut r = medication_request();
    r["hook"] = json!("patient-view");
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert_eq!(body["issue"][0]["expression"][0], "hook");
}

#[tokio::test]
async fn unknown_service_and_unknown_path_are_404() {
    let app = spawn_app().await;
    assert_outcome(
        app.post_json("/cds-services/nope", &medication_request())
            .await,
        404,
    )
    .await;
    assert_outcome(
        app.post_json("/cds-services/nope/feedback", &json!({}))
            .await,
        404,
    )
    .await;
    assert_outcome(app.get("/nothing/here").await, 404).await;
}

#[tokio::test]
async fn wrong_method_is_405() {
    let app = spawn_app().await;
    assert_outcome(app.get(SERVICE).await, 405).await;
}

#[tokio::test]
async fn wrong_or_missing_content_type_is_415() {
    let app = spawn_app().await;
    let body = medication_request().to_string().into_bytes();
    assert_outcome(app.post_raw(SERVICE, "text/plain", body.clone()).await, 415).await;
    let res = app
        .client
        .post(format!("{}{SERVICE}", app.address))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_outcome(res, 415).await;
    let res = app
        .post_raw(SERVICE, "application/json; charset=utf-8", body)
        .await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_10_mib_body_is_413_and_the_server_keeps_serving() {
    let app = spawn_app().await;
    let mut big = b"{\"hook\": \"order-sign\", \"pad\": \"".to_vec();
    big.resize(10 * 1024 * 1024, b'a');
    big.extend_from_slice(b"\"}");
    assert_outcome(
        app.post_raw(SERVICE, "application/json", big.clone()).await,
        413,
    )
    .await;
    // also when sent chunked (no Content-Length)
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(64 * 1024).map(|c| Ok(c.to_vec())).collect();
    let res = app
        .client
        .post(format!("{}{SERVICE}", app.address))
        .header("Content-Type", "application/json")
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            chunks,
        )))
        .send()
        .await
        .unwrap();
    assert_outcome(res, 413).await;
    let res = app.post_json(SERVICE, &medication_request()).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn the_body_limit_is_configurable() {
    let app = common::spawn_app_with(|s| s.max_body_bytes = 2048).await;
    let res = app.post_json(SERVICE, &medication_request()).await;
    assert_outcome(res, 413).await;
}

/// A slow client: the request head for a body of `declared` bytes and the first `sent` bytes
/// of it, then nothing.
async fn stalled_body(
    app: &common::TestApp,
    declared: usize,
    sent: usize,
) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut slow = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
        .await
        .unwrap();
    let head = format!(
        "POST {SERVICE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {declared}\r\n\r\n{{\"hook\": \"{}",
        "x".repeat(sent.saturating_sub(10))
    );
    slow.write_all(head.as_bytes()).await.unwrap();
    slow
}

fn send_small_call(app: &common::TestApp) -> tokio::task::JoinHandle<reqwest::StatusCode> {
    let (client, url) = (app.client.clone(), format!("{}{SERVICE}", app.address));
    tokio::spawn(async move {
        client
            .post(url)
            .header("Content-Type", "application/json")
            .body(medication_request().to_string())
            .send()
            .await
            .unwrap()
            .status()
    })
}

#[tokio::test]
async fn a_declared_length_reserves_nothing_until_the_bytes_arrive() {
    let budget = 48 * 1024;
    let app = common::spawn_app_with(|s| {
        s.max_body_bytes = budget;
        s.limits.max_inflight_body_bytes = budget;
    })
    .await;
    // A client declares a body as large as the whole budget and sends a few bytes of it: it
    // used to hold the whole budget, and every other call waited 10 s for a 503.
    let slow = stalled_body(&app, budget, 16).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let status = tokio::time::timeout(std::time::Duration::from_secs(1), send_small_call(&app))
        .await
        .expect("another call is answered at once, not after the slow client")
        .unwrap();
    assert_eq!(status, 200);
    drop(slow);
}

#[tokio::test]
async fn bytes_received_share_one_budget_and_a_stalled_body_gives_its_room_back() {
    use tokio::io::AsyncReadExt;
    let budget = 48 * 1024;
    let app = common::spawn_app_with(|s| {
        s.max_body_bytes = budget;
        s.limits.max_inflight_body_bytes = budget;
    })
    .await;
    // This client has really sent nearly the whole budget, then stops.
    let mut slow = stalled_body(&app, budget, budget - 512).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Another call waits for room: its body is not read while the received bytes hold it.
    let waiting = send_small_call(&app);
    tokio::time::sleep(std::time::Duration::from_millis(700)).await;
    assert!(
        !waiting.is_finished(),
        "answered without room in the budget"
    );
    // The stalled body falls under the minimum rate (after the grace): 408, room given back,
    // and the waiting call is answered.
    let status = tokio::time::timeout(std::time::Duration::from_secs(8), waiting)
        .await
        .expect("answered once the stalled body was cut off")
        .unwrap();
    assert_eq!(status, 200);
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(5), slow.read(&mut answer))
        .await
        .expect("the slow client is answered")
        .unwrap();
    let text = String::from_utf8_lossy(&answer[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
}

#[tokio::test]
async fn probes_answer_while_a_heavy_call_runs() {
    // One HTTP worker: before calls ran on their own threads, a probe waited behind the call.
    let app = common::spawn_app_with(|s| s.workers = Some(1)).await;
    let heavy = records::body(&records::request(records::Kind::Heavy));
    // Sixteen heavy calls, queued on the call threads: one alone took about a tenth of a second
    // in a test build once the record's typing got faster (session 8), which the probe below
    // could outlast; sixteen keep the call threads busy many times as long.
    let calls: Vec<_> = (0..16)
        .map(|_| {
            let (client, url) = (app.client.clone(), format!("{}{SERVICE}", app.address));
            let heavy = heavy.clone();
            tokio::spawn(async move {
                let res = client
                    .post(url)
                    .header("Content-Type", "application/json")
                    .body(heavy)
                    .send()
                    .await
                    .unwrap();
                res.status()
            })
        })
        .collect();
    // Ask while the calls are being worked on, and expect the answer before they are all done.
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let probe = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        app.client.get(format!("{}/healthz", app.address)).send(),
    )
    .await
    .expect("/healthz answered while the calls run")
    .unwrap();
    assert_eq!(probe.status(), 200);
    assert!(
        calls.iter().any(|c| !c.is_finished()),
        "the probe was answered only once the heavy calls had ended"
    );
    for call in calls {
        assert_eq!(call.await.unwrap(), 200);
    }
}

#[tokio::test]
async fn a_missing_prefetch_key_without_fhir_server_is_412() {
    let app = spawn_app().await;
    let mut r = medication_request();
    r["prefetch"]
        .as_object_mut()
        .unwrap()
        .remove("observations");
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 412).await;
    assert_eq!(body["issue"][0]["expression"][0], "prefetch.observations");
    // A key sent as null means "looked, found nothing": not missing.
    let mut r = medication_request();
    r["prefetch"]["patient"] = Value::Null;
    assert_eq!(app.post_json(SERVICE, &r).await.status(), 200);
}

/// A prefetch that is neither FHIR nor what the request schema says a prefetch value is.
fn broken_prefetch() -> Value {
    json!({
        "patient": {"resourceType": "Patient", "birthDate": 1961, "bogusElement": [[]]},
        "coverage": 5,
        "conditions": {"no": "resourceType"},
        "procedures": "Bundle",
        "observations": [null]
    })
}

#[tokio::test]
async fn without_an_iort_order_the_prefetch_is_not_read() {
    // README, "What the fast path validates": no draft order may be IORT, so the prefetch's
    // values are neither parsed into resources nor checked against the schema.
    let app = spawn_app().await;
    let mut r = medication_request();
    r["prefetch"] = broken_prefetch();
    let res = app.post_json(SERVICE, &r).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Value>().await.unwrap(), json!({"cards": []}));
    // The same prefetch with an IORT order is read, and refused.
    let mut r: Value =
        serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap();
    r["prefetch"] = broken_prefetch();
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert!(body.to_string().contains("prefetch"), "{body}");
}

#[tokio::test]
async fn without_an_iort_order_the_rest_of_the_request_is_still_validated() {
    let app = spawn_app().await;
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut r = medication_request();
        edit(&mut r);
        r
    };
    // Malformed context (or envelope): 400 naming it, as without the fast path; with a broken
    // prefetch too, still 400 (the full path's error, which names the prefetch first).
    for (r, path) in [
        (with(&|r| r["context"]["patientId"] = json!(5)), "patientId"),
        (
            with(&|r| {
                r["context"]["draftOrders"]["entry"][0] = json!({"fullUrl": "urn:uuid:x"});
            }),
            "draftOrders",
        ),
        (
            with(&|r| r["context"]["draftOrders"]["resourceType"] = json!("Patient")),
            "draftOrders",
        ),
        (
            with(&|r| r["hookInstance"] = json!("not-a-uuid")),
            "hookInstance",
        ),
    ] {
        let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
        assert!(body.to_string().contains(path), "{path}: {body}");
        let mut r = r;
        r["prefetch"] = broken_prefetch();
        assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    }
    // A prefetch that is not even an object is refused.
    let r = with(&|r| r["prefetch"] = json!([1]));
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 400).await;
    assert!(body.to_string().contains("prefetch"), "{body}");
    // A declared prefetch key missing, with no fhirServer to fetch it from: 412.
    let mut r = medication_request();
    r.as_object_mut().unwrap().remove("prefetch");
    let body = assert_outcome(app.post_json(SERVICE, &r).await, 412).await;
    assert_eq!(body["issue"][0]["expression"][0], "prefetch.conditions");
}

#[tokio::test]
async fn feedback_is_validated_and_accepted() {
    let app = spawn_app().await;
    let path = "/cds-services/iort-coverage/feedback";
    let ok = json!({"feedback": [
        {"card": "9368d37b-283f-44a0-93ea-547cebab93ce", "outcome": "accepted",
         "acceptedSuggestions": [{"id": "e56e1945-20b3-4393-8503-a1a20fd73152"}],
         "outcomeTimestamp": "2026-11-26T10:00:00Z"},
        {"card": "9368d37b-283f-44a0-93ea-547cebab93ce", "outcome": "overridden",
         "overrideReason": {"reason": {"system": "https://iort-cds.github.io/fhir/CodeSystem/override-reason", "code": "will-document", "display": "Will document"},
                            "userComment": "free text"},
         "outcomeTimestamp": "2026-11-26T10:01:00Z"}]});
    let res = app.post_json(path, &ok).await;
    assert_eq!(res.status(), 200);
    // the same feedback twice is fine
    assert_eq!(app.post_json(path, &ok).await.status(), 200);
    // Issue 15: what a client plausibly sends is a report, accepted: an accepted card that had
    // no suggestions, a reason beside "accepted", suggestions beside "overridden", no or an
    // odd timestamp, an unknown member.
    let plausible = json!({"feedback": [
        {"card": "c1", "outcome": "accepted", "acceptedSuggestions": [],
         "outcomeTimestamp": "2026-11-26T10:00:00Z"},
        {"card": "c1", "outcome": "accepted", "overrideReason": {"userComment": "x"},
         "outcomeTimestamp": "2026-11-26T10:00:00.123456789+01:00"},
        {"card": "c1", "outcome": "overridden", "acceptedSuggestions": [{"id": "s1"}]},
        {"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-26", "extension": {}}]});
    assert_eq!(app.post_json(path, &plausible).await.status(), 200);
    // what cannot be feedback is refused
    for (body, at) in [
        (
            json!({"feedback": [{"outcome": "accepted"}]}),
            "feedback[0]",
        ),
        (
            json!({"feedback": [{"card": "", "outcome": "accepted"}]}),
            "feedback[0].card",
        ),
        (json!({"feedback": "accepted"}), "feedback"),
        (json!({"cards": []}), ""),
    ] {
        let body = assert_outcome(app.post_json(path, &body).await, 400).await;
        let expr = body["issue"][0]["expression"][0].as_str().unwrap_or("");
        assert!(expr.starts_with(at), "{expr} for {at}");
    }
    let bad = json!({"feedback": [{"card": "x", "outcome": "ignored", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]});
    let body = assert_outcome(app.post_json(path, &bad).await, 400).await;
    assert_eq!(body["issue"][0]["expression"][0], "feedback[0].outcome");
    assert_outcome(
        app.post_raw(path, "application/json", b"[".to_vec()).await,
        400,
    )
    .await;
}

#[tokio::test]
async fn health_and_readiness() {
    let app = spawn_app().await;
    let res = app.get("/healthz").await;
    assert_eq!(res.status(), 200);
    let res = app.get("/readyz").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ready");
}

#[tokio::test]
async fn two_hundred_concurrent_requests_are_all_answered() {
    let app = spawn_app().await;
    let body = medication_request();
    let iort = fixture_or_example();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let client = app.client.clone();
        let url = format!("{}{SERVICE}", app.address);
        let b = if i % 2 == 0 {
            body.clone()
        } else {
            iort.clone()
        };
        tasks.push(tokio::spawn(async move {
            let res = client
                .post(url)
                .header("Content-Type", "application/json")
                .body(b.to_string())
                .send()
                .await
                .unwrap();
            (i, res.status().as_u16(), res.json::<Value>().await.unwrap())
        }));
    }
    for t in tasks {
        let (i, status, v) = t.await.unwrap();
        assert_eq!(status, 200, "request {i}");
        assert!(v["cards"].is_array(), "request {i}: {v}");
        if i % 2 == 0 {
            assert_eq!(v, json!({"cards": []}));
        }
    }
}

fn fixture_or_example() -> Value {
    serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap()
}

#[test]
fn evaluate_command_takes_the_same_path() {
    let exe = env!("CARGO_BIN_EXE_iort-cds");
    let out = std::process::Command::new(exe)
        .args([
            "evaluate",
            concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/examples/order-sign-medication.json"
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, json!({"cards": []}));
    // a refused request prints an OperationOutcome and fails
    let out = std::process::Command::new(exe)
        .args(["evaluate", "-"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["resourceType"], "OperationOutcome");
    let _ = fixture; // shared helper, used by other test binaries
}

/// Issue 15: global options work before or after the subcommand, for every subcommand; serve
/// options may come before `serve`; `evaluate` says nothing on stderr when all goes well.
#[test]
fn global_options_go_before_or_after_the_subcommand() {
    let exe = env!("CARGO_BIN_EXE_iort-cds");
    let dir = std::env::temp_dir().join(format!("iort-cli-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("c.toml");
    std::fs::write(&config, "log_level = \"info\"\n").unwrap();
    let config = config.to_str().unwrap();
    let example = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/examples/order-sign-medication.json"
    );
    for args in [
        vec!["--config", config, "evaluate", example],
        vec!["evaluate", "--config", config, example],
        vec!["evaluate", example, "--log-level", "warn"],
    ] {
        let out = std::process::Command::new(exe)
            .args(&args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.stderr.is_empty(),
            "{args:?} wrote to stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // a missing file named before the subcommand is read (and refused), not ignored
    let out = std::process::Command::new(exe)
        .args(["--config", "/nonexistent/iort.toml", "evaluate", example])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // serve: the global option before `serve`, a serve option before or after it
    for args in [
        vec!["--config", config, "serve", "--listen", "127.0.0.1:0"],
        vec!["--listen", "127.0.0.1:0", "serve", "--config", config],
        vec!["--config", config, "--listen", "127.0.0.1:0"],
    ] {
        let mut child = std::process::Command::new(exe)
            .args(&args)
            // the audit store in a temp file, not ./iort-cds.db in the checkout
            .env("IORT_CDS_STORE_URL", crate::common::temp_sqlite_url())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Started: one line on stdout names the address the system chose for port 0, and
        // the service answers there.
        let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        let _ = std::io::BufRead::read_line(&mut stdout, &mut line);
        let port: Option<u16> = line
            .trim()
            .strip_prefix("iort-cds listening on http://127.0.0.1:")
            .and_then(|p| p.parse().ok())
            .filter(|p| *p != 0);
        let answer = port.map(|port| {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            stream
                .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                .unwrap();
            let mut answer = String::new();
            let _ = stream.read_to_string(&mut answer);
            answer
        });
        let _ = child.kill();
        let _ = child.wait();
        assert!(port.is_some(), "{args:?}: {line}");
        assert!(
            answer.is_some_and(|a| a.starts_with("HTTP/1.1 200")),
            "{args:?}: nothing answers on {line}"
        );
    }
    // serve options do not apply to evaluate
    let out = std::process::Command::new(exe)
        .args(["--listen", "127.0.0.1:0", "evaluate", example])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    std::fs::remove_dir_all(&dir).ok();
}

/// A plain HTTP/1.1 GET of `/healthz` on `stream`; the status line of the answer, or `None`
/// when the connection is closed (or nothing comes within `wait`).
async fn healthz_on(
    stream: &mut tokio::net::TcpStream,
    wait: std::time::Duration,
) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .ok()?;
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(wait, stream.read(&mut buf))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| {
        String::from_utf8_lossy(&buf[..n])
            .lines()
            .next()
            .unwrap_or("")
            .to_owned()
    })
}

/// `n` connections, each sending the head of a POST of `body` and its first `first` bytes,
/// then the rest of the body to send when the test says so.
async fn half_sent_bodies(
    app: &common::TestApp,
    body: &[u8],
    first: usize,
    n: usize,
) -> Vec<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let head = format!(
        "POST {SERVICE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", app.port))
            .await
            .expect("connects");
        s.write_all(head.as_bytes()).await.expect("head");
        s.write_all(&body[..first]).await.expect("first part");
        streams.push(s);
    }
    streams
}

/// The status line of the answer on `stream` (read to its end; a hang guard of 60 s).
async fn status_line(mut stream: tokio::net::TcpStream) -> String {
    use tokio::io::AsyncReadExt;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        stream.read_to_end(&mut answer),
    )
    .await;
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

/// Large bodies arriving together: each takes part of the in-flight budget as its bytes come,
/// the budget runs out, and each needs more room that only another could give back. Before the
/// overdraft every one of them was answered 503 after waiting 10 s (64 connections of 868 KB
/// records under the load test); now one at a time reads past the budget and all are answered.
#[tokio::test]
async fn large_bodies_arriving_together_never_deadlock_the_body_budget() {
    use tokio::io::AsyncWriteExt;
    const KIB: usize = 1024;
    let app = common::spawn_app_with(|s| {
        s.max_body_bytes = 64 * KIB;
        s.limits.max_inflight_body_bytes = 64 * KIB;
    })
    .await;
    // A no-IORT call padded to 40 KiB: eight of them are five budgets' worth.
    let mut body = medication_request();
    body["extension"] = json!({"pad": "x".repeat(40 * KIB)});
    let body = body.to_string().into_bytes();
    let mut streams = half_sent_bodies(&app, &body, 16 * KIB, 8).await;
    // Let the service read the first parts (and hand out the whole budget), then the rest.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    for s in &mut streams {
        s.write_all(&body[16 * KIB..]).await.expect("the rest");
    }
    let answers = futures_util::future::join_all(streams.into_iter().map(status_line)).await;
    for status in &answers {
        assert_eq!(status, "HTTP/1.1 200 OK", "{answers:?}");
    }
}

/// One overdraft per call thread. Four bodies have filled the budget half-read; two of them then
/// send the rest and must read past the budget together, each call going on to fetch its record
/// from a FHIR server that takes its time. With a single overdraft the second body waited until
/// the first call was answered, and under load one core sat idle (heavy records at 64
/// connections: 34 calls/s, against 68 at 2 connections).
#[tokio::test]
async fn each_call_thread_may_read_one_body_past_a_full_budget() {
    use tokio::io::AsyncWriteExt;
    use wiremock::matchers::method;
    use wiremock::{Mock, MockServer, ResponseTemplate};
    const KIB: usize = 1024;
    let fhir = MockServer::start().await;
    // Every search takes 3 s and finds nothing: the call stays in its fetch, holding its room.
    Mock::given(method("GET"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"resourceType": "Bundle", "type": "searchset"}))
                .set_delay(std::time::Duration::from_secs(3)),
        )
        .mount(&fhir)
        .await;
    let app = common::spawn_app_with(|s| {
        s.call_threads = Some(2);
        s.max_body_bytes = 64 * KIB;
        s.limits.max_inflight_body_bytes = 64 * KIB;
        // The two stalled bodies below must keep their room for the whole test.
        s.limits.min_body_bytes_per_sec = 1;
        s.limits.body_timeout_ms = 60_000;
        s.fhir.timeout_ms = 20_000;
    })
    .await;
    // The IORT example without its prefetch, so the call fetches its record; padded to 40 KiB.
    let mut body: Value =
        serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap();
    body.as_object_mut().unwrap().remove("prefetch");
    body["fhirServer"] = json!(format!("{}/fhir", fhir.uri()));
    body["extension"] = json!({"pad": "x".repeat(40 * KIB)});
    let body = body.to_string().into_bytes();
    let mut streams = half_sent_bodies(&app, &body, 16 * KIB, 4).await;
    // Let the service read the first parts: the whole budget is now held by partly read bodies.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let stalled = streams.split_off(2);
    for s in &mut streams {
        s.write_all(&body[16 * KIB..]).await.expect("the rest");
    }
    let answers: Vec<_> = streams
        .into_iter()
        .map(|s| tokio::spawn(status_line(s)))
        .collect();
    // Both calls reach the FHIR server before either is answered (each asks for its Conditions
    // once). With one overdraft, the second call's searches began only after the first answer.
    let both_fetching = async {
        loop {
            let conditions = fhir
                .received_requests()
                .await
                .unwrap_or_default()
                .iter()
                .filter(|r| r.url.path().ends_with("/Condition"))
                .count();
            if conditions >= 2 {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    };
    // A hang guard only: without the fix, this is reached after the first answer.
    tokio::time::timeout(std::time::Duration::from_secs(30), both_fetching)
        .await
        .expect("both calls fetched their records");
    assert!(
        answers.iter().all(|a| !a.is_finished()),
        "one call was answered before the other could read its body"
    );
    for answer in answers {
        assert_eq!(answer.await.unwrap(), "HTTP/1.1 200 OK");
    }
    drop(stalled);
}

#[tokio::test]
async fn connections_are_bounded_and_idle_ones_closed() {
    use std::time::Duration;
    use tokio::io::AsyncReadExt;
    let app = common::spawn_app_with(|s| {
        s.workers = Some(1);
        s.limits.max_connections = 1;
        s.limits.idle_timeout_ms = 800;
    })
    .await;
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", app.port));
    // The one connection allowed is served ...
    let mut first = connect().await.unwrap();
    let status = healthz_on(&mut first, Duration::from_secs(2)).await;
    assert_eq!(status.as_deref(), Some("HTTP/1.1 200 OK"));
    // ... a second one waits while the first is open ...
    let mut second = connect().await.unwrap();
    assert_eq!(
        healthz_on(&mut second, Duration::from_millis(400)).await,
        None,
        "served beyond limits.max_connections"
    );
    // ... and once the first has been idle longer than limits.idle_timeout_ms it is closed,
    // and the second is served.
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(3), first.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "an idle connection is closed");
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(3), second.read(&mut buf))
        .await
        .expect("the waiting connection is served")
        .unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&buf[..n])
    );
}

#[tokio::test]
async fn wrong_methods_name_the_allowed_ones_and_head_works_on_get_routes() {
    let app = common::spawn_app().await;
    for (path, allow) in [
        ("/cds-services", "GET, HEAD"),
        ("/healthz", "GET, HEAD"),
        (SERVICE, "POST"),
    ] {
        let res = app
            .client
            .delete(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 405, "{path}");
        assert_eq!(
            res.headers().get("allow").and_then(|v| v.to_str().ok()),
            Some(allow),
            "{path}"
        );
    }
    for path in ["/cds-services", "/healthz", "/readyz"] {
        let res = app
            .client
            .head(format!("{}{path}", app.address))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert!(
            res.bytes().await.unwrap().is_empty(),
            "{path}: HEAD has no body"
        );
    }
}

#[tokio::test]
async fn a_huge_hook_value_is_not_echoed_whole() {
    let app = common::spawn_app().await;
    let mut body = medication_request();
    body["hook"] = json!("h".repeat(250_000));
    let res = app.post_json(SERVICE, &body).await;
    assert_eq!(res.status(), 400);
    let text = res.text().await.unwrap();
    assert!(text.len() < 2_000, "echoed {} bytes", text.len());
}

/// CDS Hooks 2.0: a client that fails to prefetch a key may send an OperationOutcome in its
/// place. With an error, the data exists but could not be read: the answer is `indeterminate`
/// (never "document the cancer" for a diagnosis the chart may well hold), and no FHIR server
/// is needed for it; with a warning only, it is an empty answer.
#[tokio::test]
async fn a_prefetch_key_sent_as_an_operation_outcome_error_makes_the_answer_indeterminate() {
    let app = spawn_app().await;
    let outcome = |severity: &str| {
        json!({"resourceType": "OperationOutcome",
               "issue": [{"severity": severity, "code": "timeout",
                          "diagnostics": "Condition search timed out"}]})
    };
    let mut request = fixture_or_example();
    request["prefetch"]["conditions"] = outcome("error");
    let res = app.post_json(SERVICE, &request).await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let card = &body["cards"][0];
    assert!(
        card["summary"]
            .as_str()
            .unwrap()
            .contains("could not be read"),
        "{card}"
    );
    let detail = card["detail"].as_str().unwrap();
    assert!(
        detail.contains("conditions: the EHR could not provide it"),
        "{detail}"
    );
    assert!(
        !detail.contains("timed out"),
        "the client's diagnostics are not echoed"
    );
    let text = body.to_string();
    assert!(text.contains("\"indeterminate\""), "{text}");

    request["prefetch"]["conditions"] = outcome("warning");
    let body: Value = app.post_json(SERVICE, &request).await.json().await.unwrap();
    let text = body.to_string();
    assert!(
        !text.contains("\"indeterminate\""),
        "a warning is not a failure: {text}"
    );
}
