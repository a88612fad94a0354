//! Stage 4 of the pipeline: the coverage decision, a pure function of the facts.
//!
//! The policy (BCBSAZ "Intraoperative Radiotherapy", effective 09/03/24) covers IORT for
//! "rectal cancer with positive or close margins with T4 lesions or recurrent disease". That is
//! three criteria, each met / not met / unknown, joined by a three-valued AND:
//! any not met -> not covered; all met -> covered; otherwise the answer depends on
//! documentation, and the missing facts are named. A record that could not be read gives
//! `indeterminate` instead of a guess.
//!
//! Why a three-valued logic rather than "not documented = not met": at order-sign time the
//! pathology report is often not yet filed as structured data. Treating an absent margin as
//! "clear" would tell the surgeon the order is investigational when it may well be covered;
//! `conditional` tells them exactly what to document instead. A documented fact that fails
//! the policy, on the other hand, settles the answer no matter what is missing.

use crate::facts::{Evidence, IndicationStatus, MarginStatus, OrderFacts, TCategory};

/// A three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Met,
    NotMet,
    Unknown,
}

impl Tri {
    /// Kleene (strong three-valued) conjunction: `NotMet` dominates, then `Unknown`.
    pub fn and(self, other: Tri) -> Tri {
        match (self, other) {
            (Tri::NotMet, _) | (_, Tri::NotMet) => Tri::NotMet,
            (Tri::Unknown, _) | (_, Tri::Unknown) => Tri::Unknown,
            (Tri::Met, Tri::Met) => Tri::Met,
        }
    }

    /// A stable machine-readable name (used by the card templates).
    pub fn code(self) -> &'static str {
        match self {
            Tri::Met => "met",
            Tri::NotMet => "not-met",
            Tri::Unknown => "unknown",
        }
    }
}

/// The policy's criteria.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Criterion {
    /// The indication is rectal cancer.
    RectalCancer,
    /// Surgical margins are positive or close.
    PositiveOrCloseMargins,
    /// The lesion is T4, or the disease is recurrent.
    T4OrRecurrent,
}

impl Criterion {
    /// Every criterion, in the order the determination lists them.
    pub const ALL: [Criterion; 3] = [
        Criterion::RectalCancer,
        Criterion::PositiveOrCloseMargins,
        Criterion::T4OrRecurrent,
    ];

    /// The id used for this criterion in the policy data file and the card templates.
    pub fn id(self) -> &'static str {
        match self {
            Criterion::RectalCancer => "rectal-cancer",
            Criterion::PositiveOrCloseMargins => "positive-or-close-margins",
            Criterion::T4OrRecurrent => "t4-or-recurrent",
        }
    }

    /// The criterion with the given [`id`](Self::id).
    pub fn from_id(id: &str) -> Option<Criterion> {
        Criterion::ALL.into_iter().find(|c| c.id() == id)
    }
}

/// Written as its [`id`](Criterion::id), as in the policy file and the card templates.
impl serde::Serialize for Criterion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.id())
    }
}

impl<'de> serde::Deserialize<'de> for Criterion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let id = String::deserialize(d)?;
        Criterion::from_id(&id).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "unknown criterion `{id}` (expected one of: {})",
                Criterion::ALL.map(Criterion::id).join(", ")
            ))
        })
    }
}

/// One criterion's result with the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriterionResult {
    pub criterion: Criterion,
    pub value: Tri,
    pub evidence: Vec<Evidence>,
    /// What was found in the record but could not be used for this criterion (unlinked,
    /// unreadable, past), worded for the card: shown instead of the generic "how to document".
    pub notes: Vec<String>,
}

/// The CRD `covered` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Covered {
    Covered,
    NotCovered,
    Conditional,
    Indeterminate,
}

impl Covered {
    /// The code used in the CRD coverage-information extension.
    pub fn code(self) -> &'static str {
        match self {
            Covered::Covered => "covered",
            Covered::NotCovered => "not-covered",
            Covered::Conditional => "conditional",
            Covered::Indeterminate => "indeterminate",
        }
    }
}

