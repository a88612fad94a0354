//! The discovery document (`GET /cds-services`), read from `fhir-profiles/cds-services.json`.
//!
//! Service definitions are data so that an integrator-facing change (a title, a prefetch query,
//! a CRD option's wording) is a file edit. They are checked once at start-up against the rules
//! the CDS Hooks 2.0 spec sets for discovery: required fields present, no `null` / `""` / `[]` /
//! `{}` anywhere, and prefetch templates that use only CDS Hooks 2.0 tokens.
//!
//! The one exception to "the file is served as written" is the Observation code list. The
//! `observations` query asks the EHR only for Observations coded as the facts read them (a
//! patient has thousands of vitals and labs); a code the facts read but the query omits would
//! silently never reach the service, since the EHR answers the query as asked. So the list is
//! not written by hand: the file says [`OBSERVATION_CODES_MARKER`] where it goes, and at
//! start-up the marker is replaced by every concept of the value sets in
//! [`ValueSetId::OBSERVATION_CODES`] (a FHIR token OR list, `system|code,system|code`, each part
//! FHIR-escaped and percent-encoded so that it is one valid search value on any server). The
//! served document, and so the EHR's prefetch and the service's own fetch (which fills the same
//! template, `gather::tokens`), always carry the codes the value sets hold. An Observation query
//! written with its own `code=` list (an operator's override file) is refused at start-up when
//! it leaves out any of those codes.

use std::collections::BTreeMap;

use reqwest::Url;
use serde_json::Value;

use crate::assets::{AssetError, Assets, Folder};
use crate::hook::Hook;
use crate::terminology::{SystemCode, Terminology, ValueSetId};

/// The file the services are read from, relative to `fhir-profiles/`.
pub const SERVICES_FILE: &str = "cds-services.json";

/// Where the Observation code list goes in a prefetch template (see the module docs). Not a
/// CDS Hooks token: it is replaced at start-up and never served.
pub const OBSERVATION_CODES_MARKER: &str = "{{iort-cds:observation-codes}}";

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
    /// Read and check the services file, filling in the Observation code list from the value
    /// sets.
    pub fn load(assets: &Assets, terminology: &Terminology) -> Result<Self, DiscoveryError> {
        let document = assets.read_json(Folder::Profiles, SERVICES_FILE)?;
        Self::from_document(document, terminology)
    }

    /// Check a discovery document (after filling in the Observation code list).
    pub fn from_document(
        mut document: Value,
        terminology: &Terminology,
    ) -> Result<Self, DiscoveryError> {
        let observation_codes = observation_codes(terminology)?;
        fill_observation_codes(&mut document, &observation_codes)?;
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
                    check_observation_codes(q, &observation_codes)
                        .map_err(|m| invalid(at(&format!("prefetch.{k}")), m))?;
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

/// Every concept of the Observation code value sets, in a stable order without duplicates.
fn observation_codes(terminology: &Terminology) -> Result<Vec<SystemCode>, DiscoveryError> {
    let mut codes: Vec<SystemCode> = Vec::new();
    for id in ValueSetId::OBSERVATION_CODES {
        let concepts = terminology.enumerate(id).map_err(|e| {
            invalid(
                "prefetch",
                format!("value set {}: {} ({})", id.slug(), e.message, e.file),
            )
        })?;
        for c in concepts {
            if !codes.contains(&c) {
                codes.push(c);
            }
        }
    }
    Ok(codes)
}

/// Replace [`OBSERVATION_CODES_MARKER`] in every prefetch template by the code list.
fn fill_observation_codes(
    document: &mut Value,
    codes: &[SystemCode],
) -> Result<(), DiscoveryError> {
    let list = codes.iter().map(search_token).collect::<Vec<_>>().join(",");
    let services = document
        .get_mut("services")
        .and_then(Value::as_array_mut)
        .into_iter()
        .flatten();
    for (i, service) in services.enumerate() {
        let templates = service
            .get_mut("prefetch")
            .and_then(Value::as_object_mut)
            .into_iter()
            .flat_map(|p| p.iter_mut());
        for (key, template) in templates {
            let Some(q) = template
                .as_str()
                .filter(|q| q.contains(OBSERVATION_CODES_MARKER))
            else {
                continue;
            };
            if list.is_empty() {
                return Err(invalid(
                    format!("services[{i}].prefetch.{key}"),
                    "the Observation code value sets hold no codes to ask for",
                ));
            }
            *template = Value::String(q.replace(OBSERVATION_CODES_MARKER, &list));
        }
    }
    Ok(())
}

/// One FHIR search token `system|code`: each part FHIR-escaped (`\`, `|`, `,`, `$` get a
/// backslash, so a code can never split the OR list), then percent-encoded except for RFC 3986
/// unreserved characters and `:` `/` (legal in a query, and readable in URLs), so `|` is sent as
/// `%7C`, which every server decodes and no strict HTTP parser rejects.
pub fn search_token(c: &SystemCode) -> String {
    fn part(out: &mut String, s: &str) {
        for ch in s.chars() {
            if matches!(ch, '\\' | '|' | ',' | '$') {
                out.push_str("%5C");
            }
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~' | b':' | b'/')
                {
                    out.push(char::from(b));
                } else {
                    out.push_str(&format!("%{b:02X}"));
                }
            }
        }
    }
    let mut out = String::new();
    part(&mut out, &c.system);
    out.push_str("%7C");
    part(&mut out, &c.code);
    out
}

