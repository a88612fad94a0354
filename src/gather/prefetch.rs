//! Building the [`PatientRecord`] from prefetched (or fetched) FHIR JSON.
//!
//! The same code reads what the EHR prefetched and what the service fetched itself, so both
//! paths give the same record. Bundles are taken apart with serde_json; each resource is
//! parsed on its own with fhirbolt (strict R4), so a resource that does not parse is skipped
//! and noted, and the rest of the record is kept. Resources about another patient are left
//! out: they must never influence this patient's answer.

use std::collections::{BTreeMap, HashSet};

use fhirbolt::model::r4::Resource;
use serde_json::{Map, Value};

use super::{PatientRecord, RecordIssue};
use crate::limits::{LimitExceeded, Limits};

/// Declared prefetch keys the request did not send (a key sent as `null` counts as sent: the
/// client looked and found nothing).
pub fn missing_keys(
    declared: &BTreeMap<String, String>,
    prefetch: &Map<String, Value>,
) -> Vec<String> {
    declared
        .keys()
        .filter(|k| !prefetch.contains_key(k.as_str()))
        .cloned()
        .collect()
}

/// Accumulates resources into a record, parsing, filtering and de-duplicating them.
#[derive(Debug)]
pub struct RecordBuilder {
    record: PatientRecord,
    seen: HashSet<(String, String)>,
    limits: Limits,
    /// Resources kept so far (bounded by `limits.max_record_resources`).
    kept: usize,
    /// Set once the record passed a limit: nothing more is read.
    over_limit: bool,
}

impl RecordBuilder {
    /// A builder with the default [`Limits`].
    pub fn new(patient_id: &str) -> Self {
        Self::with_limits(patient_id, Limits::default())
    }

    /// A builder that stops reading, and marks the record unavailable (so the outcome is
    /// `indeterminate`), once a Bundle has more than `limits.max_bundle_entries` entries or
    /// the record more than `limits.max_record_resources` resources.
    pub fn with_limits(patient_id: &str, limits: Limits) -> Self {
        Self {
            record: PatientRecord {
                patient_id: patient_id.to_owned(),
                ..PatientRecord::default()
            },
            seen: HashSet::new(),
            limits,
            kept: 0,
            over_limit: false,
        }
    }

    /// Give up on the record: it is too large to assess within the limits.
    fn too_large(&mut self, source: &str, limit: LimitExceeded) {
        if !self.over_limit {
            self.over_limit = true;
            tracing::warn!(
                source,
                setting = limit.setting,
                "patient record over a limit; not assessed"
            );
            self.unavailable(format!(
                "{source}: the record is too large to assess: {limit}"
            ));
        }
    }

    /// Add a prefetch value or a FHIR response body: a single resource, a Bundle (its entries
    /// are added one by one), or `null` (nothing).
    pub fn add_value(&mut self, source: &str, value: Value) {
        if self.over_limit {
            return;
        }
        match value {
            Value::Null => {}
            Value::Object(mut obj) => {
                if obj.get("resourceType").and_then(Value::as_str) == Some("Bundle") {
                    let entries = match obj.remove("entry") {
                        Some(Value::Array(a)) => a,
                        _ => Vec::new(),
                    };
                    if let Err(limit) = self.limits.check_entries(entries.len()) {
                        self.too_large(source, limit);
                        return;
                    }
                    for (i, entry) in entries.into_iter().enumerate() {
                        match entry {
                            Value::Object(mut e) => match e.remove("resource") {
                                Some(r) => self.add_resource(source, r),
                                None => self.issue(
                                    source,
                                    None,
                                    format!("Bundle entry {i} has no resource"),
                                ),
                            },
                            _ => self.issue(
                                source,
                                None,
                                format!("Bundle entry {i} is not an object"),
                            ),
                        }
                    }
                } else {
                    self.add_resource(source, Value::Object(obj));
                }
            }
            _ => self.issue(source, None, "is not a FHIR resource or Bundle".to_owned()),
        }
    }

    /// Note a problem with a whole source (e.g. it could not be fetched).
    pub fn issue(&mut self, source: &str, resource: Option<String>, problem: String) {
        self.record.issues.push(RecordIssue {
            source: source.to_owned(),
            resource,
            problem,
        });
    }

    /// Mark the record as not fully available (the decision will not guess).
    pub fn unavailable(&mut self, what: String) {
        match &mut self.record.unavailable {
            Some(existing) => {
                existing.push_str("; ");
                existing.push_str(&what);
            }
            None => self.record.unavailable = Some(what),
        }
    }

