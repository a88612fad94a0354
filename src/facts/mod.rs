//! Stage 3 of the pipeline: clinical facts, each with its evidence.
//!
//! From the draft orders and the [`PatientRecord`](crate::gather::PatientRecord) this stage
//! finds the IORT orders and, for each, the facts the policy asks about: is the indication
//! rectal cancer, what is its T category, is the disease recurrent, what is the surgical margin
//! status. Every fact carries the resources it was read from (type/id and date) so a card can
//! show its evidence. Codes are never literals here: they come from the ValueSets under
//! `fhir-profiles/` through [`Terminology`](crate::terminology::Terminology).

use serde_json::Value;

/// A pointer to the resource a fact was read from, for the card's evidence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `Type/id`, e.g. `Observation/tnm-t-1`.
    pub reference: String,
    /// The clinically relevant date of the resource (effective / performed / recorded /
    /// onset), as written in the resource (FHIR date or dateTime), when it has one.
    pub date: Option<String>,
    /// A short description of what was found, e.g. `pT4a (SNOMED CT 1229865000)`.
    pub detail: String,
}

/// A code as sent, for display (billing code, site).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CodeRef {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

/// A draft order the service recognised as IORT.
#[derive(Debug, Clone)]
pub struct IortOrder {
    /// `resourceType` as received (`ServiceRequest`).
    pub resource_type: String,
    /// The order id as received (`None` if the EHR sent none).
    pub id: Option<String>,
    /// The resource as received, echoed back in the `update` system action.
    pub raw: Value,
    /// The CPT code of the order (from `code.coding` or the CRD billing-options extension),
    /// for `billingCode`; `None` when the order is IORT by SNOMED / ICD-10-PCS only.
    pub billing_code: Option<CodeRef>,
    /// What the order is, for the card (the code's display or text, e.g. "IORT, electrons").
    pub display: String,
}

/// What the indication is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndicationStatus {
    /// A (non-refuted, non-entered-in-error) rectal cancer diagnosis.
    RectalCancer,
    /// A cancer diagnosis that is not rectal (colon, anus, breast ...).
    OtherCancer,
    /// No cancer diagnosis documented at all.
    NotDocumented,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicationFact {
    pub status: IndicationStatus,
    /// The Condition chosen as the indication, if any (`Condition/id`), so staging,
    /// recurrence and margins are read for *that* cancer.
    pub condition: Option<String>,
    /// How the indication was found: the order's reasonReference, its reasonCode, or the
    /// patient's cancer Conditions.
    pub via: IndicationSource,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndicationSource {
    ReasonReference,
    ReasonCode,
    PatientConditions,
    None,
}

/// The T category documented for the cancer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TCategory {
    /// T4 (any of cT4, pT4, ypT4 and their a/b sub-categories) documented somewhere.
    T4,
    /// Only T1-T3 (or Tis/T0) documented.
    BelowT4,
    /// No T category documented.
    NotDocumented,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StagingFact {
    pub category: TCategory,
    pub evidence: Vec<Evidence>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecurrenceFact {
    /// `Condition.clinicalStatus` = `recurrence`.
    pub recurrent: bool,
    pub evidence: Vec<Evidence>,
}

/// Surgical margin status, from the most recent assessment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MarginStatus {
    /// Involved by tumour, or distance to the closest margin at most the positive threshold.
    Positive,
    /// Distance over the positive threshold and at most the close threshold.
    Close,
    /// Uninvolved, or distance over the close threshold.
    Clear,
    NotDocumented,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarginFact {
    pub status: MarginStatus,
    pub evidence: Vec<Evidence>,
}

/// The Coverage the determination is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoverageRef {
    /// `Coverage/id`.
    pub reference: String,
    /// The payor's display name, when the Coverage carries one.
    pub payor: Option<String>,
}

/// Everything the decision needs for one IORT order.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    pub order: IortOrder,
    pub indication: IndicationFact,
    pub staging: StagingFact,
    pub recurrence: RecurrenceFact,
    pub margins: MarginFact,
    pub coverage: Option<CoverageRef>,
    /// Record issues that may matter for this order (skipped resources of the kinds the facts
    /// are read from), for the card's "record incomplete" note.
    pub record_issues: Vec<crate::gather::RecordIssue>,
    /// Copied from the record: when set, the record could not be read and the decision must
    /// be `indeterminate` (technical).
    pub unavailable: Option<String>,
}

/// Distance-to-closest-margin thresholds (mm), from configuration (`[policy]` section).
/// At most `positive_max_mm` is positive (the CAP rule for the circumferential resection
/// margin: 1 mm); over that and at most `close_max_mm` is close (default 2 mm); over it, clear.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MarginThresholds {
    pub positive_max_mm: f64,
    pub close_max_mm: f64,
}

impl Default for MarginThresholds {
    fn default() -> Self {
        Self {
            positive_max_mm: 1.0,
            close_max_mm: 2.0,
        }
    }
}

use crate::gather::PatientRecord;
use crate::hook::DraftOrder;
use crate::terminology::Terminology;

/// The draft orders that are IORT orders (see the issue's list of codes), in request order.
pub fn find_iort_orders(_orders: &[DraftOrder], _terminology: &Terminology) -> Vec<IortOrder> {
    Vec::new()
}

/// The facts for one IORT order.
pub fn extract(
    order: IortOrder,
    record: &PatientRecord,
    _terminology: &Terminology,
    _thresholds: &MarginThresholds,
) -> OrderFacts {
    OrderFacts {
        order,
        indication: IndicationFact {
            status: IndicationStatus::NotDocumented,
            condition: None,
            via: IndicationSource::None,
            evidence: Vec::new(),
        },
        staging: StagingFact {
            category: TCategory::NotDocumented,
            evidence: Vec::new(),
        },
        recurrence: RecurrenceFact {
            recurrent: false,
            evidence: Vec::new(),
        },
        margins: MarginFact {
            status: MarginStatus::NotDocumented,
            evidence: Vec::new(),
        },
        coverage: None,
        record_issues: record.issues.clone(),
        unavailable: record.unavailable.clone(),
    }
}
