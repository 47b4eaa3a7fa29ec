//! Upstream addresses, resolved off the request path: when a rule is written or loaded,
//! and again in the background. `HttpPeer` needs a `SocketAddr` (given a name it would do
//! blocking DNS inside the phase, and panic if it failed).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use arc_swap::ArcSwap;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// One `host:port` and the addresses it resolved to, shared by every rule naming it.
#[derive(Debug)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    addrs: ArcSwap<Vec<SocketAddr>>,
    next: AtomicUsize,
    literal: bool,
}

impl Upstream {
    /// The next address, round-robin; `None` until the name has resolved.
    pub fn addr(&self) -> Option<SocketAddr> {
        let addrs = self.addrs.load();
        match addrs.len() {
            0 => None,
            1 => Some(addrs[0]),
            n => Some(addrs[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    pub fn is_resolved(&self) -> bool {
        !self.addrs.load().is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Resolver {
    known: Mutex<HashMap<(String, u16), Weak<Upstream>>>,
}

impl Resolver {
    /// The shared upstream for `host:port`; IP addresses are ready at once.
    pub fn upstream(&self, host: &str, port: u16) -> Arc<Upstream> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let key = (host.to_ascii_lowercase(), port);
        if let Some(up) = known.get(&key).and_then(Weak::upgrade) {
            return up;
        }
        let literal = host.parse::<IpAddr>().ok();
        let up = Arc::new(Upstream {
            host: host.to_string(),
            port,
            addrs: ArcSwap::from_pointee(
                literal
                    .map(|ip| vec![SocketAddr::new(ip, port)])
                    .unwrap_or_default(),
            ),
            next: AtomicUsize::new(0),
            literal: literal.is_some(),
        });
        known.retain(|_, w| w.strong_count() > 0);
        known.insert(key, Arc::downgrade(&up));
        up
    }

    /// Looks `up` up now (bounded); keeps the old addresses when the lookup fails.
    pub async fn resolve(&self, up: &Upstream) {
        if up.literal {
            return;
        }
        let lookup = tokio::net::lookup_host((up.host.as_str(), up.port));
        match tokio::time::timeout(LOOKUP_TIMEOUT, lookup).await {
            Ok(Ok(found)) => {
                let mut addrs: Vec<SocketAddr> = found.collect();
                addrs.sort();
                addrs.dedup();
                if !addrs.is_empty() && **up.addrs.load() != addrs {
                    log::debug!("proxy: {}:{} resolves to {addrs:?}", up.host, up.port);
                    up.addrs.store(Arc::new(addrs));
                }
            }
            Ok(Err(e)) => log::warn!("proxy: cannot resolve upstream {}: {e}", up.host),
            Err(_) => log::warn!("proxy: resolving upstream {} timed out", up.host),
        }
    }

    /// Every upstream still in use by some rule.
    fn live(&self) -> Vec<Arc<Upstream>> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        known.values().filter_map(Weak::upgrade).collect()
    }

    /// Resolves the names not resolved yet.
    pub async fn resolve_pending(&self) {
        for up in self.live().into_iter().filter(|u| !u.is_resolved()) {
            self.resolve(&up).await;
        }
    }

    /// Re-resolves every name (DNS answers change).
    pub async fn refresh(&self) {
        for up in self.live() {
            self.resolve(&up).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_need_no_lookup_and_are_shared() {
        let r = Resolver::default();
        let a = r.upstream("127.0.0.1", 80);
        let b = r.upstream("127.0.0.1", 80);
        assert!(Arc::ptr_eq(&a, &b));
        assert_eq!(a.addr(), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(
            r.upstream("::1", 81).addr(),
            Some("[::1]:81".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn names_resolve_off_the_request_path() {
        let r = Resolver::default();
        let up = r.upstream("localhost", 8080);
        assert_eq!(up.addr(), None, "nothing until resolved");
        r.resolve_pending().await;
        let addr = up.addr().expect("localhost resolves");
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 8080);
        let bad = r.upstream("no-such-host.invalid", 80);
        r.resolve(&bad).await;
        assert_eq!(bad.addr(), None);
    }
}
