//! The parsed hook request: built once from a schema-valid JSON body, trusted after.

use crate::resource_ref::ResourceRef;
use std::fmt;

use fhirbolt::model::r4::Resource;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

/// The hooks this service knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hook {
    OrderSign,
    OrderSelect,
    PatientView,
    /// Any other hook name (rejected by the route for a service that does not handle it).
    Other(String),
}

impl Hook {
    pub fn parse(name: &str) -> Self {
        match name {
            "order-sign" => Hook::OrderSign,
            "order-select" => Hook::OrderSelect,
            "patient-view" => Hook::PatientView,
            other => Hook::Other(other.to_owned()),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Hook::OrderSign => "order-sign",
            Hook::OrderSelect => "order-select",
            Hook::PatientView => "patient-view",
            Hook::Other(s) => s,
        }
    }
}

/// The OAuth 2.0 access token the EHR hands over. `Debug` never prints the token.
#[derive(Clone, PartialEq)]
pub struct FhirAuthorization {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: u64,
    pub scope: String,
    pub subject: String,
    pub patient: Option<String>,
}

impl fmt::Debug for FhirAuthorization {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FhirAuthorization")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .field("scope", &self.scope)
            .field("subject", &self.subject)
            .field("patient", &self.patient)
            .finish()
    }
}

/// One entry of `context.draftOrders`, kept as received (for the `update` system action) and
/// parsed with fhirbolt where it parses.
#[derive(Debug, Clone)]
pub struct DraftOrder {
    /// `resourceType` of the entry (e.g. `ServiceRequest`).
    pub resource_type: String,
    /// The resource id, when the EHR sent one.
    pub id: Option<String>,
    /// The resource exactly as received.
    pub raw: Value,
    /// The typed resource, or why it did not parse (the message names fields, never values).
    pub parsed: Result<Resource, String>,
}

impl DraftOrder {
    /// A draft order from a resource's JSON, typed once here (never a panic: see
    /// [`crate::fhir_json::read`]); `None` when it has no `resourceType`. The one constructor,
    /// for the request's own orders and for the patient-view what-if order alike.
    pub fn from_json(raw: Value) -> Option<Self> {
        let resource_type = raw.get("resourceType")?.as_str()?.to_owned();
        let id = raw.get("id").and_then(Value::as_str).map(str::to_owned);
        let parsed = crate::fhir_json::read_as(&resource_type, &raw).map_err(|e| e.to_string());
        Some(Self {
            resource_type,
            id,
            raw,
            parsed,
        })
    }

    /// `Type/id` of the order, for logs.
    pub fn reference(&self) -> ResourceRef<'_> {
        ResourceRef::new(&self.resource_type, self.id.as_deref())
    }
}

/// The hook `context`, for the hooks this service handles.
#[derive(Debug, Clone, Default)]
pub struct HookContext {
    pub user_id: String,
    pub patient_id: String,
    pub encounter_id: Option<String>,
    /// `draftOrders` entries (order-sign, order-select); empty for patient-view.
    pub draft_orders: Vec<DraftOrder>,
    /// `selections` (order-select): `Type/id` strings.
    pub selections: Vec<String>,
}

/// The Da Vinci CRD configuration options a client sent in
/// `extension["davinci-crd.configuration"]`. Unknown options are ignored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrdConfiguration {
    /// `coverage-info`: return the coverage-information system action (default true).
    pub coverage_info: bool,
    /// `max-cards`: the most cards to return (default 10, as discovery announces).
    pub max_cards: Option<usize>,
}

impl Default for CrdConfiguration {
    fn default() -> Self {
        Self {
            coverage_info: true,
            max_cards: Some(10),
        }
    }
}

/// A hook request, parsed.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub hook: Hook,
    pub hook_instance: String,
    pub fhir_server: Option<String>,
    pub fhir_authorization: Option<FhirAuthorization>,
    pub context: HookContext,
    /// The prefetch keys and values as sent (a `null` value means "read found nothing"), as
    /// JSON text: see [`Prefetch`].
    pub prefetch: Prefetch,
    pub crd_configuration: CrdConfiguration,
}

/// The prefetch as the client sent it: each key with its value's JSON text, in the order sent
/// (a key sent twice keeps its first place and its last value, as a parsed object would).
///
/// Why text and not a parsed tree: the prefetch is most of a call's bytes, and most of its
/// resources are of no use to the facts (vital signs, comorbidities, other operations). The
/// record builder reads each resource's text, looks at the few members that say whether the
/// facts can use it, and types only those with fhirbolt, straight from the text; a tree of
/// the whole prefetch cost more than typing what is kept (BENCHMARKS.md, issue 18).
#[derive(Debug, Clone, Default)]
pub struct Prefetch(Vec<(String, Box<RawValue>)>);

