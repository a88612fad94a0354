//! Settings, layered: embedded defaults < TOML file (`--config`) < environment
//! (`IORT_CDS_*`) < command-line flags.
//!
//! clap reads each flag or its environment variable (so flags already beat the environment),
//! described once in [`Overrides`]; [`Settings::load`] lays those over the file, which is laid
//! over [`Settings::default`]. Every setting lives in the file; the ones an operator changes
//! most also have a flag and a variable.
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
    /// The Prometheus endpoint `/metrics` (`[metrics]`), see [`crate::metrics`].
    pub metrics: crate::metrics::MetricsSettings,
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
            metrics: crate::metrics::MetricsSettings::default(),
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

/// Settings given on the command line or in the environment, laid over the file by
/// [`Settings::load`]. clap reads each flag or, when the flag is absent, its variable (named in
/// the flag's attribute), so this is the one description of a setting's flag and variable;
/// [`Overrides::apply`] lays it over the settings. `None` / `false`: not given.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct Overrides {
    #[command(flatten)]
    pub common: CommonOverrides,
    #[command(flatten)]
    pub serve: ServeOverrides,
}

/// Settings every command reads (`serve` and `evaluate`).
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
pub struct CommonOverrides {
    /// Log filter, e.g. `info` or `iort_cds=debug` (RUST_LOG overrides it).
    #[arg(long, global = true, env = "IORT_CDS_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Log line format.
    #[arg(long, global = true, env = "IORT_CDS_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Folder whose files override the embedded fhir-profiles/ (value sets, schemas, policy).
    #[arg(long, global = true, env = "IORT_CDS_PROFILES_DIR", value_name = "DIR")]
    pub profiles_dir: Option<PathBuf>,
    /// Folder whose files override the embedded cards/ (card templates).
    #[arg(long, global = true, env = "IORT_CDS_CARDS_DIR", value_name = "DIR")]
    pub cards_dir: Option<PathBuf>,
    /// Distance to the closest margin (mm) up to which a margin counts as close (default 2).
    #[arg(
        long,
        global = true,
        env = "IORT_CDS_CLOSE_MARGIN_MM",
        value_name = "MM"
    )]
    pub close_margin_mm: Option<f64>,
    /// The audit store's database: `sqlite:///path/file.db` or `postgres://user@host/db`
    /// (default: `iort-cds.db` in the working directory).
    #[arg(long, global = true, env = "IORT_CDS_STORE_URL", value_name = "URL")]
    pub store_url: Option<String>,
}

/// Settings only a running service reads: `evaluate` refuses them rather than ignore them.
#[derive(Debug, Clone, Default, PartialEq, clap::Args)]
#[command(next_help_heading = "Options of serve")]
pub struct ServeOverrides {
    /// Address to listen on (default 127.0.0.1:8080; port 0: any free port, printed).
    #[arg(long, global = true, env = "IORT_CDS_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Largest accepted request body in bytes (default 8 MiB).
    #[arg(
        long,
        global = true,
        env = "IORT_CDS_MAX_BODY_BYTES",
        value_name = "BYTES"
    )]
    pub max_body_bytes: Option<usize>,
    /// Allowed CORS origins, comma-separated; `*` allows any (never `null`), `""` none.
    /// Default: any on a loopback listener, none beyond.
    #[arg(
        long = "cors-origins",
        global = true,
        env = "IORT_CDS_CORS_ORIGINS",
        value_delimiter = ',',
        value_name = "ORIGINS"
    )]
    pub cors_allowed_origins: Option<Vec<String>>,
    /// Public base URL when behind a proxy (used for the JWT audience check).
    #[arg(
        long,
        global = true,
        env = "IORT_CDS_PUBLIC_BASE_URL",
        value_name = "URL"
    )]
    pub public_base_url: Option<String>,
    /// Worker threads (default: one per core).
    #[arg(long, global = true, env = "IORT_CDS_WORKERS", value_name = "N")]
    pub workers: Option<usize>,
    /// Serve WITHOUT client authentication on a non-loopback address (testing only; warns).
    #[arg(long, global = true, env = "IORT_CDS_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
}

impl ServeOverrides {
    /// Whether any was given (flag or variable).
    pub fn given(&self) -> bool {
        *self != Self::default()
    }
}

impl Overrides {
    /// Lay the given values over `s`.
    fn apply(self, s: &mut Settings) {
        let (c, v) = (self.common, self.serve);
        fn lay<T>(value: Option<T>, to: &mut T) {
            if let Some(value) = value {
                *to = value;
            }
        }
        lay(c.log_level, &mut s.log_level);
        lay(c.log_format, &mut s.log_format);
        lay(c.profiles_dir.map(Some), &mut s.profiles_dir);
        lay(c.cards_dir.map(Some), &mut s.cards_dir);
        lay(c.close_margin_mm, &mut s.policy.close_margin_mm);
        lay(c.store_url.map(Some), &mut s.store.url);
        lay(v.listen, &mut s.listen);
        lay(v.max_body_bytes, &mut s.max_body_bytes);
        // `--cors-origins ""` (or the variable set empty) means no origin.
        lay(
            v.cors_allowed_origins
                .map(|o| Some(o.into_iter().filter(|o| !o.trim().is_empty()).collect())),
            &mut s.cors_allowed_origins,
        );
        lay(v.public_base_url.map(Some), &mut s.public_base_url);
        lay(v.workers.map(Some), &mut s.workers);
        s.insecure_no_auth |= v.insecure_no_auth;
    }
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
        overrides.apply(&mut s);
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
        let mut o = Overrides::default();
        o.serve.listen = Some("127.0.0.1:9100".parse().unwrap());
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
