//! Stage 2 of the pipeline: gather the patient record.
//!
//! The record comes from the request's `prefetch` ([`prefetch`]); keys the service declared
//! but the client did not send are fetched from the EHR's FHIR server (the only I/O in the
//! pipeline), with the same query the client would have run ([`tokens`]), through one shared
//! HTTP client ([`fhir_client`]), and only after the server has passed the SSRF checks
//! ([`allow_list`]). Fetched and prefetched data go through the same
//! [`prefetch::RecordBuilder`], so both give the same record.
//!
//! The IORT orders' reasons are read by id as well ([`reasons`]): the order's
//! `reasonReference` decides the indication, and a search by patient does not always return
//! the Condition it names (an encounter diagnosis outside the problem list, a prefetch limited
//! to active problems). Such a Condition is fetched from the same server, by the same client,
//! under the same checks and deadline, whether or not any prefetch key was missing. Its failure
//! is a [`RecordIssue`], not an unavailable record: the indication is then unknown, which the
//! card says, while the rest of the record is still assessed.
//!
//! Failures while fetching prefetch keys (timeout, refused connection, 401, 5xx, garbage, too
//! many pages, an address that may not be contacted ...) do not fail the call: they mark the
//! record [`PatientRecord::unavailable`], so the decision answers `indeterminate`, all within
//! one deadline per call. The card says only [`RECORD_UNREADABLE`], whatever the cause: "could
//! not be reached", "not HTTP" and "answered 405" would tell a caller what listens at the
//! address it named, making the service a port scanner. The precise cause is logged at WARN,
//! inside the request's span (so with its request id). Only a `fhirServer` that may not be
//! contacted at all, when prefetch keys are missing, is an error ([`GatherError::Refused`]):
//! that is decided from the URL and the settings alone, before any connection.
//!
//! Bundles are split with serde_json and each resource is parsed on its own with fhirbolt, so
//! one unreadable resource is noted in [`PatientRecord::issues`] and skipped instead of sinking
//! the whole request (and fhirbolt never sees a Bundle envelope, which it mis-reads when
//! `search` follows `resource`).

pub mod addresses;
pub mod allow_list;
pub mod fhir_client;
pub mod prefetch;
pub mod reasons;
pub mod settings;
pub mod tokens;

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use reqwest::header::HeaderValue;
use tokio::time::{Instant, timeout_at};

use self::allow_list::{BaseUrl, ServerPolicy, bearer_header};
use self::fhir_client::{FhirClient, Query};
use self::settings::FhirSettings;
use crate::hook::discovery::ServiceDefinition;
use crate::hook::{FhirAuthorization, HookContext, Prefetch};
use crate::limits::Limits;
use crate::record::RecordBuilder;
pub use crate::record::{PatientRecord, RecordIssue};
use crate::terminology::Terminology;

/// What the caller is told (card, coverage-information) when fetching from the FHIR server
/// failed, whatever the cause; it completes "The patient record could not be read (...)".
pub const RECORD_UNREADABLE: &str =
    "fetching it from the FHIR server failed; the service's log names the cause";

/// Why gathering refused to run at all (answered with an error, not an outcome).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatherError {
    /// The `fhirServer` may not be contacted (e.g. not on the allow-list). The message completes
    /// "the FHIR server ..." and names the rule; it never holds a token.
    #[error("{0}")]
    Refused(String),
}

/// The parts of a call the gather stage reads, lent by the pipeline (which owns the request).
#[derive(Debug, Clone, Copy)]
pub struct Call<'a> {
    pub context: &'a HookContext,
    /// The request's `fhirServer`, as sent.
    pub fhir_server: Option<&'a str>,
    pub authorization: Option<&'a FhirAuthorization>,
    /// The calling client's own list of FHIR servers (its issuer's `fhir_servers`), when it
    /// has one: `fhirServer` must then lie under one of them as well (`None` or empty: no
    /// restriction beyond `fhir.allowed_base_urls`).
    pub caller_allowed: Option<&'a [BaseUrl]>,
}

