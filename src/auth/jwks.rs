//! The issuers' public keys: JWK Sets given inline or downloaded, parsed once into verification
//! keys, cached, and refreshed when a token names a key id we do not know (key rotation).
//!
//! Downloads only ever go to URLs taken from the configuration (an issuer's `jwks_url` or its
//! `allowed_jku` list): the set of [`RemoteKeySet`]s is fixed when the [`KeyStore`] is built, so
//! a token cannot make the service fetch anything else, and the caller checks the allow-lists
//! before asking. Every download is bounded in time (client timeout), in size (streamed with a
//! byte budget), never follows redirects (which would escape the allow-list), and is
//! rate-limited per URL (`jwks_min_refresh_interval_ms`), so a flood of tokens with made-up
//! `kid`s costs at most one request per interval. Concurrent requests that miss the cache wait
//! for a single download instead of each starting their own.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{
    AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, KeyOperations, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey};

/// What kind of key a JWK holds, which decides the algorithms it may verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyKind {
    Rsa,
    EcP256,
    EcP384,
}

impl KeyKind {
    /// Binds key types to algorithms so that a key can never be used with an algorithm of
    /// another family (the classic RSA-key-as-HMAC-secret confusion) or the wrong curve.
    fn fits(self, alg: Algorithm) -> bool {
        matches!(
            (self, alg),
            (KeyKind::Rsa, Algorithm::RS256 | Algorithm::RS384)
                | (KeyKind::EcP256, Algorithm::ES256)
                | (KeyKind::EcP384, Algorithm::ES384)
        )
    }
}

/// One public key usable for verifying CDS client JWTs.
pub(crate) struct VerificationKey {
    pub(crate) kid: String,
    /// The JWK's own `alg`, when it states one: the token's `alg` must then be exactly it.
    alg: Option<Algorithm>,
    kind: KeyKind,
    pub(crate) key: DecodingKey,
}

impl VerificationKey {
    pub(crate) fn fits(&self, alg: Algorithm) -> bool {
        self.kind.fits(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// The usable keys of one JWK Set. Keys we cannot or must not use (symmetric keys, encryption
/// keys, unsupported curves, RSA under 2048 bits, no `kid`) are left out, not errors: issuers
/// often publish such keys next to their signing keys.
#[derive(Default)]
pub(crate) struct KeySet {
    keys: Vec<VerificationKey>,
}

/// Minimum RSA modulus accepted (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

impl KeySet {
    /// Parses a JWK Set document (`{"keys": [...]}`). Errors only when the document itself is
    /// not a JWK Set; unusable keys are skipped (and logged at debug level by `kid`).
    pub(crate) fn from_json(doc: &serde_json::Value) -> Result<KeySet, String> {
        let keys = doc
            .get("keys")
            .and_then(serde_json::Value::as_array)
            .ok_or_else(|| "is not a JWK Set (an object with a \"keys\" array)".to_owned())?;
        let mut set = KeySet::default();
        for raw in keys {
            match usable_key(raw) {
                Ok(key) => set.keys.push(key),
                Err(why) => {
                    let kid = raw.get("kid").and_then(serde_json::Value::as_str);
                    tracing::debug!(kid = ?kid, why, "JWK skipped");
                }
            }
        }
        Ok(set)
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid == kid)
    }

    /// The key with this `kid` that may verify `alg`, if any.
    pub(crate) fn find(&self, kid: &str, alg: Algorithm) -> Option<&VerificationKey> {
        self.keys.iter().find(|k| k.kid == kid && k.fits(alg))
    }
}

fn usable_key(raw: &serde_json::Value) -> Result<VerificationKey, &'static str> {
    let jwk: Jwk = serde_json::from_value(raw.clone()).map_err(|_| "not a JWK")?;
    let kid = jwk
        .common
        .key_id
        .clone()
        .filter(|k| !k.is_empty())
        .ok_or("no kid")?;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("use is not sig");
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("key_ops lacks verify");
    }
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(KeyAlgorithm::ES256) => Some(Algorithm::ES256),
        Some(KeyAlgorithm::ES384) => Some(Algorithm::ES384),
        Some(KeyAlgorithm::RS256) => Some(Algorithm::RS256),
        Some(KeyAlgorithm::RS384) => Some(Algorithm::RS384),
        Some(_) => return Err("alg is not one this service accepts"),
    };
    let kind = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => {
            let n = b64url(&p.n).ok_or("RSA modulus is not base64url")?;
            if bit_length(&n) < MIN_RSA_BITS {
                return Err("RSA key shorter than 2048 bits");
            }
            KeyKind::Rsa
        }
        AlgorithmParameters::EllipticCurve(p) => {
            let (kind, len) = match p.curve {
                EllipticCurve::P256 => (KeyKind::EcP256, 32),
                EllipticCurve::P384 => (KeyKind::EcP384, 48),
                _ => return Err("unsupported curve"),
            };
            let width = |c: &str| b64url(c).map(|b| b.len());
            if width(&p.x) != Some(len) || width(&p.y) != Some(len) {
                return Err("EC coordinates have the wrong length for the curve");
            }
            kind
        }
        _ => return Err("key type not allowed (only EC and RSA)"),
    };
    if let Some(a) = alg
        && !kind.fits(a)
    {
        return Err("alg does not match the key type");
    }
    let key = DecodingKey::from_jwk(&jwk).map_err(|_| "key material is invalid")?;
    Ok(VerificationKey {
        kid,
        alg,
        kind,
        key,
    })
}

