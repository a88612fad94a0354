//! The acceptance case table for the coverage determination.
//!
//! Every file in `tests/cases/` is one order-sign call written from the payer rules (not from
//! the implementation): `{"description", "request", "expect": {"orders": {"ServiceRequest/id":
//! "covered" | "not-covered" | "conditional" | "indeterminate"}, "notIort": ["Type/id", ...]}}`.
//! This runner posts each request to the real application and checks the CDS Hooks and Da Vinci
//! CRD contract around the expected outcome. It collects every failure of every case before
//! failing, so one run shows the whole table's state; each failure names its case file.
//!
//! Cards carry no standard pointer to the order they are about, so card checks are made on
//! the multiset of cards (one per IORT order, indicators matching the expected outcomes).
//!
//! The table runs twice, as an EHR may call in two ways:
//! - prefetch mode: the request as written, the record in `prefetch`;
//! - fetch mode: the same request without `prefetch`, with `fhirServer` (and a bearer token in
//!   `fhirAuthorization`) pointing at a real FHIR server on loopback (`tests/fhir-server`) into
//!   which the case's prefetch resources were loaded, so the service fetches the record with
//!   its discovery queries. Every contract check is the same; a failure also says whether the
//!   prefetch answer differs (a fetching bug) or not (a decision bug).
//!
//! A case runs in both modes unless it says otherwise with `"modes": ["prefetch"]` (or
//! `["fetch"]`); its description must then say why (for example, the case is about what a
//! prefetch Bundle carries besides the record, which a FHIR server never answers).

use crate::common;
use crate::common::crd;
use crate::support::fhir_server;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use fhir_server::FhirServer;
use serde_json::{Map, Value, json};

const SERVICE: &str = "/cds-services/iort-coverage";
const COVERED_CODES: [&str; 4] = ["covered", "not-covered", "conditional", "indeterminate"];
/// Generous: the service must answer well within CRD's 5-10 s budget; this only stops a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The bearer token of the loopback FHIR server in fetch mode.
const FHIR_TOKEN: &str = "cases-token-4e1b93";

/// How a case is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// The record in `prefetch`, as written.
    Prefetch,
    /// No `prefetch`; the record on a FHIR server the request names.
    Fetch,
}

/// One case file, as loaded.
struct Case {
    name: String,
    modes: Vec<Mode>,
    request: Value,
    /// `Type/id` -> expected `covered` code.
    orders: BTreeMap<String, String>,
    not_iort: Vec<String>,
}

/// Failures of one case, each a short line.
#[derive(Default)]
struct Failures(Vec<String>);

impl Failures {
    fn add(&mut self, msg: impl Into<String>) {
        self.0.push(msg.into());
    }
}