/// The prefetch as sent and the declared keys it lacks, worked out once per call: the
/// pipeline answers 412 from it (keys missing and no `fhirServer`), gather fetches from it.
#[derive(Debug, Default)]
pub struct Plan {
    /// Moved out of the request, then read into the record: never parsed whole, never
    /// deep-copied (see [`crate::hook::Prefetch`]).
    prefetched: Prefetch,
    missing: Vec<String>,
}

impl Plan {
    /// `declared`: the service's prefetch templates by key.
    pub fn new(
        declared: &std::collections::BTreeMap<String, String>,
        prefetched: Prefetch,
    ) -> Self {
        let missing = prefetch::missing_keys(declared, &prefetched);
        Self {
            prefetched,
            missing,
        }
    }

    /// The declared prefetch keys the client did not send.
    pub fn missing(&self) -> &[String] {
        &self.missing
    }
}

/// One request to the FHIR server: a missing prefetch key, or an order's reason by id.
struct Job {
    query: Query,
    /// The Condition id, for a reason read.
    reason: Option<String>,
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
    /// Most reason Conditions read by id per call (`fhir.max_reason_fetches`).
    max_reason_fetches: usize,
    /// The value sets, loaded once at start-up, for the record builder's Observation filter.
    terminology: Arc<Terminology>,
    /// Where failed queries are counted by kind (`None`: not counted).
    metrics: Option<crate::metrics::Metrics>,
}

impl Gatherer {
    /// Warn that no allow-list is configured: any caller may name a FHIR server at a public
    /// address (said once, at start-up of a long-running service).
    pub fn warn_if_open(&self) {
        if self.policy.is_open() {
            tracing::warn!(
                loopback_allowed = self.policy.allows_loopback(),
                "fhir.allowed_base_urls is not set: the service will fetch from any https \
                 fhirServer at a public address (http only on loopback); set it in production"
            );
        }
    }

    /// Build the shared HTTP client and parse the allow-list. (`serve` warns at start-up when
    /// no allow-list is configured, see [`Gatherer::warn_if_open`]; a one-shot `evaluate` does
    /// not, it fetches nothing unless its request asks.)
    ///
    /// Without an allow-list, loopback FHIR servers are allowed only when `local_only`: only
    /// processes on this machine can reach the service (see [`crate::reach`]), and they can
    /// reach loopback without it. The `evaluate` command follows the same settings.
    pub fn new(
        fhir: &FhirSettings,
        limits: Limits,
        local_only: bool,
        terminology: Arc<Terminology>,
    ) -> Result<Self, String> {
        fhir.validate()
            .map_err(|(setting, message)| format!("invalid setting `{setting}`: {message}"))?;
        let policy = ServerPolicy::new(&fhir.allowed_base_urls)?.allowing_loopback(local_only);
        Ok(Self {
            client: FhirClient::new(fhir, policy.address_policy())?.with_limits(limits),
            policy,
            timeout: Duration::from_millis(fhir.timeout_ms),
            limits,
            max_reason_fetches: fhir.max_reason_fetches,
            terminology,
            metrics: None,
        })
    }

    /// Count the queries that fail, by kind, in `metrics` (see [`crate::metrics`]).
    pub fn count_failures_in(&mut self, metrics: crate::metrics::Metrics) {
        metrics
            .fhir_fetch_kinds(fhir_client::FailureKind::ALL.map(fhir_client::FailureKind::as_str));
        self.metrics = Some(metrics);
    }

    fn failed(&self, kind: fhir_client::FailureKind) {
        if let Some(m) = &self.metrics {
            m.fhir_fetch_failed(kind.as_str());
        }
    }

