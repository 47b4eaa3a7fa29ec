//! Which handler owns a request (SPEC 1 step 3), first match wins.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use arc_swap::ArcSwap;
use buntime_gateway::GatewayPlugin;
use buntime_proxy::{CompiledRule, RuleTable};
use buntime_workers::{App, Located, Pool};
use http::{HeaderMap, Method};

use crate::plugins::Plugins;

#[derive(Debug, Clone)]
pub enum Route {
    /// The runtime internal API; the path below the API base.
    Api(String),
    WellKnown,
    Metrics,
    /// A plugin's routes: index into the loaded plugins, and the path below its base.
    Plugin(usize, String),
    /// A proxy rule matched.
    Rule(Arc<CompiledRule>),
    /// A page navigation the app shell serves.
    Shell(Arc<App>),
    /// The first path segment names an app; the segment as written (`hello@1`).
    App(Arc<App>, String),
    NotFound,
}

impl PartialEq for Route {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Route::Api(a), Route::Api(b)) => a == b,
            (Route::WellKnown, Route::WellKnown)
            | (Route::Metrics, Route::Metrics)
            | (Route::NotFound, Route::NotFound) => true,
            (Route::Plugin(i, a), Route::Plugin(j, b)) => i == j && a == b,
            (Route::Rule(a), Route::Rule(b)) => Arc::ptr_eq(a, b),
            (Route::Shell(a), Route::Shell(b)) => Arc::ptr_eq(a, b),
            (Route::App(a, x), Route::App(b, y)) => Arc::ptr_eq(a, b) && x == y,
            _ => false,
        }
    }
}

#[derive(Clone)]
pub struct Router {
    api_base: String,
    /// Plugin bases, longest first so `/metrics/api` wins over a shorter base.
    plugin_bases: Vec<(String, usize)>,
    /// The proxy plugin's live rule table, when it is loaded.
    rules: Option<Arc<ArcSwap<RuleTable>>>,
    /// Whether that table has its dynamic rules yet (`ProxyPlugin::loaded`).
    rules_loaded: Option<Arc<AtomicBool>>,
    /// The gateway plugin, for the app shell.
    gateway: Option<Arc<GatewayPlugin>>,
    /// The shell's app, when a shell is configured.
    shell: Option<Arc<App>>,
    pool: Option<Arc<Pool>>,
}

impl Router {
    pub fn new(api_base: &str, plugins: &Plugins, pool: Option<Arc<Pool>>) -> Router {
        let rules = plugins.typed.proxy.as_ref().map(|p| p.table());
        let rules_loaded = plugins.typed.proxy.as_ref().map(|p| p.loaded());
        let gateway = plugins.typed.gateway.clone();
        let shell = gateway
            .as_ref()
            .and_then(|g| g.shell.as_ref())
            .zip(pool.as_ref())
            .map(|(s, pool)| {
                pool.app_at(&Located {
                    name: "shell".into(),
                    version: "latest".into(),
                    dir: s.dir.clone(),
                })
            });
        let mut plugin_bases: Vec<(String, usize)> = plugins
            .loaded
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.base.clone()?, i)))
            .collect();
        plugin_bases.sort_by_key(|(base, _)| std::cmp::Reverse(base.len()));
        Router {
            api_base: api_base.to_string(),
            plugin_bases,
            rules,
            rules_loaded,
            gateway,
            shell,
            pool,
        }
    }

    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    /// Whether the dynamic rules have not been read since start (one atomic load).
    pub fn rules_pending(&self) -> bool {
        self.rules_loaded
            .as_ref()
            .is_some_and(|loaded| !loaded.load(Ordering::Acquire))
    }

    /// Whether routing this request needs dynamic rules that have not been read yet: the
    /// rule table is still the static rules alone (the database has not answered since
    /// start), the request is not one the runtime or a plugin owns, and no static rule
    /// takes it (static rules match before any dynamic one).
    pub fn awaits_rules(&self, method: &Method, path: &str, websocket: bool) -> bool {
        self.rules_pending()
            && self.own_route(method, path).is_none()
            && self
                .rules
                .as_ref()
                .is_none_or(|rules| rules.load().matching(path, websocket).is_none())
    }

    /// `websocket`: the request asks for a WebSocket upgrade (rules with `ws: false` skip it).
    pub fn route(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
        websocket: bool,
    ) -> Route {
        if let Some(route) = self.own_route(method, path) {
            return route;
        }
        if let Some(rules) = &self.rules
            && let Some(rule) = rules.load().matching(path, websocket)
        {
            return Route::Rule(rule.clone());
        }
        if let (Some(shell), Some(g)) = (&self.shell, &self.gateway)
            && g.shell_for(method, path, headers).is_some()
        {
            return Route::Shell(shell.clone());
        }
        // The first segment after exactly one slash: `//web` is no path of app `web`, as
        // `//redirects/api` is none of the plugin's and `^/web` does not match it. It was
        // routed to the app, which saw `/` for any `//web/...` (its base did not prefix
        // the path): the entry page for every asset, and its publicRoutes checked on `/`.
        let segment = path
            .strip_prefix('/')
            .and_then(|p| p.split('/').next())
            .unwrap_or("");
        if let Some(pool) = &self.pool
            && !segment.is_empty()
            && let Some(app) = pool.app(segment)
        {
            return Route::App(app, segment.to_string());
        }
        Route::NotFound
    }

    /// The routes the runtime and the plugins own, which come before any rule.
    fn own_route(&self, method: &Method, path: &str) -> Option<Route> {
        if let Some(rest) = below(path, &self.api_base) {
            return Some(Route::Api(rest.to_string()));
        }
        if path == "/.well-known/buntime" {
            return Some(Route::WellKnown);
        }
        if path == "/metrics" && (method == Method::GET || method == Method::HEAD) {
            return Some(Route::Metrics);
        }
        self.plugin_bases
            .iter()
            .find_map(|(base, i)| below(path, base).map(|rest| Route::Plugin(*i, rest.to_string())))
    }
}

