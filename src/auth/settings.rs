//! Configuration of client authentication: which CDS clients (JWT issuers) are trusted, where
//! their signing keys come from, and the limits that keep verification cheap and safe.
//!
//! The types deserialize from TOML (every field but `iss` has a default, unknown fields are
//! refused so a typo in a security setting cannot silently weaken it) and [`AuthSettings::validate`]
//! checks them once at startup with messages that name the offending field, e.g.
//! `auth.issuers[1].jwks_url: must be an https URL (http is accepted only for loopback hosts)`.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Deserializer};

/// Client-authentication settings (the `[auth]` table of the service configuration).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthSettings {
    /// The CDS clients whose JWTs are accepted. Empty means "no authentication configured";
    /// see [`crate::auth::auth_mode`] for when that is allowed.
    pub issuers: Vec<TrustedIssuer>,
    /// Tolerance, in seconds, applied to `exp`, `iat` and `nbf` for clock drift between the
    /// client and this service.
    pub clock_skew_secs: u64,
    /// Longest accepted token lifetime (`exp` minus now), in seconds. It bounds how long a `jti`
    /// must be remembered, so the replay cache stays small and correct. CDS Hooks clients
    /// typically issue five-minute tokens.
    pub max_token_lifetime_secs: u64,
    /// How many recently used `jti` values are remembered at most, per issuer. When an
    /// issuer's share is full of unexpired entries its new tokens are refused (fail closed)
    /// rather than forgetting one; other issuers are not affected.
    pub jti_cache_capacity: usize,
    /// Time limit for one JWK Set download (connect + transfer), in milliseconds.
    pub jwks_fetch_timeout_ms: u64,
    /// Largest JWK Set body accepted, in bytes.
    pub jwks_max_bytes: usize,
    /// How long a downloaded JWK Set is used before it is downloaded again, in seconds.
    pub jwks_cache_ttl_secs: u64,
    /// Minimum time between two downloads of the same JWK Set, in milliseconds, whatever
    /// triggered them (first use, expiry, or a token naming an unknown `kid`), so that a flood
    /// of tokens with made-up key ids cannot hammer the issuer.
    pub jwks_min_refresh_interval_ms: u64,
    /// The externally visible base URL of this service (e.g. `https://cds.example.org` or
    /// `https://gw.example.org/iort`): the expected `aud` is it + the path called. Required
    /// beyond loopback with issuers configured; on a loopback listener without it, the
    /// listener's own URLs are the audience. Never taken from the request's headers.
    /// Configured once, as the top-level `public_base_url` (copied here), so that one setting
    /// has one name: `[auth] public_base_url` is not read.
    #[serde(skip)]
    pub public_base_url: Option<String>,
    /// Refused tokens a minute, on average, one peer (an IPv4 address, an IPv6 /64) may send
    /// once its burst is spent; past it the peer is answered 429 without its tokens being
    /// checked, until its budget refills. 0: no bound. Valid tokens are never counted, so an
    /// EHR's normal traffic is never throttled.
    pub refusals_per_peer_per_minute: u32,
    /// Refused tokens one peer may send at once before the rate above applies.
    pub refusal_burst_per_peer: u32,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            clock_skew_secs: 60,
            max_token_lifetime_secs: 3600,
            jti_cache_capacity: 100_000,
            jwks_fetch_timeout_ms: 5_000,
            jwks_max_bytes: 64 * 1024,
            jwks_cache_ttl_secs: 3600,
            jwks_min_refresh_interval_ms: 30_000,
            public_base_url: None,
            refusals_per_peer_per_minute: 600,
            refusal_burst_per_peer: 100,
        }
    }
}

