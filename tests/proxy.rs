//! SPEC 4: proxy rules, their API, and proxying through them to real upstreams.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::sqld::Sqld;
use common::upstream::{Upstream, WsEcho};
use common::{Backend, Gateway, Options, eventually, keepalive_on, start_on, ws_connect};
use serde_json::{Value, json};

const RULES: &str = "/redirects/api/rules";

fn create(gw: &Gateway, body: Value) -> common::Resp {
    gw.json("POST", RULES, &[], &body)
}

/// A rule from `pattern` to a plain HTTP server on 127.0.0.1:`port`.
fn rule_to(gw: &Gateway, pattern: &str, port: u16) {
    created(
        gw,
        json!({"pattern": pattern, "target": format!("http://127.0.0.1:{port}")}),
    );
}

fn created(gw: &Gateway, body: Value) -> Value {
    let r = create(gw, body);
    assert_eq!(r.status, 201, "{r:?}");
    r.json()
}

fn error(r: &common::Resp) -> String {
    r.json()["error"].as_str().unwrap_or("").to_string()
}

fn rules(gw: &Gateway) -> Value {
    gw.get(RULES).json()
}

/// What `/rules/test` says of a GET of `path`.
/// Sends `head` (a request line and header lines, each ended by CRLF) with
/// `Connection: close` on a fresh connection, and reads the whole answer.
fn closing(gw: &Gateway, head: &str) -> String {
    let request = format!("{head}Connection: close\r\n\r\n");
    common::raw(gw.port, request.as_bytes(), Duration::from_secs(10))
}

fn tested(gw: &Gateway, path: &str) -> Value {
    tested_with(gw, path, &[])
}

fn tested_with(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> Value {
    gw.json(
        "POST",
        &format!("{RULES}/test"),
        headers,
        &json!({"method": "GET", "path": path}),
    )
    .json()
}

/// A config with one static rule.
fn with_static(target: &str) -> Options {
    Options::default().config(&format!(
        "plugins:\n  proxy:\n    rules:\n      - {{pattern: '^/static(/.*)?$', target: '{target}', rewrite: '/from-static$1'}}\n"
    ))
}

#[test]
fn every_api_error() {
    let up = Upstream::http();
    let gw = Gateway::start(with_static(&up.url()).ready());
    let dynamic = created(
        &gw,
        json!({"id": "dyn", "pattern": "^/d", "target": up.url()}),
    );
    let before = rules(&gw);

    let cases: Vec<(common::Resp, u16, &str)> = vec![
        (
            create(&gw, json!({"target": up.url()})),
            400,
            "pattern and target are required",
        ),
        (
            create(&gw, json!({"pattern": "^/x"})),
            400,
            "pattern and target are required",
        ),
        (
            create(&gw, json!({"pattern": "^/x(", "target": up.url()})),
            400,
            "Invalid regex pattern: ",
        ),
        (
            create(&gw, json!({"pattern": "^/x", "target": "not a url"})),
            400,
            "Invalid target URL: relative URL without a base",
        ),
        (
            create(&gw, json!({"pattern": "^/x", "target": "ftp://h"})),
            400,
            "Invalid target URL: unsupported scheme \"ftp\"",
        ),
        (
            create(&gw, json!({"pattern": "^/x", "target": "http://h/x?q=1"})),
            400,
            "Invalid target URL: a query or fragment is not allowed in the target",
        ),
        (
            create(
                &gw,
                json!({"pattern": "^/(a)/(b)", "target": up.url(), "rewrite": "/$3"}),
            ),
            400,
            "Invalid rewrite: $3 refers to group 3 but the pattern has 2 groups",
        ),
        (
            create(
                &gw,
                json!({"pattern": "^/x", "target": up.url(), "headers": {"bad header": "v"}}),
            ),
            400,
            "Invalid headers:",
        ),
        (
            create(
                &gw,
                json!({"pattern": "^/x", "target": up.url(), "publicRoutes": ["(unclosed"]}),
            ),
            400,
            "Invalid publicRoutes:",
        ),
        (
            create(
                &gw,
                json!({"pattern": "^/x", "target": up.url(), "timeouts": {"read": "later"}}),
            ),
            400,
            "Invalid timeouts:",
        ),
        (
            create(
                &gw,
                json!({"pattern": "^/x", "target": up.url(), "rateLimit": {"requests": -1}}),
            ),
            400,
            "Invalid rateLimit:",
        ),
        (
            create(
                &gw,
                json!({"id": "bad id!", "pattern": "^/x", "target": up.url()}),
            ),
            400,
            "Invalid rule id",
        ),
        (
            create(
                &gw,
                json!({"id": "dyn", "pattern": "^/x", "target": up.url()}),
            ),
            409,
            "Rule id already exists",
        ),
        (
            create(
                &gw,
                json!({"id": "static-0", "pattern": "^/x", "target": up.url()}),
            ),
            409,
            "Rule id already exists",
        ),
        (
            // The id the next static rule gets: it would clash after a SIGHUP adds one.
            create(
                &gw,
                json!({"id": "static-1", "pattern": "^/x", "target": up.url()}),
            ),
            400,
            "Invalid rule id: static-<n> ids are kept for static rules",
        ),
        (
            create(&gw, json!(["not", "an", "object"])),
            400,
            "The body must be a JSON object",
        ),
        (
            // A framing header would desync a pooled upstream connection.
            create(
                &gw,
                json!({"pattern": "^/x", "target": up.url(), "headers": {"content-length": "5"}}),
            ),
            400,
            "Invalid headers: content-length cannot be set by a rule",
        ),
        (gw.get(&format!("{RULES}/nope")), 404, "Rule not found"),
        (
            gw.json(
                "PUT",
                &format!("{RULES}/static-0"),
                &[],
                &json!({"name": "x"}),
            ),
            403,
            "Cannot modify static rules",
        ),
        (
            gw.json("PUT", &format!("{RULES}/nope"), &[], &json!({"name": "x"})),
            404,
            "Rule not found",
        ),
        (
            gw.json(
                "PUT",
                &format!("{RULES}/dyn"),
                &[],
                &json!({"pattern": "("}),
            ),
            400,
            "Invalid regex pattern: ",
        ),
        (
            gw.json("PUT", &format!("{RULES}/dyn"), &[], &json!({"id": "other"})),
            400,
            "Rule id cannot be changed",
        ),
        (
            gw.send("PATCH", &format!("{RULES}/static-0/toggle"), &[], None),
            403,
            "Cannot modify static rules",
        ),
        (
            gw.send("PATCH", &format!("{RULES}/nope/toggle"), &[], None),
            404,
            "Rule not found",
        ),
        (
            gw.send("DELETE", &format!("{RULES}/static-0"), &[], None),
            403,
            "Cannot delete static rules",
        ),
        (
            gw.send("DELETE", &format!("{RULES}/nope"), &[], None),
            404,
            "Rule not found",
        ),
        (
            gw.json("PUT", &format!("{RULES}/reorder"), &[], &json!({"ids": []})),
            400,
            "ids must be a non-empty array",
        ),
        (
            gw.json(
                "PUT",
                &format!("{RULES}/reorder"),
                &[],
                &json!({"ids": "dyn"}),
            ),
            400,
            "ids must be a non-empty array",
        ),
        (
            gw.json(
                "PUT",
                &format!("{RULES}/reorder"),
                &[],
                &json!({"ids": ["static-0", "dyn"]}),
            ),
            403,
            "Cannot modify static rules",
        ),
        (
            gw.json(
                "PUT",
                &format!("{RULES}/reorder"),
                &[],
                &json!({"ids": ["dyn", "ghost"]}),
            ),
            404,
            "Rule not found",
        ),
        (
            gw.json(
                "POST",
                &format!("{RULES}/test"),
                &[],
                &json!({"method": "GET"}),
            ),
            400,
            "method and path are required",
        ),
    ];
    for (i, (r, status, text)) in cases.iter().enumerate() {
        assert_eq!(r.status, *status, "case {i}: {r:?}");
        assert!(
            error(r).starts_with(text),
            "case {i}: {:?} does not start with {text:?}",
            error(r)
        );
    }
    let r = gw.send(
        "POST",
        RULES,
        &[("content-type", "application/json")],
        Some(b"{nope"),
    );
    assert_eq!(r.status, 400);
    let r = gw.send(
        "POST",
        RULES,
        &[("content-type", "text/plain")],
        Some(b"{}"),
    );
    assert_eq!(r.status, 415);
    // A second dynamic rule makes "all ids" checkable.
    created(
        &gw,
        json!({"id": "dyn2", "pattern": "^/e", "target": up.url()}),
    );
    let r = gw.json(
        "PUT",
        &format!("{RULES}/reorder"),
        &[],
        &json!({"ids": ["dyn"]}),
    );
    assert_eq!(
        (r.status, error(&r).as_str()),
        (400, "ids must include all dynamic rule IDs")
    );
    let r = gw.json(
        "PUT",
        &format!("{RULES}/reorder"),
        &[],
        &json!({"ids": ["dyn", "dyn"]}),
    );
    assert_eq!(
        (r.status, error(&r).as_str()),
        (400, "ids must include all dynamic rule IDs")
    );
    gw.send("DELETE", &format!("{RULES}/dyn2"), &[], None);
    // Nothing above changed what is stored.
    assert_eq!(rules(&gw), before);
    assert_eq!(gw.get(&format!("{RULES}/dyn")).json(), dynamic);
}

#[test]
fn create_update_toggle_reorder_delete() {
    let up = Upstream::http();
    let gw = Gateway::start(with_static(&up.url()).ready());
    let a = created(
        &gw,
        json!({"pattern": "^/x", "target": up.url(), "name": "first"}),
    );
    let b = created(
        &gw,
        json!({"id": "second", "pattern": "^/x", "target": up.url()}),
    );
    let c = created(
        &gw,
        json!({"id": "third", "pattern": "^/y", "target": up.url()}),
    );
    assert_eq!(
        (a["order"].clone(), b["order"].clone(), c["order"].clone()),
        (json!(0), json!(1), json!(2))
    );
    assert!(uuid::Uuid::parse_str(a["id"].as_str().unwrap()).is_ok());
    assert_eq!(b["name"], "^/x", "name defaults to the pattern");
    let list = rules(&gw);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["static-0", a["id"].as_str().unwrap(), "second", "third"]
    );
    assert_eq!(list[0]["readonly"], true);

    // /x goes to the first rule; after reordering, to the second.
    let which = |gw: &Gateway| tested(gw, "/x")["rule"]["id"].clone();
    assert_eq!(which(&gw), a["id"]);
    let r = gw.json(
        "PUT",
        &format!("{RULES}/reorder"),
        &[],
        &json!({"ids": ["second", "third", a["id"]]}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    let orders: Vec<(Value, Value)> = r
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].clone(), r["order"].clone()))
        .collect();
    assert_eq!(
        orders,
        vec![
            (json!("second"), json!(0)),
            (json!("third"), json!(1)),
            (a["id"].clone(), json!(2))
        ]
    );
    assert_eq!(which(&gw), json!("second"));

    // Partial update keeps the other fields.
    let r = gw.json(
        "PUT",
        &format!("{RULES}/second"),
        &[],
        &json!({"changeOrigin": true, "headers": {"x-extra": "1"}}),
    );
    assert_eq!(r.status, 200);
    let updated = r.json();
    assert_eq!(updated["changeOrigin"], true);
    assert_eq!(updated["pattern"], "^/x");
    assert_eq!(updated["order"], 0);
    // Toggle flips enabled; a disabled rule never matches.
    let t = gw
        .send("PATCH", &format!("{RULES}/second/toggle"), &[], None)
        .json();
    assert_eq!(t["enabled"], false);
    assert_eq!(which(&gw), a["id"]);
    assert_eq!(
        gw.send("PATCH", &format!("{RULES}/second/toggle"), &[], None)
            .json()["enabled"],
        true
    );
    // Back on, it matches again and still adds its headers (a toggle keeps what was
    // compiled).
    assert_eq!(which(&gw), json!("second"));
    assert_eq!(gw.get("/x").status, 200);
    assert_eq!(up.last().headers["x-extra"], "1");
    assert_eq!(gw.get(&format!("{RULES}/second")).json()["enabled"], true);
    let d = gw.send("DELETE", &format!("{RULES}/second"), &[], None);
    assert_eq!(d.json(), json!({"success": true}));
    assert_eq!(gw.get(&format!("{RULES}/second")).status, 404);
    assert_eq!(which(&gw), a["id"]);
}

