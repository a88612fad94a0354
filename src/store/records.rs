//! What is recorded, as plain data built on the request path (cheap: ids, codes and
//! references, no clinical text beyond the card summary the EHR was shown) and written later
//! by the store's writer task.

use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::auth::VerifiedClient;
use crate::decision::Determination;
use crate::hook::{CdsResponse, HookRequest};
use crate::policy::Policy;

/// The parts of a hook request a record keeps, taken before the request is consumed.
#[derive(Debug, Clone, Default)]
pub struct CallHeader {
    pub hook: String,
    pub hook_instance: String,
    pub patient_id: String,
    pub encounter_id: Option<String>,
    /// The host (and port) of `fhirServer`: where the evidence came from, without the path.
    pub fhir_server_host: Option<String>,
}

impl CallHeader {
    pub fn of(request: &HookRequest) -> Self {
        Self::from_ids(crate::hook::call::CallIds::of(request))
    }

    /// From what stage 1 read of the call (the fast path has no typed request).
    pub fn from_ids(ids: crate::hook::call::CallIds) -> Self {
        Self {
            fhir_server_host: ids.fhir_server.as_deref().and_then(host_of),
            hook: ids.hook,
            hook_instance: ids.hook_instance,
            patient_id: ids.patient_id,
            encounter_id: ids.encounter_id,
        }
    }
}

fn host_of(url: &str) -> Option<String> {
    let url = reqwest::Url::parse(url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    })
}

/// The authenticated client, as recorded: the `jti` only hashed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientRecord {
    pub iss: Option<String>,
    pub sub: Option<String>,
    pub tenant: Option<String>,
    pub jti_sha256: Option<String>,
}

impl ClientRecord {
    pub fn of(client: Option<&VerifiedClient>) -> Self {
        match client {
            None => Self::default(),
            Some(c) => Self {
                iss: Some(c.iss.clone()),
                sub: c.sub.clone(),
                tenant: c.tenant.clone(),
                jti_sha256: Some(sha256_hex(&c.jti)),
            },
        }
    }
}

/// Lower-case hex SHA-256.
pub fn sha256_hex(text: &str) -> String {
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// One assessed IORT order.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderRecord {
    /// `Type/id` of the draft order.
    pub order_ref: Option<String>,
    /// `system|code` of its CPT billing code.
    pub billing_code: Option<String>,
    pub covered: &'static str,
    /// `[{"criterion", "value", "evidence": ["Type/id", ...]}]`, as JSON text (written on the
    /// call's thread in one allocation, stored as such).
    pub criteria: String,
    pub policy_id: String,
    pub policy_version: String,
    pub policy_effective: String,
    /// The `coverage-assertion-id` handed to the EHR in this call's coverage-information
    /// (none when the client turned coverage-info off or the order already carried it).
    pub assertion_id: Option<String>,
    pub card_uuid: Option<String>,
    pub card_summary: Option<String>,
}

/// One answered hook call.
#[derive(Debug, Clone)]
pub struct CallRecord {
    pub request_id: String,
    pub received_at: String,
    pub service_id: String,
    pub header: CallHeader,
    pub client: ClientRecord,
    pub orders: Vec<OrderRecord>,
    pub response_body: String,
    pub request_body: Option<String>,
}

/// One feedback item.
#[derive(Debug, Clone)]
pub struct FeedbackRecord {
    pub id: String,
    pub received_at: String,
    pub request_id: String,
    pub service_id: String,
    pub card_uuid: String,
    pub outcome: String,
    pub override_reason: Option<String>,
    pub accepted_suggestions: i64,
    pub has_comment: bool,
    pub outcome_timestamp: String,
    pub client_iss: Option<String>,
}

/// PostgreSQL text cannot hold U+0000, which a JSON string can (`"\u0000"`): a record holding
/// one would be refused by the database on every retry. It is replaced by U+FFFD. (The bodies
/// are JSON text, where it stays escaped.)
fn scrub(s: &mut String) {
    if s.contains('\0') {
        *s = s.replace('\0', "\u{FFFD}");
    }
}

fn scrub_opt(s: &mut Option<String>) {
    if let Some(s) = s {
        scrub(s);
    }
}

impl CallRecord {
    /// See [`scrub`].
    pub(crate) fn scrub(&mut self) {
        scrub(&mut self.request_id);
        scrub(&mut self.service_id);
        let h = &mut self.header;
        scrub(&mut h.hook);
        scrub(&mut h.hook_instance);
        scrub(&mut h.patient_id);
        scrub_opt(&mut h.encounter_id);
        scrub_opt(&mut h.fhir_server_host);
        scrub_opt(&mut self.client.iss);
        scrub_opt(&mut self.client.sub);
        scrub_opt(&mut self.client.tenant);
        for o in &mut self.orders {
            scrub_opt(&mut o.order_ref);
            scrub_opt(&mut o.billing_code);
            scrub_opt(&mut o.assertion_id);
            scrub_opt(&mut o.card_uuid);
            scrub_opt(&mut o.card_summary);
        }
    }
}