    /// The patient record for this call.
    ///
    /// `reasons` are the `reasonReference.reference` values of the IORT orders being assessed
    /// ([`reasons::of_order`]): the Conditions they name that the record lacks after prefetch
    /// and fetching are read by id from `fhirServer` (see [`reasons`]).
    ///
    /// The server is checked (allow-list, the caller's own list) only when something must be
    /// fetched; a refusal happens before any connection.
    pub async fn gather(
        &self,
        service: &ServiceDefinition,
        call: Call<'_>,
        plan: Plan,
        reasons: &[String],
    ) -> Result<PatientRecord, GatherError> {
        let deadline = Instant::now() + self.timeout;
        let mut b =
            RecordBuilder::with_limits(&call.context.patient_id, &self.terminology, self.limits);
        let Plan {
            prefetched,
            missing,
        } = plan;
        b.read_whole_conditions(reasons);
        for (key, value) in prefetched.iter() {
            b.add_text(key, value);
        }
        // Parsed once: for telling the reasons' absolute references to this server, and for
        // the check before fetching.
        let parsed = call.fhir_server.map(BaseUrl::parse);
        let mut reason_ids = reasons::to_fetch(
            reasons,
            parsed.as_ref().and_then(|p| p.as_ref().ok()),
            &mut b,
        );
        reason_ids.retain(|id| !b.has("Condition", id));
        if b.is_unavailable() {
            // The answer is indeterminate whatever the reasons say: do not read them.
            reason_ids.clear();
        }
        if missing.is_empty() && reason_ids.is_empty() {
            return Ok(finish(b));
        }
        let Some(parsed) = parsed else {
            if !missing.is_empty() {
                // The pipeline answers 412 before this; kept so the stage is safe on its own.
                b.unavailable(format!(
                    "prefetch key(s) {} were not sent and there is no fhirServer to fetch them from",
                    missing.join(", ")
                ));
            }
            // Reasons with nowhere to read them from: the facts note them as not in the record.
            return Ok(finish(b));
        };
        let checked = parsed
            .map_err(|p| format!("URL (fhirServer) {p}"))
            .and_then(|base| {
                self.policy
                    .check_base(&base, call.caller_allowed)
                    .map(|()| base)
            });
        let base = match checked {
            Ok(base) => base,
            Err(why) => {
                tracing::warn!(reason = %why, "refused to contact the request's fhirServer");
                if !missing.is_empty() {
                    return Err(GatherError::Refused(why));
                }
                // Only reasons to read: the prefetch is complete, so the call is answered; the
                // reasons stay unread (the indication is then unknown).
                reasons::none_fetched(
                    &mut b,
                    &reason_ids,
                    "the request's fhirServer may not be contacted",
                );
                return Ok(finish(b));
            }
        };
        let auth = match call.authorization {
            None => None,
            Some(a) => match bearer_header(&a.access_token) {
                Some(h) => Some(h),
                None => {
                    tracing::warn!("fhirAuthorization.access_token cannot be sent in a header");
                    if !missing.is_empty() {
                        b.unavailable(
                            "the access token in fhirAuthorization cannot be sent in an HTTP \
                             header, so nothing was fetched"
                                .to_owned(),
                        );
                    }
                    reasons::none_fetched(
                        &mut b,
                        &reason_ids,
                        "the access token in fhirAuthorization cannot be sent",
                    );
                    return Ok(finish(b));
                }
            },
        };

        let mut jobs = Vec::with_capacity(missing.len() + reason_ids.len());
        for key in &missing {
            let Some(template) = service.prefetch.get(key) else {
                continue;
            };
            match tokens::fill(template, call.context) {
                Ok(filled) => match Query::new(key, &filled, &base) {
                    Some(query) => jobs.push(Job {
                        query,
                        reason: None,
                    }),
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
        // A Condition search still to run may bring the reasons: read them after it (and not
        // at all if fetching failed: the answer is then indeterminate anyway, and a server
        // that just refused access is not asked again). Otherwise together with the rest, so
        // they cost no extra round trip.
        let later = jobs.iter().any(|j| j.query.resource_type == "Condition");
        let mut remaining = self.max_reason_fetches;
        if !later {
            jobs.extend(self.reason_jobs(&reason_ids, &base, &mut remaining, &mut b));
        }
        let (base, auth) = (&base, auth.as_ref());
        // This call's share of the fetched-data budget, held until the record is built.
        let budget = self.client.call_budget();
        self.run(&jobs, base, auth, deadline, &budget, &mut b).await;
        if later && !b.is_unavailable() {
            reason_ids.retain(|id| !b.has("Condition", id));
            let jobs = self.reason_jobs(&reason_ids, base, &mut remaining, &mut b);
            self.run(&jobs, base, auth, deadline, &budget, &mut b).await;
        }
        let record = finish(b);
        drop(budget);
        Ok(record)
    }

    /// The reads for the reason Conditions, at most `remaining` of them (the rest are noted as
    /// not fetched, naming the setting).
    fn reason_jobs(
        &self,
        ids: &[String],
        base: &BaseUrl,
        remaining: &mut usize,
        b: &mut RecordBuilder<'_>,
    ) -> Vec<Job> {
        let mut jobs = Vec::new();
        for id in ids {
            if *remaining == 0 {
                reasons::not_fetched(
                    b,
                    id,
                    &format!(
                        "more than {} referenced Conditions to read in one call \
                         (setting fhir.max_reason_fetches)",
                        self.max_reason_fetches
                    ),
                );
                continue;
            }
            // The id was checked to be a FHIR id (no `/`, `?`, `#`, not `.` or `..`), so the
            // read stays at `{base}/Condition/{id}`; `Query::new` checks that once more.
            match Query::new(reasons::SOURCE, &format!("Condition/{id}"), base) {
                Some(query) => {
                    *remaining -= 1;
                    jobs.push(Job {
                        query,
                        reason: Some(id.clone()),
                    });
                }
                None => reasons::not_fetched(b, id, "its id cannot be read on the FHIR server"),
            }
        }
        jobs
    }

    /// Run the jobs concurrently until the call's deadline and add what they bring.
    async fn run(
        &self,
        jobs: &[Job],
        base: &BaseUrl,
        auth: Option<&HeaderValue>,
        deadline: Instant,
        budget: &fhir_client::CallBudget,
        b: &mut RecordBuilder<'_>,
    ) {
        if jobs.is_empty() {
            return;
        }
        let timeout_ms = self.timeout.as_millis();
        // Each query reads its pages into a record of its own as they arrive (the raw JSON of
        // a page is dropped before the next is asked for); the queries' records are then
        // merged in the order of the jobs, so the record does not depend on which server
        // answer came first, and a query that fails adds nothing.
        let answers = join_all(jobs.iter().map(|job| {
            let mut part = b.part();
            async move {
                let started = Instant::now();
                let source = if job.reason.is_some() {
                    reasons::SOURCE
                } else {
                    job.query.key.as_str()
                };
                let answer = timeout_at(
                    deadline,
                    self.client
                        .fetch_each(base, auth, &job.query, budget, |page| {
                            part.add_value(source, page)
                        }),
                )
                .await;
                (job, answer, started.elapsed(), part)
            }
        }))
        .await;
        let mut told = false;
        for (job, answer, elapsed, part) in answers {
            let (q, ms) = (&job.query, elapsed.as_millis());
            if let Some(id) = &job.reason {
                let failed = match answer {
                    Ok(Ok(responses)) => {
                        tracing::debug!(condition = %id, responses, ms, "read an order's reason Condition");
                        b.absorb(reasons::SOURCE, part);
                        match (responses > 0, b.has("Condition", id)) {
                            (_, true) => None,
                            (false, _) => Some("the FHIR server has no such Condition".to_owned()),
                            (true, false) => Some(
                                "the FHIR server's answer was left out (another patient's, or \
                                 another id)"
                                    .to_owned(),
                            ),
                        }
                    }
                    Ok(Err(f)) => {
                        self.failed(f.kind);
                        Some(f.what)
                    }
                    Err(_) => {
                        self.failed(fhir_client::FailureKind::Timeout);
                        Some(format!(
                            "the FHIR server did not answer within {timeout_ms} ms"
                        ))
                    }
                };
                if let Some(what) = failed {
                    tracing::warn!(condition = %id, ms, problem = %what, "an order's reason Condition could not be read");
                    reasons::not_fetched(b, id, &what);
                }
                continue;
            }
            match answer {
                Ok(Ok(responses)) => {
                    tracing::debug!(key = %q.key, responses, ms, "fetched prefetch key");
                    b.absorb(&q.key, part);
                }
                Ok(Err(f)) => {
                    self.failed(f.kind);
                    tracing::warn!(key = %q.key, status = ?f.status, ms, problem = %format!("{}: {}", q.label(), f.what), "FHIR fetch failed");
                    unreadable(b, &mut told);
                }
                Err(_) => {
                    self.failed(fhir_client::FailureKind::Timeout);
                    tracing::warn!(key = %q.key, ms, problem = %format!("{}: the FHIR server did not answer within {timeout_ms} ms", q.label()), "FHIR fetch failed");
                    unreadable(b, &mut told);
                }
            }
        }
    }
}

/// Mark the record unreadable, once per run however many queries failed (the causes are in
/// the log).
fn unreadable(b: &mut RecordBuilder<'_>, told: &mut bool) {
    if !*told {
        *told = true;
        b.unavailable(RECORD_UNREADABLE.to_owned());
    }
}

/// The record, with one line of counts for the log (and the benchmarks).
fn finish(b: RecordBuilder<'_>) -> PatientRecord {
    let r = b.finish();
    tracing::debug!(
        conditions = r.conditions.len(),
        procedures = r.procedures.len(),
        observations = r.observations.len(),
        coverages = r.coverages.len(),
        observations_dropped = r.observations_dropped,
        conditions_by_id = r.condition_ids_only.len(),
        procedures_by_id = r.procedure_ids_only.len(),
        outcome_entries = r.outcome_entries,
        issues = r.issues.len(),
        unavailable = r.unavailable.is_some(),
        "patient record gathered"
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::Assets;
    use crate::configuration::Settings;
    use crate::hook::HookRequest;
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

    fn terminology() -> Arc<Terminology> {
        static T: std::sync::LazyLock<Arc<Terminology>> = std::sync::LazyLock::new(|| {
            Arc::new(Terminology::load(&Assets::embedded()).expect("terminology"))
        });
        Arc::clone(&T)
    }

    fn build(s: &Settings) -> Result<Gatherer, String> {
        Gatherer::new(&s.fhir, s.limits, s.local_only(), terminology())
    }

    fn gatherer(adjust: impl FnOnce(&mut Settings)) -> Gatherer {
        let mut s = Settings::default();
        adjust(&mut s);
        build(&s).unwrap()
    }

    impl Gatherer {
        /// [`Gatherer::gather`] for a whole request, its prefetch copied.
        async fn gather_request(
            &self,
            service: &ServiceDefinition,
            req: &HookRequest,
            reasons: &[String],
            caller_allowed: Option<&[BaseUrl]>,
        ) -> Result<PatientRecord, GatherError> {
            let call = Call {
                context: &req.context,
                fhir_server: req.fhir_server.as_deref(),
                authorization: req.fhir_authorization.as_ref(),
                caller_allowed,
            };
            let plan = Plan::new(&service.prefetch, req.prefetch.clone());
            self.gather(service, call, plan, reasons).await
        }
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
            .gather_request(&service(), &req, &[], None)
            .await
            .unwrap();
        let prefetched = prefetch::record_from_prefetch(
            "pat-rc-001",
            example()["prefetch"].as_object().unwrap(),
            &terminology(),
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
            .gather_request(&service(), &req, &[], None)
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
            .gather_request(&svc, &req, &[], None)
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
        let mut g = gatherer(|s| s.fhir.timeout_ms = 300);
        let metrics = crate::metrics::Metrics::new(["s"]);
        g.count_failures_in(metrics.clone());
        let req = request(&server.uri(), &["conditions", "observations"], None);
        let started = std::time::Instant::now();
        let record = g.gather_request(&service(), &req, &[], None).await.unwrap();
        let took = started.elapsed();
        assert!(took < Duration::from_millis(1000), "{took:?}");
        // Two queries late, one neutral sentence (the causes are logged), two counted.
        assert_eq!(record.unavailable.as_deref(), Some(RECORD_UNREADABLE));
        let text = metrics.encode(false).unwrap().0;
        assert!(
            text.contains("iort_cds_fhir_fetch_failures_total{kind=\"timeout\"} 2\n"),
            "{text}"
        );
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
            .gather_request(&service(), &req, &[], None)
            .await
            .unwrap();
        assert_eq!(record.unavailable.as_deref(), Some(RECORD_UNREADABLE));
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
            .gather_request(&service(), &req, &[], None)
            .await
            .unwrap_err();
        let GatherError::Refused(why) = e;
        assert!(
            why.contains("fhir.allowed_base_urls") && !why.contains("tok"),
            "{why}"
        );
        // also by the caller's own list
        let caller = vec![BaseUrl::parse("https://ehr.example.org/fhir").unwrap()];
        assert!(
            gatherer(|_| {})
                .gather_request(&service(), &req, &[], Some(&caller))
                .await
                .is_err()
        );
        assert!(server.received_requests().await.unwrap().is_empty());
        // nothing missing: nothing to check, nothing fetched
        let full = request(&format!("{}/fhir", server.uri()), &[], None);
        assert!(g.gather_request(&service(), &full, &[], None).await.is_ok());
    }

    /// Loopback servers only for a service that listens on loopback alone: not on `0.0.0.0`
    /// (it also listens on every other interface), not behind a proxy publishing it elsewhere.
    #[tokio::test]
    async fn loopback_servers_only_for_a_service_on_loopback() {
        let server = MockServer::start().await;
        mount_example(&server, None).await;
        let req = request(&format!("{}/fhir", server.uri()), &["observations"], None);
        for adjust in [
            (|s: &mut Settings| s.listen = "0.0.0.0:8080".parse().unwrap()) as fn(&mut Settings),
            |s| s.listen = "10.1.2.3:8080".parse().unwrap(),
            |s| s.public_base_url = Some("https://cds.example.org".into()),
        ] {
            let GatherError::Refused(why) = gatherer(adjust)
                .gather_request(&service(), &req, &[], None)
                .await
                .unwrap_err();
            assert!(
                why.contains("loopback") && why.contains("fhir.allowed_base_urls"),
                "{why}"
            );
        }
        assert!(server.received_requests().await.unwrap().is_empty());
        let listed = server.uri();
        type Adjust<'a> = Box<dyn Fn(&mut Settings) + 'a>;
        let allowed: [Adjust<'_>; 4] = [
            Box::new(|_| {}),
            Box::new(|s| s.listen = "[::1]:8080".parse().unwrap()),
            Box::new(|s| s.public_base_url = Some("http://localhost:8080".into())),
            // listed: reached wherever the service listens
            Box::new(|s| {
                s.listen = "0.0.0.0:8080".parse().unwrap();
                s.fhir.allowed_base_urls = vec![listed.clone()];
            }),
        ];
        for adjust in allowed {
            let record = gatherer(adjust)
                .gather_request(&service(), &req, &[], None)
                .await
                .unwrap();
            assert!(record.unavailable.is_none(), "{:?}", record.unavailable);
        }
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
            .gather_request(&service(), &req, &[], None)
            .await
            .unwrap();
        assert!(record.unavailable.unwrap().contains("access token"));
        assert!(server.received_requests().await.unwrap().is_empty());
    }

    #[test]
    fn settings_are_checked_at_start_up() {
        let mut s = Settings::default();
        s.fhir.allowed_base_urls = vec!["not a url".into()];
        let e = build(&s).unwrap_err();
        assert!(e.contains("fhir.allowed_base_urls"), "{e}");
    }

    /// The example request with all prefetch (or without `drop`), whose conditions lack the
    /// order's reason, and the order naming `reasons`.
    fn reason_request(server: &str, drop: &[&str], reasons: &[&str]) -> (HookRequest, Vec<String>) {
        let mut req = request(server, drop, None);
        let mut prefetch = req.prefetch.to_map();
        if let Some(c) = prefetch.get_mut("conditions") {
            *c = json!({"resourceType": "Bundle", "type": "searchset", "entry": []});
        }
        req.prefetch = crate::hook::Prefetch::from_map(prefetch);
        (req, reasons.iter().map(|r| (*r).to_owned()).collect())
    }

    fn reason_condition(id: &str, patient: &str) -> Value {
        json!({"resourceType": "Condition", "id": id,
            "subject": {"reference": format!("Patient/{patient}")},
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "C20"}]}})
    }

    async fn mount_condition(server: &MockServer, id: &str, response: ResponseTemplate) {
        Mock::given(method("GET"))
            .and(path(format!("/fhir/Condition/{id}")))
            .and(header("accept", "application/fhir+json"))
            .respond_with(response)
            .mount(server)
            .await;
    }

    fn reason_issue<'r>(record: &'r PatientRecord, id: &str) -> Option<&'r RecordIssue> {
        let resource = format!("Condition/{id}");
        record
            .issues
            .iter()
            .find(|i| i.source == reasons::SOURCE && i.resource.as_deref() == Some(&resource))
    }

