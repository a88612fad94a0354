//! The three hooks over HTTP (issue 7): discovery lists `order-sign`, `order-select` and the
//! `patient-view` what-if; `order-select` answers for the selected IORT orders only; the
//! what-if answers with at most one card and never a system action, honours `max-cards`, stays
//! silent for a patient without cancer, and says so honestly when the record cannot be read.
//!
//! Everything here runs from prefetch (or a dead FHIR server); the demo patients fetched from a
//! real FHIR server are in `tests/it/demo.rs`.

use crate::common;

use std::collections::BTreeSet;

use common::{TestApp, spawn_app};
use serde_json::{Value, json};

const SIGN: &str = "/cds-services/iort-coverage";
const SELECT: &str = "/cds-services/iort-coverage-select";
const PREVIEW: &str = "/cds-services/iort-coverage-preview";

fn example(name: &str) -> Value {
    let path = format!("{}/examples/demo/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The order-select example: draft orders iort-1 and iort-2 (IORT, CPT 77425), ct-pelvis (not
/// IORT) and capecitabine (a MedicationRequest) for the covered demo patient.
fn select_request(selections: &[&str]) -> Value {
    let mut r = example("order-select-demo-rc-t4-positive.json");
    r["context"]["selections"] = json!(selections);
    r
}

/// A patient-view request for `patient` that carries the prefetch of that patient's order-sign
/// example (no fhirServer).
fn preview_with_prefetch(patient: &str) -> Value {
    let sign = example(&format!("order-sign-{patient}.json"));
    json!({
        "hook": "patient-view",
        "hookInstance": "0b7d2f4e-8c1a-4f3e-9d6b-2a5c7e9f1b3d",
        "context": {"userId": "Practitioner/demo-dr-ramirez", "patientId": patient},
        "prefetch": sign["prefetch"].clone(),
    })
}

async fn post_ok(app: &TestApp, path: &str, body: &Value) -> Value {
    let res = app.post_json(path, body).await;
    let status = res.status();
    let body: Value = res.json().await.expect("a JSON body");
    assert_eq!(status, 200, "{path}: {body}");
    body
}

/// `Type/id` of the orders the system actions annotate.
fn annotated(response: &Value) -> BTreeSet<String> {
    response["systemActions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{}/{}",
                a["resource"]["resourceType"].as_str().unwrap_or("?"),
                a["resource"]["id"].as_str().unwrap_or("?")
            )
        })
        .collect()
}

