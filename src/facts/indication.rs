//! The indication of an IORT order, and the "scope" the other facts are read in.
//!
//! Sources, in order; each is used only when the previous one names nothing:
//! 1. **The order's own reason**, `reasonReference` to Conditions. It decides whatever the
//!    Conditions are coded as: the order says what it treats, and an order for breast cancer is
//!    not covered because the patient also has rectal cancer. References are resolved in every
//!    form real servers send: relative (`Condition/x`), absolute (`https://ehr/fhir/R4/Condition/x`),
//!    versioned (`.../_history/2`) and contained (`#x`, the order's own `contained`).
//!    - a referenced rectal cancer: rectal;
//!    - else a referenced Condition the record does not hold: unknown (the gather stage has
//!      already tried to fetch it by id; what could not be read is never guessed at);
//!    - else the referenced Conditions are something else (another cancer, a code the
//!      service does not recognise, a non-cancer diagnosis): not rectal.
//!
//!    Refuted and entered-in-error Conditions are void: a reference to one names nothing.
//! 2. **The order's `reasonCode`**, when it names a cancer (a rectal one first). Codes that are
//!    not cancers (an encounter-for-radiotherapy Z code, say) say nothing about the site.
//! 3. **The patient's current primary cancers**: clinicalStatus active, recurrence, relapse or
//!    absent. Inactive, remission and resolved cancers are history, and a metastasis (ICD-10-CM
//!    C77-C79, a SNOMED CT secondary malignant neoplasm, or the mCODE secondary cancer
//!    profile) is not a primary. A rectal cancer is preferred, then the most recent.
//!
//! A Condition is a cancer when its code is in `any-cancer` or `secondary-cancer`, or it claims
//! an mCODE cancer condition profile; it is rectal when its code is in `rectal-cancer`.
//!
//! The scope ("that cancer", whose staging, recurrence and margins count):
//! - rectal indication: every usable rectal cancer Condition of the patient. Problem lists often
//!   carry the same rectal cancer twice (an ICD-10-CM and a SNOMED CT entry, or the primary and
//!   its recurrence) and a patient has one rectum, so a T4 recorded on either entry is a T4 of
//!   this cancer;
//! - another cancer or diagnosis: only the chosen Condition;
//! - nothing documented: empty.
//!
//! Unlinked data (a T-category or margin Observation linked to no Condition or Procedure of the
//! record, as much published mCODE data is) is attributed to this order's cancer only when no
//! other current primary cancer could own it: with one candidate there is no doubt whose the
//! data is; a breast cancer in remission for years, or the rectal cancer's own liver metastasis,
//! does not make this year's margin finding ambiguous; two current primaries do, and then the
//! card says which finding is unlinked and how to link it.

use crate::resource_ref::ResourceRef;
use std::collections::HashSet;

use fhirbolt::model::r4::Resource;
use fhirbolt::model::r4::resources::{Condition, Procedure, ServiceRequest};
use fhirbolt::model::r4::types::{CodeableConcept, Coding, Reference};

use crate::facts::dates::{ClinicalTime, is_later};
use crate::facts::fhir::{
    concept_label, condition_date, condition_evidence, condition_id, condition_unconfirmed,
    condition_usable, procedure_id, procedure_usable, reference_id, text,
};
use crate::facts::{Evidence, IndicationFact, IndicationSource, IndicationStatus};
use crate::record::{PatientRecord, RecordIssue};
use crate::terminology::{
    Terminology, ValueSetId, is_cancer_condition_profile, is_secondary_cancer_condition_profile,
    same_code,
};

/// Rectal or another site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    Rectal,
    Other,
}

/// A usable cancer Condition of the record (or of the order's `contained`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cancer<'a> {
    pub condition: &'a Condition,
    pub site: Site,
    /// The coding that classified it, when the code did (not only the profile).
    pub coding: Option<&'a Coding>,
    pub date: Option<ClinicalTime>,
    /// Not a metastasis (secondary cancer).
    pub primary: bool,
    /// clinicalStatus active, recurrence, relapse or absent (not inactive / remission /
    /// resolved).
    pub current: bool,
    /// verificationStatus does not say the diagnosis is only unconfirmed, provisional or
    /// differential.
    pub confirmed: bool,
}

impl Cancer<'_> {
    fn evidence(&self) -> Evidence {
        let label = match (self.condition.code.as_deref(), self.coding) {
            (Some(code), matched) => concept_label(code, matched),
            (None, _) => crate::facts::fhir::Label {
                words: "a cancer diagnosis without a code".to_owned(),
                code: Some("mCODE primary cancer profile, no code".to_owned()),
            },
        };
        condition_evidence(self.condition, label.words).with_code(label.code)
    }
}

/// Classify a concept: rectal cancer, another cancer, or not a cancer.
fn classify_concept<'a>(cc: &'a CodeableConcept, t: &Terminology) -> Option<(Site, &'a Coding)> {
    if let Some(c) = t.matching_coding(ValueSetId::RectalCancer, cc) {
        return Some((Site::Rectal, c));
    }
    t.matching_coding(ValueSetId::AnyCancer, cc)
        .or_else(|| t.matching_coding(ValueSetId::SecondaryCancer, cc))
        .map(|c| (Site::Other, c))
}

