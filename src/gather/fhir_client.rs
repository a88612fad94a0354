//! The HTTP side of gathering: one prefetch query against the EHR's FHIR server, pages and all.
//!
//! One [`reqwest::Client`] is built at start-up and shared by every call, so connections (and
//! TLS sessions) to the EHR are pooled. It never follows redirects (a 3xx could hand the bearer
//! token's next request to another host), ignores proxy variables unless told otherwise, and
//! sends `Accept: application/fhir+json`. The bearer token is passed in per call, as a
//! sensitive header value, and is not kept anywhere.
//!
//! Without an allow-list the client connects only where [`super::addresses`] allows: its
//! resolver drops the addresses a name resolves to that may not be contacted, on every
//! connection (first page, `next` pages, reason reads), and an IP literal is checked before the
//! request is sent.
//!
//! Each failure becomes a [`Failure`] whose text names the precise cause for the log (an HTTP
//! status, "not JSON", "too many pages", the connect error) and never the URL's query, the
//! token, or any response content. It is not shown to the caller: what went wrong where tells
//! a caller what listens at an address (see [`super::RECORD_UNREADABLE`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use reqwest::{Response, StatusCode, Url};
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::addresses::{AddressPolicy, GuardedResolver, RefusedAddress};
use super::allow_list::{BaseUrl, host_ip};
use super::settings::FhirSettings;
use crate::limits::{self, Limits};

/// The media type asked for and sent in `Accept`.
const FHIR_JSON: &str = "application/fhir+json";

/// Whether a prefetch template reads one resource or searches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// `Type/id`: a 404 (or 410) or a `null` body means "no data".
    Read,
    /// `Type?params` (or a bare `Type`): a Bundle, possibly paged.
    Search,
}

/// One query to run: the prefetch key it answers and the absolute URL on the FHIR server.
#[derive(Debug, Clone)]
pub struct Query {
    pub key: String,
    /// The resource type the template names (`Observation`), for messages.
    pub resource_type: String,
    pub kind: QueryKind,
    pub url: Url,
}

impl Query {
    /// Build the query for a filled template (`Observation?patient=p1`, `Patient/p1`). `None`
    /// when the template does not name a resource type or would leave the server's base.
    pub fn new(key: &str, filled: &str, base: &BaseUrl) -> Option<Self> {
        let path = filled.split(['?', '#']).next().unwrap_or_default();
        let mut segments = path.split('/');
        let resource_type = segments.next().unwrap_or_default();
        if resource_type.is_empty() || !resource_type.bytes().all(|b| b.is_ascii_alphabetic()) {
            return None;
        }
        let kind = match segments.next() {
            Some(id) if !id.is_empty() => QueryKind::Read,
            _ => QueryKind::Search,
        };
        Some(Self {
            key: key.to_owned(),
            resource_type: resource_type.to_owned(),
            kind,
            url: base.query_url(filled)?,
        })
    }

    /// Read one 2xx answer to this query (pure, no I/O): the body must be JSON; a read's must
    /// be `null` or a resource of the type asked for, a search's a Bundle, whose `next` link
    /// is returned for the caller to follow (or not).
    ///
    /// The answer's shape is bounded like a request's (`limits`): nesting depth and string
    /// length before parsing, resources nested in resources after; a page of a search may
    /// hold at most `limits.max_bundle_entries` entries, search outcome entries aside.
    pub fn read_answer(
        &self,
        status: StatusCode,
        body: &[u8],
        limits: &Limits,
    ) -> Result<Answer, Failure> {
        let over = |e: limits::LimitExceeded| {
            Failure::new(
                FailureKind::TooLarge,
                Some(status),
                format!("the FHIR server's answer has {e}"),
            )
        };
        limits::check_json(body, limits).map_err(over)?;
        let value: Value = serde_json::from_slice(body).map_err(|_| {
            Failure::new(
                FailureKind::Malformed,
                Some(status),
                "the FHIR server's answer is not JSON",
            )
        })?;
        limits::check_resource_nesting(&value).map_err(over)?;
        if let Some(entries) = value.get("entry").and_then(Value::as_array) {
            limits
                .check_entries(super::prefetch::counted_entries(entries))
                .map_err(over)?;
        }
        match self.kind {
            QueryKind::Read if value.is_null() => Ok(Answer {
                value: None,
                next: None,
            }),
            QueryKind::Read => {
                check_resource(&value, &self.resource_type, status)?;
                Ok(Answer {
                    value: Some(value),
                    next: None,
                })
            }
            QueryKind::Search => {
                check_resource(&value, "Bundle", status)?;
                Ok(Answer {
                    next: next_link(&value),
                    value: Some(value),
                })
            }
        }
    }

