//! Assembles the core plugins (SPEC 10): dependency order, skipping plugins whose required
//! dependency is missing or disabled, a start-up error naming the plugins of a cycle, and
//! the typed handles the request path needs. Services one plugin needs from another are
//! passed in as `Arc`s here, in load order.

use std::collections::HashSet;
use std::sync::Arc;

use buntime_auth_token::AuthPlugin;
use buntime_database::{Database, DatabasePlugin};
use buntime_gateway::GatewayPlugin;
use buntime_keyval::{KeyVal, KeyvalPlugin};
use buntime_metrics::MetricsPlugin;
use buntime_plugin_sdk::{Manifest, Plugin, PluginSpec, Problems};
use buntime_proxy::ProxyPlugin;
use buntime_workers::Discovery;

use crate::config::{Config, PluginConfig, plugin_base};
use crate::routes::below;

/// Every plugin compiled into the binary.
pub const CORE: &[PluginSpec] = &[
    buntime_database::SPEC,
    buntime_keyval::SPEC,
    buntime_proxy::SPEC,
    buntime_gateway::SPEC,
    buntime_auth_token::SPEC,
    buntime_metrics::SPEC,
];

#[derive(Debug)]
pub struct LoadedPlugin {
    pub name: &'static str,
    pub base: Option<String>,
    pub manifest: Manifest,
    pub plugin: Arc<dyn Plugin>,
}

/// The loaded plugins in load order, and typed handles to the ones the gateway uses.
#[derive(Default)]
pub struct Plugins {
    pub loaded: Vec<LoadedPlugin>,
    pub typed: Typed,
}

/// The outcome of ordering: indices in load order, and the plugins left out with why.
#[derive(Debug, PartialEq, Eq)]
pub struct Order {
    pub load: Vec<usize>,
    pub skipped: Vec<(usize, String)>,
}

/// Orders plugins by their dependencies. Disabled plugins are left out; so is any plugin
/// whose required dependency is unknown, disabled or itself left out. Optional
/// dependencies only order plugins that are both loaded. A cycle is an error naming it.
pub fn load_order(manifests: &[&Manifest]) -> Result<Order, String> {
    let index_of = |name: &str| manifests.iter().position(|m| m.name == name);
    let mut skipped: Vec<(usize, String)> = Vec::new();
    let mut active: Vec<bool> = manifests.iter().map(|m| m.enabled).collect();
    for (i, m) in manifests.iter().enumerate() {
        if !m.enabled {
            skipped.push((i, "disabled".into()));
        }
    }
    // Leaving a plugin out can strand its dependants: repeat until nothing changes.
    loop {
        let mut changed = false;
        for (i, m) in manifests.iter().enumerate() {
            if !active[i] {
                continue;
            }
            for dep in &m.dependencies {
                let why = match index_of(dep) {
                    None => Some(format!("required dependency {dep:?} is not installed")),
                    Some(d) if !active[d] => {
                        Some(format!("required dependency {dep:?} is not loaded"))
                    }
                    Some(_) => None,
                };
                if let Some(why) = why {
                    active[i] = false;
                    skipped.push((i, why));
                    changed = true;
                    break;
                }
            }
        }
        if !changed {
            break;
        }
    }

    let deps_of = |i: usize| -> Vec<usize> {
        let m = manifests[i];
        m.dependencies
            .iter()
            .chain(&m.optional_dependencies)
            .filter_map(|d| index_of(d))
            .filter(|&d| active[d] && d != i)
            .collect()
    };
    let mut load = Vec::new();
    let mut done = vec![false; manifests.len()];
    // Kahn's algorithm, taking plugins in declaration order when several are ready.
    loop {
        let next = (0..manifests.len())
            .find(|&i| active[i] && !done[i] && deps_of(i).iter().all(|&d| done[d]));
        match next {
            Some(i) => {
                done[i] = true;
                load.push(i);
            }
            None => break,
        }
    }
    let stuck: Vec<usize> = (0..manifests.len())
        .filter(|&i| active[i] && !done[i])
        .collect();
    if let Some(&first) = stuck.first() {
        return Err(describe_cycle(manifests, first, &deps_of, &done));
    }
    Ok(Order { load, skipped })
}

