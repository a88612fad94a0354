//! The writer task: takes records off the bounded queue in batches (letting a batch gather for
//! [`GATHER`] when records come slowly) and writes each batch in one transaction, at most one
//! statement per table. When the database is down it keeps the batch and tries again with backoff
//! (100 ms doubling to 5 s), so nothing already queued is lost; meanwhile the queue fills, and
//! what does not fit is refused at [`super::Store::submit`] (counted and logged there).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::AnyPool;
use tokio::sync::{mpsc, oneshot};

use super::Counters;
use super::db;
use super::records::{CallRecord, FeedbackRecord};

/// One message on the queue.
#[derive(Debug)]
pub(crate) enum Item {
    Call(Box<CallRecord>),
    Feedback(Box<FeedbackRecord>),
    /// Write everything queued so far, answer, and stop (graceful shutdown).
    Close(oneshot::Sender<()>),
}

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// After the first record of a batch arrives, how long the writer lets more gather before it
/// writes (unless the batch is full or a close is asked). A transaction's cost barely depends on
/// its size; at ~1,400 calls a second, writing each record as it came meant batches of about
/// two records and ~800 transactions a second, each with its round trips, its commit and a
/// wake-up of this task per record, all CPU taken from the calls. Gathered, they are a few
/// dozen transactions a second. 250 ms rather than 50: each commit also writes whole every
/// index and table page it touched (16 KiB each on SQLite), whatever the batch's size, so at
/// ~1,800 typical calls a second batches of ~450 instead of ~110 took the store's threads from
/// 59 to 40 µs of CPU per call (BENCHMARKS.md, session 8). The price is that records reach the
/// database up to this much later (a graceful shutdown still writes them all).
const GATHER: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Run until the queue is closed or a [`Item::Close`] is handled.
pub(crate) async fn run(
    pool: AnyPool,
    sink: db::Sink,
    mut rx: mpsc::Receiver<Item>,
    counters: Arc<Counters>,
    batch_size: usize,
) {
    // Create or update the tables first; records queue up meanwhile.
    let mut backoff = FIRST_BACKOFF;
    loop {
        match db::migrate(&pool).await {
            Ok(()) => {
                counters.reachable(true);
                counters.migrated.store(true, Ordering::Relaxed);
                break;
            }
            Err(e) => {
                counters.reachable(false);
                tracing::warn!(error = %kind(&e), "store: cannot prepare the database; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    let mut batch = Vec::with_capacity(batch_size);
    let mut closers = Vec::new();
    loop {
        if rx.recv_many(&mut batch, batch_size).await == 0 {
            break; // every sender is gone
        }
        if batch.len() < batch_size && !batch.iter().any(|i| matches!(i, Item::Close(_))) {
            // While this task sleeps, a record sent does not wake it.
            tokio::time::sleep(GATHER).await;
            while batch.len() < batch_size {
                match rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        // After a close request, take whatever else is queued too, then stop.
        let closing = batch.iter().any(|i| matches!(i, Item::Close(_)));
        if closing {
            while let Ok(item) = rx.try_recv() {
                batch.push(item);
            }
        }
        let (close, records): (Vec<Item>, Vec<Item>) =
            batch.drain(..).partition(|i| matches!(i, Item::Close(_)));
        closers.extend(close.into_iter().filter_map(|i| match i {
            Item::Close(tx) => Some(tx),
            _ => None,
        }));
        for chunk in records.chunks(batch_size) {
            write(&sink, chunk, &counters).await;
        }
        if closing {
            break;
        }
    }
    rx.close();
    for tx in closers {
        let _ = tx.send(());
    }
}

/// Write one batch, retrying until it is written. A batch the database refuses for what it
/// holds (a constraint or a value it cannot store: retrying cannot help) is written record by
/// record instead, so one bad record cannot hold up the queue for ever.
async fn write(sink: &db::Sink, items: &[Item], counters: &Counters) {
    let mut backoff = FIRST_BACKOFF;
    let mut refused = 0;
    loop {
        let started = std::time::Instant::now();
        match db::write_batch(sink, items).await {
            Ok(()) => {
                let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
                counters.write_micros.fetch_add(micros, Ordering::Relaxed);
                counters.batches.fetch_add(1, Ordering::Relaxed);
                done(items.len(), counters);
                return;
            }
            Err(e) => {
                counters.write_failures.fetch_add(1, Ordering::Relaxed);
                if refused_for_content(&e) {
                    refused += 1;
                    if items.len() > 1 {
                        for item in items {
                            write_one(sink, item, counters).await;
                        }
                        return;
                    }
                    if refused >= 3 {
                        counters.rejected.fetch_add(1, Ordering::Relaxed);
                        counters
                            .last_rejected
                            .store(super::unix_now(), Ordering::Relaxed);
                        counters.queued.fetch_sub(1, Ordering::Relaxed);
                        tracing::error!(error = %kind(&e), "store: the database refused a record three times; it is set aside (see /readyz)");
                        return;
                    }
                } else if counters.reachable(false) {
                    // Once per outage; the error's kind only (no values from the records).
                    tracing::warn!(error = %kind(&e), queued = counters.queued.load(Ordering::Relaxed),
                        "store: cannot write; records wait in the queue and are retried");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

fn write_one<'a>(
    sink: &'a db::Sink,
    item: &'a Item,
    counters: &'a Counters,
) -> futures_util::future::BoxFuture<'a, ()> {
    Box::pin(write(sink, std::slice::from_ref(item), counters))
}

fn done(n: usize, counters: &Counters) {
    counters.written.fetch_add(n as u64, Ordering::Relaxed);
    counters.queued.fetch_sub(n, Ordering::Relaxed);
    counters.reachable(true);
}

/// The database answered, and refused the statement for the values it holds.
fn refused_for_content(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(d) => {
            !matches!(d.kind(), sqlx::error::ErrorKind::Other)
                || d.code().is_some_and(|c| c.starts_with("22"))
        }
        _ => false,
    }
}

/// What went wrong, without the statement's values: sqlx's database errors carry the server's
/// message, which may quote a value; only the SQLSTATE / kind is logged.
pub(crate) fn kind(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(d) => format!(
            "database error {}",
            d.code().as_deref().unwrap_or("(no code)")
        ),
        sqlx::Error::Io(io) => format!("i/o: {}", io.kind()),
        sqlx::Error::PoolTimedOut => "no connection (timed out)".to_owned(),
        sqlx::Error::Tls(_) => "tls".to_owned(),
        sqlx::Error::Migrate(m) => format!("migration: {m}"),
        sqlx::Error::Configuration(_) => "configuration".to_owned(),
        sqlx::Error::PoolClosed => "pool closed".to_owned(),
        _ => "other".to_owned(),
    }
}
