//! Reading a request body: the media type must be JSON, the size must be within the limit, and
//! the read must finish in bounded time.
//!
//! An oversized body is drained (up to a cap) before the 413 is sent, so HTTP clients that
//! write the whole body before reading the answer see the 413 rather than a reset connection;
//! past the cap the connection is dropped.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;

use super::ApiError;

/// How long a client may take to send its body.
const BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// The most read and thrown away from an oversized body before giving up on it.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// Whether the request says its body is JSON (`application/json`, `application/fhir+json`,
/// any `+json`), parameters such as `charset` allowed.
fn is_json(req: &HttpRequest) -> Result<(), ApiError> {
    let Some(value) = req.headers().get(CONTENT_TYPE) else {
        return Err(ApiError::UnsupportedMediaType("no Content-Type".to_owned()));
    };
    let text = value.to_str().unwrap_or("");
    let essence = text
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
    {
        Ok(())
    } else {
        // Echo the media type only: it is a header value chosen by the client, not clinical.
        let shown: String = essence.chars().take(100).collect();
        Err(ApiError::UnsupportedMediaType(if shown.is_empty() {
            "an empty Content-Type".to_owned()
        } else {
            shown
        }))
    }
}

/// Read a JSON body of at most `limit` bytes.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: Payload,
    limit: usize,
) -> Result<Bytes, ApiError> {
    is_json(req)?;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    let read = async {
        let mut buf = BytesMut::with_capacity(declared.unwrap_or(0).min(limit));
        let mut total = 0usize;
        while let Some(chunk) = payload.next().await {
            let chunk = chunk.map_err(|_| ApiError::BodyRead)?;
            total = total.saturating_add(chunk.len());
            if total > limit {
                if total > DRAIN_CAP {
                    break;
                }
                continue; // drain, do not keep
            }
            buf.extend_from_slice(&chunk);
        }
        if total > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        Ok(buf.freeze())
    };
    if declared.is_some_and(|n| n > DRAIN_CAP) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    tokio::time::timeout(BODY_TIMEOUT, read)
        .await
        .unwrap_or(Err(ApiError::BodyRead))
}
