//! SPEC 5 (CORS, rate limiting, /gateway/api) and SPEC 3's client address, end to end.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use common::upstream::Upstream;
use common::{Gateway, Options};
use serde_json::json;

fn origin(o: &str) -> [(&str, &str); 1] {
    [("origin", o)]
}

fn preflight(gw: &Gateway, path: &str, origin: &str) -> common::Resp {
    gw.send(
        "OPTIONS",
        path,
        &[
            ("origin", origin),
            ("access-control-request-method", "PUT"),
            ("access-control-request-headers", "x-custom"),
        ],
        None,
    )
}

#[test]
fn preflight_is_answered_before_auth_and_rate_limits() {
    let gw = Gateway::start(
        Options::default()
            .env("RUNTIME_MASTER_KEY", "mk")
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "1")
            .ready(),
    );
    for _ in 0..3 {
        let r = preflight(&gw, "/redirects/api/rules", "https://app.test");
        assert_eq!(r.status, 204, "{r:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert_eq!(
            r.header("access-control-allow-methods"),
            Some("GET, HEAD, PUT, PATCH, POST, DELETE")
        );
        assert_eq!(r.header("access-control-allow-headers"), Some("x-custom"));
        assert_eq!(r.header("access-control-max-age"), Some("86400"));
        assert!(
            r.header("ratelimit-limit").is_none(),
            "preflights are not rate limited"
        );
    }
    // The one request the limit allows is still there. With the default origin `*`, every
    // answer allows any origin, also one to a request without an Origin (a cache may keep
    // it for all), and none varies by it.
    for status in [404, 429] {
        let r = gw.get("/nowhere");
        assert_eq!(r.status, status);
        assert_eq!(r.header("access-control-allow-origin"), Some("*"));
        assert!(r.header("vary").is_none(), "{r:?}");
    }
}

#[test]
fn cors_headers_on_every_kind_of_response() {
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env(
                "GATEWAY_CORS_ORIGIN",
                "https://app.test, *.example.com, https://port.test:443",
            )
            .env("GATEWAY_CORS_CREDENTIALS", "true")
            .env("RUNTIME_MASTER_KEY", "mk")
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "8")
            .config("plugins:\n  gateway:\n    cors:\n      exposedHeaders: [x-total]\n")
            .ready(),
    );
    let rules = |path: &str, target: &str| {
        gw.json(
            "POST",
            "/redirects/api/rules",
            &[("x-api-key", "mk")],
            &json!({"pattern": path, "target": target}),
        )
    };
    assert_eq!(rules("^/up", &up.url()).status, 201);
    assert_eq!(
        rules(
            "^/down",
            &format!("http://127.0.0.1:{}", common::free_port())
        )
        .status,
        201
    );
    let check = |r: &common::Resp, o: &str| {
        assert_eq!(r.header("access-control-allow-origin"), Some(o), "{r:?}");
        assert_eq!(r.header("access-control-allow-credentials"), Some("true"));
        assert_eq!(r.header("vary"), Some("Origin"));
        assert_eq!(r.header("access-control-expose-headers"), Some("x-total"));
    };
    let o = "https://app.test";
    check(&gw.get_with("/api/health", &origin(o)), o);
    check(&gw.get_with("/up/x", &origin(o)), o);
    check(&gw.get_with("/down", &origin(o)), o);
    check(&gw.get_with("/no-such-route", &origin(o)), o);
    check(&gw.get_with("/gateway/api/stats", &origin(o)), o);
    // Browsers leave a scheme's own port out of `Origin`, written out or not in the list.
    let port = "https://port.test";
    check(&gw.get_with("/api/health", &origin(port)), port);
    let wild = "https://deep.sub.example.com";
    let denied = gw.get_with("/database/api/tables", &origin(wild));
    assert_eq!(denied.status, 401);
    check(&denied, wild);
    // A proxied response that carries Vary keeps it, with Origin added, allowed or not.
    for from in [o, "https://evil.test"] {
        let raw = common::raw(
            gw.port,
            format!(
                "GET /up/vary HTTP/1.1\r\nHost: x\r\nOrigin: {from}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
            Duration::from_secs(10),
        )
        .to_ascii_lowercase();
        assert!(raw.contains("\r\nvary: accept-encoding\r\n"), "{raw}");
        assert!(raw.contains("\r\nvary: origin\r\n"), "{raw}");
    }
    let limited = (0..10)
        .map(|_| gw.get_with("/no-such-route", &origin(o)))
        .find(|r| r.status == 429)
        .expect("the limit of 8 is reached");
    check(&limited, o);
    // Disallowed and malformed origins, and requests without one, get no Allow-Origin,
    // but `Vary: Origin`: a cache in front must not hand their answer to an allowed origin.
    let r = gw.get("/api/health");
    assert!(r.header("access-control-allow-origin").is_none());
    assert_eq!(r.header("vary"), Some("Origin"));
    for bad in [
        "https://evil.test",
        "https://example.com",
        "null",
        "garbage",
        &format!("https://{}.example.com", "a".repeat(5000)),
    ] {
        let r = gw.get_with("/api/health", &origin(bad));
        assert_eq!(r.status, 200);
        assert!(
            r.header("access-control-allow-origin").is_none(),
            "{bad:.40}"
        );
        assert_eq!(r.header("vary"), Some("Origin"), "{bad:.40}");
    }
    let r = preflight(&gw, "/x", "https://evil.test");
    assert_eq!(r.status, 204);
    assert!(
        r.headers
            .keys()
            .all(|k| !k.starts_with("access-control-allow")),
        "{r:?}"
    );
}

