//! Target 3: the CDS client JWT parser and verifier (`Authenticator::verify`), against one
//! trusted issuer whose ES384 key is inline (no JWK Set is ever downloaded).
//!
//! The first byte picks how the rest becomes an `Authorization` value:
//! 0. the bytes as they are (header syntax, the bearer scheme, the compact serialisation);
//! 1. three parts split at newlines, each base64url-encoded by the harness, so the fuzzer
//!    writes the JOSE header and the claims as JSON (header and claim rules);
//! 2. as 1, with `exp`/`iat` set to "now" so tokens get past the clock to the key lookup and
//!    the signature check (with the fuzzer's signature bytes);
//! 3. as 2, signed by the harness with the trusted key, so valid tokens reach the audience,
//!    tenant and replay checks and the success path.
#![no_main]

use std::sync::LazyLock;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use iort_cds::auth::{AuthMode, AuthSettings, Authenticator, TrustedIssuer};
use iort_cds_fuzz::block_on;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

/// The endpoint the tokens must name in `aud`.
const AUDIENCE: &str = "https://cds.example.org/cds-services/iort-coverage";
const ISSUER: &str = "https://ehr.example.org";
const KID: &str = "fuzz-es384";
/// A P-384 key made for this harness only; it protects nothing.
const PRIVATE_KEY_PEM: &str = "-----BEGIN PRIVATE KEY-----
MIG2AgEAMBAGByqGSM49AgEGBSuBBAAiBIGeMIGbAgEBBDCRSqgOFVBd9yVW8+sN
sIjjuCP0lHdkLPY2XrKmk5VF4W48DzbGd7wsO0yEmdgsqM6hZANiAATwRO1hZAjx
MSiDEtbsCmY2SBlD/uiS+c7nslqxUtefugwvFKLw7kuVEasdTs5b64Z0H5yv0R0U
HbTM5xAFFDRsaph61RYWTpj+ZAqevSyICLToqluPlFRwhScNX7WI114=
-----END PRIVATE KEY-----
";

static AUTHENTICATOR: LazyLock<Authenticator> = LazyLock::new(|| {
    let jwks = json!({"keys": [{"kty": "EC", "crv": "P-384", "kid": KID, "use": "sig", "alg": "ES384",
        "x": "8ETtYWQI8TEogxLW7ApmNkgZQ_7okvnO57JasVLXn7oMLxSi8O5LlRGrHU7OW-uG",
        "y": "dB-cr9EdFB20zOcQBRQ0bGqYetUWFk6Y_mQKnr0siAi06Kpbj5RUcIUnDV-1iNde"}]});
    let settings = AuthSettings {
        issuers: vec![TrustedIssuer {
            iss: ISSUER.to_owned(),
            jwks_url: None,
            jwks: Some(jwks),
            allowed_jku: Vec::new(),
            tenants: Vec::new(),
            fhir_servers: Vec::new(),
        }],
        ..AuthSettings::default()
    };
    Authenticator::new(&settings, AuthMode::Enforced).expect("the fuzz issuer is valid")
});

static SIGNING_KEY: LazyLock<EncodingKey> = LazyLock::new(|| {
    EncodingKey::from_ec_pem(PRIVATE_KEY_PEM.as_bytes()).expect("the harness key parses")
});

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// `exp`/`iat` moved to the present when the payload is a JSON object.
fn freshen(payload: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Value>(payload) {
        Ok(Value::Object(mut claims)) => {
            let t = now();
            claims.insert("iat".to_owned(), json!(t));
            claims.insert("exp".to_owned(), json!(t + 300));
            Value::Object(claims).to_string().into_bytes()
        }
        _ => payload.to_vec(),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let authorization = match mode % 4 {
        0 => String::from_utf8_lossy(rest).into_owned(),
        m => {
            let mut parts = rest.splitn(3, |&b| b == b'\n');
            let header = parts.next().unwrap_or_default();
            let payload = parts.next().unwrap_or_default();
            let signature = parts.next().unwrap_or_default();
            let payload = if m >= 2 {
                freshen(payload)
            } else {
                payload.to_vec()
            };
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header),
                URL_SAFE_NO_PAD.encode(payload)
            );
            let signature = if m == 3 {
                match jsonwebtoken::crypto::sign(input.as_bytes(), &SIGNING_KEY, Algorithm::ES384) {
                    Ok(s) => s,
                    Err(_) => return,
                }
            } else {
                URL_SAFE_NO_PAD.encode(signature)
            };
            format!("Bearer {input}.{signature}")
        }
    };
    let verdict = block_on(AUTHENTICATOR.verify(Some(&authorization), AUDIENCE));
    if let Ok(client) = verdict {
        // Only a token signed with the trusted key, by this harness, may pass.
        assert_eq!(
            mode % 4,
            3,
            "a token not signed by the harness was accepted"
        );
        assert_eq!(client.iss, ISSUER);
        assert_eq!(client.kid, KID);
    }
});