/// Walks from a stuck plugin to one of its stuck dependencies until a plugin repeats; the
/// repeated stretch is the cycle. (A stuck plugin always has a stuck dependency, or Kahn's
/// algorithm would have taken it.)
fn describe_cycle(
    manifests: &[&Manifest],
    start: usize,
    deps_of: &dyn Fn(usize) -> Vec<usize>,
    done: &[bool],
) -> String {
    let mut path = vec![start];
    while let Some(next) = path
        .last()
        .and_then(|&cur| deps_of(cur).into_iter().find(|&d| !done[d]))
    {
        if let Some(pos) = path.iter().position(|&p| p == next) {
            let cycle: Vec<&str> = path[pos..]
                .iter()
                .chain(std::iter::once(&next))
                .map(|&i| manifests[i].name.as_str())
                .collect();
            return format!("dependency cycle between plugins: {}", cycle.join(" -> "));
        }
        path.push(next);
    }
    format!(
        "dependency cycle involving plugin {:?}",
        manifests[start].name
    )
}

/// The manifests the loader orders. auth-token is enabled only when a key source is
/// configured (SPEC 6.1).
fn manifests(config: &Config) -> Vec<Manifest> {
    config
        .plugins
        .iter()
        .map(|p| {
            let mut m = p.manifest.clone();
            if keyless_auth(p) {
                m.enabled = false;
            }
            m
        })
        .collect()
}

/// Whether `p` is auth-token without a key source, which leaves it unloaded.
fn keyless_auth(p: &PluginConfig) -> bool {
    p.spec.name == "auth-token" && !AuthPlugin::has_key_source(&p.settings)
}

/// The manifests as the loader sees them, and their load order (or the cycle).
fn ordered(config: &Config) -> (Vec<Manifest>, Result<Order, String>) {
    let effective = manifests(config);
    let order = load_order(&effective.iter().collect::<Vec<_>>());
    (effective, order)
}

/// The warning for plugin `i` when it is auth-token left off for want of a key.
fn auth_off(config: &Config, i: usize) -> Option<String> {
    let p = &config.plugins[i];
    (p.manifest.enabled && keyless_auth(p)).then(|| AuthPlugin::off_warning(&p.settings))
}

/// What `serve` logs as warnings at start and `check` prints: why each plugin left out is
/// not loaded, a master key or JWT secret too short to be safe, a JWKS over plain http,
/// CORS that lets every origin send credentials, plugin folders and plugin-dir manifest
/// keys nothing reads, app folders no request can reach, static apps that start a process
/// per request, invalid manifests and unread manifest keys.
fn warnings(config: &Config, effective: &[Manifest], order: &Order) -> Vec<String> {
    let not_loaded = order.skipped.iter().map(|(i, why)| {
        auth_off(config, *i)
            .unwrap_or_else(|| format!("plugin {} not loaded: {why}", effective[*i].name))
    });
    let auth = order
        .load
        .iter()
        .map(|&i| &config.plugins[i])
        .filter(|p| p.spec.name == "auth-token")
        .flat_map(|p| {
            AuthPlugin::weak_secret_warning(&p.settings)
                .into_iter()
                .chain(AuthPlugin::plain_jwks_warning(&p.settings))
        });
    let cors = order
        .load
        .iter()
        .map(|&i| &config.plugins[i])
        .filter(|p| p.spec.name == "gateway")
        .filter_map(|p| GatewayPlugin::open_credentials_warning(&p.settings));
    not_loaded
        .chain(short_master_key(config))
        .chain(auth)
        .chain(cors)
        .chain(config.unread_plugin_folders.iter().cloned())
        .chain(unread_plugin_keys(config))
        .chain(app_warnings(config, order))
        .collect()
}

/// Fewer bytes than a master key should have: whoever guesses it administers the gateway
/// (rules, SQL, keyval), and guesses are only slowed by the rate limit, per client.
const MASTER_KEY_MIN: usize = 16;

