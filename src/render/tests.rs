//! Tests for the cards and the coverage-information system actions.

use chrono::NaiveDate;
use serde_json::{Value, json};

use super::coverage_info::{COVERAGE_INFORMATION_URL, CRD_TEMP_SYSTEM};
use super::*;
use crate::decision::test_support::{covered_facts, facts};
use crate::decision::{Criterion, decide};
use crate::facts::{CoverageRef, IndicationStatus as I, MarginStatus as M, TCategory as T};
use crate::hook::ActionType;
use crate::record::RecordIssue;

fn today() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 26).unwrap()
}

fn policy() -> Policy {
    Policy::load(&Assets::embedded()).unwrap()
}

fn renderer() -> Renderer {
    Renderer::load(&Assets::embedded(), &policy()).unwrap()
}

fn covered() -> Determination {
    decide(covered_facts())
}

fn not_covered() -> Determination {
    decide(facts(I::RectalCancer, T::T4, false, M::Clear))
}

fn conditional() -> Determination {
    decide(facts(
        I::RectalCancer,
        T::NotDocumented,
        false,
        M::NotDocumented,
    ))
}

fn indeterminate() -> Determination {
    let mut f = covered_facts();
    f.unavailable = Some("Observation search failed: HTTP 503".to_owned());
    decide(f)
}

fn render_one(d: Determination) -> CdsResponse {
    renderer().render(&[d], &CrdConfiguration::default(), today())
}

/// The coverage-information extension of the only system action.
fn ci_of(resp: &CdsResponse) -> Value {
    assert_eq!(resp.system_actions.len(), 1);
    let resource = resp.system_actions[0].resource.as_ref().unwrap();
    let found: Vec<&Value> = resource["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == COVERAGE_INFORMATION_URL)
        .collect();
    assert_eq!(found.len(), 1);
    found[0].clone()
}

fn subs<'a>(ci: &'a Value, url: &str) -> Vec<&'a Value> {
    ci["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["url"] == url)
        .collect()
}

/// The CRD STU 2 invariants and cardinalities of the extension.
fn assert_crd_invariants(ci: &Value) {
    for one in ["coverage", "covered", "date", "coverage-assertion-id"] {
        assert_eq!(subs(ci, one).len(), 1, "{one} is 1..1");
    }
    assert!(subs(ci, "pa-needed").len() <= 1);
    let covered = subs(ci, "covered")[0]["valueCode"].as_str().unwrap();
    assert!(["covered", "not-covered", "conditional", "indeterminate"].contains(&covered));
    let has = |u: &str| !subs(ci, u).is_empty();
    let value_is = |u: &str, v: &str| subs(ci, u).iter().any(|s| s["valueCode"] == v);
    // crd-ci-q2
    if covered == "not-covered" {
        assert!(!has("pa-needed"), "not-covered must not carry pa-needed");
    }
    // crd-ci-q3
    if ["covered", "pa-needed", "doc-needed"]
        .iter()
        .any(|u| value_is(u, "conditional"))
    {
        assert!(has("info-needed"));
    }
    // crd-ci-q6
    if value_is("info-needed", "OTH") {
        assert!(has("reason"));
        assert!(has("detail"), "OTH should be explained in a detail");
    }
    // crd-ci-q7: reason has text or a code from the CRD reason value set (temp system).
    for r in subs(ci, "reason") {
        let cc = &r["valueCodeableConcept"];
        let coded = cc["coding"]
            .as_array()
            .is_some_and(|c| c.iter().all(|c| c["system"] == CRD_TEMP_SYSTEM));
        assert!(cc["text"].is_string() || coded);
    }
    // crd-ci-q9
    if ["covered", "pa-needed", "doc-needed"]
        .iter()
        .any(|u| value_is(u, "indeterminate"))
    {
        assert!(has("reason"));
    }
    // crd-ci-q1 / q5: never sent by this service.
    assert!(!has("questionnaire") && !has("satisfied-pa-id"));
    // Every detail has category, code and value.
    for d in subs(ci, "detail") {
        for part in ["category", "code", "value"] {
            assert_eq!(subs(d, part).len(), 1, "detail.{part}");
        }
    }
    assert_eq!(subs(ci, "date")[0]["valueDate"], "2026-11-26");
    let id = subs(ci, "coverage-assertion-id")[0]["valueString"]
        .as_str()
        .unwrap();
    assert!(uuid::Uuid::parse_str(id).is_ok());
}

