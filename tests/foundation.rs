//! The skeleton of SPEC 1, 2, 3, 9 (logs) and 11 against the real binary.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::upstream::Upstream;
use common::{Gateway, Options, check, raw};
use serde_json::json;

#[test]
fn health_live_ready_and_well_known() {
    let gw = Gateway::start(Options::default().ready());
    let h = gw.get("/api/health");
    assert_eq!(h.status, 200);
    assert_eq!(h.header("content-type"), Some("application/json"));
    let v = h.json();
    assert_eq!(v["ok"], true);
    assert_eq!(v["status"], "healthy");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(gw.get("/api/health/live").json()["status"], "live");
    assert_eq!(gw.get("/api/health/ready").json()["status"], "ready");
    assert_eq!(
        gw.get("/.well-known/buntime").json(),
        json!({"api": "/api", "version": env!("CARGO_PKG_VERSION")})
    );
}

#[test]
fn version_subcommand_and_flags_print_the_version() {
    // `--version` and `-V` are what packaging scripts and people try first.
    let want = format!("buntime {}\n", env!("CARGO_PKG_VERSION"));
    for args in [&["version"][..], &["--version"], &["-V"]] {
        let out = std::process::Command::new(common::BIN)
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), want, "{args:?}");
    }
}

#[test]
fn request_id_is_echoed_or_made() {
    let gw = Gateway::start(Options::default());
    let r = gw.get_with("/nowhere", &[("x-request-id", "abc-123")]);
    assert_eq!(r.header("x-request-id"), Some("abc-123"));
    let made = gw.get("/api/health");
    let id = made.header("x-request-id").expect("a request id");
    let parsed = uuid::Uuid::parse_str(id).expect("a UUID");
    assert_eq!(parsed.get_version_num(), 4);
    // Control characters or absurd lengths are not echoed back.
    let long = "x".repeat(500);
    let r = gw.get_with("/api/health", &[("x-request-id", &long)]);
    assert_ne!(r.header("x-request-id"), Some(long.as_str()));
}

/// API answers (the runtime's and the plugins') are never kept by a cache in front of the
/// gateway: they hold rules with the headers they add, SQL rows, keyval values.
#[test]
fn api_answers_are_not_stored() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    let r = gw.json(
        "POST",
        "/redirects/api/rules",
        &[],
        &json!({"pattern": "^/up", "target": up.url()}),
    );
    assert_eq!(r.status, 201, "{r:?}");
    for path in [
        "/redirects/api/rules",
        "/api/plugins",
        "/keyval/api/keys/none",
        "/api/health",
    ] {
        let r = gw.get(path);
        assert_eq!(r.header("cache-control"), Some("no-store"), "{path}: {r:?}");
    }
    let r = gw.send("HEAD", "/database/api/tables", &[], None);
    assert_eq!(r.header("cache-control"), Some("no-store"), "{r:?}");
    // A proxied answer is the upstream's to mark.
    let r = gw.get("/up");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("cache-control"), None, "{r:?}");
}

#[test]
fn not_found_is_json_with_content_length() {
    let gw = Gateway::start(Options::default());
    let r = gw.get("/no/such/thing");
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), json!({"error": "Not Found"}));
    assert_eq!(r.header("content-length"), Some("21"));
    assert!(r.header("x-request-id").is_some());
    // An unknown runtime API path is a 404 too.
    assert_eq!(gw.get("/api/nope").status, 404);
}

#[test]
fn oversized_content_length_is_413_before_the_body() {
    let gw = Gateway::start(Options::default());
    let req = b"POST /upload HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: 20971520\r\n\r\n";
    let out = raw(gw.port, req, Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert!(out.contains("{\"error\":\"Payload Too Large\"}"), "{out}");
    assert!(
        out.to_ascii_lowercase().contains("content-length: 29"),
        "{out}"
    );
    // Admin APIs take 1 MiB at most.
    let req = b"POST /api/plugins HTTP/1.1\r\nHost: x\r\nContent-Length: 2000000\r\n\r\n";
    let out = raw(gw.port, req, Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
}

#[test]
fn a_malformed_body_to_an_admin_route_is_the_clients_error() {
    let gw = Gateway::start(Options::default());
    let req = b"POST /redirects/api/rules HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nnot a chunk\r\n";
    let out = raw(gw.port, req, Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("{\"error\":\"Bad Request\"}"), "{out}");
    assert_eq!(gw.get("/redirects/api/rules").json(), json!([]));
}

/// A route asked with a method it does not answer gets `405` and `Allow`, on the runtime
/// API and on every plugin's routes alike (the plugins answered `404`); a missing
/// resource on a route that answers the method stays `404`.
#[test]
fn wrong_methods_get_405_with_allow() {
    let gw = Gateway::start(Options::default().ready());
    for (method, path, allow) in [
        ("DELETE", "/api/health", "GET, HEAD"),
        ("PATCH", "/redirects/api/rules", "GET, HEAD, POST"),
        (
            "POST",
            "/redirects/api/rules/some-id",
            "GET, HEAD, PUT, DELETE",
        ),
        ("GET", "/gateway/api/rate-limit/clear", "POST"),
        ("PUT", "/database/api/tables", "GET, HEAD"),
        ("DELETE", "/metrics/api/stats", "GET, HEAD"),
        ("PATCH", "/keyval/api/keys/a/b", "GET, HEAD, PUT, DELETE"),
    ] {
        let r = gw.send(method, path, &[], None);
        assert_eq!(r.status, 405, "{method} {path}: {r:?}");
        assert_eq!(r.header("allow"), Some(allow), "{method} {path}");
        assert_eq!(r.json(), json!({"error": "Method Not Allowed"}));
    }
    let r = gw.get("/redirects/api/rules/some-id");
    assert_eq!(r.json(), json!({"error": "Rule not found"}));
    assert_eq!(
        gw.send("PATCH", "/redirects/api/nothing", &[], None).status,
        404
    );
    // A plugin moved to another base is documented, and answered, there.
    let moved = Gateway::start(
        Options::default()
            .config("plugins:\n  keyval:\n    base: /kv\n")
            .ready(),
    );
    let doc = moved.get("/api/openapi.json").json();
    assert!(doc["paths"].get("/kv/api/keys").is_some(), "{doc}");
    assert!(doc["paths"].get("/keyval/api/keys").is_none(), "{doc}");
    let r = moved.send("PATCH", "/kv/api/keys", &[], None);
    assert_eq!(r.status, 405, "{r:?}");
    assert_eq!(r.header("allow"), Some("GET, HEAD"));
}

#[test]
fn dot_segments_are_refused() {
    let gw = Gateway::start(Options::default());
    let out = raw(
        gw.port,
        b"GET /public/../api/plugins HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 400"), "{out}");
    assert!(out.contains("Invalid path"), "{out}");
}

#[test]
fn keep_alive_survives_local_answers() {
    let gw = Gateway::start(Options::default());
    let mut s = gw.connect();
    for path in ["/api/health", "/nope", "/api/health/live"] {
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let text = read_one_response(&mut s);
        assert!(text.starts_with("HTTP/1.1 "), "{path}: {text}");
    }
}

/// Reads one response that carries a Content-Length.
fn read_one_response(s: &mut TcpStream) -> String {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut byte).unwrap(), 1, "connection closed early");
        buf.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&buf).to_string();
    let len: usize = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("content-length:")
                .map(|v| v.trim().parse().unwrap())
        })
        .expect("content-length");
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    head + &String::from_utf8_lossy(&body)
}

