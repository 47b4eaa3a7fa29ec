//! SPEC 7.2 against the real binary, on a local file and on a real sqld.

mod common;

use std::time::Duration;

use common::{Backend, Gateway, Options, eventually, start_on};
use serde_json::{Value, json};

fn put(gw: &Gateway, path: &str, value: Value) -> Value {
    let r = gw.json("PUT", &format!("/keyval/api/keys/{path}"), &[], &value);
    assert_eq!(r.status, 200, "{r:?}");
    r.json()
}

fn get(gw: &Gateway, path: &str) -> common::Resp {
    gw.get(&format!("/keyval/api/keys/{path}"))
}

fn keys(list: &Value) -> Vec<Value> {
    list.as_array()
        .unwrap()
        .iter()
        .map(|e| e["key"].clone())
        .collect()
}

fn atomic(gw: &Gateway, body: Value) -> common::Resp {
    gw.json("POST", "/keyval/api/atomic", &[], &body)
}

fn set_get_delete(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let first = put(gw, "users/1", json!({"name": "ann"}));
    assert_eq!(first["ok"], true);
    let vs1 = first["versionstamp"].as_str().unwrap().to_string();
    assert_eq!(uuid::Uuid::parse_str(&vs1).unwrap().get_version_num(), 7);
    let e = get(gw, "users/1").json();
    assert_eq!(
        e,
        json!({"key": ["users", 1], "value": {"name": "ann"}, "versionstamp": vs1})
    );
    let vs2 = put(gw, "users/1", json!("replaced"))["versionstamp"].clone();
    assert_ne!(vs2, json!(vs1), "every write makes a new versionstamp");
    assert_eq!(get(gw, "users/1").json()["value"], "replaced");
    let missing = get(gw, "users/2");
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json(), json!({"error": "Key not found"}));
    // Percent-encoded segments stay strings; integer segments are numbers.
    put(gw, "files/a%2Fb.txt", json!(1));
    assert_eq!(
        get(gw, "files/a%2Fb.txt").json()["key"],
        json!(["files", "a/b.txt"])
    );
    // Empty body and non-JSON bodies are refused.
    assert_eq!(
        gw.send(
            "PUT",
            "/keyval/api/keys/x",
            &[("content-type", "application/json")],
            Some(b"")
        )
        .status,
        400
    );
    assert_eq!(
        gw.send(
            "PUT",
            "/keyval/api/keys/x",
            &[("content-type", "application/json")],
            Some(b"{oops")
        )
        .status,
        400
    );
}
crate::on_both!(set_get_delete);

fn delete_subtree_or_exact(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    for p in ["t", "t/1", "t/1/x", "t/2", "t2", "u"] {
        put(gw, p, json!(p));
    }
    let r = gw.json(
        "DELETE",
        "/keyval/api/keys/t/1",
        &[],
        &json!({"exact": true}),
    );
    assert_eq!(r.json(), json!({"deletedCount": 1}));
    assert_eq!(get(gw, "t/1/x").status, 200);
    let r = gw.send("DELETE", "/keyval/api/keys/t", &[], None);
    assert_eq!(r.json(), json!({"deletedCount": 3}), "t, t/1/x, t/2");
    assert_eq!(get(gw, "t2").status, 200, "a longer string is not below t");
    assert_eq!(get(gw, "u").status, 200);
}
crate::on_both!(delete_subtree_or_exact);

