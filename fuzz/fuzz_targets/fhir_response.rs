//! Target 4: what the gathering stage does with a FHIR server's answer.
//!
//! The bytes are the body of a 200 answer. They go through `Query::read_answer` (JSON, type
//! and `next`-link checks) for a read and for a search, exactly as `FhirClient::fetch` calls
//! it, and through `RecordBuilder::add_value` (Bundle splitting, per-resource fhirbolt parsing,
//! patient filtering, de-duplication, limits), both as parsed JSON and as whatever
//! `read_answer` kept.
#![no_main]

use std::sync::LazyLock;

use iort_cds::gather::allow_list::BaseUrl;
use iort_cds::gather::fhir_client::Query;
use iort_cds::gather::prefetch::RecordBuilder;
use iort_cds::limits::{self, Limits};
use iort_cds_fuzz::ENGINE;
use libfuzzer_sys::fuzz_target;
use reqwest::StatusCode;
use serde_json::Value;

static LIMITS: LazyLock<Limits> = LazyLock::new(Limits::default);

static QUERIES: LazyLock<(BaseUrl, Query, Query)> = LazyLock::new(|| {
    let base = BaseUrl::parse("https://ehr.example.org/fhir").expect("a valid base URL");
    let search =
        Query::new("observations", "Observation?patient=pat-001", &base).expect("a search query");
    let read = Query::new("patient", "Patient/pat-001", &base).expect("a read query");
    (base, search, read)
});

fuzz_target!(|data: &[u8]| {
    let (base, search, read) = &*QUERIES;
    let mut builder = RecordBuilder::new("pat-001", ENGINE.terminology());
    for query in [search, read] {
        if let Ok(answer) = query.read_answer(StatusCode::OK, data, &LIMITS) {
            if let Some(next) = answer.next {
                // What `fetch` does with the link: resolve it, then keep it only under the base.
                if let Ok(url) = query.url.join(&next) {
                    let _ = base.contains(&url);
                }
            }
            if let Some(value) = answer.value {
                builder.add_value(&query.key, value);
            }
        }
    }
    // The raw value too, bounded as the service bounds everything it parses, so the builder
    // also sees what read_answer would have refused (a Bundle with too many entries ...).
    if limits::check_json(data, &LIMITS).is_ok()
        && let Ok(value) = serde_json::from_slice::<Value>(data)
    {
        builder.add_value("conditions", value);
    }
    let record = builder.finish();
    assert_eq!(record.patient_id, "pat-001");
});
