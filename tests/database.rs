//! SPEC 7.1 against the real binary: every test runs on a local file and on a real sqld.

mod common;

use std::time::Duration;

use common::sqld::{Sqld, token};
use common::{Backend, Gateway, Options, eventually, start_on};
use serde_json::{Value, json};

fn sql(gw: &Gateway, sql: &str, params: Value) -> common::Resp {
    gw.json(
        "POST",
        "/database/api/query",
        &[],
        &json!({"sql": sql, "params": params}),
    )
}

fn query_runs_statements_with_parameters(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let r = sql(
        gw,
        "CREATE TABLE pets (id INTEGER PRIMARY KEY, name TEXT NOT NULL, weight REAL, tag BLOB)",
        json!([]),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = sql(
        gw,
        "INSERT INTO pets (name, weight, tag) VALUES (?, ?, X'00ff')",
        json!(["rex", 12.5]),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["rowCount"], 1);
    sql(
        gw,
        "INSERT INTO pets (name) VALUES (?1), (?2)",
        json!(["a", "b"]),
    );
    let r = sql(
        gw,
        "SELECT id, name, weight, tag FROM pets WHERE name = ?",
        json!(["rex"]),
    );
    let v = r.json();
    assert_eq!(v["rowCount"], 1);
    assert!(v["duration"].is_number());
    assert_eq!(
        v["rows"],
        json!([{"id": 1, "name": "rex", "weight": 12.5, "tag": "AP8="}])
    );
    let r = sql(
        gw,
        "UPDATE pets SET weight = 1 WHERE weight IS NULL",
        json!(null),
    );
    assert_eq!(r.json()["rowCount"], 2);
}
crate::on_both!(query_runs_statements_with_parameters);

/// A read that would return more than 10,000 rows or 32 MiB is refused with a 400 that
/// names the bound, on the console and the rows API alike: a `SELECT *` on a big table
/// built the whole result in the gateway's memory (the ingress's). A write's rows come
/// back whole: it has run by then.
fn big_results_are_refused_not_built(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let make = "CREATE TABLE n AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM c \
                WHERE i < 10001) SELECT i FROM c";
    assert_eq!(sql(gw, make, json!([])).status, 200);
    let r = sql(gw, "SELECT * FROM n", json!([]));
    assert_eq!(r.status, 400, "a result of 10,001 rows was sent");
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(
        error.contains("10000 rows") && error.contains("LIMIT"),
        "{error}"
    );
    let r = sql(gw, "SELECT * FROM n LIMIT 10000", json!([]));
    assert_eq!(r.json()["rowCount"], 10000);
    let r = sql(gw, "DELETE FROM n WHERE i > 0 RETURNING i", json!([]));
    assert_eq!(r.json()["rowCount"], 10001, "{}", r.status);

    let blobs = "CREATE TABLE b AS WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i + 1 \
                 FROM c WHERE i < 40) SELECT i, zeroblob(1048576) AS data FROM c";
    assert_eq!(sql(gw, blobs, json!([])).status, 200);
    assert_eq!(sql(gw, "SELECT * FROM b", json!([])).status, 400);
    let r = gw.get("/database/api/tables/b/rows?limit=1000");
    assert_eq!(r.status, 400, "40 MiB of rows were sent");
    let r = gw.get("/database/api/tables/b/rows?limit=3");
    assert_eq!(r.json()["rows"].as_array().unwrap().len(), 3);
}
crate::on_both!(big_results_are_refused_not_built);

fn sql_errors_are_400_with_the_engine_message(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let r = sql(gw, "SELEC 1", json!([]));
    assert_eq!(r.status, 400, "{r:?}\n{}", gw.logs());
    assert!(
        r.json()["error"].as_str().unwrap().contains("syntax error"),
        "{r:?}"
    );
    // The client's mistake, answered to the client: libsql's SQL parser logged each one as
    // an ERROR (with the statement's text) in the gateway's log.
    assert!(!gw.stderr().contains("syntax error"), "{}", gw.logs());
    let r = sql(gw, "SELECT * FROM missing_table", json!([]));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("no such table: missing_table"),
        "{r:?}"
    );
    sql(gw, "CREATE TABLE t (v TEXT NOT NULL)", json!([]));
    let r = sql(gw, "INSERT INTO t (v) VALUES (NULL)", json!([]));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"]
            .as_str()
            .unwrap()
            .contains("NOT NULL constraint failed"),
        "{r:?}"
    );
    for body in [json!({}), json!({"sql": ""}), json!({"sql": 42})] {
        let r = gw.json("POST", "/database/api/query", &[], &body);
        assert_eq!(r.status, 400);
        assert_eq!(r.json(), json!({"error": "Missing or invalid SQL query"}));
    }
    let r = gw.json(
        "POST",
        "/database/api/query",
        &[],
        &json!({"sql": "SELECT ?", "params": [[1]]}),
    );
    assert_eq!(r.status, 400);
    let r = gw.send(
        "POST",
        "/database/api/query",
        &[("content-type", "application/json")],
        Some(b"{nope"),
    );
    assert_eq!(r.status, 400);
    let r = gw.send(
        "POST",
        "/database/api/query",
        &[("content-type", "text/plain")],
        Some(b"SELECT 1"),
    );
    assert_eq!(r.status, 415);
    // SQLite runs only the first statement of a string: a second is refused, not dropped.
    let r = sql(
        gw,
        "CREATE TABLE two (a); INSERT INTO two VALUES (1)",
        json!([]),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.json()["error"],
        "Only one SQL statement per query: the text goes on after the first"
    );
    let r = sql(
        gw,
        "SELECT name FROM sqlite_master WHERE name = 'two'",
        json!([]),
    );
    assert_eq!(r.json()["rows"], json!([]), "nothing ran: {r:?}");
    let r = sql(gw, "SELECT 1 AS one; -- a trailing comment", json!([]));
    assert_eq!(r.json()["rows"], json!([{"one": 1}]), "{r:?}");
    // No file but the database: ATTACH would create this one, VACUUM INTO write it.
    let elsewhere = gw.path("elsewhere.db");
    for statement in [
        format!("ATTACH DATABASE '{}' AS x", elsewhere.display()),
        format!("VACUUM INTO '{}'", elsewhere.display()),
    ] {
        let r = sql(gw, &statement, json!([]));
        assert_eq!(r.status, 400, "{statement}: {r:?}");
        assert!(
            !elsewhere.exists(),
            "{statement} wrote {}",
            elsewhere.display()
        );
    }
}
crate::on_both!(sql_errors_are_400_with_the_engine_message);