/// Read and shape-check one case file.
fn load_case(path: &Path) -> Result<Case, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let doc: Value = serde_json::from_str(&text).map_err(|e| format!("not JSON: {e}"))?;
    let request = doc
        .get("request")
        .filter(|r| r.is_object())
        .cloned()
        .ok_or("no `request` object")?;
    let expect = doc.get("expect").ok_or("no `expect` object")?;
    let mut orders = BTreeMap::new();
    for (reference, code) in expect
        .get("orders")
        .and_then(Value::as_object)
        .ok_or("no `expect.orders` object")?
    {
        let code = code
            .as_str()
            .filter(|c| COVERED_CODES.contains(c))
            .ok_or_else(|| format!("expect.orders[{reference}] is not a covered code"))?;
        orders.insert(reference.clone(), code.to_owned());
    }
    let not_iort = match expect.get("notIort") {
        None => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .map(str::to_owned)
                    .ok_or("notIort holds a non-string")
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`expect.notIort` is not an array".to_owned()),
    };
    let modes = match doc.get("modes") {
        None => vec![Mode::Prefetch, Mode::Fetch],
        Some(Value::Array(a)) if !a.is_empty() => a
            .iter()
            .map(|m| match m.as_str() {
                Some("prefetch") => Ok(Mode::Prefetch),
                Some("fetch") => Ok(Mode::Fetch),
                _ => Err("`modes` holds something other than \"prefetch\" / \"fetch\""),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err("`modes` must be a non-empty array".to_owned()),
    };
    let description = doc
        .get("description")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if modes.len() < 2 && !description.contains("fetch mode") {
        return Err(
            "a case limited to one mode must say why in its description (\"fetch mode\")"
                .to_owned(),
        );
    }
    Ok(Case {
        name: path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        modes,
        request,
        orders,
        not_iort,
    })
}

/// Every case file, sorted; each loaded or with the reason it could not be.
fn all_cases() -> Vec<(String, Result<Case, String>)> {
    common::cases::files()
        .into_iter()
        .map(|(name, path)| (name, load_case(&path)))
        .collect()
}

/// `Type/id` of a resource, when it has both.
fn reference_of(resource: &Value) -> Option<String> {
    Some(format!(
        "{}/{}",
        resource.get("resourceType")?.as_str()?,
        resource.get("id")?.as_str()?
    ))
}

/// The draft orders as sent, by `Type/id`.
fn draft_orders(request: &Value) -> BTreeMap<String, Value> {
    request
        .pointer("/context/draftOrders/entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .filter_map(|r| Some((reference_of(r)?, r.clone())))
        .collect()
}

/// The ids of the Coverages in the `coverage` prefetch that belong to the patient.
fn patient_coverage_ids(request: &Value) -> Vec<String> {
    let patient = request
        .pointer("/context/patientId")
        .and_then(Value::as_str)
        .map(|p| format!("Patient/{p}"));
    request
        .pointer("/prefetch/coverage/entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| e.get("resource"))
        .filter(|r| {
            r.pointer("/beneficiary/reference").and_then(Value::as_str) == patient.as_deref()
        })
        .filter_map(|r| r.get("id").and_then(Value::as_str).map(str::to_owned))
        .collect()
}

/// The action resource with the coverage-information extension taken out (and `extension`
/// dropped when that leaves it empty and the draft had none), for comparison with the draft.
fn without_coverage_info(resource: &Value, draft: &Value) -> Value {
    let mut out = resource.clone();
    if let Some(obj) = out.as_object_mut() {
        let emptied = match obj.get_mut("extension").and_then(Value::as_array_mut) {
            Some(exts) => {
                exts.retain(|e| {
                    e.get("url").and_then(Value::as_str) != Some(crd::COVERAGE_INFORMATION)
                });
                exts.is_empty()
            }
            None => false,
        };
        if emptied && draft.get("extension").is_none() {
            obj.remove("extension");
        }
    }
    out
}

/// Top-level keys whose values differ between two objects (for a readable failure).
fn differing_keys(a: &Value, b: &Value) -> Vec<String> {
    let empty = Map::new();
    let a = a.as_object().unwrap_or(&empty);
    let b = b.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = a
        .keys()
        .chain(b.keys())
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

fn non_empty_str(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| !s.trim().is_empty())
}

fn is_fhir_date(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            _ => c.is_ascii_digit(),
        })
}

/// Check the CRD coverage-information extension of one update action.
fn check_coverage_information(
    order: &str,
    resource: &Value,
    expected: &str,
    coverage_ids: &[String],
    f: &mut Failures,
) {
    let infos: Vec<&Value> = resource
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(crd::COVERAGE_INFORMATION))
        .collect();
    let [info] = infos.as_slice() else {
        f.add(format!(
            "{order}: {} coverage-information extensions, expected 1",
            infos.len()
        ));
        return;
    };
    let subs: Vec<&Value> = info
        .get("extension")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .collect();
    let named = |name: &str| -> Vec<&Value> {
        subs.iter()
            .copied()
            .filter(|e| e.get("url").and_then(Value::as_str) == Some(name))
            .collect()
    };

    let covered = named("covered");
    match covered.as_slice() {
        [c] => {
            let got = c
                .get("valueCode")
                .and_then(Value::as_str)
                .unwrap_or("(none)");
            if got != expected {
                f.add(format!("{order}: covered = {got}, expected {expected}"));
            }
        }
        other => f.add(format!(
            "{order}: {} `covered` sub-extensions, expected 1",
            other.len()
        )),
    }

    match named("date").as_slice() {
        [d] if d
            .get("valueDate")
            .and_then(Value::as_str)
            .is_some_and(is_fhir_date) => {}
        other => f.add(format!(
            "{order}: `date` must be exactly one valueDate (YYYY-MM-DD), found {}",
            other.len()
        )),
    }

    match named("coverage-assertion-id").as_slice() {
        [a] if non_empty_str(a.get("valueString")) => {}
        other => f.add(format!(
            "{order}: `coverage-assertion-id` must be exactly one non-empty valueString, found {}",
            other.len()
        )),
    }

    match named("coverage").as_slice() {
        [c] => {
            let reference = c
                .pointer("/valueReference/reference")
                .and_then(Value::as_str)
                .unwrap_or("");
            let points_at_patient_coverage = coverage_ids.iter().any(|id| {
                reference == format!("Coverage/{id}")
                    || reference.ends_with(&format!("/Coverage/{id}"))
            });
            if !points_at_patient_coverage {
                f.add(format!(
                    "{order}: `coverage` references {reference:?}, not one of the patient's Coverages {coverage_ids:?}"
                ));
            }
        }
        other => f.add(format!(
            "{order}: {} `coverage` sub-extensions, expected 1",
            other.len()
        )),
    }

    if expected == "not-covered" && !named("pa-needed").is_empty() {
        f.add(format!("{order}: not-covered must not carry `pa-needed`"));
    }
    if expected == "conditional" && named("info-needed").is_empty() {
        f.add(format!(
            "{order}: conditional needs at least one `info-needed`"
        ));
    }
    if expected == "indeterminate" && named("reason").is_empty() {
        f.add(format!("{order}: indeterminate needs a `reason`"));
    }
}

