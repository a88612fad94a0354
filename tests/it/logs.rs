//! What the logs of a real running service keep: never a query string's values (a client may
//! put a token there), never a token. Its own test binary, so it can capture every log line.

use crate::common;

#[tokio::test]
async fn query_string_values_are_never_logged() {
    common::logs::capture();
    let app = common::spawn_app().await;
    let secret = "eyJhbGciOiJFUzM4NCJ9.c2VjcmV0LXF1ZXJ5LXZhbHVl.c2lnbmF0dXJl";
    for path in [
        "/cds-services",
        "/healthz",
        "/cds-services/iort-coverage",
        "/nope",
    ] {
        let _ = app
            .client
            .get(format!("{}{path}?access_token={secret}&x=1", app.address))
            .send()
            .await
            .expect("answered");
    }
    let logs = common::logs::text();
    assert!(
        logs.contains("/cds-services"),
        "requests were logged: {logs}"
    );
    assert!(
        !logs.contains("access_token"),
        "a query string was logged: {logs}"
    );
    for part in secret.split('.') {
        assert!(!logs.contains(part), "a token part was logged");
    }
}
