//! Stage 1 of a call: the body read as JSON within the limits, checked against the CDS Hooks
//! schemas (the request, then the hook's context), and typed; and feedback bodies read the
//! same way. What can be refused here is refused here, with a [`CallError`] naming the path,
//! never a value. Nothing here does I/O.
//!
//! [`screen_call`] is the way in for a call: most order-sign calls carry no IORT order (an
//! EHR calls the service for every order signed), so it first decides, from
//! `context.draftOrders` alone, whether any order can be one, and only then validates the
//! prefetch (usually most of the body). The prefetch is never parsed into a tree here: its
//! syntax and keys are read with the body, and when an order may be IORT its values are
//! checked on their text (the request schema's prefetch part, the resource-nesting bound) and
//! handed on as text ([`super::Prefetch`]) for the record builder to read. Everything else is
//! checked exactly as [`parse_call`] checks it, and any doubt (an error, an order shaped
//! oddly) takes [`parse_call`]'s path, so the errors a client gets are the same on both.
//! README, "What the fast path validates".

use std::fmt;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

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

/// What [`screen_call`] made of a call.
#[derive(Debug)]
pub enum Screened<'d> {
    /// An order hook none of whose draft orders can be an IORT order, in a request that is
    /// valid apart from its prefetch, which was not parsed: the answer is `{"cards": []}`.
    /// With what the call's record names (the audit store keeps every call).
    NothingToAssess(CallIds),
    /// Everything else: the request as [`parse_call`] parses it (boxed: it is large, and
    /// the other variant is nothing).
    Request(&'d ServiceDefinition, Box<HookRequest>),
}

/// Stage 1 with the fast path (see the module docs): [`Screened::NothingToAssess`] when no
/// draft order can be IORT, else what [`parse_call`] answers for the same body.
/// `may_be_iort` tells, from a draft order's raw JSON, whether it may be an IORT order (false
/// only when sure it is not): the facts stage's test, handed in so that this stage does not
/// depend on a later one.
pub fn screen_call<'d>(
    discovery: &'d Discovery,
    schemas: &Schemas,
    limits: &Limits,
    may_be_iort: &dyn Fn(&Value) -> bool,
    service_id: &str,
    body: &[u8],
) -> Result<Screened<'d>, CallError> {
    let service = service(discovery, service_id)?;
    let full = || {
        parse_call(discovery, schemas, limits, service_id, body)
            .map(|(service, request)| Screened::Request(service, Box::new(request)))
    };
    crate::limits::check_json(body, limits)?;
    // Not a JSON object, or not JSON, or a prefetch that is not an object: parse_call reports
    // it, exactly as it always has.
    let Ok(CallText { members, prefetch }) = serde_json::from_slice::<CallText<'_>>(body) else {
        return full();
    };
    // The body as serde_json would have parsed it (same member order, the last of duplicate
    // keys winning), with `{}` standing in for the prefetch, which stays raw.
    let mut obj = Map::new();
    for (key, raw) in members {
        let value = match raw {
            None => Value::Object(Map::new()),
            Some(raw) => match serde_json::from_str(raw.get()) {
                Ok(v) => v,
                Err(_) => return full(),
            },
        };
        obj.insert(key, value);
    }
    let json = Value::Object(obj);
    if nothing_to_assess(
        service,
        schemas,
        limits,
        may_be_iort,
        &json,
        prefetch.as_ref(),
    ) {
        return Ok(Screened::NothingToAssess(CallIds::of_json(&json)));
    }
    // The prefetch stays text (see `Prefetch`): what the request schema says of it and the
    // resource-nesting bound are checked on the text, and any doubt takes the full path,
    // which names the error as it always has.
    let prefetch = match prefetch {
        None => None,
        Some(members) => match prefetch_checked(members)? {
            Some(prefetch) => Some(prefetch),
            None => return full(),
        },
    };
    crate::limits::check_resource_nesting(&json)?;
    typed(service, schemas, limits, json).map(|mut request| {
        if let Some(prefetch) = prefetch {
            request.prefetch = prefetch;
        }
        Screened::Request(service, Box::new(request))
    })
}

