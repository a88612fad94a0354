//! The endpoints: discovery, service calls, feedback, liveness and readiness.

use std::time::Instant;

use actix_web::HttpMessage;
use actix_web::http::header::ContentType;
use actix_web::{HttpRequest, HttpResponse, web};
use serde_json::json;
use tracing_actix_web::RequestId;

use super::compute::ComputePool;
use super::{ApiError, body};
use crate::auth::VerifiedClient;
use crate::metrics::Metrics;

use crate::pipeline::{Answer, Engine};
use crate::store::{self, Store};

/// The audit store, when it is on (registered by `startup` as `Option<Data<Store>>`).
pub(crate) fn store_of(req: &HttpRequest) -> Option<&Store> {
    req.app_data::<Option<web::Data<Store>>>()?
        .as_ref()
        .map(|d| d.get_ref())
}

/// Per-server HTTP settings the handlers need.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    /// Size, deadline and minimum rate of a request body.
    pub body_pace: body::BodyPace,
    /// Shared by every worker: see [`body::BodyBudget`].
    pub body_budget: body::BodyBudget,
}

/// Register every route on an actix `ServiceConfig`.
///
/// GET routes answer HEAD too (RFC 9110: a server that supports GET should support HEAD; the
/// body is left out), and a wrong method gets 405 with the `Allow` header naming the right ones.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource("/cds-services")
            .route(web::get().to(discovery))
            .route(web::head().to(discovery))
            .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
    )
    .service(
        web::resource("/cds-services/{id}")
            .route(web::post().to(call_service))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .service(
        web::resource("/cds-services/{id}/feedback")
            .route(web::post().to(feedback))
            .default_service(web::to(|| method_not_allowed("POST"))),
    )
    .service(
        web::resource("/healthz")
            .route(web::get().to(healthz))
            .route(web::head().to(healthz))
            .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
    )
    .service(
        web::resource("/readyz")
            .route(web::get().to(readyz))
            .route(web::head().to(readyz))
            .default_service(web::to(|| method_not_allowed("GET, HEAD"))),
    );
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

/// The JSON body of a call to an existing service. The service id is checked first, so a
/// 404 is answered before a (possibly large) body for a service that does not exist is read.
async fn service_body(
    req: &HttpRequest,
    payload: web::Payload,
    engine: &Engine,
    settings: &HttpSettings,
    service_id: &str,
) -> Result<(web::Bytes, body::BodyRoom), ApiError> {
    if !engine.has_service(service_id) {
        return Err(crate::pipeline::CallError::UnknownService(service_id.to_owned()).into());
    }
    body::read_json(req, payload, settings.body_pace, &settings.body_budget).await
}

/// `POST /cds-services/{id}`.
async fn call_service(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
    settings: web::Data<HttpSettings>,
    pool: web::Data<ComputePool>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let service_id = path.into_inner();
    let (bytes, room) = service_body(&req, payload, &engine, &settings, &service_id).await?;
    let started = Instant::now();
    let request_id = request_id.to_string();
    // The authenticated issuer's own list of FHIR servers it may send (empty: not restricted).
    let caller_allowed = req
        .extensions()
        .get::<VerifiedClient>()
        .map(|c| c.fhir_servers.clone())
        .filter(|list| !list.is_empty());
    let store = store_of(&req);
    let kept_request = store.filter(|s| s.keeps_requests()).map(|_| bytes.clone());
    let engine = engine.into_inner();
    let policy_engine = engine.clone();
    let id = service_id.clone();
    let response = guarded(&pool, &request_id, &service_id, async move {
        let answer = engine.call_as(&id, &bytes, caller_allowed.as_deref()).await;
        // The body's share of the in-flight budget is given back when the call is done, even
        // if the client stopped waiting for it.
        drop(room);
        answer
    })
    .await??;
    log_outcome(&service_id, &response, started);
    let body = serde_json::to_string(&response.response)
        .map_err(|_| ApiError::Internal(request_id.clone()))?;
    if let Some(m) = req.app_data::<web::Data<Metrics>>() {
        m.orders_assessed(&service_id, response.outcomes.iter().map(|o| o.covered));
    }
    if let Some(store) = store {
        store.submit_call(store::CallRecord {
            received_at: store::records::now_text(),
            client: store::ClientRecord::of(req.extensions().get::<VerifiedClient>()),
            orders: store::records::orders(
                &response.determinations,
                &response.response,
                policy_engine.policy(),
            ),
            header: response.call.unwrap_or_default(),
            request_id,
            service_id,
            response_body: body.clone(),
            request_body: kept_request.map(|b| String::from_utf8_lossy(&b).into_owned()),
        });
    }
    Ok(json_ok(body))
}

/// Run one request's work on the [`ComputePool`] so that a panic in it (a bug) costs this
/// request alone, not the worker and every connection on it: the panic ends the call's task,
/// is logged with the request id (the panic message goes to the panic hook, not into the
/// answer), and is answered 500 with an OperationOutcome naming the request id; serving goes
/// on. Needs unwinding panics: the release profile must never set `panic = "abort"`.
async fn guarded<T: Send + 'static>(
    pool: &ComputePool,
    request_id: &str,
    service_id: &str,
    work: impl Future<Output = T> + Send + 'static,
) -> Result<T, ApiError> {
    pool.run(work).await.map_err(|_| {
        tracing::error!(
            request_id,
            service = %service_id,
            "a panic while answering the request; answered 500"
        );
        ApiError::Internal(request_id.to_owned())
    })
}