/// Check one card on its own (shape), whatever order it is about.
fn check_card_shape(i: usize, card: &Value, f: &mut Failures) {
    check_card_language(i, card, f);
    match card.get("summary").and_then(Value::as_str) {
        Some(s) if !s.trim().is_empty() && s.chars().count() < 140 => {}
        Some(s) => f.add(format!(
            "card[{i}]: summary must be non-empty and < 140 chars (has {})",
            s.chars().count()
        )),
        None => f.add(format!("card[{i}]: no summary")),
    }
    if !non_empty_str(card.get("uuid")) {
        f.add(format!("card[{i}]: no uuid"));
    }
    if !non_empty_str(card.pointer("/source/label")) {
        f.add(format!("card[{i}]: source.label missing or empty"));
    }
    if !(non_empty_str(card.pointer("/source/topic/system"))
        && non_empty_str(card.pointer("/source/topic/code")))
    {
        f.add(format!("card[{i}]: source.topic needs system and code"));
    }
    if let Some(reasons) = card.get("overrideReasons") {
        let ok = reasons.as_array().is_some_and(|a| {
            !a.is_empty()
                && a.iter().all(|r| {
                    non_empty_str(r.get("system"))
                        && non_empty_str(r.get("code"))
                        && non_empty_str(r.get("display"))
                })
        });
        if !ok {
            f.add(format!(
                "card[{i}]: overrideReasons must be Codings with system, code and display"
            ));
        }
    }
}

