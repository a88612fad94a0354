//! Runs one hook call through the stages, in order:
//! hook (parse, validate) -> gather -> facts -> decision -> render.
//!
//! [`Engine`] holds everything built once at start-up (compiled schemas, discovery, value sets,
//! policy, card templates). The HTTP routes and the `evaluate` command both call
//! [`Engine::call`], so a tester's command line and an EHR's request take the same path.

use serde_json::Value;

use crate::assets::Assets;
use crate::configuration::Settings;
use crate::decision;
use crate::facts::{self, MarginThresholds};
use crate::gather::{self, GatherError};
use crate::hook::discovery::{Discovery, DiscoveryError, ServiceDefinition};
use crate::hook::schema::{SchemaError, SchemaId, Schemas, Violation};
use crate::hook::{CdsResponse, Hook, HookRequest};
use crate::policy::{Policy, PolicyError};
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
    #[error("{0}")]
    Other(String),
}

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

/// Everything a call needs, built once.
#[derive(Debug)]
pub struct Engine {
    pub schemas: Schemas,
    pub discovery: Discovery,
    pub terminology: Terminology,
    pub policy: Policy,
    pub renderer: Renderer,
    pub thresholds: MarginThresholds,
    pub gatherer: gather::Gatherer,
}

impl Engine {
    /// Read and compile every asset the settings point at.
    pub fn load(settings: &Settings) -> Result<Self, StartupError> {
        let assets =
            Assets::with_overrides(settings.profiles_dir.clone(), settings.cards_dir.clone());
        let policy = Policy::load(&assets)?;
        let renderer = Renderer::load(&assets, &policy)?;
        Ok(Self {
            schemas: Schemas::load(&assets)?,
            discovery: Discovery::load(&assets)?,
            terminology: Terminology::load(&assets)?,
            policy,
            renderer,
            thresholds: settings.policy.thresholds(),
            gatherer: gather::Gatherer::new(settings).map_err(StartupError::Other)?,
        })
    }

    /// The discovery document.
    pub fn discovery_document(&self) -> &Value {
        &self.discovery.document
    }

    fn service(&self, id: &str) -> Result<&ServiceDefinition, CallError> {
        self.discovery
            .service(id)
            .ok_or_else(|| CallError::UnknownService(id.to_owned()))
    }

    /// Whether a service with this id exists.
    pub fn has_service(&self, id: &str) -> bool {
        self.discovery.service(id).is_some()
    }

    /// Stage 1: JSON, schema, hook, context schema, typed request.
    pub fn parse_call(
        &self,
        service_id: &str,
        body: &[u8],
    ) -> Result<(&ServiceDefinition, HookRequest), CallError> {
        let service = self.service(service_id)?;
        let json: Value = parse_json(body)?;
        self.schemas
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
                got: hook.to_owned(),
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
            self.schemas
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

    /// The whole pipeline for one call.
    pub async fn call(&self, service_id: &str, body: &[u8]) -> Result<CdsResponse, CallError> {
        let (service, request) = self.parse_call(service_id, body)?;
        self.run(service, &request).await
    }

    /// Stages 2-5 for a parsed request.
    pub async fn run(
        &self,
        service: &ServiceDefinition,
        request: &HookRequest,
    ) -> Result<CdsResponse, CallError> {
        // Missing prefetch with nowhere to fetch from is refused before anything else, even
        // when no order turns out to be IORT: the client must learn its prefetch is incomplete.
        let missing = gather::prefetch::missing_keys(&service.prefetch, &request.prefetch);
        if !missing.is_empty() && request.fhir_server.is_none() {
            return Err(CallError::PreconditionFailed { missing });
        }
        let orders = facts::find_iort_orders(&request.context.draft_orders, &self.terminology);
        let orders: Vec<_> = if request.hook == Hook::OrderSelect {
            orders
                .into_iter()
                .filter(|o| {
                    let r = format!("{}/{}", o.resource_type, o.id.as_deref().unwrap_or(""));
                    request.context.selections.contains(&r)
                })
                .collect()
        } else {
            orders
        };
        if orders.is_empty() {
            // The fast path: nothing to say, nothing fetched.
            return Ok(CdsResponse::default());
        }
        let record = match self.gatherer.gather(service, request).await {
            Ok(r) => r,
            Err(GatherError::Refused(why)) => return Err(CallError::FhirServerRefused(why)),
        };
        let determinations: Vec<_> = orders
            .into_iter()
            .map(|o| {
                decision::decide(facts::extract(
                    o,
                    &record,
                    &self.terminology,
                    &self.thresholds,
                ))
            })
            .collect();
        let today = chrono::Utc::now().date_naive();
        Ok(self
            .renderer
            .render(&determinations, &request.crd_configuration, today))
    }

    /// Validate a feedback body.
    pub fn feedback(&self, service_id: &str, body: &[u8]) -> Result<Vec<FeedbackItem>, CallError> {
        self.service(service_id)?;
        let json = parse_json(body)?;
        self.schemas
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
                        .map(str::to_owned),
                    accepted_suggestions: f
                        .get("acceptedSuggestions")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len),
                    has_comment: reason.and_then(|r| r.get("userComment")).is_some(),
                    outcome_timestamp: s("outcomeTimestamp"),
                }
            })
            .collect())
    }
}

/// Parse JSON, reporting where it broke (line and column), never what it contained.
fn parse_json(body: &[u8]) -> Result<Value, CallError> {
    serde_json::from_slice(body).map_err(|e| {
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
    })
}
