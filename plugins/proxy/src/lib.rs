//! The `proxy` plugin (SPEC 4): regex proxy rules, static from the manifest and dynamic
//! in keyval, compiled into one table the request path matches without a lock, kept in
//! step across instances through a change marker; and `/redirects/api`.
#![forbid(unsafe_code)]

mod api;
pub mod html;
mod patterns;
pub mod resolve;
pub mod rewrite;
pub mod rule;
pub mod store;
pub mod table;
pub mod target;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use buntime_keyval::KeyVal;
use buntime_plugin_sdk::{
    ApiRequest, ApiResponse, Plugin, PluginError, PluginSpec, Problems, Readiness, Settings, Tasks,
};

pub use resolve::{Resolver, Upstream};
pub use rule::{CompiledRule, Rule, Timeouts};
pub use store::RuleStore;
pub use table::RuleTable;
pub use target::Target;

pub const SPEC: PluginSpec = PluginSpec {
    name: "proxy",
    manifest: include_str!("../manifest.yaml"),
    keys: &["rules"],
    env: &[],
    env_numbered: &[],
};

/// How often an instance looks for rule changes made by others (SPEC 4.2: within 2 s).
const SYNC_EVERY: Duration = Duration::from_secs(1);
/// How often upstream host names are resolved again.
const DNS_REFRESH_EVERY: Duration = Duration::from_secs(30);

/// Whether a method and path are public by the sources outside the rule (SPEC 6.3);
/// given by the gateway, which knows them all.
pub type PublicCheck = dyn Fn(&str, &str) -> bool + Send + Sync;

pub struct ProxyPlugin {
    store: Arc<RuleStore>,
    loaded: Arc<AtomicBool>,
    public: OnceLock<Arc<PublicCheck>>,
    tasks: Tasks,
}

impl ProxyPlugin {
    /// The static rules of the manifest, each validated like an API write; problems are
    /// named `plugins.proxy.rules[i]`.
    pub fn parse(s: &Settings, problems: &mut Problems) -> Option<Vec<Arc<CompiledRule>>> {
        let resolver = Resolver::default();
        static_rules(s, &resolver, problems)
    }

    pub fn new(kv: KeyVal, static_rules: Vec<Arc<CompiledRule>>) -> ProxyPlugin {
        let resolver = Arc::new(Resolver::default());
        // Static rules were compiled against a throwaway resolver at check time; bind
        // them to this one so background refreshes reach them.
        let rules = rebind(static_rules, &resolver);
        ProxyPlugin {
            store: Arc::new(RuleStore::new(kv, resolver, rules)),
            loaded: Arc::new(AtomicBool::new(false)),
            public: OnceLock::new(),
            tasks: Tasks::default(),
        }
    }

    /// The live rule table the request path reads.
    pub fn table(&self) -> Arc<ArcSwap<RuleTable>> {
        self.store.table()
    }

    /// Set once the dynamic rules have been read from the database; until then the table
    /// holds the static rules only.
    pub fn loaded(&self) -> Arc<AtomicBool> {
        self.loaded.clone()
    }

    pub fn store(&self) -> &Arc<RuleStore> {
        &self.store
    }

    pub fn set_public_check(&self, check: Arc<PublicCheck>) {
        let _ = self.public.set(check);
    }
}

fn static_rules(
    s: &Settings,
    resolver: &Resolver,
    problems: &mut Problems,
) -> Option<Vec<Arc<CompiledRule>>> {
    let list = match s.get("rules") {
        None => return Some(Vec::new()),
        Some(serde_yaml::Value::Sequence(items)) => items.clone(),
        Some(_) => {
            s.problem(problems, "rules", "must be a list of rules");
            return None;
        }
    };
    let before = problems.len();
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let name = format!("{}[{i}]", s.name_of("rules"));
        let fields = match serde_json::to_value(item) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => {
                problems.push(name, "", "a rule must be a mapping");
                continue;
            }
        };
        let compiled = Rule::blank(&rule::static_id(i))
            .with_fields(&fields, true)
            .and_then(|mut r| {
                r.readonly = true;
                r.order = i as i64;
                CompiledRule::compile(r, resolver)
            });
        match compiled {
            Ok(c) => out.push(Arc::new(c)),
            Err(why) => problems.push(name, "", why),
        }
    }
    (problems.len() == before).then_some(out)
}

fn rebind(rules: Vec<Arc<CompiledRule>>, resolver: &Resolver) -> Vec<Arc<CompiledRule>> {
    rules
        .into_iter()
        .filter_map(|r| {
            CompiledRule::compile(r.rule.clone(), resolver)
                .ok()
                .map(Arc::new)
        })
        .collect()
}

#[async_trait]
impl Plugin for ProxyPlugin {
    fn name(&self) -> &'static str {
        "proxy"
    }

    async fn handle(&self, req: ApiRequest) -> ApiResponse {
        let nobody: Arc<PublicCheck> = Arc::new(|_: &str, _: &str| false);
        let public = self.public.get().unwrap_or(&nobody);
        api::handle(&self.store, public.as_ref(), &req)
            .await
            .unwrap_or_else(ApiResponse::from)
    }

    fn openapi_paths(&self) -> serde_json::Value {
        api::openapi()
    }

    async fn start(&self) -> Result<(), PluginError> {
        let store = self.store.clone();
        let loaded = self.loaded.clone();
        let kv_ready = self.store.clone();
        self.tasks.spawn(async move {
            kv_ready.wait_database().await;
            let mut tick = tokio::time::interval(SYNC_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                match store.sync().await {
                    Ok(changed) => {
                        if changed {
                            log::info!(
                                "proxy: {} rule(s) active",
                                store.table().load().active_len()
                            );
                        }
                        loaded.store(true, Ordering::Release);
                    }
                    Err(e) => {
                        log::warn!("proxy: cannot read the rules ({e}); serving the last table")
                    }
                }
            }
        });
        let resolver = self.store.resolver().clone();
        self.tasks.spawn(async move {
            let mut tick = tokio::time::interval(DNS_REFRESH_EVERY);
            loop {
                tick.tick().await;
                resolver.refresh().await;
            }
        });
        Ok(())
    }

    async fn stop(&self) {
        self.tasks.stop();
    }

    fn readiness(&self) -> Readiness {
        if self.loaded.load(Ordering::Acquire) {
            Readiness::Ready
        } else {
            Readiness::Waiting("rules not loaded yet".into())
        }
    }

    fn reload(&self, settings: &Settings, problems: &mut Problems) {
        let Some(rules) = static_rules(settings, self.store.resolver(), problems) else {
            return;
        };
        let store = self.store.clone();
        tokio::spawn(async move { store.set_static(rules).await });
    }
}
