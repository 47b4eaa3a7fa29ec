//! The `keyval` plugin (SPEC 7.2): ordered keys byte-compatible with the original, values
//! as JSON, versionstamps, expiry, atomic checks-and-mutations; `/keyval/api`; and the
//! `KeyVal` store other plugins use.
#![forbid(unsafe_code)]

mod api;
pub mod key;
pub mod store;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use buntime_database::Database;
use buntime_plugin_sdk::{
    ApiRequest, ApiResponse, Plugin, PluginError, PluginSpec, Problems, Settings, Tasks,
};

pub use key::{Key, KeyPart};
pub use store::{Check, Entry, KeyVal, KvError, Mutation, Page, Selector};

pub const SPEC: PluginSpec = PluginSpec {
    name: "keyval",
    manifest: include_str!("../manifest.yaml"),
    keys: &["purgeInterval"],
    env: &[],
    env_numbered: &[],
};

#[derive(Debug, Clone, PartialEq)]
pub struct KeyvalConfig {
    pub purge_interval: Duration,
}

pub struct KeyvalPlugin {
    kv: KeyVal,
    config: KeyvalConfig,
    tasks: Tasks,
}

impl KeyvalPlugin {
    pub fn parse(s: &Settings, problems: &mut Problems) -> Option<KeyvalConfig> {
        let purge_interval = s.duration("purgeInterval", problems)?;
        if purge_interval.is_zero() {
            s.problem(problems, "purgeInterval", "must be more than zero");
            return None;
        }
        Some(KeyvalConfig { purge_interval })
    }

    /// Registers the `kv_entries` schema with the database (applied when it answers).
    pub fn new(db: Arc<Database>, config: KeyvalConfig) -> KeyvalPlugin {
        db.add_migrations("keyval", store::MIGRATIONS);
        KeyvalPlugin {
            kv: KeyVal::new(db),
            config,
            tasks: Tasks::default(),
        }
    }

    pub fn store(&self) -> KeyVal {
        self.kv.clone()
    }
}

#[async_trait]
impl Plugin for KeyvalPlugin {
    fn name(&self) -> &'static str {
        "keyval"
    }

    async fn handle(&self, req: ApiRequest) -> ApiResponse {
        api::handle(&self.kv, &req)
            .await
            .unwrap_or_else(ApiResponse::from)
    }

    fn openapi_paths(&self) -> serde_json::Value {
        api::openapi()
    }

    async fn start(&self) -> Result<(), PluginError> {
        let kv = self.kv.clone();
        let every = self.config.purge_interval;
        self.tasks.spawn(async move {
            kv.database().wait_ready().await;
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                match kv.purge_expired().await {
                    Ok(0) => {}
                    Ok(n) => log::debug!("keyval: purged {n} expired entries"),
                    Err(e) => log::warn!("keyval: purging expired entries failed: {e}"),
                }
            }
        });
        Ok(())
    }

    async fn stop(&self) {
        self.tasks.stop();
    }
}