    /// `Observation query` / `Patient read`: how the query is named in cards and logs.
    pub fn label(&self) -> String {
        match self.kind {
            QueryKind::Read => format!("{} read", self.resource_type),
            QueryKind::Search => format!("{} query", self.resource_type),
        }
    }
}

/// One answer of the FHIR server, read ([`Query::read_answer`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The resource or Bundle to add to the record; `None` when a read found nothing.
    pub value: Option<Value>,
    /// The Bundle's `next` link, as written (searches only).
    pub next: Option<String>,
}

/// Why a query gave no usable answer. `what` completes "<label>: ..." in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The cause, coarsely, for counting ([`crate::metrics`]).
    pub kind: FailureKind,
    /// The HTTP status, when there was an answer.
    pub status: Option<u16>,
    pub what: String,
}

impl Failure {
    fn new(kind: FailureKind, status: Option<StatusCode>, what: impl Into<String>) -> Self {
        Self {
            kind,
            status: status.map(|s| s.as_u16()),
            what: what.into(),
        }
    }
}

/// The kind of a [`Failure`]: a small fixed set, so an operator can count failures by cause
/// (a metric label) without the log's text, which is precise but open-ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FailureKind {
    /// No answer, or not all of it, in time (the call's deadline or the client's backstop).
    Timeout,
    /// No connection: refused, reset, the name not resolved, the TLS handshake failed.
    Unreachable,
    /// The address may not be contacted (`fhir` settings): nothing was sent.
    NotContacted,
    /// 401 or 403: the access token was not accepted.
    Denied,
    /// Any other answer than 2xx (redirects included: they are not followed).
    Status,
    /// Over a bound: bytes, pages, JSON values (this call's or all calls'), the shape limits.
    TooLarge,
    /// Not JSON, not the resource asked for, an OperationOutcome instead of data, a next-page
    /// link off the server.
    Malformed,
    /// The request or the answer's body failed otherwise.
    Other,
}

impl FailureKind {
    /// Every kind, in a fixed order.
    pub const ALL: [FailureKind; 8] = [
        FailureKind::Timeout,
        FailureKind::Unreachable,
        FailureKind::NotContacted,
        FailureKind::Denied,
        FailureKind::Status,
        FailureKind::TooLarge,
        FailureKind::Malformed,
        FailureKind::Other,
    ];

    /// The stable name (a metric label value).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureKind::Timeout => "timeout",
            FailureKind::Unreachable => "unreachable",
            FailureKind::NotContacted => "not_contacted",
            FailureKind::Denied => "denied",
            FailureKind::Status => "status",
            FailureKind::TooLarge => "too_large",
            FailureKind::Malformed => "malformed",
            FailureKind::Other => "other",
        }
    }
}

/// The shared HTTP client and the bounds every query respects.
#[derive(Debug, Clone)]
pub struct FhirClient {
    http: reqwest::Client,
    /// The addresses that may be contacted (`None`: any, an allow-list is configured).
    addresses: Option<AddressPolicy>,
    max_pages: usize,
    max_response_bytes: usize,
    limits: Limits,
    max_call_values: usize,
    /// Room for the JSON values all calls hold at once (`fhir.max_inflight_values`), shared
    /// by every clone of the client.
    values_room: Arc<Semaphore>,
    room_size: usize,
}

/// What one call may read from FHIR servers: its own bound on JSON values
/// (`fhir.max_call_values`) and its share of the process-wide room
/// (`fhir.max_inflight_values`), taken page by page before a page is parsed and held until the
/// call's record is built (given back when this is dropped). So memory follows a budget, not
/// the peer: a server sending endless pages of small numbers costs a bounded record and an
/// `indeterminate` answer, and never starves the other calls for more than their deadline.
#[derive(Debug)]
pub struct CallBudget {
    limit: usize,
    /// `fhir.max_inflight_values`, for the message.
    room_size: usize,
    used: AtomicUsize,
    room: Arc<Semaphore>,
    held: Mutex<Vec<OwnedSemaphorePermit>>,
}