impl Prefetch {
    /// The members of a JSON object's text (already read by serde_json, so valid JSON).
    pub fn from_members<'a>(members: impl IntoIterator<Item = (String, &'a RawValue)>) -> Self {
        // Where each key is, so that a hostile body of many keys costs linear time.
        let mut at: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        let mut keys: Vec<(String, Box<RawValue>)> = Vec::new();
        for (key, value) in members {
            let value = value.to_owned();
            match at.get(&key) {
                Some(&i) => keys[i].1 = value,
                None => {
                    at.insert(key.clone(), keys.len());
                    keys.push((key, value));
                }
            }
        }
        Self(keys)
    }

    /// From a parsed object (the request parsed whole, e.g. by tests): each value written back
    /// as text.
    pub fn from_map(map: Map<String, Value>) -> Self {
        Self(
            map.into_iter()
                .filter_map(|(k, v)| serde_json::value::to_raw_value(&v).ok().map(|v| (k, v)))
                .collect(),
        )
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.0.iter().any(|(k, _)| k == key)
    }

    /// The text of `key`'s value.
    pub fn get(&self, key: &str) -> Option<&RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| &**v)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Each key and its value's text, in the order sent.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> {
        self.0.iter().map(|(k, v)| (k.as_str(), &**v))
    }

    /// The prefetch parsed (for tests and tools; the service never builds it).
    pub fn to_map(&self) -> Map<String, Value> {
        self.iter()
            .filter_map(|(k, v)| {
                serde_json::from_str(v.get())
                    .ok()
                    .map(|v| (k.to_owned(), v))
            })
            .collect()
    }
}

/// Why a schema-valid body still cannot be used. The message names a JSON path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct RequestError {
    pub path: String,
    pub message: String,
}

impl RequestError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

fn str_at<'a>(obj: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    obj.get(key).and_then(Value::as_str)
}

impl HookRequest {
    /// Parse a body that has passed the hook-request schema. Structural problems the schema
    /// cannot express (e.g. a draftOrders entry without `resourceType`) are reported with the
    /// JSON path that failed.
    pub fn from_json(body: Value) -> Result<Self, RequestError> {
        let Value::Object(mut obj) = body else {
            return Err(RequestError::new(
                "",
                "the request body must be a JSON object",
            ));
        };
        let hook = Hook::parse(
            str_at(&obj, "hook").ok_or_else(|| RequestError::new("hook", "required string"))?,
        );
        let hook_instance = str_at(&obj, "hookInstance")
            .ok_or_else(|| RequestError::new("hookInstance", "required string"))?
            .to_owned();
        let fhir_server = str_at(&obj, "fhirServer").map(|s| s.trim_end_matches('/').to_owned());
        let fhir_authorization = match obj.get("fhirAuthorization") {
            Some(Value::Object(a)) => Some(FhirAuthorization {
                access_token: str_at(a, "access_token").unwrap_or_default().to_owned(),
                token_type: str_at(a, "token_type").unwrap_or("Bearer").to_owned(),
                expires_in: a.get("expires_in").and_then(Value::as_u64).unwrap_or(0),
                scope: str_at(a, "scope").unwrap_or_default().to_owned(),
                subject: str_at(a, "subject").unwrap_or_default().to_owned(),
                patient: str_at(a, "patient").map(str::to_owned),
            }),
            _ => None,
        };
        if fhir_authorization.is_some() && fhir_server.is_none() {
            return Err(RequestError::new(
                "fhirServer",
                "required when fhirAuthorization is present",
            ));
        }
        let crd_configuration = parse_crd_configuration(obj.get("extension"));
        let prefetch = match obj.remove("prefetch") {
            Some(Value::Object(m)) => Prefetch::from_map(m),
            _ => Prefetch::default(),
        };
        let context = match obj.remove("context") {
            Some(Value::Object(c)) => parse_context(c)?,
            _ => return Err(RequestError::new("context", "required object")),
        };
        Ok(HookRequest {
            hook,
            hook_instance,
            fhir_server,
            fhir_authorization,
            context,
            prefetch,
            crd_configuration,
        })
    }
}

fn parse_crd_configuration(extension: Option<&Value>) -> CrdConfiguration {
    let mut cfg = CrdConfiguration::default();
    let Some(opts) = extension
        .and_then(|e| e.get("davinci-crd.configuration"))
        .and_then(Value::as_object)
    else {
        return cfg;
    };
    if let Some(b) = opts.get("coverage-info").and_then(Value::as_bool) {
        cfg.coverage_info = b;
    }
    if let Some(n) = opts.get("max-cards").and_then(Value::as_u64) {
        cfg.max_cards = Some(usize::try_from(n).unwrap_or(usize::MAX));
    }
    cfg
}

