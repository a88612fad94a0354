//! The surgical margin status of the order's cancer, from its most recent assessment.
//!
//! Assessments are read from:
//! - the `outcome` of a scope Procedure (a rectal resection, a procedure on the rectum, or one
//!   done for a scope Condition) coded in `margin-positive` / `margin-close` / `margin-clear`;
//! - Observations (or Observation components) coded in `margin-finding-observation` with such a
//!   value;
//! - Observations (or components) coded in `margin-distance-observation` with a `valueQuantity`:
//!   the distance is converted to mm (UCUM mm, cm, um, m; see
//!   [`length_unit_to_mm_exponent`]) by moving the decimal point, so `0.15 cm` is exactly
//!   `1.5 mm`, and compared with the configured thresholds: at most `positive_max_mm` positive,
//!   at most `close_max_mm` close, else clear.
//!
//! A quantity with a comparator only counts when it settles the status: `< x` / `<= x` says the
//! tumour is at least as near as `x`, so it gives `x`'s status when that is positive or close
//! (positive vs. close may then be understated, both meet the policy); `> x` / `>= x` counts
//! only when every distance it allows is clear. Negative or unreadable distances are ignored.
//!
//! Observations must belong to the cancer: their `focus`, `partOf` or `derivedFrom` points at a
//! scope Condition or Procedure, or at nothing in the record and no other active cancer could
//! own them (see [`Scope`](super::indication::Scope)). Entered-in-error / cancelled
//! Observations and entered-in-error / not-done Procedures are ignored.
//!
//! The most recent assessment wins (Observation effective[x] / issued, Procedure performed[x];
//! partial dates compared by [`DateKey`]); undated assessments are older than dated ones. On an
//! equal date an amended / corrected report supersedes a final one, and a final one a
//! preliminary one; then the worse status wins (positive over close over clear), since two
//! findings of the same day and standing are parts of one pathology report and the margin is as
//! bad as its worst part; all assessments of that date with that status are returned as
//! evidence.
//!
//! A finding tied to nothing while other current cancers exist is not used; when it is newer
//! than every finding that is, the margin status is not known (a later report may have
//! overturned the one used) and the fact carries a note saying how to link it.

use fhirbolt::model::r4::resources::{Observation, ObservationComponentValue, ObservationValue};
use fhirbolt::model::r4::types::{CodeableConcept, Quantity};

use std::cmp::Ordering;

use crate::facts::dates::{ClinicalTime, compare_optional, is_later};
use crate::facts::fhir::{
    Label, TimeSource, concept_label, observation_evidence, observation_issued, observation_time,
    observation_usable, procedure_evidence, procedure_time, text, time_of,
};
use crate::facts::indication::{Link, Scope};
use crate::facts::{Evidence, MarginFact, MarginStatus, MarginThresholds};
use crate::record::PatientRecord;
use crate::terminology::{Terminology, ValueSetId, length_unit_to_mm_exponent};

/// Higher is worse.
fn severity(status: MarginStatus) -> u8 {
    match status {
        MarginStatus::Positive => 3,
        MarginStatus::Close => 2,
        MarginStatus::Clear => 1,
        MarginStatus::NotDocumented => 0,
    }
}

fn word(status: MarginStatus) -> &'static str {
    match status {
        MarginStatus::Positive => "positive",
        MarginStatus::Close => "close",
        MarginStatus::Clear => "clear",
        MarginStatus::NotDocumented => "not documented",
    }
}

struct Assessment {
    status: MarginStatus,
    /// When it was found (see [`crate::facts::fhir::observation_time`]).
    time: Option<ClinicalTime>,
    /// How much its time says: 2 a clinical or report time, 1 only the server's
    /// `meta.lastUpdated`, 0 none.
    time_class: u8,
    /// When its report was released (`Observation.issued`), to order two reports whose
    /// clinical times cannot be.
    issued: Option<ClinicalTime>,
    /// [`report_rank`] of the report it comes from.
    rank: u8,
    evidence: Evidence,
}

/// The status a coded value means, checking the worst first.
fn coded_status(cc: &CodeableConcept, t: &Terminology) -> Option<(MarginStatus, Label)> {
    [
        (ValueSetId::MarginPositive, MarginStatus::Positive),
        (ValueSetId::MarginClose, MarginStatus::Close),
        (ValueSetId::MarginClear, MarginStatus::Clear),
    ]
    .into_iter()
    .find_map(|(vs, status)| {
        t.matching_coding(vs, cc)
            .map(|c| (status, concept_label(cc, Some(c))))
    })
}