fn b64url(s: &str) -> Option<Vec<u8>> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s)
        .ok()
}

/// Bit length of a big-endian unsigned integer (leading zero bytes and bits do not count).
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.iter().position(|b| *b != 0) {
        None => 0,
        Some(i) => (bytes.len() - i) * 8 - bytes[i].leading_zeros() as usize,
    }
}

/// Why no key set could be produced for a token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyLookupError {
    /// The set was obtained (possibly just refreshed) but has no key with this `kid`.
    UnknownKid,
    /// The set has never been downloaded successfully (the issuer is unreachable or serves
    /// garbage) and a new attempt is not due yet.
    Unavailable,
}

/// Limits for downloads, from the settings.
pub(crate) struct FetchLimits {
    pub(crate) timeout: Duration,
    pub(crate) max_bytes: usize,
    pub(crate) ttl: Duration,
    pub(crate) min_refresh_interval: Duration,
}

struct Cached {
    keys: Arc<KeySet>,
    fetched_at: Instant,
}

/// A JWK Set at one configured URL, with its cache and download bookkeeping.
struct RemoteKeySet {
    cached: RwLock<Option<Arc<Cached>>>,
    /// When the last download was started (successful or not): the rate limit.
    last_attempt: Mutex<Option<Instant>>,
    /// Held while downloading, so concurrent cache misses share one download.
    download: tokio::sync::Mutex<()>,
}

impl RemoteKeySet {
    fn new() -> Self {
        Self {
            cached: RwLock::new(None),
            last_attempt: Mutex::new(None),
            download: tokio::sync::Mutex::new(()),
        }
    }

    fn snapshot(&self) -> Option<Arc<Cached>> {
        self.cached
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// All downloadable key sets, keyed by URL, plus the HTTP client that fetches them.
pub(crate) struct KeyStore {
    /// `None` only when no URL is configured (nothing to fetch).
    http: Option<reqwest::Client>,
    limits: FetchLimits,
    remotes: HashMap<String, RemoteKeySet>,
}

impl KeyStore {
    /// `urls` are every JWK Set URL the configuration allows; no other URL is ever fetched.
    pub(crate) fn new(
        urls: impl IntoIterator<Item = String>,
        limits: FetchLimits,
    ) -> Result<Self, String> {
        let remotes: HashMap<String, RemoteKeySet> =
            urls.into_iter().map(|u| (u, RemoteKeySet::new())).collect();
        if remotes.is_empty() {
            return Ok(Self {
                http: None,
                limits,
                remotes,
            });
        }
        let http = reqwest::Client::builder()
            .timeout(limits.timeout)
            .connect_timeout(limits.timeout)
            // A redirect could lead anywhere; an issuer must publish its set at the configured URL.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "iort-cds/",
                env!("CARGO_PKG_VERSION"),
                " (JWK Set fetch)"
            ))
            .build()
            .map_err(|e| format!("cannot build the HTTP client for JWK Set downloads: {e}"))?;
        Ok(Self {
            http: Some(http),
            limits,
            remotes,
        })
    }

