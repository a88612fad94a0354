//! End-to-end tests of CDS client authentication: a real actix-web server on 127.0.0.1:0 with
//! the `require_jwt` middleware and a dummy handler, the issuers' JWK Sets served by wiremock,
//! and ES384 / RS384 keys generated here. Every refusal must be a bare 401 with
//! `WWW-Authenticate: Bearer` and an empty body.

use crate::common;

use std::net::TcpListener;
use std::sync::LazyLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use actix_web::middleware::from_fn;
use actix_web::{App, HttpResponse, HttpServer, web};
use base64::Engine as _;
use iort_cds::auth::{
    self, AuthFailure, AuthMode, AuthSettings, Authenticator, TrustedIssuer, VerifiedClient,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use p384::elliptic_curve::sec1::ToEncodedPoint as _;
use p384::pkcs8::EncodePrivateKey as _;
use rand_core::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::{Value, json};
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const ISS: &str = "https://ehr.example.org";
const SERVICE: &str = "/cds-services/iort-coverage";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A signing key with its kid, algorithm and public JWK.
struct TestKey {
    kid: String,
    alg: Algorithm,
    encoding: EncodingKey,
    jwk: Value,
}

impl TestKey {
    fn es384(kid: &str) -> Self {
        let secret = p384::SecretKey::random(&mut OsRng);
        let der = secret.to_pkcs8_der().expect("pkcs8");
        let point = secret.public_key().to_encoded_point(false);
        let (x, y) = (point.x().expect("x"), point.y().expect("y"));
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::ES384,
            encoding: EncodingKey::from_ec_der(der.as_bytes()),
            jwk: json!({"kty": "EC", "crv": "P-384", "x": b64(x), "y": b64(y), "kid": kid,
                        "use": "sig", "alg": "ES384"}),
        }
    }

    fn rs384(kid: &str) -> Self {
        // RSA key generation is slow in debug builds: one key per test binary.
        static RSA: LazyLock<rsa::RsaPrivateKey> =
            LazyLock::new(|| rsa::RsaPrivateKey::new(&mut OsRng, 2048).expect("rsa keygen"));
        let der = RSA.to_pkcs1_der().expect("pkcs1");
        Self {
            kid: kid.to_owned(),
            alg: Algorithm::RS384,
            encoding: EncodingKey::from_rsa_der(der.as_bytes()),
            jwk: json!({"kty": "RSA", "n": b64(&RSA.n().to_bytes_be()),
                        "e": b64(&RSA.e().to_bytes_be()), "kid": kid, "alg": "RS384"}),
        }
    }

    fn sign(&self, claims: &Value) -> String {
        self.sign_with(claims, None)
    }

    fn sign_with(&self, claims: &Value, jku: Option<&str>) -> String {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        header.jku = jku.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, &self.encoding).expect("sign")
    }
}

fn jwk_set(keys: &[&TestKey]) -> Value {
    json!({"keys": keys.iter().map(|k| k.jwk.clone()).collect::<Vec<_>>()})
}

/// Serves `set` at `/jwks.json` (replacing whatever was mounted before).
async fn serve_jwks(server: &MockServer, set: Value) {
    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/jwks.json"))
        .respond_with(ResponseTemplate::new(200).set_body_json(set))
        .mount(server)
        .await;
}

async fn requests_to(server: &MockServer) -> usize {
    server
        .received_requests()
        .await
        .map(|r| r.len())
        .unwrap_or(0)
}

/// The service under test plus the issuer's key server.
struct Harness {
    auth: Authenticator,
    base: String,
    jwks: MockServer,
    http: reqwest::Client,
    server: actix_web::dev::ServerHandle,
}

impl Harness {
    /// Starts the JWK Set server with `keys`, then the service with the settings `tweak`
    /// produces from a default single-issuer configuration.
    async fn start(keys: &[&TestKey], tweak: impl FnOnce(&mut AuthSettings, &str)) -> Self {
        let jwks = MockServer::start().await;
        serve_jwks(&jwks, jwk_set(keys)).await;
        let jwks_url = format!("{}/jwks.json", jwks.uri());
        let mut settings = AuthSettings {
            issuers: vec![TrustedIssuer {
                iss: ISS.into(),
                jwks_url: Some(jwks_url.clone()),
                jwks: None,
                allowed_jku: vec![],
                tenants: vec![],
                fhir_servers: vec!["https://ehr.example.org/fhir".into()],
            }],
            ..AuthSettings::default()
        };
        tweak(&mut settings, &jwks_url);
        let mode = if settings.issuers.is_empty() {
            AuthMode::Disabled
        } else {
            AuthMode::Enforced
        };
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let local = listener.local_addr().expect("addr");
        let authenticator =
            Authenticator::listening(&settings, mode, Some(local)).expect("valid settings");
        Self::serve_on(listener, authenticator, jwks).await
    }

