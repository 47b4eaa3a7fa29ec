//! File + environment -> one validated `Config` (SPEC 10, 11). Every problem is collected
//! and named by its variable or key, so `buntime check` lists them all and `serve` never
//! starts half-configured.

use std::path::{Path, PathBuf};
use std::time::Duration;

use buntime_plugin_sdk::net::TrustedProxies;
use buntime_plugin_sdk::plugin::{COMMON_KEYS, normalise_base, plugin_name};
use buntime_plugin_sdk::settings::invalid_yaml;
use buntime_plugin_sdk::{Manifest, PluginSpec, Problems, Settings};
use serde_yaml::{Mapping, Value};

/// The config file read when `--config` is not given (if it exists).
pub const DEFAULT_CONFIG_FILE: &str = "conf/buntime.yaml";

/// The default request header limit, a little over Envoy's 60 KiB (nginx stops at 8 KiB a
/// line and 32 KiB in all). Pingora alone takes up to 1 MiB, and copies it for the
/// upstream.
const DEFAULT_HEADER_SIZE: usize = 64 << 10;
const MIN_HEADER_SIZE: u64 = 1 << 10;
/// Pingora's own limit (it answers a bare 400 above it).
const MAX_HEADER_SIZE: u64 = 1 << 20;

/// `server:` keys and the environment variable that overrides each.
pub const SERVER_KEYS: &[(&str, &str)] = &[
    ("port", "PORT"),
    ("apiPrefix", "RUNTIME_API_PREFIX"),
    ("workerDirs", "RUNTIME_WORKER_DIRS"),
    ("pluginDirs", "RUNTIME_PLUGIN_DIRS"),
    ("poolSize", "RUNTIME_POOL_SIZE"),
    ("logLevel", "RUNTIME_LOG_LEVEL"),
    ("logFormat", "RUNTIME_LOG_FORMAT"),
    ("accessLog", "RUNTIME_ACCESS_LOG"),
    ("preserveHeaderCase", "RUNTIME_PRESERVE_HEADER_CASE"),
    ("dataDir", "RUNTIME_DATA_DIR"),
    ("masterKey", "RUNTIME_MASTER_KEY"),
    ("threads", "RUNTIME_THREADS"),
    ("maxHeaderSize", "RUNTIME_MAX_HEADER_SIZE"),
    ("shutdownGrace", "RUNTIME_SHUTDOWN_GRACE"),
    ("drainDelay", "RUNTIME_DRAIN_DELAY"),
    ("metricsPort", "METRICS_PORT"),
    ("metricsToken", "METRICS_TOKEN"),
    ("ephemeralConcurrency", "RUNTIME_EPHEMERAL_CONCURRENCY"),
    ("ephemeralQueueLimit", "RUNTIME_EPHEMERAL_QUEUE_LIMIT"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub port: u16,
    /// The runtime API base: `normalise(RUNTIME_API_PREFIX + "/api")`.
    pub api_base: String,
    pub worker_dirs: Vec<PathBuf>,
    pub pool_size: usize,
    pub log_level: log::LevelFilter,
    pub log_format: LogFormat,
    pub access_log: bool,
    /// Send client header names upstream in the case they came in (HTTP/1), at Pingora's
    /// per-header cost; off, they go in lower case (`headers::set_upstream`).
    pub preserve_header_case: bool,
    pub data_dir: PathBuf,
    pub master_key: Option<String>,
    pub threads: usize,
    /// The largest request header (request line and fields, as sent) the gateway takes;
    /// a larger one is answered 431.
    pub max_header_size: usize,
    pub shutdown_grace: Duration,
    pub drain_delay: Duration,
    pub metrics_port: Option<u16>,
    pub metrics_token: Option<String>,
    pub ephemeral_concurrency: usize,
    pub ephemeral_queue_limit: usize,
    /// `GATEWAY_TRUSTED_PROXIES` (gateway plugin key `trustedProxies`), used by the core's
    /// client-address rule (SPEC 3).
    pub trusted_proxies: TrustedProxies,
}

/// One core plugin's effective settings.
#[derive(Debug, Clone)]
pub struct PluginConfig {
    pub spec: PluginSpec,
    pub manifest: Manifest,
    pub settings: Settings,
    /// Top-level keys of its plugin-dir manifest that nothing here reads, and that
    /// manifest's path: named at start and by `check`.
    pub unread: Option<(String, Vec<String>)>,
}

/// Keys of the original's plugin manifests that only its UI and loader read.
const ORIGINAL_UI_KEYS: [&str; 5] = ["menus", "config", "entrypoint", "pluginEntry", "injectBase"];

/// The original Buntime's plugins that this gateway does not have.
const ORIGINAL_ONLY_PLUGINS: [&str; 5] = ["authn", "authz", "deployments", "logs", "vhosts"];

/// A plugin folder found in a plugin dir (`GET /api/plugins`): `name` is the plugin it
/// configures, or its folder's name when it configures none.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct InstalledPlugin {
    pub name: String,
    pub path: String,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// The file read, if any (SIGHUP re-reads it).
    pub file: Option<PathBuf>,
    pub server: ServerConfig,
    pub plugins: Vec<PluginConfig>,
    pub installed: Vec<InstalledPlugin>,
    /// Plugin folders whose manifest nothing reads, and why (warned, as unread keys are).
    pub unread_plugin_folders: Vec<String>,
}