#[test]
fn test_endpoint_and_rewrites() {
    let gw = Gateway::start(Options::default().ready());
    let t = |path: &str| tested(&gw, path);
    created(
        &gw,
        json!({"pattern": "^/api(/.*)?$", "target": "http://127.0.0.1:9/base", "rewrite": "/v1$1"}),
    );
    created(
        &gw,
        json!({"pattern": r"^/u/(?P<id>\d+)/(\w+)$", "target": "https://example.test:8443", "rewrite": "users/${id}/$2"}),
    );
    created(
        &gw,
        json!({"pattern": "^/keep", "target": "http://127.0.0.1:9", "publicRoutes": {"GET": ["/keep/**"]}}),
    );
    let r = t("/api/users?page=2&x=%20");
    assert_eq!(r["matched"], true);
    assert_eq!(r["captures"], json!(["/users"]));
    assert_eq!(
        r["upstreamUrl"],
        "http://127.0.0.1:9/base/v1/users?page=2&x=%20"
    );
    created(
        &gw,
        json!({"pattern": r"^/find/(\w+)$", "target": "http://127.0.0.1:9", "rewrite": "/search?q=$1"}),
    );
    assert_eq!(
        t("/find/abc?page=2")["upstreamUrl"],
        "http://127.0.0.1:9/search?q=abc&page=2"
    );
    // What a URL cannot carry as written is sent percent-encoded.
    created(
        &gw,
        json!({"pattern": "^/spaced(/.*)$", "target": "http://127.0.0.1:9", "rewrite": "/a b/café#1$1"}),
    );
    assert_eq!(
        t("/spaced/x")["upstreamUrl"],
        "http://127.0.0.1:9/a%20b/caf%C3%A9%231/x"
    );
    let r = t("/api");
    assert_eq!(r["captures"], json!([""]), "an empty group is empty");
    assert_eq!(r["upstreamUrl"], "http://127.0.0.1:9/base/v1");
    let r = t("/u/42/posts");
    assert_eq!(r["captures"], json!(["42", "posts"]));
    assert_eq!(
        r["upstreamUrl"], "https://example.test:8443/users/42/posts",
        "a leading slash is added"
    );
    let r = t("/keep/this");
    assert_eq!(
        r["upstreamUrl"], "http://127.0.0.1:9/keep/this",
        "no rewrite: the path is unchanged"
    );
    assert_eq!(r["public"], true);
    // A whole URL, as a browser shows it, is tested by its path and query.
    let r = t("HTTPS://gw.example/keep/this?x=1#top");
    assert_eq!(r["upstreamUrl"], "http://127.0.0.1:9/keep/this?x=1", "{r}");
    let r = t("http://gw.example");
    assert_eq!(r["matched"], false, "{r}");
    let r = t("/nothing");
    assert_eq!(r, json!({"matched": false, "public": false}));
    // Paths the gateway refuses before any rule are refused here too, not matched.
    for bad in [
        "/keep/../x",
        "/keep/%2e%2e/x",
        "keep/this",
        "http://gw.example/keep/../x",
        "http://user@gw.example/keep/this",
        "http://gw.example\\x/keep/this",
    ] {
        let r = gw.json(
            "POST",
            &format!("{RULES}/test"),
            &[],
            &json!({"method": "GET", "path": bad}),
        );
        assert_eq!(r.status, 400, "{bad}: {r:?}");
        assert!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .starts_with("Invalid path"),
            "{r:?}"
        );
        if bad.starts_with('/') {
            let got = closing(&gw, &format!("GET {bad} HTTP/1.1\r\nHost: x\r\n"));
            assert!(got.starts_with("HTTP/1.1 400"), "{bad}: {got}");
        }
    }
    let r = gw.json(
        "POST",
        &format!("{RULES}/test"),
        &[],
        &json!({"method": "G ET", "path": "/keep"}),
    );
    assert_eq!(r.json(), json!({"error": "Invalid method"}));
    assert_eq!(t("/api/health")["public"], true, "a runtime public path");
    assert_eq!(t("/metrics")["public"], true);
    // AUTH_PUBLIC_ROUTES counts whether or not auth-token is on (here it is off: no key).
    let off = Gateway::start(
        Options::default()
            .env("AUTH_PUBLIC_ROUTES", "/open/**")
            .ready(),
    );
    assert_eq!(
        tested(&off, "/open/x"),
        json!({"matched": false, "public": true})
    );
    assert_eq!(
        tested(&off, "/closed"),
        json!({"matched": false, "public": false})
    );
    let (ok, out) = common::check(None, &[("AUTH_PUBLIC_ROUTES", "(unclosed")]);
    assert!(!ok && out.contains("AUTH_PUBLIC_ROUTES"), "{out}");
}

#[test]
fn proxying_to_an_http_upstream() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/svc(/.*)?$", "target": format!("{}/inner", up.url()), "rewrite": "$1",
        "headers": {"x-rule": "set-by-rule", "x-override": "rule-wins"}}),
    );
    created(
        &gw,
        json!({"pattern": "^/origin(/.*)?$", "target": up.url(), "changeOrigin": true}),
    );

    let r = gw.get_with(
        "/svc/items?q=1&q=2",
        &[
            ("x-override", "client"),
            ("x-identity", "forged"),
            ("x-auth-subject", "root"),
            ("x-request-id", "trace-1"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("x-request-id"), Some("trace-1"));
    let seen = up.last();
    assert_eq!(
        seen.url, "/inner/items?q=1&q=2",
        "rewrite, base path, query unchanged"
    );
    // The base path alone when the rewrite writes nothing; a trailing slash is kept.
    gw.get("/svc");
    assert_eq!(up.last().url, "/inner");
    gw.get("/svc/?a=1");
    assert_eq!(up.last().url, "/inner/?a=1");
    let h = &seen.headers;
    assert_eq!(h["x-rule"], "set-by-rule");
    assert_eq!(h["x-override"], "rule-wins");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{}", gw.port));
    assert_eq!(
        h["host"],
        format!("127.0.0.1:{}", gw.port),
        "Host is kept without changeOrigin"
    );
    assert_eq!(h["x-request-id"], "trace-1");
    assert!(
        !h.contains_key("x-identity") && !h.contains_key("x-auth-subject"),
        "client identity headers are dropped"
    );

    // A rewrite that writes a query: the request's query follows it after a `&`.
    created(
        &gw,
        json!({"pattern": r"^/find/(\w+)$", "target": up.url(), "rewrite": "/search?q=$1"}),
    );
    gw.get("/find/abc?page=2");
    assert_eq!(up.last().url, "/search?q=abc&page=2");
    gw.get("/find/abc");
    assert_eq!(up.last().url, "/search?q=abc");
    created(
        &gw,
        json!({"pattern": "^/spaced(/.*)$", "target": up.url(), "rewrite": "/a b/café$1"}),
    );
    assert_eq!(gw.get("/spaced/x").status, 200);
    assert_eq!(up.last().url, "/a%20b/caf%C3%A9/x");

    gw.get_with("/origin/x", &[("origin", "https://app.example")]);
    let h = up.last().headers;
    assert_eq!(h["host"], format!("127.0.0.1:{}", up.port));
    assert_eq!(h["origin"], format!("http://127.0.0.1:{}", up.port));

    // Bodies stream through; redirects come back as they are.
    let body = vec![b'x'; 300_000];
    let r = gw.send(
        "POST",
        "/svc/upload",
        &[("content-type", "application/octet-stream")],
        Some(&body),
    );
    assert_eq!(r.json()["bodyLength"], 300_000);
    assert_eq!(up.last().method, "POST");
    let r = gw.get("/svc/redirect");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/elsewhere"));
    let r = gw.get("/svc/status/418");
    assert_eq!(r.status, 418);
    // Over the body limit: 413 and the upstream never sees it.
    let before = up.count();
    let out = common::raw(
        gw.port,
        b"POST /svc/big HTTP/1.1\r\nHost: x\r\nContent-Length: 11000000\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(up.count(), before);
    // No rule: the request falls through to the rest of the routing.
    assert_eq!(gw.get("/not-a-rule").status, 404);
}

/// People write patterns and globs with the characters of their language (`^/café`);
/// clients send those percent-encoded (`/caf%C3%A9`), so such a rule never matched and
/// such a public route never applied. They match the path with its non-ASCII characters
/// decoded too, in rule order, and captures holding them go upstream encoded again.
/// Patterns written encoded still match; ASCII escapes (`%2F`) are never decoded.
#[test]
fn patterns_and_globs_match_non_ascii_paths_as_written() {
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env("RUNTIME_MASTER_KEY", "mk")
            .env("AUTH_JWT_SECRET", "a-long-shared-secret-for-the-hs-tests")
            .ready(),
    );
    let admin = [("x-api-key", "mk")];
    for body in [
        json!({"pattern": "^/relatórios/(.*)$", "target": up.url(), "rewrite": "/r/$1",
               "publicRoutes": ["/relatórios/públicos/**"]}),
        json!({"pattern": "^/caf%C3%A9$", "target": up.url(), "rewrite": "/encoded",
               "publicRoutes": ["/**"]}),
        json!({"pattern": "^/café$", "target": up.url(), "rewrite": "/decoded"}),
        json!({"pattern": "^/c(.)fé$", "target": up.url(), "rewrite": "/$1",
               "publicRoutes": ["/**"]}),
        json!({"pattern": "^/a/b$", "target": up.url(), "rewrite": "/slash"}),
    ] {
        let r = gw.json("POST", RULES, &admin, &body);
        assert_eq!(r.status, 201, "{r:?}");
    }
    // A public route written as people write it, for a path sent encoded.
    let r = gw.get("/relat%C3%B3rios/p%C3%BAblicos/m%C3%AAs?x=1");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().url, "/r/p%C3%BAblicos/m%C3%AAs?x=1");
    assert_eq!(gw.get("/relat%C3%B3rios/privados").status, 401);
    // The first rule in order wins, whichever form it is written in.
    assert_eq!(gw.get("/caf%C3%A9").status, 200);
    assert_eq!(up.last().url, "/encoded");
    assert_eq!(gw.get("/c%C3%A1f%C3%A9").status, 200);
    assert_eq!(up.last().url, "/%C3%A1");
    let r = tested_with(&gw, "/café", &admin);
    assert_eq!(r["upstreamUrl"], format!("{}/encoded", up.url()));
    let r = tested_with(&gw, "/relatórios/públicos/mês", &admin);
    assert_eq!(r["captures"], json!(["públicos/mês"]));
    assert_eq!(
        r["upstreamUrl"],
        format!("{}/r/p%C3%BAblicos/m%C3%AAs", up.url())
    );
    assert_eq!(r["public"], true);
    // An encoded slash is no slash.
    assert_eq!(tested_with(&gw, "/a%2Fb", &admin)["matched"], false);
}

