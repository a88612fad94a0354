//! Operational metrics, scraped by Prometheus at `GET /metrics`.
//!
//! Why this shape:
//!
//! - **The crate.** `prometheus-client`, the Prometheus project's own Rust client for the
//!   OpenMetrics data model: small (itoa, dtoa, parking_lot and a derive-macro crate of its
//!   own; no global state, no default registry), and it encodes both the OpenMetrics text
//!   format and the older Prometheus text format 0.0.4 that every scraper reads. `/metrics`
//!   answers OpenMetrics when the scraper's `Accept` names `application/openmetrics-text`
//!   (Prometheus does) and 0.0.4 otherwise (curl, older agents).
//! - **One registry per application, not per process.** [`Metrics`] is built at start-up
//!   ([`install`]) and shared as actix app data, so several applications in one process (the
//!   integration tests start many) each count their own calls.
//! - **Labels from a small fixed set, never from the request.** A label is a time series per
//!   value, and it is stored and shown wherever the metrics go. So the service label is one of
//!   the ids in discovery, any other id folding into `unknown` (a caller cannot create series
//!   by inventing ids); outcomes, `covered` codes and fetch-failure kinds are `&'static str`
//!   from enums. No label ever holds a patient id, a code value, a token or a FHIR server's
//!   address. The hot path allocates nothing for labels: a service label is an `Arc<str>`
//!   built once, the rest are static strings.
//! - **Counted at the edge.** Calls are counted and timed by a middleware
//!   ([`observe_calls`]) around the routes and inside CORS, just outside client
//!   authentication, so a 401 is counted like any other refusal, and the time is what the
//!   client waited for (body reading included). The orders' `covered` codes come from the
//!   route ([`Metrics::orders_assessed`]), which holds the pipeline's answer; FHIR fetch
//!   failures from the gatherer ([`Metrics::fhir_fetch_failed`]), which alone knows them.
//! - **Unauthenticated, like the probes.** Scrapers do not sign CDS Hooks JWTs. The numbers
//!   say how busy the service is and how its FHIR servers behave, nothing about a patient;
//!   still, expose the port only where the scrapers are (a bind address or a firewall), or
//!   turn the endpoint off (`metrics.enabled = false`), which also stops all counting.

use std::sync::Arc;
use std::time::Duration;

use actix_web::http::StatusCode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Deserialize;

/// Every metric's name starts with this.
pub const PREFIX: &str = "iort_cds";

/// The path scraped.
pub const PATH: &str = "/metrics";

/// The service label of a call to an id that is not in discovery.
const UNKNOWN_SERVICE: &str = "unknown";

