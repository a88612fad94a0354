//! Which FHIR servers the service may contact, and which URLs belong to a server.
//!
//! `fhirServer` comes from the caller, so without a check the service would fetch any URL it is
//! handed, with its own network position (an open proxy, SSRF). Every `fhirServer` is therefore
//! checked against the operator's allow-list (`fhir.allowed_base_urls`) and, when the caller's
//! issuer has one, the caller's own list, before a single request is made. Without a configured
//! list only https is accepted, plus plain http to a loopback host (local development and the
//! CDS Hooks Sandbox against a local server), and only public addresses are contacted
//! ([`super::addresses`]): an IP literal in `fhirServer` is judged here, before any connection,
//! a host name by the client's resolver when it connects. A listed base is the operator's word
//! that the server is wanted wherever it lives, so with a list configured addresses are not
//! judged (an EHR on `10.0.0.5` or `ehr.internal` is reached by listing it).
//!
//! Matching is done on parsed, normalised URLs (WHATWG parsing: lower-case scheme and host, the
//! default port made implicit, `.`/`..` segments resolved), as a prefix at a path-segment
//! boundary: `https://ehr.example.org/fhir` admits `https://ehr.example.org/fhir/r4` but not
//! `https://ehr.example.org/fhir-test` or `https://ehr.example.org.evil.example/fhir`.
//! URLs carrying a user name or password are refused: they would send credentials the operator
//! never saw, and `https://trusted@evil.example` is a classic way to fool a string check.

use std::net::IpAddr;

use reqwest::Url;

use super::addresses::AddressPolicy;
use reqwest::header::HeaderValue;

/// Why a string is not usable as a FHIR base URL. Never carries the URL itself, so a URL with a
/// password in it cannot leak through the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum UrlProblem {
    #[error("is not an absolute URL")]
    NotAUrl,
    #[error("must use https (or http)")]
    Scheme,
    #[error("must not contain a user name or password")]
    UserInfo,
    #[error("must not have a query or fragment")]
    QueryOrFragment,
    #[error("has no host")]
    NoHost,
}

/// A FHIR base URL, parsed and normalised: `http`/`https`, a host, no user info, no query or
/// fragment, the path without trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    url: Url,
    /// The percent-encoded path without trailing slashes (`""` for the root).
    path: String,
}

impl BaseUrl {
    /// Parse and normalise a base URL.
    pub fn parse(text: &str) -> Result<Self, UrlProblem> {
        let url = Url::parse(text.trim()).map_err(|_| UrlProblem::NotAUrl)?;
        if !matches!(url.scheme(), "https" | "http") {
            return Err(UrlProblem::Scheme);
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err(UrlProblem::UserInfo);
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(UrlProblem::QueryOrFragment);
        }
        if url.host().is_none() {
            return Err(UrlProblem::NoHost);
        }
        let path = url.path().trim_end_matches('/').to_owned();
        Ok(Self { url, path })
    }

    /// `scheme://host[:port]`, the part that may be named in messages and logs.
    pub fn origin(&self) -> String {
        self.url.origin().ascii_serialization()
    }

    /// The normalised base, without trailing slash (e.g. `https://ehr.example.org/fhir`).
    pub fn as_str(&self) -> String {
        format!("{}{}", self.origin(), self.path)
    }

    pub fn is_https(&self) -> bool {
        self.url.scheme() == "https"
    }

    /// `localhost`, `127.0.0.0/8`, `::1` (or an IPv4-mapped loopback address).
    pub fn is_loopback(&self) -> bool {
        // `host_str` is already normalised by the URL parser: lower case, IPv4 in dotted form
        // (`0x7f.1` becomes `127.0.0.1`), IPv6 in brackets.
        let Some(host) = self.url.host_str() else {
            return false;
        };
        if host == "localhost" {
            return true;
        }
        match host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<IpAddr>()
        {
            Ok(IpAddr::V4(ip)) => ip.is_loopback(),
            Ok(IpAddr::V6(ip)) => {
                ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
            }
            Err(_) => false,
        }
    }

    /// The host as an address, when it is an IP literal (`[::1]` as `::1`); `None` for a name.
    pub fn ip(&self) -> Option<IpAddr> {
        host_ip(&self.url)
    }

    /// Whether `url` lies on this server: same scheme, host and port, no user info, and a path
    /// equal to this base's or below it at a segment boundary. Query and fragment are ignored.
    pub fn contains(&self, url: &Url) -> bool {
        if url.origin() != self.url.origin()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        path_within(url.path(), &self.path)
    }