/// Where configuration comes from; tests and SIGHUP use the same entry point.
pub struct Sources<'a> {
    /// `--config`; when `None`, `conf/buntime.yaml` is read if it exists.
    pub file: Option<&'a Path>,
    pub env: &'a dyn Fn(&str) -> Option<String>,
    pub specs: &'a [PluginSpec],
}

impl Config {
    /// Reads every source. A bad value is a problem and its default stands in, so that the
    /// plugins can still check their own keys and every problem is listed at once (`buntime
    /// check` must not need one run per section). A config read with problems is for
    /// checking only, never to serve.
    pub fn read(src: &Sources<'_>) -> (Config, Problems) {
        let mut problems = Problems::default();
        let (file, root) = read_file(src.file, &mut problems);
        let server_map = take_section(&root, "server", &mut problems);
        let plugins_map = take_section(&root, "plugins", &mut problems);
        for key in root.keys() {
            let k = key.as_str().unwrap_or("?");
            if k != "server" && k != "plugins" {
                problems.push(k, "", "unknown top-level key (expected server or plugins)");
            }
        }

        let mut server = Settings::new("server", server_map);
        let known: Vec<&str> = SERVER_KEYS.iter().map(|(k, _)| *k).collect();
        server.check_keys("", &known, &mut problems);
        for (key, var) in SERVER_KEYS {
            if let Some(v) = (src.env)(var) {
                server.set_from_env(key, var, v);
            }
        }
        // The original Buntime's other name for its master key. Were it ignored, a
        // deployment that set it would run with no key: behind a proxy on the same host
        // every client would be an admin.
        if (src.env)("RUNTIME_MASTER_KEY").is_none()
            && let Some(v) = (src.env)("BUNTIME_MASTER_KEY")
        {
            server.set_from_env("masterKey", "BUNTIME_MASTER_KEY", v);
        }

        let plugin_dirs = dirs(
            &server,
            "pluginDirs",
            "/data/.plugins:/data/plugins",
            &mut problems,
        );
        let core: Vec<&str> = src.specs.iter().map(|s| s.name).collect();
        let (installed, unread_plugin_folders) = scan_plugin_dirs(&plugin_dirs, &core);
        let plugins = plugin_settings(src, &plugins_map, &installed, &mut problems);
        let trusted = plugins
            .iter()
            .find(|p| p.spec.name == "gateway")
            .map(|p| trusted_proxies(&p.settings, &mut problems))
            .unwrap_or_default();
        let server = server_config(&server, trusted, &mut problems);
        let config = Config {
            file,
            server,
            plugins,
            installed,
            unread_plugin_folders,
        };
        (config, problems)
    }

