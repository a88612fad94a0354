//! The endpoints: discovery, service calls, feedback, liveness and readiness.

use std::panic::AssertUnwindSafe;
use std::time::Instant;

use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::FutureExt;
use serde_json::json;
use tracing_actix_web::RequestId;

use super::{ApiError, body};
use crate::hook::CdsResponse;
use crate::pipeline::Engine;

/// Per-server HTTP settings the handlers need.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub max_body_bytes: usize,
}

/// Register every route on an actix `ServiceConfig`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/cds-services")
            .route(web::get().to(discovery))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/cds-services/{id}")
            .route(web::post().to(call_service))
            .default_service(web::to(method_not_allowed)),
    )
    .service(
        web::resource("/cds-services/{id}/feedback")
            .route(web::post().to(feedback))
            .default_service(web::to(method_not_allowed)),
    )
    .service(web::resource("/healthz").route(web::get().to(healthz)))
    .service(web::resource("/readyz").route(web::get().to(readyz)));
}

fn json_ok(body: String) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header(ContentType::json())
        .body(body)
}

/// `GET /cds-services`.
async fn discovery(engine: web::Data<Engine>) -> HttpResponse {
    json_ok(engine.discovery_document().to_string())
}

/// `POST /cds-services/{id}`.
async fn call_service(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
    settings: web::Data<HttpSettings>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let service_id = path.into_inner();
    if !engine.has_service(&service_id) {
        // Answer 404 before reading (possibly large) bodies for services that do not exist.
        return Err(crate::pipeline::CallError::UnknownService(service_id).into());
    }
    let bytes = body::read_json(&req, payload, settings.max_body_bytes).await?;
    let started = Instant::now();
    // A panic in the pipeline (a bug) must cost one request, not the worker: answer 500 and
    // keep serving.
    let outcome = AssertUnwindSafe(engine.call(&service_id, &bytes))
        .catch_unwind()
        .await;
    let response = match outcome {
        Ok(r) => r?,
        Err(_) => {
            tracing::error!(service = %service_id, "the pipeline panicked; answered 500");
            return Err(ApiError::Internal(request_id.to_string()));
        }
    };
    log_outcome(&service_id, &response, started);
    Ok(json_ok(
        serde_json::to_string(&response).map_err(|_| ApiError::Internal(request_id.to_string()))?,
    ))
}

/// One structured line per answered call: ids and codes only.
fn log_outcome(service_id: &str, response: &CdsResponse, started: Instant) {
    let covered: Vec<String> = response
        .system_actions
        .iter()
        .filter_map(|a| a.resource.as_ref())
        .map(|r| {
            let id = r.get("id").and_then(|v| v.as_str()).unwrap_or("?");
            let code = covered_code(r).unwrap_or("?");
            format!("{id}={code}")
        })
        .collect();
    tracing::info!(
        service = service_id,
        cards = response.cards.len(),
        actions = response.system_actions.len(),
        outcomes = %covered.join(","),
        elapsed_us = started.elapsed().as_micros() as u64,
        "hook call answered"
    );
}

/// The CRD `covered` code on an order returned in a system action.
fn covered_code(resource: &serde_json::Value) -> Option<&str> {
    resource
        .get("extension")?
        .as_array()?
        .iter()
        .filter(|e| e.get("url").and_then(|u| u.as_str()) == Some(COVERAGE_INFORMATION))
        .flat_map(|e| {
            e.get("extension")
                .and_then(|x| x.as_array())
                .into_iter()
                .flatten()
        })
        .find(|x| x.get("url").and_then(|u| u.as_str()) == Some("covered"))?
        .get("valueCode")?
        .as_str()
}

const COVERAGE_INFORMATION: &str =
    "http://hl7.org/fhir/us/davinci-crd/StructureDefinition/ext-coverage-information";

/// `POST /cds-services/{id}/feedback`.
async fn feedback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
    settings: web::Data<HttpSettings>,
) -> Result<HttpResponse, ApiError> {
    let service_id = path.into_inner();
    if !engine.has_service(&service_id) {
        return Err(crate::pipeline::CallError::UnknownService(service_id).into());
    }
    let bytes = body::read_json(&req, payload, settings.max_body_bytes).await?;
    let items = engine.feedback(&service_id, &bytes)?;
    for f in &items {
        // The free-text userComment may hold clinical content: only its presence is logged.
        tracing::info!(
            event = "cds.feedback",
            service = %service_id,
            card = %f.card,
            outcome = %f.outcome,
            override_reason = f.override_reason.as_deref().unwrap_or(""),
            accepted_suggestions = f.accepted_suggestions,
            has_comment = f.has_comment,
            outcome_timestamp = %f.outcome_timestamp,
            "feedback received"
        );
    }
    Ok(HttpResponse::Ok().finish())
}

/// `GET /healthz`: the process is up.
async fn healthz() -> HttpResponse {
    json_ok(json!({"status": "ok"}).to_string())
}

/// `GET /readyz`: schemas, value sets, policy and templates are loaded (the server does not
/// start without them) and the configuration was valid.
async fn readyz(engine: web::Data<Engine>) -> HttpResponse {
    json_ok(
        json!({
            "status": "ready",
            "services": engine.discovery.services.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
        })
        .to_string(),
    )
}

async fn method_not_allowed() -> HttpResponse {
    let body = super::error::operation_outcome(vec![json!({
        "severity": "error", "code": "not-supported",
        "diagnostics": "method not allowed on this endpoint"
    })]);
    HttpResponse::MethodNotAllowed()
        .insert_header(ContentType::json())
        .body(body.to_string())
}

/// Unknown paths: 404 with an OperationOutcome.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}
