//! The rule model of SPEC 4.1: validation with the API's error texts, defaults, and the
//! compiled form the request path uses.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
use std::sync::Arc;
use std::time::Duration;

use buntime_plugin_sdk::duration::{format_duration, parse_duration, parse_size};
use buntime_plugin_sdk::percent::{decode_non_ascii, encode_non_ascii};
use buntime_plugin_sdk::{RateLimitSpec, RouteGlobs};
use http::{HeaderName, HeaderValue};
use regex::{Captures, Regex};
use serde_json::{Map, Value as Json, json};

use crate::resolve::{Resolver, Upstream};
use crate::rewrite::Template;
use crate::target::Target;

pub const DEFAULT_CONNECT: Duration = Duration::from_secs(5);
pub const DEFAULT_READ: Duration = Duration::from_secs(60);
pub const DEFAULT_WRITE: Duration = Duration::from_secs(60);

/// The longest pattern a rule may have. Matching costs up to (pattern length × path
/// length) when the lazy DFA gives up on a pathological pattern, and paths are the
/// client's: a 100 KB pattern let one 30 KB path hold a proxy thread for 2.4-3.7 s. 4 KB
/// holds an alternation of a hundred paths.
const MAX_PATTERN_BYTES: usize = 4096;

/// Output-only fields a client may send back unchanged (the original's UI does).
const IGNORED_FIELDS: [&str; 4] = ["order", "readonly", "createdAt", "updatedAt"];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
    pub write: Duration,
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT,
            read: DEFAULT_READ,
            write: DEFAULT_WRITE,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub id: String,
    pub name: String,
    pub pattern: String,
    pub target: String,
    pub rewrite: Option<String>,
    pub change_origin: bool,
    pub secure: bool,
    pub ws: bool,
    pub headers: BTreeMap<String, String>,
    /// As given: a list of globs or a map of method to globs.
    pub public_routes: Json,
    pub enabled: bool,
    pub order: i64,
    pub timeouts: Timeouts,
    pub rate_limit: Option<RateLimitSpec>,
    /// The request body limit in bytes, when the rule sets one (else the gateway's 10 MiB).
    pub max_body_size: Option<u64>,
    /// The original's HTML rewriting of proxied pages (`html.rs`): a `<base href>`, and
    /// absolute paths made relative.
    pub base: Option<String>,
    pub relative_paths: bool,
    /// `timeouts`, `rateLimit` and `maxBodySize` as given, echoed back as written (`60s`
    /// stays `60s`).
    timeouts_given: Map<String, Json>,
    rate_limit_given: Option<Json>,
    max_body_size_given: Option<Json>,
    pub readonly: bool,
}

impl Rule {
    /// A rule with every default and the given identity; `from_fields` fills the rest.
    pub fn blank(id: &str) -> Rule {
        Rule {
            id: id.to_string(),
            name: String::new(),
            pattern: String::new(),
            target: String::new(),
            rewrite: None,
            change_origin: false,
            secure: true,
            ws: true,
            headers: BTreeMap::new(),
            public_routes: Json::Array(Vec::new()),
            enabled: true,
            order: 0,
            timeouts: Timeouts::default(),
            rate_limit: None,
            max_body_size: None,
            base: None,
            relative_paths: false,
            timeouts_given: Map::new(),
            rate_limit_given: None,
            max_body_size_given: None,
            readonly: false,
        }
    }