/// One trusted CDS client (an EHR or a test harness), identified by the `iss` of its JWTs.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedIssuer {
    /// The exact `iss` claim value, e.g. `https://sandbox.cds-hooks.org`.
    pub iss: String,
    /// Where the issuer publishes its JWK Set: its pinned keys (with `jwks`, the inline ones
    /// are). Used for every token whose `jku` is absent or not listed in `allowed_jku`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// The issuer's JWK Set given inline (a TOML table or a string holding the JSON), for
    /// clients that share their keys out of band. Exclusive with `jwks_url`.
    #[serde(default, deserialize_with = "inline_jwks")]
    pub jwks: Option<serde_json::Value>,
    /// Other JWK Set URLs a token's `jku` header may point to. A `jku` not listed here (and
    /// not equal to `jwks_url`) is never fetched: the pinned keys (`jwks`, `jwks_url`) decide,
    /// and an issuer without pinned keys refuses the token.
    #[serde(default)]
    pub allowed_jku: Vec<String>,
    /// Accepted `tenant` claim values. Empty: the claim is not checked; otherwise it is
    /// required and must be one of these.
    #[serde(default)]
    pub tenants: Vec<String>,
    /// FHIR base URLs this issuer may send as `fhirServer`: a request's server must lie under
    /// one (at a path-segment boundary, as `fhir.allowed_base_urls`). Empty: not restricted.
    /// Parsed once at start-up (see `crate::auth::VerifiedClient::allows_fhir_server`).
    #[serde(default)]
    pub fhir_servers: Vec<String>,
}

/// Accepts the inline JWK Set either as a TOML table (deserialized as is) or as a string
/// holding the JSON document, which is easier to paste.
fn inline_jwks<'de, D: Deserializer<'de>>(d: D) -> Result<Option<serde_json::Value>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Table(serde_json::Value),
    }
    match Option::<Raw>::deserialize(d)? {
        None => Ok(None),
        Some(Raw::Table(v)) => Ok(Some(v)),
        Some(Raw::Text(s)) => serde_json::from_str(&s)
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("jwks is not valid JSON: {e}"))),
    }
}

/// A setting that failed validation: the dotted path of the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingsError {
    /// E.g. `auth.issuers[0].jwks_url`.
    pub field: String,
    /// E.g. `must be an https URL`.
    pub message: String,
}

impl fmt::Display for SettingsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for SettingsError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> SettingsError {
    SettingsError {
        field: field.into(),
        message: message.into(),
    }
}

impl AuthSettings {
    /// Checks every field; the first problem found is returned, naming the field as it is
    /// written in the configuration file (under `auth.`).
    pub fn validate(&self) -> Result<(), SettingsError> {
        if self.clock_skew_secs > 600 {
            return Err(err("auth.clock_skew_secs", "must be at most 600 seconds"));
        }
        if self.max_token_lifetime_secs == 0 || self.max_token_lifetime_secs > 86_400 {
            return Err(err(
                "auth.max_token_lifetime_secs",
                "must be between 1 and 86400 seconds",
            ));
        }
        if self.jti_cache_capacity == 0 {
            return Err(err("auth.jti_cache_capacity", "must be at least 1"));
        }
        if self.jwks_fetch_timeout_ms == 0 || self.jwks_fetch_timeout_ms > 60_000 {
            return Err(err(
                "auth.jwks_fetch_timeout_ms",
                "must be between 1 and 60000 milliseconds",
            ));
        }
        if self.jwks_max_bytes < 256 || self.jwks_max_bytes > 16 * 1024 * 1024 {
            return Err(err(
                "auth.jwks_max_bytes",
                "must be between 256 bytes and 16 MiB",
            ));
        }
        if self.jwks_cache_ttl_secs == 0 {
            return Err(err("auth.jwks_cache_ttl_secs", "must be at least 1 second"));
        }
        if let Some(base) = &self.public_base_url {
            check_public_base_url(base).map_err(|m| err("public_base_url", m))?;
        }
        for (i, issuer) in self.issuers.iter().enumerate() {
            let field = |name: &str| format!("auth.issuers[{i}].{name}");
            if issuer.iss.trim().is_empty() {
                return Err(err(field("iss"), "must not be empty"));
            }
            if issuer.iss.trim() != issuer.iss {
                return Err(err(field("iss"), "must not start or end with whitespace"));
            }
            if let Some(dup) = self.issuers[..i].iter().position(|o| o.iss == issuer.iss) {
                return Err(err(
                    field("iss"),
                    format!("duplicates auth.issuers[{dup}].iss"),
                ));
            }
            if issuer.jwks_url.is_some() && issuer.jwks.is_some() {
                return Err(err(
                    field("jwks"),
                    "give either jwks_url or an inline jwks, not both",
                ));
            }
            if issuer.jwks_url.is_none() && issuer.jwks.is_none() && issuer.allowed_jku.is_empty() {
                return Err(err(
                    field("jwks_url"),
                    "the issuer needs a key source: jwks_url, an inline jwks, or allowed_jku",
                ));
            }
            if let Some(url) = &issuer.jwks_url {
                check_key_url(url).map_err(|m| err(field("jwks_url"), m))?;
            }
            for (j, url) in issuer.allowed_jku.iter().enumerate() {
                check_key_url(url).map_err(|m| err(field(&format!("allowed_jku[{j}]")), m))?;
            }
            if let Some(jwks) = &issuer.jwks {
                let count = super::jwks::KeySet::from_json(jwks)
                    .map_err(|m| err(field("jwks"), m))?
                    .len();
                if count == 0 {
                    return Err(err(
                        field("jwks"),
                        "contains no usable signing key (EC P-256/P-384 or RSA >= 2048 bits, with a kid)",
                    ));
                }
            }
            for (j, tenant) in issuer.tenants.iter().enumerate() {
                if tenant.is_empty() {
                    return Err(err(field(&format!("tenants[{j}]")), "must not be empty"));
                }
            }
            for (j, url) in issuer.fhir_servers.iter().enumerate() {
                check_fhir_server(url).map_err(|m| err(field(&format!("fhir_servers[{j}]")), m))?;
            }
        }
        Ok(())
    }
}

