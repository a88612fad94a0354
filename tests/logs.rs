//! What the logs of a real running service keep: never a query string's values (a client may
//! put a token there), never a token. Its own test binary, so it can capture every log line.

mod common;

use std::io::Write;
use std::sync::{Mutex, Once};

static LOGS: Mutex<Vec<u8>> = Mutex::new(Vec::new());

struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        LOGS.lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn capture_logs() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_ansi(false)
            .with_writer(|| LogWriter)
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
    });
}

#[tokio::test]
async fn query_string_values_are_never_logged() {
    capture_logs();
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
    let logs = String::from_utf8_lossy(&LOGS.lock().unwrap()).into_owned();
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
