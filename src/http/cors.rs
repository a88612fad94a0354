//! Which browser pages may call the service (CORS), decided once at start-up from
//! `cors_allowed_origins` and who can reach the service ([`crate::reach`]).

use actix_cors::Cors;
use actix_web::http::{Method, header};

/// Which browser pages may call the service (CORS). A browser attaches the page's origin; a
/// CDS client that is not a browser (an EHR's back end) sends none and is unaffected.
///
/// The permissive default serves local testing: the CDS Hooks Sandbox is a web page on another
/// origin, and on a loopback listener only this machine's browser can reach the service
/// anyway. Beyond loopback (or behind a proxy, `public_base_url` on another host) a page on
/// any web site the user opens could call the service with the user's network position, so
/// no origin is allowed until configured. The `null` origin (sandboxed frames, `file:` pages,
/// some redirects) names no site at all and is never allowed, whatever the setting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CorsPolicy {
    /// Any origin but `null` (echoed back, with `Vary: Origin`).
    AnyOrigin,
    /// These origins only.
    Origins(Vec<String>),
    /// No browser origin: no CORS headers at all.
    NoOrigin,
}

impl CorsPolicy {
    /// From `cors_allowed_origins` (`None`: not configured) and whether the service is
    /// reachable from this machine only.
    pub fn new(configured: Option<&[String]>, loopback_only: bool) -> Self {
        match configured {
            None if loopback_only => Self::AnyOrigin,
            None => Self::NoOrigin,
            Some(list) if list.iter().any(|o| o == "*") => Self::AnyOrigin,
            Some([]) => Self::NoOrigin,
            Some(list) => Self::Origins(
                list.iter()
                    .map(|o| o.trim_end_matches('/').to_owned())
                    .collect(),
            ),
        }
    }
}

/// The actix-web CORS middleware for `policy`: preflights allow `Authorization` and
/// `Content-Type` (what a CDS client sends), and answer Chrome's Private Network Access.
pub fn middleware(policy: &CorsPolicy) -> Cors {
    let base = Cors::default()
        .allowed_methods([Method::GET, Method::POST, Method::OPTIONS])
        .allowed_headers([header::AUTHORIZATION, header::CONTENT_TYPE, header::ACCEPT])
        .expose_headers([header::HeaderName::from_static("x-request-id")])
        .max_age(3600)
        // The CDS Hooks Sandbox is an https page; Chrome's Private Network Access asks the
        // service on loopback / a private address to opt in before the page may call it.
        .allow_private_network_access();
    match policy {
        CorsPolicy::AnyOrigin => base.allowed_origin_fn(|origin, _| origin.as_bytes() != b"null"),
        CorsPolicy::Origins(list) => list.iter().fold(base, |c, o| c.allowed_origin(o)),
        // No origin passes: preflights are refused and responses carry no CORS header.
        CorsPolicy::NoOrigin => base.allowed_origin_fn(|_, _| false),
    }
}
