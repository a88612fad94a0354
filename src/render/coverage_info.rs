//! The Da Vinci CRD `coverage-information` extension and the `update` system action that
//! writes it onto the order.
//!
//! Built to the extension definition in the CRD IG source (HL7/davinci-crd,
//! `input/fsh/extensions/CoverageInformation.fsh`, STU 2.2.1) and its invariants:
//! - crd-ci-q2: `not-covered` never carries `pa-needed`;
//! - crd-ci-q3: `conditional` carries `info-needed`;
//! - crd-ci-q6: `info-needed` = `OTH` carries a `reason` (and, per the element's comment, a
//!   `detail` explaining what is needed);
//! - crd-ci-q7: a `reason` has text or a code from the CRD assertion-reason value set;
//! - crd-ci-q9: `indeterminate` carries a `reason` (resp-43: code `technical`, details in
//!   `reason.text`).
//!
//! `pa-needed` is never sent: the BCBSAZ criteria say nothing about prior authorization, and
//! guessing `no-auth` would be a payer commitment this service cannot make. The card tells
//! the clinician to check the payer's prior-authorization requirements instead.
//!
//! The action carries the order exactly as received plus this extension (resp-37: change
//! nothing else). An earlier coverage-information extension for the same Coverage (a
//! re-signed order) is replaced rather than piled up, and when it already says the same
//! thing no action is sent at all (resp-35: no update unless something is new).

use chrono::NaiveDate;
use serde_json::{Map, Value, json};

use crate::decision::{Covered, Determination};
use crate::hook::{Action, ActionType};
use crate::policy::Policy;

pub const COVERAGE_INFORMATION_URL: &str =
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";
/// CRD temporary code system: assertion reasons (`technical`, `coverage-not-found`) and, for
/// clients on CRD 2.0/2.1, detail codes.
pub const CRD_TEMP_SYSTEM: &str = "http://hl7.org/fhir/us/davinci-crd/CodeSystem/temp";
/// The THO code system that replaced the temporary detail codes (CRD 2.2).
pub const CRD_COVERAGE_DETAIL_SYSTEM: &str =
    "http://terminology.hl7.org/CodeSystem/crd-coverage-detail";

/// Sub-extensions that differ on every call even when nothing changed.
const PER_CALL_SUBEXTENSIONS: [&str; 2] = ["date", "coverage-assertion-id"];

/// Longest `reason.text` taken from a technical failure message.
const MAX_TECHNICAL_TEXT: usize = 200;

fn sub(url: &str, value_key: &str, value: Value) -> Value {
    let mut m = Map::new();
    m.insert("url".to_owned(), Value::String(url.to_owned()));
    m.insert(value_key.to_owned(), value);
    Value::Object(m)
}

fn reason(coding: Option<(&str, &str)>, text: String) -> Value {
    let mut cc = Map::new();
    if let Some((code, display)) = coding {
        cc.insert(
            "coding".to_owned(),
            json!([{"system": CRD_TEMP_SYSTEM, "code": code, "display": display}]),
        );
    }
    cc.insert("text".to_owned(), Value::String(text));
    sub("reason", "valueCodeableConcept", Value::Object(cc))
}

/// A `detail` sub-extension; `code` is sent in both the 2.2 (THO) and the older (temp)
/// code system so clients of any CRD 2.x version recognise it.
fn detail(
    category: &str,
    code: &str,
    display: &str,
    value: Value,
    qualification: Option<String>,
) -> Value {
    let mut parts = vec![
        sub("category", "valueCode", json!(category)),
        sub(
            "code",
            "valueCodeableConcept",
            json!({"coding": [
                {"system": CRD_COVERAGE_DETAIL_SYSTEM, "code": code, "display": display},
                {"system": CRD_TEMP_SYSTEM, "code": code, "display": display}
            ]}),
        ),
        value,
    ];
    if let Some(q) = qualification {
        parts.push(sub("qualification", "valueString", Value::String(q)));
    }
    json!({"url": "detail", "extension": parts})
}

fn truncate(s: &str, max: usize) -> String {
    super::text::truncate_chars(&super::text::one_line(s), max)
}