/// Issue 20: a card speaks to the surgeon first. Before its closing section for the EHR team,
/// neither the summary nor the detail carries a terminology code (SNOMED CT, LOINC, ICD-10) or
/// a code system URI (the order's own billing code, "CPT 77425", and the policy's link stay);
/// the section is there on every card; every criterion the card lists as not documented is
/// named, with what to do, in the card's instructions.
fn check_card_language(i: usize, card: &Value, f: &mut Failures) {
    use std::sync::LazyLock;
    static LINK: LazyLock<regex::Regex> =
        LazyLock::new(|| regex::Regex::new(r"\]\([^)]*\)").unwrap());
    static CPT: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"CPT \w+").unwrap());
    // Resource references (`Condition/dx-20250618`) name the evidence, they are not codes.
    static REFERENCE: LazyLock<regex::Regex> = LazyLock::new(|| {
        regex::Regex::new(r"\b[A-Z][A-Za-z]+/[A-Za-z0-9\-.]+(#[A-Za-z0-9\-.]+)?").unwrap()
    });
    static CODES: LazyLock<Vec<(&str, regex::Regex)>> = LazyLock::new(|| {
        [
            (
                "a code system name",
                r"SNOMED|LOINC|ICD-10|ICD-9|UCUM|RxNorm",
            ),
            ("a URI", r"https?://|urn:oid:|urn:uuid:"),
            ("a SNOMED CT-like code", r"\b\d{6,18}\b"),
            ("a LOINC-like code", r"\b\d{1,5}-\d\b"),
            ("an ICD-10-like code", r"\b[A-Z]\d{2}(\.\d{1,4})?\b"),
        ]
        .into_iter()
        .map(|(what, re)| (what, regex::Regex::new(re).unwrap()))
        .collect()
    });
    const EHR_SECTION: &str = "**How to record this so it is found**";
    let summary = card.get("summary").and_then(Value::as_str).unwrap_or("");
    let detail = card.get("detail").and_then(Value::as_str).unwrap_or("");
    let Some(at) = detail.find(EHR_SECTION) else {
        f.add(format!(
            "card[{i}]: no section for the EHR team ({EHR_SECTION})"
        ));
        return;
    };
    for (part, text) in [("summary", summary), ("detail", &detail[..at])] {
        let unlinked = LINK.replace_all(text, "]");
        let unreferenced = REFERENCE.replace_all(&unlinked, "Type/id");
        let text = CPT.replace_all(&unreferenced, "CPT");
        for (what, re) in CODES.iter() {
            if let Some(m) = re.find(&text) {
                f.add(format!(
                    "card[{i}]: {part} has {what} before the EHR team's section: `{}`",
                    m.as_str()
                ));
            }
        }
    }
    // The policy's words are set apart (issue 15): a quote follows its own heading and a
    // blank line, never a list item it would be read as part of.
    let lines: Vec<&str> = detail.lines().collect();
    for (n, line) in lines.iter().enumerate().filter(|(_, l)| l.starts_with('>')) {
        let apart = n >= 2 && lines[n - 1].is_empty() && lines[n - 2] == "**The policy says:**";
        if !apart && (n == 0 || !lines[n - 1].starts_with('>')) {
            f.add(format!("card[{i}]: a quote is not set apart: `{line}`"));
        }
    }
    // Criteria not documented are what a conditional card asks for; on a card that fails
    // another criterion, documenting them would not change the answer (the list names them).
    let fails = detail[..at].contains("**: not met");
    for line in detail[..at].lines().filter(|_| !fails) {
        if let Some(label) = line
            .strip_prefix("- **")
            .and_then(|l| l.strip_suffix("**: not documented"))
        {
            let instruction = format!("1. **{label}**: ");
            let named = detail[..at]
                .lines()
                .any(|l| l.starts_with(&instruction) && l.len() > instruction.len() + 20);
            if !named {
                f.add(format!(
                    "card[{i}]: `{label}` is not documented, but no instruction names it"
                ));
            }
        }
    }
}

fn has_override_reasons(card: &Value) -> bool {
    card.get("overrideReasons")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty() && a.iter().all(|r| non_empty_str(r.get("display"))))
}