/// Whether a Condition's clinicalStatus says the disease is no longer active.
pub(crate) fn is_history(c: &Condition, t: &Terminology) -> bool {
    c.clinical_status
        .as_deref()
        .is_some_and(|s| t.concept_in(ValueSetId::ConditionInactive, s))
}

/// Classify a Condition (usable or not: callers filter on usability).
pub(crate) fn classify<'a>(c: &'a Condition, t: &Terminology) -> Option<Cancer<'a>> {
    let profiles = || {
        c.meta
            .as_deref()
            .into_iter()
            .flat_map(|m| m.profile.iter())
            .filter_map(|p| text(Some(p)))
    };
    let by_code = c.code.as_deref().and_then(|cc| classify_concept(cc, t));
    let by_profile = profiles().any(is_cancer_condition_profile);
    let (site, coding) = match by_code {
        Some((site, coding)) => (site, Some(coding)),
        None if by_profile => (Site::Other, None),
        None => return None,
    };
    let secondary = site != Site::Rectal
        && (c
            .code
            .as_deref()
            .is_some_and(|cc| t.concept_in(ValueSetId::SecondaryCancer, cc))
            || profiles().any(is_secondary_cancer_condition_profile));
    Some(Cancer {
        condition: c,
        site,
        coding,
        date: condition_date(c).and_then(ClinicalTime::parse),
        primary: !secondary,
        current: !is_history(c, t),
        confirmed: !condition_unconfirmed(c, t),
    })
}

/// The preferred cancer: rectal first, then current, then confirmed, then the most recent,
/// then the first in record order.
fn pick<'a, 'b>(cancers: impl IntoIterator<Item = &'b Cancer<'a>>) -> Option<Cancer<'a>>
where
    'a: 'b,
{
    let mut best: Option<Cancer<'a>> = None;
    let rank = |c: &Cancer<'_>| (c.site == Site::Rectal, c.current, c.confirmed);
    for c in cancers {
        let better = best.as_ref().is_none_or(|b| {
            rank(c) > rank(b) || (rank(c) == rank(b) && is_later(c.date.as_ref(), b.date.as_ref()))
        });
        if better {
            best = Some(*c);
        }
    }
    best
}

/// The Conditions and Procedures the staging, recurrence and margin facts of one order are read
/// from (see the module docs).
#[derive(Debug, Clone)]
pub(crate) struct Scope<'a> {
    /// The Conditions of "that cancer".
    pub conditions: Vec<&'a Condition>,
    condition_ids: HashSet<&'a str>,
    /// Ids of every Condition in the record (usable or not), to tell a link to another
    /// Condition from a dangling one.
    record_condition_ids: HashSet<&'a str>,
    /// Usable Procedures that belong to this cancer (rectal resections, procedures on the
    /// rectum, procedures done for a scope Condition).
    pub procedures: Vec<&'a Procedure>,
    procedure_ids: HashSet<&'a str>,
    record_procedure_ids: HashSet<&'a str>,
    /// Whether unlinked Observations may be attributed to this cancer.
    pub unlinked_ok: bool,
    /// When they may not: the other current primary cancers that could own them
    /// (`Condition/id`), for the card's note.
    pub competing: Vec<String>,
    /// The order, to name a scope Condition contained in it (`ServiceRequest/x#dx`).
    order: ResourceRef<'a>,
    /// Scope Conditions that are not record Conditions (contained in the order).
    contained: Vec<&'a Condition>,
}

/// Where a resource's links point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Link {
    /// At a Condition or Procedure of the scope.
    InScope,
    /// Only at Conditions / Procedures of the record outside the scope.
    Elsewhere,
    /// At nothing the record holds.
    Unlinked,
}

