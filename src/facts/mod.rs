//! Stage 3 of the pipeline: clinical facts, each with its evidence.
//!
//! From the draft orders and the [`PatientRecord`] this stage
//! finds the IORT orders and, for each, the facts the policy asks about: is the indication
//! rectal cancer, what is its T category, is the disease recurrent, what is the surgical margin
//! status. Every fact carries the resources it was read from (type/id and date) so a card can
//! show its evidence. Codes are never literals here: they come from the ValueSets under
//! `fhir-profiles/` through [`Terminology`].
//!
//! The stage is split by fact: `orders` (which orders are IORT), `indication` (the cancer,
//! and the scope the other facts are read in), `staging`, `recurrence`, `margins`,
//! `coverage`; [`dates`] compares partial FHIR dates. Each submodule documents
//! the rules it applies and the choices the issue left open. Nothing here fails: a fact that
//! cannot be established is "not documented", and resources that cannot be used are noted in
//! [`OrderFacts::record_issues`].

mod coverage;
pub mod dates;
mod fhir;
mod indication;
mod margins;
mod orders;
mod recurrence;
mod staging;
#[cfg(test)]
mod test_support;

pub use fhir::parse_resource;

use crate::resource_ref::ResourceRef;
use fhirbolt::model::r4::resources::ServiceRequest;
use serde_json::Value;

/// A pointer to the resource a fact was read from, for the card's evidence list. Cards show
/// it as a chart line, `pathology 2026-11-02: 0.8 mm to the closest margin ... [Observation/x]`,
/// for the clinician; its codes go to the section for the EHR team.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Evidence {
    /// `Type/id`, e.g. `Observation/tnm-t-1`.
    pub reference: String,
    /// The clinically relevant date of the resource (effective / performed / recorded /
    /// onset), as the chart means it (a local date), when it has one.
    pub date: Option<String>,
    /// Where in the chart it was found, in a clinician's word: `diagnosis`, `pathology`,
    /// `staging`, `surgery`, `order`.
    pub source: &'static str,
    /// What was found, in clinical words, e.g. `pT4a`; no terminology code.
    pub detail: String,
    /// The codes it was recognised by, e.g. `SNOMED CT 1229865000` (for the EHR team).
    pub codes: Vec<String>,
}

impl Evidence {
    /// The same evidence, found in `source` (see [`Evidence::source`]).
    pub fn from_source(mut self, source: &'static str) -> Self {
        self.source = source;
        self
    }

    /// The same evidence, recognised by `code` too.
    pub fn with_code(mut self, code: Option<String>) -> Self {
        self.codes.extend(code);
        self
    }
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
    /// The order as [`find_iort_orders`] read it (the hook stage's parse, or the lenient
    /// re-read), so [`extract`] reads the same typed order without parsing it again (a second
    /// parse was a measurable part of a call; see BENCHMARKS.md). `None` for an order built
    /// without it: [`extract`] then reads `raw`.
    pub service_request: Option<Box<ServiceRequest>>,
}

impl IortOrder {
    /// `Type/id` of the order.
    pub fn reference(&self) -> ResourceRef<'_> {
        ResourceRef::new(&self.resource_type, self.id.as_deref())
    }
}

