//! Where feedmux may connect: the guard against a feed sending it into private networks.
//!
//! A configured source may be anywhere (a feed on the LAN is the user's choice). Anything else
//! a fetch reaches (a redirect's target, a URL a permanent redirect left in the source's
//! state) must be a public address: a host name is resolved through [`GuardedResolver`], which
//! drops the addresses that are not public, and an address written in the URL is checked by
//! [`AddressPolicy::check_url`] before the request. `[poll] allow_private_networks` names the
//! networks that may be reached all the same. Without this a public feed could redirect to
//! `http://169.254.169.254/` or `http://127.0.0.1:8080/admin` and feedmux would republish what
//! it found there. Behind an HTTP proxy (`HTTP_PROXY`, `HTTPS_PROXY`, `ALL_PROXY`), which
//! resolves names itself, the names that are not configured are resolved and checked here
//! before the request ([`AddressPolicy::check_name_behind_proxy`]).
//!
//! This module decides and resolves; it never sends a request.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ipnet::IpNet;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

use crate::config::Config;

/// Which hosts may be non-public: the configured ones, and the allowed networks.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    /// Hosts of configured URLs (sources and the WebSub hub), as `Url::host_str` writes
    /// them, lower case: reached wherever they point.
    trusted_hosts: HashSet<String>,
    /// `[poll] allow_private_networks`.
    allowed: Vec<IpNet>,
}

/// A connection that the policy refuses: the host, the address it is (or resolved to), and
/// what kind of address that is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refused to connect to {host} ({addr}, a {kind} address): only configured sources may \
     point into private networks (to allow it: [poll] allow_private_networks)"
)]
pub struct Refused {
    pub host: String,
    pub addr: IpAddr,
    pub kind: &'static str,
}

impl AddressPolicy {
    /// The policy of `config`: its sources' and hub's hosts trusted, `[poll]
    /// allow_private_networks` allowed.
    pub fn for_config(config: &Config) -> Self {
        let hub = config.websub.as_ref().map(|w| &w.hub);
        AddressPolicy::new(
            config.sources.iter().map(|s| &s.url).chain(hub),
            config.poll.allow_private_networks.clone(),
        )
    }

    /// A policy trusting the hosts of `urls`, and allowing `allowed` for everyone.
    pub fn new<'a>(urls: impl IntoIterator<Item = &'a Url>, allowed: Vec<IpNet>) -> Self {
        AddressPolicy {
            trusted_hosts: urls
                .into_iter()
                .filter_map(|u| u.host_str())
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            allowed,
        }
    }

    fn trusts(&self, host: &str) -> bool {
        self.trusted_hosts.contains(&host.to_ascii_lowercase())
    }

    /// Whether `addr` may be reached by a host that is not configured.
    fn may_reach(&self, addr: IpAddr) -> Result<(), &'static str> {
        let addr = addr.to_canonical();
        match non_public(addr) {
            None => Ok(()),
            Some(_) if self.allowed.iter().any(|net| net.contains(&addr)) => Ok(()),
            Some(kind) => Err(kind),
        }
    }

    /// Checks a URL whose host is an address (`http://10.0.0.1/`, `http://[::1]/`, and the
    /// forms the URL parser reads as addresses: `http://2130706433/`, `http://0x7f.1/`).
    /// Host names are checked when they are resolved ([`GuardedResolver`]).
    pub fn check_url(&self, url: &Url) -> Result<(), Refused> {
        let addr = match url.host() {
            Some(Host::Ipv4(v4)) => IpAddr::V4(v4),
            Some(Host::Ipv6(v6)) => IpAddr::V6(v6),
            Some(Host::Domain(_)) | None => return Ok(()),
        };
        let host = url.host_str().unwrap_or_default();
        if self.trusts(host) {
            return Ok(());
        }
        self.may_reach(addr).map_err(|kind| Refused {
            host: host.to_owned(),
            addr,
            kind,
        })
    }

    /// Checks a URL's host name the way [`GuardedResolver`] would, for requests that go
    /// through an HTTP proxy: the proxy resolves names itself, so feedmux never sees the
    /// addresses it connects to. A name that is not configured is resolved here (within
    /// `timeout`) and refused when none of its addresses may be reached. A name that does not
    /// resolve here is left to the proxy, which may know names this host does not.
    pub async fn check_name_behind_proxy(
        &self,
        url: &Url,
        timeout: Duration,
    ) -> Result<(), Refused> {
        let Some(Host::Domain(host)) = url.host() else {
            return Ok(()); // addresses: `check_url`
        };
        if self.trusts(host) {
            return Ok(());
        }
        let port = url.port_or_known_default().unwrap_or(80);
        let lookup = tokio::time::timeout(timeout, tokio::net::lookup_host((host, port))).await;
        match lookup {
            Ok(Ok(addrs)) => self.filter(host, addrs.collect()).map(drop),
            Ok(Err(_)) | Err(_) => Ok(()),
        }
    }

    /// The addresses `host` resolved to that may be reached: all of them for a configured
    /// host, else the public and allowed ones. None left is refused, naming the first.
    fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        if self.trusts(host) {
            return Ok(addrs);
        }
        let mut first_refused = None;
        let reachable: Vec<SocketAddr> = addrs
            .into_iter()
            .filter(|a| match self.may_reach(a.ip()) {
                Ok(()) => true,
                Err(kind) => {
                    first_refused.get_or_insert((a.ip(), kind));
                    false
                }
            })
            .collect();
        match first_refused {
            Some((addr, kind)) if reachable.is_empty() => Err(Refused {
                host: host.to_owned(),
                addr,
                kind,
            }),
            _ => Ok(reachable),
        }
    }
}

