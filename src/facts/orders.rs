//! Which draft orders are IORT orders, and their billing code.
//!
//! A ServiceRequest is an IORT order when its `code` says so by any of three routes:
//! 1. a `code.coding` in the `iort-procedures` value set (CPT 77424/77425/77469/0735T, SNOMED CT
//!    168524008, ICD-10-PCS radiation therapy with the intraoperative qualifier);
//! 2. a CPT code of `iort-cpt-codes` in the Da Vinci CRD billing-options extension on `code`
//!    (an EHR may order with a local or SNOMED code and offer the billing codes there);
//! 3. a radiotherapy course code (`radiotherapy-course`) whose mCODE
//!    modality-and-technique extension (on the resource, or on `code`) has a technique in
//!    `iort-technique`. The technique sub-extension is an mCODE extension of its own, so
//!    conformant senders (mCODE STU2+, CodeX Radiation Therapy) give it its absolute url; others
//!    use the slice name `technique`. Both are read ([`uris::TECHNIQUE_SUBEXTENSION_URLS`]).
//!
//! A ServiceRequest with `doNotPerform = true` is an order *not* to do the procedure, so it is
//! never treated as an IORT order. Other resource types are not IORT orders.
//!
//! Orders the hook stage could not parse (an unknown element, a missing required one, or a JSON
//! number in a `decimal`, which fhirbolt's direct JSON path rejects) are re-read from the raw
//! JSON with [`crate::fhir_json::parse_resource`]: strictly through fhirbolt's element tree,
//! then repairing what the strict parse names (fhirbolt's own lax mode is never used: it can
//! loop forever). The order is still the clinician's IORT order, and skipping it would hide the
//! coverage answer. Only an order that cannot be read even so is skipped, with a warning that names the
//! order, never its content. The order as read here travels in
//! [`IortOrder::service_request`], so `extract` does not read it again.

use std::borrow::Cow;

use fhirbolt::model::r4::Resource;
use fhirbolt::model::r4::resources::ServiceRequest;
use fhirbolt::model::r4::types::{CodeableConcept, Coding, Extension, ExtensionValue};
use serde_json::Value;

use crate::facts::fhir::{coding_label, parse_resource, text};
use crate::facts::{CodeRef, IortOrder};
use crate::hook::DraftOrder;
use crate::terminology::{Terminology, ValueSetId, canonical_system, uris};

/// The ServiceRequest of a raw order, read leniently (see the module docs).
pub(crate) fn service_request_from_raw(raw: &Value) -> Option<ServiceRequest> {
    if raw.get("resourceType").and_then(Value::as_str) != Some("ServiceRequest") {
        return None;
    }
    parse_resource::<ServiceRequest>(raw.clone(), false)
        .or_else(|_| parse_resource::<ServiceRequest>(raw.clone(), true))
        .ok()
}

/// The typed ServiceRequest of a draft order, from the hook parse when it succeeded.
fn draft_service_request(order: &DraftOrder) -> Option<Cow<'_, ServiceRequest>> {
    match &order.parsed {
        Ok(Resource::ServiceRequest(sr)) => Some(Cow::Borrowed(sr.as_ref())),
        Ok(_) => None,
        Err(_) => {
            let sr = service_request_from_raw(&order.raw);
            if sr.is_none() && order.resource_type == "ServiceRequest" {
                tracing::warn!(
                    order = %order.reference(),
                    "draft order could not be read as a FHIR R4 ServiceRequest; not checked for IORT"
                );
            }
            sr.map(Cow::Owned)
        }
    }
}

/// The codings of the CRD billing-options extensions on `code`.
fn billing_option_codings(code: &CodeableConcept) -> impl Iterator<Item = &Coding> {
    code.extension
        .iter()
        .filter(|e| e.url == uris::BILLING_OPTIONS_EXTENSION)
        .filter_map(|e| match &e.value {
            Some(ExtensionValue::CodeableConcept(cc)) => Some(cc.coding.iter()),
            _ => None,
        })
        .flatten()
}