#[test]
fn api_prefix_moves_only_the_runtime_api() {
    let gw = Gateway::start(Options::default().env("RUNTIME_API_PREFIX", "/_"));
    assert_eq!(gw.get("/_/api/health").status, 200);
    assert_eq!(
        gw.get("/api/health").status,
        404,
        "plain /api is an ordinary path now"
    );
    assert_eq!(gw.get("/.well-known/buntime").json()["api"], "/_/api");
    assert_eq!(gw.get("/_/api/plugins/loaded").status, 200);
}

#[test]
fn admin_routes_need_the_master_key_when_one_is_set() {
    let gw = Gateway::start(Options::default().env("RUNTIME_MASTER_KEY", "k3y-for-tests"));
    let denied = gw.get("/api/plugins");
    assert_eq!(denied.status, 401);
    assert_eq!(
        denied.json(),
        json!({"code": "AUTH_REQUIRED", "error": "Unauthorized"})
    );
    assert_eq!(
        gw.get_with("/api/plugins", &[("x-api-key", "wrong")])
            .status,
        401
    );
    assert_eq!(
        gw.get_with("/api/plugins", &[("x-api-key", "k3y-for-tests")])
            .status,
        200
    );
    assert_eq!(
        gw.get_with(
            "/api/plugins/loaded",
            &[("authorization", "Bearer k3y-for-tests")]
        )
        .status,
        200
    );
    // Public paths stay open.
    assert_eq!(gw.get("/api/health").status, 200);
    assert_eq!(gw.get("/api/openapi.json").status, 200);
    // The key never shows up in the logs.
    assert!(!gw.logs().contains("k3y-for-tests"));
}

/// The original Buntime took its master key from `BUNTIME_MASTER_KEY` too; a deployment
/// that set that one ran keyless here, every loopback client an admin (a proxy on the
/// same host passes them all). `RUNTIME_MASTER_KEY` wins when both are set.
/// A master key short enough to guess is named at start and by `check`: it opens the
/// rules and SQL to whoever guesses it.
#[test]
fn a_short_master_key_is_named() {
    let short = |out: &str| out.contains("the master key (RUNTIME_MASTER_KEY) is");
    let (ok, out) = check(None, &[("RUNTIME_MASTER_KEY", "letmein")]);
    assert!(ok, "{out}");
    assert!(
        out.contains("the master key (RUNTIME_MASTER_KEY) is 7 byte(s)"),
        "{out}"
    );
    for env in [
        [("RUNTIME_MASTER_KEY", "0123456789abcdef")],
        [("PORT", "8000")],
    ] {
        let (_, out) = check(None, &env);
        assert!(!short(&out), "{env:?}: {out}");
    }
    let gw = Gateway::start(Options::default().env("RUNTIME_MASTER_KEY", "letmein"));
    assert!(short(&gw.stderr()), "{}", gw.stderr());
}

#[test]
fn the_originals_other_master_key_name_is_read() {
    let gw = Gateway::start(Options::default().env("BUNTIME_MASTER_KEY", "old-name-key"));
    assert_eq!(gw.get("/api/plugins").status, 401);
    let with = |key: &str| gw.get_with("/api/plugins", &[("x-api-key", key)]).status;
    assert_eq!(with("old-name-key"), 200);
    let gw = Gateway::start(
        Options::default()
            .env("BUNTIME_MASTER_KEY", "old-name-key")
            .env("RUNTIME_MASTER_KEY", "new-name-key"),
    );
    let with = |key: &str| gw.get_with("/api/plugins", &[("x-api-key", key)]).status;
    assert_eq!(with("new-name-key"), 200);
    assert_eq!(with("old-name-key"), 401);
}

#[test]
fn admin_routes_are_open_to_loopback_without_credentials() {
    let gw = Gateway::start(Options::default());
    let r = gw.get("/api/plugins");
    assert_eq!(r.status, 200);
    assert!(r.json().is_array());
    // A browser here counts only for pages of this host: a page of another site, which
    // the default CORS would let write rules (the preflight passes), or a page whose name
    // was re-pointed at 127.0.0.1 (DNS rebinding: its own origin, and its Host), is not.
    let rule = json!({"pattern": "^/evil", "target": "http://127.0.0.1:9"});
    let preflight = gw.send(
        "OPTIONS",
        "/redirects/api/rules",
        &[
            ("origin", "https://evil.example"),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type"),
        ],
        None,
    );
    assert_eq!(preflight.status, 204, "{preflight:?}");
    for headers in [
        vec![("origin", "https://evil.example")],
        vec![("origin", "null")],
        vec![("host", "evil.example:8000")],
        vec![("host", "evil.example"), ("origin", "http://evil.example")],
    ] {
        let r = gw.json("POST", "/redirects/api/rules", &headers, &rule);
        assert_eq!(r.status, 401, "{headers:?}: {r:?}");
        assert_eq!(r.json()["code"], "AUTH_REQUIRED");
        assert_eq!(gw.get_with("/api/plugins", &headers).status, 401);
    }
    assert_eq!(gw.get("/redirects/api/rules").json(), json!([]));
    assert!(
        gw.stderr().contains("admin request from loopback refused"),
        "{}",
        gw.logs()
    );
    // Pages served from this host, and programs naming it, still are.
    for headers in [
        vec![("origin", "http://localhost:3000")],
        vec![
            ("host", "localhost:8000"),
            ("origin", "http://127.0.0.1:8000"),
        ],
        vec![("host", "[::1]:8000")],
    ] {
        assert_eq!(
            gw.get_with("/api/plugins", &headers).status,
            200,
            "{headers:?}"
        );
    }
    let r = gw.json(
        "POST",
        "/redirects/api/rules",
        &[("origin", "http://localhost:5173")],
        &rule,
    );
    assert_eq!(r.status, 201, "{r:?}");
}