    /// Applies the fields of a POST or PUT body (or a stored rule) over `self`.
    /// `strict`: unknown fields are an error (API input), else ignored (stored data).
    pub fn with_fields(mut self, fields: &Map<String, Json>, strict: bool) -> Result<Rule, String> {
        let pattern_given = fields.contains_key("pattern");
        let name_given = fields.contains_key("name");
        for (k, v) in fields {
            match k.as_str() {
                "id" => {} // decided by the caller
                "name" => self.name = string(k, v)?,
                "pattern" => {
                    self.pattern = string(k, v)?;
                    // New patterns only: a stored rule from before the limit still loads.
                    if strict && self.pattern.len() > MAX_PATTERN_BYTES {
                        return Err(format!(
                            "Invalid regex pattern: {} bytes, longer than {MAX_PATTERN_BYTES}",
                            self.pattern.len()
                        ));
                    }
                }
                "target" => self.target = string(k, v)?,
                "rewrite" => {
                    self.rewrite = match v {
                        Json::Null => None,
                        _ => Some(string(k, v)?).filter(|s| !s.is_empty()),
                    }
                }
                "changeOrigin" => self.change_origin = boolean(k, v)?,
                "secure" => self.secure = boolean(k, v)?,
                "ws" => self.ws = boolean(k, v)?,
                "enabled" => self.enabled = boolean(k, v)?,
                "headers" => self.headers = headers(v, strict)?,
                "publicRoutes" => {
                    let globs = RouteGlobs::from_json(v)
                        .map_err(|e| format!("Invalid publicRoutes: {e}"))?;
                    self.public_routes = globs.to_json();
                }
                "timeouts" => {
                    self.timeouts = timeouts(v)?;
                    self.timeouts_given = v.as_object().cloned().unwrap_or_default();
                }
                "rateLimit" => {
                    self.rate_limit = rate_limit(v, strict)?;
                    self.rate_limit_given = self.rate_limit.is_some().then(|| {
                        // Echoed as written, with the window it got when none was given.
                        let mut given = v.clone();
                        if given.get("window").is_none() {
                            given["window"] = json!(format_duration(RateLimitSpec::DEFAULT_WINDOW));
                        }
                        given
                    });
                }
                "base" => {
                    self.base = match v {
                        Json::Null => None,
                        _ => Some(string(k, v)?).filter(|b| !b.is_empty()),
                    };
                    if strict && let Some(b) = &self.base {
                        base_path(b)?;
                    }
                }
                "relativePaths" => self.relative_paths = boolean(k, v)?,
                "maxBodySize" => {
                    self.max_body_size = max_body_size(v)?;
                    self.max_body_size_given = self.max_body_size.map(|_| v.clone());
                }
                other if IGNORED_FIELDS.contains(&other) || !strict => {}
                other => return Err(format!("Unknown field: {other}")),
            }
        }
        // The name follows the pattern unless it was set on its own.
        if pattern_given && !name_given && (self.name.is_empty() || self.name == self.pattern) {
            self.name = self.pattern.clone();
        }
        if self.name.is_empty() {
            self.name = self.pattern.clone();
        }
        Ok(self)
    }

    pub fn to_json(&self) -> Json {
        let mut v = json!({
            "id": self.id,
            "name": self.name,
            "pattern": self.pattern,
            "target": self.target,
            "changeOrigin": self.change_origin,
            "secure": self.secure,
            "ws": self.ws,
            "headers": self.headers,
            "publicRoutes": self.public_routes,
            "enabled": self.enabled,
            "order": self.order,
            "timeouts": self.timeouts_json(),
            "readonly": self.readonly,
        });
        if let Some(r) = &self.rewrite {
            v["rewrite"] = json!(r);
        }
        if let Some(l) = &self.rate_limit_given {
            v["rateLimit"] = l.clone();
        }
        if let Some(size) = &self.max_body_size_given {
            v["maxBodySize"] = size.clone();
        }
        if let Some(base) = &self.base {
            v["base"] = json!(base);
        }
        if self.relative_paths {
            v["relativePaths"] = json!(true);
        }
        v
    }

    /// Whether the rule rewrites the HTML pages it proxies.
    pub fn rewrites_html(&self) -> bool {
        self.base.is_some() || self.relative_paths
    }

    /// Every timeout, as given or the default.
    fn timeouts_json(&self) -> Json {
        let mut t = Map::new();
        for (key, default) in [
            ("connect", DEFAULT_CONNECT),
            ("read", DEFAULT_READ),
            ("write", DEFAULT_WRITE),
        ] {
            let given = self.timeouts_given.get(key).cloned();
            t.insert(
                key.into(),
                given.unwrap_or_else(|| json!(format!("{}s", default.as_secs()))),
            );
        }
        Json::Object(t)
    }
}

fn string(field: &str, v: &Json) -> Result<String, String> {
    v.as_str()
        .map(str::to_string)
        .ok_or_else(|| format!("{field} must be a string"))
}

