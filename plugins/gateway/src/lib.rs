//! The `gateway` plugin (SPEC 5): CORS, rate limiting, the app shell and `/gateway/api`.
//! Its hooks run on every request, so they read one snapshot and take no lock.
#![forbid(unsafe_code)]

mod api;
pub mod config;
pub mod cors;
pub mod limit;
pub mod shell;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use buntime_keyval::KeyVal;
use buntime_plugin_sdk::{
    ApiRequest, ApiResponse, HeaderList, Plugin, PluginError, PluginSpec, Problems, RequestInfo,
    RouteKind, Settings, Tasks,
};
use http::{HeaderName, HeaderValue, Method, StatusCode};

pub use config::{GatewayConfig, KeyBy, LimitConfig};
use limit::{Client, Decision, Limiter};
pub use shell::Shell;

pub const SPEC: PluginSpec = PluginSpec {
    name: "gateway",
    manifest: include_str!("../manifest.yaml"),
    keys: &[
        "cors",
        "rateLimit",
        "shellDir",
        "shellExcludes",
        "trustedProxies",
    ],
    env: &[
        ("GATEWAY_CORS_ORIGIN", "cors.origin"),
        ("GATEWAY_CORS_CREDENTIALS", "cors.credentials"),
        ("GATEWAY_CORS_METHODS", "cors.methods"),
        ("GATEWAY_CORS_MAX_AGE", "cors.maxAge"),
        ("GATEWAY_RATE_LIMIT_REQUESTS", "rateLimit.requests"),
        ("GATEWAY_RATE_LIMIT_WINDOW", "rateLimit.window"),
        ("GATEWAY_RATE_LIMIT_KEY_BY", "rateLimit.keyBy"),
        ("GATEWAY_RATE_LIMIT_EXCLUDE", "rateLimit.excludePaths"),
        ("GATEWAY_SHELL_DIR", "shellDir"),
        ("GATEWAY_SHELL_EXCLUDES", "shellExcludes"),
        ("GATEWAY_TRUSTED_PROXIES", "trustedProxies"),
    ],
    env_numbered: &[],
};

/// How often shell excludes stored by other instances are picked up.
const EXCLUDES_REFRESH: Duration = Duration::from_secs(5);

static RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
static RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
static RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");
static X_RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("x-ratelimit-limit");
static X_RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("x-ratelimit-remaining");
static X_RATELIMIT_RESET: HeaderName = HeaderName::from_static("x-ratelimit-reset");

pub struct GatewayPlugin {
    /// CORS and rate-limit settings; SIGHUP swaps them.
    policy: ArcSwap<GatewayConfig>,
    pub limiter: Limiter,
    pub shell: Option<Arc<Shell>>,
    kv: Option<KeyVal>,
    api_base: String,
    tasks: Tasks,
    /// Preflights answered (metrics).
    pub preflights: std::sync::atomic::AtomicU64,
}

impl GatewayPlugin {
    pub fn parse(s: &Settings, api_base: &str, problems: &mut Problems) -> Option<GatewayConfig> {
        config::parse(s, api_base, problems)
    }

    pub fn new(config: GatewayConfig, api_base: &str, kv: Option<KeyVal>) -> GatewayPlugin {
        let shell = config
            .shell
            .as_ref()
            .map(|s| Arc::new(Shell::new(s.dir.clone(), s.excludes.clone())));
        GatewayPlugin {
            policy: ArcSwap::from_pointee(config),
            limiter: Limiter::default(),
            shell,
            kv,
            api_base: api_base.to_string(),
            tasks: Tasks::default(),
            preflights: Default::default(),
        }
    }

    /// What to say of CORS that lets every origin send credentials: with `origin: "*"` and
    /// `credentials: true`, each request's own Origin is allowed back with
    /// `Access-Control-Allow-Credentials` (SPEC 5.1), so any page a user opens can call
    /// the gateway with their cookies and read the answers. A warning, not a problem: an
    /// API behind it that takes only bearer tokens is not exposed by it.
    pub fn open_credentials_warning(s: &Settings) -> Option<String> {
        let cors = config::cors(s, &mut Problems::default())?;
        cors.open_to_credentials().then(|| {
            format!(
                "{} is \"*\" with {} on: every website a user visits may send requests with \
                 their cookies and read the answers; list the origins that may \
                 (GATEWAY_CORS_ORIGIN=https://app.example.com)",
                s.name_of("cors.origin"),
                s.name_of("cors.credentials"),
            )
        })
    }