    pub fn plugin(&self, name: &str) -> Option<&PluginConfig> {
        self.plugins.iter().find(|p| p.spec.name == name)
    }
}

/// Reads the YAML file: `--config` must exist; the default file is optional.
fn read_file(explicit: Option<&Path>, problems: &mut Problems) -> (Option<PathBuf>, Mapping) {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None if Path::new(DEFAULT_CONFIG_FILE).is_file() => PathBuf::from(DEFAULT_CONFIG_FILE),
        None => return (None, Mapping::new()),
    };
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(
                "--config",
                name,
                format!("cannot read the config file: {e}"),
            );
            return (Some(path), Mapping::new());
        }
    };
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Mapping(m)) => (Some(path), m),
        Ok(Value::Null) => (Some(path), Mapping::new()),
        Ok(_) => {
            problems.push(name, "", "the config file must be a YAML mapping");
            (Some(path), Mapping::new())
        }
        Err(e) => {
            problems.push(name, "", invalid_yaml(&e, &text));
            (Some(path), Mapping::new())
        }
    }
}

fn take_section(root: &Mapping, key: &str, problems: &mut Problems) -> Mapping {
    match root.get(key) {
        None | Some(Value::Null) => Mapping::new(),
        Some(Value::Mapping(m)) => m.clone(),
        Some(_) => {
            problems.push(key, "", "must be a mapping");
            Mapping::new()
        }
    }
}

/// Colon-separated in env (and accepted so in the file), or a YAML list.
fn dirs(s: &Settings, key: &str, default: &str, problems: &mut Problems) -> Vec<PathBuf> {
    let parts: Vec<String> = match s.get(key) {
        None => default.split(':').map(String::from).collect(),
        Some(Value::String(text)) => text.split(':').map(String::from).collect(),
        Some(Value::Sequence(_)) => s.list(key, problems).unwrap_or_default(),
        Some(_) => {
            s.problem(
                problems,
                key,
                "must be a colon-separated string or a list of paths",
            );
            Vec::new()
        }
    };
    parts
        .into_iter()
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect()
}

