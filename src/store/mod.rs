//! The audit store: what each hook call was answered, on what evidence and under which
//! policy version, kept in a database so the payer can later say what a
//! `coverage-assertion-id` stood for (Da Vinci CRD expects both sides to log hook calls and
//! responses), plus feedback, and — with PostgreSQL — the JWT replay memory shared by all
//! instances.
//!
//! **Never in the way of the hook.** A handler only builds a small record and puts it on a
//! bounded queue ([`Store::submit_call`], never waiting); a writer task ([`writer`]) writes
//! batches in transactions. A database that is down delays records (they wait in the queue and
//! are retried) but never an answer; a full queue refuses the record, counts it, logs it and
//! shows the service as degraded on `/readyz` for five minutes. Nothing is dropped silently.
//! Graceful shutdown writes what is queued ([`Store::close`]).
//!
//! **One SQL text for both databases, through sqlx's `Any` driver.** The store needs plain
//! inserts, deletes and indexed reads of text and integers; the portable subset of SQL that
//! SQLite and PostgreSQL share covers it (`$1` parameters, `ON CONFLICT`, text times in
//! RFC 3339). One set of statements and one migration history cannot drift apart the way two
//! backend implementations behind a trait could, and the tests of either database test the
//! statements the other runs. The cost, decoding only basic types, is no cost here. The one
//! exception is the writer's batch inserts ([`db`]): a batch goes to the database as one JSON
//! array per table, which the two unpack with different functions, so those three statements
//! have a fixed text per backend (same columns, same conflict rule). One statement per table
//! per batch instead of one per record is what lets the writer keep up with the no-IORT path
//! while taking little CPU from the calls on the same cores (BENCHMARKS.md).
//!
//! **SQLite by default** (a file, `iort-cds.db` in the working directory, created and migrated
//! at start-up and printed in the log), so the service runs with no set-up; **PostgreSQL**
//! when several instances serve behind a load balancer: they share the records and the replay
//! memory ([`Store::seen_elsewhere`]). The JWK Set caches stay per instance.
//!
//! **Privacy.** A token's `jti` is stored only as a SHA-256; the request body (the patient's
//! record) only with `store.keep_requests`. Log lines name error kinds and counts, never values.

pub mod db;
pub mod records;
pub mod settings;
pub(crate) mod writer;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use sqlx::AnyPool;
use sqlx::any::AnyPoolOptions;
use tokio::sync::{mpsc, oneshot};

pub use records::{CallHeader, CallRecord, ClientRecord, FeedbackRecord, OrderRecord};
pub use settings::StoreSettings;
use writer::Item;

/// Which database a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    pub fn of(url: &str) -> Option<Self> {
        if url.starts_with("sqlite:") {
            Some(Backend::Sqlite)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Some(Backend::Postgres)
        } else {
            None
        }
    }
}

/// How long a degradation stays visible on `/readyz` after it last happened.
const DEGRADED_FOR_SECS: u64 = 300;
/// The longest a token check waits for the shared replay memory before it is given up for
/// this call (the token is then checked against this instance's memory only).
const REPLAY_TIMEOUT: Duration = Duration::from_millis(500);
/// After the shared replay memory failed to answer, how long calls skip asking it.
const REPLAY_RETRY_AFTER_SECS: u64 = 5;
/// How often old records are purged.
const PURGE_EVERY: Duration = Duration::from_secs(3600);

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The store's counters (atomics, for `/readyz` and for export as metrics).
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Records accepted on the queue and not yet written (including the batch being written).
    queued: AtomicUsize,
    written: AtomicU64,
    /// Records refused because the queue was full (or closed).
    overflowed: AtomicU64,
    /// Failed write attempts (each retried).
    write_failures: AtomicU64,
    /// Batches written, and the time their writes took (microseconds): the writer's latency
    /// and the rate it sustains (records per second of writing).
    batches: AtomicU64,
    write_micros: AtomicU64,
    /// Records the database refused (set aside after three tries; see `writer`).
    rejected: AtomicU64,
    last_rejected: AtomicU64,
    /// Token checks that could not reach the shared replay memory.
    replay_fallbacks: AtomicU64,
    unreachable: AtomicBool,
    migrated: AtomicBool,
    last_overflow: AtomicU64,
    last_replay_fallback: AtomicU64,
    last_replay_logged: AtomicU64,
}