fn boolean(field: &str, v: &Json) -> Result<bool, String> {
    v.as_bool()
        .ok_or_else(|| format!("{field} must be a boolean"))
}

/// Headers a rule may not set: they frame the request or belong to one connection.
/// `content-length: 5` on a request without a body left a pooled upstream connection
/// waiting for five bytes, which it then took from the next request on it.
const CONNECTION_HEADERS: [&str; 8] = [
    "connection",
    "content-length",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `strict`: API input, where a connection header is refused; a stored rule loads
/// without it (it could never be sent safely).
fn headers(v: &Json, strict: bool) -> Result<BTreeMap<String, String>, String> {
    let map = match v {
        Json::Null => return Ok(BTreeMap::new()),
        Json::Object(m) => m,
        _ => return Err("Invalid headers: must be an object of header names to values".into()),
    };
    let mut out = BTreeMap::new();
    for (name, value) in map {
        let header = HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| format!("Invalid headers: {name:?} is not a header name"))?;
        if CONNECTION_HEADERS.contains(&header.as_str()) {
            if strict {
                return Err(format!(
                    "Invalid headers: {name} cannot be set by a rule: the gateway frames \
                     each request and manages its connections"
                ));
            }
            continue;
        }
        let text = value
            .as_str()
            .ok_or_else(|| format!("Invalid headers: the value of {name} must be a string"))?;
        HeaderValue::from_str(text).map_err(|_| {
            format!("Invalid headers: the value of {name} is not a valid header value")
        })?;
        out.insert(name.clone(), text.to_string());
    }
    Ok(out)
}

fn duration(what: &str, v: &Json) -> Result<Duration, String> {
    let text = match v {
        Json::String(s) => s.clone(),
        Json::Number(n) if n.as_u64().is_some() => n.to_string(),
        _ => return Err(format!("{what} must be a duration like 5s")),
    };
    parse_duration(&text).map_err(|e| format!("{what} {text:?}: {e}"))
}

/// A `base` as the API takes it: a path, which goes into an HTML attribute.
fn base_path(base: &str) -> Result<(), String> {
    if !base.starts_with('/') || base.contains(['"', '<', '>', '\'', ' ']) {
        return Err(format!(
            "Invalid base: must be a path such as /cpanel, without quotes, spaces or angle \
             brackets (got {base:?})"
        ));
    }
    Ok(())
}

/// A size in bytes (`20971520`) or with a unit (`20mb`); `null` for the gateway's limit.
/// Proxied bodies are streamed, never held, so no ceiling applies.
fn max_body_size(v: &Json) -> Result<Option<u64>, String> {
    let size = match v {
        Json::Null => return Ok(None),
        Json::String(text) => parse_size(text),
        Json::Number(n) => n
            .as_u64()
            .ok_or_else(|| "expected a whole number of bytes".into()),
        _ => Err("expected a size such as \"20mb\" or a number of bytes".into()),
    };
    match size {
        Ok(0) => Err(format!(
            "Invalid maxBodySize: must be more than zero (got {v})"
        )),
        Ok(n) => Ok(Some(n)),
        Err(why) => Err(format!("Invalid maxBodySize: {why} (got {v})")),
    }
}

fn timeouts(v: &Json) -> Result<Timeouts, String> {
    let mut t = Timeouts::default();
    let map = match v {
        Json::Null => return Ok(t),
        Json::Object(m) => m,
        _ => return Err("Invalid timeouts: must be an object with connect, read, write".into()),
    };
    for (k, d) in map {
        let parsed = duration(k, d).map_err(|e| format!("Invalid timeouts: {e}"))?;
        if parsed.is_zero() {
            return Err(format!("Invalid timeouts: {k} must be more than zero"));
        }
        match k.as_str() {
            "connect" => t.connect = parsed,
            "read" => t.read = parsed,
            "write" => t.write = parsed,
            other => return Err(format!("Invalid timeouts: unknown key {other}")),
        }
    }
    Ok(t)
}

