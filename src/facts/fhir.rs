//! Small read helpers over the fhirbolt model shared by the extractors: primitive values,
//! references, the "usable" status rules and each resource's clinically relevant date.
//!
//! They exist so every extractor applies the same rules (which statuses exclude a resource,
//! which date a resource is dated by, how a reference names a resource) instead of each
//! re-deriving them.

use crate::resource_ref::ResourceRef;
use fhirbolt::model::r4::resources::{Condition, Observation, Procedure};
use fhirbolt::model::r4::resources::{ConditionOnset, ObservationEffective, ProcedurePerformed};
use fhirbolt::model::r4::types::{CodeableConcept, Coding, Reference};

use crate::facts::Evidence;
use crate::facts::dates::ClinicalTime;
use crate::terminology::{Terminology, ValueSetId, system_label};

pub use crate::fhir_json::parse_resource;

/// The string value of a fhirbolt primitive (`Code`, `Uri`, `String`, `DateTime` ...).
pub(crate) trait Primitive {
    fn text(&self) -> Option<&str>;
}

macro_rules! primitive {
    ($($t:ident),*) => {$(
        impl Primitive for fhirbolt::model::r4::types::$t {
            fn text(&self) -> Option<&str> {
                self.value.as_deref()
            }
        }
    )*};
}
primitive!(
    Code, Uri, String, DateTime, Instant, Date, Id, Canonical, Decimal
);

/// The value of an optional primitive, trimmed, `None` when absent or blank.
pub(crate) fn text<P: Primitive>(p: Option<&P>) -> Option<&str> {
    p.and_then(Primitive::text)
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// The id a reference points at when it names a resource of `resource_type`: accepts
/// `Type/id`, absolute URLs ending in `Type/id`, and either with `/_history/n`.
pub(crate) fn reference_id<'a>(reference: &'a Reference, resource_type: &str) -> Option<&'a str> {
    let value = text(reference.reference.as_ref())?;
    let segments: Vec<&str> = value.split('/').collect();
    let mut found = None;
    for i in 0..segments.len().saturating_sub(1) {
        let tail_ok = i + 2 == segments.len() || segments.get(i + 2) == Some(&"_history");
        if segments[i] == resource_type && !segments[i + 1].is_empty() && tail_ok {
            found = Some(segments[i + 1]);
        }
    }
    found
}

/// `Type/id` of a resource, as [`ResourceRef`] writes it.
pub(crate) fn resource_ref(resource_type: &str, id: Option<&str>) -> String {
    ResourceRef::new(resource_type, id).to_string()
}

/// `SNOMED CT 1229865000` / `ICD-10-CM C20`: a coding as the EHR team looks it up.
pub(crate) fn coding_code(coding: &Coding) -> String {
    let system = text(coding.system.as_ref())
        .map(system_label)
        .unwrap_or("code");
    let code = text(coding.code.as_ref()).unwrap_or("?");
    format!("{system} {code}")
}

/// A coding in words: its display, else its code (`SNOMED CT 1229865000`: nothing else says
/// what it is).
pub(crate) fn coding_label(coding: &Coding) -> String {
    match text(coding.display.as_ref()) {
        Some(display) => clinical_words(display),
        None => coding_code(coding),
    }
}

/// SNOMED CT semantic tags that end a fully specified name and say nothing to a clinician.
const SEMANTIC_TAGS: &[&str] = &[
    " (finding)",
    " (disorder)",
    " (qualifier value)",
    " (procedure)",
    " (observable entity)",
    " (morphologic abnormality)",
    " (regime/therapy)",
    " (situation)",
];

/// A display as a chart would write it: without a SNOMED CT semantic tag, and AJCC for
/// "American Joint Committee on Cancer" (`AJCC pT4a`, not a 40-character prefix).
pub(crate) fn clinical_words(display: &str) -> String {
    let mut words = display.trim();
    for tag in SEMANTIC_TAGS {
        if let Some(stripped) = words.strip_suffix(tag) {
            words = stripped.trim_end();
            break;
        }
    }
    match words.strip_prefix("American Joint Committee on Cancer ") {
        Some(rest) => format!("AJCC {rest}"),
        None => words.to_owned(),
    }
}

