//! The indication of an IORT order, and the "scope" the other facts are read in.
//!
//! Order of sources, each used only when the previous one yields no cancer:
//! 1. the order's `reasonReference` Conditions (resolved against the record by `Condition/id`
//!    or a full URL ending in it; one missing from the record is noted as a record issue;
//!    references to other resource types, or to contained resources, are not followed);
//! 2. the order's `reasonCode`;
//! 3. the patient's cancer Conditions.
//!
//! A reason that names a cancer settles the question even when the patient has other cancers:
//! an order for breast cancer is not covered just because the patient also has rectal cancer.
//! Within one source a rectal cancer is preferred, then the most recent (recordedDate / onset),
//! then record order. Conditions whose verificationStatus is refuted or entered-in-error are
//! ignored everywhere.
//!
//! A Condition is a cancer when its code is in `any-cancer` or it claims an mCODE primary /
//! secondary cancer condition profile; it is rectal when its code is in `rectal-cancer`.
//!
//! The scope ("that cancer", whose staging, recurrence and margins count):
//! - rectal indication: every usable rectal cancer Condition of the patient. Problem lists often
//!   carry the same rectal cancer twice (an ICD-10-CM and a SNOMED CT entry, or the primary and
//!   its recurrence) and a patient has one rectum, so a T4 recorded on either entry is a T4 of
//!   this cancer;
//! - another cancer: only the chosen Condition;
//! - nothing documented: empty.
//!
//! Unlinked data (a T-category or margin Observation with no `focus` / `partOf` /
//! `derivedFrom` pointing at a Condition or Procedure of the record, as older mCODE STU1/2 data
//! has) is attributed to this order's cancer only when no other *active* cancer could own it:
//! every usable cancer Condition outside the scope has a clinicalStatus in `condition-inactive`
//! (inactive, remission, resolved). With a single candidate cancer there is no doubt whose the
//! data is; a breast cancer in remission for years does not make this year's margin finding
//! ambiguous; two active cancers do. A cancer Condition without a clinicalStatus counts as
//! active (the cautious reading).

use std::collections::HashSet;

use fhirbolt::model::r4::resources::{Condition, Procedure, ServiceRequest};
use fhirbolt::model::r4::types::{CodeableConcept, Coding, Reference};

use crate::facts::dates::DateKey;
use crate::facts::fhir::{
    concept_label, condition_date, condition_evidence, condition_id, condition_usable, key_of,
    procedure_id, procedure_usable, reference_id, text,
};
use crate::facts::{Evidence, IndicationFact, IndicationSource, IndicationStatus};
use crate::gather::{PatientRecord, RecordIssue};
use crate::terminology::{Terminology, ValueSetId, is_cancer_condition_profile, normalise_code};

/// Rectal or another site.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Site {
    Rectal,
    Other,
}

/// A usable cancer Condition of the record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cancer<'a> {
    pub condition: &'a Condition,
    pub site: Site,
    /// The coding that classified it, when the code did (not only the profile).
    pub coding: Option<&'a Coding>,
    pub date: Option<DateKey>,
}

impl Cancer<'_> {
    fn evidence(&self) -> Evidence {
        let detail = match (self.condition.code.as_deref(), self.coding) {
            (Some(code), matched) => concept_label(code, matched),
            (None, _) => "cancer condition (mCODE profile, no code)".to_owned(),
        };
        condition_evidence(self.condition, detail)
    }
}

/// Classify a concept: rectal cancer, another cancer, or not a cancer.
fn classify_concept<'a>(cc: &'a CodeableConcept, t: &Terminology) -> Option<(Site, &'a Coding)> {
    if let Some(c) = t.matching_coding(ValueSetId::RectalCancer, cc) {
        return Some((Site::Rectal, c));
    }
    t.matching_coding(ValueSetId::AnyCancer, cc)
        .map(|c| (Site::Other, c))
}

/// Classify a Condition (usable or not: callers filter on usability).
pub(crate) fn classify<'a>(c: &'a Condition, t: &Terminology) -> Option<Cancer<'a>> {
    let by_code = c.code.as_deref().and_then(|cc| classify_concept(cc, t));
    let by_profile = c.meta.as_deref().is_some_and(|m| {
        m.profile
            .iter()
            .any(|p| text(Some(p)).is_some_and(is_cancer_condition_profile))
    });
    let (site, coding) = match by_code {
        Some((site, coding)) => (site, Some(coding)),
        None if by_profile => (Site::Other, None),
        None => return None,
    };
    Some(Cancer {
        condition: c,
        site,
        coding,
        date: key_of(condition_date(c)),
    })
}

