//! What every request and the lifecycle share. Built once before the server starts; the
//! parts that change at run time sit behind `ArcSwap` (or inside the plugins).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use buntime_auth_token::AuthPlugin;
use buntime_plugin_sdk::{Problems, Readiness, RouteGlobs};
use bytes::Bytes;

use crate::access::AdminAccess;
use crate::config::{Config, InstalledPlugin, ServerConfig, Sources};
use crate::lifecycle::{Lifecycle, Phase};
use crate::logging::AccessLog;
use crate::plugins::{self, CORE, Plugins};
use crate::routes::Router;
use buntime_workers::Pool;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

pub struct Shared {
    pub server: ServerConfig,
    /// Worker processes for apps; `None` only when the pool could not start.
    pub pool: Option<Arc<Pool>>,
    pub config_file: Option<PathBuf>,
    pub plugins: Plugins,
    pub router: Router,
    pub admin: AdminAccess,
    pub lifecycle: Arc<Lifecycle>,
    /// Plugin folders found in plugin dirs; SIGHUP rescans them.
    pub installed: ArcSwap<Vec<InstalledPlugin>>,
    /// `{API}/openapi.json`, rendered once.
    pub openapi: Bytes,
    /// For a `405` with `Allow` on plugin routes asked with a method they do not answer.
    pub allowed_methods: crate::api::AllowedMethods,
    /// This process's `Via`, by which a request that comes back to it is caught.
    pub via: crate::via::Via,
    pub access_log: Option<AccessLog>,
    /// The runtime plugin tasks run on (set when plugins start). Admin handlers run there
    /// too: their database calls (SQLite is synchronous) must not stall the proxy threads.
    pub admin_runtime: std::sync::OnceLock<tokio::runtime::Handle>,
    /// When this gateway was built: the start of `RULES_WARM_UP`.
    started: Instant,
}

/// How long after start a request may wait for the dynamic rules (`Shared::wait_for_rules`).
const RULES_WARM_UP: Duration = Duration::from_secs(10);
/// How often a waiting request looks again.
const RULES_WARM_UP_POLL: Duration = Duration::from_millis(20);

impl Shared {
    pub fn new(config: Config, plugins: Plugins, pool: Option<Arc<Pool>>) -> Shared {
        if let Some(proxy) = &plugins.typed.proxy {
            let api_base = config.server.api_base.clone();
            let auth = plugins.typed.auth.clone();
            // auth-token off: its public routes still count for the rules' test endpoint
            // (SPEC 4.3), read from its settings (checked at start with the rest).
            let unloaded = match (&auth, config.plugin("auth-token")) {
                (None, Some(pc)) => {
                    AuthPlugin::public_routes(&pc.settings, &mut Problems::default())
                }
                _ => RouteGlobs::default(),
            };
            proxy.set_public_check(Arc::new(move |method: &str, path: &str| {
                crate::api::is_public_path(&api_base, path)
                    || match &auth {
                        Some(a) => a.is_public(method, path),
                        None => unloaded.is_match(method, path),
                    }
            }));
        }
        let router = Router::new(&config.server.api_base, &plugins, pool.clone());
        let paths = crate::api::documented_paths(&config.server.api_base, &plugins);
        let allowed_methods = crate::api::AllowedMethods::new(&paths);
        let openapi = crate::api::openapi(paths);
        let access_log = config
            .server
            .access_log
            .then(|| AccessLog::start(config.server.log_format));
        let lifecycle: Arc<Lifecycle> = Arc::default();
        if let Some(m) = &plugins.typed.metrics {
            crate::telemetry::register(m.metrics(), &plugins.typed, &lifecycle, pool.as_ref());
        }
        Shared {
            admin_runtime: std::sync::OnceLock::new(),
            pool,
            admin: AdminAccess::new(config.server.master_key.as_deref()),
            router,
            openapi,
            allowed_methods,
            via: crate::via::Via::new(),
            access_log,
            installed: ArcSwap::from_pointee(config.installed),
            config_file: config.file,
            server: config.server,
            plugins,
            lifecycle,
            started: Instant::now(),
        }
    }

    /// Holds a request that came before the dynamic rules were first read, until they are
    /// or `RULES_WARM_UP` after start has passed. The listener opens before the database
    /// answers, and in between such a request matched no rule: a `404`, or an app of the
    /// same name, for a path a rule owns (Envoy's listeners warm up the same way). Past the
    /// deadline requests are routed with what is loaded, so a database that is down at
    /// start does not stop the apps (SPEC 7.1).
    pub async fn wait_for_rules(&self, method: &http::Method, path: &str, websocket: bool) {
        while self.router.awaits_rules(method, path, websocket) {
            let Some(left) = RULES_WARM_UP.checked_sub(self.started.elapsed()) else {
                return;
            };
            tokio::time::sleep(left.min(RULES_WARM_UP_POLL)).await;
        }
    }

    /// Readiness body status and the reasons it is not ready yet.
    pub fn readiness(&self) -> Result<(), (&'static str, Vec<String>)> {
        match self.lifecycle.phase() {
            Phase::Draining => return Err(("draining", Vec::new())),
            Phase::Starting => return Err(("starting", vec!["plugins are starting".into()])),
            Phase::Running => {}
        }
        let waiting: Vec<String> = self
            .plugins
            .loaded
            .iter()
            .filter_map(|p| match p.plugin.readiness() {
                Readiness::Ready => None,
                Readiness::Waiting(why) => Some(format!("{}: {why}", p.name)),
            })
            .collect();
        if waiting.is_empty() {
            Ok(())
        } else {
            Err(("starting", waiting))
        }
    }

    /// SIGHUP: re-reads the config file and plugin-dir manifests and hands each plugin its
    /// new settings. Environment variables are fixed for the process's life, so the server
    /// section only changes where the file changed it; those changes need a restart.
    pub fn reload(&self) {
        let env = |k: &str| std::env::var(k).ok();
        // All or nothing, as at start: a typo in one plugin's block must not leave the
        // others running the new file and that one the old.
        let (config, mut problems) = Config::read(&Sources {
            file: self.config_file.as_deref(),
            env: &env,
            specs: CORE,
        });
        problems.extend(plugins::check_reload(&config, &self.plugins.loaded));
        if !problems.is_empty() {
            for p in problems.iter() {
                log::error!("reload refused, keeping the running configuration: {p}");
            }
            return;
        }
        self.installed.store(Arc::new(config.installed.clone()));
        for loaded in &self.plugins.loaded {
            let Some(pc) = config.plugin(loaded.name) else {
                continue;
            };
            let mut problems = buntime_plugin_sdk::Problems::default();
            loaded.plugin.reload(&pc.settings, &mut problems);
            for p in problems.iter() {
                log::error!("reload of plugin {} refused: {p}", loaded.name);
            }
        }
        log::info!("configuration reloaded");
        // What start-up warns of, said again of the new file: a shortened JWT secret, say.
        for warning in plugins::summary(&config).1 {
            log::warn!("{warning}");
        }
    }
}