/// Check the response body of one case against its expectations.
fn check_response(case: &Case, body: &Value, f: &mut Failures) {
    let Some(cards) = body.get("cards").and_then(Value::as_array) else {
        f.add("response has no `cards` array");
        return;
    };
    let actions: &[Value] = match body.get("systemActions") {
        None => &[],
        Some(Value::Array(a)) => a,
        Some(_) => {
            f.add("`systemActions` is not an array");
            &[]
        }
    };
    let drafts = draft_orders(&case.request);
    let coverage_ids = patient_coverage_ids(&case.request);

    if case.orders.is_empty() {
        if !cards.is_empty() {
            f.add(format!("no IORT order, but {} card(s)", cards.len()));
        }
        if !actions.is_empty() {
            f.add(format!(
                "no IORT order, but {} system action(s)",
                actions.len()
            ));
        }
    }

    // Every action must be an update on an expected IORT order.
    for (i, a) in actions.iter().enumerate() {
        let target = a.get("resource").and_then(reference_of);
        match target {
            Some(t) if case.not_iort.contains(&t) => {
                f.add(format!("systemActions[{i}] acts on non-IORT order {t}"))
            }
            Some(t) if !case.orders.contains_key(&t) => f.add(format!(
                "systemActions[{i}] acts on unexpected resource {t}"
            )),
            None => f.add(format!(
                "systemActions[{i}] has no resource with type and id"
            )),
            Some(_) => {}
        }
        if a.get("type").and_then(Value::as_str) != Some("update") {
            f.add(format!("systemActions[{i}] type is not `update`"));
        }
        if !non_empty_str(a.get("description")) {
            f.add(format!("systemActions[{i}] has no description"));
        }
    }

    for (order, expected) in &case.orders {
        let Some(draft) = drafts.get(order) else {
            f.add(format!("{order}: not in draftOrders (fixture error)"));
            continue;
        };
        let updates: Vec<&Value> = actions
            .iter()
            .filter(|a| a.get("type").and_then(Value::as_str) == Some("update"))
            .filter_map(|a| a.get("resource"))
            .filter(|r| reference_of(r).as_deref() == Some(order.as_str()))
            .collect();
        let [resource] = updates.as_slice() else {
            f.add(format!(
                "{order}: {} update actions, expected exactly 1 (expected {expected})",
                updates.len()
            ));
            continue;
        };
        let stripped = without_coverage_info(resource, draft);
        if &stripped != draft {
            f.add(format!(
                "{order}: action resource differs from the draft beyond the extension in {:?}",
                differing_keys(&stripped, draft)
            ));
        }
        check_coverage_information(order, resource, expected, &coverage_ids, f);
    }

    // Cards: one per IORT order; the indicators match the outcomes as a multiset.
    if !case.orders.is_empty() {
        if cards.len() != case.orders.len() {
            f.add(format!(
                "{} card(s) for {} IORT order(s)",
                cards.len(),
                case.orders.len()
            ));
        }
        for (i, card) in cards.iter().enumerate() {
            check_card_shape(i, card, f);
        }
        let mut want: Vec<&str> = case
            .orders
            .values()
            .map(|c| if c == "covered" { "info" } else { "warning" })
            .collect();
        let mut got: Vec<&str> = cards
            .iter()
            .map(|c| {
                c.get("indicator")
                    .and_then(Value::as_str)
                    .unwrap_or("(none)")
            })
            .collect();
        want.sort_unstable();
        got.sort_unstable();
        if want != got {
            f.add(format!("card indicators {got:?}, expected {want:?}"));
        }
        let not_covered = case.orders.values().filter(|c| *c == "not-covered").count();
        let with_reasons = cards
            .iter()
            .filter(|c| c.get("indicator").and_then(Value::as_str) == Some("warning"))
            .filter(|c| has_override_reasons(c))
            .count();
        if with_reasons < not_covered {
            f.add(format!(
                "{not_covered} not-covered order(s) but {with_reasons} warning card(s) with overrideReasons"
            ));
        }
    }
}

/// POST a request; the response body, or why there is none to check.
async fn send(app: &common::TestApp, request: &Value) -> Result<Value, String> {
    let res = app
        .client
        .post(format!("{}{}", app.address, SERVICE))
        .header("Content-Type", "application/json")
        .timeout(REQUEST_TIMEOUT)
        .body(request.to_string())
        .send()
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    let status = res.status();
    let text = res
        .text()
        .await
        .map_err(|e| format!("cannot read the response body: {e}"))?;
    if status != reqwest::StatusCode::OK {
        let head: String = text.chars().take(300).collect();
        return Err(format!("HTTP {status}, expected 200: {head}"));
    }
    serde_json::from_str(&text).map_err(|e| format!("response is not JSON: {e}"))
}

/// Send `request` (the case's own, or its fetch-mode form) and check the answer against the case.
async fn run_case(app: &common::TestApp, case: &Case, request: &Value) -> Failures {
    let mut f = Failures::default();
    match send(app, request).await {
        Ok(body) => check_response(case, &body, &mut f),
        Err(e) => f.add(e),
    }
    f
}

