//! The T category of the order's cancer.
//!
//! Any T4 documented for the cancer counts, clinical, pathological or post-therapy alike (a
//! tumour staged cT4 that shrank to ypT2 after neoadjuvant therapy was still a T4 lesion). The
//! T category is read from, following every path mCODE links TNM data by:
//! - `Condition.stage.summary` of a scope Condition (some EHRs put the T category there);
//! - Observations referenced by a scope Condition's `stage.assessment`, and, one level down,
//!   their `hasMember` (a stage group Observation grouping the T/N/M Observations);
//! - the `hasMember` of a stage group Observation whose own `focus` is a scope Condition:
//!   mCODE's TNM category Observations often carry no focus of their own and are tied to the
//!   cancer only through their stage group;
//! - T-category Observations (`t-category-observation` codes) whose own `focus` is a scope
//!   Condition.
//!
//! A T Observation tied to another cancer (its focus, its stage group's focus, or the other
//! Condition's `stage.assessment`) never counts. One tied to nothing counts only when no other
//! current primary cancer could own it (see [`Scope`](super::indication::Scope)); otherwise the
//! fact carries a note naming it and how to link it, so the card does not ask for a T category
//! the record already holds.
//!
//! Values are read from `valueCodeableConcept` (AJCC SNOMED CT concepts, the older SNOMED CT
//! "T category" findings, AJCC codes). Entered-in-error and cancelled Observations are ignored.
//! Result: T4 when any T4 was found; else BelowT4 when a T0-T3 was found; else not documented.

use std::collections::HashMap;

use fhirbolt::model::r4::resources::{Observation, ObservationValue};
use fhirbolt::model::r4::types::CodeableConcept;

use crate::facts::fhir::{
    Label, concept_label, observation_evidence, observation_id, observation_usable, reference_id,
};
use crate::facts::indication::{Link, Scope};
use crate::facts::{Evidence, StagingFact, TCategory};
use crate::record::PatientRecord;
use crate::terminology::{Terminology, ValueSetId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    T4,
    Below,
}

/// A T category Observation's evidence line.
fn staging_evidence(o: &Observation, label: Label) -> crate::facts::Evidence {
    observation_evidence(o, label.words)
        .from_source("staging")
        .with_code(label.code)
}

fn level(cc: &CodeableConcept, t: &Terminology) -> Option<(Level, Label)> {
    if let Some(c) = t.matching_coding(ValueSetId::T4Category, cc) {
        return Some((Level::T4, concept_label(cc, Some(c))));
    }
    t.matching_coding(ValueSetId::BelowT4Category, cc)
        .map(|c| (Level::Below, concept_label(cc, Some(c))))
}

fn observation_level(o: &Observation, t: &Terminology) -> Option<(Level, Label)> {
    match &o.value {
        Some(ObservationValue::CodeableConcept(cc)) => level(cc, t),
        _ => None,
    }
}

#[derive(Default)]
struct Found {
    t4: Vec<Evidence>,
    below: Vec<Evidence>,
}

impl Found {
    fn add(&mut self, level: Level, evidence: Evidence) {
        let list = match level {
            Level::T4 => &mut self.t4,
            Level::Below => &mut self.below,
        };
        if !list.contains(&evidence) {
            list.push(evidence);
        }
    }
}

fn find_observation<'a>(record: &'a PatientRecord, id: &str) -> Option<&'a Observation> {
    record
        .observations
        .iter()
        .find(|o| observation_id(o) == Some(id))
}

/// The stronger of two links for the same Observation: in scope wins, then elsewhere.
fn stronger(a: Link, b: Link) -> Link {
    match (a, b) {
        (Link::InScope, _) | (_, Link::InScope) => Link::InScope,
        (Link::Elsewhere, _) | (_, Link::Elsewhere) => Link::Elsewhere,
        _ => Link::Unlinked,
    }
}

