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
//!
//! The one module that parses FHIR JSON: [`read`] and [`read_text`] (any type, or through the
//! `Resource` enum), [`read_text_as`] and [`read_as`] (straight into the concrete type the
//! caller names, the enum's way when that fails), [`read_via_element`] (through fhirbolt's
//! element tree, which reads JSON numbers in `decimal`s), and [`parse_resource`] (strict, or
//! repairing what the strict parse names, instead of fhirbolt's lax mode, which can loop
//! forever). Every site goes through one of them; each explains its fhirbolt 0.4 workaround
//! once, here.

use std::panic::{AssertUnwindSafe, catch_unwind};

use fhirbolt::FhirReleases;
use fhirbolt::element::Element;
use fhirbolt::serde::DeserializeResourceOwned;
use serde_json::Value;

/// The JSON path of the first empty array in `value` (`category`, `code.coding[0].code`), if
/// any. Iterative: safe on any depth.
///
/// Runs on every resource of every record, which almost never holds one: the walk that finds
/// out allocates no path, and the paths are written only when there is one to name.
pub fn first_empty_array(value: &Value) -> Option<String> {
    if !has_empty_array(value) {
        return None;
    }
    empty_array_path(value)
}

/// Whether `value` holds an empty array anywhere. Iterative: safe on any depth.
fn has_empty_array(value: &Value) -> bool {
    let mut stack: Vec<&Value> = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(a) if a.is_empty() => return true,
            Value::Array(a) => stack.extend(a.iter().filter(|x| x.is_array() || x.is_object())),
            Value::Object(o) => {
                stack.extend(o.values().filter(|x| x.is_array() || x.is_object()));
            }
            _ => {}
        }
    }
    false
}