fn server_config(
    s: &Settings,
    trusted_proxies: TrustedProxies,
    problems: &mut Problems,
) -> ServerConfig {
    let port = s.u64_in("port", 1, 65535, problems).unwrap_or(8000) as u16;
    let api_base = api_base(s, problems);
    let worker_dirs = dirs(s, "workerDirs", "/data/.apps:/data/apps", problems);
    let pool_size = s.u64_in("poolSize", 1, 100_000, problems).unwrap_or(100) as usize;
    let log_level = match s.string("logLevel", problems).as_deref() {
        None => log::LevelFilter::Info,
        Some(text) => match text.trim().to_ascii_lowercase().as_str() {
            "trace" => log::LevelFilter::Trace,
            "debug" => log::LevelFilter::Debug,
            "info" => log::LevelFilter::Info,
            "warn" | "warning" => log::LevelFilter::Warn,
            "error" => log::LevelFilter::Error,
            _ => {
                s.problem(
                    problems,
                    "logLevel",
                    "must be one of debug, info, warn, error",
                );
                log::LevelFilter::Info
            }
        },
    };
    let log_format = match s.string("logFormat", problems).as_deref().map(str::trim) {
        None | Some("text") => LogFormat::Text,
        Some("json") => LogFormat::Json,
        Some(_) => {
            s.problem(problems, "logFormat", "must be json or text");
            LogFormat::Text
        }
    };
    let access_log = s.bool("accessLog", problems).unwrap_or(true);
    let preserve_header_case = s.bool("preserveHeaderCase", problems).unwrap_or(false);
    let data_dir = s
        .string("dataDir", problems)
        .filter(|d| !d.trim().is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("./data"));
    let master_key = s.string("masterKey", problems).filter(|k| !k.is_empty());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let threads = s
        .u64_in("threads", 1, 1024, problems)
        .unwrap_or(cpus as u64) as usize;
    let max_header_size = match s.size("maxHeaderSize", problems) {
        Some(n) if (MIN_HEADER_SIZE..=MAX_HEADER_SIZE).contains(&n) => n as usize,
        Some(_) => {
            s.problem(problems, "maxHeaderSize", "must be from 1kb to 1mb");
            DEFAULT_HEADER_SIZE
        }
        None => DEFAULT_HEADER_SIZE,
    };
    let shutdown_grace = s
        .duration("shutdownGrace", problems)
        .unwrap_or(Duration::from_secs(30));
    let drain_delay = s.duration("drainDelay", problems).unwrap_or(Duration::ZERO);
    let metrics_port = s
        .u64_in("metricsPort", 1, 65535, problems)
        .map(|p| p as u16);
    if metrics_port == Some(port) {
        s.problem(problems, "metricsPort", "must differ from the main port");
    }
    let metrics_token = s.string("metricsToken", problems).filter(|k| !k.is_empty());
    let ephemeral_concurrency = s
        .u64_in("ephemeralConcurrency", 1, 10_000, problems)
        .unwrap_or(2) as usize;
    let ephemeral_queue_limit = s
        .u64_in("ephemeralQueueLimit", 0, 1_000_000, problems)
        .unwrap_or(100) as usize;
    ServerConfig {
        port,
        api_base,
        worker_dirs,
        pool_size,
        log_level,
        log_format,
        access_log,
        preserve_header_case,
        data_dir,
        master_key,
        threads,
        max_header_size,
        shutdown_grace,
        drain_delay,
        metrics_port,
        metrics_token,
        ephemeral_concurrency,
        ephemeral_queue_limit,
        trusted_proxies,
    }
}

/// `""` -> `/api`, `/_` or `_/` -> `/_/api`.
fn api_base(s: &Settings, problems: &mut Problems) -> String {
    let prefix = s.string("apiPrefix", problems).unwrap_or_default();
    let trimmed = prefix.trim().trim_matches('/');
    let ok = trimmed
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./~".contains(c))
        && !trimmed.contains("//")
        && !trimmed.split('/').any(|seg| seg == "." || seg == "..");
    if !ok {
        s.problem(
            problems,
            "apiPrefix",
            "must be a path prefix like /_ (letters, digits, - _ . ~ and /)",
        );
    }
    if trimmed.is_empty() {
        "/api".to_string()
    } else {
        format!("/{trimmed}/api")
    }
}

fn trusted_proxies(s: &Settings, problems: &mut Problems) -> TrustedProxies {
    let Some(list) = s.list("trustedProxies", problems) else {
        return TrustedProxies::default();
    };
    TrustedProxies::parse(&list).unwrap_or_else(|why| {
        s.problem(problems, "trustedProxies", why);
        TrustedProxies::default()
    })
}

/// Every plugin folder in the plugin dirs and the plugin it configures (SPEC 10:
/// `<dir>/<name>/manifest.yaml` or `.yml`, the first folder of a plugin winning), with a
/// warning for each folder whose manifest nothing reads. The original Buntime's image kept
/// its plugins in `plugin-<name>/` folders, and installed packages in `@scope/<package>/`,
/// each manifest naming its plugin `@buntime/plugin-<name>`: mounted here as they were,
/// those folders were passed over in silence, and with them the rate limit, CORS origins
/// or shell dir they set. Such a folder configures the plugin it names.
fn scan_plugin_dirs(dirs: &[PathBuf], core: &[&str]) -> (Vec<InstalledPlugin>, Vec<String>) {
    let mut found: Vec<InstalledPlugin> = Vec::new();
    let mut unread = Vec::new();
    for dir in dirs {
        for (folder, path) in plugin_folders(dir) {
            let shown = path.display().to_string();
            let Some(name) = plugin_of(&folder, &path, core) else {
                unread.push(not_a_plugin(&folder, &path, core));
                if !found.iter().any(|f| f.name == folder) {
                    found.push(InstalledPlugin {
                        name: folder,
                        path: shown,
                    });
                }
                continue;
            };
            match found.iter().find(|f| f.name == name) {
                Some(first) => unread.push(format!(
                    "plugin folder {shown} is not read: plugin {name} is configured by {} (the \
                     first folder of a plugin wins)",
                    first.path
                )),
                None => found.push(InstalledPlugin {
                    name: name.to_string(),
                    path: shown,
                }),
            }
        }
    }
    (found, unread)
}