impl Counters {
    /// Note whether the database answered; `true` when this changes it from reachable to not.
    fn reachable(&self, up: bool) -> bool {
        let was_down = self.unreachable.swap(!up, Ordering::Relaxed);
        if up && was_down {
            tracing::info!("store: the database is reachable again");
        }
        !up && !was_down
    }
}

/// A snapshot of the store's counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct StoreStats {
    pub queue_depth: usize,
    pub queue_capacity: usize,
    pub records_written: u64,
    /// Refused because the queue was full: these are lost (and were logged).
    pub records_dropped: u64,
    /// Refused by the database for what they held: set aside (and logged).
    pub records_rejected: u64,
    pub write_failures: u64,
    /// Batches written, and the time their transactions took in all (microseconds).
    pub batches_written: u64,
    pub write_micros: u64,
    pub replay_fallbacks: u64,
    pub database_reachable: bool,
}

/// Records hook calls and feedback. Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    tx: mpsc::Sender<Item>,
    pool: AnyPool,
    backend: Backend,
    location: String,
    keep_requests: bool,
    capacity: usize,
    counters: Arc<Counters>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.inner.backend)
            .field("location", &self.inner.location)
            .finish_non_exhaustive()
    }
}

/// A connection pool for `settings` (nothing is connected yet). SQLite files are created when
/// missing.
fn pool(settings: &StoreSettings) -> Result<(AnyPool, Backend), String> {
    static DRIVERS: std::sync::Once = std::sync::Once::new();
    DRIVERS.call_once(sqlx::any::install_default_drivers);
    let mut url = settings.url();
    let backend = Backend::of(&url).ok_or("store.url: not a sqlite:// or postgres:// URL")?;
    if backend == Backend::Sqlite && !url.contains("mode=") {
        url.push_str(if url.contains('?') { "&" } else { "?" });
        url.push_str("mode=rwc");
    }
    let mut options = AnyPoolOptions::new()
        .max_connections(settings.max_connections)
        .acquire_timeout(Duration::from_secs(3));
    if backend == Backend::Sqlite {
        // SQLite's defaults (a rollback journal, and `synchronous = FULL`) sync the disk
        // several times per transaction: the writer managed ~5,000 records a second, less
        // than the no-IORT path answers, and the queue overflowed (BENCHMARKS.md). A
        // write-ahead log with `synchronous = NORMAL` syncs at checkpoints: the database
        // stays consistent through a crash, and at worst the last transactions before a
        // power loss are gone.
        options = options.after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor as _;
                // Set before the file is first written (a no-op on an existing database):
                // a typical call's record (its 7 KB response) fits one 16 KiB page instead of
                // a 4 KiB page and two overflow pages, so fewer pages (each its own writes to
                // the log and again to the file at a checkpoint) per record.
                conn.execute("PRAGMA page_size = 16384").await?;
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = NORMAL").await?;
                Ok(())
            })
        });
    }
    let pool = options
        .connect_lazy(&url)
        // sqlx's message may quote the URL, password included: say only what is wrong.
        .map_err(|_| format!("store.url: cannot be used ({})", describe(settings)))?;
    Ok((pool, backend))
}

/// The writer's way to the database: SQLite through the store's pool; PostgreSQL through a
/// pool of one connection of its own (one more than `store.max_connections`), since it writes
/// by `COPY`, which sqlx's `Any` connections do not offer ([`db::Sink`]).
fn sink(settings: &StoreSettings, pool: &AnyPool, backend: Backend) -> Result<db::Sink, String> {
    if backend == Backend::Sqlite {
        return Ok(db::Sink::Sqlite(pool.clone()));
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(3))
        // PostgreSQL compresses a text value over ~2 KB before storing it (a typical call's
        // 7 KB response), by default with pglz, which showed in the writer's profile
        // (session 6: pglz_compress about 6 % of the server's time); lz4 does the same work
        // for a fraction of the CPU. A server built without lz4 refuses the setting: then
        // the default stays.
        .after_connect(|conn, _| {
            Box::pin(async move {
                use sqlx::Executor as _;
                let _ = conn.execute("SET default_toast_compression = 'lz4'").await;
                Ok(())
            })
        })
        .connect_lazy(&settings.url())
        .map_err(|_| format!("store.url: cannot be used ({})", describe(settings)))?;
    Ok(db::Sink::Postgres(pool))
}