/// The gateway's CORS policy holds whatever the app sends: an app whose own CORS allows
/// every origin (with credentials) let a browser on a refused origin read its answers,
/// since the gateway adds no `Access-Control-Allow-Origin` for that origin and the app's
/// went through. With the gateway's CORS off, the app's own headers pass.
#[test]
fn an_upstreams_own_cors_headers_give_way_to_the_gateways() {
    let up = Upstream::http();
    let cors_of = |gw: &Gateway, from: &str| -> Vec<(String, String)> {
        let r = gw.get_with("/app/own-cors", &origin(from));
        assert_eq!(r.status, 200, "{r:?}");
        let mut h: Vec<(String, String)> = r
            .headers
            .into_iter()
            .filter(|(k, _)| k.starts_with("access-control-"))
            .collect();
        h.sort();
        h
    };
    let on = Gateway::start(
        Options::default()
            .env("GATEWAY_CORS_ORIGIN", "https://app.example.com")
            .ready(),
    );
    let rule = json!({"pattern": "^/app", "target": up.url()});
    assert_eq!(
        on.json("POST", "/redirects/api/rules", &[], &rule).status,
        201
    );
    assert_eq!(cors_of(&on, "https://evil.example"), vec![]);
    assert_eq!(
        cors_of(&on, "https://app.example.com"),
        vec![(
            "access-control-allow-origin".to_string(),
            "https://app.example.com".to_string()
        )]
    );
    let off = Gateway::start(
        Options::default()
            .config("plugins:\n  gateway:\n    cors: {enabled: false}\n")
            .ready(),
    );
    assert_eq!(
        off.json("POST", "/redirects/api/rules", &[], &rule).status,
        201
    );
    let theirs = cors_of(&off, "https://evil.example");
    assert!(
        theirs.contains(&(
            "access-control-allow-origin".into(),
            "https://evil.example".into()
        )),
        "{theirs:?}"
    );
}