fn tables_schema_and_rows(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    sql(
        gw,
        "CREATE TABLE people (id INTEGER PRIMARY KEY, name TEXT NOT NULL, note TEXT)",
        json!([]),
    );
    for i in 0..5 {
        sql(
            gw,
            "INSERT INTO people (name) VALUES (?)",
            json!([format!("p{i}")]),
        );
    }
    let tables = gw.get("/database/api/tables").json();
    let list = tables["tables"].as_array().unwrap();
    assert!(
        list.contains(&json!({"name": "people", "type": "table"})),
        "{tables}"
    );
    assert!(
        !list
            .iter()
            .any(|t| t["name"].as_str().unwrap().starts_with("sqlite_"))
    );

    let schema = gw.get("/database/api/tables/people/schema").json();
    assert_eq!(
        schema,
        json!({"table": "people", "columns": [
            {"name": "id", "type": "INTEGER", "nullable": true, "pk": true},
            {"name": "name", "type": "TEXT", "nullable": false, "pk": false},
            {"name": "note", "type": "TEXT", "nullable": true, "pk": false},
        ]})
    );
    let page = gw
        .get("/database/api/tables/people/rows?limit=2&offset=1")
        .json();
    assert_eq!(page["total"], 5);
    assert_eq!(page["limit"], 2);
    assert_eq!(page["offset"], 1);
    assert_eq!(
        page["rows"],
        json!([{"id": 2, "name": "p1", "note": null}, {"id": 3, "name": "p2", "note": null}])
    );
    assert_eq!(
        gw.get("/database/api/tables/people/rows?limit=5000").json()["limit"],
        1000
    );
    assert_eq!(
        gw.get("/database/api/tables/people/rows").json()["limit"],
        100
    );
    for bad in ["limit=0", "limit=-3", "limit=abc", "offset=-1"] {
        assert_eq!(
            gw.get(&format!("/database/api/tables/people/rows?{bad}"))
                .status,
            400,
            "{bad}"
        );
    }
    assert_eq!(gw.get("/database/api/tables/nope/schema").status, 404);
    assert_eq!(
        gw.get("/database/api/tables/x%22%3B%20DROP/rows").status,
        404
    );
    // Names are percent-decoded: a table with a space, a quote or a non-ASCII letter in
    // its name is reached by its encoded name.
    sql(
        gw,
        r#"CREATE TABLE "my ""odd"" table+é" (v TEXT)"#,
        json!([]),
    );
    sql(
        gw,
        r#"INSERT INTO "my ""odd"" table+é" VALUES ('x')"#,
        json!([]),
    );
    let odd = "my%20%22odd%22%20table+%C3%A9";
    let schema = gw.get(&format!("/database/api/tables/{odd}/schema"));
    assert_eq!(schema.status, 200, "{schema:?}");
    assert_eq!(schema.json()["table"], r#"my "odd" table+é"#);
    let rows = gw.get(&format!("/database/api/tables/{odd}/rows")).json();
    assert_eq!(rows["rows"], json!([{"v": "x"}]), "{rows}");
    let r = gw.get("/database/api/tables/%FF/rows");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(r.json()["error"], r#"Path segment "%FF" is not UTF-8"#);
    let r = gw.get("/database/api/tables/a%zz/rows");
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.json()["error"],
        r#"Path segment "a%zz" has an invalid % escape"#
    );
    let health = gw.get("/database/api/health").json();
    assert_eq!(health["status"], "healthy");
    assert_eq!(health["primary"]["ok"], true);
    assert_eq!(health["replicas"], json!([]));
}
crate::on_both!(tables_schema_and_rows);

fn data_survives_a_restart(b: Backend) {
    let mut env = start_on(b, Options::default());
    sql(&env.gw, "CREATE TABLE kept (v TEXT)", json!([]));
    sql(&env.gw, "INSERT INTO kept VALUES ('still here')", json!([]));
    env.gw.stop();
    let again = Gateway::start(env.same_database());
    let r = sql(&again, "SELECT v FROM kept", json!([]));
    assert_eq!(r.json()["rows"], json!([{"v": "still here"}]));
}
crate::on_both!(data_survives_a_restart);

#[test]
fn database_api_is_admin_only() {
    let gw = Gateway::start(Options::default().env("RUNTIME_MASTER_KEY", "mk").ready());
    let r = gw.get("/database/api/tables");
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"code": "AUTH_REQUIRED", "error": "Unauthorized"})
    );
    assert_eq!(
        gw.get_with("/database/api/tables", &[("x-api-key", "mk")])
            .status,
        200
    );
}