/// The links Observations inherit from whatever groups them: a Condition's `stage.assessment`
/// (in scope or elsewhere) and stage groups' `hasMember` (the group's own link, itself
/// possibly inherited from an assessment).
fn inherited_links<'a>(
    scope: &Scope<'_>,
    record: &'a PatientRecord,
    t: &Terminology,
) -> HashMap<&'a str, Link> {
    let mut links: HashMap<&str, Link> = HashMap::new();
    let set = |links: &mut HashMap<&'a str, Link>, id: &'a str, link: Link| {
        let entry = links.entry(id).or_insert(Link::Unlinked);
        *entry = stronger(*entry, link);
    };
    for c in &record.conditions {
        let link = if scope.conditions.iter().any(|s| std::ptr::eq(*s, c)) {
            Link::InScope
        } else {
            Link::Elsewhere
        };
        for stage in &c.stage {
            for a in &stage.assessment {
                if let Some(id) = reference_id(a, "Observation") {
                    set(&mut links, id, link);
                }
            }
        }
    }
    for group in record
        .observations
        .iter()
        .filter(|o| !o.has_member.is_empty() && observation_usable(o, t))
    {
        let own = scope.link(&group.focus);
        let from_assessment = observation_id(group)
            .and_then(|id| links.get(id).copied())
            .unwrap_or(Link::Unlinked);
        let link = match own {
            Link::Unlinked => from_assessment,
            l => l,
        };
        if link == Link::Unlinked {
            continue;
        }
        for m in &group.has_member {
            if let Some(id) = reference_id(m, "Observation") {
                set(&mut links, id, link);
            }
        }
    }
    links
}