/// The folders of `dir` holding a manifest, by name, and those of its `@scope` folders.
fn plugin_folders(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut folders: Vec<(String, PathBuf)> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(name, _)| !name.starts_with('.'))
        .flat_map(|(name, path)| {
            if name.starts_with('@') && manifest_file(&path).is_none() {
                plugin_folders(&path)
            } else {
                vec![(name, path)]
            }
        })
        .filter(|(_, path)| manifest_file(path).is_some())
        .collect();
    folders.sort();
    folders
}

/// The plugin a folder configures: its name (`gateway`), or the original's `plugin-gateway`,
/// or else the `name` its manifest gives (`gateway`, `@buntime/plugin-gateway`).
fn plugin_of<'a>(folder: &str, path: &Path, core: &[&'a str]) -> Option<&'a str> {
    names_of(folder, path).find_map(|n| core.iter().find(|c| **c == n).copied())
}

/// Why a folder that configures no plugin of this gateway is not read.
fn not_a_plugin(folder: &str, path: &Path, core: &[&str]) -> String {
    let why = match names_of(folder, path).find(|n| ORIGINAL_ONLY_PLUGINS.contains(&n.as_str())) {
        Some(name) => format!("the original Buntime's {name} plugin is not part of this gateway"),
        None => format!("it names no plugin of this gateway ({})", core.join(", ")),
    };
    format!("plugin folder {} is not read: {why}", path.display())
}

/// The plugin names a folder may go by, as this gateway names plugins (`plugin_name`): its
/// own name, then its manifest's `name`.
fn names_of(folder: &str, path: &Path) -> impl Iterator<Item = String> {
    let named = std::fs::read_to_string(manifest_file(path).unwrap_or_default())
        .ok()
        .and_then(|text| serde_yaml::from_str::<Value>(&text).ok())
        .and_then(|m| m.get("name")?.as_str().map(str::to_string));
    [Some(folder.to_string()), named]
        .into_iter()
        .flatten()
        .map(|n| plugin_name(&n).to_string())
}

fn manifest_file(dir: &Path) -> Option<PathBuf> {
    ["manifest.yaml", "manifest.yml"]
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
}