fn assert_common_card(card: &Card, p: &Policy) {
    assert!(card.summary.chars().count() < 140, "{}", card.summary);
    assert!(!card.summary.contains('\n'));
    assert!(uuid::Uuid::parse_str(card.uuid.as_deref().unwrap()).is_ok());
    assert_eq!(card.source.label, "Blue Cross Blue Shield of Arizona");
    assert_eq!(
        card.source.url.as_deref(),
        Some(p.document.link.url.as_str())
    );
    let topic = card.source.topic.as_ref().unwrap();
    assert_eq!(
        topic.system,
        "http://terminology.hl7.org/CodeSystem/cdshooks-card-type"
    );
    assert_eq!(topic.code, "coverage-info");
    assert!(topic.display.is_some());
    assert_eq!(card.links.len(), 1);
    assert_eq!(card.links[0].kind, "absolute");
    assert_eq!(card.links[0].url, p.document.link.url);
    let detail = card.detail.as_deref().unwrap();
    assert!(detail.contains("Intraoperative Radiotherapy"), "{detail}");
    assert!(
        detail.contains("2024-09-03"),
        "policy effective date: {detail}"
    );
    assert!(detail.contains(&p.document.link.url), "{detail}");
}

fn assert_lists_criteria_with_evidence(detail: &str, d: &Determination, p: &Policy) {
    for r in &d.criteria {
        let label = &p.criterion(r.criterion).label;
        assert!(detail.contains(label.as_str()), "{label} missing: {detail}");
        for e in &r.evidence {
            let reference = text::escape_markdown(&e.reference);
            assert!(detail.contains(&reference), "{reference}: {detail}");
            if let Some(date) = &e.date {
                assert!(detail.contains(date.as_str()), "{date}: {detail}");
            }
        }
    }
}

#[test]
fn every_template_compiles_at_load() {
    let r = renderer();
    let names = r.template_names();
    for required in [
        SUMMARY_TEMPLATE,
        "covered.md.j2",
        "not-covered.md.j2",
        "conditional.md.j2",
        "indeterminate.md.j2",
        "partials/common.md.j2",
    ] {
        assert!(
            names.contains(&required),
            "{required} not loaded: {names:?}"
        );
    }
    // And every outcome renders through its own template, not the fallback.
    for d in [covered(), not_covered(), conditional(), indeterminate()] {
        let card = r.card(&d, today());
        let detail = card.detail.unwrap();
        assert!(!detail.contains("could not be produced"), "{detail}");
    }
}