/// `strict`: API input, held to the limits of the gateway's own `rateLimit`; a stored
/// rule written before they applied still loads (a window above zero).
fn rate_limit(v: &Json, strict: bool) -> Result<Option<RateLimitSpec>, String> {
    let map = match v {
        Json::Null => return Ok(None),
        Json::Object(m) => m,
        _ => return Err("Invalid rateLimit: must be an object {requests, window}".into()),
    };
    let max = RateLimitSpec::MAX_REQUESTS;
    let requests = map
        .get("requests")
        .and_then(Json::as_u64)
        .filter(|n| *n >= 1 && (*n <= max || !strict))
        .ok_or_else(|| format!("Invalid rateLimit: requests must be an integer from 1 to {max}"))?;
    let window = match map.get("window") {
        Some(w) => duration("window", w).map_err(|e| format!("Invalid rateLimit: {e}"))?,
        None => RateLimitSpec::DEFAULT_WINDOW,
    };
    if strict && !RateLimitSpec::valid_window(window) {
        return Err(format!(
            "Invalid rateLimit: window {}",
            RateLimitSpec::WINDOW_RULE
        ));
    }
    if window.is_zero() {
        return Err("Invalid rateLimit: window must be more than zero".into());
    }
    if let Some(k) = map.keys().find(|k| *k != "requests" && *k != "window") {
        return Err(format!("Invalid rateLimit: unknown key {k}"));
    }
    Ok(Some(RateLimitSpec { requests, window }))
}

/// The id of the static rule at `index` in the proxy's manifest.
pub fn static_id(index: usize) -> String {
    format!("static-{index}")
}