/// The coverage-information extension for one determination.
pub fn extension(
    d: &Determination,
    policy: &Policy,
    today: NaiveDate,
    assertion_id: &str,
) -> Value {
    let facts = &d.facts;
    let mut ext: Vec<Value> = Vec::new();

    // coverage (1..1). Without a Coverage in the record there is nothing to point at; a
    // display-only Reference keeps the extension valid and says why.
    let coverage_value = match &facts.coverage {
        Some(c) => {
            let mut r = Map::new();
            r.insert("reference".to_owned(), Value::String(c.reference.clone()));
            if let Some(p) = &c.payor {
                r.insert("display".to_owned(), Value::String(p.clone()));
            }
            Value::Object(r)
        }
        None => json!({"display": "No active Coverage was found in the patient record"}),
    };
    ext.push(sub("coverage", "valueReference", coverage_value));
    ext.push(sub("covered", "valueCode", json!(d.covered.code())));

    if d.covered == Covered::Conditional {
        ext.push(sub("doc-needed", "valueCode", json!("clinical")));
        // None of performer / location / timeframe / contract-window / detail-code fits
        // "clinical facts not yet documented", hence OTH with a reason and details.
        ext.push(sub("info-needed", "valueCode", json!("OTH")));
    }

    if let Some(b) = &facts.order.billing_code {
        let mut coding = Map::new();
        coding.insert("system".to_owned(), Value::String(b.system.clone()));
        coding.insert("code".to_owned(), Value::String(b.code.clone()));
        if let Some(disp) = &b.display {
            coding.insert("display".to_owned(), Value::String(disp.clone()));
        }
        ext.push(sub("billingCode", "valueCoding", Value::Object(coding)));
    }

    match d.covered {
        Covered::Covered => {}
        Covered::NotCovered => {
            let why: Vec<&str> = d
                .failing()
                .map(|r| policy.criterion(r.criterion).short_not_met.as_str())
                .collect();
            ext.push(reason(
                None,
                format!(
                    "Does not meet the {} criteria for intraoperative radiotherapy ({}); \
                     experimental or investigational under the policy",
                    policy.payer.short_label,
                    why.join("; ")
                ),
            ));
        }
        Covered::Conditional => {
            let what: Vec<&str> = d
                .missing
                .iter()
                .map(|c| policy.criterion(*c).short_missing.as_str())
                .collect();
            ext.push(reason(
                None,
                format!(
                    "Coverage depends on documentation not found in the record: {}",
                    what.join("; ")
                ),
            ));
        }
        Covered::Indeterminate => {
            let failure = d
                .technical_reason
                .as_deref()
                .map(|t| truncate(t, MAX_TECHNICAL_TEXT))
                .unwrap_or_else(|| "unknown failure".to_owned());
            ext.push(reason(
                Some(("technical", "Technical issues")),
                format!(
                    "The patient record could not be read ({failure}); coverage was not evaluated"
                ),
            ));
        }
    }
    if facts.coverage.is_none() {
        ext.push(reason(
            Some(("coverage-not-found", "Coverage not found")),
            "No active Coverage was available to the service; only the policy criteria were assessed"
                .to_owned(),
        ));
    }

    // What to document, one instruction per missing criterion.
    if d.covered == Covered::Conditional {
        for c in &d.missing {
            let text = policy.criterion(*c);
            // What the record already holds but could not be used says what to do; the generic
            // "record X" would ask for something that is there.
            let notes = d
                .criterion(*c)
                .map(|r| r.notes.join(" "))
                .filter(|n| !n.is_empty());
            let instruction = notes.unwrap_or_else(|| text.how_to_document.clone());
            ext.push(detail(
                "cat-limitation",
                "instructions",
                "Instructions",
                sub(
                    "value",
                    "valueString",
                    Value::String(format!("{}: {}", text.label, instruction)),
                ),
                None,
            ));
        }
    }

    // Which policy (and which version of it) the assertion rests on, and its limits.
    let mut qualification = format!(
        "Assessed against {}; benefit eligibility and prior authorization were not evaluated",
        policy.version_label()
    );
    if policy.review_overdue(today) {
        qualification.push_str(&format!(
            "; the policy's scheduled review ({}) has passed, a newer version may apply",
            policy.document.next_review.text
        ));
    }
    ext.push(detail(
        "cat-other",
        "policy-link",
        "Policy Link",
        sub(
            "value",
            "valueUrl",
            Value::String(policy.document.link.url.clone()),
        ),
        Some(qualification),
    ));

    ext.push(sub(
        "date",
        "valueDate",
        Value::String(today.format("%Y-%m-%d").to_string()),
    ));
    ext.push(sub(
        "coverage-assertion-id",
        "valueString",
        Value::String(assertion_id.to_owned()),
    ));

    json!({"url": COVERAGE_INFORMATION_URL, "extension": ext})
}