#[test]
fn rate_limit_headers_and_429() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "3")
            .env("GATEWAY_RATE_LIMIT_WINDOW", "1h")
            .ready(),
    );
    for remaining in [2, 1, 0] {
        let r = gw.get("/anything");
        assert_eq!(r.header("ratelimit-limit"), Some("3"));
        assert_eq!(
            r.header("ratelimit-remaining"),
            Some(remaining.to_string().as_str())
        );
        let reset: u64 = r.header("ratelimit-reset").unwrap().parse().unwrap();
        assert!(
            (3000..=3600).contains(&reset),
            "seconds until the window ends: {reset}"
        );
    }
    let r = gw.get("/anything");
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), json!({"error": "Too Many Requests"}));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry > 0 && retry <= 3600);
    for (a, b) in [
        ("ratelimit-limit", "x-ratelimit-limit"),
        ("ratelimit-remaining", "x-ratelimit-remaining"),
        ("ratelimit-reset", "x-ratelimit-reset"),
    ] {
        assert_eq!(r.header(a), r.header(b), "{a} and {b} agree (seconds)");
    }
    assert_eq!(r.header("ratelimit-remaining"), Some("0"));
    // Health paths and /metrics are excluded by default.
    for _ in 0..5 {
        assert_eq!(gw.get("/api/health").status, 200);
        assert_eq!(gw.get("/api/health/ready").status, 200);
    }
}

#[test]
fn a_rate_limit_block_without_exclude_paths_keeps_the_default_excludes() {
    // A config file's `rateLimit` block replaces the manifest's whole block, so the
    // default exclude list must come from the code, not from the compiled-in manifest.
    let gw = Gateway::start(
        Options::default()
            .config("plugins:\n  gateway:\n    rateLimit:\n      requests: 2\n      window: 1h\n")
            .ready(),
    );
    for _ in 0..5 {
        for path in [
            "/api/health",
            "/api/health/live",
            "/api/health/ready",
            "/metrics",
        ] {
            let r = gw.get(path);
            assert_eq!(r.status, 200, "{path} is not counted");
            assert!(r.header("ratelimit-limit").is_none(), "{path}: {r:?}");
        }
    }
    // Admin routes count too: this is the first of the two allowed requests.
    let config = gw.get("/gateway/api/config").json();
    assert_eq!(
        config["rateLimit"]["excludePaths"],
        json!(["/api/health", "/api/health/**", "/metrics"])
    );
    assert_eq!(gw.get("/x").status, 404);
    assert_eq!(gw.get("/x").status, 429, "the block's own limit holds");
}

#[test]
fn rate_limit_by_header_and_rule_override() {
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "2")
            .env("GATEWAY_RATE_LIMIT_KEY_BY", "header:x-user")
            // The harness polls readiness; keep it out of a limit of 2.
            .env("GATEWAY_RATE_LIMIT_EXCLUDE", "/redirects/**,/api/health/**")
            .ready(),
    );
    let r = gw.json("POST", "/redirects/api/rules", &[], &json!({"pattern": "^/generous", "target": up.url(), "rateLimit": {"requests": 5, "window": "1m"}}));
    assert_eq!(r.status, 201, "{r:?}");
    fn user(u: &str) -> [(&str, &str); 1] {
        [("x-user", u)]
    }
    assert_eq!(gw.get_with("/x", &user("ann")).status, 404);
    assert_eq!(gw.get_with("/x", &user("ann")).status, 404);
    assert_eq!(gw.get_with("/x", &user("ann")).status, 429);
    assert_eq!(
        gw.get_with("/x", &user("bob")).status,
        404,
        "a different key has its own count"
    );
    // The rule's own limit replaces the gateway's for requests it matches.
    for i in 1..=5 {
        let r = gw.get_with("/generous", &user("ann"));
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("ratelimit-limit"), Some("5"));
    }
    assert_eq!(gw.get_with("/generous", &user("ann")).status, 429);
    // Thousands of distinct keys: bounded memory, and the limiter keeps working.
    let agent = common::agent();
    for i in 0..3000 {
        let r = common::send(
            &agent,
            "GET",
            &gw.url("/x"),
            &[("x-user", &format!("user-{i}"))],
            None,
        );
        assert_eq!(r.status, 404, "user-{i} wrongly limited");
    }
    assert_eq!(gw.get_with("/x", &user("ann")).status, 429);
    let stats = gw.get_with("/gateway/api/stats", &user("admin")).json();
    assert!(
        stats["rateLimit"]["activeKeys"].as_u64().unwrap() >= 3000,
        "{stats}"
    );
    // A bucket is deleted by its key as the path segment, percent-decoded: a `+` in
    // it is a plus, not a space.
    assert_eq!(gw.get_with("/x", &user("ann+1@example.com")).status, 404);
    let r = gw.send(
        "DELETE",
        "/gateway/api/rate-limit/buckets/ann+1%40example.com",
        &user("admin"),
        None,
    );
    assert_eq!(
        r.json(),
        json!({"deleted": true, "key": "ann+1@example.com"})
    );
}

