//! Which network addresses the service may connect to on a caller's behalf.
//!
//! `fhirServer` is chosen by the caller, and the service connects from its own network position:
//! inside a data centre or a cloud VPC, where the cloud's metadata service (`169.254.169.254`,
//! handing out credentials), admin consoles, databases and the EHR's internal APIs answer to
//! anyone on the inside. Without an allow-list (`fhir.allowed_base_urls`), the service therefore
//! connects only to public unicast addresses, and to loopback only when it listens on loopback
//! itself (then only local callers can reach it, and they can reach loopback anyway).
//!
//! [`restricted`] says which category an address falls in; [`AddressPolicy`] says whether that
//! category may be contacted. The check is applied twice: to an IP literal in the URL before
//! anything is sent ([`super::allow_list::ServerPolicy::check`]), and to every address a host
//! name resolves to, at connection time, by [`GuardedResolver`] (the resolver the shared HTTP
//! client uses). Checking the name's addresses once up front and then connecting would let a
//! name answer a public address first and `169.254.169.254` a moment later (DNS rebinding); the
//! resolver hands the connector only addresses it has just checked.
//!
//! Spellings need no handling here: the WHATWG URL parser turns `0xA9FEA9FE`, `2852039166`,
//! `0251.0376.0251.0376` and `169.254.43518` into `169.254.169.254` before any check, and IPv6
//! forms that carry an IPv4 address (mapped, compatible, NAT64, 6to4) are judged by the IPv4
//! address they lead to.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// The category of an address the service does not contact for a caller (without an
/// allow-list), named in refusals and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Restricted {
    /// `0.0.0.0/8`, `::` (Linux connects `0.0.0.0` to the local host).
    #[error("an unspecified (\"this host\") address")]
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    #[error("a loopback address")]
    Loopback,
    /// `10.0.0.0/8`, `172.16.0.0/12`, `192.168.0.0/16` (RFC 1918).
    #[error("a private address")]
    Private,
    /// `100.64.0.0/10` (RFC 6598): carrier-grade NAT space, also used inside clouds (Alibaba
    /// Cloud's metadata service is `100.100.100.200`) and by overlay VPNs; never a public host.
    #[error("a shared (carrier-grade NAT) address")]
    Shared,
    /// `169.254.0.0/16`, `fe80::/10`: cloud metadata services live here.
    #[error("a link-local address")]
    LinkLocal,
    /// `fc00::/7` (RFC 4193), and the deprecated site-local `fec0::/10`.
    #[error("a unique-local address")]
    UniqueLocal,
    /// `224.0.0.0/4`, `ff00::/8`.
    #[error("a multicast address")]
    Multicast,
    /// `255.255.255.255`.
    #[error("the broadcast address")]
    Broadcast,
    /// `192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`, `2001:db8::/32`, `3fff::/20`:
    /// examples only, never a real server (RFC 5737, 3849, 9637).
    #[error("a documentation address")]
    Documentation,
    /// `198.18.0.0/15`, `2001:2::/48`: lab networks for benchmarking (RFC 2544, 5180).
    #[error("a benchmarking address")]
    Benchmarking,
    /// Reserved or special-purpose: `240.0.0.0/4`, `192.0.0.0/24`, `192.88.99.0/24`; in IPv6
    /// everything outside global unicast `2000::/3`, the IETF protocol block `2001::/23`
    /// (Teredo tunnels among them, whose end cannot be judged), and the local-use NAT64 prefix
    /// `64:ff9b:1::/48`.
    #[error("a reserved address")]
    Reserved,
}

/// The category of `ip` when it is not a public unicast address; `None` when it is.
///
/// IPv6 addresses that lead to an IPv4 address are judged by that address: IPv4-mapped
/// `::ffff:a.b.c.d`, IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, NAT64
/// `64:ff9b::a.b.c.d` (RFC 6052) and 6to4 `2002:AABB:CCDD::/48` (RFC 3056).
pub fn restricted(ip: IpAddr) -> Option<Restricted> {
    match ip {
        IpAddr::V4(v4) => restricted_v4(v4),
        IpAddr::V6(v6) => restricted_v6(v6),
    }
}