/// The outcome for one IORT order.
#[derive(Debug, Clone)]
pub struct Determination {
    pub facts: OrderFacts,
    pub covered: Covered,
    /// The three criteria, in the order of [`Criterion::ALL`]. For `indeterminate` they
    /// reflect whatever part of the record was read and must not be presented as findings.
    pub criteria: Vec<CriterionResult>,
    /// The criteria whose value is unknown (for `conditional`: what to document). Empty for
    /// every other outcome.
    pub missing: Vec<Criterion>,
    /// For `indeterminate`: what failed (no clinical content).
    pub technical_reason: Option<String>,
}

impl Determination {
    /// The result for one criterion.
    pub fn criterion(&self, criterion: Criterion) -> Option<&CriterionResult> {
        self.criteria.iter().find(|r| r.criterion == criterion)
    }

    /// The criteria that are documented as not met (why an order is not covered).
    pub fn failing(&self) -> impl Iterator<Item = &CriterionResult> {
        self.criteria.iter().filter(|r| r.value == Tri::NotMet)
    }
}

/// Decide one order. Pure: same facts, same answer.
pub fn decide(facts: OrderFacts) -> Determination {
    let criteria = vec![
        rectal_cancer(&facts),
        positive_or_close_margins(&facts),
        t4_or_recurrent(&facts),
    ];

    if let Some(reason) = facts.unavailable.clone() {
        // The record is partial: a "not met" might just be data we could not read, so no
        // outcome is given and nothing is asked of the clinician.
        return Determination {
            facts,
            covered: Covered::Indeterminate,
            criteria,
            missing: Vec::new(),
            technical_reason: Some(reason),
        };
    }

    let overall = criteria.iter().fold(Tri::Met, |acc, r| acc.and(r.value));
    let (covered, missing) = match overall {
        Tri::Met => (Covered::Covered, Vec::new()),
        Tri::NotMet => (Covered::NotCovered, Vec::new()),
        Tri::Unknown => (
            Covered::Conditional,
            criteria
                .iter()
                .filter(|r| r.value == Tri::Unknown)
                .map(|r| r.criterion)
                .collect(),
        ),
    };
    Determination {
        facts,
        covered,
        criteria,
        missing,
        technical_reason: None,
    }
}

fn rectal_cancer(facts: &OrderFacts) -> CriterionResult {
    let value = match facts.indication.status {
        IndicationStatus::RectalCancer if facts.indication.unconfirmed => Tri::Unknown,
        IndicationStatus::RectalCancer => Tri::Met,
        IndicationStatus::OtherCancer | IndicationStatus::OtherDiagnosis => Tri::NotMet,
        IndicationStatus::NotDocumented | IndicationStatus::ReasonUnavailable => Tri::Unknown,
    };
    CriterionResult {
        criterion: Criterion::RectalCancer,
        value,
        evidence: facts.indication.evidence.clone(),
        notes: facts.indication.notes.clone(),
    }
}

fn positive_or_close_margins(facts: &OrderFacts) -> CriterionResult {
    let value = match facts.margins.status {
        MarginStatus::Positive | MarginStatus::Close => Tri::Met,
        MarginStatus::Clear => Tri::NotMet,
        MarginStatus::NotDocumented => Tri::Unknown,
    };
    CriterionResult {
        criterion: Criterion::PositiveOrCloseMargins,
        value,
        evidence: facts.margins.evidence.clone(),
        notes: facts.margins.notes.clone(),
    }
}

