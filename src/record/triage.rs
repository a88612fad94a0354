//! Which resources of a record are worth typing, decided on their JSON before any parsing.
//!
//! Typing a resource with fhirbolt is most of what a record costs (BENCHMARKS.md, issue 18),
//! and most of a real record is of no use to the facts: vital signs and labs, comorbidities,
//! check-ups and unrelated operations. So each resource is first read as a [`Head`]: the few
//! members that say whether the facts can use it, read from its text (or from a parsed value)
//! without building anything. Then it is
//! - **typed** ([`Verdict::Type`]) when the facts can use it;
//! - **kept by id only** ([`Verdict::IdOnly`]): a Condition or Procedure the facts read
//!   nothing of but its id. Other resources may point at it (a margin's `partOf`), and a
//!   finding linked to another disease must still count as linked elsewhere;
//! - **dropped** ([`Verdict::Noise`]): an Observation the facts cannot use.
//!
//! The rules follow what the facts read. A Condition: when it names a cancer (code in
//! [`CONDITION_VALUE_SETS`] or an mCODE cancer condition profile), carries a `stage`, or is an
//! order's reason. A Procedure: when it has a `reasonReference` or is rectal surgery (code or
//! body site). An Observation: when its status does not void it (entered-in-error, cancelled:
//! ignored wherever the facts meet one) and a coding of its `code`, a `component.code` or its
//! `valueCodeableConcept` is in [`OBSERVATION_VALUE_SETS`], or it groups others (`hasMember`).
//! Tests in `record::builder` check that no decision case decides differently with every
//! resource typed.
//!
//! A resource whose members are not shaped as FHIR says (a number where a code belongs) cannot
//! be judged here: it is typed, and fhirbolt says what is wrong with it.

use std::borrow::Cow;
use std::collections::HashSet;

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::Value;

use crate::terminology::{Terminology, ValueSetId, is_cancer_condition_profile};

/// The value sets the facts read Observations by: an Observation with no coding in any of them
/// (and no `hasMember`) cannot change an answer, so it is not parsed.
pub const OBSERVATION_VALUE_SETS: [ValueSetId; 6] = [
    ValueSetId::TCategoryObservation,
    ValueSetId::StageGroupObservation,
    ValueSetId::MarginFindingObservation,
    ValueSetId::MarginDistanceObservation,
    ValueSetId::T4Category,
    ValueSetId::BelowT4Category,
];

/// The value sets the facts recognise a cancer Condition by: a Condition with no coding in
/// any of them (and no cancer profile, `stage`, or order naming it) is kept by id only.
pub const CONDITION_VALUE_SETS: [ValueSetId; 3] = [
    ValueSetId::RectalCancer,
    ValueSetId::AnyCancer,
    ValueSetId::SecondaryCancer,
];

/// What to do with a resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Parse it with fhirbolt: the facts can use it.
    Type,
    /// Keep its id only (a Condition or Procedure).
    IdOnly,
    /// Drop it, counted (an Observation).
    Noise,
}

/// The members of a resource the triage reads; everything else is skipped unread.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Head<'a> {
    #[serde(borrow)]
    pub resource_type: Option<Cow<'a, str>>,
    #[serde(borrow)]
    pub id: Option<Cow<'a, str>>,
    #[serde(borrow)]
    status: Option<Cow<'a, str>>,
    #[serde(borrow)]
    subject: Option<Reference<'a>>,
    #[serde(borrow)]
    beneficiary: Option<Reference<'a>>,
    #[serde(borrow)]
    code: Option<Concept<'a>>,
    #[serde(borrow)]
    value_codeable_concept: Option<Concept<'a>>,
    #[serde(borrow, default)]
    component: Vec<Component<'a>>,
    #[serde(borrow, default)]
    body_site: Vec<Concept<'a>>,
    #[serde(borrow)]
    meta: Option<Meta<'a>>,
    #[serde(default)]
    has_member: Vec<IgnoredAny>,
    #[serde(default)]
    stage: Vec<IgnoredAny>,
    #[serde(default)]
    reason_reference: Vec<IgnoredAny>,
    /// False when the members could not be read as FHIR shapes them: judge nothing, type it.
    #[serde(skip, default = "readable")]
    readable: bool,
}

fn readable() -> bool {
    true
}

#[derive(Debug, Deserialize)]
struct Reference<'a> {
    #[serde(borrow)]
    reference: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Concept<'a> {
    #[serde(borrow, default)]
    coding: Vec<Coding<'a>>,
}

