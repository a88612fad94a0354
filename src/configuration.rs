//! Settings, layered: embedded defaults < TOML file (`--config`) < environment
//! (`IORT_CDS_*`) < command-line flags.
//!
//! clap reads each flag or its environment variable (so flags already beat the environment);
//! [`Settings::load`] lays those over the file, which is laid over [`Settings::default`]. Every
//! setting lives in the file; the ones an operator changes most also have a flag and a variable.
//! Unknown keys in the file are an error, so a typo cannot silently fall back to a default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::auth::AuthSettings;
use crate::facts::MarginThresholds;
use crate::limits::Limits;

pub use crate::telemetry::LogFormat;

/// The coverage policy's configurable thresholds.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PolicySettings {
    /// A distance from tumour to the closest margin at or below this (mm) counts as a positive
    /// margin (CAP: a circumferential resection margin of 1 mm or less is positive).
    pub positive_margin_mm: f64,
    /// Above `positive_margin_mm` and at or below this (mm): a close margin. Above: clear.
    pub close_margin_mm: f64,
}

impl Default for PolicySettings {
    fn default() -> Self {
        let t = MarginThresholds::default();
        Self {
            positive_margin_mm: t.positive_max_mm,
            close_margin_mm: t.close_max_mm,
        }
    }
}

impl PolicySettings {
    pub fn thresholds(&self) -> MarginThresholds {
        MarginThresholds {
            positive_max_mm: self.positive_margin_mm,
            close_max_mm: self.close_margin_mm,
        }
    }
}

/// All settings of a running service.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Settings {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter (tracing `EnvFilter` syntax); `RUST_LOG` overrides it.
    pub log_level: String,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// Browser origins allowed by CORS: `["*"]` any origin (never `null`), `[]` none. Unset:
    /// any origin when the service is reachable from this machine only, none beyond (see
    /// `http::cors::CorsPolicy`).
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Folder whose files override the embedded `fhir-profiles/`.
    pub profiles_dir: Option<PathBuf>,
    /// Folder whose files override the embedded `cards/`.
    pub cards_dir: Option<PathBuf>,
    /// The externally visible base URL (e.g. `https://cds.example.org`), for deployments behind a
    /// proxy; used for the JWT `aud` check. Default: the request's own scheme and host.
    pub public_base_url: Option<String>,
    /// HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// Threads that run the calls themselves, shared by all HTTP workers (default: one per
    /// core); see `http::compute`.
    pub call_threads: Option<usize>,
    /// Seconds to finish in-flight requests on SIGTERM / Ctrl-C.
    pub shutdown_timeout_secs: u64,
    /// Coverage policy thresholds.
    pub policy: PolicySettings,
    /// Who may call: trusted JWT issuers (`[[auth.issuers]]`) and token checks.
    pub auth: AuthSettings,
    /// Serve without authentication on a non-loopback address (never in production).
    pub insecure_no_auth: bool,
    /// Fetching what prefetch lacks from the EHR's FHIR server (`[fhir]`).
    pub fhir: FhirSettings,
    /// Bounds on the shape of request bodies and FHIR answers (`[limits]`): JSON depth, string
    /// length, Bundle entries, resources per record. See [`crate::limits`].
    pub limits: Limits,
    /// The audit store (`[store]`): see [`crate::store`].
    pub store: StoreSettings,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            log_format: LogFormat::Text,
            log_level: "info".to_owned(),
            max_body_bytes: 8 * 1024 * 1024,
            cors_allowed_origins: None,
            profiles_dir: None,
            cards_dir: None,
            public_base_url: None,
            workers: None,
            call_threads: None,
            shutdown_timeout_secs: 10,
            policy: PolicySettings::default(),
            auth: AuthSettings::default(),
            insecure_no_auth: false,
            fhir: FhirSettings::default(),
            limits: Limits::default(),
            store: StoreSettings::default(),
        }
    }
}

pub use crate::gather::settings::FhirSettings;
pub use crate::store::settings::StoreSettings;

/// Why the settings cannot be used. Names the file or the setting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid setting `{setting}`: {message}")]
    Invalid {
        setting: &'static str,
        message: String,
    },
}

/// Values given on the command line or in the environment; `None` means "not given".
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub log_format: Option<LogFormat>,
    pub log_level: Option<String>,
    pub max_body_bytes: Option<usize>,
    pub cors_allowed_origins: Option<Vec<String>>,
    pub profiles_dir: Option<PathBuf>,
    pub cards_dir: Option<PathBuf>,
    pub public_base_url: Option<String>,
    pub workers: Option<usize>,
    pub close_margin_mm: Option<f64>,
    pub insecure_no_auth: bool,
    pub store_url: Option<String>,
}

