//! Stage 5 of the pipeline: cards and CRD coverage-information system actions.
//!
//! For each IORT order: one card a clinician can read at a glance (summary, criteria with
//! their evidence, what to document, which policy version was applied, a link to it) and one
//! `update` system action that stores the same assertion computably on the order
//! ([`coverage_info`]).
//!
//! For the patient-view service, which assesses a hypothetical IORT order, [`what_if`] words
//! the same determination as one "IORT would ..." card without any system action.
//!
//! The card text lives in minijinja templates under `cards/` (see `cards/README.md`), so a
//! policy editor can reword cards without Rust. They are compiled once in
//! [`Renderer::load`]; a template that does not compile stops start-up with the file's name,
//! and one that fails while rendering (e.g. a misspelt variable) falls back to a short
//! built-in text and is logged by template name, so a card is never lost.

pub mod context;
pub mod coverage_info;
pub mod text;
pub mod what_if;

pub use what_if::{WHAT_IF_DETAIL_TEMPLATE, WHAT_IF_SUMMARY_TEMPLATE};

use minijinja::{AutoEscape, Environment, UndefinedBehavior, Value as JValue};

use crate::assets::{Assets, Folder};
use crate::decision::{Covered, Determination};
use crate::hook::{Card, CdsResponse, CrdConfiguration, Indicator, Link, Source};
use crate::policy::Policy;

/// The one-line summary template (plain text), for every outcome.
pub const SUMMARY_TEMPLATE: &str = "summary.txt.j2";
/// Folder (under `cards/`) of templates the others may import or include.
pub const PARTIALS_DIR: &str = "partials";

/// The detail template (GitHub Markdown) for an outcome.
pub fn detail_template(covered: Covered) -> &'static str {
    match covered {
        Covered::Covered => "covered.md.j2",
        Covered::NotCovered => "not-covered.md.j2",
        Covered::Conditional => "conditional.md.j2",
        Covered::Indeterminate => "indeterminate.md.j2",
    }
}

const ALL_OUTCOMES: [Covered; 4] = [
    Covered::Covered,
    Covered::NotCovered,
    Covered::Conditional,
    Covered::Indeterminate,
];

const MARKDOWN: AutoEscape = AutoEscape::Custom("markdown");

#[derive(Debug, thiserror::Error)]
pub enum RenderError {
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// A template does not compile; names the file and line.
    #[error("cards/{name}: template does not compile: {message}")]
    Template { name: String, message: String },
}

/// Card templates and policy identity, compiled once at start-up.
pub struct Renderer {
    env: Environment<'static>,
    policy: Policy,
}

impl std::fmt::Debug for Renderer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Renderer")
            .field(
                "templates",
                &self.env.templates().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("policy", &self.policy.version_label())
            .finish()
    }
}

/// Markdown templates escape every interpolated value (record text must not become
/// Markdown); `|safe` opts out, for trusted values such as the policy URL.
fn formatter(
    out: &mut minijinja::Output,
    state: &minijinja::State,
    value: &JValue,
) -> Result<(), minijinja::Error> {
    if state.auto_escape() != MARKDOWN {
        return minijinja::escape_formatter(out, state, value);
    }
    if value.is_undefined() || value.is_none() {
        return Ok(());
    }
    let written = if value.is_safe() {
        out.write_str(value.as_str().unwrap_or_default())
    } else if let Some(s) = value.as_str() {
        out.write_str(&text::escape_markdown(s))
    } else {
        out.write_str(&text::escape_markdown(&value.to_string()))
    };
    written.map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
}

