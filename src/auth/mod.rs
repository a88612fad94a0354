//! Authentication of CDS clients (the EHRs calling this service) with the CDS Hooks JWT.
//!
//! CDS Hooks 2.0 ("Trusting CDS Clients") has every call to the discovery, service and
//! feedback endpoints carry `Authorization: Bearer <JWT>`, signed by the client with a key from
//! its JWK Set. Without this check anyone who can reach the service could ask it about
//! patients and make it call FHIR servers, so it is enforced whenever the service listens
//! beyond loopback (see [`auth_mode`]).
//!
//! What is checked, in order (cheap and local first, network last, replay memory only for
//! tokens that passed everything else):
//!
//! 1. header: `Authorization: Bearer`, three base64url parts, `alg` ES384/RS384/ES256/RS256
//!    (`none` and HMAC always refused), `kid` present, `typ` JWT if present, no `crit`;
//! 2. `iss` on the allow-list ([`TrustedIssuer`]), and where its key comes from, before
//!    anything is fetched: pinned keys when they hold the `kid`, a `jku` header only if on
//!    that issuer's `allowed_jku` (or equal to its `jwks_url`); a `jku` not listed is never
//!    fetched, and pinned keys still decide;
//! 3. `exp` not passed and `iat`/`nbf` not in the future (± `clock_skew_secs`), `exp` within
//!    `max_token_lifetime_secs`, `aud` naming the exact URL called as configured
//!    (`public_base_url`, else the loopback listener's own URLs; never the request's `Host`
//!    or `Forwarded` headers, which the client writes), `jti` present, `tenant` allowed where
//!    the issuer lists tenants;
//! 4. the signature, against the key with that `kid` from the issuer's JWK Set (inline or
//!    downloaded, cached, refreshed on an unknown `kid` under a rate limit: [`jwks`]);
//! 5. `jti` not used before within the token's lifetime ([`replay`]).
//!
//! A failure is a bare `401` with `WWW-Authenticate: Bearer`; the reason goes to the log
//! (`tracing::warn`) with the issuer and key id, never the token. On success a
//! [`VerifiedClient`] is put into the request extensions for the handlers.
//!
//! Wiring (see [`middleware`]):
//!
//! ```no_run
//! use actix_web::{App, middleware::from_fn, web};
//! use iort_cds::auth::{self, Authenticator, AuthMode, AuthSettings};
//!
//! let settings = AuthSettings::default();
//! let mode = auth::auth_mode(&["127.0.0.1:8080".parse().unwrap()], &settings, false).unwrap();
//! let authenticator =
//!     Authenticator::listening(&settings, mode, Some("127.0.0.1:8080".parse().unwrap())).unwrap();
//! let app = App::new()
//!     .app_data(web::Data::new(authenticator))
//!     .wrap(from_fn(auth::require_jwt));
//! ```

mod jwks;
pub mod middleware;
mod refusals;
mod replay;
pub mod settings;
mod token;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::Algorithm;

pub use middleware::require_jwt;
pub use settings::{AuthSettings, SettingsError, TrustedIssuer};
pub use token::AuthFailure;

use jwks::{FetchLimits, KeyLookupError, KeySet, KeyStore};

use crate::gather::allow_list::{BaseUrl, caller_may_name};
pub use replay::SharedReplay;
use replay::{ReplayCache, Seen};

/// Whether client JWTs are checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Every request outside the public paths needs a valid client JWT.
    Enforced,
    /// Requests pass unchecked (local development, or explicitly `--insecure-no-auth`).
    Disabled,
}

