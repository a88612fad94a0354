//! The Prometheus endpoint (issue 17), black-box: real calls through the HTTP API, then a
//! scrape of `/metrics`, whose counters must have moved by exactly what was sent. Each test
//! starts its own app, whose registry is its own, so the counts are exact even though the
//! tests share one process.

use std::collections::BTreeMap;
use std::net::TcpListener;

use crate::auth_app::{app_trusting, es384, token};
use crate::common::{TestApp, spawn_app, spawn_app_with};
use serde_json::{Value, json};
use wiremock::matchers::method;
use wiremock::{Mock, MockServer, ResponseTemplate};

const SERVICE: &str = "/cds-services/iort-coverage";

/// A covered IORT order (rectal cancer, T4, positive margin), the record all in prefetch.
fn covered_call() -> Value {
    serde_json::from_str(include_str!(
        "../../examples/demo/order-sign-demo-rc-t4-positive.json"
    ))
    .unwrap()
}

/// `/metrics` in the Prometheus text format (the default), checked for its content type.
async fn scrape(app: &TestApp) -> String {
    let res = app.get("/metrics").await;
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    res.text().await.unwrap()
}

/// The value of the sample `name` whose labels are exactly `labels`; `None` if absent.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let want: BTreeMap<&str, &str> = labels.iter().copied().collect();
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (n, rest) = series.split_once('{').unwrap_or((series, "}"));
            if n != name {
                return None;
            }
            let got: BTreeMap<&str, &str> = rest
                .strip_suffix('}')?
                .split(',')
                .filter(|p| !p.is_empty())
                .filter_map(|p| {
                    let (k, v) = p.split_once('=')?;
                    Some((k, v.trim_matches('"')))
                })
                .collect();
            (got == want).then(|| value.parse().unwrap())
        })
}

/// The sum of every sample of `name`.
fn total(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .map(|l| l.rsplit_once(' ').unwrap().1.parse::<f64>().unwrap())
        .sum()
}