/// Keyed by a credential header, clients are limited apart, but the buckets API names
/// them by a fingerprint: a dashboard listing buckets must not show tokens or cookies.
#[test]
fn credential_keys_are_listed_by_a_fingerprint() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_KEY_BY", "header:Authorization")
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "2")
            // The harness polls readiness; keep it out of a limit of 2.
            .env(
                "GATEWAY_RATE_LIMIT_EXCLUDE",
                "/gateway/api/**,/api/health/**",
            )
            .ready(),
    );
    let token = [("authorization", "Bearer secret-token-1")];
    assert_eq!(gw.get_with("/x", &token).status, 404);
    assert_eq!(gw.get_with("/x", &token).status, 404);
    assert_eq!(gw.get_with("/x", &token).status, 429);
    let other = [("authorization", "Bearer secret-token-2")];
    assert_eq!(gw.get_with("/x", &other).status, 404);
    let listed = gw.get("/gateway/api/rate-limit/buckets").text();
    assert!(!listed.contains("secret-token"), "{listed}");
    let buckets: serde_json::Value = serde_json::from_str(&listed).unwrap();
    let full = buckets
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["count"] == 3)
        .unwrap_or_else(|| panic!("{listed}"));
    let key = full["key"].as_str().unwrap();
    assert!(key.starts_with("secret:"), "{key}");
    let path = format!("/gateway/api/rate-limit/buckets/{key}");
    assert_eq!(gw.send("DELETE", &path, &[], None).json()["deleted"], true);
    assert_eq!(gw.get_with("/x", &token).status, 404, "its count was reset");
}

#[test]
fn trusted_proxies_decide_the_client_address() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_TRUSTED_PROXIES", "127.0.0.1")
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "1")
            .ready(),
    );
    fn from(ip: &str) -> [(&str, &str); 1] {
        [("x-forwarded-for", ip)]
    }
    // Each forwarded client has its own bucket.
    assert_eq!(gw.get_with("/x", &from("203.0.113.1")).status, 404);
    assert_eq!(gw.get_with("/x", &from("203.0.113.2")).status, 404);
    assert_eq!(gw.get_with("/x", &from("203.0.113.1")).status, 429);
    // An IPv6 client is counted by its /64: a host may use any address in it.
    assert_eq!(gw.get_with("/x", &from("2001:db8:1:2::a")).status, 404);
    assert_eq!(gw.get_with("/x", &from("2001:db8:1:2::b")).status, 429);
    assert_eq!(gw.get_with("/x", &from("2001:db8:1:3::a")).status, 404);
    // (Each admin call from a loopback address of its own: one request per bucket.)
    let buckets = gw
        .get_with("/gateway/api/rate-limit/buckets", &from("127.0.0.2"))
        .json();
    let keys: Vec<&str> = buckets
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["key"].as_str().unwrap())
        .collect();
    assert!(keys.contains(&"2001:db8:1:2::/64"), "{buckets}");
    let r = gw.send(
        "DELETE",
        "/gateway/api/rate-limit/buckets/2001:db8:1:2::%2F64",
        &from("127.0.0.3"),
        None,
    );
    assert_eq!(r.json()["deleted"], true, "{:?}", r.text());
    assert_eq!(gw.get_with("/x", &from("2001:db8:1:2::c")).status, 404);
    // A non-loopback client gets 401 on admin routes when no master key is set.
    let r = gw.get_with("/api/plugins", &from("203.0.113.9"));
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!({"code": "AUTH_REQUIRED", "error": "Unauthorized"})
    );
    let r = gw.get_with("/gateway/api/config", &from("198.51.100.4, 127.0.0.1"));
    assert_eq!(
        r.status, 401,
        "the first X-Forwarded-For entry is the client"
    );
    assert_eq!(
        gw.get_with("/api/plugins/loaded", &from("127.0.0.1"))
            .status,
        200
    );
    // Without trust, X-Forwarded-For is ignored.
    let plain = Gateway::start(Options::default().ready());
    assert_eq!(
        plain.get_with("/api/plugins", &from("203.0.113.9")).status,
        200
    );
}

