//! Reading a CDS Hooks client JWT without trusting it yet: the `Authorization` header, the
//! compact serialization, the JOSE header and the claims, with every structural rule of the
//! CDS Hooks trust model checked here and reported as an [`AuthFailure`].
//!
//! This is done by hand (base64url + serde_json) rather than with `jsonwebtoken`'s decoders
//! for two reasons: a precise reason for the log (jsonwebtoken fails to *parse* `alg: none`, so
//! it cannot tell "none refused" from "garbage"), and numeric dates: the crate-wide
//! `arbitrary_precision` feature of serde_json (turned on by fhirbolt) changes how numbers
//! reach `deserialize_any`, which jsonwebtoken's `exp`/`nbf` parsing relies on. Signature
//! verification, the part that needs care, stays with jsonwebtoken.

use base64::Engine as _;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

/// Why a request was not authenticated. The text is for the server log; it never contains
/// the token or any claim value (the log adds the issuer and key id separately).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthFailure {
    #[error("no Authorization header")]
    MissingToken,
    #[error("Authorization header is not a single Bearer token")]
    NotBearer,
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    #[error("alg \"none\" refused")]
    AlgNone,
    #[error("symmetric (HMAC) alg refused")]
    AlgSymmetric,
    #[error("alg not accepted (ES384, ES256, RS384, RS256 are)")]
    AlgUnsupported,
    #[error("typ header is not JWT")]
    BadType,
    #[error("crit header present; no JWS extensions are supported")]
    CriticalHeader,
    #[error("kid header missing")]
    MissingKid,
    #[error("claim `{0}` missing or not of the expected type")]
    MissingClaim(&'static str),
    #[error("iss is not a trusted issuer")]
    UnknownIssuer,
    #[error("jku is not on the issuer's allow-list")]
    JkuNotAllowed,
    #[error("token has no jku and the issuer has no jwks_url or inline jwks")]
    NoKeySource,
    #[error("token expired (exp is past, beyond the clock skew)")]
    Expired,
    #[error("iat is in the future, beyond the clock skew")]
    IssuedInFuture,
    #[error("nbf is in the future, beyond the clock skew")]
    NotYetValid,
    #[error("exp is further away than max_token_lifetime_secs")]
    LifetimeTooLong,
    #[error("aud does not name the endpoint called")]
    WrongAudience,
    #[error("tenant missing or not allowed for this issuer")]
    TenantNotAllowed,
    #[error("the issuer's JWK Set could not be obtained")]
    KeysUnavailable,
    #[error("kid not found in the issuer's JWK Set")]
    UnknownKid,
    #[error("the key with this kid cannot verify this alg")]
    KeyAlgMismatch,
    #[error("signature does not verify")]
    BadSignature,
    #[error("jti already used (replay)")]
    Replayed,
    #[error("jti cache full; raise auth.jti_cache_capacity")]
    ReplayCacheFull,
}

/// Longest `Authorization` value considered. CDS Hooks client JWTs are well under 2 KiB.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Longest accepted `jti`, which is kept in memory for the token's lifetime.
const MAX_JTI_BYTES: usize = 256;

/// The token from an `Authorization: Bearer <token>` value (scheme case-insensitive).
pub(crate) fn bearer_token(authorization: &str) -> Result<&str, AuthFailure> {
    if authorization.len() > MAX_TOKEN_BYTES {
        return Err(AuthFailure::Malformed("Authorization header too long"));
    }
    let (scheme, token) = authorization
        .split_once(' ')
        .ok_or(AuthFailure::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(AuthFailure::NotBearer);
    }
    let token = token.trim_matches(' ');
    if token.is_empty() {
        return Err(AuthFailure::MissingToken);
    }
    Ok(token)
}

/// The checked JOSE header.
#[derive(Debug)]
pub(crate) struct JoseHeader {
    pub(crate) alg: Algorithm,
    pub(crate) kid: String,
    pub(crate) jku: Option<String>,
}

/// The claims this service uses, typed.
#[derive(Debug)]
pub(crate) struct Claims {
    pub(crate) iss: String,
    pub(crate) sub: Option<String>,
    pub(crate) aud: Vec<String>,
    pub(crate) exp: u64,
    pub(crate) iat: u64,
    pub(crate) nbf: Option<u64>,
    pub(crate) jti: String,
    pub(crate) tenant: Option<String>,
}

/// A JWT split and decoded but not yet verified.
#[derive(Debug)]
pub(crate) struct UnverifiedJwt<'a> {
    /// `base64url(header) "." base64url(payload)`, the bytes the signature covers.
    pub(crate) signing_input: &'a str,
    /// The third part, base64url.
    pub(crate) signature: &'a str,
    pub(crate) header: JoseHeader,
    pub(crate) claims: Claims,
}

