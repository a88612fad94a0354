//! Target 2: Bundle and resource parsing, fact extraction, the decision and the cards.
//!
//! The input is JSON in one of the shapes the seeds use: a case file (`{"request": ...}`), a
//! hook request, or a bare prefetch object. The prefetch goes through
//! `Engine::record_from_prefetch`; the draft orders (the request's, or one fixed IORT order
//! when there are none) through `Engine::iort_orders`; every IORT order through
//! `Engine::assess` (facts and decision), and the determinations through the renderer. The
//! request schema is deliberately *not* applied first, so the fact code also sees shapes the
//! schema would have refused.
#![no_main]

use iort_cds::hook::{CrdConfiguration, HookRequest};
use iort_cds::limits::{self, Limits};
use iort_cds_fuzz::ENGINE;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value, json};

fn default_order(patient: &str) -> Value {
    json!({"resourceType": "Bundle", "type": "collection", "entry": [{"resource": {
        "resourceType": "ServiceRequest", "id": "iort-1", "status": "draft", "intent": "order",
        "subject": {"reference": format!("Patient/{patient}")},
        "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]}}}]})
}

fuzz_target!(|data: &[u8]| {
    // The service bounds depth and string length before it parses anything (iort_cds::limits).
    if limits::check_json(data, &Limits::default()).is_err() {
        return;
    }
    let Ok(mut doc) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    if let Some(r) = doc.get_mut("request").map(Value::take) {
        doc = r;
    }
    let Value::Object(mut obj) = doc else {
        return;
    };
    // A hook request (has a context) or a bare prefetch object.
    let (patient, draft_orders, prefetch) = match obj.remove("context") {
        Some(Value::Object(mut ctx)) => {
            let patient = ctx
                .get("patientId")
                .and_then(Value::as_str)
                .unwrap_or("pat-001")
                .to_owned();
            let orders = ctx
                .remove("draftOrders")
                .unwrap_or_else(|| default_order(&patient));
            let prefetch = match obj.remove("prefetch") {
                Some(Value::Object(p)) => p,
                _ => Map::new(),
            };
            (patient, orders, prefetch)
        }
        _ => ("pat-001".to_owned(), default_order("pat-001"), obj),
    };
    let synthetic = json!({"hook": "order-sign", "hookInstance": "fuzz",
        "context": {"userId": "Practitioner/fuzz", "patientId": patient, "draftOrders": draft_orders}});
    let Ok(request) = HookRequest::from_json(synthetic) else {
        return;
    };
    let record = ENGINE.record_from_prefetch(&patient, &prefetch);
    let orders = ENGINE.iort_orders(&request.context.draft_orders);
    let determinations = ENGINE.assess(orders, &record);
    let today = chrono::NaiveDate::from_ymd_opt(2025, 7, 1).expect("a valid date");
    let response = ENGINE.render(&determinations, &CrdConfiguration::default(), today);
    serde_json::to_vec(&response).expect("a CdsResponse always serialises");
});