/// Upper bounds (seconds) of the call-latency buckets: 1 ms to 10 s. An answer from prefetch
/// takes a few milliseconds, one that fetches from the EHR up to `fhir.timeout_ms` (10 s by
/// default); anything slower lands in `+Inf`.
const LATENCY_BUCKETS: [f64; 13] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// `[metrics]` in the configuration file.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsSettings {
    /// Serve `GET /metrics` and count (default). Off: no endpoint (404) and nothing counted.
    pub enabled: bool,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        Self { enabled: true }
    }
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    service: Arc<str>,
    /// `answered`, `rejected` or `failed` ([`call_outcome`]).
    outcome: &'static str,
    /// `2xx`, `4xx`, `5xx`.
    status: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct LatencyLabels {
    service: Arc<str>,
    outcome: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OrderLabels {
    service: Arc<str>,
    /// The CRD `covered` code: `covered`, `not-covered`, `conditional`, `indeterminate`.
    covered: &'static str,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FetchLabels {
    /// `gather::fhir_client::FailureKind::as_str`.
    kind: &'static str,
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

struct Inner {
    registry: Registry,
    /// The service ids in discovery, as labels.
    services: Vec<Arc<str>>,
    unknown: Arc<str>,
    calls: Family<CallLabels, Counter>,
    latency: Family<LatencyLabels, Histogram, fn() -> Histogram>,
    orders: Family<OrderLabels, Counter>,
    fetch_failures: Family<FetchLabels, Counter>,
    store_queue_depth: Gauge,
    store_write_failures: Counter,
}

/// The application's metrics and their registry. Cloning is cheap (shared).
#[derive(Clone)]
pub struct Metrics {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("services", &self.inner.services)
            .finish_non_exhaustive()
    }
}

impl Metrics {
    /// A registry with every metric, for the services with these ids (any other id is counted
    /// as `unknown`).
    pub fn new<'a>(service_ids: impl IntoIterator<Item = &'a str>) -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let calls = Family::<CallLabels, Counter>::default();
        registry.register(
            "calls",
            "Calls to the CDS services, by service id (unknown ids as `unknown`), outcome \
             (answered, rejected, failed: a 500) and HTTP status class",
            calls.clone(),
        );
        let latency = Family::new_with_constructor(latency_histogram as fn() -> Histogram);
        registry.register_with_unit(
            "call_duration",
            "Time from a call's arrival to its answer (body reading included), by service id \
             and outcome",
            Unit::Seconds,
            latency.clone(),
        );
        let orders = Family::<OrderLabels, Counter>::default();
        registry.register(
            "orders_assessed",
            "IORT orders assessed in answered order-sign and order-select calls, by service \
             id and CRD covered code",
            orders.clone(),
        );
        let fetch_failures = Family::<FetchLabels, Counter>::default();
        registry.register(
            "fhir_fetch_failures",
            "Queries to an EHR's FHIR server (missing prefetch keys, orders' reason \
             Conditions) that gave no usable answer, by kind",
            fetch_failures.clone(),
        );
        let store_queue_depth = Gauge::default();
        registry.register(
            "store_queue_depth",
            "Audit records waiting to be written to the store",
            store_queue_depth.clone(),
        );
        let store_write_failures = Counter::default();
        registry.register(
            "store_write_failures",
            "Audit records the store failed to write",
            store_write_failures.clone(),
        );
        Self {
            inner: Arc::new(Inner {
                registry,
                services: service_ids.into_iter().map(Arc::from).collect(),
                unknown: Arc::from(UNKNOWN_SERVICE),
                calls,
                latency,
                orders,
                fetch_failures,
                store_queue_depth,
                store_write_failures,
            }),
        }
    }

    /// The label of a service id: the id if discovery has it, else `unknown`.
    pub(crate) fn service(&self, id: &str) -> Arc<str> {
        let inner = &self.inner;
        inner
            .services
            .iter()
            .find(|s| &***s == id)
            .unwrap_or(&inner.unknown)
            .clone()
    }

    /// Count one call to service `id`, answered with `status` after `elapsed`.
    pub fn count_call(&self, id: &str, status: StatusCode, elapsed: Duration) {
        self.count_service_call(self.service(id), status, elapsed);
    }

    pub(crate) fn count_service_call(
        &self,
        service: Arc<str>,
        status: StatusCode,
        elapsed: Duration,
    ) {
        let outcome = call_outcome(status);
        self.inner
            .latency
            .get_or_create(&LatencyLabels {
                service: service.clone(),
                outcome,
            })
            .observe(elapsed.as_secs_f64());
        self.inner
            .calls
            .get_or_create(&CallLabels {
                service,
                outcome,
                status: status_class(status),
            })
            .inc();
    }

    /// Count the orders of an answered call by their CRD `covered` codes.
    pub fn orders_assessed(&self, id: &str, covered: impl IntoIterator<Item = &'static str>) {
        let mut covered = covered.into_iter().peekable();
        if covered.peek().is_none() {
            return;
        }
        let service = self.service(id);
        for code in covered {
            self.inner
                .orders
                .get_or_create(&OrderLabels {
                    service: service.clone(),
                    covered: code,
                })
                .inc();
        }
    }

    /// Show these FHIR fetch-failure kinds from the start, at 0: a rate needs a series before
    /// its first increase, and an operator sees which kinds exist.
    pub fn fhir_fetch_kinds(&self, kinds: impl IntoIterator<Item = &'static str>) {
        for kind in kinds {
            drop(
                self.inner
                    .fetch_failures
                    .get_or_create(&FetchLabels { kind }),
            );
        }
    }

    /// Count a query to a FHIR server that gave no usable answer, by its kind.
    pub fn fhir_fetch_failed(&self, kind: &'static str) {
        self.inner
            .fetch_failures
            .get_or_create(&FetchLabels { kind })
            .inc();
    }

    /// What the audit store reports, read when scraped: the records waiting to be written, and
    /// its running total of failed writes (the counter is advanced to it; it never goes back).
    pub fn observe_store(&self, queue_depth: usize, write_failures: u64) {
        self.inner
            .store_queue_depth
            .set(i64::try_from(queue_depth).unwrap_or(i64::MAX));
        let counted = self.inner.store_write_failures.get();
        if write_failures > counted {
            self.inner
                .store_write_failures
                .inc_by(write_failures - counted);
        }
    }

    /// The exposition: OpenMetrics text when `openmetrics`, else Prometheus text 0.0.4; with
    /// its content type.
    pub fn encode(&self, openmetrics: bool) -> Result<(String, &'static str), std::fmt::Error> {
        use prometheus_client::encoding::{prometheus_text, text};
        let mut body = String::with_capacity(8 * 1024);
        if openmetrics {
            text::encode(&mut body, &self.inner.registry)?;
            Ok((
                body,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            ))
        } else {
            prometheus_text::encode(&mut body, &self.inner.registry)?;
            Ok((body, prometheus_text::CONTENT_TYPE))
        }
    }
}