/// Decides, at startup, whether authentication is enforced — secure by default:
///
/// * issuers configured → [`AuthMode::Enforced`] (the insecure flag is then ignored, with a
///   warning, since trusting some clients but not checking is never intended);
/// * no issuers, every listen address on loopback → [`AuthMode::Disabled`] (a note is logged:
///   only processes on this machine can call);
/// * no issuers, reachable from the network, `insecure_no_auth` → [`AuthMode::Disabled`] with
///   a loud warning;
/// * no issuers, reachable from the network, no flag → `Err` saying what to configure.
///
/// An empty `listen` list counts as reachable from the network.
pub fn auth_mode(
    listen: &[SocketAddr],
    settings: &AuthSettings,
    insecure_no_auth: bool,
) -> Result<AuthMode, String> {
    let listener_on_loopback = crate::reach::listener_on_loopback(listen);
    if !settings.issuers.is_empty() {
        if insecure_no_auth {
            tracing::warn!(
                "--insecure-no-auth ignored: trusted issuers are configured, so client JWTs are enforced"
            );
        }
        if !listener_on_loopback && settings.public_base_url.is_none() {
            return Err(
                "refusing to start: public_base_url is required when client authentication is on \
                 and the service listens beyond loopback: a token's aud must name this URL, which \
                 is never taken from the request's Host or Forwarded headers (clients set them)"
                    .to_owned(),
            );
        }
        return Ok(AuthMode::Enforced);
    }
    // A public base URL on another host says a proxy forwards the network to this loopback
    // listener: loopback is then no protection, and authentication may not be off silently.
    let behind_proxy = crate::reach::names_another_host(settings.public_base_url.as_deref());
    if listener_on_loopback && behind_proxy && !insecure_no_auth {
        return Err(
            "refusing to run without client authentication behind a proxy: \
             public_base_url names another host than this loopback listener; add a \
             trusted issuer ([[auth.issuers]]), or pass --insecure-no-auth to run \
             unauthenticated on purpose"
                .to_owned(),
        );
    }
    if listener_on_loopback && !behind_proxy {
        tracing::info!(
            "client authentication disabled: no trusted issuers configured and the service listens on loopback only"
        );
        return Ok(AuthMode::Disabled);
    }
    if insecure_no_auth {
        tracing::warn!(
            "!!! CLIENT AUTHENTICATION DISABLED on a network-reachable address (--insecure-no-auth): \
             anyone who can reach this service can call it. Never run like this with real patient data. !!!"
        );
        return Ok(AuthMode::Disabled);
    }
    let addrs: Vec<String> = listen.iter().map(ToString::to_string).collect();
    Err(format!(
        "refusing to listen on {} without client authentication: add a trusted issuer \
         ([[auth.issuers]] with iss and jwks_url, jwks or allowed_jku), listen on a loopback \
         address only, or pass --insecure-no-auth to run unauthenticated on purpose",
        if addrs.is_empty() {
            "an unspecified address".to_owned()
        } else {
            addrs.join(", ")
        }
    ))
}

/// The authenticated caller, in the request extensions after [`require_jwt`] accepted its
/// token. Handlers take it as an extractor (`client: VerifiedClient`, or
/// `Option<VerifiedClient>` where authentication may be disabled).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedClient {
    /// The issuer (`iss`), one of the configured trusted issuers.
    pub iss: String,
    /// `sub`, when the token has one (CDS Hooks uses it for the client id).
    pub sub: Option<String>,
    /// `tenant`, when the token has one.
    pub tenant: Option<String>,
    /// The token's `jti` (an opaque id, safe to log for correlation).
    pub jti: String,
    /// The key id that signed the token.
    pub kid: String,
    /// The signature algorithm, e.g. `"ES384"`.
    pub alg: &'static str,
    /// `exp`, unix seconds.
    pub expires_at: u64,
    /// The issuer's `fhir_servers` allow-list, parsed at start-up (empty: not restricted).
    pub fhir_servers: Arc<[BaseUrl]>,
}

impl VerifiedClient {
    /// Whether this client may name `fhir_server` as its `fhirServer` (which the service then
    /// calls, with the client's access token): the rule gathering applies
    /// ([`crate::gather::allow_list::caller_may_name`]).
    pub fn allows_fhir_server(&self, fhir_server: &str) -> bool {
        BaseUrl::parse(fhir_server).is_ok_and(|b| caller_may_name(&self.fhir_servers, &b))
    }
}

/// A refused token: the reason plus, when they could be read, the claimed issuer and key id
/// (untrusted, for the log only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Which check failed.
    pub reason: AuthFailure,
    /// The token's `iss`, once the payload could be read (at most 200 characters).
    pub iss: Option<String>,
    /// The token's `kid`, once the header could be read (at most 200 characters).
    pub kid: Option<String>,
}

impl From<AuthFailure> for Rejection {
    fn from(reason: AuthFailure) -> Self {
        Self {
            reason,
            iss: None,
            kid: None,
        }
    }
}

/// One trusted issuer, prepared for lookups.
struct Issuer {
    jwks_url: Option<String>,
    inline: Option<Arc<KeySet>>,
    allowed_jku: HashSet<String>,
    tenants: HashSet<String>,
    fhir_servers: Arc<[BaseUrl]>,
}

