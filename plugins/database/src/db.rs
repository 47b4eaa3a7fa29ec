//! One libSQL database: an embedded local file, or a remote sqld primary with read
//! replicas. Remote connections are made per unit of work (their streams expire after
//! 10 s idle). Local ones are kept for reuse by the gateway's own calls (see [`Pooled`]),
//! and each has its own busy timeout. Rows are read to the end before a connection is used
//! again (a live cursor pins a WAL snapshot).

use std::ops::Deref;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use libsql::{Builder, Connection, TransactionBehavior, Value};
use tokio::sync::watch;

use crate::error::DbError;

/// How long a local connection waits for a lock before giving up.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest a single database call may take before it counts as unavailable.
const CALL_TIMEOUT: Duration = Duration::from_secs(15);
const RETRY_FIRST: Duration = Duration::from_millis(250);
const RETRY_MAX: Duration = Duration::from_secs(30);
/// Idle local connections kept for reuse; more are closed when they come back.
const IDLE_MAX: usize = 4;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Local(PathBuf),
    Remote { url: String, token: Option<String> },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub location: Location,
    pub replicas: Vec<String>,
}

/// A query's whole result, read to the end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Rows {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<Value>>,
}

impl Rows {
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// The first column of the first row.
    pub fn scalar(&self) -> Option<&Value> {
        self.rows.first()?.first()
    }
}

/// The most a query's result may hold; past it the query fails, naming the bound. The
/// admin APIs set one so that a careless `SELECT *` on a big table cannot take the
/// gateway's memory (it is the ingress); the gateway's own queries are bounded by design.
#[derive(Debug, Clone, Copy)]
pub struct Cap {
    pub rows: usize,
    /// Bytes of text and blobs, 8 per other value.
    pub bytes: usize,
}

impl Cap {
    pub const NONE: Cap = Cap {
        rows: usize::MAX,
        bytes: usize::MAX,
    };
}

#[derive(Debug, Clone, Copy)]
struct Migration {
    component: &'static str,
    version: i64,
    sql: &'static str,
}

struct Endpoint {
    label: String,
    db: libsql::Database,
    local: bool,
    /// Local connections that finished their work outside a transaction.
    idle: Mutex<Vec<Connection>>,
}

struct Handles {
    primary: Endpoint,
    replicas: Vec<Endpoint>,
    next: AtomicUsize,
}

/// Health of one endpoint, for `/database/api/health`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EndpointHealth {
    pub url: String,
    pub ok: bool,
    #[serde(rename = "latencyMs")]
    pub latency_ms: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub struct Database {
    /// Queries by target (`primary`, `replica`) and outcome, for the metrics plugin.
    pub stats: buntime_plugin_sdk::stats::OpStats,
    config: DbConfig,
    handles: OnceLock<Handles>,
    ready: watch::Sender<bool>,
    /// Why the database is not ready yet (readiness body).
    waiting: Mutex<String>,
    migrations: Mutex<Vec<Migration>>,
}

impl Database {
    pub fn new(config: DbConfig) -> Database {
        Database {
            stats: Default::default(),
            config,
            handles: OnceLock::new(),
            ready: watch::Sender::new(false),
            waiting: Mutex::new("database not opened yet".into()),
            migrations: Mutex::new(Vec::new()),
        }
    }

    pub fn config(&self) -> &DbConfig {
        &self.config
    }

    pub fn is_remote(&self) -> bool {
        matches!(self.config.location, Location::Remote { .. })
    }

