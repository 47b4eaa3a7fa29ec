//! The `database` plugin (SPEC 7.1): one libSQL database, local or a remote sqld with read
//! replicas, shared with the plugins that store state, and `/database/api`.
#![forbid(unsafe_code)]

mod api;
pub mod config;
pub mod db;
pub mod error;
mod value;

use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use buntime_plugin_sdk::{
    ApiRequest, ApiResponse, Plugin, PluginError, PluginSpec, Problems, Readiness, Settings, Tasks,
};

pub use db::{Database, DbConfig, Location, Rows};
pub use error::DbError;
pub use libsql::Value;

pub const SPEC: PluginSpec = PluginSpec {
    name: "database",
    manifest: include_str!("../manifest.yaml"),
    keys: &["url", "authToken", "replicas"],
    env: &[
        ("DATABASE_LIBSQL_URL", "url"),
        ("DATABASE_LIBSQL_AUTH_TOKEN", "authToken"),
        ("DATABASE_LIBSQL_REPLICAS", "replicas"),
    ],
    env_numbered: &[("DATABASE_LIBSQL_REPLICAS_", "replicas")],
};

pub struct DatabasePlugin {
    db: Arc<Database>,
    tasks: Tasks,
}

impl DatabasePlugin {
    pub fn new(config: DbConfig) -> DatabasePlugin {
        DatabasePlugin {
            db: Arc::new(Database::new(config)),
            tasks: Tasks::default(),
        }
    }

    /// Validates the plugin's settings.
    pub fn parse(
        settings: &Settings,
        data_dir: &Path,
        problems: &mut Problems,
    ) -> Option<DbConfig> {
        config::parse(settings, data_dir, problems)
    }

    /// The database other plugins use.
    pub fn database(&self) -> Arc<Database> {
        self.db.clone()
    }
}

#[async_trait]
impl Plugin for DatabasePlugin {
    fn name(&self) -> &'static str {
        "database"
    }

    async fn handle(&self, req: ApiRequest) -> ApiResponse {
        api::handle(&self.db, &req)
            .await
            .unwrap_or_else(ApiResponse::from)
    }

    fn openapi_paths(&self) -> serde_json::Value {
        api::openapi()
    }

    async fn start(&self) -> Result<(), PluginError> {
        // A local file that cannot be opened is a start-up error; a remote database that
        // does not answer yet is waited for in the background (readiness stays 503).
        if !self.db.is_remote() {
            self.db.open().await.map_err(|e| {
                PluginError(format!(
                    "cannot open the database ({}): {e}",
                    self.db.describe()
                ))
            })?;
        }
        log::info!("database: {}", self.db.describe());
        let db = self.db.clone();
        self.tasks
            .spawn(async move { db.connect_until_ready().await });
        Ok(())
    }

    async fn stop(&self) {
        self.tasks.stop();
    }

    fn readiness(&self) -> Readiness {
        if self.db.is_ready() {
            Readiness::Ready
        } else {
            Readiness::Waiting(self.db.waiting_reason())
        }
    }
}