/// Where a token's key comes from.
enum KeySource<'a> {
    Inline(&'a Arc<KeySet>),
    Remote(&'a str),
}

struct Inner {
    mode: AuthMode,
    issuers: HashMap<String, Issuer>,
    keys: KeyStore,
    replay: ReplayCache,
    /// The replay memory shared by all instances (the store, with PostgreSQL), asked after
    /// this instance's own memory.
    shared_replay: Option<Arc<dyn SharedReplay>>,
    clock_skew_secs: u64,
    max_token_lifetime_secs: u64,
    /// What a token's `aud` may name, before the path: from configuration only (see
    /// [`Audience`]), never from the request's headers.
    audience: Audience,
    /// Refused tokens are logged one line a second (a flood must not become a flood of log
    /// lines), with the count held back.
    refusals: crate::telemetry::Sampler,
    /// Peers whose tokens keep failing are answered 429 without a signature check.
    peers: refusals::RefusalLimiter,
}

/// Verifies CDS client JWTs. Cheap to clone (one `Arc`); register one instance as
/// `web::Data<Authenticator>` (or plain `app_data(Authenticator)`) so that all workers share
/// the key cache and the replay memory.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.inner.mode)
            .field("issuers", &self.inner.issuers.len())
            .finish_non_exhaustive()
    }
}

