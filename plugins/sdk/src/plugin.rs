//! The plugin contract (SPEC 10): lifecycle, routes under `base`, and the request and
//! response hooks the gateway calls at fixed steps of the request flow (SPEC 1).

use std::fmt;

use async_trait::async_trait;
use serde_json::Value as Json;

use crate::api::{ApiRequest, ApiResponse};
use crate::request::{HeaderList, RequestInfo};
use crate::settings::{Problems, Settings};

/// What the binary knows about a core plugin before building it.
#[derive(Debug, Clone, Copy)]
pub struct PluginSpec {
    pub name: &'static str,
    /// The compiled-in `manifest.yaml`.
    pub manifest: &'static str,
    /// The plugin's own top-level config keys that a config file may set.
    pub keys: &'static [&'static str],
    /// Environment variables, each setting one key (dotted path) of the plugin's config.
    pub env: &'static [(&'static str, &'static str)],
    /// Numbered variables `PREFIX1`, `PREFIX2`, ... whose values are appended, in order, to
    /// the list at the path (`DATABASE_LIBSQL_REPLICAS_1`, `_2`, ...).
    pub env_numbered: &'static [(&'static str, &'static str)],
}

/// Manifest keys every plugin has.
pub const COMMON_KEYS: [&str; 5] = [
    "name",
    "base",
    "enabled",
    "dependencies",
    "optionalDependencies",
];

/// The loader-facing part of a plugin's effective config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub base: Option<String>,
    pub enabled: bool,
    pub dependencies: Vec<String>,
    pub optional_dependencies: Vec<String>,
}

impl Manifest {
    pub fn from_settings(name: &str, s: &Settings, problems: &mut Problems) -> Self {
        let base = s.string("base", problems).map(|b| normalise_base(&b));
        if let Some(b) = &base
            && (b == "/" || b.contains(['?', '#', ' ']))
        {
            s.problem(problems, "base", "must be a path like /name");
        }
        Self {
            name: name.to_string(),
            base,
            enabled: s.bool("enabled", problems).unwrap_or(true),
            dependencies: plugin_names(s.list("dependencies", problems)),
            optional_dependencies: plugin_names(s.list("optionalDependencies", problems)),
        }
    }
}

/// Dependencies as named here. The original's manifests name plugins by package
/// (`@buntime/plugin-keyval`), which left a plugin whose manifest came from it "not
/// installed"; this gateway names them by plugin (`keyval`).
fn plugin_names(list: Option<Vec<String>>) -> Vec<String> {
    list.unwrap_or_default()
        .iter()
        .map(|dep| plugin_name(dep).to_string())
        .collect()
}

/// A plugin as this gateway names it: the original's package (`@buntime/plugin-keyval`,
/// in its manifests) and folder (`plugin-keyval`, in its image) names are `keyval`.
pub fn plugin_name(name: &str) -> &str {
    name.strip_prefix("@buntime/plugin-")
        .or_else(|| name.strip_prefix("plugin-"))
        .unwrap_or(name)
}

/// `redirects/` -> `/redirects`.
pub fn normalise_base(base: &str) -> String {
    let trimmed = base.trim().trim_end_matches('/');
    if trimmed.starts_with('/') {
        trimmed.to_string()
    } else {
        format!("/{trimmed}")
    }
}

/// Whether a plugin can serve yet; feeds `/api/health/ready`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    /// Not yet, with a short reason for the readiness body.
    Waiting(String),
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct PluginError(pub String);

/// A plugin. Hooks run on the request path: they must not block, lock or await.
#[async_trait]
pub trait Plugin: Send + Sync + 'static {
    fn name(&self) -> &'static str;

    /// Step 2 of SPEC 1, before routing and before any credential check (CORS preflight).
    fn on_early_request(&self, _req: &RequestInfo<'_>) -> Option<ApiResponse> {
        None
    }

    /// Step 5 of SPEC 1, after access was granted: may answer the request itself (429),
    /// and may add headers to whatever response the request gets.
    fn on_request(
        &self,
        _req: &RequestInfo<'_>,
        _response_headers: &mut HeaderList,
    ) -> Option<ApiResponse> {
        None
    }

    /// Step 7: runs for every response, local or proxied.
    fn on_response(&self, _req: &RequestInfo<'_>, _response_headers: &mut HeaderList) {}

    /// A request under the plugin's `base`; access was already checked.
    async fn handle(&self, _req: ApiRequest) -> ApiResponse {
        ApiResponse::not_found()
    }

    /// OpenAPI path items for the plugin's routes, keyed by full path.
    fn openapi_paths(&self) -> Json {
        Json::Object(Default::default())
    }

    /// Called once, in load order, after every plugin was built.
    async fn start(&self) -> Result<(), PluginError> {
        Ok(())
    }

    /// Called once at shutdown, in reverse load order.
    async fn stop(&self) {}

    fn readiness(&self) -> Readiness {
        Readiness::Ready
    }

    /// SIGHUP: validate the new settings and apply what can change live. When anything is
    /// invalid, record it in `problems` and keep the old config.
    fn reload(&self, _settings: &Settings, _problems: &mut Problems) {}
}

impl fmt::Debug for dyn Plugin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Plugin({})", self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_originals_names_are_plugins() {
        for name in ["keyval", "@buntime/plugin-keyval", "plugin-keyval"] {
            assert_eq!(plugin_name(name), "keyval", "{name}");
        }
        assert_eq!(plugin_name("@acme/keyval"), "@acme/keyval");
    }
}