/// Run every case of the table that runs in `mode`; fail with every failure of every case.
async fn run_table<F, Fut>(mode: Mode, mut run: F)
where
    F: FnMut(Case) -> Fut,
    Fut: std::future::Future<Output = Failures>,
{
    let cases = all_cases();
    let total = cases.len();
    let mut report: Vec<String> = Vec::new();
    let (mut failed, mut ran) = (0usize, 0usize);
    for (name, case) in cases {
        let failures = match case {
            Ok(case) if !case.modes.contains(&mode) => continue,
            Ok(case) => {
                ran += 1;
                run(case).await.0
            }
            Err(e) => vec![format!("bad case file: {e}")],
        };
        if !failures.is_empty() {
            failed += 1;
            report.extend(failures.into_iter().map(|m| format!("{name}: {m}")));
        }
    }
    assert!(
        report.is_empty(),
        "{mode:?} mode: {failed} of {ran} case(s) failed:\n  {}",
        report.join("\n  ")
    );
    // A skip list that grew to most of the table would make this test say little.
    assert!(
        ran * 10 >= total * 9,
        "{mode:?} mode runs only {ran} of {total} cases"
    );
}

#[tokio::test]
async fn every_case_in_the_table_gets_the_expected_determination() {
    let app = common::spawn_app().await;
    run_table(Mode::Prefetch, |case| {
        let app = &app;
        async move { run_case(app, &case, &case.request).await }
    })
    .await;
}

/// The resources a case's prefetch carries: each value's resource, or the resources of its
/// Bundle's entries, without the OperationOutcomes a search Bundle may add (`search.mode`
/// `outcome`): those describe the search, they are not record resources a server holds.
fn record_resources(request: &Value) -> Vec<Value> {
    let mut out = Vec::new();
    for value in request["prefetch"]
        .as_object()
        .into_iter()
        .flat_map(|p| p.values())
    {
        match value["resourceType"].as_str() {
            Some("Bundle") => out.extend(
                value["entry"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|e| e["search"]["mode"] != "outcome")
                    .filter_map(|e| e.get("resource"))
                    .filter(|r| r["resourceType"] != "OperationOutcome")
                    .cloned(),
            ),
            Some(_) => out.push(value.clone()),
            None => {} // `null`: nothing found
        }
    }
    out
}

