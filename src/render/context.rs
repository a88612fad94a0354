//! The variables a card template sees, built from one [`Determination`] and the [`Policy`].
//!
//! Templates get plain strings, booleans and lists (documented in `cards/README.md`), never
//! Rust enums, so a policy editor can write `{% if outcome == "conditional" %}` without
//! knowing the code. Every key is always present (`none` when there is nothing), because
//! the templates run with strict undefined handling: a misspelt variable is an error that
//! falls back to the built-in text and is logged, rather than a silently empty sentence.

use chrono::NaiveDate;
use serde::Serialize;

use crate::decision::{CriterionResult, Determination, Tri};
use crate::facts::{Evidence, IndicationStatus, MarginStatus, TCategory};
use crate::policy::Policy;

#[derive(Debug, Serialize)]
pub struct CardContext<'a> {
    /// `covered` | `not-covered` | `conditional` | `indeterminate`.
    pub outcome: &'static str,
    pub order: OrderCtx,
    /// All three criteria, in policy order.
    pub criteria: Vec<CriterionCtx>,
    /// The criteria not documented (what to record); empty unless conditional.
    pub missing: Vec<CriterionCtx>,
    /// The criteria documented as not met; may be non-empty only for not-covered.
    pub not_met: Vec<CriterionCtx>,
    pub facts: FactsCtx,
    pub coverage: Option<CoverageCtx>,
    pub record_issues: Vec<IssueCtx>,
    pub technical_reason: Option<String>,
    pub policy: PolicyCtx<'a>,
    /// ISO date of the assessment.
    pub today: String,
}

#[derive(Debug, Serialize)]
pub struct OrderCtx {
    /// `Type/id`, or none when the EHR sent no id.
    pub reference: Option<String>,
    pub display: String,
    pub cpt: Option<CodeCtx>,
}

#[derive(Debug, Serialize)]
pub struct CodeCtx {
    pub system: String,
    pub code: String,
    pub display: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct CriterionCtx {
    /// `rectal-cancer` | `positive-or-close-margins` | `t4-or-recurrent`.
    pub id: &'static str,
    pub label: String,
    pub requirement: String,
    /// `met` | `not-met` | `unknown`.
    pub value: &'static str,
    /// For display: `met` | `not met` | `not documented`.
    pub status_label: &'static str,
    pub short_missing: String,
    pub short_not_met: String,
    /// What to do, in clinical words.
    pub to_document: String,
    /// How to record it so the service finds it (codes, resource types): for the EHR team.
    pub how_to_document: String,
    pub evidence: Vec<EvidenceCtx>,
    /// What the record holds for this criterion but could not be used, and what to do about
    /// it (e.g. a T category linked to no cancer); empty when there is nothing to say.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct EvidenceCtx {
    pub reference: String,
    pub date: Option<String>,
    /// `diagnosis`, `pathology`, `staging`, `surgery`, `order`.
    pub source: &'static str,
    /// In clinical words, no codes.
    pub detail: String,
    /// The codes it was recognised by (for the EHR team).
    pub codes: Vec<String>,
}

/// The facts behind the criteria, as codes (for short phrases in summaries).
#[derive(Debug, Serialize)]
pub struct FactsCtx {
    /// `rectal-cancer` | `other-cancer` | `other-diagnosis` | `reason-unavailable` |
    /// `not-documented`.
    pub indication: &'static str,
    /// `t4` | `below-t4` | `not-documented`.
    pub t_category: &'static str,
    pub recurrent: bool,
    /// `positive` | `close` | `clear` | `not-documented`.
    pub margins: &'static str,
}

#[derive(Debug, Serialize)]
pub struct CoverageCtx {
    pub reference: String,
    pub payor: Option<String>,
}

/// A skipped resource: `Type/id` when known, else the prefetch key / query it came from.
#[derive(Debug, Serialize)]
pub struct IssueCtx {
    pub resource: Option<String>,
    pub source: String,
}

/// The policy as the templates see it: the policy file's data as it is (`policy.payer.name`,
/// `policy.document.title`, `policy.statements.exceptions`, ...), and what follows from it
/// today.
#[derive(Debug, Serialize)]
pub struct PolicyCtx<'a> {
    #[serde(flatten)]
    pub data: &'a Policy,
    /// The next scheduled review date has passed: a newer version may exist.
    pub review_overdue: bool,
    pub version_label: String,
    /// The CPT codes the policy lists, e.g. "0735T, 77424, 77425, 77469".
    pub cpt_code_list: String,
}