    /// Registers a component's schema steps; they run, in version order, when the database
    /// first answers. Each step must be idempotent (`CREATE ... IF NOT EXISTS`).
    pub fn add_migrations(&self, component: &'static str, steps: &[(i64, &'static str)]) {
        let mut m = self.migrations.lock().unwrap_or_else(|e| e.into_inner());
        for (version, sql) in steps {
            m.push(Migration {
                component,
                version: *version,
                sql,
            });
        }
    }

    /// Opens the handles. A local file that cannot be opened is an error; a remote
    /// database is not contacted here.
    pub async fn open(&self) -> Result<(), DbError> {
        if self.handles.get().is_some() {
            return Ok(());
        }
        let primary = match &self.config.location {
            Location::Local(path) => {
                if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                    // Made here, it is the owner's alone (0700), as PostgreSQL's data
                    // folder: the database holds every app's keyval data. A folder that
                    // exists keeps the mode its owner gave it.
                    use std::os::unix::fs::DirBuilderExt;
                    std::fs::DirBuilder::new()
                        .recursive(true)
                        .mode(0o700)
                        .create(dir)
                        .map_err(|e| {
                            DbError::Unavailable(format!("cannot create {}: {e}", dir.display()))
                        })?;
                }
                // libsql names a file SQLite cannot open by its code alone ("...: 14");
                // the system says why (a folder, no write permission, a read-only volume).
                std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(path)
                    .map_err(|e| DbError::Unavailable(e.to_string()))?;
                let db = Builder::new_local(path).build().await?;
                let conn = db.connect()?;
                // WAL is persistent: once per file is enough. The pragma answers with a
                // row, which must not stay alive.
                conn.query("PRAGMA journal_mode=WAL", ())
                    .await?
                    .next()
                    .await?;
                Endpoint {
                    label: path.display().to_string(),
                    db,
                    local: true,
                    idle: Mutex::new(Vec::new()),
                }
            }
            Location::Remote { url, token } => remote(url, token.as_deref()).await?,
        };
        let token = match &self.config.location {
            Location::Remote { token, .. } => token.clone(),
            Location::Local(_) => None,
        };
        let mut replicas = Vec::new();
        for url in &self.config.replicas {
            replicas.push(remote(url, token.as_deref()).await?);
        }
        let _ = self.handles.set(Handles {
            primary,
            replicas,
            next: AtomicUsize::new(0),
        });
        Ok(())
    }

    /// Pings the primary and applies migrations until both succeed, backing off between
    /// attempts; then marks the database ready.
    pub async fn connect_until_ready(&self) {
        let mut delay = RETRY_FIRST;
        loop {
            match self.ping_and_migrate().await {
                Ok(applied) => {
                    if applied > 0 {
                        log::info!("database: applied {applied} migration(s)");
                    }
                    self.ready.send_replace(true);
                    log::info!("database ready ({})", self.describe());
                    return;
                }
                Err(e) => {
                    *self.waiting.lock().unwrap_or_else(|p| p.into_inner()) = e.to_string();
                    log::warn!("database not ready ({e}); retrying in {delay:?}");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(RETRY_MAX);
                }
            }
        }
    }

    pub fn is_ready(&self) -> bool {
        *self.ready.borrow()
    }

    pub fn waiting_reason(&self) -> String {
        self.waiting
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Resolves once the database has answered and its migrations ran.
    pub async fn wait_ready(&self) {
        let mut rx = self.ready.subscribe();
        let _ = rx.wait_for(|ready| *ready).await;
    }

    /// `local file ./data/buntime.db` or `remote http://... (+2 replicas)`.
    pub fn describe(&self) -> String {
        match &self.config.location {
            Location::Local(p) => format!("local file {}", p.display()),
            Location::Remote { url, .. } if self.config.replicas.is_empty() => {
                format!("remote {url}")
            }
            Location::Remote { url, .. } => {
                format!("remote {url} (+{} replicas)", self.config.replicas.len())
            }
        }
    }

    fn handles(&self) -> Result<&Handles, DbError> {
        self.handles
            .get()
            .ok_or_else(|| DbError::Unavailable("database not opened yet".into()))
    }

    /// A new connection to the primary: for statements from outside the gateway (the
    /// database API), whose session state (`PRAGMA`, `ATTACH`, temporary tables) must go
    /// with the connection.
    pub fn connect(&self) -> Result<Connection, DbError> {
        connect(&self.handles()?.primary)
    }

    /// A connection to the primary for the gateway's own writes, transactions, and reads
    /// that must see the latest write; reused when local.
    pub fn pooled(&self) -> Result<Pooled<'_>, DbError> {
        Pooled::take(&self.handles()?.primary)
    }

    /// Runs a statement on the primary; returns the number of changed rows.
    pub async fn execute(&self, sql: &str, params: Vec<Value>) -> Result<u64, DbError> {
        let conn = self.pooled()?;
        self.stats
            .time(
                "primary",
                timed(async { Ok(conn.execute(sql, params).await?) }),
            )
            .await
    }

    /// Runs a query on the primary.
    pub async fn query_primary(&self, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
        self.query_primary_within(sql, params, Cap::NONE).await
    }

    async fn query_primary_within(
        &self,
        sql: &str,
        params: Vec<Value>,
        cap: Cap,
    ) -> Result<Rows, DbError> {
        let conn = self.pooled()?;
        self.stats
            .time("primary", timed(query_within(&conn, sql, params, cap)))
            .await
    }

    /// Runs a read on the next replica (round-robin), falling back to the primary when the
    /// replica cannot answer. Without replicas it runs on the primary.
    pub async fn query(&self, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
        self.query_within(sql, params, Cap::NONE).await
    }

    /// [`Database::query`], failing once the result passes `cap`.
    pub async fn query_within(
        &self,
        sql: &str,
        params: Vec<Value>,
        cap: Cap,
    ) -> Result<Rows, DbError> {
        let h = self.handles()?;
        if h.replicas.is_empty() {
            return self.query_primary_within(sql, params, cap).await;
        }
        let i = h.next.fetch_add(1, Ordering::Relaxed) % h.replicas.len();
        let replica = &h.replicas[i];
        let attempt = match connect(replica) {
            Ok(conn) => {
                self.stats
                    .time(
                        "replica",
                        timed(query_within(&conn, sql, params.clone(), cap)),
                    )
                    .await
            }
            Err(e) => Err(e),
        };
        match attempt {
            Err(e) if e.is_unavailable() => {
                log::warn!(
                    "replica {} failed ({e}); reading from the primary",
                    replica.label
                );
                self.query_primary_within(sql, params, cap).await
            }
            other => other,
        }
    }

    /// `SELECT 1` on every endpoint.
    pub async fn health(&self) -> (EndpointHealth, Vec<EndpointHealth>) {
        let Ok(h) = self.handles() else {
            let down = EndpointHealth {
                url: self.describe(),
                ok: false,
                latency_ms: 0.0,
                error: Some("database not opened yet".into()),
            };
            return (down, Vec::new());
        };
        let primary = ping(&h.primary).await;
        let mut replicas = Vec::with_capacity(h.replicas.len());
        for r in &h.replicas {
            replicas.push(ping(r).await);
        }
        (primary, replicas)
    }

    async fn ping_and_migrate(&self) -> Result<usize, DbError> {
        self.open().await?;
        let conn = self.connect()?;
        timed(query(&conn, "SELECT 1", Vec::new())).await?;
        let migrations = self
            .migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        timed(migrate(&conn, &migrations)).await
    }
}

