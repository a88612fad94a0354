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

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

const SERVICE: &str = "/cds-services/iort-coverage";
const COVERAGE_INFO: &str =
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";
const COVERED_CODES: [&str; 4] = ["covered", "not-covered", "conditional", "indeterminate"];
/// Generous: the service must answer well within CRD's 5-10 s budget; this only stops a hang.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// One case file, as loaded.
struct Case {
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

fn cases_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("cases")
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
    Ok(Case {
        request,
        orders,
        not_iort,
    })
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
                exts.retain(|e| e.get("url").and_then(Value::as_str) != Some(COVERAGE_INFO));
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
        .filter(|e| e.get("url").and_then(Value::as_str) == Some(COVERAGE_INFO))
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

async fn run_case(app: &common::TestApp, case: &Case) -> Failures {
    let mut f = Failures::default();
    let sent = app
        .client
        .post(format!("{}{}", app.address, SERVICE))
        .header("Content-Type", "application/json")
        .timeout(REQUEST_TIMEOUT)
        .body(case.request.to_string())
        .send()
        .await;
    let res = match sent {
        Ok(r) => r,
        Err(e) => {
            f.add(format!("request failed: {e}"));
            return f;
        }
    };
    let status = res.status();
    let text = match res.text().await {
        Ok(t) => t,
        Err(e) => {
            f.add(format!("cannot read the response body: {e}"));
            return f;
        }
    };
    if status != reqwest::StatusCode::OK {
        let head: String = text.chars().take(300).collect();
        f.add(format!("HTTP {status}, expected 200: {head}"));
        return f;
    }
    match serde_json::from_str::<Value>(&text) {
        Ok(body) => check_response(case, &body, &mut f),
        Err(e) => f.add(format!("response is not JSON: {e}")),
    }
    f
}

#[tokio::test]
async fn every_case_in_the_table_gets_the_expected_determination() {
    let dir = cases_dir();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    paths.sort();
    assert!(!paths.is_empty(), "no case files in {}", dir.display());

    let app = common::spawn_app().await;
    let mut report: Vec<String> = Vec::new();
    let mut failed = 0usize;
    for path in &paths {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let failures = match load_case(path) {
            Ok(case) => run_case(&app, &case).await.0,
            Err(e) => vec![format!("bad case file: {e}")],
        };
        if !failures.is_empty() {
            failed += 1;
            report.extend(failures.into_iter().map(|m| format!("{name}: {m}")));
        }
    }
    assert!(
        report.is_empty(),
        "{failed} of {} case(s) failed:\n  {}",
        paths.len(),
        report.join("\n  ")
    );
}