    /// A store with no URLs (authentication disabled or inline keys only).
    pub(crate) fn empty() -> Self {
        let limits = FetchLimits {
            timeout: Duration::from_secs(1),
            max_bytes: 0,
            ttl: Duration::from_secs(1),
            min_refresh_interval: Duration::from_secs(1),
        };
        Self {
            http: None,
            limits,
            remotes: HashMap::new(),
        }
    }

    /// Every configured URL (for warming the cache at startup).
    pub(crate) fn urls(&self) -> impl Iterator<Item = &str> {
        self.remotes.keys().map(String::as_str)
    }

    /// The key set at `url` that holds `kid`, downloading it when it is missing, older than the
    /// TTL, or lacks `kid` (rotation), as far as the rate limit allows. A stale set is still
    /// used when a refresh fails, so an issuer's brief outage does not lock its clients out.
    /// `url` must be one given to [`KeyStore::new`]; any other is reported as unavailable.
    pub(crate) async fn key_set(
        &self,
        url: &str,
        kid: &str,
    ) -> Result<Arc<KeySet>, KeyLookupError> {
        let Some(remote) = self.remotes.get(url) else {
            tracing::error!(url, "JWK Set URL is not configured; refusing to fetch it");
            return Err(KeyLookupError::Unavailable);
        };
        if let Some(hit) = self.fresh_hit(remote, kid) {
            return Ok(hit);
        }
        let _one_download = remote.download.lock().await;
        // Another request may have refreshed the set while this one waited.
        if let Some(hit) = self.fresh_hit(remote, kid) {
            return Ok(hit);
        }
        let now = Instant::now();
        let due = {
            let mut last = remote
                .last_attempt
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            let due =
                last.is_none_or(|t| now.duration_since(t) >= self.limits.min_refresh_interval);
            if due {
                *last = Some(now);
            }
            due
        };
        if due {
            match self.download(url).await {
                Ok(keys) => {
                    tracing::info!(url, keys = keys.len(), "JWK Set downloaded");
                    let fresh = Cached {
                        keys: Arc::new(keys),
                        fetched_at: Instant::now(),
                    };
                    *remote
                        .cached
                        .write()
                        .unwrap_or_else(PoisonError::into_inner) = Some(Arc::new(fresh));
                }
                Err(why) => tracing::warn!(url, error = %why, "JWK Set download failed"),
            }
        } else {
            tracing::debug!(url, "JWK Set refresh skipped: rate limit");
        }
        match remote.snapshot() {
            Some(c) if c.keys.has_kid(kid) => Ok(c.keys.clone()),
            Some(_) => Err(KeyLookupError::UnknownKid),
            None => Err(KeyLookupError::Unavailable),
        }
    }

    fn fresh_hit(&self, remote: &RemoteKeySet, kid: &str) -> Option<Arc<KeySet>> {
        let c = remote.snapshot()?;
        (c.fetched_at.elapsed() < self.limits.ttl && c.keys.has_kid(kid)).then(|| c.keys.clone())
    }

    /// Downloads the set at `url` unless a download happened within the rate-limit interval
    /// (used to warm the cache at startup). Returns whether a usable set is now cached.
    pub(crate) async fn warm(&self, url: &str) -> bool {
        // Any kid works: a miss triggers the download; the answer is then in the cache.
        let _ = self.key_set(url, "").await;
        self.remotes
            .get(url)
            .and_then(RemoteKeySet::snapshot)
            .is_some()
    }