#[test]
fn admin_routes_refuse_a_remote_client_behind_a_trusted_proxy() {
    // 127.0.0.1 is a trusted proxy: the client is the X-Forwarded-For address.
    let gw = Gateway::start(Options::default().env("GATEWAY_TRUSTED_PROXIES", "127.0.0.1"));
    let r = gw.get_with("/api/plugins", &[("x-forwarded-for", "203.0.113.9")]);
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(
        r.json(),
        json!({"code": "AUTH_REQUIRED", "error": "Unauthorized"})
    );
    // A loopback client through the same proxy is still admin.
    let r = gw.get_with("/api/plugins", &[("x-forwarded-for", "127.0.0.1")]);
    assert_eq!(r.status, 200, "{r:?}");
    // A remote client that wrote its own X-Forwarded-For: 127.0.0.1, which the proxy
    // appended its address to, is not.
    for chain in [
        "127.0.0.1, 203.0.113.9",
        "127.0.0.1, 127.0.0.1, 198.51.100.1",
    ] {
        let r = gw.get_with("/api/plugins", &[("x-forwarded-for", chain)]);
        assert_eq!(r.status, 401, "{chain}: {r:?}");
    }
    // Hops that are loopback or trusted proxies keep it local.
    let r = gw.get_with(
        "/api/plugins",
        &[("x-forwarded-for", "127.0.0.1, 127.0.0.1")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    // Public paths stay open to everyone.
    let r = gw.get_with("/api/health", &[("x-forwarded-for", "203.0.113.9")]);
    assert_eq!(r.status, 200);
}

#[test]
fn installed_plugins_come_from_plugin_dirs_and_sighup_rescans() {
    let gw = Gateway::start(Options::default());
    assert_eq!(gw.get("/api/plugins").json(), json!([]));
    common::write(
        &gw.path("plugins/extra/manifest.yaml"),
        "name: extra\nbase: /extra\n",
    );
    gw.signal("HUP");
    let listed = common::eventually(Duration::from_secs(5), || {
        let v = gw.get("/api/plugins").json();
        (v.as_array().unwrap().len() == 1).then_some(v)
    })
    .expect("SIGHUP picks up the new plugin folder");
    assert_eq!(listed[0]["name"], "extra");
    assert!(
        listed[0]["path"]
            .as_str()
            .unwrap()
            .ends_with("plugins/extra")
    );
}

#[test]
fn openapi_describes_the_runtime_api() {
    let gw = Gateway::start(Options::default().env("RUNTIME_API_PREFIX", "/_"));
    let doc = gw.get("/_/api/openapi.json").json();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for p in [
        "/_/api/health",
        "/_/api/health/ready",
        "/_/api/plugins",
        "/_/api/plugins/loaded",
        "/_/api/workers",
        "/_/api/apps",
        "/.well-known/buntime",
        "/metrics",
    ] {
        assert!(paths.contains_key(p), "missing {p}");
    }
    assert!(paths["/_/api/plugins"]["get"]["security"].is_array());
    let restart = &paths["/_/api/workers/{app}/restart"]["post"];
    assert!(restart["security"].is_array(), "{restart}");
    assert_eq!(restart["parameters"][0]["name"], "app");
}

/// A tab in a YAML file (an editor's indent) is named as a tab, in the config file, a
/// plugin-dir manifest and an app manifest alike.
#[test]
fn a_tab_in_yaml_is_named_as_one() {
    const HINT: &str = "(a tab: YAML indents with spaces only)";
    let (ok, out) = check(Some("server:\n\tport: 8000\n"), &[]);
    assert!(!ok);
    assert!(out.contains(HINT), "{out}");
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugins/gateway");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(plugin.join("manifest.yaml"), "cors:\n\torigin: '*'\n").unwrap();
    let plugins = dir.path().join("plugins");
    let (ok, out) = check(None, &[("RUNTIME_PLUGIN_DIRS", plugins.to_str().unwrap())]);
    assert!(!ok);
    assert!(out.contains(HINT), "{out}");
    let app = dir.path().join("apps/tabbed");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(app.join("manifest.yaml"), "ttl: 5m\nenv:\n\tA: b\n").unwrap();
    let apps = dir.path().join("apps");
    let gw = Gateway::start(
        Options::default()
            .env("RUNTIME_WORKER_DIRS", apps.to_str().unwrap())
            .ready(),
    );
    let r = gw.get("/tabbed/");
    assert_eq!(r.status, 500, "{r:?}");
    assert!(r.json()["error"].as_str().unwrap().ends_with(HINT), "{r:?}");
}

#[test]
fn check_lists_every_bad_value_by_name() {
    let (ok, out) = check(
        Some("server:\n  port: 70000\n  logFormat: xml\n  poolSize: lots\n  colour: blue\n"),
        &[
            ("RUNTIME_SHUTDOWN_GRACE", "forever"),
            ("RUNTIME_THREADS", "0"),
            ("RUNTIME_MAX_HEADER_SIZE", "2mb"),
            ("RUNTIME_API_PREFIX", "/a b"),
            ("RUNTIME_LOG_LEVEL", "chatty"),
        ],
    );
    assert!(!ok, "{out}");
    for needle in [
        "server.port",
        "70000",
        "server.logFormat",
        "xml",
        "server.poolSize",
        "lots",
        "server.colour: unknown key",
        "RUNTIME_SHUTDOWN_GRACE",
        "forever",
        "RUNTIME_THREADS",
        r#"RUNTIME_MAX_HEADER_SIZE: must be from 1kb to 1mb (got "2mb")"#,
        "RUNTIME_API_PREFIX",
        "RUNTIME_LOG_LEVEL",
        "chatty",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // A bad server value does not hide the plugins' own problems: one run lists them all.
    let (ok, out) = check(
        Some(concat!(
            "server:\n  port: 70000\n",
            "plugins:\n",
            "  gateway:\n    rateLimit: {window: 1w}\n",
            "  proxy:\n    rules: [{pattern: \"(\", target: \"http://127.0.0.1:1\"}]\n",
        )),
        &[("GATEWAY_CORS_MAX_AGE", "long")],
    );
    assert!(!ok, "{out}");
    for needle in [
        "server.port",
        "plugins.gateway.rateLimit.window",
        "1w",
        "plugins.proxy.rules[0]: Invalid regex pattern",
        "GATEWAY_CORS_MAX_AGE",
        "long",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    let (ok, out) = check(None, &[]);
    assert!(ok, "{out}");
    assert!(out.contains("configuration OK"), "{out}");
    // Bases that would hide one another's routes: the runtime API moved onto the rules
    // API, and two plugins on one base.
    let (ok, out) = check(
        Some("plugins:\n  keyval:\n    base: /database\n"),
        &[("RUNTIME_API_PREFIX", "/redirects")],
    );
    assert!(!ok, "{out}");
    for needle in [
        "plugins.proxy.base: overlaps the runtime API at /redirects/api (RUNTIME_API_PREFIX)",
        "plugins.keyval.base: is also the base of plugin database (got /database)",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    // A JWT secret shorter than RFC 7518 asks is a warning (never printed itself).
    let (ok, out) = check(None, &[("AUTH_JWT_SECRET", "s3cret")]);
    assert!(ok, "{out}");
    assert!(
        out.contains(
            "warning: AUTH_JWT_SECRET: the JWT secret is 6 bytes; RFC 7518 3.2 asks at least 32"
        ),
        "{out}"
    );
    assert!(!out.contains("s3cret"), "{out}");
    let (ok, out) = check(None, &[("AUTH_JWT_SECRET", &"k".repeat(32))]);
    assert!(ok && !out.contains("warning"), "{out}");
    // So is a JWKS over plain http from another host: whoever answers for it signs.
    let jwks = [("AUTH_JWT_JWKS_URL", "http://idp.example/certs")];
    let (ok, out) = check(None, &jwks);
    assert!(ok, "{out}");
    assert!(
        out.contains("warning: AUTH_JWT_JWKS_URL: the JWKS is fetched over plain http"),
        "{out}"
    );
    for url in [
        "https://idp.example/certs",
        "http://127.0.0.1:9/certs",
        "http://localhost/c",
    ] {
        let (ok, out) = check(None, &[("AUTH_JWT_JWKS_URL", url)]);
        assert!(ok && !out.contains("warning"), "{url}: {out}");
    }
    // A plugin left out is not a problem, but the check says so, as `serve` logs it: here
    // a secret is set, yet auth-token would not load and no route would ask for a token.
    let (ok, out) = check(
        Some(
            "plugins:\n  gateway:\n    enabled: false\n  auth-token:\n    dependencies: [gateway]\n",
        ),
        &[("AUTH_JWT_SECRET", "s3cret")],
    );
    assert!(ok, "{out}");
    assert!(out.contains("4 plugin(s) enabled"), "{out}");
    assert!(
        out.contains("warning: plugin gateway not loaded: disabled"),
        "{out}"
    );
    assert!(
        out.contains(
            "warning: plugin auth-token not loaded: required dependency \"gateway\" is not loaded"
        ),
        "{out}"
    );
    let (ok, out) = check(Some("server: [1, 2]\nplugins: {nope: {}}\n"), &[]);
    assert!(!ok);
    assert!(out.contains("server: must be a mapping"), "{out}");
    assert!(out.contains("plugins.nope: unknown plugin"), "{out}");
}

/// A plugin manifest written for the original names its dependencies by package
/// (`@buntime/plugin-database`): they are the plugins of those names here. They were "not
/// installed", so keyval and proxy (which needs keyval) were left out. Its settings of
/// features this gateway does not have are named.
#[test]
fn plugin_dependencies_may_use_the_originals_package_names() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |name: &str, text: &str| {
        common::write(&dir.path().join(name).join("manifest.yaml"), text);
    };
    manifest(
        "keyval",
        "name: \"@buntime/plugin-keyval\"\nbase: /keyval\ndependencies:\n  - \"@buntime/plugin-database\"\n",
    );
    manifest(
        "proxy",
        "name: \"@buntime/plugin-proxy\"\nbase: /redirects\ndependencies: [\"@buntime/plugin-keyval\"]\noptionalDependencies: [\"@buntime/plugin-authn\"]\n",
    );
    // Its database manifest configures what this gateway does not have: said, not refused
    // (its UI's keys are not worth a word).
    manifest(
        "database",
        "name: \"@buntime/plugin-database\"\nmenus: []\npluginEntry: dist/plugin.js\nadapters:\n  - type: sqlite\ntenancy: {enabled: false}\n",
    );
    let plugins = dir.path().to_str().unwrap();
    let (ok, out) = check(None, &[("RUNTIME_PLUGIN_DIRS", plugins)]);
    assert!(ok, "{out}");
    assert!(out.contains("5 plugin(s) enabled"), "{out}");
    assert!(!out.contains("not loaded"), "{out}");
    let unread: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("not read by this"))
        .collect();
    assert_eq!(
        unread,
        [format!(
            "warning: plugin database ({plugins}/database): manifest key(s) adapters, tenancy \
             are not read by this gateway; the database is set by url (DATABASE_LIBSQL_URL), \
             else a local file"
        )],
        "{out}"
    );
}

/// The original Buntime's image kept its plugins in `plugin-<name>/` folders (and installed
/// packages in `@scope/<package>/`), each manifest naming its plugin
/// `@buntime/plugin-<name>`. Mounted here as they were, those folders were passed over in
/// silence, and the rate limit and static rules they set did nothing. They configure the
/// plugins they name; a folder that configures no plugin here, or one configured already,
/// is named in a warning by `check` and at start.
#[test]
fn the_originals_plugin_folders_configure_their_plugins() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    let manifest = |folder: &str, text: &str| {
        common::write(&plugins.join(folder).join("manifest.yaml"), text);
    };
    manifest(
        "plugin-gateway",
        "name: \"@buntime/plugin-gateway\"\nbase: /gateway\nrateLimit:\n  requests: 4\n  window: 1m\n",
    );
    manifest(
        "@buntime/plugin-proxy",
        "name: \"@buntime/plugin-proxy\"\nbase: /redirects\nrules:\n  - name: legacy\n    pattern: \"^/legacy(/.*)?$\"\n    target: http://127.0.0.1:9\n",
    );
    manifest(
        "plugin-authn",
        "name: \"@buntime/plugin-authn\"\nbase: /auth\n",
    );
    manifest("rates", "name: gateway\nrateLimit: {requests: 1000}\n");
    let p = |folder: &str| plugins.join(folder).display().to_string();
    let expected = [
        format!(
            "plugin folder {} is not read: the original Buntime's authn plugin is not part of \
             this gateway",
            p("plugin-authn")
        ),
        format!(
            "plugin folder {} is not read: plugin gateway is configured by {} (the first \
             folder of a plugin wins)",
            p("rates"),
            p("plugin-gateway")
        ),
    ];
    let (ok, out) = check(None, &[("RUNTIME_PLUGIN_DIRS", &p(""))]);
    assert!(ok, "{out}");
    let warned: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("warning: plugin folder"))
        .collect();
    assert_eq!(
        warned,
        expected.each_ref().map(|e| &e["plugin folder".len()..]),
        "{out}"
    );

    let gw = Gateway::start(Options {
        dir: Some(dir.path().to_path_buf()),
        ..Options::default()
    });
    for warning in &expected {
        assert!(gw.logs().contains(warning), "{}", gw.logs());
    }
    let mut installed: Vec<(String, String)> = gw
        .get("/api/plugins")
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["name"].to_string(), i["path"].to_string()))
        .collect();
    installed.sort();
    assert_eq!(
        installed,
        [
            ("\"gateway\"", p("plugin-gateway")),
            ("\"plugin-authn\"", p("plugin-authn")),
            ("\"proxy\"", p("@buntime/plugin-proxy")),
        ]
        .map(|(n, path)| (n.to_string(), format!("{path:?}")))
    );
    let rules = gw.get("/redirects/api/rules").json();
    assert_eq!(rules[0]["name"], "legacy", "{rules}");
    assert_eq!(rules[0]["readonly"], true, "{rules}");
    // Its rate limit of 4 counts the two admin calls above.
    let statuses: Vec<u16> = (0..3).map(|_| gw.get("/nothing").status).collect();
    assert_eq!(statuses, [404, 404, 429]);
}