/// What a concept says, for a clinician (`words`), and the code it was recognised by, for
/// the EHR team (`code`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Label {
    pub words: String,
    pub code: Option<String>,
}

/// The label of a concept: the words of its matching coding when known, else its text, else
/// its first coding's; the code of the matching (else first) coding.
pub(crate) fn concept_label(concept: &CodeableConcept, matched: Option<&Coding>) -> Label {
    let coding = matched.or(concept.coding.first());
    let words = matched
        .and_then(|c| text(c.display.as_ref()))
        .or(text(concept.text.as_ref()))
        .map(clinical_words)
        .or_else(|| coding.map(coding_label))
        .unwrap_or_else(|| "(uncoded)".to_owned());
    Label {
        words,
        code: coding.map(coding_code),
    }
}

// ---------------------------------------------------------------- Condition

pub(crate) fn condition_id(c: &Condition) -> Option<&str> {
    text(c.id.as_ref())
}

/// False for a Condition whose verificationStatus says refuted or entered-in-error.
pub(crate) fn condition_usable(c: &Condition, t: &Terminology) -> bool {
    !c.verification_status
        .as_deref()
        .is_some_and(|vs| t.concept_in(ValueSetId::ConditionUnusableVerification, vs))
}

/// True for a Condition whose verificationStatus says the diagnosis is not established
/// (unconfirmed, provisional, differential): it names a disease, it does not document one.
pub(crate) fn condition_unconfirmed(c: &Condition, t: &Terminology) -> bool {
    c.verification_status
        .as_deref()
        .is_some_and(|vs| t.concept_in(ValueSetId::ConditionUnconfirmedVerification, vs))
}

/// recordedDate, else onsetDateTime / onsetPeriod.start.
pub(crate) fn condition_date(c: &Condition) -> Option<&str> {
    text(c.recorded_date.as_ref()).or(match &c.onset {
        Some(ConditionOnset::DateTime(d)) => text(Some(d)),
        Some(ConditionOnset::Period(p)) => text(p.start.as_ref()),
        _ => None,
    })
}

pub(crate) fn condition_evidence(c: &Condition, detail: String) -> Evidence {
    Evidence {
        reference: resource_ref("Condition", condition_id(c)),
        date: condition_date(c).map(chart_date),
        source: "diagnosis",
        detail,
        codes: Vec::new(),
    }
}

// ---------------------------------------------------------------- Observation

pub(crate) fn observation_id(o: &Observation) -> Option<&str> {
    text(o.id.as_ref())
}

/// False for an Observation whose status is entered-in-error or cancelled.
pub(crate) fn observation_usable(o: &Observation, t: &Terminology) -> bool {
    !text(Some(&o.status))
        .is_some_and(|s| t.contains_code(ValueSetId::ObservationUnusableStatus, s))
}

/// Which element a finding's time was read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TimeSource {
    /// effective[x] / performed[x]: when it happened.
    Clinical,
    /// `Observation.issued`: when the report was released.
    Issued,
    /// `meta.lastUpdated`: when the server last changed the resource, the last resort.
    LastUpdated,
}

/// The end of a Period, else its start: a finding is known once its period is over.
fn period_time(p: &fhirbolt::model::r4::types::Period) -> Option<&str> {
    text(p.end.as_ref()).or(text(p.start.as_ref()))
}

fn last_updated(meta: Option<&fhirbolt::model::r4::types::Meta>) -> Option<&str> {
    meta.and_then(|m| text(m.last_updated.as_ref()))
}

/// effectiveDateTime / effectivePeriod (its end) / effectiveInstant, else issued, else
/// meta.lastUpdated, with where it came from.
pub(crate) fn observation_time(o: &Observation) -> Option<(&str, TimeSource)> {
    match &o.effective {
        Some(ObservationEffective::DateTime(d)) => text(Some(d)),
        Some(ObservationEffective::Period(p)) => period_time(p),
        Some(ObservationEffective::Instant(i)) => text(Some(i)),
        _ => None,
    }
    .map(|t| (t, TimeSource::Clinical))
    .or_else(|| text(o.issued.as_ref()).map(|t| (t, TimeSource::Issued)))
    .or_else(|| last_updated(o.meta.as_deref()).map(|t| (t, TimeSource::LastUpdated)))
}

