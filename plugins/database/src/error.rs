//! Database errors, sorted into what the caller did wrong (SQL, answered 400 with the
//! engine's message) and what is wrong with the database (answered 503).

use buntime_plugin_sdk::ApiError;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DbError {
    /// The database cannot be reached or cannot take the operation now.
    #[error("Database unavailable: {0}")]
    Unavailable(String),
    /// The statement failed; the engine's message.
    #[error("{0}")]
    Sql(String),
}

impl DbError {
    pub fn is_unavailable(&self) -> bool {
        matches!(self, DbError::Unavailable(_))
    }
}

impl From<DbError> for ApiError {
    fn from(e: DbError) -> ApiError {
        match e {
            DbError::Unavailable(detail) => {
                log::warn!("database unavailable: {detail}");
                ApiError::unavailable("Database unavailable")
            }
            DbError::Sql(message) => ApiError::bad_request(message),
        }
    }
}

// SQLite result codes that mean "the database, not the statement".
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;

impl From<libsql::Error> for DbError {
    fn from(e: libsql::Error) -> DbError {
        use libsql::Error as E;
        match e {
            E::SqliteFailure(code, msg) => {
                let primary = code & 0xff;
                if [
                    SQLITE_BUSY,
                    SQLITE_LOCKED,
                    SQLITE_READONLY,
                    SQLITE_IOERR,
                    SQLITE_FULL,
                    SQLITE_CANTOPEN,
                ]
                .contains(&primary)
                {
                    DbError::Unavailable(msg)
                } else {
                    DbError::Sql(msg)
                }
            }
            E::RemoteSqliteFailure(_, _, msg) => DbError::Sql(msg),
            E::Sqlite3SyntaxError(..)
            | E::Sqlite3ParserError(_)
            | E::Sqlite3UnsupportedStatement => DbError::Sql(e.to_string()),
            E::ConnectionFailed(msg) => DbError::Unavailable(msg),
            E::Hrana(inner) => classify_remote(&inner.to_string()),
            other => DbError::Sql(other.to_string()),
        }
    }
}

/// The remote client reports SQL errors as text; pull the engine's message out of it.
/// Two shapes occur:
/// `stream error: ``Error { message: "SQLite error: no such table: x", code: "SQLITE_ERROR" }```
/// `cursor error: ``error at step 0: (error code: SQLITE_CONSTRAINT) ``SQLite error: ...````
pub fn classify_remote(text: &str) -> DbError {
    if text.contains("STREAM_EXPIRED") {
        return DbError::Unavailable(text.to_string());
    }
    match stream_error_message(text).or_else(|| cursor_error_message(text)) {
        Some(message) => DbError::Sql(message),
        None => DbError::Unavailable(text.to_string()),
    }
}

fn cursor_error_message(text: &str) -> Option<String> {
    let after_code = &text[text.find("(error code: ")?..];
    let start = after_code.find(") `")? + ") `".len();
    let rest = after_code[start..].trim_end_matches('`');
    Some(strip_engine_prefix(rest))
}

fn strip_engine_prefix(message: &str) -> String {
    message
        .strip_prefix("SQLite error: ")
        .unwrap_or(message)
        .to_string()
}

fn stream_error_message(text: &str) -> Option<String> {
    let start = text.find("message: \"")? + "message: \"".len();
    let rest = &text[start..];
    let end = rest.rfind("\", code: \"")?;
    let raw = &rest[..end];
    let unescaped = raw.replace("\\\"", "\"").replace("\\\\", "\\");
    Some(strip_engine_prefix(&unescaped))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    #[test]
    fn remote_sql_errors_keep_the_engine_message() {
        let text = r#"stream error: `Error { message: "SQLite error: NOT NULL constraint failed: kv_entries.value", code: "SQLITE_CONSTRAINT" }`"#;
        assert_eq!(
            classify_remote(text),
            DbError::Sql("NOT NULL constraint failed: kv_entries.value".into())
        );
        let quoted = r#"stream error: `Error { message: "SQLite input error: near \"SELEC\": syntax error", code: "SQL_PARSE_ERROR" }`"#;
        assert_eq!(
            classify_remote(quoted),
            DbError::Sql("SQLite input error: near \"SELEC\": syntax error".into())
        );
    }

    #[test]
    fn cursor_errors_keep_the_engine_message() {
        let text = "cursor error: `error at step 0: (error code: SQLITE_CONSTRAINT) `SQLite error: NOT NULL constraint failed: t.v``";
        assert_eq!(
            classify_remote(text),
            DbError::Sql("NOT NULL constraint failed: t.v".into())
        );
    }

    #[test]
    fn transport_errors_are_unavailable() {
        assert!(classify_remote("http error: `error trying to connect: tcp connect error: Connection refused (os error 111)`").is_unavailable());
        assert!(classify_remote("api error: `status=401 Unauthorized, body=...`").is_unavailable());
    }

    #[test]
    fn local_codes() {
        assert!(
            DbError::from(libsql::Error::SqliteFailure(5, "database is locked".into()))
                .is_unavailable()
        );
        assert_eq!(
            DbError::from(libsql::Error::SqliteFailure(1, "no such table: x".into())),
            DbError::Sql("no such table: x".into())
        );
    }

    #[test]
    fn api_errors() {
        let e: ApiError = DbError::Unavailable("refused".into()).into();
        assert_eq!(e.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(e.message, "Database unavailable");
        let e: ApiError = DbError::Sql("no such table: x".into()).into();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
    }
}