    async fn serve(authenticator: Authenticator, jwks: MockServer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        Self::serve_on(listener, authenticator, jwks).await
    }

    async fn serve_on(
        listener: TcpListener,
        authenticator: Authenticator,
        jwks: MockServer,
    ) -> Self {
        let port = listener.local_addr().expect("addr").port();
        capture_logs();
        let data = web::Data::new(authenticator.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .wrap(from_fn(auth::require_jwt))
                .route("/cds-services", web::get().to(echo_client))
                .route(SERVICE, web::post().to(echo_client))
                .route("/healthz", web::get().to(HttpResponse::Ok))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Self {
            auth: authenticator,
            base: format!("http://127.0.0.1:{port}"),
            jwks,
            http: reqwest::Client::new(),
            server: handle,
        }
    }

    fn aud(&self, path: &str) -> String {
        format!("{}{}", self.base, path)
    }

    /// Claims a well-behaved client sends to the service endpoint.
    fn claims(&self) -> Value {
        let t = now();
        json!({"iss": ISS, "sub": "client-1", "aud": self.aud(SERVICE), "exp": t + 300,
               "iat": t, "jti": uuid::Uuid::new_v4().to_string()})
    }

    async fn call(&self, authorization: Option<&str>) -> reqwest::Response {
        let mut req = self
            .http
            .post(format!("{}{SERVICE}", self.base))
            .json(&json!({}));
        if let Some(value) = authorization {
            req = req.header("Authorization", value);
        }
        req.send().await.expect("request")
    }

    async fn call_with(&self, token: &str) -> reqwest::Response {
        self.call(Some(&format!("Bearer {token}"))).await
    }

    /// Asserts that `token` is refused for `reason` (asked of the authenticator directly, since
    /// the HTTP answer deliberately does not tell) and that the service answers a bare 401.
    async fn refused(&self, token: &str, reason: AuthFailure) {
        let verdict = self
            .auth
            .verify(Some(&format!("Bearer {token}")), &self.aud(SERVICE))
            .await;
        assert_eq!(verdict.err().map(|r| r.reason), Some(reason));
        assert_unauthorized(self.call_with(token).await).await;
    }

    async fn stop(self) {
        self.server.stop(false).await;
    }
}

fn capture_logs() {
    common::logs::capture();
}

fn logs() -> String {
    common::logs::text()
}

/// The dummy handler: shows what the middleware put into the request.
async fn echo_client(client: Option<VerifiedClient>) -> HttpResponse {
    HttpResponse::Ok().json(client.map(|c| {
        json!({"iss": c.iss, "sub": c.sub, "tenant": c.tenant, "alg": c.alg, "kid": c.kid,
               "fhir_ok": c.allows_fhir_server("https://ehr.example.org/fhir/")})
    }))
}

async fn assert_unauthorized(resp: reqwest::Response) {
    assert_eq!(resp.status(), 401);
    assert_eq!(
        resp.headers()
            .get("www-authenticate")
            .and_then(|v| v.to_str().ok()),
        Some("Bearer")
    );
    assert_eq!(resp.text().await.expect("body"), "");
}

async fn assert_ok(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    resp.json().await.expect("json body")
}

#[tokio::test]
async fn valid_es384_token_is_accepted_and_client_is_in_the_request() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let body = assert_ok(h.call_with(&key.sign(&h.claims())).await).await;
    assert_eq!(body["iss"], ISS);
    assert_eq!(body["sub"], "client-1");
    assert_eq!(body["alg"], "ES384");
    assert_eq!(body["kid"], "ec-1");
    assert_eq!(body["fhir_ok"], true);