/// What to say of a short master key.
fn short_master_key(config: &Config) -> Option<String> {
    let len = config.server.master_key.as_ref()?.len();
    (len < MASTER_KEY_MIN).then(|| {
        format!(
            "the master key (RUNTIME_MASTER_KEY) is {len} byte(s): whoever guesses it can write \
             proxy rules and run SQL; use at least {MASTER_KEY_MIN} random bytes \
             (openssl rand -hex 32)"
        )
    })
}

/// Keys of plugin-dir manifests that nothing here reads: the original's settings of
/// features this gateway does not have (its database `adapters`, its keyval `queue`), or
/// typos. Not errors (SPEC 10 lets those manifests carry the original's keys), but said.
fn unread_plugin_keys(config: &Config) -> impl Iterator<Item = String> + '_ {
    config.plugins.iter().filter_map(|p| {
        let (path, keys) = p.unread.as_ref()?;
        let hint = match p.spec.name {
            "database" if keys.iter().any(|k| k == "adapters") => {
                "; the database is set by url (DATABASE_LIBSQL_URL), else a local file"
            }
            _ => "",
        };
        Some(format!(
            "plugin {} ({path}): manifest key(s) {} are not read by this gateway{hint}",
            p.spec.name,
            keys.join(", ")
        ))
    })
}

/// What to say of the app folders: those whose plain paths the runtime API or a plugin
/// routes first (SPEC 1: `apps/gateway` is listed by `/api/apps`, yet `/gateway/...` is
/// the gateway plugin's), static apps left at `ttl: 0`, which start a process for
/// every request (SPEC 8.2's default; about 20 requests a second on this project's
/// 2-core machine, where one kept worker serves thousands), static apps without their
/// entry file, invalid manifests (the app answers 500, SPEC 8.2), manifest keys the
/// gateway does not read, folders the original served that lack a manifest here, folders
/// laid out as apps that no URL can pick (`Discovery::misnamed`), and worker dirs none of
/// which exists. Named at start, on SIGHUP and by `check`; the pool names an
/// invalid manifest or unread keys again when it first reads them for a request, which
/// covers a folder added later.
fn app_warnings(config: &Config, order: &Order) -> Vec<String> {
    let api = &config.server.api_base;
    let plugins: Vec<(&str, String)> = loaded_bases(config, order).collect();
    let shadowed = |name: &str, path: &str| {
        let own = format!("/{name}");
        if below(&own, api).is_some() {
            // Discovery never resolves the API's segment, with a version or without.
            return Some(format!(
                "app {name} ({path}) is never reached: the runtime API owns {api}; \
                 rename its folder"
            ));
        }
        let (plugin, base) = plugins
            .iter()
            .find(|(_, base)| below(&own, base).is_some())?;
        Some(format!(
            "app {name} ({path}) is reached only as /{name}@<version>/...: plugin \
             {plugin} owns {base}; rename its folder"
        ))
    };
    let manifest_warnings = |name: &str, path: &str| -> Vec<String> {
        let manifest = match buntime_workers::manifest::load(std::path::Path::new(path)) {
            Ok(m) => m,
            Err(why) => {
                return vec![format!(
                    "app {name} ({path}) has an invalid manifest: {why}; its requests \
                     answer 500 until it is fixed"
                )];
            }
        };
        let mut out = Vec::new();
        if let Some(ignored) = manifest.ignored_warning() {
            out.push(format!("app {name} ({path}): {ignored}"));
        }
        if manifest.command.is_some() {
            if manifest.inject_base {
                out.push(format!(
                    "app {name} ({path}): injectBase applies to static apps only; a command \
                     app writes its own <base href>"
                ));
            }
            return out;
        }
        if !std::path::Path::new(path)
            .join(&manifest.entrypoint)
            .is_file()
        {
            out.push(format!(
                "app {name} ({path}) is static, but its entry {} is not in the folder: \
                 every page it would serve answers 404",
                manifest.entrypoint
            ));
        }
        if manifest.ephemeral() {
            out.push(format!(
                "app {name} ({path}) is static with ttl 0: a worker process starts for \
                 each request, a few dozen a second at most; set ttl (5m, say) to keep \
                 one running"
            ));
        }
        out
    };
    let discovery = Discovery::new(config.server.worker_dirs.clone(), Vec::new());
    let listed = discovery.list();
    // Each version has its own manifest; the one a bare name picks is named bare.
    let defaults: HashSet<&str> = listed.iter().map(|app| app.path.as_str()).collect();
    let shadowing = listed
        .iter()
        .filter_map(|app| shadowed(&app.name, &app.path));
    let manifests = discovery.every_version().into_iter().flat_map(|loc| {
        let path = loc.dir.display().to_string();
        let name = match defaults.contains(path.as_str()) {
            true => loc.name,
            false => format!("{}@{}", loc.name, loc.version),
        };
        manifest_warnings(&name, &path)
    });
    // A name the API or a plugin owns was never an app, there or here.
    let manifestless = discovery.manifestless().into_iter();
    let manifestless = manifestless.filter(|(name, _)| shadowed(name, "").is_none());
    let manifestless = manifestless.map(|(name, path)| {
        format!(
            "folder {} is not an app: it has a package.json but no manifest.yaml (the \
             original Buntime served it as /{name}/); add a manifest.yaml, with a command \
             for a server",
            path.display()
        )
    });
    let misnamed = discovery
        .misnamed()
        .into_iter()
        .map(|(path, why)| format!("folder {} is not an app: {why}; rename it", path.display()));
    // One missing dir is usual (the image's core `.apps` may not exist); all of them is a
    // typo or a volume not mounted, and every app would answer 404.
    let dirs = &config.server.worker_dirs;
    let none_exists = (!dirs.is_empty() && !dirs.iter().any(|d| d.is_dir())).then(|| {
        let list: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
        format!(
            "no worker dir exists ({}): no app can be served until one is made",
            list.join(":")
        )
    });
    none_exists
        .into_iter()
        .chain(shadowing)
        .chain(manifests)
        .chain(manifestless)
        .chain(misnamed)
        .collect()
}

