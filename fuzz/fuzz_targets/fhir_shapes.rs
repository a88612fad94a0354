//! Target 5 (issue 13): valid requests with one to eight structural mutations, through every
//! entry point where the service parses FHIR.
//!
//! The bytes are choices (see `iort_cds_fuzz::structured`): a case of `tests/cases`, then nodes
//! and mutations (empty arrays and objects, arrays for primitives, numbers for strings, nulls,
//! elements removed, nodes transplanted, `_element` siblings, unknown elements). The request
//! then goes
//! 1. as an HTTP body through `Engine::parse_call` and the whole pipeline (`fhirServer`
//!    removed), as the route runs it, picking the service from a choice byte;
//! 2. without the request schema, through `HookRequest::from_json` on its draft orders,
//!    `Engine::record_from_prefetch`, `Engine::assess` (facts and decision) and `Engine::render`, as
//!    `prefetch_facts` does, so the fact code sees shapes the schema would refuse;
//! 3. each prefetch value as a FHIR server's 200 answer to a search, through
//!    `Query::read_answer` and `RecordBuilder::add_value`, as `FhirClient::fetch` does.
//!
//! The property: nothing panics past the service's guards. fhirbolt does panic on some of
//! these shapes; `iort_cds::fhir_json` catches that at every entry point, so a caught panic is
//! fine and is only counted (its location printed once). libfuzzer-sys's own hook aborts on
//! *any* panic, caught or not, so it is replaced here; a panic that is not caught still
//! unwinds into libfuzzer-sys's `catch_unwind`, which aborts: a crash.
#![no_main]

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{LazyLock, Mutex, Once};

use iort_cds::gather::allow_list::BaseUrl;
use iort_cds::gather::fhir_client::Query;
use iort_cds::gather::prefetch::RecordBuilder;
use iort_cds::hook::{CrdConfiguration, HookRequest};
use iort_cds::limits::{self, Limits};
use iort_cds_fuzz::structured::mutate;
use iort_cds_fuzz::{ENGINE, block_on};
use libfuzzer_sys::fuzz_target;
use reqwest::StatusCode;
use serde_json::{Map, Value, json};

static PANICS: AtomicU64 = AtomicU64::new(0);
static PLACES: LazyLock<Mutex<BTreeSet<String>>> = LazyLock::new(|| Mutex::new(BTreeSet::new()));
static HOOK: Once = Once::new();

/// Count panics and print each new location once, without aborting (see the module doc).
fn count_panics() {
    HOOK.call_once(|| {
        std::panic::set_hook(Box::new(|info| {
            let n = PANICS.fetch_add(1, Ordering::Relaxed) + 1;
            let place = info
                .location()
                .map(|l| format!("{}:{}", l.file(), l.line()))
                .unwrap_or_default();
            let mut places = PLACES.lock().unwrap_or_else(|p| p.into_inner());
            if places.insert(place.clone()) {
                eprintln!("fhir_shapes: panic #{n} at a new place: {place}");
            } else if n.is_power_of_two() {
                eprintln!("fhir_shapes: {n} panics so far ({} places)", places.len());
            }
        }));
    });
}

static SEARCH: LazyLock<Query> = LazyLock::new(|| {
    let base = BaseUrl::parse("https://ehr.example.org/fhir").expect("a valid base URL");
    Query::new("observations", "Observation?patient=pat-001", &base).expect("a search query")
});

fuzz_target!(|data: &[u8]| {
    count_panics();
    let doc = mutate(data);

    // 1. The HTTP body, as the route runs it, to the service of the request's hook (the
    //    first one when the hook was mutated away).
    let body = serde_json::to_vec(&doc).expect("a Value serialises");
    let services = ENGINE.services();
    let hook = doc.get("hook").and_then(Value::as_str).unwrap_or_default();
    let service_id = services
        .iter()
        .find(|s| s.hook.as_str() == hook)
        .unwrap_or(&services[0])
        .id
        .clone();
    if let Ok((service, mut request)) = ENGINE.parse_call(&service_id, &body) {
        request.fhir_server = None;
        request.fhir_authorization = None;
        if let Ok(answer) = block_on(ENGINE.run(service, request, None)) {
            serde_json::to_vec(&answer.response).expect("a CdsResponse always serialises");
        }
    }

    // 2. Without the schema: draft orders, prefetch record, facts, decision, cards.
    let patient = doc
        .pointer("/context/patientId")
        .and_then(Value::as_str)
        .unwrap_or("pat-001")
        .to_owned();
    let prefetch = match doc.get("prefetch") {
        Some(Value::Object(p)) => p.clone(),
        _ => Map::new(),
    };
    let orders = doc
        .pointer("/context/draftOrders")
        .cloned()
        .unwrap_or(Value::Null);
    let synthetic = json!({"hook": "order-sign", "hookInstance": "fuzz",
        "context": {"userId": "Practitioner/fuzz", "patientId": patient, "draftOrders": orders}});
    let record = ENGINE.record_from_prefetch(&patient, &prefetch);
    if let Ok(request) = HookRequest::from_json(synthetic) {
        let orders = ENGINE.iort_orders(&request.context.draft_orders);
        let determinations = ENGINE.assess(orders, &record);
        let today = chrono::NaiveDate::from_ymd_opt(2025, 7, 1).expect("a valid date");
        let response = ENGINE.render(&determinations, &CrdConfiguration::default(), today);
        serde_json::to_vec(&response).expect("a CdsResponse always serialises");
    }

    // 3. Each prefetch value as a FHIR server's answer to a search.
    let limits = Limits::default();
    let mut builder = RecordBuilder::new(&patient, ENGINE.terminology());
    for value in prefetch.values() {
        let bytes = serde_json::to_vec(value).expect("a Value serialises");
        if limits::check_json(&bytes, &limits).is_err() {
            continue;
        }
        if let Ok(answer) = SEARCH.read_answer(StatusCode::OK, &bytes, &limits)
            && let Some(v) = answer.value
        {
            builder.add_value(&SEARCH.key, v);
        }
    }
    let _ = builder.finish();
});
