//! Who can reach this service: only processes on this machine, or the network.
//!
//! Three decisions hang on it, and they must agree: whether client authentication may be off
//! ([`crate::auth::auth_mode`]), whether every browser origin may call
//! ([`crate::http::cors::CorsPolicy`]), and whether a caller may make the service fetch from a
//! loopback FHIR server without an allow-list ([`crate::gather::Gatherer`]). Loopback protects
//! only while every listen address is on loopback and no proxy publishes the service under
//! another host (a `public_base_url` naming one). A leaf module, so that the stages and the
//! HTTP layer can all ask it without importing each other.

use std::net::{IpAddr, SocketAddr};

/// Whether only processes on this machine can reach the service: every listen address is on
/// loopback, and `public_base_url` (when set) does not name another host.
pub fn loopback_only(listen: &[SocketAddr], public_base_url: Option<&str>) -> bool {
    listener_on_loopback(listen) && !names_another_host(public_base_url)
}

/// Every listen address is on loopback (an empty list counts as reachable from the network).
pub fn listener_on_loopback(listen: &[SocketAddr]) -> bool {
    !listen.is_empty() && listen.iter().all(|a| a.ip().to_canonical().is_loopback())
}

/// Whether `public_base_url` names a host other than this machine's loopback.
pub fn names_another_host(public_base_url: Option<&str>) -> bool {
    public_base_url
        .and_then(|u| reqwest::Url::parse(u).ok())
        .and_then(|u| u.host_str().map(|h| h.trim_matches(['[', ']']).to_owned()))
        .is_some_and(|h| match h.parse::<IpAddr>() {
            Ok(ip) => !ip.to_canonical().is_loopback(),
            Err(_) => !h.eq_ignore_ascii_case("localhost"),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_needs_every_address_local_and_no_public_host() {
        let local: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let v6: SocketAddr = "[::1]:8080".parse().unwrap();
        let any: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert!(loopback_only(&[local, v6], None));
        assert!(loopback_only(&[local], Some("http://localhost:8080")));
        assert!(loopback_only(&[local], Some("http://[::1]:8080/x")));
        assert!(!loopback_only(&[local], Some("https://cds.example.org")));
        assert!(!loopback_only(&[local, any], None));
        assert!(!loopback_only(&[], None));
    }
}