/// The `system|code` tokens of a FHIR token search value (already percent-decoded): split on
/// unescaped `,`, then on the first unescaped `|`, then unescaped. A token without `|` has no
/// system (it matches the code in any system).
fn parse_token_list(value: &str) -> Vec<(Option<String>, String)> {
    let mut tokens = Vec::new();
    let mut current = String::new();
    let mut system: Option<String> = None;
    let mut chars = value.chars();
    while let Some(ch) = chars.next() {
        match ch {
            '\\' => current.extend(chars.next()),
            '|' if system.is_none() => system = Some(std::mem::take(&mut current)),
            ',' => tokens.push((system.take(), std::mem::take(&mut current))),
            other => current.push(other),
        }
    }
    tokens.push((system, current));
    tokens
}

/// An Observation query that selects by `code` must ask for every code the facts read.
fn check_observation_codes(template: &str, codes: &[SystemCode]) -> Result<(), String> {
    let (path, query) = template.split_once('?').unwrap_or((template, ""));
    if path.trim_matches('/') != "Observation" {
        return Ok(());
    }
    let Ok(url) = Url::parse(&format!("http://x/?{query}")) else {
        return Err("the query is not a valid URL query".to_owned());
    };
    let lists: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == "code")
        .map(|(_, v)| v.into_owned())
        .collect();
    let list = match lists.as_slice() {
        [] => return Ok(()),
        [one] => parse_token_list(one),
        _ => return Err("several `code` parameters (FHIR ANDs them; use one OR list)".to_owned()),
    };
    let asked = |c: &SystemCode| {
        list.iter().any(|(system, code)| {
            *code == c.code && system.as_deref().is_none_or(|s| s == c.system)
        })
    };
    match codes.iter().find(|c| !asked(c)) {
        None => Ok(()),
        Some(missing) => Err(format!(
            "asks for Observations by code but not for {missing}, which the facts read; write \
             {OBSERVATION_CODES_MARKER} as the `code` value so the list follows the value sets"
        )),
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

    fn terminology() -> Terminology {
        Terminology::load(&Assets::embedded()).unwrap()
    }

    fn load(doc: Value) -> Result<Discovery, DiscoveryError> {
        Discovery::from_document(doc, &terminology())
    }

    fn observation_service(query: &str) -> Value {
        json!({"services": [{"id": "x", "hook": "order-sign", "description": "d",
            "prefetch": {"observations": query}}]})
    }

    #[test]
    fn shipped_document_is_valid() {
        let d = Discovery::load(&Assets::embedded(), &terminology()).unwrap();
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
        let e = load(doc).unwrap_err().to_string();
        assert!(e.contains("services[0].prefetch.o"), "{e}");
    }

    #[test]
    fn user_tokens_are_accepted() {
        let doc = json!({"services": [{"id": "x", "hook": "order-sign", "description": "d",
            "prefetch": {"u": "Practitioner/{{userPractitionerId}}", "p": "Patient/{{ context.patientId }}"}}]});
        assert!(load(doc).is_ok());
    }

    #[test]
    fn empty_values_are_refused() {
        let doc = json!({"services": [{"id": "x", "hook": "order-sign", "description": "d", "title": ""}]});
        let e = load(doc).unwrap_err().to_string();
        assert!(e.contains("services[0].title"), "{e}");
    }

    #[test]
    fn the_observation_code_list_is_filled_from_the_value_sets() {
        let t = terminology();
        let d = load(observation_service(
            "Observation?patient={{context.patientId}}&code={{iort-cds:observation-codes}}",
        ))
        .unwrap();
        let q = &d.service("x").unwrap().prefetch["observations"];
        assert_eq!(d.document["services"][0]["prefetch"]["observations"], *q);
        assert!(!q.contains("iort-cds:"), "{q}");
        assert!(
            q.starts_with("Observation?patient={{context.patientId}}&code=http://"),
            "{q}"
        );
        assert!(q.contains("http://loinc.org%7C21911-3,"), "{q}");
        // Only RFC 3986 query characters besides the token: no raw `|`, space or quote.
        let rest = q.replace("{{context.patientId}}", "");
        assert!(
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-._~:/?&=,%".contains(&b)),
            "{q}"
        );
        let (_, list) = q.split_once("&code=").unwrap();
        let tokens = list.split(',').count();
        let expected: usize = ValueSetId::OBSERVATION_CODES
            .iter()
            .map(|id| t.enumerate(*id).unwrap().len())
            .sum();
        assert_eq!(tokens, expected, "one token per concept: {q}");
    }

    #[test]
    fn search_tokens_are_escaped_for_fhir_and_for_the_url() {
        let c = |system: &str, code: &str| SystemCode {
            system: system.to_owned(),
            code: code.to_owned(),
        };
        assert_eq!(
            search_token(&c("http://loinc.org", "21905-5")),
            "http://loinc.org%7C21905-5"
        );
        assert_eq!(
            search_token(&c("urn:oid:1.2", "a,b|c$d\\e f")),
            "urn:oid:1.2%7Ca%5C%2Cb%5C%7Cc%5C%24d%5C%5Ce%20f"
        );
        // What a FHIR server reads back after percent-decoding.
        assert_eq!(
            parse_token_list("urn:oid:1.2|a\\,b\\|c,http://loinc.org|1-8,9"),
            [
                (Some("urn:oid:1.2".to_owned()), "a,b|c".to_owned()),
                (Some("http://loinc.org".to_owned()), "1-8".to_owned()),
                (None, "9".to_owned()),
            ]
        );
    }

    #[test]
    fn a_hand_written_code_list_missing_a_code_is_refused() {
        // A list this file once carried: no stage groups, no 21911-3, no 84892-9.
        let old = "Observation?patient={{context.patientId}}&code=http://loinc.org|21905-5,\
                   http://loinc.org|21899-0,http://snomed.info/sct|399504009,\
                   http://snomed.info/sct|384625004,http://snomed.info/sct|78873005,\
                   http://snomed.info/sct|395536008,http://loinc.org|33737-8";
        let e = load(observation_service(old)).unwrap_err().to_string();
        assert!(
            e.contains("services[0].prefetch.observations")
                && e.contains("iort-cds:observation-codes"),
            "{e}"
        );
        // The filled list, written out by hand (percent-decoded even), is accepted; so is a
        // query that does not select by code; two `code` parameters are refused.
        let filled = load(observation_service(
            "Observation?patient={{context.patientId}}&code={{iort-cds:observation-codes}}",
        ))
        .unwrap()
        .document["services"][0]["prefetch"]["observations"]
            .as_str()
            .unwrap()
            .replace("%7C", "|");
        assert!(load(observation_service(&filled)).is_ok(), "{filled}");
        assert!(
            load(observation_service(
                "Observation?patient={{context.patientId}}"
            ))
            .is_ok()
        );
        let twice = format!("{filled}&code=http://loinc.org|33737-8");
        assert!(load(observation_service(&twice)).is_err());
        // Other resource types are not Observation queries.
        assert!(
            load(
                json!({"services": [{"id": "x", "hook": "order-sign", "description": "d",
            "prefetch": {"c": "Condition?patient={{context.patientId}}&code=http://x|1"}}]})
            )
            .is_ok()
        );
    }

    #[test]
    fn the_marker_needs_codes_to_fill_it() {
        let doc = observation_service(
            "Observation?patient={{context.patientId}}&code={{iort-cds:observation-codes}}",
        );
        let e = Discovery::from_document(doc, &Terminology::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("services[0].prefetch.observations"), "{e}");
    }
}