    async fn download(&self, url: &str) -> Result<KeySet, String> {
        let http = self
            .http
            .as_ref()
            .ok_or("no HTTP client (no URL configured)")?;
        let mut resp = http
            .get(url)
            .header(
                reqwest::header::ACCEPT,
                "application/jwk-set+json, application/json",
            )
            .send()
            .await
            .map_err(|e| describe_reqwest_error(&e))?;
        if !resp.status().is_success() {
            return Err(format!("HTTP status {}", resp.status()));
        }
        let max = self.limits.max_bytes;
        if resp.content_length().is_some_and(|len| len > max as u64) {
            return Err(format!("body larger than {max} bytes"));
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| describe_reqwest_error(&e))? {
            if body.len() + chunk.len() > max {
                return Err(format!("body larger than {max} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        let doc: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("body is not JSON: {e}"))?;
        KeySet::from_json(&doc)
    }
}

fn describe_reqwest_error(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        format!("cannot connect: {e}")
    } else {
        e.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    // A valid P-256 point (the generator) and a 2048-bit-long modulus of the right encoding.
    const P256_X: &str = "axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY";
    const P256_Y: &str = "T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU";

    fn rsa_n(bytes: usize) -> String {
        use base64::Engine as _;
        let mut n = vec![0xc5u8; bytes];
        n[bytes - 1] = 0x01;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(n)
    }

    #[test]
    fn keeps_only_signing_keys_with_kid() {
        let doc = json!({"keys": [
            {"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": "ec", "use": "sig"},
            {"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y},
            {"kty": "EC", "crv": "P-256", "x": P256_X, "y": P256_Y, "kid": "enc", "use": "enc"},
            {"kty": "oct", "k": "c2VjcmV0", "kid": "hmac"},
            {"kty": "RSA", "n": rsa_n(256), "e": "AQAB", "kid": "rsa", "alg": "RS384"},
            {"kty": "RSA", "n": rsa_n(128), "e": "AQAB", "kid": "weak"},
            {"kty": "RSA", "n": rsa_n(256), "e": "AQAB", "kid": "oaep", "alg": "RSA-OAEP"},
            {"kty": "EC", "crv": "P-384", "x": P256_X, "y": P256_Y, "kid": "short"},
            {"kty": "OKP", "crv": "Ed25519", "x": P256_X, "kid": "ed"},
            "not even an object"
        ]});
        let set = KeySet::from_json(&doc).expect("a JWK Set");
        assert_eq!(set.len(), 2);
        assert!(set.find("ec", Algorithm::ES256).is_some());
        assert!(
            set.find("ec", Algorithm::ES384).is_none(),
            "curve is bound to the algorithm"
        );
        assert!(set.find("ec", Algorithm::RS256).is_none());
        assert!(set.find("rsa", Algorithm::RS384).is_some());
        assert!(
            set.find("rsa", Algorithm::RS256).is_none(),
            "the JWK's own alg is binding"
        );
        assert!(!set.has_kid("hmac"));
        assert!(!set.has_kid("weak"));
    }

    #[test]
    fn rejects_documents_that_are_not_sets() {
        assert!(KeySet::from_json(&json!({"kty": "EC"})).is_err());
        assert!(KeySet::from_json(&json!([])).is_err());
        assert!(KeySet::from_json(&json!({"keys": {}})).is_err());
    }

    #[tokio::test]
    async fn unconfigured_urls_are_never_fetched() {
        let limits = FetchLimits {
            timeout: Duration::from_millis(100),
            max_bytes: 1024,
            ttl: Duration::from_secs(60),
            min_refresh_interval: Duration::from_secs(60),
        };
        let store =
            KeyStore::new(["https://ehr.example.org/jwks".to_owned()], limits).expect("client");
        assert_eq!(
            store.key_set("http://127.0.0.1:9/other", "k").await.err(),
            Some(KeyLookupError::Unavailable)
        );
    }
}