impl<'a> Scope<'a> {
    fn new(
        order_ref: ResourceRef<'a>,
        status: IndicationStatus,
        conditions: Vec<&'a Condition>,
        cancers: &[Cancer<'a>],
        record: &'a PatientRecord,
        t: &Terminology,
    ) -> Self {
        let in_record = |c: &Condition| record.conditions.iter().any(|r| std::ptr::eq(r, c));
        let contained: Vec<&Condition> = conditions
            .iter()
            .copied()
            .filter(|c| !in_record(c))
            .collect();
        // Ids of record Conditions only: a contained Condition's id is local to the order.
        let condition_ids: HashSet<&str> = conditions
            .iter()
            .filter(|c| record.conditions.iter().any(|r| std::ptr::eq(r, **c)))
            .filter_map(|c| condition_id(c))
            .collect();
        let in_scope = |c: &Condition| conditions.iter().any(|s| std::ptr::eq(*s, c));
        let competing: Vec<String> = cancers
            .iter()
            .filter(|c| c.primary && c.current && !in_scope(c.condition))
            .map(|c| crate::facts::fhir::resource_ref("Condition", condition_id(c.condition)))
            .collect();

        let procedures: Vec<&Procedure> = record
            .procedures
            .iter()
            .filter(|p| procedure_usable(p, t))
            .filter(|p| {
                let for_scope = p
                    .reason_reference
                    .iter()
                    .filter_map(|r| reference_id(r, "Condition"))
                    .any(|id| condition_ids.contains(id));
                // Rectal surgery belongs to the cancer unless the order is for something else.
                let rectal = status == IndicationStatus::RectalCancer
                    || status == IndicationStatus::NotDocumented
                    || status == IndicationStatus::ReasonUnavailable;
                let rectal = rectal
                    && (p
                        .code
                        .as_deref()
                        .is_some_and(|c| t.concept_in(ValueSetId::RectalResection, c))
                        || p.body_site
                            .iter()
                            .any(|s| t.concept_in(ValueSetId::RectumBodySite, s)));
                for_scope || rectal
            })
            .collect();
        Scope {
            procedure_ids: procedures.iter().filter_map(|p| procedure_id(p)).collect(),
            procedures,
            record_condition_ids: record
                .conditions
                .iter()
                .filter_map(condition_id)
                .chain(record.condition_ids_only.iter().map(String::as_str))
                .collect(),
            record_procedure_ids: record
                .procedures
                .iter()
                .filter_map(procedure_id)
                .chain(record.procedure_ids_only.iter().map(String::as_str))
                .collect(),
            conditions,
            condition_ids,
            unlinked_ok: competing.is_empty(),
            competing,
            order: order_ref,
            contained,
        }
    }

    /// The evidence line of a scope Condition, naming a contained one inside its order.
    pub fn condition_evidence(&self, c: &Condition, detail: String) -> Evidence {
        let mut e = condition_evidence(c, detail);
        if self.contained.iter().any(|x| std::ptr::eq(*x, c)) {
            e.reference = self.order.contained(condition_id(c));
        }
        e
    }

    /// Where a set of links (focus, partOf, derivedFrom, assessment ...) points.
    pub fn link<'r>(&self, refs: impl IntoIterator<Item = &'r Reference>) -> Link {
        let mut elsewhere = false;
        for r in refs {
            if let Some(id) = reference_id(r, "Condition") {
                if self.condition_ids.contains(id) {
                    return Link::InScope;
                }
                elsewhere |= self.record_condition_ids.contains(id);
            }
            if let Some(id) = reference_id(r, "Procedure") {
                if self.procedure_ids.contains(id) {
                    return Link::InScope;
                }
                elsewhere |= self.record_procedure_ids.contains(id);
            }
        }
        if elsewhere {
            Link::Elsewhere
        } else {
            Link::Unlinked
        }
    }

    /// Whether data whose links resolve to `link` counts for this order's cancer.
    pub fn accepts_link(&self, link: Link) -> bool {
        match link {
            Link::InScope => true,
            Link::Elsewhere => false,
            Link::Unlinked => self.unlinked_ok,
        }
    }

    /// The card's note for a finding that is present but not linked to this cancer, while
    /// other current cancers could own it: what it is and how to link it.
    pub fn unlinked_note(&self, finding: &str, link_element: &str) -> String {
        let target = self
            .conditions
            .first()
            .and_then(|c| condition_id(c))
            .map(|id| ResourceRef::new("Condition", Some(id)).to_string())
            .unwrap_or_else(|| "the cancer Condition".to_owned());
        format!(
            "{finding} is not linked to the cancer this order treats, and the patient has \
             other current cancers ({}) it could belong to: set its {link_element} to {target} \
             and sign again.",
            self.competing.join(", ")
        )
    }
}

fn status_of(site: Site) -> IndicationStatus {
    match site {
        Site::Rectal => IndicationStatus::RectalCancer,
        Site::Other => IndicationStatus::OtherCancer,
    }
}

/// The scope Conditions for an indication whose chosen Condition is `chosen`.
fn scope_conditions<'a>(
    status: IndicationStatus,
    chosen: Option<&'a Condition>,
    cancers: &[Cancer<'a>],
) -> Vec<&'a Condition> {
    match status {
        IndicationStatus::RectalCancer => {
            let mut v: Vec<&Condition> = chosen.into_iter().collect();
            for c in cancers.iter().filter(|c| c.site == Site::Rectal) {
                if !v.iter().any(|s| std::ptr::eq(*s, c.condition)) {
                    v.push(c.condition);
                }
            }
            v
        }
        IndicationStatus::OtherCancer | IndicationStatus::OtherDiagnosis => {
            chosen.into_iter().collect()
        }
        IndicationStatus::NotDocumented | IndicationStatus::ReasonUnavailable => Vec::new(),
    }
}

fn same_coding(a: &Coding, b: &Coding) -> bool {
    match (
        text(a.system.as_ref()),
        text(a.code.as_ref()),
        text(b.system.as_ref()),
        text(b.code.as_ref()),
    ) {
        (Some(sa), Some(ca), Some(sb), Some(cb)) => same_code(sa, ca, sb, cb),
        _ => false,
    }
}

/// What one `reasonReference` of the order resolves to.
enum Reason<'a> {
    /// A usable Condition (cancer or not).
    Found(&'a Condition),
    /// A Condition the record (or the order's `contained`) does not hold: `Condition/id` or the
    /// reference as written.
    Missing(String),
    /// A refuted / entered-in-error Condition, or a reference to another resource type.
    Void,
}