    #[tokio::test]
    async fn an_orders_reason_is_read_by_id_even_with_full_prefetch() {
        let server = MockServer::start().await;
        mount_condition(
            &server,
            "rc",
            ResponseTemplate::new(200).set_body_json(reason_condition("rc", "pat-rc-001")),
        )
        .await;
        let base = format!("{}/fhir", server.uri());
        let (req, reasons) = reason_request(
            &base,
            &[],
            &[
                "Condition/rc",
                &format!("{base}/Condition/rc/_history/2"),
                "#contained",
            ],
        );
        let record = gatherer(|_| {})
            .gather_request(&service(), &req, &reasons, None)
            .await
            .unwrap();
        assert!(record.unavailable.is_none(), "{:?}", record.unavailable);
        assert!(record.issues.is_empty(), "{:?}", record.issues);
        let ids: Vec<_> = record
            .conditions
            .iter()
            .filter_map(|c| c.id.as_ref().and_then(|i| i.value.clone()))
            .collect();
        assert_eq!(ids, ["rc"]);
        let seen = server.received_requests().await.unwrap();
        assert_eq!(
            seen.len(),
            1,
            "read once, the duplicate and the contained one not"
        );
        // A reason already in the record is not read.
        let full = request(&base, &[], None);
        let reasons = vec!["Condition/cond-rectal-ca".to_owned()];
        gatherer(|_| {})
            .gather_request(&service(), &full, &reasons, None)
            .await
            .unwrap();
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
    }