impl Renderer {
    /// Compile the card templates: the summary, one detail template per outcome, the two
    /// what-if templates, and every `*.j2` under `cards/partials/`.
    pub fn load(assets: &Assets, policy: &Policy) -> Result<Self, RenderError> {
        let mut env = Environment::new();
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_auto_escape_callback(|name| {
            if name.ends_with(".md.j2") {
                MARKDOWN
            } else {
                AutoEscape::None
            }
        });
        env.set_formatter(formatter);

        let mut names: Vec<String> = vec![SUMMARY_TEMPLATE.to_owned()];
        names.extend(ALL_OUTCOMES.map(|c| detail_template(c).to_owned()));
        names.extend([WHAT_IF_SUMMARY_TEMPLATE, WHAT_IF_DETAIL_TEMPLATE].map(str::to_owned));
        names.extend(assets.list(Folder::Cards, PARTIALS_DIR, ".j2"));
        for name in names {
            let source = assets.read(Folder::Cards, &name)?;
            env.add_template_owned(name.clone(), source)
                .map_err(|e| RenderError::Template {
                    name: name.clone(),
                    message: e.to_string(),
                })?;
        }
        Ok(Self {
            env,
            policy: policy.clone(),
        })
    }

    /// The names of the compiled templates.
    pub fn template_names(&self) -> Vec<&str> {
        self.env.templates().map(|(name, _)| name).collect()
    }

    /// Cards and system actions for the determinations, in their order.
    pub fn render(
        &self,
        determinations: &[Determination],
        crd: &CrdConfiguration,
        today: chrono::NaiveDate,
    ) -> CdsResponse {
        let mut cards = Vec::with_capacity(determinations.len());
        let mut system_actions = Vec::new();
        for d in determinations {
            cards.push(self.card(d, today));
            if crd.coverage_info {
                let assertion_id = time_ordered_id();
                if let Some(a) = coverage_info::action(d, &self.policy, today, &assertion_id) {
                    system_actions.push(a);
                }
            }
        }
        let cards = limit_cards(cards, determinations, crd.max_cards);
        CdsResponse {
            cards,
            system_actions,
        }
    }

    /// One card for one determination.
    pub fn card(&self, d: &Determination, today: chrono::NaiveDate) -> Card {
        let p = &self.policy;
        self.compose(
            d,
            today,
            CardTexts {
                summary_template: SUMMARY_TEMPLATE,
                detail_template: detail_template(d.covered),
                fallback_summary: &|| fallback_summary(d, p),
                fallback_detail: &|| fallback_detail(d, p),
            },
            // CRD resp-1: from the clinician's view; a coverage problem is a warning, never
            // critical.
            match d.covered {
                Covered::Covered => Indicator::Info,
                _ => Indicator::Warning,
            },
            // Reasons to proceed anyway only make sense when the order does not (yet) meet
            // the policy; there is nothing to override on a covered or undetermined order.
            match d.covered {
                Covered::NotCovered | Covered::Conditional => p.override_reasons.clone(),
                Covered::Covered | Covered::Indeterminate => Vec::new(),
            },
        )
    }

    /// A card from a summary and a detail template (with built-in fallbacks when a template
    /// fails), carrying the policy's source, topic and link. Shared by the order cards and the
    /// patient-view what-if card so both stay alike in everything but their wording.
    pub(crate) fn compose(
        &self,
        d: &Determination,
        today: chrono::NaiveDate,
        texts: CardTexts<'_>,
        indicator: Indicator,
        override_reasons: Vec<crate::hook::Coding>,
    ) -> Card {
        let ctx = JValue::from_serialize(context::build(d, &self.policy, today));
        let summary = self
            .render_template(texts.summary_template, &ctx)
            .map(|s| text::one_line(&s))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(texts.fallback_summary);
        let summary = text::truncate_chars(&summary, text::SUMMARY_MAX_CHARS);
        let detail = self
            .render_template(texts.detail_template, &ctx)
            .map(|s| text::tidy_markdown(&s))
            .filter(|s| !s.is_empty())
            .unwrap_or_else(texts.fallback_detail);
        let p = &self.policy;
        Card {
            uuid: Some(time_ordered_id()),
            summary,
            detail: Some(detail),
            indicator,
            source: Source {
                label: p.payer.name.clone(),
                url: Some(p.document.link.url.clone()),
                topic: Some(p.card_topic.clone()),
            },
            override_reasons,
            links: vec![Link {
                label: p.document.link.label.clone(),
                url: p.document.link.url.clone(),
                kind: "absolute".to_owned(),
            }],
        }
    }