/// Where the store is, for people: the SQLite file's absolute path, or the PostgreSQL URL
/// without its password.
pub fn describe(settings: &StoreSettings) -> String {
    let url = settings.url();
    match Backend::of(&url) {
        Some(Backend::Sqlite) => {
            let rest = url.trim_start_matches("sqlite:").trim_start_matches("//");
            let path = rest.split('?').next().unwrap_or(rest);
            let path = std::path::Path::new(path);
            let full = if path.is_absolute() {
                path.to_owned()
            } else {
                std::env::current_dir().map_or(path.to_owned(), |d| d.join(path))
            };
            format!("SQLite file {}", full.display())
        }
        Some(Backend::Postgres) => match reqwest::Url::parse(&url) {
            Ok(mut u) => {
                let _ = u.set_password(None);
                u.set_query(None);
                format!("PostgreSQL {u}")
            }
            Err(_) => "PostgreSQL (unparsable URL)".to_owned(),
        },
        None => "unknown database".to_owned(),
    }
}

impl Store {
    /// Start the store: the pool, the writer task (which creates or migrates the tables
    /// first) and the hourly purge. Needs a Tokio runtime. `None` when the store is disabled.
    pub fn start(settings: &StoreSettings) -> Result<Option<Self>, String> {
        if !settings.enabled {
            tracing::info!("store: disabled (store.enabled = false); nothing is recorded");
            return Ok(None);
        }
        let (pool, backend) = pool(settings)?;
        let sink = sink(settings, &pool, backend)?;
        let location = describe(settings);
        tracing::info!(
            "store: {location}{}",
            if settings.keep_requests {
                " (request bodies kept: store.keep_requests)"
            } else {
                ""
            }
        );
        let (tx, rx) = mpsc::channel(settings.queue_capacity);
        let counters = Arc::new(Counters::default());
        tokio::spawn(writer::run(
            pool.clone(),
            sink,
            rx,
            Arc::clone(&counters),
            settings.batch_size,
        ));
        tokio::spawn(purge_periodically(
            pool.clone(),
            Arc::clone(&counters),
            settings.retention_days,
        ));
        Ok(Some(Self {
            inner: Arc::new(Inner {
                tx,
                pool,
                backend,
                location,
                keep_requests: settings.keep_requests,
                capacity: settings.queue_capacity,
                counters,
            }),
        }))
    }

    /// Whether request bodies are to be kept (`store.keep_requests`).
    pub fn keeps_requests(&self) -> bool {
        self.inner.keep_requests
    }

    pub fn backend(&self) -> Backend {
        self.inner.backend
    }

    /// Whether this store keeps the JWT replay memory for all instances (PostgreSQL).
    pub fn shares_replay(&self) -> bool {
        self.inner.backend == Backend::Postgres
    }

    /// Queue a call's record; never waits. A full queue refuses it: counted, logged.
    pub fn submit_call(&self, mut record: CallRecord) {
        record.scrub();
        self.submit(Item::Call(Box::new(record)));
    }

    /// Queue a feedback record; never waits.
    pub fn submit_feedback(&self, mut record: FeedbackRecord) {
        record.scrub();
        self.submit(Item::Feedback(Box::new(record)));
    }

    fn submit(&self, item: Item) {
        let c = &self.inner.counters;
        c.queued.fetch_add(1, Ordering::Relaxed);
        if self.inner.tx.try_send(item).is_err() {
            c.queued.fetch_sub(1, Ordering::Relaxed);
            let n = c.overflowed.fetch_add(1, Ordering::Relaxed) + 1;
            c.last_overflow.store(unix_now(), Ordering::Relaxed);
            // The first and every 1000th, so a flood does not become a flood of lines.
            if n == 1 || n.is_multiple_of(1000) {
                tracing::error!(
                    dropped_total = n,
                    capacity = self.inner.capacity,
                    "store: queue full; a record was dropped (see /readyz)"
                );
            }
        }
    }