impl CallBudget {
    /// Account for a page of `values` JSON values: refused over the call's bound, else wait
    /// (within the caller's deadline) for room among all calls.
    pub async fn take(&self, values: usize) -> Result<(), String> {
        // Counted once the room is held (a wait cut short by the deadline counts nothing);
        // pages of one call's concurrent queries may pass the check together, so the bound can
        // be passed by at most one page per query.
        let total = self.used.load(Ordering::Relaxed).saturating_add(values);
        if total > self.limit {
            self.used.store(total, Ordering::Relaxed);
            return Err(format!(
                "the record on the FHIR server is too large to assess: more than {} JSON \
                 values (limit: fhir.max_call_values = {})",
                self.limit, self.limit
            ));
        }
        let units = u32::try_from(values).map_err(|_| "an answer too large to hold".to_owned())?;
        let permit = match self.room.clone().try_acquire_many_owned(units) {
            Ok(p) => p,
            // Never wait while holding room: calls that each hold part of it and wait for more
            // would all wait out their deadlines (seen with three hostile calls), and every other
            // call behind them. A call that holds room and finds no more is not assessed.
            Err(_)
                if !self
                    .held
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .is_empty() =>
            {
                return Err(format!(
                    "the FHIR data being read by all calls passed fhir.max_inflight_values ({}); \
                     this record was not assessed",
                    self.room_size
                ));
            }
            Err(_) => {
                tracing::info!(
                    values,
                    "waiting for room for fetched FHIR data (fhir.max_inflight_values)"
                );
                self.room
                    .clone()
                    .acquire_many_owned(units)
                    .await
                    .map_err(|_| "no room for fetched data".to_owned())?
            }
        };
        self.used.fetch_add(values, Ordering::Relaxed);
        self.held
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(permit);
        Ok(())
    }