fn parse_context(mut c: Map<String, Value>) -> Result<HookContext, RequestError> {
    let user_id = str_at(&c, "userId")
        .ok_or_else(|| RequestError::new("context.userId", "required string"))?
        .to_owned();
    let patient_id = str_at(&c, "patientId")
        .ok_or_else(|| RequestError::new("context.patientId", "required string"))?
        .to_owned();
    let encounter_id = str_at(&c, "encounterId").map(str::to_owned);
    let selections = c
        .get("selections")
        .and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    let draft_orders = match c.remove("draftOrders") {
        Some(bundle) => parse_draft_orders(bundle)?,
        None => Vec::new(),
    };
    Ok(HookContext {
        user_id,
        patient_id,
        encounter_id,
        draft_orders,
        selections,
    })
}

/// Split the draftOrders Bundle with serde_json and parse each resource on its own, so one bad
/// order cannot sink the others (and so fhirbolt never sees the Bundle envelope).
fn parse_draft_orders(bundle: Value) -> Result<Vec<DraftOrder>, RequestError> {
    let Value::Object(mut b) = bundle else {
        return Err(RequestError::new(
            "context.draftOrders",
            "must be a FHIR Bundle",
        ));
    };
    if str_at(&b, "resourceType") != Some("Bundle") {
        return Err(RequestError::new(
            "context.draftOrders.resourceType",
            "must be \"Bundle\"",
        ));
    }
    let entries = match b.remove("entry") {
        Some(Value::Array(a)) => a,
        None => Vec::new(),
        Some(_) => {
            return Err(RequestError::new(
                "context.draftOrders.entry",
                "must be an array",
            ));
        }
    };
    let mut out = Vec::with_capacity(entries.len());
    for (i, entry) in entries.into_iter().enumerate() {
        let Value::Object(mut e) = entry else {
            return Err(RequestError::new(
                format!("context.draftOrders.entry[{i}]"),
                "must be an object",
            ));
        };
        let Some(resource) = e.remove("resource") else {
            return Err(RequestError::new(
                format!("context.draftOrders.entry[{i}].resource"),
                "required",
            ));
        };
        // An order that does not parse (an empty array, an unknown element) is re-read
        // leniently by the facts stage, so the clinician still gets a card.
        let order = DraftOrder::from_json(resource).ok_or_else(|| {
            RequestError::new(
                format!("context.draftOrders.entry[{i}].resource.resourceType"),
                "required string",
            )
        })?;
        out.push(order);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn base() -> Value {
        json!({
            "hook": "order-sign",
            "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea",
            "context": {
                "userId": "Practitioner/1",
                "patientId": "p1",
                "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [
                    {"resource": {"resourceType": "ServiceRequest", "id": "sr1", "status": "draft",
                      "intent": "order", "subject": {"reference": "Patient/p1"},
                      "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "77425"}]}}},
                    {"resource": {"resourceType": "ServiceRequest", "id": "bad", "status": "draft",
                      "intent": "order", "subject": {"reference": "Patient/p1"}, "bogusField": 1}}
                ]}
            }
        })
    }

    #[test]
    fn parses_context_and_orders_one_by_one() {
        let r = HookRequest::from_json(base()).unwrap();
        assert_eq!(r.hook, Hook::OrderSign);
        assert_eq!(r.context.patient_id, "p1");
        assert_eq!(r.context.draft_orders.len(), 2);
        assert!(r.context.draft_orders[0].parsed.is_ok());
        assert!(
            r.context.draft_orders[1].parsed.is_err(),
            "bad order kept, not fatal"
        );
        assert_eq!(
            r.context.draft_orders[1].reference().to_string(),
            "ServiceRequest/bad"
        );
        assert_eq!(r.crd_configuration, CrdConfiguration::default());
    }

    #[test]
    fn reads_crd_configuration() {
        let mut v = base();
        v["extension"] = json!({"davinci-crd.configuration": {"coverage-info": false, "max-cards": 2, "unknown": 1}});
        let r = HookRequest::from_json(v).unwrap();
        assert!(!r.crd_configuration.coverage_info);
        assert_eq!(r.crd_configuration.max_cards, Some(2));
    }

    #[test]
    fn authorization_needs_fhir_server_and_is_redacted() {
        let mut v = base();
        v["fhirAuthorization"] = json!({"access_token": "SECRET", "token_type": "Bearer",
            "expires_in": 300, "scope": "patient/*.read", "subject": "app"});
        let err = HookRequest::from_json(v.clone()).unwrap_err();
        assert_eq!(err.path, "fhirServer");
        v["fhirServer"] = json!("https://ehr.example.org/fhir/");
        let r = HookRequest::from_json(v).unwrap();
        assert_eq!(
            r.fhir_server.as_deref(),
            Some("https://ehr.example.org/fhir")
        );
        assert!(!format!("{r:?}").contains("SECRET"));
    }

    #[test]
    fn draft_orders_must_be_a_bundle() {
        let mut v = base();
        v["context"]["draftOrders"] = json!({"resourceType": "Patient"});
        let err = HookRequest::from_json(v).unwrap_err();
        assert_eq!(err.path, "context.draftOrders.resourceType");
    }
}