/// The prefetch, when its members are what the request schema asks for: values that are `null`
/// or objects with one non-empty string `resourceType` of their own. `Ok(None)`: anything else,
/// for the full path to report; an error: a value nesting resources deeper than allowed (the
/// full path's first check, so its answer too). One pass over each value's text does both
/// ([`crate::limits::scan_resource_text`]).
fn prefetch_checked(
    Members(members): Members<'_>,
) -> Result<Option<super::Prefetch>, crate::limits::LimitExceeded> {
    for (_, value) in &members {
        if value.get() == "null" {
            continue;
        }
        let scan = crate::limits::scan_resource_text(value.get().as_bytes());
        if !scan.typed {
            return Ok(None);
        }
        crate::limits::nesting_within(scan.nesting)?;
    }
    Ok(Some(super::Prefetch::from_members(members)))
}

/// What a call is and whom it is about, as its audit record names it: from the typed request,
/// or on the fast path from the body's JSON (valid by then: the schemas were checked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallIds {
    pub hook: String,
    pub hook_instance: String,
    pub patient_id: String,
    pub encounter_id: Option<String>,
    /// `fhirServer` as sent.
    pub fhir_server: Option<String>,
}

impl CallIds {
    pub fn of(request: &HookRequest) -> Self {
        Self {
            hook: request.hook.as_str().to_owned(),
            hook_instance: request.hook_instance.clone(),
            patient_id: request.context.patient_id.clone(),
            encounter_id: request.context.encounter_id.clone(),
            fhir_server: request.fhir_server.clone(),
        }
    }

    fn of_json(json: &Value) -> Self {
        let text = |pointer: &str| {
            json.pointer(pointer)
                .and_then(Value::as_str)
                .map(str::to_owned)
        };
        Self {
            hook: text("/hook").unwrap_or_default(),
            hook_instance: text("/hookInstance").unwrap_or_default(),
            patient_id: text("/context/patientId").unwrap_or_default(),
            encounter_id: text("/context/encounterId"),
            fhir_server: text("/fhirServer"),
        }
    }
}

/// The members of a JSON object, values unparsed (their syntax checked, nothing built).
struct Members<'a>(Vec<(String, &'a RawValue)>);

/// A call's body read in one pass: its members unparsed, the prefetch's as its own members
/// (`None` in `members` marks where the prefetch was), so that neither path reads the
/// prefetch's text again to learn its keys.
struct CallText<'a> {
    members: Vec<(String, Option<&'a RawValue>)>,
    prefetch: Option<Members<'a>>,
}

impl<'de> Deserialize<'de> for CallText<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = CallText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                let mut prefetch = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "prefetch" {
                        prefetch = Some(map.next_value::<Members<'de>>()?);
                        members.push((key, None));
                    } else {
                        members.push((key, Some(map.next_value::<&'de RawValue>()?)));
                    }
                }
                Ok(CallText { members, prefetch })
            }
        }
        deserializer.deserialize_map(Object)
    }
}

impl<'de> Deserialize<'de> for Members<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Object;
        impl<'de> Visitor<'de> for Object {
            type Value = Members<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut members = Vec::new();
                while let Some(member) = map.next_entry::<String, &'de RawValue>()? {
                    members.push(member);
                }
                Ok(Members(members))
            }
        }
        deserializer.deserialize_map(Object)
    }
}