    /// JSON values taken so far.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl FhirClient {
    /// Build the one client (rustls, pooled, no redirects), connecting only to the addresses
    /// `addresses` allows (`None`: any; see `ServerPolicy::address_policy`). Fails only if TLS
    /// cannot be set up.
    pub fn new(settings: &FhirSettings, addresses: Option<AddressPolicy>) -> Result<Self, String> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(Duration::from_millis(
                settings.connect_timeout_ms.min(settings.timeout_ms),
            ))
            // The per-call deadline is enforced by the caller (and wins: it reports which
            // queries were late); this is only a backstop for a request used without it.
            .timeout(Duration::from_millis(
                settings.timeout_ms.saturating_add(1000),
            ))
            .pool_idle_timeout(Duration::from_secs(60))
            .user_agent(concat!("iort-cds/", env!("CARGO_PKG_VERSION")));
        if !settings.use_system_proxy {
            builder = builder.no_proxy();
        }
        if let Some(policy) = addresses {
            builder = builder.dns_resolver(GuardedResolver::new(policy));
        }
        let http = builder
            .build()
            .map_err(|e| format!("cannot build the FHIR HTTP client: {e}"))?;
        Ok(Self {
            http,
            addresses,
            max_pages: settings.max_pages,
            max_response_bytes: settings.max_response_bytes,
            limits: Limits::default(),
            max_call_values: settings.max_call_values,
            room_size: settings.max_inflight_values,
            values_room: Arc::new(Semaphore::new(
                settings
                    .max_inflight_values
                    .min(Semaphore::MAX_PERMITS)
                    .max(settings.max_call_values.min(Semaphore::MAX_PERMITS)),
            )),
        })
    }

    /// A new budget for one call's fetching (see [`CallBudget`]).
    pub fn call_budget(&self) -> CallBudget {
        CallBudget {
            limit: self.max_call_values,
            room_size: self.room_size,
            used: AtomicUsize::new(0),
            room: self.values_room.clone(),
            held: Mutex::new(Vec::new()),
        }
    }

    /// The same client, bounding the shape of answers by `limits` instead of the defaults.
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// Run a query and collect its answer (see [`FhirClient::fetch_each`]).
    #[cfg(test)]
    pub async fn fetch(
        &self,
        base: &BaseUrl,
        auth: Option<&HeaderValue>,
        query: &Query,
        budget: &CallBudget,
    ) -> Result<Vec<Value>, Failure> {
        let mut pages = Vec::new();
        self.fetch_each(base, auth, query, budget, |page| pages.push(page))
            .await?;
        Ok(pages)
    }

    /// Run a query and hand each answer to `on_page` as it arrives: the resource of a read
    /// (nothing when there is none), or each page of a search, whose raw bytes are dropped
    /// before the next page is asked for, so a query holds one page at a time whatever the
    /// number of pages. `next` links are followed while they stay under `base`, up to the page
    /// bound. Returns the number of answers handed over.
    pub async fn fetch_each(
        &self,
        base: &BaseUrl,
        auth: Option<&HeaderValue>,
        query: &Query,
        budget: &CallBudget,
        mut on_page: impl FnMut(Value),
    ) -> Result<usize, Failure> {
        let mut pages = 0;
        let mut url = query.url.clone();
        loop {
            let response = self.get(url.clone(), auth).await?;
            let status = response.status();
            if query.kind == QueryKind::Read
                && matches!(status, StatusCode::NOT_FOUND | StatusCode::GONE)
            {
                return Ok(pages); // the read found nothing, like a `null` prefetch
            }
            check_status(status)?;
            let body = self.read_body(response).await?;
            // Count the values before parsing them, and take room for them.
            let values = limits::check_json(&body, &self.limits).map_err(|e| {
                Failure::new(
                    FailureKind::TooLarge,
                    Some(status),
                    format!("the FHIR server's answer has {e}"),
                )
            })?;
            budget
                .take(values)
                .await
                .map_err(|what| Failure::new(FailureKind::TooLarge, Some(status), what))?;
            let answer = query.read_answer(status, &body, &self.limits)?;
            drop(body);
            if let Some(value) = answer.value {
                pages += 1;
                on_page(value);
            }
            match query.kind {
                QueryKind::Read => return Ok(pages),
                QueryKind::Search => {
                    let Some(next) = answer.next else {
                        return Ok(pages);
                    };
                    if pages >= self.max_pages {
                        return Err(Failure::new(
                            FailureKind::TooLarge,
                            Some(status),
                            format!(
                                "more than {} pages of results (not all read)",
                                self.max_pages
                            ),
                        ));
                    }
                    // Relative links are resolved against the page they came from.
                    url = match url.join(&next) {
                        Ok(u) if base.contains(&u) => u,
                        _ => {
                            return Err(Failure::new(
                                FailureKind::Malformed,
                                Some(status),
                                "a next-page link leads outside the FHIR server (not followed)",
                            ));
                        }
                    };
                }
            }
        }
    }

    async fn get(&self, url: Url, auth: Option<&HeaderValue>) -> Result<Response, Failure> {
        // A literal address never reaches the resolver: judged here (`ServerPolicy::check` has
        // refused it already; this keeps the client safe on its own).
        if let (Some(policy), Some(ip)) = (self.addresses, host_ip(&url))
            && let Err(category) = policy.check(ip)
        {
            return Err(Failure::new(
                FailureKind::NotContacted,
                None,
                format!("the FHIR server's address is {category}: not contacted"),
            ));
        }
        let mut request = self
            .http
            .get(url)
            .header(ACCEPT, HeaderValue::from_static(FHIR_JSON));
        if let Some(auth) = auth {
            request = request.header(AUTHORIZATION, auth.clone());
        }
        request.send().await.map_err(|e| {
            let (kind, what) = send_failure(e);
            Failure::new(kind, None, what)
        })
    }

    /// The body, read chunk by chunk and abandoned as soon as it passes the size bound (a
    /// `Content-Length` over the bound is refused before reading anything).
    async fn read_body(&self, mut response: Response) -> Result<Vec<u8>, Failure> {
        let status = response.status();
        let limit = self.max_response_bytes;
        let too_large = || {
            Failure::new(
                FailureKind::TooLarge,
                Some(status),
                format!("the FHIR server's answer is larger than {limit} bytes"),
            )
        };
        let announced = response.content_length();
        if announced.is_some_and(|n| n > limit as u64) {
            return Err(too_large());
        }
        let initial = announced.map_or(16 * 1024, |n| usize::try_from(n).unwrap_or(limit));
        let mut body = Vec::with_capacity(initial.min(limit));
        loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    if body.len() + chunk.len() > limit {
                        return Err(too_large());
                    }
                    body.extend_from_slice(&chunk);
                }
                Ok(None) => return Ok(body),
                Err(e) => {
                    let (kind, what) = if e.is_timeout() {
                        (
                            FailureKind::Timeout,
                            "the FHIR server did not finish its answer in time",
                        )
                    } else {
                        (
                            FailureKind::Other,
                            "the FHIR server's answer could not be read",
                        )
                    };
                    return Err(Failure::new(kind, Some(status), what));
                }
            }
        }
    }
}

