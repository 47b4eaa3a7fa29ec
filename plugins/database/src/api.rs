//! `/database/api/*` (SPEC 7.1, admin only).

use std::time::Instant;

use buntime_plugin_sdk::api::decode_segment;
use buntime_plugin_sdk::openapi::Paths;
use buntime_plugin_sdk::{ApiError, ApiRequest, ApiResponse, ApiResult};
use fallible_iterator::FallibleIterator;
use http::Method;
use libsql::Value;
use serde_json::{Map, Value as Json, json};
use sqlite3_parser::ast::{Cmd, Stmt};
use sqlite3_parser::lexer::sql::Parser;

use crate::db::{Cap, Database, Rows};
use crate::value::{to_json, to_sql};

const MAX_ROWS_LIMIT: i64 = 1000;
/// What one read of the admin API may return (SQL console, table rows).
const RESULT_CAP: Cap = Cap {
    rows: 10_000,
    bytes: 32 << 20,
};

pub async fn handle(db: &Database, req: &ApiRequest) -> ApiResult {
    let segs = req.segments();
    match (&req.method, segs.as_slice()) {
        (&Method::POST, ["api", "query"]) => query(db, req).await,
        (&Method::GET, ["api", "tables"]) => tables(db).await,
        (&Method::GET, ["api", "tables", name, "schema"]) => {
            schema(db, &decode_segment(name)?).await
        }
        (&Method::GET, ["api", "tables", name, "rows"]) => {
            rows(db, req, &decode_segment(name)?).await
        }
        (&Method::GET, ["api", "health"]) => health(db).await,
        _ => Ok(ApiResponse::not_found()),
    }
}

pub fn openapi() -> Json {
    let mut p = Paths::new();
    p.add(
        "POST",
        "/database/api/query",
        "Run an SQL statement with optional parameters",
        true,
        &[200, 400, 401, 503],
    )
    .add(
        "GET",
        "/database/api/tables",
        "List tables and views",
        true,
        &[200, 401, 503],
    )
    .add(
        "GET",
        "/database/api/tables/{name}/schema",
        "Columns of a table",
        true,
        &[200, 401, 404, 503],
    )
    .add(
        "GET",
        "/database/api/tables/{name}/rows",
        "Rows of a table (limit <= 1000, offset)",
        true,
        &[200, 400, 401, 404, 503],
    )
    .add(
        "GET",
        "/database/api/health",
        "Primary and replica health",
        true,
        &[200, 401],
    );
    p.into_value()
}