/// Load resources into a FHIR base with one batch of PUTs (ids kept, so references hold).
async fn load_batch(base: &fhir_server::FhirBase, resources: &[Value]) -> Result<(), String> {
    if resources.is_empty() {
        return Ok(());
    }
    let mut entries = Vec::with_capacity(resources.len());
    for r in resources {
        let (Some(rt), Some(id)) = (r["resourceType"].as_str(), r["id"].as_str()) else {
            return Err("a prefetch resource without resourceType and id cannot be loaded".into());
        };
        entries.push(
            json!({"resource": r, "request": {"method": "PUT", "url": format!("{rt}/{id}")}}),
        );
    }
    let (status, response) = base
        .post_bundle(&json!({"resourceType": "Bundle", "type": "batch", "entry": entries}))
        .await;
    if !status.is_success() {
        return Err(format!(
            "loading the record: the FHIR server answered {status}"
        ));
    }
    let refused: Vec<String> = response["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .zip(resources)
        .filter(|(e, _)| {
            !e["response"]["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("200") || s.starts_with("201"))
        })
        .map(|(e, r)| {
            format!(
                "{}/{} ({})",
                r["resourceType"], r["id"], e["response"]["status"]
            )
        })
        .collect();
    if refused.is_empty() {
        Ok(())
    } else {
        Err(format!("the FHIR server refused {refused:?}"))
    }
}

/// The case's request in fetch mode: no `prefetch`; `fhirServer` and a bearer token instead.
fn fetch_mode_request(request: &Value, fhir_base: &str) -> Value {
    let mut r = request.clone();
    if let Some(obj) = r.as_object_mut() {
        obj.remove("prefetch");
        obj.insert("fhirServer".into(), json!(fhir_base));
        obj.insert(
            "fhirAuthorization".into(),
            json!({
                "access_token": FHIR_TOKEN,
                "token_type": "Bearer",
                "expires_in": 300,
                "scope": "patient/Patient.read patient/Coverage.read patient/Condition.read patient/Procedure.read patient/Observation.read",
                "subject": "iort-cds"
            }),
        );
    }
    r
}

/// The same table, each case's record loaded into its own partition (an independent store:
/// ids repeat between cases) of one token-protected FHIR server on loopback, the request sent
/// without `prefetch`. The service must fetch the record with its discovery queries and answer
/// exactly as the case expects.
#[tokio::test]
async fn every_case_in_the_table_gets_the_expected_determination_when_the_record_is_fetched() {
    let server = FhirServer::start(Some(FHIR_TOKEN)).await;
    let app = common::spawn_app().await;
    let started = Instant::now();
    run_table(Mode::Fetch, |case| {
        let (app, server) = (&app, &server);
        async move {
            let mut f = Failures::default();
            // Partition names: a letter or digit, then up to 63 of [A-Za-z0-9_-].
            let partition = server.partition(&case.name.chars().take(64).collect::<String>());
            if let Err(e) = load_batch(&partition, &record_resources(&case.request)).await {
                f.add(e);
                return f;
            }
            let request = fetch_mode_request(&case.request, partition.base_url());
            let answer = send(app, &request).await;
            match &answer {
                Ok(body) => check_response(&case, body, &mut f),
                Err(e) => f.add(e.clone()),
            }
            if !f.0.is_empty() {
                // Tell a fetching failure from a decision failure.
                let fetched = answer
                    .map(|b| crd::covered_by_order(&b))
                    .unwrap_or_default();
                let prefetched = send(app, &case.request)
                    .await
                    .map(|b| crd::covered_by_order(&b))
                    .unwrap_or_default();
                f.add(if fetched == prefetched {
                    format!("(the prefetch answer is the same: {prefetched:?})")
                } else {
                    format!("(fetched {fetched:?}, but with prefetch {prefetched:?})")
                });
            }
            f
        }
    })
    .await;
    eprintln!("fetch mode: the table ran in {:?}", started.elapsed());
}

#[test]
fn a_case_may_run_in_one_mode_only_when_it_says_why() {
    let dir = std::env::temp_dir().join(format!("iort-cases-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let write = |name: &str, description: &str, modes: Value| {
        let path = dir.join(name);
        let case = json!({"description": description, "modes": modes,
            "request": {"hook": "order-sign"}, "expect": {"orders": {}}});
        std::fs::write(&path, case.to_string()).unwrap();
        load_case(&path)
    };
    let only_prefetch = write(
        "a.json",
        "Another patient's data in a Bundle; not in fetch mode: a server never returns it.",
        json!(["prefetch"]),
    )
    .unwrap();
    assert_eq!(only_prefetch.modes, [Mode::Prefetch]);
    assert_eq!(only_prefetch.name, "a");
    assert!(write("b.json", "no reason given", json!(["prefetch"])).is_err());
    assert!(write("c.json", "fetch mode", json!(["prefetch", "sometimes"])).is_err());
    assert!(write("d.json", "fetch mode", json!([])).is_err());
    let both = write("e.json", "x", json!(["fetch", "prefetch"])).unwrap();
    assert_eq!(both.modes, [Mode::Fetch, Mode::Prefetch]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn fetch_mode_loads_the_record_without_search_outcomes_and_sends_no_prefetch() {
    let request = json!({"hook": "order-sign", "prefetch": {
        "patient": {"resourceType": "Patient", "id": "p"},
        "coverage": null,
        "observations": {"resourceType": "Bundle", "type": "searchset", "entry": [
            {"resource": {"resourceType": "Observation", "id": "o"}, "search": {"mode": "match"}},
            {"resource": {"resourceType": "OperationOutcome", "id": "w"}, "search": {"mode": "outcome"}},
            {"resource": {"resourceType": "OperationOutcome", "id": "x"}}]}}});
    let mut loaded: Vec<Option<String>> = record_resources(&request)
        .iter()
        .map(reference_of)
        .collect();
    loaded.sort();
    assert_eq!(
        loaded,
        [
            Some("Observation/o".to_owned()),
            Some("Patient/p".to_owned())
        ]
    );
    let sent = fetch_mode_request(&request, "http://127.0.0.1:1/fhir/R4");
    assert!(sent.get("prefetch").is_none());
    assert_eq!(sent["fhirServer"], "http://127.0.0.1:1/fhir/R4");
    assert_eq!(sent["fhirAuthorization"]["access_token"], FHIR_TOKEN);
}