/// Whether the environment names an HTTP proxy, which reqwest then sends requests through
/// (the variables it reads; the lowercase forms too).
pub fn proxy_in_environment() -> bool {
    ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"]
        .iter()
        .any(|name| {
            [name.to_string(), name.to_lowercase()]
                .iter()
                .any(|var| std::env::var_os(var).is_some_and(|v| !v.is_empty()))
        })
}

/// What kind of non-public address `addr` is, or `None` for a public one: the special-purpose
/// ranges of the IANA registries that are not globally reachable, and the IPv6 forms that
/// carry an IPv4 address (mapped, compatible, NAT64, 6to4) judged by that address.
pub fn non_public(addr: IpAddr) -> Option<&'static str> {
    match addr {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(v4: Ipv4Addr) -> Option<&'static str> {
    let [a, b, c, _] = v4.octets();
    Some(match (a, b, c) {
        _ if v4.is_unspecified() || a == 0 => "unspecified (this-network)",
        _ if v4.is_loopback() => "loopback",
        _ if v4.is_private() => "private",
        _ if v4.is_link_local() => "link-local",
        (100, 64..=127, _) => "shared (carrier-grade NAT)",
        (192, 0, 0) => "IETF protocol",
        (192, 0, 2) | (198, 51, 100) | (203, 0, 113) => "documentation",
        (198, 18..=19, _) => "benchmarking",
        _ if v4.is_multicast() => "multicast",
        _ if a >= 240 => "reserved",
        _ => return None,
    })
}

fn non_public_v6(v6: Ipv6Addr) -> Option<&'static str> {
    let segments = v6.segments();
    let embedded_v4 = || {
        let [_, _, _, _, _, _, hi, lo] = segments;
        Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
    };
    if let Some(v4) = v6.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    Some(match segments {
        _ if v6.is_unspecified() => "unspecified",
        _ if v6.is_loopback() => "loopback",
        // ::a.b.c.d (IPv4-compatible, deprecated) and 64:ff9b::a.b.c.d (NAT64).
        [0, 0, 0, 0, 0, 0, _, _] | [0x64, 0xff9b, 0, 0, 0, 0, _, _] => {
            return non_public_v4(embedded_v4())
        }
        // 6to4: 2002:AABB:CCDD::/48 carries AA.BB.CC.DD.
        [0x2002, hi, lo, ..] => {
            return non_public_v4(Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)))
        }
        [s, ..] if s & 0xfe00 == 0xfc00 => "unique-local",
        [s, ..] if s & 0xffc0 == 0xfe80 => "link-local",
        [s, ..] if s & 0xffc0 == 0xfec0 => "site-local",
        [s, ..] if s & 0xff00 == 0xff00 => "multicast",
        [0x2001, 0x0db8, ..] => "documentation",
        [0x0100, 0, 0, 0, ..] => "discard-only",
        _ => return None,
    })
}

/// Why `url` seems to point into a private network without resolving it: an address that
/// is not public, or a name that only a local network resolves (`localhost`, `*.local`,
/// `*.internal`, `*.home.arpa`, a name without a dot). `import-opml` warns of these, since a
/// configured source is trusted wherever it points.
pub fn private_looking(url: &Url) -> Option<String> {
    let addr = match url.host()? {
        Host::Ipv4(v4) => IpAddr::V4(v4),
        Host::Ipv6(v6) => IpAddr::V6(v6),
        Host::Domain(name) => {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            let local = !name.contains('.')
                || [".localhost", ".local", ".internal", ".home.arpa", ".lan"]
                    .iter()
                    .any(|suffix| name.ends_with(suffix));
            return local.then(|| format!("{name} is a local name"));
        }
    };
    non_public(addr.to_canonical()).map(|kind| format!("{addr} is a {kind} address"))
}

/// The DNS resolver of the one HTTP client: the system's resolver, with the addresses a host
/// may not reach under the [`AddressPolicy`] dropped. Checking here rather than before the
/// request leaves no gap between the check and the connection for a name that resolves
/// differently the second time.
#[derive(Debug, Clone, Default)]
pub struct GuardedResolver {
    policy: Arc<RwLock<Arc<AddressPolicy>>>,
}

