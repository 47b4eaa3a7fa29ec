//! The gateway plugin's settings (SPEC 5): parsed once, validated with every problem named.

use std::path::PathBuf;
use std::time::Duration;

use buntime_plugin_sdk::{GlobSet, Problems, Settings};
use http::{HeaderName, HeaderValue};

use crate::cors::{Cors, OriginRule};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    Ip,
    Header(HeaderName),
    Claim(String),
}

impl KeyBy {
    /// Whether the header keyed by carries a credential, which the buckets API must not
    /// show: `Authorization`, `Proxy-Authorization`, `Cookie`, `X-API-Key`.
    pub fn is_credential(&self) -> bool {
        match self {
            KeyBy::Header(name) => {
                *name == http::header::AUTHORIZATION
                    || *name == http::header::PROXY_AUTHORIZATION
                    || *name == http::header::COOKIE
                    || name.as_str() == "x-api-key"
            }
            KeyBy::Ip | KeyBy::Claim(_) => false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LimitConfig {
    pub enabled: bool,
    pub requests: u64,
    pub window: Duration,
    pub key_by: KeyBy,
    pub exclude: GlobSet,
}

#[derive(Debug, Clone)]
pub struct ShellConfig {
    pub dir: PathBuf,
    /// Validated names from `shellExcludes` / `GATEWAY_SHELL_EXCLUDES` (source "env").
    pub excludes: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub cors: Cors,
    pub limit: LimitConfig,
    pub shell: Option<ShellConfig>,
}

pub const CORS_KEYS: &[&str] = &[
    "enabled",
    "origin",
    "methods",
    "allowedHeaders",
    "exposedHeaders",
    "credentials",
    "maxAge",
    // The original's gateway manifest ships `preflight: true`; it answered preflights
    // whatever the value, as this does. Accepted so that its manifest loads; not read.
    "preflight",
];
pub const LIMIT_KEYS: &[&str] = &["enabled", "requests", "window", "keyBy", "excludePaths"];
/// Paths the limiter skips unless `excludePaths` is given: a `rateLimit` block that only
/// sets `requests` must not start counting health probes (a 429 there restarts the pod).
const DEFAULT_EXCLUDE: [&str; 3] = ["{API}/health", "{API}/health/**", "/metrics"];

/// `[A-Za-z0-9_-]+`: what a shell exclude may be.
pub fn valid_basename(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn parse(s: &Settings, api_base: &str, problems: &mut Problems) -> Option<GatewayConfig> {
    let before = problems.len();
    s.check_keys("cors", CORS_KEYS, problems);
    s.check_keys("rateLimit", LIMIT_KEYS, problems);
    let cors = cors(s, problems);
    let limit = limit(s, api_base, problems);
    let shell = shell(s, problems);
    (problems.len() == before).then(|| GatewayConfig {
        cors: cors.expect("no problems"),
        limit: limit.expect("no problems"),
        shell,
    })
}

fn header_list(s: &Settings, path: &str, problems: &mut Problems) -> Option<Option<HeaderValue>> {
    let Some(list) = s.list(path, problems) else {
        return Some(None);
    };
    for h in &list {
        if HeaderName::from_bytes(h.as_bytes()).is_err() {
            s.problem(problems, path, format!("{h:?} is not a header name"));
            return None;
        }
    }
    if list.is_empty() {
        return Some(None);
    }
    HeaderValue::from_str(&list.join(", ")).ok().map(Some)
}

pub(crate) fn cors(s: &Settings, problems: &mut Problems) -> Option<Cors> {
    let enabled = s.bool("cors.enabled", problems).unwrap_or(true);
    let origins = s
        .list("cors.origin", problems)
        .unwrap_or_else(|| vec!["*".into()]);
    let mut rules = Vec::new();
    for o in &origins {
        match OriginRule::parse(o) {
            Ok(r) => rules.push(r),
            Err(why) => s.problem(problems, "cors.origin", format!("{o:?}: {why}")),
        }
    }
    let methods = s.list("cors.methods", problems).unwrap_or_else(|| {
        ["GET", "HEAD", "PUT", "PATCH", "POST", "DELETE"]
            .map(String::from)
            .to_vec()
    });
    if let Some(bad) = methods
        .iter()
        .find(|m| m.is_empty() || !m.bytes().all(|b| b.is_ascii_alphabetic()))
    {
        s.problem(
            problems,
            "cors.methods",
            format!("{bad:?} is not an HTTP method"),
        );
    }
    let methods = methods
        .iter()
        .map(|m| m.to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join(", ");
    let allowed = header_list(s, "cors.allowedHeaders", problems)?;
    let exposed = header_list(s, "cors.exposedHeaders", problems)?;
    let credentials = s.bool("cors.credentials", problems).unwrap_or(false);
    let max_age = s
        .u64_in("cors.maxAge", 0, 31_536_000, problems)
        .unwrap_or(86_400);
    Some(Cors::new(
        enabled,
        rules,
        &methods,
        allowed,
        exposed,
        credentials,
        max_age,
    ))
}

fn limit(s: &Settings, api_base: &str, problems: &mut Problems) -> Option<LimitConfig> {
    let enabled = s.bool("rateLimit.enabled", problems).unwrap_or(true);
    let (requests, window) = s.rate_limit_parts("rateLimit", problems);
    let requests = requests.unwrap_or(100);
    let key_by = match s
        .string("rateLimit.keyBy", problems)
        .as_deref()
        .map(str::trim)
    {
        None | Some("ip") => KeyBy::Ip,
        // The original's name for keying by the authenticated user: its identity's `sub`.
        Some("user") => KeyBy::Claim("sub".into()),
        Some(other) => match other.split_once(':') {
            Some(("header", name)) if HeaderName::from_bytes(name.trim().as_bytes()).is_ok() => {
                KeyBy::Header(
                    HeaderName::from_bytes(name.trim().to_ascii_lowercase().as_bytes()).ok()?,
                )
            }
            Some(("claim", name)) if !name.trim().is_empty() => {
                KeyBy::Claim(name.trim().to_string())
            }
            _ => {
                s.problem(
                    problems,
                    "rateLimit.keyBy",
                    "must be ip, user, header:<name> or claim:<name>",
                );
                KeyBy::Ip
            }
        },
    };
    let exclude_list: Vec<String> = s
        .list("rateLimit.excludePaths", problems)
        .unwrap_or_else(|| DEFAULT_EXCLUDE.map(String::from).to_vec())
        .into_iter()
        .map(|p| p.replace("{API}", api_base))
        .collect();
    let exclude = GlobSet::new(&exclude_list).unwrap_or_else(|why| {
        s.problem(problems, "rateLimit.excludePaths", why);
        GlobSet::empty()
    });
    Some(LimitConfig {
        enabled,
        requests,
        window,
        key_by,
        exclude,
    })
}

fn shell(s: &Settings, problems: &mut Problems) -> Option<ShellConfig> {
    let excludes = s.list("shellExcludes", problems).unwrap_or_default();
    for e in &excludes {
        if !valid_basename(e) {
            s.problem(
                problems,
                "shellExcludes",
                format!("{e:?} is not a valid basename ([A-Za-z0-9_-]+)"),
            );
        }
    }
    let dir = s
        .string("shellDir", problems)
        .filter(|d| !d.trim().is_empty())?;
    let path = PathBuf::from(dir.trim());
    if !path.is_dir() {
        s.problem(problems, "shellDir", "is not a folder");
        return None;
    }
    Some(ShellConfig {
        dir: path,
        excludes: excludes.into_iter().filter(|e| valid_basename(e)).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credential_headers_are_known() {
        let header = |name: &str| KeyBy::Header(HeaderName::from_bytes(name.as_bytes()).unwrap());
        for name in [
            "authorization",
            "proxy-authorization",
            "cookie",
            "x-api-key",
        ] {
            assert!(header(name).is_credential(), "{name}");
        }
        assert!(!header("x-tenant").is_credential());
        assert!(!KeyBy::Ip.is_credential());
        assert!(!KeyBy::Claim("sub".into()).is_credential());
    }
}