    // Discovery is protected too, with its own URL as the audience.
    let mut claims = h.claims();
    claims["aud"] = json!(h.aud("/cds-services"));
    let resp = h
        .http
        .get(format!("{}/cds-services", h.base))
        .bearer_auth(key.sign(&claims))
        .send()
        .await
        .expect("request");
    assert_ok(resp).await;
    assert_eq!(requests_to(&h.jwks).await, 1, "the JWK Set is cached");
    h.stop().await;
}

#[tokio::test]
async fn valid_rs384_token_is_accepted() {
    let key = TestKey::rs384("rsa-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let body = assert_ok(h.call_with(&key.sign(&h.claims())).await).await;
    assert_eq!(body["alg"], "RS384");
    h.stop().await;
}

#[tokio::test]
async fn aud_may_be_an_array_and_small_clock_drift_is_tolerated() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let mut claims = h.claims();
    claims["aud"] = json!(["https://other.example/x", h.aud(SERVICE)]);
    claims["iat"] = json!(now() + 30);
    claims["exp"] = json!(now() - 30);
    assert_ok(h.call_with(&key.sign(&claims)).await).await;
    h.stop().await;
}

#[tokio::test]
async fn missing_and_malformed_tokens_are_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    assert_unauthorized(h.call(None).await).await;
    let verdict = h.auth.verify(None, &h.aud(SERVICE)).await;
    assert_eq!(
        verdict.err().map(|r| r.reason),
        Some(AuthFailure::MissingToken)
    );
    h.refused(
        "not-a-jwt",
        AuthFailure::Malformed("not three dot-separated parts"),
    )
    .await;
    for bad in [
        "Bearer",
        "Bearer not-a-jwt",
        "Bearer a.b.c",
        "Basic dXNlcjpwYXNz",
        "Bearer ....",
    ] {
        assert_unauthorized(h.call(Some(bad)).await).await;
    }
    let token = key.sign(&h.claims());
    assert_unauthorized(h.call(Some(&format!("Bearer {token}x!"))).await).await;
    assert_eq!(requests_to(&h.jwks).await, 0, "nothing fetched for garbage");
    h.stop().await;
}

#[tokio::test]
async fn expired_token_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let mut claims = h.claims();
    claims["iat"] = json!(now() - 4000);
    claims["exp"] = json!(now() - 3600);
    h.refused(&key.sign(&claims), AuthFailure::Expired).await;
    h.stop().await;
}

#[tokio::test]
async fn iat_in_the_future_beyond_the_skew_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| s.clock_skew_secs = 60).await;
    let mut claims = h.claims();
    claims["iat"] = json!(now() + 120);
    claims["exp"] = json!(now() + 420);
    h.refused(&key.sign(&claims), AuthFailure::IssuedInFuture)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn token_living_longer_than_allowed_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| s.max_token_lifetime_secs = 600).await;
    let mut claims = h.claims();
    claims["exp"] = json!(now() + 7200);
    h.refused(&key.sign(&claims), AuthFailure::LifetimeTooLong)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    for aud in [
        json!(h.aud("/cds-services")),
        json!(h.aud("/cds-services/other-service")),
        json!(format!("https://elsewhere.example.org{SERVICE}")),
        json!([]),
    ] {
        let mut claims = h.claims();
        claims["aud"] = aud;
        h.refused(&key.sign(&claims), AuthFailure::WrongAudience)
            .await;
    }
    h.stop().await;
}

#[tokio::test]
async fn public_base_url_defines_the_audience() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| {
        s.public_base_url = Some("https://cds.example.org/iort/".into());
    })
    .await;
    let mut claims = h.claims();
    assert_unauthorized(h.call_with(&key.sign(&claims)).await).await;
    claims["aud"] = json!(format!("https://cds.example.org/iort{SERVICE}"));
    claims["jti"] = json!("behind-proxy");
    assert_ok(h.call_with(&key.sign(&claims)).await).await;
    h.stop().await;
}