fn cards(response: &Value) -> &[Value] {
    response["cards"].as_array().map_or(&[], Vec::as_slice)
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn discovery_lists_the_three_services_with_prefetch_and_crd_options() {
    let app = spawn_app().await;
    let res = app.get("/cds-services").await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.expect("JSON");
    let services = body["services"].as_array().expect("services");
    assert_eq!(services.len(), 3, "{body}");
    let expected = [
        (
            "iort-coverage",
            "order-sign",
            vec!["coverage-info", "max-cards"],
        ),
        (
            "iort-coverage-select",
            "order-select",
            vec!["coverage-info", "max-cards"],
        ),
        ("iort-coverage-preview", "patient-view", vec!["max-cards"]),
    ];
    let sign_prefetch = &services[0]["prefetch"];
    for (id, hook, options) in expected {
        let s = services
            .iter()
            .find(|s| s["id"] == id)
            .unwrap_or_else(|| panic!("{id} is not listed: {body}"));
        assert_eq!(s["hook"], hook, "{id}");
        assert!(
            s["title"].as_str().is_some() && s["description"].as_str().is_some(),
            "{id}"
        );
        // The same record for every hook, so the three can never disagree about a patient.
        assert_eq!(&s["prefetch"], sign_prefetch, "{id}: prefetch");
        let codes: Vec<&str> = s["extension"]["davinci-crd.configuration-options"]
            .as_array()
            .unwrap_or_else(|| panic!("{id}: no configuration-options"))
            .iter()
            .filter_map(|o| o["code"].as_str())
            .collect();
        assert_eq!(codes, options, "{id}: configuration options");
    }
    // Each announced service answers its own hook only.
    let res = app
        .post_json(SELECT, &example("order-sign-demo-rc-t4-positive.json"))
        .await;
    assert_eq!(
        res.status(),
        400,
        "order-sign body to the order-select service"
    );
    let res = app
        .post_json(PREVIEW, &example("order-sign-demo-rc-t4-positive.json"))
        .await;
    assert_eq!(
        res.status(),
        400,
        "order-sign body to the patient-view service"
    );
}

#[tokio::test]
async fn order_select_answers_only_for_the_selected_iort_orders() {
    let app = spawn_app().await;

    // One IORT order selected among four drafts (two IORT): one card, one action, for it only.
    let one = post_ok(&app, SELECT, &select_request(&["ServiceRequest/iort-1"])).await;
    assert_eq!(annotated(&one), set(&["ServiceRequest/iort-1"]), "{one}");
    assert_eq!(cards(&one).len(), 1, "{one}");
    assert!(
        cards(&one)[0]["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("IORT (CPT 77425) meets BCBSAZ criteria")),
        "{one}"
    );

    let other = post_ok(&app, SELECT, &select_request(&["ServiceRequest/iort-2"])).await;
    assert_eq!(
        annotated(&other),
        set(&["ServiceRequest/iort-2"]),
        "{other}"
    );
    assert_eq!(cards(&other).len(), 1);

    // Selecting only non-IORT orders (or an id not in draftOrders): nothing to say.
    for selection in [
        vec!["ServiceRequest/ct-pelvis"],
        vec!["MedicationRequest/capecitabine"],
        vec!["ServiceRequest/not-a-draft"],
    ] {
        let none = post_ok(&app, SELECT, &select_request(&selection)).await;
        assert_eq!(none, json!({"cards": []}), "{selection:?}");
    }

    // Both IORT orders and the medication selected: both IORT orders, nothing on the others.
    let both = post_ok(
        &app,
        SELECT,
        &select_request(&[
            "ServiceRequest/iort-2",
            "MedicationRequest/capecitabine",
            "ServiceRequest/iort-1",
        ]),
    )
    .await;
    assert_eq!(
        annotated(&both),
        set(&["ServiceRequest/iort-1", "ServiceRequest/iort-2"])
    );
    assert_eq!(cards(&both).len(), 2);

    // The same order gets the same answer from order-sign (which assesses every IORT order).
    let mut sign = select_request(&["ServiceRequest/iort-1"]);
    sign["hook"] = json!("order-sign");
    if let Some(ctx) = sign["context"].as_object_mut() {
        ctx.remove("selections");
    }
    let signed = post_ok(&app, SIGN, &sign).await;
    assert_eq!(
        annotated(&signed),
        set(&["ServiceRequest/iort-1", "ServiceRequest/iort-2"])
    );
    assert_eq!(cards(&signed)[0]["summary"], cards(&one)[0]["summary"]);

    // CRD options apply as for order-sign.
    let mut no_ci = select_request(&["ServiceRequest/iort-1"]);
    no_ci["extension"] = json!({"davinci-crd.configuration": {"coverage-info": false}});
    let r = post_ok(&app, SELECT, &no_ci).await;
    assert_eq!(cards(&r).len(), 1);
    assert!(r.get("systemActions").is_none(), "{r}");
}

#[tokio::test]
async fn order_select_without_selections_is_refused() {
    let app = spawn_app().await;
    let mut r = select_request(&["ServiceRequest/iort-1"]);
    if let Some(ctx) = r["context"].as_object_mut() {
        ctx.remove("selections");
    }
    let res = app.post_json(SELECT, &r).await;
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn patient_view_answers_one_what_if_card_and_no_system_action() {
    let app = spawn_app().await;
    let body = post_ok(&app, PREVIEW, &preview_with_prefetch("demo-rc-t4-positive")).await;
    assert!(
        body.get("systemActions").is_none(),
        "no order, no action: {body}"
    );
    assert_eq!(cards(&body).len(), 1, "{body}");
    let card = &cards(&body)[0];
    assert_eq!(card["indicator"], "info");
    let summary = card["summary"].as_str().unwrap_or_default();
    assert!(
        summary.starts_with("IORT would meet the BCBSAZ coverage criteria"),
        "{summary}"
    );
    assert!(summary.chars().count() < 140);
    let detail = card["detail"].as_str().unwrap_or_default();
    assert!(
        detail.starts_with("**No IORT order exists yet.**"),
        "{detail}"
    );
    assert!(
        detail.contains("Observation/demo-rc-t4-positive-margin"),
        "the evidence is shown: {detail}"
    );
    assert!(card.get("overrideReasons").is_none(), "nothing to override");
    assert_eq!(card["source"]["label"], "Blue Cross Blue Shield of Arizona");
    assert!(card["uuid"].as_str().is_some_and(|u| !u.is_empty()));

    // coverage-info does not apply (there is no action either way); max-cards does.
    let mut no_ci = preview_with_prefetch("demo-rc-t4-positive");
    no_ci["extension"] =
        json!({"davinci-crd.configuration": {"coverage-info": true, "max-cards": 1}});
    let r = post_ok(&app, PREVIEW, &no_ci).await;
    assert_eq!(cards(&r).len(), 1);
    assert!(r.get("systemActions").is_none());
    let mut zero = preview_with_prefetch("demo-rc-t4-positive");
    zero["extension"] = json!({"davinci-crd.configuration": {"max-cards": 0}});
    assert_eq!(post_ok(&app, PREVIEW, &zero).await, json!({"cards": []}));
}

#[tokio::test]
async fn patient_view_for_each_outcome_from_prefetch() {
    let app = spawn_app().await;
    for (patient, starts) in [
        (
            "demo-rc-recurrent-close",
            "IORT would meet the BCBSAZ coverage criteria",
        ),
        (
            "demo-rc-clear-margin",
            "IORT would not meet the BCBSAZ coverage criteria (margins clear)",
        ),
        (
            "demo-breast",
            "IORT would not meet the BCBSAZ coverage criteria (not rectal cancer",
        ),
        ("demo-rc-no-margin", "IORT would need: margin status"),
    ] {
        let body = post_ok(&app, PREVIEW, &preview_with_prefetch(patient)).await;
        assert_eq!(cards(&body).len(), 1, "{patient}: {body}");
        let summary = cards(&body)[0]["summary"].as_str().unwrap_or_default();
        assert!(summary.starts_with(starts), "{patient}: {summary}");
        assert_eq!(cards(&body)[0]["indicator"], "info", "{patient}");
    }
}

#[tokio::test]
async fn patient_view_is_silent_for_a_patient_without_cancer() {
    let app = spawn_app().await;
    let mut r = preview_with_prefetch("demo-rc-t4-positive");
    // The same patient with a problem list that holds no cancer (essential hypertension).
    r["prefetch"]["conditions"] = json!({"resourceType": "Bundle", "type": "searchset", "total": 1,
        "entry": [{"resource": {"resourceType": "Condition", "id": "htn",
            "clinicalStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}]},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "I10"}]},
            "subject": {"reference": "Patient/demo-rc-t4-positive"}}}]});
    r["prefetch"]["observations"] = json!(null);
    r["prefetch"]["procedures"] = json!(null);
    assert_eq!(post_ok(&app, PREVIEW, &r).await, json!({"cards": []}));
}

#[tokio::test]
async fn patient_view_with_an_unreachable_fhir_server_says_it_could_not_be_determined() {
    // A port that was free a moment ago: nothing listens there now.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port");
    let app = spawn_app().await;
    let r = json!({
        "hook": "patient-view",
        "hookInstance": "5d0c3c1e-2f7b-4f8e-b3c9-7a1d2e3f4a5b",
        "fhirServer": format!("http://127.0.0.1:{port}/fhir/R4"),
        "context": {"userId": "Practitioner/demo-dr-ramirez", "patientId": "demo-breast"}
    });
    let body = post_ok(&app, PREVIEW, &r).await;
    assert_eq!(cards(&body).len(), 1, "{body}");
    let card = &cards(&body)[0];
    let summary = card["summary"].as_str().unwrap_or_default();
    assert!(summary.contains("could not be determined"), "{summary}");
    assert_eq!(card["indicator"], "info");
    let detail = card["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("**Could not be determined.**"), "{detail}");
    assert!(body.get("systemActions").is_none());
}

#[tokio::test]
async fn patient_view_without_prefetch_or_fhir_server_is_412() {
    let app = spawn_app().await;
    let r = json!({
        "hook": "patient-view",
        "hookInstance": "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d",
        "context": {"userId": "Practitioner/demo-dr-ramirez", "patientId": "demo-breast"}
    });
    let res = app.post_json(PREVIEW, &r).await;
    assert_eq!(res.status(), 412);
}

#[tokio::test]
async fn feedback_is_accepted_for_the_new_services() {
    let app = spawn_app().await;
    let body = post_ok(&app, PREVIEW, &preview_with_prefetch("demo-rc-no-margin")).await;
    let uuid = cards(&body)[0]["uuid"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for path in [PREVIEW, SELECT] {
        let fb = json!({"feedback": [{"card": uuid, "outcome": "accepted",
            "outcomeTimestamp": "2026-11-26T10:00:00Z"}]});
        let res = app.post_json(&format!("{path}/feedback"), &fb).await;
        assert_eq!(res.status(), 200, "{path}");
    }
}
