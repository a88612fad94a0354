//! Shared set-up for the fuzz targets: the engine (schemas, value sets, policy, templates) is
//! built once per process, because loading it takes far longer than one input, and a
//! current-thread runtime drives the few async entry points without any I/O.
//!
//! Nothing here may reach the network: targets that run the pipeline strip `fhirServer` first,
//! and the JWT target trusts one issuer whose keys are inline.

use std::future::Future;
use std::sync::LazyLock;

use iort_cds::configuration::Settings;
use iort_cds::pipeline::Engine;

/// The engine with default settings, as the service would load it.
pub static ENGINE: LazyLock<Engine> = LazyLock::new(|| {
    Engine::load(&Settings::default())
        .expect("the embedded assets load (a build problem, not an input)")
});

/// Run a future that does no I/O to completion on a small runtime kept for the process.
pub fn block_on<F: Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("a current-thread runtime builds");
    }
    RUNTIME.with(|rt| rt.block_on(future))
}

pub mod structured;