    /// With PostgreSQL: remember (`iss`, `jti`) in the database until `forget_after` (unix
    /// seconds) and say whether any instance had already seen it. SQLite serves one instance,
    /// whose own memory suffices: always `false`. When the database does not answer within
    /// 500 ms the token is accepted on this instance's memory alone (the call must not fail
    /// because the store is down), counted, logged once a minute and shown on `/readyz`; for
    /// the next 5 seconds the database is not asked (so an outage does not add the timeout to
    /// every call).
    pub async fn seen_elsewhere(&self, iss: &str, jti: &str, forget_after: u64) -> bool {
        if self.inner.backend != Backend::Postgres {
            return false;
        }
        let now = unix_now();
        let c = &self.inner.counters;
        // Within a few seconds of a failure the database is not asked again, so an outage
        // costs a call the timeout once every few seconds, not on every call.
        let last = c.last_replay_fallback.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < REPLAY_RETRY_AFTER_SECS {
            c.replay_fallbacks.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let jti_sha256 = records::sha256_hex(jti);
        let remember = async {
            // Just after start-up the writer may still be creating the tables: a token checked
            // then waits for them (within the timeout) rather than failing over to this
            // instance's memory, which would accept a token another instance had seen.
            while !c.migrated.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            db::remember_jti(
                &self.inner.pool,
                iss,
                &jti_sha256,
                i64::try_from(forget_after).unwrap_or(i64::MAX),
                i64::try_from(now).unwrap_or(i64::MAX),
            )
            .await
        };
        match tokio::time::timeout(REPLAY_TIMEOUT, remember).await {
            Ok(Ok(seen)) => seen,
            outcome => {
                c.replay_fallbacks.fetch_add(1, Ordering::Relaxed);
                let before = c.last_replay_logged.swap(now, Ordering::Relaxed);
                c.last_replay_fallback.store(now, Ordering::Relaxed);
                if now.saturating_sub(before) >= 60 {
                    let why = match outcome {
                        Ok(Err(e)) => writer::kind(&e),
                        _ => "timed out".to_owned(),
                    };
                    tracing::warn!(error = %why, "store: shared replay memory unavailable; tokens checked against this instance's memory only");
                }
                false
            }
        }
    }

    /// The counters now.
    pub fn stats(&self) -> StoreStats {
        let c = &self.inner.counters;
        StoreStats {
            queue_depth: c.queued.load(Ordering::Relaxed),
            queue_capacity: self.inner.capacity,
            records_written: c.written.load(Ordering::Relaxed),
            records_dropped: c.overflowed.load(Ordering::Relaxed),
            records_rejected: c.rejected.load(Ordering::Relaxed),
            write_failures: c.write_failures.load(Ordering::Relaxed),
            batches_written: c.batches.load(Ordering::Relaxed),
            write_micros: c.write_micros.load(Ordering::Relaxed),
            replay_fallbacks: c.replay_fallbacks.load(Ordering::Relaxed),
            database_reachable: !c.unreachable.load(Ordering::Relaxed),
        }
    }

    /// Why the store is degraded now (empty: it is not).
    pub fn degraded(&self) -> Vec<&'static str> {
        let c = &self.inner.counters;
        let now = unix_now();
        let recent = |at: &AtomicU64| {
            let at = at.load(Ordering::Relaxed);
            at != 0 && now.saturating_sub(at) < DEGRADED_FOR_SECS
        };
        let mut why = Vec::new();
        if c.unreachable.load(Ordering::Relaxed) {
            why.push("store database unreachable: records wait in the queue");
        }
        if recent(&c.last_overflow) {
            why.push("store queue overflowed in the last 5 minutes: records were dropped");
        }
        if recent(&c.last_rejected) {
            why.push("the store database refused a record in the last 5 minutes");
        }
        if recent(&c.last_replay_fallback) {
            why.push("shared replay memory unavailable in the last 5 minutes");
        }
        why
    }

