//! The Coverage the determination is about.
//!
//! Candidates: Coverages whose status is in `coverage-active-status` and whose `beneficiary`
//! references the hook's patient (`Patient/<id>` or a URL ending in it). Of several, the lowest
//! `order` (the plan the patient asked to be billed first) wins; a Coverage without `order`
//! comes after those with one, and ties keep record order. A Coverage without an id cannot be
//! referenced from the CRD coverage-information extension, so it is skipped and noted as a
//! record issue.

use crate::facts::CoverageRef;
use crate::facts::fhir::{reference_id, text};
use crate::record::{PatientRecord, RecordIssue};
use crate::resource_ref::ResourceRef;
use crate::terminology::{Terminology, ValueSetId};

pub(crate) fn find(
    record: &PatientRecord,
    t: &Terminology,
    issues: &mut Vec<RecordIssue>,
) -> Option<CoverageRef> {
    let mut best: Option<(u32, CoverageRef)> = None;
    for c in &record.coverages {
        let active = text(Some(&c.status))
            .is_some_and(|s| t.contains_code(ValueSetId::CoverageActiveStatus, s));
        let for_patient =
            reference_id(&c.beneficiary, "Patient") == Some(record.patient_id.as_str());
        if !active || !for_patient {
            continue;
        }
        let Some(id) = text(c.id.as_ref()) else {
            issues.push(RecordIssue {
                source: "coverage".to_owned(),
                resource: None,
                problem: "an active Coverage of the patient has no id and cannot be referenced"
                    .to_owned(),
            });
            continue;
        };
        let order = c.order.as_ref().and_then(|o| o.value).unwrap_or(u32::MAX);
        if best.as_ref().is_none_or(|(b, _)| order < *b) {
            let payor = c
                .payor
                .first()
                .and_then(|p| text(p.display.as_ref()))
                .map(str::to_owned);
            best = Some((
                order,
                CoverageRef {
                    reference: ResourceRef::new("Coverage", Some(id)).to_string(),
                    payor,
                },
            ));
        }
    }
    best.map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::{coverage, record, terminology};
    use fhirbolt::model::r4::resources::Coverage;
    use serde_json::json;

    fn cov(
        id: Option<&str>,
        status: &str,
        beneficiary: &str,
        order: Option<u32>,
        payor: &str,
    ) -> Coverage {
        let mut v = json!({"resourceType": "Coverage", "status": status,
            "beneficiary": {"reference": beneficiary},
            "payor": [{"reference": "Organization/o", "display": payor}]});
        if let Some(id) = id {
            v["id"] = json!(id);
        }
        if let Some(o) = order {
            v["order"] = json!(o);
        }
        coverage(v)
    }

    fn pick(coverages: Vec<Coverage>) -> (Option<CoverageRef>, Vec<RecordIssue>) {
        let mut rec = record(vec![], vec![], vec![]);
        rec.coverages = coverages;
        let mut issues = Vec::new();
        (find(&rec, terminology(), &mut issues), issues)
    }

    #[test]
    fn lowest_order_of_the_active_coverages_of_the_patient() {
        let (c, issues) = pick(vec![
            cov(
                Some("cancelled"),
                "cancelled",
                "Patient/p1",
                Some(1),
                "Old plan",
            ),
            cov(
                Some("other"),
                "active",
                "Patient/p2",
                Some(1),
                "Spouse plan",
            ),
            cov(Some("second"), "active", "Patient/p1", Some(2), "Secondary"),
            cov(Some("unordered"), "active", "Patient/p1", None, "Unknown"),
            cov(
                Some("first"),
                "active",
                "https://ehr.example/fhir/Patient/p1",
                Some(1),
                "BCBSAZ",
            ),
        ]);
        let c = c.expect("a coverage");
        assert_eq!(c.reference, "Coverage/first");
        assert_eq!(c.payor.as_deref(), Some("BCBSAZ"));
        assert!(issues.is_empty());
    }

    #[test]
    fn without_order_the_first_wins_and_none_when_nothing_active() {
        let (c, _) = pick(vec![
            cov(Some("a"), "active", "Patient/p1", None, "A"),
            cov(Some("b"), "active", "Patient/p1", None, "B"),
        ]);
        assert_eq!(c.map(|c| c.reference).as_deref(), Some("Coverage/a"));
        let (c, _) = pick(vec![cov(Some("d"), "draft", "Patient/p1", Some(1), "D")]);
        assert!(c.is_none());
        assert!(pick(vec![]).0.is_none());
    }

    #[test]
    fn coverage_without_id_is_an_issue() {
        let (c, issues) = pick(vec![cov(None, "active", "Patient/p1", Some(1), "X")]);
        assert!(c.is_none());
        assert_eq!(issues.len(), 1);
        assert_eq!(issues[0].source, "coverage");
    }
}
