//! JSON Schema validation of request bodies, against the schemas in `fhir-profiles/schemas/`.
//!
//! The schemas are compiled once at start-up ([`Schemas::load`]). Cross-schema `$ref`s are
//! resolved from the same folder by an in-memory retriever, so validation never touches the
//! network. Error messages are masked: they name the failing JSON path and rule but never echo
//! the offending value, which may be clinical content.

use std::collections::HashMap;

use jsonschema::{Retrieve, Uri, Validator};
use serde_json::Value;

use crate::assets::{AssetError, Assets, Folder};

/// The canonical base under which the project's schemas are published (their `$id`s).
const SCHEMA_BASE: &str = "https://iort-cds.github.io/fhir/schemas/";

/// Which schema to validate against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SchemaId {
    HookRequest,
    OrderSignContext,
    OrderSelectContext,
    PatientViewContext,
    Feedback,
}

impl SchemaId {
    const ALL: [SchemaId; 5] = [
        SchemaId::HookRequest,
        SchemaId::OrderSignContext,
        SchemaId::OrderSelectContext,
        SchemaId::PatientViewContext,
        SchemaId::Feedback,
    ];

    fn file(self) -> &'static str {
        match self {
            SchemaId::HookRequest => "hook-request.schema.json",
            SchemaId::OrderSignContext => "order-sign-context.schema.json",
            SchemaId::OrderSelectContext => "order-select-context.schema.json",
            SchemaId::PatientViewContext => "patient-view-context.schema.json",
            SchemaId::Feedback => "feedback.schema.json",
        }
    }
}

/// One schema violation: where, and which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted path into the instance, e.g. `context.draftOrders.entry[0].resource`; empty for
    /// the document root.
    pub path: String,
    /// What rule failed, with the instance value masked.
    pub message: String,
}

/// Failure to load or compile a schema; names the file.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(transparent)]
    Asset(#[from] AssetError),
    #[error("schema {file} does not compile: {message}")]
    Compile { file: &'static str, message: String },
}

/// The compiled validators.
pub struct Schemas {
    validators: HashMap<SchemaId, Validator>,
}

impl std::fmt::Debug for Schemas {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Schemas")
            .field("count", &self.validators.len())
            .finish()
    }
}

/// Serves the project's own schemas to `$ref` resolution; refuses everything else.
struct LocalSchemas(HashMap<String, Value>);

impl Retrieve for LocalSchemas {
    fn retrieve(
        &self,
        uri: &Uri<String>,
    ) -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
        let key = uri.as_str();
        let key = key.split('#').next().unwrap_or(key);
        self.0
            .get(key)
            .cloned()
            .ok_or_else(|| format!("schema {key} is not one of the project's schemas").into())
    }
}

/// At most this many violations are reported for one body.
const MAX_VIOLATIONS: usize = 10;

impl Schemas {
    /// Read and compile every schema.
    pub fn load(assets: &Assets) -> Result<Self, SchemaError> {
        let mut docs = HashMap::new();
        for id in SchemaId::ALL {
            let doc = assets.read_json(Folder::Profiles, &format!("schemas/{}", id.file()))?;
            docs.insert(id, doc);
        }
        let by_uri: HashMap<String, Value> = docs
            .iter()
            .map(|(id, doc)| (format!("{SCHEMA_BASE}{}", id.file()), doc.clone()))
            .collect();
        let mut validators = HashMap::new();
        for (id, doc) in &docs {
            let v = jsonschema::options()
                .should_validate_formats(true)
                .with_retriever(LocalSchemas(by_uri.clone()))
                .build(doc)
                .map_err(|e| SchemaError::Compile {
                    file: id.file(),
                    message: e.to_string(),
                })?;
            validators.insert(*id, v);
        }
        Ok(Self { validators })
    }