    /// The store's part of `/readyz`.
    pub fn readiness(&self) -> Value {
        json!({
            "location": self.inner.location,
            "degraded": self.degraded(),
            "stats": self.stats(),
        })
    }

    /// Write everything queued, then stop the writer; waits at most `timeout`. Returns
    /// whether the queue was flushed in time.
    pub async fn close(&self, timeout: Duration) -> bool {
        let (done_tx, done_rx) = oneshot::channel();
        let flushed = async {
            self.inner.tx.send(Item::Close(done_tx)).await.is_ok() && done_rx.await.is_ok()
        };
        let ok = tokio::time::timeout(timeout, flushed)
            .await
            .unwrap_or(false);
        let s = self.stats();
        if ok {
            tracing::info!(written = s.records_written, "store: queue flushed");
        } else {
            tracing::error!(
                left = s.queue_depth,
                "store: could not flush the queue before the shutdown deadline"
            );
        }
        ok
    }
}

/// Purge once the tables exist, then hourly.
async fn purge_periodically(pool: AnyPool, counters: Arc<Counters>, retention_days: u32) {
    while !counters.migrated.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let mut tick = tokio::time::interval(PURGE_EVERY);
    loop {
        tick.tick().await;
        let cutoff = (retention_days > 0).then(|| {
            (chrono::Utc::now() - chrono::Duration::days(i64::from(retention_days)))
                .format("%Y-%m-%dT%H:%M:%S%.6fZ")
                .to_string()
        });
        let now = i64::try_from(unix_now()).unwrap_or(i64::MAX);
        match db::purge(&pool, cutoff.as_deref(), now).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(calls = n, retention_days, "store: old records purged"),
            Err(e) => {
                tracing::warn!(error = %writer::kind(&e), "store: purge failed; retried in an hour")
            }
        }
    }
}

impl crate::auth::SharedReplay for Store {
    fn seen_elsewhere<'a>(
        &'a self,
        iss: &'a str,
        jti: &'a str,
        forget_after: u64,
    ) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + 'a>> {
        Box::pin(Store::seen_elsewhere(self, iss, jti, forget_after))
    }
}

/// Read access for the `assertions` commands: the same database the service writes.
pub struct Reader {
    pool: AnyPool,
}

impl Reader {
    /// Connect (creating or migrating the tables, as the service would at start-up).
    pub async fn open(settings: &StoreSettings) -> Result<Self, String> {
        let (pool, _) = pool(settings)?;
        db::migrate(&pool)
            .await
            .map_err(|e| format!("{}: {}", describe(settings), writer::kind(&e)))?;
        Ok(Self { pool })
    }

    /// The determination that handed out `assertion_id`, with its call and feedback.
    pub async fn show(&self, assertion_id: &str) -> Result<Option<Value>, String> {
        db::show(&self.pool, assertion_id)
            .await
            .map_err(|e| writer::kind(&e))
    }