    #[tokio::test]
    async fn a_reason_that_cannot_be_read_is_an_issue_not_an_unavailable_record() {
        let server = MockServer::start().await;
        mount_condition(&server, "gone", ResponseTemplate::new(404)).await;
        mount_condition(&server, "deleted", ResponseTemplate::new(410)).await;
        mount_condition(&server, "broken", ResponseTemplate::new(503)).await;
        mount_condition(
            &server,
            "other",
            ResponseTemplate::new(200).set_body_json(reason_condition("other", "someone-else")),
        )
        .await;
        mount_condition(
            &server,
            "slow",
            ResponseTemplate::new(200)
                .set_body_json(reason_condition("slow", "pat-rc-001"))
                .set_delay(Duration::from_secs(5)),
        )
        .await;
        let (req, reasons) = reason_request(
            &format!("{}/fhir", server.uri()),
            &[],
            &[
                "Condition/gone",
                "Condition/deleted",
                "Condition/broken",
                "Condition/other",
                "Condition/slow",
            ],
        );
        let mut g = gatherer(|s| s.fhir.timeout_ms = 500);
        let metrics = crate::metrics::Metrics::new(["s"]);
        g.count_failures_in(metrics.clone());
        let record = g
            .gather_request(&service(), &req, &reasons, None)
            .await
            .unwrap();
        assert!(record.unavailable.is_none(), "{:?}", record.unavailable);
        assert!(
            record.conditions.is_empty(),
            "another patient's Condition is left out"
        );
        for (id, problem) in [
            ("gone", "no such Condition"),
            ("deleted", "no such Condition"),
            ("broken", "answered 503"),
            ("other", "another patient's"),
            ("slow", "within 500 ms"),
        ] {
            let issue =
                reason_issue(&record, id).unwrap_or_else(|| panic!("{id}: {:?}", record.issues));
            assert!(issue.problem.contains(problem), "{id}: {}", issue.problem);
        }
        assert_eq!(record.issues.len(), 5);
        // Counted: the 503 and the late answer; a Condition the server does not have (404,
        // 410) or that is another patient's was an answer.
        let text = metrics.encode(false).unwrap().0;
        let count = |kind: &str| {
            let line = format!("iort_cds_fhir_fetch_failures_total{{kind=\"{kind}\"}} ");
            text.lines()
                .find_map(|l| l.strip_prefix(&line))
                .unwrap_or_else(|| panic!("{kind}: {text}"))
                .to_owned()
        };
        assert_eq!(
            (count("status"), count("timeout")),
            ("1".into(), "1".into())
        );
        let all: u32 = fhir_client::FailureKind::ALL
            .iter()
            .map(|k| count(k.as_str()).parse::<u32>().unwrap())
            .sum();
        assert_eq!(all, 2, "{text}");
    }