#[test]
fn gateway_api() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "10")
            .ready(),
    );
    for _ in 0..3 {
        gw.get_with("/x", &[("x-forwarded-for", "ignored")]);
    }
    let config = gw.get("/gateway/api/config").json();
    assert_eq!(config["rateLimit"]["requests"], 10);
    assert_eq!(config["rateLimit"]["window"], "1m");
    assert_eq!(config["rateLimit"]["keyBy"], "ip");
    assert_eq!(
        config["rateLimit"]["excludePaths"],
        json!(["/api/health", "/api/health/**", "/metrics"])
    );
    assert_eq!(config["cors"]["origin"], "*");
    assert_eq!(config["shell"], json!(null));
    let stats = gw.get("/gateway/api/stats").json();
    assert_eq!(stats["cors"], json!({"enabled": true}));
    assert_eq!(stats["rateLimit"]["enabled"], true);
    assert!(stats["rateLimit"]["totalRequests"].as_u64().unwrap() >= 3);
    assert_eq!(stats["shell"]["enabled"], false);
    let buckets = gw.get("/gateway/api/rate-limit/buckets?limit=10").json();
    let me = buckets
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["key"] == "127.0.0.1")
        .expect("this client's bucket")
        .clone();
    assert!(me["count"].as_u64().unwrap() >= 3);
    assert_eq!(
        me["remaining"].as_u64().unwrap() + me["count"].as_u64().unwrap(),
        10
    );
    assert_eq!(
        gw.get("/gateway/api/rate-limit/buckets?limit=0").status,
        400
    );
    let r = gw
        .send(
            "DELETE",
            "/gateway/api/rate-limit/buckets/127.0.0.1",
            &[],
            None,
        )
        .json();
    assert_eq!(r, json!({"deleted": true, "key": "127.0.0.1"}));
    assert_eq!(
        gw.send(
            "DELETE",
            "/gateway/api/rate-limit/buckets/nobody",
            &[],
            None
        )
        .json(),
        json!({"deleted": false, "key": "nobody"})
    );
    gw.get("/x");
    assert_eq!(
        gw.send("POST", "/gateway/api/rate-limit/clear", &[], None)
            .json()["cleared"],
        1
    );
    // No shell configured.
    assert_eq!(gw.get("/gateway/api/shell/excludes").json(), json!([]));
    let r = gw.json(
        "POST",
        "/gateway/api/shell/excludes",
        &[],
        &json!({"basename": "x"}),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (400, json!("Shell not configured"))
    );
}