async fn remote(url: &str, token: Option<&str>) -> Result<Endpoint, DbError> {
    let db = Builder::new_remote(url.to_string(), token.unwrap_or("").to_string())
        .build()
        .await?;
    Ok(Endpoint {
        label: url.to_string(),
        db,
        local: false,
        idle: Mutex::new(Vec::new()),
    })
}

/// A connection lent by an endpoint. A local one goes back to the endpoint's idle list
/// when dropped outside a transaction: opening a local connection parses the schema, and
/// closing the last one checkpoints the WAL, deletes its file and drops its index, which
/// made up most of a small write's CPU. Remote connections are fresh and closed after use.
pub struct Pooled<'a> {
    conn: Option<Connection>,
    home: Option<&'a Mutex<Vec<Connection>>>,
}

impl<'a> Pooled<'a> {
    fn take(e: &'a Endpoint) -> Result<Pooled<'a>, DbError> {
        if !e.local {
            return Ok(Pooled {
                conn: Some(connect(e)?),
                home: None,
            });
        }
        let reused = e.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match reused {
            Some(conn) => conn,
            None => connect(e)?,
        };
        Ok(Pooled {
            conn: Some(conn),
            home: Some(&e.idle),
        })
    }
}

impl Deref for Pooled<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn.as_ref().expect("present until dropped")
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        let (Some(conn), Some(home)) = (self.conn.take(), self.home) else {
            return;
        };
        // A connection left inside a transaction (an error between BEGIN and COMMIT) is
        // closed, which rolls it back.
        if conn.is_autocommit() {
            let mut idle = home.lock().unwrap_or_else(|p| p.into_inner());
            if idle.len() < IDLE_MAX {
                idle.push(conn);
            }
        }
    }
}

fn connect(e: &Endpoint) -> Result<Connection, DbError> {
    let conn = e.db.connect()?;
    if e.local {
        conn.busy_timeout(BUSY_TIMEOUT)?;
    }
    Ok(conn)
}

async fn ping(e: &Endpoint) -> EndpointHealth {
    let start = Instant::now();
    let result = match connect(e) {
        Ok(conn) => timed(query(&conn, "SELECT 1", Vec::new())).await,
        Err(err) => Err(err),
    };
    EndpointHealth {
        url: e.label.clone(),
        ok: result.is_ok(),
        latency_ms: (start.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        error: result.err().map(|e| e.to_string()),
    }
}

/// Bounds a database call so a hung server makes the caller fail, not hang.
pub async fn timed<T>(f: impl Future<Output = Result<T, DbError>>) -> Result<T, DbError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .unwrap_or_else(|_| {
            Err(DbError::Unavailable(format!(
                "no answer within {CALL_TIMEOUT:?}"
            )))
        })
}