/// The algorithms CDS Hooks recommends (ES384, RS384) and their SHA-256 siblings.
fn accepted_alg(alg: &str) -> Result<Algorithm, AuthFailure> {
    match alg {
        "ES384" => Ok(Algorithm::ES384),
        "RS384" => Ok(Algorithm::RS384),
        "ES256" => Ok(Algorithm::ES256),
        "RS256" => Ok(Algorithm::RS256),
        a if a.eq_ignore_ascii_case("none") => Err(AuthFailure::AlgNone),
        a if a.starts_with("HS") => Err(AuthFailure::AlgSymmetric),
        _ => Err(AuthFailure::AlgUnsupported),
    }
}

fn is_base64url(part: &str) -> bool {
    part.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, AuthFailure> {
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthFailure::Malformed(what))?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(AuthFailure::Malformed(what)),
    }
}

/// Splits and decodes a compact JWS and checks its header. Claims are decoded and typed but
/// not judged (that needs the issuer's configuration and the clock).
pub(crate) fn parse(token: &str) -> Result<UnverifiedJwt<'_>, AuthFailure> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthFailure::Malformed("not three dot-separated parts"));
    };
    if h.is_empty() || p.is_empty() || !is_base64url(h) || !is_base64url(p) || !is_base64url(s) {
        return Err(AuthFailure::Malformed("parts are not base64url"));
    }
    let header = parse_header(&decode_object(h, "header is not a base64url JSON object")?)?;
    if s.is_empty() {
        return Err(AuthFailure::Malformed("no signature"));
    }
    let claims = parse_claims(&decode_object(p, "payload is not a base64url JSON object")?)?;
    let signing_input = &token[..h.len() + 1 + p.len()];
    Ok(UnverifiedJwt {
        signing_input,
        signature: s,
        header,
        claims,
    })
}

fn parse_header(h: &Map<String, Value>) -> Result<JoseHeader, AuthFailure> {
    let alg = h
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(AuthFailure::Malformed("no alg"))?;
    let alg = accepted_alg(alg)?;
    match h.get("typ") {
        None => {}
        Some(Value::String(t)) if t.eq_ignore_ascii_case("JWT") => {}
        Some(_) => return Err(AuthFailure::BadType),
    }
    // RFC 7515 §4.1.11: a recipient that does not understand a listed extension must reject.
    if h.contains_key("crit") {
        return Err(AuthFailure::CriticalHeader);
    }
    let kid = match h.get("kid") {
        Some(Value::String(k)) if !k.is_empty() => k.clone(),
        _ => return Err(AuthFailure::MissingKid),
    };
    let jku = match h.get("jku") {
        None => None,
        Some(Value::String(u)) => Some(u.clone()),
        Some(_) => return Err(AuthFailure::Malformed("jku is not a string")),
    };
    Ok(JoseHeader { alg, kid, jku })
}

/// A NumericDate (RFC 7519 §2): non-negative seconds, possibly fractional (truncated).
fn numeric_date(v: &Value) -> Option<u64> {
    let n = v.as_number()?;
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(|f| f as u64)
    })
}