    /// Render a compiled template; `None` (logged with the template's name, never the
    /// context) when it fails.
    fn render_template(&self, name: &str, ctx: &JValue) -> Option<String> {
        let result = self.env.get_template(name).and_then(|t| t.render(ctx));
        match result {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::error!(
                    template = name,
                    kind = ?e.kind(),
                    line = ?e.line(),
                    "card template failed to render; using the built-in text"
                );
                None
            }
        }
    }
}

/// Which templates a card is written from, and the built-in texts used when one fails.
pub(crate) struct CardTexts<'a> {
    pub summary_template: &'a str,
    pub detail_template: &'a str,
    pub fallback_summary: &'a dyn Fn() -> String,
    pub fallback_detail: &'a dyn Fn() -> String,
}

/// Most important first when the client caps the number of cards: an order that is not (or
/// not yet) covered needs the clinician's attention; a covered one does not.
fn importance(c: Covered) -> u8 {
    match c {
        Covered::NotCovered | Covered::Conditional | Covered::Indeterminate => 0,
        Covered::Covered => 1,
    }
}

/// Keep at most `max` cards, the most important ones, in their original order.
fn limit_cards(
    cards: Vec<Card>,
    determinations: &[Determination],
    max: Option<usize>,
) -> Vec<Card> {
    let Some(max) = max else { return cards };
    if cards.len() <= max {
        return cards;
    }
    let mut ranked: Vec<usize> = (0..cards.len()).collect();
    ranked.sort_by_key(|&i| {
        (
            determinations.get(i).map_or(1, |d| importance(d.covered)),
            i,
        )
    });
    let mut keep: Vec<usize> = ranked.into_iter().take(max).collect();
    keep.sort_unstable();
    let mut keep = keep.into_iter().peekable();
    cards
        .into_iter()
        .enumerate()
        .filter_map(|(i, c)| {
            if keep.peek() == Some(&i) {
                keep.next();
                Some(c)
            } else {
                None
            }
        })
        .collect()
}

fn order_label(d: &Determination) -> String {
    match &d.facts.order.billing_code {
        Some(c) => format!("IORT (CPT {})", c.code),
        None => "IORT".to_owned(),
    }
}

/// Used only when the summary template fails: still actionable, no clinical detail.
fn fallback_summary(d: &Determination, p: &Policy) -> String {
    let outcome = match d.covered {
        Covered::Covered => format!("meets {} criteria", p.payer.short_label),
        Covered::NotCovered => format!("does not meet {} criteria", p.payer.short_label),
        Covered::Conditional => format!(
            "{} criteria not documented; see details",
            p.payer.short_label
        ),
        Covered::Indeterminate => {
            format!("{} coverage could not be determined", p.payer.short_label)
        }
    };
    format!("{}: {}", order_label(d), outcome)
}

/// Used only when a detail template fails.
fn fallback_detail(d: &Determination, p: &Policy) -> String {
    format!(
        "Coverage assessment: {}. Applied policy: {}. The full card text could not be \
         produced; see the policy link.",
        d.covered.code(),
        p.version_label()
    )
}

/// A new UUID for a card or a `coverage-assertion-id`: version 7, whose leading bits are the
/// time, so ids handed out one after another sort one after another. The audit store indexes
/// determinations by both; random (version 4) keys land all over those indexes, and every
/// record of a batch dirtied a different index page, each written whole to SQLite's
/// write-ahead log (and PostgreSQL's). The time an id reveals is the decision's, which the
/// EHR already knows. Still 74 random and counter bits: unguessable, unique.
fn time_ordered_id() -> String {
    uuid::Uuid::now_v7().to_string()
}

#[cfg(test)]
mod tests;