    /// The part of `url`'s path below this base, without the leading `/` (`Condition/x` for
    /// `{base}/Condition/x`); `None` when `url` is not on this server ([`BaseUrl::contains`]).
    pub fn relative_path<'u>(&self, url: &'u Url) -> Option<&'u str> {
        if !self.contains(url) {
            return None;
        }
        let rest = &url.path()[self.path.len()..];
        Some(rest.strip_prefix('/').unwrap_or(rest))
    }

    /// Whether `other` is this base or lies below it.
    pub fn contains_base(&self, other: &BaseUrl) -> bool {
        self.url.origin() == other.url.origin() && path_within(&other.path, &self.path)
    }

    /// The absolute URL of a prefetch query (`Observation?patient=1`, `Patient/1`) on this
    /// server, or `None` when the result would not lie on it (a template with `..` or an
    /// absolute URL in it).
    pub fn query_url(&self, relative: &str) -> Option<Url> {
        let url = Url::parse(&format!("{}/{}", self.as_str(), relative)).ok()?;
        self.contains(&url).then_some(url)
    }
}

/// The host of `url` as an address, when it is an IP literal (already normalised by the URL
/// parser: `0xA9FEA9FE` is `169.254.169.254` by then).
pub fn host_ip(url: &Url) -> Option<IpAddr> {
    // A name never parses as an address: the parser has turned every numeric spelling into one.
    url.host_str()?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}

/// `path` equals `base` or continues it after a `/`.
fn path_within(path: &str, base: &str) -> bool {
    match path.strip_prefix(base) {
        Some(rest) => rest.is_empty() || rest.starts_with('/'),
        None => false,
    }
}

/// Whether a client whose issuer lists `allowed` (its `fhir_servers`, parsed at start-up)
/// may name `fhir_server`: under one of them, at a path-segment boundary, like
/// `fhir.allowed_base_urls`. An empty list does not restrict. The one rule for "may this
/// caller name this server", used by gathering and by [`crate::auth::VerifiedClient`].
pub fn caller_may_name(allowed: &[BaseUrl], fhir_server: &BaseUrl) -> bool {
    allowed.is_empty() || allowed.iter().any(|a| a.contains_base(fhir_server))
}

/// The operator's rule for which `fhirServer`s may be contacted.
#[derive(Debug, Clone)]
pub struct ServerPolicy {
    /// `fhir.allowed_base_urls`, parsed. Empty: https anywhere, http to loopback only, public
    /// addresses only.
    allowed: Vec<BaseUrl>,
    /// The addresses contacted when `allowed` is empty.
    addresses: AddressPolicy,
}