fn list_count_and_paginate(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    for i in [3, 1, 2, 10] {
        put(gw, &format!("cnt/{i}"), json!(i));
    }
    put(gw, "cnt2/1", json!("other"));
    put(gw, "cnt", json!("self"));
    let all = gw.get("/keyval/api/keys?prefix=cnt").json();
    assert_eq!(
        keys(&all),
        vec![
            json!(["cnt", 1]),
            json!(["cnt", 2]),
            json!(["cnt", 3]),
            json!(["cnt", 10])
        ]
    );
    let rev = gw
        .get("/keyval/api/keys?prefix=cnt&reverse=true&limit=2")
        .json();
    assert_eq!(keys(&rev), vec![json!(["cnt", 10]), json!(["cnt", 3])]);
    let window = gw
        .get("/keyval/api/keys?prefix=cnt&start=cnt/2&end=cnt/10")
        .json();
    assert_eq!(keys(&window), vec![json!(["cnt", 2]), json!(["cnt", 3])]);
    assert_eq!(
        gw.get("/keyval/api/keys/count?prefix=cnt").json(),
        json!({"count": 4})
    );
    assert_eq!(gw.get("/keyval/api/keys/count").json(), json!({"count": 6}));
    for bad in ["limit=0", "limit=-1", "limit=ten"] {
        let r = gw.get(&format!("/keyval/api/keys?{bad}"));
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(r.json()["error"].as_str().unwrap().contains("limit"));
    }
    // Walk every page.
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = gw
            .get(&format!(
                "/keyval/api/keys/paginate?prefix=cnt&limit=3&cursor={cursor}"
            ))
            .json();
        seen.extend(keys(&page["entries"]));
        if page["hasMore"] == false {
            assert_eq!(page["cursor"], Value::Null);
            break;
        }
        cursor = page["cursor"].as_str().unwrap().to_string();
    }
    assert_eq!(seen, keys(&all));
    assert_eq!(gw.get("/keyval/api/keys/paginate?cursor=!!!").status, 400);
}
crate::on_both!(list_count_and_paginate);

fn limit_is_capped_at_1000(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let sets: Vec<Value> = (0..1000)
        .map(|i| json!({"type": "set", "key": ["bulk", i], "value": i}))
        .collect();
    assert_eq!(atomic(gw, json!({"mutations": sets})).json()["ok"], true);
    put(gw, "bulk/1000", json!(1000));
    let r = gw.get("/keyval/api/keys?prefix=bulk&limit=5000").json();
    assert_eq!(r.as_array().unwrap().len(), 1000);
    assert_eq!(
        gw.get("/keyval/api/keys?prefix=bulk")
            .json()
            .as_array()
            .unwrap()
            .len(),
        100
    );
}
crate::on_both!(limit_is_capped_at_1000);

fn batch_get_and_key_limits(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    put(gw, "a/1", json!("one"));
    put(gw, "b", json!("bee"));
    let r = gw.json(
        "POST",
        "/keyval/api/keys/batch",
        &[],
        &json!({"keys": [["b"], ["missing"], ["a", 1]]}),
    );
    let v = r.json();
    assert_eq!(v[0]["value"], "bee");
    assert_eq!(
        v[1],
        json!({"key": ["missing"], "value": null, "versionstamp": null})
    );
    assert_eq!(v[2]["value"], "one");
    let too_many: Vec<Value> = (0..1001).map(|i| json!(["k", i])).collect();
    let r = gw.json(
        "POST",
        "/keyval/api/keys/batch",
        &[],
        &json!({"keys": too_many}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("1000"),
        "{r:?}"
    );
    let deep: Vec<Value> = (0..21).map(|i| json!(i)).collect();
    let r = gw.json(
        "POST",
        "/keyval/api/keys/batch",
        &[],
        &json!({"keys": [deep]}),
    );
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("at most 20"),
        "{r:?}"
    );
    let long = "x".repeat(1025);
    let r = gw.json("PUT", &format!("/keyval/api/keys/{long}"), &[], &json!(1));
    assert_eq!(r.status, 400);
    assert!(
        r.json()["error"].as_str().unwrap().contains("1024"),
        "{r:?}"
    );
    let r = gw.json(
        "POST",
        "/keyval/api/keys/batch",
        &[],
        &json!({"keys": [[{"x": 1}]]}),
    );
    assert_eq!(r.status, 400);
    let r = gw.json(
        "POST",
        "/keyval/api/keys/batch",
        &[],
        &json!({"nokeys": true}),
    );
    assert_eq!(r.status, 400);
}
crate::on_both!(batch_get_and_key_limits);