/// A misspelt variable in the gateway's namespaces is named, with the setting it likely
/// meant, by `check` and at the start of `serve`; so are the original Buntime's variables
/// that do nothing here and a numbered list with a gap. Kubernetes service links (a
/// Service named `gateway`) and other software's variables are left alone.
#[test]
fn check_and_serve_name_variables_nothing_reads() {
    let env = [
        ("GATEWAY_RATE_LIMIT_REQUEST", "5"),
        ("RUNTIME_WORKER_CONFIG_CACHE_TTL_MS", "1000"),
        ("DATABASE_LIBSQL_REPLICAS_2", "http://127.0.0.1:9"),
        ("GATEWAY_SERVICE_HOST", "10.0.0.1"),
        ("GATEWAY_PORT_8000_TCP", "tcp://10.0.0.1:8000"),
        ("RUNTIME_POOL_SIZE", "7"),
        ("NODE_ENV", "production"),
    ];
    let expected = [
        "environment variable DATABASE_LIBSQL_REPLICAS_2 is not read: \
         DATABASE_LIBSQL_REPLICAS_1, DATABASE_LIBSQL_REPLICAS_2, ... are read up to the \
         first one not set, DATABASE_LIBSQL_REPLICAS_1",
        "environment variable GATEWAY_RATE_LIMIT_REQUEST is not read: no such setting \
         (did you mean GATEWAY_RATE_LIMIT_REQUESTS?)",
        "environment variable RUNTIME_WORKER_CONFIG_CACHE_TTL_MS is not read: the original \
         Buntime's manifest cache; manifests are read when a worker starts here; it has no \
         effect",
    ];
    let (ok, out) = check(None, &env);
    assert!(ok, "{out}");
    let warned: Vec<&str> = out
        .lines()
        .filter_map(|l| l.strip_prefix("warning: environment variable "))
        .collect();
    let want: Vec<&str> = expected
        .iter()
        .map(|w| w.strip_prefix("environment variable ").unwrap())
        .collect();
    assert_eq!(warned, want, "{out}");

    let gw = Gateway::start(
        env.iter()
            .fold(Options::default(), |opts, (k, v)| opts.env(k, v)),
    );
    let logs = gw.stderr();
    for w in expected {
        assert!(logs.contains(w), "{w}\n{logs}");
    }
    assert!(!logs.contains("GATEWAY_SERVICE_HOST"), "{logs}");
}

