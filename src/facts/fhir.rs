//! Small read helpers over the fhirbolt model shared by the extractors: primitive values,
//! references, the "usable" status rules and each resource's clinically relevant date.
//!
//! They exist so every extractor applies the same rules (which statuses exclude a resource,
//! which date a resource is dated by, how a reference names a resource) instead of each
//! re-deriving them.

use fhirbolt::FhirReleases;
use fhirbolt::element::Element;
use fhirbolt::model::r4::resources::{Condition, Observation, Procedure};
use fhirbolt::model::r4::resources::{ConditionOnset, ObservationEffective, ProcedurePerformed};
use fhirbolt::model::r4::types::{CodeableConcept, Coding, Reference};
use fhirbolt::serde::{DeserializationConfig, DeserializationMode, DeserializeResourceOwned};
use serde_json::Value;

use crate::facts::Evidence;
use crate::facts::dates::DateKey;
use crate::terminology::{Terminology, ValueSetId, system_label};

/// Parse a FHIR R4 resource from JSON, working around two fhirbolt 0.4 quirks.
///
/// Why not `fhirbolt::json::from_json_value` straight into the typed model: with the serde_json
/// version this crate builds with, that path rejects every JSON *number* in a FHIR `decimal`
/// (e.g. `valueQuantity.value: 0.5` fails with "invalid type: number, expected a string"),
/// while JSON -> `Element` -> typed model reads decimals correctly. That route is used first.
///
/// With `lax`, fhirbolt's lax mode is used (unknown elements ignored, missing required ones
/// defaulted). The element route cannot skip an unknown element whose value is not a string,
/// so in lax mode the direct typed route is tried as well; only a resource with both an
/// unknown non-string element and a decimal number fails both. The error text names fields,
/// not values.
pub fn parse_resource<T: DeserializeResourceOwned>(json: Value, lax: bool) -> Result<T, String> {
    let config = lax.then_some(DeserializationConfig {
        mode: DeserializationMode::Lax,
    });
    let via_element =
        fhirbolt::json::from_json_value::<Element<{ FhirReleases::R4 }>>(json.clone(), config)
            .map_err(|e| e.to_string())
            .and_then(|element| {
                fhirbolt::element::from_element::<{ FhirReleases::R4 }, T>(element, config)
                    .map_err(|e| e.to_string())
            });
    match via_element {
        Ok(resource) => Ok(resource),
        Err(e) if lax => fhirbolt::json::from_json_value::<T>(json, config).map_err(|_| e),
        Err(e) => Err(e),
    }
}

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

/// `Type/id`, or `Type/(no id)` for a resource without one (evidence must still name it).
pub(crate) fn resource_ref(resource_type: &str, id: Option<&str>) -> String {
    match id {
        Some(id) => format!("{resource_type}/{id}"),
        None => format!("{resource_type}/(no id)"),
    }
}

/// `SNOMED CT 1229865000` / `ICD-10-CM C20`, with the display first when there is one.
pub(crate) fn coding_label(coding: &Coding) -> String {
    let system = text(coding.system.as_ref())
        .map(system_label)
        .unwrap_or("code");
    let code = text(coding.code.as_ref()).unwrap_or("?");
    match text(coding.display.as_ref()) {
        Some(display) => format!("{display} ({system} {code})"),
        None => format!("{system} {code}"),
    }
}

/// The label of a concept: its matching coding when known, else its text, else its first coding.
pub(crate) fn concept_label(concept: &CodeableConcept, matched: Option<&Coding>) -> String {
    if let Some(c) = matched {
        return coding_label(c);
    }
    if let Some(t) = text(concept.text.as_ref()) {
        return t.to_owned();
    }
    concept
        .coding
        .first()
        .map(coding_label)
        .unwrap_or_else(|| "(uncoded)".to_owned())
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
        date: condition_date(c).map(str::to_owned),
        detail,
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

/// effectiveDateTime / effectivePeriod.start / effectiveInstant, else issued.
pub(crate) fn observation_date(o: &Observation) -> Option<&str> {
    match &o.effective {
        Some(ObservationEffective::DateTime(d)) => text(Some(d)),
        Some(ObservationEffective::Period(p)) => text(p.start.as_ref()),
        Some(ObservationEffective::Instant(i)) => text(Some(i)),
        _ => None,
    }
    .or_else(|| text(o.issued.as_ref()))
}

pub(crate) fn observation_evidence(o: &Observation, detail: String) -> Evidence {
    Evidence {
        reference: resource_ref("Observation", observation_id(o)),
        date: observation_date(o).map(str::to_owned),
        detail,
    }
}

// ---------------------------------------------------------------- Procedure

pub(crate) fn procedure_id(p: &Procedure) -> Option<&str> {
    text(p.id.as_ref())
}

/// False for a Procedure whose status is entered-in-error or not-done.
pub(crate) fn procedure_usable(p: &Procedure, t: &Terminology) -> bool {
    !text(Some(&p.status)).is_some_and(|s| t.contains_code(ValueSetId::ProcedureUnusableStatus, s))
}

/// performedDateTime / performedPeriod.start.
pub(crate) fn procedure_date(p: &Procedure) -> Option<&str> {
    match &p.performed {
        Some(ProcedurePerformed::DateTime(d)) => text(Some(d)),
        Some(ProcedurePerformed::Period(period)) => text(period.start.as_ref()),
        _ => None,
    }
}

pub(crate) fn procedure_evidence(p: &Procedure, detail: String) -> Evidence {
    Evidence {
        reference: resource_ref("Procedure", procedure_id(p)),
        date: procedure_date(p).map(str::to_owned),
        detail,
    }
}

/// The sortable key of an evidence date.
pub(crate) fn key_of(date: Option<&str>) -> Option<DateKey> {
    date.and_then(DateKey::parse)
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
    fn decimals_parse_as_numbers_and_strings() {
        use serde_json::json;
        let obs = |value: Value| {
            parse_resource::<Observation>(
                json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                    "valueQuantity": {"value": value, "unit": "mm"}}),
                false,
            )
        };
        for v in [json!(0.5), json!(2), json!("0.5")] {
            let o = obs(v.clone()).unwrap_or_else(|e| panic!("{v}: {e}"));
            assert!(matches!(
                o.value,
                Some(fhirbolt::model::r4::resources::ObservationValue::Quantity(
                    _
                ))
            ));
        }
        let unknown = json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "bogus": 1});
        let unknown_with_decimal = json!({"resourceType": "Observation",
            "code": {"text": "x"}, "bogus": "text", "valueQuantity": {"value": 0.5}});
        assert!(parse_resource::<Observation>(unknown_with_decimal, true).is_ok());
        assert!(parse_resource::<Observation>(unknown.clone(), false).is_err());
        let lax = parse_resource::<Observation>(unknown, true);
        assert!(lax.is_ok(), "{:?}", lax.err());
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
