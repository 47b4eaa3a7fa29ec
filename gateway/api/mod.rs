//! The runtime internal API (SPEC 2), under `{RUNTIME_API_PREFIX}/api`.

mod allow;

pub use allow::AllowedMethods;

use buntime_plugin_sdk::api::decode_segment;
use buntime_plugin_sdk::openapi::{self, Paths};
use buntime_plugin_sdk::{ApiRequest, ApiResponse};
use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde_json::{Map, Value, json};

use crate::plugins::Plugins;
use crate::state::{Shared, VERSION};

/// Paths below the API base that need no credential.
pub fn is_public(rest: &str) -> bool {
    matches!(
        rest,
        "/health" | "/health/live" | "/health/ready" | "/openapi.json"
    )
}

/// Paths open to everyone whatever the auth settings: the runtime API's public paths,
/// `/.well-known/buntime` and `/metrics` (SPEC 6.3).
pub fn is_public_path(api_base: &str, path: &str) -> bool {
    path == "/.well-known/buntime"
        || path == "/metrics"
        || crate::routes::below(path, api_base)
            .is_some_and(|rest| is_public(rest.trim_end_matches('/')))
}

pub fn handle(shared: &Shared, req: &ApiRequest) -> ApiResponse {
    let get = req.method == Method::GET || req.method == Method::HEAD;
    let path = req.path.trim_end_matches('/');
    match (path, get) {
        ("/health", true) => health("healthy"),
        ("/health/live", true) => health("live"),
        ("/health/ready", true) => ready(shared),
        ("/openapi.json", true) => {
            let mut r = ApiResponse::empty(StatusCode::OK);
            r.headers.push((
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            ));
            r.body = shared.openapi.clone();
            r
        }
        ("/plugins", true) => ApiResponse::ok(&**shared.installed.load()),
        ("/plugins/loaded", true) => plugins_loaded(&shared.plugins),
        ("/workers", true) => {
            ApiResponse::ok(&shared.pool.as_ref().map_or_else(Vec::new, |p| p.list()))
        }
        ("/apps", true) => ApiResponse::ok(
            &shared
                .pool
                .as_ref()
                .map_or_else(Vec::new, |p| p.discovery().list()),
        ),
        (
            "/health" | "/health/live" | "/health/ready" | "/openapi.json" | "/plugins"
            | "/plugins/loaded" | "/workers" | "/apps",
            false,
        ) => method_not_allowed("GET, HEAD"),
        _ => restart(shared, req, path),
    }
}

/// `POST /workers/{app}/restart`: replaces that app's workers (`Pool::restart`).
fn restart(shared: &Shared, req: &ApiRequest, path: &str) -> ApiResponse {
    let Some(app) = path
        .strip_prefix("/workers/")
        .and_then(|rest| rest.strip_suffix("/restart"))
        .filter(|a| !a.is_empty() && !a.contains('/'))
    else {
        return ApiResponse::not_found();
    };
    if req.method != Method::POST {
        return method_not_allowed("POST");
    }
    // As the other path parameters: a client that encodes it sends `hello%401` for
    // `hello@1`.
    let app = match decode_segment(app) {
        Ok(app) => app,
        Err(e) => return e.into(),
    };
    match shared.pool.as_ref().is_some_and(|p| p.restart(&app)) {
        true => ApiResponse::ok(&json!({"ok": true, "app": app})),
        false => ApiResponse::error(StatusCode::NOT_FOUND, "App not found"),
    }
}

/// `GET /.well-known/buntime` (never prefixed).
pub fn well_known(api_base: &str) -> ApiResponse {
    ApiResponse::ok(&json!({ "api": api_base, "version": VERSION }))
}

fn health(status: &str) -> ApiResponse {
    ApiResponse::ok(&json!({ "ok": true, "status": status, "version": VERSION }))
}

fn ready(shared: &Shared) -> ApiResponse {
    match shared.readiness() {
        Ok(()) => health("ready"),
        Err((status, waiting)) => ApiResponse::json(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({ "ok": false, "status": status, "version": VERSION, "waiting": waiting }),
        ),
    }
}