/// A rule may raise (or lower) the 10 MiB request body limit for what it proxies, an
/// upload service's say: bodies stream through, so no ceiling applies. The value is
/// echoed as written; a bad one is refused naming it.
/// Under `changeOrigin` an upstream builds absolute URLs from the Host it was given,
/// its own: a redirect to `http://127.0.0.1:<its port>/...` sent clients where they cannot
/// go. One that names the upstream, and that this rule takes back to that very URL,
/// becomes the gateway's path (nginx's `proxy_redirect default`); a rule's `rewrite` is
/// undone only when it takes the pattern's leading literal off. Others pass as they are.
#[test]
fn redirects_to_the_upstream_itself_become_the_gateways() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default());
    created(
        &gw,
        json!({"name": "self", "pattern": "^/self(/.*)?$", "target": up.url(), "changeOrigin": true}),
    );
    created(
        &gw,
        json!({"name": "rewritten", "pattern": "^/rw(/.*)?$", "target": up.url(),
               "rewrite": "/self$1", "changeOrigin": true}),
    );
    created(
        &gw,
        json!({"name": "strip", "pattern": "^/strip(/.*)?$", "target": up.url(),
               "rewrite": "$1", "changeOrigin": true}),
    );
    let r = gw.get("/self/redirect-self");
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/self/landed?from=1"));
    // The original's usual rule takes its prefix off: it is put back in front.
    let r = gw.get("/strip/redirect-self");
    assert_eq!(r.header("location"), Some("/strip/landed?from=1"));
    // A rewrite the gateway cannot undo: the upstream's URL is left as it came.
    let r = gw.get("/rw/redirect-self");
    assert_eq!(
        r.header("location"),
        Some(format!("http://127.0.0.1:{}/self/landed?from=1", up.port).as_str())
    );
    // A relative one is left as it is.
    assert_eq!(
        gw.get("/self/redirect").header("location"),
        Some("/elsewhere")
    );
    // An app in a folder of its upstream: `/app` is sent to `/app/`, which reaches the
    // folder with its slash rather than being redirected again.
    created(
        &gw,
        json!({"name": "folder", "pattern": "^/app(/.*)?$", "target": format!("{}/folder", up.url()),
               "rewrite": "$1", "changeOrigin": true}),
    );
    let r = gw.get("/app");
    assert_eq!(r.status, 301);
    assert_eq!(r.header("location"), Some("/app/"));
    assert_eq!(up.last().url, "/folder");
    assert_eq!(gw.get("/app/").status, 200);
    assert_eq!(up.last().url, "/folder/");
}

#[test]
fn a_rule_sets_its_own_body_limit() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    let rule = created(
        &gw,
        json!({"pattern": "^/uploads(/.*)$", "target": up.url(), "rewrite": "$1", "maxBodySize": "12mb"}),
    );
    assert_eq!(rule["maxBodySize"], "12mb");
    created(
        &gw,
        json!({"pattern": "^/small(/.*)$", "target": up.url(), "rewrite": "$1", "maxBodySize": 1000}),
    );
    created(
        &gw,
        json!({"pattern": "^/plain(/.*)$", "target": up.url(), "rewrite": "$1"}),
    );
    let body = vec![b'x'; 11_000_000];
    let r = gw.send("POST", "/uploads/file", &[], Some(&body));
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["bodyLength"], 11_000_000);
    // Over a limit: 413 from the Content-Length, before the body is read.
    let refused = |path: &str, length: usize| {
        let head = format!("POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n");
        let out = common::raw(gw.port, head.as_bytes(), Duration::from_secs(5));
        out.starts_with("HTTP/1.1 413")
    };
    assert!(
        refused("/plain/file", 11_000_000),
        "the default 10 MiB holds elsewhere"
    );
    assert!(refused("/small/file", 1001));
    let r = gw.send("POST", "/small/file", &[], Some(&[b'x'; 1000]));
    assert_eq!(r.status, 200);
    // Refused from its Content-Length: the upstream never hears of it. (Checked before
    // the chunked body below, whose head does reach the upstream, a moment later.)
    let before = up.count();
    let out = common::raw(
        gw.port,
        b"POST /uploads/big HTTP/1.1\r\nHost: x\r\nContent-Length: 12582913\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");
    assert_eq!(up.count(), before);
    // A chunked body has no length to check first: it is cut once past the limit.
    let chunk = format!("258\r\n{}\r\n", "y".repeat(600));
    let chunked = format!(
        "POST /small/file HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunk}{chunk}0\r\n\r\n"
    );
    let out = common::raw(gw.port, chunked.as_bytes(), Duration::from_secs(5));
    assert!(out.starts_with("HTTP/1.1 413"), "{out}");

    for (value, why) in [
        (
            json!("ten"),
            "Invalid maxBodySize: expected a number with an optional unit kb, mb or gb (got \"ten\")",
        ),
        (
            json!(0),
            "Invalid maxBodySize: must be more than zero (got 0)",
        ),
        (
            json!("12 parsecs"),
            "Invalid maxBodySize: unknown unit \"parsecs\" (use kb, mb or gb) (got \"12 parsecs\")",
        ),
        (
            json!(true),
            "Invalid maxBodySize: expected a size such as \"20mb\" or a number of bytes (got true)",
        ),
    ] {
        let r = create(
            &gw,
            json!({"pattern": "^/x", "target": up.url(), "maxBodySize": value}),
        );
        assert_eq!((r.status, error(&r)), (400, why.to_string()));
    }
    // Back to the gateway's limit.
    let id = rule["id"].as_str().unwrap();
    let r = gw.json(
        "PUT",
        &format!("{RULES}/{id}"),
        &[],
        &json!({"maxBodySize": null}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.json().get("maxBodySize").is_none(), "{r:?}");
    assert!(refused("/uploads/file", 11_000_000));
}

/// A rule's `base` and `relativePaths` rewrite the HTML pages it proxies, as the original
/// did for a single-page app an upstream serves at its root: a `<base href>` after
/// `<head>`, and `src="/..."`, `href="/..."`, `'/...'` made relative. The upstream is asked
/// for uncompressed pages; other answers pass unchanged.
#[test]
fn a_rule_rewrites_its_html_pages_as_the_original_did() {
    const PAGE: &str = "<html><head><link href=\"/app.css\"></head><body><script src=\"/app.js\"></script><a href=\"//cdn.example/x\">x</a><script>fetch('/api/x')</script></body></html>";
    let (tx, seen) = std::sync::mpsc::channel::<String>();
    let tx = std::sync::Mutex::new(tx);
    let port = raw_upstream(move |mut conn| {
        while let Some(head) = read_until(&mut conn, b"\r\n\r\n") {
            let _ = tx.lock().unwrap().send(head.clone());
            let (kind, body) = match head.split_whitespace().nth(1) {
                Some("/app.js") => ("text/javascript", "load('/x')"),
                _ => ("text/html; charset=utf-8", PAGE),
            };
            // A range asked for gets those bytes, as a 206 that counts them.
            let (status, range, body) = match head.contains("range: bytes=0-11") {
                true => (
                    "206 Partial Content",
                    format!("Content-Range: bytes 0-11/{}\r\n", body.len()),
                    &body[..12],
                ),
                false => ("200 OK", String::new(), body),
            };
            let answer = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n{range}Content-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if conn.write_all(answer.as_bytes()).is_err() {
                return;
            }
        }
    });
    let gw = Gateway::start(Options::default().ready());
    let rule = created(
        &gw,
        json!({"pattern": "^/cpanel(/.*)?$", "target": format!("http://127.0.0.1:{port}"), "rewrite": "$1", "base": "/cpanel", "relativePaths": true}),
    );
    assert_eq!(
        (&rule["base"], &rule["relativePaths"]),
        (&json!("/cpanel"), &json!(true))
    );
    let rewritten = "<html><head><base href=\"/cpanel/\" /><link href=\"./app.css\"></head><body><script src=\"./app.js\"></script><a href=\"//cdn.example/x\">x</a><script>fetch('./api/x')</script></body></html>";
    let r = gw.get("/cpanel/");
    assert_eq!((r.status, r.text().as_str()), (200, rewritten), "{r:?}");
    let head = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    assert!(head.contains("accept-encoding: identity\r\n"), "{head}");
    let r = gw.get("/cpanel/app.js");
    assert_eq!(r.text(), "load('/x')", "not a page: unchanged");
    let r = gw.send("HEAD", "/cpanel/", &[], None);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-length"),
        None,
        "the page's own length is not the GET's"
    );
    // A part of a page is sent as it is: its Content-Range counts the upstream's bytes.
    let r = gw.get_with("/cpanel/", &[("range", "bytes=0-11")]);
    assert_eq!(
        (r.status, r.text().as_str()),
        (206, "<html><head>"),
        "{r:?}"
    );
    // HTTP/1.0 has no chunks: the page ends with the connection.
    let out = common::raw(
        gw.port,
        b"GET /cpanel/ HTTP/1.0\r\n\r\n",
        Duration::from_secs(5),
    );
    assert!(out.starts_with("HTTP/1.1 200"), "{out}");
    assert!(out.ends_with(rewritten), "{out}");
    // Only a path goes into the attribute.
    let r = create(
        &gw,
        json!({"pattern": "^/x", "target": format!("http://127.0.0.1:{port}"), "base": "/a\"><script>"}),
    );
    assert_eq!(r.status, 400);
    assert!(
        error(&r).starts_with("Invalid base: must be a path"),
        "{r:?}"
    );
}