    /// Whether the gateway answers CORS (then an upstream's own CORS headers are dropped).
    pub fn cors_enabled(&self) -> bool {
        self.policy.load().cors.enabled
    }

    /// The shell, when one is configured and this request is a page navigation for it.
    pub fn shell_for(
        &self,
        method: &Method,
        path: &str,
        headers: &http::HeaderMap,
    ) -> Option<&Arc<Shell>> {
        self.shell
            .as_ref()
            .filter(|s| s.wants(method, path, headers, &self.api_base))
    }

    fn client<'a>(&self, key_by: &KeyBy, req: &'a RequestInfo<'a>) -> Client<'a> {
        let text = match key_by {
            KeyBy::Ip => None,
            KeyBy::Header(name) => req.headers.get(name).and_then(|v| v.to_str().ok()),
            KeyBy::Claim(name) => match req.identity.and_then(|id| id.claims.get(name)) {
                Some(serde_json::Value::String(s)) => Some(s.as_str()),
                // A numeric user or tenant id is as good a key as a string one.
                Some(serde_json::Value::Number(n)) => return Client::Number(n),
                _ => None,
            },
        };
        match text.filter(|t| !t.is_empty()) {
            Some(t) if key_by.is_credential() => Client::Secret(t),
            Some(t) => Client::Text(t),
            None => Client::Ip(limit::subscriber(req.client_ip)),
        }
    }

    fn config_json(&self) -> serde_json::Value {
        let p = self.policy.load();
        let l = &p.limit;
        let key_by = match &l.key_by {
            KeyBy::Ip => "ip".to_string(),
            KeyBy::Header(h) => format!("header:{h}"),
            KeyBy::Claim(c) => format!("claim:{c}"),
        };
        serde_json::json!({
            "rateLimit": l.enabled.then(|| serde_json::json!({
                "enabled": true,
                "requests": l.requests,
                "window": buntime_plugin_sdk::duration::format_duration(l.window),
                "keyBy": key_by,
                "excludePaths": l.exclude.patterns(),
            })),
            "cors": p.cors.enabled.then(|| p.cors.to_json()),
            "shell": self.shell.as_ref().map(|s| serde_json::json!({
                "dir": s.dir.display().to_string(),
                "excludes": s.configured().iter().cloned()
                    .chain(s.stored().iter().map(|e| e.basename.clone()))
                    .collect::<Vec<_>>(),
            })),
        })
    }

    fn stats_json(&self) -> serde_json::Value {
        let p = self.policy.load();
        let c = &self.limiter.counters;
        serde_json::json!({
            "rateLimit": {
                "enabled": p.limit.enabled,
                "totalRequests": c.total.load(Ordering::Relaxed),
                "allowed": c.allowed.load(Ordering::Relaxed),
                "blocked": c.blocked.load(Ordering::Relaxed),
                "activeKeys": self.limiter.active_keys(),
            },
            "cors": {"enabled": p.cors.enabled},
            "shell": {
                "enabled": self.shell.is_some(),
                "dir": self.shell.as_ref().map(|s| s.dir.display().to_string()),
                "excludesCount": self.shell.as_ref().map_or(0, |s| s.configured().len() + s.stored().len()),
            },
        })
    }
}

/// Counts and seconds below this come from a table as header values.
const SMALL_NUMBERS: usize = 1024;

/// `n` as a header value. Most rate-limit values are small (a window's seconds, a limit's
/// remainder): those are made once, and a clone of one copies a pointer, where formatting
/// allocates.
fn number(n: u64) -> HeaderValue {
    static SMALL: std::sync::OnceLock<Vec<HeaderValue>> = std::sync::OnceLock::new();
    let small = SMALL.get_or_init(|| {
        (0..SMALL_NUMBERS)
            .map(|i| HeaderValue::from_static(String::leak(i.to_string())))
            .collect()
    });
    usize::try_from(n)
        .ok()
        .and_then(|i| small.get(i))
        .cloned()
        .unwrap_or_else(|| HeaderValue::from(n))
}