/// The technique codings of every mCODE modality-and-technique extension in `extensions`.
fn technique_codings(extensions: &[Extension]) -> impl Iterator<Item = &Coding> {
    extensions
        .iter()
        .filter(|e| e.url == uris::MODALITY_AND_TECHNIQUE_EXTENSION)
        .flat_map(|e| e.extension.iter())
        .filter(|sub| uris::TECHNIQUE_SUBEXTENSION_URLS.contains(&sub.url.trim()))
        .filter_map(|sub| match &sub.value {
            Some(ExtensionValue::CodeableConcept(cc)) => Some(cc.coding.iter()),
            _ => None,
        })
        .flatten()
}

/// The coding as a [`CodeRef`], its system canonical (a CPT code sent under its OID is still
/// reported as CPT).
fn code_ref(coding: &Coding) -> Option<CodeRef> {
    Some(CodeRef {
        system: canonical_system(text(coding.system.as_ref())?).to_owned(),
        code: text(coding.code.as_ref())?.to_owned(),
        display: text(coding.display.as_ref()).map(str::to_owned),
    })
}

/// What made an order IORT: the billing code and the text for the card.
pub(crate) struct Detection {
    pub billing_code: Option<CodeRef>,
    pub display: String,
}

/// Whether the ServiceRequest is an IORT order (see the module docs for the routes).
pub(crate) fn detect(sr: &ServiceRequest, t: &Terminology) -> Option<Detection> {
    if sr
        .do_not_perform
        .as_ref()
        .and_then(|b| b.value)
        .unwrap_or(false)
    {
        return None;
    }
    let code = sr.code.as_deref()?;

    let by_code = t.matching_coding(ValueSetId::IortProcedures, code);
    let by_billing =
        billing_option_codings(code).find(|c| t.contains_coding(ValueSetId::IortCptCodes, c));
    let by_technique = if t.concept_in(ValueSetId::RadiotherapyCourse, code) {
        technique_codings(&sr.extension)
            .chain(technique_codings(&code.extension))
            .find(|c| t.contains_coding(ValueSetId::IortTechnique, c))
    } else {
        None
    };
    let matched = by_code.or(by_billing).or(by_technique)?;

    // The billing code is a CPT code of the policy: from code.coding first, else billing options.
    let billing = code
        .coding
        .iter()
        .find(|c| t.contains_coding(ValueSetId::IortCptCodes, c))
        .or(by_billing)
        .and_then(code_ref);

    let display = text(code.text.as_ref())
        .map(str::to_owned)
        .or_else(|| text(matched.display.as_ref()).map(str::to_owned))
        .unwrap_or_else(|| coding_label(matched));
    Some(Detection {
        billing_code: billing,
        display,
    })
}