/// One structured line per answered call: ids and codes only.
fn log_outcome(service_id: &str, answer: &Answer, started: Instant) {
    let outcomes: Vec<String> = answer
        .outcomes
        .iter()
        .map(|o| format!("{}={}", o.order, o.covered))
        .collect();
    tracing::info!(
        service = service_id,
        cards = answer.response.cards.len(),
        actions = answer.response.system_actions.len(),
        outcomes = %outcomes.join(","),
        elapsed_us = started.elapsed().as_micros() as u64,
        "hook call answered"
    );
}

/// `POST /cds-services/{id}/feedback`.
async fn feedback(
    req: HttpRequest,
    path: web::Path<String>,
    payload: web::Payload,
    engine: web::Data<Engine>,
    settings: web::Data<HttpSettings>,
    pool: web::Data<ComputePool>,
    request_id: RequestId,
) -> Result<HttpResponse, ApiError> {
    let service_id = path.into_inner();
    let (bytes, room) = service_body(&req, payload, &engine, &settings, &service_id).await?;
    let request_id = request_id.to_string();
    let (engine, id) = (engine.into_inner(), service_id.clone());
    let items = guarded(&pool, &request_id, &service_id, async move {
        let items = engine.feedback(&id, &bytes);
        drop(room);
        items
    })
    .await??;
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
    if let Some(store) = store_of(&req) {
        let iss = req
            .extensions()
            .get::<VerifiedClient>()
            .map(|c| c.iss.clone());
        for f in items {
            store.submit_feedback(store::FeedbackRecord {
                id: uuid::Uuid::new_v4().to_string(),
                received_at: store::records::now_text(),
                request_id: request_id.clone(),
                service_id: service_id.clone(),
                card_uuid: f.card,
                outcome: f.outcome,
                override_reason: f.override_reason,
                accepted_suggestions: i64::try_from(f.accepted_suggestions).unwrap_or(i64::MAX),
                has_comment: f.has_comment,
                outcome_timestamp: f.outcome_timestamp,
                client_iss: iss.clone(),
            });
        }
    }
    Ok(HttpResponse::Ok().finish())
}

/// `GET /healthz`: the process is up.
async fn healthz() -> HttpResponse {
    json_ok(json!({"status": "ok"}).to_string())
}

/// `GET /readyz`: schemas, value sets, policy and templates are loaded (the server does not
/// start without them) and the configuration was valid. Still 200 when the audit store is
/// degraded (its database unreachable, its queue overflowed): calls are answered all the same,
/// so a load balancer must keep sending them; `status` says `degraded` and `store.degraded`
/// says why, for monitoring.
async fn readyz(req: HttpRequest, engine: web::Data<Engine>) -> HttpResponse {
    let store = store_of(&req);
    let degraded = store.is_some_and(|s| !s.degraded().is_empty());
    json_ok(
        json!({
            "status": if degraded { "degraded" } else { "ready" },
            "services": engine.discovery.services.iter().map(|s| s.id.clone()).collect::<Vec<_>>(),
            "store": store.map(Store::readiness),
        })
        .to_string(),
    )
}

pub(crate) async fn method_not_allowed(allow: &'static str) -> HttpResponse {
    let body = super::error::operation_outcome(vec![json!({
        "severity": "error", "code": "not-supported",
        "diagnostics": format!("method not allowed on this endpoint (allowed: {allow})")
    })]);
    HttpResponse::MethodNotAllowed()
        .insert_header(ContentType::json())
        .insert_header((actix_web::http::header::ALLOW, allow))
        .body(body.to_string())
}

/// Unknown paths: 404 with an OperationOutcome.
pub async fn not_found() -> Result<HttpResponse, ApiError> {
    Err(ApiError::NotFound)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::{App, test};

    /// One route that panics through [`guarded`] and one that does not, on the same app.
    async fn answer(
        panic: web::Path<bool>,
        pool: web::Data<ComputePool>,
    ) -> Result<HttpResponse, ApiError> {
        let panic = panic.into_inner();
        let n = guarded(&pool, "req-1", "svc", async move {
            if panic {
                panic!("a bug");
            }
            42
        })
        .await?;
        Ok(json_ok(json!({"n": n}).to_string()))
    }

    #[actix_web::test]
    async fn a_panic_is_a_500_with_an_operation_outcome_and_serving_goes_on() {
        let pool = web::Data::new(ComputePool::new(1).unwrap());
        let app = test::init_service(
            App::new()
                .app_data(pool)
                .route("/{panic}", web::get().to(answer)),
        )
        .await;
        let res =
            test::call_service(&app, test::TestRequest::get().uri("/true").to_request()).await;
        assert_eq!(res.status(), 500);
        let body: serde_json::Value = test::read_body_json(res).await;
        assert_eq!(body["resourceType"], "OperationOutcome");
        assert_eq!(body["issue"][0]["code"], "exception");
        assert!(
            body["issue"][0]["diagnostics"]
                .as_str()
                .is_some_and(|d| d.contains("req-1") && !d.contains("a bug")),
            "{body}"
        );
        for _ in 0..3 {
            let res =
                test::call_service(&app, test::TestRequest::get().uri("/false").to_request()).await;
            assert_eq!(res.status(), 200);
            let body: serde_json::Value = test::read_body_json(res).await;
            assert_eq!(body["n"], 42);
        }
    }
}