fn resolve_reason<'a>(
    r: &Reference,
    sr: &'a ServiceRequest,
    record: &'a PatientRecord,
    t: &Terminology,
) -> Reason<'a> {
    let usable = |c: &'a Condition| {
        if condition_usable(c, t) {
            Reason::Found(c)
        } else {
            Reason::Void
        }
    };
    let Some(value) = text(r.reference.as_ref()) else {
        return Reason::Void;
    };
    if let Some(local) = value.strip_prefix('#') {
        return sr
            .contained
            .iter()
            .find_map(|res| match res {
                Resource::Condition(c) if condition_id(c) == Some(local) => Some(usable(c)),
                _ => None,
            })
            .unwrap_or_else(|| Reason::Missing(value.to_owned()));
    }
    let Some(id) = reference_id(r, "Condition") else {
        return Reason::Void;
    };
    match record
        .conditions
        .iter()
        .find(|c| condition_id(c) == Some(id))
    {
        Some(c) => usable(c),
        None => Reason::Missing(ResourceRef::new("Condition", Some(id)).to_string()),
    }
}

/// What one source of the indication found, before it is turned into the fact and its scope.
struct Found<'a> {
    status: IndicationStatus,
    chosen: Option<&'a Condition>,
    via: IndicationSource,
    evidence: Vec<Evidence>,
    notes: Vec<String>,
}

impl<'a> Found<'a> {
    fn new(
        status: IndicationStatus,
        chosen: Option<&'a Condition>,
        via: IndicationSource,
        evidence: Vec<Evidence>,
    ) -> Self {
        Self {
            status,
            chosen,
            via,
            evidence,
            notes: Vec::new(),
        }
    }
}

/// The indication of the order and the scope of its other facts, from the first of three
/// sources that says something, in this order: the order's `reasonReference` (its own reason
/// decides), its `reasonCode` when that names a cancer, the patient's current primary cancers.
pub(crate) fn find<'a>(
    sr: Option<&'a ServiceRequest>,
    order_ref: ResourceRef<'a>,
    record: &'a PatientRecord,
    t: &Terminology,
    issues: &mut Vec<RecordIssue>,
) -> (IndicationFact, Scope<'a>) {
    let cancers: Vec<Cancer<'a>> = record
        .conditions
        .iter()
        .filter(|c| condition_usable(c, t))
        .filter_map(|c| classify(c, t))
        .collect();
    let found = sr
        .and_then(|sr| from_reason_reference(sr, order_ref, record, t, issues))
        .or_else(|| sr.and_then(|sr| from_reason_code(sr, order_ref, &cancers, t)))
        .unwrap_or_else(|| from_patient_conditions(&cancers));

    let Found {
        status,
        chosen,
        via,
        mut evidence,
        mut notes,
    } = found;
    // A rectal cancer Condition recorded as only unconfirmed, provisional or differential names
    // the cancer (its staging and margins are read for it) but does not document the diagnosis.
    // The order's own reasonCode is the ordering clinician's statement, so it is not doubted.
    let unconfirmed = status == IndicationStatus::RectalCancer
        && via != IndicationSource::ReasonCode
        && chosen.is_some_and(|c| condition_unconfirmed(c, t));
    if let Some(c) = chosen.filter(|_| unconfirmed) {
        let recorded_as = c
            .verification_status
            .as_deref()
            .and_then(|vs| vs.coding.iter().find_map(|x| text(x.code.as_ref())))
            .unwrap_or("unconfirmed");
        notes.push(format!(
            "The rectal cancer diagnosis ({}) is recorded as {recorded_as}, not confirmed: \
             confirm the diagnosis in the chart before signing.",
            ResourceRef::new("Condition", condition_id(c))
        ));
    }
    let conditions = scope_conditions(status, chosen, &cancers);
    let scope = Scope::new(order_ref, status, conditions, &cancers, record, t);
    let mut condition = chosen
        .and_then(condition_id)
        .map(|id| ResourceRef::new("Condition", Some(id)).to_string());
    // A Condition contained in the order is named as FHIR names it, inside the order
    // (`ServiceRequest/x#dx`), never as a record Condition it is not.
    let in_record = |c: &Condition| record.conditions.iter().any(|r| std::ptr::eq(r, c));
    if let Some(id) = chosen.filter(|c| !in_record(c)).and_then(condition_id) {
        let local = order_ref.contained(Some(id));
        for e in &mut evidence {
            if condition.as_deref() == Some(e.reference.as_str()) {
                e.reference = local.clone();
            }
        }
        condition = Some(local);
    }
    let fact = IndicationFact {
        status,
        unconfirmed,
        condition,
        via,
        evidence,
        notes,
    };
    (fact, scope)
}