impl FeedbackRecord {
    /// See [`scrub`].
    pub(crate) fn scrub(&mut self) {
        scrub(&mut self.request_id);
        scrub(&mut self.service_id);
        scrub(&mut self.card_uuid);
        scrub(&mut self.outcome);
        scrub_opt(&mut self.override_reason);
        scrub(&mut self.outcome_timestamp);
        scrub_opt(&mut self.client_iss);
    }
}

/// Now, as stored: UTC, RFC 3339 with microseconds (text order is time order).
pub fn now_text() -> String {
    chrono::Utc::now()
        .format("%Y-%m-%dT%H:%M:%S%.6fZ")
        .to_string()
}

/// The records of a call's determinations. The assertion id is read from the
/// coverage-information the response carries for the order (the last one on the resource: the
/// one this call added); a card is matched to its determination by position when each
/// determination got one (with `max-cards` fewer, cards are not matched and stay only in the
/// response body).
pub fn orders(
    determinations: &[Determination],
    response: &CdsResponse,
    policy: &Policy,
) -> Vec<OrderRecord> {
    let policy_id = format!("{} {}", policy.payer.short_label, policy.document.title);
    let policy_version = policy.version_label();
    let policy_effective = policy
        .document
        .current_effective
        .format("%Y-%m-%d")
        .to_string();
    let cards_match = response.cards.len() == determinations.len();
    determinations
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let order = &d.facts.order;
            let order_ref = order
                .id
                .as_ref()
                .map(|id| format!("{}/{id}", order.resource_type));
            let card = cards_match.then(|| &response.cards[i]);
            OrderRecord {
                assertion_id: order
                    .id
                    .as_deref()
                    .and_then(|id| assertion_id(response, &order.resource_type, id)),
                order_ref,
                billing_code: order
                    .billing_code
                    .as_ref()
                    .map(|c| format!("{}|{}", c.system, c.code)),
                covered: d.covered.code(),
                criteria: criteria_json(d),
                policy_id: policy_id.clone(),
                policy_version: policy_version.clone(),
                policy_effective: policy_effective.clone(),
                card_uuid: card.and_then(|c| c.uuid.clone()),
                card_summary: card.map(|c| c.summary.clone()),
            }
        })
        .collect()
}

/// One criterion of a determination, as recorded.
#[derive(serde::Serialize)]
struct CriterionRecord<'a> {
    criterion: &'a str,
    value: &'a str,
    evidence: Vec<&'a str>,
}

/// A determination's criteria as JSON text: `[{"criterion", "value", "evidence"}]`.
fn criteria_json(d: &Determination) -> String {
    let criteria: Vec<CriterionRecord<'_>> = d
        .criteria
        .iter()
        .map(|c| CriterionRecord {
            criterion: c.criterion.id(),
            value: c.value.code(),
            evidence: c.evidence.iter().map(|e| e.reference.as_str()).collect(),
        })
        .collect();
    // Strings and arrays of strings: serialising cannot fail.
    serde_json::to_string(&criteria).unwrap_or_else(|_| "[]".to_owned())
}

/// The `coverage-assertion-id` of the last coverage-information extension on the system
/// action's copy of the order `resource_type/id`.
fn assertion_id(response: &CdsResponse, resource_type: &str, id: &str) -> Option<String> {
    let resource = response.system_actions.iter().find_map(|a| {
        let r = a.resource.as_ref()?;
        (r.get("resourceType").and_then(Value::as_str) == Some(resource_type)
            && r.get("id").and_then(Value::as_str) == Some(id))
        .then_some(r)
    })?;
    resource
        .get("extension")?
        .as_array()?
        .iter()
        .rev()
        .filter_map(|ext| ext.get("extension")?.as_array())
        .flatten()
        .find(|sub| sub.get("url").and_then(Value::as_str) == Some("coverage-assertion-id"))
        .and_then(|sub| sub.get("valueString")?.as_str())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_jti_is_kept_only_hashed() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn fhir_server_host_keeps_host_and_port_only() {
        assert_eq!(
            host_of("https://ehr.example.org:8443/fhir/r4?x=1").as_deref(),
            Some("ehr.example.org:8443")
        );
        assert_eq!(
            host_of("https://ehr.example.org/fhir").as_deref(),
            Some("ehr.example.org")
        );
        assert_eq!(host_of("not a url"), None);
    }

    #[test]
    fn assertion_id_is_the_last_on_the_matching_order() {
        let response: CdsResponse = serde_json::from_value(json!({
            "cards": [],
            "systemActions": [{
                "type": "update", "description": "x",
                "resource": {"resourceType": "ServiceRequest", "id": "o1", "extension": [
                    {"url": "ci", "extension": [{"url": "coverage-assertion-id", "valueString": "old"}]},
                    {"url": "ci", "extension": [{"url": "covered", "valueCode": "covered"},
                        {"url": "coverage-assertion-id", "valueString": "new"}]}
                ]}
            }]
        }))
        .unwrap();
        assert_eq!(
            assertion_id(&response, "ServiceRequest", "o1").as_deref(),
            Some("new")
        );
        assert_eq!(assertion_id(&response, "ServiceRequest", "o2"), None);
    }
}