/// Whether the call is an order hook whose request passes every check [`parse_call`] makes
/// except on the prefetch's values, and none of whose draft orders `may_be_iort`. `json` is the body with `{}` for the prefetch, whose raw
/// text is `prefetch`. False means "take the full path", never "refuse".
fn nothing_to_assess(
    service: &ServiceDefinition,
    schemas: &Schemas,
    limits: &Limits,
    may_be_iort: &dyn Fn(&Value) -> bool,
    json: &Value,
    prefetch: Option<&Members<'_>>,
) -> bool {
    // patient-view assesses its what-if order whatever the request holds.
    if !matches!(service.hook, Hook::OrderSign | Hook::OrderSelect) {
        return false;
    }
    let Some(ctx) = json.get("context") else {
        return false;
    };
    let entries = ctx.pointer("/draftOrders/entry").and_then(Value::as_array);
    let hook = json.get("hook").and_then(Value::as_str).unwrap_or_default();
    let fhir_server = json.get("fhirServer").and_then(Value::as_str).is_some();
    let valid = crate::limits::check_resource_nesting(json).is_ok()
        && entries.is_none_or(|e| limits.check_draft_orders(e.len()).is_ok())
        && schemas.validate(SchemaId::HookRequest, json).is_ok()
        && Hook::parse(hook) == service.hook
        && schemas.validate(context_schema(&service.hook).0, ctx).is_ok()
        // What HookRequest::from_json requires beyond the schemas.
        && (fhir_server || !json.get("fhirAuthorization").is_some_and(Value::is_object))
        && ctx.get("userId").is_some_and(Value::is_string)
        && ctx.get("patientId").is_some_and(Value::is_string);
    if !valid {
        return false;
    }
    // A declared prefetch key missing with no FHIR server to fetch it from is a 412, whatever
    // the orders: the keys were read with the body (the prefetch is an object, as the schema
    // says).
    let sent = |key: &str| prefetch.is_some_and(|Members(m)| m.iter().any(|(k, _)| k == key));
    if !fhir_server && service.prefetch.keys().any(|k| !sent(k)) {
        return false;
    }
    match ctx.get("draftOrders") {
        None => true,
        Some(bundle) => {
            draft_resources(bundle).is_some_and(|resources| !resources.into_iter().any(may_be_iort))
        }
    }
}

/// The resources of a draftOrders Bundle, when it is shaped as `HookRequest::from_json`
/// requires (a Bundle whose entries each hold a resource with a `resourceType`).
fn draft_resources(bundle: &Value) -> Option<Vec<&Value>> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return None;
    }
    let entries = match bundle.get("entry") {
        None => return Some(Vec::new()),
        Some(Value::Array(entries)) => entries,
        Some(_) => return None,
    };
    entries
        .iter()
        .map(|entry| {
            let resource = entry.as_object()?.get("resource")?;
            resource.get("resourceType")?.as_str()?;
            Some(resource)
        })
        .collect()
}

/// The schema of the hook's context, and its name for errors.
fn context_schema(hook: &Hook) -> (SchemaId, &'static str) {
    match hook {
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
    }
}

/// Stage 1: JSON, schema, hook, context schema, typed request (every part of the body parsed
/// and validated; [`screen_call`] is the same with the fast path in front).
pub fn parse_call<'d>(
    discovery: &'d Discovery,
    schemas: &Schemas,
    limits: &Limits,
    service_id: &str,
    body: &[u8],
) -> Result<(&'d ServiceDefinition, HookRequest), CallError> {
    let service = service(discovery, service_id)?;
    let json: Value = parse_json(body, limits)?;
    Ok((service, typed(service, schemas, limits, json)?))
}

/// The checks after parsing: draft order count, schema, hook, context schema, typed request.
fn typed(
    service: &ServiceDefinition,
    schemas: &Schemas,
    limits: &Limits,
    json: Value,
) -> Result<HookRequest, CallError> {
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
    let (context_schema, name) = context_schema(&service.hook);
    if let Some(ctx) = json.get("context") {
        schemas
            .validate(context_schema, ctx)
            .map_err(|v| CallError::Invalid {
                schema: name,
                violations: Schemas::within("context", v),
            })?;
    }
    HookRequest::from_json(json).map_err(|e| CallError::Invalid {
        schema: "the CDS Hooks request schema",
        violations: vec![Violation {
            path: e.path,
            message: e.message,
        }],
    })
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
