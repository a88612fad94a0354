//! Stage 2 of the pipeline: gather the patient record.
//!
//! The record comes from the request's `prefetch` ([`prefetch`]); keys the service declared
//! but the client did not send are fetched from the EHR's FHIR server (the only I/O in the
//! pipeline), with the same query the client would have run ([`tokens`]), through one shared
//! HTTP client ([`fhir_client`]), and only after the server has passed the SSRF checks
//! ([`allow_list`]). Fetched and prefetched data go through the same
//! [`prefetch::RecordBuilder`], so both give the same record.
//!
//! Failures while fetching (timeout, 401, 5xx, garbage, too many pages ...) do not fail the
//! call: they mark the record [`PatientRecord::unavailable`], so the decision answers
//! `indeterminate` and the card says what failed, all within one deadline per call. Only a
//! `fhirServer` that may not be contacted at all is an error ([`GatherError::Refused`]).
//!
//! Bundles are split with serde_json and each resource is parsed on its own with fhirbolt, so
//! one unreadable resource is noted in [`PatientRecord::issues`] and skipped instead of sinking
//! the whole request (and fhirbolt never sees a Bundle envelope, which it mis-reads when
//! `search` follows `resource`).

pub mod allow_list;
pub mod fhir_client;
pub mod prefetch;
pub mod tokens;

use std::time::Duration;

use fhirbolt::model::r4::resources::{Condition, Coverage, Observation, Procedure};
use futures_util::future::join_all;
use serde_json::{Map, Value};
use tokio::time::{Instant, timeout_at};

use self::allow_list::{ServerPolicy, bearer_header};
use self::fhir_client::{FhirClient, Query};
use crate::configuration::Settings;
use crate::hook::HookRequest;
use crate::hook::discovery::ServiceDefinition;

/// Something in the record that could not be used, kept so the cards can say the record was
/// incomplete. It names the prefetch key and the resource (`Type/id`), never clinical content.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordIssue {
    /// The prefetch key (or FHIR query) the data came from.
    pub source: String,
    /// `Type/id` of the resource, when known.
    pub resource: Option<String>,
    /// What was wrong, e.g. "does not parse as FHIR R4 Observation: unknown field `foo`".
    pub problem: String,
}

/// The parts of the patient's record the decision reads, each resource parsed and typed.
#[derive(Debug, Clone, Default)]
pub struct PatientRecord {
    pub patient_id: String,
    pub conditions: Vec<Condition>,
    pub procedures: Vec<Procedure>,
    pub observations: Vec<Observation>,
    pub coverages: Vec<Coverage>,
    /// Resources that were skipped, and why.
    pub issues: Vec<RecordIssue>,
    /// Set when a whole part of the record could not be obtained (e.g. the FHIR server failed):
    /// the decision must then answer `indeterminate` rather than guess. Says what failed.
    pub unavailable: Option<String>,
}

/// Why gathering refused to run at all (answered with an error, not an outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatherError {
    /// The `fhirServer` may not be contacted (e.g. not on the allow-list). The message completes
    /// "the FHIR server ..." and names the rule; it never holds a token.
    #[error("{0}")]
    Refused(String),
}

/// Gathers the record: prefetch first, then the EHR's FHIR server for what is missing.
#[derive(Debug, Clone)]
pub struct Gatherer {
    policy: ServerPolicy,
    client: FhirClient,
    /// One deadline for all fetching in a call.
    timeout: Duration,
    /// Bounds on Bundles and records (`[limits]`).
    limits: crate::limits::Limits,
}

