//! CORS (SPEC 5.1): which origins are allowed, the preflight answer, and the headers every
//! other response to an allowed origin gets.

use buntime_plugin_sdk::{ApiResponse, HeaderList};
use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, VARY,
};
use http::{HeaderMap, HeaderValue, StatusCode};

/// Longer Origin headers are never allowed (no legitimate origin comes close).
const MAX_ORIGIN: usize = 2048;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OriginRule {
    Any,
    /// `scheme://host[:port]`, lowercase.
    Exact(String),
    /// `*.example.com` (any scheme) or `https://*.example.com`; any depth of subdomain,
    /// never the bare domain; a port only if the rule names one.
    Wildcard {
        scheme: Option<String>,
        /// `.example.com`
        suffix: String,
        port: Option<u16>,
    },
}

impl OriginRule {
    pub fn parse(text: &str) -> Result<OriginRule, String> {
        let t = ascii_host(text.trim().trim_end_matches('/'))?.to_ascii_lowercase();
        if t == "*" {
            return Ok(OriginRule::Any);
        }
        let (scheme, rest) = match t.split_once("://") {
            Some((s, r)) => (Some(s.to_string()), r),
            None => (None, t.as_str()),
        };
        if let Some(domain) = rest.strip_prefix("*.") {
            let (host, port) = split_port(domain).ok_or("invalid port")?;
            if host.is_empty() || !valid_host(host) {
                return Err("expected *.domain".into());
            }
            return Ok(OriginRule::Wildcard {
                scheme,
                suffix: format!(".{host}"),
                port,
            });
        }
        let Some(origin) = parse_origin(&t).filter(|_| scheme.is_some()) else {
            return Err(
                "expected an origin like https://app.example.com, *.example.com or *".into(),
            );
        };
        // Browsers leave the scheme's own port out of `Origin`: `https://a.com:443` is
        // sent as `https://a.com`, which the rule as written would never match.
        if origin.port.is_some() && origin.port == default_port(origin.scheme) {
            return Ok(OriginRule::Exact(format!(
                "{}://{}",
                origin.scheme, origin.host
            )));
        }
        Ok(OriginRule::Exact(t))
    }

    fn matches(&self, origin: &Origin<'_>, lowered: &str) -> bool {
        match self {
            OriginRule::Any => true,
            OriginRule::Exact(o) => o == lowered,
            OriginRule::Wildcard {
                scheme,
                suffix,
                port,
            } => {
                scheme.as_deref().is_none_or(|s| s == origin.scheme)
                    && origin.host.len() > suffix.len()
                    && origin.host.ends_with(suffix.as_str())
                    && port.is_none_or(|p| origin.port.or(default_port(origin.scheme)) == Some(p))
            }
        }
    }

    pub fn describe(&self) -> String {
        match self {
            OriginRule::Any => "*".into(),
            OriginRule::Exact(o) => o.clone(),
            OriginRule::Wildcard {
                scheme,
                suffix,
                port,
            } => format!(
                "{}*{suffix}{}",
                scheme
                    .as_ref()
                    .map(|s| format!("{s}://"))
                    .unwrap_or_default(),
                port.map(|p| format!(":{p}")).unwrap_or_default()
            ),
        }
    }
}

/// A parsed `Origin` header: `scheme://host[:port]`.
struct Origin<'a> {
    scheme: &'a str,
    host: &'a str,
    port: Option<u16>,
}

/// The port an origin of this scheme leaves out.
fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// The origin rule with its host as browsers send it in `Origin`: an internationalised
/// name in its ASCII form (`https://café.example` is `https://xn--caf-dma.example`).
fn ascii_host(rule: &str) -> Result<String, String> {
    if rule.is_ascii() {
        return Ok(rule.to_string());
    }
    let (scheme, rest) = match rule.split_once("://") {
        Some((s, r)) => (&rule[..s.len() + 3], r),
        None => ("", rule),
    };
    let (wild, hostport) = match rest.strip_prefix("*.") {
        Some(r) => ("*.", r),
        None => ("", rest),
    };
    let (host, port) = match hostport.rsplit_once(':') {
        Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => (h, &hostport[h.len()..]),
        _ => (hostport, ""),
    };
    match url::Host::parse(host) {
        Ok(url::Host::Domain(ascii)) => Ok(format!("{scheme}{wild}{ascii}{port}")),
        _ => Err(format!("{host:?} is not a domain name")),
    }
}

fn split_port(hostport: &str) -> Option<(&str, Option<u16>)> {
    match hostport.rsplit_once(':') {
        Some((h, _)) if !h.ends_with(']') && h.contains(':') => Some((hostport, None)),
        Some((h, p)) => p.parse().ok().map(|port| (h, Some(port))),
        None => Some((hostport, None)),
    }
}

