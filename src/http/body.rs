//! Reading a request body: the media type must be JSON, the size must be within the limit, and
//! the read must finish in bounded time.
//!
//! An oversized body is drained (up to a cap) before the 413 is sent, so HTTP clients that
//! write the whole body before reading the answer see the 413 rather than a reset connection;
//! past the cap the connection is dropped.
//!
//! All bodies being read or answered share one budget ([`BodyBudget`],
//! `limits.max_inflight_body_bytes`): a request takes room for its body as the bytes arrive and
//! gives it back when its answer has been built, so memory follows the work the service can do
//! at once, not the number of clients sending large records.
//!
//! Room is taken for bytes received, never for a declared `Content-Length`: a client that
//! declares 8 MiB and sends one byte holds one KiB, not the whole budget (it used to, and five
//! other calls waited 10 s for a 503). A body must also keep coming: after a short grace it must
//! arrive at `limits.min_body_bytes_per_sec` and be complete within `limits.body_timeout_ms`,
//! or the request is answered 408 and the room given back, so one slow client never holds up
//! another call for long.
//!
//! Taking room as bytes arrive can deadlock: many large bodies arriving at once each take part
//! of the budget, it runs out, and every one of them waits for more room that only another of
//! them could give back (64 connections sending 868 KB records got nothing but 503s after 10 s).
//! So a request that already holds room and finds the budget empty may take an **overdraft**
//! instead: it reads the rest of its body beyond the budget, finishes, gives back its room, and
//! the others go on. There is one overdraft per call thread (`call_threads`), not one in all:
//! with a single overdraft, once partly read bodies filled the budget only one call at a time
//! could go on, and one of the two cores sat idle (heavy records: 34 calls/s at 64 connections
//! against 68 at 2; BENCHMARKS.md, issue 18). More overdrafts than call threads would only make
//! bodies wait, read, for a thread. Memory stays bounded, by the budget plus one largest body
//! (`max_body_bytes`) per call thread.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::HttpRequest;
use actix_web::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::ApiError;

/// The most read and thrown away from an oversized body before giving up on it.
const DRAIN_CAP: usize = 64 * 1024 * 1024;

/// How long a request waits for room in the [`BodyBudget`] before it is answered 503.
const ROOM_WAIT: Duration = Duration::from_secs(10);
/// The budget counts whole KiB (a semaphore's permits are a `u32` count).
const ROOM_UNIT: usize = 1024;

/// Room for the request bodies in flight over all workers (`limits.max_inflight_body_bytes`).
/// Cloning shares the budget.
#[derive(Debug, Clone)]
pub struct BodyBudget {
    room: Arc<Semaphore>,
    /// One permit per call thread: the requests that may read their bodies to the end beyond
    /// the budget.
    overdraft: Arc<Semaphore>,
}