fn iso(d: NaiveDate) -> String {
    d.format("%Y-%m-%d").to_string()
}

fn evidence(e: &Evidence) -> EvidenceCtx {
    EvidenceCtx {
        reference: e.reference.clone(),
        date: e.date.clone(),
        source: e.source,
        detail: e.detail.clone(),
        codes: e.codes.clone(),
    }
}

fn criterion(r: &CriterionResult, policy: &Policy) -> CriterionCtx {
    let text = policy.criterion(r.criterion);
    CriterionCtx {
        id: r.criterion.id(),
        label: text.label.clone(),
        requirement: text.requirement.clone(),
        value: r.value.code(),
        status_label: match r.value {
            Tri::Met => "met",
            Tri::NotMet => "not met",
            Tri::Unknown => "not documented",
        },
        short_missing: text.short_missing.clone(),
        short_not_met: text.short_not_met.clone(),
        to_document: text.to_document.clone(),
        how_to_document: text.how_to_document.clone(),
        evidence: r.evidence.iter().map(evidence).collect(),
        notes: r.notes.clone(),
    }
}

/// The policy part of the context (the same for every card of a response).
pub fn policy_ctx(policy: &Policy, today: NaiveDate) -> PolicyCtx<'_> {
    PolicyCtx {
        data: policy,
        review_overdue: policy.review_overdue(today),
        version_label: policy.version_label(),
        cpt_code_list: policy.cpt_code_list(),
    }
}

/// The full context for one card.
pub fn build<'a>(d: &Determination, policy: &'a Policy, today: NaiveDate) -> CardContext<'a> {
    let f = &d.facts;
    let criteria: Vec<CriterionCtx> = d.criteria.iter().map(|r| criterion(r, policy)).collect();
    let missing = criteria
        .iter()
        .filter(|c| {
            d.missing
                .iter()
                .any(|m| m.id() == c.id && c.value == Tri::Unknown.code())
        })
        .cloned()
        .collect();
    let not_met = criteria
        .iter()
        .filter(|c| c.value == Tri::NotMet.code())
        .cloned()
        .collect();
    CardContext {
        outcome: d.covered.code(),
        order: OrderCtx {
            reference: f
                .order
                .id
                .is_some()
                .then(|| f.order.reference().to_string()),
            display: f.order.display.clone(),
            cpt: f.order.billing_code.as_ref().map(|c| CodeCtx {
                system: c.system.clone(),
                code: c.code.clone(),
                display: c.display.clone(),
            }),
        },
        criteria,
        missing,
        not_met,
        facts: FactsCtx {
            indication: match f.indication.status {
                IndicationStatus::RectalCancer => "rectal-cancer",
                IndicationStatus::OtherCancer => "other-cancer",
                IndicationStatus::OtherDiagnosis => "other-diagnosis",
                IndicationStatus::ReasonUnavailable => "reason-unavailable",
                IndicationStatus::NotDocumented => "not-documented",
            },
            t_category: match f.staging.category {
                TCategory::T4 => "t4",
                TCategory::BelowT4 => "below-t4",
                TCategory::NotDocumented => "not-documented",
            },
            recurrent: f.recurrence.recurrent,
            margins: match f.margins.status {
                MarginStatus::Positive => "positive",
                MarginStatus::Close => "close",
                MarginStatus::Clear => "clear",
                MarginStatus::NotDocumented => "not-documented",
            },
        },
        coverage: f.coverage.as_ref().map(|c| CoverageCtx {
            reference: c.reference.clone(),
            payor: c.payor.clone(),
        }),
        // Type/id only: the problem text stays in the logs' domain, not on the card.
        record_issues: f
            .record_issues
            .iter()
            .map(|i| IssueCtx {
                resource: i.resource.clone(),
                source: i.source.clone(),
            })
            .collect(),
        technical_reason: d.technical_reason.clone(),
        policy: policy_ctx(policy, today),
        today: iso(today),
    }
}
