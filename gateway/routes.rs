//! Which handler owns a request (SPEC 1 step 3), first match wins.

use http::Method;

use crate::plugins::Plugins;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// The runtime internal API; the path below the API base.
    Api(String),
    WellKnown,
    Metrics,
    /// A plugin's routes: index into the loaded plugins, and the path below its base.
    Plugin(usize, String),
    NotFound,
}

#[derive(Debug, Clone)]
pub struct Router {
    api_base: String,
    /// Plugin bases, longest first so `/metrics/api` wins over a shorter base.
    plugin_bases: Vec<(String, usize)>,
}

impl Router {
    pub fn new(api_base: &str, plugins: &Plugins) -> Router {
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
        }
    }

    pub fn api_base(&self) -> &str {
        &self.api_base
    }

    pub fn route(&self, method: &Method, path: &str) -> Route {
        if let Some(rest) = below(path, &self.api_base) {
            return Route::Api(rest.to_string());
        }
        if path == "/.well-known/buntime" {
            return Route::WellKnown;
        }
        if path == "/metrics" && (method == Method::GET || method == Method::HEAD) {
            return Route::Metrics;
        }
        for (base, i) in &self.plugin_bases {
            if let Some(rest) = below(path, base) {
                return Route::Plugin(*i, rest.to_string());
            }
        }
        Route::NotFound
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

/// Paths with `.` or `..` segments (also percent-encoded) are refused: upstreams resolve
/// them differently than our route and public-path matching would.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let s = seg.to_ascii_lowercase();
        let s = s.replace("%2e", ".");
        s == "." || s == ".."
    })
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
        };
        assert_eq!(
            r.route(&Method::GET, "/api/health"),
            Route::Api("/health".into())
        );
        assert_eq!(r.route(&Method::GET, "/metrics"), Route::Metrics);
        assert_eq!(r.route(&Method::POST, "/metrics"), Route::NotFound);
        assert_eq!(
            r.route(&Method::GET, "/metrics/api/stats"),
            Route::Plugin(1, "/stats".into())
        );
        assert_eq!(
            r.route(&Method::GET, "/redirects/api/rules"),
            Route::Plugin(0, "/api/rules".into())
        );
        assert_eq!(
            r.route(&Method::GET, "/.well-known/buntime"),
            Route::WellKnown
        );
        assert_eq!(r.route(&Method::GET, "/hello"), Route::NotFound);
    }

    #[test]
    fn dot_segments() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/a/%2E%2e/b"));
        assert!(has_dot_segment("/.."));
        assert!(!has_dot_segment("/a/..b/c"));
        assert!(!has_dot_segment("/.well-known/buntime"));
    }
}