/// Builds each core plugin's layered settings (SPEC 10).
fn plugin_settings(
    src: &Sources<'_>,
    file_plugins: &Mapping,
    installed: &[InstalledPlugin],
    problems: &mut Problems,
) -> Vec<PluginConfig> {
    for key in file_plugins.keys() {
        let name = key.as_str().unwrap_or("?");
        if !src.specs.iter().any(|s| s.name == name) {
            let known: Vec<&str> = src.specs.iter().map(|s| s.name).collect();
            problems.push(
                format!("plugins.{name}"),
                "",
                format!("unknown plugin (core plugins: {})", known.join(", ")),
            );
        }
    }
    src.specs
        .iter()
        .map(|spec| {
            let scope = format!("plugins.{}", spec.name);
            let compiled: Mapping = serde_yaml::from_str(spec.manifest).unwrap_or_else(|e| {
                panic!("compiled-in manifest of {} is invalid: {e}", spec.name)
            });
            let mut settings = Settings::new(scope.clone(), compiled);
            let mut unread = None;
            if let Some(dir_manifest) = installed.iter().find(|i| i.name == spec.name) {
                let keys =
                    overlay_dir_manifest(&mut settings, Path::new(&dir_manifest.path), problems);
                let known = |k: &String| {
                    COMMON_KEYS.contains(&k.as_str())
                        || spec.keys.contains(&k.as_str())
                        || ORIGINAL_UI_KEYS.contains(&k.as_str())
                };
                let keys: Vec<String> = keys.into_iter().filter(|k| !known(k)).collect();
                if !keys.is_empty() {
                    unread = Some((dir_manifest.path.clone(), keys));
                }
            }
            match file_plugins.get(spec.name) {
                None | Some(Value::Null) => {}
                Some(Value::Mapping(m)) => {
                    let allowed: Vec<&str> = COMMON_KEYS
                        .iter()
                        .chain(spec.keys.iter())
                        .copied()
                        .collect();
                    Settings::new(scope.clone(), m.clone()).check_keys("", &allowed, problems);
                    settings.overlay(m);
                }
                Some(_) => problems.push(scope.clone(), "", "must be a mapping"),
            }
            for (var, path) in spec.env {
                if let Some(v) = (src.env)(var) {
                    settings.set_from_env(path, var, v);
                }
            }
            for (prefix, path) in spec.env_numbered {
                apply_numbered_env(&mut settings, src, prefix, path);
            }
            let manifest = Manifest::from_settings(spec.name, &settings, problems);
            PluginConfig {
                spec: *spec,
                manifest,
                settings,
                unread,
            }
        })
        .collect()
}

/// `PREFIX1`, `PREFIX2`, ... up to the first gap, followed by the comma list already set
/// from the environment for the same key.
fn apply_numbered_env(settings: &mut Settings, src: &Sources<'_>, prefix: &str, path: &str) {
    let numbered: Vec<String> = (1..)
        .map_while(|n| (src.env)(&format!("{prefix}{n}")))
        .collect();
    if numbered.is_empty() {
        return;
    }
    let mut all = numbered;
    if settings.from_env(path)
        && let Some(Value::String(list)) = settings.get(path)
    {
        all.extend(buntime_plugin_sdk::settings::split_list(list));
    }
    settings.set_from_env(path, &format!("{prefix}N"), all.join(","));
}

/// Lays a plugin-dir manifest over `settings`; returns its top-level keys.
fn overlay_dir_manifest(
    settings: &mut Settings,
    dir: &Path,
    problems: &mut Problems,
) -> Vec<String> {
    let Some(path) = manifest_file(dir) else {
        return Vec::new();
    };
    let name = path.display().to_string();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            problems.push(name, "", format!("cannot read: {e}"));
            return Vec::new();
        }
    };
    match serde_yaml::from_str::<Value>(&text) {
        Ok(Value::Mapping(m)) => {
            settings.overlay(&m);
            return m
                .keys()
                .filter_map(|k| k.as_str().map(str::to_string))
                .collect();
        }
        Ok(Value::Null) => {}
        Ok(_) => problems.push(name, "", "a plugin manifest must be a YAML mapping"),
        Err(e) => problems.push(name, "", invalid_yaml(&e, &text)),
    }
    Vec::new()
}

