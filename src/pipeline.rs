//! Runs one hook call through the stages, in order:
//! hook (parse, validate) -> gather -> facts -> decision -> render.
//!
//! [`Engine`] holds everything built once at start-up (compiled schemas, discovery, value sets,
//! policy, card templates, the what-if order). The HTTP routes and the `evaluate` command both
//! call [`Engine::call`], so a tester's command line and an EHR's request take the same path.
//!
//! The IORT orders are found before the record is gathered: a call without one reads nothing,
//! and an order hook none of whose orders may be IORT on their raw JSON is answered before
//! its prefetch is even parsed ([`Engine::call_as`], `hook::call::screen_call`). The orders'
//! `reasonReference`s go to the gather stage, which reads the Conditions they
//! name when the record lacks them (`gather::reasons`).
//!
//! The three hooks differ only in which orders are assessed and how the answer is rendered; the
//! record is gathered, the facts read and the decision taken the same way for all of them, so
//! the three services can never disagree about the same patient:
//!
//! - `order-sign`: every IORT order in `draftOrders`; a card and a CRD coverage-information
//!   system action per order.
//! - `order-select`: only the IORT orders that `selections` names (`Type/id` of a `draftOrders`
//!   entry), because the clinician is looking at those; otherwise as `order-sign`.
//! - `patient-view`: no order exists, so a *hypothetical* IORT order (the ServiceRequest in
//!   `fhir-profiles/what-if/iort-service-request.json`, subject set to the patient in view, no
//!   `reasonReference`, so the indication comes from the patient's cancer Conditions) is
//!   assessed, and the answer is one "what if" card and no system action (there is no order to
//!   annotate). See [`Renderer::what_if`].

use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::assets::{Assets, Folder};
use crate::configuration::Settings;
use crate::decision::{self, Determination};
use crate::facts::{self, IortOrder, MarginThresholds};
use crate::gather::{self, GatherError};
pub use crate::hook::call::{CallError, FeedbackItem};
use crate::hook::discovery::{Discovery, DiscoveryError, ServiceDefinition};
use crate::hook::schema::{SchemaError, Schemas};
use crate::hook::{self, CdsResponse, DraftOrder, Hook, HookRequest};
use crate::limits::Limits;
use crate::policy::{Policy, PolicyError};
use crate::record::PatientRecord;
use crate::render::{RenderError, Renderer};
use crate::terminology::{Terminology, TerminologyError};