    /// Validate `instance`; `Err` lists up to ten violations.
    pub fn validate(&self, id: SchemaId, instance: &Value) -> Result<(), Vec<Violation>> {
        let Some(v) = self.validators.get(&id) else {
            // Every SchemaId is compiled by `load`; an absent one is a programming error that
            // must still not pass invalid input.
            return Err(vec![Violation {
                path: String::new(),
                message: format!("no validator for {}", id.file()),
            }]);
        };
        let violations: Vec<Violation> = v
            .iter_errors(instance)
            .take(MAX_VIOLATIONS)
            .map(|e| Violation {
                path: pointer_to_path(e.instance_path().as_str()),
                message: e.masked().to_string(),
            })
            .collect();
        if violations.is_empty() {
            Ok(())
        } else {
            Err(violations)
        }
    }

    /// Prefix a violation path with the location of the validated sub-document.
    pub fn within(prefix: &str, mut violations: Vec<Violation>) -> Vec<Violation> {
        for v in &mut violations {
            v.path = if v.path.is_empty() {
                prefix.to_owned()
            } else if v.path.starts_with('[') {
                format!("{prefix}{}", v.path)
            } else {
                format!("{prefix}.{}", v.path)
            };
        }
        violations
    }
}

/// `/context/draftOrders/entry/0/resource` -> `context.draftOrders.entry[0].resource`.
fn pointer_to_path(pointer: &str) -> String {
    let mut out = String::new();
    for seg in pointer.split('/').skip(1) {
        let seg = seg.replace("~1", "/").replace("~0", "~");
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push('[');
            out.push_str(&seg);
            out.push(']');
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(&seg);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schemas() -> Schemas {
        Schemas::load(&Assets::embedded()).unwrap()
    }

    #[test]
    fn pointer_paths_read_naturally() {
        assert_eq!(pointer_to_path(""), "");
        assert_eq!(
            pointer_to_path("/context/draftOrders/entry/0/resource"),
            "context.draftOrders.entry[0].resource"
        );
    }

    #[test]
    fn hook_request_requires_core_fields() {
        let s = schemas();
        let errs = s
            .validate(SchemaId::HookRequest, &json!({"hook": "order-sign"}))
            .unwrap_err();
        assert!(errs.iter().any(|e| e.message.contains("hookInstance")));
        assert!(
            s.validate(
                SchemaId::HookRequest,
                &json!({"hook": "order-sign", "hookInstance": "d1577c69-dfbe-44ad-ba6d-3e05e953b2ea", "context": {}})
            )
            .is_ok()
        );
    }

    #[test]
    fn bad_hook_instance_is_reported_at_its_path_without_the_value() {
        let errs = schemas()
            .validate(
                SchemaId::HookRequest,
                &json!({"hook": "order-sign", "hookInstance": "SECRET-VALUE", "context": {}}),
            )
            .unwrap_err();
        assert_eq!(errs[0].path, "hookInstance");
        assert!(
            !errs[0].message.contains("SECRET-VALUE"),
            "{}",
            errs[0].message
        );
    }

    #[test]
    fn order_select_reuses_the_orders_bundle_definition() {
        let s = schemas();
        let ctx = json!({"userId": "Practitioner/1", "patientId": "p1", "selections": ["ServiceRequest/a"],
            "draftOrders": {"resourceType": "Patient"}});
        let errs = s.validate(SchemaId::OrderSelectContext, &ctx).unwrap_err();
        assert_eq!(errs[0].path, "draftOrders.resourceType");
    }

    #[test]
    fn feedback_rules() {
        let s = schemas();
        let ok = json!({"feedback": [{"card": "c1", "outcome": "overridden",
            "overrideReason": {"reason": {"system": "http://x", "code": "y"}},
            "outcomeTimestamp": "2026-11-26T10:00:00Z"}]});
        assert!(s.validate(SchemaId::Feedback, &ok).is_ok());
        // A report, not a command: plausible oddities pass ...
        let odd = json!({"feedback": [{"card": "c1", "outcome": "accepted",
            "overrideReason": {"userComment": "x"}, "outcomeTimestamp": "yesterday",
            "acceptedSuggestions": []}]});
        assert!(s.validate(SchemaId::Feedback, &odd).is_ok());
        // ... what cannot be feedback does not.
        let bad = json!({"feedback": [{"card": "c1", "outcome": "maybe"}]});
        let errs = s.validate(SchemaId::Feedback, &bad).unwrap_err();
        assert!(
            errs.iter().any(|e| e.path == "feedback[0].outcome"),
            "{errs:?}"
        );
    }
}