#[test]
fn shell_excludes_api() {
    let dir = tempfile::tempdir().unwrap();
    let shell = dir.path().join("shell");
    std::fs::create_dir_all(&shell).unwrap();
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_SHELL_DIR", shell.to_str().unwrap())
            .env("GATEWAY_SHELL_EXCLUDES", "cpanel, admin")
            .ready(),
    );
    let post = |body: serde_json::Value| gw.json("POST", "/gateway/api/shell/excludes", &[], &body);
    for (body, text) in [
        (json!({}), "basename is required"),
        (json!({"basename": "  "}), "basename is required"),
        (json!({"basename": "no/slash"}), "Invalid basename format"),
        (
            json!({"basename": "admin"}),
            "Already excluded via environment",
        ),
    ] {
        let r = post(body);
        assert_eq!((r.status, r.json()["error"].as_str().unwrap()), (400, text));
    }
    assert_eq!(
        post(json!({"basename": "legacy"})).json(),
        json!({"added": true, "basename": "legacy", "source": "keyval"})
    );
    assert_eq!(post(json!({"basename": "legacy"})).json()["added"], false);
    let list = gw.get("/gateway/api/shell/excludes").json();
    let names: Vec<(&str, &str)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["basename"].as_str().unwrap(),
                e["source"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![("cpanel", "env"), ("admin", "env"), ("legacy", "keyval")]
    );
    assert!(list[2]["addedAt"].as_u64().unwrap() > 1_700_000_000_000);
    let stored = gw.get("/keyval/api/keys/gateway/shell/excludes").json();
    assert_eq!(stored["value"][0]["basename"], "legacy");
    assert_eq!(
        gw.get("/gateway/api/config").json()["shell"]["excludes"],
        json!(["cpanel", "admin", "legacy"])
    );
    let r = gw.send("DELETE", "/gateway/api/shell/excludes/admin", &[], None);
    assert_eq!(r.status, 400);
    assert_eq!(
        gw.send("DELETE", "/gateway/api/shell/excludes/legacy", &[], None)
            .json(),
        json!({"removed": true, "basename": "legacy"})
    );
    assert_eq!(
        gw.get("/gateway/api/stats").json()["shell"]["excludesCount"],
        2
    );
}

/// An origin written with an internationalised name matches the ASCII form browsers send.
#[test]
fn cors_origins_may_be_written_in_unicode() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_CORS_ORIGIN", "https://café.example")
            .ready(),
    );
    let r = preflight(&gw, "/x", "https://xn--caf-dma.example");
    assert_eq!(
        r.header("access-control-allow-origin"),
        Some("https://xn--caf-dma.example"),
        "{r:?}"
    );
    let r = gw.get_with("/x", &origin("https://cafe.example"));
    assert_eq!(r.header("access-control-allow-origin"), None, "{r:?}");
    let config = gw.get("/gateway/api/config").json();
    assert_eq!(
        config["cors"]["origin"], "https://xn--caf-dma.example",
        "{config}"
    );
}

/// Credentials with every origin allowed let any website call the gateway with its users'
/// cookies and read the answers: a warning at start and from `check`, naming the settings.
#[test]
fn cors_credentials_for_every_origin_are_named() {
    let warned = |out: &str| out.contains("every website a user visits may send requests");
    let (ok, out) = common::check(None, &[("GATEWAY_CORS_CREDENTIALS", "true")]);
    assert!(ok, "{out}");
    assert!(warned(&out), "{out}");
    assert!(
        out.contains("cors.origin is \"*\" with GATEWAY_CORS_CREDENTIALS on"),
        "{out}"
    );
    let (_, out) = common::check(
        None,
        &[
            ("GATEWAY_CORS_CREDENTIALS", "true"),
            ("GATEWAY_CORS_ORIGIN", "https://a.example, *"),
        ],
    );
    assert!(out.contains("GATEWAY_CORS_ORIGIN is \"*\""), "{out}");
    for env in [
        [
            ("GATEWAY_CORS_CREDENTIALS", "true"),
            (
                "GATEWAY_CORS_ORIGIN",
                "https://a.example,https://*.b.example",
            ),
        ],
        [
            ("GATEWAY_CORS_CREDENTIALS", "false"),
            ("GATEWAY_CORS_ORIGIN", "*"),
        ],
    ] {
        let (ok, out) = common::check(None, &env);
        assert!(ok && !warned(&out), "{env:?}: {out}");
    }
    let (_, out) = common::check(
        Some("plugins:\n  gateway:\n    cors: {credentials: true, enabled: false}\n"),
        &[],
    );
    assert!(!warned(&out), "CORS off: {out}");
    let gw = Gateway::start(Options::default().env("GATEWAY_CORS_CREDENTIALS", "true"));
    assert!(warned(&gw.stderr()), "{}", gw.stderr());
}

