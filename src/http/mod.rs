//! The HTTP surface: routes, request-body handling and error responses.
//!
//! Routes are thin: they read the body within the size limit, hand it to the
//! [`Engine`](crate::pipeline::Engine) and turn its answer (or its [`CallError`]) into HTTP.
//! Every error is a JSON FHIR OperationOutcome naming what was wrong ([`error`]). The calls
//! themselves run on a pool shared by all workers ([`compute`]), not on the worker that read
//! the request.

pub mod body;
pub mod compute;
pub mod cors;
pub mod error;
pub mod metrics;
pub mod routes;

pub use error::ApiError;