fn expiry_hides_then_purges(b: Backend) {
    let env = start_on(
        b,
        Options::default().config("plugins:\n  keyval:\n    purgeInterval: 1s\n"),
    );
    let gw = &env.gw;
    let r = gw.json(
        "PUT",
        "/keyval/api/keys/session/1?expiresIn=3000",
        &[],
        &json!("soon gone"),
    );
    assert_eq!(r.status, 200);
    put(gw, "session/2", json!("stays"));
    // Seconds apart: a loaded machine (CI runs the suites in parallel, sqld included)
    // took over a second between the write and this read when the entry lived for one.
    assert_eq!(get(gw, "session/1").status, 200);
    let gone = eventually(Duration::from_secs(10), || {
        (get(gw, "session/1").status == 404).then_some(())
    });
    assert!(gone.is_some(), "an expired entry is invisible");
    assert_eq!(
        gw.get("/keyval/api/keys/count?prefix=session").json(),
        json!({"count": 1})
    );
    // The purge deletes the row itself.
    let purged = eventually(Duration::from_secs(10), || {
        let r = gw.json(
            "POST",
            "/database/api/query",
            &[],
            &json!({"sql": "SELECT COUNT(*) AS n FROM kv_entries"}),
        );
        (r.json()["rows"][0]["n"] == 1).then_some(())
    });
    assert!(purged.is_some(), "expired rows are purged");
    assert_eq!(
        gw.json("PUT", "/keyval/api/keys/x?expiresIn=-5", &[], &json!(1))
            .status,
        400
    );
    assert_eq!(
        gw.json("PUT", "/keyval/api/keys/x?expiresIn=abc", &[], &json!(1))
            .status,
        400
    );
}
crate::on_both!(expiry_hides_then_purges);

