//! Upstream addresses, resolved off the request path: when a rule is written or loaded,
//! and again in the background. `HttpPeer` needs a `SocketAddr` (given a name it would do
//! blocking DNS inside the phase, and panic if it failed).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex, Weak};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// How long an address that failed a connection is passed over while its name has others
/// (nginx's `fail_timeout`).
const DOWN_FOR: Duration = Duration::from_secs(10);

/// One `host:port` and the addresses it resolved to, shared by every rule naming it.
#[derive(Debug)]
pub struct Upstream {
    pub host: String,
    pub port: u16,
    addrs: ArcSwap<Addrs>,
    next: AtomicUsize,
    literal: bool,
}

/// The addresses of a name, and until when each is passed over (ms on [`clock_ms`]).
#[derive(Debug, Default)]
struct Addrs {
    list: Vec<SocketAddr>,
    down_until: Vec<AtomicU64>,
}

impl Addrs {
    fn new(list: Vec<SocketAddr>) -> Addrs {
        let down_until = list.iter().map(|_| AtomicU64::new(0)).collect();
        Addrs { list, down_until }
    }
}

/// Milliseconds since the first call: the clock of `down_until`.
fn clock_ms() -> u64 {
    static START: LazyLock<Instant> = LazyLock::new(Instant::now);
    START.elapsed().as_millis() as u64
}

impl Upstream {
    /// The address to connect to; `None` until the name has resolved. A name with several
    /// addresses takes them in turn, passing over `tried` (this request's failed ones) and,
    /// while others are left, those that failed a connection lately: `localhost` is
    /// `127.0.0.1` and `::1` in containers and pods, and a sidecar listening on IPv4 only
    /// failed every other request.
    pub fn addr(&self, tried: &[SocketAddr]) -> Option<SocketAddr> {
        let addrs = self.addrs.load();
        let n = addrs.list.len();
        if n <= 1 {
            return addrs.list.first().copied();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let now = clock_ms();
        let turn = (0..n).map(|k| (start + k) % n);
        let untried = |i: &usize| !tried.contains(&addrs.list[*i]);
        let i = turn
            .clone()
            .filter(untried)
            .find(|&i| addrs.down_until[i].load(Ordering::Relaxed) <= now)
            .or_else(|| turn.clone().find(untried))
            .unwrap_or(start % n);
        Some(addrs.list[i])
    }

    /// How many addresses the name has now.
    pub fn count(&self) -> usize {
        self.addrs.load().list.len()
    }

    /// `addr` failed a connection: pass it over for a while, if the name has others.
    pub fn failed(&self, addr: SocketAddr) {
        let addrs = self.addrs.load();
        if addrs.list.len() > 1
            && let Some(i) = addrs.list.iter().position(|a| *a == addr)
        {
            let until = clock_ms() + DOWN_FOR.as_millis() as u64;
            addrs.down_until[i].store(until, Ordering::Relaxed);
        }
    }

    pub fn is_resolved(&self) -> bool {
        !self.addrs.load().list.is_empty()
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
            addrs: ArcSwap::from_pointee(Addrs::new(
                literal
                    .map(|ip| vec![SocketAddr::new(ip, port)])
                    .unwrap_or_default(),
            )),
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
                if !addrs.is_empty() && up.addrs.load().list != addrs {
                    log::debug!("proxy: {}:{} resolves to {addrs:?}", up.host, up.port);
                    up.addrs.store(Arc::new(Addrs::new(addrs)));
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
        assert_eq!(a.addr(&[]), Some("127.0.0.1:80".parse().unwrap()));
        assert_eq!(
            r.upstream("::1", 81).addr(&[]),
            Some("[::1]:81".parse().unwrap())
        );
    }

    #[tokio::test]
    async fn names_resolve_off_the_request_path() {
        let r = Resolver::default();
        let up = r.upstream("localhost", 8080);
        assert_eq!(up.addr(&[]), None, "nothing until resolved");
        r.resolve_pending().await;
        let addr = up.addr(&[]).expect("localhost resolves");
        assert!(addr.ip().is_loopback());
        assert_eq!(addr.port(), 8080);
        let bad = r.upstream("no-such-host.invalid", 80);
        r.resolve(&bad).await;
        assert_eq!(bad.addr(&[]), None);
    }

    /// Two addresses, as `localhost` has in a pod: taken in turn, one that failed is
    /// passed over while the other is left, and this request's failed ones always are.
    #[test]
    fn a_failed_address_is_passed_over() {
        let a: SocketAddr = "127.0.0.1:80".parse().unwrap();
        let b: SocketAddr = "[::1]:80".parse().unwrap();
        let up = Resolver::default().upstream("dual", 80);
        up.addrs.store(Arc::new(Addrs::new(vec![a, b])));
        let picks: Vec<_> = (0..4).map(|_| up.addr(&[]).unwrap()).collect();
        assert_eq!(picks, [a, b, a, b]);
        up.failed(b);
        assert!((0..4).all(|_| up.addr(&[]) == Some(a)));
        assert_eq!(
            up.addr(&[a]),
            Some(b),
            "down, but the only one left untried"
        );
        up.failed(a);
        let picks: Vec<_> = (0..2).map(|_| up.addr(&[]).unwrap()).collect();
        assert!(
            picks.contains(&a) && picks.contains(&b),
            "all down: in turn"
        );
        // One address is never passed over: there is nothing else to try.
        let single = Resolver::default().upstream("127.0.0.1", 81);
        single.failed("127.0.0.1:81".parse().unwrap());
        assert_eq!(single.addr(&[]), Some("127.0.0.1:81".parse().unwrap()));
    }
}
