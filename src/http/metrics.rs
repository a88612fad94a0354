//! The HTTP side of the metrics ([`crate::metrics`]): building them for the engine, the
//! `GET /metrics` endpoint, and the middleware that counts and times each service call.

use std::time::Instant;

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::http::header::ACCEPT;
use actix_web::middleware::Next;
use actix_web::{HttpRequest, HttpResponse, web};

use crate::metrics::{Metrics, MetricsSettings, PATH};
use crate::pipeline::Engine;

/// The application's metrics, when `settings.enabled`, built for the engine's services; the
/// engine's gatherer counts its FHIR fetch failures into them.
pub fn install(settings: &MetricsSettings, engine: &mut Engine) -> Option<web::Data<Metrics>> {
    if !settings.enabled {
        return None;
    }
    let metrics = Metrics::new(engine.discovery.services.iter().map(|s| s.id.as_str()));
    engine.gatherer.count_failures_in(metrics.clone());
    Some(web::Data::new(metrics))
}

/// Register `metrics` as app data and `GET, HEAD /metrics`; nothing when `None` (disabled).
pub fn configure(cfg: &mut web::ServiceConfig, metrics: Option<web::Data<Metrics>>) {
    let Some(metrics) = metrics else {
        return;
    };
    cfg.app_data(metrics).service(
        web::resource(PATH)
            .route(web::get().to(scrape))
            .route(web::head().to(scrape))
            .default_service(web::to(|| super::routes::method_not_allowed("GET, HEAD"))),
    );
}

/// `GET /metrics`.
async fn scrape(req: HttpRequest, metrics: web::Data<Metrics>) -> HttpResponse {
    if let Some(store) = super::routes::store_of(&req) {
        let stats = store.stats();
        metrics.observe_store(stats.queue_depth, stats.write_failures);
    }
    let openmetrics = req
        .headers()
        .get_all(ACCEPT)
        .filter_map(|v| v.to_str().ok())
        .any(|v| v.contains("application/openmetrics-text"));
    match metrics.encode(openmetrics) {
        Ok((body, content_type)) => HttpResponse::Ok()
            .content_type(content_type)
            .insert_header(("Cache-Control", "no-store"))
            .body(body),
        Err(_) => {
            tracing::error!("the metrics could not be encoded");
            HttpResponse::InternalServerError().finish()
        }
    }
}

/// The service id of a call (`POST /cds-services/{id}`), as in the path; `None` for any
/// other request (discovery, feedback, probes, a preflight).
fn service_call(req: &ServiceRequest) -> Option<&str> {
    if req.method() != Method::POST {
        return None;
    }
    req.path()
        .strip_prefix("/cds-services/")
        .filter(|id| !id.is_empty() && !id.contains('/'))
}

/// Middleware for `actix_web::middleware::from_fn`: counts and times each service call by its
/// answer's status (errors and 401s included). Passes everything through untouched when the
/// metrics are off (no [`Metrics`] in the app data) or the request is not a service call.
///
/// The id is taken from the raw path: an id written with percent-escapes counts as `unknown`
/// even if it names a service.
pub async fn observe_calls<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<B>, actix_web::Error> {
    let metrics = req.app_data::<web::Data<Metrics>>();
    let Some((metrics, id)) = metrics.zip(service_call(&req)) else {
        return next.call(req).await;
    };
    let (metrics, service) = (metrics.clone(), metrics.service(id));
    let started = Instant::now();
    let res = next.call(req).await;
    let status = match &res {
        Ok(r) => r.status(),
        Err(e) => e.as_response_error().status_code(),
    };
    metrics.count_service_call(service, status, started.elapsed());
    res
}
