//! The patient-view "what if" card: would IORT meet the payer's criteria if it were ordered?
//!
//! A clinician planning surgery wants to know before anything is ordered whether IORT would be
//! covered for the patient in view. The pipeline assesses a hypothetical IORT order (see
//! [`crate::pipeline`]) exactly like a real one; this module words the answer differently:
//!
//! - **one card, no system action**: there is no order to carry a CRD coverage-information
//!   extension, so `coverage-info` does not apply; `max-cards` does (0: no card);
//! - the card says plainly that **no order exists yet** (summary "IORT would ...", detail
//!   opening with it), so it cannot be read as a decision about an order;
//! - indicator **info** for every outcome: nothing is being ordered, so nothing is at risk yet,
//!   and a patient-view card competes with everything else in the chart; the warning belongs
//!   to the order-sign card when IORT is actually ordered;
//! - no override reasons (there is nothing to override);
//! - **silence for patients with no cancer documented** (and a record that was read): IORT is
//!   an oncologic procedure, and patient-view fires on every chart opened, so "IORT would need a
//!   rectal cancer diagnosis" on every non-cancer chart would be noise. A record that could not
//!   be read still gets the honest "could not be determined" card, since it may hold a cancer.
//!
//! The text lives in `cards/what-if-summary.txt.j2` and `cards/what-if.md.j2` (same variables
//! as the order cards, see `cards/README.md`), with a built-in fallback like the order cards.

use crate::decision::{Covered, Determination};
use crate::facts::IndicationStatus;
use crate::hook::{Card, CdsResponse, CrdConfiguration, Indicator};
use crate::policy::Policy;

use super::{CardTexts, Renderer};

/// The what-if summary template (plain text, one line).
pub const WHAT_IF_SUMMARY_TEMPLATE: &str = "what-if-summary.txt.j2";
/// The what-if detail template (GitHub Markdown), for every outcome.
pub const WHAT_IF_DETAIL_TEMPLATE: &str = "what-if.md.j2";

/// Whether the what-if has anything to say about this patient (see the module docs).
pub fn what_if_applies(d: &Determination) -> bool {
    d.covered == Covered::Indeterminate
        || d.facts.indication.status != IndicationStatus::NotDocumented
}

impl Renderer {
    /// The patient-view answer for the hypothetical IORT order's determination: at most one
    /// card and never a system action. No card when there is no determination, when
    /// `max-cards` is 0, or when the patient has no cancer documented.
    pub fn what_if(
        &self,
        determination: Option<&Determination>,
        crd: &CrdConfiguration,
        today: chrono::NaiveDate,
    ) -> CdsResponse {
        let cards = match determination {
            Some(d) if crd.max_cards != Some(0) && what_if_applies(d) => {
                vec![self.what_if_card(d, today)]
            }
            _ => Vec::new(),
        };
        CdsResponse {
            cards,
            system_actions: Vec::new(),
        }
    }

    /// The what-if card for one determination (whatever its indication).
    pub fn what_if_card(&self, d: &Determination, today: chrono::NaiveDate) -> Card {
        let p = &self.policy;
        // Always `info`: nothing is being ordered yet; the order-sign card warns when IORT is
        // actually ordered. No override reasons: there is no order to override.
        self.compose(
            d,
            today,
            CardTexts {
                summary_template: WHAT_IF_SUMMARY_TEMPLATE,
                detail_template: WHAT_IF_DETAIL_TEMPLATE,
                fallback_summary: &|| fallback_summary(d, p),
                fallback_detail: &|| fallback_detail(d, p),
            },
            Indicator::Info,
            Vec::new(),
        )
    }
}

/// Used only when the what-if summary template fails: still says it is hypothetical.
fn fallback_summary(d: &Determination, p: &Policy) -> String {
    let label = &p.payer.short_label;
    match d.covered {
        Covered::Covered => format!("IORT would meet the {label} coverage criteria (no order yet)"),
        Covered::NotCovered => {
            format!("IORT would not meet the {label} coverage criteria (no order yet)")
        }
        Covered::Conditional => {
            format!("IORT would need: documentation to meet the {label} coverage criteria")
        }
        Covered::Indeterminate => {
            format!(
                "IORT: whether it would meet the {label} coverage criteria could not be determined"
            )
        }
    }
}

/// Used only when the what-if detail template fails.
fn fallback_detail(d: &Determination, p: &Policy) -> String {
    format!(
        "No IORT order exists yet; this is a what-if assessment: {}. Applied policy: {}. The \
         full card text could not be produced; see the policy link.",
        d.covered.code(),
        p.version_label()
    )
}

#[cfg(test)]
mod tests {
    use chrono::NaiveDate;

    use super::*;
    use crate::assets::Assets;
    use crate::decision::decide;
    use crate::decision::test_support::{covered_facts, facts};
    use crate::facts::{IndicationStatus as I, MarginStatus as M, TCategory as T};

    fn today() -> NaiveDate {
        NaiveDate::from_ymd_opt(2026, 11, 26).unwrap_or_default()
    }

    fn renderer() -> Renderer {
        let assets = Assets::embedded();
        let policy = Policy::load(&assets).expect("policy");
        Renderer::load(&assets, &policy).expect("templates")
    }

    fn one(d: Determination) -> Card {
        let resp = renderer().what_if(Some(&d), &CrdConfiguration::default(), today());
        assert!(resp.system_actions.is_empty(), "never a system action");
        assert_eq!(resp.cards.len(), 1, "{resp:?}");
        resp.cards.into_iter().next().expect("one card")
    }

    fn detail(c: &Card) -> &str {
        c.detail.as_deref().unwrap_or_default()
    }