#[tokio::test]
async fn calls_are_counted_by_service_outcome_and_covered_code() {
    let app = spawn_app().await;
    for _ in 0..2 {
        let res = app.post_json(SERVICE, &covered_call()).await;
        assert_eq!(res.status(), 200);
    }
    let bad = app
        .post_raw(SERVICE, "application/json", b"{\"hook\": ".to_vec())
        .await;
    assert_eq!(bad.status(), 400);
    let unknown = app
        .post_json("/cds-services/demo-rc-t4-positive", &covered_call())
        .await;
    assert_eq!(unknown.status(), 404);
    // Not service calls: not counted.
    assert_eq!(app.get("/cds-services").await.status(), 200);
    assert_eq!(app.get("/healthz").await.status(), 200);
    let feedback = json!({"feedback": [{"card": "c1", "outcome": "accepted",
        "outcomeTimestamp": "2026-11-26T10:00:00Z"}]});
    let res = app
        .post_json("/cds-services/iort-coverage/feedback", &feedback)
        .await;
    assert_eq!(res.status(), 200);

    let text = scrape(&app).await;
    let calls = |service, outcome, status| {
        sample(
            &text,
            "iort_cds_calls_total",
            &[
                ("service", service),
                ("outcome", outcome),
                ("status", status),
            ],
        )
    };
    assert_eq!(
        calls("iort-coverage", "answered", "2xx"),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        calls("iort-coverage", "rejected", "4xx"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(calls("unknown", "rejected", "4xx"), Some(1.0), "{text}");
    assert_eq!(total(&text, "iort_cds_calls_total"), 4.0, "{text}");
    let orders = |covered| {
        sample(
            &text,
            "iort_cds_orders_assessed_total",
            &[("service", "iort-coverage"), ("covered", covered)],
        )
    };
    assert_eq!(orders("covered"), Some(2.0), "{text}");
    assert_eq!(total(&text, "iort_cds_orders_assessed_total"), 2.0);
    let answered = [("service", "iort-coverage"), ("outcome", "answered")];
    assert_eq!(
        sample(&text, "iort_cds_call_duration_seconds_count", &answered),
        Some(2.0)
    );
    let mut inf = answered.to_vec();
    inf.push(("le", "+Inf"));
    assert_eq!(
        sample(&text, "iort_cds_call_duration_seconds_bucket", &inf),
        Some(2.0)
    );
    let mut smallest = answered.to_vec();
    smallest.push(("le", "0.001"));
    assert!(sample(&text, "iort_cds_call_duration_seconds_bucket", &smallest).is_some());
    // Nothing fetched; every kind shown at 0.
    assert_eq!(total(&text, "iort_cds_fhir_fetch_failures_total"), 0.0);
    assert_eq!(
        sample(
            &text,
            "iort_cds_fhir_fetch_failures_total",
            &[("kind", "timeout")]
        ),
        Some(0.0)
    );
    // The store's queue holds at most the calls recorded so far (the writer may not have
    // written them yet), and nothing failed.
    assert!(
        sample(&text, "iort_cds_store_queue_depth", &[]).is_some_and(|d| d <= 3.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, "iort_cds_store_write_failures_total", &[]),
        Some(0.0)
    );
    // No clinical content or patient id, not even as an unknown service id.
    for secret in ["demo-rc-t4-positive", "iort-1", "C20", "77425"] {
        assert!(!text.contains(secret), "{secret} in the metrics: {text}");
    }
}

#[tokio::test]
async fn each_application_counts_its_own_calls() {
    let (one, other) = (spawn_app().await, spawn_app().await);
    assert_eq!(one.post_json(SERVICE, &covered_call()).await.status(), 200);
    assert_eq!(total(&scrape(&one).await, "iort_cds_calls_total"), 1.0);
    assert_eq!(total(&scrape(&other).await, "iort_cds_calls_total"), 0.0);
}

/// The example call without its Observations prefetch, to be fetched from `fhir_server`.
fn fetching_call(fhir_server: &str) -> Value {
    let mut v: Value =
        serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap();
    v["prefetch"]
        .as_object_mut()
        .unwrap()
        .remove("observations");
    v["fhirServer"] = json!(fhir_server);
    v
}

#[tokio::test]
async fn fhir_fetch_failures_are_counted_by_kind() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(500))
        .mount(&server)
        .await;
    // A port on loopback that nothing listens on: the connection is refused.
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let app = spawn_app().await;
    for fhir_server in [
        format!("{}/fhir", server.uri()),
        format!("http://127.0.0.1:{closed}/fhir"),
    ] {
        let res = app.post_json(SERVICE, &fetching_call(&fhir_server)).await;
        assert_eq!(res.status(), 200);
    }
    let text = scrape(&app).await;
    let failures = |kind| {
        sample(
            &text,
            "iort_cds_fhir_fetch_failures_total",
            &[("kind", kind)],
        )
    };
    assert_eq!(failures("status"), Some(1.0), "{text}");
    assert_eq!(failures("unreachable"), Some(1.0), "{text}");
    assert_eq!(total(&text, "iort_cds_fhir_fetch_failures_total"), 2.0);
    // The record could not be read: each call's order is indeterminate. No label names the
    // FHIR server or the patient.
    assert_eq!(
        sample(
            &text,
            "iort_cds_orders_assessed_total",
            &[("service", "iort-coverage"), ("covered", "indeterminate")]
        ),
        Some(2.0),
        "{text}"
    );
    assert!(
        !text.contains("127.0.0.1") && !text.contains("pat-rc-001"),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_need_no_token_when_client_authentication_is_on() {
    let key = es384();
    let app = app_trusting(&key, vec![]).await;
    // Unsigned: refused, and counted as refused.
    let res = app.post_json(SERVICE, &covered_call()).await;
    assert_eq!(res.status(), 401);
    let url = format!("{}{SERVICE}", app.address);
    let res = app
        .client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {}", token(&key, &url)))
        .body(covered_call().to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let text = scrape(&app).await;
    let calls = |outcome, status| {
        sample(
            &text,
            "iort_cds_calls_total",
            &[
                ("service", "iort-coverage"),
                ("outcome", outcome),
                ("status", status),
            ],
        )
    };
    assert_eq!(calls("rejected", "4xx"), Some(1.0), "{text}");
    assert_eq!(calls("answered", "2xx"), Some(1.0), "{text}");
    // HEAD too, and other methods are refused.
    let head = app
        .client
        .head(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty(), "HEAD has no body");
    let post = app.post_json("/metrics", &json!({})).await;
    assert_eq!(post.status(), 405);
    assert_eq!(post.headers()["allow"], "GET, HEAD");
}

#[tokio::test]
async fn openmetrics_is_served_to_a_scraper_that_asks_for_it() {
    let app = spawn_app().await;
    assert_eq!(app.post_json(SERVICE, &covered_call()).await.status(), 200);
    let res = app
        .client
        .get(format!("{}/metrics", app.address))
        .header(
            "Accept",
            "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = res.text().await.unwrap();
    assert!(text.ends_with("# EOF\n"), "{text}");
    assert_eq!(
        sample(
            &text,
            "iort_cds_calls_total",
            &[
                ("service", "iort-coverage"),
                ("outcome", "answered"),
                ("status", "2xx")
            ]
        ),
        Some(1.0),
        "{text}"
    );
}

#[tokio::test]
async fn metrics_can_be_turned_off() {
    let app = spawn_app_with(|s| s.metrics.enabled = false).await;
    assert_eq!(app.post_json(SERVICE, &covered_call()).await.status(), 200);
    assert_eq!(app.get("/metrics").await.status(), 404);
}
