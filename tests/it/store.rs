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
    let (assertion_a, _) = handed_out(&first.json().await.expect("json"));
    // The same token at the other instance: refused there, though that instance never saw it.
    assert_eq!(send(&b, token(&jti_a)).await.expect("sent").status(), 401);
    let second = send(&b, token(&jti_b)).await.expect("sent");
    assert_eq!(second.status(), 200);
    let (assertion_b, _) = handed_out(&second.json().await.expect("json"));
    assert_eq!(send(&a, token(&jti_b)).await.expect("sent").status(), 401);
    wait_written(&a, 1, Duration::from_secs(20)).await;
    wait_written(&b, 1, Duration::from_secs(20)).await;

    let reader = Reader::open(&store_at(&pg.url)).await.expect("open");
    let listed = reader.list(None, None, 100).await.expect("list");
    assert_eq!(listed.len(), 2, "{listed:?}");
    for (assertion, jti) in [(&assertion_a, &jti_a), (&assertion_b, &jti_b)] {
        let d = reader.show(assertion).await.expect("read").expect("found");
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