impl Settings {
    /// Whether only processes on this machine can reach the service as configured (see
    /// [`crate::reach`]): `listen` on loopback and no `public_base_url` on another host.
    pub fn local_only(&self) -> bool {
        crate::reach::loopback_only(
            &[self.listen],
            self.public_base_url
                .as_deref()
                .or(self.auth.public_base_url.as_deref()),
        )
    }

    /// Defaults, then the file (if any), then the overrides; validated.
    pub fn load(file: Option<&Path>, overrides: Overrides) -> Result<Self, ConfigError> {
        let mut s = match file {
            Some(path) => Self::from_file(path)?,
            None => Settings::default(),
        };
        let o = overrides;
        macro_rules! lay {
            ($($field:ident),*) => { $( if let Some(v) = o.$field { s.$field = v; } )* };
        }
        lay!(listen, log_format, log_level, max_body_bytes);
        if let Some(origins) = o.cors_allowed_origins {
            // `--cors-origins ""` (or the variable set empty) means no origin.
            s.cors_allowed_origins = Some(
                origins
                    .into_iter()
                    .filter(|o| !o.trim().is_empty())
                    .collect(),
            );
        }
        if o.workers.is_some() {
            s.workers = o.workers;
        }
        if o.profiles_dir.is_some() {
            s.profiles_dir = o.profiles_dir;
        }
        if o.cards_dir.is_some() {
            s.cards_dir = o.cards_dir;
        }
        if o.public_base_url.is_some() {
            s.public_base_url = o.public_base_url;
        }
        if let Some(v) = o.close_margin_mm {
            s.policy.close_margin_mm = v;
        }
        s.insecure_no_auth |= o.insecure_no_auth;
        if o.store_url.is_some() {
            s.store.url = o.store_url;
        }
        // One public base URL serves both the JWT audience and anything else that needs it.
        if s.public_base_url.is_some() {
            s.auth.public_base_url = s.public_base_url.clone();
        }
        s.validate()?;
        Ok(s)
    }

    fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// Checks that cannot be expressed in types.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |setting, message: &str| {
            Err(ConfigError::Invalid {
                setting,
                message: message.to_owned(),
            })
        };
        if self.max_body_bytes < 1024 {
            return invalid("max_body_bytes", "must be at least 1024");
        }
        for origin in self.cors_allowed_origins.iter().flatten() {
            if let Err(why) = check_origin(origin) {
                return invalid("cors_allowed_origins", &why);
            }
        }
        let p = &self.policy;
        if !(p.positive_margin_mm.is_finite() && p.positive_margin_mm >= 0.0) {
            return invalid("policy.positive_margin_mm", "must be a number >= 0");
        }
        if !(p.close_margin_mm.is_finite() && p.close_margin_mm >= p.positive_margin_mm) {
            return invalid(
                "policy.close_margin_mm",
                "must be a number >= policy.positive_margin_mm",
            );
        }
        if let Some(url) = &self.public_base_url
            && !(url.starts_with("https://") || url.starts_with("http://"))
        {
            return invalid("public_base_url", "must start with https:// or http://");
        }
        self.auth.validate().map_err(|e| ConfigError::Invalid {
            setting: "auth",
            message: e.to_string(),
        })?;
        if self.workers == Some(0) {
            return invalid("workers", "must be at least 1");
        }
        if self.call_threads == Some(0) {
            return invalid("call_threads", "must be at least 1");
        }
        self.fhir
            .validate()
            .map_err(|(setting, message)| ConfigError::Invalid { setting, message })?;
        self.limits
            .validate()
            .map_err(|(setting, message)| ConfigError::Invalid { setting, message })?;
        self.store
            .validate()
            .map_err(|(setting, message)| ConfigError::Invalid { setting, message })?;
        if self.limits.max_inflight_body_bytes < self.max_body_bytes {
            return invalid(
                "limits.max_inflight_body_bytes",
                "must be at least max_body_bytes (one largest request must fit)",
            );
        }
        Ok(())
    }
}

