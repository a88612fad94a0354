//! The `[fhir]` settings: how the service fetches what the client did not prefetch. Owned by
//! `gather` (as `auth` and `limits` own theirs), so gathering needs nothing of the rest of the
//! configuration.

use serde::Deserialize;

/// How the service fetches prefetch keys the client did not send (`[fhir]` in the file).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct FhirSettings {
    /// FHIR base URLs a request's `fhirServer` must lie under (prefix match at a path-segment
    /// boundary); listed servers are reached at whatever address they have. Empty: any https
    /// server at a public address, http only to a loopback host, loopback only when the service
    /// listens on loopback (see `gather::addresses`; a warning is logged at start-up; set this
    /// in production so the service cannot be used as an open proxy).
    pub allowed_base_urls: Vec<String>,
    /// One deadline, in milliseconds, for all fetching in one call (CDS Hooks asks for answers
    /// "on the order of 500 ms"; the EHR will not wait long).
    pub timeout_ms: u64,
    /// Time allowed to open a connection, in milliseconds (never more than `timeout_ms`).
    pub connect_timeout_ms: u64,
    /// Most search result pages followed per query (`next` links); more is a failure.
    pub max_pages: usize,
    /// Largest response body accepted from the FHIR server, in bytes (checked while reading).
    pub max_response_bytes: usize,
    /// Most Conditions named by the IORT orders' `reasonReference` that are read by id in one
    /// call (those the record lacks after prefetch and fetching; see `gather::reasons`). More
    /// are noted as not read. 0 turns reading them off.
    pub max_reason_fetches: usize,
    /// Most JSON values read from the FHIR server in one call, over all queries and pages.
    /// Parsed, a value costs 30-80 bytes however few bytes it takes in the answer: this, not
    /// the bytes, bounds what a call's fetched record costs (a server sending pages of small
    /// numbers took one call past 1 GB). More: `indeterminate`, the record too large.
    pub max_call_values: usize,
    /// Most JSON values read from FHIR servers and held at once by all calls together
    /// (process-wide). A call waits, within its deadline, for room; at least
    /// `max_call_values`, so one largest call can always run.
    pub max_inflight_values: usize,
    /// Use the proxy named by `HTTPS_PROXY` / `HTTP_PROXY` / `NO_PROXY`. Off by default so a
    /// stray variable cannot route bearer tokens through an unexpected host. Needs
    /// `allowed_base_urls`: through a proxy the service never sees the address a server name
    /// leads to, so it cannot keep to public addresses itself.
    pub use_system_proxy: bool,
}

impl Default for FhirSettings {
    fn default() -> Self {
        Self {
            allowed_base_urls: Vec::new(),
            timeout_ms: 3000,
            connect_timeout_ms: 1000,
            max_pages: 20,
            max_response_bytes: 8 * 1024 * 1024,
            max_reason_fetches: 8,
            // Far above a real record at `limits.max_record_resources` (BENCHMARKS.md).
            max_call_values: 1_000_000,
            max_inflight_values: 2_000_000,
            use_system_proxy: false,
        }
    }
}

impl FhirSettings {
    /// Checks that cannot be expressed in types: the setting (as named in the file) and what
    /// is wrong with it.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let invalid = |setting, message: String| Err((setting, message));
        if let Err(message) = super::allow_list::ServerPolicy::new(&self.allowed_base_urls) {
            return invalid("fhir.allowed_base_urls", message);
        }
        if self.use_system_proxy && self.allowed_base_urls.is_empty() {
            return invalid(
                "fhir.use_system_proxy",
                "needs fhir.allowed_base_urls: through a proxy the service cannot see which \
                 address a FHIR server's name leads to, so only listed servers may be named"
                    .to_owned(),
            );
        }
        if !(1..=60_000).contains(&self.timeout_ms) {
            return invalid("fhir.timeout_ms", "must be between 1 and 60000".to_owned());
        }
        if !(1..=60_000).contains(&self.connect_timeout_ms) {
            return invalid(
                "fhir.connect_timeout_ms",
                "must be between 1 and 60000".to_owned(),
            );
        }
        if !(1..=1000).contains(&self.max_pages) {
            return invalid("fhir.max_pages", "must be between 1 and 1000".to_owned());
        }
        if self.max_response_bytes < 1024 {
            return invalid(
                "fhir.max_response_bytes",
                "must be at least 1024".to_owned(),
            );
        }
        if self.max_call_values < 1000 {
            return invalid("fhir.max_call_values", "must be at least 1000".to_owned());
        }
        if self.max_inflight_values < self.max_call_values
            || u32::try_from(self.max_inflight_values).is_err()
        {
            return invalid(
                "fhir.max_inflight_values",
                "must be at least fhir.max_call_values and at most 4294967295".to_owned(),
            );
        }
        if self.max_reason_fetches > 100 {
            return invalid(
                "fhir.max_reason_fetches",
                "must be between 0 and 100".to_owned(),
            );
        }
        Ok(())
    }
}