    /// Every card says no order exists and comes from the template, not the fallback.
    fn assert_hypothetical(c: &Card) {
        assert!(
            detail(c).starts_with("**No IORT order exists yet.**"),
            "{}",
            detail(c)
        );
        assert!(
            !detail(c).contains("could not be produced"),
            "fallback used"
        );
        assert!(c.summary.chars().count() < 140);
        assert_eq!(c.indicator, Indicator::Info);
        assert!(c.override_reasons.is_empty());
        assert_eq!(c.links.len(), 1);
    }

    #[test]
    fn covered_would_meet() {
        let c = one(decide(covered_facts()));
        assert_hypothetical(&c);
        assert!(
            c.summary
                .starts_with("IORT would meet the BCBSAZ coverage criteria"),
            "{}",
            c.summary
        );
        assert!(c.summary.contains("positive margin") && c.summary.contains("T4"));
        assert!(detail(&c).contains("**Would meet the criteria.**"));
        assert!(
            detail(&c).contains("Observation/margin-1"),
            "evidence shown"
        );
    }

    #[test]
    fn not_covered_would_not_meet_and_names_the_failing_criterion() {
        let c = one(decide(facts(I::RectalCancer, T::T4, false, M::Clear)));
        assert_hypothetical(&c);
        assert!(
            c.summary
                .starts_with("IORT would not meet the BCBSAZ coverage criteria (margins clear)"),
            "{}",
            c.summary
        );
        assert!(detail(&c).contains("not met: Positive or close margins"));
        let other = one(decide(facts(I::OtherCancer, T::BelowT4, false, M::Close)));
        assert!(
            other.summary.contains("not rectal cancer"),
            "{}",
            other.summary
        );
    }

    #[test]
    fn conditional_would_need_what_is_missing() {
        let c = one(decide(facts(
            I::RectalCancer,
            T::T4,
            false,
            M::NotDocumented,
        )));
        assert_hypothetical(&c);
        assert!(
            c.summary.starts_with("IORT would need: margin status"),
            "{}",
            c.summary
        );
        assert!(detail(&c).contains("**To document:**"));
        assert!(detail(&c).contains("LOINC 33737-8"), "how to document");
    }

    #[test]
    fn indeterminate_is_honest_and_lists_no_findings() {
        let mut f = covered_facts();
        f.unavailable = Some("Condition query: the FHIR server answered 503".to_owned());
        let c = one(decide(f));
        assert_hypothetical(&c);
        assert!(
            c.summary.contains("could not be determined"),
            "{}",
            c.summary
        );
        assert!(detail(&c).contains("answered 503"));
        assert!(
            !detail(&c).contains("Observation/margin-1"),
            "a partial record's findings are not shown"
        );
        // Also when the partial record shows no cancer at all: it may just not have been read.
        let mut f = facts(I::NotDocumented, T::NotDocumented, false, M::NotDocumented);
        f.unavailable = Some("Condition query: timeout".to_owned());
        assert!(one(decide(f)).summary.contains("could not be determined"));
    }

    /// Issue 20 for the what-if card: clinical words first, every outcome; codes only in the
    /// closing section for the EHR team.
    #[test]
    fn every_outcome_speaks_clinically_before_the_ehr_section() {
        let mut unavailable = covered_facts();
        unavailable.unavailable = Some("the record could not be read".to_owned());
        for f in [
            covered_facts(),
            facts(I::RectalCancer, T::T4, false, M::Clear),
            facts(I::RectalCancer, T::NotDocumented, false, M::NotDocumented),
            unavailable,
        ] {
            let c = one(decide(f));
            let d = detail(&c);
            let at = d
                .find("**How to record this so it is found**")
                .unwrap_or_else(|| panic!("no EHR team section: {d}"));
            for text in [c.summary.as_str(), &d[..at]] {
                for marker in ["SNOMED", "LOINC", "ICD-10", "http://", "urn:oid"] {
                    assert!(
                        !text.contains(marker),
                        "{marker} before the EHR section: {text}"
                    );
                }
            }
            if d.contains("**To document:**") {
                assert!(d.contains("file the pathology report"), "{d}");
                assert!(d.contains("Neither the T category"), "{d}");
            }
        }
    }

    #[test]
    fn no_cancer_documented_means_no_card() {
        let d = decide(facts(
            I::NotDocumented,
            T::NotDocumented,
            false,
            M::NotDocumented,
        ));
        let resp = renderer().what_if(Some(&d), &CrdConfiguration::default(), today());
        assert!(resp.cards.is_empty() && resp.system_actions.is_empty());
        assert!(
            renderer()
                .what_if(None, &CrdConfiguration::default(), today())
                .cards
                .is_empty()
        );
    }

    #[test]
    fn max_cards_is_honoured_and_coverage_info_changes_nothing() {
        let d = decide(covered_facts());
        let r = renderer();
        let zero = CrdConfiguration {
            coverage_info: true,
            max_cards: Some(0),
        };
        assert!(r.what_if(Some(&d), &zero, today()).cards.is_empty());
        for crd in [
            CrdConfiguration {
                coverage_info: false,
                max_cards: Some(1),
            },
            CrdConfiguration {
                coverage_info: true,
                max_cards: None,
            },
        ] {
            let resp = r.what_if(Some(&d), &crd, today());
            assert_eq!(resp.cards.len(), 1);
            assert!(resp.system_actions.is_empty());
        }
    }

    #[test]
    fn the_fallback_still_says_it_is_hypothetical() {
        let d = decide(covered_facts());
        let p = Policy::load(&Assets::embedded()).expect("policy");
        assert!(fallback_summary(&d, &p).contains("would meet"));
        assert!(fallback_detail(&d, &p).starts_with("No IORT order exists yet"));
    }
}