fn parse_claims(c: &Map<String, Value>) -> Result<Claims, AuthFailure> {
    let string = |name: &'static str| -> Result<Option<String>, AuthFailure> {
        match c.get(name) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(AuthFailure::MissingClaim(name)),
        }
    };
    let date = |name: &'static str| -> Result<Option<u64>, AuthFailure> {
        match c.get(name) {
            None => Ok(None),
            Some(v) => numeric_date(v)
                .map(Some)
                .ok_or(AuthFailure::MissingClaim(name)),
        }
    };
    let iss = string("iss")?
        .filter(|s| !s.is_empty())
        .ok_or(AuthFailure::MissingClaim("iss"))?;
    let aud = match c.get("aud") {
        Some(Value::String(a)) => vec![a.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .ok_or(AuthFailure::MissingClaim("aud"))?,
        _ => return Err(AuthFailure::MissingClaim("aud")),
    };
    let exp = date("exp")?.ok_or(AuthFailure::MissingClaim("exp"))?;
    let iat = date("iat")?.ok_or(AuthFailure::MissingClaim("iat"))?;
    let nbf = date("nbf")?;
    let jti = string("jti")?
        .filter(|j| !j.is_empty() && j.len() <= MAX_JTI_BYTES)
        .ok_or(AuthFailure::MissingClaim("jti"))?;
    Ok(Claims {
        iss,
        sub: string("sub")?,
        aud,
        exp,
        iat,
        nbf,
        jti,
        tenant: string("tenant")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn b64(v: &Value) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
    }

    fn token(header: Value, claims: Value) -> String {
        format!("{}.{}.c2ln", b64(&header), b64(&claims))
    }

    fn claims() -> Value {
        json!({"iss": "https://ehr", "aud": "https://svc/cds-services", "exp": 2000, "iat": 1000,
               "jti": "j-1"})
    }

    #[test]
    fn bearer_scheme_is_required() {
        assert_eq!(bearer_token("Bearer abc"), Ok("abc"));
        assert_eq!(bearer_token("bearer  abc"), Ok("abc"));
        assert_eq!(bearer_token("Basic abc"), Err(AuthFailure::NotBearer));
        assert_eq!(bearer_token("Bearer"), Err(AuthFailure::NotBearer));
        assert_eq!(bearer_token("Bearer "), Err(AuthFailure::MissingToken));
        assert!(matches!(
            bearer_token(&"x".repeat(20_000)),
            Err(AuthFailure::Malformed(_))
        ));
    }

    #[test]
    fn header_rules() {
        let ok = |h: Value| parse(&token(h, claims())).map(|t| t.header.alg);
        assert_eq!(
            ok(json!({"alg": "ES384", "kid": "k", "typ": "JWT"})),
            Ok(Algorithm::ES384)
        );
        assert_eq!(
            ok(json!({"alg": "RS384", "kid": "k"})),
            Ok(Algorithm::RS384)
        );
        assert_eq!(
            ok(json!({"alg": "none", "kid": "k"})).err(),
            Some(AuthFailure::AlgNone)
        );
        assert_eq!(
            ok(json!({"alg": "HS256", "kid": "k"})).err(),
            Some(AuthFailure::AlgSymmetric)
        );
        assert_eq!(
            ok(json!({"alg": "PS384", "kid": "k"})).err(),
            Some(AuthFailure::AlgUnsupported)
        );
        assert_eq!(
            ok(json!({"alg": "ES384"})).err(),
            Some(AuthFailure::MissingKid)
        );
        assert_eq!(
            ok(json!({"alg": "ES384", "kid": ""})).err(),
            Some(AuthFailure::MissingKid)
        );
        assert_eq!(
            ok(json!({"alg": "ES384", "kid": "k", "typ": "at+jwt"})).err(),
            Some(AuthFailure::BadType)
        );
        assert_eq!(
            ok(json!({"alg": "ES384", "kid": "k", "crit": ["b64"], "b64": false})).err(),
            Some(AuthFailure::CriticalHeader)
        );
    }

    #[test]
    fn structure_rules() {
        let h = b64(&json!({"alg": "ES384", "kid": "k"}));
        let c = b64(&claims());
        assert!(parse(&format!("{h}.{c}.c2ln")).is_ok());
        for bad in [
            format!("{h}.{c}"),
            format!("{h}.{c}.c2ln.x"),
            format!("{h}.{c}."),
            format!("{h}.{c}.c2=="),
            format!(".{c}.c2ln"),
            format!("{h}.bm90IGpzb24.c2ln"),
            format!("{h}.{}.c2ln", b64(&json!([1]))),
            "not a jwt".to_owned(),
        ] {
            assert!(
                matches!(parse(&bad), Err(AuthFailure::Malformed(_))),
                "{bad}"
            );
        }
        let t = format!("{h}.{c}.c2ln");
        let parsed = parse(&t).expect("parses");
        assert_eq!(parsed.signing_input, format!("{h}.{c}"));
        assert_eq!(parsed.signature, "c2ln");
    }

    #[test]
    fn claim_rules() {
        let with = |k: &str, v: Value| {
            let mut c = claims();
            c[k] = v;
            parse(&token(json!({"alg": "ES384", "kid": "k"}), c)).map(|t| t.claims)
        };
        let without = |k: &str| {
            let mut c = claims();
            c.as_object_mut().map(|o| o.remove(k));
            parse(&token(json!({"alg": "ES384", "kid": "k"}), c)).map(|t| t.claims)
        };
        for required in ["iss", "aud", "exp", "iat", "jti"] {
            assert_eq!(
                without(required).err(),
                Some(AuthFailure::MissingClaim(required))
            );
        }
        assert_eq!(
            with("exp", json!("2000")).err(),
            Some(AuthFailure::MissingClaim("exp"))
        );
        assert_eq!(
            with("iat", json!(-5)).err(),
            Some(AuthFailure::MissingClaim("iat"))
        );
        assert_eq!(with("exp", json!(2000.7)).map(|c| c.exp), Ok(2000));
        assert_eq!(with("aud", json!(["a", "b"])).map(|c| c.aud.len()), Ok(2));
        assert_eq!(
            with("aud", json!(["a", 1])).err(),
            Some(AuthFailure::MissingClaim("aud"))
        );
        assert_eq!(
            with("jti", json!("x".repeat(300))).err(),
            Some(AuthFailure::MissingClaim("jti"))
        );
        assert_eq!(
            with("tenant", json!(7)).err(),
            Some(AuthFailure::MissingClaim("tenant"))
        );
        assert_eq!(
            with("tenant", json!("t1")).map(|c| c.tenant),
            Ok(Some("t1".to_owned()))
        );
    }
}
