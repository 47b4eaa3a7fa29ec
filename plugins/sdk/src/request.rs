//! What plugin hooks see of a request, and what they may add to its response.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue, Method};
use serde::Serialize;

/// The token of one `Authorization` value when its scheme is `Bearer` (any case), trimmed;
/// `None` for another scheme or an empty token. The gateway's admin and metrics checks and
/// the JWT check read it alike.
pub fn bearer_token(value: &HeaderValue) -> Option<&[u8]> {
    let (scheme, rest) = value.as_bytes().split_at_checked(7)?;
    scheme
        .eq_ignore_ascii_case(b"bearer ")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Which handler owns a request (SPEC 1 step 3); also the metrics `route` label.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteKind {
    /// The runtime API, `/.well-known/buntime` and `/metrics`.
    Api,
    Plugin(&'static str),
    Rule(Arc<str>),
    Shell,
    App(Arc<str>),
    Preflight,
    None,
}

impl RouteKind {
    pub fn is_admin_plugin(&self) -> bool {
        matches!(self, RouteKind::Plugin(_))
    }
}

/// A `{requests, window}` limit carried by a proxy rule or an app manifest (SPEC 5.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RateLimitSpec {
    pub requests: u64,
    #[serde(serialize_with = "ser_window")]
    pub window: Duration,
}

impl RateLimitSpec {
    /// Most requests a limit may allow in a window (the gateway's, a rule's or an app's).
    pub const MAX_REQUESTS: u64 = 1_000_000_000;
    /// The window of a rule's or an app's limit that names only `requests`.
    pub const DEFAULT_WINDOW: Duration = Duration::from_secs(60);
    /// What is wrong with a window, for the gateway's, a rule's and an app's limit alike.
    pub const WINDOW_RULE: &str = "must be whole seconds, at least 1s (30, 30s, 1m, 1h, 1d)";

    /// Whether `window` can be a limit's window: `Retry-After` and `RateLimit-Reset` count
    /// whole seconds, and each window length has a counting sketch of its own.
    pub fn valid_window(window: Duration) -> bool {
        window >= Duration::from_secs(1) && window.subsec_nanos() == 0
    }
}

fn ser_window<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&crate::duration::format_duration(*d))
}

/// A verified caller (SPEC 6.2).
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub roles: Vec<String>,
    pub claims: serde_json::Map<String, serde_json::Value>,
    /// `X-Identity`, rendered once when the token was verified.
    pub header: HeaderValue,
    /// `X-Auth-Subject`; `None` when `sub` is not a valid header value.
    pub subject_header: Option<HeaderValue>,
}

impl Identity {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// The request as hooks see it.
#[derive(Debug, Clone, Copy)]
pub struct RequestInfo<'a> {
    pub method: &'a Method,
    /// The path without the query.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The client address of SPEC 3 (trusted proxies applied).
    pub client_ip: IpAddr,
    pub route: &'a RouteKind,
    pub identity: Option<&'a Identity>,
    /// The matched rule's or app's own rate limit, if any.
    pub rate_limit: Option<&'a RateLimitSpec>,
}

/// Headers to set on a response; later entries for the same name replace earlier ones
/// unless appended.
#[derive(Debug, Default, Clone)]
pub struct HeaderList {
    entries: Vec<(HeaderName, HeaderValue, bool)>,
}

impl HeaderList {
    /// Room for `n` entries: the gateway adds its usual few without growing.
    pub fn with_capacity(n: usize) -> HeaderList {
        HeaderList {
            entries: Vec::with_capacity(n),
        }
    }

    pub fn set(&mut self, name: HeaderName, value: HeaderValue) {
        self.entries.push((name, value, false));
    }

    /// Adds a value without replacing existing ones (`Vary`).
    pub fn append(&mut self, name: HeaderName, value: HeaderValue) {
        self.entries.push((name, value, true));
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// `(name, value, append)` in the order they were added.
    pub fn iter(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue, bool)> {
        self.entries.iter().map(|(n, v, a)| (n, v, *a))
    }

    pub fn get(&self, name: &str) -> Option<&HeaderValue> {
        self.entries
            .iter()
            .rev()
            .find(|(n, _, _)| n.as_str().eq_ignore_ascii_case(name))
            .map(|(_, v, _)| v)
    }
}

/// `(name, value, append)` in the order they were added, moved out: a cloned value that
/// was made at run time (a `RateLimit-*` count) would allocate.
impl IntoIterator for HeaderList {
    type Item = (HeaderName, HeaderValue, bool);
    type IntoIter = std::vec::IntoIter<(HeaderName, HeaderValue, bool)>;

    fn into_iter(self) -> Self::IntoIter {
        self.entries.into_iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let token =
            |v: &'static str| bearer_token(&HeaderValue::from_static(v)).map(<[u8]>::to_vec);
        assert_eq!(token("Bearer abc").as_deref(), Some(&b"abc"[..]));
        assert_eq!(token("bEARER  abc ").as_deref(), Some(&b"abc"[..]));
        for none in ["Basic abc", "Bearer ", "Bearer   ", "Bearerabc", "Bear"] {
            assert_eq!(token(none), None, "{none}");
        }
    }
}
