//! Builders shared by the extractor tests: the embedded terminology (loaded once) and fhirbolt
//! resources parsed from JSON, so the tests exercise the real value set files.

use std::sync::OnceLock;

use fhirbolt::model::r4::resources::{Condition, Coverage, Observation, Procedure, ServiceRequest};
use serde_json::Value;

use crate::assets::Assets;
use crate::record::PatientRecord;
use crate::terminology::Terminology;

pub(crate) fn terminology() -> &'static Terminology {
    static T: OnceLock<Terminology> = OnceLock::new();
    T.get_or_init(|| Terminology::load(&Assets::embedded()).expect("embedded terminology loads"))
}

fn parse<T: fhirbolt::serde::DeserializeResourceOwned>(v: Value) -> T {
    crate::facts::fhir::parse_resource(v, false).expect("test resource parses")
}

pub(crate) fn condition(v: Value) -> Condition {
    parse(v)
}

pub(crate) fn observation(v: Value) -> Observation {
    parse(v)
}

pub(crate) fn procedure(v: Value) -> Procedure {
    parse(v)
}

pub(crate) fn coverage(v: Value) -> Coverage {
    parse(v)
}

pub(crate) fn service_request(v: Value) -> ServiceRequest {
    parse(v)
}

pub(crate) fn record(
    conditions: Vec<Condition>,
    procedures: Vec<Procedure>,
    observations: Vec<Observation>,
) -> PatientRecord {
    PatientRecord {
        patient_id: "p1".to_owned(),
        conditions,
        procedures,
        observations,
        ..Default::default()
    }
}

/// The scope an order without a reason gives the facts of `record` (`ServiceRequest/o`): what
/// the staging, recurrence and margin tests read their facts from.
pub(crate) fn scope_without_order(record: &PatientRecord) -> crate::facts::indication::Scope<'_> {
    let mut issues = Vec::new();
    crate::facts::indication::find(
        None,
        crate::resource_ref::ResourceRef::new("ServiceRequest", Some("o")),
        record,
        terminology(),
        &mut issues,
    )
    .1
}