/// An app folder named like a plugin's base (or the runtime API's) is deployed and listed,
/// but the route order sends its plain paths elsewhere; the check says so.
#[test]
fn check_names_app_folders_a_plugin_shadows() {
    let apps = tempfile::tempdir().unwrap();
    for name in ["gateway", "api", "hello"] {
        common::write(&apps.path().join(name).join("manifest.yaml"), "ttl: 1m\n");
        common::write(&apps.path().join(name).join("index.html"), "<p>hi</p>");
    }
    let dirs = apps.path().display().to_string();
    let (ok, out) = check(None, &[("RUNTIME_WORKER_DIRS", &dirs)]);
    assert!(ok, "{out}");
    for needle in [
        "warning: app gateway (",
        "is reached only as /gateway@<version>/...: plugin gateway owns /gateway",
        "warning: app api (",
        "is never reached: the runtime API owns /api",
    ] {
        assert!(out.contains(needle), "missing {needle:?} in:\n{out}");
    }
    assert!(!out.contains("app hello"), "{out}");
    // With the API moved, `api` is an ordinary name.
    let (_, out) = check(
        None,
        &[("RUNTIME_WORKER_DIRS", &dirs), ("RUNTIME_API_PREFIX", "/_")],
    );
    assert!(!out.contains("app api"), "{out}");
}