impl ServerPolicy {
    /// Parse the configured base URLs. The error names the entry by index, not by value (an
    /// operator may have pasted a URL with a password in it).
    pub fn new(allowed_base_urls: &[String]) -> Result<Self, String> {
        let allowed = allowed_base_urls
            .iter()
            .enumerate()
            .map(|(i, u)| BaseUrl::parse(u).map_err(|p| format!("fhir.allowed_base_urls[{i}] {p}")))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            allowed,
            addresses: AddressPolicy {
                allow_loopback: false,
            },
        })
    }

    /// The same policy, allowing loopback addresses without an allow-list or not (see
    /// `Gatherer::new`: only when the service itself listens on loopback).
    pub fn allowing_loopback(mut self, allow: bool) -> Self {
        self.addresses.allow_loopback = allow;
        self
    }

    /// True when no allow-list is configured (the https-anywhere default).
    pub fn is_open(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Whether loopback addresses may be contacted without being listed.
    pub fn allows_loopback(&self) -> bool {
        self.addresses.allow_loopback
    }

    /// The addresses the HTTP client may connect to: `Some` without an allow-list, `None` (any
    /// address: every server contacted is a listed one) with one.
    pub fn address_policy(&self) -> Option<AddressPolicy> {
        self.is_open().then_some(self.addresses)
    }

    /// Check a request's `fhirServer` before anything is sent to it. `caller_allowed` is the
    /// calling client's own list (its issuer's `fhir_servers`); `None` or an empty list means the
    /// caller is not restricted beyond the operator's rule, as in the issuer settings.
    ///
    /// The error completes the sentence "the FHIR server ...": it names the rule that refused and
    /// at most the server's origin.
    pub fn check(
        &self,
        fhir_server: &str,
        caller_allowed: Option<&[BaseUrl]>,
    ) -> Result<BaseUrl, String> {
        let base = BaseUrl::parse(fhir_server).map_err(|p| format!("URL (fhirServer) {p}"))?;
        self.check_base(&base, caller_allowed)?;
        Ok(base)
    }

    /// [`check`](Self::check) for a `fhirServer` already parsed.
    pub fn check_base(
        &self,
        base: &BaseUrl,
        caller_allowed: Option<&[BaseUrl]>,
    ) -> Result<(), String> {
        if self.is_open() {
            if !base.is_https() && !base.is_loopback() {
                return Err(format!(
                    "{} uses http, which is only allowed to a loopback host when \
                     fhir.allowed_base_urls is not configured; use https",
                    base.origin()
                ));
            }
            if let Some(ip) = base.ip()
                && let Err(category) = self.addresses.check(ip)
            {
                let when = if category == super::addresses::Restricted::Loopback {
                    " (or when the service itself listens on loopback only)"
                } else {
                    ""
                };
                return Err(format!(
                    "{} is {category}, which is only contacted when listed in \
                     fhir.allowed_base_urls{when}",
                    base.origin()
                ));
            }
        } else if !self.allowed.iter().any(|a| a.contains_base(base)) {
            return Err(format!(
                "{} is not under any allowed base URL (setting fhir.allowed_base_urls)",
                base.origin()
            ));
        }
        if let Some(list) = caller_allowed
            && !caller_may_name(list, base)
        {
            return Err(format!(
                "{} is not among the FHIR servers this client may name (its issuer's \
                 fhir_servers)",
                base.origin()
            ));
        }
        Ok(())
    }
}