/// A stored rule that does not load (the original's JavaScript took look-aheads, which
/// Rust's regex does not) is skipped, and named at start with what to do; its id stays
/// taken: a POST under it says why, a PUT that fixes it brings it back, a DELETE removes
/// it. A POST under such an id answered "Rules are being changed concurrently", and PUT
/// and DELETE answered 404, so only the keyval API could mend it.
#[test]
fn a_stored_rule_that_does_not_load_can_be_mended() {
    let up = Upstream::http();
    let dir = tempfile::tempdir().unwrap();
    let opts = || {
        Options {
            dir: Some(dir.path().to_path_buf()),
            ..Options::default()
        }
        .ready()
    };
    let mut gw = Gateway::start(opts());
    for id in ["lookahead", "gone"] {
        let stored = json!({"id": id, "pattern": "^/(?!api)x", "target": up.url(), "order": 3});
        let r = gw.json(
            "PUT",
            &format!("/keyval/api/keys/proxy/rules/{id}"),
            &[],
            &stored,
        );
        assert_eq!(r.status, 200, "{r:?}");
    }
    gw.stop();
    let gw = Gateway::start(opts());
    assert!(
        gw.stderr()
            .contains("skipping stored rule lookahead: Invalid regex pattern")
            && gw
                .stderr()
                .contains("PUT a fixed rule to its id, or DELETE it"),
        "{}",
        gw.logs()
    );
    let r = create(
        &gw,
        json!({"id": "lookahead", "pattern": "^/y", "target": up.url()}),
    );
    assert_eq!(r.status, 409, "{r:?}");
    assert!(
        error(&r).starts_with(
            "Rule id already exists: a stored rule that does not load (Invalid regex pattern"
        ),
        "{r:?}"
    );
    // Fixed by a PUT of the pattern alone: the stored target and order stay.
    let r = gw.json(
        "PUT",
        &format!("{RULES}/lookahead"),
        &[],
        &json!({"pattern": "^/fixed(/.*)$", "rewrite": "$1"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(
        (r.json()["target"].as_str(), r.json()["order"].as_i64()),
        (Some(up.url().as_str()), Some(3))
    );
    assert_eq!(gw.get("/fixed/x").status, 200);
    assert_eq!(up.last().url, "/x");
    // A PUT that does not fix it says why, and changes nothing.
    let r = gw.json(
        "PUT",
        &format!("{RULES}/gone"),
        &[],
        &json!({"name": "still broken"}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert!(error(&r).starts_with("Invalid regex pattern"), "{r:?}");
    let r = gw.send("DELETE", &format!("{RULES}/gone"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(gw.get("/keyval/api/keys/proxy/rules/gone").status, 404);
    assert_eq!(
        gw.send("DELETE", &format!("{RULES}/gone"), &[], None)
            .status,
        404
    );
}

/// Header names reach the client in the case the upstream wrote them, and the gateway's
/// own in theirs: both when every upstream name is in the form Pingora writes by itself
/// (the gateway then skips Pingora's case map) and when one is not (it keeps the map).
#[test]
fn header_names_keep_their_case() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/case(/.*)?$", "target": up.url()}));
    let get = |path: &str| closing(&gw, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n"));
    let plain = get("/case/plain");
    let mixed = get("/case/header-case");
    for out in [&plain, &mixed] {
        assert!(out.starts_with("HTTP/1.1 200 OK\r\n"), "{out}");
        for name in [
            "Content-Type",
            "Server",
            "Date",
            "x-request-id",
            "ratelimit-limit",
        ] {
            assert!(out.contains(&format!("\r\n{name}: ")), "{name} in {out}");
        }
    }
    assert!(!plain.contains("X-Upstream-Case"), "{plain}");
    assert!(mixed.contains("\r\nX-Upstream-Case: Mixed\r\n"), "{mixed}");
}

/// Client header names go upstream in lower case (bar the dozen Pingora titles itself),
/// unless RUNTIME_PRESERVE_HEADER_CASE keeps the client's case; the gateway's own names
/// are lower case either way.
#[test]
fn client_header_names_upstream() {
    let up = Upstream::http();
    for (preserve, expected) in [
        ("false", ["Host", "user-agent", "x-client-thing"]),
        ("true", ["Host", "User-Agent", "X-Client-Thing"]),
    ] {
        let gw = Gateway::start(
            Options::default()
                .env("RUNTIME_PRESERVE_HEADER_CASE", preserve)
                .ready(),
        );
        created(&gw, json!({"pattern": "^/case(/.*)?$", "target": up.url()}));
        let out = common::raw(
            gw.port,
            b"GET /case/x HTTP/1.1\r\nHost: x\r\nUser-Agent: t\r\nX-Client-Thing: 1\r\nConnection: close\r\n\r\n",
            Duration::from_secs(5),
        );
        assert!(out.starts_with("HTTP/1.1 200"), "{out}");
        let names = up.last().names;
        for name in expected
            .iter()
            .chain(&["x-forwarded-for", "x-real-ip", "x-request-id"])
        {
            assert!(
                names.iter().any(|n| n == name),
                "{name} ({preserve}) in {names:?}"
            );
        }
    }
}

/// X-Forwarded-* and Forwarded from a trusted proxy are kept (X-Forwarded-For extended);
/// from anyone else the gateway's own replace them and the rest are dropped.
#[test]
fn forwarding_headers_follow_trust() {
    let up = Upstream::http();
    let sent = [
        ("x-forwarded-for", "203.0.113.5"),
        ("x-forwarded-proto", "https"),
        ("x-forwarded-host", "public.example"),
        ("x-forwarded-port", "443"),
        ("X-Forwarded-Prefix", "/evil"),
        ("forwarded", "for=203.0.113.5;proto=https"),
        ("x-original-url", "/admin"),
        ("X-Rewrite-URL", "/admin"),
        ("true-client-ip", "203.0.113.7"),
        ("CF-Connecting-IP", "203.0.113.7"),
        ("client-ip", "203.0.113.7"),
        ("Fastly-Client-IP", "203.0.113.7"),
        ("x-client-ip", "203.0.113.7"),
        ("X-Cluster-Client-IP", "203.0.113.7"),
    ];
    let rule = json!({"pattern": "^/svc", "target": up.url()});

    let behind = Gateway::start(
        Options::default()
            .env("GATEWAY_TRUSTED_PROXIES", "127.0.0.1")
            .ready(),
    );
    created(&behind, rule.clone());
    assert_eq!(behind.get_with("/svc", &sent).status, 200);
    let h = up.last().headers;
    assert_eq!(h["x-forwarded-for"], "203.0.113.5, 127.0.0.1");
    assert_eq!(h["x-real-ip"], "203.0.113.5");
    // Every other header the proxy sent arrives as it was.
    for (name, value) in &sent[1..] {
        assert_eq!(h[&name.to_ascii_lowercase()], *value, "{name}");
    }

    let direct = Gateway::start(Options::default().ready());
    created(&direct, rule);
    assert_eq!(direct.get_with("/svc", &sent).status, 200);
    let h = up.last().headers;
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{}", direct.port));
    for dropped in [
        "x-forwarded-port",
        "x-forwarded-prefix",
        "forwarded",
        "x-original-url",
        "x-rewrite-url",
        "true-client-ip",
        "cf-connecting-ip",
        "client-ip",
        "fastly-client-ip",
        "x-client-ip",
        "x-cluster-client-ip",
    ] {
        assert!(!h.contains_key(dropped), "{dropped} passed: {h:?}");
    }
}

/// The master key is the gateway's credential: sent along to a proxied route (an admin
/// UI adds it to every request), it stops at the gateway. Other keys and tokens pass.
#[test]
fn the_master_key_never_reaches_an_upstream() {
    let up = Upstream::http();
    let gw = Gateway::start(
        Options::default()
            .env("RUNTIME_MASTER_KEY", "mk-secret")
            .ready(),
    );
    let admin = [("x-api-key", "mk-secret")];
    let rule = json!({"pattern": "^/svc", "target": up.url()});
    assert_eq!(gw.json("POST", RULES, &admin, &rule).status, 201);
    for sent in [
        [("x-api-key", "mk-secret"), ("x-other", "1")],
        [("authorization", "Bearer mk-secret"), ("x-other", "1")],
    ] {
        assert_eq!(gw.get_with("/svc", &sent).status, 200);
        let h = up.last().headers;
        assert!(
            !h.contains_key("x-api-key") && !h.contains_key("authorization"),
            "{h:?}"
        );
        assert_eq!(h["x-other"], "1");
    }
    let theirs = [
        ("x-api-key", "app-key"),
        ("authorization", "Bearer app-token"),
    ];
    assert_eq!(gw.get_with("/svc", &theirs).status, 200);
    let h = up.last().headers;
    assert_eq!(h["x-api-key"], "app-key");
    assert_eq!(h["authorization"], "Bearer app-token");
    // Next to the app's own key in a second header, in either order, the master key goes
    // and the app's stays.
    for (name, mine, app) in [
        ("x-api-key", "mk-secret", "app-key"),
        ("authorization", "Bearer mk-secret", "Bearer app-token"),
    ] {
        for sent in [[(name, mine), (name, app)], [(name, app), (name, mine)]] {
            assert_eq!(gw.get_with("/svc", &sent).status, 200);
            let seen = up.last();
            let count = seen
                .names
                .iter()
                .filter(|n| n.eq_ignore_ascii_case(name))
                .count();
            assert_eq!(count, 1, "{sent:?}: {seen:?}");
            assert_eq!(seen.headers[name], app, "{sent:?}");
        }
    }
}

/// Forwarded requests carry `Via` with this gateway's pseudonym (RFC 9110 7.6.3), and one
/// that comes back is answered `508`. A rule whose target was the gateway itself sent the
/// request round until the open-files limit was reached, after which no client could
/// connect. Two gateways chained on purpose pass.
#[test]
fn a_request_that_comes_back_is_a_loop() {
    let gw = Gateway::start(
        Options::default()
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "1000000")
            .ready(),
    );
    let own = format!("http://127.0.0.1:{}", gw.port);
    created(
        &gw,
        json!({"id": "loop", "pattern": "^/loop", "target": own}),
    );
    let asked = Instant::now();
    let r = gw.get("/loop/x");
    assert_eq!(r.status, 508, "{r:?}");
    assert_eq!(r.json(), json!({"error": "Loop Detected"}));
    assert!(asked.elapsed() < Duration::from_secs(5));
    assert!(
        gw.logs()
            .contains("came back to this gateway (route rule:loop)")
    );
    assert_eq!(gw.get("/api/health").status, 200);

    let up = Upstream::http();
    let back = Gateway::start(Options::default().ready());
    created(&back, json!({"pattern": "^/chain", "target": up.url()}));
    let front = format!("http://127.0.0.1:{}", back.port);
    created(&gw, json!({"pattern": "^/chain", "target": front}));
    let r = gw.get_with("/chain/x", &[("via", "1.1 cdn")]);
    assert_eq!(r.status, 200, "{r:?}");
    let via = up.last().headers["via"].clone();
    let hops: Vec<&str> = via.split(", ").collect();
    assert_eq!(hops.len(), 3, "{via}");
    assert_eq!(hops[0], "1.1 cdn");
    assert!(hops[1].starts_with("1.1 buntime-") && hops[2].starts_with("1.1 buntime-"));
    assert_ne!(hops[1], hops[2], "each gateway has its own pseudonym");
}

#[test]
fn upstream_failures_are_json() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    let closed = common::free_port();
    rule_to(&gw, "^/down", closed);
    created(
        &gw,
        json!({"pattern": "^/slow(/.*)$", "target": up.url(), "rewrite": "$1", "timeouts": {"read": "1s"}}),
    );
    created(
        &gw,
        json!({"pattern": "^/nowhere", "target": "http://no-such-host.invalid:8080"}),
    );
    let r = gw.get("/down");
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json(),
        json!({"error": "Proxy error: connection refused"})
    );
    assert!(r.header("content-length").is_some());
    let r = gw.get("/slow/delay/3000");
    assert_eq!(r.status, 504);
    assert_eq!(r.json(), json!({"error": "Gateway Timeout"}));
    assert!(r.header("content-length").is_some());
    assert_eq!(
        gw.get("/slow/delay/10").status,
        200,
        "under the timeout is fine"
    );
    let r = gw.get("/nowhere");
    assert_eq!(r.status, 502);
    assert_eq!(
        r.json(),
        json!({"error": "Proxy error: upstream host does not resolve"})
    );
}

/// `localhost` is both ::1 and 127.0.0.1 in containers and Kubernetes pods (their
/// `/etc/hosts`), and a sidecar or upstream often listens on IPv4 only. The name's
/// addresses were taken in turn, so the `::1` connection was refused and every other
/// request answered 502. A refused address is retried on the name's next one (nothing was
/// sent, so a POST too), and passed over for a while, so the refusal is logged once.
#[test]
fn a_name_with_an_address_that_refuses_fails_over() {
    // The gateway gets a hosts file of its own, in a private mount namespace.
    require_tool!(common::unshare(&["--mount"]), "unshare --mount (root)");
    let up = Upstream::http();
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "::1 dualhost\n127.0.0.1 dualhost localhost\n").unwrap();
    let mount = format!(
        "mount --bind {} /etc/hosts && exec \"$0\" \"$@\"",
        hosts.display()
    );
    let gw = Gateway::start(Options {
        wrapper: ["unshare", "--mount", "--", "sh", "-c", &mount]
            .map(String::from)
            .to_vec(),
        ..Options::default()
    });
    created(
        &gw,
        json!({"name": "dual", "pattern": "^/dual(/.*)?$", "rewrite": "$1",
               "target": format!("http://dualhost:{}", up.port)}),
    );
    let statuses: Vec<u16> = (0..6).map(|_| gw.get("/dual/x").status).collect();
    assert_eq!(statuses, [200; 6], "{}", gw.logs());
    let posted = gw.send("POST", "/dual/form", &[], Some(b"a=1"));
    assert_eq!(posted.status, 200, "{}", gw.logs());
    assert_eq!(up.last().body, b"a=1");
    assert_eq!(up.count(), 7);
    let refused = format!("Fail to connect to [::1]:{}", up.port);
    let times = gw.logs().matches(&refused).count();
    // Once, or twice should the machine stall past the 10 s the address is passed over.
    assert!((1..=2).contains(&times), "{times}:\n{}", gw.logs());
}

#[test]
fn https_upstreams_and_secure() {
    let up = Upstream::https();
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/insecure(/.*)?$", "target": up.url(), "rewrite": "$1", "secure": false}),
    );
    created(
        &gw,
        json!({"pattern": "^/checked(/.*)?$", "target": up.url(), "rewrite": "$1"}),
    );
    let r = gw.get("/insecure/hello");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["url"], "/hello");
    let r = gw.get("/checked/hello");
    assert_eq!(
        r.status, 502,
        "a self-signed certificate fails verification"
    );
    assert_eq!(
        r.json(),
        json!({"error": "Proxy error: TLS handshake failed"})
    );
}

#[test]
fn websockets_through_ws_rules() {
    let echo = WsEcho::start();
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/ws(/.*)$", "target": format!("ws://127.0.0.1:{}", echo.port), "rewrite": "/socket$1", "timeouts": {"read": "1s"}}),
    );
    created(
        &gw,
        json!({"pattern": "^/plain", "target": format!("ws://127.0.0.1:{}", echo.port), "ws": false}),
    );
    let mut ws = ws_connect(gw.port, "/ws/room?x=1");
    ws.send(tungstenite::Message::text("hello")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("hello"));
    assert_eq!(
        echo.paths.lock().unwrap().last().unwrap(),
        "/socket/room?x=1"
    );
    // Idle for longer than the rule's 1 s read timeout, and than Pingora's 60 s client
    // read timeout (which cut it at 60 s): still open. A socket with no read timeout
    // has TCP keepalive on both legs, which ends it if either peer vanishes.
    // (A socket's timer shows as keepalive once what it sent is acknowledged.)
    let client = ws.get_ref().local_addr().unwrap().port();
    let keepalive = |local: u16, remote: u16| {
        eventually(Duration::from_secs(5), || {
            keepalive_on(local, remote).filter(|&on| on)
        })
        .is_some()
    };
    assert!(keepalive(gw.port, client), "client leg");
    let upstream = common::tcp_sockets()
        .into_iter()
        .find(|s| s.remote_port == echo.port)
        .expect("the upstream leg");
    assert!(keepalive(upstream.local_port, echo.port), "upstream leg");
    std::thread::sleep(Duration::from_secs(62));
    ws.send(tungstenite::Message::text("still here")).unwrap();
    assert_eq!(ws.read().unwrap(), tungstenite::Message::text("still here"));
    ws.close(None).unwrap();
    // With ws: false the rule does not match an upgrade.
    let stream = TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    let err = tungstenite::client(format!("ws://127.0.0.1:{}/plain", gw.port).as_str(), stream)
        .unwrap_err();
    match err {
        tungstenite::HandshakeError::Failure(tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 404)
        }
        other => panic!("expected a 404, got {other:?}"),
    }
}