/// What `buntime check` prints besides problems: the plugins that will load, and what
/// `serve` would warn of: each plugin left out, and why (an auth-token with a key but a
/// dependency left out would leave every route open), and a weak JWT secret.
pub fn summary(config: &Config) -> (usize, Vec<String>) {
    let (effective, Ok(order)) = ordered(config) else {
        return (0, Vec::new());
    };
    (order.load.len(), warnings(config, &effective, &order))
}

/// Everything `buntime check` validates about plugins, without building them.
pub fn check(config: &Config) -> Problems {
    let mut problems = Problems::default();
    match ordered(config) {
        (_, Err(cycle)) => problems.push("plugins", "", cycle),
        (_, Ok(order)) => overlapping_bases(config, &order, &mut problems),
    }
    for p in &config.plugins {
        let s = &p.settings;
        let own = &mut problems;
        match p.spec.name {
            "database" => drop(DatabasePlugin::parse(s, &config.server.data_dir, own)),
            "keyval" => drop(KeyvalPlugin::parse(s, own)),
            "proxy" => drop(ProxyPlugin::parse(s, own)),
            "gateway" => drop(GatewayPlugin::parse(s, &config.server.api_base, own)),
            "auth-token" if AuthPlugin::has_key_source(s) => drop(AuthPlugin::parse(s, own)),
            // Off, but its public routes still feed the rules' test endpoint.
            "auth-token" => drop(AuthPlugin::public_routes(s, own)),
            "metrics" => drop(MetricsPlugin::parse(s, own)),
            other => unreachable!("no core plugin named {other}"),
        }
    }
    problems
}

/// Bases that hide routes of one another (SPEC 1 step 3 matches the runtime API first,
/// then plugin bases): a plugin base at, under or above the runtime API's leaves requests
/// for the overlap to the API alone (`RUNTIME_API_PREFIX=/redirects` put the API at
/// `/redirects/api`, where the rules API lives), and a second plugin on one base is never
/// reached.
fn overlapping_bases(config: &Config, order: &Order, problems: &mut Problems) {
    let api = config.server.api_base.as_str();
    let mut taken: Vec<(&str, String)> = Vec::new();
    for (name, base) in loaded_bases(config, order) {
        let key = format!("plugins.{name}.base");
        if below(&base, api).is_some() || below(api, &base).is_some() {
            problems.push(
                &key,
                &base,
                format!(
                    "overlaps the runtime API at {api} (RUNTIME_API_PREFIX), which would take \
                     the requests meant for this plugin"
                ),
            );
        }
        if let Some((other, _)) = taken.iter().find(|(_, b)| *b == base) {
            problems.push(&key, &base, format!("is also the base of plugin {other}"));
        }
        taken.push((name, base));
    }
}