#[derive(Debug, Deserialize)]
struct Coding<'a> {
    #[serde(borrow)]
    system: Option<Cow<'a, str>>,
    #[serde(borrow)]
    code: Option<Cow<'a, str>>,
}

#[derive(Debug, Deserialize)]
struct Component<'a> {
    #[serde(borrow)]
    code: Option<Concept<'a>>,
}

#[derive(Debug, Deserialize)]
struct Meta<'a> {
    #[serde(borrow, default)]
    profile: Vec<Cow<'a, str>>,
}

impl<'a> Head<'a> {
    /// Read from a resource's JSON text; `None` when its members are not shaped as FHIR says
    /// (the caller then parses it and reads what is plainly there, [`Head::of_value`]).
    pub fn of_text(text: &'a str) -> Option<Self> {
        serde_json::from_str(text).ok()
    }

    /// Read from a parsed resource; when its members are not shaped as FHIR says, only its
    /// type, id, status and subject as far as they are strings, and marked unreadable.
    pub fn of_value(value: &'a Value) -> Self {
        Head::deserialize(value).unwrap_or_else(|_| {
            let text = |v: Option<&'a Value>| v.and_then(Value::as_str).map(Cow::Borrowed);
            let reference = |key: &str| {
                Some(Reference {
                    reference: text(value.get(key).and_then(|r| r.get("reference"))),
                })
            };
            Head {
                resource_type: text(value.get("resourceType")),
                id: text(value.get("id")),
                status: text(value.get("status")),
                subject: reference("subject"),
                beneficiary: reference("beneficiary"),
                readable: false,
                ..Head::default()
            }
        })
    }

    pub fn resource_type(&self) -> &str {
        self.resource_type.as_deref().unwrap_or_default()
    }

    pub fn id(&self) -> Option<&str> {
        self.id.as_deref()
    }

    /// The reference naming whom the resource is about: `beneficiary` for a Coverage,
    /// `subject` for the rest.
    pub fn about(&self) -> Option<&str> {
        let reference = if self.resource_type() == "Coverage" {
            &self.beneficiary
        } else {
            &self.subject
        };
        reference.as_ref().and_then(|r| r.reference.as_deref())
    }

    /// What to do with the resource (one of the four kinds the facts read). `whole`: the ids
    /// of the Conditions that are orders' reasons, typed whatever they hold.
    pub fn verdict(&self, terminology: &Terminology, whole: &HashSet<String>) -> Verdict {
        if !self.readable {
            return Verdict::Type;
        }
        let any_in = |concept: Option<&Concept<'_>>, sets: &[ValueSetId]| {
            concept.is_some_and(|c| {
                c.coding.iter().any(|coding| {
                    let (Some(system), Some(code)) = (&coding.system, &coding.code) else {
                        return false;
                    };
                    sets.iter()
                        .any(|vs| terminology.contains(*vs, system, code))
                })
            })
        };
        let keep = |relevant: bool, otherwise: Verdict| {
            if relevant { Verdict::Type } else { otherwise }
        };
        match self.resource_type() {
            "Observation" => {
                let voided = self.status.as_deref().is_some_and(|s| {
                    terminology.contains_code(ValueSetId::ObservationUnusableStatus, s)
                });
                let sets = &OBSERVATION_VALUE_SETS;
                let coded = any_in(self.code.as_ref(), sets)
                    || any_in(self.value_codeable_concept.as_ref(), sets)
                    || self.component.iter().any(|c| any_in(c.code.as_ref(), sets));
                keep(
                    !voided && (!self.has_member.is_empty() || coded),
                    Verdict::Noise,
                )
            }
            "Condition" => keep(
                !self.stage.is_empty()
                    || self.id().is_some_and(|id| whole.contains(id))
                    || self
                        .meta
                        .as_ref()
                        .is_some_and(|m| m.profile.iter().any(|p| is_cancer_condition_profile(p)))
                    || any_in(self.code.as_ref(), &CONDITION_VALUE_SETS),
                Verdict::IdOnly,
            ),
            "Procedure" => keep(
                !self.reason_reference.is_empty()
                    || any_in(self.code.as_ref(), &[ValueSetId::RectalResection])
                    || self
                        .body_site
                        .iter()
                        .any(|s| any_in(Some(s), &[ValueSetId::RectumBodySite])),
                Verdict::IdOnly,
            ),
            _ => Verdict::Type,
        }
    }
}

