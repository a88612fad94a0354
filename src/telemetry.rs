//! Logging with `tracing`: human-readable lines by default, one JSON object per line with
//! `--log-format json`. Every line written while a request is served carries its request id
//! (the root span opened by `tracing-actix-web`).
//!
//! What is never logged: access tokens, JWTs, and clinical content. Request bodies are not
//! logged at all; events name resource ids, codes, counts and timings only.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Deserialize;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing_actix_web::{DefaultRootSpanBuilder, RequestId, RootSpanBuilder};
use tracing_subscriber::EnvFilter;

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum, Default)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line (for log shippers).
    Json,
}

/// Install the global subscriber. `RUST_LOG`, when set, overrides `level`. Safe to call more
/// than once (later calls are ignored), so tests can share a process.
pub fn init(format: LogFormat, level: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// The root span of every request: method, route pattern, path and request id, never the
/// query string. A client may put a secret there (`?access_token=<JWT>`: refused, yet still a
/// valid token), and the default span copied it onto every log line of the request.
pub struct PathOnlySpans;

impl RootSpanBuilder for PathOnlySpans {
    fn on_request_start(request: &ServiceRequest) -> tracing::Span {
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(ToString::to_string)
            .unwrap_or_default();
        tracing::info_span!(
            "HTTP request",
            http.method = %request.method(),
            http.route = %request.match_pattern().unwrap_or_else(|| "(unmatched)".to_owned()),
            http.target = %request.path(),
            request_id = %request_id,
            http.status_code = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(
        span: tracing::Span,
        outcome: &Result<ServiceResponse<B>, actix_web::Error>,
    ) {
        DefaultRootSpanBuilder::on_request_end(span, outcome);
    }
}

/// A panic (a bug: the service answers 500 for that request and goes on) is logged through
/// the logger, so JSON logs stay one JSON object per line. Only where it happened is logged:
/// a panic message may quote the data being parsed, which can be clinical.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_else(|| "(unknown)".to_owned());
        tracing::error!(location = %location, "panic (message not logged: it may quote request data)");
    }));
}

/// Lets through at most one line per `every` for a noisy event (refused tokens in a flood),
/// and counts the lines it held back, so a flood costs a line a second, not a line a request.
#[derive(Debug)]
pub struct Sampler {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl Sampler {
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// `Some(n)` when a line may be written now, `n` being how many were held back since the
    /// last one; `None` when this one is held back.
    pub fn admit(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        match state.0 {
            Some(last) if now.duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

/// Who called, for the access line: put into the request's extensions by the authentication
/// middleware once a client's token was accepted. The issuer and key id only (never the
/// token, never the subject's claims), so an integrator can see at INFO whose token was
/// accepted, with which key.
#[derive(Debug, Clone)]
pub struct Caller {
    pub iss: String,
    pub kid: String,
}

/// `x-request-id` on every answer, and one access line per request (method, route pattern,
/// status, duration, and the accepted client's issuer and key id when authentication is on:
/// no query string, no body, no token).
pub async fn access_log(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().clone();
    let request_id = req.extensions().get::<RequestId>().copied();
    let mut res = next.call(req).await?;
    let route = res
        .request()
        .match_pattern()
        .unwrap_or_else(|| "(unmatched)".to_owned());
    if let Some(id) = request_id
        && let Ok(v) = HeaderValue::from_str(&id.to_string())
    {
        res.headers_mut()
            .insert(HeaderName::from_static("x-request-id"), v);
    }
    let caller = res.request().extensions().get::<Caller>().cloned();
    match caller {
        Some(Caller { iss, kid }) => tracing::info!(
            method = %method,
            route = %route,
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            client_iss = %iss,
            client_kid = %kid,
            "request"
        ),
        None => tracing::info!(
            method = %method,
            route = %route,
            status = res.status().as_u16(),
            elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
            "request"
        ),
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sampler_admits_one_line_per_period_and_counts_the_rest() {
        let s = Sampler::new(Duration::from_millis(200));
        assert_eq!(s.admit(), Some(0));
        for _ in 0..50 {
            assert_eq!(s.admit(), None);
        }
        std::thread::sleep(Duration::from_millis(220));
        assert_eq!(s.admit(), Some(50));
        assert_eq!(s.admit(), None);
    }
}