    #[tokio::test]
    async fn reasons_off_the_server_or_over_the_bound_are_never_contacted() {
        let server = MockServer::start().await;
        let elsewhere = MockServer::start().await;
        mount_condition(
            &server,
            "a",
            ResponseTemplate::new(200).set_body_json(reason_condition("a", "pat-rc-001")),
        )
        .await;
        let (req, reasons) = reason_request(
            &format!("{}/fhir", server.uri()),
            &[],
            &[
                &format!("{}/fhir/Condition/x", elsewhere.uri()),
                "Condition/a",
                "Condition/b",
            ],
        );
        let record = gatherer(|s| s.fhir.max_reason_fetches = 1)
            .gather_request(&service(), &req, &reasons, None)
            .await
            .unwrap();
        assert!(record.unavailable.is_none());
        assert_eq!(record.conditions.len(), 1);
        assert!(
            reason_issue(&record, "x")
                .unwrap()
                .problem
                .contains("outside")
        );
        assert!(
            reason_issue(&record, "b")
                .unwrap()
                .problem
                .contains("fhir.max_reason_fetches")
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
        assert!(elsewhere.received_requests().await.unwrap().is_empty());

        // A fhirServer the rules refuse: with nothing missing, the call goes on, unread.
        let g =
            gatherer(|s| s.fhir.allowed_base_urls = vec!["https://ehr.example.org/fhir".into()]);
        let record = g
            .gather_request(&service(), &req, &reasons, None)
            .await
            .unwrap();
        assert!(record.unavailable.is_none());
        assert!(
            reason_issue(&record, "a")
                .unwrap()
                .problem
                .contains("may not be contacted")
        );
        assert_eq!(server.received_requests().await.unwrap().len(), 1);
        assert!(elsewhere.received_requests().await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn reasons_are_read_after_a_condition_search_that_may_bring_them() {
        let server = MockServer::start().await;
        mount_example(&server, None).await;
        mount_condition(
            &server,
            "extra",
            ResponseTemplate::new(200).set_body_json(reason_condition("extra", "pat-rc-001")),
        )
        .await;
        let (req, reasons) = reason_request(
            &format!("{}/fhir", server.uri()),
            &["conditions"],
            &["Condition/cond-rectal-ca", "Condition/extra"],
        );
        let record = gatherer(|_| {})
            .gather_request(&service(), &req, &reasons, None)
            .await
            .unwrap();
        assert!(record.unavailable.is_none(), "{:?}", record.unavailable);
        assert!(record.issues.is_empty(), "{:?}", record.issues);
        assert_eq!(record.conditions.len(), 2);
        let paths: Vec<String> = server
            .received_requests()
            .await
            .unwrap()
            .iter()
            .map(|r| r.url.path().to_owned())
            .collect();
        // the search brought cond-rectal-ca: only `extra` is read by id, after it
        assert_eq!(paths, ["/fhir/Condition", "/fhir/Condition/extra"]);
    }

    #[tokio::test]
    async fn reasons_are_not_read_when_the_record_is_already_unavailable() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(401))
            .mount(&server)
            .await;
        let (req, reasons) = reason_request(
            &format!("{}/fhir", server.uri()),
            &["conditions"],
            &["Condition/rc"],
        );
        let record = gatherer(|_| {})
            .gather_request(&service(), &req, &reasons, None)
            .await
            .unwrap();
        assert_eq!(record.unavailable.as_deref(), Some(RECORD_UNREADABLE));
        assert_eq!(
            server.received_requests().await.unwrap().len(),
            1,
            "asked once"
        );
    }
}