/// [`first_empty_array`]'s path, in document order.
fn empty_array_path(value: &Value) -> Option<String> {
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

/// [`read`] from a resource's JSON text, with nothing built but the typed resource. A text
/// holding an empty array is parsed and read as a value, so that the error names its path.
pub fn read_text<T: DeserializeResourceOwned>(text: &str) -> Result<T, ReadError> {
    if crate::limits::has_empty_array_in_text(text.as_bytes()) {
        let value: Value =
            serde_json::from_str(text).map_err(|_| ReadError::Invalid("not JSON".to_owned()))?;
        return read(value);
    }
    guarded(|| fhirbolt::json::from_str::<T>(text, None).map_err(|e| e.to_string()))
}

/// Run `$read::<T>` for the concrete type `T` named by `$rtype` among the resource types the
/// service reads, wrapping the result in its [`fhirbolt::model::r4::Resource`] variant; `None`
/// for any other type.
macro_rules! read_known {
    ($rtype:expr, $read:ident, $input:expr) => {{
        use fhirbolt::model::r4::{Resource, resources};
        match $rtype {
            "Condition" => {
                Some($read::<resources::Condition>($input).map(|r| Resource::Condition(r.into())))
            }
            "Procedure" => {
                Some($read::<resources::Procedure>($input).map(|r| Resource::Procedure(r.into())))
            }
            "Observation" => Some(
                $read::<resources::Observation>($input).map(|r| Resource::Observation(r.into())),
            ),
            "Coverage" => {
                Some($read::<resources::Coverage>($input).map(|r| Resource::Coverage(r.into())))
            }
            "ServiceRequest" => Some(
                $read::<resources::ServiceRequest>($input)
                    .map(|r| Resource::ServiceRequest(r.into())),
            ),
            "DeviceRequest" => Some(
                $read::<resources::DeviceRequest>($input)
                    .map(|r| Resource::DeviceRequest(r.into())),
            ),
            "MedicationRequest" => Some(
                $read::<resources::MedicationRequest>($input)
                    .map(|r| Resource::MedicationRequest(r.into())),
            ),
            _ => None,
        }
    }};
}

/// A resource from its text, read in one pass when its type is one the service reads (the
/// caller knows `resource_type` already): straight into the concrete type, and through the
/// [`fhirbolt::model::r4::Resource`] enum only if that fails.
///
/// Why both: the enum route first builds fhirbolt's element tree of the whole resource (it
/// must find `resourceType` before it knows the type), then reads the typed model from that
/// tree; the direct route skips the tree, about half of fhirbolt's cost per resource. But the
/// direct route refuses every JSON number where the model holds text, a FHIR `decimal` above
/// all (see [`parse_resource`]), which the enum route reads as the number's text. Such a number
/// is quoted and the direct route tried again ([`read_text_direct`]). A resource the direct
/// route still refuses, for whatever reason, is read again the enum route's way, and its
/// answer (the resource, or the error the caller reports) is the answer. A resource both
/// routes accept comes out the same (tested on every fixture, with decimals added).
pub fn read_text_as(
    resource_type: &str,
    text: &str,
) -> Result<fhirbolt::model::r4::Resource, ReadError> {
    match read_text_direct(resource_type, text) {
        Some(Ok(resource)) => Ok(resource),
        _ => read_text(text),
    }
}

/// The most numbers quoted in one resource before the enum route takes over: each costs the
/// direct route another (partial) pass, and an Observation holds a value and a reference
/// range's two bounds.
const MAX_QUOTED_NUMBERS: usize = 4;

/// The direct route of [`read_text_as`] (`None`: a type it does not take). When the parser
/// stops at a JSON number with a fraction where the model wants text ("invalid type:
/// number, expected a string"), the number is quoted, exactly as written, and the text read again. The enum route
/// reads the same number as that text (serde_json keeps a number's digits as written, the
/// `arbitrary_precision` feature fhirbolt switches on), so both routes answer the same; a
/// quote placed anywhere else would leave the text invalid JSON and fail.
fn read_text_direct(
    resource_type: &str,
    text: &str,
) -> Option<Result<fhirbolt::model::r4::Resource, ReadError>> {
    let mut result = read_known!(resource_type, read_text, text)?;
    let mut quoted: Option<String> = None;
    for _ in 0..MAX_QUOTED_NUMBERS {
        let current = quoted.as_deref().unwrap_or(text);
        let Err(ReadError::Invalid(message)) = &result else {
            break;
        };
        let Some(number) = number_wanted_as_text(message, current) else {
            break;
        };
        let mut next = String::with_capacity(current.len() + 2);
        next.push_str(&current[..number.start]);
        next.push('"');
        next.push_str(&current[number.clone()]);
        next.push('"');
        next.push_str(&current[number.end..]);
        result = read_known!(resource_type, read_text, next.as_str())?;
        quoted = Some(next);
    }
    Some(result)
}

/// Where in `text` the number is that serde_json's `message` ("invalid type: number, expected
/// a string at line L column C") stopped at: the byte range of a JSON number token with a
/// fraction and no exponent, in a value position (after `:`, `,` or `[`), that ends at, or
/// starts at, line L column C. Other numbers are left to the enum route, which reads them
/// differently: it writes an exponent's `E` as `e`, and takes an integer as a `decimal` but
/// refuses it as a `string` or `code`, where the direct route would take it once quoted.
fn number_wanted_as_text(message: &str, text: &str) -> Option<std::ops::Range<usize>> {
    let place = message.strip_prefix("invalid type: number, expected a string at line ")?;
    let (line, column) = place.split_once(" column ")?;
    let (line, column): (usize, usize) = (line.parse().ok()?, column.parse().ok()?);
    let bytes = text.as_bytes();
    let line_start = if line == 1 {
        0
    } else {
        memchr::memchr_iter(b'\n', bytes).nth(line - 2)? + 1
    };
    let at = line_start.checked_add(column)?.min(bytes.len());
    // No exponent: the enum route writes `1.5E+3` as `1.5e+3`, so such a number is left to it.
    let in_number = |b: u8| b.is_ascii_digit() || matches!(b, b'.' | b'-');
    let mut start = at;
    while start > 0 && in_number(bytes[start - 1]) {
        start -= 1;
    }
    let mut end = start;
    while end < bytes.len() && in_number(bytes[end]) {
        end += 1;
    }
    let before = bytes[..start]
        .iter()
        .rev()
        .find(|b| !b.is_ascii_whitespace());
    let token = text.get(start..end)?;
    (matches!(before, Some(b':' | b',' | b'['))
        && token.contains('.')
        && serde_json::from_str::<serde_json::Number>(token).is_ok())
    .then_some(start..end)
}

/// [`read_text_as`] for a parsed resource (copied for each route it takes, as [`read`] takes
/// it by value).
pub fn read_as(
    resource_type: &str,
    json: &Value,
) -> Result<fhirbolt::model::r4::Resource, ReadError> {
    match read_known!(resource_type, read, json.clone()) {
        Some(Ok(resource)) => Ok(resource),
        _ => read(json.clone()),
    }
}

/// Read through fhirbolt's element tree (see [`parse_resource`] for why), guarded.
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

/// Parse a FHIR R4 resource from JSON, working around three fhirbolt 0.4 quirks.
///
/// Why not `fhirbolt::json::from_json_value` straight into the typed model: with the serde_json
/// version this crate builds with, that path rejects every JSON *number* in a FHIR `decimal`
/// (e.g. `valueQuantity.value: 0.5` fails with "invalid type: number, expected a string"),
/// while JSON -> `Element` -> typed model reads decimals correctly. That route is used.
///
/// With `lax`, a resource that fails the strict parse is repaired and parsed strictly again,
/// instead of using fhirbolt's own lax mode: in fhirbolt 0.4 lax (and compatibility) mode
/// *never returns* on an unknown element whose value is a JSON array (`"foo": []`, or
/// `meta.profila: [...]`): its element reader hands the same key back forever, so one draft
/// order pinned a worker at 100% CPU for good (found by fuzzing; see tests/regressions).
/// The repair ([`lenient`]) removes each element the strict parse names as unknown and pads a
/// missing required top-level element with an empty value, which is what lax mode meant to do.
/// The error text names fields, not values.
pub fn parse_resource<T: DeserializeResourceOwned>(json: Value, lax: bool) -> Result<T, String> {
    if !lax {
        return parse_strict(json);
    }
    match parse_strict(json.clone()) {
        Ok(resource) => Ok(resource),
        Err(first) => lenient(json).map_err(|_| first),
    }
}

/// One strict parse, never a panic.
fn parse_strict<T: DeserializeResourceOwned>(json: Value) -> Result<T, String> {
    read_via_element(json).map_err(|e| e.to_string())
}

/// At most this many repairs per resource: each costs one strict parse.
const MAX_REPAIRS: usize = 32;

/// Strict parsing, repairing what it reports one error at a time: an unknown element is removed
/// from the objects it is unknown in; a missing required element of the resource itself is
/// added empty (`_name: {}` for a primitive, `name: {}` for a complex type).
fn lenient<T: DeserializeResourceOwned>(mut json: Value) -> Result<T, String> {
    // Empty arrays say nothing and the strict reader refuses them: drop them first.
    remove_empty_arrays(&mut json);
    let mut padded: Vec<String> = Vec::new();
    let mut last = String::from("not repaired");
    for _ in 0..MAX_REPAIRS {
        let error = match parse_strict(json.clone()) {
            Ok(resource) => return Ok(resource),
            Err(e) => e,
        };
        let repaired = if let Some((field, expected)) = unknown_field(&error) {
            prune_unknown(&mut json, field, &expected)
        } else if let Some(field) = missing_field(&error) {
            pad_missing(&mut json, field, &mut padded)
        } else {
            false
        };
        if !repaired {
            return Err(error);
        }
        last = error;
    }
    Err(last)
}

/// `unknown field `x`, expected one of `a`, `b`` (serde's wording) or `... expected one of
/// ["a", "b"]` (fhirbolt's element reader): the field and the names expected.
fn unknown_field(error: &str) -> Option<(&str, Vec<&str>)> {
    let rest = error.strip_prefix("unknown field `")?;
    let (field, rest) = rest.split_once('`')?;
    let quote = if rest.contains('"') { '"' } else { '`' };
    let expected = rest.split(quote).skip(1).step_by(2).collect();
    Some((field, expected))
}

/// `missing field `x``: the field.
fn missing_field(error: &str) -> Option<&str> {
    error.strip_prefix("missing field `")?.split('`').next()
}

/// Remove `field` from every object where it is the unknown one: objects whose other members
/// are all among `expected` (the type the parser was reading). If no object fits so exactly
/// (it holds several unknown elements), from every object that has it and something expected.
fn prune_unknown(json: &mut Value, field: &str, expected: &[&str]) -> bool {
    let known = |k: &str| {
        k == "resourceType"
            || expected.contains(&k)
            || expected.contains(&k.trim_start_matches('_'))
    };
    let exact = |o: &serde_json::Map<String, Value>| o.keys().all(|k| k == field || known(k));
    let loose = |o: &serde_json::Map<String, Value>| o.len() == 1 || o.keys().any(|k| known(k));
    remove_where(json, field, &exact) > 0 || remove_where(json, field, &loose) > 0
}

/// Remove `field` from each object (at any depth, iteratively) that has it and passes `fits`;
/// returns how many were removed.
fn remove_where(
    json: &mut Value,
    field: &str,
    fits: &dyn Fn(&serde_json::Map<String, Value>) -> bool,
) -> usize {
    let mut removed = 0;
    let mut stack = vec![json];
    while let Some(v) = stack.pop() {
        match v {
            Value::Object(o) => {
                if o.contains_key(field) && fits(o) {
                    o.remove(field);
                    removed += 1;
                }
                stack.extend(o.values_mut());
            }
            Value::Array(a) => stack.extend(a.iter_mut()),
            _ => {}
        }
    }
    removed
}

/// Add a missing required element of the resource, empty: first as a primitive (`_field: {}`),
/// and if that is refused, as a complex type (`field: {}`). Only at the top level, where the
/// required elements of the resources read here are (status, intent, subject).
fn pad_missing(json: &mut Value, field: &str, padded: &mut Vec<String>) -> bool {
    let Some(top) = json.as_object_mut() else {
        return false;
    };
    let tries = padded.iter().filter(|f| f.as_str() == field).count();
    padded.push(field.to_owned());
    match tries {
        0 if !top.contains_key(field) => {
            top.insert(format!("_{field}"), Value::Object(serde_json::Map::new()));
            true
        }
        1 if !top.contains_key(field) => {
            top.remove(&format!("_{field}"));
            top.insert(field.to_owned(), Value::Object(serde_json::Map::new()));
            true
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fhirbolt::model::r4::Resource;
    use fhirbolt::model::r4::resources::Observation;
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

    /// Every resource of a type read directly, in the project's JSON files (the decision
    /// cases, regressions, examples), as written and with an added decimal, from text and from
    /// a value: where the direct route accepts one, it reads what the enum route reads; where
    /// it refuses one, the enum route's answer is given.
    #[test]
    fn the_direct_route_reads_what_the_enum_route_reads() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut files = Vec::new();
        let mut dirs = vec![root.join("tests"), root.join("examples")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for path in entries.map(|e| e.unwrap().path()) {
                if path.is_dir() && !path.ends_with("node_modules") {
                    dirs.push(path);
                } else if path.extension().is_some_and(|x| x == "json") {
                    files.push(path);
                }
            }
        }
        const KNOWN: [&str; 7] = [
            "Condition",
            "Procedure",
            "Observation",
            "Coverage",
            "ServiceRequest",
            "DeviceRequest",
            "MedicationRequest",
        ];
        let (mut same, mut refused, mut direct_read) = (0, 0, 0);
        for file in files {
            let Ok(json) = serde_json::from_str::<Value>(&std::fs::read_to_string(&file).unwrap())
            else {
                continue;
            };
            let mut stack = vec![&json];
            let mut resources = Vec::new();
            while let Some(v) = stack.pop() {
                match v {
                    Value::Object(o) => {
                        if let Some(t) = o.get("resourceType").and_then(Value::as_str)
                            && KNOWN.contains(&t)
                        {
                            resources.push((t.to_owned(), v.clone()));
                        }
                        stack.extend(o.values());
                    }
                    Value::Array(a) => stack.extend(a),
                    _ => {}
                }
            }
            for (rtype, resource) in resources {
                let mut with_decimal = resource.clone();
                with_decimal["extension"] =
                    json!([{"url": "http://example.org/d", "valueDecimal": 0.25}]);
                let text = resource.to_string();
                let mut read_as_written = false;
                let read_as_written_first = matches!(read_text_direct(&rtype, &text), Some(Ok(_)));
                for r in [resource, with_decimal] {
                    let text = r.to_string();
                    let by_enum = read_text::<Resource>(&text);
                    assert_eq!(
                        read_as(&rtype, &r),
                        read::<Resource>(r.clone()),
                        "{}: {text}",
                        file.display()
                    );
                    match &by_enum {
                        Ok(_) => same += 1,
                        Err(_) => refused += 1,
                    }
                    assert_eq!(
                        read_text_as(&rtype, &text),
                        by_enum,
                        "{}: {text}",
                        file.display()
                    );
                    // The direct route itself (numbers quoted), pretty-printed too: what it
                    // reads is what the enum route reads.
                    // A resource the direct route reads as written, it reads with the decimal
                    // added too.
                    for text in [text.clone(), serde_json::to_string_pretty(&r).unwrap()] {
                        match read_text_direct(&rtype, &text) {
                            Some(Ok(direct)) => {
                                direct_read += 1;
                                assert_eq!(Ok(direct), by_enum, "{}: {text}", file.display());
                            }
                            _ => assert!(
                                !read_as_written,
                                "the direct route refused {}: {text}",
                                file.display()
                            ),
                        }
                    }
                    read_as_written = read_as_written_first;
                }
            }
        }
        assert!(same > 100, "{same} read, {refused} refused");
        // The direct route reads most fixtures, compact and pretty-printed, with a decimal or
        // without (the rest hold an integer in a decimal, or another of fhirbolt's quirks).
        assert!(direct_read > same, "{direct_read} of {same} (x2)");
        // The direct route alone refuses the decimal: quoting it is what reads it.
        let decimal = json!({"resourceType": "Observation", "status": "final",
            "code": {"text": "x"}, "valueQuantity": {"value": 1.5}})
        .to_string();
        assert!(read_text::<Observation>(&decimal).is_err());
        assert!(matches!(
            read_text_direct("Observation", &decimal),
            Some(Ok(Resource::Observation(o))) if o.value.is_some()
        ));
    }

    /// Numbers where the model holds text, as the enum route reads them: written in every
    /// JSON way, in decimals and in strings, compact and over several lines. An integer
    /// element given a fraction is refused by both routes; more numbers than the direct route
    /// quotes go the enum route's way, with the same answer.
    #[test]
    fn numbers_in_text_elements_read_as_the_enum_route_reads_them() {
        let observation = |extra: &str| {
            format!(
                r#"{{"resourceType": "Observation", "status": "final", "code": {{"text": "x"}}{extra}}}"#
            )
        };
        let direct = [
            r#", "valueQuantity": {"value": 1.5}"#,
            r#", "valueQuantity": {"value": 2.50, "unit": "cm"}"#,
            r#", "valueQuantity": {"value": -0.25}"#,
            r#", "valueQuantity": {"value": 12345678901234567890123.000001}"#,
            r#", "valueQuantity": {"value": 1.0}"#,
            r#", "valueQuantity": {"value":
                 7.25 }"#,
            r#", "referenceRange": [{"low": {"value": 1.5}, "high": {"value": 3.25}}], "valueQuantity": {"value": 2.0}"#,
            r#", "identifier": [{"value": 2.5}]"#,
            r#", "category": [{"coding": [{"code": 1.25}]}]"#,
            r#", "valueString": 0.5"#,
        ];
        for extra in direct {
            for text in [
                observation(extra),
                observation(extra)
                    .replace(", ", ",\n  ")
                    .replace(": ", ":\r\n\t"),
            ] {
                let by_enum = read_text::<Resource>(&text);
                assert!(by_enum.is_ok(), "{text}");
                let Some(Ok(direct)) = read_text_direct("Observation", &text) else {
                    panic!("the direct route refused {text}");
                };
                assert_eq!(Ok(direct), by_enum, "{text}");
            }
        }
        let five = observation(
            r#", "valueQuantity": {"value": 1.5}, "referenceRange": [{"low": {"value": 1.5}, "high": {"value": 2.5}}, {"low": {"value": 3.5}, "high": {"value": 4.5}}]"#,
        );
        assert!(matches!(
            read_text_direct("Observation", &five),
            Some(Err(_))
        ));
        assert_eq!(
            read_text_as("Observation", &five),
            read_text::<Resource>(&five)
        );
        assert!(read_text_as("Observation", &five).is_ok());
        // Numbers the enum route reads its own way are left to it: an exponent (it writes `E`
        // as `e`), an integer (a decimal's, which it reads; a code's, which it refuses).
        for (extra, read) in [
            (r#", "valueQuantity": {"value": 1.5E+3}"#, true),
            (r#", "valueQuantity": {"value": 5}"#, true),
            (r#", "valueQuantity": {"value": -0}"#, true),
            (r#", "category": [{"coding": [{"code": 12}]}]"#, false),
        ] {
            let text = observation(extra);
            assert!(read_text_direct("Observation", &text).is_some_and(|r| r.is_err()));
            assert_eq!(
                read_text_as("Observation", &text),
                read_text::<Resource>(&text)
            );
            assert_eq!(read_text_as("Observation", &text).is_ok(), read, "{text}");
        }
        for refused in [
            r#", "valueInteger": 2.5"#,
            r#", "valueQuantity": {"value": 1.5.5}"#,
        ] {
            let text = observation(refused);
            assert!(read_text_as("Observation", &text).is_err(), "{text}");
            assert_eq!(
                read_text_as("Observation", &text),
                read_text::<Resource>(&text)
            );
        }
        // The place the parser names must hold a number in a value position.
        let text = r#"{"a": "x 2.5", "b": 2.5}"#;
        for (message, found) in [
            (
                "invalid type: number, expected a string at line 1 column 23",
                Some(20..23),
            ),
            (
                "invalid type: number, expected a string at line 1 column 20",
                Some(20..23),
            ),
            (
                "invalid type: number, expected a string at line 1 column 11",
                None,
            ),
            (
                "invalid type: number, expected a string at line 9 column 1",
                None,
            ),
            (
                "invalid type: integer `2`, expected a string at line 1 column 23",
                None,
            ),
            (
                "invalid type: string, expected a number at line 1 column 23",
                None,
            ),
            (
                "invalid type: number, expected i32 at line 1 column 23",
                None,
            ),
        ] {
            assert_eq!(number_wanted_as_text(message, text), found, "{message}");
        }
    }

    /// The shapes that panicked fhirbolt and made calls answer 500.
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

    /// fhirbolt 0.4's lax mode never returns on these; the repair must, and must read them.
    #[test]
    fn unknown_arrays_and_missing_elements_are_repaired_without_hanging() {
        use fhirbolt::model::r4::resources::ServiceRequest;
        use serde_json::json;
        let base = || {
            json!({"resourceType": "ServiceRequest", "status": "draft", "intent": "order",
                "subject": {"reference": "Patient/p"}, "quantityQuantity": {"value": 1.5},
                "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]}})
        };
        let mut cases = Vec::new();
        for (k, v) in [("foo", json!([1])), ("foo", json!([])), ("foo", json!("x"))] {
            let mut d = base();
            d[k] = v;
            cases.push(d);
        }
        let mut d = base();
        d["meta"] = json!({"profila": ["x"], "versionId": "1"});
        d["code"]["coding"][0]["bogus"] = json!([{"a": []}]);
        cases.push(d);
        let mut d = base();
        d.as_object_mut().unwrap().remove("status");
        d.as_object_mut().unwrap().remove("subject");
        d["note2"] = json!([]);
        cases.push(d);
        for doc in cases {
            let shown = doc.to_string();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let _ = tx.send(parse_resource::<ServiceRequest>(doc, true));
            });
            let parsed = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("did not return: {shown}"));
            let sr = parsed.unwrap_or_else(|e| panic!("{shown}: {e}"));
            let code = sr.code.as_ref().and_then(|c| c.coding.first());
            assert_eq!(
                code.and_then(|c| c.code.as_ref())
                    .and_then(|c| c.value.as_deref()),
                Some("77425"),
                "{shown}"
            );
            assert!(sr.quantity.is_some(), "{shown}");
        }
        // strict stays strict
        let mut d = base();
        d["foo"] = json!([]);
        assert!(parse_resource::<ServiceRequest>(d, false).is_err());
    }

    #[test]
    fn serde_error_texts_are_read() {
        assert_eq!(
            unknown_field("unknown field `foo`, expected one of `id`, `meta`"),
            Some(("foo", vec!["id", "meta"]))
        );
        assert_eq!(
            unknown_field("unknown field `foo`, expected `id`"),
            Some(("foo", vec!["id"]))
        );
        assert_eq!(
            unknown_field(r#"unknown field `foo`, expected one of ["id", "meta"]"#),
            Some(("foo", vec!["id", "meta"]))
        );
        assert_eq!(missing_field("missing field `status`"), Some("status"));
        assert_eq!(missing_field("invalid type: map"), None);
    }
}