/// A static app left at `ttl: 0` starts a process per request (SPEC 8.2's default): a few
/// dozen requests a second. `check` and the start-up log say so, and name invalid
/// manifests, missing entry files and unread keys; a command app at `ttl: 0` (CGI-like on
/// purpose) and a static app with a ttl are not named.
#[test]
fn check_names_static_apps_that_start_a_process_per_request() {
    let apps = tempfile::tempdir().unwrap();
    for (name, manifest) in [
        ("site", "entrypoint: index.html\n"),
        ("kept", "ttl: 5m\n"),
        ("cgi", "command: [./run]\n"),
        // The version a bare /old/ picks keeps a worker; an older one does not.
        ("old@2.0.0", "ttl: 5m\n"),
        ("old@1.0.0", "{}\n"),
        // Answers 500 (SPEC 8.2), and nothing said so before a request came.
        ("broken@1.0.0", "ttl: 5m\ntimeout: soon\n"),
        // A deploy without its build: every page 404.
        ("unbuilt", "ttl: 5m\nentrypoint: dist/index.html\n"),
        // `tll` for `ttl`: a typo the app's own manifest shows nowhere else before use.
        ("typo", "tll: 5m\ncommand: [./run]\n"),
        ("based", "ttl: 5m\ncommand: [./run]\ninjectBase: true\n"),
        ("orig", "ttl: 5m\nvisibility: protected\n"),
    ] {
        common::write(&apps.path().join(name).join("manifest.yaml"), manifest);
        if name != "unbuilt" {
            common::write(&apps.path().join(name).join("index.html"), "<p>hi</p>");
        }
    }
    let dirs = apps.path().display().to_string();
    let (ok, out) = check(None, &[("RUNTIME_WORKER_DIRS", &dirs)]);
    assert!(ok, "{out}");
    // Each app's warning on its own line, naming what is wrong with that app.
    for (app, says) in [
        ("site", "is static with ttl 0"),
        ("old@1.0.0", "is static with ttl 0"),
        (
            "broken",
            "has an invalid manifest: timeout: invalid duration",
        ),
        ("unbuilt", "its entry dist/index.html is not in the folder"),
        ("typo", "manifest key(s) tll are not read by the gateway"),
        (
            "orig",
            "visibility are the original Buntime's and have no effect here",
        ),
        ("based", "injectBase applies to static apps only"),
    ] {
        let prefix = format!("warning: app {app} (");
        assert!(
            out.lines()
                .any(|l| l.starts_with(&prefix) && l.contains(says)),
            "{app}: {says:?} not in\n{out}"
        );
    }
    assert!(!out.contains("app old ("), "{out}");
    assert!(
        !out.contains("app kept") && !out.contains("app cgi"),
        "{out}"
    );
    let gw = Gateway::start(Options::default().env("RUNTIME_WORKER_DIRS", &dirs));
    assert!(
        gw.stderr().contains("is static with ttl 0")
            && gw.stderr().contains("has an invalid manifest"),
        "{}",
        gw.logs()
    );
}

/// The original Buntime served `<dir>/<name>/` as the app `name` when it held a
/// `package.json`, manifest or not; this gateway asks for a manifest (SPEC 8.1), so such a
/// folder deployed unchanged was a 404 nothing explained. `check` and the start-up log name
/// it; a folder with a manifest, one holding versions, one with neither file and one the
/// API's path owns are not named.
#[test]
fn folders_the_original_served_without_a_manifest_are_named() {
    let apps = tempfile::tempdir().unwrap();
    let file = |rel: &str, text: &str| common::write(&apps.path().join(rel), text);
    file("shop/package.json", "{\"name\": \"shop\"}");
    file(
        "shop/index.ts",
        "export default { fetch: () => new Response('hi') };",
    );
    file("kept/package.json", "{}");
    file("kept/manifest.yaml", "ttl: 5m\n");
    file("kept/index.html", "<p>hi</p>");
    file("versioned/package.json", "{}");
    file("versioned/1.0.0/manifest.yaml", "ttl: 5m\n");
    file("versioned/1.0.0/index.html", "<p>hi</p>");
    file("notes/readme.txt", "not an app");
    // The runtime API's segment was no app there either.
    file("api/package.json", "{}");
    let said = format!(
        "folder {}/shop is not an app: it has a package.json but no manifest.yaml (the \
         original Buntime served it as /shop/); add a manifest.yaml, with a command for a \
         server",
        apps.path().display()
    );
    let (named, gw) = folder_warnings(apps.path());
    assert_eq!(named, [said]);
    assert_eq!(gw.get("/shop/").status, 404);
}

/// The folder warnings `check` prints for the worker dir `apps` (each line without its
/// `warning: `), once it is seen that `serve` logs each of them too; and that gateway.
fn folder_warnings(apps: &std::path::Path) -> (Vec<String>, Gateway) {
    let dirs = apps.display().to_string();
    let (ok, out) = check(None, &[("RUNTIME_WORKER_DIRS", &dirs)]);
    assert!(ok, "{out}");
    let named: Vec<String> = out
        .lines()
        .filter_map(|l| l.strip_prefix("warning: "))
        .filter(|l| l.starts_with("folder "))
        .map(String::from)
        .collect();
    let gw = Gateway::start(Options::default().env("RUNTIME_WORKER_DIRS", &dirs));
    for line in &named {
        assert!(gw.stderr().contains(line.as_str()), "{}", gw.logs());
    }
    (named, gw)
}

/// A folder laid out as an app under a name no URL's first segment can pick (a space, an
/// accent) or with no version after its `@` (`hello@v1.2`) was passed over in silence: a
/// 404 nothing explained. `check` and the start-up log name each, with the reason; folders
/// that are no app whatever their name (no manifest, no versions, a hidden one, an npm
/// scope) are not named.
#[test]
fn app_folders_no_url_can_pick_are_named() {
    let apps = tempfile::tempdir().unwrap();
    let file = |rel: &str, text: &str| common::write(&apps.path().join(rel), text);
    file("my shop/manifest.yaml", "ttl: 5m\n");
    file("café/1.0.0/manifest.yaml", "ttl: 5m\n");
    file("hello@v1.2/manifest.yaml", "ttl: 5m\n");
    file("good@1.0.0/manifest.yaml", "ttl: 5m\n");
    file("good@1.0.0/index.html", "<p>hi</p>");
    file("my notes/readme.txt", "not an app");
    file(".cache x/manifest.yaml", "ttl: 5m\n");
    file("@scope/pkg/manifest.yaml", "ttl: 5m\n");
    let name = "an app's name, the first segment of its URLs, may hold only letters, digits, \
                -, _ and .; rename it";
    let at = |f: &str| format!("folder {}/{f} is not an app: ", apps.path().display());
    let said = [
        format!("{}{name}", at("café")),
        format!(
            "{}\"v1.2\" after the @ is no version (semver such as 1.2.0, or latest); rename it",
            at("hello@v1.2")
        ),
        format!("{}{name}", at("my shop")),
    ];
    let (named, gw) = folder_warnings(apps.path());
    assert_eq!(named, said);
    assert_eq!(gw.get("/good/").status, 200);
}