/// `answered` (2xx), `failed` (500: a bug, see `http::routes::guarded`) or `rejected`
/// (anything else: the request was refused, or could not be taken now).
fn call_outcome(status: StatusCode) -> &'static str {
    if status.is_success() {
        "answered"
    } else if status == StatusCode::INTERNAL_SERVER_ERROR {
        "failed"
    } else {
        "rejected"
    }
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() / 100 {
        1 => "1xx",
        2 => "2xx",
        3 => "3xx",
        4 => "4xx",
        _ => "5xx",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(m: &Metrics) -> String {
        m.encode(false).expect("encodes").0
    }

    #[test]
    fn outcomes_and_status_classes_follow_the_status() {
        let cases = [
            (200, "answered", "2xx"),
            (400, "rejected", "4xx"),
            (401, "rejected", "4xx"),
            (503, "rejected", "5xx"),
            (500, "failed", "5xx"),
        ];
        for (code, outcome, class) in cases {
            let s = StatusCode::from_u16(code).unwrap();
            assert_eq!(
                (call_outcome(s), status_class(s)),
                (outcome, class),
                "{code}"
            );
        }
    }

    #[test]
    fn ids_not_in_discovery_fold_into_one_label() {
        let m = Metrics::new(["svc-a", "svc-b"]);
        let ms = Duration::from_millis(3);
        m.count_call("svc-a", StatusCode::OK, ms);
        m.count_call("patient-123", StatusCode::NOT_FOUND, ms);
        m.count_call("svc-a-", StatusCode::NOT_FOUND, ms);
        let t = text(&m);
        assert!(
            t.contains(
                "iort_cds_calls_total{service=\"svc-a\",outcome=\"answered\",status=\"2xx\"} 1\n"
            ),
            "{t}"
        );
        assert!(
            t.contains(
                "iort_cds_calls_total{service=\"unknown\",outcome=\"rejected\",status=\"4xx\"} 2\n"
            ),
            "{t}"
        );
        assert!(!t.contains("patient-123") && !t.contains("svc-a-\""), "{t}");
        assert!(
            t.contains(concat!(
                "iort_cds_call_duration_seconds_bucket",
                "{service=\"svc-a\",outcome=\"answered\",le=\"0.005\"} 1\n"
            )),
            "{t}"
        );
    }

    #[test]
    fn orders_and_fetch_failures_are_counted_by_their_codes() {
        let m = Metrics::new(["svc"]);
        m.orders_assessed("svc", ["covered", "not-covered"]);
        m.orders_assessed("svc", ["covered"]);
        m.fhir_fetch_kinds(["timeout", "status"]);
        m.fhir_fetch_failed("timeout");
        let t = text(&m);
        assert!(
            t.contains("iort_cds_orders_assessed_total{service=\"svc\",covered=\"covered\"} 2\n"),
            "{t}"
        );
        assert!(
            t.contains(
                "iort_cds_orders_assessed_total{service=\"svc\",covered=\"not-covered\"} 1\n"
            ),
            "{t}"
        );
        assert!(t.contains("iort_cds_fhir_fetch_failures_total{kind=\"timeout\"} 1\n"));
        assert!(
            t.contains("iort_cds_fhir_fetch_failures_total{kind=\"status\"} 0\n"),
            "a kind is shown before it happens: {t}"
        );
    }

    #[test]
    fn the_store_feeds_its_gauge_and_counter() {
        let m = Metrics::new(["svc"]);
        m.observe_store(7, 2);
        let t = text(&m);
        assert!(t.contains("iort_cds_store_queue_depth 7\n"), "{t}");
        assert!(t.contains("iort_cds_store_write_failures_total 2\n"), "{t}");
        m.observe_store(0, 2);
        let t = text(&m);
        assert!(t.contains("iort_cds_store_queue_depth 0\n"), "{t}");
        assert!(t.contains("iort_cds_store_write_failures_total 2\n"), "{t}");
        m.observe_store(0, 5);
        assert!(text(&m).contains("iort_cds_store_write_failures_total 5\n"));
    }

    #[test]
    fn openmetrics_ends_with_eof() {
        let (t, content_type) = Metrics::new(["svc"]).encode(true).unwrap();
        assert!(t.ends_with("# EOF\n"), "{t}");
        assert!(content_type.starts_with("application/openmetrics-text"));
    }
}