/// Whether `id` is one a static rule has or could get: `static-<n>`. A dynamic rule under
/// such an id would clash with the static rule a later SIGHUP adds, which the API then
/// reaches instead, for good.
pub fn static_shaped(id: &str) -> bool {
    id.strip_prefix("static-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// Ids a client may choose: `[A-Za-z0-9_-]{1,64}`.
pub fn valid_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

// === compiled ===

/// A validated rule ready for the request path.
#[derive(Debug, Clone)]
pub struct CompiledRule {
    pub rule: Rule,
    pub id: Arc<str>,
    /// A fixed-key hash of the id: the rule table ends its chunks by it (`table.rs`,
    /// `cut`), and hashing thousands of ids on every write cost more than the rest of it.
    pub id_hash: u64,
    pub regex: Regex,
    pub target: Target,
    pub rewrite: Option<Template>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub public: RouteGlobs,
    pub upstream: Arc<Upstream>,
}

impl CompiledRule {
    /// Checks everything about `rule`; errors are the API's 400 texts.
    pub fn compile(rule: Rule, resolver: &Resolver) -> Result<CompiledRule, String> {
        if rule.pattern.is_empty() || rule.target.is_empty() {
            return Err("pattern and target are required".into());
        }
        let regex = Regex::new(&rule.pattern)
            .map_err(|e| format!("Invalid regex pattern: {}", one_line(&e.to_string())))?;
        let target = Target::parse(&rule.target).map_err(|e| format!("Invalid target URL: {e}"))?;
        let rewrite = rule
            .rewrite
            .as_deref()
            .map(|t| Template::parse(t, &regex))
            .transpose()
            .map_err(|e| format!("Invalid rewrite: {e}"))?;
        let headers = rule
            .headers
            .iter()
            .map(|(k, v)| {
                Ok((
                    HeaderName::from_bytes(k.as_bytes())
                        .map_err(|_| format!("Invalid headers: {k}"))?,
                    HeaderValue::from_str(v).map_err(|_| format!("Invalid headers: {k}"))?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let public = RouteGlobs::from_json(&rule.public_routes)
            .map_err(|e| format!("Invalid publicRoutes: {e}"))?;
        let upstream = resolver.upstream(&target.host, target.port);
        // Fixed keys: the same id hashes the same in every table.
        let id_hash = BuildHasherDefault::<DefaultHasher>::default().hash_one(rule.id.as_str());
        Ok(CompiledRule {
            id: Arc::from(rule.id.as_str()),
            id_hash,
            rule,
            regex,
            target,
            rewrite,
            headers,
            public,
            upstream,
        })
    }

    /// The same rule switched on or off, compiled parts reused (clones of a regex share
    /// its compiled form). Compiling the pattern again cost a toggle ~400,000
    /// instructions on the plugins' thread, which shares the proxy's core
    /// (benches/README.md).
    pub fn with_enabled(&self, enabled: bool) -> CompiledRule {
        let mut c = self.clone();
        c.rule.enabled = enabled;
        c
    }

    /// The upstream path for a request path: rewrite (if any), then the target's base path.
    /// The upstream gets the request's own path and query (no rewrite, no base path):
    /// nothing to build per request.
    pub fn keeps_path(&self) -> bool {
        self.rewrite.is_none() && self.target.base_path.is_empty()
    }

    /// An upstream's `Location` (a redirect, a `201 Created`) that names the upstream
    /// itself, as the gateway's clients must ask for it: `http://backend:8080/login` from a
    /// rule to `http://backend:8080` is `/login`. Under `changeOrigin` an upstream builds
    /// such URLs from the Host it was given, which the clients cannot reach (nginx's
    /// `proxy_redirect default` rewrites them so). Only where it is sure: the URL is under
    /// the target's base path, and this rule takes the path it gives and sends it to that
    /// very URL again. A `rewrite` has no inverse in general; the one guess tried is the
    /// pattern's leading literal put back in front (`^/app(/.*)?$` with `$1`, the
    /// original's usual rule: `/login` is `/app/login`). Otherwise `None`: left as it is.
    pub fn local_location(&self, location: &str) -> Option<String> {
        let url = url::Url::parse(location).ok()?;
        if !self.target.serves(&url) {
            return None;
        }
        let path = url.path().strip_prefix(self.target.base_path.as_str())?;
        if !path.is_empty() && !path.starts_with('/') {
            return None;
        }
        let mut local = match &self.rewrite {
            // Every request path has a `/` after the base: the base alone is no path's.
            None if path.is_empty() => return None,
            None => path.to_string(),
            Some(_) => {
                let prefix = literal_prefix(&self.rule.pattern)?;
                let prefix = encode_non_ascii(prefix.strip_suffix('/').unwrap_or(prefix));
                format!("{prefix}{path}")
            }
        };
        // Back through the rule, the path must come to this very URL.
        let matched = self.with_match(&local, |_, _| ()).is_some();
        if !matched || self.upstream_path(&local) != url.path() {
            return None;
        }
        if let Some(q) = url.query() {
            local.push('?');
            local.push_str(q);
        }
        if let Some(f) = url.fragment() {
            local.push('#');
            local.push_str(f);
        }
        Some(local)
    }

    /// The upstream path and query: the request's query follows the upstream path, after
    /// a `&` when a rewrite put a query there (`/search?q=$1` and `?page=2` give
    /// `/search?q=abc&page=2`, as nginx's `rewrite` does).
    pub fn upstream_uri(&self, path: &str, query: Option<&str>) -> String {
        let mut uri = self.upstream_path(path);
        if let Some(q) = query {
            if !uri.contains('?') {
                uri.push('?');
            } else if !q.is_empty() && !uri.ends_with(['?', '&']) {
                uri.push('&');
            }
            uri.push_str(q);
        }
        uri
    }

    pub fn upstream_path(&self, path: &str) -> String {
        let rewritten = self
            .rewrite
            .as_ref()
            .and_then(|t| {
                self.with_match(path, |caps, decoded| {
                    let out = t.expand(caps);
                    // Captures of the decoded path hold its characters, which go upstream
                    // encoded again.
                    match decoded {
                        true => encode_non_ascii(&out).into_owned(),
                        false => out,
                    }
                })
            })
            .unwrap_or_else(|| path.to_string());
        self.target.join(&rewritten)
    }

    /// Groups 1..n of the match (`with_match`); a group that did not take part is empty.
    pub fn captures(&self, path: &str) -> Vec<String> {
        self.with_match(path, |c, _| {
            (1..c.len())
                .map(|i| c.get(i).map_or(String::new(), |m| m.as_str().to_string()))
                .collect()
        })
        .unwrap_or_default()
    }

    /// `f` on this rule's match of `path` as the rule table matches requests
    /// (`RuleTable::matching`): the path as sent, or else with its non-ASCII characters
    /// decoded (`^/café` takes `/caf%C3%A9`), told which.
    fn with_match<T>(&self, path: &str, f: impl FnOnce(&Captures<'_>, bool) -> T) -> Option<T> {
        if let Some(caps) = self.regex.captures(path) {
            return Some(f(&caps, false));
        }
        let decoded = decode_non_ascii(path)?;
        self.regex.captures(&decoded).map(|caps| f(&caps, true))
    }

    pub fn rate_limit(&self) -> Option<&RateLimitSpec> {
        self.rule.rate_limit.as_ref()
    }
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The literal a pattern anchored at the start opens with, up to its first
/// metacharacter: `/app` of `^/app(/.*)?$`.
fn literal_prefix(pattern: &str) -> Option<&str> {
    let rest = pattern.strip_prefix('^')?;
    let end = rest
        .find(|c: char| "\\.+*?()|[]{}^$".contains(c))
        .unwrap_or(rest.len());
    Some(&rest[..end]).filter(|p| p.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(fields: Json) -> Result<CompiledRule, String> {
        let r = Rule::blank("r1").with_fields(fields.as_object().unwrap(), true)?;
        CompiledRule::compile(r, &Resolver::default())
    }

    #[test]
    fn stored_rules_load_without_connection_headers() {
        // Each of them, spelled as a user might: refused from the API, dropped from a
        // stored rule.
        let names = [
            "Connection",
            "content-length",
            "Keep-Alive",
            "proxy-connection",
            "TE",
            "trailer",
            "Transfer-Encoding",
            "upgrade",
        ];
        assert_eq!(names.len(), CONNECTION_HEADERS.len());
        let mut headers: Map<String, Json> =
            names.iter().map(|n| (n.to_string(), json!("1"))).collect();
        headers.insert("x-kept".into(), json!("1"));
        let fields = json!({"pattern": "^/a", "target": "http://h", "headers": headers});
        let r = Rule::blank("r1")
            .with_fields(fields.as_object().unwrap(), false)
            .unwrap();
        assert_eq!(r.to_json()["headers"], json!({"x-kept": "1"}));
        for name in names {
            let fields = json!({"pattern": "^/a", "target": "http://h", "headers": {name: "1"}});
            let err = Rule::blank("r1")
                .with_fields(fields.as_object().unwrap(), true)
                .unwrap_err();
            assert!(err.contains("cannot be set by a rule"), "{name}: {err}");
        }
    }

    #[test]
    fn defaults_and_output() {
        let c =
            rule(json!({"pattern": "^/api(/.*)?$", "target": "http://127.0.0.1:9000"})).unwrap();
        let v = c.rule.to_json();
        assert_eq!(v["name"], "^/api(/.*)?$");
        assert_eq!(v["secure"], true);
        assert_eq!(v["ws"], true);
        assert_eq!(v["changeOrigin"], false);
        assert_eq!(v["enabled"], true);
        assert_eq!(v["headers"], json!({}));
        assert_eq!(v["publicRoutes"], json!([]));
        assert_eq!(
            v["timeouts"],
            json!({"connect": "5s", "read": "60s", "write": "60s"})
        );
        assert_eq!(v["readonly"], false);
        assert!(v.get("rewrite").is_none());
    }

    #[test]
    fn each_error_text() {
        let cases = [
            (
                json!({"target": "http://h"}),
                "pattern and target are required",
            ),
            (
                json!({"pattern": "^/a("}),
                "pattern and target are required",
            ),
            (
                json!({"pattern": "^/a(", "target": "http://h"}),
                "Invalid regex pattern: ",
            ),
            (
                json!({"pattern": "^/a", "target": "ftp://h"}),
                "Invalid target URL: unsupported scheme \"ftp\"",
            ),
            (
                json!({"pattern": "^/a", "target": "http://u:p@h"}),
                "Invalid target URL: credentials are not allowed in the target",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h:0"}),
                "Invalid target URL: port 0 is no port to connect to",
            ),
            (
                json!({"pattern": "^/(a)/(b)", "target": "http://h", "rewrite": "/$3"}),
                "Invalid rewrite: $3 refers to group 3 but the pattern has 2 groups",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "headers": {"bad name": "x"}}),
                "Invalid headers:",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "headers": {"x-a": "line\nbreak"}}),
                "Invalid headers:",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "headers": {"Content-Length": "5"}}),
                "Invalid headers: Content-Length cannot be set by a rule",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "headers": {"transfer-encoding": "chunked"}}),
                "Invalid headers: transfer-encoding cannot be set by a rule",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "publicRoutes": ["(unclosed"]}),
                "Invalid publicRoutes:",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "timeouts": {"read": "soon"}}),
                "Invalid timeouts: read",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "timeouts": {"idle": "5s"}}),
                "Invalid timeouts: unknown key idle",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 0, "window": "1m"}}),
                "Invalid rateLimit:",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 5, "window": "1w"}}),
                "Invalid rateLimit: window",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 5, "window": "500ms"}}),
                "Invalid rateLimit: window must be whole seconds",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 5, "window": "1500ms"}}),
                "Invalid rateLimit: window must be whole seconds",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 1_000_000_001u64}}),
                "Invalid rateLimit: requests must be an integer from 1 to 1000000000",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "secure": "yes"}),
                "secure must be a boolean",
            ),
            (
                json!({"pattern": "^/a", "target": "http://h", "chageOrigin": true}),
                "Unknown field: chageOrigin",
            ),
        ];
        for (input, expected) in cases {
            let err = rule(input.clone()).unwrap_err();
            assert!(
                err.starts_with(expected),
                "{input}: got {err:?}, want {expected:?}"
            );
        }
    }

    #[test]
    fn rate_limits() {
        let c = rule(json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 5}}))
            .unwrap();
        assert_eq!(c.rate_limit().unwrap().window, Duration::from_secs(60));
        // The answer shows the window the limit got.
        assert_eq!(
            c.rule.to_json()["rateLimit"],
            json!({"requests": 5, "window": "1m"})
        );
        let given = json!({"requests": 5, "window": "90"});
        let c = rule(json!({"pattern": "^/a", "target": "http://h", "rateLimit": given})).unwrap();
        assert_eq!(c.rate_limit().unwrap().window, Duration::from_secs(90));
        assert_eq!(c.rule.to_json()["rateLimit"], given);
        // A rule stored before windows had to be whole seconds still loads.
        let stored = json!({"pattern": "^/a", "target": "http://h", "rateLimit": {"requests": 5, "window": "500ms"}});
        let r = Rule::blank("r1")
            .with_fields(stored.as_object().unwrap(), false)
            .unwrap();
        assert_eq!(r.rate_limit.unwrap().window, Duration::from_millis(500));
    }

    #[test]
    fn output_only_fields_are_ignored_on_input() {
        let c = rule(json!({"pattern": "^/a", "target": "http://h", "order": 7, "readonly": true}))
            .unwrap();
        assert_eq!(c.rule.order, 0);
        assert!(!c.rule.readonly);
    }

    #[test]
    fn locations_naming_the_upstream_are_made_local() {
        let c =
            rule(json!({"pattern": "^/app(/.*)?$", "target": "http://Backend:8080/v2"})).unwrap();
        let local = |l: &str| c.local_location(l);
        assert_eq!(
            local("http://backend:8080/v2/app/login?next=%2F#top").as_deref(),
            Some("/app/login?next=%2F#top")
        );
        // Another host, port, scheme or base path, or a path this rule does not take:
        // not the upstream's to map back.
        for other in [
            "http://elsewhere:8080/v2/app/x",
            "http://backend/v2/app/x",
            "https://backend:8080/v2/app/x",
            "http://backend:8080/v1/app/x",
            "http://backend:8080/v2x/app",
            "http://backend:8080/v2/other",
            "http://user:pw@backend:8080/v2/app/x",
            "/app/relative",
            "mailto:a@b",
        ] {
            assert_eq!(local(other), None, "{other}");
        }
        let original = json!({"pattern": "^/a(/.*)?$", "target": "http://h/v1", "rewrite": "$1"});
        let cases = [
            // A default port written out.
            (
                json!({"pattern": "^/", "target": "https://api.example"}),
                "https://API.example:443",
                Some("/"),
            ),
            // The original's usual rule, which takes its prefix off: put back in front.
            (original.clone(), "http://h/v1/x?y", Some("/a/x?y")),
            // A folder's redirect to its slashed self (`/v1` to `/v1/`) keeps the slash.
            (original.clone(), "http://h/v1/", Some("/a/")),
            (original, "http://h/v1", Some("/a")),
            // Without a rewrite, no request path is sent to the base path alone.
            (
                json!({"pattern": ".*", "target": "http://h/v1"}),
                "http://h/v1/",
                Some("/"),
            ),
            (
                json!({"pattern": ".*", "target": "http://h/v1"}),
                "http://h/v1",
                None,
            ),
            (
                json!({"pattern": "^/a/(.*)$", "target": "http://h", "rewrite": "/$1"}),
                "http://h/x/y",
                Some("/a/x/y"),
            ),
            // Patterns written with non-ASCII characters, as requests for them are matched.
            (
                json!({"pattern": "^/café(/.*)?$", "target": "http://h", "rewrite": "$1"}),
                "http://h/login",
                Some("/caf%C3%A9/login"),
            ),
            (
                json!({"pattern": "^/café", "target": "http://h"}),
                "http://h/caf%C3%A9/x",
                Some("/caf%C3%A9/x"),
            ),
            // A rewrite the guess does not undo: left as it is.
            (
                json!({"pattern": "^/rw(/.*)?$", "target": "http://h", "rewrite": "/s$1"}),
                "http://h/s/x",
                None,
            ),
            (
                json!({"pattern": "/a(/.*)?$", "target": "http://h", "rewrite": "$1"}),
                "http://h/x",
                None,
            ),
        ];
        for (r, location, local) in cases {
            let mapped = rule(r.clone()).unwrap().local_location(location);
            assert_eq!(mapped.as_deref(), local, "{r} {location}");
        }
    }

    #[test]
    fn upstream_paths() {
        let c =
            rule(json!({"pattern": "^/api(/.*)?$", "target": "http://h/v2", "rewrite": "/svc$1"}))
                .unwrap();
        assert_eq!(c.upstream_path("/api/users"), "/v2/svc/users");
        assert_eq!(c.upstream_path("/api"), "/v2/svc");
        assert_eq!(c.upstream_path("/api/"), "/v2/svc/");
        assert_eq!(c.captures("/api"), vec![""]);
        let plain = rule(json!({"pattern": "^/x", "target": "http://h"})).unwrap();
        assert_eq!(plain.upstream_path("/x/y"), "/x/y");
        assert_eq!(plain.upstream_uri("/x/y", Some("a=1")), "/x/y?a=1");
        assert_eq!(plain.upstream_uri("/x/y", Some("")), "/x/y?");
        assert_eq!(plain.upstream_uri("/x/y", None), "/x/y");
        // A rewrite that writes a query keeps it, and the request's follows it.
        let query = rule(
            json!({"pattern": "^/s/(\\w+)$", "target": "http://h", "rewrite": "/search?q=$1"}),
        )
        .unwrap();
        assert_eq!(
            query.upstream_uri("/s/abc", Some("page=2")),
            "/search?q=abc&page=2"
        );
        assert_eq!(query.upstream_uri("/s/abc", Some("")), "/search?q=abc");
        assert_eq!(query.upstream_uri("/s/abc", None), "/search?q=abc");
        let open =
            rule(json!({"pattern": "^/o$", "target": "http://h", "rewrite": "/o?"})).unwrap();
        assert_eq!(open.upstream_uri("/o", Some("a=1")), "/o?a=1");
    }

    #[test]
    fn ids() {
        assert!(valid_id("my-rule_1"));
        assert!(!valid_id(""));
        assert!(!valid_id("has space"));
        assert!(!valid_id(&"x".repeat(65)));
        assert!(static_shaped(&static_id(3)));
        assert!(static_shaped("static-12"));
        assert!(!static_shaped("static-"));
        assert!(!static_shaped("static-x1"));
        assert!(!static_shaped("my-static-1"));
    }
}
