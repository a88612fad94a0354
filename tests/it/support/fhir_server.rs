//! Test harness: a real FHIR R4 server on loopback (`tests/fhir-server/server.js`, Medplum's FHIR
//! router over an in-memory store), started per test and killed with it.
//!
//! Why a real server and not only mocks: the service's FHIR fetching must work against what a real
//! server does (search semantics, token OR lists, paging with `next` links, bearer-token access
//! control), which a mock only repeats back from the test's own assumptions.
//!
//! Use it as `crate::support::fhir_server`. The first start in the test
//! binary installs the server's pinned npm packages (`npm ci`) when they are missing or older than
//! `package-lock.json`; a lock file in cargo's target tmp dir makes concurrent test binaries do it once.
//! Set `FHIR_SERVER_LOG=1` to see one line per request the server answers.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Mutex;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The FHIR base path of the server (and of each partition, after `/p/<name>`).
pub const BASE_PATH: &str = "/fhir/R4";

/// Oldest Node.js the pinned `@medplum/*` packages support (their `engines`).
const MIN_NODE: (u32, u32) = (20, 19);

/// How long the server may take to load the FHIR definitions and listen (about 3 s on a quiet
/// machine; CI may be compiling beside it).
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Set once the packages are known to be installed in this process.
static INSTALLED: Mutex<bool> = Mutex::new(false);

fn server_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("fhir-server")
}

/// A running server. Dropping it kills the process; it also exits by itself when this test process
/// dies, because its stdin (a pipe held here) closes.
pub struct FhirServer {
    child: Child,
    /// Held open on purpose: the server exits when it closes.
    stdin: Option<ChildStdin>,
    /// Held so the server can never write into a closed pipe.
    _stdout: Lines<BufReader<ChildStdout>>,
    port: u16,
    root: FhirBase,
}

/// One FHIR base on the server: the server's own `{origin}/fhir/R4`, or a partition's
/// `{origin}/p/<name>/fhir/R4` (an independent, initially empty store).
#[derive(Clone)]
pub struct FhirBase {
    base_url: String,
    token: Option<String>,
    client: reqwest::Client,
}

impl FhirServer {
    /// Start a server on a free loopback port. With `Some(token)` it answers only requests that carry
    /// `Authorization: Bearer <token>`; with `None` it runs open (no token needed).
    pub async fn start(token: Option<&str>) -> FhirServer {
        ensure_installed();
        let mut cmd = Command::new("node");
        cmd.arg(server_dir().join("server.js"))
            .args(["--port", "0", "--base", BASE_PATH])
            .current_dir(server_dir())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        // The token goes through the environment, not argv, which any local user can read.
        match token {
            Some(t) => cmd.env("FHIR_SERVER_TOKEN", t),
            None => cmd.env_remove("FHIR_SERVER_TOKEN").arg("--open"),
        };
        if std::env::var_os("FHIR_SERVER_LOG").is_some() {
            cmd.arg("--verbose");
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node tests/fhir-server/server.js`: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(stdout).lines();

        let port = tokio::time::timeout(START_TIMEOUT, async {
            loop {
                match lines.next_line().await {
                    Ok(Some(line)) => {
                        if let Some(p) = line.strip_prefix("LISTENING ") {
                            break p
                                .trim()
                                .parse::<u16>()
                                .unwrap_or_else(|e| panic!("bad LISTENING line {line:?}: {e}"));
                        }
                    }
                    Ok(None) => {
                        panic!("the FHIR server exited before listening (its stderr is above)")
                    }
                    Err(e) => panic!("reading the FHIR server's stdout: {e}"),
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("the FHIR server did not listen within {START_TIMEOUT:?}"));

        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("reqwest client");
        let root = FhirBase {
            base_url: format!("http://127.0.0.1:{port}{BASE_PATH}"),
            token: token.map(str::to_owned),
            client,
        };
        FhirServer {
            child,
            stdin,
            _stdout: lines,
            port,
            root,
        }
    }

    /// `http://127.0.0.1:PORT/fhir/R4`
    pub fn base_url(&self) -> &str {
        self.root.base_url()
    }

    /// The server's own base.
    pub fn root(&self) -> &FhirBase {
        &self.root
    }

    /// An independent store on the same server (created on first use), for data whose ids clash with
    /// other data (`name`: letters, digits, `-`, `_`).
    pub fn partition(&self, name: &str) -> FhirBase {
        FhirBase {
            base_url: format!("http://127.0.0.1:{}/p/{name}{BASE_PATH}", self.port),
            ..self.root.clone()
        }
    }

    /// PUT each resource at `Type/id` of the server's own base (see [`FhirBase::load`]).
    pub async fn load(&self, resources: Vec<Value>) {
        self.root.load(resources).await
    }

    /// GET a path below the base with the server's token (see [`FhirBase::get`]).
    pub async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        self.root.get(path_and_query).await
    }

    /// The process id (e.g. to send it a signal).
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Close the server's stdin, as happens when the test process dies, and wait up to `within` for it
    /// to exit by itself. `None`: it did not (it is then killed).
    pub async fn close_stdin_and_wait(mut self, within: Duration) -> Option<ExitStatus> {
        drop(self.stdin.take());
        self.wait_or_kill(within).await
    }

    /// Wait up to `within` for the process to exit by itself; kill it otherwise (`None`).
    pub async fn wait_or_kill(&mut self, within: Duration) -> Option<ExitStatus> {
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => Some(status.expect("waiting for the FHIR server")),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }

    /// Stop the server now.
    pub async fn stop(mut self) {
        let _ = self.child.kill().await;
    }
}

impl FhirBase {
    /// e.g. `http://127.0.0.1:PORT/fhir/R4` or `http://127.0.0.1:PORT/p/case-001/fhir/R4`
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    fn authorized(&self, rb: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => rb.bearer_auth(t),
            None => rb,
        }
    }

