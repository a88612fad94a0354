//! The payer policy's identity and rules, loaded from `fhir-profiles/policy/`.
//!
//! Everything a card says about the policy (payer name, title, dates, the link, the criteria
//! texts and what to document for each, the card topic and the override reasons) lives in
//! `fhir-profiles/policy/bcbsaz-iort.json`, so a policy editor can follow a new revision of
//! the payer's document without touching Rust. The *logic* of the criteria is code
//! ([`crate::decision`]); the file only has to name each of the three criteria exactly once.
//!
//! The file is checked strictly at start-up (unknown keys, malformed dates, a missing
//! criterion are errors naming the file and the field): a policy that loads is one the cards
//! can render.

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::assets::{Assets, Folder};
use crate::decision::Criterion;
use crate::hook::Coding;

/// Where the policy data lives, relative to `fhir-profiles/`.
pub const POLICY_FILE: &str = "policy/bcbsaz-iort.json";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(transparent)]
    Asset(#[from] crate::assets::AssetError),
    /// The file is JSON but not a valid policy; names the file and the field.
    #[error("fhir-profiles/{file}: {field}: {message}")]
    Invalid {
        file: &'static str,
        field: String,
        message: String,
    },
}

fn invalid(field: impl Into<String>, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid {
        file: POLICY_FILE,
        field: field.into(),
        message: message.into(),
    }
}

/// The payer, as the clinician knows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Payer {
    /// Full name, e.g. "Blue Cross Blue Shield of Arizona" (CRD: `Card.source.label`).
    pub name: String,
    /// Short form for card summaries, e.g. "BCBSAZ".
    pub short_label: String,
}

/// The policy document: what it is called, its dates, where it is published.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// e.g. "Intraoperative Radiotherapy".
    pub title: String,
    /// e.g. "Evidence-Based Criteria".
    pub document_type: String,
    /// e.g. "Medicine".
    pub section: String,
    pub original_effective: NaiveDate,
    /// The version the service applies.
    pub current_effective: NaiveDate,
    pub last_review: NaiveDate,
    pub last_criteria_revision: NaiveDate,
    pub next_review: NextReview,
    pub link: PolicyLink,
}

/// The payer's next scheduled review of the policy, as the document states it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct NextReview {
    /// As written in the policy, e.g. "3rd quarter 2025".
    pub text: String,
    /// The last day of that period, to tell whether the review date has passed.
    pub due_by: NaiveDate,
}

/// What the policy link points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkTarget {
    /// The policy document itself.
    Policy,
    /// The payer's medical policy index; the user has to search it (see `search_hint`).
    Index,
}

/// The link shown on every card (and carried as the CRD `policy-link` detail).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyLink {
    /// Absolute `https` URL.
    pub url: String,
    pub label: String,
    pub target: LinkTarget,
    /// For an index link: what to search for there.
    #[serde(default)]
    pub search_hint: Option<String>,
}

/// The policy's own statements, quoted on the cards.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Statements {
    pub medically_necessary: String,
    pub investigational: String,
    /// How the payer wants exceptions requested.
    pub exceptions: String,
}

/// The texts for one criterion.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CriterionText {
    /// Named by its [`Criterion::id`] in the file.
    #[serde(rename = "id")]
    pub criterion: Criterion,
    /// Short name, e.g. "Positive or close margins".
    pub label: String,
    /// What the policy requires, as a sentence.
    pub requirement: String,
    /// For a summary when the criterion is not documented, e.g. "margin status".
    pub short_missing: String,
    /// For a summary when the criterion is not met, e.g. "margins clear".
    pub short_not_met: String,
    /// What the clinician should do when the criterion is not documented, in clinical words
    /// (no codes): the card's first instruction.
    pub to_document: String,
    /// Exactly what to record, and how (codes, resource types), for the criterion to be read
    /// from the record: for the EHR team.
    pub how_to_document: String,
}

/// A code the policy applies to.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyCode {
    pub system: String,
    pub code: String,
    pub display: String,
}