    fn add_resource(&mut self, source: &str, resource: Value) {
        let rtype = resource
            .get("resourceType")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned();
        let id = resource
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let reference = format!("{}/{}", rtype, id.as_deref().unwrap_or("(no id)"));
        // Only the four kinds the facts read; the rest (Patient, OperationOutcome search
        // notes ...) is not needed and not parsed.
        if !matches!(
            rtype.as_str(),
            "Condition" | "Procedure" | "Observation" | "Coverage"
        ) {
            return;
        }
        if !self.is_about_patient(&rtype, &resource) {
            return;
        }
        if let Some(id) = &id
            && !self.seen.insert((rtype.clone(), id.clone()))
        {
            return; // the same resource from two keys or pages
        }
        if self.over_limit {
            return;
        }
        if self.kept >= self.limits.max_record_resources {
            let limit = LimitExceeded {
                setting: "limits.max_record_resources",
                limit: self.limits.max_record_resources,
                what: format!("more than {} resources", self.limits.max_record_resources),
            };
            self.too_large(source, limit);
            return;
        }
        self.kept += 1;
        // fhirbolt recurses once per nested resource with large frames: a resource nesting
        // resources deeper than FHIR allows is skipped before it is parsed.
        if let Err(e) = crate::limits::check_resource_nesting(&resource) {
            self.issue(source, Some(reference), e.to_string());
            return;
        }
        // Parse through the `Resource` enum, not the concrete type: with serde_json's
        // `arbitrary_precision` (which fhirbolt switches on), fhirbolt 0.4 rejects every JSON
        // decimal when asked for a concrete resource type, but reads it through the enum.
        let parsed = crate::fhir_json::read::<Resource>(resource).map(|r| match r {
            Resource::Condition(c) => self.record.conditions.push(*c),
            Resource::Procedure(p) => self.record.procedures.push(*p),
            Resource::Observation(o) => self.record.observations.push(*o),
            Resource::Coverage(c) => self.record.coverages.push(*c),
            _ => {} // unreachable: the resourceType was checked above
        });
        if let Err(e) = parsed {
            tracing::warn!(source, resource = %reference, "skipped a resource that does not parse as FHIR R4");
            self.issue(
                source,
                Some(reference),
                format!(
                    "does not parse as FHIR R4 {rtype}: {}",
                    redact(&e.to_string())
                ),
            );
        }
    }

    /// Whether the resource's subject (or Coverage beneficiary) is this patient. A resource with
    /// no such reference is kept: the query that returned it was already scoped to the patient.
    fn is_about_patient(&self, rtype: &str, resource: &Value) -> bool {
        let field = if rtype == "Coverage" {
            "beneficiary"
        } else {
            "subject"
        };
        let Some(reference) = resource
            .get(field)
            .and_then(|r| r.get("reference"))
            .and_then(Value::as_str)
        else {
            return true;
        };
        references_patient(reference, &self.record.patient_id)
    }

    pub fn finish(self) -> PatientRecord {
        self.record
    }
}

/// `Patient/p1`, `https://ehr/fhir/Patient/p1` or `Patient/p1/_history/3` refer to patient `p1`.
pub fn references_patient(reference: &str, patient_id: &str) -> bool {
    let without_history = match reference.find("/_history/") {
        Some(i) => &reference[..i],
        None => reference,
    };
    without_history
        .strip_suffix(patient_id)
        .is_some_and(|head| head == "Patient/" || head.ends_with("/Patient/"))
}

/// fhirbolt errors may quote a value; keep only the part before any quoted text so no clinical
/// content reaches logs or cards.
fn redact(message: &str) -> String {
    let cut = message.find(['"', '\'']).unwrap_or(message.len());
    let m = message[..cut].trim_end_matches([' ', ':', ',']);
    if m.is_empty() {
        "invalid content".to_owned()
    } else {
        m.to_owned()
    }
}