/// Issue 14, item 1: a token minted for another CDS service, replayed here with forwarding
/// headers that make the request look addressed to that service, is refused: the audience
/// comes from configuration (here the loopback listener), never from the request.
#[tokio::test]
async fn the_audience_ignores_host_and_forwarding_headers() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let foreign = "https://other-cds.example/cds-services/iort-coverage";
    let spoofs: [&[(&str, &str)]; 5] = [
        &[
            ("Host", "other-cds.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        &[
            ("X-Forwarded-Host", "other-cds.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        &[("Forwarded", "host=other-cds.example;proto=https")],
        &[
            ("Host", "other-cds.example"),
            (
                "Forwarded",
                "for=192.0.2.1;host=other-cds.example;proto=https",
            ),
            ("X-Forwarded-Host", "other-cds.example"),
            ("X-Forwarded-Proto", "https"),
        ],
        &[("X-Original-Host", "other-cds.example")],
    ];
    for (i, headers) in spoofs.iter().enumerate() {
        let mut claims = h.claims();
        claims["aud"] = json!(foreign);
        let mut req = h
            .http
            .post(format!("{}{SERVICE}", h.base))
            .header("Authorization", format!("Bearer {}", key.sign(&claims)))
            .json(&json!({}));
        for (name, value) in *headers {
            req = req.header(*name, *value);
        }
        let resp = req.send().await.expect("request");
        assert_eq!(resp.status(), 401, "spoof {i} was accepted");
    }
    h.stop().await;
}

/// Without `public_base_url`, a loopback listener answers to the names a local client uses
/// for it: 127.0.0.1, localhost and [::1] on its port, and nothing else.
#[tokio::test]
async fn a_loopback_listener_accepts_its_own_names_only() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let port = h.base.rsplit(':').next().unwrap().to_owned();
    for base in [
        format!("http://127.0.0.1:{port}"),
        format!("http://localhost:{port}"),
        format!("http://[::1]:{port}"),
    ] {
        let mut claims = h.claims();
        claims["aud"] = json!(format!("{base}{SERVICE}"));
        assert_ok(h.call_with(&key.sign(&claims)).await).await;
    }
    for base in [
        format!("https://127.0.0.1:{port}"),
        "http://127.0.0.1:1".to_owned(),
        format!("http://localhost.example:{port}"),
    ] {
        let mut claims = h.claims();
        claims["aud"] = json!(format!("{base}{SERVICE}"));
        assert_unauthorized(h.call_with(&key.sign(&claims)).await).await;
    }
    h.stop().await;
}

#[test]
fn beyond_loopback_authentication_needs_a_public_base_url() {
    let settings = AuthSettings {
        issuers: vec![TrustedIssuer {
            iss: ISS.into(),
            jwks_url: Some("https://ehr.example.org/jwks.json".into()),
            jwks: None,
            allowed_jku: vec![],
            tenants: vec![],
            fhir_servers: vec![],
        }],
        ..AuthSettings::default()
    };
    let anywhere: std::net::SocketAddr = "0.0.0.0:8080".parse().unwrap();
    let e = auth::auth_mode(&[anywhere], &settings, false).expect_err("no audience");
    assert!(e.contains("public_base_url"), "{e}");
    let loopback: std::net::SocketAddr = "127.0.0.1:8080".parse().unwrap();
    assert_eq!(
        auth::auth_mode(&[loopback], &settings, false),
        Ok(AuthMode::Enforced)
    );
    let behind = AuthSettings {
        public_base_url: Some("https://cds.example.org".into()),
        ..settings
    };
    assert_eq!(
        auth::auth_mode(&[anywhere], &behind, false),
        Ok(AuthMode::Enforced)
    );
}

#[tokio::test]
async fn unknown_issuer_is_refused_without_fetching() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let mut claims = h.claims();
    claims["iss"] = json!("https://intruder.example.org");
    h.refused(&key.sign(&claims), AuthFailure::UnknownIssuer)
        .await;
    assert_eq!(requests_to(&h.jwks).await, 0);
    h.stop().await;
}

#[tokio::test]
async fn alg_none_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let header = json!({"alg": "none", "typ": "JWT", "kid": "ec-1"});
    let payload = h.claims();
    let unsigned = format!(
        "{}.{}.",
        b64(header.to_string().as_bytes()),
        b64(payload.to_string().as_bytes())
    );
    h.refused(&unsigned, AuthFailure::AlgNone).await;
    // The same with a signature of the real key glued on.
    let signed = key.sign(&payload);
    let sig = signed.rsplit('.').next().unwrap_or_default();
    h.refused(&format!("{unsigned}{sig}"), AuthFailure::AlgNone)
        .await;
    h.stop().await;
}