#[test]
fn local_file_lives_in_the_data_dir() {
    let gw = Gateway::start(Options::default().ready());
    assert!(gw.path("data/buntime.db").is_file());
    let mut opts = Options::default().ready();
    opts.env
        .push(("DATABASE_LIBSQL_URL".into(), "file:custom/place.db".into()));
    let gw = Gateway::start(opts);
    assert!(gw.path("custom/place.db").is_file());
    // A folder the gateway makes for it is the owner's alone: it holds every app's data.
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(gw.path("custom"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// `serve` in `dir` with one more variable: it must not start; its stderr.
fn start_fails(dir: &std::path::Path, (var, value): (&str, &str)) -> String {
    let out = std::process::Command::new(common::BIN)
        .arg("serve")
        .current_dir(dir)
        .env_clear()
        .env("PORT", common::free_port().to_string())
        .env(var, value)
        .env("RUNTIME_PLUGIN_DIRS", dir)
        .env("RUNTIME_WORKER_DIRS", dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// A local file that is not a database (a stray file, a copy cut short) stops the start,
/// and the error names the file: "file is not a database" alone left the operator to
/// guess which of the data dir's files, or the `DATABASE_LIBSQL_URL` one, was meant.
#[test]
fn a_damaged_database_file_is_named_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("data/buntime.db");
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, vec![0x5a; 8192]).unwrap();
    let data = dir.path().join("data");
    let err = start_fails(dir.path(), ("RUNTIME_DATA_DIR", data.to_str().unwrap()));
    let named = format!("cannot open the database (local file {})", file.display());
    assert!(
        err.contains(&named) && err.contains("not a database"),
        "{err}"
    );
}

/// A file SQLite cannot open was named by SQLite's code alone ("...: 14"); the error
/// now says why: here a folder where the file should be, and a place no one may write.
#[test]
fn a_database_file_that_cannot_be_opened_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("taken.db");
    std::fs::create_dir_all(&folder).unwrap();
    for (url, why) in [
        (format!("file:{}", folder.display()), "Is a directory"),
        ("/sys/kernel/buntime.db".to_string(), "Permission denied"),
    ] {
        let err = start_fails(dir.path(), ("DATABASE_LIBSQL_URL", &url));
        assert!(
            err.contains("cannot open the database") && err.contains(why),
            "{err}"
        );
    }
}

#[test]
fn remote_database_down_at_start_then_up() {
    require_sqld!();
    let http = common::free_port();
    let grpc = common::free_port();
    let url = format!("http://127.0.0.1:{http}");
    let gw = Gateway::start(Options::default().env("DATABASE_LIBSQL_URL", &url));
    // The server is up, but not ready, and says why.
    let ready = gw.get("/api/health/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "starting");
    assert!(
        ready.json()["waiting"][0]
            .as_str()
            .unwrap()
            .starts_with("database:"),
        "{ready:?}"
    );
    assert_eq!(gw.get("/api/health").status, 200);
    let r = sql(&gw, "SELECT 1", json!([]));
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), json!({"error": "Database unavailable"}));
    assert_eq!(gw.get("/database/api/health").json()["status"], "unhealthy");
    // The database comes up: the gateway reconnects on its own.
    let _sqld = Sqld::start_on(http, grpc, &[]);
    eventually(Duration::from_secs(40), || {
        (gw.get("/api/health/ready").status == 200).then_some(())
    })
    .expect("ready once the database answers");
    assert_eq!(
        sql(&gw, "SELECT 1 AS one", json!([])).json()["rows"],
        json!([{"one": 1}])
    );
}

#[test]
fn remote_database_going_away_answers_503_and_recovers() {
    require_sqld!();
    let mut sqld = Sqld::start(&[]);
    let gw = Gateway::start(
        Options::default()
            .env("DATABASE_LIBSQL_URL", &sqld.url())
            .ready(),
    );
    sql(&gw, "CREATE TABLE t (v INTEGER)", json!([]));
    sqld.stop();
    let r = sql(&gw, "INSERT INTO t VALUES (1)", json!([]));
    assert_eq!(r.status, 503);
    assert_eq!(r.json(), json!({"error": "Database unavailable"}));
    // Readiness answered once; a shared database outage does not take every gateway out.
    assert_eq!(gw.get("/api/health/ready").status, 200);
    sqld.restart();
    let r = eventually(Duration::from_secs(10), || {
        let r = sql(&gw, "INSERT INTO t VALUES (1)", json!([]));
        (r.status == 200).then_some(r)
    });
    assert!(r.is_some(), "writes work again once the database is back");
}

#[test]
fn sqld_with_jwt_auth() {
    require_sqld!();
    let (_keydir, key_file) = Sqld::jwt_key_file();
    let sqld = Sqld::start(&["--auth-jwt-key-file", &key_file]);
    let gw = Gateway::start(
        Options::default()
            .env("DATABASE_LIBSQL_URL", &sqld.url())
            .env("DATABASE_LIBSQL_AUTH_TOKEN", &token("rw"))
            .ready(),
    );
    sql(&gw, "CREATE TABLE secured (v TEXT)", json!([]));
    sql(&gw, "INSERT INTO secured VALUES ('ok')", json!([]));
    assert_eq!(
        sql(&gw, "SELECT v FROM secured", json!([])).json()["rows"],
        json!([{"v": "ok"}])
    );
    // The token never reaches the logs.
    assert!(!gw.logs().contains(&token("rw")));

    // Without the token the database refuses: the gateway never becomes ready.
    let unauthenticated =
        Gateway::start(Options::default().env("DATABASE_LIBSQL_URL", &sqld.url()));
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(unauthenticated.get("/api/health/ready").status, 503);
    assert_eq!(sql(&unauthenticated, "SELECT 1", json!([])).status, 503);
}

#[test]
fn reads_go_to_a_replica_and_fall_back_to_the_primary() {
    require_sqld!();
    let mut primary = Sqld::start(&[]);
    let mut replica = primary.replica(&[]);
    let gw = Gateway::start(
        Options::default()
            .env("DATABASE_LIBSQL_URL", &primary.url())
            .env("DATABASE_LIBSQL_REPLICAS_1", &replica.url())
            .ready(),
    );
    let health = gw.get("/database/api/health").json();
    assert_eq!(health["status"], "healthy", "{health}");
    assert_eq!(health["replicas"][0]["url"], replica.url());
    sql(&gw, "CREATE TABLE r (v TEXT)", json!([]));
    sql(&gw, "INSERT INTO r VALUES ('replicated')", json!([]));
    // Reads are served by the replica (after its small lag).
    let seen = eventually(Duration::from_secs(10), || {
        let rows = sql(&gw, "SELECT v FROM r", json!([])).json()["rows"].clone();
        (rows == json!([{"v": "replicated"}])).then_some(())
    });
    assert!(seen.is_some(), "the replica serves the write");
    // With the primary gone, reads still work: they are the replica's.
    primary.stop();
    let r = sql(&gw, "SELECT v FROM r", json!([]));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.get("/database/api/health").json()["status"], "unhealthy");
    assert_eq!(
        sql(&gw, "INSERT INTO r VALUES ('x')", json!([])).status,
        503
    );
    primary.restart();
    replica.stop();
    assert_eq!(gw.get("/database/api/health").json()["status"], "degraded");
    // A failing replica falls back to the primary.
    let r = sql(&gw, "SELECT v FROM r", json!([]));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["rows"], json!([{"v": "replicated"}]));
}

#[test]
fn replica_config_is_validated() {
    let (ok, out) = common::check(None, &[("DATABASE_LIBSQL_REPLICAS_1", "http://r1")]);
    assert!(!ok);
    assert!(
        out.contains("DATABASE_LIBSQL_REPLICAS_N") && out.contains("remote primary"),
        "{out}"
    );
    let (ok, out) = common::check(None, &[("DATABASE_LIBSQL_URL", "mysql://db")]);
    assert!(!ok);
    assert!(
        out.contains("DATABASE_LIBSQL_URL") && out.contains("mysql://db"),
        "{out}"
    );
}
