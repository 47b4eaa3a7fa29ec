//! The client address of SPEC 3: the TCP peer, or the first `X-Forwarded-For` entry when
//! the peer is a trusted proxy; and which host names are this host's.

use std::net::IpAddr;

use http::{HeaderMap, HeaderName};
use ipnet::IpNet;

/// Prebuilt, so that looking it up does not parse the name on every request; a static, so
/// that the gateway can set it by `&'static` reference (`headers::set_upstream`).
pub static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// Parses IPs and CIDRs; the error names the entry that is neither.
    pub fn parse<S: AsRef<str>>(entries: &[S]) -> Result<Self, String> {
        let mut nets = Vec::with_capacity(entries.len());
        for e in entries {
            let e = e.as_ref().trim();
            let net = e
                .parse::<IpNet>()
                .or_else(|_| e.parse::<IpAddr>().map(IpNet::from))
                .map_err(|_| format!("{e:?} is not an IP address or CIDR"))?;
            nets.push(net);
        }
        Ok(Self(nets))
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = canonical(ip);
        self.0.iter().any(|n| n.contains(&ip))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The client address for a request from `peer` with `headers`. `X-Forwarded-For` is
    /// only looked at when `peer` is trusted.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let peer = canonical(peer);
        if self.0.is_empty() || !self.contains(peer) {
            return peer;
        }
        headers
            .get(&X_FORWARDED_FOR)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .and_then(|first| first.trim().parse::<IpAddr>().ok())
            .map(canonical)
            .unwrap_or(peer)
    }

    /// Whether every `X-Forwarded-For` entry after the first is loopback or a trusted
    /// proxy: only then is the first entry where the request came from, as far as this
    /// gateway can tell. A proxy that appends turns a client's own
    /// `X-Forwarded-For: 127.0.0.1` into `127.0.0.1, <client>`.
    pub fn vouched_for(&self, headers: &HeaderMap) -> bool {
        headers
            .get_all(&X_FORWARDED_FOR)
            .iter()
            .flat_map(|v| v.to_str().unwrap_or("not text").split(','))
            .skip(1)
            .all(|e| {
                e.trim()
                    .parse::<IpAddr>()
                    .is_ok_and(|ip| is_loopback(ip) || self.contains(ip))
            })
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:1.2.3.4`) count as the IPv4 address.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

pub fn is_loopback(ip: IpAddr) -> bool {
    canonical(ip).is_loopback()
}

/// Whether a host (of a `Host` header, an `Origin`, a URL) is this host: `localhost` and
/// its subdomains (RFC 6761 6.3: always loopback, and browsers resolve them so), a
/// loopback address, or the unspecified one (`curl 0.0.0.0:8000` reaches this host too,
/// and the name is the client's own choice, never a rebinding site's); IPv6 in brackets,
/// as in a URL.
pub fn is_loopback_host(host: &str) -> bool {
    let host = host.strip_suffix('.').unwrap_or(host);
    let ip = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    host.rsplit('.')
        .next()
        .is_some_and(|last| last.eq_ignore_ascii_case("localhost"))
        || ip
            .parse::<IpAddr>()
            .is_ok_and(|ip| is_loopback(ip) || ip.is_unspecified())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for host in [
            "localhost",
            "LOCALHOST",
            "localhost.",
            "app.localhost",
            "a.b.Localhost",
            "127.0.0.1",
            "127.1.2.3",
            "[::1]",
            "0.0.0.0",
            "[::]",
            "[::ffff:127.0.0.1]",
        ] {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in [
            "",
            "notlocalhost",
            "localhost.evil.example",
            "localhostx",
            "10.0.0.1",
            "[::2]",
            "::1x",
            "evil.example",
        ] {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn forwarded(value: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            X_FORWARDED_FOR.clone(),
            http::HeaderValue::from_static(value),
        );
        h
    }

    #[test]
    fn a_chain_is_vouched_for_when_every_later_hop_is_known() {
        let t = TrustedProxies::parse(&["10.0.0.0/8"]).unwrap();
        assert!(t.vouched_for(&HeaderMap::new()));
        for known in [
            "127.0.0.1",
            "127.0.0.1, 10.0.0.2",
            "203.0.113.7, ::1, 10.9.9.9",
        ] {
            assert!(t.vouched_for(&forwarded(known)), "{known}");
        }
        for stranger in [
            "127.0.0.1, 203.0.113.7",
            "127.0.0.1, junk",
            "127.0.0.1, 10.0.0.2, 8.8.8.8",
        ] {
            assert!(!t.vouched_for(&forwarded(stranger)), "{stranger}");
        }
        // Two header lines read as one list, in order.
        let mut two = forwarded("127.0.0.1");
        two.append(
            X_FORWARDED_FOR.clone(),
            http::HeaderValue::from_static("203.0.113.7"),
        );
        assert!(!t.vouched_for(&two));
    }

    #[test]
    fn untrusted_peer_is_the_client() {
        let t = TrustedProxies::default();
        let xff = forwarded("9.9.9.9");
        assert_eq!(t.client_ip(ip("10.0.0.1"), &xff), ip("10.0.0.1"));
    }

    #[test]
    fn trusted_peer_yields_first_forwarded_entry() {
        let t = TrustedProxies::parse(&["127.0.0.1", "10.0.0.0/8"]).unwrap();
        let xff = forwarded(" 203.0.113.7 , 10.0.0.2");
        assert_eq!(t.client_ip(ip("10.1.2.3"), &xff), ip("203.0.113.7"));
        assert_eq!(t.client_ip(ip("::ffff:127.0.0.1"), &xff), ip("203.0.113.7"));
        let junk = forwarded("not-an-ip");
        assert_eq!(t.client_ip(ip("127.0.0.1"), &junk), ip("127.0.0.1"));
        assert_eq!(
            t.client_ip(ip("127.0.0.1"), &HeaderMap::new()),
            ip("127.0.0.1")
        );
    }

    #[test]
    fn bad_entries_are_named() {
        let err = TrustedProxies::parse(&["10.0.0.0/8", "proxy.local"]).unwrap_err();
        assert!(err.contains("proxy.local"), "{err}");
    }

    #[test]
    fn loopback() {
        assert!(is_loopback(ip("127.8.0.1")));
        assert!(is_loopback(ip("::1")));
        assert!(is_loopback(ip("::ffff:127.0.0.1")));
        assert!(!is_loopback(ip("10.0.0.1")));
    }
}