/// A value of `cors_allowed_origins`: `*`, or an origin (`scheme://host[:port]`, no path).
/// `null` is refused: it would let any sandboxed page in.
fn check_origin(origin: &str) -> Result<(), String> {
    if origin == "*" {
        return Ok(());
    }
    if origin.eq_ignore_ascii_case("null") {
        return Err(
            "\"null\" is not an origin a service may trust (any sandboxed page or \
                    local file sends it)"
                .to_owned(),
        );
    }
    let url = reqwest::Url::parse(origin)
        .map_err(|_| "each origin must be \"*\" or scheme://host[:port]".to_owned())?;
    if !matches!(url.scheme(), "https" | "http")
        || url.host().is_none()
        || !url.path().trim_end_matches('/').is_empty()
        || url.query().is_some()
        || !url.username().is_empty()
    {
        return Err("each origin must be \"*\" or scheme://host[:port], without a path".to_owned());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(text: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("iort-cfg-{}.toml", uuid::Uuid::new_v4()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn defaults_listen_on_loopback_8080() {
        let s = Settings::load(None, Overrides::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(s.max_body_bytes, 8 * 1024 * 1024);
        assert_eq!(s.policy.thresholds(), MarginThresholds::default());
    }

    #[test]
    fn file_beats_defaults_and_overrides_beat_file() {
        let p = write(
            "listen = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n[policy]\nclose_margin_mm = 3.0\n",
        );
        let s = Settings::load(Some(&p), Overrides::default()).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.log_level, "debug");
        assert_eq!(s.policy.close_margin_mm, 3.0);
        let o = Overrides {
            listen: Some("127.0.0.1:9100".parse().unwrap()),
            ..Default::default()
        };
        let s = Settings::load(Some(&p), o).unwrap();
        assert_eq!(s.listen.port(), 9100);
        assert_eq!(s.log_level, "debug", "file value kept where no override");
        std::fs::remove_file(p).unwrap();
    }

    #[test]
    fn unknown_keys_and_bad_values_are_named() {
        // Each file is refused, and the error names the key at fault.
        let cases = [
            ("lisen = \"x\"\n", "lisen"),
            (
                "[policy]\npositive_margin_mm = 3.0\nclose_margin_mm = 2.0\n",
                "policy.close_margin_mm",
            ),
            ("call_threads = 0\n", "call_threads"),
            ("[store]\nurl = \"mysql://db/x\"\n", "store.url"),
            ("[store]\nqueue_capacity = 0\n", "store.queue_capacity"),
            // the in-flight budget must hold at least one largest body
            (
                "max_body_bytes = 65536\n[limits]\nmax_inflight_body_bytes = 65535\n",
                "limits.max_inflight_body_bytes",
            ),
        ];
        for (text, named) in cases {
            let p = write(text);
            let e = Settings::load(Some(&p), Overrides::default()).unwrap_err();
            std::fs::remove_file(p).unwrap();
            assert!(e.to_string().contains(named), "{text:?}: {e}");
        }
    }

    #[test]
    fn missing_file_is_named() {
        let e = Settings::load(Some(Path::new("/nonexistent/x.toml")), Overrides::default())
            .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"));
    }

    #[test]
    fn fhir_settings_have_defaults_and_named_errors() {
        let s = Settings::load(None, Overrides::default()).unwrap();
        assert_eq!(s.fhir, FhirSettings::default());
        assert_eq!(s.fhir.timeout_ms, 3000);
        assert_eq!(s.fhir.max_pages, 20);
        assert_eq!(s.fhir.max_response_bytes, 8 * 1024 * 1024);
        assert_eq!(s.fhir.max_reason_fetches, 8);
        let p = write(
            "[fhir]\nallowed_base_urls = [\"https://ehr.example.org/fhir\"]\ntimeout_ms = 1500\n",
        );
        let s = Settings::load(Some(&p), Overrides::default()).unwrap();
        assert_eq!(
            s.fhir.allowed_base_urls,
            vec!["https://ehr.example.org/fhir".to_owned()]
        );
        assert_eq!(s.fhir.timeout_ms, 1500);
        std::fs::remove_file(p).unwrap();
        for (text, setting) in [
            (
                "[fhir]\nallowed_base_urls = [\"https://u:pw@ehr.example.org\"]\n",
                "fhir.allowed_base_urls",
            ),
            (
                "[fhir]\nallowed_base_urls = [\"ftp://ehr.example.org\"]\n",
                "fhir.allowed_base_urls",
            ),
            ("[fhir]\ntimeout_ms = 0\n", "fhir.timeout_ms"),
            (
                "[fhir]\nconnect_timeout_ms = 0\n",
                "fhir.connect_timeout_ms",
            ),
            ("[fhir]\nmax_pages = 0\n", "fhir.max_pages"),
            (
                "[fhir]\nmax_response_bytes = 10\n",
                "fhir.max_response_bytes",
            ),
            ("[fhir]\nmax_page = 3\n", "max_page"),
            ("[fhir]\nuse_system_proxy = true\n", "fhir.use_system_proxy"),
            (
                "[fhir]\nmax_reason_fetches = 101\n",
                "fhir.max_reason_fetches",
            ),
        ] {
            let p = write(text);
            let e = Settings::load(Some(&p), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(setting), "{text}: {e}");
            assert!(!e.contains("pw@"), "{e}");
            std::fs::remove_file(p).unwrap();
        }
    }
}