async fn query(db: &Database, req: &ApiRequest) -> ApiResult {
    let body: Json = req.json()?;
    let sql = body
        .get("sql")
        .and_then(Json::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing or invalid SQL query"))?;
    runnable_statement(sql)?;
    let params = match body.get("params") {
        None | Some(Json::Null) => Vec::new(),
        Some(Json::Array(items)) => items
            .iter()
            .map(to_sql)
            .collect::<Result<Vec<Value>, String>>()
            .map_err(ApiError::bad_request)?,
        Some(_) => return Err(ApiError::bad_request("params must be an array")),
    };
    let start = Instant::now();
    let (rows, count) = if is_read(sql) {
        let rows = db.query_within(sql, params, RESULT_CAP).await?;
        let n = rows.rows.len() as u64;
        (rows, n)
    } else {
        let conn = db.connect()?;
        // Uncapped: a write has run by the time its rows come (`RETURNING`), and an error
        // would say it had not.
        let rows = crate::db::timed(crate::db::query(&conn, sql, params)).await?;
        let n = if rows.columns.is_empty() {
            conn.changes()
        } else {
            rows.rows.len() as u64
        };
        (rows, n)
    };
    let duration = (start.elapsed().as_secs_f64() * 1e6).round() / 1e3;
    Ok(ApiResponse::ok(&json!({
        "rows": objects(&rows),
        "rowCount": count,
        "duration": duration,
    })))
}

/// SQLite runs the first statement of a string and ignores the rest (libsql's remote
/// client drops them too), so `CREATE TABLE t (a); INSERT ...` answered 200 without the
/// insert. More than one is refused instead. SQL the parser cannot read goes to the
/// database as it is, which names its own errors (the parser may lag SQLite).
///
/// Statements that reach files other than the database are refused as well: `ATTACH`
/// opens or creates any file the gateway's user can write, `VACUUM INTO` writes a copy
/// anywhere. Through an HTTP console, an admin credential would be a way to write files
/// on the server (sqld refuses `ATTACH` on its own).
fn runnable_statement(sql: &str) -> Result<(), ApiError> {
    // Boxed: the parser is several kilobytes.
    let mut parser = Box::new(Parser::new(sql.as_bytes()));
    let first = match parser.next() {
        Ok(Some(cmd)) => cmd,
        // Unread by the parser: the keyword decides (the database names other errors).
        _ if reaches_files(&first_word(sql)) => return Err(files_refused()),
        _ => return Ok(()),
    };
    if let Cmd::Stmt(Stmt::Attach { .. } | Stmt::Detach(_) | Stmt::Vacuum(_, Some(_))) = first {
        return Err(files_refused());
    }
    match parser.next() {
        Ok(None) => Ok(()),
        _ => Err(ApiError::bad_request(
            "Only one SQL statement per query: the text goes on after the first",
        )),
    }
}

fn reaches_files(first_word: &str) -> bool {
    first_word == "ATTACH" || first_word == "DETACH" || first_word == "VACUUM"
}

fn files_refused() -> ApiError {
    ApiError::bad_request(
        "ATTACH, DETACH and VACUUM INTO are not run through the API: they reach files \
         other than the database",
    )
}

/// The statement's first keyword, in capitals.
fn first_word(sql: &str) -> String {
    sql.trim_start()
        .split(|c: char| c.is_whitespace() || c == '(')
        .next()
        .unwrap_or("")
        .to_ascii_uppercase()
}

/// Statements that only read may go to a replica; everything else runs on the primary.
fn is_read(sql: &str) -> bool {
    let first = first_word(sql);
    first == "SELECT" || first == "EXPLAIN"
}

fn objects(rows: &Rows) -> Vec<Json> {
    rows.rows
        .iter()
        .map(|r| {
            let mut m = Map::new();
            for (c, v) in rows.columns.iter().zip(r) {
                m.insert(c.clone(), to_json(v));
            }
            Json::Object(m)
        })
        .collect()
}

async fn tables(db: &Database) -> ApiResult {
    let rows = db
        .query(
            "SELECT name, type FROM sqlite_master WHERE type IN ('table', 'view') AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND name NOT LIKE 'libsql\\_%' ESCAPE '\\' AND name NOT LIKE '\\_%' ESCAPE '\\' ORDER BY name",
            Vec::new(),
        )
        .await?;
    Ok(ApiResponse::ok(&json!({ "tables": objects(&rows) })))
}

/// 404 unless `name` is a table or view; the name is then safe to quote into SQL.
async fn require_table(db: &Database, name: &str) -> Result<(), ApiError> {
    let found = db
        .query(
            "SELECT 1 FROM sqlite_master WHERE type IN ('table', 'view') AND name = ?1",
            vec![Value::from(name.to_string())],
        )
        .await?;
    if found.is_empty() {
        Err(ApiError::not_found(format!("Table not found: {name}")))
    } else {
        Ok(())
    }
}

async fn schema(db: &Database, name: &str) -> ApiResult {
    require_table(db, name).await?;
    let info = db
        .query(
            "SELECT name, type, \"notnull\", pk FROM pragma_table_info(?1)",
            vec![Value::from(name.to_string())],
        )
        .await?;
    let columns: Vec<Json> = info
        .rows
        .iter()
        .map(|r| {
            json!({
                "name": to_json(&r[0]),
                "type": to_json(&r[1]),
                "nullable": matches!(r[2], Value::Integer(0)),
                "pk": matches!(r[3], Value::Integer(n) if n > 0),
            })
        })
        .collect();
    Ok(ApiResponse::ok(
        &json!({ "table": name, "columns": columns }),
    ))
}

async fn rows(db: &Database, req: &ApiRequest, name: &str) -> ApiResult {
    let limit = int_param(req, "limit", 100)?.min(MAX_ROWS_LIMIT);
    if limit <= 0 {
        return Err(ApiError::bad_request("limit must be a positive integer"));
    }
    let offset = int_param(req, "offset", 0)?;
    if offset < 0 {
        return Err(ApiError::bad_request(
            "offset must be zero or a positive integer",
        ));
    }
    require_table(db, name).await?;
    let quoted = format!("\"{}\"", name.replace('"', "\"\""));
    let total = db
        .query(&format!("SELECT COUNT(*) FROM {quoted}"), Vec::new())
        .await?;
    let rows = db
        .query_within(
            &format!("SELECT * FROM {quoted} LIMIT ?1 OFFSET ?2"),
            vec![Value::from(limit), Value::from(offset)],
            RESULT_CAP,
        )
        .await?;
    Ok(ApiResponse::ok(&json!({
        "table": name,
        "rows": objects(&rows),
        "total": total.scalar().map(to_json).unwrap_or(json!(0)),
        "limit": limit,
        "offset": offset,
    })))
}

fn int_param(req: &ApiRequest, name: &str, default: i64) -> Result<i64, ApiError> {
    match req.query_param(name) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse()
            .map_err(|_| ApiError::bad_request(format!("{name} must be an integer"))),
    }
}

