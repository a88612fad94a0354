//! Reading a response's Da Vinci CRD coverage-information the way an EHR would: one reader for
//! every test, so a change of shape is fixed once. The URL is spelled here as the CRD IG
//! publishes it, not taken from the service, so a wrong constant in the service fails the tests.

use std::collections::BTreeMap;

use serde_json::Value;

/// `http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information` (CRD 2.x).
pub const COVERAGE_INFORMATION: &str =
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";

/// `Type/id` of a resource (`?` for a missing part).
pub fn type_id(resource: &Value) -> String {
    format!(
        "{}/{}",
        resource["resourceType"].as_str().unwrap_or("?"),
        resource["id"].as_str().unwrap_or("?")
    )
}

/// Every coverage-information extension on the resources of the response's system actions,
/// with the `Type/id` of the order it is on, in response order.
pub fn coverage_information(response: &Value) -> Vec<(String, &Value)> {
    let mut out = Vec::new();
    for action in response["systemActions"].as_array().into_iter().flatten() {
        let resource = &action["resource"];
        for ext in resource["extension"].as_array().into_iter().flatten() {
            if ext["url"] == COVERAGE_INFORMATION {
                out.push((type_id(resource), ext));
            }
        }
    }
    out
}

/// The `covered` code of one coverage-information extension, `(none)` when it has none.
pub fn covered(extension: &Value) -> String {
    extension["extension"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|part| part["url"] == "covered")
        .and_then(|part| part["valueCode"].as_str())
        .unwrap_or("(none)")
        .to_owned()
}

/// The `covered` code of every coverage-information extension, in response order.
pub fn covered_codes(response: &Value) -> Vec<String> {
    coverage_information(response)
        .into_iter()
        .map(|(_, ext)| covered(ext))
        .collect()
}

/// `Type/id` of each order -> the `covered` codes of its coverage-information extensions.
pub fn covered_by_order(response: &Value) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (order, ext) in coverage_information(response) {
        out.entry(order).or_default().push(covered(ext));
    }
    out
}