    /// Determinations, newest first.
    pub async fn list(
        &self,
        patient: Option<&str>,
        since: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Value>, String> {
        db::list(&self.pool, patient, since, limit)
            .await
            .map_err(|e| writer::kind(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_settings() -> StoreSettings {
        let path = std::env::temp_dir().join(format!("iort-store-{}.db", uuid::Uuid::new_v4()));
        StoreSettings {
            url: Some(format!("sqlite://{}", path.display())),
            ..StoreSettings::default()
        }
    }

    fn remove(settings: &StoreSettings) {
        let url = settings.url();
        let _ = std::fs::remove_file(url.trim_start_matches("sqlite://"));
    }

    fn record(n: usize, received_at: &str, patient: &str) -> CallRecord {
        CallRecord {
            request_id: format!("req-{n}"),
            received_at: received_at.to_owned(),
            service_id: "iort-coverage".to_owned(),
            header: CallHeader {
                hook: "order-sign".to_owned(),
                hook_instance: format!("hi-{n}"),
                patient_id: patient.to_owned(),
                ..CallHeader::default()
            },
            client: ClientRecord::default(),
            orders: vec![OrderRecord {
                order_ref: Some(format!("ServiceRequest/o{n}")),
                billing_code: None,
                covered: "covered",
                criteria: "[]".to_owned(),
                policy_id: "p".to_owned(),
                policy_version: "v".to_owned(),
                policy_effective: "2024-09-03".to_owned(),
                assertion_id: Some(format!("a-{n}")),
                card_uuid: None,
                card_summary: None,
            }],
            response_body: "{}".to_owned(),
            request_body: None,
        }
    }

    #[tokio::test]
    async fn close_writes_everything_queued_first() {
        let settings = temp_settings();
        let store = Store::start(&settings).unwrap().unwrap();
        for n in 0..300 {
            store.submit_call(record(n, &records::now_text(), "p1"));
        }
        // Submitted while the writer is still creating the tables: all still queued or
        // being written when close is asked.
        assert!(store.close(Duration::from_secs(20)).await);
        let s = store.stats();
        assert_eq!(
            (s.records_written, s.queue_depth, s.records_dropped),
            (300, 0, 0)
        );
        let reader = Reader::open(&settings).await.unwrap();
        assert_eq!(reader.list(None, None, 1000).await.unwrap().len(), 300);
        // After close, a record is refused and counted, not silently lost.
        store.submit_call(record(300, &records::now_text(), "p1"));
        assert_eq!(store.stats().records_dropped, 1);
        remove(&settings);
    }

    /// A batch of many SQLite statements (128 rows of bound parameters at most) is written
    /// whole, each value as it was (quotes, non-ASCII, an escaped NUL).
    #[tokio::test]
    async fn a_batch_of_several_statements_is_written_whole() {
        let settings = StoreSettings {
            batch_size: 2_500,
            queue_capacity: 5_000,
            ..temp_settings()
        };
        let store = Store::start(&settings).unwrap().unwrap();
        let body = r#"{"cards":[{"summary":"Résumé \"IORT\" \u0000"}]}"#;
        for n in 0..2_500 {
            let mut r = record(n, &records::now_text(), "p1");
            r.response_body = format!("{body}{n}");
            store.submit_call(r);
        }
        assert!(store.close(Duration::from_secs(60)).await);
        let s = store.stats();
        // In one batch, with no statement refused (a refused batch would be written again
        // record by record, and counted).
        assert_eq!(
            (s.records_written, s.records_dropped, s.write_failures),
            (2_500, 0, 0)
        );
        assert_eq!(s.batches_written, 1);
        let reader = Reader::open(&settings).await.unwrap();
        assert_eq!(reader.list(None, None, 5_000).await.unwrap().len(), 2_500);
        let stored: String =
            sqlx::query_scalar("SELECT response_body FROM hook_calls WHERE request_id = $1")
                .bind("req-2499")
                .fetch_one(&store.inner.pool)
                .await
                .unwrap();
        assert_eq!(stored, format!("{body}2499"));
        let shown = reader.show("a-1234").await.unwrap().expect("a-1234");
        assert_eq!(shown["order"], "ServiceRequest/o1234", "{shown}");
        remove(&settings);
    }

    #[tokio::test]
    async fn retention_deletes_what_is_older_and_keeps_the_rest() {
        let settings = temp_settings();
        let store = Store::start(&settings).unwrap().unwrap();
        store.submit_call(record(1, "2001-01-01T00:00:00.000000Z", "old"));
        store.submit_call(record(2, &records::now_text(), "new"));
        assert!(store.close(Duration::from_secs(20)).await);
        let cutoff = "2010-01-01T00:00:00.000000Z";
        let deleted = db::purge(&store.inner.pool, Some(cutoff), 0).await.unwrap();
        assert_eq!(deleted, 1);
        let reader = Reader::open(&settings).await.unwrap();
        let left = reader.list(None, None, 10).await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0]["patientId"], "new");
        assert!(reader.show("a-1").await.unwrap().is_none());
        remove(&settings);
    }

    #[test]
    fn a_nul_character_is_replaced_before_it_reaches_the_database() {
        let mut r = record(1, "t", "a\0b");
        r.scrub();
        assert_eq!(r.header.patient_id, "a\u{FFFD}b");
    }
}