async fn health(db: &Database) -> ApiResult {
    let (primary, replicas) = db.health().await;
    let status = if !primary.ok {
        "unhealthy"
    } else if replicas.iter().all(|r| r.ok) {
        "healthy"
    } else {
        "degraded"
    };
    Ok(ApiResponse::ok(&json!({
        "status": status,
        "primary": primary,
        "replicas": replicas,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_are_recognised() {
        assert!(is_read("  select * from t"));
        assert!(is_read("SELECT(1)"));
        assert!(is_read("explain query plan select 1"));
        assert!(!is_read("INSERT INTO t VALUES (1)"));
        assert!(!is_read("WITH x AS (SELECT 1) DELETE FROM t"));
        assert!(!is_read("PRAGMA journal_mode=DELETE"));
    }

    #[test]
    fn a_second_statement_is_refused() {
        for one in [
            "select 1",
            "select 1;",
            "select 1; -- done",
            "select 1 /* a; b */",
            "select ';' as s;\n\n",
            "CREATE TRIGGER tr AFTER INSERT ON t BEGIN UPDATE t SET a = 1; DELETE FROM u; END",
            "with x as (select 1) select * from x",
            // Not SQL the parser reads: the database names the error.
            "garbage garbage",
        ] {
            assert!(runnable_statement(one).is_ok(), "{one}");
        }
        for more in [
            "create table t (a); insert into t values (1)",
            "select 1; select 2",
            "select 1; garbage",
            "select 1;; select 2",
        ] {
            assert!(runnable_statement(more).is_err(), "{more}");
        }
        // Files other than the database: refused, read by the parser or not.
        for files in [
            "ATTACH DATABASE '/tmp/x.db' AS x",
            "attach '/tmp/x.db' as x",
            "DETACH x",
            "VACUUM INTO '/tmp/copy.db'",
            "vacuum main into '/tmp/copy.db'",
            "ATTACH garbage garbage",
        ] {
            assert!(
                runnable_statement(files).is_err_and(|e| e.to_string().contains("ATTACH")),
                "{files}"
            );
        }
        assert!(runnable_statement("VACUUM").is_ok());
        assert!(
            runnable_statement("EXPLAIN ATTACH 'x.db' AS x").is_ok(),
            "explained, not run"
        );
    }
}
