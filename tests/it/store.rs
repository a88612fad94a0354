//! The audit store (issue 17), through the real HTTP API: what a call and its feedback leave
//! in the database (SQLite here; PostgreSQL below, on a throwaway cluster), the `assertions`
//! commands reading it back, a database that goes away and comes back while calls flow, a full
//! queue, and two instances sharing one PostgreSQL (records and the JWT replay memory).

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use iort_cds::auth::TrustedIssuer;
use iort_cds::configuration::Settings;
use iort_cds::store::{Reader, StoreSettings};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p384::elliptic_curve::sec1::ToEncodedPoint as _;
use p384::pkcs8::EncodePrivateKey as _;
use rand_core::OsRng;
use serde_json::{Value, json};

use crate::common::{self, TestApp, spawn_app_with};
use crate::support::postgres::Postgres;

const SERVICE: &str = "/cds-services/iort-coverage";

fn order_sign() -> Value {
    let path = format!(
        "{}/examples/order-sign-iort.json",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_json::from_str(&std::fs::read_to_string(path).expect("example")).expect("json")
}

fn store_at(url: &str) -> StoreSettings {
    StoreSettings {
        url: Some(url.to_owned()),
        ..StoreSettings::default()
    }
}

/// The `coverage-assertion-id` and the card uuid a response handed out.
fn handed_out(response: &Value) -> (String, String) {
    let ci = response["systemActions"][0]["resource"]["extension"]
        .as_array()
        .expect("extensions")
        .last()
        .expect("coverage-information")
        .clone();
    let id = ci["extension"]
        .as_array()
        .expect("sub-extensions")
        .iter()
        .find(|e| e["url"] == "coverage-assertion-id")
        .expect("coverage-assertion-id")["valueString"]
        .as_str()
        .expect("string")
        .to_owned();
    let card = response["cards"][0]["uuid"]
        .as_str()
        .expect("uuid")
        .to_owned();
    (id, card)
}

async fn readyz(app: &TestApp) -> Value {
    let res = app.get("/readyz").await;
    assert_eq!(
        res.status(),
        200,
        "readyz stays 200 whatever the store's state"
    );
    res.json().await.expect("json")
}

/// Wait until `/readyz` reports at least `n` records written.
async fn wait_written(app: &TestApp, n: u64, within: Duration) -> Value {
    let start = Instant::now();
    loop {
        let r = readyz(app).await;
        if r["store"]["stats"]["records_written"].as_u64() >= Some(n) {
            return r;
        }
        assert!(
            start.elapsed() < within,
            "{n} records not written within {within:?}: {r}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn call(app: &TestApp) -> Value {
    let res = app.post_json(SERVICE, &order_sign()).await;
    assert_eq!(res.status(), 200);
    res.json().await.expect("json")
}

#[tokio::test]
async fn a_call_and_its_feedback_are_recorded_and_read_back() {
    let url = common::temp_sqlite_url();
    let app = spawn_app_with(|s| s.store = store_at(&url)).await;
    let response = call(&app).await;
    let (assertion, card) = handed_out(&response);
    let feedback = json!({"feedback": [{"card": card, "outcome": "overridden",
        "overrideReason": {"reason": {"system": "https://iort-cds.github.io/fhir/CodeSystem/override-reason",
            "code": "will-document", "display": "Will document"}, "userComment": "free text"},
        "outcomeTimestamp": "2026-11-26T10:01:00Z"}]});
    assert_eq!(
        app.post_json(&format!("{SERVICE}/feedback"), &feedback)
            .await
            .status(),
        200
    );
    let ready = wait_written(&app, 2, Duration::from_secs(10)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["store"]["stats"]["records_dropped"], 0);
    // The writer's own timing, for the operator (and BENCHMARKS.md): batches and their time.
    let stats = &ready["store"]["stats"];
    assert!(stats["batches_written"].as_u64() >= Some(1), "{stats}");
    assert!(
        stats["batches_written"].as_u64() <= stats["records_written"].as_u64(),
        "{stats}"
    );
    assert!(stats["write_micros"].as_u64() > Some(0), "{stats}");

    let reader = Reader::open(&store_at(&url)).await.expect("open");
    let d = reader.show(&assertion).await.expect("read").expect("found");
    assert_eq!(d["assertionId"], assertion.as_str());
    assert_eq!(d["covered"], "covered");
    assert_eq!(d["patientId"], "pat-rc-001");
    assert_eq!(d["order"], "ServiceRequest/sr-iort-1");
    assert_eq!(d["billingCode"], "http://www.ama-assn.org/go/cpt|77425");
    assert_eq!(d["policy"]["effective"], "2024-09-03");
    assert_eq!(d["card"]["uuid"], card.as_str());
    assert_eq!(d["card"]["summary"], response["cards"][0]["summary"]);
    let criteria = d["criteria"].as_array().expect("criteria");
    assert_eq!(criteria.len(), 3);
    assert!(
        criteria
            .iter()
            .all(|c| c["value"] == "met" && !c["evidence"].as_array().expect("refs").is_empty()),
        "{criteria:?}"
    );
    assert_eq!(d["call"]["hook"], "order-sign");
    assert_eq!(
        d["call"]["response"], response,
        "the response body as answered"
    );
    assert_eq!(
        d["call"]["request"],
        Value::Null,
        "request bodies are off by default"
    );
    assert_eq!(d["feedback"][0]["outcome"], "overridden");
    assert_eq!(d["feedback"][0]["overrideReason"], "will-document");
    assert_eq!(d["feedback"][0]["hasComment"], true);
    let all = reader
        .list(Some("pat-rc-001"), None, 100)
        .await
        .expect("list");
    assert_eq!(all.len(), 1);
    assert!(
        reader
            .list(Some("someone-else"), None, 100)
            .await
            .expect("list")
            .is_empty()
    );
    assert!(
        reader
            .list(None, Some("2999-01-01"), 100)
            .await
            .expect("list")
            .is_empty()
    );
    assert_eq!(
        reader
            .list(None, Some("2000-01-01"), 100)
            .await
            .expect("list")
            .len(),
        1
    );
    // The free-text comment is never stored.
    let file = std::fs::read(url.trim_start_matches("sqlite://")).expect("db file");
    assert!(!String::from_utf8_lossy(&file).contains("free text"));
}

/// A call with no IORT order is answered on the fast path, before its prefetch is parsed, and
/// recorded all the same, with the ids the record names.
#[tokio::test]
async fn a_call_without_iort_orders_is_recorded_too() {
    let url = common::temp_sqlite_url();
    let app = spawn_app_with(|s| s.store = store_at(&url)).await;
    let request: Value =
        serde_json::from_str(include_str!("../../examples/order-sign-medication.json"))
            .expect("the example");
    let res = app.post_json(SERVICE, &request).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.expect("JSON"),
        json!({"cards": []})
    );
    wait_written(&app, 1, Duration::from_secs(10)).await;
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .expect("the store's file opens");
    let row: (String, String, String, String) =
        sqlx::query_as("SELECT hook, hook_instance, patient_id, response_body FROM hook_calls")
            .fetch_one(&mut db)
            .await
            .expect("one call recorded");
    assert_eq!(row.0, "order-sign");
    assert_eq!(row.1, request["hookInstance"].as_str().expect("an id"));
    assert_eq!(
        row.2,
        request["context"]["patientId"].as_str().expect("an id")
    );
    assert_eq!(row.3, r#"{"cards":[]}"#);
}

#[tokio::test]
async fn request_bodies_are_kept_only_when_asked() {
    let url = common::temp_sqlite_url();
    let app = spawn_app_with(|s| {
        s.store = StoreSettings {
            keep_requests: true,
            ..store_at(&url)
        }
    })
    .await;
    let (assertion, _) = handed_out(&call(&app).await);
    wait_written(&app, 1, Duration::from_secs(10)).await;
    let reader = Reader::open(&store_at(&url)).await.expect("open");
    let d = reader.show(&assertion).await.expect("read").expect("found");
    assert_eq!(d["call"]["request"], order_sign());
}

#[tokio::test]
async fn the_assertions_commands_read_the_same_configuration_as_serve() {
    let url = common::temp_sqlite_url();
    let app = spawn_app_with(|s| s.store = store_at(&url)).await;
    let (assertion, _) = handed_out(&call(&app).await);
    wait_written(&app, 1, Duration::from_secs(10)).await;
    let config = std::env::temp_dir().join(format!("iort-store-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&config, format!("[store]\nurl = \"{url}\"\n")).expect("config");
    let exe = env!("CARGO_BIN_EXE_iort-cds");
    let run = |args: &[&str]| {
        let out = std::process::Command::new(exe)
            .args(args)
            .env_remove("IORT_CDS_STORE_URL")
            .output()
            .expect("run iort-cds");
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let config = config.display().to_string();
    // --config before and after the subcommand; --store-url instead of the file.
    let shown: Value = serde_json::from_str(&run(&[
        "--config",
        &config,
        "assertions",
        "show",
        &assertion,
    ]))
    .expect("json");
    assert_eq!(shown["assertionId"], assertion.as_str());
    let listed: Value = serde_json::from_str(&run(&[
        "assertions",
        "list",
        "--patient",
        "pat-rc-001",
        "--json",
        "--config",
        &config,
    ]))
    .expect("json");
    assert_eq!(listed[0]["assertionId"], assertion.as_str());
    let table = run(&[
        "assertions",
        "list",
        "--store-url",
        &url,
        "--since",
        "2000-01-01",
    ]);
    assert!(table.starts_with("DECIDED AT"), "{table}");
    assert!(table.contains(&assertion), "{table}");
    let out = std::process::Command::new(exe)
        .args(["assertions", "show", "no-such-id", "--store-url", &url])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_file(&config).expect("remove the config file");
}

#[tokio::test]
async fn a_full_queue_drops_counts_and_shows_degraded_but_calls_are_answered() {
    // A database that can never be opened: records wait, then overflow.
    let url = "sqlite:///nonexistent-dir-iort-cds/x.db".to_owned();
    let app = spawn_app_with(|s| {
        s.store = StoreSettings {
            queue_capacity: 2,
            ..store_at(&url)
        }
    })
    .await;
    for _ in 0..5 {
        call(&app).await;
    }
    let r = readyz(&app).await;
    assert_eq!(r["status"], "degraded", "{r}");
    assert_eq!(r["store"]["stats"]["records_dropped"], 3, "{r}");
    assert_eq!(r["store"]["stats"]["queue_depth"], 2, "{r}");
    let why = r["store"]["degraded"].to_string();
    assert!(why.contains("overflowed"), "{why}");
    // The operator's scraper sees the same queue.
    let metrics = app.get("/metrics").await.text().await.expect("a body");
    assert!(
        metrics.contains("\niort_cds_store_queue_depth 2\n"),
        "{metrics}"
    );
}

/// `sql`'s count of the rows of run `run` (its request ids start with it).
async fn count(db: &mut sqlx::AnyConnection, sql: &str, run: &str) -> i64 {
    sqlx::query_as::<_, (i64,)>(sql)
        .bind(format!("{run}-%"))
        .fetch_one(db)
        .await
        .expect("a count")
        .0
}

/// A record the database refuses for what it holds (here a rule added for the test refuses
/// patient `poison`) is tried three times and set aside, counted and shown on `/readyz`; the
/// records written with it in one batch statement are written one by one instead. A record
/// written twice (a retry after a lost commit answer) is kept once.
async fn a_refused_record_is_set_aside_and_the_rest_written(url: &str, refuse: &str) {
    use iort_cds::store::Store;
    let store = Store::start(&store_at(url))
        .expect("settings")
        .expect("enabled");
    let run = uuid::Uuid::new_v4().to_string();
    store.submit_call(bench_record(&run, 100, None));
    let start = Instant::now();
    while store.stats().records_written < 1 {
        assert!(start.elapsed() < Duration::from_secs(20), "never written");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .expect("the store's database");
    sqlx::query(refuse)
        .execute(&mut db)
        .await
        .expect("the refusal rule");
    // Submitted together: one batch (the writer gathers them), the third one refused.
    for n in 0..5 {
        let mut r = bench_record(&run, n, Some(r#"{"cards":[]}"#));
        if n == 2 {
            r.header.patient_id = "poison".to_owned();
        }
        store.submit_call(r);
    }
    store.submit_call(bench_record(&run, 0, Some(r#"{"cards":[]}"#)));
    assert!(store.close(Duration::from_secs(30)).await);
    let s = store.stats();
    assert_eq!((s.records_written, s.records_rejected), (6, 1), "{s:?}");
    assert!(s.write_failures >= 3, "{s:?}");
    assert!(
        store
            .degraded()
            .iter()
            .any(|why| why.contains("refused a record")),
        "{:?}",
        store.degraded()
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM hook_calls WHERE request_id LIKE $1",
            &run
        )
        .await,
        5
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM determinations WHERE request_id LIKE $1",
            &run
        )
        .await,
        4,
        "each written call's determination, the refused call's none"
    );
    assert_eq!(
        count(
            &mut db,
            "SELECT COUNT(*) FROM hook_calls WHERE request_id LIKE $1 AND patient_id = 'poison'",
            &run
        )
        .await,
        0
    );
}

/// Every column of a call and of its determinations reads back exactly as it was submitted:
/// characters that a text format would have to escape (tab, line breaks, backslash, `\N`,
/// `\.`), quotes, non-ASCII, empty text, a long value, and NULLs. Then the first record comes
/// again in a later batch beside a new one (a retry after a commit whose answer was lost):
/// it is kept once, and the new one is written.
async fn every_value_reads_back_as_written(url: &str) {
    use iort_cds::store::{OrderRecord, Store};
    let awkward = "tab\there\nline\r\nback\\slash \\N \\. 'quote' \"dq\" \u{e9}\u{1F600} \u{7f}";
    let run = uuid::Uuid::new_v4().to_string();
    let mut first = bench_record(&run, 0, Some(r#"{"cards":[{"summary":"a\tb\\c"}]}"#));
    first.header.patient_id = awkward.to_owned();
    first.header.encounter_id = None;
    first.header.fhir_server_host = Some(String::new());
    first.client.iss = Some(awkward.repeat(3000)); // ~120 KB
    first.request_body = Some(format!("{{\"x\":\"{}\"}}", "y".repeat(10_000)));
    first.orders.push(OrderRecord {
        order_ref: None,
        billing_code: None,
        covered: "conditional",
        criteria: "[]".to_owned(),
        policy_id: awkward.to_owned(),
        policy_version: String::new(),
        policy_effective: "2024-09-03".to_owned(),
        assertion_id: None,
        card_uuid: None,
        card_summary: Some(awkward.to_owned()),
    });
    let second = bench_record(&run, 1, None);

    let settings = StoreSettings {
        keep_requests: true,
        ..store_at(url)
    };
    let store = Store::start(&settings).expect("settings").expect("enabled");
    store.submit_call(first.clone());
    assert!(store.close(Duration::from_secs(30)).await);
    let store = Store::start(&settings).expect("settings").expect("enabled");
    store.submit_call(first.clone());
    store.submit_call(second.clone());
    assert!(store.close(Duration::from_secs(30)).await);
    assert_eq!(store.stats().records_rejected, 0, "{:?}", store.stats());

    sqlx::any::install_default_drivers();
    let mut db = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .expect("the store's database");
    type Call = (
        String,
        String,
        Option<String>,
        Option<String>,
        Option<String>,
        Option<String>,
        String,
        Option<String>,
    );
    let calls = sqlx::query_as::<_, Call>(
        "SELECT request_id, patient_id, encounter_id, fhir_server_host, client_iss, \
         client_sub, response_body, request_body FROM hook_calls \
         WHERE request_id LIKE $1 ORDER BY request_id",
    )
    .bind(format!("{run}-%"))
    .fetch_all(&mut db)
    .await
    .expect("calls");
    let expected = |r: &iort_cds::store::CallRecord| {
        (
            r.request_id.clone(),
            r.header.patient_id.clone(),
            r.header.encounter_id.clone(),
            r.header.fhir_server_host.clone(),
            r.client.iss.clone(),
            r.client.sub.clone(),
            r.response_body.clone(),
            r.request_body.clone(),
        )
    };
    assert_eq!(calls, vec![expected(&first), expected(&second)]);

    let determinations = sqlx::query_as::<
        _,
        (
            i64,
            Option<String>,
            Option<String>,
            String,
            String,
            String,
            String,
            String,
            Option<String>,
            Option<String>,
            Option<String>,
        ),
    >(
        "SELECT CAST(position AS BIGINT), order_ref, billing_code, covered, criteria, policy_id, \
         policy_version, policy_effective, assertion_id, card_uuid, card_summary \
         FROM determinations WHERE request_id = $1 ORDER BY position",
    )
    .bind(&first.request_id)
    .fetch_all(&mut db)
    .await
    .expect("determinations");
    let expected: Vec<_> = first
        .orders
        .iter()
        .enumerate()
        .map(|(i, o)| {
            (
                i64::try_from(i).expect("small"),
                o.order_ref.clone(),
                o.billing_code.clone(),
                o.covered.to_owned(),
                o.criteria.clone(),
                o.policy_id.clone(),
                o.policy_version.clone(),
                o.policy_effective.clone(),
                o.assertion_id.clone(),
                o.card_uuid.clone(),
                o.card_summary.clone(),
            )
        })
        .collect();
    assert_eq!(determinations, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_keeps_every_value_as_written() {
    every_value_reads_back_as_written(&common::temp_sqlite_url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_sets_a_refused_record_aside() {
    let url = common::temp_sqlite_url();
    // A NOT NULL violation, raised from a trigger for the one patient.
    a_refused_record_is_set_aside_and_the_rest_written(
        &url,
        "CREATE TRIGGER refuse_poison BEFORE INSERT ON hook_calls \
         WHEN NEW.patient_id = 'poison' BEGIN INSERT INTO feedback (id) VALUES ('x'); END",
    )
    .await;
}

// --- PostgreSQL -----------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_down_while_calls_flow_loses_nothing() {
    let Some(pg) = Postgres::start("store::postgres_down_while_calls_flow_loses_nothing") else {
        return;
    };
    let app = spawn_app_with(|s| s.store = store_at(&pg.url)).await;
    for _ in 0..5 {
        call(&app).await;
    }
    wait_written(&app, 5, Duration::from_secs(20)).await;

    let pg = tokio::task::spawn_blocking(move || {
        pg.stop_server();
        pg
    })
    .await
    .expect("stop");
    for _ in 0..20 {
        call(&app).await; // answered while the database is down
    }
    let start = Instant::now();
    loop {
        let r = readyz(&app).await;
        if r["status"] == "degraded" {
            assert_eq!(r["store"]["stats"]["database_reachable"], false, "{r}");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never degraded: {r}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let pg = tokio::task::spawn_blocking(move || {
        pg.start_server();
        pg
    })
    .await
    .expect("start");
    let r = wait_written(&app, 25, Duration::from_secs(30)).await;
    assert_eq!(r["store"]["stats"]["records_dropped"], 0, "{r}");
    assert_eq!(r["store"]["stats"]["queue_depth"], 0, "{r}");
    assert!(
        r["store"]["stats"]["write_failures"].as_u64() > Some(0),
        "{r}"
    );
    assert_eq!(r["status"], "ready", "{r}");
    let reader = Reader::open(&store_at(&pg.url)).await.expect("open");
    assert_eq!(reader.list(None, None, 1000).await.expect("list").len(), 25);
    drop(pg);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_sets_a_refused_record_aside() {
    let Some(pg) = Postgres::start("store::postgres_sets_a_refused_record_aside") else {
        return;
    };
    a_refused_record_is_set_aside_and_the_rest_written(
        &pg.url,
        "ALTER TABLE hook_calls ADD CONSTRAINT refuse_poison CHECK (patient_id <> 'poison')",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_keeps_every_value_as_written() {
    let Some(pg) = Postgres::start("store::postgres_keeps_every_value_as_written") else {
        return;
    };
    every_value_reads_back_as_written(&pg.url).await;
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_records_and_refuse_a_replayed_token() {
    let Some(pg) =
        Postgres::start("store::two_instances_share_records_and_refuse_a_replayed_token")
    else {
        return;
    };
    let secret = p384::SecretKey::random(&mut OsRng);
    let der = secret.to_pkcs8_der().expect("pkcs8");
    let point = secret.public_key().to_encoded_point(false);
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "x": b64(point.x().expect("x")),
        "y": b64(point.y().expect("y")), "kid": "k1", "use": "sig", "alg": "ES384"}]});
    let iss = "https://ehr.example.org";
    // Both instances behind one public name, as behind a load balancer.
    let public = "https://cds.example.org";
    let configure = |s: &mut Settings| {
        s.store = store_at(&pg.url);
        s.public_base_url = Some(public.to_owned());
        s.auth.issuers = vec![TrustedIssuer {
            iss: iss.to_owned(),
            jwks_url: None,
            jwks: Some(jwks.clone()),
            allowed_jku: vec![],
            tenants: vec![],
            fhir_servers: vec![],
        }];
    };
    let a = spawn_app_with(configure).await;
    let b = spawn_app_with(configure).await;
    let key = EncodingKey::from_ec_der(der.as_bytes());
    let token = |jti: &str| {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("time")
            .as_secs();
        let mut header = Header::new(Algorithm::ES384);
        header.kid = Some("k1".to_owned());
        let claims = json!({"iss": iss, "sub": "client-1", "aud": format!("{public}{SERVICE}"),
            "exp": now + 300, "iat": now, "jti": jti});
        jsonwebtoken::encode(&header, &claims, &key).expect("sign")
    };
    let send = |app: &TestApp, token: String| {
        app.client
            .post(format!("{}{SERVICE}", app.address))
            .header("Content-Type", "application/json")
            .bearer_auth(token)
            .body(order_sign().to_string())
            .send()
    };
    let jti_a = format!("jti-a-{}", uuid::Uuid::new_v4());
    let jti_b = format!("jti-b-{}", uuid::Uuid::new_v4());
    let first = send(&a, token(&jti_a)).await.expect("sent");
    assert_eq!(first.status(), 200);
    let response_a: Value = first.json().await.expect("json");
    let (assertion_a, _) = handed_out(&response_a);
    // The same token at the other instance: refused there, though that instance never saw it.
    assert_eq!(send(&b, token(&jti_a)).await.expect("sent").status(), 401);
    let second = send(&b, token(&jti_b)).await.expect("sent");
    assert_eq!(second.status(), 200);
    let response_b: Value = second.json().await.expect("json");
    let (assertion_b, _) = handed_out(&response_b);
    assert_eq!(send(&a, token(&jti_b)).await.expect("sent").status(), 401);
    wait_written(&a, 1, Duration::from_secs(20)).await;
    wait_written(&b, 1, Duration::from_secs(20)).await;

    let reader = Reader::open(&store_at(&pg.url)).await.expect("open");
    let listed = reader.list(None, None, 100).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (assertion, jti, response) in [
        (&assertion_a, &jti_a, &response_a),
        (&assertion_b, &jti_b, &response_b),
    ] {
        let d = reader.show(assertion).await.expect("read").expect("found");
        // The response body as answered (it travels to PostgreSQL as JSON, not as a string).
        assert_eq!(&d["call"]["response"], response);
        assert_eq!(d["call"]["client"]["iss"], iss);
        assert_eq!(d["call"]["client"]["sub"], "client-1");
        assert_eq!(
            d["call"]["client"]["jtiSha256"],
            iort_cds::store::records::sha256_hex(jti).as_str()
        );
        assert!(
            !d.to_string().contains(jti.as_str()),
            "the jti is stored only hashed"
        );
    }
    drop(reader);

    // PostgreSQL gone: tokens are still checked (this instance's memory) and calls answered;
    // /readyz says the shared replay memory is unavailable.
    let pg = tokio::task::spawn_blocking(move || {
        pg.stop_server();
        pg
    })
    .await
    .expect("stop");
    let jti_c = format!("jti-c-{}", uuid::Uuid::new_v4());
    assert_eq!(send(&a, token(&jti_c)).await.expect("sent").status(), 200);
    assert_eq!(send(&a, token(&jti_c)).await.expect("sent").status(), 401);
    let r = readyz(&a).await;
    assert_eq!(r["status"], "degraded", "{r}");
    assert!(r["store"]["degraded"].to_string().contains("replay"), "{r}");
    assert!(
        r["store"]["stats"]["replay_fallbacks"].as_u64() >= Some(1),
        "{r}"
    );
    drop(pg);
}

// --- The writer's cost (a measurement, not a check) -----------------------------------------

/// CPU seconds used so far by this process (all threads) and, with `server`, by a PostgreSQL
/// server and its live and exited backends: what the writer takes from the calls.
fn cpu_seconds(server: Option<u32>) -> (f64, f64) {
    // utime, stime, cutime, cstime are fields 14-17; the name (field 2) may hold spaces.
    fn ticks(pid: &str, with_children: bool) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let f: Vec<u64> = rest
            .split(' ')
            .skip(11)
            .take(4)
            .filter_map(|v| v.parse().ok())
            .collect();
        Some(f[0] + f[1] + if with_children { f[2] + f[3] } else { 0 })
    }
    let tick = 100.0; // USER_HZ on Linux
    let own = ticks("self", false).unwrap_or(0) as f64 / tick;
    let Some(server) = server else {
        return (own, 0.0);
    };
    let mut total = ticks(&server.to_string(), true).unwrap_or(0);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let pid = entry.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let ppid = stat[close + 2..].split(' ').nth(1);
        if ppid == Some(server.to_string().as_str()) {
            total += ticks(&pid, false).unwrap_or(0);
        }
    }
    (own, total as f64 / tick)
}

/// The postmaster serving `port` (its command line names the port).
fn postmaster_of(port: &str) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_string_lossy().parse().ok()?;
        let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        let cmd = String::from_utf8_lossy(&cmd);
        (cmd.contains("postgres\0") && cmd.contains(&format!("\0-p\0{port}\0"))).then_some(pid)
    })
}

fn bench_record(run: &str, n: usize, typical: Option<&str>) -> iort_cds::store::CallRecord {
    use iort_cds::store::{CallHeader, CallRecord, ClientRecord, OrderRecord, records};
    let orders = match typical {
        None => vec![],
        Some(_) => vec![OrderRecord {
            order_ref: Some("ServiceRequest/sr-iort-1".to_owned()),
            billing_code: Some("http://www.ama-assn.org/go/cpt|77425".to_owned()),
            covered: "covered",
            criteria: json!([
                {"criterion": "rectal-cancer", "value": "met", "evidence": ["Condition/c1"]},
                {"criterion": "margins", "value": "met", "evidence": ["Observation/o1", "Procedure/p1"]},
                {"criterion": "t4-or-recurrent", "value": "met", "evidence": ["Observation/o2"]},
            ])
            .to_string(),
            policy_id: "BCBSAZ Intraoperative Radiotherapy".to_owned(),
            policy_version: "O1033 2024-09-03".to_owned(),
            policy_effective: "2024-09-03".to_owned(),
            // Time-ordered, as the service hands them out (`render`).
            assertion_id: Some(uuid::Uuid::now_v7().to_string()),
            card_uuid: Some(uuid::Uuid::now_v7().to_string()),
            card_summary: Some("IORT: covered under the BCBS Arizona policy".to_owned()),
        }],
    };
    CallRecord {
        request_id: format!("{run}-{n}"),
        received_at: records::now_text(),
        service_id: "iort-coverage".to_owned(),
        header: CallHeader {
            hook: "order-sign".to_owned(),
            hook_instance: uuid::Uuid::new_v4().to_string(),
            patient_id: format!("pat-{}", n % 1000),
            encounter_id: Some(format!("enc-{}", n % 3000)),
            fhir_server_host: Some("ehr.example.org".to_owned()),
        },
        client: ClientRecord::default(),
        orders,
        response_body: typical.unwrap_or(r#"{"cards":[]}"#).to_owned(),
        request_body: None,
    }
}

/// Push `count` records through a fresh store on `url` (all at once, or `rate` a second) and
/// print what it cost.
async fn bench_run(
    label: &str,
    url: &str,
    server: Option<u32>,
    typical: Option<&str>,
    count: usize,
    rate: Option<usize>,
) {
    use iort_cds::store::Store;
    let run = format!("{label}-{}", uuid::Uuid::new_v4());
    let store = Store::start(&StoreSettings {
        queue_capacity: count + 10,
        ..store_at(url)
    })
    .expect("settings")
    .expect("enabled");
    store.submit_call(bench_record(&run, usize::MAX, typical));
    while store.stats().records_written < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut records: Vec<_> = (0..count).map(|n| bench_record(&run, n, typical)).collect();
    if label.contains("random ids") {
        // As before the service's ids were time-ordered: version 4, random.
        for order in records.iter_mut().flat_map(|r| r.orders.iter_mut()) {
            order.assertion_id = Some(uuid::Uuid::new_v4().to_string());
            order.card_uuid = Some(uuid::Uuid::new_v4().to_string());
        }
    }
    let before = store.stats();
    let (own0, server0) = cpu_seconds(server);
    let started = Instant::now();
    match rate {
        None => records.into_iter().for_each(|r| store.submit_call(r)),
        Some(rate) => {
            // Every millisecond what is due by then, as calls arrive (not in bursts).
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut records = records.into_iter().peekable();
            let mut sent = 0;
            while records.peek().is_some() {
                tick.tick().await;
                let due = (started.elapsed().as_secs_f64() * rate as f64) as usize;
                for r in records.by_ref().take(due.saturating_sub(sent)) {
                    store.submit_call(r);
                    sent += 1;
                }
            }
        }
    }
    assert!(store.close(Duration::from_secs(600)).await);
    let wall = started.elapsed().as_secs_f64();
    let (own1, server1) = cpu_seconds(server);
    let s = store.stats();
    let written = s.records_written - before.records_written;
    let batches = s.batches_written - before.batches_written;
    let cpu = (own1 - own0) + (server1 - server0);
    println!(
        "| {label} | {} | {count} | {wall:.2} | {:.0} | {:.2} + {:.2} | {:.1} | {:.1} | {} |",
        rate.map_or("all at once".to_owned(), |r| format!("{r}/s")),
        written as f64 / wall,
        own1 - own0,
        server1 - server0,
        cpu * 1e6 / written.max(1) as f64,
        written as f64 / batches.max(1) as f64,
        s.records_dropped,
    );
}

/// The writer alone: fast-path (no IORT order) and typical records into SQLite and PostgreSQL,
/// all queued at once (what it sustains) and paced at the load test's rates, with the CPU it
/// took (this process, plus the PostgreSQL server). Run in release:
/// `cargo test --release --test it store::writer_cost -- --ignored --nocapture --test-threads 1`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement; run it in release (see its doc)"]
async fn writer_cost() {
    let app = spawn_app_with(|s| s.store.enabled = false).await;
    let response = call(&app).await.to_string();
    let typical = Some(response.as_str());
    println!(
        "\n| store, records | submitted | records | wall s | records/s | CPU s (service + database) | CPU µs per record | records per batch | dropped |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let sqlite = common::temp_sqlite_url();
    let pg = Postgres::start("store::writer_cost");
    let mut stores = vec![("SQLite", sqlite.clone(), None)];
    if let Some(pg) = &pg {
        let port = pg.url.rsplit(':').next().and_then(|p| p.split('/').next());
        let server = postmaster_of(port.expect("a port"));
        assert!(server.is_some(), "the postmaster of {}", pg.url);
        stores.push(("PostgreSQL", pg.url.clone(), server));
    }
    // What the paced runs' own pacing costs (1 ms ticks), without a store.
    let (own0, _) = cpu_seconds(None);
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for _ in 0..5000 {
        tick.tick().await;
    }
    let (own1, _) = cpu_seconds(None);
    println!(
        "| pacing alone, 5 s of 1 ms ticks | | | | | {:.2} | | | |",
        own1 - own0
    );
    for (name, url, server) in &stores {
        let b = |kind: &str| format!("{name}, {kind}");
        bench_run(&b("fast-path"), url, *server, None, 100_000, None).await;
        // Random ids first, into the smaller tables (the comparison's harder side for the
        // time-ordered ids that follow).
        bench_run(
            &b("typical, random ids"),
            url,
            *server,
            typical,
            20_000,
            None,
        )
        .await;
        bench_run(&b("typical"), url, *server, typical, 20_000, None).await;
        bench_run(&b("fast-path"), url, *server, None, 40_000, Some(8_000)).await;
        bench_run(&b("typical"), url, *server, typical, 14_000, Some(1_400)).await;
    }
    let _ = std::fs::remove_file(sqlite.trim_start_matches("sqlite://"));
}