fn valid_host(host: &str) -> bool {
    let inner = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    !inner.is_empty()
        && inner
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-' || b == b':' || b == b'_')
}

/// `None` for anything that is not `scheme://host[:port]` (lowercase expected).
fn parse_origin(value: &str) -> Option<Origin<'_>> {
    if value.len() > MAX_ORIGIN {
        return None;
    }
    let (scheme, rest) = value.split_once("://")?;
    let scheme_ok = scheme
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase())
        && scheme
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+.-".contains(&b));
    if !scheme_ok || rest.contains('/') || rest.contains('@') {
        return None;
    }
    let (host, port) = split_port(rest)?;
    valid_host(host).then_some(Origin { scheme, host, port })
}

#[derive(Debug, Clone)]
pub struct Cors {
    pub enabled: bool,
    rules: Vec<OriginRule>,
    any: bool,
    methods: HeaderValue,
    allowed_headers: Option<HeaderValue>,
    exposed: Option<HeaderValue>,
    pub credentials: bool,
    max_age: HeaderValue,
}

impl Cors {
    pub fn new(
        enabled: bool,
        rules: Vec<OriginRule>,
        methods: &str,
        allowed_headers: Option<HeaderValue>,
        exposed: Option<HeaderValue>,
        credentials: bool,
        max_age: u64,
    ) -> Cors {
        Cors {
            enabled,
            any: rules.contains(&OriginRule::Any),
            rules,
            methods: HeaderValue::from_str(methods).unwrap_or(HeaderValue::from_static("GET")),
            allowed_headers,
            exposed,
            credentials,
            max_age: HeaderValue::from(max_age),
        }
    }