/// Whether a draft order, read as raw JSON, may be an IORT order: false only when [`find`]
/// surely finds it is not, so the hook stage can answer a call none of whose orders may be
/// IORT without typing anything (the fast path, `hook::call::screen_call`).
///
/// The same routes as [`detect`], on the same strings: not a ServiceRequest, `doNotPerform`
/// true, or no `code` is never IORT; otherwise the order may be IORT when a `code.coding` is in
/// `iort-procedures`, when a billing-options extension on `code` offers a code of
/// `iort-cpt-codes`, or when a `code.coding` is a radiotherapy course (its technique is left to
/// the full path). Anything shaped otherwise than FHIR JSON says (a coding that is not an
/// object, a code that is not a string, an extension without a url ...) may be repaired by the
/// lenient re-read, so it counts as "may be IORT" too.
pub(crate) fn may_be_iort(raw: &Value, t: &Terminology) -> bool {
    let Some(order) = raw.as_object() else {
        return true;
    };
    if order.get("resourceType").and_then(Value::as_str) != Some("ServiceRequest") {
        return false;
    }
    if order.get("doNotPerform") == Some(&Value::Bool(true)) {
        return false;
    }
    let code = match order.get("code") {
        None => return false,
        Some(Value::Object(code)) => code,
        Some(_) => return true,
    };
    let in_any = |codings: Option<&Value>, sets: &[ValueSetId]| -> bool {
        let codings = match codings {
            None => return false,
            Some(Value::Array(codings)) => codings,
            Some(_) => return true,
        };
        codings.iter().any(|coding| {
            let Some(coding) = coding.as_object() else {
                return true;
            };
            match (coding.get("system"), coding.get("code")) {
                (Some(Value::String(system)), Some(Value::String(code))) => {
                    sets.iter().any(|&vs| t.contains(vs, system, code))
                }
                (None | Some(Value::String(_)), None | Some(Value::String(_))) => false,
                _ => true,
            }
        })
    };
    if in_any(
        code.get("coding"),
        &[ValueSetId::IortProcedures, ValueSetId::RadiotherapyCourse],
    ) {
        return true;
    }
    let extensions = match code.get("extension") {
        None => return false,
        Some(Value::Array(extensions)) => extensions,
        Some(_) => return true,
    };
    extensions.iter().any(|extension| {
        let Some(extension) = extension.as_object() else {
            return true;
        };
        match extension.get("url") {
            Some(Value::String(url)) if url == uris::BILLING_OPTIONS_EXTENSION => {
                match extension.get("valueCodeableConcept") {
                    None => false,
                    Some(Value::Object(cc)) => {
                        in_any(cc.get("coding"), &[ValueSetId::IortCptCodes])
                    }
                    Some(_) => true,
                }
            }
            Some(Value::String(_)) => false,
            _ => true,
        }
    })
}