#[tokio::test]
async fn hs256_is_refused_even_keyed_with_the_public_key() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    // Key confusion attempt: the public JWK as the HMAC secret.
    let secret = key.jwk.to_string();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some("ec-1".into());
    let token = jsonwebtoken::encode(
        &header,
        &h.claims(),
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("sign");
    h.refused(&token, AuthFailure::AlgSymmetric).await;
    h.stop().await;
}

#[tokio::test]
async fn replayed_jti_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let token = key.sign(&h.claims());
    assert_ok(h.call_with(&token).await).await;
    h.refused(&token, AuthFailure::Replayed).await;
    // A new token reusing the jti is a replay too.
    let mut claims = h.claims();
    let first: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap_or_default())
            .expect("payload"),
    )
    .expect("json");
    claims["jti"] = first["jti"].clone();
    h.refused(&key.sign(&claims), AuthFailure::Replayed).await;
    h.stop().await;
}

#[tokio::test]
async fn unknown_kid_is_refused_after_one_rate_limited_refresh() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| s.jwks_min_refresh_interval_ms = 1_000).await;
    // Signed up front so the flood below is quick compared with the 1 s interval.
    let stranger = TestKey::es384("nobody-knows-me").sign(&h.claims());
    let flood: Vec<String> = (0..5)
        .map(|i| TestKey::es384(&format!("made-up-{i}")).sign(&h.claims()))
        .collect();
    assert_ok(h.call_with(&key.sign(&h.claims())).await).await;
    assert_eq!(requests_to(&h.jwks).await, 1);
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    h.refused(&stranger, AuthFailure::UnknownKid).await;
    assert_eq!(
        requests_to(&h.jwks).await,
        2,
        "one refresh for the unknown kid"
    );

    // A flood of made-up kids right after does not reach the issuer again.
    for token in &flood {
        assert_unauthorized(h.call_with(token).await).await;
    }
    assert_eq!(requests_to(&h.jwks).await, 2, "rate limited");
    // The known key keeps working meanwhile.
    assert_ok(h.call_with(&key.sign(&h.claims())).await).await;
    h.stop().await;
}

#[tokio::test]
async fn key_rotation_triggers_one_refresh_then_succeeds() {
    let old = TestKey::es384("2024-key");
    let new = TestKey::rs384("2025-key");
    let h = Harness::start(&[&old], |s, _| s.jwks_min_refresh_interval_ms = 300).await;
    assert_ok(h.call_with(&old.sign(&h.claims())).await).await;
    serve_jwks(&h.jwks, jwk_set(&[&old, &new])).await; // resets the request log too
    tokio::time::sleep(Duration::from_millis(400)).await;

    assert_ok(h.call_with(&new.sign(&h.claims())).await).await;
    assert_ok(h.call_with(&new.sign(&h.claims())).await).await;
    assert_ok(h.call_with(&old.sign(&h.claims())).await).await;
    assert_eq!(requests_to(&h.jwks).await, 1, "exactly one refresh");
    h.stop().await;
}

#[tokio::test]
async fn concurrent_first_calls_share_one_download() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let tokens: Vec<String> = (0..6).map(|_| key.sign(&h.claims())).collect();
    let calls = tokens.iter().map(|t| h.call_with(t));
    for resp in futures_util::future::join_all(calls).await {
        assert_eq!(resp.status(), 200);
    }
    assert_eq!(requests_to(&h.jwks).await, 1);
    h.stop().await;
}

/// Issue 14, item 2: a `jku` off the list is never fetched; the pinned keys decide. A token
/// signed with the attacker's key (published at that `jku`) is refused, one signed with the
/// issuer's pinned key is accepted whatever `jku` it names.
#[tokio::test]
async fn jku_off_the_allow_list_is_never_fetched_and_pinned_keys_decide() {
    let key = TestKey::es384("ec-1");
    let attacker = TestKey::es384("ec-1");
    let evil = MockServer::start().await;
    serve_jwks(&evil, jwk_set(&[&attacker])).await;
    let evil_jku = format!("{}/jwks.json", evil.uri());
    let h = Harness::start(&[&key], |_, _| {}).await;
    h.refused(
        &attacker.sign_with(&h.claims(), Some(&evil_jku)),
        AuthFailure::BadSignature,
    )
    .await;
    let other_kid = TestKey::es384("attacker-kid");
    h.refused(
        &other_kid.sign_with(&h.claims(), Some(&evil_jku)),
        AuthFailure::UnknownKid,
    )
    .await;
    assert_ok(
        h.call_with(&key.sign_with(&h.claims(), Some(&evil_jku)))
            .await,
    )
    .await;
    assert_eq!(requests_to(&evil).await, 0, "the jku was never fetched");
    h.stop().await;
}

