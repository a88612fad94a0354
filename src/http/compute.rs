//! Where hook calls run: one multi-threaded runtime shared by every HTTP worker.
//!
//! actix-web runs each worker as a single-threaded event loop and keeps each connection on the
//! worker that accepted it. A call is CPU work (about a millisecond for a typical record, tens
//! of milliseconds for a heavy one), so run on the worker it makes every other connection of
//! that worker wait, even while another core is idle, and a liveness probe can wait behind a
//! heavy record. Calls therefore run on this pool: the HTTP workers read bodies and write
//! answers, and whichever pool thread is free takes the next call, whatever connection it came
//! on (one queue for all cores instead of one per worker; BENCHMARKS.md has the figures).
//!
//! The pool also contains panics: a call that panics (a bug) ends its own task, and the caller
//! gets [`Panicked`] to answer 500 with; nothing else is affected.

use tracing::Instrument;

/// A call that panicked (or was cut short by shutdown) instead of finishing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Panicked;

/// The shared runtime. Dropping it lets running calls finish in the background (it may be
/// dropped on an actix worker, where blocking to wait for them is not allowed).
#[derive(Debug)]
pub struct ComputePool {
    runtime: Option<tokio::runtime::Runtime>,
}

impl ComputePool {
    /// A pool of `threads` threads (at least one).
    pub fn new(threads: usize) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .thread_name("iort-cds-call")
            .enable_all()
            .build()?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// Run `work` on the pool and wait for it, inside the caller's tracing span (so its log
    /// lines keep the request id). If the caller stops waiting (the client went away), the
    /// call still runs to its end, bounded by the pipeline's own deadlines.
    pub async fn run<T: Send + 'static>(
        &self,
        work: impl Future<Output = T> + Send + 'static,
    ) -> Result<T, Panicked> {
        let runtime = self.runtime.as_ref().ok_or(Panicked)?;
        runtime
            .spawn(work.in_current_span())
            .await
            .map_err(|_| Panicked)
    }
}

impl Drop for ComputePool {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn results_come_back_and_panics_are_contained() {
        let pool = ComputePool::new(2).unwrap();
        assert_eq!(pool.run(async { 6 * 7 }).await, Ok(42));
        let failed: Result<(), Panicked> = pool.run(async { panic!("a bug") }).await;
        assert_eq!(failed, Err(Panicked));
        assert_eq!(
            pool.run(async { "still serving" }).await,
            Ok("still serving")
        );
    }

    #[tokio::test]
    async fn calls_run_on_the_pool_threads() {
        let pool = ComputePool::new(1).unwrap();
        let name = pool
            .run(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("iort-cds-call"));
    }
}
