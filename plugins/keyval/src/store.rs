//! The `KeyVal` store over `kv_entries` (SPEC 7.2). Other plugins use it directly (the
//! proxy rules live in it); `/keyval/api` is a thin layer on top.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use buntime_database::{Database, DbError, Rows, Value};
use libsql::TransactionBehavior;
use serde_json::Value as Json;

use crate::key::{Key, number_json};

/// Schema steps, registered with the database at construction.
pub const MIGRATIONS: &[(i64, &str)] = &[(
    1,
    "CREATE TABLE IF NOT EXISTS kv_entries (key BLOB PRIMARY KEY, value BLOB NOT NULL, versionstamp TEXT NOT NULL, expires_at INTEGER);
     CREATE INDEX IF NOT EXISTS idx_kv_expires ON kv_entries(expires_at) WHERE expires_at IS NOT NULL;",
)];

const LIVE: &str = "(expires_at IS NULL OR expires_at > unixepoch())";
/// How long `atomic` keeps retrying when another writer holds the lock.
const BUSY_RETRY_FOR: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KvError {
    /// Bad input: answered 400 with this text.
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Db(#[from] DbError),
}

impl From<KvError> for buntime_plugin_sdk::ApiError {
    fn from(e: KvError) -> Self {
        match e {
            KvError::Invalid(msg) => buntime_plugin_sdk::ApiError::bad_request(msg),
            KvError::Db(db) => db.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub key: Key,
    pub value: Json,
    pub versionstamp: String,
}

impl Entry {
    pub fn to_json(&self) -> Json {
        serde_json::json!({"key": self.key.to_json(), "value": self.value, "versionstamp": self.versionstamp})
    }
}

/// What `list` returns.
#[derive(Debug, Clone, Default)]
pub struct Selector {
    pub prefix: Key,
    /// Inclusive lower bound.
    pub start: Option<Key>,
    /// Exclusive upper bound.
    pub end: Option<Key>,
    pub limit: usize,
    pub reverse: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub entries: Vec<Entry>,
    pub cursor: Option<String>,
    pub has_more: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub key: Key,
    /// `None`: the key must not exist.
    pub versionstamp: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Mutation {
    Set {
        key: Key,
        value: Json,
        expires_in: Option<Duration>,
    },
    Delete {
        key: Key,
    },
    Sum {
        key: Key,
        value: f64,
    },
    Max {
        key: Key,
        value: f64,
    },
    Min {
        key: Key,
        value: f64,
    },
    Append {
        key: Key,
        values: Vec<Json>,
    },
    Prepend {
        key: Key,
        values: Vec<Json>,
    },
}

/// Where reads go: replicas are fine for the admin API; code that must see its own
/// writes (rule loading) reads from the primary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reads {
    Replicas,
    Primary,
}

#[derive(Clone)]
pub struct KeyVal {
    db: Arc<Database>,
    reads: Reads,
    /// Operations by name and outcome, for the metrics plugin.
    pub stats: Arc<buntime_plugin_sdk::stats::OpStats>,
}

impl KeyVal {
    pub fn new(db: Arc<Database>) -> KeyVal {
        KeyVal {
            db,
            reads: Reads::Replicas,
            stats: Arc::default(),
        }
    }

    /// The same store, reading from the primary.
    pub fn primary(&self) -> KeyVal {
        KeyVal {
            db: self.db.clone(),
            reads: Reads::Primary,
            stats: self.stats.clone(),
        }
    }

    pub fn database(&self) -> &Arc<Database> {
        &self.db
    }

    async fn read(&self, sql: &str, params: Vec<Value>) -> Result<Rows, DbError> {
        match self.reads {
            Reads::Replicas => self.db.query(sql, params).await,
            Reads::Primary => self.db.query_primary(sql, params).await,
        }
    }

    pub async fn get(&self, key: &Key) -> Result<Option<Entry>, KvError> {
        self.stats.time("get", self.get_inner(key)).await
    }

    async fn get_inner(&self, key: &Key) -> Result<Option<Entry>, KvError> {
        let rows = self
            .read(
                &format!(
                    "SELECT key, value, versionstamp FROM kv_entries WHERE key = ?1 AND {LIVE}"
                ),
                vec![Value::Blob(key.encode())],
            )
            .await?;
        Ok(entries(&rows).into_iter().next())
    }

    /// Entries for `keys` in request order; `None` where a key is missing.
    pub async fn get_many(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, KvError> {
        self.stats.time("get_many", self.get_many_inner(keys)).await
    }

    async fn get_many_inner(&self, keys: &[Key]) -> Result<Vec<Option<Entry>>, KvError> {
        if keys.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (1..=keys.len()).map(|i| format!("?{i}")).collect();
        let rows = self
            .read(
                &format!(
                    "SELECT key, value, versionstamp FROM kv_entries WHERE key IN ({}) AND {LIVE}",
                    placeholders.join(", ")
                ),
                keys.iter().map(|k| Value::Blob(k.encode())).collect(),
            )
            .await?;
        let found = entries(&rows);
        Ok(keys
            .iter()
            .map(|k| found.iter().find(|e| &e.key == k).cloned())
            .collect())
    }

    pub async fn set(
        &self,
        key: &Key,
        value: &Json,
        expires_in: Option<Duration>,
    ) -> Result<String, KvError> {
        self.stats
            .time("set", self.set_inner(key, value, expires_in))
            .await
    }

    async fn set_inner(
        &self,
        key: &Key,
        value: &Json,
        expires_in: Option<Duration>,
    ) -> Result<String, KvError> {
        require_parts(key)?;
        let vs = versionstamp();
        self.db
            .execute(
                "INSERT OR REPLACE INTO kv_entries (key, value, versionstamp, expires_at) VALUES (?1, ?2, ?3, ?4)",
                vec![
                    Value::Blob(key.encode()),
                    Value::Blob(serde_json::to_vec(value).unwrap_or_default()),
                    Value::Text(vs.clone()),
                    expires_at(expires_in),
                ],
            )
            .await?;
        Ok(vs)
    }

    /// Deletes the key, and unless `exact`, every key below it.
    pub async fn delete(&self, key: &Key, exact: bool) -> Result<u64, KvError> {
        self.stats
            .time("delete", self.delete_inner(key, exact))
            .await
    }

    async fn delete_inner(&self, key: &Key, exact: bool) -> Result<u64, KvError> {
        require_parts(key)?;
        let enc = key.encode();
        let n = match (exact, key.prefix_range()) {
            (false, Some((start, end))) => {
                self.db
                    .execute(
                        "DELETE FROM kv_entries WHERE key = ?1 OR (key >= ?2 AND key < ?3)",
                        vec![Value::Blob(enc), Value::Blob(start), Value::Blob(end)],
                    )
                    .await?
            }
            _ => {
                self.db
                    .execute(
                        "DELETE FROM kv_entries WHERE key = ?1",
                        vec![Value::Blob(enc)],
                    )
                    .await?
            }
        };
        Ok(n)
    }

    pub async fn list(&self, sel: &Selector) -> Result<Vec<Entry>, KvError> {
        self.stats.time("list", self.list_inner(sel)).await
    }

    async fn list_inner(&self, sel: &Selector) -> Result<Vec<Entry>, KvError> {
        let (mut sql, mut params) = range_sql(&sel.prefix);
        if let Some(start) = &sel.start {
            params.push(Value::Blob(start.encode()));
            sql.push_str(&format!(" AND key >= ?{}", params.len()));
        }
        if let Some(end) = &sel.end {
            params.push(Value::Blob(end.encode()));
            sql.push_str(&format!(" AND key < ?{}", params.len()));
        }
        params.push(Value::Integer(sel.limit as i64));
        let order = if sel.reverse { "DESC" } else { "ASC" };
        let rows = self
            .read(
                &format!("SELECT key, value, versionstamp FROM kv_entries WHERE {sql} ORDER BY key {order} LIMIT ?{}", params.len()),
                params,
            )
            .await?;
        Ok(entries(&rows))
    }

    pub async fn count(&self, prefix: &Key) -> Result<u64, KvError> {
        self.stats.time("count", self.count_inner(prefix)).await
    }

    async fn count_inner(&self, prefix: &Key) -> Result<u64, KvError> {
        let (sql, params) = range_sql(prefix);
        let rows = self
            .read(
                &format!("SELECT COUNT(*) FROM kv_entries WHERE {sql}"),
                params,
            )
            .await?;
        Ok(match rows.scalar() {
            Some(Value::Integer(n)) => *n as u64,
            _ => 0,
        })
    }

    /// A page after `cursor` (an opaque value from the previous page).
    pub async fn paginate(
        &self,
        prefix: &Key,
        cursor: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Page, KvError> {
        self.stats
            .time(
                "paginate",
                self.paginate_inner(prefix, cursor, limit, reverse),
            )
            .await
    }

    async fn paginate_inner(
        &self,
        prefix: &Key,
        cursor: Option<&str>,
        limit: usize,
        reverse: bool,
    ) -> Result<Page, KvError> {
        let (mut sql, mut params) = range_sql(prefix);
        if let Some(c) = cursor.filter(|c| !c.is_empty()) {
            let after = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(c)
                .map_err(|_| KvError::Invalid("Invalid cursor".into()))?;
            params.push(Value::Blob(after));
            let op = if reverse { "<" } else { ">" };
            sql.push_str(&format!(" AND key {op} ?{}", params.len()));
        }
        params.push(Value::Integer(limit as i64 + 1));
        let order = if reverse { "DESC" } else { "ASC" };
        let rows = self
            .read(
                &format!("SELECT key, value, versionstamp FROM kv_entries WHERE {sql} ORDER BY key {order} LIMIT ?{}", params.len()),
                params,
            )
            .await?;
        let mut found = entries(&rows);
        let has_more = found.len() > limit;
        found.truncate(limit);
        let cursor = has_more
            .then(|| found.last())
            .flatten()
            .map(|e| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(e.key.encode()));
        Ok(Page {
            entries: found,
            cursor,
            has_more,
        })
    }

    /// Applies every mutation if every check holds, all in one write transaction; returns
    /// the new versionstamp, or `None` when a check failed (nothing applied).
    pub async fn atomic(
        &self,
        checks: &[Check],
        mutations: &[Mutation],
    ) -> Result<Option<String>, KvError> {
        self.stats
            .time("atomic", self.atomic_inner(checks, mutations))
            .await
    }

    async fn atomic_inner(
        &self,
        checks: &[Check],
        mutations: &[Mutation],
    ) -> Result<Option<String>, KvError> {
        for m in mutations {
            require_parts(mutation_key(m))?;
        }
        let deadline = std::time::Instant::now() + BUSY_RETRY_FOR;
        let mut delay = Duration::from_millis(5);
        loop {
            match self.try_atomic(checks, mutations).await {
                // Another writer holds the lock: try again rather than failing the caller.
                Err(KvError::Db(DbError::Unavailable(msg)))
                    if is_busy(&msg) && std::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_millis(200));
                }
                other => return other,
            }
        }
    }

    async fn try_atomic(
        &self,
        checks: &[Check],
        mutations: &[Mutation],
    ) -> Result<Option<String>, KvError> {
        let conn = self.db.pooled()?;
        let tx = conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .await
            .map_err(DbError::from)?;
        for c in checks {
            let current = current_versionstamp(&tx, &c.key).await?;
            if current != c.versionstamp {
                tx.rollback().await.map_err(DbError::from)?;
                return Ok(None);
            }
        }
        let vs = versionstamp();
        for m in mutations {
            if let Err(e) = apply(&tx, m, &vs).await {
                // Nothing of the commit applies (dropping it would roll back too; remote
                // transactions only on a best-effort task).
                let _ = tx.rollback().await;
                return Err(e);
            }
        }
        tx.commit().await.map_err(DbError::from)?;
        Ok(Some(vs))
    }

    /// Deletes expired entries; returns how many.
    pub async fn purge_expired(&self) -> Result<u64, KvError> {
        Ok(self
            .db
            .execute(
                "DELETE FROM kv_entries WHERE expires_at IS NOT NULL AND expires_at <= unixepoch()",
                Vec::new(),
            )
            .await?)
    }
}

fn is_busy(msg: &str) -> bool {
    let m = msg.to_ascii_lowercase();
    m.contains("locked") || m.contains("busy")
}

fn require_parts(key: &Key) -> Result<(), KvError> {
    if key.is_empty() {
        Err(KvError::Invalid("Key must have at least one part".into()))
    } else {
        Ok(())
    }
}

impl Mutation {
    /// Its `type` in the API, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            Mutation::Set { .. } => "set",
            Mutation::Delete { .. } => "delete",
            Mutation::Sum { .. } => "sum",
            Mutation::Max { .. } => "max",
            Mutation::Min { .. } => "min",
            Mutation::Append { .. } => "append",
            Mutation::Prepend { .. } => "prepend",
        }
    }
}

fn mutation_key(m: &Mutation) -> &Key {
    match m {
        Mutation::Set { key, .. }
        | Mutation::Delete { key }
        | Mutation::Sum { key, .. }
        | Mutation::Max { key, .. }
        | Mutation::Min { key, .. }
        | Mutation::Append { key, .. }
        | Mutation::Prepend { key, .. } => key,
    }
}

/// `expires_at`: now + expiresIn, in whole seconds, rounded down.
fn expires_at(expires_in: Option<Duration>) -> Value {
    match expires_in.filter(|d| !d.is_zero()) {
        None => Value::Null,
        Some(d) => {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default();
            Value::Integer((now.as_secs() + d.as_millis() as u64 / 1000) as i64)
        }
    }
}

pub fn versionstamp() -> String {
    uuid::Uuid::now_v7().to_string()
}

/// The live-entry condition plus the prefix range, and its parameters.
fn range_sql(prefix: &Key) -> (String, Vec<Value>) {
    match prefix.prefix_range() {
        None => (LIVE.to_string(), Vec::new()),
        Some((start, end)) => (
            format!("{LIVE} AND key >= ?1 AND key < ?2"),
            vec![Value::Blob(start), Value::Blob(end)],
        ),
    }
}

/// Rows of `key, value, versionstamp` as entries; rows that do not decode (foreign data)
/// are skipped with a warning rather than failing the whole read.
fn entries(rows: &Rows) -> Vec<Entry> {
    rows.rows
        .iter()
        .filter_map(|r| {
            let (Value::Blob(k), v, Value::Text(vs)) = (&r[0], &r[1], &r[2]) else {
                return None;
            };
            let key = match Key::decode(k) {
                Ok(key) => key,
                Err(e) => {
                    log::warn!("keyval: skipping an entry whose key does not decode: {e}");
                    return None;
                }
            };
            Some(Entry {
                key,
                value: decode_value(v),
                versionstamp: vs.clone(),
            })
        })
        .collect()
}

fn decode_value(v: &Value) -> Json {
    let bytes: &[u8] = match v {
        Value::Blob(b) => b,
        Value::Text(t) => t.as_bytes(),
        _ => return Json::Null,
    };
    serde_json::from_slice(bytes).unwrap_or(Json::Null)
}

async fn current_versionstamp(
    tx: &libsql::Transaction,
    key: &Key,
) -> Result<Option<String>, KvError> {
    let rows = buntime_database::db::query(
        tx,
        &format!("SELECT versionstamp FROM kv_entries WHERE key = ?1 AND {LIVE}"),
        vec![Value::Blob(key.encode())],
    )
    .await?;
    Ok(match rows.scalar() {
        Some(Value::Text(vs)) => Some(vs.clone()),
        _ => None,
    })
}

async fn current_value(tx: &libsql::Transaction, key: &Key) -> Result<Option<Json>, KvError> {
    let rows = buntime_database::db::query(
        tx,
        &format!("SELECT value FROM kv_entries WHERE key = ?1 AND {LIVE}"),
        vec![Value::Blob(key.encode())],
    )
    .await?;
    Ok(rows.scalar().map(decode_value))
}

async fn store(
    tx: &libsql::Transaction,
    key: &Key,
    value: &Json,
    vs: &str,
    expires_in: Option<Duration>,
) -> Result<(), KvError> {
    tx.execute(
        "INSERT OR REPLACE INTO kv_entries (key, value, versionstamp, expires_at) VALUES (?1, ?2, ?3, ?4)",
        vec![
            Value::Blob(key.encode()),
            Value::Blob(serde_json::to_vec(value).unwrap_or_default()),
            Value::Text(vs.to_string()),
            expires_at(expires_in),
        ],
    )
    .await
    .map_err(DbError::from)?;
    Ok(())
}

/// A number, or a bigint written as `{"__type":"bigint","value":"12"}` within the safe
/// integer range (the original converts bigint operands to numbers the same way). Both
/// the operand of `sum`/`max`/`min` and the value it applies to.
pub(crate) fn number_operand(v: &Json) -> Option<f64> {
    if let Some(n) = v.as_f64() {
        return Some(n);
    }
    let text = v.get("value")?.as_str()?;
    (v.get("__type")?.as_str()? == "bigint")
        .then(|| text.parse::<i64>().ok())
        .flatten()
        .filter(|n| n.unsigned_abs() <= 9_007_199_254_740_991)
        .map(|n| n as f64)
}

async fn apply(tx: &libsql::Transaction, m: &Mutation, vs: &str) -> Result<(), KvError> {
    match m {
        Mutation::Set {
            key,
            value,
            expires_in,
        } => store(tx, key, value, vs, *expires_in).await,
        Mutation::Delete { key } => {
            tx.execute(
                "DELETE FROM kv_entries WHERE key = ?1",
                vec![Value::Blob(key.encode())],
            )
            .await
            .map_err(DbError::from)?;
            Ok(())
        }
        Mutation::Sum { key, value }
        | Mutation::Max { key, value }
        | Mutation::Min { key, value } => {
            // A value of another type is refused, not taken for 0 and overwritten.
            let current = match current_value(tx, key).await? {
                None => None,
                Some(v) => Some(number_operand(&v).ok_or_else(|| {
                    KvError::Invalid(format!("{}: the value at {key} is not a number", m.kind()))
                })?),
            };
            let next = match m {
                Mutation::Sum { .. } => current.unwrap_or(0.0) + value,
                Mutation::Max { .. } => current.map_or(*value, |c| c.max(*value)),
                _ => current.map_or(*value, |c| c.min(*value)),
            };
            // JSON has no infinity: serde_json would store `null`.
            if !next.is_finite() {
                return Err(KvError::Invalid(format!(
                    "{}: the result at {key} is out of range",
                    m.kind()
                )));
            }
            store(tx, key, &number_json(next), vs, None).await
        }
        Mutation::Append { key, values } | Mutation::Prepend { key, values } => {
            let current = match current_value(tx, key).await? {
                None => Vec::new(),
                Some(Json::Array(items)) => items,
                Some(_) => {
                    return Err(KvError::Invalid(format!(
                        "{}: the value at {key} is not an array",
                        m.kind()
                    )));
                }
            };
            let next: Vec<Json> = if matches!(m, Mutation::Append { .. }) {
                current.into_iter().chain(values.iter().cloned()).collect()
            } else {
                values.iter().cloned().chain(current).collect()
            };
            store(tx, key, &Json::Array(next), vs, None).await
        }
    }
}
