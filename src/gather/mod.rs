//! Stage 2 of the pipeline: gather the patient record.
//!
//! The record comes from the request's `prefetch` ([`prefetch`]); keys the service declared
//! but the client did not send are fetched from the EHR's FHIR server (the only I/O in the
//! pipeline). Bundles are split with serde_json and each resource is parsed on its own with
//! fhirbolt, so one unreadable resource is noted in [`PatientRecord::issues`] and skipped
//! instead of sinking the whole request (and fhirbolt never sees a Bundle envelope, which it
//! mis-reads when `search` follows `resource`).

pub mod prefetch;

use fhirbolt::model::r4::resources::{Condition, Coverage, Observation, Procedure};

/// Something in the record that could not be used, kept so the cards can say the record was
/// incomplete. It names the prefetch key and the resource (`Type/id`), never clinical content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIssue {
    /// The prefetch key (or FHIR query) the data came from.
    pub source: String,
    /// `Type/id` of the resource, when known.
    pub resource: Option<String>,
    /// What was wrong, e.g. "does not parse as FHIR R4 Observation: unknown field `foo`".
    pub problem: String,
}

/// The parts of the patient's record the decision reads, each resource parsed and typed.
#[derive(Debug, Clone, Default)]
pub struct PatientRecord {
    pub patient_id: String,
    pub conditions: Vec<Condition>,
    pub procedures: Vec<Procedure>,
    pub observations: Vec<Observation>,
    pub coverages: Vec<Coverage>,
    /// Resources that were skipped, and why.
    pub issues: Vec<RecordIssue>,
    /// Set when a whole part of the record could not be obtained (e.g. the FHIR server failed):
    /// the decision must then answer `indeterminate` rather than guess. Says what failed.
    pub unavailable: Option<String>,
}