    /// The allowed origin of a request, if it has one.
    pub fn allowed_origin<'h>(&self, headers: &'h HeaderMap) -> Option<&'h HeaderValue> {
        let value = headers.get(http::header::ORIGIN)?;
        let text = value.to_str().ok()?;
        // Browsers send lower-case origins; copy only when one is not.
        let lowered: std::borrow::Cow<'_, str> = if text.bytes().any(|b| b.is_ascii_uppercase()) {
            text.to_ascii_lowercase().into()
        } else {
            text.into()
        };
        // Exact rules first, by string: each was validated when configured, so an equal
        // origin is valid too and need not be parsed (most lists are exact origins).
        if self
            .rules
            .iter()
            .any(|r| matches!(r, OriginRule::Exact(o) if *o == *lowered))
        {
            return Some(value);
        }
        let origin = parse_origin(&lowered)?;
        self.rules
            .iter()
            .any(|r| r.matches(&origin, &lowered))
            .then_some(value)
    }

    /// Allow-Origin (`*`, or the origin and `Vary: Origin`) and Allow-Credentials.
    fn allow_origin(&self, origin: &HeaderValue, out: &mut HeaderList) {
        if !self.varies() {
            out.set(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else {
            out.set(ACCESS_CONTROL_ALLOW_ORIGIN, origin.clone());
            out.append(VARY, HeaderValue::from_static("Origin"));
        }
        if self.credentials {
            out.set(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }

    /// Whether every origin may send credentials: `*` with `credentials` on, which
    /// allows each request's own Origin back with them (`allow_origin`).
    pub fn open_to_credentials(&self) -> bool {
        self.enabled && self.any && self.credentials
    }

    /// Whether the CORS headers depend on the request's Origin: they do unless every
    /// origin gets `*`.
    fn varies(&self) -> bool {
        !self.any || self.credentials
    }

    /// Headers for any response other than a preflight. A shared cache in front of the
    /// gateway may hand one answer to requests from other origins (Fetch standard, "CORS
    /// protocol and HTTP caches"): an answer that depends on the Origin says so with
    /// `Vary: Origin` also when it allows none, and `*` goes on every answer, Origin or not.
    pub fn response_headers(&self, headers: &HeaderMap, out: &mut HeaderList) {
        if !self.varies() {
            out.set(ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
        } else if let Some(origin) = self.allowed_origin(headers) {
            self.allow_origin(origin, out);
        } else {
            out.append(VARY, HeaderValue::from_static("Origin"));
            return;
        }
        if let Some(exposed) = &self.exposed {
            out.set(ACCESS_CONTROL_EXPOSE_HEADERS, exposed.clone());
        }
    }

    /// The 204 answer to a preflight; without any `Access-Control-Allow-*` when the
    /// origin is not allowed.
    pub fn preflight(&self, headers: &HeaderMap) -> ApiResponse {
        let mut out = HeaderList::default();
        if let Some(origin) = self.allowed_origin(headers) {
            self.allow_origin(origin, &mut out);
            out.set(ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
            match (
                &self.allowed_headers,
                headers.get(ACCESS_CONTROL_REQUEST_HEADERS),
            ) {
                (Some(configured), _) => out.set(ACCESS_CONTROL_ALLOW_HEADERS, configured.clone()),
                (None, Some(requested)) => {
                    out.set(ACCESS_CONTROL_ALLOW_HEADERS, requested.clone());
                    out.append(
                        VARY,
                        HeaderValue::from_static("Access-Control-Request-Headers"),
                    );
                }
                (None, None) => {}
            }
            out.set(ACCESS_CONTROL_MAX_AGE, self.max_age.clone());
        } else if self.varies() {
            out.append(VARY, HeaderValue::from_static("Origin"));
        }
        let mut resp = ApiResponse::empty(StatusCode::NO_CONTENT);
        resp.headers = out.iter().map(|(n, v, _)| (n.clone(), v.clone())).collect();
        resp
    }

    /// For `GET /gateway/api/config`.
    pub fn to_json(&self) -> serde_json::Value {
        let text =
            |v: &Option<HeaderValue>| v.as_ref().and_then(|v| v.to_str().ok()).map(String::from);
        let origins: Vec<String> = self.rules.iter().map(OriginRule::describe).collect();
        serde_json::json!({
            "enabled": self.enabled,
            "origin": if origins.len() == 1 { serde_json::json!(origins[0]) } else { serde_json::json!(origins) },
            "methods": self.methods.to_str().unwrap_or(""),
            "allowedHeaders": text(&self.allowed_headers),
            "exposedHeaders": text(&self.exposed),
            "credentials": self.credentials,
            "maxAge": self.max_age.to_str().ok().and_then(|s| s.parse::<u64>().ok()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cors(origins: &[&str], credentials: bool) -> Cors {
        let rules = origins
            .iter()
            .map(|o| OriginRule::parse(o).unwrap())
            .collect();
        Cors::new(
            true,
            rules,
            "GET, POST",
            None,
            Some(HeaderValue::from_static("x-total")),
            credentials,
            600,
        )
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    fn allows(c: &Cors, origin: &str) -> bool {
        c.allowed_origin(&headers(&[("origin", origin)])).is_some()
    }

    fn response(c: &Cors, origin: &str) -> HeaderList {
        let mut out = HeaderList::default();
        c.response_headers(&headers(&[("origin", origin)]), &mut out);
        out
    }

    #[test]
    fn star_without_credentials_is_star() {
        let c = cors(&["*"], false);
        let out = response(&c, "https://anything.test");
        assert_eq!(out.get("access-control-allow-origin").unwrap(), "*");
        assert!(out.get("vary").is_none());
        assert!(out.get("access-control-allow-credentials").is_none());
        assert_eq!(out.get("access-control-expose-headers").unwrap(), "x-total");
        // Every answer gets `*`, so a cached one fits any origin.
        for other in ["", "null", "garbage"] {
            let out = response(&c, other);
            assert_eq!(out.get("access-control-allow-origin").unwrap(), "*");
            assert!(out.get("vary").is_none());
        }
        let mut out = HeaderList::default();
        c.response_headers(&HeaderMap::new(), &mut out);
        assert_eq!(out.get("access-control-allow-origin").unwrap(), "*");
    }

    #[test]
    fn answers_that_allow_no_origin_still_vary_by_it() {
        for (c, others) in [
            (cors(&["https://a.test"], false), ["https://b.test", "null"]),
            (cors(&["*"], true), ["garbage", "null"]),
        ] {
            for other in others {
                let out = response(&c, other);
                assert!(out.get("access-control-allow-origin").is_none());
                assert_eq!(out.get("vary").unwrap(), "Origin");
            }
            let mut out = HeaderList::default();
            c.response_headers(&HeaderMap::new(), &mut out);
            assert_eq!(out.get("vary").unwrap(), "Origin");
            assert!(out.get("access-control-expose-headers").is_none());
        }
    }

    #[test]
    fn star_with_credentials_echoes_the_origin() {
        let c = cors(&["*"], true);
        let out = response(&c, "https://app.test");
        assert_eq!(
            out.get("access-control-allow-origin").unwrap(),
            "https://app.test"
        );
        assert_eq!(out.get("vary").unwrap(), "Origin");
        assert_eq!(out.get("access-control-allow-credentials").unwrap(), "true");
    }

    #[test]
    fn origin_lists_and_wildcards() {
        let c = cors(
            &[
                "https://a.test",
                "*.example.com",
                "https://*.pinned.com",
                "http://*.port.com:8080",
            ],
            false,
        );
        assert!(allows(&c, "https://a.test"));
        assert!(allows(&c, "HTTPS://A.TEST"));
        assert!(!allows(&c, "http://a.test"));
        assert!(!allows(&c, "https://a.test.evil.com"));
        assert!(allows(&c, "https://x.example.com"));
        assert!(allows(&c, "http://deep.sub.example.com:3000"));
        assert!(!allows(&c, "https://example.com"), "not the bare domain");
        assert!(!allows(&c, "https://evilexample.com"));
        assert!(allows(&c, "https://x.pinned.com"));
        assert!(!allows(&c, "http://x.pinned.com"), "the scheme is pinned");
        assert!(allows(&c, "http://a.port.com:8080"));
        assert!(!allows(&c, "http://a.port.com:9090"));
        assert_eq!(
            response(&c, "https://x.example.com")
                .get("access-control-allow-origin")
                .unwrap(),
            "https://x.example.com"
        );
        // A scheme's own port written out: browsers leave it out of `Origin`.
        let c = cors(
            &["https://d.test:443", "*.w.test:443", "http://e.test:80"],
            false,
        );
        assert!(allows(&c, "https://d.test"));
        assert!(allows(&c, "http://e.test"));
        assert!(allows(&c, "https://a.w.test"));
        assert!(!allows(&c, "http://a.w.test"));
        assert!(!allows(&c, "https://d.test:8443"));
        // Internationalised names as written; browsers send them in ASCII (punycode).
        let c = cors(
            &[
                "https://Café.example",
                "*.bücher.example:8443",
                "http://ü.test:80",
            ],
            false,
        );
        assert!(allows(&c, "https://xn--caf-dma.example"));
        assert!(allows(&c, "https://shop.xn--bcher-kva.example:8443"));
        assert!(!allows(&c, "https://shop.xn--bcher-kva.example"));
        assert!(allows(&c, "http://xn--tda.test"));
        assert!(!allows(&c, "https://cafe.example"));
        assert!(
            OriginRule::parse("https://caf é.example")
                .unwrap_err()
                .contains("is not a domain name")
        );
    }

    #[test]
    fn malformed_origins_are_never_allowed() {
        let c = cors(&["*"], false);
        for bad in [
            "null",
            "not an origin",
            "https://",
            "https://a.test/path",
            "https://u@a.test",
            "://x",
            &format!("https://{}", "a".repeat(3000)),
        ] {
            assert!(
                c.allowed_origin(&headers(&[("origin", bad)])).is_none(),
                "{bad:?}"
            );
        }
        assert!(c.allowed_origin(&HeaderMap::new()).is_none());
    }

    #[test]
    fn preflight_answers() {
        let c = cors(&["https://a.test"], true);
        let ok = c.preflight(&headers(&[
            ("origin", "https://a.test"),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-one, content-type"),
        ]));
        assert_eq!(ok.status, StatusCode::NO_CONTENT);
        let get = |name: &str| {
            ok.headers
                .iter()
                .find(|(n, _)| n.as_str() == name)
                .map(|(_, v)| v.to_str().unwrap().to_string())
        };
        assert_eq!(
            get("access-control-allow-origin").as_deref(),
            Some("https://a.test")
        );
        assert_eq!(
            get("access-control-allow-credentials").as_deref(),
            Some("true")
        );
        assert_eq!(
            get("access-control-allow-methods").as_deref(),
            Some("GET, POST")
        );
        assert_eq!(
            get("access-control-allow-headers").as_deref(),
            Some("x-one, content-type"),
            "reflected"
        );
        assert_eq!(get("access-control-max-age").as_deref(), Some("600"));
        let denied = c.preflight(&headers(&[
            ("origin", "https://other.test"),
            ("access-control-request-method", "PUT"),
        ]));
        assert_eq!(denied.status, StatusCode::NO_CONTENT);
        let names: Vec<&str> = denied.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["vary"], "nothing allowed, only Vary");
    }

    #[test]
    fn rules_are_validated() {
        assert!(OriginRule::parse("https://ok.test:8443").is_ok());
        assert!(
            OriginRule::parse("ok.test").is_err(),
            "an origin needs a scheme"
        );
        assert!(OriginRule::parse("https://*.").is_err());
        assert!(OriginRule::parse("*.x.com:notaport").is_err());
        assert_eq!(
            OriginRule::parse("https://*.Example.com")
                .unwrap()
                .describe(),
            "https://*.example.com"
        );
    }
}
