//! Stage 1 of a call: the body read as JSON within the limits, checked against the CDS Hooks
//! schemas (the request, then the hook's context), and typed; and feedback bodies read the
//! same way. What can be refused here is refused here, with a [`CallError`] naming the path,
//! never a value. Nothing here does I/O.

use serde_json::Value;

use super::discovery::{Discovery, ServiceDefinition};
use super::schema::{SchemaId, Schemas, Violation};
use super::{Hook, HookRequest};
use crate::limits::{LimitExceeded, Limits};

/// Why a call was refused. Each maps to one HTTP status; messages name paths, never values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("no CDS service with id {0:?}")]
    UnknownService(String),
    #[error("the body is not valid JSON: {0}")]
    MalformedJson(String),
    #[error("the body does not conform to {schema}")]
    Invalid {
        schema: &'static str,
        violations: Vec<Violation>,
    },
    #[error("service {service} handles hook {expected:?}, not {got:?}")]
    WrongHook {
        service: String,
        expected: String,
        got: String,
    },
    #[error("prefetch key(s) {} missing and no fhirServer to fetch them from", missing.join(", "))]
    PreconditionFailed { missing: Vec<String> },
    #[error("the FHIR server {0}")]
    FhirServerRefused(String),
    /// The body is within the size limit but passes one of the `[limits]` on its shape (too
    /// deep, a string too long, too many draft orders); see [`crate::limits`].
    #[error("the body is refused: {0}")]
    LimitExceeded(#[from] LimitExceeded),
}

/// A validated feedback item, reduced to what may be logged (no free text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeedbackItem {
    pub card: String,
    pub outcome: String,
    pub override_reason: Option<String>,
    pub accepted_suggestions: usize,
    pub has_comment: bool,
    pub outcome_timestamp: String,
}

/// The service `id` of the discovery document.
fn service<'d>(discovery: &'d Discovery, id: &str) -> Result<&'d ServiceDefinition, CallError> {
    discovery
        .service(id)
        .ok_or_else(|| CallError::UnknownService(id.to_owned()))
}

/// Stage 1: JSON, schema, hook, context schema, typed request.
pub fn parse_call<'d>(
    discovery: &'d Discovery,
    schemas: &Schemas,
    limits: &Limits,
    service_id: &str,
    body: &[u8],
) -> Result<(&'d ServiceDefinition, HookRequest), CallError> {
    let service = service(discovery, service_id)?;
    let json: Value = parse_json(body, limits)?;
    // Counted before the orders are parsed: parsing each one is the expensive part.
    if let Some(entries) = json
        .pointer("/context/draftOrders/entry")
        .and_then(Value::as_array)
    {
        limits.check_draft_orders(entries.len())?;
    }
    schemas
        .validate(SchemaId::HookRequest, &json)
        .map_err(|violations| CallError::Invalid {
            schema: "the CDS Hooks request schema",
            violations,
        })?;
    let hook = json.get("hook").and_then(Value::as_str).unwrap_or_default();
    if Hook::parse(hook) != service.hook {
        return Err(CallError::WrongHook {
            service: service.id.clone(),
            expected: service.hook.as_str().to_owned(),
            got: shown(hook),
        });
    }
    let (context_schema, name) = match service.hook {
        Hook::OrderSign => (SchemaId::OrderSignContext, "the order-sign context schema"),
        Hook::OrderSelect => (
            SchemaId::OrderSelectContext,
            "the order-select context schema",
        ),
        Hook::PatientView => (
            SchemaId::PatientViewContext,
            "the patient-view context schema",
        ),
        Hook::Other(_) => (SchemaId::HookRequest, "the CDS Hooks request schema"),
    };
    if let Some(ctx) = json.get("context") {
        schemas
            .validate(context_schema, ctx)
            .map_err(|v| CallError::Invalid {
                schema: name,
                violations: Schemas::within("context", v),
            })?;
    }
    let request = HookRequest::from_json(json).map_err(|e| CallError::Invalid {
        schema: "the CDS Hooks request schema",
        violations: vec![Violation {
            path: e.path,
            message: e.message,
        }],
    })?;
    Ok((service, request))
}

/// Validate a feedback body.
pub fn feedback(
    discovery: &Discovery,
    schemas: &Schemas,
    limits: &Limits,
    service_id: &str,
    body: &[u8],
) -> Result<Vec<FeedbackItem>, CallError> {
    service(discovery, service_id)?;
    let json = parse_json(body, limits)?;
    schemas
        .validate(SchemaId::Feedback, &json)
        .map_err(|violations| CallError::Invalid {
            schema: "the CDS Hooks feedback schema",
            violations,
        })?;
    let items = json
        .get("feedback")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    Ok(items
        .iter()
        .map(|f| {
            let s = |k: &str| {
                f.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            let reason = f.get("overrideReason");
            FeedbackItem {
                card: s("card"),
                outcome: s("outcome"),
                override_reason: reason
                    .and_then(|r| r.get("reason"))
                    .and_then(|c| c.get("code"))
                    .and_then(Value::as_str)
                    .map(shown),
                accepted_suggestions: f
                    .get("acceptedSuggestions")
                    .and_then(Value::as_array)
                    .map_or(0, Vec::len),
                has_comment: reason.and_then(|r| r.get("userComment")).is_some(),
                // Only logged; the client's text, cut short (its format is not checked:
                // feedback is a report, see the feedback schema).
                outcome_timestamp: shown(&s("outcomeTimestamp")),
            }
        })
        .collect())
}

/// Parse JSON, reporting where it broke (line and column), never what it contained.
///
/// The depth and string-length limits are checked on the bytes first, so nothing recursive
/// (the parser, the schema validator, fhirbolt) sees a document that could exhaust its stack;
/// resources nested in resources are checked on the parsed value, before fhirbolt sees them.
fn parse_json(body: &[u8], limits: &Limits) -> Result<Value, CallError> {
    crate::limits::check_json(body, limits)?;
    let json: Value = serde_json::from_slice(body).map_err(|e| {
        CallError::MalformedJson(format!(
            "{} at line {} column {}",
            match e.classify() {
                serde_json::error::Category::Eof => "unexpected end of input",
                serde_json::error::Category::Syntax => "syntax error",
                serde_json::error::Category::Data => "invalid data",
                serde_json::error::Category::Io => "read error",
            },
            e.line(),
            e.column()
        ))
    })?;
    crate::limits::check_resource_nesting(&json)?;
    Ok(json)
}

/// A client-chosen value as echoed in an error and the log: at most 40 characters, control
/// characters masked, so a 250 KB `hook` cannot become a 750 KB log line.
pub(crate) fn shown(value: &str) -> String {
    const MAX: usize = 40;
    let mut out: String = value
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if value.chars().count() > MAX {
        out.push('\u{2026}');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echoed_client_values_are_short_and_masked() {
        assert_eq!(shown("order-sign"), "order-sign");
        let long = "x".repeat(250_000);
        let s = shown(&long);
        assert_eq!(s.chars().count(), 41);
        assert!(s.ends_with('\u{2026}'));
        assert_eq!(shown("a\nb\u{1b}[31m"), "a?b?[31m");
    }
}