/// Paths that never need a token: liveness and readiness probes, and the metrics scraped by
/// Prometheus (see [`crate::metrics`]). (CORS preflight requests are exempt too, see
/// [`Authenticator::is_exempt`].)
pub const PUBLIC_PATHS: &[&str] = &["/healthz", "/readyz", crate::metrics::PATH];

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// Validates `settings` and prepares the issuers, the JWK Set cache (nothing is downloaded
    /// yet, see [`Authenticator::warm_up`]) and the replay cache. With
    /// [`AuthMode::Disabled`] the issuers are still validated but every request passes.
    pub fn new(settings: &AuthSettings, mode: AuthMode) -> Result<Self, SettingsError> {
        Self::listening(settings, mode, None)
    }

    /// [`Authenticator::new`] for a service bound to `listener`: without `public_base_url`, a
    /// loopback listener's own URLs (`http://127.0.0.1:PORT`, `http://localhost:PORT`,
    /// `http://[::1]:PORT`) are the audience. Beyond loopback (or with no listener) there is
    /// no audience without `public_base_url`, and every token is refused ([`auth_mode`]
    /// refuses to start like that): the audience is never read from the request.
    pub fn listening(
        settings: &AuthSettings,
        mode: AuthMode,
        listener: Option<std::net::SocketAddr>,
    ) -> Result<Self, SettingsError> {
        settings.validate()?;
        let mut issuers = HashMap::new();
        let mut urls = HashSet::new();
        for (i, t) in settings.issuers.iter().enumerate() {
            let inline = match &t.jwks {
                None => None,
                Some(doc) => Some(Arc::new(KeySet::from_json(doc).map_err(|m| {
                    SettingsError {
                        field: format!("auth.issuers[{i}].jwks"),
                        message: m,
                    }
                })?)),
            };
            // Parsed once: the same rule and the same normal form as `fhir.allowed_base_urls`.
            let fhir_servers = t
                .fhir_servers
                .iter()
                .enumerate()
                .map(|(j, u)| {
                    BaseUrl::parse(u).map_err(|p| SettingsError {
                        field: format!("auth.issuers[{i}].fhir_servers[{j}]"),
                        message: p.to_string(),
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            urls.extend(t.jwks_url.iter().cloned());
            urls.extend(t.allowed_jku.iter().cloned());
            if t.fhir_servers.is_empty() && mode == AuthMode::Enforced {
                tracing::info!(iss = %t.iss, "fhirServer not restricted for this issuer (fhir_servers is empty)");
            }
            issuers.insert(
                t.iss.clone(),
                Issuer {
                    jwks_url: t.jwks_url.clone(),
                    inline,
                    allowed_jku: t.allowed_jku.iter().cloned().collect(),
                    tenants: t.tenants.iter().cloned().collect(),
                    fhir_servers: fhir_servers.into(),
                },
            );
        }
        let limits = FetchLimits {
            timeout: Duration::from_millis(settings.jwks_fetch_timeout_ms),
            max_bytes: settings.jwks_max_bytes,
            ttl: Duration::from_secs(settings.jwks_cache_ttl_secs),
            min_refresh_interval: Duration::from_millis(settings.jwks_min_refresh_interval_ms),
        };
        let keys = KeyStore::new(urls, limits).map_err(|message| SettingsError {
            field: "auth".to_owned(),
            message,
        })?;
        let audience = Audience::new(settings.public_base_url.as_deref(), listener);
        Ok(Self {
            inner: Arc::new(Inner {
                mode,
                issuers,
                keys,
                replay: ReplayCache::new(settings.jti_cache_capacity),
                shared_replay: None,
                clock_skew_secs: settings.clock_skew_secs,
                max_token_lifetime_secs: settings.max_token_lifetime_secs,
                audience,
                refusals: crate::telemetry::Sampler::new(std::time::Duration::from_secs(1)),
                peers: refusals::RefusalLimiter::new(
                    settings.refusals_per_peer_per_minute,
                    settings.refusal_burst_per_peer,
                ),
            }),
        })
    }

    /// Also ask `shared` whether another instance has seen a token ([`SharedReplay`]). Call
    /// before the authenticator is shared (cloned).
    pub fn with_shared_replay(mut self, shared: Arc<dyn SharedReplay>) -> Self {
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.shared_replay = Some(shared);
        }
        self
    }

    /// An authenticator that lets every request through (no issuers, no key cache).
    pub fn disabled() -> Self {
        Self {
            inner: Arc::new(Inner {
                mode: AuthMode::Disabled,
                issuers: HashMap::new(),
                keys: KeyStore::empty(),
                replay: ReplayCache::new(1),
                shared_replay: None,
                clock_skew_secs: 0,
                max_token_lifetime_secs: 0,
                audience: Audience::default(),
                refusals: crate::telemetry::Sampler::new(std::time::Duration::from_secs(1)),
                peers: refusals::RefusalLimiter::new(0, 0),
            }),
        }
    }

    /// Whether a refusal may be logged now: `Some(n)` with the number held back since the
    /// last line written, `None` to hold this one back.
    pub fn admit_refusal_log(&self) -> Option<u64> {
        self.inner.refusals.admit()
    }

    /// `Some(wait)` when `peer` sent too many refused tokens lately: answer 429 without
    /// checking its token (see `auth.refusals_per_peer_per_minute`).
    pub fn peer_blocked(&self, peer: Option<std::net::IpAddr>) -> Option<Duration> {
        self.inner.peers.blocked(peer)
    }

    /// Count a refused token from `peer`; `true` when the peer is now over its budget.
    pub fn count_refusal(&self, peer: Option<std::net::IpAddr>) -> bool {
        self.inner.peers.refused(peer)
    }

    /// [`AuthMode::Enforced`] or [`AuthMode::Disabled`], as built.
    pub fn mode(&self) -> AuthMode {
        self.inner.mode
    }

    /// Downloads every configured JWK Set once (e.g. at startup or from a readiness check), so
    /// the first calls do not wait for it. Failures are logged; returns how many sets are
    /// available.
    pub async fn warm_up(&self) -> usize {
        let mut ok = 0;
        for url in self.inner.keys.urls() {
            if self.inner.keys.warm(url).await {
                ok += 1;
            }
        }
        ok
    }

    /// The `aud` values a token may carry to call the endpoint at `path` (the request's path,
    /// never its query): each configured base + `path`. Nothing of the request but its path
    /// is read: `Host`, `Forwarded` and `X-Forwarded-*` are set by whoever sends the request,
    /// so an audience built from them would accept a token minted for another service.
    pub fn audiences_for(&self, path: &str) -> Vec<String> {
        self.inner
            .audience
            .bases
            .iter()
            .map(|base| format!("{base}{path}"))
            .collect()
    }

    /// Requests that pass without a token: the [`PUBLIC_PATHS`] and CORS preflights
    /// (`OPTIONS` with `Access-Control-Request-Method`, which browsers send without
    /// credentials).
    pub fn is_exempt(&self, req: &actix_web::HttpRequest) -> bool {
        let preflight = req.method() == actix_web::http::Method::OPTIONS
            && req
                .headers()
                .contains_key(actix_web::http::header::ACCESS_CONTROL_REQUEST_METHOD);
        preflight || PUBLIC_PATHS.contains(&req.path())
    }

    /// Checks the `Authorization` header value of a request to the endpoint whose URL is
    /// `audience` (see [`Authenticator::audience_for`]). Works the same in both modes: the
    /// middleware skips the call when authentication is disabled.
    pub async fn verify(
        &self,
        authorization: Option<&str>,
        audience: &str,
    ) -> Result<VerifiedClient, Rejection> {
        self.verify_any(authorization, std::slice::from_ref(&audience))
            .await
    }

    /// [`Authenticator::verify`] for a token whose `aud` must name one of `audiences` (see
    /// [`Authenticator::audiences_for`]).
    pub async fn verify_any(
        &self,
        authorization: Option<&str>,
        audiences: &[&str],
    ) -> Result<VerifiedClient, Rejection> {
        let raw = token::bearer_token(authorization.ok_or(AuthFailure::MissingToken)?)?;
        let jwt = token::parse(raw)?;
        // Claimed (not yet trusted) values, shortened: they only serve the log.
        self.check(&jwt, audiences)
            .await
            .map_err(|reason| Rejection {
                reason,
                iss: Some(jwt.claims.iss.chars().take(200).collect()),
                kid: Some(jwt.header.kid.chars().take(200).collect()),
            })
    }

    async fn check(
        &self,
        jwt: &token::UnverifiedJwt<'_>,
        audiences: &[&str],
    ) -> Result<VerifiedClient, AuthFailure> {
        let inner = &self.inner;
        let (header, claims) = (&jwt.header, &jwt.claims);
        let issuer = inner
            .issuers
            .get(&claims.iss)
            .ok_or(AuthFailure::UnknownIssuer)?;
        let source = key_source(issuer, header.jku.as_deref(), &header.kid)?;

        let now = unix_now();
        let skew = inner.clock_skew_secs;
        if claims.exp.saturating_add(skew) < now {
            return Err(AuthFailure::Expired);
        }
        if claims.iat > now.saturating_add(skew) {
            return Err(AuthFailure::IssuedInFuture);
        }
        if claims.nbf.is_some_and(|nbf| nbf > now.saturating_add(skew)) {
            return Err(AuthFailure::NotYetValid);
        }
        if claims.exp
            > now
                .saturating_add(inner.max_token_lifetime_secs)
                .saturating_add(skew)
        {
            return Err(AuthFailure::LifetimeTooLong);
        }
        if !claims.aud.iter().any(|a| audiences.contains(&a.as_str())) {
            return Err(AuthFailure::WrongAudience);
        }
        if !issuer.tenants.is_empty()
            && !claims
                .tenant
                .as_ref()
                .is_some_and(|t| issuer.tenants.contains(t))
        {
            return Err(AuthFailure::TenantNotAllowed);
        }

        let remote_set;
        let set: &KeySet = match source {
            KeySource::Inline(set) => set,
            KeySource::Remote(url) => {
                remote_set = inner
                    .keys
                    .key_set(url, &header.kid)
                    .await
                    .map_err(|e| match e {
                        KeyLookupError::UnknownKid => AuthFailure::UnknownKid,
                        KeyLookupError::Unavailable => AuthFailure::KeysUnavailable,
                    })?;
                &remote_set
            }
        };
        let key = match set.find(&header.kid, header.alg) {
            Some(key) => key,
            None if set.has_kid(&header.kid) => return Err(AuthFailure::KeyAlgMismatch),
            None => return Err(AuthFailure::UnknownKid),
        };
        let valid = jsonwebtoken::crypto::verify(
            jwt.signature,
            jwt.signing_input.as_bytes(),
            &key.key,
            header.alg,
        );
        if !matches!(valid, Ok(true)) {
            return Err(AuthFailure::BadSignature);
        }

        let forget_after = claims.exp.saturating_add(skew);
        match inner
            .replay
            .check_and_remember(&claims.iss, &claims.jti, forget_after, unix_now())
        {
            Seen::First => {
                if let Some(shared) = &inner.shared_replay
                    && shared
                        .seen_elsewhere(&claims.iss, &claims.jti, forget_after)
                        .await
                {
                    return Err(AuthFailure::Replayed);
                }
            }
            Seen::Again => return Err(AuthFailure::Replayed),
            Seen::Full => {
                tracing::error!(
                    "jti replay cache is full of unexpired tokens; refusing new tokens"
                );
                return Err(AuthFailure::ReplayCacheFull);
            }
        }
        Ok(VerifiedClient {
            iss: claims.iss.clone(),
            sub: claims.sub.clone(),
            tenant: claims.tenant.clone(),
            jti: claims.jti.clone(),
            kid: key.kid.clone(),
            alg: alg_name(header.alg),
            expires_at: claims.exp,
            fhir_servers: issuer.fhir_servers.clone(),
        })
    }
}

/// Where the token's key comes from, decided before anything is fetched:
///
/// 1. pinned inline keys (`jwks`) that hold the token's `kid`: always, whatever its `jku`
///    says (an offline service can trust the CDS Hooks Sandbox, which always sends one);
/// 2. a `jku` on the issuer's `allowed_jku`, or equal to its `jwks_url`: that URL;
/// 3. otherwise the pinned keys, inline or at `jwks_url`; a `jku` that is not listed is
///    ignored, never fetched (the token must still verify against a pinned key);
/// 4. an issuer known only by `allowed_jku`: the token must name one of them.
fn key_source<'a>(
    issuer: &'a Issuer,
    jku: Option<&'a str>,
    kid: &str,
) -> Result<KeySource<'a>, AuthFailure> {
    if let Some(set) = &issuer.inline
        && set.has_kid(kid)
    {
        return Ok(KeySource::Inline(set));
    }
    if let Some(jku) = jku
        && (issuer.allowed_jku.contains(jku) || issuer.jwks_url.as_deref() == Some(jku))
    {
        return Ok(KeySource::Remote(jku));
    }
    match (&issuer.inline, &issuer.jwks_url, jku) {
        (Some(set), _, _) => Ok(KeySource::Inline(set)),
        (None, Some(url), _) => Ok(KeySource::Remote(url)),
        (None, None, Some(_)) => Err(AuthFailure::JkuNotAllowed),
        (None, None, None) => Err(AuthFailure::NoKeySource),
    }
}