/// The policy as data: the file's shape, read by serde and then checked
/// ([`Policy::from_json`]). The card templates see it as it is (`policy.payer.name`,
/// `policy.document.title`, ...; see `cards/README.md`).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    pub payer: Payer,
    /// The file's `policy` object (`policy.document` in the card templates).
    #[serde(rename(deserialize = "policy"))]
    pub document: Document,
    /// The CPT codes the policy lists.
    pub cpt_codes: Vec<PolicyCode>,
    pub statements: Statements,
    /// One per [`Criterion`], in the order of [`Criterion::ALL`] (sorted so at load).
    pub criteria: Vec<CriterionText>,
    /// `Card.source.topic` (CRD: required, extensible binding to the card-type value set).
    pub card_topic: Coding,
    /// `Card.overrideReasons` offered when an order does not (yet) meet the policy.
    pub override_reasons: Vec<Coding>,
}

impl Policy {
    /// Load and check `fhir-profiles/policy/bcbsaz-iort.json`.
    pub fn load(assets: &Assets) -> Result<Self, PolicyError> {
        let json = assets.read_json(Folder::Profiles, POLICY_FILE)?;
        Self::from_json(json)
    }

    /// Read the file's JSON and check it: unknown keys, malformed dates and a criterion
    /// missing or listed twice are errors naming the field (its path in the file).
    pub fn from_json(json: serde_json::Value) -> Result<Self, PolicyError> {
        let mut policy: Policy = serde_path_to_error::deserialize(json).map_err(|e| {
            let field = e.path().to_string();
            invalid(field, e.into_inner().to_string())
        })?;
        policy.check()?;
        Ok(policy)
    }

    /// What serde cannot say: texts not blank, dates in order, an https link, every
    /// criterion exactly once (then sorted into [`Criterion::ALL`] order).
    fn check(&mut self) -> Result<(), PolicyError> {
        let d = &self.document;
        let mut texts: Vec<(String, &str)> = vec![
            ("payer.name".into(), &self.payer.name),
            ("payer.short_label".into(), &self.payer.short_label),
            ("policy.title".into(), &d.title),
            ("policy.document_type".into(), &d.document_type),
            ("policy.section".into(), &d.section),
            ("policy.next_review.text".into(), &d.next_review.text),
            ("policy.link.label".into(), &d.link.label),
            (
                "statements.medically_necessary".into(),
                &self.statements.medically_necessary,
            ),
            (
                "statements.investigational".into(),
                &self.statements.investigational,
            ),
            ("statements.exceptions".into(), &self.statements.exceptions),
        ];
        for (i, c) in self.cpt_codes.iter().enumerate() {
            texts.push((format!("cpt_codes[{i}].system"), &c.system));
            texts.push((format!("cpt_codes[{i}].code"), &c.code));
            texts.push((format!("cpt_codes[{i}].display"), &c.display));
        }
        for (i, c) in self.criteria.iter().enumerate() {
            for (name, value) in [
                ("label", &c.label),
                ("requirement", &c.requirement),
                ("short_missing", &c.short_missing),
                ("short_not_met", &c.short_not_met),
                ("to_document", &c.to_document),
                ("how_to_document", &c.how_to_document),
            ] {
                texts.push((format!("criteria[{i}].{name}"), value));
            }
        }
        if let Some((field, _)) = texts.iter().find(|(_, v)| v.trim().is_empty()) {
            return Err(invalid(field.as_str(), "must not be empty"));
        }

        if d.current_effective < d.original_effective {
            return Err(invalid(
                "policy.current_effective",
                "is before policy.original_effective",
            ));
        }
        if d.next_review.due_by < d.last_review {
            return Err(invalid(
                "policy.next_review.due_by",
                "is before policy.last_review",
            ));
        }
        // Card links must be absolute (CDS Hooks `absolute` link type); no plain http.
        let url = d.link.url.trim();
        if !url.starts_with("https://") || url.len() <= "https://".len() {
            return Err(invalid("policy.link.url", "must be an absolute https URL"));
        }
        self.document.link.url = url.to_owned();
        if self
            .document
            .link
            .search_hint
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            self.document.link.search_hint = None;
        }
        if self.cpt_codes.is_empty() {
            return Err(invalid("cpt_codes", "must list at least one code"));
        }

