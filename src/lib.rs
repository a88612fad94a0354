//! # iort-cds
//!
//! A [CDS Hooks 2.0](https://cds-hooks.hl7.org/2.0/) service that tells a clinician, at the
//! moment an intraoperative radiotherapy (IORT) order is signed, whether it meets the payer's
//! coverage criteria, and why. It answers with CDS cards and a Da Vinci CRD
//! `coverage-information` system action.
//!
//! One request flows one way through five stages, each its own module with plain data in and
//! out. Only [`gather`] does I/O; [`decision`] is a pure function.
//!
//! ```text
//!  HTTP body ──► hook ──► gather ──► facts ──► decision ──► render ──► CDS response
//!               parse &   patient    clinical   per-order    cards +
//!               validate  record     facts +    outcome      system actions
//!                                    evidence
//! ```
//!
//! Beside the pipeline: [`http`] (routes, errors as OperationOutcome), [`auth`] (the CDS Hooks
//! client JWT, secure by default), [`startup`] (builds the
//! actix-web app), [`configuration`] (defaults < TOML file < environment < flags),
//! [`limits`] (bounds on the shape of request and FHIR JSON), [`metrics`] (Prometheus
//! `/metrics`),
//! [`telemetry`] (tracing without tokens or clinical content), [`assets`] (the FHIR profiles,
//! value sets, JSON Schemas, policy data and card templates, embedded at compile time and
//! optionally overridden from disk), and [`pipeline`], which runs the stages in order.

pub mod assets;
pub mod auth;
pub mod cli;
pub mod configuration;
pub mod decision;
pub mod facts;
pub mod fhir_json;
pub mod gather;
pub mod hook;
pub mod http;
pub mod limits;
pub mod metrics;
pub mod pipeline;
pub mod policy;
pub mod reach;
pub mod record;
pub mod render;
pub mod resource_ref;
pub mod startup;
pub mod store;
pub mod telemetry;
pub mod terminology;