/// Source 1, `reasonReference`: the order's own reason decides. `None` when the order names no
/// Condition at all (then the reason codes are read). A reason the record lacks is noted as a
/// record issue (unless gathering already said why it could not read it).
fn from_reason_reference<'a>(
    sr: &'a ServiceRequest,
    order_ref: ResourceRef<'a>,
    record: &'a PatientRecord,
    t: &Terminology,
    issues: &mut Vec<RecordIssue>,
) -> Option<Found<'a>> {
    let via = IndicationSource::ReasonReference;
    let mut found = Vec::new();
    let mut missing = Vec::new();
    for r in &sr.reason_reference {
        match resolve_reason(r, sr, record, t) {
            Reason::Found(c) => found.push(c),
            Reason::Missing(what) => missing.push(what),
            Reason::Void => {}
        }
    }
    for what in &missing {
        // The gather stage may already have said why it could not fetch it.
        if issues
            .iter()
            .any(|i| i.resource.as_deref() == Some(what.as_str()))
        {
            continue;
        }
        issues.push(RecordIssue {
            source: "draftOrders".to_owned(),
            resource: Some(what.clone()),
            problem: format!(
                "{what}, the reasonReference of {order_ref}, is not in the patient record"
            ),
        });
    }
    let classified: Vec<Cancer<'a>> = found.iter().filter_map(|c| classify(c, t)).collect();
    if let Some(best) = pick(classified.iter().filter(|c| c.site == Site::Rectal)) {
        return Some(Found::new(
            IndicationStatus::RectalCancer,
            Some(best.condition),
            via,
            vec![best.evidence()],
        ));
    }
    if !missing.is_empty() {
        let note = format!(
            "The order's reason ({}) could not be read from the record, so whether it is \
             rectal cancer is unknown: make sure the order's reason Condition is in the \
             patient's record.",
            missing.join(", ")
        );
        return Some(Found {
            notes: vec![note],
            ..Found::new(IndicationStatus::ReasonUnavailable, None, via, Vec::new())
        });
    }
    if let Some(best) = pick(&classified) {
        return Some(Found::new(
            IndicationStatus::OtherCancer,
            Some(best.condition),
            via,
            vec![best.evidence()],
        ));
    }
    let c = found.first()?;
    let label = c.code.as_deref().map(|code| concept_label(code, None));
    let detail = match &label {
        Some(l) => format!("order reason: {}", l.words),
        None => "order reason: a diagnosis without a code".to_owned(),
    };
    Some(Found::new(
        IndicationStatus::OtherDiagnosis,
        Some(c),
        via,
        vec![condition_evidence(c, detail).with_code(label.and_then(|l| l.code))],
    ))
}

/// Source 2, `reasonCode`, when it names a cancer (rectal first); with the patient's Condition for
/// that reason, so staging is read for it: any rectal cancer for a rectal reason, for another
/// cancer only one coded the same way. `None` when no reason code names a cancer.
fn from_reason_code<'a>(
    sr: &'a ServiceRequest,
    order_ref: ResourceRef<'a>,
    cancers: &[Cancer<'a>],
    t: &Terminology,
) -> Option<Found<'a>> {
    let mut reasons: Vec<(Site, &CodeableConcept, &Coding)> = sr
        .reason_code
        .iter()
        .filter_map(|cc| classify_concept(cc, t).map(|(s, c)| (s, cc, c)))
        .collect();
    reasons.sort_by_key(|(site, _, _)| *site != Site::Rectal);
    let &(site, cc, coding) = reasons.first()?;
    let label = concept_label(cc, Some(coding));
    let order_evidence = Evidence {
        reference: order_ref.to_string(),
        date: text(sr.authored_on.as_ref()).map(crate::facts::fhir::chart_date),
        source: "order",
        detail: format!("order reason: {}", label.words),
        codes: label.code.into_iter().collect(),
    };
    let chosen = match site {
        Site::Rectal => pick(cancers.iter().filter(|c| c.site == Site::Rectal)),
        Site::Other => cancers
            .iter()
            .find(|c| {
                c.condition
                    .code
                    .as_deref()
                    .is_some_and(|code| code.coding.iter().any(|x| same_coding(x, coding)))
            })
            .copied(),
    };
    let mut evidence = vec![order_evidence];
    evidence.extend(chosen.map(|c| c.evidence()));
    Some(Found::new(
        status_of(site),
        chosen.map(|c| c.condition),
        IndicationSource::ReasonCode,
        evidence,
    ))
}

