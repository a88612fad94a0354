//! Errors as HTTP answers: the right status and a FHIR OperationOutcome body that names the
//! failing path. Messages never carry request values (which may be clinical) or tokens.

use actix_web::http::StatusCode;
use actix_web::http::header::ContentType;
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Value, json};

use crate::hook::schema::Violation;
use crate::pipeline::CallError;

/// An error answered to the caller.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Call(#[from] CallError),
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("Content-Type must be application/json (got {0})")]
    UnsupportedMediaType(String),
    #[error("the request body could not be read")]
    BodyRead,
    /// The body did not arrive within `limits.body_timeout_ms`, or slower than
    /// `limits.min_body_bytes_per_sec`.
    #[error("the request body arrived too slowly")]
    BodyTimeout,
    #[error("no such endpoint")]
    NotFound,
    /// The bodies already being read or answered use up `limits.max_inflight_body_bytes`
    /// for longer than a request waits ([`super::body`]).
    #[error("the service is busy with other large requests; retry in a few seconds")]
    Busy,
    #[error("internal error (request id {0})")]
    Internal(String),
}

/// One OperationOutcome issue.
fn issue(severity: &str, code: &str, diagnostics: &str, expression: Option<&str>) -> Value {
    let mut i = json!({"severity": severity, "code": code, "diagnostics": diagnostics});
    if let Some(e) = expression.filter(|e| !e.is_empty()) {
        i["expression"] = json!([e]);
    }
    i
}

/// A FHIR R4 OperationOutcome.
pub fn operation_outcome(issues: Vec<Value>) -> Value {
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

impl ApiError {
    fn issues(&self) -> Vec<Value> {
        match self {
            ApiError::Call(CallError::Invalid { schema, violations }) => violations
                .iter()
                .map(|Violation { path, message }| {
                    let text = if path.is_empty() {
                        format!("{message} (checked against {schema})")
                    } else {
                        format!("{path}: {message} (checked against {schema})")
                    };
                    issue("error", "invalid", &text, Some(path))
                })
                .collect(),
            ApiError::Call(CallError::PreconditionFailed { missing }) => missing
                .iter()
                .map(|k| {
                    issue(
                        "error",
                        "required",
                        &format!(
                            "prefetch key {k:?} is missing and the request has no fhirServer to fetch it from"
                        ),
                        Some(&format!("prefetch.{k}")),
                    )
                })
                .collect(),
            ApiError::Call(e @ CallError::WrongHook { .. }) => {
                vec![issue("error", "not-supported", &e.to_string(), Some("hook"))]
            }
            ApiError::Call(e @ CallError::UnknownService(_)) => {
                vec![issue("error", "not-found", &e.to_string(), None)]
            }
            ApiError::Call(e @ CallError::MalformedJson(_)) => {
                vec![issue("error", "structure", &e.to_string(), None)]
            }
            ApiError::Call(e @ CallError::LimitExceeded(limit)) => {
                // too-long for a string, too-costly for shapes that would cost too much work.
                let code = if limit.setting == "limits.max_string_bytes" {
                    "too-long"
                } else {
                    "too-costly"
                };
                vec![issue("error", code, &e.to_string(), None)]
            }
            ApiError::Call(e @ CallError::FhirServerRefused(_)) => {
                vec![issue("error", "security", &e.to_string(), Some("fhirServer"))]
            }
            ApiError::PayloadTooLarge { .. } => vec![issue("error", "too-long", &self.to_string(), None)],
            ApiError::UnsupportedMediaType(_) => {
                vec![issue("error", "not-supported", &self.to_string(), None)]
            }
            ApiError::BodyRead => vec![issue("error", "incomplete", &self.to_string(), None)],
            ApiError::BodyTimeout => vec![issue("error", "timeout", &self.to_string(), None)],
            ApiError::NotFound => vec![issue("error", "not-found", &self.to_string(), None)],
            ApiError::Busy => vec![issue("error", "transient", &self.to_string(), None)],
            ApiError::Internal(_) => vec![issue("fatal", "exception", &self.to_string(), None)],
        }
    }

    /// The body answered for this error.
    pub fn body(&self) -> Value {
        operation_outcome(self.issues())
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Call(CallError::UnknownService(_)) | ApiError::NotFound => {
                StatusCode::NOT_FOUND
            }
            ApiError::Call(CallError::PreconditionFailed { .. }) => StatusCode::PRECONDITION_FAILED,
            ApiError::Call(CallError::FhirServerRefused(_)) => StatusCode::BAD_REQUEST,
            ApiError::Call(_) | ApiError::BodyRead => StatusCode::BAD_REQUEST,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Busy => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header(ContentType::json());
        if matches!(self, ApiError::Busy) {
            response.insert_header((actix_web::http::header::RETRY_AFTER, "2"));
        }
        response.body(self.body().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_violations_become_issues_with_expressions() {
        let e = ApiError::Call(CallError::Invalid {
            schema: "s",
            violations: vec![Violation {
                path: "context.userId".into(),
                message: "m".into(),
            }],
        });
        assert_eq!(e.status_code(), StatusCode::BAD_REQUEST);
        let b = e.body();
        assert_eq!(b["resourceType"], "OperationOutcome");
        assert_eq!(b["issue"][0]["code"], "invalid");
        assert_eq!(b["issue"][0]["expression"][0], "context.userId");
    }

    #[test]
    fn root_issues_have_no_empty_expression() {
        let b = ApiError::NotFound.body();
        assert!(b["issue"][0].get("expression").is_none());
    }
}