/// What the indication is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndicationStatus {
    /// A (non-refuted, non-entered-in-error) rectal cancer diagnosis.
    RectalCancer,
    /// A cancer diagnosis that is not rectal (colon, anus, breast ...).
    OtherCancer,
    /// The order's reason is a diagnosis that is not a cancer the service recognises (the
    /// order names it, so it is not rectal cancer).
    OtherDiagnosis,
    /// The order names its reason, but the referenced Condition could not be read (absent
    /// from the record and not fetchable): unknown, never guessed from other Conditions.
    ReasonUnavailable,
    /// No current cancer diagnosis documented.
    NotDocumented,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndicationFact {
    pub status: IndicationStatus,
    /// The rectal cancer Condition the indication rests on is recorded as unconfirmed,
    /// provisional or differential: it names the cancer but does not document the diagnosis
    /// (the criterion is then unknown, never met).
    pub unconfirmed: bool,
    /// The Condition chosen as the indication, if any (`Condition/id`), so staging,
    /// recurrence and margins are read for *that* cancer.
    pub condition: Option<String>,
    /// How the indication was found: the order's reasonReference, its reasonCode, or the
    /// patient's cancer Conditions.
    pub via: IndicationSource,
    pub evidence: Vec<Evidence>,
    /// What the card should say about what was found but could not be used (an unreadable
    /// reason, only past cancers), in place of the generic "how to document".
    pub notes: Vec<String>,
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
    /// T categories present in the record but not attributable to this cancer (unlinked while
    /// other current cancers exist): what they are and how to link them.
    pub notes: Vec<String>,
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
    /// Margin findings present but not attributable to this cancer, or that could not be
    /// ordered against the one used: what they are and what to do.
    pub notes: Vec<String>,
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
    pub record_issues: Vec<crate::record::RecordIssue>,
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

use crate::hook::DraftOrder;
use crate::record::PatientRecord;
use crate::terminology::Terminology;

/// The draft orders that are IORT orders, in request order.
///
/// An order is IORT when its `code` has an `iort-procedures` coding (CPT 77424/77425/77469/
/// 0735T, SNOMED CT 168524008, ICD-10-PCS section D with the intraoperative qualifier), a CRD
/// billing-options CPT code of `iort-cpt-codes`, or a radiotherapy course code with the mCODE
/// technique 168524008. `doNotPerform` orders and non-ServiceRequests are not IORT. Orders the
/// hook stage could not parse are re-read leniently rather than dropped.
pub fn find_iort_orders(orders: &[DraftOrder], terminology: &Terminology) -> Vec<IortOrder> {
    orders::find(orders, terminology)
}

/// Whether a draft order's raw JSON may be an IORT order (false only when
/// [`find_iort_orders`] surely would not return it): the fast path's test, before anything is
/// typed.
pub(crate) fn may_be_iort(raw: &serde_json::Value, terminology: &Terminology) -> bool {
    orders::may_be_iort(raw, terminology)
}

/// The facts for one IORT order.
///
/// `record_issues` holds every issue of the record (the gather stage only keeps issues about
/// the resource kinds the facts are read from) plus what this stage found: a `reasonReference`
/// Condition missing from the record, an active Coverage without an id.
pub fn extract(
    order: IortOrder,
    record: &PatientRecord,
    terminology: &Terminology,
    thresholds: &MarginThresholds,
) -> OrderFacts {
    let order_ref = order.reference();
    let read_again = match order.service_request {
        Some(_) => None,
        None => orders::service_request_from_raw(&order.raw),
    };
    let mut record_issues = record.issues.clone();

    // The scope borrows the order (its `contained` reasons): read everything from it here.
    let (indication, staging, recurrence, margins) = {
        let request = order.service_request.as_deref().or(read_again.as_ref());
        let (indication, scope) =
            indication::find(request, order_ref, record, terminology, &mut record_issues);
        let staging = staging::find(&scope, record, terminology);
        let recurrence = recurrence::find(&scope, terminology);
        let margins = margins::find(&scope, record, terminology, thresholds);
        (indication, staging, recurrence, margins)
    };
    let coverage = coverage::find(record, terminology, &mut record_issues);

    OrderFacts {
        order,
        indication,
        staging,
        recurrence,
        margins,
        coverage,
        record_issues,
        unavailable: record.unavailable.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::{
        condition, coverage, observation, procedure, record, terminology,
    };
    use crate::record::RecordIssue;
    use serde_json::json;

    fn iort_order(extra: Value) -> IortOrder {
        let mut raw = json!({"resourceType": "ServiceRequest", "id": "sr1", "status": "draft",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "quantityQuantity": {"value": 1.0},
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            raw[k] = v;
        }
        let draft = DraftOrder::from_json(raw).expect("a resourceType");
        let mut found = find_iort_orders(&[draft], terminology());
        assert_eq!(found.len(), 1, "the order is IORT");
        found.remove(0)
    }

    #[test]
    fn covered_shape_rectal_t4_positive_margin() {
        let mut rec = record(
            vec![condition(json!({"resourceType": "Condition", "id": "rc",
                "subject": {"reference": "Patient/p1"}, "recordedDate": "2024-01-10",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "93984006"}]},
                "stage": [{"summary": {"coding": [{"system": "http://snomed.info/sct",
                    "code": "1229866004"}]}}]}))],
            vec![procedure(
                json!({"resourceType": "Procedure", "id": "apr", "status": "completed",
                "subject": {"reference": "Patient/p1"}, "performedDateTime": "2024-04-01",
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "265414003"}]}}),
            )],
            vec![observation(
                json!({"resourceType": "Observation", "id": "crm", "status": "final",
                "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-04-03",
                "partOf": [{"reference": "Procedure/apr"}],
                "code": {"coding": [{"system": "http://loinc.org", "code": "33737-8"}]},
                "valueQuantity": {"value": 0.8, "unit": "mm", "system": "http://unitsofmeasure.org",
                    "code": "mm"}}),
            )],
        );
        rec.coverages = vec![coverage(json!({"resourceType": "Coverage", "id": "cov1",
            "status": "active", "beneficiary": {"reference": "Patient/p1"},
            "payor": [{"display": "BCBSAZ"}]}))];
        rec.issues.push(RecordIssue {
            source: "observations".to_owned(),
            resource: Some("Observation/bad".to_owned()),
            problem: "does not parse".to_owned(),
        });
        let order = iort_order(json!({"reasonReference": [{"reference": "Condition/rc"}]}));
        let f = extract(order, &rec, terminology(), &MarginThresholds::default());
        assert_eq!(
            f.order.billing_code.as_ref().map(|b| b.code.as_str()),
            Some("77425")
        );
        assert_eq!(f.indication.status, IndicationStatus::RectalCancer);
        assert_eq!(f.indication.via, IndicationSource::ReasonReference);
        assert_eq!(f.indication.condition.as_deref(), Some("Condition/rc"));
        assert_eq!(f.staging.category, TCategory::T4);
        assert!(!f.recurrence.recurrent);
        assert_eq!(f.margins.status, MarginStatus::Positive);
        assert_eq!(f.margins.evidence[0].reference, "Observation/crm");
        assert_eq!(
            f.coverage,
            Some(CoverageRef {
                reference: "Coverage/cov1".to_owned(),
                payor: Some("BCBSAZ".to_owned())
            })
        );
        assert_eq!(f.record_issues.len(), 1, "record issues are carried");
        assert!(f.unavailable.is_none());
    }

    #[test]
    fn empty_record_documents_nothing_and_copies_unavailable() {
        let mut rec = record(vec![], vec![], vec![]);
        rec.unavailable = Some("FHIR server returned 503 for Condition".to_owned());
        let order = iort_order(json!({"reasonReference": [{"reference": "Condition/missing"}]}));
        let f = extract(order, &rec, terminology(), &MarginThresholds::default());
        assert_eq!(f.indication.status, IndicationStatus::ReasonUnavailable);
        assert_eq!(f.staging.category, TCategory::NotDocumented);
        assert_eq!(f.margins.status, MarginStatus::NotDocumented);
        assert!(f.coverage.is_none());
        assert_eq!(
            f.unavailable.as_deref(),
            Some("FHIR server returned 503 for Condition")
        );
        assert!(
            f.record_issues
                .iter()
                .any(|i| i.problem.contains("Condition/missing"))
        );
    }
}