/// The CDS Hooks Sandbox always sends a `jku`. An integrator without internet access pins its
/// keys inline: the token verifies against them, and neither the `jku` (allow-listed or not)
/// nor anything else is fetched.
#[tokio::test]
async fn inline_pinned_keys_accept_a_token_with_a_jku() {
    let key = TestKey::es384("sandbox-key");
    let sandbox = MockServer::start().await;
    serve_jwks(&sandbox, jwk_set(&[&key])).await;
    let jku = format!("{}/.well-known/jwks.json", sandbox.uri());
    for listed in [false, true] {
        let (set, jku_setting) = (jwk_set(&[&key]), jku.clone());
        let h = Harness::start(&[&key], move |s, _| {
            s.issuers[0].jwks_url = None;
            s.issuers[0].jwks = Some(set);
            if listed {
                s.issuers[0].allowed_jku = vec![jku_setting];
            }
        })
        .await;
        assert_ok(h.call_with(&key.sign_with(&h.claims(), Some(&jku))).await).await;
        let stranger = TestKey::es384("sandbox-key");
        h.refused(
            &stranger.sign_with(&h.claims(), Some(&jku)),
            AuthFailure::BadSignature,
        )
        .await;
        h.stop().await;
    }
    assert_eq!(
        requests_to(&sandbox).await,
        0,
        "pinned keys: nothing fetched"
    );
}

/// An issuer known only by `allowed_jku` (no pinned keys): a token must name one of them.
#[tokio::test]
async fn an_issuer_with_only_allowed_jku_needs_a_listed_jku() {
    let key = TestKey::es384("ec-1");
    let evil = MockServer::start().await;
    serve_jwks(&evil, jwk_set(&[&key])).await;
    let h = Harness::start(&[&key], |s, jwks_url| {
        s.issuers[0].allowed_jku = vec![jwks_url.to_owned()];
        s.issuers[0].jwks_url = None;
    })
    .await;
    let token = key.sign_with(&h.claims(), Some(&format!("{}/jwks.json", evil.uri())));
    h.refused(&token, AuthFailure::JkuNotAllowed).await;
    h.refused(&key.sign(&h.claims()), AuthFailure::NoKeySource)
        .await;
    assert_eq!(requests_to(&evil).await, 0, "the jku was never fetched");
    h.stop().await;
}

#[tokio::test]
async fn jku_on_the_allow_list_is_used() {
    let key = TestKey::es384("ec-1");
    let other_keys = MockServer::start().await;
    let rotated = TestKey::es384("hosted-elsewhere");
    serve_jwks(&other_keys, jwk_set(&[&rotated])).await;
    let allowed = format!("{}/jwks.json", other_keys.uri());
    let allowed_in_settings = allowed.clone();
    let h = Harness::start(&[&key], move |s, _| {
        s.issuers[0].allowed_jku = vec![allowed_in_settings]
    })
    .await;
    assert_ok(
        h.call_with(&rotated.sign_with(&h.claims(), Some(&allowed)))
            .await,
    )
    .await;
    // A jku equal to the configured jwks_url is accepted as well.
    let own = format!("{}/jwks.json", h.jwks.uri());
    assert_ok(h.call_with(&key.sign_with(&h.claims(), Some(&own))).await).await;
    assert_eq!(requests_to(&other_keys).await, 1);
    h.stop().await;
}

#[tokio::test]
async fn tenant_must_be_allowed_when_tenants_are_configured() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| {
        s.issuers[0].tenants = vec!["clinic-a".into()]
    })
    .await;
    let mut claims = h.claims();
    claims["tenant"] = json!("clinic-b");
    h.refused(&key.sign(&claims), AuthFailure::TenantNotAllowed)
        .await;
    let claims = h.claims();
    h.refused(&key.sign(&claims), AuthFailure::TenantNotAllowed)
        .await;
    let mut claims = h.claims();
    claims["tenant"] = json!("clinic-a");
    let body = assert_ok(h.call_with(&key.sign(&claims)).await).await;
    assert_eq!(body["tenant"], "clinic-a");
    h.stop().await;
}