#[test]
fn covered_card_and_action() {
    let p = policy();
    let d = covered();
    let resp = render_one(d.clone());
    assert_eq!(resp.cards.len(), 1);
    let card = &resp.cards[0];
    assert_common_card(card, &p);
    assert_eq!(card.indicator, Indicator::Info);
    assert_eq!(
        card.summary,
        "IORT (CPT 77425) meets BCBSAZ criteria: rectal cancer, positive margin, T4"
    );
    assert!(card.override_reasons.is_empty());
    let detail = card.detail.as_deref().unwrap();
    assert_lists_criteria_with_evidence(detail, &d, &p);
    assert!(detail.contains("Prior authorization"));
    assert_eq!(detail.matches(": met").count(), 3, "{detail}");

    let action = &resp.system_actions[0];
    assert_eq!(action.kind, ActionType::Update);
    let resource = action.resource.as_ref().unwrap();
    assert_eq!(resource["id"], "sr-1");
    assert_eq!(resource["resourceType"], "ServiceRequest");
    // Only the extension changed: same keys, same order, same values otherwise.
    let keys = |v: &Value| v.as_object().unwrap().keys().cloned().collect::<Vec<_>>();
    assert_eq!(keys(resource), keys(&d.facts.order.raw));
    for (k, v) in d.facts.order.raw.as_object().unwrap() {
        if k != "extension" {
            assert_eq!(&resource[k], v, "{k}");
        }
    }
    assert_eq!(resource["code"], d.facts.order.raw["code"]);
    // The order's own extension is kept, first.
    assert_eq!(resource["extension"][0]["valueString"], "kept");
    let ci = ci_of(&resp);
    assert_crd_invariants(&ci);
    assert_eq!(subs(&ci, "covered")[0]["valueCode"], "covered");
    assert_eq!(
        subs(&ci, "coverage")[0]["valueReference"]["reference"],
        "Coverage/cov-1"
    );
    assert!(subs(&ci, "pa-needed").is_empty());
    assert!(subs(&ci, "info-needed").is_empty());
    assert!(subs(&ci, "doc-needed").is_empty());
    assert!(subs(&ci, "reason").is_empty());
    let billing = &subs(&ci, "billingCode")[0]["valueCoding"];
    assert_eq!(billing["system"], "http://www.ama-assn.org/go/cpt");
    assert_eq!(billing["code"], "77425");
    let link = subs(&ci, "detail")
        .into_iter()
        .find(|d| subs(d, "code")[0]["valueCodeableConcept"]["coding"][0]["code"] == "policy-link")
        .expect("policy-link detail");
    assert_eq!(
        subs(link, "value")[0]["valueUrl"],
        p.document.link.url.as_str()
    );
    let q = subs(link, "qualification")[0]["valueString"]
        .as_str()
        .unwrap();
    assert!(q.contains("effective 2024-09-03"), "{q}");
}

#[test]
fn covered_by_recurrence_says_so() {
    let d = decide(facts(I::RectalCancer, T::BelowT4, true, M::Close));
    let card = &render_one(d).cards[0];
    assert_eq!(
        card.summary,
        "IORT (CPT 77425) meets BCBSAZ criteria: rectal cancer, close margin, recurrent disease"
    );
}

#[test]
fn not_covered_card_and_action() {
    let p = policy();
    let d = not_covered();
    let resp = render_one(d.clone());
    let card = &resp.cards[0];
    assert_common_card(card, &p);
    assert_eq!(card.indicator, Indicator::Warning);
    assert!(card.summary.contains("does not meet BCBSAZ criteria"));
    assert!(card.summary.contains("margins clear"), "{}", card.summary);
    assert_eq!(card.override_reasons, p.override_reasons);
    for r in &card.override_reasons {
        assert!(!r.system.is_empty() && !r.code.is_empty() && r.display.is_some());
    }
    let detail = card.detail.as_deref().unwrap();
    assert_lists_criteria_with_evidence(detail, &d, &p);
    assert!(detail.contains("not met"));
    assert!(detail.contains("experimental or investigational"));

    let ci = ci_of(&resp);
    assert_crd_invariants(&ci);
    assert_eq!(subs(&ci, "covered")[0]["valueCode"], "not-covered");
    assert!(subs(&ci, "pa-needed").is_empty());
    let reason = subs(&ci, "reason")[0]["valueCodeableConcept"]["text"]
        .as_str()
        .unwrap();
    assert!(reason.contains("margins clear"), "{reason}");
}