/// Runs a query on `conn` and reads every row.
pub async fn query(conn: &Connection, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
    query_within(conn, sql, params, Cap::NONE).await
}

/// [`query`], failing once the result passes `cap`.
pub async fn query_within(
    conn: &Connection,
    sql: &str,
    params: Vec<Value>,
    cap: Cap,
) -> Result<Rows, DbError> {
    let mut rows = conn.query(sql, params).await?;
    let n = rows.column_count();
    let columns = (0..n)
        .map(|i| rows.column_name(i).unwrap_or("").to_string())
        .collect();
    let mut out = Vec::new();
    let mut bytes = 0usize;
    while let Some(row) = rows.next().await? {
        let mut values = Vec::with_capacity(n as usize);
        for i in 0..n {
            let value = row.get_value(i)?;
            bytes = bytes.saturating_add(match &value {
                Value::Text(t) => t.len(),
                Value::Blob(b) => b.len(),
                _ => 8,
            });
            values.push(value);
        }
        out.push(values);
        if out.len() > cap.rows || bytes > cap.bytes {
            return Err(DbError::Sql(format!(
                "The result is larger than {} rows or {} MiB: narrow the query (WHERE, LIMIT) \
                 or read it in pages (LIMIT ... OFFSET)",
                cap.rows,
                cap.bytes >> 20
            )));
        }
    }
    Ok(Rows { columns, rows: out })
}

/// Applies the steps not yet recorded in `schema_migrations`. Each step runs in an
/// IMMEDIATE transaction that first re-checks the record, so two processes starting at
/// once apply it exactly once.
async fn migrate(conn: &Connection, steps: &[Migration]) -> Result<usize, DbError> {
    conn.execute(
        "CREATE TABLE IF NOT EXISTS schema_migrations (component TEXT NOT NULL, version INTEGER NOT NULL, applied_at INTEGER NOT NULL, PRIMARY KEY (component, version))",
        (),
    )
    .await?;
    let mut sorted = steps.to_vec();
    sorted.sort_by_key(|m| (m.component, m.version));
    let mut applied = 0;
    for m in sorted {
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await?;
        let done = query(
            &tx,
            "SELECT 1 FROM schema_migrations WHERE component = ?1 AND version = ?2",
            vec![Value::from(m.component.to_string()), Value::from(m.version)],
        )
        .await?;
        if !done.is_empty() {
            tx.rollback().await?;
            continue;
        }
        tx.execute_batch(m.sql).await?;
        tx.execute(
            "INSERT INTO schema_migrations (component, version, applied_at) VALUES (?1, ?2, unixepoch())",
            vec![Value::from(m.component.to_string()), Value::from(m.version)],
        )
        .await?;
        tx.commit().await?;
        log::info!("database: applied {} migration {}", m.component, m.version);
        applied += 1;
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn local() -> (tempfile::TempDir, Database) {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::new(DbConfig {
            location: Location::Local(dir.path().join("t.db")),
            replicas: Vec::new(),
        });
        db.open().await.unwrap();
        (dir, db)
    }

    /// Whether the connection has the temporary table `mark` (session state: it exists
    /// only on the connection that made it).
    async fn marked(conn: &Connection) -> bool {
        conn.query("SELECT * FROM temp.mark", ()).await.is_ok()
    }

    #[tokio::test]
    async fn local_connections_come_back_unless_left_in_a_transaction() {
        let (_dir, db) = local().await;
        {
            let conn = db.pooled().unwrap();
            conn.execute("CREATE TEMP TABLE mark(x)", ()).await.unwrap();
        }
        {
            let conn = db.pooled().unwrap();
            assert!(marked(&conn).await, "the same connection again");
            conn.execute("BEGIN", ()).await.unwrap();
        }
        let conn = db.pooled().unwrap();
        assert!(!marked(&conn).await, "one left in a transaction is closed");
        assert!(conn.is_autocommit());
    }

    #[tokio::test]
    async fn fresh_connections_never_join_the_pool() {
        let (_dir, db) = local().await;
        {
            let conn = db.connect().unwrap();
            conn.execute("CREATE TEMP TABLE mark(x)", ()).await.unwrap();
        }
        assert!(!marked(&db.pooled().unwrap()).await);
    }

    #[tokio::test]
    async fn the_pool_keeps_a_few() {
        let (_dir, db) = local().await;
        let held: Vec<Pooled> = (0..IDLE_MAX + 2).map(|_| db.pooled().unwrap()).collect();
        drop(held);
        let idle = db.handles().unwrap().primary.idle.lock().unwrap().len();
        assert_eq!(idle, IDLE_MAX);
    }
}