impl Gatherer {
    /// Build the shared HTTP client and parse the allow-list. Warns (once, here) when no
    /// allow-list is configured.
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let fhir = &settings.fhir;
        fhir.validate().map_err(|e| e.to_string())?;
        let policy = ServerPolicy::new(&fhir.allowed_base_urls)?;
        if policy.is_open() {
            tracing::warn!(
                "fhir.allowed_base_urls is not set: the service will fetch from any https \
                 fhirServer (and http only on loopback); set it in production"
            );
        }
        Ok(Self {
            policy,
            client: FhirClient::new(fhir)?.with_limits(settings.limits),
            timeout: Duration::from_millis(fhir.timeout_ms),
            limits: settings.limits,
        })
    }

    /// The patient record for this call.
    ///
    /// `caller_allowed` is the calling client's own list of FHIR servers (its issuer's
    /// `fhir_servers`), when it has one: `fhirServer` must then lie under one of them as well
    /// (`None` or empty: no restriction beyond `fhir.allowed_base_urls`). The server is checked
    /// only when something must be fetched; a refusal happens before any connection.
    ///
    /// The prefetch comes by value, apart from the rest of the request: a caller that owns the
    /// request moves it out (`std::mem::take`) so the prefetched resources are moved into the
    /// record instead of deep-copied. `request.prefetch` itself is not read.
    pub async fn gather(
        &self,
        service: &ServiceDefinition,
        request: &HookRequest,
        prefetched: Map<String, Value>,
        caller_allowed: Option<&[String]>,
    ) -> Result<PatientRecord, GatherError> {
        let deadline = Instant::now() + self.timeout;
        let mut b = prefetch::RecordBuilder::with_limits(&request.context.patient_id, self.limits);
        let missing = prefetch::missing_keys(&service.prefetch, &prefetched);
        for (key, value) in prefetched {
            b.add_value(&key, value);
        }
        if missing.is_empty() {
            return Ok(b.finish());
        }
        let Some(fhir_server) = request.fhir_server.as_deref() else {
            // The pipeline answers 412 before this; kept so the stage is safe on its own.
            b.unavailable(format!(
                "prefetch key(s) {} were not sent and there is no fhirServer to fetch them from",
                missing.join(", ")
            ));
            return Ok(b.finish());
        };
        let base = self
            .policy
            .check(fhir_server, caller_allowed)
            .map_err(|why| {
                tracing::warn!(reason = %why, "refused to contact the request's fhirServer");
                GatherError::Refused(why)
            })?;
        let auth = match &request.fhir_authorization {
            None => None,
            Some(a) => match bearer_header(&a.access_token) {
                Some(h) => Some(h),
                None => {
                    tracing::warn!("fhirAuthorization.access_token cannot be sent in a header");
                    b.unavailable(
                        "the access token in fhirAuthorization cannot be sent in an HTTP header, \
                         so nothing was fetched"
                            .to_owned(),
                    );
                    return Ok(b.finish());
                }
            },
        };

        let mut queries = Vec::with_capacity(missing.len());
        for key in &missing {
            let Some(template) = service.prefetch.get(key) else {
                continue;
            };
            match tokens::fill(template, &request.context) {
                Ok(filled) => match Query::new(key, &filled, &base) {
                    Some(q) => queries.push(q),
                    None => {
                        tracing::warn!(key = %key, "prefetch template does not stay on the FHIR server");
                        b.unavailable(format!(
                            "prefetch key {key}: its query does not stay on the FHIR server"
                        ));
                    }
                },
                Err(e) => {
                    // Nothing to ask for (e.g. no encounter in this call): the client would
                    // have left the key out too, so this is noted, not a failure.
                    tracing::info!(key = %key, problem = %e, "prefetch key not fetched");
                    b.issue(key, None, format!("not fetched: {e}"));
                }
            }
        }

        let timeout_ms = self.timeout.as_millis();
        let (base, auth) = (&base, auth.as_ref());
        let answers = join_all(queries.iter().map(|q| async move {
            let started = Instant::now();
            let answer = timeout_at(deadline, self.client.fetch(base, auth, q)).await;
            (q, answer, started.elapsed())
        }))
        .await;
        for (q, answer, elapsed) in answers {
            let ms = elapsed.as_millis();
            match answer {
                Ok(Ok(values)) => {
                    tracing::debug!(key = %q.key, responses = values.len(), ms, "fetched prefetch key");
                    for value in values {
                        b.add_value(&q.key, value);
                    }
                }
                Ok(Err(f)) => {
                    tracing::warn!(key = %q.key, status = ?f.status, ms, problem = %f.what, "FHIR fetch failed");
                    b.unavailable(format!("{}: {}", q.label(), f.what));
                }
                Err(_) => {
                    tracing::warn!(key = %q.key, ms, "FHIR fetch passed the deadline");
                    b.unavailable(format!(
                        "{}: the FHIR server did not answer within {timeout_ms} ms",
                        q.label()
                    ));
                }
            }
        }
        Ok(b.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Assets;
    use crate::hook::discovery::Discovery;
    use serde_json::{Value, json};
    use wiremock::matchers::{header, method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    const EXAMPLE: &str = include_str!("../../examples/order-sign-iort.json");

    fn service() -> ServiceDefinition {
        let assets = Assets::embedded();
        let terminology = crate::terminology::Terminology::load(&assets).unwrap();
        Discovery::load(&assets, &terminology)
            .unwrap()
            .service("iort-coverage")
            .unwrap()
            .clone()
    }

    fn example() -> Value {
        serde_json::from_str(EXAMPLE).unwrap()
    }

    fn gatherer(adjust: impl FnOnce(&mut Settings)) -> Gatherer {
        let mut s = Settings::default();
        adjust(&mut s);
        Gatherer::new(&s).unwrap()
    }

    /// The example request without the given prefetch keys, pointed at `server`.
    fn request(server: &str, drop: &[&str], token: Option<&str>) -> HookRequest {
        let mut v = example();
        let prefetch = v["prefetch"].as_object_mut().unwrap();
        for k in drop {
            prefetch.remove(*k);
        }
        v["fhirServer"] = json!(server);
        if let Some(t) = token {
            v["fhirAuthorization"] = json!({"access_token": t, "token_type": "Bearer",
                "expires_in": 300, "scope": "patient/*.read", "subject": "cds"});
        }
        HookRequest::from_json(v).unwrap()
    }

    /// Serve the example's prefetch values where the service's queries will look for them.
    async fn mount_example(server: &MockServer, token: Option<&str>) {
        let prefetch = example()["prefetch"].as_object().unwrap().clone();
        for (key, value) in prefetch {
            let p = match key.as_str() {
                "patient" => "/fhir/Patient/pat-rc-001".to_owned(),
                other => format!(
                    "/fhir/{}",
                    service().prefetch[other].split('?').next().unwrap()
                ),
            };
            let mut m = Mock::given(method("GET"))
                .and(path(p))
                .and(header("accept", "application/fhir+json"));
            if key != "patient" {
                m = m.and(query_param("patient", "pat-rc-001"));
            }
            if let Some(t) = token {
                m = m.and(header("authorization", format!("Bearer {t}").as_str()));
            }
            m.respond_with(ResponseTemplate::new(200).set_body_json(value))
                .named(key)
                .mount(server)
                .await;
        }
    }

    #[tokio::test]
    async fn fetched_record_is_the_prefetched_record() {
        let server = MockServer::start().await;
        mount_example(&server, Some("tok-123")).await;
        let all = [
            "patient",
            "coverage",
            "conditions",
            "procedures",
            "observations",
        ];
        let req = request(&format!("{}/fhir", server.uri()), &all, Some("tok-123"));
        let fetched = gatherer(|_| {})
            .gather(&service(), &req, req.prefetch.clone(), None)
            .await
            .unwrap();
        let prefetched = prefetch::record_from_prefetch(
            "pat-rc-001",
            example()["prefetch"].as_object().unwrap(),
        );
        assert_eq!(format!("{fetched:?}"), format!("{prefetched:?}"));
        assert!(fetched.unavailable.is_none(), "{:?}", fetched.unavailable);
        assert_eq!(fetched.conditions.len(), 1);
        assert_eq!(fetched.coverages.len(), 1);
        assert_eq!(server.received_requests().await.unwrap().len(), 5);
    }

    #[tokio::test]
    async fn only_missing_keys_are_fetched() {
        let server = MockServer::start().await;
        mount_example(&server, None).await;
        let req = request(&format!("{}/fhir", server.uri()), &["observations"], None);
        let record = gatherer(|_| {})
            .gather(&service(), &req, req.prefetch.clone(), None)
            .await
            .unwrap();
        let seen = server.received_requests().await.unwrap();
        assert_eq!(seen.len(), 1);
        assert_eq!(seen[0].url.path(), "/fhir/Observation");
        assert!(!seen[0].headers.contains_key("authorization"));
        assert!(record.unavailable.is_none());
        assert_eq!(record.conditions.len(), 1, "prefetched data kept");
    }

    #[tokio::test]
    async fn an_unfillable_token_skips_the_key_and_notes_it() {
        let server = MockServer::start().await;
        let mut svc = service();
        svc.prefetch.clear();
        svc.prefetch.insert(
            "encounter".into(),
            "Encounter/{{context.encounterId}}".into(),
        );
        let mut v = example();
        v["context"].as_object_mut().unwrap().remove("encounterId");
        v["fhirServer"] = json!(server.uri());
        let req = HookRequest::from_json(v).unwrap();
        let record = gatherer(|_| {})
            .gather(&svc, &req, req.prefetch.clone(), None)
            .await
            .unwrap();
        assert!(record.unavailable.is_none());
        let issue = record
            .issues
            .iter()
            .find(|i| i.source == "encounter")
            .unwrap();
        assert!(
            issue.problem.contains("{{context.encounterId}}"),
            "{}",
            issue.problem
        );
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn one_deadline_bounds_all_fetching() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(
                ResponseTemplate::new(200)
                    .set_body_json(json!({"resourceType": "Bundle", "type": "searchset"}))
                    .set_delay(Duration::from_secs(5)),
            )
            .mount(&server)
            .await;
        let g = gatherer(|s| s.fhir.timeout_ms = 300);
        let req = request(&server.uri(), &["conditions", "observations"], None);
        let started = std::time::Instant::now();
        let record = g
            .gather(&service(), &req, req.prefetch.clone(), None)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1000), "{took:?}");
        let why = record.unavailable.unwrap();
        assert!(
            why.contains("Condition query: the FHIR server did not answer within 300 ms"),
            "{why}"
        );
        assert!(why.contains("Observation query"), "{why}");
    }

    #[tokio::test]
    async fn failures_mark_the_record_unavailable_and_keep_the_rest() {
        let server = MockServer::start().await;
        mount_example(&server, None).await;
        Mock::given(path("/fhir/Observation"))
            .respond_with(ResponseTemplate::new(503))
            .with_priority(1)
            .mount(&server)
            .await;
        let req = request(
            &format!("{}/fhir", server.uri()),
            &["observations", "conditions"],
            None,
        );
        let record = gatherer(|_| {})
            .gather(&service(), &req, req.prefetch.clone(), None)
            .await
            .unwrap();
        assert_eq!(
            record.unavailable.as_deref(),
            Some("Observation query: the FHIR server answered 503")
        );
        assert_eq!(record.conditions.len(), 1);
    }

    #[tokio::test]
    async fn a_refused_server_is_never_contacted() {
        let server = MockServer::start().await;
        mount_example(&server, None).await;
        let g =
            gatherer(|s| s.fhir.allowed_base_urls = vec!["https://ehr.example.org/fhir".into()]);
        let req = request(
            &format!("{}/fhir", server.uri()),
            &["observations"],
            Some("tok"),
        );
        let e = g
            .gather(&service(), &req, req.prefetch.clone(), None)
            .await
            .unwrap_err();
        let GatherError::Refused(why) = e;
        assert!(
            why.contains("fhir.allowed_base_urls") && !why.contains("tok"),
            "{why}"
        );
        // also by the caller's own list
        let caller = vec!["https://ehr.example.org/fhir".to_owned()];
        assert!(
            gatherer(|_| {})
                .gather(&service(), &req, req.prefetch.clone(), Some(&caller))
                .await
                .is_err()
        );
        assert!(server.received_requests().await.unwrap().is_empty());
        // nothing missing: nothing to check, nothing fetched
        let full = request(&format!("{}/fhir", server.uri()), &[], None);
        assert!(
            g.gather(&service(), &full, full.prefetch.clone(), None)
                .await
                .is_ok()
        );
    }

    #[tokio::test]
    async fn an_unusable_token_fetches_nothing() {
        let server = MockServer::start().await;
        mount_example(&server, None).await;
        let mut req = request(&server.uri(), &["observations"], Some("x"));
        if let Some(a) = req.fhir_authorization.as_mut() {
            a.access_token = "line\nbreak".to_owned();
        }
        let record = gatherer(|_| {})
            .gather(&service(), &req, req.prefetch.clone(), None)
            .await
            .unwrap();
        assert!(record.unavailable.unwrap().contains("access token"));
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[test]
    fn settings_are_checked_at_start_up() {
        let mut s = Settings::default();
        s.fhir.allowed_base_urls = vec!["not a url".into()];
        let e = Gatherer::new(&s).unwrap_err();
        assert!(e.contains("fhir.allowed_base_urls"), "{e}");
    }
}