/// "T4 lesions or recurrent disease": either one suffices, so recurrence settles it even when
/// no T category is documented; only a documented T1-T3 without recurrence fails it.
fn t4_or_recurrent(facts: &OrderFacts) -> CriterionResult {
    let t4 = facts.staging.category == TCategory::T4;
    let recurrent = facts.recurrence.recurrent;
    let value = match (facts.staging.category, recurrent) {
        (TCategory::T4, _) | (_, true) => Tri::Met,
        (TCategory::BelowT4, false) => Tri::NotMet,
        (TCategory::NotDocumented, false) => Tri::Unknown,
    };
    // When met, show what met it; otherwise show everything that was looked at, so the
    // clinician can see e.g. the pT3 that made it fail.
    let mut evidence = Vec::new();
    let (with_staging, with_recurrence) = match value {
        Tri::Met => (t4, recurrent),
        Tri::NotMet | Tri::Unknown => (true, true),
    };
    if with_staging {
        push_unique(&mut evidence, &facts.staging.evidence);
    }
    if with_recurrence {
        push_unique(&mut evidence, &facts.recurrence.evidence);
    }
    CriterionResult {
        criterion: Criterion::T4OrRecurrent,
        value,
        evidence,
        // Unlinked T categories matter only while the criterion is not met.
        notes: match value {
            Tri::Met => Vec::new(),
            Tri::NotMet | Tri::Unknown => facts.staging.notes.clone(),
        },
    }
}

/// Appends `more`, skipping entries already present (one Condition can carry both the T
/// category and the recurrence status).
fn push_unique(into: &mut Vec<Evidence>, more: &[Evidence]) {
    for e in more {
        if !into.contains(e) {
            into.push(e.clone());
        }
    }
}

/// Hand-built facts for the decision and render tests (the extractors are tested elsewhere).
#[cfg(test)]
pub(crate) mod test_support {
    use serde_json::json;

    use crate::facts::*;
    use crate::record::RecordIssue;

    /// Evidence as facts build it: `"pT4a (SNOMED CT 1229865000)"` becomes the words `pT4a`
    /// and the code `SNOMED CT 1229865000`.
    pub fn ev(reference: &str, date: &str, detail: &str) -> Evidence {
        let (words, codes) = match detail.rsplit_once(" (") {
            Some((words, code))
                if ["SNOMED", "LOINC", "ICD-10"]
                    .iter()
                    .any(|s| code.starts_with(s)) =>
            {
                (words, vec![code.trim_end_matches(')').to_owned()])
            }
            _ => (detail, Vec::new()),
        };
        Evidence {
            reference: reference.to_owned(),
            date: Some(date.to_owned()),
            source: "diagnosis",
            detail: words.to_owned(),
            codes,
        }
    }

