//! Client authentication through the real application (issue 5's "as a new user would"):
//! with an issuer configured, a valid token is accepted on each endpoint and refusals are bare
//! 401s; starting on a non-loopback address with no issuer refuses to start.

use crate::common;

use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use iort_cds::auth::TrustedIssuer;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p384::elliptic_curve::sec1::ToEncodedPoint as _;
use p384::pkcs8::EncodePrivateKey as _;
use rand_core::OsRng;
use serde_json::{Value, json};

const ISS: &str = "https://ehr.example.org";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub(crate) struct Key {
    encoding: EncodingKey,
    jwk: Value,
}

pub(crate) fn es384() -> Key {
    let secret = p384::SecretKey::random(&mut OsRng);
    let der = secret.to_pkcs8_der().expect("pkcs8");
    let point = secret.public_key().to_encoded_point(false);
    Key {
        encoding: EncodingKey::from_ec_der(der.as_bytes()),
        jwk: json!({"kty": "EC", "crv": "P-384", "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap()),
                    "kid": "k1", "use": "sig", "alg": "ES384"}),
    }
}

pub(crate) fn token(key: &Key, aud: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut header = Header::new(Algorithm::ES384);
    header.kid = Some("k1".into());
    let claims = json!({"iss": ISS, "sub": "ehr-client", "aud": aud, "iat": now, "exp": now + 300,
                        "jti": uuid::Uuid::new_v4().to_string()});
    jsonwebtoken::encode(&header, &claims, &key.encoding).unwrap()
}

/// The app, trusting `ISS` with `key` given inline.
pub(crate) async fn app_trusting(key: &Key, fhir_servers: Vec<String>) -> common::TestApp {
    let jwk = key.jwk.clone();
    common::spawn_app_with(move |s| {
        s.auth.issuers = vec![TrustedIssuer {
            iss: ISS.into(),
            jwks_url: None,
            jwks: Some(json!({"keys": [jwk]})),
            allowed_jku: vec![],
            tenants: vec![],
            fhir_servers,
        }];
    })
    .await
}

fn request_body() -> Value {
    serde_json::from_str(include_str!("../../examples/order-sign-medication.json")).unwrap()
}

#[tokio::test]
async fn with_an_issuer_every_endpoint_needs_a_valid_token() {
    let key = es384();
    let app = app_trusting(&key, vec![]).await;
    let feedback = json!({"feedback": [{"card": "c1", "outcome": "accepted", "outcomeTimestamp": "2026-11-26T10:00:00Z"}]});
    let calls: [(&str, Option<Value>); 3] = [
        ("/cds-services", None),
        ("/cds-services/iort-coverage", Some(request_body())),
        ("/cds-services/iort-coverage/feedback", Some(feedback)),
    ];
    for (path, body) in calls {
        let url = format!("{}{path}", app.address);
        let send = |auth: Option<String>| {
            let mut rb = match &body {
                Some(b) => app
                    .client
                    .post(&url)
                    .header("Content-Type", "application/json")
                    .body(b.to_string()),
                None => app.client.get(&url),
            };
            if let Some(a) = auth {
                rb = rb.header("Authorization", a);
            }
            rb.send()
        };
        let ok = send(Some(format!("Bearer {}", token(&key, &url))))
            .await
            .unwrap();
        assert_eq!(ok.status(), 200, "{path}");
        let missing = send(None).await.unwrap();
        assert_eq!(missing.status(), 401, "{path}");
        assert_eq!(missing.headers()["www-authenticate"], "Bearer");
        assert!(missing.bytes().await.unwrap().is_empty(), "bare 401");
        let wrong_aud = send(Some(format!(
            "Bearer {}",
            token(&key, "https://elsewhere/cds-services")
        )))
        .await
        .unwrap();
        assert_eq!(wrong_aud.status(), 401, "{path}");
    }
    // probes stay open
    assert_eq!(app.get("/healthz").await.status(), 200);
}

#[test]
fn a_non_loopback_listener_without_issuer_refuses_to_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_iort-cds"))
        .args(["serve", "--listen", "0.0.0.0:0"])
        .env_remove("IORT_CDS_INSECURE_NO_AUTH")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--insecure-no-auth") || err.contains("issuer"),
        "{err}"
    );
}

#[tokio::test]
async fn an_issuer_may_only_send_its_own_fhir_servers() {
    let key = es384();
    let app = app_trusting(&key, vec!["https://ehr.example.org/fhir".into()]).await;
    let url = format!("{}/cds-services/iort-coverage", app.address);
    let mut body: Value =
        serde_json::from_str(include_str!("../../examples/order-sign-iort.json")).unwrap();
    body.as_object_mut().unwrap().remove("prefetch");
    body["fhirServer"] = json!("https://elsewhere.example.org/fhir");
    let res = app
        .client
        .post(&url)
        .header("Content-Type", "application/json")
        .header("Authorization", format!("Bearer {}", token(&key, &url)))
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let oo: Value = res.json().await.unwrap();
    assert_eq!(oo["issue"][0]["code"], "security", "{oo}");
}

/// Issue 15: an integrator sees at INFO whose token was accepted (issuer and key id on the
/// request's access line), never the token.
#[tokio::test]
async fn an_accepted_call_names_its_issuer_and_key_on_the_access_line() {
    common::logs::capture();
    let key = es384();
    let app = app_trusting(&key, vec![]).await;
    let url = format!("{}/cds-services", app.address);
    let jwt = token(&key, &url);
    let res = app
        .client
        .get(&url)
        .header("Authorization", format!("Bearer {jwt}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let logs = common::logs::text();
    let line = logs
        .lines()
        .find(|l| {
            l.contains("INFO") && l.contains("client_iss") && l.contains("route=/cds-services")
        })
        .unwrap_or_else(|| panic!("no access line with the client: {logs}"));
    assert!(
        line.contains(ISS) && line.contains("client_kid=k1"),
        "{line}"
    );
    for part in jwt.split('.') {
        assert!(!logs.contains(part), "a token part was logged");
    }
}