    /// PUT each resource at `{base}/{resourceType}/{id}`, so the ids stay what the test data says
    /// (references between the resources keep working). Panics, naming the resource, when one has no
    /// `resourceType`/`id` or the server refuses it.
    pub async fn load(&self, resources: Vec<Value>) {
        for (i, resource) in resources.into_iter().enumerate() {
            let (Some(rt), Some(id)) = (
                resource.get("resourceType").and_then(Value::as_str),
                resource.get("id").and_then(Value::as_str),
            ) else {
                panic!("resource #{i} to load has no resourceType or id");
            };
            let url = format!("{}/{rt}/{id}", self.base_url);
            let res = self
                .authorized(self.client.put(&url))
                .header("Content-Type", "application/fhir+json")
                .body(resource.to_string())
                .send()
                .await
                .unwrap_or_else(|e| panic!("PUT {rt}/{id}: {e}"));
            let status = res.status();
            if !status.is_success() {
                let body = res.text().await.unwrap_or_default();
                panic!("PUT {rt}/{id}: the FHIR server answered {status}: {body}");
            }
        }
    }

    /// GET `{base}/{path_and_query}` (or an absolute URL, e.g. a `next` link) with the token; the
    /// status and the JSON body (`Null` when the body is not JSON).
    pub async fn get(&self, path_and_query: &str) -> (StatusCode, Value) {
        self.get_with(path_and_query, self.token.as_deref()).await
    }