#[test]
fn conditional_card_and_action() {
    let p = policy();
    let d = conditional();
    let resp = render_one(d.clone());
    let card = &resp.cards[0];
    assert_common_card(card, &p);
    assert_eq!(card.indicator, Indicator::Warning);
    assert_eq!(
        card.summary,
        "IORT (CPT 77425) may meet BCBSAZ criteria: document margin status; T category or recurrence"
    );
    assert_eq!(card.override_reasons, p.override_reasons);
    let detail = card.detail.as_deref().unwrap();
    assert_lists_criteria_with_evidence(detail, &d, &p);
    assert!(detail.contains("not documented"));
    // Exactly what to record, and how, for each missing criterion (and only those).
    assert!(
        detail.contains("395536008") && detail.contains("33737-8"),
        "{detail}"
    );
    assert!(detail.contains("384625004"), "{detail}");
    assert!(
        !detail.contains("363351006"),
        "rectal cancer is documented: {detail}"
    );

    let ci = ci_of(&resp);
    assert_crd_invariants(&ci);
    assert_eq!(subs(&ci, "covered")[0]["valueCode"], "conditional");
    assert_eq!(subs(&ci, "doc-needed")[0]["valueCode"], "clinical");
    assert_eq!(subs(&ci, "info-needed")[0]["valueCode"], "OTH");
    assert!(subs(&ci, "pa-needed").is_empty());
    let instructions: Vec<&Value> = subs(&ci, "detail")
        .into_iter()
        .filter(|d| {
            subs(d, "code")[0]["valueCodeableConcept"]["coding"][0]["code"] == "instructions"
        })
        .collect();
    assert_eq!(instructions.len(), 2);
    let first = subs(instructions[0], "value")[0]["valueString"]
        .as_str()
        .unwrap();
    assert!(first.contains("395536008"), "{first}");
}

