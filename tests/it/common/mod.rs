//! The one helper every black-box test uses: start the real application on a random loopback
//! port and talk to it over HTTP.

pub mod cases;
pub mod crd;
pub mod logs;

use std::sync::Once;

use iort_cds::configuration::{LogFormat, Settings};
use iort_cds::startup::Application;
use serde_json::Value;

static TRACING: Once = Once::new();

/// A running app.
pub struct TestApp {
    /// `http://127.0.0.1:PORT`
    pub address: String,
    pub port: u16,
    pub client: reqwest::Client,
}

/// Start the app with default settings (port 0). Logs are shown with `TEST_LOG=1`.
pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Start the app after adjusting the settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    TRACING.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            iort_cds::telemetry::init(LogFormat::Text, "debug");
        }
    });
    let mut settings = Settings {
        listen: "127.0.0.1:0".parse().expect("loopback address"),
        workers: Some(2),
        shutdown_timeout_secs: 1,
        ..Settings::default()
    };
    // Never the default `./iort-cds.db`: each app records into its own file under a temp dir.
    settings.store.url = Some(temp_sqlite_url());
    adjust(&mut settings);
    let app = Application::build(settings).expect("the application builds");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client"),
    }
}

impl TestApp {
    /// POST a JSON body to a path.
    pub async fn post_json(&self, path: &str, body: &Value) -> reqwest::Response {
        self.client
            .post(format!("{}{}", self.address, path))
            .header("Content-Type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .expect("request sent")
    }

    /// POST raw bytes with a content type.
    pub async fn post_raw(
        &self,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> reqwest::Response {
        self.client
            .post(format!("{}{}", self.address, path))
            .header("Content-Type", content_type)
            .body(body)
            .send()
            .await
            .expect("request sent")
    }

    /// GET a path.
    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(format!("{}{}", self.address, path))
            .send()
            .await
            .expect("request sent")
    }
}

/// A new SQLite store URL in this run's temp directory (not created until used). The
/// directories of earlier runs (whose process is gone) are deleted on first use, so repeated
/// runs do not fill the disk.
pub fn temp_sqlite_url() -> String {
    static SWEEP: Once = Once::new();
    let tmp = std::env::temp_dir();
    SWEEP.call_once(|| {
        for entry in std::fs::read_dir(&tmp).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(pid) = name.strip_prefix("iort-cds-it-")
                && pid.parse::<u32>().is_ok()
                && !std::path::Path::new("/proc").join(pid).exists()
            {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    });
    let dir = tmp.join(format!("iort-cds-it-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    format!(
        "sqlite://{}",
        dir.join(format!("{}.db", uuid::Uuid::new_v4())).display()
    )
}

/// A fixture file from `tests/fixtures/`, parsed.
pub fn fixture(name: &str) -> Value {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}