/// Whether `host` (as parsed by `url`) is a loopback name or address, where plain http is
/// acceptable (tests, sidecars).
fn is_loopback_host(url: &reqwest::Url) -> bool {
    let Some(host) = url.host_str() else {
        return false;
    };
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    // IPv6 literals come back bracketed ("[::1]").
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>()
        .is_ok_and(|ip| ip.to_canonical().is_loopback())
}

/// A URL keys are downloaded from: https (http only for loopback), no credentials, no fragment.
fn check_key_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    match url.scheme() {
        "https" => {}
        "http" if is_loopback_host(&url) => {}
        _ => return Err("must be an https URL (http is accepted only for loopback hosts)".into()),
    }
    if url.host().is_none() {
        return Err("must name a host".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    if url.fragment().is_some() {
        return Err("must not contain a fragment".into());
    }
    Ok(())
}

fn check_public_base_url(raw: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("is not a valid URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") || url.host().is_none() {
        return Err("must be an absolute http(s) URL such as https://cds.example.org".into());
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err("must not contain a query or a fragment".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("must not contain credentials".into());
    }
    Ok(())
}

/// The same parse as `fhir.allowed_base_urls` and as the request's `fhirServer`: one form of
/// a FHIR base URL everywhere it is compared.
fn check_fhir_server(raw: &str) -> Result<(), String> {
    crate::gather::allow_list::BaseUrl::parse(raw)
        .map(|_| ())
        .map_err(|p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn issuer(iss: &str) -> TrustedIssuer {
        TrustedIssuer {
            iss: iss.into(),
            jwks_url: Some("https://ehr.example.org/jwks.json".into()),
            jwks: None,
            allowed_jku: vec![],
            tenants: vec![],
            fhir_servers: vec![],
        }
    }

    fn with(issuers: Vec<TrustedIssuer>) -> AuthSettings {
        AuthSettings {
            issuers,
            ..AuthSettings::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let s = AuthSettings::default();
        assert_eq!(s.clock_skew_secs, 60);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn sandbox_snippet_parses_and_validates() {
        let toml_text = r#"
            [[issuers]]
            iss = "https://sandbox.cds-hooks.org"
            jwks_url = "https://sandbox.cds-hooks.org/.well-known/jwks.json"
        "#;
        let s: AuthSettings = toml::from_str(toml_text).expect("parses");
        assert_eq!(s.issuers.len(), 1);
        assert_eq!(s.clock_skew_secs, 60);
        assert!(s.validate().is_ok());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let r: Result<AuthSettings, _> = toml::from_str("clock_skew = 5");
        assert!(r.is_err());
        let r: Result<AuthSettings, _> =
            toml::from_str("[[issuers]]\niss = \"x\"\njwks_uri = \"https://a/\"");
        assert!(r.is_err());
    }

    #[test]
    fn inline_jwks_accepts_string_and_table() {
        let s: AuthSettings =
            toml::from_str("[[issuers]]\niss = \"a\"\njwks = '{\"keys\": []}'").expect("string");
        assert_eq!(s.issuers[0].jwks, Some(serde_json::json!({"keys": []})));
        let s: AuthSettings =
            toml::from_str("[[issuers]]\niss = \"a\"\n[issuers.jwks]\nkeys = []").expect("table");
        assert_eq!(s.issuers[0].jwks, Some(serde_json::json!({"keys": []})));
        let r: Result<AuthSettings, _> = toml::from_str("[[issuers]]\niss = \"a\"\njwks = '{'");
        assert!(r.is_err());
    }

    #[test]
    fn messages_name_the_field() {
        let mut i = issuer("https://ehr");
        i.jwks_url = Some("http://ehr.example.org/jwks".into());
        let e = with(vec![issuer("https://ok"), i])
            .validate()
            .expect_err("http refused");
        assert_eq!(e.field, "auth.issuers[1].jwks_url");

        let mut i = issuer("https://ehr");
        i.jwks_url = None;
        let e = with(vec![i]).validate().expect_err("no key source");
        assert_eq!(e.field, "auth.issuers[0].jwks_url");

        let mut i = issuer("https://ehr");
        i.jwks = Some(serde_json::json!({"keys": []}));
        let e = with(vec![i]).validate().expect_err("both sources");
        assert_eq!(e.field, "auth.issuers[0].jwks");

        let mut i = issuer("https://ehr");
        i.jwks_url = None;
        i.jwks = Some(serde_json::json!({"keys": []}));
        let e = with(vec![i]).validate().expect_err("empty inline set");
        assert_eq!(e.field, "auth.issuers[0].jwks");

        let mut i = issuer("https://ehr");
        i.allowed_jku = vec!["ftp://x/".into()];
        let e = with(vec![i]).validate().expect_err("bad jku");
        assert_eq!(e.field, "auth.issuers[0].allowed_jku[0]");

        let e = with(vec![issuer("a"), issuer("a")])
            .validate()
            .expect_err("duplicate");
        assert_eq!(e.field, "auth.issuers[1].iss");
        assert!(e.to_string().starts_with("auth.issuers[1].iss: duplicates"));

        let e = with(vec![issuer(" ")]).validate().expect_err("blank iss");
        assert_eq!(e.field, "auth.issuers[0].iss");

        let s = AuthSettings {
            public_base_url: Some("cds.example.org".into()),
            ..Default::default()
        };
        assert_eq!(s.validate().expect_err("relative").field, "public_base_url");

        let s = AuthSettings {
            jti_cache_capacity: 0,
            ..Default::default()
        };
        assert_eq!(
            s.validate().expect_err("zero").field,
            "auth.jti_cache_capacity"
        );
    }

    #[test]
    fn loopback_http_is_allowed_for_key_urls() {
        assert!(check_key_url("http://127.0.0.1:8080/jwks").is_ok());
        assert!(check_key_url("http://localhost/jwks").is_ok());
        assert!(check_key_url("http://[::1]/jwks").is_ok());
        assert!(check_key_url("http://10.0.0.1/jwks").is_err());
        assert!(check_key_url("https://user:pw@ehr.example.org/jwks").is_err());
    }
}