impl GuardedResolver {
    pub fn policy(&self) -> Arc<AddressPolicy> {
        self.policy
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub fn set_policy(&self, policy: AddressPolicy) {
        *self.policy.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(policy);
    }
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let reachable = policy.filter(&host, addrs)?;
            Ok(Box::new(reachable.into_iter()) as Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn url(text: &str) -> Url {
        Url::parse(text).unwrap()
    }

    fn kind(addr: &str) -> Option<&'static str> {
        non_public(addr.parse().unwrap())
    }

    #[test]
    fn private_loopback_link_local_and_their_disguises_are_not_public() {
        for (addr, expected) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.31.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified (this-network)"),
            ("100.100.1.1", "shared (carrier-grade NAT)"),
            ("224.0.0.1", "multicast"),
            ("255.255.255.255", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("::127.0.0.1", "loopback"),
            ("64:ff9b::a9fe:a9fe", "link-local"),
            ("2002:0a00:0001::1", "private"),
            ("fd12:3456::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("ff02::1", "multicast"),
        ] {
            assert_eq!(kind(addr), Some(expected), "{addr}");
        }
        for addr in [
            "93.184.215.14",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2002:0808:0808::1",
        ] {
            assert_eq!(kind(addr), None, "{addr}");
        }
    }

    #[test]
    fn addresses_in_urls_are_refused_in_every_spelling_unless_configured_or_allowed() {
        let policy = AddressPolicy::new([&url("https://feeds.example/rss")], vec![]);
        for target in [
            "http://127.0.0.1:8080/admin",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data/",
            "http://2852039166/",
            "http://10.0.0.1/",
            "http://0.0.0.0/",
        ] {
            let refused = policy.check_url(&url(target));
            assert!(refused.is_err(), "{target} was let through");
        }
        let refused = policy.check_url(&url("http://2852039166/")).unwrap_err();
        assert_eq!(refused.addr, "169.254.169.254".parse::<IpAddr>().unwrap());
        assert_eq!(refused.kind, "link-local");
        assert!(refused.to_string().contains("allow_private_networks"));
        // Public addresses and host names (checked when resolved) pass.
        assert!(policy.check_url(&url("http://93.184.215.14/")).is_ok());
        assert!(policy.check_url(&url("http://localhost/")).is_ok());

        let configured = AddressPolicy::new([&url("http://10.0.0.5:8080/feed")], vec![]);
        assert!(configured.check_url(&url("http://10.0.0.5/other")).is_ok());
        assert!(configured.check_url(&url("http://10.0.0.6/")).is_err());

        let allowed = AddressPolicy::new([], vec!["10.0.0.0/8".parse().unwrap()]);
        assert!(allowed.check_url(&url("http://10.9.9.9/")).is_ok());
        assert!(allowed.check_url(&url("http://[::ffff:10.9.9.9]/")).is_ok());
        assert!(allowed.check_url(&url("http://192.168.0.1/")).is_err());
    }

    #[test]
    fn local_names_and_private_addresses_look_private_without_a_lookup() {
        for (target, why) in [
            ("http://localhost:8080/feed", "localhost is a local name"),
            ("http://printer.local/", "printer.local is a local name"),
            ("http://intranet/rss", "intranet is a local name"),
            (
                "http://[::ffff:10.1.2.3]/",
                "::ffff:10.1.2.3 is a private address",
            ),
            (
                "http://2852039166/",
                "169.254.169.254 is a link-local address",
            ),
        ] {
            assert_eq!(private_looking(&url(target)).as_deref(), Some(why));
        }
        for public in ["https://www.jiqizhixin.com/rss", "http://93.184.215.14/"] {
            assert_eq!(private_looking(&url(public)), None, "{public}");
        }
    }

    #[test]
    fn resolved_names_keep_only_the_addresses_they_may_reach() {
        let at = |a: &str| SocketAddr::new(a.parse().unwrap(), 0);
        let policy = AddressPolicy::new([&url("http://nas.lan/feed")], vec![]);
        assert_eq!(
            policy.filter("nas.lan", vec![at("192.168.1.2")]),
            Ok(vec![at("192.168.1.2")])
        );
        assert_eq!(
            policy.filter("NAS.lan", vec![at("192.168.1.2")]),
            Ok(vec![at("192.168.1.2")])
        );
        assert_eq!(
            policy.filter("rebind.example", vec![at("127.0.0.1"), at("::1")]),
            Err(Refused {
                host: "rebind.example".into(),
                addr: "127.0.0.1".parse().unwrap(),
                kind: "loopback"
            })
        );
        assert_eq!(
            policy.filter("mixed.example", vec![at("10.0.0.1"), at("93.184.215.14")]),
            Ok(vec![at("93.184.215.14")])
        );
    }
}