/// Source 3, the patient's current primary cancers; when there are none, what past cancers there
/// are is said in a note.
fn from_patient_conditions<'a>(cancers: &[Cancer<'a>]) -> Found<'a> {
    if let Some(best) = pick(cancers.iter().filter(|c| c.primary && c.current)) {
        return Found::new(
            status_of(best.site),
            Some(best.condition),
            IndicationSource::PatientConditions,
            vec![best.evidence()],
        );
    }
    let past: Vec<String> = cancers
        .iter()
        .map(|c| crate::facts::fhir::resource_ref("Condition", condition_id(c.condition)))
        .collect();
    let notes = if past.is_empty() {
        Vec::new()
    } else {
        vec![format!(
            "The order names no reason, and the patient's cancer Conditions ({}) are past \
             (inactive, remission, resolved) or metastases: record the cancer this order treats \
             as the order's reason.",
            past.join(", ")
        )]
    };
    Found {
        notes,
        ..Found::new(
            IndicationStatus::NotDocumented,
            None,
            IndicationSource::None,
            Vec::new(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::{condition, record, service_request, terminology};
    use serde_json::json;

    fn rectal(id: &str, recorded: &str) -> Condition {
        condition(
            json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "recordedDate": recorded,
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20",
                "display": "Malignant neoplasm of rectum"}]}}),
        )
    }

    fn coded(id: &str, system: &str, code: &str) -> Condition {
        condition(
            json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": system, "code": code}]}}),
        )
    }

    fn run(
        sr: Option<ServiceRequest>,
        rec: &PatientRecord,
    ) -> (IndicationFact, Vec<RecordIssue>, bool) {
        let mut issues = Vec::new();
        let (fact, scope) = find(
            sr.as_ref(),
            ResourceRef::new("ServiceRequest", Some("o1")),
            rec,
            terminology(),
            &mut issues,
        );
        (fact, issues, scope.unlinked_ok)
    }

    fn order(extra: serde_json::Value) -> ServiceRequest {
        let mut raw = json!({"resourceType": "ServiceRequest", "id": "o1", "status": "draft",
            "intent": "order", "subject": {"reference": "Patient/p1"}, "authoredOn": "2024-05-01",
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]}});
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            raw[k] = v;
        }
        service_request(raw)
    }

    #[test]
    fn reason_reference_wins_over_patient_conditions() {
        let rec = record(
            vec![
                coded("breast", "http://snomed.info/sct", "254837009"),
                rectal("rc", "2024-01-02"),
            ],
            vec![],
            vec![],
        );
        let sr = order(json!({"reasonReference": [{"reference": "Condition/breast"}]}));
        let (fact, issues, unlinked_ok) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::OtherCancer);
        assert_eq!(fact.via, IndicationSource::ReasonReference);
        assert_eq!(fact.condition.as_deref(), Some("Condition/breast"));
        assert!(issues.is_empty());
        assert!(!unlinked_ok, "the rectal cancer competes");
    }

    #[test]
    fn reason_reference_by_full_url_and_missing_one_is_an_issue() {
        let rec = record(vec![rectal("rc", "2024-01-02")], vec![], vec![]);
        let sr = order(json!({"reasonReference": [
            {"reference": "Condition/gone"},
            {"reference": "https://ehr.example/fhir/Condition/rc"}]}));
        let (fact, issues, unlinked_ok) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::RectalCancer);
        assert_eq!(fact.via, IndicationSource::ReasonReference);
        assert_eq!(fact.evidence[0].reference, "Condition/rc");
        assert_eq!(fact.evidence[0].date.as_deref(), Some("2024-01-02"));
        assert!(fact.evidence[0].codes.iter().any(|c| c == "ICD-10-CM C20"));
        assert!(
            !fact.evidence[0].detail.contains("C20"),
            "codes stay out of the words"
        );
        assert_eq!(issues.len(), 1);
        assert!(issues[0].problem.contains("Condition/gone"));
        assert!(unlinked_ok);
    }

    #[test]
    fn inactive_other_cancer_does_not_compete_for_unlinked_data() {
        let breast = |status: &str| {
            condition(json!({"resourceType": "Condition", "id": "bc",
                "subject": {"reference": "Patient/p1"},
                "clinicalStatus": {"coding": [{"system":
                    "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": status}]},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": "254837009"}]}}))
        };
        for (status, expected) in [("remission", true), ("resolved", true), ("active", false)] {
            let rec = record(
                vec![breast(status), rectal("rc", "2024-01-02")],
                vec![],
                vec![],
            );
            let (fact, _, unlinked_ok) = run(None, &rec);
            assert_eq!(fact.status, IndicationStatus::RectalCancer);
            assert_eq!(unlinked_ok, expected, "{status}");
        }
    }

    #[test]
    fn reason_code_when_no_reference() {
        let rec = record(vec![rectal("rc", "2024-01-02")], vec![], vec![]);
        let sr = order(json!({"reasonCode": [{"coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}]}));
        let (fact, _, _) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::RectalCancer);
        assert_eq!(fact.via, IndicationSource::ReasonCode);
        assert_eq!(fact.evidence[0].reference, "ServiceRequest/o1");
        assert_eq!(fact.evidence[0].date.as_deref(), Some("2024-05-01"));
        // The matching patient Condition is the one staging is read for.
        assert_eq!(fact.condition.as_deref(), Some("Condition/rc"));

        // reasonCode for colon cancer (dotless ICD-10-CM) is another cancer, even with a rectal
        // cancer on the problem list.
        let sr = order(json!({"reasonCode": [{"coding": [
            {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C187"}]}]}));
        let (fact, _, _) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::OtherCancer);
        assert_eq!(fact.condition, None);
    }

    #[test]
    fn patient_conditions_prefer_rectal_then_recent() {
        let rec = record(
            vec![
                coded("colon", "http://hl7.org/fhir/sid/icd-10-cm", "C18.7"),
                rectal("old", "2020-01-01"),
                rectal("new", "2024-02"),
            ],
            vec![],
            vec![],
        );
        let (fact, _, unlinked_ok) = run(Some(order(json!({}))), &rec);
        assert_eq!(fact.status, IndicationStatus::RectalCancer);
        assert_eq!(fact.via, IndicationSource::PatientConditions);
        assert_eq!(fact.condition.as_deref(), Some("Condition/new"));
        assert!(!unlinked_ok, "the colon cancer competes");
    }

    #[test]
    fn not_rectal_sites_and_other_cancers() {
        for (system, code) in [
            ("http://hl7.org/fhir/sid/icd-10-cm", "C18.7"),
            ("http://hl7.org/fhir/sid/icd-10-cm", "C19"),
            ("http://hl7.org/fhir/sid/icd-10-cm", "C21.1"),
            ("http://snomed.info/sct", "254837009"),
            ("http://snomed.info/sct", "93980002"),
        ] {
            let rec = record(vec![coded("c", system, code)], vec![], vec![]);
            let (fact, _, _) = run(None, &rec);
            assert_eq!(fact.status, IndicationStatus::OtherCancer, "{code}");
        }
        for code in ["363351006", "93984006"] {
            let rec = record(
                vec![coded("c", "http://snomed.info/sct", code)],
                vec![],
                vec![],
            );
            assert_eq!(
                run(None, &rec).0.status,
                IndicationStatus::RectalCancer,
                "{code}"
            );
        }
    }

    #[test]
    fn mcode_profile_counts_as_cancer() {
        let c = condition(json!({"resourceType": "Condition", "id": "m",
            "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-primary-cancer-condition"]},
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://example.org/local", "code": "XYZ"}]}}));
        let (fact, _, _) = run(None, &record(vec![c], vec![], vec![]));
        assert_eq!(fact.status, IndicationStatus::OtherCancer);
    }

    #[test]
    fn refuted_and_entered_in_error_are_ignored() {
        let refuted = with_verification("r1", "refuted", "2024-01-01");
        let eie = with_verification("r2", "entered-in-error", "2024-01-01");
        let rec = record(vec![refuted, eie], vec![], vec![]);
        // Even when the order points at it.
        let sr = order(json!({"reasonReference": [{"reference": "Condition/r1"}]}));
        let (fact, issues, _) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::NotDocumented);
        assert_eq!(fact.via, IndicationSource::None);
        assert!(fact.evidence.is_empty());
        assert!(
            issues.is_empty(),
            "present but refuted is not a missing reference"
        );
    }

    fn with_verification(id: &str, status: &str, recorded: &str) -> Condition {
        condition(json!({"resourceType": "Condition", "id": id,
            "subject": {"reference": "Patient/p1"}, "recordedDate": recorded,
            "verificationStatus": {"coding": [{"system":
                "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}}))
    }

    #[test]
    fn an_unconfirmed_rectal_diagnosis_names_the_cancer_but_does_not_document_it() {
        for status in ["provisional", "differential", "unconfirmed"] {
            // Named by the order, or found among the patient's Conditions: the cancer the
            // order treats, not yet a documented diagnosis.
            for sr in [
                Some(order(
                    json!({"reasonReference": [{"reference": "Condition/p"}]}),
                )),
                None,
            ] {
                let rec = record(
                    vec![with_verification("p", status, "2024-02-01")],
                    vec![],
                    vec![],
                );
                let (fact, _, _) = run(sr, &rec);
                assert_eq!(fact.status, IndicationStatus::RectalCancer, "{status}");
                assert!(fact.unconfirmed, "{status}");
                assert_eq!(fact.condition.as_deref(), Some("Condition/p"));
                assert!(
                    fact.notes.iter().any(|n| n.contains("Condition/p")
                        && n.contains(&format!("recorded as {status}"))
                        && n.contains("confirm the diagnosis")),
                    "{status}: {:?}",
                    fact.notes
                );
            }
        }
    }

    #[test]
    fn a_confirmed_rectal_diagnosis_is_preferred_to_a_provisional_one() {
        // The provisional one is the more recent: confirmation still ranks first.
        let rec = record(
            vec![
                with_verification("confirmed", "confirmed", "2024-01-01"),
                with_verification("provisional", "provisional", "2024-06-01"),
            ],
            vec![],
            vec![],
        );
        let (fact, _, _) = run(None, &rec);
        assert_eq!(fact.condition.as_deref(), Some("Condition/confirmed"));
        assert!(!fact.unconfirmed && fact.notes.is_empty(), "{fact:?}");
        // No verificationStatus at all is not "unconfirmed" (US Core makes it optional).
        let rec = record(vec![rectal("rc", "2024-01-02")], vec![], vec![]);
        assert!(!run(None, &rec).0.unconfirmed);
    }

    #[test]
    fn a_named_reason_decides_whatever_it_is_coded_as() {
        // A non-cancer diagnosis, and a breast cancer code the value sets may not know (mCODE's
        // example patient): both name the reason, so the rectal cancer beside them is not used.
        for (system, code) in [
            ("http://snomed.info/sct", "38341003"),
            ("http://snomed.info/sct", "353431000119107"),
            ("http://example.org/local-dx", "BRCA-L"),
        ] {
            let rec = record(
                vec![coded("reason", system, code), rectal("rc", "2024-01-02")],
                vec![],
                vec![],
            );
            let sr = order(json!({"reasonReference": [{"reference": "Condition/reason"}]}));
            let (fact, _, _) = run(Some(sr), &rec);
            assert!(
                matches!(
                    fact.status,
                    IndicationStatus::OtherDiagnosis | IndicationStatus::OtherCancer
                ),
                "{code}: {:?}",
                fact.status
            );
            assert_eq!(fact.via, IndicationSource::ReasonReference);
            assert_eq!(fact.condition.as_deref(), Some("Condition/reason"));
            assert_eq!(fact.evidence[0].reference, "Condition/reason");
        }
    }

    #[test]
    fn every_reference_form_resolves() {
        let rec = record(
            vec![
                coded("bc", "http://snomed.info/sct", "254837009"),
                rectal("rc", "2024-01-02"),
            ],
            vec![],
            vec![],
        );
        for form in [
            "Condition/rc",
            "https://ehr.example.org/fhir/R4/Condition/rc",
            "Condition/rc/_history/2",
            "https://ehr.example.org/fhir/R4/Condition/rc/_history/7",
        ] {
            let sr = order(json!({"reasonReference": [{"reference": form}]}));
            let (fact, issues, _) = run(Some(sr), &rec);
            assert_eq!(fact.status, IndicationStatus::RectalCancer, "{form}");
            assert!(issues.is_empty(), "{form}");
        }
        for form in [
            "Condition/bc",
            "https://ehr.example.org/fhir/R4/Condition/bc",
            "Condition/bc/_history/1",
        ] {
            let sr = order(json!({"reasonReference": [{"reference": form}]}));
            assert_eq!(
                run(Some(sr), &rec).0.status,
                IndicationStatus::OtherCancer,
                "{form}"
            );
        }
    }

    #[test]
    fn contained_reason_is_read_from_the_order() {
        let rec = record(vec![rectal("rc", "2024-01-02")], vec![], vec![]);
        let contained = |code: &str| {
            json!({"contained": [{"resourceType": "Condition", "id": "dx1",
                "subject": {"reference": "Patient/p1"},
                "code": {"coding": [{"system": "http://snomed.info/sct", "code": code}]}}],
                "reasonReference": [{"reference": "#dx1"}]})
        };
        let (fact, issues, _) = run(Some(order(contained("254837009"))), &rec);
        assert_eq!(fact.status, IndicationStatus::OtherCancer);
        assert!(issues.is_empty());
        let (fact, _, _) = run(Some(order(contained("363351006"))), &rec);
        assert_eq!(fact.status, IndicationStatus::RectalCancer);
        assert_eq!(fact.condition.as_deref(), Some("ServiceRequest/o1#dx1"));
        assert_eq!(fact.evidence[0].reference, "ServiceRequest/o1#dx1");
        // A fragment that names nothing in `contained` is an unreadable reason.
        let sr = order(json!({"reasonReference": [{"reference": "#nope"}]}));
        let (fact, issues, _) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::ReasonUnavailable);
        assert_eq!(issues.len(), 1);
    }

    #[test]
    fn an_unreadable_reason_is_unknown_unless_a_rectal_one_is_named() {
        let rec = record(
            vec![
                coded("bc", "http://snomed.info/sct", "254837009"),
                rectal("rc", "2024-01-02"),
            ],
            vec![],
            vec![],
        );
        let sr = order(json!({"reasonReference": [{"reference": "Condition/gone"},
            {"reference": "Condition/bc"}]}));
        let (fact, issues, _) = run(Some(sr), &rec);
        assert_eq!(fact.status, IndicationStatus::ReasonUnavailable);
        assert!(fact.evidence.is_empty());
        assert!(fact.notes[0].contains("Condition/gone"), "{:?}", fact.notes);
        assert_eq!(issues.len(), 1);
        let sr = order(json!({"reasonReference": [{"reference": "Condition/gone"},
            {"reference": "Condition/rc"}]}));
        assert_eq!(run(Some(sr), &rec).0.status, IndicationStatus::RectalCancer);
    }

    fn with_status(id: &str, code: &str, clinical: &str) -> Condition {
        condition(json!({"resourceType": "Condition", "id": id,
            "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system":
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}}))
    }

    #[test]
    fn only_current_primary_cancers_stand_in_for_a_missing_reason() {
        // A resolved rectal cancer beside an active breast cancer: no rectal indication.
        let rec = record(
            vec![
                with_status("rc", "C20", "resolved"),
                with_status("bc", "C50.911", "active"),
            ],
            vec![],
            vec![],
        );
        let (fact, _, _) = run(None, &rec);
        assert_eq!(fact.status, IndicationStatus::OtherCancer);
        assert_eq!(fact.condition.as_deref(), Some("Condition/bc"));
        // Only past cancers: not documented, and the card says why.
        let rec = record(vec![with_status("rc", "C20", "remission")], vec![], vec![]);
        let (fact, _, _) = run(None, &rec);
        assert_eq!(fact.status, IndicationStatus::NotDocumented);
        assert!(fact.notes[0].contains("Condition/rc"));
        // relapse and recurrence are current.
        for s in ["relapse", "recurrence", "active"] {
            let rec = record(vec![with_status("rc", "C20", s)], vec![], vec![]);
            assert_eq!(
                run(None, &rec).0.status,
                IndicationStatus::RectalCancer,
                "{s}"
            );
        }
    }

    #[test]
    fn a_metastasis_is_not_another_primary() {
        let rec = record(
            vec![
                with_status("rc", "C20", "active"),
                with_status("liver", "C78.7", "active"),
            ],
            vec![],
            vec![],
        );
        let (fact, _, unlinked_ok) = run(None, &rec);
        assert_eq!(fact.status, IndicationStatus::RectalCancer);
        assert!(
            unlinked_ok,
            "the rectal cancer's own metastasis competes for nothing"
        );
        // A metastasis alone does not stand in for a primary.
        let rec = record(
            vec![with_status("liver", "C78.7", "active")],
            vec![],
            vec![],
        );
        assert_eq!(run(None, &rec).0.status, IndicationStatus::NotDocumented);
        // Nor does one claiming the mCODE secondary profile with a code the sets do not know.
        let secondary = condition(json!({"resourceType": "Condition", "id": "m2",
            "meta": {"profile": ["http://hl7.org/fhir/us/mcode/StructureDefinition/mcode-secondary-cancer-condition"]},
            "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": "http://example.org/local", "code": "MET"}]}}));
        let rec = record(
            vec![with_status("rc", "C20", "active"), secondary],
            vec![],
            vec![],
        );
        assert!(run(None, &rec).2);
    }
}
