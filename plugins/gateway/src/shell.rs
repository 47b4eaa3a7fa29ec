//! The app shell (SPEC 5.3): which requests are page navigations the shell serves, and
//! the first path segments excluded from it (config/env, keyval, a per-user cookie).

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use http::{HeaderMap, Method};
use serde::{Deserialize, Serialize};

use crate::config::valid_basename;

/// Cookie names a user can exclude segments with.
const COOKIES: [&str; 2] = ["gateway_shell_excludes", "GATEWAY_SHELL_EXCLUDES"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredExclude {
    pub basename: String,
    /// Epoch milliseconds.
    #[serde(rename = "addedAt")]
    pub added_at: u64,
}

pub struct Shell {
    pub dir: PathBuf,
    /// From `shellExcludes` / `GATEWAY_SHELL_EXCLUDES` (SIGHUP may change them).
    configured: ArcSwap<Vec<String>>,
    /// From keyval `["gateway","shell","excludes"]`, refreshed in the background.
    stored: ArcSwap<Vec<StoredExclude>>,
}

impl Shell {
    pub fn new(dir: PathBuf, configured: Vec<String>) -> Shell {
        Shell {
            dir,
            configured: ArcSwap::from_pointee(configured),
            stored: ArcSwap::from_pointee(Vec::new()),
        }
    }

    pub fn set_configured(&self, excludes: Vec<String>) {
        self.configured.store(Arc::new(excludes));
    }

    pub fn set_stored(&self, excludes: Vec<StoredExclude>) {
        self.stored.store(Arc::new(excludes));
    }

    pub fn configured(&self) -> Arc<Vec<String>> {
        self.configured.load_full()
    }

    pub fn stored(&self) -> Arc<Vec<StoredExclude>> {
        self.stored.load_full()
    }

    /// Whether the shell answers this request: not under the runtime API, first segment
    /// not excluded, and a page navigation.
    pub fn wants(&self, method: &Method, path: &str, headers: &HeaderMap, api_base: &str) -> bool {
        if path
            .strip_prefix(api_base)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        {
            return false;
        }
        let rest = path.strip_prefix('/').unwrap_or(path);
        let (first, deeper) = match rest.split_once('/') {
            Some((first, _)) => (first, true),
            None => (rest, false),
        };
        // An excluded app is excluded in every version: `/cpanel@2/` too (a basename
        // cannot name a version, `@` is not allowed in one).
        let app = first.split('@').next().unwrap_or(first);
        if !app.is_empty() && self.excluded(app, headers) {
            return false;
        }
        let dest = headers
            .get("sec-fetch-dest")
            .and_then(|v| v.to_str().ok())
            .map(str::to_ascii_lowercase);
        match dest.as_deref() {
            Some("document") => true,
            Some("iframe" | "embed" | "object") => false,
            _ => method == Method::GET && !deeper,
        }
    }

    fn excluded(&self, segment: &str, headers: &HeaderMap) -> bool {
        self.configured.load().iter().any(|e| e == segment)
            || self.stored.load().iter().any(|e| e.basename == segment)
            || cookie_excludes(headers).iter().any(|e| e == segment)
    }
}

/// The cookie's URL-decoded comma list; invalid names are ignored.
fn cookie_excludes(headers: &HeaderMap) -> Vec<String> {
    let mut out = Vec::new();
    for header in headers.get_all(http::header::COOKIE) {
        let Ok(text) = header.to_str() else { continue };
        for pair in text.split(';') {
            let Some((name, value)) = pair.trim().split_once('=') else {
                continue;
            };
            if !COOKIES.contains(&name.trim()) {
                continue;
            }
            let decoded: String = form_urlencoded::parse(format!("v={value}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default();
            out.extend(
                decoded
                    .split(',')
                    .map(str::trim)
                    .filter(|n| valid_basename(n))
                    .map(String::from),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shell() -> Shell {
        let s = Shell::new(PathBuf::from("/shell"), vec!["cpanel".into()]);
        s.set_stored(vec![StoredExclude {
            basename: "legacy".into(),
            added_at: 1,
        }]);
        s
    }

    fn h(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in pairs {
            m.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        m
    }

    #[test]
    fn navigation_detection() {
        let s = shell();
        let get = Method::GET;
        assert!(s.wants(&get, "/", &h(&[]), "/api"));
        assert!(s.wants(&get, "/dashboard", &h(&[]), "/api"));
        assert!(
            !s.wants(&get, "/app/x.js", &h(&[]), "/api"),
            "deeper paths need Sec-Fetch-Dest: document"
        );
        assert!(s.wants(
            &get,
            "/app/settings",
            &h(&[("sec-fetch-dest", "document")]),
            "/api"
        ));
        assert!(!s.wants(
            &get,
            "/dashboard",
            &h(&[("sec-fetch-dest", "iframe")]),
            "/api"
        ));
        assert!(!s.wants(
            &get,
            "/dashboard",
            &h(&[("sec-fetch-dest", "embed")]),
            "/api"
        ));
        assert!(!s.wants(&Method::POST, "/dashboard", &h(&[]), "/api"));
        assert!(!s.wants(&get, "/api", &h(&[("sec-fetch-dest", "document")]), "/api"));
        assert!(!s.wants(
            &get,
            "/api/health",
            &h(&[("sec-fetch-dest", "document")]),
            "/api"
        ));
        assert!(s.wants(&get, "/apiary", &h(&[]), "/api"));
    }

    #[test]
    fn excludes_from_each_source() {
        let s = shell();
        let doc = [("sec-fetch-dest", "document")];
        assert!(
            !s.wants(&Method::GET, "/cpanel/x", &h(&doc), "/api"),
            "configured"
        );
        assert!(
            !s.wants(&Method::GET, "/cpanel@2/x", &h(&doc), "/api"),
            "every version of an excluded app"
        );
        assert!(s.wants(&Method::GET, "/cpanel2/x", &h(&doc), "/api"));
        assert!(
            !s.wants(&Method::GET, "/legacy", &h(&doc), "/api"),
            "keyval"
        );
        let cookie = h(&[
            ("sec-fetch-dest", "document"),
            (
                "cookie",
                "a=1; gateway_shell_excludes=mine%2Cbad%20name, other=2",
            ),
        ]);
        assert!(
            !s.wants(&Method::GET, "/mine", &cookie, "/api"),
            "cookie, URL-decoded"
        );
        assert!(s.wants(&Method::GET, "/other", &cookie, "/api"));
        let upper = h(&[("cookie", "GATEWAY_SHELL_EXCLUDES=tools")]);
        assert!(!s.wants(&Method::GET, "/tools", &upper, "/api"));
        s.set_configured(vec![]);
        assert!(
            s.wants(&Method::GET, "/cpanel", &h(&doc), "/api"),
            "SIGHUP can drop a configured exclude"
        );
    }
}
