//! Reading one FHIR resource from JSON without ever failing the call.
//!
//! fhirbolt 0.4 panics on some JSON FHIR forbids but buggy clients and servers send: an empty
//! array (`"category": []`), or an array where a primitive belongs (`"code": []`). A panic in a
//! call used to answer 500, and 559 of 12,000 mutated requests did. So every resource the
//! service parses goes through [`read`], which
//! 1. refuses a resource holding an empty array before the parser sees it, naming the path
//!    (FHIR: "arrays may not be empty"), and
//! 2. runs the parser under `catch_unwind`, so any other shape that panics it is an invalid
//!    resource too, not a failed call.
//!
//! Callers then treat the error like any other invalid resource: a 400 naming the path for the
//! hook request's own draft orders, a recorded issue (and the resource skipped) for a prefetch
//! or FHIR server resource.

use std::panic::{AssertUnwindSafe, catch_unwind};

use fhirbolt::FhirReleases;
use fhirbolt::element::Element;
use fhirbolt::serde::DeserializeResourceOwned;
use serde_json::Value;

/// The JSON path of the first empty array in `value` (`category`, `code.coding[0].code`), if
/// any. Iterative: safe on any depth.
pub fn first_empty_array(value: &Value) -> Option<String> {
    let mut stack: Vec<(&Value, String)> = vec![(value, String::new())];
    while let Some((v, path)) = stack.pop() {
        match v {
            Value::Array(a) if a.is_empty() => return Some(path),
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate().rev() {
                    if x.is_array() || x.is_object() {
                        stack.push((x, format!("{path}[{i}]")));
                    }
                }
            }
            Value::Object(o) => {
                for (k, x) in o.iter().rev() {
                    if x.is_array() || x.is_object() {
                        let p = if path.is_empty() {
                            k.clone()
                        } else {
                            format!("{path}.{k}")
                        };
                        stack.push((x, p));
                    }
                }
            }
            _ => {}
        }
    }
    None
}

/// Remove every empty array (and the member holding it) from `value`, for a lenient re-read:
/// an empty array says nothing, and FHIR forbids it. Iterative: safe on any depth.
pub fn remove_empty_arrays(value: &mut Value) {
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                o.retain(|_, x| !matches!(x, Value::Array(a) if a.is_empty()));
                stack.extend(o.values_mut());
            }
            Value::Array(a) => {
                a.retain(|x| !matches!(x, Value::Array(inner) if inner.is_empty()));
                stack.extend(a.iter_mut());
            }
            _ => {}
        }
    }
}

/// Why a resource could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadError {
    /// FHIR forbids empty arrays; the path names where (relative to the resource).
    #[error("{0}: an empty array (FHIR forbids them)")]
    EmptyArray(String),
    /// The parser refused it (its message: element names and types, no values).
    #[error("{0}")]
    Invalid(String),
    /// The parser panicked on it.
    #[error("the FHIR parser could not read this resource")]
    ParserPanic,
}

/// Run the FHIR parser on `f`, turning a panic into [`ReadError::ParserPanic`].
pub fn guarded<T>(f: impl FnOnce() -> Result<T, String>) -> Result<T, ReadError> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(t)) => Ok(t),
        Ok(Err(e)) => Err(ReadError::Invalid(e)),
        Err(_) => Err(ReadError::ParserPanic),
    }
}

/// Read a resource (any type: `fhirbolt::model::r4::Resource`, or a concrete resource).
pub fn read<T: DeserializeResourceOwned>(json: Value) -> Result<T, ReadError> {
    if let Some(path) = first_empty_array(&json) {
        return Err(ReadError::EmptyArray(path));
    }
    guarded(|| fhirbolt::json::from_json_value::<T>(json, None).map_err(|e| e.to_string()))
}

/// Read through fhirbolt's element tree (see `facts::fhir::parse_resource` for why), guarded.
pub fn read_via_element<T: DeserializeResourceOwned>(json: Value) -> Result<T, ReadError> {
    if let Some(path) = first_empty_array(&json) {
        return Err(ReadError::EmptyArray(path));
    }
    guarded(|| {
        fhirbolt::json::from_json_value::<Element<{ FhirReleases::R4 }>>(json, None)
            .map_err(|e| e.to_string())
            .and_then(|e| {
                fhirbolt::element::from_element::<{ FhirReleases::R4 }, T>(e, None)
                    .map_err(|e| e.to_string())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhirbolt::model::r4::Resource;
    use serde_json::json;

    #[test]
    fn empty_arrays_are_found_with_their_path() {
        assert_eq!(
            first_empty_array(&json!({"a": {"b": [{"c": 1}, {"d": []}]}})).as_deref(),
            Some("a.b[1].d")
        );
        assert_eq!(first_empty_array(&json!([])).as_deref(), Some(""));
        assert_eq!(first_empty_array(&json!({"a": [1, {"b": "x"}]})), None);
    }

    /// The shapes that panicked fhirbolt and made calls answer 500 (issue 13).
    #[test]
    fn shapes_that_panicked_the_parser_are_invalid_resources() {
        let condition = json!({"resourceType": "Condition", "id": "c",
            "subject": {"reference": "Patient/p"},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}});
        let mut cases = Vec::new();
        let mut c = condition.clone();
        c["category"] = json!([]);
        cases.push(c);
        let mut c = condition.clone();
        c["code"]["coding"][0]["code"] = json!([]);
        cases.push(c);
        let mut c = condition.clone();
        c["code"]["coding"] = json!([]);
        cases.push(c);
        for c in cases {
            let shown = c.to_string();
            let r = read::<Resource>(c);
            assert!(matches!(r, Err(ReadError::EmptyArray(_))), "{shown}: {r:?}");
        }
        // Wrong types are the parser's to refuse (or read), never a panic.
        let mut c = condition.clone();
        c["code"]["coding"][0]["code"] = json!({"x": 1});
        assert!(matches!(read::<Resource>(c), Err(ReadError::Invalid(_))));
        let mut c = condition;
        c["code"]["coding"][0]["code"] = json!(["C20"]);
        assert!(!matches!(read::<Resource>(c), Err(ReadError::ParserPanic)));
    }

    #[test]
    fn a_panic_inside_is_an_error() {
        let r: Result<(), ReadError> = guarded(|| panic!("boom"));
        assert_eq!(r, Err(ReadError::ParserPanic));
    }
}