fn restricted_v4(ip: Ipv4Addr) -> Option<Restricted> {
    let [a, b, c, _] = ip.octets();
    use Restricted::*;
    Some(match (a, b, c) {
        (0, _, _) => Unspecified,
        (127, _, _) => Loopback,
        (10, _, _) | (192, 168, _) => Private,
        (172, 16..=31, _) => Private,
        (100, 64..=127, _) => Shared,
        (169, 254, _) => LinkLocal,
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => Documentation,
        (198, 18..=19, _) => Benchmarking,
        (192, 0, 0) | (192, 88, 99) => Reserved,
        _ if ip == Ipv4Addr::BROADCAST => Broadcast,
        (224..=239, _, _) => Multicast,
        (240..=255, _, _) => Reserved,
        _ => return None,
    })
}

fn restricted_v6(ip: Ipv6Addr) -> Option<Restricted> {
    use Restricted::*;
    let s = ip.segments();
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    if ip.is_unspecified() {
        return Some(Unspecified);
    }
    if ip.is_loopback() {
        return Some(Loopback);
    }
    match s {
        // IPv4-compatible (deprecated), IPv4-mapped and IPv4-translated: the IPv4 address.
        [0, 0, 0, 0, 0, 0, hi, lo]
        | [0, 0, 0, 0, 0, 0xffff, hi, lo]
        | [0, 0, 0, 0, 0xffff, 0, hi, lo] => return restricted_v4(embedded(hi, lo)),
        // NAT64, well-known prefix: reaches the IPv4 address through the translator.
        [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => return restricted_v4(embedded(hi, lo)),
        // 6to4: reaches the IPv4 address through a relay.
        [0x2002, hi, lo, ..] => return restricted_v4(embedded(hi, lo)),
        _ => {}
    }
    let first = s[0];
    Some(match first {
        0xfc00..=0xfdff => UniqueLocal,
        0xfe80..=0xfebf => LinkLocal,
        0xfec0..=0xfeff => UniqueLocal,
        0xff00..=0xffff => Multicast,
        // Outside global unicast: the rest of `::/8`, NAT64 local use, unassigned space.
        _ if !(0x2000..=0x3fff).contains(&first) => Reserved,
        0x2001 if s[1] == 0x0db8 => Documentation,
        0x3fff if s[1] < 0x1000 => Documentation,
        0x2001 if s[1] == 0x0002 && s[2] == 0 => Benchmarking,
        0x2001 if s[1] < 0x0200 => Reserved,
        _ => return None,
    })
}

/// Which restricted addresses may be contacted anyway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddressPolicy {
    /// Loopback is allowed: the service listens on loopback itself, and is not published on
    /// another host through a proxy (see `Gatherer::new`).
    pub allow_loopback: bool,
}

impl AddressPolicy {
    /// `Ok` when `ip` may be contacted, else its category.
    pub fn check(self, ip: IpAddr) -> Result<(), Restricted> {
        match restricted(ip) {
            None => Ok(()),
            Some(Restricted::Loopback) if self.allow_loopback => Ok(()),
            Some(r) => Err(r),
        }
    }

    /// The addresses of `host` that may be contacted; an error when there are some and none
    /// may be. Refused ones are left out (and logged): a name answering one public and one
    /// private address is reached at the public one only.
    pub fn filter(
        self,
        host: &str,
        addrs: impl IntoIterator<Item = SocketAddr>,
    ) -> Result<Vec<SocketAddr>, RefusedAddress> {
        let mut allowed = Vec::new();
        let mut refused = None;
        for addr in addrs {
            match self.check(addr.ip()) {
                Ok(()) => allowed.push(addr),
                Err(r) => {
                    tracing::debug!(host, address = %addr.ip(), category = %r, "an address of a FHIR server name is not contacted");
                    refused.get_or_insert(r);
                }
            }
        }
        match refused {
            // The caller's fetch fails; its WARN line names this error.
            Some(category) if allowed.is_empty() => Err(RefusedAddress {
                host: host.to_owned(),
                category,
            }),
            Some(category) => {
                tracing::warn!(host, %category, "a FHIR server name also resolves to addresses that are not contacted; only its public ones are used");
                Ok(allowed)
            }
            None => Ok(allowed),
        }
    }
}