/// Build the record from the request's prefetch alone.
pub fn record_from_prefetch(patient_id: &str, prefetch: &Map<String, Value>) -> PatientRecord {
    let mut b = RecordBuilder::new(patient_id);
    for (key, value) in prefetch {
        b.add_value(key, value.clone());
    }
    b.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn searchset(resources: Vec<Value>) -> Value {
        let entries: Vec<Value> = resources
            .into_iter()
            .map(|r| {
                let url = format!(
                    "https://ehr.example.org/fhir/{}/{}",
                    r["resourceType"].as_str().unwrap(),
                    r["id"].as_str().unwrap()
                );
                json!({"fullUrl": url, "resource": r, "search": {"mode": "match"}})
            })
            .collect();
        json!({"resourceType": "Bundle", "type": "searchset", "total": entries.len(), "entry": entries})
    }

    fn condition(id: &str, patient: &str) -> Value {
        json!({"resourceType": "Condition", "id": id, "subject": {"reference": format!("Patient/{patient}")},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}})
    }

    #[test]
    fn search_after_resource_parses_and_bad_entries_are_skipped() {
        let mut prefetch = Map::new();
        let bad = json!({"resourceType": "Observation", "id": "o-bad", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}, "notAField": "SECRET"});
        let good = json!({"resourceType": "Observation", "id": "o1", "status": "final",
            "code": {"text": "x"}, "subject": {"reference": "Patient/p1"}});
        prefetch.insert("observations".into(), searchset(vec![bad, good]));
        prefetch.insert("conditions".into(), searchset(vec![condition("c1", "p1")]));
        prefetch.insert("patient".into(), Value::Null);
        let r = record_from_prefetch("p1", &prefetch);
        assert_eq!(r.observations.len(), 1);
        assert_eq!(r.conditions.len(), 1);
        assert_eq!(r.issues.len(), 1);
        assert_eq!(r.issues[0].resource.as_deref(), Some("Observation/o-bad"));
        assert!(
            !r.issues[0].problem.contains("SECRET"),
            "{}",
            r.issues[0].problem
        );
    }

    #[test]
    fn decimals_survive_parsing() {
        let mut prefetch = Map::new();
        let obs: Value = serde_json::from_str(
            r#"{"resourceType": "Observation", "id": "d1", "status": "final",
                "code": {"coding": [{"system": "http://loinc.org", "code": "33737-8"}]},
                "subject": {"reference": "Patient/p1"},
                "valueQuantity": {"value": 1.0, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}}"#,
        )
        .unwrap();
        prefetch.insert("observations".into(), searchset(vec![obs]));
        let r = record_from_prefetch("p1", &prefetch);
        assert!(r.issues.is_empty(), "{:?}", r.issues);
        assert_eq!(r.observations.len(), 1);
    }

    #[test]
    fn other_patients_and_duplicates_are_left_out() {
        let mut prefetch = Map::new();
        prefetch.insert(
            "conditions".into(),
            searchset(vec![
                condition("c1", "p1"),
                condition("c2", "p2"),
                condition("c1", "p1"),
            ]),
        );
        let r = record_from_prefetch("p1", &prefetch);
        assert_eq!(r.conditions.len(), 1);
    }

    #[test]
    fn patient_references() {
        assert!(references_patient("Patient/p1", "p1"));
        assert!(references_patient("https://x/fhir/Patient/p1", "p1"));
        assert!(references_patient("Patient/p1/_history/2", "p1"));
        assert!(!references_patient("Patient/xp1", "p1"));
        assert!(!references_patient("Group/p1", "p1"));
    }

    #[test]
    fn missing_keys_ignore_null_values() {
        let mut declared = BTreeMap::new();
        declared.insert("a".to_owned(), "A".to_owned());
        declared.insert("b".to_owned(), "B".to_owned());
        let mut prefetch = Map::new();
        prefetch.insert("a".into(), Value::Null);
        assert_eq!(missing_keys(&declared, &prefetch), vec!["b".to_owned()]);
    }

    #[test]
    fn limits_make_the_record_unavailable_instead_of_partial() {
        let limits = Limits {
            max_bundle_entries: 2,
            max_record_resources: 3,
            ..Limits::default()
        };
        let conditions = |ids: &[&str]| searchset(ids.iter().map(|i| condition(i, "p1")).collect());
        // a Bundle over the entry limit is not read at all
        let mut b = RecordBuilder::with_limits("p1", limits);
        b.add_value("conditions", conditions(&["a", "b", "c"]));
        let r = b.finish();
        assert!(r.conditions.is_empty());
        let why = r.unavailable.unwrap();
        assert!(
            why.starts_with("conditions: the record is too large"),
            "{why}"
        );
        assert!(why.contains("limits.max_bundle_entries = 2"), "{why}");
        // resources over the record limit, over several Bundles: said once
        let mut b = RecordBuilder::with_limits("p1", limits);
        b.add_value("conditions", conditions(&["a", "b"]));
        b.add_value("more", conditions(&["c", "d"]));
        b.add_value("again", conditions(&["e"]));
        let r = b.finish();
        assert_eq!(r.conditions.len(), 3);
        let why = r.unavailable.unwrap();
        assert!(
            why.contains("limits.max_record_resources = 3") && !why.contains(";"),
            "{why}"
        );
        // duplicates do not count
        let mut b = RecordBuilder::with_limits("p1", limits);
        b.add_value("conditions", conditions(&["a", "b"]));
        b.add_value("again", conditions(&["a", "b"]));
        assert!(b.finish().unavailable.is_none());
    }

    #[test]
    fn resources_nesting_resources_are_skipped_before_parsing() {
        let mut nested = condition("inner", "p1");
        for i in 0..6 {
            nested = json!({"resourceType": "Condition", "id": format!("n{i}"),
                "subject": {"reference": "Patient/p1"}, "contained": [nested]});
        }
        let mut prefetch = Map::new();
        prefetch.insert(
            "conditions".into(),
            searchset(vec![nested, condition("ok", "p1")]),
        );
        let r = record_from_prefetch("p1", &prefetch);
        assert_eq!(r.conditions.len(), 1);
        assert_eq!(r.issues[0].resource.as_deref(), Some("Condition/n5"));
        assert!(
            r.issues[0].problem.contains("nested"),
            "{}",
            r.issues[0].problem
        );
    }
}