/// Why the service could not start: names the file or setting at fault.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("JSON Schemas: {0}")]
    Schemas(#[from] SchemaError),
    #[error("discovery: {0}")]
    Discovery(#[from] DiscoveryError),
    #[error("value sets: {0}")]
    Terminology(#[from] TerminologyError),
    #[error("policy: {0}")]
    Policy(#[from] PolicyError),
    #[error("card templates: {0}")]
    Render(#[from] RenderError),
    /// The what-if order of the patient-view service is missing, unreadable or not IORT.
    #[error("fhir-profiles/{WHAT_IF_ORDER_FILE}: {0}")]
    WhatIfOrder(String),
    #[error("{0}")]
    Other(String),
}

/// A call's answer: the CDS response, and each assessed order's outcome code for the log (so
/// the HTTP layer need not read them back out of the response's JSON).
#[derive(Debug, Default)]
pub struct Answer {
    pub response: CdsResponse,
    /// One per IORT order of an order hook (none for the patient-view what-if).
    pub outcomes: Vec<Outcome>,
    /// For the audit store: the request's ids, and each assessed order's determination.
    pub call: Option<crate::store::CallHeader>,
    pub determinations: Vec<Determination>,
}

/// An order's id and its CRD `covered` code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub order: String,
    pub covered: &'static str,
}

/// The hypothetical IORT order the patient-view service assesses, relative to `fhir-profiles/`.
/// Data, not code, so the payer can change the CPT code or wording of the what-if without a
/// release; it is checked at start-up to be a ServiceRequest the service recognises as IORT.
pub const WHAT_IF_ORDER_FILE: &str = "what-if/iort-service-request.json";

/// Everything a call needs, built once. Its parts are reached through the methods below (the
/// stages, as the pipeline runs them), never assembled by hand outside the crate.
#[derive(Debug)]
pub struct Engine {
    pub(crate) schemas: Schemas,
    pub(crate) discovery: Discovery,
    /// The value sets, shared with the gatherer (its Observation filter).
    pub(crate) terminology: Arc<Terminology>,
    pub(crate) policy: Policy,
    pub(crate) renderer: Renderer,
    pub(crate) thresholds: MarginThresholds,
    pub(crate) gatherer: gather::Gatherer,
    /// Bounds on the shape of request bodies (`[limits]`).
    pub(crate) limits: Limits,
    /// The what-if ServiceRequest of the patient-view service ([`WHAT_IF_ORDER_FILE`]), as
    /// read; its subject is replaced by the patient in view on each call.
    pub(crate) what_if_order: Value,
}

impl Engine {
    /// Read and compile every asset the settings point at.
    pub fn load(settings: &Settings) -> Result<Self, StartupError> {
        let assets =
            Assets::with_overrides(settings.profiles_dir.clone(), settings.cards_dir.clone());
        let policy = Policy::load(&assets)?;
        let renderer = Renderer::load(&assets, &policy)?;
        let terminology = Arc::new(Terminology::load(&assets)?);
        let what_if_order = load_what_if_order(&assets, &terminology)?;
        let gatherer = gather::Gatherer::new(
            &settings.fhir,
            settings.limits,
            settings.local_only(),
            Arc::clone(&terminology),
        )
        .map_err(StartupError::Other)?;
        Ok(Self {
            schemas: Schemas::load(&assets)?,
            discovery: Discovery::load(&assets, &terminology)?,
            terminology,
            policy,
            renderer,
            thresholds: settings.policy.thresholds(),
            gatherer,
            limits: settings.limits,
            what_if_order,
        })
    }

    /// The what-if order for a patient: [`Engine::what_if_order`] about `patient_id`, read as
    /// a draft order would be, so it is recognised (billing code, display) exactly like a real
    /// IORT order. Empty only if the file changed under a running service (it is checked at
    /// start-up), which is logged.
    pub fn what_if_orders(&self, patient_id: &str) -> Vec<IortOrder> {
        let orders = what_if_draft(&self.what_if_order, patient_id)
            .map(|draft| facts::find_iort_orders(&[draft], &self.terminology))
            .unwrap_or_default();
        if orders.is_empty() {
            tracing::error!(
                file = WHAT_IF_ORDER_FILE,
                "the what-if order is not an IORT ServiceRequest; patient-view answers no card"
            );
        }
        orders
    }

    /// The loaded value sets (for building a record outside a call: tests, fuzz targets).
    pub fn terminology(&self) -> &Terminology {
        &self.terminology
    }

    /// The payer policy applied (its identity and version, for records of a determination).
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The services of the discovery document.
    pub fn services(&self) -> &[ServiceDefinition] {
        &self.discovery.services
    }

    /// Stage 5 of an order hook: cards and system actions for these determinations.
    pub fn render(
        &self,
        determinations: &[Determination],
        crd: &hook::CrdConfiguration,
        today: chrono::NaiveDate,
    ) -> CdsResponse {
        self.renderer.render(determinations, crd, today)
    }

    /// The discovery document.
    pub fn discovery_document(&self) -> &Value {
        &self.discovery.document
    }

    /// Whether a service with this id exists.
    pub fn has_service(&self, id: &str) -> bool {
        self.discovery.service(id).is_some()
    }

    /// The draft orders that are IORT orders (what stage 3 assesses; others get no card).
    pub fn iort_orders(&self, draft_orders: &[DraftOrder]) -> Vec<IortOrder> {
        facts::find_iort_orders(draft_orders, &self.terminology)
    }

    /// The record of a request as prefetched, with nothing fetched: stage 2 as the service
    /// runs it, without I/O (each key read from its text, the IORT orders' reasons read whole).
    pub fn record_of(&self, request: &HookRequest) -> PatientRecord {
        let reasons: Vec<String> = self
            .iort_orders(&request.context.draft_orders)
            .iter()
            .flat_map(|o| gather::reasons::of_order(&o.raw))
            .collect();
        let mut b =
            crate::record::RecordBuilder::new(&request.context.patient_id, &self.terminology);
        b.read_whole_conditions(&reasons);
        for (key, value) in request.prefetch.iter() {
            b.add_text(key, value);
        }
        b.finish()
    }

    /// The record from a prefetch already parsed, with nothing fetched (as a FHIR server's
    /// pages are read: from parsed values; for the fuzz targets).
    pub fn record_from_prefetch(
        &self,
        patient_id: &str,
        prefetch: &Map<String, Value>,
    ) -> PatientRecord {
        crate::record::builder::record_from_prefetch(patient_id, prefetch, &self.terminology)
    }

    /// Stages 3 and 4: each IORT order's facts read from `record`, and its determination. The
    /// one way in for the pipeline, the tests and the fuzz targets alike.
    pub fn assess(&self, orders: Vec<IortOrder>, record: &PatientRecord) -> Vec<Determination> {
        orders
            .into_iter()
            .map(|o| {
                decision::decide(facts::extract(
                    o,
                    record,
                    &self.terminology,
                    &self.thresholds,
                ))
            })
            .collect()
    }

    /// Stage 1: JSON, schema, hook, context schema, typed request ([`hook::call`]).
    pub fn parse_call(
        &self,
        service_id: &str,
        body: &[u8],
    ) -> Result<(&ServiceDefinition, HookRequest), CallError> {
        hook::call::parse_call(
            &self.discovery,
            &self.schemas,
            &self.limits,
            service_id,
            body,
        )
    }

    /// Stage 1 as the route runs it: with the fast path in front ([`hook::call::screen_call`]),
    /// the prefetch kept as text. For the fuzz targets; the route goes through [`Self::call_as`].
    pub fn screen_call(
        &self,
        service_id: &str,
        body: &[u8],
    ) -> Result<hook::call::Screened<'_>, CallError> {
        hook::call::screen_call(
            &self.discovery,
            &self.schemas,
            &self.limits,
            &|raw| facts::may_be_iort(raw, &self.terminology),
            service_id,
            body,
        )
    }

    /// The whole pipeline for one call.
    pub async fn call(&self, service_id: &str, body: &[u8]) -> Result<CdsResponse, CallError> {
        Ok(self.call_as(service_id, body, None).await?.response)
    }

    /// The whole pipeline for one call from an authenticated client whose issuer may only
    /// send the FHIR servers in `caller_allowed` (`None`: not restricted by the caller).
    pub async fn call_as(
        &self,
        service_id: &str,
        body: &[u8],
        caller_allowed: Option<&[crate::gather::allow_list::BaseUrl]>,
    ) -> Result<Answer, CallError> {
        // The fast path: an order hook none of whose orders may be IORT is answered before its
        // prefetch is parsed (hook::call's module docs). Every call is recorded all the same.
        match self.screen_call(service_id, body)? {
            hook::call::Screened::NothingToAssess(ids) => Ok(Answer {
                call: Some(crate::store::CallHeader::from_ids(ids)),
                ..Answer::default()
            }),
            hook::call::Screened::Request(service, request) => {
                let call = crate::store::CallHeader::of(&request);
                let mut answer = self.run(service, *request, caller_allowed).await?;
                answer.call = Some(call);
                Ok(answer)
            }
        }
    }

    /// Stages 2-5 for a parsed request, with the caller's FHIR server allow-list (`None`: not
    /// restricted by the caller). The request is taken apart by value: its prefetch moves into
    /// the gather plan and from there into the patient record, never copied.
    pub async fn run(
        &self,
        service: &ServiceDefinition,
        request: HookRequest,
        caller_allowed: Option<&[crate::gather::allow_list::BaseUrl]>,
    ) -> Result<Answer, CallError> {
        let HookRequest {
            hook,
            context,
            prefetch,
            fhir_server,
            fhir_authorization,
            crd_configuration,
            ..
        } = request;
        let plan = gather::Plan::new(&service.prefetch, prefetch);
        // Missing prefetch with nowhere to fetch from is refused before anything else, even
        // when no order turns out to be IORT: the client must learn its prefetch is incomplete.
        if !plan.missing().is_empty() && fhir_server.is_none() {
            return Err(CallError::PreconditionFailed {
                missing: plan.missing().to_vec(),
            });
        }
        let orders = match hook {
            // No order exists in patient-view: assess the hypothetical one, unless the client
            // wants no cards at all (max-cards 0), when there is nothing to fetch either.
            Hook::PatientView if crd_configuration.max_cards == Some(0) => Vec::new(),
            Hook::PatientView => self.what_if_orders(&context.patient_id),
            // order-select: only the orders the clinician selected (`Type/id` of draftOrders).
            Hook::OrderSelect => self
                .iort_orders(&context.draft_orders)
                .into_iter()
                .filter(|o| {
                    context
                        .selections
                        .iter()
                        .any(|s| o.reference().is_named_by(s))
                })
                .collect(),
            _ => self.iort_orders(&context.draft_orders),
        };
        if orders.is_empty() {
            // The fast path: nothing to say, nothing fetched.
            return Ok(Answer::default());
        }
        // The IORT orders' reasons, which gather reads by id when the record lacks them
        // (other orders' reasons are never fetched: they are not assessed).
        let reasons: Vec<String> = orders
            .iter()
            .flat_map(|o| gather::reasons::of_order(&o.raw))
            .collect();
        let call = gather::Call {
            context: &context,
            fhir_server: fhir_server.as_deref(),
            authorization: fhir_authorization.as_ref(),
            caller_allowed,
        };
        let record = match self.gatherer.gather(service, call, plan, &reasons).await {
            Ok(r) => r,
            Err(GatherError::Refused(why)) => return Err(CallError::FhirServerRefused(why)),
        };
        let determinations = self.assess(orders, &record);
        let today = chrono::Utc::now().date_naive();
        if hook == Hook::PatientView {
            if let Some(d) = determinations.first() {
                // The outcome code only: no clinical content in logs.
                tracing::info!(outcome = d.covered.code(), "patient-view what-if assessed");
            }
            return Ok(Answer {
                response: self
                    .renderer
                    .what_if(determinations.first(), &crd_configuration, today),
                ..Answer::default()
            });
        }
        Ok(Answer {
            outcomes: determinations
                .iter()
                .map(|d| Outcome {
                    order: d.facts.order.id.clone().unwrap_or_else(|| "?".to_owned()),
                    covered: d.covered.code(),
                })
                .collect(),
            response: self
                .renderer
                .render(&determinations, &crd_configuration, today),
            call: None,
            determinations,
        })
    }

    /// Validate a feedback body ([`hook::call::feedback`]).
    pub fn feedback(&self, service_id: &str, body: &[u8]) -> Result<Vec<FeedbackItem>, CallError> {
        hook::call::feedback(
            &self.discovery,
            &self.schemas,
            &self.limits,
            service_id,
            body,
        )
    }
}

/// The what-if order as a draft order about `patient_id`; `None` when it is not a JSON object.
fn what_if_draft(template: &Value, patient_id: &str) -> Option<DraftOrder> {
    let mut raw = template.clone();
    raw.as_object_mut()?.insert(
        "subject".to_owned(),
        json!({"reference": format!("Patient/{patient_id}")}),
    );
    DraftOrder::from_json(raw)
}

/// Read [`WHAT_IF_ORDER_FILE`] and check that it is a FHIR R4 ServiceRequest the service
/// recognises as IORT, so a broken edit stops start-up instead of silencing patient-view.
fn load_what_if_order(assets: &Assets, terminology: &Terminology) -> Result<Value, StartupError> {
    let order = assets
        .read_json(Folder::Profiles, WHAT_IF_ORDER_FILE)
        .map_err(|e| StartupError::WhatIfOrder(e.to_string()))?;
    if order.get("resourceType").and_then(Value::as_str) != Some("ServiceRequest") {
        return Err(StartupError::WhatIfOrder(
            "must be a ServiceRequest".to_owned(),
        ));
    }
    let draft = what_if_draft(&order, "what-if")
        .ok_or_else(|| StartupError::WhatIfOrder("must be a JSON object".to_owned()))?;
    if let Err(e) = &draft.parsed {
        return Err(StartupError::WhatIfOrder(format!(
            "is not a valid FHIR R4 ServiceRequest: {e}"
        )));
    }
    if facts::find_iort_orders(&[draft], terminology).is_empty() {
        return Err(StartupError::WhatIfOrder(
            "its code is not an IORT code of the iort-procedures value set".to_owned(),
        ));
    }
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_what_if_order_is_iort_and_about_the_patient_in_view() {
        let engine = Engine::load(&Settings::default()).expect("the engine loads");
        let orders = engine.what_if_orders("pat-9");
        assert_eq!(orders.len(), 1);
        let o = &orders[0];
        assert_eq!(
            o.billing_code.as_ref().map(|c| c.code.as_str()),
            Some("77425")
        );
        assert_eq!(o.raw["subject"]["reference"], "Patient/pat-9");
        assert!(
            o.raw.get("reasonReference").is_none() && o.raw.get("reasonCode").is_none(),
            "the indication must come from the patient's Conditions"
        );
        // The template itself is left untouched for the next call.
        assert_eq!(
            engine.what_if_order["subject"]["reference"],
            "Patient/what-if"
        );
    }

    #[test]
    fn a_what_if_order_that_is_not_iort_stops_start_up() {
        let dir = std::env::temp_dir().join(format!("iort-what-if-{}", uuid::Uuid::new_v4()));
        let file = dir.join(WHAT_IF_ORDER_FILE);
        std::fs::create_dir_all(file.parent().expect("a parent folder")).expect("temp dir");
        let ct = json!({"resourceType": "ServiceRequest", "id": "x", "status": "draft",
            "intent": "proposal", "subject": {"reference": "Patient/what-if"},
            "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt", "code": "72193"}]}});
        std::fs::write(&file, ct.to_string()).expect("write");
        let settings = Settings {
            profiles_dir: Some(dir.clone()),
            ..Settings::default()
        };
        let err = Engine::load(&settings).expect_err("not IORT").to_string();
        assert!(
            err.contains(WHAT_IF_ORDER_FILE) && err.contains("not an IORT code"),
            "{err}"
        );
        std::fs::write(&file, "{\"resourceType\": \"Patient\"}").expect("write");
        let err = Engine::load(&settings)
            .expect_err("not a ServiceRequest")
            .to_string();
        assert!(err.contains("must be a ServiceRequest"), "{err}");
        std::fs::remove_dir_all(dir).expect("clean up");
    }
}