/// The `Authorization` header for a bearer token, marked sensitive so that it is never printed
/// by `Debug`. `None` when the token cannot be carried in a header (control characters).
pub fn bearer_header(access_token: &str) -> Option<HeaderValue> {
    if access_token.is_empty() {
        return None;
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {access_token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn base_urls_are_normalised() {
        let b = BaseUrl::parse("HTTPS://EHR.Example.ORG:443/fhir/").unwrap();
        assert_eq!(b.as_str(), "https://ehr.example.org/fhir");
        assert_eq!(b.origin(), "https://ehr.example.org");
        let b = BaseUrl::parse("https://ehr.example.org/a/../fhir").unwrap();
        assert_eq!(b.as_str(), "https://ehr.example.org/fhir");
        let b = BaseUrl::parse("http://127.0.0.1:8081").unwrap();
        assert_eq!(b.as_str(), "http://127.0.0.1:8081");
    }

    #[test]
    fn unusable_base_urls_are_named_without_echoing_them() {
        assert_eq!(
            BaseUrl::parse("ehr.example.org/fhir"),
            Err(UrlProblem::NotAUrl)
        );
        assert_eq!(
            BaseUrl::parse("ftp://ehr.example.org"),
            Err(UrlProblem::Scheme)
        );
        assert_eq!(
            BaseUrl::parse("https://u:secret@ehr.example.org"),
            Err(UrlProblem::UserInfo)
        );
        assert_eq!(
            BaseUrl::parse("https://u@ehr.example.org"),
            Err(UrlProblem::UserInfo)
        );
        assert_eq!(
            BaseUrl::parse("https://ehr.example.org/fhir?x=1"),
            Err(UrlProblem::QueryOrFragment)
        );
        let e = ServerPolicy::new(&list(&["https://ok.example", "https://u:secret@x.example"]))
            .unwrap_err();
        assert!(e.contains("fhir.allowed_base_urls[1]"), "{e}");
        assert!(!e.contains("secret"), "{e}");
    }

    #[test]
    fn allow_list_matches_at_a_path_segment_boundary() {
        let p = ServerPolicy::new(&list(&["https://ehr.example.org/fhir/"])).unwrap();
        assert!(p.check("https://ehr.example.org/fhir", None).is_ok());
        assert!(p.check("https://ehr.example.org/fhir/", None).is_ok());
        assert!(p.check("https://EHR.example.org:443/fhir/r4", None).is_ok());
        for refused in [
            "https://ehr.example.org/fhir-test",
            "https://ehr.example.org/fhi",
            "https://ehr.example.org/",
            "https://ehr.example.org/fhir/../admin",
            "http://ehr.example.org/fhir",
            "https://ehr.example.org:8443/fhir",
            "https://ehr.example.org.evil.example/fhir",
            "https://evil.example/https://ehr.example.org/fhir",
        ] {
            let e = p.check(refused, None).unwrap_err();
            assert!(e.contains("fhir.allowed_base_urls"), "{refused}: {e}");
        }
        // the origin may be named, nothing else of the URL
        let e = p
            .check("https://evil.example/secret-path", None)
            .unwrap_err();
        assert!(
            e.contains("https://evil.example") && !e.contains("secret-path"),
            "{e}"
        );
    }

    #[test]
    fn a_root_entry_admits_the_whole_origin() {
        let p = ServerPolicy::new(&list(&["http://10.1.2.3:8080"])).unwrap();
        assert!(p.check("http://10.1.2.3:8080/any/fhir", None).is_ok());
        assert!(p.check("http://10.1.2.3:8081/fhir", None).is_err());
    }

    #[test]
    fn listed_bases_are_reached_at_any_address() {
        let p = ServerPolicy::new(&list(&[
            "https://10.0.0.5/fhir",
            "https://169.254.10.1/fhir",
            "https://ehr.internal/fhir",
        ]))
        .unwrap();
        assert_eq!(p.address_policy(), None, "the resolver does not filter");
        for ok in [
            "https://10.0.0.5/fhir/r4",
            "https://169.254.10.1/fhir",
            "https://ehr.internal/fhir",
        ] {
            assert!(p.check(ok, None).is_ok(), "{ok}");
        }
        // only what is listed
        let e = p.check("https://10.0.0.6/fhir", None).unwrap_err();
        assert!(e.contains("fhir.allowed_base_urls"), "{e}");
    }

    /// Issue 14, item 3: without a list, an IP literal that is not a public address is refused
    /// before any connection, whatever its spelling, naming the setting that would allow it.
    #[test]
    fn without_a_list_only_public_addresses_are_contacted() {
        let p = ServerPolicy::new(&[]).unwrap();
        assert_eq!(
            p.address_policy(),
            Some(super::super::addresses::AddressPolicy {
                allow_loopback: false
            })
        );
        for (refused, category) in [
            ("https://169.254.169.254/fhir", "link-local"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://0xA9FEA9FE/fhir", "link-local"),
            ("https://2852039166/fhir", "link-local"),
            ("https://169.254.43518/fhir", "link-local"),
            ("https://0251.0376.0251.0376/fhir", "link-local"),
            ("https://[::ffff:169.254.169.254]/fhir", "link-local"),
            ("https://[::ffff:a9fe:a9fe]/fhir", "link-local"),
            ("https://[64:ff9b::a9fe:a9fe]/fhir", "link-local"),
            ("https://[fe80::1]/fhir", "link-local"),
            ("https://10.0.0.5/fhir", "private"),
            ("https://172.16.0.1/fhir", "private"),
            ("https://192.168.1.10:8443/fhir", "private"),
            ("https://[::ffff:10.0.0.5]/fhir", "private"),
            ("https://100.100.100.200/fhir", "shared"),
            ("https://[fd00::5]/fhir", "unique-local"),
            ("https://224.0.0.1/fhir", "multicast"),
            ("https://255.255.255.255/fhir", "broadcast"),
            ("https://0.0.0.0/fhir", "unspecified"),
            ("https://0/fhir", "unspecified"),
            ("https://[::]/fhir", "unspecified"),
            ("https://127.0.0.1/fhir", "loopback"),
            ("http://127.0.0.1:4000/fhir", "loopback"),
            ("http://[::1]:9000/fhir", "loopback"),
            ("http://0x7f.1/fhir", "loopback"),
            ("https://192.0.2.1/fhir", "documentation"),
        ] {
            let e = p.check(refused, None).unwrap_err();
            assert!(
                e.contains(category) && e.contains("fhir.allowed_base_urls"),
                "{refused}: {e}"
            );
        }
        for ok in [
            "https://ehr.example.org/fhir",
            "https://93.184.215.14/fhir",
            "https://[2606:4700:4700::1111]/fhir",
            // a name is judged by the resolver, when connecting
            "https://ehr.internal/fhir",
            "http://localhost:8080/fhir",
        ] {
            assert!(p.check(ok, None).is_ok(), "{ok}");
        }
    }

    #[test]
    fn without_a_list_https_anywhere_and_http_only_to_loopback() {
        let p = ServerPolicy::new(&[]).unwrap().allowing_loopback(true);
        assert!(p.is_open());
        for ok in [
            "https://ehr.example.org/fhir",
            "http://127.0.0.1:4000/fhir",
            "http://127.9.9.9",
            "http://localhost:8080/fhir",
            "http://LOCALHOST",
            "http://[::1]:9000/fhir",
        ] {
            assert!(p.check(ok, None).is_ok(), "{ok}");
        }
        for refused in [
            "http://ehr.example.org/fhir",
            "http://10.0.0.5/fhir",
            "http://0.0.0.0/fhir",
            "http://localhost.evil.example/fhir",
            "http://169.254.169.254/latest",
        ] {
            let e = p.check(refused, None).unwrap_err();
            assert!(e.contains("uses http"), "{refused}: {e}");
        }
        // loopback allowed is loopback only
        for refused in ["https://10.0.0.5/fhir", "https://169.254.169.254/fhir"] {
            assert!(p.check(refused, None).is_err(), "{refused}");
        }
    }

    #[test]
    fn user_info_and_garbage_are_refused_without_echo() {
        let p = ServerPolicy::new(&[]).unwrap();
        let e = p
            .check("https://user:hunter2@ehr.example.org/fhir", None)
            .unwrap_err();
        assert!(
            e.contains("user name or password") && !e.contains("hunter2"),
            "{e}"
        );
        let e = p.check("javascript:alert(1)", None).unwrap_err();
        assert!(e.contains("https"), "{e}");
        assert!(p.check("not a url", None).is_err());
    }

    #[test]
    fn the_caller_list_must_also_match() {
        let p = ServerPolicy::new(&[]).unwrap();
        // Parsed once at start-up (the issuer settings refuse what does not parse).
        let caller = vec![BaseUrl::parse("https://ehr-a.example.org/fhir").unwrap()];
        assert!(
            p.check("https://ehr-a.example.org/fhir/r4", Some(&caller))
                .is_ok()
        );
        let e = p
            .check("https://ehr-b.example.org/fhir", Some(&caller))
            .unwrap_err();
        assert!(e.contains("fhir_servers"), "{e}");
        // an empty list does not restrict (as in the issuer settings)
        assert!(p.check("https://ehr-b.example.org/fhir", Some(&[])).is_ok());
        // and the operator's rule still applies to a listed server
        let caller = vec![BaseUrl::parse("http://ehr-c.example.org").unwrap()];
        assert!(p.check("http://ehr-c.example.org", Some(&caller)).is_err());
    }

    #[test]
    fn urls_on_the_server_stay_below_the_base() {
        let b = BaseUrl::parse("https://ehr.example.org/fhir").unwrap();
        let on = |u: &str| b.contains(&Url::parse(u).unwrap());
        assert!(on("https://ehr.example.org/fhir/Observation?page=2"));
        assert!(on("https://ehr.example.org:443/fhir?_getpages=abc"));
        assert!(!on("https://ehr.example.org/other/Observation"));
        assert!(!on("https://ehr.example.org/fhirx/Observation"));
        assert!(!on("http://ehr.example.org/fhir/Observation"));
        assert!(!on("https://evil.example/fhir/Observation"));
        assert!(!on("https://u:p@ehr.example.org/fhir/Observation"));
        assert!(!on("https://ehr.example.org/fhir/../admin"));
    }

    #[test]
    fn query_urls_cannot_escape_the_base() {
        let b = BaseUrl::parse("https://ehr.example.org/fhir").unwrap();
        let u = b
            .query_url("Observation?patient=p1&code=http://loinc.org|21905-5")
            .unwrap();
        assert_eq!(u.path(), "/fhir/Observation");
        assert_eq!(u.query(), Some("patient=p1&code=http://loinc.org|21905-5"));
        assert!(b.query_url("../admin").is_none());
        assert!(
            b.query_url("/https://evil.example/x")
                .is_some_and(|u| u.host_str() == Some("ehr.example.org"))
        );
    }

    #[test]
    fn bearer_header_is_sensitive() {
        let h = bearer_header("abc.def").unwrap();
        assert!(h.is_sensitive());
        assert_eq!(h.to_str().unwrap(), "Bearer abc.def");
        assert!(!format!("{h:?}").contains("abc.def"));
        assert!(bearer_header("bad\ntoken").is_none());
        assert!(bearer_header("").is_none());
    }
}