/// The precise cause of a request that got no answer, for the log: the kind, and the chain of
/// underlying errors (`tcp connect error: Connection refused (os error 111)`, a TLS error, a
/// refused address). The URL is dropped first: its query may hold patient ids.
fn send_failure(e: reqwest::Error) -> (FailureKind, String) {
    let e = e.without_url();
    let mut chain = Vec::new();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<RefusedAddress>() {
            return (
                FailureKind::NotContacted,
                format!("not contacted: {refused}"),
            );
        }
        chain.push(s.to_string());
        source = s.source();
    }
    let (kind, what) = if e.is_timeout() {
        (
            FailureKind::Timeout,
            "the FHIR server did not answer in time",
        )
    } else if e.is_connect() {
        (
            FailureKind::Unreachable,
            "the FHIR server could not be reached",
        )
    } else {
        (FailureKind::Other, "the request to the FHIR server failed")
    };
    if chain.is_empty() {
        (kind, what.to_owned())
    } else {
        (kind, format!("{what} ({})", chain.join(": ")))
    }
}

/// A 2xx passes; everything else is a failure, named for the log.
fn check_status(status: StatusCode) -> Result<(), Failure> {
    let code = status.as_u16();
    let (kind, what) = match code {
        200..=299 => return Ok(()),
        300..=399 => (
            FailureKind::Status,
            format!("the FHIR server answered {code} (redirects are not followed)"),
        ),
        401 | 403 => (
            FailureKind::Denied,
            format!("the FHIR server refused access ({code})"),
        ),
        _ => (
            FailureKind::Status,
            format!("the FHIR server answered {code}"),
        ),
    };
    Err(Failure::new(kind, Some(status), what))
}

/// The body must be a FHIR resource of the expected type (an OperationOutcome in a 200 is named
/// as such: servers use it to report errors).
fn check_resource(value: &Value, expected: &str, status: StatusCode) -> Result<(), Failure> {
    match value.get("resourceType").and_then(Value::as_str) {
        Some(t) if t == expected => Ok(()),
        Some("OperationOutcome") => Err(Failure::new(
            FailureKind::Malformed,
            Some(status),
            "the FHIR server answered with an OperationOutcome instead of data",
        )),
        Some(_) => Err(Failure::new(
            FailureKind::Malformed,
            Some(status),
            format!("the FHIR server's answer is not a {expected}"),
        )),
        None => Err(Failure::new(
            FailureKind::Malformed,
            Some(status),
            "the FHIR server's answer is not a FHIR resource",
        )),
    }
}