/// `429 {"error":"Too Many Requests"}` with `Retry-After` and both header families.
fn too_many(d: &Decision) -> ApiResponse {
    let mut resp = ApiResponse::error(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests");
    resp.headers.extend([
        (http::header::RETRY_AFTER, number(d.reset)),
        (RATELIMIT_LIMIT.clone(), number(d.limit)),
        (RATELIMIT_REMAINING.clone(), number(0)),
        (RATELIMIT_RESET.clone(), number(d.reset)),
        (X_RATELIMIT_LIMIT.clone(), number(d.limit)),
        (X_RATELIMIT_REMAINING.clone(), number(0)),
        (X_RATELIMIT_RESET.clone(), number(d.reset)),
    ]);
    resp
}

#[async_trait]
impl Plugin for GatewayPlugin {
    fn name(&self) -> &'static str {
        "gateway"
    }

    /// CORS preflight, answered before routing and before any credential check.
    fn on_early_request(&self, req: &RequestInfo<'_>) -> Option<ApiResponse> {
        if *req.method != Method::OPTIONS
            || !req
                .headers
                .contains_key(http::header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return None;
        }
        let policy = self.policy.load();
        if !policy.cors.enabled {
            return None;
        }
        self.preflights.fetch_add(1, Ordering::Relaxed);
        Some(policy.cors.preflight(req.headers))
    }

    /// Rate limiting: the matched rule's or app's own limit, else the gateway's.
    fn on_request(&self, req: &RequestInfo<'_>, out: &mut HeaderList) -> Option<ApiResponse> {
        let policy = self.policy.load();
        let l = &policy.limit;
        if !l.enabled || l.exclude.is_match(req.path) {
            return None;
        }
        let (scope, requests, window) = match (req.rate_limit, req.route) {
            (Some(own), RouteKind::Rule(id)) => (format!("rule:{id}"), own.requests, own.window),
            (Some(own), RouteKind::App(name)) => (format!("app:{name}"), own.requests, own.window),
            _ => (String::new(), l.requests, l.window),
        };
        let d = self
            .limiter
            .check(&scope, self.client(&l.key_by, req), requests, window);
        if !d.allowed {
            return Some(too_many(&d));
        }
        out.set(RATELIMIT_LIMIT.clone(), number(d.limit));
        out.set(RATELIMIT_REMAINING.clone(), number(d.remaining));
        out.set(RATELIMIT_RESET.clone(), number(d.reset));
        None
    }

    /// CORS headers on every response but the preflight (which has its own).
    fn on_response(&self, req: &RequestInfo<'_>, out: &mut HeaderList) {
        if *req.route == RouteKind::Preflight {
            return;
        }
        let policy = self.policy.load();
        if policy.cors.enabled {
            policy.cors.response_headers(req.headers, out);
        }
    }

    async fn handle(&self, req: ApiRequest) -> ApiResponse {
        api::handle(self, &req)
            .await
            .unwrap_or_else(ApiResponse::from)
    }

    fn openapi_paths(&self) -> serde_json::Value {
        api::openapi()
    }

    async fn start(&self) -> Result<(), PluginError> {
        let (Some(shell), Some(kv)) = (self.shell.clone(), self.kv.clone()) else {
            return Ok(());
        };
        self.tasks.spawn(async move {
            kv.database().wait_ready().await;
            let mut tick = tokio::time::interval(EXCLUDES_REFRESH);
            loop {
                tick.tick().await;
                match kv.get(&api::excludes_key()).await {
                    Ok(entry) => shell.set_stored(
                        entry
                            .and_then(|e| serde_json::from_value(e.value).ok())
                            .unwrap_or_default(),
                    ),
                    Err(e) => log::warn!("gateway: cannot read shell excludes: {e}"),
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) {
        self.tasks.stop();
    }

    /// SIGHUP: CORS, rate limits and configured shell excludes change live.
    fn reload(&self, settings: &Settings, problems: &mut Problems) {
        let Some(new) = config::parse(settings, &self.api_base, problems) else {
            return;
        };
        if let (Some(shell), Some(cfg)) = (&self.shell, &new.shell) {
            shell.set_configured(cfg.excludes.clone());
        }
        self.policy.store(Arc::new(new));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_in_and_past_the_table() {
        for n in [0, 7, 60, 1023, 1024, 3600, 1_000_000_000, u64::MAX] {
            assert_eq!(number(n).to_str().unwrap(), n.to_string(), "{n}");
        }
    }
}