/// A host name that resolved only to addresses the policy refuses. Travels inside reqwest's
/// connect error, where the client finds it to name the cause in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{host} resolves to {category}, which is only contacted when listed in fhir.allowed_base_urls"
)]
pub struct RefusedAddress {
    pub host: String,
    pub category: Restricted,
}

/// The shared HTTP client's resolver when no allow-list is configured: the system resolver
/// (`getaddrinfo`, as reqwest's default), then [`AddressPolicy::filter`] on what it answers,
/// on every connection (so also for `next` pages and reason reads, which use the same client).
#[derive(Debug, Clone)]
pub struct GuardedResolver {
    policy: AddressPolicy,
}

impl GuardedResolver {
    pub fn new(policy: AddressPolicy) -> Arc<Self> {
        Arc::new(Self { policy })
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let allowed = policy.filter(&host, found)?;
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::Url;

    /// The host of `url` as the URL parser leaves it, as an address.
    fn host_ip(url: &str) -> IpAddr {
        let u = Url::parse(url).unwrap();
        let host = u.host_str().unwrap();
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .unwrap_or_else(|_| panic!("{url} parsed to the name {host}"))
    }

    fn cat(text: &str) -> Option<Restricted> {
        restricted(text.parse().unwrap())
    }

    #[test]
    fn every_restricted_ipv4_range_is_named() {
        use Restricted::*;
        for (ip, want) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.255.254", Loopback),
            ("10.0.0.5", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("100.64.0.1", Shared),
            ("100.100.100.200", Shared),
            ("100.127.255.255", Shared),
            ("169.254.169.254", LinkLocal),
            ("169.254.0.1", LinkLocal),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.0.170", Reserved),
            ("192.0.2.10", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("198.18.0.1", Benchmarking),
            ("198.19.255.1", Benchmarking),
        ] {
            assert_eq!(cat(ip), Some(want), "{ip}");
        }
        for public in [
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.0",
            "100.63.255.255",
            "100.128.0.0",
            "169.253.255.255",
            "192.169.0.1",
            "198.20.0.1",
            "223.255.255.255",
        ] {
            assert_eq!(cat(public), None, "{public}");
        }
    }

    #[test]
    fn ipv6_ranges_and_forms_carrying_ipv4_are_named() {
        use Restricted::*;
        for (ip, want) in [
            ("::", Unspecified),
            ("::1", Loopback),
            ("fe80::1", LinkLocal),
            ("febf::1", LinkLocal),
            ("fc00::1", UniqueLocal),
            ("fd12:3456::1", UniqueLocal),
            ("fec0::1", UniqueLocal),
            ("ff02::1", Multicast),
            ("2001:db8::1", Documentation),
            ("3fff::1", Documentation),
            ("2001:2::1", Benchmarking),
            ("2001:0:4136:e378::1", Reserved),
            ("64:ff9b:1::a9fe:a9fe", Reserved),
            ("100::1", Reserved),
            ("4000::1", Reserved),
            // IPv4-mapped, -translated, -compatible, NAT64 and 6to4 forms: the IPv4 address.
            ("::ffff:169.254.169.254", LinkLocal),
            ("::ffff:a9fe:a9fe", LinkLocal),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:10.0.0.5", Private),
            ("::ffff:0:192.168.0.1", Private),
            ("::169.254.169.254", LinkLocal),
            ("::10.1.2.3", Private),
            ("64:ff9b::169.254.169.254", LinkLocal),
            ("64:ff9b::a00:5", Private),
            ("64:ff9b::7f00:1", Loopback),
            ("2002:a9fe:a9fe::1", LinkLocal),
            ("2002:0a00:0005::", Private),
            ("::ffff:0.0.0.0", Unspecified),
        ] {
            assert_eq!(cat(ip), Some(want), "{ip}");
        }
        for public in [
            "2606:4700:4700::1111",
            "2a00:1450:4001:80b::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert_eq!(cat(public), None, "{public}");
        }
    }

    #[test]
    fn numeric_hex_octal_and_short_spellings_reach_the_classifier_as_dotted_quads() {
        for spelling in [
            "https://169.254.169.254/fhir",
            "https://0xA9FEA9FE/fhir",
            "https://0xa9.0xfe.0xa9.0xfe/fhir",
            "https://2852039166/fhir",
            "https://0251.0376.0251.0376/fhir",
            "https://169.254.43518/fhir",
            "https://169.16689662/fhir",
            "https://[::ffff:169.254.169.254]/fhir",
            "https://[::ffff:a9fe:a9fe]/fhir",
            "https://[64:ff9b::a9fe:a9fe]/fhir",
            "https://[fe80::1]/fhir",
        ] {
            assert_eq!(
                restricted(host_ip(spelling)),
                Some(Restricted::LinkLocal),
                "{spelling}"
            );
        }
        for spelling in ["http://0x7f.1/", "http://2130706433/", "http://127.1/"] {
            assert_eq!(
                restricted(host_ip(spelling)),
                Some(Restricted::Loopback),
                "{spelling}"
            );
        }
        assert_eq!(
            restricted(host_ip("https://0/fhir")),
            Some(Restricted::Unspecified)
        );
    }

    #[test]
    fn loopback_only_when_allowed() {
        let closed = AddressPolicy {
            allow_loopback: false,
        };
        let local = AddressPolicy {
            allow_loopback: true,
        };
        let lo: IpAddr = "127.0.0.1".parse().unwrap();
        assert_eq!(closed.check(lo), Err(Restricted::Loopback));
        assert_eq!(local.check(lo), Ok(()));
        assert_eq!(local.check("::1".parse().unwrap()), Ok(()));
        // never anything else
        for ip in ["169.254.169.254", "10.0.0.5", "0.0.0.0", "fd00::1"] {
            assert!(local.check(ip.parse().unwrap()).is_err(), "{ip}");
        }
        assert_eq!(local.check("93.184.215.14".parse().unwrap()), Ok(()));
    }

    #[test]
    fn resolved_addresses_are_filtered() {
        let p = AddressPolicy {
            allow_loopback: false,
        };
        let sa = |s: &str| -> SocketAddr { s.parse().unwrap() };
        // one public and one private answer: only the public one is used
        let mixed = [sa("10.0.0.5:0"), sa("93.184.215.14:0")];
        assert_eq!(
            p.filter("ehr.example.org", mixed),
            Ok(vec![sa("93.184.215.14:0")])
        );
        // only refused answers: an error naming the host, the category and the setting
        let e = p
            .filter("rebind.example", [sa("169.254.169.254:0")])
            .unwrap_err();
        assert_eq!(e.category, Restricted::LinkLocal);
        let text = e.to_string();
        assert!(
            text.contains("rebind.example")
                && text.contains("link-local")
                && text.contains("fhir.allowed_base_urls"),
            "{text}"
        );
        assert!(p.filter("x.example", [sa("[::ffff:10.0.0.1]:0")]).is_err());
    }

    /// The resolver the client uses, on a name that resolves without any network: `localhost`
    /// is refused when loopback is not allowed, and answered when it is.
    #[tokio::test]
    async fn the_resolver_refuses_a_name_resolving_to_a_refused_address() {
        let closed = GuardedResolver::new(AddressPolicy {
            allow_loopback: false,
        });
        let e = match closed.resolve("localhost".parse().unwrap()).await {
            Ok(addrs) => panic!("resolved to {:?}", addrs.collect::<Vec<_>>()),
            Err(e) => e,
        };
        let refused = e
            .downcast_ref::<RefusedAddress>()
            .expect("a RefusedAddress");
        assert_eq!(refused.category, Restricted::Loopback);
        let open = GuardedResolver::new(AddressPolicy {
            allow_loopback: true,
        });
        let addrs: Vec<_> = open
            .resolve("localhost".parse().unwrap())
            .await
            .unwrap()
            .collect();
        assert!(!addrs.is_empty() && addrs.iter().all(|a| a.ip().is_loopback()));
    }
}
