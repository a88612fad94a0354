//! The discovery document (`GET /cds-services`), read from `fhir-profiles/cds-services.json`.
//!
//! Service definitions are data so that an integrator-facing change (a title, a prefetch query,
//! a CRD option's wording) is a file edit. They are checked once at start-up against the rules
//! the CDS Hooks 2.0 spec sets for discovery: required fields present, no `null` / `""` / `[]` /
//! `{}` anywhere, and prefetch templates that use only CDS Hooks 2.0 tokens.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::assets::{AssetError, Assets, Folder};
use crate::hook::Hook;

/// The file the services are read from, relative to `fhir-profiles/`.
pub const SERVICES_FILE: &str = "cds-services.json";

/// The prefetch tokens CDS Hooks 2.0 defines (`{{context.<field>}}` is checked per hook).
const USER_TOKENS: [&str; 4] = [
    "userPractitionerId",
    "userPractitionerRoleId",
    "userPatientId",
    "userRelatedPersonId",
];

/// One CDS service the discovery document announces.
#[derive(Debug, Clone)]
pub struct ServiceDefinition {
    pub id: String,
    pub hook: Hook,
    /// Prefetch key -> query template.
    pub prefetch: BTreeMap<String, String>,
}

/// The parsed, checked discovery document.
#[derive(Debug, Clone)]
pub struct Discovery {
    pub services: Vec<ServiceDefinition>,
    /// The document as served, pre-serialised at start-up.
    pub document: Value,
}

/// A discovery file that breaks the rules; names the file and the path.
#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    #[error(transparent)]
    Asset(#[from] AssetError),
    #[error("{SERVICES_FILE}: {path}: {message}")]
    Invalid { path: String, message: String },
}

fn invalid(path: impl Into<String>, message: impl Into<String>) -> DiscoveryError {
    DiscoveryError::Invalid {
        path: path.into(),
        message: message.into(),
    }
}

impl Discovery {
    /// Read and check the services file.
    pub fn load(assets: &Assets) -> Result<Self, DiscoveryError> {
        let document = assets.read_json(Folder::Profiles, SERVICES_FILE)?;
        Self::from_document(document)
    }

    /// Check a discovery document.
    pub fn from_document(document: Value) -> Result<Self, DiscoveryError> {
        check_no_empty_values(&document, "")?;
        let list = document
            .get("services")
            .and_then(Value::as_array)
            .ok_or_else(|| invalid("services", "must be an array"))?;
        let mut services = Vec::with_capacity(list.len());
        for (i, s) in list.iter().enumerate() {
            let at = |f: &str| format!("services[{i}].{f}");
            let text = |f: &str| -> Result<String, DiscoveryError> {
                s.get(f)
                    .and_then(Value::as_str)
                    .map(str::to_owned)
                    .ok_or_else(|| invalid(at(f), "required string"))
            };
            let id = text("id")?;
            if !id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(invalid(
                    at("id"),
                    "must be URL-safe (letters, digits, - _ .)",
                ));
            }
            let hook = Hook::parse(&text("hook")?);
            text("description")?;
            let mut prefetch = BTreeMap::new();
            if let Some(p) = s.get("prefetch") {
                let p = p
                    .as_object()
                    .ok_or_else(|| invalid(at("prefetch"), "must be an object"))?;
                for (k, v) in p {
                    let q = v
                        .as_str()
                        .ok_or_else(|| invalid(at(&format!("prefetch.{k}")), "must be a string"))?;
                    check_tokens(q, &hook).map_err(|m| invalid(at(&format!("prefetch.{k}")), m))?;
                    prefetch.insert(k.clone(), q.to_owned());
                }
            }
            if services.iter().any(|x: &ServiceDefinition| x.id == id) {
                return Err(invalid(at("id"), "duplicate service id"));
            }
            services.push(ServiceDefinition { id, hook, prefetch });
        }
        Ok(Self { services, document })
    }

    /// The service with this id.
    pub fn service(&self, id: &str) -> Option<&ServiceDefinition> {
        self.services.iter().find(|s| s.id == id)
    }
}

/// The context fields a hook defines that may stand in a `{{context.X}}` token.
fn context_fields(hook: &Hook) -> &'static [&'static str] {
    match hook {
        Hook::OrderSign | Hook::OrderSelect | Hook::PatientView => {
            &["userId", "patientId", "encounterId"]
        }
        Hook::Other(_) => &[],
    }
}

/// Every `{{...}}` in a template must be a CDS Hooks 2.0 token.
fn check_tokens(template: &str, hook: &Hook) -> Result<(), String> {
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| "unterminated {{ token".to_owned())?;
        let token = after[..end].trim();
        let ok = match token.strip_prefix("context.") {
            Some(field) => context_fields(hook).contains(&field),
            None => USER_TOKENS.contains(&token),
        };
        if !ok {
            return Err(format!(
                "{{{{{token}}}}} is not a CDS Hooks 2.0 prefetch token"
            ));
        }
        rest = &after[end + 2..];
    }
    Ok(())
}

/// CDS Hooks: "null, empty strings, empty arrays and empty objects are not allowed".
fn check_no_empty_values(v: &Value, path: &str) -> Result<(), DiscoveryError> {
    let child = |k: &str| {
        if path.is_empty() {
            k.to_owned()
        } else {
            format!("{path}.{k}")
        }
    };
    match v {
        Value::Null => Err(invalid(path, "null is not allowed")),
        Value::String(s) if s.is_empty() => Err(invalid(path, "empty string is not allowed")),
        Value::Array(a) if a.is_empty() => Err(invalid(path, "empty array is not allowed")),
        Value::Object(o) if o.is_empty() => Err(invalid(path, "empty object is not allowed")),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .try_for_each(|(i, x)| check_no_empty_values(x, &format!("{path}[{i}]"))),
        Value::Object(o) => o
            .iter()
            .try_for_each(|(k, x)| check_no_empty_values(x, &child(k))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn shipped_document_is_valid() {
        let d = Discovery::load(&Assets::embedded()).unwrap();
        let s = d.service("iort-coverage").unwrap();
        assert_eq!(s.hook, Hook::OrderSign);
        for key in [
            "patient",
            "coverage",
            "conditions",
            "procedures",
            "observations",
        ] {
            assert!(s.prefetch.contains_key(key), "{key}");
        }
    }

    #[test]
    fn nested_context_tokens_are_refused() {
        let doc = json!({"services": [{"id": "x", "hook": "order-sign", "description": "d",
            "prefetch": {"o": "ServiceRequest/{{context.draftOrders.ServiceRequest.id}}"}}]});
        let e = Discovery::from_document(doc).unwrap_err().to_string();
        assert!(e.contains("services[0].prefetch.o"), "{e}");
    }

    #[test]
    fn user_tokens_are_accepted() {
        let doc = json!({"services": [{"id": "x", "hook": "order-sign", "description": "d",
            "prefetch": {"u": "Practitioner/{{userPractitionerId}}", "p": "Patient/{{ context.patientId }}"}}]});
        assert!(Discovery::from_document(doc).is_ok());
    }

    #[test]
    fn empty_values_are_refused() {
        let doc = json!({"services": [{"id": "x", "hook": "order-sign", "description": "d", "title": ""}]});
        let e = Discovery::from_document(doc).unwrap_err().to_string();
        assert!(e.contains("services[0].title"), "{e}");
    }
}
