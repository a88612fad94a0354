//! Logging with `tracing`: human-readable lines by default, one JSON object per line with
//! `--log-format json`. Every line written while a request is served carries its request id
//! (the root span opened by `tracing-actix-web`).
//!
//! What is never logged: access tokens, JWTs, and clinical content. Request bodies are not
//! logged at all; events name resource ids, codes, counts and timings only.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{HeaderName, HeaderValue};
use actix_web::middleware::Next;
use tracing_actix_web::RequestId;
use tracing_subscriber::EnvFilter;

use crate::configuration::LogFormat;

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

/// `x-request-id` on every answer, and one access line per request (method, route pattern,
/// status, duration: no query string, no body).
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
    tracing::info!(
        method = %method,
        route = %route,
        status = res.status().as_u16(),
        elapsed_ms = started.elapsed().as_secs_f64() * 1000.0,
        "request"
    );
    Ok(res)
}