/// The staging fact for the scope.
pub(crate) fn find(scope: &Scope<'_>, record: &PatientRecord, t: &Terminology) -> StagingFact {
    let mut found = Found::default();
    // Found but tied to nothing while other current cancers exist.
    let mut ambiguous: Vec<(Level, Evidence)> = Vec::new();

    for condition in &scope.conditions {
        for stage in &condition.stage {
            if let Some(summary) = stage.summary.as_deref()
                && let Some((lvl, label)) = level(summary, t)
            {
                found.add(
                    lvl,
                    scope
                        .condition_evidence(condition, format!("stage {}", label.words))
                        .from_source("staging")
                        .with_code(label.code),
                );
            }
            for assessment in &stage.assessment {
                let Some(o) = reference_id(assessment, "Observation")
                    .and_then(|id| find_observation(record, id))
                    .filter(|o| observation_usable(o, t))
                else {
                    continue;
                };
                // The assessment itself, or the T Observation it groups.
                let members = o
                    .has_member
                    .iter()
                    .filter_map(|m| reference_id(m, "Observation"))
                    .filter_map(|id| find_observation(record, id))
                    .filter(|m| observation_usable(m, t));
                for obs in std::iter::once(o).chain(members) {
                    if let Some((lvl, label)) = observation_level(obs, t) {
                        found.add(lvl, staging_evidence(obs, label));
                    }
                }
            }
        }
    }

    let inherited = inherited_links(scope, record, t);
    for o in record
        .observations
        .iter()
        .filter(|o| observation_usable(o, t))
        .filter(|o| t.concept_in(ValueSetId::TCategoryObservation, &o.code))
    {
        let Some((lvl, label)) = observation_level(o, t) else {
            continue;
        };
        let link = match scope.link(&o.focus) {
            Link::Unlinked => observation_id(o)
                .and_then(|id| inherited.get(id).copied())
                .unwrap_or(Link::Unlinked),
            own => own,
        };
        let evidence = staging_evidence(o, label);
        if scope.accepts_link(link) {
            found.add(lvl, evidence);
        } else if link == Link::Unlinked {
            ambiguous.push((lvl, evidence));
        }
    }

    let (category, evidence) = if !found.t4.is_empty() {
        (TCategory::T4, found.t4)
    } else if !found.below.is_empty() {
        (TCategory::BelowT4, found.below)
    } else {
        (TCategory::NotDocumented, Vec::new())
    };
    // Only findings that would have changed the answer are worth the clinician's time.
    let notes = ambiguous
        .iter()
        .filter(|(lvl, _)| match category {
            TCategory::T4 => false,
            TCategory::BelowT4 => *lvl == Level::T4,
            TCategory::NotDocumented => true,
        })
        .map(|(_, e)| scope.unlinked_note(&format!("{} ({})", e.reference, e.detail), "focus"))
        .collect();
    StagingFact {
        category,
        evidence,
        notes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::{condition, observation, record, terminology};
    use fhirbolt::model::r4::resources::Condition;
    use serde_json::{Value, json};

    const SCT: &str = "http://snomed.info/sct";

    fn rectal(id: &str, stage: Value) -> Condition {
        let mut v = json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SCT, "code": "363351006"}]}});
        if !stage.is_null() {
            v["stage"] = stage;
        }
        condition(v)
    }

    fn breast(id: &str) -> Condition {
        condition(
            json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SCT, "code": "254837009"}]}}),
        )
    }

    fn t_obs(
        id: &str,
        code: (&str, &str),
        value: (&str, &str),
        focus: Option<&str>,
    ) -> Observation {
        let mut v = json!({"resourceType": "Observation", "id": id, "status": "final",
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-01",
            "code": {"coding": [{"system": code.0, "code": code.1}]},
            "valueCodeableConcept": {"coding": [{"system": value.0, "code": value.1}]}});
        if let Some(f) = focus {
            v["focus"] = json!([{"reference": f}]);
        }
        observation(v)
    }

    fn staging(rec: &PatientRecord) -> StagingFact {
        let scope = crate::facts::test_support::scope_without_order(rec);
        find(&scope, rec, terminology())
    }

    #[test]
    fn t4_from_stage_summary() {
        let c = rectal(
            "rc",
            json!([{"summary": {"coding": [{"system": SCT, "code": "1228946001",
            "display": "cT4b"}]}}]),
        );
        let s = staging(&record(vec![c], vec![], vec![]));
        assert_eq!(s.category, TCategory::T4);
        assert_eq!(s.evidence[0].reference, "Condition/rc");
        assert!(s.evidence[0].detail.contains("cT4b"));
    }

    #[test]
    fn t4_from_stage_assessment_and_its_members() {
        let c = rectal(
            "rc",
            json!([{"assessment": [{"reference": "Observation/group"}]}]),
        );
        let group = observation(
            json!({"resourceType": "Observation", "id": "group", "status": "final",
            "code": {"coding": [{"system": SCT, "code": "399588009"}]},
            "hasMember": [{"reference": "Observation/pt"}]}),
        );
        let pt = t_obs(
            "pt",
            (SCT, "384625004"),
            ("http://cancerstaging.org", "pT4a"),
            Some("Condition/other-not-in-record"),
        );
        let s = staging(&record(vec![c], vec![], vec![group, pt]));
        assert_eq!(s.category, TCategory::T4);
        assert_eq!(s.evidence[0].reference, "Observation/pt");
        assert_eq!(s.evidence[0].date.as_deref(), Some("2024-03-01"));
    }

    #[test]
    fn t4_from_focused_observation_and_yp_t4b() {
        let s = staging(&record(
            vec![rectal("rc", Value::Null), breast("bc")],
            vec![],
            vec![t_obs(
                "t",
                (SCT, "384625004"),
                (SCT, "1228924009"),
                Some("Condition/rc"),
            )],
        ));
        assert_eq!(s.category, TCategory::T4);
        assert_eq!(s.evidence.len(), 1);
    }

    #[test]
    fn t4_of_another_cancer_does_not_count() {
        let s = staging(&record(
            vec![rectal("rc", Value::Null), breast("bc")],
            vec![],
            vec![
                t_obs(
                    "tb",
                    (SCT, "399504009"),
                    (SCT, "1228944003"),
                    Some("Condition/bc"),
                ),
                t_obs(
                    "tr",
                    (SCT, "399504009"),
                    (SCT, "1228938002"),
                    Some("Condition/rc"),
                ),
            ],
        ));
        assert_eq!(s.category, TCategory::BelowT4);
        assert_eq!(s.evidence[0].reference, "Observation/tr");
    }

    #[test]
    fn t3_only_is_below_t4_and_nothing_is_not_documented() {
        let rec = record(
            vec![rectal("rc", Value::Null)],
            vec![],
            vec![t_obs(
                "t",
                ("http://loinc.org", "21905-5"),
                ("http://cancerstaging.org", "cT3"),
                Some("Condition/rc"),
            )],
        );
        assert_eq!(staging(&rec).category, TCategory::BelowT4);
        let rec = record(vec![rectal("rc", Value::Null)], vec![], vec![]);
        let s = staging(&rec);
        assert_eq!(s.category, TCategory::NotDocumented);
        assert!(s.evidence.is_empty());
    }

    #[test]
    fn unfocused_observation_counts_only_without_another_active_cancer() {
        let unfocused = || {
            t_obs(
                "t",
                ("http://loinc.org", "21899-0"),
                (SCT, "1229864001"),
                None,
            )
        };
        let single = record(vec![rectal("rc", Value::Null)], vec![], vec![unfocused()]);
        assert_eq!(staging(&single).category, TCategory::T4);
        let two = record(
            vec![rectal("rc", Value::Null), breast("bc")],
            vec![],
            vec![unfocused()],
        );
        assert_eq!(staging(&two).category, TCategory::NotDocumented);
    }

    #[test]
    fn entered_in_error_and_tx_are_ignored() {
        let mut wrong = t_obs(
            "t",
            (SCT, "384625004"),
            (SCT, "1229864001"),
            Some("Condition/rc"),
        );
        wrong.status.value = Some("entered-in-error".to_owned());
        let tx = t_obs(
            "x",
            (SCT, "384625004"),
            ("http://cancerstaging.org", "pTX"),
            Some("Condition/rc"),
        );
        let s = staging(&record(
            vec![rectal("rc", Value::Null)],
            vec![],
            vec![wrong, tx],
        ));
        assert_eq!(s.category, TCategory::NotDocumented);
    }

    #[test]
    fn any_t4_beats_a_later_lower_category() {
        let s = staging(&record(
            vec![rectal("rc", Value::Null)],
            vec![],
            vec![
                t_obs(
                    "c",
                    (SCT, "399504009"),
                    (SCT, "1228944003"),
                    Some("Condition/rc"),
                ),
                t_obs(
                    "yp",
                    (SCT, "384625004"),
                    (SCT, "1228910005"),
                    Some("Condition/rc"),
                ),
            ],
        ));
        assert_eq!(s.category, TCategory::T4);
        assert_eq!(s.evidence.len(), 1);
        assert_eq!(s.evidence[0].reference, "Observation/c");
    }

    fn group(id: &str, focus: Option<&str>, members: &[&str]) -> Observation {
        let mut v = json!({"resourceType": "Observation", "id": id, "status": "final",
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": "2024-03-01",
            "code": {"coding": [{"system": SCT, "code": "399588009"}]},
            "valueCodeableConcept": {"coding": [{"system": SCT, "code": "1222806003",
                "display": "American Joint Committee on Cancer stage IIIB"}]},
            "hasMember": members.iter().map(|m| json!({"reference": format!("Observation/{m}")}))
                .collect::<Vec<_>>()});
        if let Some(f) = focus {
            v["focus"] = json!([{"reference": f}]);
        }
        observation(v)
    }

    fn unfocused_t4(id: &str) -> Observation {
        t_obs(id, (SCT, "384625004"), (SCT, "1229864001"), None)
    }

    #[test]
    fn stage_group_focus_links_its_unfocused_members() {
        // Two current cancers, so an unlinked T4 would not count; the stage group's focus ties
        // it to the rectal cancer.
        let rec = record(
            vec![rectal("rc", Value::Null), breast("bc")],
            vec![],
            vec![group("sg", Some("Condition/rc"), &["t"]), unfocused_t4("t")],
        );
        let s = staging(&rec);
        assert_eq!(s.category, TCategory::T4);
        assert_eq!(s.evidence[0].reference, "Observation/t");
        assert!(s.notes.is_empty());
        // The same group focused on the breast cancer: that cancer's T4, never the rectal one's,
        // even when the breast cancer is the only competitor in remission.
        let rec = record(
            vec![rectal("rc", Value::Null), breast("bc")],
            vec![],
            vec![group("sg", Some("Condition/bc"), &["t"]), unfocused_t4("t")],
        );
        let s = staging(&rec);
        assert_eq!(s.category, TCategory::NotDocumented);
        assert!(s.notes.is_empty(), "another cancer's T4 is not ambiguous");
    }

    #[test]
    fn assessment_of_another_condition_claims_the_members() {
        let bc = condition(json!({"resourceType": "Condition", "id": "bc",
            "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system":
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "remission"}]},
            "code": {"coding": [{"system": SCT, "code": "254837009"}]},
            "stage": [{"assessment": [{"reference": "Observation/sg"}]}]}));
        let rec = record(
            vec![rectal("rc", Value::Null), bc],
            vec![],
            vec![group("sg", None, &["t"]), unfocused_t4("t")],
        );
        // The breast cancer is in remission (so unlinked data would count), but this T4 is
        // tied to it through its stage assessment.
        assert_eq!(staging(&rec).category, TCategory::NotDocumented);
    }

    #[test]
    fn an_unlinked_t4_with_two_current_cancers_is_a_note_not_a_request() {
        let rec = record(
            vec![rectal("rc", Value::Null), breast("bc")],
            vec![],
            vec![unfocused_t4("t")],
        );
        let s = staging(&rec);
        assert_eq!(s.category, TCategory::NotDocumented);
        assert_eq!(s.notes.len(), 1);
        assert!(s.notes[0].contains("Observation/t"), "{}", s.notes[0]);
        assert!(s.notes[0].contains("Condition/bc"), "{}", s.notes[0]);
        assert!(s.notes[0].contains("Condition/rc"), "{}", s.notes[0]);
    }

    #[test]
    fn older_snomed_t_findings_count() {
        for (code, expected) in [
            ("65565005", TCategory::T4),
            ("14410001", TCategory::BelowT4),
        ] {
            let rec = record(
                vec![rectal("rc", Value::Null)],
                vec![],
                vec![t_obs("t", (SCT, "384625004"), (SCT, code), None)],
            );
            assert_eq!(staging(&rec).category, expected, "{code}");
        }
    }
}