/// Every WebSocket carries its first message. With two proxy threads sharing one
/// work-stealing runtime, about 1 in 100 closed right after its 101 (`Connection reset
/// without closing handshake`): when the other thread saw the upstream's 101 arrive
/// before this connection's task took the upgrade request's empty body end, Pingora 0.9.1
/// took that end for the end of the tunnel (cloudflare/pingora#946). An upstream that
/// answers the handshake at once, as this one does, makes that order likely.
#[test]
fn every_websocket_carries_its_first_message() {
    let echo = WsEcho::start();
    let gw = Gateway::start(
        Options::default()
            .ready()
            .env("RUNTIME_THREADS", "2")
            .env("GATEWAY_RATE_LIMIT_REQUESTS", "100000"),
    );
    created(
        &gw,
        json!({"pattern": "^/ws(/.*)$", "target": format!("ws://127.0.0.1:{}", echo.port), "rewrite": "$1"}),
    );
    let mut lost = Vec::new();
    for i in 0..500 {
        let mut ws = ws_connect(gw.port, "/ws/room");
        let said = tungstenite::Message::text(format!("message {i}"));
        let heard = ws.send(said.clone()).and_then(|()| ws.read());
        if heard.as_ref().ok() != Some(&said) {
            lost.push(format!("{i}: {heard:?}"));
        }
    }
    assert!(lost.is_empty(), "{} of 500 lost: {lost:?}", lost.len());
}

/// A 101 turns the client's connection into a tunnel to the upstream, so it must be the
/// WebSocket handshake the client asked for, with the accept key only a server that read
/// the request's key can give. An upstream that echoes a status it is given (httpbin's
/// `/status/101`) answered 101 without upgrading, and the client's next request went
/// through the tunnel to any path of it: past the rule's pattern, the token check and the
/// rate limit. Now `502`, and nothing more reaches the upstream.
#[test]
fn a_101_that_is_no_websocket_handshake_is_refused() {
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let log = seen.clone();
    let port = answering_heads(move |head| {
        log.lock()
            .unwrap()
            .push(head.lines().next().unwrap_or("").to_string());
        if head.starts_with("get /public/status/101") {
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\ninside!"
        }
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/public", port);
    let upgrade = "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
                   Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";
    for asked in [upgrade, ""] {
        let mut s = gw.connect();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(
            s,
            "GET /public/status/101 HTTP/1.1\r\nHost: x\r\n{asked}\r\n"
        )
        .unwrap();
        let answer = read_until(&mut s, b"\r\n\r\n").expect("an answer");
        assert!(answer.starts_with("http/1.1 502"), "{asked:?}: {answer}");
        // What a smuggler would send next does not reach the upstream.
        let _ = s.write_all(b"GET /internal/admin HTTP/1.1\r\nHost: x\r\n\r\n");
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        assert!(!rest.contains("inside!"), "{rest}");
    }
    std::thread::sleep(Duration::from_millis(300));
    let seen = seen.lock().unwrap();
    assert!(
        seen.iter().all(|l| l.contains("/public/status/101")),
        "{seen:?}"
    );
    assert!(gw.stderr().contains("refused a 101"), "{}", gw.logs());
}

#[test]
fn websockets_over_tls() {
    let echo = common::upstream::WssEcho::start();
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/secure-ws", "target": format!("wss://127.0.0.1:{}", echo.port), "secure": false}),
    );
    let mut ws = ws_connect(gw.port, "/secure-ws");
    ws.send(tungstenite::Message::text("over tls")).unwrap();
    // It failed once in CI with the tunnel reset after the 101 (not reproduced in 67
    // runs since): the gateway's log says which side closed, next time.
    match ws.read() {
        Ok(m) => assert_eq!(m, tungstenite::Message::text("over tls")),
        Err(e) => panic!("{e}\n{}", gw.logs()),
    }
}

#[test]
fn static_rules_come_first_and_reload_on_sighup() {
    let up = Upstream::http();
    let gw = Gateway::start(with_static(&up.url()).ready());
    created(
        &gw,
        json!({"pattern": "^/static", "target": "http://127.0.0.1:9"}),
    );
    let r = gw.get("/static/x");
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(up.last().url, "/from-static/x");
    // Rewrite the config file: the static rule changes without a restart.
    gw.write_config(&format!("plugins:\n  proxy:\n    rules:\n      - {{pattern: '^/static(/.*)?$', target: '{}', rewrite: '/reloaded$1'}}\n      - {{pattern: '^/second', target: '{0}'}}\n", up.url()));
    gw.signal("HUP");
    let reloaded = eventually(Duration::from_secs(5), || {
        gw.get("/static/y");
        (up.last().url == "/reloaded/y").then_some(())
    });
    assert!(reloaded.is_some(), "SIGHUP applies new static rules");
    // The new static rule is read-only too.
    let r = gw.send("PATCH", &format!("{RULES}/static-1/toggle"), &[], None);
    assert_eq!(r.status, 403, "{r:?}");
}

#[test]
fn invalid_static_rules_fail_check() {
    let config = format!(
        "plugins:\n  proxy:\n    rules:\n      - {{pattern: '^/ok', target: 'http://h'}}\n      - {{pattern: '^/(x', target: 'http://h'}}\n      - {{pattern: '^/y', target: 'nope'}}\n      - {{pattern: '^/{}', target: 'http://h'}}\n",
        "z".repeat(4095)
    );
    let (ok, out) = common::check(Some(&config), &[]);
    assert!(!ok);
    assert!(
        out.contains("plugins.proxy.rules[1]: Invalid regex pattern"),
        "{out}"
    );
    assert!(
        out.contains("plugins.proxy.rules[2]: Invalid target URL"),
        "{out}"
    );
    assert!(
        out.contains("plugins.proxy.rules[3]: Invalid regex pattern: 4097 bytes, longer than 4096"),
        "{out}"
    );
}

fn rules_propagate_between_instances(b: Backend) {
    let up = Upstream::http();
    let env = start_on(b, Options::default());
    let a = &env.gw;
    let other = Gateway::start(env.same_database());
    assert_eq!(other.get("/shared/x").status, 404);
    let rule = created(a, json!({"pattern": "^/shared", "target": up.url()}));
    assert_eq!(
        a.get("/shared/x").status,
        200,
        "live on the writer before the response"
    );
    let seen = eventually(Duration::from_secs(5), || {
        (other.get("/shared/x").status == 200).then_some(())
    });
    assert!(seen.is_some(), "the other instance picks the rule up");
    other.send(
        "DELETE",
        &format!("{RULES}/{}", rule["id"].as_str().unwrap()),
        &[],
        None,
    );
    let gone = eventually(Duration::from_secs(5), || {
        (a.get("/shared/x").status == 404).then_some(())
    });
    assert!(
        gone.is_some(),
        "a delete on the other instance reaches the first"
    );
}
crate::on_both!(rules_propagate_between_instances);

fn concurrent_creates_lose_nothing(b: Backend) {
    let env = start_on(b, Options::default());
    let gw = &env.gw;
    let url = gw.url(RULES);
    std::thread::scope(|s| {
        for i in 0..20 {
            let url = url.clone();
            s.spawn(move || {
                let body = json!({"id": format!("r{i}"), "pattern": format!("^/c{i}$"), "target": "http://127.0.0.1:9"});
                let r = common::send(&common::agent(), "POST", &url, &[("content-type", "application/json")], Some(body.to_string().as_bytes()));
                assert_eq!(r.status, 201, "{r:?}");
            });
        }
    });
    let list = rules(gw);
    let mut orders: Vec<i64> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["order"].as_i64().unwrap())
        .collect();
    assert_eq!(list.as_array().unwrap().len(), 20);
    orders.sort();
    assert_eq!(orders, (0..20).collect::<Vec<_>>());
}
crate::on_both!(concurrent_creates_lose_nothing);

fn restart_keeps_the_rules(b: Backend) {
    let up = Upstream::http();
    let mut env = start_on(b, Options::default());
    created(
        &env.gw,
        json!({"id": "kept", "pattern": "^/kept", "target": up.url()}),
    );
    // A toggle is stored too, not only the table swapped.
    created(
        &env.gw,
        json!({"id": "off", "pattern": "^/off", "target": up.url()}),
    );
    let r = env
        .gw
        .send("PATCH", &format!("{RULES}/off/toggle"), &[], None);
    assert_eq!(r.json()["enabled"], false, "{r:?}");
    env.gw.stop();
    let again = Gateway::start(env.same_database());
    assert_eq!(again.get(&format!("{RULES}/kept")).status, 200);
    assert_eq!(again.get("/kept").status, 200);
    assert_eq!(again.get(&format!("{RULES}/off")).json()["enabled"], false);
    assert_eq!(tested(&again, "/off")["matched"], false);
}
crate::on_both!(restart_keeps_the_rules);