/// The Bundle's `next` link, if any.
fn next_link(bundle: &Value) -> Option<String> {
    bundle
        .get("link")?
        .as_array()?
        .iter()
        .find(|l| l.get("relation").and_then(Value::as_str) == Some("next"))?
        .get("url")?
        .as_str()
        .filter(|u| !u.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use wiremock::matchers::{method, path, query_param};
    use wiremock::{Mock, MockServer, ResponseTemplate};

    /// The policy of a service listening on loopback, without an allow-list (the mock servers
    /// are on loopback).
    const LOCAL: Option<AddressPolicy> = Some(AddressPolicy {
        allow_loopback: true,
    });

    fn settings(max_pages: usize) -> FhirSettings {
        FhirSettings {
            max_pages,
            max_response_bytes: 4096,
            ..FhirSettings::default()
        }
    }

    fn bundle(ids: &[&str], next: Option<String>) -> Value {
        let entries: Vec<Value> = ids
            .iter()
            .map(|id| json!({"resource": {"resourceType": "Condition", "id": id}}))
            .collect();
        let mut b = json!({"resourceType": "Bundle", "type": "searchset", "entry": entries});
        if let Some(n) = next {
            b["link"] = json!([{"relation": "self", "url": "x"}, {"relation": "next", "url": n}]);
        }
        b
    }

    async fn run(
        server: &MockServer,
        template: &str,
        max_pages: usize,
    ) -> Result<Vec<Value>, Failure> {
        let base = BaseUrl::parse(&format!("{}/fhir", server.uri())).unwrap();
        let q = Query::new("conditions", template, &base).unwrap();
        let client = FhirClient::new(&settings(max_pages), LOCAL).unwrap();
        client.fetch(&base, None, &q, &client.call_budget()).await
    }

    #[test]
    fn queries_know_reads_from_searches() {
        let base = BaseUrl::parse("https://ehr.example.org/fhir").unwrap();
        let q = Query::new("patient", "Patient/p1", &base).unwrap();
        assert_eq!(
            (q.kind, q.label().as_str()),
            (QueryKind::Read, "Patient read")
        );
        assert_eq!(q.url.as_str(), "https://ehr.example.org/fhir/Patient/p1");
        let q = Query::new("obs", "Observation?patient=p1", &base).unwrap();
        assert_eq!(
            (q.kind, q.label().as_str()),
            (QueryKind::Search, "Observation query")
        );
        assert_eq!(
            Query::new("c", "Coverage", &base).unwrap().kind,
            QueryKind::Search
        );
        assert!(Query::new("x", "../admin", &base).is_none());
        assert!(Query::new("x", "https://evil.example/x", &base).is_none());
    }

    #[tokio::test]
    async fn follows_next_links_on_the_same_server() {
        let server = MockServer::start().await;
        let page2 = format!("{}/fhir/Condition?page=2", server.uri());
        Mock::given(method("GET"))
            .and(path("/fhir/Condition"))
            .and(query_param("page", "2"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(&["c2"], None)))
            .expect(1)
            .mount(&server)
            .await;
        Mock::given(method("GET"))
            .and(path("/fhir/Condition"))
            .and(query_param("patient", "p1"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(&["c1"], Some(page2))))
            .expect(1)
            .mount(&server)
            .await;
        let pages = run(&server, "Condition?patient=p1", 20).await.unwrap();
        assert_eq!(pages.len(), 2);
    }

    #[tokio::test]
    async fn pages_are_bounded() {
        let server = MockServer::start().await;
        // every page points at the next one, forever
        let next = format!("{}/fhir/Condition?page=n", server.uri());
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(&["c"], Some(next))))
            .expect(3)
            .mount(&server)
            .await;
        let f = run(&server, "Condition?patient=p1", 3).await.unwrap_err();
        assert_eq!(f.what, "more than 3 pages of results (not all read)");
        assert_eq!(f.kind, FailureKind::TooLarge);
    }

    #[tokio::test]
    async fn next_links_outside_the_base_are_not_followed() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(
                &["c"],
                Some(format!("{}/other/Condition", server.uri())),
            )))
            .expect(1)
            .mount(&server)
            .await;
        let f = run(&server, "Condition?patient=p1", 20).await.unwrap_err();
        assert!(f.what.contains("outside the FHIR server"), "{}", f.what);
        assert_eq!(f.kind, FailureKind::Malformed);
    }

    #[tokio::test]
    async fn reads_that_find_nothing_are_no_data() {
        let server = MockServer::start().await;
        Mock::given(path("/fhir/Patient/gone"))
            .respond_with(ResponseTemplate::new(404))
            .mount(&server)
            .await;
        Mock::given(path("/fhir/Patient/null"))
            .respond_with(ResponseTemplate::new(200).set_body_string("null"))
            .mount(&server)
            .await;
        assert_eq!(run(&server, "Patient/gone", 20).await, Ok(vec![]));
        assert_eq!(run(&server, "Patient/null", 20).await, Ok(vec![]));
        // a 404 on a search is a failure, not "nothing"
        let f = run(&server, "Condition?patient=p1", 20).await.unwrap_err();
        assert_eq!(
            (f.status, f.what.as_str()),
            (Some(404), "the FHIR server answered 404")
        );
    }

    #[tokio::test]
    async fn bad_answers_are_named() {
        let server = MockServer::start().await;
        let cases: Vec<(&str, ResponseTemplate, &str)> = vec![
            (
                "a",
                ResponseTemplate::new(200).set_body_string("<html>"),
                "is not JSON",
            ),
            (
                "b",
                ResponseTemplate::new(200).set_body_json(json!({"x": 1})),
                "not a FHIR resource",
            ),
            (
                "c",
                ResponseTemplate::new(200)
                    .set_body_json(json!({"resourceType": "OperationOutcome"})),
                "OperationOutcome",
            ),
            (
                "d",
                ResponseTemplate::new(200).set_body_json(json!({"resourceType": "Patient"})),
                "not a Bundle",
            ),
            (
                "e",
                ResponseTemplate::new(200).set_body_string("x".repeat(5000)),
                "larger than 4096 bytes",
            ),
            (
                "f",
                ResponseTemplate::new(302).insert_header("location", "https://evil.example/"),
                "302 (redirects",
            ),
            ("g", ResponseTemplate::new(401), "refused access (401)"),
            ("h", ResponseTemplate::new(403), "refused access (403)"),
            ("i", ResponseTemplate::new(503), "answered 503"),
        ];
        for (id, response, _) in &cases {
            Mock::given(query_param("patient", *id))
                .respond_with(response.clone())
                .mount(&server)
                .await;
        }
        for (id, _, expected) in cases {
            let f = run(&server, &format!("Condition?patient={id}"), 20)
                .await
                .unwrap_err();
            assert!(f.what.contains(expected), "{id}: {}", f.what);
            let kind = match id {
                "e" => FailureKind::TooLarge,
                "f" | "i" => FailureKind::Status,
                "g" | "h" => FailureKind::Denied,
                _ => FailureKind::Malformed,
            };
            assert_eq!(f.kind, kind, "{id}");
        }
    }

    /// A hostile server: endless pages of small numbers. The call's value bound stops it and
    /// says which setting; the room it took is given back when the budget is dropped.
    #[tokio::test]
    async fn endless_pages_of_small_numbers_stop_at_the_call_budget() {
        let server = MockServer::start().await;
        let numbers = vec![1; 3000];
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(serde_json::json!({
                "resourceType": "Bundle", "type": "searchset", "x": numbers,
                "link": [{"relation": "next", "url": format!("{}/fhir/Condition?page=n", server.uri())}]})))
            .mount(&server)
            .await;
        let base = BaseUrl::parse(&format!("{}/fhir", server.uri())).unwrap();
        let q = Query::new("conditions", "Condition?patient=p1", &base).unwrap();
        let mut s = settings(1000);
        s.max_response_bytes = 1024 * 1024;
        s.max_call_values = 10_000;
        s.max_inflight_values = 10_000;
        let client = FhirClient::new(&s, LOCAL).unwrap();
        let budget = client.call_budget();
        let f = client.fetch(&base, None, &q, &budget).await.unwrap_err();
        assert!(
            f.what.contains("fhir.max_call_values = 10000"),
            "{}",
            f.what
        );
        assert!(budget.used() > 10_000 && budget.used() < 14_000);
        // What the failed call held is held until it is dropped, then free for the next.
        assert!(client.values_room.available_permits() < 10_000);
        drop(budget);
        assert_eq!(client.values_room.available_permits(), 10_000);
    }

    #[tokio::test]
    async fn calls_share_the_room_for_fetched_values() {
        let client = FhirClient::new(
            &FhirSettings {
                max_call_values: 1000,
                max_inflight_values: 1500,
                ..FhirSettings::default()
            },
            LOCAL,
        )
        .unwrap();
        let first = client.call_budget();
        first.take(1000).await.unwrap();
        let second = client.call_budget();
        // No room for the second call's page until the first call is done.
        let waiting = tokio::time::timeout(Duration::from_millis(200), second.take(800)).await;
        assert!(waiting.is_err(), "took room that another call holds");
        drop(first);
        tokio::time::timeout(Duration::from_millis(200), second.take(800))
            .await
            .expect("room once the first call is done")
            .unwrap();
        // A call that holds room never waits for more (no hold-and-wait among calls): it is
        // refused at once, naming the setting.
        let third = client.call_budget();
        third.take(500).await.unwrap();
        let refused = tokio::time::timeout(Duration::from_millis(200), third.take(300))
            .await
            .expect("refused at once, not after a wait");
        assert!(
            refused.unwrap_err().contains("fhir.max_inflight_values"),
            "names the setting"
        );
    }

    #[tokio::test]
    async fn an_unreachable_server_is_a_failure() {
        // bind then drop: nothing listens on that port any more
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let base = BaseUrl::parse(&format!("http://127.0.0.1:{port}/fhir")).unwrap();
        let q = Query::new("conditions", "Condition?patient=p1", &base).unwrap();
        let client = FhirClient::new(&settings(20), LOCAL).unwrap();
        let f = client
            .fetch(&base, None, &q, &client.call_budget())
            .await
            .unwrap_err();
        assert!(
            f.what.starts_with("the FHIR server could not be reached (")
                && f.what.contains("onnect"),
            "{}",
            f.what
        );
        assert!(!f.what.contains("patient=p1"), "{}", f.what);
        assert_eq!(f.kind, FailureKind::Unreachable);
    }

    /// A name that resolves to an address the policy refuses is never connected to: here
    /// `localhost` for a service that does not listen on loopback, against a live mock server
    /// that must see nothing. Also for a `next` link on such a server (same client, same
    /// resolver), and for a literal address (checked before sending).
    #[tokio::test]
    async fn a_name_resolving_to_a_refused_address_is_not_connected_to() {
        let server = MockServer::start().await;
        Mock::given(method("GET"))
            .respond_with(ResponseTemplate::new(200).set_body_json(bundle(&["c"], None)))
            .mount(&server)
            .await;
        let port = server.address().port();
        let closed = Some(AddressPolicy {
            allow_loopback: false,
        });
        let client = FhirClient::new(&settings(20), closed).unwrap();
        for base in [
            format!("http://localhost:{port}/fhir"),
            format!("http://127.0.0.1:{port}/fhir"),
            format!("http://[::ffff:127.0.0.1]:{port}/fhir"),
        ] {
            let base = BaseUrl::parse(&base).unwrap();
            let q = Query::new("conditions", "Condition?patient=p1", &base).unwrap();
            let f = client
                .fetch(&base, None, &q, &client.call_budget())
                .await
                .unwrap_err();
            assert!(
                f.what.contains("loopback") && f.what.contains("not contacted"),
                "{}",
                f.what
            );
            assert!(!f.what.contains("patient=p1"), "{}", f.what);
            assert_eq!(f.kind, FailureKind::NotContacted);
        }
        assert!(server.received_requests().await.unwrap().is_empty());
        // The same server, allowed: reached by name.
        let open = FhirClient::new(&settings(20), LOCAL).unwrap();
        let base = BaseUrl::parse(&format!("http://localhost:{port}/fhir")).unwrap();
        let q = Query::new("conditions", "Condition?patient=p1", &base).unwrap();
        assert!(
            open.fetch(&base, None, &q, &open.call_budget())
                .await
                .is_ok()
        );
    }

    #[test]
    fn answers_are_read_within_the_limits() {
        let base = BaseUrl::parse("https://ehr.example.org/fhir").unwrap();
        let search = Query::new("conditions", "Condition?patient=p1", &base).unwrap();
        let read = Query::new("patient", "Patient/p1", &base).unwrap();
        let limits = Limits {
            max_json_depth: 16,
            max_bundle_entries: 2,
            ..Limits::default()
        };
        let ok =
            |q: &Query, v: &Value| q.read_answer(StatusCode::OK, v.to_string().as_bytes(), &limits);
        let page = bundle(&["c1", "c2"], Some("Condition?page=2".into()));
        let a = ok(&search, &page).unwrap();
        assert_eq!(a.next.as_deref(), Some("Condition?page=2"));
        assert_eq!(a.value, Some(page));
        assert_eq!(
            ok(&read, &Value::Null).unwrap(),
            Answer {
                value: None,
                next: None
            }
        );
        assert!(
            ok(&read, &json!({"resourceType": "Patient", "id": "p1"}))
                .unwrap()
                .value
                .is_some()
        );
        let why = |r: Result<Answer, Failure>| r.unwrap_err().what;
        assert!(
            why(ok(&search, &bundle(&["a", "b", "c"], None))).contains("limits.max_bundle_entries")
        );
        // A full page plus search outcome entries is not over the limit.
        let mut full = bundle(&["a", "b"], None);
        for mode in ["outcome", "match"] {
            full["entry"]
                .as_array_mut()
                .unwrap()
                .push(json!({"search": {"mode": mode},
                "resource": {"resourceType": "OperationOutcome",
                    "issue": [{"severity": "information", "code": "informational"}]}}));
        }
        assert!(ok(&search, &full).is_ok());
        let mut nested = json!({"resourceType": "Condition"});
        for _ in 0..5 {
            nested = json!({"resourceType": "Condition", "contained": [nested]});
        }
        let deep = json!({"resourceType": "Bundle", "entry": [{"resource": nested}]});
        assert!(why(ok(&search, &deep)).contains("nested"));
        let mut v = json!(1);
        for _ in 0..20 {
            v = json!([v]);
        }
        let deep = json!({"resourceType": "Bundle", "x": v});
        assert!(why(ok(&search, &deep)).contains("limits.max_json_depth"));
        assert_eq!(
            why(search.read_answer(StatusCode::OK, b"{not json", &limits)),
            "the FHIR server's answer is not JSON"
        );
        assert!(why(ok(&read, &json!({"resourceType": "Bundle"}))).contains("not a Patient"));
    }
}