#[tokio::test]
async fn wrong_signature_is_refused() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    // Signed by another key under the trusted kid.
    let impostor = TestKey::es384("ec-1");
    h.refused(&impostor.sign(&h.claims()), AuthFailure::BadSignature)
        .await;
    // A genuine token whose payload was changed afterwards.
    let genuine = key.sign(&h.claims());
    let mut parts: Vec<String> = genuine.split('.').map(str::to_owned).collect();
    let mut forged = h.claims();
    forged["sub"] = json!("admin");
    parts[1] = b64(forged.to_string().as_bytes());
    h.refused(&parts.join("."), AuthFailure::BadSignature).await;
    // An RSA signature presented as ES384 for an EC kid.
    let rsa = TestKey::rs384("ec-1");
    let mut header = Header::new(Algorithm::RS384);
    header.kid = Some("ec-1".into());
    let token = jsonwebtoken::encode(&header, &h.claims(), &rsa.encoding).expect("sign");
    h.refused(&token, AuthFailure::KeyAlgMismatch).await;
    h.stop().await;
}

#[tokio::test]
async fn unreachable_or_oversized_key_sets_fail_closed() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| s.jwks_max_bytes = 1024).await;
    let mut big = jwk_set(&[&key]);
    big["padding"] = json!("x".repeat(4096));
    serve_jwks(&h.jwks, big).await;
    h.refused(&key.sign(&h.claims()), AuthFailure::KeysUnavailable)
        .await;

    let down = Harness::start(&[&key], |s, _| {
        s.issuers[0].jwks_url = Some("http://127.0.0.1:9/jwks.json".into());
        s.jwks_fetch_timeout_ms = 500;
    })
    .await;
    down.refused(&key.sign(&down.claims()), AuthFailure::KeysUnavailable)
        .await;
    h.stop().await;
    down.stop().await;
}

#[tokio::test]
async fn inline_key_set_needs_no_download() {
    let key = TestKey::es384("ec-1");
    let set = jwk_set(&[&key]);
    let h = Harness::start(&[], move |s, _| {
        s.issuers[0].jwks_url = None;
        s.issuers[0].jwks = Some(set);
    })
    .await;
    assert_ok(h.call_with(&key.sign(&h.claims())).await).await;
    assert_eq!(requests_to(&h.jwks).await, 0);
    h.stop().await;
}

#[tokio::test]
async fn probes_and_cors_preflight_need_no_token() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let resp = h
        .http
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 200);
    let resp = h
        .http
        .request(reqwest::Method::OPTIONS, format!("{}{SERVICE}", h.base))
        .header("Origin", "https://sandbox.cds-hooks.org")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization, content-type",
        )
        .send()
        .await
        .expect("request");
    assert_ne!(
        resp.status(),
        401,
        "preflight reaches the app (CORS answers it there)"
    );
    // A plain OPTIONS is not a preflight and needs a token like anything else.
    let resp = h
        .http
        .request(reqwest::Method::OPTIONS, format!("{}{SERVICE}", h.base))
        .send()
        .await
        .expect("request");
    assert_unauthorized(resp).await;
    h.stop().await;
}

#[tokio::test]
async fn disabled_mode_passes_everything_through() {
    let h = Harness::serve(Authenticator::disabled(), MockServer::start().await).await;
    let body = assert_ok(h.call(None).await).await;
    assert_eq!(
        body,
        Value::Null,
        "no VerifiedClient without authentication"
    );
    assert_ok(h.call(Some("Bearer garbage")).await).await;
    h.stop().await;
}

#[tokio::test]
async fn missing_authenticator_fails_closed() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let server = HttpServer::new(|| {
        App::new()
            .wrap(from_fn(auth::require_jwt))
            .route(SERVICE, web::post().to(echo_client))
    })
    .workers(1)
    .disable_signals()
    .listen(listener)
    .expect("listen")
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    let resp = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}{SERVICE}"))
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status(), 500);
    handle.stop(false).await;
}