    /// Facts for a ServiceRequest `sr-1` (CPT 77425) with the given statuses; every documented
    /// status carries one piece of evidence.
    pub fn facts(
        indication: IndicationStatus,
        t: TCategory,
        recurrent: bool,
        margins: MarginStatus,
    ) -> OrderFacts {
        let indication_ev = match indication {
            IndicationStatus::RectalCancer => vec![ev(
                "Condition/rectal-1",
                "2026-09-01",
                "Malignant neoplasm of rectum (ICD-10-CM C20)",
            )],
            IndicationStatus::OtherCancer => vec![ev(
                "Condition/colon-1",
                "2026-09-01",
                "Malignant neoplasm of sigmoid colon (ICD-10-CM C18.7)",
            )],
            IndicationStatus::OtherDiagnosis => vec![ev(
                "Condition/htn-1",
                "2026-09-01",
                "order reason: Essential hypertension (SNOMED CT 59621000)",
            )],
            IndicationStatus::NotDocumented | IndicationStatus::ReasonUnavailable => Vec::new(),
        };
        let staging_ev = match t {
            TCategory::T4 => vec![ev(
                "Observation/tnm-t-1",
                "2026-10-02",
                "pT4a (SNOMED CT 1229865000)",
            )],
            TCategory::BelowT4 => vec![ev(
                "Observation/tnm-t-1",
                "2026-10-02",
                "pT3 (SNOMED CT 1229859000)",
            )],
            TCategory::NotDocumented => Vec::new(),
        };
        let recurrence_ev = if recurrent {
            vec![ev(
                "Condition/rectal-1",
                "2026-09-01",
                "clinical status: recurrence",
            )]
        } else {
            Vec::new()
        };
        let margin_ev = match margins {
            MarginStatus::Positive => vec![ev(
                "Observation/margin-1",
                "2026-10-02",
                "Surgical margin involved by tumor (SNOMED CT 370109009)",
            )],
            MarginStatus::Close => vec![ev(
                "Observation/margin-1",
                "2026-10-02",
                "Distance to closest margin 1.5 mm (LOINC 33737-8)",
            )],
            MarginStatus::Clear => vec![ev(
                "Observation/margin-1",
                "2026-10-02",
                "Surgical margin uninvolved by tumor (SNOMED CT 55182004)",
            )],
            MarginStatus::NotDocumented => Vec::new(),
        };
        let raw = json!({
            "resourceType": "ServiceRequest",
            "id": "sr-1",
            "status": "draft",
            "intent": "order",
            "extension": [{"url": "http://example.org/ext/other", "valueString": "kept"}],
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]},
            "subject": {"reference": "Patient/p1"}
        });
        OrderFacts {
            order: IortOrder {
                resource_type: "ServiceRequest".to_owned(),
                id: Some("sr-1".to_owned()),
                raw,
                billing_code: Some(CodeRef {
                    system: "http://www.ama-assn.org/go/cpt".to_owned(),
                    code: "77425".to_owned(),
                    display: Some("IORT delivery, electrons".to_owned()),
                }),
                display: "IORT, electrons".to_owned(),
                service_request: None,
            },
            indication: IndicationFact {
                status: indication,
                unconfirmed: false,
                condition: indication_ev.first().map(|e| e.reference.clone()),
                via: match indication {
                    IndicationStatus::NotDocumented => IndicationSource::None,
                    _ => IndicationSource::ReasonReference,
                },
                evidence: indication_ev,
                notes: Vec::new(),
            },
            staging: StagingFact {
                category: t,
                evidence: staging_ev,
                notes: Vec::new(),
            },
            recurrence: RecurrenceFact {
                recurrent,
                evidence: recurrence_ev,
            },
            margins: MarginFact {
                status: margins,
                evidence: margin_ev,
                notes: Vec::new(),
            },
            coverage: Some(CoverageRef {
                reference: "Coverage/cov-1".to_owned(),
                payor: Some("Blue Cross Blue Shield of Arizona".to_owned()),
            }),
            record_issues: Vec::<RecordIssue>::new(),
            unavailable: None,
        }
    }

    /// Facts that meet all three criteria.
    pub fn covered_facts() -> OrderFacts {
        facts(
            IndicationStatus::RectalCancer,
            TCategory::T4,
            false,
            MarginStatus::Positive,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;
    use crate::facts::{IndicationStatus as I, MarginStatus as M, TCategory as T};

    const INDICATIONS: [I; 3] = [I::RectalCancer, I::OtherCancer, I::NotDocumented];
    /// One margin status per criterion value (Positive and Close are checked separately).
    const MARGINS: [M; 3] = [M::Positive, M::Clear, M::NotDocumented];
    /// (T category, recurrent) giving Met / NotMet / Unknown.
    const T4_OR_RECURRENT: [(T, bool); 3] = [
        (T::T4, false),
        (T::BelowT4, false),
        (T::NotDocumented, false),
    ];

    /// The expected outcome for three criterion values, written out independently of
    /// `Tri::and`: the policy table.
    fn expected(a: Tri, b: Tri, c: Tri) -> Covered {
        let v = [a, b, c];
        if v.contains(&Tri::NotMet) {
            Covered::NotCovered
        } else if v.iter().all(|t| *t == Tri::Met) {
            Covered::Covered
        } else {
            Covered::Conditional
        }
    }

    fn tri_of_index(i: usize) -> Tri {
        [Tri::Met, Tri::NotMet, Tri::Unknown][i]
    }

    #[test]
    fn all_27_combinations() {
        let mut seen = 0;
        for (ii, ind) in INDICATIONS.into_iter().enumerate() {
            for (mi, m) in MARGINS.into_iter().enumerate() {
                for (ti, (t, rec)) in T4_OR_RECURRENT.into_iter().enumerate() {
                    let d = decide(facts(ind, t, rec, m));
                    let (a, b, c) = (tri_of_index(ii), tri_of_index(mi), tri_of_index(ti));
                    let case = format!("{ind:?} / {m:?} / {t:?} rec={rec}");
                    assert_eq!(d.covered, expected(a, b, c), "{case}");
                    let values: Vec<Tri> = d.criteria.iter().map(|r| r.value).collect();
                    assert_eq!(values, vec![a, b, c], "{case}");
                    let order: Vec<Criterion> = d.criteria.iter().map(|r| r.criterion).collect();
                    assert_eq!(order, Criterion::ALL.to_vec(), "{case}");
                    // `missing` names exactly the unknown criteria, and only for conditional.
                    let unknown: Vec<Criterion> = d
                        .criteria
                        .iter()
                        .filter(|r| r.value == Tri::Unknown)
                        .map(|r| r.criterion)
                        .collect();
                    if d.covered == Covered::Conditional {
                        assert_eq!(d.missing, unknown, "{case}");
                        assert!(!d.missing.is_empty(), "{case}");
                    } else {
                        assert!(d.missing.is_empty(), "{case}");
                    }
                    assert!(d.technical_reason.is_none(), "{case}");
                    seen += 1;
                }
            }
        }
        assert_eq!(seen, 27);
    }

    #[test]
    fn an_unconfirmed_rectal_diagnosis_is_never_covered() {
        // Everything else met: the diagnosis must still be confirmed (conditional), and a
        // criterion documented as not met still decides (not covered).
        let mut f = facts(I::RectalCancer, T::T4, false, M::Positive);
        f.indication.unconfirmed = true;
        let d = decide(f);
        assert_eq!(d.covered, Covered::Conditional);
        assert_eq!(d.missing, vec![Criterion::RectalCancer]);
        let r = d.criterion(Criterion::RectalCancer).unwrap();
        assert_eq!(r.value, Tri::Unknown);
        assert_eq!(r.evidence.len(), 1, "what was found is still cited");
        let mut f = facts(I::RectalCancer, T::BelowT4, false, M::Positive);
        f.indication.unconfirmed = true;
        assert_eq!(decide(f).covered, Covered::NotCovered);
    }

    #[test]
    fn close_margin_counts_like_positive() {
        let d = decide(facts(I::RectalCancer, T::T4, false, M::Close));
        assert_eq!(d.covered, Covered::Covered);
    }

    #[test]
    fn recurrence_variants() {
        // (T category, recurrent) -> T4OrRecurrent value
        let table = [
            (T::T4, true, Tri::Met),
            (T::BelowT4, true, Tri::Met),
            (T::NotDocumented, true, Tri::Met),
            (T::T4, false, Tri::Met),
            (T::BelowT4, false, Tri::NotMet),
            (T::NotDocumented, false, Tri::Unknown),
        ];
        for (t, rec, want) in table {
            let d = decide(facts(I::RectalCancer, t, rec, M::Positive));
            let got = d.criterion(Criterion::T4OrRecurrent).map(|r| r.value);
            assert_eq!(got, Some(want), "{t:?} rec={rec}");
            let outcome = match want {
                Tri::Met => Covered::Covered,
                Tri::NotMet => Covered::NotCovered,
                Tri::Unknown => Covered::Conditional,
            };
            assert_eq!(d.covered, outcome, "{t:?} rec={rec}");
        }
    }

    #[test]
    fn recurrent_below_t4_cites_the_recurrence_not_the_t3() {
        let d = decide(facts(I::RectalCancer, T::BelowT4, true, M::Positive));
        let r = d.criterion(Criterion::T4OrRecurrent).unwrap();
        let refs: Vec<&str> = r.evidence.iter().map(|e| e.reference.as_str()).collect();
        assert_eq!(refs, vec!["Condition/rectal-1"]);
    }

    #[test]
    fn not_met_t4_cites_the_staging() {
        let d = decide(facts(I::RectalCancer, T::BelowT4, false, M::Positive));
        let r = d.criterion(Criterion::T4OrRecurrent).unwrap();
        assert_eq!(r.evidence.len(), 1);
        assert_eq!(r.evidence[0].reference, "Observation/tnm-t-1");
    }

    #[test]
    fn t4_and_recurrent_evidence_is_deduplicated() {
        let mut f = facts(I::RectalCancer, T::T4, true, M::Positive);
        // The same Condition documents both the stage and the recurrence.
        f.staging.evidence.push(f.recurrence.evidence[0].clone());
        let d = decide(f);
        let r = d.criterion(Criterion::T4OrRecurrent).unwrap();
        assert_eq!(r.evidence.len(), 2);
    }

    #[test]
    fn each_criterion_carries_its_facts_evidence() {
        let d = decide(covered_facts());
        let refs = |c| {
            d.criterion(c)
                .unwrap()
                .evidence
                .iter()
                .map(|e| e.reference.clone())
                .collect::<Vec<_>>()
        };
        assert_eq!(refs(Criterion::RectalCancer), vec!["Condition/rectal-1"]);
        assert_eq!(
            refs(Criterion::PositiveOrCloseMargins),
            vec!["Observation/margin-1"]
        );
        assert_eq!(refs(Criterion::T4OrRecurrent), vec!["Observation/tnm-t-1"]);
    }

    #[test]
    fn unavailable_record_is_indeterminate_whatever_the_facts() {
        for (ind, m) in [
            (I::RectalCancer, M::Positive),
            (I::OtherCancer, M::Clear),
            (I::NotDocumented, M::NotDocumented),
        ] {
            let mut f = facts(ind, T::T4, false, m);
            f.unavailable = Some("Observation search failed: HTTP 503".to_owned());
            let d = decide(f);
            assert_eq!(d.covered, Covered::Indeterminate);
            assert_eq!(
                d.technical_reason.as_deref(),
                Some("Observation search failed: HTTP 503")
            );
            assert!(d.missing.is_empty());
            assert_eq!(d.criteria.len(), 3);
        }
    }

    #[test]
    fn kleene_and_table() {
        use Tri::*;
        let all = [Met, NotMet, Unknown];
        for a in all {
            for b in all {
                let want = if a == NotMet || b == NotMet {
                    NotMet
                } else if a == Unknown || b == Unknown {
                    Unknown
                } else {
                    Met
                };
                assert_eq!(a.and(b), want);
                assert_eq!(a.and(b), b.and(a));
            }
        }
    }

    /// Property: over every combination of fact values (all indication, T, recurrence and
    /// margin statuses, with and without an unavailable record), `Covered` only ever comes
    /// with three `Met` criteria, and three `Met` without a read failure is always `Covered`.
    #[test]
    fn covered_only_with_three_met() {
        let margins = [M::Positive, M::Close, M::Clear, M::NotDocumented];
        let ts = [T::T4, T::BelowT4, T::NotDocumented];
        for ind in INDICATIONS {
            for m in margins {
                for t in ts {
                    for rec in [false, true] {
                        for unavailable in [false, true] {
                            let mut f = facts(ind, t, rec, m);
                            if unavailable {
                                f.unavailable = Some("x".to_owned());
                            }
                            let d = decide(f);
                            let all_met = d.criteria.len() == 3
                                && d.criteria.iter().all(|r| r.value == Tri::Met);
                            if d.covered == Covered::Covered {
                                assert!(all_met, "{ind:?} {m:?} {t:?} {rec}");
                            }
                            if all_met && !unavailable {
                                assert_eq!(d.covered, Covered::Covered);
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn criterion_ids_round_trip() {
        for c in Criterion::ALL {
            assert_eq!(Criterion::from_id(c.id()), Some(c));
        }
        assert_eq!(Criterion::from_id("t4"), None);
    }
}
