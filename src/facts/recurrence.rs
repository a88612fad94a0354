//! Whether the order's cancer is recurrent disease.
//!
//! Recurrent when a scope Condition (see [`Scope`](super::indication::Scope)) has a
//! `clinicalStatus` in the `condition-recurrence` value set (`recurrence`, and `relapse`:
//! active again after a remission). ICD-10-CM has no code for recurrence, so the clinical status
//! is the only structured signal; a recurrence recorded as a separate rectal cancer Condition is
//! in the scope too.

use crate::facts::RecurrenceFact;
use crate::facts::fhir::concept_label;
use crate::facts::indication::Scope;
use crate::terminology::{Terminology, ValueSetId};

pub(crate) fn find(scope: &Scope<'_>, t: &Terminology) -> RecurrenceFact {
    let evidence: Vec<_> = scope
        .conditions
        .iter()
        .filter_map(|c| {
            let status = c.clinical_status.as_deref()?;
            let coding = t.matching_coding(ValueSetId::ConditionRecurrence, status)?;
            let label = concept_label(status, Some(coding));
            // The code, not the system URI: `clinicalStatus` has one code system.
            let code = coding
                .code
                .as_ref()
                .and_then(|c| c.value.as_deref())
                .map(|code| format!("Condition.clinicalStatus {code}"));
            Some(
                scope
                    .condition_evidence(c, format!("{} (clinical status)", label.words))
                    .with_code(code),
            )
        })
        .collect();
    RecurrenceFact {
        recurrent: !evidence.is_empty(),
        evidence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::{condition, record, terminology};
    use crate::record::PatientRecord;
    use serde_json::json;

    fn cancer(id: &str, code: &str, clinical: &str) -> fhirbolt::model::r4::resources::Condition {
        condition(
            json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "clinicalStatus": {"coding": [{"system":
                "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": clinical}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": code}]}}),
        )
    }

    fn recurrence(rec: &PatientRecord) -> RecurrenceFact {
        let scope = crate::facts::test_support::scope_without_order(rec);
        find(&scope, terminology())
    }

    #[test]
    fn recurrence_status_is_recurrent() {
        let r = recurrence(&record(
            vec![cancer("rc", "C20", "recurrence")],
            vec![],
            vec![],
        ));
        assert!(r.recurrent);
        assert_eq!(r.evidence[0].reference, "Condition/rc");
        assert!(r.evidence[0].detail.contains("recurrence"));
    }

    #[test]
    fn active_is_not_recurrent() {
        let r = recurrence(&record(vec![cancer("rc", "C20", "active")], vec![], vec![]));
        assert!(!r.recurrent);
        assert!(r.evidence.is_empty());
    }

    #[test]
    fn recurrence_of_another_cancer_does_not_count() {
        let r = recurrence(&record(
            vec![
                cancer("rc", "C20", "active"),
                cancer("bc", "C50.911", "recurrence"),
            ],
            vec![],
            vec![],
        ));
        assert!(!r.recurrent);
    }

    #[test]
    fn recurrence_recorded_on_a_second_rectal_entry_counts() {
        let r = recurrence(&record(
            vec![
                cancer("primary", "C20", "inactive"),
                cancer("again", "C20", "recurrence"),
            ],
            vec![],
            vec![],
        ));
        assert!(r.recurrent);
        assert_eq!(r.evidence[0].reference, "Condition/again");
    }
}