/// With no worker dir in place (a typo in `RUNTIME_WORKER_DIRS`, a volume not mounted)
/// every app answered 404 and nothing said why. One missing dir of several is usual and
/// not named.
#[test]
fn worker_dirs_that_are_all_missing_are_named() {
    let apps = tempfile::tempdir().unwrap();
    let missing = apps.path().join("aps");
    let both = format!("{}:{}", missing.display(), apps.path().display());
    let (ok, out) = check(None, &[("RUNTIME_WORKER_DIRS", &both)]);
    assert!(ok && !out.contains("no worker dir exists"), "{out}");
    let only = missing.display().to_string();
    let (ok, out) = check(None, &[("RUNTIME_WORKER_DIRS", &only)]);
    let said =
        format!("warning: no worker dir exists ({only}): no app can be served until one is made");
    assert!(ok && out.contains(&said), "{out}");
    let gw = Gateway::start(Options::default().env("RUNTIME_WORKER_DIRS", &only));
    assert!(
        gw.stderr().contains(&said["warning: ".len()..]),
        "{}",
        gw.logs()
    );
}

#[test]
fn serve_refuses_to_start_on_bad_config() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(common::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PORT", "not-a-port")
        .env("RUNTIME_DRAIN_DELAY", "-1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("PORT") && err.contains("not-a-port"), "{err}");
    assert!(err.contains("RUNTIME_DRAIN_DELAY"), "{err}");
}

/// Starts the gateway on the port `holder` holds: it must exit within 10 s (not serve,
/// not retry) with an error that names the port.
fn refuses_the_busy_port(holder: &std::net::TcpListener) {
    let port = holder.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(common::BIN)
        .arg("serve")
        .current_dir(dir.path())
        .env_clear()
        .env("PORT", port.to_string())
        .env("RUNTIME_PLUGIN_DIRS", dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let Some(status) = common::eventually(Duration::from_secs(10), || child.try_wait().unwrap())
    else {
        child.kill().unwrap();
        child.wait().unwrap();
        panic!("the gateway started on busy port {port}");
    };
    assert!(!status.success());
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(
        err.contains(&format!("PORT {port}: cannot listen")),
        "{err}"
    );
}

#[test]
fn busy_port_is_a_clear_start_up_error() {
    refuses_the_busy_port(&std::net::TcpListener::bind("0.0.0.0:0").unwrap());
}

#[test]
fn a_port_busy_on_ipv6_only_is_a_clear_start_up_error_too() {
    let Ok(holder) = std::net::TcpListener::bind("[::1]:0") else {
        return; // no IPv6 on this machine: the gateway listens on IPv4 only
    };
    refuses_the_busy_port(&holder);
}

#[test]
fn ipv4_and_ipv6_clients_are_served_and_told_apart() {
    let gw = Gateway::start(Options::default().ready());
    assert_eq!(gw.get("/x").status, 404);
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return; // no IPv6 on this machine
    }
    let v6 = |path: &str| {
        common::send(
            &common::agent(),
            "GET",
            &format!("http://[::1]:{}{path}", gw.port),
            &[],
            None,
        )
    };
    assert_eq!(v6("/x").status, 404);
    // ::1 is loopback for the admin check; IPv4 clients are keyed as plain IPv4, not
    // as the IPv4-mapped addresses a dual-stack socket reports.
    let buckets = v6("/gateway/api/rate-limit/buckets");
    assert_eq!(buckets.status, 200, "{buckets:?}");
    let mut keys: Vec<String> = buckets
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key"].as_str().unwrap().to_string())
        .collect();
    keys.sort();
    assert_eq!(keys, ["127.0.0.1", "::1"]);
}

#[test]
fn idle_gateway_exits_within_a_second_of_sigterm() {
    let mut gw = Gateway::start(Options::default().ready());
    let (status, took) = gw.stop();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(1), "took {took:?}");
}

#[test]
fn sigint_drains_too() {
    let mut gw = Gateway::start(Options::default().ready());
    gw.signal("INT");
    let status = gw.wait_exit(Duration::from_secs(5)).expect("exits");
    assert!(status.success(), "{status}");
}

#[test]
fn in_flight_request_completes_after_sigterm() {
    let mut gw = Gateway::start(Options::default().ready());
    // A request whose body is still on its way is in flight.
    let mut s = gw.connect();
    s.write_all(b"POST /api/plugins HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n").unwrap();
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(700));
    assert!(
        gw.is_running(),
        "exited with a request in flight:\n{}",
        gw.logs()
    );
    // New connections are refused once the listener is closed.
    assert!(TcpStream::connect(("127.0.0.1", gw.port)).is_err());
    s.write_all(b"{}").unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert!(out.starts_with("HTTP/1.1 405"), "{out}");
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("exits once the request is done");
    assert!(status.success(), "{status}");
}

#[test]
fn shutdown_grace_cuts_a_stuck_request() {
    let mut gw = Gateway::start(
        Options::default()
            .env("RUNTIME_SHUTDOWN_GRACE", "1s")
            .ready(),
    );
    let mut s = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"POST /api/plugins HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let (status, took) = gw.stop();
    assert!(status.success(), "{status}");
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "took {took:?}"
    );
}