/// The sub-extensions that carry meaning, in a canonical order, to compare two assertions.
fn meaning(ext: &Value) -> Vec<String> {
    let mut parts: Vec<String> = ext
        .get("extension")
        .and_then(Value::as_array)
        .map(|subs| {
            subs.iter()
                .filter(|s| {
                    s.get("url")
                        .and_then(Value::as_str)
                        .is_none_or(|u| !PER_CALL_SUBEXTENSIONS.contains(&u))
                })
                .map(Value::to_string)
                .collect()
        })
        .unwrap_or_default();
    parts.sort();
    parts
}

/// Which Coverage an assertion is about: the `coverage` reference (its display may change
/// between calls), or the whole value for a display-only reference.
fn coverage_of(ext: &Value) -> Option<Value> {
    let value = ext
        .get("extension")?
        .as_array()?
        .iter()
        .find(|s| s.get("url").and_then(Value::as_str) == Some("coverage"))?
        .get("valueReference")?;
    Some(match value.get("reference") {
        Some(r) => r.clone(),
        None => value.clone(),
    })
}

fn is_coverage_information(ext: &Value) -> bool {
    ext.get("url").and_then(Value::as_str) == Some(COVERAGE_INFORMATION_URL)
}

/// The `update` system action for one determination, or `None` when the order cannot be
/// updated (no id, not a JSON object, a malformed `extension`) or already carries the same
/// assertion. Reasons are logged by resource type only.
pub fn action(
    d: &Determination,
    policy: &Policy,
    today: NaiveDate,
    assertion_id: &str,
) -> Option<Action> {
    let order = &d.facts.order;
    let Value::Object(resource) = &order.raw else {
        tracing::warn!(resource_type = %order.resource_type, "order is not a JSON object; no coverage-information action");
        return None;
    };
    let Some(id) = resource.get("id").and_then(Value::as_str) else {
        // Without an id the EHR cannot tell which draft order to update.
        tracing::warn!(resource_type = %order.resource_type, "order has no id; no coverage-information action");
        return None;
    };
    let new_ext = extension(d, policy, today, assertion_id);
    let new_coverage = coverage_of(&new_ext);

    let mut resource = resource.clone();
    let existing = match resource.get("extension") {
        None => Vec::new(),
        Some(Value::Array(a)) => a.clone(),
        Some(_) => {
            tracing::warn!(resource_type = %order.resource_type, resource_id = %id, "order.extension is not an array; no coverage-information action");
            return None;
        }
    };
    let (previous, mut kept): (Vec<Value>, Vec<Value>) = existing
        .into_iter()
        .partition(|e| is_coverage_information(e) && coverage_of(e) == new_coverage);
    let new_meaning = meaning(&new_ext);
    if previous.iter().any(|p| meaning(p) == new_meaning) {
        tracing::debug!(resource_type = %order.resource_type, resource_id = %id, "order already carries this coverage assertion; no update");
        return None;
    }
    kept.push(new_ext);
    // In place, so the order's other elements keep their positions (resp-37: only the
    // coverage-information extensions change).
    match resource.get_mut("extension") {
        Some(slot) => *slot = Value::Array(kept),
        None => {
            resource.insert("extension".to_owned(), Value::Array(kept));
        }
    }

    Some(Action {
        kind: ActionType::Update,
        description: format!(
            "Record {} coverage information ({}) on {}/{}",
            policy.payer.short_label,
            d.covered.code(),
            order.resource_type,
            id
        ),
        resource: Some(Value::Object(resource)),
    })
}