/// The draft orders that are IORT orders, in request order.
pub(crate) fn find(orders: &[DraftOrder], t: &Terminology) -> Vec<IortOrder> {
    orders
        .iter()
        .filter_map(|order| {
            let sr = draft_service_request(order)?;
            let detection = detect(&sr, t)?;
            Some(IortOrder {
                resource_type: order.resource_type.clone(),
                id: order.id.clone(),
                raw: order.raw.clone(),
                billing_code: detection.billing_code,
                display: detection.display,
                service_request: Some(Box::new(sr.into_owned())),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::terminology;
    use serde_json::json;

    fn draft(raw: Value) -> DraftOrder {
        DraftOrder::from_json(raw).expect("a resourceType")
    }

    fn sr(id: &str, code: Value) -> Value {
        json!({"resourceType": "ServiceRequest", "id": id, "status": "draft", "intent": "order",
               "subject": {"reference": "Patient/p1"}, "code": code})
    }

    fn one(raw: Value) -> Option<IortOrder> {
        let mut found = find(&[draft(raw)], terminology());
        assert!(found.len() <= 1);
        found.pop()
    }

    #[test]
    fn cpt_code_is_iort_with_billing_code() {
        let o = one(sr(
            "a",
            json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt",
            "code": "77425", "display": "IORT electrons"}]}),
        ))
        .expect("IORT");
        assert_eq!(o.id.as_deref(), Some("a"));
        assert_eq!(o.resource_type, "ServiceRequest");
        let b = o.billing_code.expect("billing code");
        assert_eq!((b.system.as_str(), b.code.as_str()), (uris::CPT, "77425"));
        assert_eq!(o.display, "IORT electrons");
    }

    #[test]
    fn snomed_and_pcs_are_iort_without_billing_code() {
        let o = one(sr(
            "s",
            json!({"coding": [{"system": "http://snomed.info/sct",
            "code": "168524008"}], "text": "IORT"}),
        ))
        .expect("SNOMED IORT");
        assert!(o.billing_code.is_none());
        assert_eq!(o.display, "IORT");
        let o = one(sr(
            "p",
            json!({"coding": [{"system": "http://www.cms.gov/Medicare/Coding/ICD10",
            "code": "DD073Z0"}]}),
        ))
        .expect("PCS IORT");
        assert!(o.billing_code.is_none());
        assert_eq!(o.display, "ICD-10-PCS DD073Z0");
        assert!(
            one(sr(
                "q",
                json!({"coding": [{"system": "http://www.cms.gov/Medicare/Coding/ICD10",
            "code": "DD073ZZ"}]})
            ))
            .is_none(),
            "beam radiation, not intraoperative"
        );
    }

    #[test]
    fn billing_options_extension_makes_iort() {
        let o = one(sr(
            "b",
            json!({
                "coding": [{"system": "http://example.org/local-orders", "code": "RT-IO-1"}],
                "extension": [{"url": uris::BILLING_OPTIONS_EXTENSION,
                    "valueCodeableConcept": {"coding": [
                        {"system": "http://www.ama-assn.org/go/cpt", "code": "77469"}]}}]
            }),
        ))
        .expect("IORT by billing options");
        assert_eq!(o.billing_code.map(|b| b.code).as_deref(), Some("77469"));
        // A billing option that is not an IORT code does not make the order IORT.
        assert!(
            one(sr(
                "b2",
                json!({
                    "coding": [{"system": "http://example.org/local-orders", "code": "RT-1"}],
                    "extension": [{"url": uris::BILLING_OPTIONS_EXTENSION,
                        "valueCodeableConcept": {"coding": [
                            {"system": "http://www.ama-assn.org/go/cpt", "code": "77412"}]}}]
                })
            ))
            .is_none()
        );
    }

    #[test]
    fn course_with_mcode_technique_is_iort() {
        let technique = |code: &str| {
            json!([{"url": uris::MODALITY_AND_TECHNIQUE_EXTENSION, "extension": [
            {"url": "modality", "valueCodeableConcept": {"coding": [
                {"system": "http://snomed.info/sct", "code": "45643008"}]}},
            {"url": "technique", "valueCodeableConcept": {"coding": [
                {"system": "http://snomed.info/sct", "code": code}]}}]}])
        };
        let mut raw = sr(
            "c",
            json!({"coding": [{"system": "http://snomed.info/sct",
            "code": "1217123003", "display": "Radiotherapy course of treatment"}]}),
        );
        raw["extension"] = technique("168524008");
        let o = one(raw.clone()).expect("IORT course");
        assert!(o.billing_code.is_none());
        // The same course with another technique is not IORT.
        raw["extension"] = technique("441799006");
        assert!(one(raw.clone()).is_none());
        // Nor is the course without any technique.
        raw.as_object_mut().unwrap().remove("extension");
        assert!(one(raw).is_none());
    }

    #[test]
    fn mcode_course_with_absolute_subextension_urls_is_iort() {
        // Shaped like the CodeX Radiation Therapy / mCODE STU4 course examples: the
        // sub-extensions carry the absolute urls of the mCODE modality and technique extensions.
        let sub = |url: &str, code: &str| {
            json!({"url": url, "valueCodeableConcept": {"coding": [
                {"system": "http://snomed.info/sct", "code": code,
                 "display": format!("SNOMED CT {code} as sent")}]}})
        };
        let course = |technique: Value| {
            let mut raw = sr(
                "codex",
                json!({"coding": [{"system": "http://snomed.info/sct", "code": "1217123003",
                    "display": "Radiotherapy course of treatment (regime/therapy)"}]}),
            );
            raw["category"] = json!([{"coding": [{"system": "http://snomed.info/sct",
                "code": "108290001"}]}]);
            raw["extension"] = json!([{"url": uris::MODALITY_AND_TECHNIQUE_EXTENSION,
                "extension": [sub(uris::MODALITY_SUBEXTENSION, "45643008"), technique]}]);
            raw
        };
        let o = one(course(sub(uris::TECHNIQUE_SUBEXTENSION, "168524008")))
            .expect("IORT course with absolute sub-extension urls");
        assert_eq!(o.id.as_deref(), Some("codex"));
        assert!(o.billing_code.is_none());
        assert_eq!(
            o.display, "SNOMED CT 168524008 as sent",
            "the matched technique"
        );
        // The same shape with an external-beam technique is not IORT.
        assert!(one(course(sub(uris::TECHNIQUE_SUBEXTENSION, "1162782007"))).is_none());
        // An IORT code under the modality url is not a technique.
        assert!(one(course(sub(uris::MODALITY_SUBEXTENSION, "168524008"))).is_none());
        // Another IG's sub-extension url with the IORT code is not mCODE's technique.
        assert!(
            one(course(sub(
                "http://hl7.org/fhir/us/codex-radiation-therapy/StructureDefinition/codexrt-radiotherapy-energy-or-isotope",
                "168524008"
            )))
            .is_none()
        );
    }

    #[test]
    fn pcs_other_radiation_iort_and_aliased_systems() {
        for code in ["DDY7CZZ", "ddy7czz", "D0Y0CZZ", "DVY0CZZ"] {
            let o = one(sr(
                "pcs",
                json!({"coding": [{"system": uris::ICD10_PCS, "code": code}]}),
            ));
            assert!(o.is_some(), "{code}");
        }
        // Contact radiation (5th character 7) of the same table is not IORT.
        assert!(
            one(sr(
                "pcs7",
                json!({"coding": [{"system": uris::ICD10_PCS, "code": "DDY77ZZ"}]})
            ))
            .is_none()
        );
        // CPT by its OID still yields the billing code, reported under the canonical system.
        let o = one(sr(
            "oid",
            json!({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.12", "code": "77425"}]}),
        ))
        .expect("CPT by OID");
        let b = o.billing_code.expect("billing code");
        assert_eq!((b.system.as_str(), b.code.as_str()), (uris::CPT, "77425"));
    }

    #[test]
    fn non_iort_orders_are_not_returned() {
        assert!(
            one(sr(
                "x",
                json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt",
            "code": "77412"}]})
            ))
            .is_none()
        );
        assert!(one(sr("y", json!({"text": "IORT please"}))).is_none());
        let mut raw = sr(
            "n",
            json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt",
            "code": "77425"}]}),
        );
        raw["doNotPerform"] = json!(true);
        assert!(one(raw).is_none(), "doNotPerform");
        let med = json!({"resourceType": "MedicationRequest", "id": "m", "status": "draft",
            "intent": "order", "subject": {"reference": "Patient/p1"},
            "medicationCodeableConcept": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
            "code": "77425"}]}});
        assert!(one(med).is_none());
    }

    #[test]
    fn order_that_fails_strict_parse_is_read_leniently() {
        let mut raw = sr(
            "lax",
            json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt",
            "code": "77424"}]}),
        );
        raw["bogusElement"] = json!(1);
        let d = draft(raw);
        assert!(d.parsed.is_err());
        let found = find(&[d], terminology());
        assert_eq!(found.len(), 1);
        assert_eq!(
            found[0].billing_code.as_ref().map(|b| b.code.as_str()),
            Some("77424")
        );
    }

    /// `may_be_iort` on the raw JSON, and what `find` makes of the same order.
    fn raw_and_full(raw: &Value) -> (bool, bool) {
        (
            may_be_iort(raw, terminology()),
            !find(&[draft(raw.clone())], terminology()).is_empty(),
        )
    }

    #[test]
    fn raw_screen_never_misses_an_order_find_calls_iort() {
        // Every draft order of every case: an order `find` calls IORT is never screened out.
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cases");
        let mut seen = (0, 0);
        for file in std::fs::read_dir(dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_none_or(|x| x != "json") {
                continue;
            }
            let case: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
            let entries = case
                .pointer("/request/context/draftOrders/entry")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for entry in entries {
                let (maybe, iort) = raw_and_full(&entry["resource"]);
                assert!(maybe || !iort, "{}", path.display());
                seen.0 += usize::from(iort);
                seen.1 += usize::from(!maybe);
            }
        }
        assert!(
            seen.0 > 50 && seen.1 > 0,
            "IORT orders, screened out: {seen:?}"
        );
    }

    #[test]
    fn raw_screen_follows_the_routes() {
        let cpt = |code: &str| json!({"coding": [{"system": uris::CPT, "code": code}]});
        // IORT by each route (and aliases, case, whitespace as `find` reads them).
        for raw in [
            sr("a", cpt("77425")),
            sr("b", cpt("0735t")),
            sr(
                "c",
                json!({"coding": [{"system": "urn:oid:2.16.840.1.113883.6.12", "code": "77469"}]}),
            ),
            sr(
                "d",
                json!({"coding": [{"system": uris::ICD10_PCS, "code": "DD073Z0"}]}),
            ),
            sr(
                "e",
                json!({"coding": [{"system": "http://snomed.info/sct", "code": "168524008"}]}),
            ),
            sr(
                "f",
                json!({"coding": [{"system": "http://example.org/local", "code": "IO"}],
                "extension": [{"url": uris::BILLING_OPTIONS_EXTENSION,
                    "valueCodeableConcept": {"coding": [{"system": uris::CPT, "code": "77424"}]}}]}),
            ),
        ] {
            assert_eq!(raw_and_full(&raw), (true, true), "{raw}");
        }
        // Surely not IORT: `find` agrees.
        let mut dnp = sr("n", cpt("77425"));
        dnp["doNotPerform"] = json!(true);
        let mut no_code = sr("x", cpt("77425"));
        no_code.as_object_mut().unwrap().remove("code");
        for raw in [
            sr(
                "lab",
                json!({"coding": [{"system": "http://loinc.org", "code": "2160-0"}]}),
            ),
            sr("ebrt", cpt("77412")),
            sr("text", json!({"text": "IORT please"})),
            sr(
                "other-billing",
                json!({"coding": [{"system": "http://example.org/l", "code": "RT"}],
                "extension": [{"url": uris::BILLING_OPTIONS_EXTENSION,
                    "valueCodeableConcept": {"coding": [{"system": uris::CPT, "code": "77412"}]}}]}),
            ),
            sr(
                "other-extension",
                json!({"coding": [{"system": "http://example.org/l", "code": "RT"}],
                "extension": [{"url": "http://example.org/x",
                    "valueCodeableConcept": {"coding": [{"system": uris::CPT, "code": "77425"}]}}]}),
            ),
            dnp,
            no_code,
            json!({"resourceType": "MedicationRequest", "id": "m", "status": "draft",
                "intent": "order", "subject": {"reference": "Patient/p1"},
                "medicationCodeableConcept": cpt("77425")}),
        ] {
            assert_eq!(raw_and_full(&raw), (false, false), "{raw}");
        }
        // A radiotherapy course may be IORT by its technique: left to the full path.
        let course = sr(
            "course",
            json!({"coding": [{"system": "http://snomed.info/sct", "code": "1217123003"}]}),
        );
        assert_eq!(raw_and_full(&course), (true, false));
        // Shapes the lenient re-read may repair are doubts, never "surely not".
        for code in [
            json!("77425"),
            json!({"coding": {"system": uris::CPT, "code": "77425"}}),
            json!({"coding": ["77425"]}),
            json!({"coding": [{"system": uris::CPT, "code": 77425}]}),
            json!({"extension": [{"valueCodeableConcept": cpt("77425")}]}),
            json!({"extension": [{"url": uris::BILLING_OPTIONS_EXTENSION,
                "valueCodeableConcept": {"coding": [{"system": uris::CPT, "code": ["77425"]}]}}]}),
        ] {
            assert!(
                may_be_iort(&sr("odd", code.clone()), terminology()),
                "{code}"
            );
        }
    }

    #[test]
    fn order_of_several_is_kept() {
        let orders = [
            draft(sr(
                "1",
                json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]}),
            )),
            draft(sr(
                "2",
                json!({"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "99213"}]}),
            )),
            draft(sr(
                "3",
                json!({"coding": [{"system": "http://snomed.info/sct", "code": "168524008"}]}),
            )),
        ];
        let ids: Vec<_> = find(&orders, terminology())
            .into_iter()
            .filter_map(|o| o.id)
            .collect();
        assert_eq!(ids, ["1", "3"]);
    }
}