/// Each plugin that will load and has a base: its name and base, in load order.
fn loaded_bases<'a>(
    config: &'a Config,
    order: &'a Order,
) -> impl Iterator<Item = (&'static str, String)> + 'a {
    order.load.iter().filter_map(|&i| {
        let p = &config.plugins[i];
        plugin_base(p).map(|base| (p.spec.name, base))
    })
}

/// What `check` finds in a new configuration, plus what a reload cannot do: load or unload
/// a plugin, which builds the plugin graph again (a restart). Silently ignoring that would
/// leave, say, auth-token off after a secret was added, or answering 503 after it was
/// removed.
pub fn check_reload(config: &Config, running: &[LoadedPlugin]) -> Problems {
    let mut problems = check(config);
    let (effective, Ok(order)) = ordered(config) else {
        return problems; // `check` named the cycle
    };
    for (i, m) in effective.iter().enumerate() {
        let now = order.load.contains(&i);
        let was = running.iter().any(|l| l.name == m.name);
        let why = if now && !was {
            "would now be loaded; loading a plugin needs a restart".to_string()
        } else if was && !now {
            // `manifests` turns a keyless auth-token off: say why rather than "disabled".
            let reason = if keyless_auth(&config.plugins[i]) {
                "no key source: secret, publicKey or jwksUrl"
            } else {
                order
                    .skipped
                    .iter()
                    .find(|(s, _)| *s == i)
                    .map_or("", |(_, r)| r.as_str())
            };
            format!("would no longer be loaded ({reason}); unloading a plugin needs a restart")
        } else {
            continue;
        };
        problems.push(format!("plugins.{}", m.name), "", why);
    }
    problems
}

/// Builds the enabled plugins in load order.
pub fn build(config: &Config) -> Result<Plugins, Problems> {
    let problems = check(config);
    if !problems.is_empty() {
        return Err(problems);
    }
    let (effective, order) = ordered(config);
    let order = order.expect("checked above");
    for warning in warnings(config, &effective, &order) {
        log::warn!("{warning}");
    }
    let mut plugins = Plugins::default();
    for i in order.load {
        let pc = &config.plugins[i];
        let plugin = construct(pc, config, &mut plugins.typed);
        plugins.loaded.push(LoadedPlugin {
            name: pc.spec.name,
            base: plugin_base(pc),
            manifest: effective[i].clone(),
            plugin,
        });
    }
    Ok(plugins)
}

/// Builds one plugin from its (already validated) settings and the plugins loaded before
/// it. Returns the plugin and, for plugins others depend on, its typed handle.
fn construct(pc: &PluginConfig, config: &Config, typed: &mut Typed) -> Arc<dyn Plugin> {
    let s = &pc.settings;
    let mut problems = Problems::default();
    match pc.spec.name {
        "database" => {
            let cfg = DatabasePlugin::parse(s, &config.server.data_dir, &mut problems)
                .expect("validated by check");
            let plugin = Arc::new(DatabasePlugin::new(cfg));
            typed.database = Some(plugin.database());
            plugin
        }
        "keyval" => {
            let cfg = KeyvalPlugin::parse(s, &mut problems).expect("validated by check");
            let db = typed.database.clone().expect("keyval depends on database");
            let plugin = Arc::new(KeyvalPlugin::new(db, cfg));
            typed.keyval = Some(plugin.store());
            plugin
        }
        "proxy" => {
            let rules = ProxyPlugin::parse(s, &mut problems).expect("validated by check");
            let kv = typed.keyval.clone().expect("proxy depends on keyval");
            let plugin = Arc::new(ProxyPlugin::new(kv, rules));
            typed.proxy = Some(plugin.clone());
            plugin
        }
        "gateway" => {
            let api = &config.server.api_base;
            let cfg = GatewayPlugin::parse(s, api, &mut problems).expect("validated by check");
            let plugin = Arc::new(GatewayPlugin::new(cfg, api, typed.keyval.clone()));
            typed.gateway = Some(plugin.clone());
            plugin
        }
        "auth-token" => {
            let cfg = AuthPlugin::parse(s, &mut problems).expect("validated by check");
            let plugin = Arc::new(AuthPlugin::new(cfg));
            typed.auth = Some(plugin.clone());
            plugin
        }
        "metrics" => {
            let buckets = MetricsPlugin::parse(s, &mut problems).expect("validated by check");
            let plugin = Arc::new(MetricsPlugin::new(buckets));
            typed.metrics = Some(plugin.clone());
            plugin
        }
        other => unreachable!("no core plugin named {other}"),
    }
}

/// Typed handles that later plugins (and the request path) need from earlier ones.
#[derive(Default)]
pub struct Typed {
    pub database: Option<Arc<Database>>,
    pub keyval: Option<KeyVal>,
    pub proxy: Option<Arc<ProxyPlugin>>,
    pub gateway: Option<Arc<GatewayPlugin>>,
    pub auth: Option<Arc<AuthPlugin>>,
    pub metrics: Option<Arc<MetricsPlugin>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(name: &str, enabled: bool, deps: &[&str], optional: &[&str]) -> Manifest {
        Manifest {
            name: name.into(),
            base: None,
            enabled,
            dependencies: deps.iter().map(|s| s.to_string()).collect(),
            optional_dependencies: optional.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn names(ms: &[Manifest], order: &Order) -> Vec<String> {
        order.load.iter().map(|&i| ms[i].name.clone()).collect()
    }

    #[test]
    fn dependencies_load_first() {
        let ms = [
            m("proxy", true, &["keyval"], &[]),
            m("keyval", true, &["database"], &[]),
            m("database", true, &[], &[]),
            m("gateway", true, &[], &["auth-token"]),
            m("auth-token", true, &[], &[]),
        ];
        let refs: Vec<&Manifest> = ms.iter().collect();
        let o = load_order(&refs).unwrap();
        assert_eq!(
            names(&ms, &o),
            ["database", "keyval", "proxy", "auth-token", "gateway"]
        );
        assert!(o.skipped.is_empty());
    }

    #[test]
    fn missing_or_disabled_dependencies_skip_dependants() {
        let ms = [
            m("database", false, &[], &[]),
            m("keyval", true, &["database"], &[]),
            m("proxy", true, &["keyval"], &[]),
            m("metrics", true, &["nope"], &[]),
            m("gateway", true, &[], &["database"]),
        ];
        let refs: Vec<&Manifest> = ms.iter().collect();
        let o = load_order(&refs).unwrap();
        assert_eq!(names(&ms, &o), ["gateway"]);
        let why: Vec<&str> = o.skipped.iter().map(|(_, w)| w.as_str()).collect();
        assert!(why.contains(&"disabled"));
        assert!(why.iter().any(|w| w.contains("\"nope\" is not installed")));
        assert!(why.iter().any(|w| w.contains("\"keyval\" is not loaded")));
    }

    #[test]
    fn cycles_are_named() {
        let ms = [
            m("database", true, &["proxy"], &[]),
            m("keyval", true, &["database"], &[]),
            m("proxy", true, &["keyval"], &[]),
            m("gateway", true, &[], &[]),
        ];
        let refs: Vec<&Manifest> = ms.iter().collect();
        let err = load_order(&refs).unwrap_err();
        assert!(
            err.starts_with("dependency cycle between plugins:"),
            "{err}"
        );
        for name in ["database", "keyval", "proxy"] {
            assert!(err.contains(name), "{err}");
        }
        assert!(!err.contains("gateway"), "{err}");
    }

    #[test]
    fn optional_cycle_is_also_a_cycle() {
        let ms = [m("a", true, &[], &["b"]), m("b", true, &["a"], &[])];
        let refs: Vec<&Manifest> = ms.iter().collect();
        assert!(load_order(&refs).is_err());
    }
}