/// Whether an Observation (as JSON, before parsing) can matter to the facts (see the module
/// docs).
pub fn observation_is_relevant(observation: &Value, terminology: &Terminology) -> bool {
    Head::of_value(observation).verdict(terminology, &HashSet::new()) == Verdict::Type
}

/// The ids of the Conditions that `references` (orders' `reasonReference.reference` values)
/// may name: the part after `Condition/`, without `/_history/...`. Generous on purpose: a
/// Condition typed that did not need to be costs a little time, one kept by id only that was
/// an order's reason would change the answer.
pub fn reason_condition_ids(references: &[String]) -> impl Iterator<Item = String> + '_ {
    references.iter().filter_map(|r| {
        let r = r.split("/_history/").next().unwrap_or(r);
        let (_, id) = r.rsplit_once("Condition/")?;
        (!id.is_empty() && !id.contains('/')).then(|| id.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Assets;
    use serde_json::json;

    fn terminology() -> &'static Terminology {
        static T: std::sync::LazyLock<Terminology> = std::sync::LazyLock::new(|| {
            Terminology::load(&Assets::embedded()).expect("terminology")
        });
        &T
    }

    /// The verdict read from the text and from the parsed value, which must agree.
    fn verdict(resource: &Value, whole: &HashSet<String>) -> Verdict {
        let text = resource.to_string();
        let from_text = Head::of_text(&text)
            .unwrap_or_else(|| Head::of_value(resource))
            .verdict(terminology(), whole);
        assert_eq!(
            from_text,
            Head::of_value(resource).verdict(terminology(), whole),
            "{resource}"
        );
        from_text
    }

    /// Each rule that makes a resource typed, and what is kept by id only or dropped.
    #[test]
    fn resources_are_typed_only_when_the_facts_can_use_them() {
        let none = HashSet::new();
        let icd = |code: &str| json!({"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]});
        let base = json!({"resourceType": "Condition", "id": "c1", "code": icd("I10")});
        assert_eq!(verdict(&base, &none), Verdict::IdOnly, "hypertension");
        let with = |key: &str, value: Value| {
            let mut c = base.clone();
            c[key] = value;
            c
        };
        for relevant in [
            with("code", icd("C20")),
            with("code", icd("C50.911")),
            with(
                "stage",
                json!([{"assessment": [{"reference": "Observation/o1"}]}]),
            ),
            with(
                "meta",
                json!({"profile": [crate::terminology::uris::MCODE_CANCER_CONDITION_PROFILES[0]]}),
            ),
            // Not shaped as FHIR says: typed, for fhirbolt to say what is wrong.
            with("code", json!({"coding": [{"system": 5, "code": "I10"}]})),
        ] {
            assert_eq!(verdict(&relevant, &none), Verdict::Type, "{relevant}");
        }
        let reasons = ["https://ehr.example.org/fhir/Condition/c1/_history/2".to_owned()];
        let whole: HashSet<String> = reason_condition_ids(&reasons).collect();
        assert_eq!(verdict(&base, &whole), Verdict::Type, "an order's reason");

        let cpt = |code: &str| json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": code}]});
        let p = json!({"resourceType": "Procedure", "id": "p1", "status": "completed",
            "code": cpt("66984")});
        assert_eq!(verdict(&p, &none), Verdict::IdOnly, "cataract surgery");
        let mut reason = p.clone();
        reason["reasonReference"] = json!([{"reference": "Condition/c9"}]);
        assert_eq!(verdict(&reason, &none), Verdict::Type);
        let mut site = p.clone();
        site["bodySite"] =
            json!([{"coding": [{"system": "http://snomed.info/sct", "code": "34402009"}]}]);
        assert_eq!(verdict(&site, &none), Verdict::Type, "rectum");

        let vital = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]}});
        assert_eq!(verdict(&vital, &none), Verdict::Noise);
        let mut group = vital.clone();
        group["hasMember"] = json!([{"reference": "Observation/o2"}]);
        assert_eq!(verdict(&group, &none), Verdict::Type);
        group["status"] = json!("entered-in-error");
        assert_eq!(verdict(&group, &none), Verdict::Noise, "voided");
        let coverage = json!({"resourceType": "Coverage", "id": "cov", "beneficiary":
            {"reference": "Patient/p1"}, "subject": {"reference": "Patient/p2"}});
        assert_eq!(verdict(&coverage, &none), Verdict::Type);
        assert_eq!(Head::of_value(&coverage).about(), Some("Patient/p1"));
    }
}