    /// GET with the given bearer token instead of the server's (`None`: no Authorization header).
    pub async fn get_with(&self, path_and_query: &str, token: Option<&str>) -> (StatusCode, Value) {
        let url = if path_and_query.starts_with("http://") {
            path_and_query.to_owned()
        } else {
            format!(
                "{}/{}",
                self.base_url,
                path_and_query.trim_start_matches('/')
            )
        };
        let mut rb = self
            .client
            .get(&url)
            .header("Accept", "application/fhir+json");
        if let Some(t) = token {
            rb = rb.bearer_auth(t);
        }
        let res = rb.send().await.unwrap_or_else(|e| panic!("GET {url}: {e}"));
        let status = res.status();
        let body = res.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// POST a Bundle (batch or transaction) to the base.
    pub async fn post_bundle(&self, bundle: &Value) -> (StatusCode, Value) {
        let res = self
            .authorized(self.client.post(&self.base_url))
            .header("Content-Type", "application/fhir+json")
            .body(bundle.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("POST Bundle: {e}"));
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    /// Run a search and follow its `next` links (at most `max_pages`): every entry's resource, and
    /// how many pages there were.
    pub async fn search_all(&self, query: &str, max_pages: usize) -> (Vec<Value>, usize) {
        let mut resources = Vec::new();
        let mut next = Some(query.to_owned());
        let mut pages = 0;
        while let Some(url) = next.take() {
            assert!(pages < max_pages, "{query}: more than {max_pages} pages");
            let (status, bundle) = self.get(&url).await;
            assert_eq!(status, StatusCode::OK, "{url}: {bundle}");
            pages += 1;
            for e in bundle["entry"].as_array().into_iter().flatten() {
                resources.push(e["resource"].clone());
            }
            next = next_link(&bundle).map(str::to_owned);
        }
        (resources, pages)
    }
}

/// The `next` link of a searchset Bundle.
pub fn next_link(bundle: &Value) -> Option<&str> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|l| l["relation"] == "next")?["url"]
        .as_str()
}

/// The resources in a prefetch value: the entries of a Bundle, the resource itself, or none (`null`).
pub fn resources_in(value: &Value) -> Vec<Value> {
    match value.get("resourceType").and_then(Value::as_str) {
        Some("Bundle") => value["entry"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|e| e.get("resource").cloned())
            .collect(),
        Some(_) => vec![value.clone()],
        None => Vec::new(),
    }
}

// -------------------------------------------------------------------------------------------------
// Installation

/// Make sure node is there and the pinned packages are installed (once per process, and under a file
/// lock so that test binaries running at the same time do not run `npm ci` over each other).
fn ensure_installed() {
    let mut done = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return;
    }
    check_node();
    let dir = server_dir();
    if !packages_current(&dir) {
        let lock_path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("fhir-server-npm-ci.lock");
        let lock = std::fs::File::create(&lock_path)
            .unwrap_or_else(|e| panic!("{}: {e}", lock_path.display()));
        lock.lock()
            .unwrap_or_else(|e| panic!("locking {}: {e}", lock_path.display()));
        if !packages_current(&dir) {
            eprintln!(
                "fhir-server: installing its npm packages (npm ci --prefix tests/fhir-server)"
            );
            let status = std::process::Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
                .current_dir(&dir)
                .status()
                .unwrap_or_else(|e| {
                    panic!("cannot run `npm ci --prefix tests/fhir-server` ({e}): install Node.js >= 20.19 with npm")
                });
            assert!(
                status.success(),
                "`npm ci --prefix tests/fhir-server` failed: {status}"
            );
        }
        // The lock is released when `lock` is dropped.
    }
    *done = true;
}

/// `node_modules` is there and at least as new as `package-lock.json` (npm ci writes
/// `node_modules/.package-lock.json` last).
fn packages_current(dir: &Path) -> bool {
    let modified = |p: PathBuf| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let (Some(installed), Some(locked)) = (
        modified(dir.join("node_modules").join(".package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) else {
        return false;
    };
    installed >= locked
        && dir
            .join("node_modules/@medplum/fhir-router/package.json")
            .is_file()
}

fn check_node() {
    let out = std::process::Command::new("node").arg("--version").output().unwrap_or_else(|e| {
        panic!("`node --version` failed ({e}): the FHIR server tests need Node.js >= 20.19 and npm on PATH")
    });
    let text = String::from_utf8_lossy(&out.stdout);
    let mut parts = text
        .trim()
        .trim_start_matches('v')
        .split('.')
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let version = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    assert!(
        version >= MIN_NODE,
        "the FHIR server tests need Node.js >= {}.{}; `node --version` says {}",
        MIN_NODE.0,
        MIN_NODE.1,
        text.trim()
    );
}