/// `below("/api/health", "/api")` = `Some("/health")`; the base itself gives `"/"`;
/// `/apix` is not below `/api`.
pub fn below<'a>(path: &'a str, base: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(base)?;
    if rest.is_empty() {
        Some("/")
    } else if rest.starts_with('/') {
        Some(rest)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_base() {
        assert_eq!(below("/api/health", "/api"), Some("/health"));
        assert_eq!(below("/api", "/api"), Some("/"));
        assert_eq!(below("/api/", "/api"), Some("/"));
        assert_eq!(below("/apix", "/api"), None);
        assert_eq!(below("/_/api/x", "/_/api"), Some("/x"));
    }

    #[test]
    fn api_before_plugins_and_metrics_only_for_get() {
        let r = Router {
            api_base: "/api".into(),
            plugin_bases: vec![("/metrics/api".into(), 1), ("/redirects".into(), 0)],
            rules: None,
            rules_loaded: None,
            gateway: None,
            shell: None,
            pool: None,
        };
        assert_eq!(
            r.route(&Method::GET, "/api/health", &HeaderMap::new(), false),
            Route::Api("/health".into())
        );
        assert_eq!(
            r.route(&Method::GET, "/metrics", &HeaderMap::new(), false),
            Route::Metrics
        );
        assert_eq!(
            r.route(&Method::POST, "/metrics", &HeaderMap::new(), false),
            Route::NotFound
        );
        assert_eq!(
            r.route(&Method::GET, "/metrics/api/stats", &HeaderMap::new(), false),
            Route::Plugin(1, "/stats".into())
        );
        assert_eq!(
            r.route(
                &Method::GET,
                "/redirects/api/rules",
                &HeaderMap::new(),
                false
            ),
            Route::Plugin(0, "/api/rules".into())
        );
        assert_eq!(
            r.route(
                &Method::GET,
                "/.well-known/buntime",
                &HeaderMap::new(),
                false
            ),
            Route::WellKnown
        );
        assert_eq!(
            r.route(&Method::GET, "/hello", &HeaderMap::new(), false),
            Route::NotFound
        );
    }

    fn static_rule(pattern: &str) -> Arc<CompiledRule> {
        let rule = buntime_proxy::Rule::blank("r")
            .with_fields(
                serde_json::json!({"pattern": pattern, "target": "http://127.0.0.1:1"})
                    .as_object()
                    .unwrap(),
                true,
            )
            .unwrap();
        Arc::new(CompiledRule::compile(rule, &buntime_proxy::Resolver::default()).unwrap())
    }

    #[test]
    fn rules_come_after_plugin_bases() {
        let table = RuleTable::build(vec![static_rule("^/")]).unwrap();
        let loaded = Arc::new(AtomicBool::new(false));
        let r = Router {
            api_base: "/api".into(),
            plugin_bases: vec![("/redirects".into(), 0)],
            rules: Some(Arc::new(ArcSwap::from_pointee(table))),
            rules_loaded: Some(loaded.clone()),
            gateway: None,
            shell: None,
            pool: None,
        };
        assert_eq!(
            r.route(&Method::GET, "/api/health", &HeaderMap::new(), false),
            Route::Api("/health".into())
        );
        assert_eq!(
            r.route(
                &Method::GET,
                "/redirects/api/rules",
                &HeaderMap::new(),
                false
            ),
            Route::Plugin(0, "/api/rules".into())
        );
        assert!(matches!(
            r.route(&Method::GET, "/anything", &HeaderMap::new(), false),
            Route::Rule(_)
        ));
        // Before the dynamic rules are read, only what is routed ahead of them is sure: the
        // runtime's and plugins' routes, and the static rules (here `^/`, so a table with
        // it alone is tried as well).
        assert!(!r.awaits_rules(&Method::GET, "/anything", false));
        let r = Router {
            rules: Some(Arc::new(ArcSwap::from_pointee(
                RuleTable::build(vec![static_rule("^/static")]).unwrap(),
            ))),
            ..r
        };
        for (method, path, waits) in [
            (Method::GET, "/anything", true),
            (Method::GET, "/", true),
            (Method::GET, "/static/x", false),
            (Method::GET, "/api/health/ready", false),
            (Method::POST, "/redirects/api/rules", false),
            (Method::GET, "/metrics", false),
            (Method::POST, "/metrics", true),
            (Method::GET, "/.well-known/buntime", false),
        ] {
            assert_eq!(
                r.awaits_rules(&method, path, false),
                waits,
                "{method} {path}"
            );
        }
        loaded.store(true, Ordering::Release);
        assert!(!r.awaits_rules(&Method::GET, "/anything", false));
    }
}
