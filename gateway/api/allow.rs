//! The methods each documented admin route answers (from the OpenAPI paths), so that a
//! plugin route asked with another method gets `405` and `Allow`, as the runtime API's
//! routes do, rather than the plugin's `404`.

use http::{HeaderValue, Method};
use serde_json::{Map, Value};

pub struct AllowedMethods {
    /// Path templates (`/redirects/api/rules/{id}`) as segments, with their methods.
    routes: Vec<(Vec<String>, Vec<Method>)>,
}

impl AllowedMethods {
    pub fn new(paths: &Map<String, Value>) -> AllowedMethods {
        let routes = paths
            .iter()
            .map(|(template, item)| {
                let mut methods: Vec<Method> = item
                    .as_object()
                    .into_iter()
                    .flat_map(|ops| ops.keys())
                    .filter_map(|m| Method::from_bytes(m.to_ascii_uppercase().as_bytes()).ok())
                    .collect();
                // HEAD works wherever GET does (README, "Routes").
                if methods.contains(&Method::GET) {
                    methods.push(Method::HEAD);
                }
                (segments(template).map(str::to_string).collect(), methods)
            })
            .collect();
        AllowedMethods { routes }
    }

    /// The `Allow` value for a request to a documented route that does not answer its
    /// method: every method of the templates `path` matches. `None` when no template
    /// matches, or one answers `method` (a `404` then means the resource is missing).
    pub fn allow(&self, method: &Method, path: &str) -> Option<HeaderValue> {
        let mut allowed: Vec<&Method> = Vec::new();
        for (template, methods) in &self.routes {
            if !matches(template, path) {
                continue;
            }
            if methods.contains(method) {
                return None;
            }
            allowed.extend(methods);
        }
        allowed.sort_by_key(|m| order(m));
        allowed.dedup();
        if allowed.is_empty() {
            return None;
        }
        let text: Vec<&str> = allowed.iter().map(|m| m.as_str()).collect();
        HeaderValue::from_str(&text.join(", ")).ok()
    }
}

fn segments(path: &str) -> impl Iterator<Item = &str> {
    path.split('/').filter(|s| !s.is_empty())
}

/// `{name}` matches any one segment; other segments match themselves.
fn matches(template: &[String], path: &str) -> bool {
    let mut given = segments(path);
    template.iter().all(|t| {
        given
            .next()
            .is_some_and(|g| t == g || (t.starts_with('{') && t.ends_with('}')))
    }) && given.next().is_none()
}

/// Methods listed in the usual order: reads first, then writes.
fn order(m: &Method) -> usize {
    [
        Method::GET,
        Method::HEAD,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
    ]
    .iter()
    .position(|known| known == m)
    .unwrap_or(6)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn allow_lists_the_methods_of_matching_templates() {
        let paths = json!({
            "/redirects/api/rules": {"get": {}, "post": {}},
            "/redirects/api/rules/{id}": {"get": {}, "put": {}, "delete": {}},
            "/redirects/api/rules/test": {"post": {}},
        });
        let a = AllowedMethods::new(paths.as_object().unwrap());
        let allow = |m: Method, p: &str| a.allow(&m, p).map(|v| v.to_str().unwrap().to_string());
        assert_eq!(
            allow(Method::PATCH, "/redirects/api/rules").as_deref(),
            Some("GET, HEAD, POST")
        );
        assert_eq!(
            allow(Method::PATCH, "/redirects/api/rules/test").as_deref(),
            Some("GET, HEAD, POST, PUT, DELETE")
        );
        assert_eq!(
            allow(Method::GET, "/redirects/api/rules/x"),
            None,
            "answered"
        );
        assert_eq!(allow(Method::HEAD, "/redirects/api/rules"), None);
        assert_eq!(allow(Method::PATCH, "/redirects/api/nothing"), None);
        assert_eq!(allow(Method::PATCH, "/redirects/api/rules/x/y"), None);
    }
}