/// A FHIR decimal times 10^`exponent`, by moving the decimal point (no binary rounding of the
/// scale factor).
fn scaled_decimal(value: &str, exponent: i32) -> Option<f64> {
    let v = value.trim();
    let (mantissa, exp) = match v.find(['e', 'E']) {
        Some(i) => (&v[..i], v[i + 1..].parse::<i32>().ok()?),
        None => (v, 0),
    };
    let ok = !mantissa.is_empty()
        && mantissa
            .trim_start_matches(['-', '+'])
            .bytes()
            .all(|b| b.is_ascii_digit() || b == b'.');
    if !ok {
        return None;
    }
    let scaled = format!("{mantissa}e{}", exp.checked_add(exponent)?);
    scaled.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn classify_mm(mm: f64, th: &MarginThresholds) -> MarginStatus {
    if mm <= th.positive_max_mm {
        MarginStatus::Positive
    } else if mm <= th.close_max_mm {
        MarginStatus::Close
    } else {
        MarginStatus::Clear
    }
}

/// The status a distance-to-closest-margin quantity means, with a description.
fn distance_status(q: &Quantity, th: &MarginThresholds) -> Option<(MarginStatus, Label)> {
    let raw = text(q.value.as_ref())?;
    let exponent = length_unit_to_mm_exponent(
        text(q.system.as_ref()),
        text(q.code.as_ref()),
        text(q.unit.as_ref()),
    )?;
    let mm = scaled_decimal(raw, exponent).filter(|mm| *mm >= 0.0)?;
    let at_value = classify_mm(mm, th);
    let comparator = text(q.comparator.as_ref());
    let status = match comparator {
        None => at_value,
        // The real distance is at most `mm`: at least as bad as `mm`'s status.
        Some("<") | Some("<=") => match at_value {
            MarginStatus::Clear => return None,
            s => s,
        },
        // The real distance is over `mm`: only a clear status is certain.
        Some(">") if mm >= th.close_max_mm => MarginStatus::Clear,
        Some(">=") if mm > th.close_max_mm => MarginStatus::Clear,
        _ => return None,
    };
    let unit = text(q.unit.as_ref())
        .or(text(q.code.as_ref()))
        .unwrap_or("");
    let shown = format!("{}{raw} {unit}", comparator.unwrap_or(""));
    let converted = if exponent == 0 {
        String::new()
    } else {
        format!(" = {mm} mm")
    };
    Some((
        status,
        Label {
            words: format!(
                "{}{converted} to the closest margin: {} (positive <= {} mm, close <= {} mm)",
                shown.trim_end(),
                word(status),
                th.positive_max_mm,
                th.close_max_mm
            ),
            code: None,
        },
    ))
}

/// The (code, value) pairs of an Observation: itself and its components.
enum Value<'a> {
    Concept(&'a CodeableConcept),
    Quantity(&'a Quantity),
    Other,
}

fn pairs(o: &Observation) -> Vec<(&CodeableConcept, Value<'_>)> {
    let top = match &o.value {
        Some(ObservationValue::CodeableConcept(cc)) => Value::Concept(cc),
        Some(ObservationValue::Quantity(q)) => Value::Quantity(q),
        _ => Value::Other,
    };
    let mut out = vec![(o.code.as_ref(), top)];
    for c in &o.component {
        let v = match &c.value {
            Some(ObservationComponentValue::CodeableConcept(cc)) => Value::Concept(cc),
            Some(ObservationComponentValue::Quantity(q)) => Value::Quantity(q),
            _ => Value::Other,
        };
        out.push((c.code.as_ref(), v));
    }
    out
}

/// How far a report's status says it is final: an amended or corrected report supersedes the
/// final one it replaces, which supersedes a preliminary one, when their dates cannot order
/// them. Procedures (their outcome is the surgeon's final word) rank as final.
fn report_rank(status: Option<&str>) -> u8 {
    match status {
        Some("amended") | Some("corrected") => 3,
        Some("final") | None => 2,
        _ => 1,
    }
}

/// The margin fact for the scope.
pub(crate) fn find(
    scope: &Scope<'_>,
    record: &PatientRecord,
    t: &Terminology,
    th: &MarginThresholds,
) -> MarginFact {
    let mut assessments = Vec::new();
    // Findings tied to nothing while other current cancers could own them.
    let mut ambiguous = Vec::new();

    for p in &scope.procedures {
        if let Some(outcome) = p.outcome.as_deref()
            && let Some((status, label)) = coded_status(outcome, t)
        {
            assessments.push(Assessment {
                status,
                time: time_of(procedure_time(p)),
                time_class: time_class(procedure_time(p)),
                issued: None,
                rank: report_rank(None),
                evidence: procedure_evidence(p, format!("{} (operative outcome)", label.words))
                    .with_code(label.code),
            });
        }
    }

    for o in record
        .observations
        .iter()
        .filter(|o| observation_usable(o, t))
    {
        let mut found = Vec::new();
        for (code, value) in pairs(o) {
            let result = match value {
                Value::Concept(cc) if t.concept_in(ValueSetId::MarginFindingObservation, code) => {
                    coded_status(cc, t)
                }
                Value::Quantity(q) if t.concept_in(ValueSetId::MarginDistanceObservation, code) => {
                    distance_status(q, th).map(|(status, label)| {
                        let matched =
                            t.matching_coding(ValueSetId::MarginDistanceObservation, code);
                        let code = concept_label(code, matched).code;
                        (status, Label { code, ..label })
                    })
                }
                _ => None,
            };
            found.extend(result);
        }
        // Several margin findings in one Observation: the worst is what it says.
        let Some((status, label)) = found.into_iter().max_by_key(|(s, _)| severity(*s)) else {
            continue;
        };
        let link = scope.link(o.focus.iter().chain(&o.part_of).chain(&o.derived_from));
        let assessment = Assessment {
            status,
            time: time_of(observation_time(o)),
            time_class: time_class(observation_time(o)),
            issued: observation_issued(o),
            rank: report_rank(text(Some(&o.status))),
            evidence: observation_evidence(o, label.words)
                .from_source("pathology")
                .with_code(label.code),
        };
        if scope.accepts_link(link) {
            assessments.push(assessment);
        } else if link == Link::Unlinked {
            ambiguous.push(assessment);
        }
    }

    let Some(chosen) = latest(&assessments) else {
        // Nothing usable; an unattributable finding is then worth a note.
        let notes = ambiguous.iter().map(|a| unlinked(scope, a)).collect();
        return MarginFact {
            status: MarginStatus::NotDocumented,
            evidence: Vec::new(),
            notes,
        };
    };
    let winner = &assessments[chosen.winners[0]];
    // An unattributable finding not known to be older than the one used may be this cancer's
    // latest word: the margin is then not known (never "covered" on a finding a later report
    // may have overturned).
    let newer: Vec<String> = ambiguous
        .iter()
        .filter(|a| !later(winner, a))
        .map(|a| unlinked(scope, a))
        .collect();
    if !newer.is_empty() {
        return MarginFact {
            status: MarginStatus::NotDocumented,
            evidence: Vec::new(),
            notes: newer,
        };
    }
    let status = winner.status;
    let mut evidence: Vec<Evidence> = Vec::new();
    for &i in &chosen.winners {
        let mut e = assessments[i].evidence.clone();
        if chosen.time_decided
            && let Some(t) = &assessments[i].time
        {
            e.date = Some(t.local_date_time());
        }
        if !evidence.contains(&e) {
            evidence.push(e);
        }
    }
    MarginFact {
        status,
        evidence,
        notes: chosen.note.into_iter().collect(),
    }
}

fn unlinked(scope: &Scope<'_>, a: &Assessment) -> String {
    scope.unlinked_note(
        &format!("{} ({})", a.evidence.reference, a.evidence.detail),
        "focus (or partOf, to the resection)",
    )
}

/// See [`Assessment::time_class`].
fn time_class(time: Option<(&str, TimeSource)>) -> u8 {
    match time {
        Some((t, source)) if ClinicalTime::parse(t).is_some() => match source {
            TimeSource::LastUpdated => 1,
            TimeSource::Clinical | TimeSource::Issued => 2,
        },
        _ => 0,
    }
}

/// Whether `a` is known to be later than `b`. A time the server gave the resource when it
/// was stored (`meta.lastUpdated`) orders findings that have nothing better, but never outranks
/// a clinical time: a pathology report loaded into a new server yesterday is not yesterday's
/// finding. So a finding dated only by it is older than any clinically dated one, like an
/// undated one.
fn later(a: &Assessment, b: &Assessment) -> bool {
    a.time_class > b.time_class
        || (a.time_class == b.time_class && is_later(a.time.as_ref(), b.time.as_ref()))
}

/// Whether `a` and `b` have the same time (parts of one report).
fn same_time(a: &Assessment, b: &Assessment) -> bool {
    a.time_class == b.time_class
        && compare_optional(a.time.as_ref(), b.time.as_ref()) == Some(Ordering::Equal)
}

/// The assessment(s) that say the current margin status.
struct Latest {
    /// Indexes of the assessments used, all with the status they say (one report's parts).
    winners: Vec<usize>,
    /// Set when the time of day decided between findings of the same local day.
    time_decided: bool,
    /// Set when two findings with different statuses could not be ordered at all.
    note: Option<String>,
}

/// The latest assessment, the way the chart means it:
/// 1. by time, where the precision of both times allows ([`compare_optional`]): the candidates
///    are those no other finding is known to be later than;
/// 2. among those, the report's status: amended / corrected over final over preliminary;
/// 3. then `issued`, when it orders one report after all the others;
/// 4. then the worse status, and a note when findings that differ could not be ordered.
fn latest(all: &[Assessment]) -> Option<Latest> {
    let mut candidates: Vec<usize> = (0..all.len())
        .filter(|&i| !all.iter().any(|b| later(b, &all[i])))
        .collect();
    let first = *candidates.first()?;
    let top_rank = candidates.iter().map(|&i| all[i].rank).max().unwrap_or(0);
    candidates.retain(|&i| all[i].rank == top_rank);
    if candidates.len() > 1
        && let Some(&last) = candidates.iter().find(|&&i| {
            candidates
                .iter()
                .all(|&j| j == i || is_later(all[i].issued.as_ref(), all[j].issued.as_ref()))
        })
        && all[last].issued.is_some()
    {
        candidates = vec![last];
    }
    let worst = candidates
        .iter()
        .map(|&i| severity(all[i].status))
        .max()
        .unwrap_or(0);
    // Findings the time could not order and that disagree: say so.
    let unordered = candidates.iter().any(|&i| {
        candidates
            .iter()
            .any(|&j| all[i].status != all[j].status && !same_time(&all[i], &all[j]))
    });
    let winners: Vec<usize> = candidates
        .into_iter()
        .filter(|&i| severity(all[i].status) == worst)
        .collect();
    let w = winners.first().map(|&i| &all[i]).unwrap_or(&all[first]);
    let note = unordered.then(|| {
        format!(
            "Two or more margin assessments could not be ordered by their dates or report \
             status ({}); the worse, {}, is used. Check which report is current.",
            all.iter()
                .filter(|a| !later(w, a))
                .map(|a| a.evidence.reference.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            word(w.status)
        )
    });
    // The time of day decided when a finding of the same local day, saying something else,
    // is known to be earlier.
    let time_decided = all.iter().any(|b| {
        b.status != w.status
            && matches!((&w.time, &b.time), (Some(x), Some(y)) if x.same_local_day(y))
            && later(w, b)
    });
    Some(Latest {
        winners,
        time_decided,
        note,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::facts::test_support::{condition, observation, procedure, record, terminology};
    use fhirbolt::model::r4::resources::{Condition, Procedure};
    use serde_json::{Value as Json, json};

    const SCT: &str = "http://snomed.info/sct";
    const LOINC: &str = "http://loinc.org";

    fn rectal(id: &str) -> Condition {
        condition(
            json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SCT, "code": "363351006"}]}}),
        )
    }

    fn breast(id: &str) -> Condition {
        condition(
            json!({"resourceType": "Condition", "id": id, "subject": {"reference": "Patient/p1"},
            "code": {"coding": [{"system": SCT, "code": "254837009"}]}}),
        )
    }

    fn resection(id: &str, date: &str, outcome: &str) -> Procedure {
        procedure(
            json!({"resourceType": "Procedure", "id": id, "status": "completed",
            "subject": {"reference": "Patient/p1"}, "performedDateTime": date,
            "code": {"coding": [{"system": SCT, "code": "265414003"}]},
            "outcome": {"coding": [{"system": SCT, "code": outcome}]}}),
        )
    }

    fn coded_obs(id: &str, date: &str, value: &str, links: Json) -> Observation {
        let mut v = json!({"resourceType": "Observation", "id": id, "status": "final",
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": date,
            "code": {"coding": [{"system": SCT, "code": "395536008"}]},
            "valueCodeableConcept": {"coding": [{"system": SCT, "code": value}]}});
        if let Json::Object(m) = links {
            for (k, x) in m {
                v[k] = x;
            }
        }
        observation(v)
    }

    fn distance(
        id: &str,
        date: &str,
        value: Json,
        unit: &str,
        comparator: Option<&str>,
    ) -> Observation {
        let mut q = json!({"value": value, "unit": unit, "system": "http://unitsofmeasure.org", "code": unit});
        if let Some(c) = comparator {
            q["comparator"] = json!(c);
        }
        observation(
            json!({"resourceType": "Observation", "id": id, "status": "final",
            "subject": {"reference": "Patient/p1"}, "effectiveDateTime": date,
            "focus": [{"reference": "Condition/rc"}],
            "code": {"coding": [{"system": LOINC, "code": "33737-8"}]},
            "valueQuantity": q}),
        )
    }

    fn margins(rec: &PatientRecord) -> MarginFact {
        let scope = crate::facts::test_support::scope_without_order(rec);
        find(&scope, rec, terminology(), &MarginThresholds::default())
    }

    #[test]
    fn from_resection_outcome() {
        let m = margins(&record(
            vec![rectal("rc")],
            vec![resection("apr", "2024-04-01", "370109009")],
            vec![],
        ));
        assert_eq!(m.status, MarginStatus::Positive);
        assert_eq!(m.evidence[0].reference, "Procedure/apr");
        assert_eq!(m.evidence[0].date.as_deref(), Some("2024-04-01"));
        // A not-done resection says nothing.
        let mut p = resection("apr", "2024-04-01", "370109009");
        p.status.value = Some("not-done".to_owned());
        assert_eq!(
            margins(&record(vec![rectal("rc")], vec![p], vec![])).status,
            MarginStatus::NotDocumented
        );
    }

    #[test]
    fn from_coded_observation_and_project_close_code() {
        let m = margins(&record(
            vec![rectal("rc")],
            vec![],
            vec![coded_obs(
                "m",
                "2024-04-02",
                "55182004",
                json!({"focus": [{"reference": "Condition/rc"}]}),
            )],
        ));
        assert_eq!(m.status, MarginStatus::Clear);
        let close = observation(
            json!({"resourceType": "Observation", "id": "c", "status": "final",
            "code": {"coding": [{"system": SCT, "code": "395536008"}]},
            "valueCodeableConcept": {"coding": [{"system":
                "https://iort-cds.github.io/fhir/CodeSystem/surgical-margin-status", "code": "close"}]}}),
        );
        assert_eq!(
            margins(&record(vec![rectal("rc")], vec![], vec![close])).status,
            MarginStatus::Close
        );
    }

    #[test]
    fn observation_linked_to_the_resection_counts() {
        let obs = coded_obs(
            "m",
            "2024-04-02",
            "370109009",
            json!({"partOf": [{"reference": "Procedure/apr"}]}),
        );
        let rec = record(
            vec![rectal("rc"), breast("bc")],
            vec![resection("apr", "2024-04-01", "55182004")],
            vec![obs],
        );
        let m = margins(&rec);
        assert_eq!(
            m.status,
            MarginStatus::Positive,
            "linked to the rectal resection, newer"
        );
        assert_eq!(m.evidence[0].reference, "Observation/m");
    }

    #[test]
    fn observation_of_another_cancer_or_unlinked_with_two_cancers_is_ignored() {
        let other = coded_obs(
            "m1",
            "2024-04-02",
            "370109009",
            json!({"focus": [{"reference": "Condition/bc"}]}),
        );
        let unlinked = coded_obs("m2", "2024-04-03", "370109009", json!({}));
        let rec = record(
            vec![rectal("rc"), breast("bc")],
            vec![],
            vec![other, unlinked.clone()],
        );
        assert_eq!(margins(&rec).status, MarginStatus::NotDocumented);
        // With a single cancer the unlinked finding is attributed to it.
        let rec = record(vec![rectal("rc")], vec![], vec![unlinked]);
        assert_eq!(margins(&rec).status, MarginStatus::Positive);
    }

    #[test]
    fn distance_thresholds() {
        for (value, expected) in [
            (json!(0.5), MarginStatus::Positive),
            (json!(1.0), MarginStatus::Positive),
            (json!(1.5), MarginStatus::Close),
            (json!(2.0), MarginStatus::Close),
            (json!(2.5), MarginStatus::Clear),
            (json!(0), MarginStatus::Positive),
        ] {
            let m = margins(&record(
                vec![rectal("rc")],
                vec![],
                vec![distance("d", "2024-04-02", value.clone(), "mm", None)],
            ));
            assert_eq!(m.status, expected, "{value} mm");
            assert_eq!(m.evidence[0].reference, "Observation/d");
        }
    }

    #[test]
    fn distance_units_are_converted() {
        for (value, unit, expected) in [
            (json!(0.1), "cm", MarginStatus::Positive),
            (json!(0.15), "cm", MarginStatus::Close),
            (json!(0.2), "cm", MarginStatus::Close),
            (json!(0.21), "cm", MarginStatus::Clear),
            (json!(900), "um", MarginStatus::Positive),
            (json!(2000), "um", MarginStatus::Close),
            (json!(2500), "um", MarginStatus::Clear),
        ] {
            let m = margins(&record(
                vec![rectal("rc")],
                vec![],
                vec![distance("d", "2024-04-02", value.clone(), unit, None)],
            ));
            assert_eq!(m.status, expected, "{value} {unit}");
        }
        let m = margins(&record(
            vec![rectal("rc")],
            vec![],
            vec![distance("d", "2024-04-02", json!(0.15), "cm", None)],
        ));
        assert!(
            m.evidence[0].detail.contains("1.5 mm"),
            "{}",
            m.evidence[0].detail
        );
        // Unknown unit or negative distance: not an assessment.
        for (value, unit) in [(json!(1), "kg"), (json!(-1), "mm")] {
            let m = margins(&record(
                vec![rectal("rc")],
                vec![],
                vec![distance("d", "2024-04-02", value, unit, None)],
            ));
            assert_eq!(m.status, MarginStatus::NotDocumented);
        }
    }

    #[test]
    fn distance_comparators() {
        let status = |v: f64, c: &str| {
            margins(&record(
                vec![rectal("rc")],
                vec![],
                vec![distance("d", "2024-04-02", json!(v), "mm", Some(c))],
            ))
            .status
        };
        assert_eq!(status(1.0, "<"), MarginStatus::Positive);
        assert_eq!(status(2.0, "<="), MarginStatus::Close);
        assert_eq!(status(5.0, "<"), MarginStatus::NotDocumented);
        assert_eq!(status(2.0, ">"), MarginStatus::Clear);
        assert_eq!(status(2.0, ">="), MarginStatus::NotDocumented);
        assert_eq!(status(1.0, ">"), MarginStatus::NotDocumented);
    }

    #[test]
    fn most_recent_wins_and_worse_wins_on_equal_dates() {
        // Positive resection outcome in April, clear re-excision in May: clear.
        let rec = record(
            vec![rectal("rc")],
            vec![resection("apr", "2024-04-01", "370109009")],
            vec![coded_obs(
                "re",
                "2024-05-10",
                "55182004",
                json!({"focus": [{"reference": "Condition/rc"}]}),
            )],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Clear);
        assert_eq!(m.evidence.len(), 1);
        assert_eq!(m.evidence[0].reference, "Observation/re");

        // Same day: clear coded finding and 0.8 mm distance: positive wins.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![
                coded_obs(
                    "c",
                    "2024-05-10",
                    "55182004",
                    json!({"focus": [{"reference": "Condition/rc"}]}),
                ),
                distance("d", "2024-05-10", json!(0.8), "mm", None),
            ],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Positive);
        assert_eq!(m.evidence[0].reference, "Observation/d");

        // A month and a day within it cannot be ordered: the worse, with a note.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![
                coded_obs(
                    "month",
                    "2024-05",
                    "370109009",
                    json!({"focus": [{"reference": "Condition/rc"}]}),
                ),
                distance("day", "2024-05-01", json!(3), "mm", None),
            ],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Positive);
        assert!(m.notes[0].contains("could not be ordered"), "{:?}", m.notes);
    }

    #[test]
    fn component_distance_and_r_classification() {
        let panel = observation(
            json!({"resourceType": "Observation", "id": "panel", "status": "final",
            "effectiveDateTime": "2024-04-02", "focus": [{"reference": "Condition/rc"}],
            "code": {"text": "Rectal resection pathology"},
            "component": [
                {"code": {"coding": [{"system": LOINC, "code": "33737-8"}]},
                 "valueQuantity": {"value": 1.2, "unit": "mm", "system": "http://unitsofmeasure.org", "code": "mm"}},
                {"code": {"coding": [{"system": LOINC, "code": "84892-9"}]},
                 "valueCodeableConcept": {"coding": [{"system": SCT, "code": "1222638005"}]}}]}),
        );
        let m = margins(&record(vec![rectal("rc")], vec![], vec![panel]));
        assert_eq!(
            m.status,
            MarginStatus::Close,
            "R0 but 1.2 mm from the margin"
        );
    }

    #[test]
    fn scaled_decimal_is_exact() {
        assert_eq!(scaled_decimal("0.15", 1), Some(1.5));
        assert_eq!(scaled_decimal("1.5e-1", 1), Some(1.5));
        assert_eq!(scaled_decimal("2000", -3), Some(2.0));
        assert_eq!(scaled_decimal("abc", 0), None);
        assert_eq!(scaled_decimal("", 0), None);
    }

    #[test]
    fn an_amended_report_supersedes_the_report_of_the_same_date() {
        let with_status = |id: &str, status: &str, value: &str| {
            let mut o = coded_obs(
                id,
                "2024-05-10",
                value,
                json!({"focus": [{"reference": "Condition/rc"}]}),
            );
            o.status.value = Some(status.to_owned());
            o
        };
        for (first, second, expected) in [
            ("preliminary", "final", MarginStatus::Clear),
            ("final", "amended", MarginStatus::Clear),
            ("final", "corrected", MarginStatus::Clear),
        ] {
            // The involved finding is in the superseded report, the clear one in the later.
            let rec = record(
                vec![rectal("rc")],
                vec![],
                vec![
                    with_status("old", first, "370109009"),
                    with_status("new", second, "55182004"),
                ],
            );
            let m = margins(&rec);
            assert_eq!(m.status, expected, "{first} then {second}");
            assert_eq!(m.evidence[0].reference, "Observation/new");
        }
    }

    #[test]
    fn a_newer_unattributable_finding_makes_the_margin_unknown() {
        let linked = coded_obs(
            "linked",
            "2024-04-02",
            "370109009",
            json!({"focus": [{"reference": "Condition/rc"}]}),
        );
        let newer = coded_obs("later", "2024-06-01", "55182004", json!({}));
        let rec = record(
            vec![rectal("rc"), breast("bc")],
            vec![],
            vec![linked.clone(), newer],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::NotDocumented);
        assert!(m.notes[0].contains("Observation/later"), "{:?}", m.notes);
        // An older unattributable finding does not overturn the linked one.
        let older = coded_obs("earlier", "2024-01-01", "55182004", json!({}));
        let rec = record(
            vec![rectal("rc"), breast("bc")],
            vec![],
            vec![linked, older],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Positive);
        assert!(m.notes.is_empty());
    }

    fn timed(id: &str, effective: Json, value: &str, extra: Json) -> Observation {
        let mut v = json!({"resourceType": "Observation", "id": id, "status": "final",
            "subject": {"reference": "Patient/p1"},
            "focus": [{"reference": "Condition/rc"}],
            "code": {"coding": [{"system": SCT, "code": "395536008"}]},
            "valueCodeableConcept": {"coding": [{"system": SCT, "code": value}]}});
        if let Json::Object(m) = effective {
            for (k, x) in m {
                v[k] = x;
            }
        }
        if let Json::Object(m) = extra {
            for (k, x) in m {
                v[k] = x;
            }
        }
        observation(v)
    }

    #[test]
    fn an_arizona_evening_frozen_section_is_before_the_next_days_report() {
        // 17:30 -07:00 on 6 May is 00:30Z on 7 May; in UTC it would sort after the final report
        // dated 7 May and the involved frozen section would win.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![
                timed(
                    "frozen",
                    json!({"effectiveDateTime": "2025-05-06T17:30:00-07:00"}),
                    "370109009",
                    json!({}),
                ),
                timed(
                    "final",
                    json!({"effectiveDateTime": "2025-05-07"}),
                    "55182004",
                    json!({}),
                ),
            ],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Clear);
        assert_eq!(m.evidence[0].reference, "Observation/final");
        assert_eq!(m.evidence[0].date.as_deref(), Some("2025-05-07"));
        assert!(m.notes.is_empty());
    }

    #[test]
    fn the_report_status_then_issued_order_what_time_cannot() {
        // Same local day, a date-time and a date: not ordered by time.
        let frozen = |status: &str| {
            timed(
                "frozen",
                json!({"effectiveDateTime": "2025-05-06T10:15:00-07:00"}),
                "370109009",
                json!({"status": status}),
            )
        };
        let report = timed(
            "report",
            json!({"effectiveDateTime": "2025-05-06"}),
            "55182004",
            json!({"issued": "2025-05-09T16:02:11-07:00"}),
        );
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![frozen("preliminary"), report.clone()],
        );
        assert_eq!(
            margins(&rec).status,
            MarginStatus::Clear,
            "final over preliminary"
        );
        // Both final: the later issued report wins.
        let frozen_final = timed(
            "frozen",
            json!({"effectiveDateTime": "2025-05-06T10:15:00-07:00"}),
            "370109009",
            json!({"issued": "2025-05-06T10:40:00-07:00"}),
        );
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![frozen_final, report.clone()],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Clear, "issued orders them");
        assert!(m.notes.is_empty());
        // Both final, no issued: nothing orders them, the worse with a note.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![
                frozen("final"),
                timed(
                    "report",
                    json!({"effectiveDateTime": "2025-05-06"}),
                    "55182004",
                    json!({}),
                ),
            ],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Positive);
        assert_eq!(m.notes.len(), 1);
        assert!(m.notes[0].contains("Observation/frozen"), "{:?}", m.notes);
    }

    #[test]
    fn time_sources_and_the_time_shown_where_it_decided() {
        // Two date-times of the same local day: the time decides, and the evidence shows it.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![
                timed(
                    "am",
                    json!({"effectiveDateTime": "2025-05-06T09:00:00-07:00"}),
                    "55182004",
                    json!({}),
                ),
                timed(
                    "pm",
                    json!({"effectivePeriod": {"start": "2025-05-06T15:00:00-07:00",
                        "end": "2025-05-06T16:45:00-07:00"}}),
                    "370109009",
                    json!({}),
                ),
            ],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Positive);
        assert_eq!(
            m.evidence[0].date.as_deref(),
            Some("2025-05-06 16:45 (UTC-07:00)"),
            "a Period is dated by its end, shown with the time that decided"
        );
        // Only meta.lastUpdated: used, and the evidence says so.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![timed(
                "late",
                json!({"meta": {"lastUpdated": "2025-05-08T03:10:00.000Z"}}),
                "370109009",
                json!({}),
            )],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Positive);
        assert!(
            m.evidence[0].detail.contains("last update"),
            "{:?}",
            m.evidence
        );
        assert_eq!(m.evidence[0].date.as_deref(), Some("2025-05-08"));
        // ... but it never outranks a clinically dated finding, however recent the load: a
        // report stored on a new server yesterday is not yesterday's finding.
        let rec = record(
            vec![rectal("rc")],
            vec![],
            vec![
                timed(
                    "loaded",
                    json!({"meta": {"lastUpdated": "2026-11-28T03:10:00.000Z"}}),
                    "370109009",
                    json!({}),
                ),
                timed(
                    "dated",
                    json!({"effectiveDateTime": "2025-05-07"}),
                    "55182004",
                    json!({}),
                ),
            ],
        );
        let m = margins(&rec);
        assert_eq!(m.status, MarginStatus::Clear);
        assert!(m.notes.is_empty());
    }
}