        for (i, c) in self.criteria.iter().enumerate() {
            if self.criteria[..i]
                .iter()
                .any(|o| o.criterion == c.criterion)
            {
                return Err(invalid(
                    format!("criteria[{i}].id"),
                    format!("`{}` is listed twice", c.criterion.id()),
                ));
            }
        }
        if let Some(c) = Criterion::ALL
            .into_iter()
            .find(|c| !self.criteria.iter().any(|t| t.criterion == *c))
        {
            return Err(invalid(
                "criteria",
                format!("criterion `{}` is missing", c.id()),
            ));
        }
        self.criteria.sort_by_key(|t| t.criterion);

        coding("card_topic", &self.card_topic)?;
        for (i, c) in self.override_reasons.iter().enumerate() {
            coding(&format!("override_reasons[{i}]"), c)?;
        }
        Ok(())
    }

    /// The texts for one criterion. Every criterion has texts (checked at load).
    pub fn criterion(&self, criterion: Criterion) -> &CriterionText {
        // `from_json` guarantees exactly one entry per criterion in `Criterion::ALL` order.
        let index = Criterion::ALL
            .iter()
            .position(|c| *c == criterion)
            .unwrap_or(0);
        &self.criteria[index]
    }

    /// Whether the policy's next scheduled review date has passed: the payer may have
    /// published a newer version than the one applied, and the card should say so.
    pub fn review_overdue(&self, today: NaiveDate) -> bool {
        today > self.document.next_review.due_by
    }

    /// Which version was applied, for cards and the CRD detail, e.g.
    /// `BCBSAZ Evidence-Based Criteria "Intraoperative Radiotherapy", effective 2024-09-03`.
    pub fn version_label(&self) -> String {
        format!(
            "{} {} \"{}\", effective {}",
            self.payer.short_label,
            self.document.document_type,
            self.document.title,
            self.document.current_effective.format("%Y-%m-%d")
        )
    }

    /// The CPT codes the policy lists, e.g. "0735T, 77424, 77425, 77469".
    pub fn cpt_code_list(&self) -> String {
        self.cpt_codes
            .iter()
            .map(|c| c.code.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// A coding the cards show: system, code and display present (CDS Hooks requires a display
/// on override reasons, and the card topic is shown).
fn coding(field: &str, c: &Coding) -> Result<(), PolicyError> {
    if c.system.trim().is_empty() || c.code.trim().is_empty() {
        return Err(invalid(field, "system and code are required"));
    }
    if c.display.as_deref().is_none_or(|d| d.trim().is_empty()) {
        return Err(invalid(field, "display is required"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn embedded_json() -> serde_json::Value {
        Assets::embedded()
            .read_json(Folder::Profiles, POLICY_FILE)
            .unwrap()
    }

    fn err_of(json: serde_json::Value) -> String {
        Policy::from_json(json).unwrap_err().to_string()
    }

    #[test]
    fn embedded_policy_loads_with_the_documents_dates() {
        let p = Policy::load(&Assets::embedded()).unwrap();
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert_eq!(p.payer.name, "Blue Cross Blue Shield of Arizona");
        assert_eq!(p.payer.short_label, "BCBSAZ");
        assert_eq!(p.document.title, "Intraoperative Radiotherapy");
        assert_eq!(p.document.original_effective, d(2022, 9, 19));
        assert_eq!(p.document.current_effective, d(2024, 9, 3));
        assert_eq!(p.document.last_review, d(2024, 9, 3));
        assert_eq!(p.document.last_criteria_revision, d(2023, 9, 21));
        assert_eq!(p.document.next_review.text, "3rd quarter 2025");
        assert_eq!(p.document.next_review.due_by, d(2025, 9, 30));
        let codes: Vec<&str> = p.cpt_codes.iter().map(|c| c.code.as_str()).collect();
        assert_eq!(codes, vec!["0735T", "77424", "77425", "77469"]);
        assert!(p.document.link.url.starts_with("https://"));
        assert_eq!(
            p.card_topic.system,
            "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
        );
        assert_eq!(p.card_topic.code, "coverage-info");
        assert!(!p.override_reasons.is_empty());
        assert!(
            p.statements
                .medically_necessary
                .contains("medically necessary")
        );
    }

    #[test]
    fn criteria_are_in_decision_order_and_lookup_works() {
        let p = Policy::load(&Assets::embedded()).unwrap();
        let ids: Vec<Criterion> = p.criteria.iter().map(|c| c.criterion).collect();
        assert_eq!(ids, Criterion::ALL.to_vec());
        for c in Criterion::ALL {
            assert_eq!(p.criterion(c).criterion, c);
        }
        let margins = p.criterion(Criterion::PositiveOrCloseMargins);
        assert!(margins.how_to_document.contains("395536008"));
        assert!(margins.how_to_document.contains("33737-8"));
    }

    #[test]
    fn criteria_order_in_the_file_does_not_matter() {
        let mut j = embedded_json();
        j["criteria"].as_array_mut().unwrap().reverse();
        let p = Policy::from_json(j).unwrap();
        let ids: Vec<Criterion> = p.criteria.iter().map(|c| c.criterion).collect();
        assert_eq!(ids, Criterion::ALL.to_vec());
    }

    #[test]
    fn review_overdue_after_the_quarter() {
        let p = Policy::load(&Assets::embedded()).unwrap();
        let d = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).unwrap();
        assert!(!p.review_overdue(d(2025, 9, 30)));
        assert!(p.review_overdue(d(2025, 10, 1)));
        assert!(p.review_overdue(d(2026, 11, 26)));
    }

    #[test]
    fn version_label_names_the_applied_version() {
        let p = Policy::load(&Assets::embedded()).unwrap();
        assert_eq!(
            p.version_label(),
            "BCBSAZ Evidence-Based Criteria \"Intraoperative Radiotherapy\", effective 2024-09-03"
        );
    }

    #[test]
    fn bad_date_names_file_and_field() {
        let mut j = embedded_json();
        j["policy"]["current_effective"] = "09/03/24".into();
        let e = err_of(j);
        assert!(e.contains("fhir-profiles/policy/bcbsaz-iort.json"), "{e}");
        assert!(e.contains("policy.current_effective"), "{e}");
    }

    #[test]
    fn unknown_key_is_rejected() {
        let mut j = embedded_json();
        j["payer"]["nmae"] = "typo".into();
        let e = err_of(j);
        assert!(e.contains("bcbsaz-iort.json") && e.contains("nmae"), "{e}");
    }

    #[test]
    fn missing_or_duplicate_criterion_is_rejected() {
        let mut j = embedded_json();
        j["criteria"].as_array_mut().unwrap().pop();
        assert!(err_of(j).contains("`t4-or-recurrent` is missing"));

        let mut j = embedded_json();
        let first = j["criteria"][0].clone();
        j["criteria"][1] = first;
        assert!(err_of(j).contains("listed twice"));

        let mut j = embedded_json();
        j["criteria"][0]["id"] = "rectal".into();
        assert!(err_of(j).contains("criteria[0].id"));
    }

    #[test]
    fn link_must_be_https() {
        let mut j = embedded_json();
        j["policy"]["link"]["url"] = "http://www.azblue.com/".into();
        assert!(err_of(j).contains("policy.link.url"));
    }

    #[test]
    fn override_reason_needs_display() {
        let mut j = embedded_json();
        j["override_reasons"][0]
            .as_object_mut()
            .unwrap()
            .remove("display");
        assert!(err_of(j).contains("override_reasons[0]"));
    }

    #[test]
    fn empty_text_is_rejected() {
        let mut j = embedded_json();
        j["criteria"][1]["how_to_document"] = " ".into();
        assert!(err_of(j).contains("criteria[1].how_to_document"));
    }
}