#[test]
fn bad_gateway_config_is_named() {
    for (var, value) in [
        ("GATEWAY_RATE_LIMIT_WINDOW", "5x"),
        ("GATEWAY_RATE_LIMIT_WINDOW", "500ms"),
        ("GATEWAY_RATE_LIMIT_REQUESTS", "0"),
        ("GATEWAY_RATE_LIMIT_KEY_BY", "cookie:x"),
        ("GATEWAY_RATE_LIMIT_EXCLUDE", "(unclosed"),
        ("GATEWAY_CORS_ORIGIN", "app.test"),
        ("GATEWAY_CORS_MAX_AGE", "-1"),
        ("GATEWAY_CORS_CREDENTIALS", "maybe"),
        ("GATEWAY_SHELL_EXCLUDES", "ok,not ok"),
        ("GATEWAY_SHELL_DIR", "/no/such/folder"),
        ("GATEWAY_TRUSTED_PROXIES", "proxy.local"),
    ] {
        let (ok, out) = common::check(None, &[(var, value)]);
        assert!(!ok, "{var}={value} accepted");
        assert!(out.contains(var), "{var} not named:\n{out}");
    }
    let (ok, out) = common::check(Some("plugins:\n  gateway:\n    cors: {orign: x}\n"), &[]);
    assert!(!ok);
    assert!(
        out.contains("plugins.gateway.cors.orign: unknown key"),
        "{out}"
    );
    // The original's own gateway manifest carries `cors.preflight: true`.
    let (ok, out) = common::check(
        Some("plugins:\n  gateway:\n    cors: {origin: '*', preflight: true}\n"),
        &[],
    );
    assert!(ok, "{out}");
}

#[test]
fn sighup_changes_cors_without_dropping_connections() {
    let gw = Gateway::start(
        Options::default()
            .config("plugins:\n  gateway:\n    cors:\n      origin: https://one.test\n")
            .ready(),
    );
    let mut conn = gw.connect();
    let ask = |conn: &mut TcpStream, o: &str| {
        write!(
            conn,
            "GET /api/health HTTP/1.1\r\nHost: x\r\nOrigin: {o}\r\n\r\n"
        )
        .unwrap();
        let mut buf = [0u8; 4096];
        let n = conn.read(&mut buf).unwrap();
        String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase()
    };
    assert!(
        ask(&mut conn, "https://one.test")
            .contains("access-control-allow-origin: https://one.test")
    );
    gw.write_config("plugins:\n  gateway:\n    cors:\n      origin: https://two.test\n");
    gw.signal("HUP");
    let switched = common::eventually(Duration::from_secs(5), || {
        ask(&mut conn, "https://two.test")
            .contains("access-control-allow-origin: https://two.test")
            .then_some(())
    });
    assert!(
        switched.is_some(),
        "the same connection sees the new CORS origin"
    );
    assert!(!ask(&mut conn, "https://one.test").contains("access-control-allow-origin"));
    // An invalid file is refused whole: its valid part (a static rule for the proxy
    // plugin) is not applied either, and the running configuration is kept.
    gw.write_config(
        "plugins:\n  proxy:\n    rules:\n      - {pattern: ^/new, target: http://127.0.0.1:9}\n  \
         gateway:\n    cors:\n      origin: not-an-origin\n",
    );
    gw.signal("HUP");
    let refused = common::eventually(Duration::from_secs(5), || {
        gw.stderr()
            .contains(
                "reload refused, keeping the running configuration: plugins.gateway.cors.origin",
            )
            .then_some(())
    });
    assert!(refused.is_some(), "{}", gw.stderr());
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        ask(&mut conn, "https://two.test")
            .contains("access-control-allow-origin: https://two.test")
    );
    assert_eq!(gw.get("/redirects/api/rules").json(), serde_json::json!([]));
}
