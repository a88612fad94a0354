//! Stage 1 of the pipeline: the CDS Hooks wire format.
//!
//! A request body is validated against the JSON Schemas in `fhir-profiles/schemas/`
//! ([`schema`]) and then parsed once into [`HookRequest`] ([`request`]); every later stage
//! trusts it. The response types the service writes back are in [`response`], and the
//! discovery document in [`discovery`].

pub mod call;
pub mod discovery;
pub mod request;
pub mod response;
pub mod schema;

pub use request::{
    CrdConfiguration, DraftOrder, FhirAuthorization, Hook, HookContext, HookRequest, Prefetch,
    RequestError,
};
pub use response::{Action, ActionType, Card, CdsResponse, Coding, Indicator, Link, Source};
