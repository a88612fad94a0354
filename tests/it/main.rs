//! The integration tests, as one test binary: `cargo test` links the service (and fhirbolt's
//! large generated model) once instead of once per file, which keeps a clean build's `target/`
//! a few gigabytes smaller and its link time a few minutes shorter. One module per subject;
//! `cargo test --test it <module>::` runs one of them (say `cargo test --test it cases::`).
//!
//! Everything here talks to the real service over HTTP on loopback (through
//! [`common::spawn_app`]), to the real FHIR server in `tests/fhir-server`
//! ([`support::fhir_server`]), or to mocks on loopback. Helpers live in `common` and `support`.
//!
//! Shared by all modules, because they share one process: the log capture
//! ([`common::logs`], one global subscriber; tests look only for their own lines, by request
//! id or by what only they send) and the FHIR server's `npm ci`.

mod common;
mod support {
    pub mod fhir_server;
    pub mod postgres;
}
// The benchmarks' record generator (api.rs builds a 1,000-resource record with it).
#[allow(dead_code)]
#[path = "../../benches/support/records.rs"]
mod records;

mod api;
mod auth;
mod auth_app;
mod cases;
mod demo;
mod fetch_faults;
mod fhir_server;
mod hooks;
mod logs;
mod metrics;
mod modules;
mod properties;
mod regressions;
mod store;