#[tokio::test]
async fn logs_give_the_reason_but_never_the_token() {
    let key = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |_, _| {}).await;
    let accepted = key.sign(&h.claims());
    assert_ok(h.call_with(&accepted).await).await;
    let mut claims = h.claims();
    claims["aud"] = json!("https://elsewhere.example.org/cds-services/iort-coverage");
    let refused = key.sign(&claims);
    assert_unauthorized(h.call_with(&refused).await).await;
    h.stop().await;

    let logs = logs();
    assert!(logs.contains("CDS client JWT refused"), "{logs}");
    assert!(
        logs.contains("aud does not name the endpoint called"),
        "{logs}"
    );
    for token in [&accepted, &refused] {
        for part in token.split('.') {
            assert!(!logs.contains(part), "a token part was logged");
        }
    }
}

/// The README's "trusting the CDS Hooks Sandbox offline" block is a working configuration: it
/// loads, its key is the Sandbox's ES384 key, and with it a token shaped like the Sandbox's
/// (`alg` ES384, its `kid`, its `jku`) is checked against the pinned key without fetching the
/// `jku` (the signature is not the Sandbox's, so it is refused as a bad signature, not for
/// its `jku`).
#[tokio::test]
async fn the_readme_sandbox_offline_configuration_pins_its_key() {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("# The CDS Hooks Sandbox, its keys pinned")
        .expect("the README block");
    let block = &readme[start..];
    let block = &block[..block.find("```").expect("block end")];
    let path = std::env::temp_dir().join(format!("iort-sandbox-{}.toml", uuid::Uuid::new_v4()));
    std::fs::write(&path, block).expect("written");
    let settings = iort_cds::configuration::Settings::load(
        Some(&path),
        iort_cds::configuration::Overrides::default(),
    )
    .expect("the README configuration loads");
    std::fs::remove_file(&path).ok();
    let issuer = &settings.auth.issuers[0];
    assert_eq!(issuer.iss, "https://sandbox.cds-hooks.org");
    let jwks = issuer.jwks.as_ref().expect("inline keys");
    assert_eq!(
        jwks["keys"][0]["kid"],
        "44823f3d-0b01-4a6c-a80e-b9d3e8a7226f"
    );
    assert_eq!(jwks["keys"][0]["crv"], "P-384");

    let impostor = TestKey::es384("44823f3d-0b01-4a6c-a80e-b9d3e8a7226f");
    let pinned = settings.auth.clone();
    let h = Harness::start(&[&impostor], move |s, _| {
        s.issuers = pinned.issuers;
    })
    .await;
    let mut claims = h.claims();
    claims["iss"] = json!("https://sandbox.cds-hooks.org");
    let token = impostor.sign_with(
        &claims,
        Some("https://sandbox.cds-hooks.org/.well-known/jwks.json"),
    );
    h.refused(&token, AuthFailure::BadSignature).await;
    assert_eq!(requests_to(&h.jwks).await, 0);
    h.stop().await;
}

/// Issue 13: a peer whose tokens keep failing is answered 429 without a signature check once
/// past its budget; valid tokens are never counted; probes stay open. (That the budget refills
/// is `auth::refusals`' unit test.)
#[tokio::test]
async fn a_peer_sending_bad_tokens_is_throttled_before_verification() {
    let key = TestKey::es384("ec-1");
    let forger = TestKey::es384("ec-1");
    let h = Harness::start(&[&key], |s, _| {
        // one a minute: a blocked peer stays blocked for the rest of the test
        s.refusals_per_peer_per_minute = 1;
        s.refusal_burst_per_peer = 5;
    })
    .await;
    // valid tokens first: many of them, none counted
    for _ in 0..20 {
        assert_ok(h.call_with(&key.sign(&h.claims())).await).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..10 {
        statuses.push(
            h.call_with(&forger.sign(&h.claims()))
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses[..6], [401; 6], "{statuses:?}");
    assert_eq!(statuses[6..], [429; 4], "{statuses:?}");
    let blocked = h.call_with(&key.sign(&h.claims())).await;
    assert_eq!(
        blocked.status(),
        429,
        "a blocked peer is not checked at all"
    );
    let retry: u64 = blocked.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    let probe = h
        .http
        .get(format!("{}/healthz", h.base))
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
    h.stop().await;
}
