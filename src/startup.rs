//! Builds the actix-web application and binds the server.
//!
//! [`Application::build`] loads everything once ([`Engine::load`]), binds the listener (port 0
//! picks a free port, which the black-box tests use) and returns before serving, so the caller
//! knows the address. Middleware order, outermost first: request tracing (request id) ->
//! CORS (preflights answered before anything else; CORS headers on errors and 401s too) ->
//! access log -> client authentication (the CDS Hooks JWT) -> routes. Calls run on one
//! [`ComputePool`] shared by all workers (`call_threads`, default one per core).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_cors::Cors;
use actix_web::dev::Server;
use actix_web::http::{Method, header};
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::auth::{self, Authenticator};
use crate::configuration::Settings;
use crate::http::body;
use crate::http::compute::ComputePool;
use crate::http::routes::{self, HttpSettings};
use crate::pipeline::{Engine, StartupError};
use crate::telemetry;

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
}

/// CORS for browser clients such as the CDS Hooks Sandbox: preflights allow `Authorization` and
/// `Content-Type`; origins from the settings (`*`: any).
/// Which browser pages may call the service (CORS). A browser attaches the page's origin; a
/// CDS client that is not a browser (an EHR's back end) sends none and is unaffected.
///
/// The permissive default serves local testing: the CDS Hooks Sandbox is a web page on another
/// origin, and on a loopback listener only this machine's browser can reach the service
/// anyway. Beyond loopback (or behind a proxy, `public_base_url` on another host) a page on
/// any web site the user opens could call the service with the user's network position, so
/// no origin is allowed until configured. The `null` origin (sandboxed frames, `file:` pages,
/// some redirects) names no site at all and is never allowed, whatever the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// Any origin but `null` (echoed back, with `Vary: Origin`).
    AnyOrigin,
    /// These origins only.
    Origins(Vec<String>),
    /// No browser origin: no CORS headers at all.
    NoOrigin,
}

impl CorsPolicy {
    /// From `cors_allowed_origins` (`None`: not configured) and whether the service is
    /// reachable from this machine only.
    pub fn new(configured: Option<&[String]>, loopback_only: bool) -> Self {
        match configured {
            None if loopback_only => Self::AnyOrigin,
            None => Self::NoOrigin,
            Some(list) if list.iter().any(|o| o == "*") => Self::AnyOrigin,
            Some([]) => Self::NoOrigin,
            Some(list) => Self::Origins(
                list.iter()
                    .map(|o| o.trim_end_matches('/').to_owned())
                    .collect(),
            ),
        }
    }
}

/// A value of `cors_allowed_origins`: `*`, or an origin (`scheme://host[:port]`, no path).
/// `null` is refused: it would let any sandboxed page in.
pub fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    if origin.eq_ignore_ascii_case("null") {
        return Err(
            "\"null\" is not an origin a service may trust (any sandboxed page or \
                    local file sends it)"
                .to_owned(),
        );
    }
    let url = reqwest::Url::parse(origin)
        .map_err(|_| "each origin must be \"*\" or scheme://host[:port]".to_owned())?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host().is_none()
        || !url.path().trim_end_matches('/').is_empty()
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err("each origin must be \"*\" or scheme://host[:port], without a path".to_owned());
    }
    Ok(())
}

fn cors(policy: &CorsPolicy) -> Cors {
    let base = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .max_age(3600)
        // The CDS Hooks Sandbox is an https page; Chrome's Private Network Access asks the
        // service on loopback / a private address to opt in before the page may call it.
        .allow_private_network_access();
    match policy {
        CorsPolicy::AnyOrigin => base.allowed_origin_fn(|origin, _| origin.as_bytes() != b"null"),
        CorsPolicy::Origins(list) => list.iter().fold(base, |c, o| c.allowed_origin(o)),
        // No origin passes: preflights are refused and responses carry no CORS header.
        CorsPolicy::NoOrigin => base.allowed_origin_fn(|_, _| false),
    }
}

impl Application {
    /// Load the engine and bind `settings.listen`.
    pub fn build(settings: Settings) -> Result<Self, StartupError> {
        let engine = Engine::load(&settings)?;
        let listener = TcpListener::bind(settings.listen).map_err(|e| {
            StartupError::Other(format!("cannot listen on {}: {e}", settings.listen))
        })?;
        Self::with_engine(settings, engine, listener)
    }

    /// Serve an already loaded engine on an already bound listener.
    pub fn with_engine(
        mut settings: Settings,
        engine: Engine,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
        // One public base URL for everything (as `Settings::load` does for a loaded file).
        if settings.auth.public_base_url.is_none() {
            settings.auth.public_base_url = settings.public_base_url.clone();
        }
        let local = listener
            .local_addr()
            .map_err(|e| StartupError::Other(format!("listener address: {e}")))?;
        let port = local.port();
        let mode = auth::auth_mode(&[local], &settings.auth, settings.insecure_no_auth)
            .map_err(StartupError::Other)?;
        let authenticator = web::Data::new(
            Authenticator::listening(&settings.auth, mode, Some(local))
                .map_err(|e| StartupError::Other(e.to_string()))?,
        );
        engine.gatherer.warn_if_open();
        let engine = web::Data::from(Arc::new(engine));
        let http = web::Data::new(HttpSettings {
            body_pace: body::BodyPace {
                limit: settings.max_body_bytes,
                timeout: Duration::from_millis(settings.limits.body_timeout_ms),
                min_bytes_per_sec: settings.limits.min_body_bytes_per_sec,
            },
            body_budget: body::BodyBudget::new(settings.limits.max_inflight_body_bytes),
        });
        let threads = settings
            .call_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let pool = web::Data::new(
            ComputePool::new(threads)
                .map_err(|e| StartupError::Other(format!("cannot start the call threads: {e}")))?,
        );
        let cors_policy = CorsPolicy::new(
            settings.cors_allowed_origins.as_deref(),
            auth::loopback_only(&[local], settings.auth.public_base_url.as_deref()),
        );
        tracing::info!(policy = ?cors_policy, "CORS");
        // actix bounds connections per worker: share the total among them.
        let workers = settings
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(auth::require_jwt))
                .wrap(from_fn(telemetry::access_log))
                .wrap(cors(&cors_policy))
                .wrap(TracingLogger::<telemetry::PathOnlySpans>::new())
                .app_data(engine.clone())
                .app_data(http.clone())
                .app_data(pool.clone())
                .app_data(authenticator.clone())
                .configure(routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(settings.shutdown_timeout_secs)
        .client_request_timeout(Duration::from_secs(10))
        .keep_alive(Duration::from_millis(settings.limits.idle_timeout_ms))
        .max_connections(settings.limits.max_connections.div_ceil(workers).max(1))
        .listen(listener)
        .map_err(|e| StartupError::Other(format!("cannot serve: {e}")))?;
        if let Some(w) = settings.workers {
            server = server.workers(w);
        }
        Ok(Self {
            port,
            server: server.run(),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until SIGTERM / Ctrl-C (graceful: in-flight requests finish, up to the shutdown
    /// timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