/// The URLs a token's `aud` may name, less the path, from configuration alone.
#[derive(Debug, Default, Clone)]
struct Audience {
    /// Without trailing `/`. Empty: no audience is known and every token is refused (the
    /// startup check refuses to run like that with authentication enforced).
    bases: Vec<String>,
}

impl Audience {
    fn new(public_base_url: Option<&str>, listener: Option<std::net::SocketAddr>) -> Self {
        if let Some(base) = public_base_url {
            return Self {
                bases: vec![base.trim_end_matches('/').to_owned()],
            };
        }
        let Some(addr) = listener.filter(|a| a.ip().to_canonical().is_loopback()) else {
            return Self::default();
        };
        // The names a client on this machine may have used for the listener. They can only
        // reach this process (nothing else binds its port), so all of them are this service.
        let port = addr.port();
        let mut bases = vec![
            format!("http://127.0.0.1:{port}"),
            format!("http://localhost:{port}"),
            format!("http://[::1]:{port}"),
        ];
        let own = match addr.ip().to_canonical() {
            std::net::IpAddr::V4(ip) => format!("http://{ip}:{port}"),
            std::net::IpAddr::V6(ip) => format!("http://[{ip}]:{port}"),
        };
        if !bases.contains(&own) {
            bases.push(own);
        }
        Self { bases }
    }
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES384 => "ES384",
        Algorithm::ES256 => "ES256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS256 => "RS256",
        _ => "other",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().expect("socket address")
    }

    fn with_issuer() -> AuthSettings {
        AuthSettings {
            issuers: vec![TrustedIssuer {
                iss: "https://ehr.example.org".into(),
                jwks_url: Some("https://ehr.example.org/jwks".into()),
                jwks: None,
                allowed_jku: vec![],
                tenants: vec![],
                fhir_servers: vec![],
            }],
            ..AuthSettings::default()
        }
    }

    #[test]
    fn issuers_configured_means_enforced() {
        let mut s = with_issuer();
        // beyond loopback the audience must be configured
        assert!(auth_mode(&[addr("0.0.0.0:8080")], &s, false).is_err());
        s.public_base_url = Some("https://cds.example.org".into());
        assert_eq!(
            auth_mode(&[addr("0.0.0.0:8080")], &s, false),
            Ok(AuthMode::Enforced)
        );
        assert_eq!(
            auth_mode(&[addr("127.0.0.1:8080")], &s, false),
            Ok(AuthMode::Enforced)
        );
        assert_eq!(
            auth_mode(&[addr("0.0.0.0:8080")], &s, true),
            Ok(AuthMode::Enforced)
        );
    }

    #[test]
    fn loopback_without_issuers_is_disabled() {
        let s = AuthSettings::default();
        let listen = [
            addr("127.0.0.1:8080"),
            addr("[::1]:8080"),
            addr("[::ffff:127.0.0.1]:80"),
        ];
        assert_eq!(auth_mode(&listen, &s, false), Ok(AuthMode::Disabled));
    }

    #[test]
    fn loopback_behind_a_proxy_needs_an_issuer_or_the_flag() {
        let mut s = AuthSettings {
            public_base_url: Some("https://cds.example.org".into()),
            ..AuthSettings::default()
        };
        let listen = [addr("127.0.0.1:8080")];
        let err = auth_mode(&listen, &s, false).expect_err("must refuse");
        assert!(err.contains("behind a proxy"), "{err}");
        assert_eq!(auth_mode(&listen, &s, true), Ok(AuthMode::Disabled));
        s.public_base_url = Some("http://127.0.0.1:8080".into());
        assert_eq!(auth_mode(&listen, &s, false), Ok(AuthMode::Disabled));
        s.public_base_url = Some("http://localhost:8080".into());
        assert_eq!(auth_mode(&listen, &s, false), Ok(AuthMode::Disabled));
    }

    #[test]
    fn network_without_issuers_needs_the_flag() {
        let s = AuthSettings::default();
        for listen in [
            vec![addr("0.0.0.0:8080")],
            vec![addr("127.0.0.1:8080"), addr("10.1.2.3:8080")],
            vec![addr("[::]:8080")],
            vec![],
        ] {
            let err = auth_mode(&listen, &s, false).expect_err("must refuse");
            assert!(err.contains("[[auth.issuers]]"), "{err}");
            assert!(err.contains("--insecure-no-auth"), "{err}");
            assert_eq!(auth_mode(&listen, &s, true), Ok(AuthMode::Disabled));
        }
    }

    #[test]
    fn new_validates_settings() {
        let mut s = with_issuer();
        s.issuers[0].jwks_url = Some("http://ehr.example.org/jwks".into());
        let e = Authenticator::new(&s, AuthMode::Enforced).expect_err("http refused");
        assert_eq!(e.field, "auth.issuers[0].jwks_url");
        assert!(Authenticator::new(&with_issuer(), AuthMode::Enforced).is_ok());
        assert_eq!(Authenticator::disabled().mode(), AuthMode::Disabled);
    }

    #[test]
    fn fhir_server_policy_by_mode() {
        let client = VerifiedClient {
            iss: "i".into(),
            sub: None,
            tenant: None,
            jti: "j".into(),
            kid: "k".into(),
            alg: "ES384",
            expires_at: 0,
            fhir_servers: vec![BaseUrl::parse("https://ehr.example.org/fhir/").unwrap()].into(),
        };
        // The rule gathering applies: under a listed base, at a path-segment boundary.
        assert!(client.allows_fhir_server("https://ehr.example.org/fhir"));
        assert!(client.allows_fhir_server("https://ehr.example.org/fhir/"));
        assert!(client.allows_fhir_server("https://ehr.example.org/fhir/r4"));
        assert!(!client.allows_fhir_server("https://ehr.example.org/fhir2"));
        assert!(!client.allows_fhir_server("https://other.example/fhir"));
        assert!(!client.allows_fhir_server(""));
        let anyone = VerifiedClient {
            fhir_servers: Vec::new().into(),
            ..client
        };
        assert!(anyone.allows_fhir_server("https://anything.example/fhir"));
    }

    #[tokio::test]
    async fn missing_and_foreign_tokens_are_refused_without_network() {
        let a = Authenticator::new(&with_issuer(), AuthMode::Enforced).expect("builds");
        let aud = "https://svc/cds-services";
        assert_eq!(
            a.verify(None, aud).await.map_err(|r| r.reason),
            Err(AuthFailure::MissingToken)
        );
        assert_eq!(
            a.verify(Some("Basic dXNlcjpwdw=="), aud)
                .await
                .map_err(|r| r.reason),
            Err(AuthFailure::NotBearer)
        );
    }
}