/// The plugin base as routed: the manifest's, normalised.
pub fn plugin_base(p: &PluginConfig) -> Option<String> {
    p.manifest.base.as_deref().map(normalise_base)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SPECS: &[PluginSpec] = &[PluginSpec {
        name: "gateway",
        manifest: "name: gateway\nbase: /gateway\ntrustedProxies: []\ncors: {origin: '*'}\n",
        keys: &["trustedProxies", "cors"],
        env: &[
            ("GATEWAY_TRUSTED_PROXIES", "trustedProxies"),
            ("GATEWAY_CORS_ORIGIN", "cors.origin"),
        ],
        env_numbered: &[("GATEWAY_LIST_", "list")],
    }];

    fn load(file: Option<&str>, env: &[(&str, &str)]) -> Result<Config, Problems> {
        let dir = std::env::temp_dir().join(format!("buntime-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("buntime.yaml");
        if let Some(text) = file {
            std::fs::write(&path, text).unwrap();
        }
        let vars: HashMap<String, String> = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let getenv = move |k: &str| vars.get(k).cloned();
        let (config, problems) = Config::read(&Sources {
            file: file.map(|_| path.as_path()),
            env: &getenv,
            specs: SPECS,
        });
        std::fs::remove_dir_all(&dir).ok();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(problems)
        }
    }

    #[test]
    fn defaults() {
        let c = load(Some("server: {pluginDirs: []}"), &[]).unwrap();
        assert_eq!(c.server.port, 8000);
        assert_eq!(c.server.api_base, "/api");
        assert_eq!(c.server.pool_size, 100);
        assert_eq!(c.server.shutdown_grace, Duration::from_secs(30));
        assert!(c.server.access_log);
        assert!(!c.server.preserve_header_case);
        assert!(c.server.master_key.is_none());
    }

    #[test]
    fn env_wins_over_file() {
        let c = load(
            Some("server: {port: 9000, apiPrefix: /x, pluginDirs: []}"),
            &[
                ("PORT", "9100"),
                ("RUNTIME_API_PREFIX", "/_/"),
                ("RUNTIME_PRESERVE_HEADER_CASE", "true"),
            ],
        )
        .unwrap();
        assert_eq!(c.server.port, 9100);
        assert_eq!(c.server.api_base, "/_/api");
        assert!(c.server.preserve_header_case);
    }

    #[test]
    fn every_problem_is_listed_with_its_name() {
        let err = load(
            Some("server: {port: 0, logLevel: loud, bogus: 1, pluginDirs: []}\nplugins: {gateway: {corz: 1}, nope: {}}\nextra: 1"),
            &[
                ("RUNTIME_SHUTDOWN_GRACE", "soon"),
                ("GATEWAY_TRUSTED_PROXIES", "10.0.0.0/8,proxy"),
                ("RUNTIME_PRESERVE_HEADER_CASE", "sometimes"),
            ],
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in [
            "server.port",
            "server.logLevel",
            "server.bogus: unknown key",
            "plugins.gateway.corz: unknown key",
            "plugins.nope: unknown plugin",
            "extra: unknown top-level key",
            "RUNTIME_SHUTDOWN_GRACE",
            "\"soon\"",
            "GATEWAY_TRUSTED_PROXIES",
            "RUNTIME_PRESERVE_HEADER_CASE",
            "\"sometimes\"",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
    }

    #[test]
    fn plugin_layers() {
        let c = load(
            Some("server: {pluginDirs: []}\nplugins: {gateway: {cors: {origin: 'https://a.com'}}}"),
            &[("GATEWAY_TRUSTED_PROXIES", "127.0.0.1")],
        )
        .unwrap();
        let gw = c.plugin("gateway").unwrap();
        assert_eq!(gw.manifest.base.as_deref(), Some("/gateway"));
        assert!(gw.settings.contains("cors.origin"));
        assert!(
            c.server
                .trusted_proxies
                .contains("127.0.0.1".parse().unwrap())
        );
    }

    #[test]
    fn numbered_env_lists_append_to_the_comma_list() {
        let c = load(
            Some("server: {pluginDirs: []}"),
            &[
                ("GATEWAY_LIST_1", "a"),
                ("GATEWAY_LIST_2", "b"),
                ("GATEWAY_LIST_4", "skipped"),
            ],
        )
        .unwrap();
        let gw = c.plugin("gateway").unwrap();
        let mut p = Problems::default();
        assert_eq!(gw.settings.list("list", &mut p).unwrap(), vec!["a", "b"]);
        assert_eq!(gw.settings.name_of("list"), "GATEWAY_LIST_N");
    }

    #[test]
    fn missing_explicit_file_is_an_error() {
        let (_, problems) = Config::read(&Sources {
            file: Some(Path::new("/nonexistent/buntime.yaml")),
            env: &|_| None,
            specs: SPECS,
        });
        assert!(problems.to_string().contains("--config"));
    }
}
