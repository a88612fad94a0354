//! The actix-web side: a middleware function that checks the client JWT on every request
//! (except probes and CORS preflights) and an extractor for the verified client.
//!
//! The middleware finds the shared [`Authenticator`] in the app data, so it needs no
//! constructor arguments and works with `actix_web::middleware::from_fn`:
//!
//! ```text
//! App::new()
//!     .app_data(web::Data::new(authenticator))      // or .app_data(authenticator)
//!     .wrap(from_fn(iort_cds::auth::require_jwt))
//! ```
//!
//! Register CORS *outside* it (`.wrap(cors)` after this `.wrap`) so that CORS headers are also
//! added to 401 answers; preflights pass either way. If no `Authenticator` is registered the
//! middleware fails closed with a bare 500 and logs the wiring error.

use std::future::{Ready, ready};

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header::{AUTHORIZATION, WWW_AUTHENTICATE};
use actix_web::middleware::Next;
use actix_web::{FromRequest, HttpMessage, HttpRequest, HttpResponse, web};

use super::{AuthFailure, AuthMode, Authenticator, Rejection, VerifiedClient};

/// The answer to every authentication failure: `401` with `WWW-Authenticate: Bearer` and an
/// empty body. Deliberately the same for all reasons, so a caller learns nothing about which
/// check failed.
pub fn unauthorized() -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((WWW_AUTHENTICATE, "Bearer"))
        .finish()
}

fn authenticator(req: &ServiceRequest) -> Option<Authenticator> {
    req.app_data::<web::Data<Authenticator>>()
        .map(|d| d.get_ref().clone())
        .or_else(|| req.app_data::<Authenticator>().cloned())
}

/// The `Authorization` value: `Ok(None)` when absent, an error when repeated or not visible
/// ASCII (both would make "which token counts" ambiguous).
fn authorization(req: &ServiceRequest) -> Result<Option<&str>, AuthFailure> {
    let mut values = req.headers().get_all(AUTHORIZATION);
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(AuthFailure::NotBearer);
    }
    first
        .to_str()
        .map(Some)
        .map_err(|_| AuthFailure::Malformed("Authorization is not ASCII"))
}

/// Middleware for `actix_web::middleware::from_fn`: passes requests through when
/// authentication is disabled or the request is exempt ([`Authenticator::is_exempt`]);
/// otherwise verifies the JWT for the URL called and either inserts a [`VerifiedClient`] into
/// the request extensions or answers [`unauthorized`] and logs the reason (never the token).
pub async fn require_jwt<B: MessageBody + 'static>(
    req: ServiceRequest,
    next: Next<B>,
) -> Result<ServiceResponse<EitherBody<B>>, actix_web::Error> {
    let Some(auth) = authenticator(&req) else {
        tracing::error!(
            "require_jwt is wrapped around the app but no Authenticator is in app_data"
        );
        return Ok(req
            .into_response(HttpResponse::InternalServerError().finish())
            .map_into_right_body());
    };
    if auth.mode() == AuthMode::Disabled || auth.is_exempt(req.request()) {
        return next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body);
    }
    let peer = req.peer_addr().map(|a| a.ip());
    if let Some(wait) = auth.peer_blocked(peer) {
        if let Some(held_back) = auth.admit_refusal_log() {
            tracing::warn!(
                path = %req.path(),
                refusals_not_logged = held_back,
                "CDS client refused unchecked: too many refused tokens from its address"
            );
        }
        return Ok(req
            .into_response(too_many_refusals(wait))
            .map_into_right_body());
    }
    let audiences = auth.audiences_for(req.path());
    let audiences: Vec<&str> = audiences.iter().map(String::as_str).collect();
    let verdict = match authorization(&req) {
        Ok(value) => auth.verify_any(value, &audiences).await,
        Err(reason) => Err(Rejection::from(reason)),
    };
    match verdict {
        Ok(client) => {
            tracing::debug!(iss = %client.iss, kid = %client.kid, jti = %client.jti, "CDS client authenticated");
            req.extensions_mut().insert(crate::telemetry::Caller {
                iss: client.iss.clone(),
                kid: client.kid.clone(),
            });
            req.extensions_mut().insert(client);
            next.call(req)
                .await
                .map(ServiceResponse::map_into_left_body)
        }
        Err(rejection) => {
            let now_blocked = auth.count_refusal(peer);
            // A flood of bad tokens must not become a flood of log lines: one a second, with
            // the count of those held back.
            if let Some(held_back) = auth.admit_refusal_log() {
                tracing::warn!(
                    reason = %rejection.reason,
                    iss = ?rejection.iss,
                    kid = ?rejection.kid,
                    method = %req.method(),
                    path = %req.path(),
                    refusals_not_logged = held_back,
                    peer_now_blocked = now_blocked,
                    "CDS client JWT refused"
                );
            }
            Ok(req.into_response(unauthorized()).map_into_right_body())
        }
    }
}

/// Handlers can take `client: VerifiedClient` (401 when absent, e.g. a route outside the
/// middleware) or `client: Option<VerifiedClient>` (None when authentication is disabled).
impl FromRequest for VerifiedClient {
    type Error = actix_web::Error;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<VerifiedClient>()
                .cloned()
                .ok_or_else(|| {
                    actix_web::error::InternalError::from_response(
                        "no verified CDS client",
                        unauthorized(),
                    )
                    .into()
                }),
        )
    }
}

/// `429 Too Many Requests` with `Retry-After` (whole seconds, at least 1) and no body: the
/// peer sent more refused tokens than `auth.refusals_per_peer_per_minute` allows.
fn too_many_refusals(wait: std::time::Duration) -> HttpResponse {
    HttpResponse::TooManyRequests()
        .insert_header((
            actix_web::http::header::RETRY_AFTER,
            wait.as_secs_f64().ceil().max(1.0).to_string(),
        ))
        .finish()
}
