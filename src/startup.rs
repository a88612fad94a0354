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
fn cors(origins: &[String]) -> Cors {
    let base = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .max_age(3600)
        // The CDS Hooks Sandbox is an https page; Chrome's Private Network Access asks the
        // service on loopback / a private address to opt in before the page may call it.
        .allow_private_network_access();
    if origins.iter().any(|o| o == "*") {
        base.allow_any_origin().send_wildcard()
    } else {
        origins
            .iter()
            .fold(base, |c, o| c.allowed_origin(o.trim_end_matches('/')))
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
        settings: Settings,
        engine: Engine,
        listener: TcpListener,
    ) -> Result<Self, StartupError> {
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
        let origins = settings.cors_allowed_origins.clone();
        // actix bounds connections per worker: share the total among them.
        let workers = settings
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(auth::require_jwt))
                .wrap(from_fn(telemetry::access_log))
                .wrap(cors(&origins))
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