/// `Observation.issued`, parsed.
pub(crate) fn observation_issued(o: &Observation) -> Option<ClinicalTime> {
    text(o.issued.as_ref()).and_then(ClinicalTime::parse)
}

pub(crate) fn observation_evidence(o: &Observation, detail: String) -> Evidence {
    dated_evidence(
        resource_ref("Observation", observation_id(o)),
        observation_time(o),
        detail,
    )
}

/// The evidence line of a finding dated by `time`: the date as the chart has it, and a word
/// when it is not the clinical time.
fn dated_evidence(reference: String, time: Option<(&str, TimeSource)>, detail: String) -> Evidence {
    let detail = match time.map(|(_, s)| s) {
        Some(TimeSource::Issued) => format!("{detail} (dated by its report's issue time)"),
        Some(TimeSource::LastUpdated) => {
            format!("{detail} (no clinical date: dated by its last update on the server)")
        }
        _ => detail,
    };
    Evidence {
        reference,
        date: time.map(|(t, _)| chart_date(t)),
        source: "observation",
        detail,
        codes: Vec::new(),
    }
}

/// A FHIR date / dateTime as an evidence line shows it: the local date the chart means
/// (`2025-05-06` for `2025-05-06T17:30:00-07:00`); a value that does not parse as written.
pub(crate) fn chart_date(value: &str) -> String {
    ClinicalTime::parse(value)
        .map(|t| t.local_date())
        .unwrap_or_else(|| value.trim().to_owned())
}

// ---------------------------------------------------------------- Procedure

pub(crate) fn procedure_id(p: &Procedure) -> Option<&str> {
    text(p.id.as_ref())
}

/// False for a Procedure whose status is entered-in-error or not-done.
pub(crate) fn procedure_usable(p: &Procedure, t: &Terminology) -> bool {
    !text(Some(&p.status)).is_some_and(|s| t.contains_code(ValueSetId::ProcedureUnusableStatus, s))
}

/// performedDateTime / performedPeriod (its end), else meta.lastUpdated.
pub(crate) fn procedure_time(p: &Procedure) -> Option<(&str, TimeSource)> {
    match &p.performed {
        Some(ProcedurePerformed::DateTime(d)) => text(Some(d)),
        Some(ProcedurePerformed::Period(period)) => period_time(period),
        _ => None,
    }
    .map(|t| (t, TimeSource::Clinical))
    .or_else(|| last_updated(p.meta.as_deref()).map(|t| (t, TimeSource::LastUpdated)))
}

pub(crate) fn procedure_evidence(p: &Procedure, detail: String) -> Evidence {
    dated_evidence(
        resource_ref("Procedure", procedure_id(p)),
        procedure_time(p),
        detail,
    )
    .from_source("surgery")
}

/// The comparable time of a finding dated by `time`.
pub(crate) fn time_of(time: Option<(&str, TimeSource)>) -> Option<ClinicalTime> {
    time.and_then(|(t, _)| ClinicalTime::parse(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Reference {
        Reference {
            reference: Some(fhirbolt::model::r4::types::String {
                value: Some(s.to_owned()),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn reference_forms() {
        assert_eq!(reference_id(&r("Condition/c1"), "Condition"), Some("c1"));
        assert_eq!(
            reference_id(&r("https://ehr.example/fhir/Condition/c1"), "Condition"),
            Some("c1")
        );
        assert_eq!(
            reference_id(&r("Condition/c1/_history/3"), "Condition"),
            Some("c1")
        );
        assert_eq!(reference_id(&r("Observation/c1"), "Condition"), None);
        assert_eq!(reference_id(&r("Condition/"), "Condition"), None);
        assert_eq!(reference_id(&r("#contained"), "Condition"), None);
        assert_eq!(reference_id(&r("Condition/c1/extra"), "Condition"), None);
        assert_eq!(reference_id(&Reference::default(), "Condition"), None);
    }
}
