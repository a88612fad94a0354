//! Target 1: the hook request parser and validator, then the whole pipeline on what passes.
//!
//! The first byte picks the service (order-sign, order-select, patient-view); the rest is the
//! HTTP body. `Engine::parse_call` (every part parsed) and `Engine::screen_call` (the route's
//! way in: the fast path, the prefetch kept as text and read by the record builder from the
//! body's own bytes) must answer Ok or a `CallError` for any bytes. A request that passes is
//! then run through gather (prefetch only: `fhirServer` is removed so nothing is fetched),
//! facts, decision and render, as the route would.
#![no_main]

use iort_cds::hook::call::Screened;
use iort_cds_fuzz::{ENGINE, block_on};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let services = ENGINE.services();
    let service_id = services[usize::from(selector) % services.len()].id.clone();
    let parsed = ENGINE.parse_call(&service_id, body).ok();
    let screened = match ENGINE.screen_call(&service_id, body) {
        Ok(Screened::Request(service, request)) => Some((service, *request)),
        _ => None,
    };
    for (service, mut request) in parsed.into_iter().chain(screened) {
        request.fhir_server = None;
        request.fhir_authorization = None;
        if let Ok(answer) = block_on(ENGINE.run(service, request, None)) {
            // The answer must serialise: the route writes it with serde_json.
            serde_json::to_vec(&answer.response).expect("a CdsResponse always serialises");
        }
    }
});