/// Rules stored with the same order (as another writer may leave them) go by id, and a
/// write to one of them leaves every rule where it was.
#[test]
fn equal_orders_go_by_id_and_writes_keep_places() {
    let gw = Gateway::start(Options::default().ready());
    let rule = |id: &str, order: i64| json!({"type": "set", "key": ["proxy", "rules", id], "value": {"pattern": "^/same$", "target": "http://127.0.0.1:9", "order": order}});
    let mut sets: Vec<Value> = [("b", 1), ("d", 0), ("a", 1), ("c", 0)]
        .iter()
        .map(|(id, order)| rule(id, *order))
        .collect();
    // The change marker: the other instances' (and this one's) sync notices the write.
    sets.push(json!({"type": "set", "key": ["proxy", "changed"], "value": {"at": 1}}));
    let r = gw.json(
        "POST",
        "/keyval/api/atomic",
        &[],
        &json!({"mutations": sets}),
    );
    assert_eq!(r.json()["ok"], true, "{r:?}");
    let ids = |gw: &Gateway| -> Vec<String> {
        rules(gw)
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    let expected = ["c", "d", "a", "b"];
    let seen = eventually(Duration::from_secs(10), || {
        let now = ids(&gw);
        (now.len() == 4).then_some(now)
    });
    assert_eq!(seen.as_deref(), Some(&expected.map(String::from)[..]));
    let matched = |gw: &Gateway| tested(gw, "/same")["rule"]["id"].clone();
    assert_eq!(matched(&gw), "c");
    for id in ["c", "a"] {
        let r = gw.send("PATCH", &format!("{RULES}/{id}/toggle"), &[], None);
        assert_eq!(r.status, 200, "{r:?}");
    }
    assert_eq!(ids(&gw), expected.map(String::from));
    // c and a are off: the first enabled rule is d.
    assert_eq!(matched(&gw), "d");
    let r = gw.send("DELETE", &format!("{RULES}/d"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(ids(&gw), ["c", "a", "b"].map(String::from));
    assert_eq!(matched(&gw), "b");
}

/// A new pattern may be 4 KiB at most (matching can cost pattern length × path length,
/// and paths are the client's); a longer one stored before the limit still loads, and
/// writes that leave its pattern alone still work.
#[test]
fn patterns_over_4_kib_are_refused_but_stored_ones_still_load() {
    let gw = Gateway::start(Options::default().ready());
    // `^/` and `len - 2` of one letter.
    let pattern = |len: usize, letter: &str| format!("^/{}", letter.repeat(len - 2));
    let r = create(
        &gw,
        json!({"pattern": pattern(4097, "a"), "target": "http://127.0.0.1:9"}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        error(&r),
        "Invalid regex pattern: 4097 bytes, longer than 4096"
    );
    let longest = created(
        &gw,
        json!({"id": "longest", "pattern": pattern(4096, "a"), "target": "http://127.0.0.1:9"}),
    );
    assert_eq!(longest["pattern"].as_str().unwrap().len(), 4096);
    assert_eq!(
        tested(&gw, &format!("/{}", "a".repeat(4094)))["rule"]["id"],
        "longest"
    );
    let r = gw.json(
        "PUT",
        &format!("{RULES}/longest"),
        &[],
        &json!({"pattern": pattern(5000, "a")}),
    );
    assert_eq!(r.status, 400, "{r:?}");
    assert_eq!(
        error(&r),
        "Invalid regex pattern: 5000 bytes, longer than 4096"
    );

    // Written behind the API's back, as a gateway without the limit would have kept it.
    let legacy = pattern(5000, "b");
    let r = gw.json(
        "POST",
        "/keyval/api/atomic",
        &[],
        &json!({"mutations": [
            {"type": "set", "key": ["proxy", "rules", "legacy"], "value": {"pattern": legacy, "target": "http://127.0.0.1:9", "order": 5}},
            {"type": "set", "key": ["proxy", "changed"], "value": {"at": 1}},
        ]}),
    );
    assert_eq!(r.json()["ok"], true, "{r:?}");
    let path = format!("/{}", "b".repeat(4998));
    let loaded = eventually(Duration::from_secs(10), || {
        let t = tested(&gw, &path);
        (t["rule"]["id"] == "legacy").then_some(t)
    });
    assert!(loaded.is_some(), "the stored rule did not load");
    let r = gw.json(
        "PUT",
        &format!("{RULES}/legacy"),
        &[],
        &json!({"name": "kept"}),
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["pattern"].as_str().unwrap().len(), 5000);
}

#[test]
fn hundreds_of_rules_all_load() {
    let gw = Gateway::start(Options::default().ready());
    // More than one chunk of the table (512 rules a set): matched in order across them.
    let sets: Vec<Value> = (0..600)
        .map(|i| json!({"type": "set", "key": ["proxy", "rules", format!("bulk{i}")], "value": {"pattern": format!("^/bulk{i}$"), "target": "http://127.0.0.1:9", "order": i}}))
        .collect();
    let r = gw.json(
        "POST",
        "/keyval/api/atomic",
        &[],
        &json!({"mutations": sets}),
    );
    assert_eq!(r.json()["ok"], true);
    // Written behind the API's back with no change marker: a restart loads them all.
    let mut gw = gw;
    gw.stop();
    let mut opts = Options::default().ready();
    opts.dir = Some(gw.dir.clone());
    let again = Gateway::start(opts);
    assert_eq!(rules(&again).as_array().unwrap().len(), 600);
    for id in ["bulk0", "bulk511", "bulk512", "bulk599"] {
        assert_eq!(tested(&again, &format!("/{id}"))["rule"]["id"], id);
    }
}

/// A dynamic rule stored as `static-1` (before such ids were refused) next to a static
/// rule that now has that id: the start-up log names it, and writes reach the dynamic one,
/// which could otherwise never be changed or deleted (`403 Cannot delete static rules`).
#[test]
fn a_stored_rule_sharing_a_static_id_can_still_be_deleted() {
    let statics = |n: usize| {
        let rules: String = (0..n)
            .map(|i| format!("      - {{pattern: '^/s{i}', target: 'http://127.0.0.1:9'}}\n"))
            .collect();
        format!("plugins:\n  proxy:\n    rules:\n{rules}")
    };
    let mut gw = Gateway::start(Options::default().config(&statics(1)).ready());
    let legacy = json!({"pattern": "^/legacy", "target": "http://127.0.0.1:9", "order": 0});
    let r = gw.json("PUT", "/keyval/api/keys/proxy/rules/static-1", &[], &legacy);
    assert_eq!(r.status, 200, "{r:?}");
    gw.stop();
    let mut opts = Options::default().config(&statics(2)).ready();
    opts.dir = Some(gw.dir.clone());
    let gw = Gateway::start(opts);
    assert!(
        gw.stderr()
            .contains("proxy: stored rule static-1 has an id kept for static rules"),
        "{}",
        gw.stderr()
    );
    let ids = |gw: &Gateway| -> Vec<String> {
        let list = gw.get(RULES).json();
        let rules = list.as_array().unwrap().iter();
        rules
            .map(|r| r["id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(&gw), ["static-0", "static-1", "static-1"]);
    let toggled = gw.send("PATCH", &format!("{RULES}/static-1/toggle"), &[], None);
    assert_eq!(toggled.status, 200, "{toggled:?}");
    assert_eq!(toggled.json()["pattern"], "^/legacy");
    let deleted = gw.send("DELETE", &format!("{RULES}/static-1"), &[], None);
    assert_eq!(deleted.status, 200, "{deleted:?}");
    assert_eq!(ids(&gw), ["static-0", "static-1"]);
    let again = gw.send("DELETE", &format!("{RULES}/static-1"), &[], None);
    assert_eq!(again.status, 403, "the static rule stays: {again:?}");
}

/// Patterns are compiled on one thread at the idle CPU priority (`SCHED_IDLE`), so that a
/// rule write never takes CPU time from requests.
#[test]
fn rules_compile_on_an_idle_priority_thread() {
    const SCHED_IDLE: &str = "5";
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/x", "target": "http://127.0.0.1:9"}),
    );
    let tasks = format!("/proc/{}/task", gw.pid());
    let builder = std::fs::read_dir(&tasks)
        .unwrap()
        .map(|t| t.unwrap().path())
        .find(|t| std::fs::read_to_string(t.join("comm")).unwrap().trim() == "rule-builder")
        .expect("a rule-builder thread");
    let stat = std::fs::read_to_string(builder.join("stat")).unwrap();
    // Fields after the command name (which ends with the last ')') start at field 3;
    // the scheduling policy is field 41.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    assert_eq!(fields[41 - 3], SCHED_IDLE, "{stat}");
}

/// A raw TCP upstream on a free port: `handle` serves each connection on a thread of its
/// own (one at a time, a handler waiting on a kept-alive connection would hold up the next
/// connection the gateway opens).
fn raw_upstream(handle: impl Fn(TcpStream) + Send + Sync + 'static) -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let handle = std::sync::Arc::new(handle);
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { return };
            let handle = handle.clone();
            std::thread::spawn(move || handle(conn));
        }
    });
    port
}

/// An upstream that answers each request head on a connection (lower-cased, body-less
/// requests only) with the bytes `answer` picks for it, as they are: a status or headers
/// no HTTP server library would send.
fn answering_heads(answer: impl Fn(&str) -> &'static [u8] + Send + Sync + 'static) -> u16 {
    raw_upstream(move |mut conn| {
        while let Some(head) = read_until(&mut conn, b"\r\n\r\n") {
            let _ = conn.write_all(answer(&head));
        }
    })
}

/// Reads from `s` up to and including the first `end`; `None` when the peer closes or
/// fails first. A byte at a time, so what follows `end` (a body sent with its head in one
/// segment) stays unread: read in blocks, a head followed by its body never ended with
/// `\r\n\r\n`, and a test failed whenever the two came together.
fn read_until(s: &mut TcpStream, end: &[u8]) -> Option<String> {
    let mut got = Vec::new();
    let mut byte = [0u8; 1];
    while !got.ends_with(end) {
        s.read_exact(&mut byte).ok()?;
        got.push(byte[0]);
    }
    Some(String::from_utf8_lossy(&got).to_lowercase())
}

/// An HTTP/1.0 upstream (Python's `http.server` by default) is answered to an HTTP/1.1
/// client in HTTP/1.1, and the client's connection stays open. Pingora passed the
/// upstream's version through: the client got `HTTP/1.0 200`, and with curl the
/// second response on a connection came with `Connection: close`. (A 1.0 body that ends
/// with the connection went out chunked in HTTP/1.1 already; one with a length did not.)
#[test]
fn an_http_1_0_upstream_is_answered_in_http_1_1() {
    let port = raw_upstream(|mut conn| {
        let mut buf = [0u8; 4096];
        let _ = conn.read(&mut buf);
        let _ = conn.write_all(
            b"HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 14\r\n\r\nold-style body",
        );
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/old", port);
    let mut s = gw.connect();
    for _ in 0..3 {
        s.write_all(b"GET /old HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let text = read_until(&mut s, b"old-style body").expect("an answer");
        assert!(text.starts_with("http/1.1 200"), "{text}");
        assert!(text.contains("connection: keep-alive"), "{text}");
    }
}

/// An HTTP/1.0 client never gets a chunked body (RFC 9112 6.1: 1.0 has no chunked
/// coding): a body without a length reaches it unframed and the connection then closes.
/// Pingora chunked it for every client, so ApacheBench or a 1.0 health checker read the
/// chunk sizes as data. A 1.1 client still gets it chunked on a kept-alive connection.
#[test]
fn an_http_1_0_client_gets_no_chunked_body() {
    let port = raw_upstream(|mut conn| {
        while read_until(&mut conn, b"\r\n\r\n").is_some() {
            let _ = conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n\
                  6\r\nstream\r\n4\r\ned!\n\r\n0\r\n\r\n",
            );
        }
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/chunks", port);
    for keep_alive in ["", "Connection: keep-alive\r\n"] {
        let request = format!("GET /chunks HTTP/1.0\r\n{keep_alive}\r\n");
        let got = common::raw(gw.port, request.as_bytes(), Duration::from_secs(10));
        let (head, body) = got.split_once("\r\n\r\n").unwrap();
        let head = head.to_lowercase();
        assert!(head.starts_with("http/1.1 200"), "{got}");
        assert!(!head.contains("transfer-encoding"), "{got}");
        assert!(head.contains("connection: close"), "{got}");
        assert_eq!(body, "streamed!\n");
    }
    let mut s = gw.connect();
    s.write_all(b"GET /chunks HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let text = read_until(&mut s, b"0\r\n\r\n").expect("a chunked answer");
    assert!(text.contains("transfer-encoding: chunked"), "{text}");
    assert!(text.contains("connection: keep-alive"), "{text}");
}

/// A 204 says nothing of a body (RFC 9110 8.6): an upstream's `Content-Length` or
/// `Transfer-Encoding` on one is taken off, as nginx does (a client believing it would
/// take the next response's bytes for this body); its other headers stay. A 304's
/// `Content-Length` (the size a 200 would have) stays.
#[test]
fn a_204_carries_no_body_length() {
    let port = answering_heads(|head| {
        if head.starts_with("get /length") {
            b"HTTP/1.1 204 No Content\r\nContent-Length: 5\r\nX-Kept: 1\r\n\r\n"
        } else if head.starts_with("get /chunked") {
            b"HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\nX-Kept: 1\r\n\r\n0\r\n\r\n"
        } else {
            b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nETag: \"e\"\r\n\r\n"
        }
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/", port);
    let get = |path: &str| closing(&gw, &format!("GET {path} HTTP/1.1\r\nHost: x\r\n"));
    for path in ["/length", "/chunked"] {
        let got = get(path);
        let head = got.to_lowercase();
        assert!(head.starts_with("http/1.1 204"), "{got}");
        assert!(head.contains("x-kept: 1"), "{path}: {got}");
        assert!(!head.contains("content-length"), "{path}: {got}");
        assert!(!head.contains("transfer-encoding"), "{path}: {got}");
        assert!(got.ends_with("\r\n\r\n"), "{path}: {got}");
    }
    let got = get("/cached");
    assert!(got.to_lowercase().starts_with("http/1.1 304"), "{got}");
    assert!(got.to_lowercase().contains("content-length: 5"), "{got}");
}

/// Host (RFC 9112 3.2): an HTTP/1.1 request without one is answered 400 here, as nginx
/// does; Pingora passed it upstream. An HTTP/1.0 client may leave it out, but the upstream
/// request is HTTP/1.1, so it names the upstream then (strict servers, Go's and nginx's,
/// answer a request without one 400).
#[test]
fn host_is_required_of_http_1_1_and_supplied_for_http_1_0() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/nohost", "target": up.url()}));
    let got = common::raw(
        gw.port,
        b"GET /nohost HTTP/1.1\r\nConnection: close\r\n\r\n",
        Duration::from_secs(10),
    );
    let head = got.to_lowercase();
    assert!(head.starts_with("http/1.1 400"), "{got}");
    assert!(head.contains("x-request-id: "), "{got}");
    assert!(got.ends_with(r#"{"error":"Missing Host header"}"#), "{got}");
    // An invalid Host is refused too, whatever the version; IPv6 and ports pass.
    for (host, version) in [
        ("a b", "1.1"),
        ("evil.test/x", "1.1"),
        ("h\"x", "1.1"),
        ("<script>", "1.0"),
        ("caf\u{e9}.test", "1.1"),
    ] {
        let got = common::raw(
            gw.port,
            format!("GET /nohost HTTP/{version}\r\nHost: {host}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
            Duration::from_secs(10),
        );
        assert!(
            got.to_lowercase().starts_with("http/1.1 400"),
            "{host}: {got}"
        );
        assert!(got.ends_with(r#"{"error":"Invalid Host header"}"#), "{got}");
    }
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "it reached the upstream"
    );
    for host in ["[::1]:8080", "my_host.example:80", "xn--caf-dma.test", ""] {
        let got = common::raw(
            gw.port,
            format!("GET /nohost HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes(),
            Duration::from_secs(10),
        );
        assert!(
            got.to_lowercase().starts_with("http/1.1 200"),
            "{host}: {got}"
        );
        assert_eq!(up.last().headers["host"], host);
    }

    let got = common::raw(
        gw.port,
        b"GET /nohost/old HTTP/1.0\r\n\r\n",
        Duration::from_secs(10),
    );
    assert!(got.to_lowercase().starts_with("http/1.1 200"), "{got}");
    let seen = up.last();
    assert_eq!(seen.url, "/nohost/old");
    assert_eq!(
        seen.headers.get("host").map(String::as_str),
        Some(format!("127.0.0.1:{}", up.port).as_str()),
        "{seen:?}"
    );
    assert!(!seen.headers.contains_key("x-forwarded-host"), "{seen:?}");
}

/// Only origin-form request targets (`/path`) are routed. Pingora parsed `keep/this`,
/// `evil.com:80` and `foo://h/` to the path `/`, so they matched a rule (and public
/// routes) for `/`, while the upstream got the target as sent and read another path.
/// Absolute-form (`http://host/path`), which RFC 9112 3.2.2 says a server must accept, is
/// routed by its path and reaches the upstream in origin-form, its authority as `Host`.
#[test]
fn request_targets_must_be_origin_form_or_absolute() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/$", "target": up.url()}));
    created(&gw, json!({"pattern": "^/app(/.*)?$", "target": up.url()}));
    let targets = [
        "keep/this",
        "evil.com:80",
        "foo://h/",
        "HTTP://other/admin",
        "http:/\\h/",
    ];
    for target in targets {
        let got = closing(&gw, &format!("GET {target} HTTP/1.1\r\nHost: h\r\n"));
        assert!(got.starts_with("HTTP/1.1 400"), "{target}: {got}");
    }
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "it reached the upstream"
    );
    let got = closing(&gw, "GET /?q=1 HTTP/1.1\r\nHost: x\r\n");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().url, "/?q=1");
    // (request line and Host sent, path and Host the upstream gets)
    let absolute = [
        ("HTTP://h:81/app/x?q=1", Some("h:81"), "/app/x?q=1", "h:81"),
        ("http://h.example/app/y", None, "/app/y", "h.example"),
        ("https://h.example?q=2", None, "/?q=2", "h.example"),
    ];
    for (target, host, path, host_seen) in absolute {
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        let got = closing(&gw, &format!("GET {target} HTTP/1.1\r\n{host}"));
        assert!(got.starts_with("HTTP/1.1 200"), "{target}: {got}");
        let seen = up.last();
        assert_eq!(seen.url, path, "{target}");
        assert_eq!(seen.headers["host"], host_seen, "{target}");
    }
    // Its path is checked as an origin-form one is.
    let got = closing(&gw, "GET http://h/app/../x HTTP/1.1\r\n");
    assert!(got.starts_with("HTTP/1.1 400"), "{got}");
}

/// A request body in a transfer coding besides `chunked` is refused with 501 (RFC 9112 6.1,
/// as nginx does): Pingora took off the chunks and sent `gzip, chunked` upstream as
/// `chunked` alone, so the upstream read gzip bytes as the plain body.
#[test]
fn transfer_codings_besides_chunked_are_refused() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/coded", "target": up.url()}));
    let post = |codings: &str| {
        let request = format!(
            "POST /coded HTTP/1.1\r\nHost: x\r\n{codings}Connection: close\r\n\r\n\
             3\r\nabc\r\n0\r\n\r\n"
        );
        common::raw(gw.port, request.as_bytes(), Duration::from_secs(10))
    };
    for codings in [
        "Transfer-Encoding: gzip, chunked\r\n",
        "Transfer-Encoding: deflate\r\nTransfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n",
    ] {
        let got = post(codings);
        assert!(got.starts_with("HTTP/1.1 501"), "{codings}: {got}");
        assert!(
            got.ends_with(r#"{"error":"Unsupported Transfer-Encoding"}"#),
            "{got}"
        );
    }
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "it reached the upstream"
    );
    for codings in [
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: Chunked \r\n",
    ] {
        let got = post(codings);
        assert!(got.starts_with("HTTP/1.1 200"), "{codings}: {got}");
        assert_eq!(up.last().body, b"abc");
    }
}

/// `TRACE` (and IIS's `TRACK`) never reaches an upstream: one that echoes it (Apache httpd
/// does by default) would show the client what the gateway added to its request, such as
/// a rule's credentials for that upstream.
#[test]
fn trace_is_refused_before_any_upstream() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/traced", "target": up.url(), "headers": {"authorization": "Bearer upstream-secret"}}),
    );
    for method in ["TRACE", "TRACK"] {
        let got = closing(&gw, &format!("{method} /traced HTTP/1.1\r\nHost: x\r\n"));
        assert!(got.starts_with("HTTP/1.1 501"), "{method}: {got}");
        assert!(
            got.ends_with(&format!(r#"{{"error":"{method} is not supported"}}"#)),
            "{got}"
        );
        assert!(!got.contains("upstream-secret"), "{got}");
    }
    assert!(
        up.seen.lock().unwrap().is_empty(),
        "it reached the upstream"
    );
    let got = closing(&gw, "OPTIONS /traced HTTP/1.1\r\nHost: x\r\n");
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert_eq!(up.last().method, "OPTIONS", "other methods pass");
}

/// A request header over `maxHeaderSize` (64 KiB unless set) is answered 431 before any
/// route. Pingora took up to 1 MiB, and the upstream got a copy: a 200 KiB cookie reached
/// it. The size is the header as sent: request line, fields and line ends.
#[test]
fn a_request_header_over_the_limit_is_431() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/big", "target": up.url()}));
    // The whole header sent for a cookie of `n` bytes, with `closing`'s last line.
    let head = |n: usize| {
        format!(
            "GET /big HTTP/1.1\r\nHost: x\r\nCookie: a={}\r\n",
            "b".repeat(n)
        )
    };
    let sent = |n: usize| head(n).len() + "Connection: close\r\n\r\n".len();
    let fits = (1..).find(|&n| sent(n) == 65536).unwrap();
    let got = closing(&gw, &head(fits));
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "{}",
        &got[..got.len().min(200)]
    );
    assert_eq!(up.count(), 1);
    let got = closing(&gw, &head(fits + 1));
    assert!(
        got.starts_with("HTTP/1.1 431"),
        "{}",
        &got[..got.len().min(200)]
    );
    assert!(
        got.ends_with(r#"{"error":"Request header too large: 65537 bytes, at most 65536"}"#),
        "{got}"
    );
    let got = closing(&gw, &head(200 << 10));
    assert!(
        got.starts_with("HTTP/1.1 431"),
        "{}",
        &got[..got.len().min(200)]
    );
    assert_eq!(
        up.count(),
        1,
        "only the header that fits reached the upstream"
    );

    // A larger limit, for apps whose cookies need it.
    let gw = Gateway::start(
        Options::default()
            .ready()
            .env("RUNTIME_MAX_HEADER_SIZE", "300kb"),
    );
    created(&gw, json!({"pattern": "^/big", "target": up.url()}));
    let got = closing(&gw, &head(200 << 10));
    assert!(
        got.starts_with("HTTP/1.1 200"),
        "{}",
        &got[..got.len().min(200)]
    );
    assert_eq!(up.count(), 2);
}

/// A client that stops reading a large answer is cut off once a write to it has waited
/// 60 s (nginx's `send_timeout`). Pingora waited forever, holding the client's connection,
/// the upstream's and the buffered body for as long as the client liked.
#[test]
fn a_client_that_stops_reading_is_cut_off() {
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let port = raw_upstream(move |mut conn| {
        let _ = read_until(&mut conn, b"\r\n\r\n");
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n");
        let chunk = [b'x'; 65536];
        while conn.write_all(&chunk).is_ok() {}
        let _ = closed_tx.send(Instant::now());
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/endless", port);
    let mut s = gw.connect();
    s.write_all(b"GET /endless HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 200");
    let stalled = Instant::now();
    let closed = closed
        .recv_timeout(Duration::from_secs(150))
        .expect("the gateway never let go of the upstream connection");
    let waited = closed - stalled;
    assert!(
        waited >= Duration::from_secs(50),
        "cut off after {waited:?}"
    );
    let logged = eventually(Duration::from_secs(5), || {
        gw.stdout()
            .lines()
            .find(|l| l.contains("\"/endless\""))
            .map(String::from)
    })
    .expect("an access-log line");
    assert!(logged.contains(" 200 "), "{logged}");
    let metrics = gw.get("/metrics").text();
    assert!(
        !metrics.contains("buntime_upstream_errors_total{"),
        "{metrics}"
    );
}

/// A request that comes before the dynamic rules were first read waits for them (up to
/// 10 s after start) rather than be routed without them. Here the database is down when
/// the gateway starts and comes up a second later; the gateway routed the request at once,
/// with no rule: a `404` for a path a rule owns.
#[test]
fn requests_at_start_wait_for_the_rules() {
    require_sqld!();
    let up = Upstream::http();
    let mut sqld = Sqld::start(&[]);
    let remote = Options::default().env("DATABASE_LIBSQL_URL", &sqld.url());
    {
        let gw = Gateway::start(remote.clone().ready());
        created(&gw, json!({"pattern": "^/early", "target": up.url()}));
    }
    sqld.stop();
    let gw = Gateway::start(remote);
    let (url, health) = (gw.url("/early/x"), gw.url("/api/health/ready"));
    let early = std::thread::spawn(move || common::send(&common::agent(), "GET", &url, &[], None));
    std::thread::sleep(Duration::from_secs(1));
    // Health answers at once all along; it is what says the gateway is not ready yet.
    let ready = common::send(&common::agent(), "GET", &health, &[], None);
    assert_eq!(ready.status, 503, "{ready:?}");
    assert!(!early.is_finished(), "answered before the rules were read");
    sqld.restart();
    let r = early.join().unwrap();
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    assert_eq!(up.last().url, "/early/x");
}

/// The wait for the rules ends 10 s after start: with the database still down, requests
/// are then routed with what is loaded (here nothing, so a `404`), never held for good.
/// A request a static rule takes does not wait at all: no dynamic rule could come first.
#[test]
fn the_wait_for_the_rules_ends_after_ten_seconds() {
    let up = Upstream::http();
    let down = format!("http://127.0.0.1:{}", common::free_port());
    let gw = Gateway::start(
        Options::default()
            .env("DATABASE_LIBSQL_URL", &down)
            .config(&format!(
                "plugins:\n  proxy:\n    rules:\n      - {{pattern: '^/static', target: '{}'}}\n",
                up.url()
            )),
    );
    let asked = Instant::now();
    let r = gw.get("/static/x");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "a static rule's request waited {:?}",
        asked.elapsed()
    );
    let asked = Instant::now();
    let r = gw.get("/early/x");
    let waited = asked.elapsed();
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        waited >= Duration::from_secs(5),
        "answered after {waited:?}"
    );
    assert!(
        waited < Duration::from_secs(20),
        "answered after {waited:?}"
    );
    let r = gw.get("/early/y");
    assert_eq!(r.status, 404, "{r:?}");
    assert!(
        asked.elapsed() - waited < Duration::from_secs(2),
        "waited again"
    );
}

/// A `Content-Length` repeated with one value (`3, 3`, or on two lines) is valid (RFC 9110
/// 8.6), and Pingora frames the body by it, but it forwarded the header as sent: Python's
/// `http.server` and Go refuse such a request, so the client got a `502`; from an upstream,
/// Python's `http.client` read the body until the connection closed. Both now get the one
/// value, and the body limit reads it too.
#[test]
fn a_repeated_content_length_is_passed_on_as_one_value() {
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let port = raw_upstream(move |mut conn| {
        while let Some(head) = read_until(&mut conn, b"\r\n\r\n") {
            let mut body = [0u8; 3];
            let _ = conn.read_exact(&mut body);
            let _ = seen_tx.send((head, body));
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/length", port);
    for lengths in [
        "Content-Length: 3, 3\r\n",
        "Content-Length: 3\r\nContent-Length: 3\r\n",
    ] {
        let mut s = gw.connect();
        write!(s, "POST /length HTTP/1.1\r\nHost: x\r\n{lengths}\r\nabc").unwrap();
        let answer = read_until(&mut s, b"ok").expect("an answer");
        assert!(answer.starts_with("http/1.1 200"), "{answer}");
        let (head, body) = seen.recv_timeout(Duration::from_secs(5)).unwrap();
        assert_eq!(head.matches("content-length").count(), 1, "{head}");
        assert!(head.contains("content-length: 3\r\n"), "{head}");
        assert_eq!(&body, b"abc");
    }
    // The same from an upstream reaches the client as one value.
    let answers = raw_upstream(|mut conn| {
        while read_until(&mut conn, b"\r\n\r\n").is_some() {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\n\r\nok");
        }
    });
    rule_to(&gw, "^/twice", answers);
    let mut s = gw.connect();
    s.write_all(b"GET /twice HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let answer = read_until(&mut s, b"ok").expect("an answer");
    assert_eq!(answer.matches("content-length").count(), 1, "{answer}");
    assert!(answer.contains("content-length: 2\r\n"), "{answer}");
    // Over the body limit (10 MiB by default) is refused before anything is sent on.
    let mut s = gw.connect();
    s.write_all(b"POST /length HTTP/1.1\r\nHost: x\r\nContent-Length: 20971520, 20971520\r\n\r\n")
        .unwrap();
    let answer = read_until(&mut s, b"}").expect("an answer");
    assert!(answer.starts_with("http/1.1 413"), "{answer}");
    assert!(seen.try_recv().is_err(), "it reached the upstream");
}

/// A kept-alive upstream connection is closed after a second without a request. Servers
/// close idle connections on their own schedule (Node after 5 s, gunicorn after 2 s), and
/// a `POST` sent on one just as it closes cannot be sent again: a `502`, seen about once in
/// 300 requests paced at such a server's timeout. The gateway lets go first.
#[test]
fn idle_upstream_connections_are_closed_after_a_second() {
    let (closed_tx, closed) = std::sync::mpsc::channel();
    let port = raw_upstream(move |mut conn| {
        while read_until(&mut conn, b"\r\n\r\n").is_some() {
            let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        }
        let _ = closed_tx.send(Instant::now());
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/idle", port);
    let answered = Instant::now();
    assert_eq!(gw.get("/idle").status, 200);
    let at = closed
        .recv_timeout(Duration::from_secs(10))
        .expect("the gateway kept its idle upstream connection");
    let idle = at - answered;
    // Before Node's 5 s; the timer fires at 1 s, the margin is for a loaded machine.
    assert!(
        idle >= Duration::from_millis(500) && idle < Duration::from_secs(4),
        "closed after {idle:?}"
    );
    assert_eq!(gw.get("/idle").status, 200, "a fresh connection serves on");
}

/// Hop-by-hop headers stop at the gateway in both directions (SPEC 1; RFC 9110 7.6.1).
/// Pingora drops the client's; it passed the upstream's on: a `Keep-Alive` timeout that
/// is not the gateway's, Apache's `Upgrade: h2c` on a plain 200, and headers the upstream
/// meant for this hop only.
#[test]
fn hop_by_hop_headers_stop_at_the_gateway() {
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let port = raw_upstream(move |mut conn| {
        let _ = seen_tx.send(read_until(&mut conn, b"\r\n\r\n").unwrap_or_default());
        let _ = conn.write_all(
            b"HTTP/1.1 200 OK\r\nConnection: X-Private, Content-Length\r\n\
              X-Private: for-this-hop\r\nKeep-Alive: timeout=5\r\n\
              Proxy-Connection: keep-alive\r\nUpgrade: h2c\r\nX-Kept: 1\r\n\
              Content-Length: 2\r\n\r\nok",
        );
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/hop", port);
    let r = gw.get_with(
        "/hop",
        &[
            ("Connection", "keep-alive, X-Client-Private"),
            ("X-Client-Private", "for-this-hop"),
            ("Keep-Alive", "timeout=5"),
            ("TE", "trailers"),
            ("Proxy-Authorization", "Basic Zm9vOmJhcg=="),
            ("X-Client-Kept", "1"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.text(), "ok");
    let request = seen.recv_timeout(Duration::from_secs(5)).unwrap();
    for gone in [
        "x-client-private",
        "keep-alive",
        "\r\nte:",
        "proxy-authorization",
    ] {
        assert!(!request.contains(gone), "{gone}: {request}");
    }
    assert!(request.contains("x-client-kept: 1"), "{request}");
    for gone in ["x-private", "keep-alive", "proxy-connection", "upgrade"] {
        assert_eq!(r.header(gone), None, "{gone}: {r:?}");
    }
    assert_eq!(r.header("x-kept"), Some("1"), "{r:?}");
    // A framing header named in Connection stays: the body is framed by it.
    assert_eq!(r.header("content-length"), Some("2"), "{r:?}");
    assert_eq!(r.header("connection"), Some("keep-alive"), "{r:?}");
}

/// A request that sends `Expect: 100-continue` gets the gateway's headers on its final
/// answer. They went on the upstream's `100 Continue` instead, and the final answer came
/// without its `RateLimit-*` headers.
#[test]
fn the_final_answer_after_100_continue_has_the_gateways_headers() {
    let port = raw_upstream(|mut conn| {
        if read_until(&mut conn, b"\r\n\r\n").is_none() {
            return;
        }
        let _ = conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n");
        let mut buf = [0u8; 4096];
        let Ok(n) = conn.read(&mut buf) else { return };
        let body = format!("got {}", String::from_utf8_lossy(&buf[..n]));
        let head = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n", body.len());
        let _ = conn.write_all((head + &body).as_bytes());
    });
    let gw = Gateway::start(Options::default().ready());
    rule_to(&gw, "^/expect", port);
    let mut s = gw.connect();
    s.write_all(
        b"POST /expect HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\
          Expect: 100-continue\r\n\r\n",
    )
    .unwrap();
    let interim = read_until(&mut s, b"\r\n\r\n").expect("an interim answer");
    assert!(interim.starts_with("http/1.1 100"), "{interim}");
    s.write_all(b"abcd").unwrap();
    let last = read_until(&mut s, b"got abcd").expect("the final answer");
    assert!(last.starts_with("http/1.1 200"), "{last}");
    for name in [
        "ratelimit-limit: ",
        "ratelimit-remaining: ",
        "x-request-id: ",
    ] {
        assert!(last.contains(name), "{name}: {last}");
    }
}

/// HEAD on an admin route is its GET without the body (it was a 404: the plugins' routes
/// match GET only).
#[test]
fn head_on_an_admin_route_is_its_get_without_a_body() {
    let gw = Gateway::start(Options::default().ready());
    created(
        &gw,
        json!({"pattern": "^/h", "target": "http://127.0.0.1:9"}),
    );
    let get = gw.get(RULES);
    assert_eq!(get.status, 200, "{get:?}");
    let head = gw.send("HEAD", RULES, &[], None);
    assert_eq!(head.status, 200, "{head:?}");
    assert!(head.body.is_empty(), "{head:?}");
    assert_eq!(
        head.header("content-length"),
        Some(get.body.len().to_string().as_str())
    );
    assert_eq!(head.header("content-type"), get.header("content-type"));
    // A method the route does not answer: 405, naming the ones it does.
    let delete = gw.send("DELETE", RULES, &[], None);
    assert_eq!(delete.status, 405);
    assert_eq!(delete.header("allow"), Some("GET, HEAD, POST"));
}

#[test]
fn keep_alive_to_the_client_survives_proxying() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/ka", "target": up.url()}));
    let mut s = gw.connect();
    for _ in 0..3 {
        s.write_all(b"GET /ka HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 4096];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    }
}

/// Requests a client pipelines (sends before reading the answers) are all answered, in
/// order, whoever answers each: a rule's upstream, the runtime API, the gateway's 404.
/// Pingora's default closed the connection after the first answer and dropped the rest.
/// A body is never read as a request: after a local answer to a request whose body was
/// not read, the connection closes (the client retries what was not answered).
#[test]
fn pipelined_requests_are_answered_in_order() {
    let up = Upstream::http();
    let gw = Gateway::start(Options::default().ready());
    created(&gw, json!({"pattern": "^/ka", "target": up.url()}));
    let smuggled = "GET /ka/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    let requests = format!(
        "GET /ka/one HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /ka/two HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello\
         GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n\
         GET /ka/three HTTP/1.1\r\nHost: x\r\n\r\n\
         POST /nothing HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{smuggled}\
         GET /ka/four HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
        smuggled.len()
    );
    let got = common::raw(gw.port, requests.as_bytes(), Duration::from_secs(10));
    let statuses: Vec<&str> = got
        .match_indices("HTTP/1.1 ")
        .map(|(i, _)| &got[i + 9..i + 12])
        .collect();
    assert_eq!(
        statuses[..6],
        ["200", "200", "200", "404", "200", "404"],
        "{got}"
    );
    let seen: Vec<(String, usize)> = up
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|r| (r.url.clone(), r.body.len()))
        .collect();
    let want = [("/ka/one", 0), ("/ka/two", 5), ("/ka/three", 0)].map(|(u, n)| (u.to_string(), n));
    assert_eq!(seen[..3], want);
    assert!(
        seen.iter().all(|(url, _)| url != "/ka/smuggled"),
        "{seen:?}"
    );
}