/// The preferred cancer: rectal first, then the most recent, then the first in record order.
fn pick<'a, 'b>(cancers: impl IntoIterator<Item = &'b Cancer<'a>>) -> Option<Cancer<'a>>
where
    'a: 'b,
{
    let mut best: Option<Cancer<'a>> = None;
    for c in cancers {
        let better = match &best {
            None => true,
            Some(b) => (c.site == Site::Rectal, c.date) > (b.site == Site::Rectal, b.date),
        };
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
        status: IndicationStatus,
        conditions: Vec<&'a Condition>,
        cancers: &[Cancer<'a>],
        record: &'a PatientRecord,
        t: &Terminology,
    ) -> Self {
        let condition_ids: HashSet<&str> =
            conditions.iter().filter_map(|c| condition_id(c)).collect();
        let in_scope = |c: &Condition| conditions.iter().any(|s| std::ptr::eq(*s, c));
        let inactive = |c: &Condition| {
            c.clinical_status
                .as_deref()
                .is_some_and(|s| t.concept_in(ValueSetId::ConditionInactive, s))
        };
        let unlinked_ok = cancers
            .iter()
            .all(|c| in_scope(c.condition) || inactive(c.condition));

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
                // Rectal surgery belongs to the cancer unless the order is for another cancer.
                let rectal = status != IndicationStatus::OtherCancer
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
            record_condition_ids: record.conditions.iter().filter_map(condition_id).collect(),
            record_procedure_ids: record.procedures.iter().filter_map(procedure_id).collect(),
            conditions,
            condition_ids,
            unlinked_ok,
        }
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

    /// Whether data with these links counts for this order's cancer.
    pub fn accepts<'r>(&self, refs: impl IntoIterator<Item = &'r Reference>) -> bool {
        match self.link(refs) {
            Link::InScope => true,
            Link::Elsewhere => false,
            Link::Unlinked => self.unlinked_ok,
        }
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
        IndicationStatus::OtherCancer => chosen.into_iter().collect(),
        IndicationStatus::NotDocumented => Vec::new(),
    }
}

fn same_coding(a: &Coding, b: &Coding) -> bool {
    match (
        text(a.system.as_ref()),
        text(a.code.as_ref()),
        text(b.system.as_ref()),
        text(b.code.as_ref()),
    ) {
        (Some(sa), Some(ca), Some(sb), Some(cb)) => {
            sa == sb && normalise_code(sa, ca) == normalise_code(sb, cb)
        }
        _ => false,
    }
}

/// The indication of the order and the scope of its other facts.
pub(crate) fn find<'a>(
    sr: Option<&ServiceRequest>,
    order_ref: &str,
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

    let finish = |status: IndicationStatus,
                  chosen: Option<&'a Condition>,
                  via: IndicationSource,
                  evidence: Vec<Evidence>| {
        let conditions = scope_conditions(status, chosen, &cancers);
        let scope = Scope::new(status, conditions, &cancers, record, t);
        let fact = IndicationFact {
            status,
            condition: chosen
                .and_then(condition_id)
                .map(|id| format!("Condition/{id}")),
            via,
            evidence,
        };
        (fact, scope)
    };

    if let Some(sr) = sr {
        // 1. reasonReference
        let mut referenced = Vec::new();
        for r in &sr.reason_reference {
            let Some(id) = reference_id(r, "Condition") else {
                continue;
            };
            match record
                .conditions
                .iter()
                .find(|c| condition_id(c) == Some(id))
            {
                Some(c) if condition_usable(c, t) => {
                    if let Some(cancer) = classify(c, t) {
                        referenced.push(cancer);
                    }
                }
                Some(_) => {}
                None => issues.push(RecordIssue {
                    source: "draftOrders".to_owned(),
                    resource: Some(order_ref.to_owned()),
                    problem: format!("reasonReference Condition/{id} is not in the patient record"),
                }),
            }
        }
        if let Some(best) = pick(&referenced) {
            return finish(
                status_of(best.site),
                Some(best.condition),
                IndicationSource::ReasonReference,
                vec![best.evidence()],
            );
        }

        // 2. reasonCode
        let mut reasons: Vec<(Site, &CodeableConcept, &Coding)> = sr
            .reason_code
            .iter()
            .filter_map(|cc| classify_concept(cc, t).map(|(s, c)| (s, cc, c)))
            .collect();
        reasons.sort_by_key(|(site, _, _)| *site != Site::Rectal);
        if let Some(&(site, cc, coding)) = reasons.first() {
            let order_evidence = Evidence {
                reference: order_ref.to_owned(),
                date: text(sr.authored_on.as_ref()).map(str::to_owned),
                detail: format!("order reason: {}", concept_label(cc, Some(coding))),
            };
            // The patient's Condition for that reason, so staging is read for it: any rectal
            // cancer for a rectal reason; for another cancer only one coded the same way.
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
            return finish(
                status_of(site),
                chosen.map(|c| c.condition),
                IndicationSource::ReasonCode,
                evidence,
            );
        }
    }

    // 3. the patient's cancer Conditions
    if let Some(best) = pick(&cancers) {
        return finish(
            status_of(best.site),
            Some(best.condition),
            IndicationSource::PatientConditions,
            vec![best.evidence()],
        );
    }
    finish(
        IndicationStatus::NotDocumented,
        None,
        IndicationSource::None,
        Vec::new(),
    )
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
            "ServiceRequest/o1",
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
        assert!(fact.evidence[0].detail.contains("ICD-10-CM C20"));
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
        let with_verification = |id: &str, status: &str| {
            condition(json!({"resourceType": "Condition", "id": id,
                "subject": {"reference": "Patient/p1"},
                "verificationStatus": {"coding": [{"system":
                    "http://terminology.hl7.org/CodeSystem/condition-ver-status", "code": status}]},
                "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}}))
        };
        let refuted = with_verification("r1", "refuted");
        let eie = with_verification("r2", "entered-in-error");
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

    #[test]
    fn non_cancer_conditions_are_not_documented_cancer() {
        let rec = record(
            vec![coded("htn", "http://snomed.info/sct", "38341003")],
            vec![],
            vec![],
        );
        let sr = order(json!({"reasonReference": [{"reference": "Condition/htn"}]}));
        assert_eq!(
            run(Some(sr), &rec).0.status,
            IndicationStatus::NotDocumented
        );
    }
}
