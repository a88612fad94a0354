//! Builds the actix-web application and binds the server.
//!
//! [`Application::build`] loads everything once ([`Engine::load`]), binds the listener (port 0
//! picks a free port, which the black-box tests use) and returns before serving, so the caller
//! knows the address. Middleware order, outermost first: request tracing (request id) ->
//! CORS (preflights answered before anything else; CORS headers on errors and 401s too) ->
//! access log -> call metrics (so 401s are counted) -> client authentication (the CDS Hooks
//! JWT) -> routes. Calls run on one
//! [`ComputePool`] shared by all workers (`call_threads`, default one per core).

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::middleware::from_fn;
use actix_web::{App, HttpServer, web};
use tracing_actix_web::TracingLogger;

use crate::auth::{self, Authenticator};
use crate::configuration::Settings;
use crate::http::body;
use crate::http::compute::ComputePool;
use crate::http::cors::{self, CorsPolicy};
use crate::http::routes::{self, HttpSettings};
use crate::pipeline::{Engine, StartupError};
use crate::store::Store;
use crate::telemetry;

/// A bound, not yet running, server.
pub struct Application {
    port: u16,
    server: Server,
    /// Flushed when the server stops.
    store: Option<Store>,
    shutdown_timeout: Duration,
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
        mut engine: Engine,
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
        let store = Store::start(&settings.store).map_err(StartupError::Other)?;
        let mut authenticator = Authenticator::listening(&settings.auth, mode, Some(local))
            .map_err(|e| StartupError::Other(e.to_string()))?;
        if let Some(store) = store.as_ref().filter(|s| s.shares_replay()) {
            authenticator = authenticator.with_shared_replay(Arc::new(store.clone()));
        }
        let authenticator = web::Data::new(authenticator);
        let store_data = store.clone().map(web::Data::new);
        engine.gatherer.warn_if_open();
        let metrics = crate::http::metrics::install(&settings.metrics, &mut engine);
        let engine = web::Data::from(Arc::new(engine));
        let threads = settings
            .call_threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let http = web::Data::new(HttpSettings {
            body_pace: body::BodyPace {
                limit: settings.max_body_bytes,
                timeout: Duration::from_millis(settings.limits.body_timeout_ms),
                min_bytes_per_sec: settings.limits.min_body_bytes_per_sec,
            },
            body_budget: body::BodyBudget::new(settings.limits.max_inflight_body_bytes, threads),
        });
        let pool = web::Data::new(
            ComputePool::new(threads)
                .map_err(|e| StartupError::Other(format!("cannot start the call threads: {e}")))?,
        );
        let cors_policy = CorsPolicy::new(
            settings.cors_allowed_origins.as_deref(),
            crate::reach::loopback_only(&[local], settings.auth.public_base_url.as_deref()),
        );
        tracing::info!(policy = ?cors_policy, "CORS");
        // actix bounds connections per worker: share the total among them.
        let workers = settings
            .workers
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let mut server = HttpServer::new(move || {
            App::new()
                .wrap(from_fn(auth::require_jwt))
                .wrap(from_fn(crate::http::metrics::observe_calls))
                .wrap(from_fn(telemetry::access_log))
                .wrap(cors::middleware(&cors_policy))
                .wrap(TracingLogger::<telemetry::PathOnlySpans>::new())
                .app_data(engine.clone())
                .app_data(http.clone())
                .app_data(pool.clone())
                .app_data(authenticator.clone())
                .app_data(store_data.clone())
                .configure(routes::configure)
                .configure(|cfg| crate::http::metrics::configure(cfg, metrics.clone()))
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
            store,
            shutdown_timeout: Duration::from_secs(settings.shutdown_timeout_secs),
        })
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serve until SIGTERM / Ctrl-C (graceful: in-flight requests finish, up to the shutdown
    /// timeout), then write what the store still has queued (up to the same timeout).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        if let Some(store) = &self.store {
            store.close(self.shutdown_timeout).await;
        }
        served
    }
}