/// The room one request holds; given back when dropped (after its answer is built).
#[derive(Debug, Default)]
pub struct BodyRoom {
    permit: Option<OwnedSemaphorePermit>,
    /// Held while this request reads beyond the budget (see the module docs).
    overdraft: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl BodyBudget {
    /// A budget of `max_inflight_bytes` with `overdrafts` requests at a time allowed past it
    /// (one per call thread, at least one).
    pub fn new(max_inflight_bytes: usize, overdrafts: usize) -> Self {
        let units = max_inflight_bytes
            .div_ceil(ROOM_UNIT)
            .min(Semaphore::MAX_PERMITS);
        Self {
            room: Arc::new(Semaphore::new(units)),
            overdraft: Arc::new(Semaphore::new(overdrafts.clamp(1, Semaphore::MAX_PERMITS))),
        }
    }

    /// Grow `held` to cover `bytes`, waiting at most [`ROOM_WAIT`] for other requests to finish.
    async fn cover(&self, held: &mut BodyRoom, bytes: usize) -> Result<(), ApiError> {
        let have = held.bytes.div_ceil(ROOM_UNIT);
        let need = bytes.div_ceil(ROOM_UNIT);
        if need <= have {
            return Ok(());
        }
        if held.overdraft.is_some() {
            // Reading beyond the budget already: bounded by `max_body_bytes`.
            held.bytes = bytes;
            return Ok(());
        }
        let more = u32::try_from(need - have).map_err(|_| ApiError::Busy)?;
        let room = self.room.clone().acquire_many_owned(more);
        let got = if held.permit.is_none() {
            // Nothing held yet: wait for room like everyone else.
            tokio::time::timeout(ROOM_WAIT, async { room.await.map(Room::Budget) }).await
        } else {
            // Part of a body held: waiting for room alone could wait for ever (see the module
            // docs), so the overdraft is as good, whichever comes first.
            let overdraft = self.overdraft.clone().acquire_owned();
            tokio::time::timeout(ROOM_WAIT, async {
                tokio::select! {
                    permit = room => permit.map(Room::Budget),
                    permit = overdraft => permit.map(Room::Overdraft),
                }
            })
            .await
        };
        let got = got
            .map_err(|_| {
                tracing::warn!(
                    bytes,
                    "no room for the request body within 10 s (limits.max_inflight_body_bytes); answered 503"
                );
                ApiError::Busy
            })?
            .map_err(|_| ApiError::Busy)?; // the semaphores are never closed
        match got {
            Room::Budget(permit) => match &mut held.permit {
                Some(p) => p.merge(permit),
                None => held.permit = Some(permit),
            },
            Room::Overdraft(permit) => held.overdraft = Some(permit),
        }
        held.bytes = bytes;
        Ok(())
    }
}

/// What a request waiting for room got.
enum Room {
    Budget(OwnedSemaphorePermit),
    Overdraft(OwnedSemaphorePermit),
}

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

/// How a body must arrive: its size limit, its deadline and its minimum rate.
#[derive(Debug, Clone, Copy)]
pub struct BodyPace {
    /// `max_body_bytes`.
    pub limit: usize,
    /// `limits.body_timeout_ms`.
    pub timeout: Duration,
    /// `limits.min_body_bytes_per_sec`, after [`crate::limits::BODY_RATE_GRACE`].
    pub min_bytes_per_sec: usize,
}

impl BodyPace {
    /// When the next chunk must have arrived, `total` bytes having come since `started`.
    fn next_by(&self, started: Instant, total: usize) -> Instant {
        let rate = self.min_bytes_per_sec.max(1) as f64;
        let paced = crate::limits::BODY_RATE_GRACE + Duration::from_secs_f64(total as f64 / rate);
        started + paced.min(self.timeout)
    }
}

/// Read a JSON body within `pace`, taking room in `budget` as it arrives. The [`BodyRoom`]
/// returned must be kept until the answer is built.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: Payload,
    pace: BodyPace,
    budget: &BodyBudget,
) -> Result<(Bytes, BodyRoom), ApiError> {
    is_json(req)?;
    let limit = pace.limit;
    let declared = req
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > DRAIN_CAP) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    let mut room = BodyRoom::default();
    let started = Instant::now();
    let deadline = started + pace.timeout;
    // Capacity grows with what arrives: a declared length is a claim, not bytes.
    let mut buf = BytesMut::new();
    let mut total = 0usize;
    loop {
        let by = pace.next_by(started, total).min(deadline);
        let next = match tokio::time::timeout_at(by.into(), payload.next()).await {
            Ok(next) => next,
            Err(_) => {
                tracing::warn!(
                    received = total,
                    "request body too slow (limits.min_body_bytes_per_sec / body_timeout_ms); answered 408"
                );
                return Err(ApiError::BodyTimeout);
            }
        };
        let Some(chunk) = next else { break };
        let chunk = chunk.map_err(|_| ApiError::BodyRead)?;
        total = total.saturating_add(chunk.len());
        if total > limit {
            if total > DRAIN_CAP {
                break;
            }
            continue; // drain, do not keep
        }
        // Room for what has arrived, before it is kept; while the budget is full the rest
        // waits in the client's socket, not in memory.
        budget.cover(&mut room, total).await?;
        buf.extend_from_slice(&chunk);
    }
    if total > limit {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok((buf.freeze(), room))
}