fn plugins_loaded(plugins: &Plugins) -> ApiResponse {
    let list: Vec<Value> = plugins
        .loaded
        .iter()
        .map(|p| {
            json!({
                "name": p.name,
                "base": p.base,
                "enabled": p.manifest.enabled,
                "dependencies": p.manifest.dependencies,
                "optionalDependencies": p.manifest.optional_dependencies,
            })
        })
        .collect();
    ApiResponse::ok(&list)
}

fn method_not_allowed(allow: &'static str) -> ApiResponse {
    ApiResponse::method_not_allowed(HeaderValue::from_static(allow))
}

/// The OpenAPI document's paths: the runtime API's routes plus every loaded plugin's.
pub fn documented_paths(api_base: &str, plugins: &Plugins) -> Map<String, Value> {
    let mut core = Paths::new();
    let p = |rest: &str| format!("{api_base}{rest}");
    core.add("GET", &p("/health"), "Liveness and version", false, &[200])
        .add(
            "GET",
            &p("/health/live"),
            "The process is up",
            false,
            &[200],
        )
        .add(
            "GET",
            &p("/health/ready"),
            "Plugins loaded and the database answered",
            false,
            &[200, 503],
        )
        .add("GET", &p("/openapi.json"), "This document", false, &[200])
        .add(
            "GET",
            &p("/plugins"),
            "Plugins installed in plugin dirs",
            true,
            &[200, 401],
        )
        .add(
            "GET",
            &p("/plugins/loaded"),
            "Loaded plugins in load order",
            true,
            &[200, 401],
        )
        .add(
            "GET",
            &p("/workers"),
            "One entry per worker process",
            true,
            &[200, 401],
        )
        .add(
            "POST",
            &p("/workers/{app}/restart"),
            "Replace an app's workers, each serving until its replacement is ready",
            true,
            &[200, 401, 404],
        )
        .add(
            "GET",
            &p("/apps"),
            "Apps found in the worker dirs, with their versions",
            true,
            &[200, 401],
        )
        .add(
            "GET",
            "/.well-known/buntime",
            "Where the runtime API lives",
            false,
            &[200],
        )
        // Public unless METRICS_TOKEN is set; then a bearer token (not an admin key).
        .add(
            "GET",
            "/metrics",
            "Prometheus metrics (text format 0.0.4)",
            false,
            &[200, 401],
        );
    let mut paths = match core.into_value() {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    for loaded in &plugins.loaded {
        if let Value::Object(more) = loaded.plugin.openapi_paths() {
            let compiled = compiled_base(loaded.name);
            for (k, v) in more {
                let k = rebased(k, compiled.as_deref(), loaded.base.as_deref());
                merge_path(&mut paths, k, v);
            }
        }
    }
    paths
}

/// The base a core plugin's compiled-in manifest gives it, under which it documents its
/// routes.
fn compiled_base(name: &str) -> Option<String> {
    let spec = crate::plugins::CORE.iter().find(|s| s.name == name)?;
    let manifest: serde_yaml::Mapping = serde_yaml::from_str(spec.manifest).ok()?;
    let base = manifest.get("base")?.as_str()?;
    Some(buntime_plugin_sdk::plugin::normalise_base(base))
}

/// `path` documented under `compiled`, moved under the base the plugin has (a manifest or
/// the config file may set another).
fn rebased(path: String, compiled: Option<&str>, actual: Option<&str>) -> String {
    match (compiled, actual) {
        (Some(from), Some(to)) if from != to => match crate::routes::below(&path, from) {
            Some("/") => to.to_string(),
            Some(rest) => format!("{to}{rest}"),
            None => path,
        },
        _ => path,
    }
}

/// The OpenAPI document around `paths`.
pub fn openapi(paths: Map<String, Value>) -> Bytes {
    let doc = openapi::document(VERSION, paths);
    Bytes::from(serde_json::to_vec(&doc).unwrap_or_default())
}

fn merge_path(paths: &mut Map<String, Value>, path: String, item: Value) {
    match (paths.get_mut(&path), item) {
        (Some(Value::Object(existing)), Value::Object(ops)) => existing.extend(ops),
        (_, item) => {
            paths.insert(path, item);
        }
    }
}