fn atomic_checks_and_mutations(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    // A null versionstamp means "must not exist".
    let created = atomic(
        gw,
        json!({
            "checks": [{"key": ["acct", "a"], "versionstamp": null}],
            "mutations": [{"type": "set", "key": ["acct", "a"], "value": 10}]
        }),
    )
    .json();
    assert_eq!(created["ok"], true);
    let vs = created["versionstamp"].clone();
    assert_eq!(get(gw, "acct/a").json()["versionstamp"], vs);
    let again = atomic(
        gw,
        json!({
            "checks": [{"key": ["acct", "a"], "versionstamp": null}],
            "mutations": [{"type": "set", "key": ["acct", "a"], "value": 99}]
        }),
    );
    assert_eq!(again.json(), json!({"ok": false}));
    assert_eq!(
        get(gw, "acct/a").json()["value"],
        10,
        "a failed check applies nothing"
    );

    let r = atomic(
        gw,
        json!({
            "checks": [{"key": ["acct", "a"], "versionstamp": vs}],
            "mutations": [
                {"type": "sum", "key": ["acct", "a"], "value": 5},
                {"type": "max", "key": ["acct", "hi"], "value": 3},
                {"type": "min", "key": ["acct", "lo"], "value": 3},
                {"type": "append", "key": ["acct", "log"], "value": [1, 2]},
                {"type": "prepend", "key": ["acct", "log"], "value": [0]},
                {"type": "set", "key": ["acct", "tmp"], "value": true},
                {"type": "delete", "key": ["acct", "tmp"]}
            ]
        }),
    );
    assert_eq!(r.json()["ok"], true, "{r:?}");
    assert_eq!(get(gw, "acct/a").json()["value"], 15);
    assert_eq!(get(gw, "acct/hi").json()["value"], 3);
    assert_eq!(get(gw, "acct/lo").json()["value"], 3);
    assert_eq!(get(gw, "acct/log").json()["value"], json!([0, 1, 2]));
    assert_eq!(get(gw, "acct/tmp").status, 404);
    // All mutations of one commit share its versionstamp.
    assert_eq!(
        get(gw, "acct/hi").json()["versionstamp"],
        r.json()["versionstamp"]
    );
    atomic(
        gw,
        json!({"mutations": [
            {"type": "max", "key": ["acct", "hi"], "value": 7},
            {"type": "min", "key": ["acct", "lo"], "value": 7},
            {"type": "sum", "key": ["acct", "a"], "value": {"__type": "bigint", "value": "-20"}}
        ]}),
    );
    assert_eq!(get(gw, "acct/hi").json()["value"], 7);
    assert_eq!(get(gw, "acct/lo").json()["value"], 3);
    assert_eq!(get(gw, "acct/a").json()["value"], -5);

    // Bad input is a 400 and applies nothing.
    for bad in [
        json!({"mutations": [{"type": "set", "key": ["ok"], "value": 1}, {"type": "explode", "key": ["x"]}]}),
        json!({"mutations": [{"type": "set", "key": ["ok"], "value": 1}, {"type": "append", "key": ["x"], "value": 1}]}),
        json!({"mutations": [{"type": "set", "key": ["ok"], "value": 1}, {"type": "sum", "key": ["x"], "value": "1"}]}),
        json!({"mutations": [{"type": "set", "key": [], "value": 1}]}),
        json!({"checks": "nope"}),
    ] {
        let r = atomic(gw, bad.clone());
        assert_eq!(r.status, 400, "{bad}: {r:?}");
    }
    assert_eq!(get(gw, "ok").status, 404);

    // An operation on a stored value of another type is refused and applies nothing: the
    // value is not taken for 0 (or an empty list) and overwritten.
    put(gw, "text", json!("keep me"));
    for (kind, value, why) in [
        (
            "sum",
            json!(1),
            "sum: the value at [\"text\"] is not a number",
        ),
        (
            "max",
            json!(1),
            "max: the value at [\"text\"] is not a number",
        ),
        (
            "append",
            json!([1]),
            "append: the value at [\"text\"] is not an array",
        ),
        (
            "prepend",
            json!([1]),
            "prepend: the value at [\"text\"] is not an array",
        ),
    ] {
        let r = atomic(
            gw,
            json!({"mutations": [
                {"type": "set", "key": ["ok"], "value": 1},
                {"type": kind, "key": ["text"], "value": value}
            ]}),
        );
        assert_eq!(r.status, 400, "{kind}: {r:?}");
        assert_eq!(r.json()["error"], why);
    }
    assert_eq!(get(gw, "text").json()["value"], "keep me");
    assert_eq!(get(gw, "ok").status, 404);
    // A stored bigint is a number to them, as an operand is.
    put(gw, "big", json!({"__type": "bigint", "value": "40"}));
    let r = atomic(
        gw,
        json!({"mutations": [{"type": "sum", "key": ["big"], "value": 2}]}),
    );
    assert_eq!(r.json()["ok"], true, "{r:?}");
    assert_eq!(get(gw, "big").json()["value"], 42);
    // A sum past f64's range is refused: JSON has no infinity, and it was stored as null.
    let r = atomic(
        gw,
        json!({"mutations": [
            {"type": "sum", "key": ["huge"], "value": 1e308},
            {"type": "sum", "key": ["huge"], "value": 1e308}
        ]}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        r.json()["error"],
        "sum: the result at [\"huge\"] is out of range"
    );
    assert_eq!(get(gw, "huge").status, 404);
}
crate::on_both!(atomic_checks_and_mutations);

fn concurrent_atomics_on_one_check_have_one_winner(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let vs = put(gw, "lock", json!("free"))["versionstamp"].clone();
    let url = gw.url("/keyval/api/atomic");
    let results: Vec<Value> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let url = url.clone();
                let vs = vs.clone();
                s.spawn(move || {
                    let body = json!({
                        "checks": [{"key": ["lock"], "versionstamp": vs}],
                        "mutations": [{"type": "set", "key": ["lock"], "value": format!("taken by {i}")}]
                    });
                    let r = common::send(
                        &common::agent(),
                        "POST",
                        &url,
                        &[("content-type", "application/json")],
                        Some(body.to_string().as_bytes()),
                    );
                    assert_eq!(r.status, 200, "{r:?}");
                    r.json()
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let winners = results.iter().filter(|r| r["ok"] == true).count();
    assert_eq!(winners, 1, "{results:?}");
    assert!(
        get(gw, "lock").json()["value"]
            .as_str()
            .unwrap()
            .starts_with("taken by")
    );
}
crate::on_both!(concurrent_atomics_on_one_check_have_one_winner);

fn reads_rows_written_in_the_original_encoding(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    // ["users", 42, true, -1n] as the original encodes it, inserted behind the API's back.
    let hex = concat!(
        "027573657273",
        "00",
        "03C045000000000000",
        "00",
        "0502",
        "00",
        "04010101"
    );
    let r = gw.json("POST", "/database/api/query", &[], &json!({
        "sql": format!("INSERT INTO kv_entries (key, value, versionstamp) VALUES (X'{hex}', CAST(? AS BLOB), '0190d8a6-0000-7000-8000-000000000000')"),
        "params": ["{\"legacy\":true}"]
    }));
    assert_eq!(r.status, 200, "{r:?}");
    let list = gw.get("/keyval/api/keys?prefix=users").json();
    assert_eq!(
        list,
        json!([{"key": ["users", 42, true, {"__type": "bigint", "value": "-1"}], "value": {"legacy": true}, "versionstamp": "0190d8a6-0000-7000-8000-000000000000"}])
    );
    // And what we write is byte for byte what the original writes.
    put(gw, "users/42/x", json!(1));
    let r = gw.json(
        "POST",
        "/database/api/query",
        &[],
        &json!({"sql": "SELECT hex(key) AS k FROM kv_entries ORDER BY key"}),
    );
    let written = concat!("027573657273", "00", "03C045000000000000", "00", "0278");
    assert_eq!(r.json()["rows"][0]["k"], written, "{r:?}");
    // A 16-digit URL segment within JavaScript's safe integers (a microsecond timestamp)
    // is a number there, as it is here; one past them stays a string.
    put(gw, "ts/1764258000000000", json!(1));
    put(gw, "ts/9007199254740992", json!(2));
    let list = gw.get("/keyval/api/keys?prefix=ts").json();
    assert_eq!(
        keys(&list),
        // Strings (tag 0x02) sort before numbers (0x03).
        [
            json!(["ts", "9007199254740992"]),
            json!(["ts", 1764258000000000u64])
        ]
    );
}
crate::on_both!(reads_rows_written_in_the_original_encoding);

#[test]
fn migrations_run_once_from_two_processes() {
    crate::require_sqld!();
    let sqld = common::sqld::Sqld::start(&[]);
    let opts = || Options::default().env("DATABASE_LIBSQL_URL", &sqld.url());
    let (a, b) = std::thread::scope(|s| {
        let a = s.spawn(|| Gateway::start(opts().ready()));
        let b = s.spawn(|| Gateway::start(opts().ready()));
        (a.join().unwrap(), b.join().unwrap())
    });
    let rows = |gw: &Gateway| {
        gw.json("POST", "/database/api/query", &[], &json!({"sql": "SELECT component, version FROM schema_migrations ORDER BY component, version"}))
            .json()["rows"]
            .clone()
    };
    assert_eq!(rows(&a), json!([{"component": "keyval", "version": 1}]));
    drop(a);
    drop(b);
    let c = Gateway::start(opts().ready());
    assert_eq!(rows(&c), json!([{"component": "keyval", "version": 1}]));
}

#[test]
fn two_gateways_on_one_local_file() {
    let a = Gateway::start(Options::default().ready());
    let mut opts = Options::default().ready();
    opts.dir = Some(a.dir.clone());
    let b = Gateway::start(opts);
    put(&a, "shared", json!("from a"));
    assert_eq!(get(&b, "shared").json()["value"], "from a");
}