/// A finding the record holds but that could not be attributed: the card and the
/// CRD instruction say what it is and how to link it, never "record a T category".
#[test]
fn a_present_but_unlinked_fact_is_a_note_not_a_request() {
    let mut f = facts(I::RectalCancer, T::NotDocumented, false, M::Positive);
    let note = "Observation/tnm-pt (pT4a) is not linked to the cancer this order treats: set its \
                focus to Condition/rectal-1 and sign again."
        .to_owned();
    f.staging.notes = vec![note.clone()];
    let d = decide(f);
    assert_eq!(d.covered.code(), "conditional");
    let resp = render_one(d);
    let detail = resp.cards[0].detail.as_deref().unwrap();
    assert!(
        detail.contains("set its focus to Condition/rectal-1"),
        "{detail}"
    );
    let clinical = &detail[..detail
        .find("**How to record this so it is found**")
        .expect("the EHR team's section")];
    assert!(
        !clinical.contains("Neither the T category"),
        "asks to record a T category the record holds: {detail}"
    );
    let ci = ci_of(&resp);
    let instruction = subs(&ci, "detail")
        .into_iter()
        .filter(|d| {
            subs(d, "code")[0]["valueCodeableConcept"]["coding"][0]["code"] == "instructions"
        })
        .map(|d| {
            subs(d, "value")[0]["valueString"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect::<Vec<_>>();
    assert_eq!(instruction.len(), 1);
    assert!(instruction[0].contains("set its focus"), "{instruction:?}");
    assert!(!instruction[0].contains("384625004"), "{instruction:?}");
}

#[test]
fn indeterminate_card_and_action() {
    let p = policy();
    let resp = render_one(indeterminate());
    let card = &resp.cards[0];
    assert_common_card(card, &p);
    assert_eq!(card.indicator, Indicator::Warning);
    assert!(card.summary.contains("not determined"), "{}", card.summary);
    assert!(card.override_reasons.is_empty());
    let detail = card.detail.as_deref().unwrap();
    assert!(detail.contains("could not be determined"));
    assert!(detail.contains("HTTP 503"));
    // No clinical content from the partial record.
    assert!(!detail.contains("Observation/margin-1"), "{detail}");
    assert!(!detail.contains("Condition/rectal-1"), "{detail}");

    let ci = ci_of(&resp);
    assert_crd_invariants(&ci);
    assert_eq!(subs(&ci, "covered")[0]["valueCode"], "indeterminate");
    let reason = &subs(&ci, "reason")[0]["valueCodeableConcept"];
    assert_eq!(reason["coding"][0]["system"], CRD_TEMP_SYSTEM);
    assert_eq!(reason["coding"][0]["code"], "technical");
    assert!(reason["text"].as_str().unwrap().contains("HTTP 503"));
}

#[test]
fn invariants_hold_for_every_combination() {
    let r = renderer();
    let p = policy();
    for ind in [I::RectalCancer, I::OtherCancer, I::NotDocumented] {
        for m in [M::Positive, M::Close, M::Clear, M::NotDocumented] {
            for t in [T::T4, T::BelowT4, T::NotDocumented] {
                for rec in [false, true] {
                    for no_coverage in [false, true] {
                        let mut f = facts(ind, t, rec, m);
                        if no_coverage {
                            f.coverage = None;
                        }
                        let d = decide(f);
                        let resp = r.render(&[d], &CrdConfiguration::default(), today());
                        assert_common_card(&resp.cards[0], &p);
                        assert_crd_invariants(&ci_of(&resp));
                    }
                }
            }
        }
    }
}

#[test]
fn no_coverage_is_said_on_card_and_extension() {
    let mut f = covered_facts();
    f.coverage = None;
    let resp = render_one(decide(f));
    let detail = resp.cards[0].detail.as_deref().unwrap();
    assert!(detail.contains("No active Coverage"), "{detail}");
    let ci = ci_of(&resp);
    let reference = &subs(&ci, "coverage")[0]["valueReference"];
    assert!(reference.get("reference").is_none());
    assert!(
        reference["display"]
            .as_str()
            .unwrap()
            .contains("No active Coverage")
    );
    let reason = &subs(&ci, "reason")[0]["valueCodeableConcept"];
    assert_eq!(reason["coding"][0]["code"], "coverage-not-found");
}

#[test]
fn coverage_payor_is_the_reference_display() {
    let mut f = covered_facts();
    f.coverage = Some(CoverageRef {
        reference: "Coverage/c9".to_owned(),
        payor: None,
    });
    let ci = ci_of(&render_one(decide(f)));
    let reference = &subs(&ci, "coverage")[0]["valueReference"];
    assert_eq!(reference, &json!({"reference": "Coverage/c9"}));
}

#[test]
fn record_issues_are_named_by_type_and_id_only() {
    let mut f = covered_facts();
    f.record_issues = vec![
        RecordIssue {
            source: "observations".to_owned(),
            resource: Some("Observation/bad-1".to_owned()),
            problem: "does not parse: SECRET-CLINICAL-TEXT".to_owned(),
        },
        RecordIssue {
            source: "conditions".to_owned(),
            resource: None,
            problem: "no id".to_owned(),
        },
    ];
    let detail = render_one(decide(f)).cards[0].detail.clone().unwrap();
    assert!(detail.contains("Record incomplete"), "{detail}");
    assert!(detail.contains("Observation/bad-1"));
    assert!(detail.contains("an entry of conditions"));
    assert!(!detail.contains("SECRET"), "{detail}");
}

#[test]
fn record_values_are_markdown_escaped() {
    let mut f = covered_facts();
    f.margins.evidence[0].detail = "*involved* [see](http://x) | # heading\nnext".to_owned();
    let detail = render_one(decide(f)).cards[0].detail.clone().unwrap();
    assert!(
        detail.contains("\\*involved\\* \\[see\\](http://x) \\| \\# heading next"),
        "{detail}"
    );
    // The template's own Markdown is intact.
    assert!(detail.contains("**Rectal cancer**"));
    assert!(detail.contains(&format!("]({})", policy().document.link.url)));
}

#[test]
fn outdated_policy_review_is_flagged_only_after_due_date() {
    let r = renderer();
    let d = covered();
    let late = r.card(&d, today()).detail.unwrap();
    assert!(late.contains("newer version may exist"), "{late}");
    assert!(late.contains("3rd quarter 2025"));
    let early = r
        .card(&d, NaiveDate::from_ymd_opt(2025, 6, 1).unwrap())
        .detail
        .unwrap();
    assert!(!early.contains("newer version may exist"), "{early}");

    let ci = ci_of(&render_one(d));
    let text = ci.to_string();
    assert!(text.contains("scheduled review (3rd quarter 2025) has passed"));
}

#[test]
fn coverage_info_off_keeps_cards_drops_actions() {
    let crd = CrdConfiguration {
        coverage_info: false,
        max_cards: None,
    };
    let resp = renderer().render(&[covered(), not_covered()], &crd, today());
    assert_eq!(resp.cards.len(), 2);
    assert!(resp.system_actions.is_empty());
    let json = serde_json::to_value(&resp).unwrap();
    assert!(json.get("systemActions").is_none());
}

#[test]
fn max_cards_keeps_the_most_important_in_order() {
    let r = renderer();
    let ds = [covered(), not_covered(), covered(), conditional()];
    let with = |n| {
        let crd = CrdConfiguration {
            coverage_info: true,
            max_cards: Some(n),
        };
        r.render(&ds, &crd, today())
    };
    let kinds =
        |resp: &CdsResponse| -> Vec<Indicator> { resp.cards.iter().map(|c| c.indicator).collect() };
    let one = with(1);
    assert_eq!(one.cards.len(), 1);
    assert!(one.cards[0].summary.contains("does not meet"));
    let two = with(2);
    assert_eq!(kinds(&two), vec![Indicator::Warning, Indicator::Warning]);
    assert!(two.cards[1].summary.contains("may meet"));
    let three = with(3);
    // The first covered card is kept, and original order is preserved.
    assert_eq!(
        kinds(&three),
        vec![Indicator::Info, Indicator::Warning, Indicator::Warning]
    );
    assert!(with(0).cards.is_empty());
    assert_eq!(with(10).cards.len(), 4);
    // max-cards limits cards, not the coverage information.
    assert_eq!(one.system_actions.len(), 4);
}

#[test]
fn cards_and_actions_follow_determination_order() {
    let resp = renderer().render(
        &[not_covered(), covered(), conditional()],
        &CrdConfiguration::default(),
        today(),
    );
    let covered_codes: Vec<String> = resp
        .system_actions
        .iter()
        .map(|a| {
            let r = a.resource.as_ref().unwrap();
            let ci = r["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["url"] == COVERAGE_INFORMATION_URL)
                .unwrap();
            subs(ci, "covered")[0]["valueCode"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(covered_codes, vec!["not-covered", "covered", "conditional"]);
    assert_eq!(
        resp.cards.iter().map(|c| c.indicator).collect::<Vec<_>>(),
        vec![Indicator::Warning, Indicator::Info, Indicator::Warning]
    );
    // Assertion ids and card uuids are unique.
    let assertion_ids: std::collections::HashSet<String> = resp
        .system_actions
        .iter()
        .map(|a| {
            let r = a.resource.as_ref().unwrap();
            let ci = r["extension"]
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["url"] == COVERAGE_INFORMATION_URL)
                .unwrap();
            subs(ci, "coverage-assertion-id")[0]["valueString"].to_string()
        })
        .collect();
    assert_eq!(assertion_ids.len(), 3);
    let uuids: std::collections::HashSet<&str> = resp
        .cards
        .iter()
        .map(|c| c.uuid.as_deref().unwrap())
        .collect();
    assert_eq!(uuids.len(), 3);
}

#[test]
fn empty_input_is_an_empty_card_list() {
    let resp = renderer().render(&[], &CrdConfiguration::default(), today());
    assert_eq!(serde_json::to_value(&resp).unwrap(), json!({"cards": []}));
}

#[test]
fn response_serialises_with_cds_hooks_names() {
    let resp = render_one(not_covered());
    let v = serde_json::to_value(&resp).unwrap();
    assert!(v["systemActions"][0]["type"] == "update");
    assert!(v["cards"][0]["overrideReasons"].is_array());
    assert_eq!(v["cards"][0]["links"][0]["type"], "absolute");
    assert_eq!(v["cards"][0]["indicator"], "warning");
}

#[test]
fn resigned_order_with_same_assertion_gets_no_update() {
    let first = render_one(covered());
    let updated = first.system_actions[0].resource.clone().unwrap();
    // The EHR applied the action; the order is signed again unchanged.
    let mut f = covered_facts();
    f.order.raw = updated;
    let again = render_one(decide(f));
    assert!(again.system_actions.is_empty(), "nothing new to say");
    assert_eq!(again.cards.len(), 1);
}

#[test]
fn resigned_order_with_changed_assertion_replaces_the_old_one() {
    let first = render_one(conditional());
    let updated = first.system_actions[0].resource.clone().unwrap();
    let mut f = covered_facts();
    f.order.raw = updated;
    let again = render_one(decide(f));
    let resource = again.system_actions[0].resource.as_ref().unwrap();
    let exts = resource["extension"].as_array().unwrap();
    let cis: Vec<&Value> = exts
        .iter()
        .filter(|e| e["url"] == COVERAGE_INFORMATION_URL)
        .collect();
    assert_eq!(cis.len(), 1, "old assertion for the same Coverage replaced");
    assert_eq!(subs(cis[0], "covered")[0]["valueCode"], "covered");
    assert_eq!(exts[0]["valueString"], "kept");
}

#[test]
fn assertion_for_another_coverage_is_kept() {
    let first = render_one(covered());
    let mut updated = first.system_actions[0].resource.clone().unwrap();
    // Pretend the earlier assertion was about another Coverage.
    let ci = updated["extension"][1]["extension"].as_array_mut().unwrap();
    ci[0]["valueReference"]["reference"] = json!("Coverage/other");
    let mut f = covered_facts();
    f.order.raw = updated;
    let again = render_one(decide(f));
    let resource = again.system_actions[0].resource.as_ref().unwrap();
    let count = resource["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == COVERAGE_INFORMATION_URL)
        .count();
    assert_eq!(count, 2);
}

#[test]
fn order_without_id_or_with_bad_extension_gets_a_card_but_no_action() {
    let mut f = covered_facts();
    f.order.raw.as_object_mut().unwrap().remove("id");
    f.order.id = None;
    let resp = render_one(decide(f));
    assert_eq!(resp.cards.len(), 1);
    assert!(resp.system_actions.is_empty());

    let mut f = covered_facts();
    f.order.raw["extension"] = json!({"not": "an array"});
    let resp = render_one(decide(f));
    assert_eq!(resp.cards.len(), 1);
    assert!(resp.system_actions.is_empty());
}

#[test]
fn order_without_cpt_has_no_billing_code() {
    let mut f = covered_facts();
    f.order.billing_code = None;
    let resp = render_one(decide(f));
    assert!(
        resp.cards[0].summary.starts_with("IORT meets"),
        "{}",
        resp.cards[0].summary
    );
    assert!(subs(&ci_of(&resp), "billingCode").is_empty());
}

#[test]
fn missing_criteria_come_in_policy_order() {
    let d = decide(facts(
        I::NotDocumented,
        T::NotDocumented,
        false,
        M::NotDocumented,
    ));
    assert_eq!(d.missing, Criterion::ALL.to_vec());
    let card = &render_one(d).cards[0];
    assert!(card.summary.chars().count() < 140, "{}", card.summary);
    assert!(
        card.summary
            .contains("rectal cancer diagnosis; margin status; T category or recurrence"),
        "{}",
        card.summary
    );
}

/// A temporary `cards/` override folder holding the given files, removed on drop.
struct CardsDir(std::path::PathBuf);

impl CardsDir {
    fn with(files: &[(&str, &str)]) -> Self {
        let dir = std::env::temp_dir().join(format!("iort-cards-{}", uuid::Uuid::new_v4()));
        for (name, body) in files {
            let path = dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, body).unwrap();
        }
        Self(dir)
    }

    fn assets(&self) -> Assets {
        Assets::with_overrides(None, Some(self.0.clone()))
    }
}

impl Drop for CardsDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn template_syntax_error_stops_load_naming_the_file() {
    let dir = CardsDir::with(&[("not-covered.md.j2", "{% if %}")]);
    let err = Renderer::load(&dir.assets(), &policy()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("cards/not-covered.md.j2"), "{msg}");
}

#[test]
fn broken_partial_stops_load_naming_the_file() {
    let dir = CardsDir::with(&[("partials/extra.md.j2", "{{ unclosed")]);
    let err = Renderer::load(&dir.assets(), &policy()).unwrap_err();
    assert!(
        err.to_string().contains("cards/partials/extra.md.j2"),
        "{err}"
    );
}

#[test]
fn template_failing_at_render_falls_back_without_panic() {
    let dir = CardsDir::with(&[
        ("covered.md.j2", "{{ no_such_variable }}"),
        (SUMMARY_TEMPLATE, "{{ order.nope.deeper }}"),
    ]);
    let r = Renderer::load(&dir.assets(), &policy()).unwrap();
    let card = r.card(&covered(), today());
    assert_eq!(card.summary, "IORT (CPT 77425): meets BCBSAZ criteria");
    let detail = card.detail.unwrap();
    assert!(detail.contains("Coverage assessment: covered"), "{detail}");
    assert!(detail.contains("effective 2024-09-03"));
    // Other outcomes still use their (embedded) templates.
    let other = r.card(&not_covered(), today());
    assert!(
        other
            .detail
            .unwrap()
            .contains("experimental or investigational")
    );
}

#[test]
fn long_summary_is_cut_below_140_chars() {
    let dir = CardsDir::with(&[(
        SUMMARY_TEMPLATE,
        "{% for i in range(300) %}é{% endfor %} {{ policy.payer.name }}",
    )]);
    let r = Renderer::load(&dir.assets(), &policy()).unwrap();
    let card = r.card(&covered(), today());
    assert_eq!(card.summary.chars().count(), 139);
    assert!(card.summary.ends_with('…'));
}

#[test]
fn every_summary_fits_for_every_combination() {
    let r = renderer();
    for ind in [I::RectalCancer, I::OtherCancer, I::NotDocumented] {
        for m in [M::Positive, M::Close, M::Clear, M::NotDocumented] {
            for t in [T::T4, T::BelowT4, T::NotDocumented] {
                for rec in [false, true] {
                    let card = r.card(&decide(facts(ind, t, rec, m)), today());
                    let n = card.summary.chars().count();
                    assert!(n < 140, "{n}: {}", card.summary);
                    // Produced by the template, not cut (the full text fits).
                    assert!(!card.summary.ends_with('…'), "{}", card.summary);
                }
            }
        }
    }
}

#[test]
fn same_coverage_with_another_display_is_still_replaced() {
    let first = render_one(conditional());
    let mut updated = first.system_actions[0].resource.clone().unwrap();
    let ci = updated["extension"][1]["extension"].as_array_mut().unwrap();
    ci[0]["valueReference"]["display"] = json!("BCBS AZ (old name)");
    let mut f = covered_facts();
    f.order.raw = updated;
    let again = render_one(decide(f));
    let resource = again.system_actions[0].resource.as_ref().unwrap();
    let count = resource["extension"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["url"] == COVERAGE_INFORMATION_URL)
        .count();
    assert_eq!(count, 1);
}