#[test]
fn a_second_signal_stops_without_waiting_out_the_grace() {
    let mut gw = Gateway::start(Options::default().ready());
    let mut s = gw.connect();
    s.write_all(b"POST /api/plugins HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    gw.signal("INT");
    std::thread::sleep(Duration::from_millis(700));
    assert!(gw.is_running(), "the first signal drains");
    let started = Instant::now();
    gw.signal("INT");
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .expect("the second signal stops it, well before the 30 s grace");
    assert!(status.success(), "{status}");
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(
        gw.stderr()
            .contains("stopping at once on a second signal, with 1 request(s) in flight"),
        "{}",
        gw.stderr()
    );
}

#[test]
fn drain_delay_reports_draining_and_keeps_accepting() {
    let mut gw = Gateway::start(Options::default().env("RUNTIME_DRAIN_DELAY", "2s").ready());
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    let ready = gw.get("/api/health/ready");
    assert_eq!(ready.status, 503);
    assert_eq!(ready.json()["status"], "draining");
    assert_eq!(
        gw.get("/api/health/live").status,
        200,
        "new connections still accepted"
    );
    let status = gw
        .wait_exit(Duration::from_secs(5))
        .expect("exits after the delay");
    assert!(status.success());
}

/// Once draining, answers say `Connection: close` and the connection closes after them,
/// on kept-alive connections too: a client that went on sending on its connection lost
/// the request it sent as the drain delay ended and the gateway closed the connection.
#[test]
fn draining_answers_close_their_connections() {
    let up = Upstream::http();
    let mut gw = Gateway::start(Options::default().env("RUNTIME_DRAIN_DELAY", "3s").ready());
    let rule = json!({"pattern": "^/up", "target": up.url()});
    assert_eq!(
        gw.json("POST", "/redirects/api/rules", &[], &rule).status,
        201
    );
    let mut s = gw.connect();
    let ask = b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n";
    s.write_all(ask).unwrap();
    assert!(
        read_one_response(&mut s)
            .to_lowercase()
            .contains("connection: keep-alive")
    );
    gw.signal("TERM");
    std::thread::sleep(Duration::from_millis(300));
    s.write_all(ask).unwrap();
    let text = read_one_response(&mut s).to_lowercase();
    assert!(text.starts_with("http/1.1 200"), "{text}");
    assert!(text.contains("connection: close"), "{text}");
    assert_eq!(
        s.read(&mut [0u8; 16]).unwrap(),
        0,
        "the connection stays open"
    );
    // Connections made while draining are answered, and closed too, whoever answers.
    for (path, status) in [("/nothing", 404), ("/up/x", 200)] {
        let r = gw.get(path);
        assert_eq!(r.status, status, "{path}");
        assert_eq!(r.header("connection"), Some("close"), "{path}");
    }
    assert!(gw.wait_exit(Duration::from_secs(10)).is_some());
}

#[test]
fn access_log_lines_are_json_when_asked() {
    let mut gw = Gateway::start(
        Options::default()
            .env("RUNTIME_LOG_FORMAT", "json")
            .env("RUNTIME_MASTER_KEY", "super-secret-key"),
    );
    gw.get_with(
        "/api/plugins",
        &[
            ("x-request-id", "log-me"),
            ("x-api-key", "super-secret-key"),
            ("cookie", "session=abc"),
        ],
    );
    gw.get("/missing?token=query-secret");
    // Pingora's error line for a failed upstream names the request without its query.
    let down = format!("http://127.0.0.1:{}", common::free_port());
    let rule = json!({"pattern": "^/down", "target": down});
    let admin = [("x-api-key", "super-secret-key")];
    assert_eq!(
        gw.json("POST", "/redirects/api/rules", &admin, &rule)
            .status,
        201
    );
    let failed = gw.get_with(
        "/down/x?token=upstream-secret",
        &[("x-request-id", "failed-1")],
    );
    assert_eq!(failed.status, 502);
    gw.stop();
    assert!(
        gw.stderr().contains("GET /down/x, request id failed-1"),
        "{}",
        gw.stderr()
    );
    let out = gw.stdout();
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let line = lines
        .iter()
        .find(|l| l["requestId"] == "log-me")
        .expect("the request's line");
    assert_eq!(line["method"], "GET");
    assert_eq!(line["path"], "/api/plugins");
    assert_eq!(line["status"], 200);
    assert_eq!(line["route"], "api");
    assert!(
        line["durationMs"].is_number()
            && line["bytes"].is_number()
            && line["clientIp"] == "127.0.0.1"
    );
    let all = gw.logs();
    for secret in [
        "super-secret-key",
        "session=abc",
        "query-secret",
        "upstream-secret",
    ] {
        assert!(!all.contains(secret), "{secret} leaked into the logs");
    }
    for l in gw.stderr().lines().filter(|l| !l.is_empty()) {
        let v: serde_json::Value =
            serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
        assert!(v["level"].is_string() && v["msg"].is_string());
    }
}

/// Closes `s` with a reset (RST) instead of a FIN, as a client that crashed would.
fn reset(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .unwrap();
}

/// What a client does to its own connection is not the gateway's error: hanging up or
/// resetting while its header arrives, resetting before its 400 or its answer is written.
/// Pingora logged each at ERROR, one line per connection anyone could open; they go to
/// debug, under the target `client`.
#[test]
fn a_client_hanging_up_is_not_logged_as_an_error() {
    let rude = |gw: &Gateway| {
        let mut s = gw.connect();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHo").unwrap();
        drop(s);
        let mut s = gw.connect();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHo").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        reset(s);
        let mut s = gw.connect();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n")
            .unwrap();
        reset(s);
        let mut s = gw.connect();
        s.write_all(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        reset(s);
        // The gateway has seen all four once it answers the next request.
        std::thread::sleep(Duration::from_millis(500));
        assert_eq!(gw.get("/api/health").status, 200);
    };
    let gw = Gateway::start(Options::default());
    rude(&gw);
    let logs = gw.stderr();
    assert!(!logs.contains("ERROR"), "{logs}");
    let gw = Gateway::start(Options::default().env("RUNTIME_LOG_LEVEL", "debug"));
    rude(&gw);
    let logs = gw.stderr();
    assert!(!logs.contains("ERROR"), "{logs}");
    assert!(
        logs.contains("DEBUG client: Fail to proxy: Downstream ConnectionClosed"),
        "{logs}"
    );
    assert!(logs.contains("Connection reset by peer"), "{logs}");
}

#[test]
fn access_log_can_be_turned_off() {
    let mut gw = Gateway::start(Options::default().env("RUNTIME_ACCESS_LOG", "off"));
    gw.get("/api/health");
    gw.stop();
    assert!(!gw.stdout().contains("/api/health"), "{}", gw.stdout());
}

/// An idle client connection costs the gateway tens of kilobytes, not a hundred: Pingora
/// gave each a 64 KiB read buffer, zeroed when allocated, which mimalloc touches whole (103 KB
/// a connection; 10,000 idle keep-alive clients took a gigabyte).
#[test]
fn an_idle_connection_costs_little_memory() {
    let gw = Gateway::start(Options::default().env("RUNTIME_ACCESS_LOG", "off"));
    let address = format!("127.0.0.1:{}", gw.port);
    let each = common::kib_per_idle_connection(gw.pid().into(), &address, 500);
    assert!(each < 64, "{each} KiB per idle connection");
}
