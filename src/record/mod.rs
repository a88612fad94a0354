//! The patient's record as the facts read it: plain data, parsed and typed, and the builder
//! that makes it from FHIR JSON.
//!
//! A leaf below the pipeline's stages: `gather` fills a record (from prefetch, or from what it
//! fetched), `facts` reads one, and neither needs the other. Nothing here does I/O.

pub mod builder;
pub mod triage;

use fhirbolt::model::r4::resources::{Condition, Coverage, Observation, Procedure};

pub use builder::RecordBuilder;

/// Something in the record that could not be used, kept so the cards can say the record was
/// incomplete. It names the prefetch key and the resource (`Type/id`), never clinical content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIssue {
    /// The prefetch key (or FHIR query) the data came from; `gather::reasons::SOURCE` for an
    /// order's reason read by id.
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
    /// Observations of this patient dropped unparsed because none of their codes is one the
    /// facts read (vital signs, labs ...); see [`builder`]. For the log and benchmarks only:
    /// they never make the record unavailable.
    pub observations_dropped: usize,
    /// Search outcome entries (OperationOutcomes) met in Bundles; not record resources.
    pub outcome_entries: usize,
    /// Ids of this patient's Conditions that name no cancer, carry no stage and are no order's
    /// reason: never parsed (see [`builder`]), kept so that a link to one still counts as a
    /// link to another disease.
    pub condition_ids_only: Vec<String>,
    /// Ids of this patient's Procedures with no `reasonReference` that are not rectal surgery:
    /// never parsed, kept for the same reason.
    pub procedure_ids_only: Vec<String>,
}

impl PatientRecord {
    /// The ids-only list of `rtype` (`Condition` or `Procedure`).
    fn ids_only(&mut self, rtype: &str) -> &mut Vec<String> {
        if rtype == "Condition" {
            &mut self.condition_ids_only
        } else {
            &mut self.procedure_ids_only
        }
    }
}
