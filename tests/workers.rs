//! The worker pool (SPEC 8): fixture apps (tests/fixtures/apps/worker.py, real python3
//! processes) started by the real gateway, reached over HTTP, and checked in
//! `/api/workers`, in metrics and in /proc.

mod common;

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::{Gateway, Options, Resp, eventually, write};
use serde_json::{Value, json};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/apps/worker.py");

/// A temp dir holding `apps/<name>/manifest.yaml` for each `(name, manifest)`, and options
/// that start a gateway on it.
struct Apps {
    temp: tempfile::TempDir,
}

impl Apps {
    fn new(apps: &[(&str, &str)]) -> Apps {
        let a = Apps {
            temp: tempfile::tempdir().unwrap(),
        };
        for (name, manifest) in apps {
            a.add(name, manifest);
        }
        a
    }

    /// A fixture worker app; `extra` is more manifest YAML.
    fn add(&self, name: &str, extra: &str) {
        self.manifest(name, &format!("command: [python3, {FIXTURE}]\n{extra}\n"));
    }

    /// The app `name` with exactly this manifest.
    fn manifest(&self, name: &str, text: &str) {
        write(&self.dir(name).join("manifest.yaml"), text);
    }

    fn dir(&self, name: &str) -> PathBuf {
        self.temp.path().join("apps").join(name)
    }

    /// Tests here poll `/api/workers`: the rate limiter (not under test) stays out of it.
    fn options(&self) -> Options {
        Options {
            dir: Some(self.temp.path().to_path_buf()),
            ..Options::default()
        }
        .env("GATEWAY_RATE_LIMIT_REQUESTS", "100000")
    }
}

fn workers(gw: &Gateway) -> Vec<Value> {
    let r = gw.get(&gw.api("/workers"));
    assert_eq!(r.status, 200, "{r:?}");
    r.json().as_array().unwrap().clone()
}

fn of_app(gw: &Gateway, app: &str) -> Vec<Value> {
    workers(gw)
        .into_iter()
        .filter(|w| w["app"] == app)
        .collect()
}

fn pid_of(r: &Resp) -> u64 {
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["pid"].as_u64().unwrap()
}

/// Alive = exists and is not a zombie.
fn alive(pid: u64) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            state != Some("Z") && state != Some("X")
        }
        Err(_) => false,
    }
}

fn gone_within(pid: u64, secs: u64) -> bool {
    eventually(Duration::from_secs(secs), || (!alive(pid)).then_some(())).is_some()
}

fn metric(gw: &Gateway, line_start: &str) -> Option<f64> {
    let text = gw.get("/metrics").text();
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// Sends the requests at once, each on its own thread.
fn concurrently(gw: &Gateway, paths: &[&str]) -> Vec<Resp> {
    std::thread::scope(|s| {
        let handles: Vec<_> = paths.iter().map(|p| s.spawn(move || gw.get(p))).collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn forwards_to_the_app_without_its_segment() {
    let apps = Apps::new(&[(
        "echo",
        "ttl: 5m\nenv: {APP_GREETING: from-manifest, FROM_DOTENV: manifest}",
    )]);
    write(
        &apps.dir("echo").join(".env"),
        // Expansion sees the manifest's env, never the gateway's secrets.
        "# comment\nFROM_DOTENV=\"dotenv\n$APP_GREETING$RUNTIME_MASTER_KEY\" # a comment\n",
    );
    let gw = Gateway::start(
        apps.options()
            .env("RUNTIME_MASTER_KEY", "master-secret")
            .env("NODE_ENV", "production"),
    );
    let admin = [("authorization", "Bearer master-secret")];

    let r = gw.get_with(
        "/echo/x/y?q=1&r=2",
        &[
            ("x-request-id", "req-42"),
            ("origin", "https://app.example"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    assert_eq!(r.header("x-request-id"), Some("req-42"));
    assert_eq!(r.header("access-control-allow-origin"), Some("*"));
    let body = r.json();
    assert_eq!(body["path"], "/x/y?q=1&r=2");
    let h = &body["headers"];
    assert_eq!(h["x-base"], "/echo");
    assert_eq!(h["x-request-id"], "req-42");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-real-ip"], "127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-forwarded-host"], format!("127.0.0.1:{}", gw.port));
    // The env rule: manifest env, overridden by .env, plus PATH and the address; none of
    // the gateway's own secrets.
    let env = &body["env"];
    assert_eq!(env["APP_GREETING"], "from-manifest");
    assert_eq!(env["FROM_DOTENV"], "dotenv\nfrom-manifest");
    assert!(env["PORT"].as_str().unwrap().parse::<u16>().is_ok());
    assert_eq!(env["HOST"], "127.0.0.1", "what a server reading HOST binds");
    assert_eq!(
        env["NODE_ENV"], "production",
        "passed on, as the original did"
    );
    assert!(env.get("PATH").is_some());
    assert!(env.get("RUNTIME_MASTER_KEY").is_none(), "{env}");
    let names = body["envNames"].as_array().unwrap();
    assert!(
        !names
            .iter()
            .any(|n| n.as_str().unwrap().starts_with("RUNTIME_")),
        "the gateway's settings leaked: {names:?}"
    );

    // The app root with and without a slash; a body.
    assert_eq!(gw.get("/echo").json()["path"], "/");
    assert_eq!(gw.get("/echo/").json()["path"], "/");
    let posted = gw.send("POST", "/echo/upload", &[], Some(&[7u8; 3000]));
    assert_eq!(posted.json()["bodyLength"], 3000);

    // One worker served all of them.
    assert_eq!(gw.get(&gw.api("/workers")).status, 401, "admin only");
    let listed = gw.get_with(&gw.api("/workers"), &admin).json();
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1, "{listed:?}");
    let w = &listed[0];
    assert_eq!(w["app"], "echo");
    assert_eq!(w["version"], "latest");
    assert_eq!(w["state"], "ready");
    assert_eq!(w["requests"], 4);
    assert_eq!(w["errors"], 0);
    assert_eq!(w["restarts"], 0);
    assert!(w["dir"].as_str().unwrap().ends_with("apps/echo"), "{w}");
    assert_eq!(w["pid"].as_u64(), Some(body["pid"].as_u64().unwrap()));
    let port = env["PORT"].as_str().unwrap();
    assert_eq!(w["address"], format!("127.0.0.1:{port}"));
    for key in ["id", "startedAt", "lastUsedAt"] {
        assert!(w[key].is_string(), "{key} in {w}");
    }

    let apps_listed = gw.get_with(&gw.api("/apps"), &admin).json();
    assert!(
        apps_listed
            .as_array()
            .unwrap()
            .iter()
            .any(|a| a["name"] == "echo"),
        "{apps_listed}"
    );
    assert_eq!(
        metric(&gw, "buntime_worker_starts_total{app=\"echo\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&gw, "buntime_workers{app=\"echo\",state=\"ready\"}"),
        Some(1.0)
    );
    let counted = metric(
        &gw,
        "buntime_http_requests_total{method=\"GET\",route=\"app:echo\",status=\"200\"}",
    );
    assert_eq!(counted, Some(3.0));

    // An HTTP/1.0 client without Host: the worker's HTTP/1.1 request still carries one.
    let got = common::raw(
        gw.port,
        b"GET /echo/old HTTP/1.0\r\n\r\n",
        Duration::from_secs(10),
    );
    let (_, body) = got.split_once("\r\n\r\n").expect("an answer");
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["path"], "/old", "{got}");
    assert_eq!(body["headers"]["host"], "localhost", "{got}");
}

/// A worker that binds every address (Node's `server.listen(PORT)` does) is reachable
/// from the network on its port, past the token check and the rate limit: the log says
/// so, once per app, and names the fix. One bound to 127.0.0.1 is not named.
#[test]
fn a_worker_open_to_the_network_is_named() {
    let apps = Apps::new(&[
        ("open", "ttl: 5m\ninstances: 2\nenv: {BIND: 0.0.0.0}"),
        ("closed", "ttl: 5m"),
    ]);
    let gw = Gateway::start(apps.options());
    for path in ["/open/", "/open/", "/closed/"] {
        assert_eq!(gw.get(path).status, 200, "{}", gw.logs());
    }
    let said = |logs: &str| {
        logs.lines()
            .filter(|l| l.contains("not only 127.0.0.1"))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    let lines = eventually(Duration::from_secs(10), || {
        let lines = said(&gw.stderr());
        (of_app(&gw, "open").len() == 2 && !lines.is_empty()).then_some(lines)
    })
    .unwrap_or_else(|| panic!("no warning\n{}", gw.logs()));
    assert_eq!(lines.len(), 1, "once per app: {lines:?}");
    let line = &lines[0];
    assert!(
        line.contains("worker open-") && line.contains("listens on 0.0.0.0 port"),
        "{line}"
    );
    assert!(
        line.contains("app open there") && line.contains("listen: unix"),
        "{line}"
    );
    let ports: Vec<String> = of_app(&gw, "open")
        .iter()
        .map(|w| {
            w["address"]
                .as_str()
                .unwrap()
                .rsplit(':')
                .next()
                .unwrap()
                .to_string()
        })
        .collect();
    assert!(
        ports.iter().any(|p| line.contains(&format!("port {p},"))),
        "{line} names none of {ports:?}"
    );
    assert!(!gw.stderr().contains("app closed there"), "{}", gw.logs());
}

#[test]
fn a_missing_worker_dir_is_named_at_start_and_searched_once_made() {
    let apps = Apps::new(&[]);
    let later = apps.temp.path().join("later");
    let dirs = format!(
        "{}:{}",
        apps.temp.path().join("apps").display(),
        later.display()
    );
    let gw = Gateway::start(apps.options().env("RUNTIME_WORKER_DIRS", &dirs));
    assert!(
        gw.logs().contains(&format!(
            "worker dir {} is not a directory (yet)",
            later.display()
        )),
        "{}",
        gw.logs()
    );
    assert_eq!(gw.get("/late/").status, 404);
    write(
        &later.join("late/manifest.yaml"),
        &format!("command: [python3, {FIXTURE}]\nttl: 5m\n"),
    );
    let found = eventually(Duration::from_secs(5), || {
        (gw.get("/late/").status == 200).then_some(())
    });
    assert!(found.is_some(), "{}", gw.logs());
}

#[test]
fn a_manifest_key_the_gateway_does_not_read_is_named_once() {
    // `tll` for `ttl`: the app runs, one worker per request, and the log says why.
    let apps = Apps::new(&[("typo", "tll: 5m")]);
    let gw = Gateway::start(apps.options());
    for _ in 0..3 {
        assert_eq!(gw.get("/typo/").status, 200);
        std::thread::sleep(Duration::from_millis(600));
    }
    let warning = "app typo: manifest key(s) tll are not read by the gateway";
    assert_eq!(gw.logs().matches(warning).count(), 1, "{}", gw.logs());
}

#[test]
fn unknown_apps_and_reserved_names_are_404() {
    let apps = Apps::new(&[("echo", "ttl: 5m")]);
    apps.manifest(".hidden", "ttl: 5m\n");
    let gw = Gateway::start(apps.options());
    for path in ["/nope/", "/nope", "/.hidden/", "/echo@9/"] {
        let r = gw.get(path);
        assert_eq!(r.status, 404, "{path}: {r:?}");
        assert_eq!(r.json(), json!({"error": "Not Found"}), "{path}");
    }
    let r = gw.send("POST", &gw.api("/workers/nope/restart"), &[], None);
    assert_eq!(r.status, 404, "{r:?}");
    assert!(of_app(&gw, "echo").is_empty(), "nothing started");
}

#[test]
fn versions_are_picked_by_range() {
    let apps = Apps::new(&[
        ("ver@1.0.0", "ttl: 5m\nenv: {APP_GREETING: '1.0.0'}"),
        ("ver@1.2.0", "ttl: 5m\nenv: {APP_GREETING: '1.2.0'}"),
        ("ver/2.0.0", "ttl: 5m\nenv: {APP_GREETING: '2.0.0'}"),
    ]);
    let gw = Gateway::start(apps.options());
    for (path, version) in [
        ("/ver/", "2.0.0"),
        ("/ver@1/", "1.2.0"),
        ("/ver@~1.0.0/", "1.0.0"),
        ("/ver@^1.0.0/", "1.2.0"),
        ("/ver@2.0.0/", "2.0.0"),
        ("/ver@%5E1.0.0/", "1.2.0"),
        ("/ver@%3E=1.0.0,%3C1.2.0/", "1.0.0"),
    ] {
        let r = gw.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}\n{}", gw.logs());
        assert_eq!(r.json()["env"]["APP_GREETING"], version, "{path}");
    }
    assert_eq!(gw.get("/ver@1/x").json()["headers"]["x-base"], "/ver@1");
    let encoded = gw.get("/ver@%5E1/x?q").json();
    assert_eq!(
        encoded["headers"]["x-base"], "/ver@%5E1",
        "the base as the client wrote it"
    );
    assert_eq!(encoded["path"], "/x?q");
    assert_eq!(gw.get("/ver@3/").status, 404);
    let versions: Vec<String> = of_app(&gw, "ver")
        .iter()
        .map(|w| w["version"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(versions.len(), 3, "one worker per version: {versions:?}");

    // A folder made after start is found without a restart.
    apps.add("late", "ttl: 5m");
    let late = eventually(Duration::from_secs(5), || {
        let r = gw.get("/late/");
        (r.status == 200).then_some(r)
    });
    assert!(late.is_some(), "new app not picked up");
}

#[test]
fn a_crashing_worker_is_restarted_and_counted() {
    let apps = Apps::new(&[(
        "crashy",
        "ttl: 5m\nhealthPath: /health\nenv: {CRASH_AFTER: '2'}",
    )]);
    let gw = Gateway::start(apps.options());
    let first = pid_of(&gw.get("/crashy/1"));
    let r2 = gw.get("/crashy/2"); // answered, then the worker exits
    assert_eq!(r2.status, 200, "{r2:?}\n{}", gw.logs());
    assert_eq!(pid_of(&r2), first);
    assert!(gone_within(first, 5));
    // Replaced after the 1 s backoff with no request asking: it served within its ttl.
    let replaced = eventually(Duration::from_secs(10), || {
        of_app(&gw, "crashy")
            .iter()
            .any(|w| w["state"] == "ready")
            .then_some(())
    });
    assert!(replaced.is_some(), "not replaced\n{}", gw.logs());
    let r3 = gw.get("/crashy/3");
    assert_eq!(r3.status, 200, "{r3:?}\n{}", gw.logs());
    let second = pid_of(&r3);
    assert_ne!(second, first);

    let listed = of_app(&gw, "crashy");
    let crashed = listed
        .iter()
        .find(|w| w["state"] == "crashed")
        .expect("crashed entry");
    assert_eq!(crashed["pid"], Value::Null);
    let live = listed
        .iter()
        .find(|w| w["pid"] == second)
        .expect("live entry");
    assert_eq!(live["state"], "ready");
    assert_eq!(live["restarts"], 1);
    assert_eq!(
        metric(&gw, "buntime_worker_crashes_total{app=\"crashy\"}"),
        Some(1.0)
    );
    assert_eq!(
        metric(&gw, "buntime_worker_starts_total{app=\"crashy\"}"),
        Some(2.0)
    );
}

/// A worker that fails is replaced while its app is asked for within its `ttl`; an app
/// that keeps failing with nobody asking is left stopped until the next request (it
/// used to be started again every minute for the life of the gateway).
#[test]
fn a_failing_app_nobody_asks_for_is_not_restarted() {
    let apps = Apps::new(&[]);
    apps.manifest(
        "broken",
        "command: [python3, -c, 'import sys; sys.exit(3)']\nttl: 1s\n",
    );
    let gw = Gateway::start(apps.options());
    let r = gw.get("/broken/");
    assert_eq!(r.status, 503, "{r:?}");
    // The first failure is replaced after the 1 s backoff if it came within the ttl of
    // the request (a slow start may miss it); the replacement fails past the ttl: no
    // more. Before, it was started again at about 1, 3 and 7 s, and so on.
    std::thread::sleep(Duration::from_secs(4));
    let settled = of_app(&gw, "broken");
    assert!(settled.len() <= 2, "{settled:?}\n{}", gw.logs());
    assert!(
        settled.iter().all(|w| w["state"] == "crashed"),
        "{settled:?}"
    );
    std::thread::sleep(Duration::from_secs(5));
    assert_eq!(of_app(&gw, "broken").len(), settled.len(), "{}", gw.logs());
    // The next request starts it again.
    let r = gw.get("/broken/");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(of_app(&gw, "broken").len(), settled.len() + 1);
}

#[test]
fn a_worker_writing_bytes_that_are_not_utf8_keeps_its_output_read() {
    // A reader that stopped at the first such byte closed the pipe: the worker's next
    // write failed with EPIPE and the request with it.
    let apps = Apps::new(&[("latin", "ttl: 5m")]);
    let gw = Gateway::start(apps.options());
    for word in ["one", "two", "three", "four"] {
        let r = gw.get(&format!("/latin/print/{word}"));
        assert_eq!(r.status, 200, "{word}: {r:?}\n{}", gw.logs());
    }
    let logged = eventually(Duration::from_secs(5), || {
        gw.logs()
            .contains("[latin-1] four caf\u{fffd}")
            .then_some(())
    });
    assert!(logged.is_some(), "{}", gw.logs());
}

#[test]
fn a_worker_dying_mid_request_is_502() {
    let apps = Apps::new(&[("fragile", "ttl: 5m")]);
    let gw = Gateway::start(apps.options());
    let pid = pid_of(&gw.get("/fragile/"));
    let r = gw.get("/fragile/die");
    assert_eq!(r.status, 502, "{r:?}");
    assert_eq!(r.json()["error"], "Bad Gateway");
    assert!(gone_within(pid, 5));
    assert_ne!(pid_of(&gw.get("/fragile/")), pid, "replaced");
}

#[test]
fn a_slow_starter_makes_requests_wait() {
    let apps = Apps::new(&[("slow", "ttl: 5m\nenv: {START_DELAY: '2'}")]);
    let gw = Gateway::start(apps.options());
    let t = Instant::now();
    let answers = concurrently(&gw, &["/slow/a", "/slow/b", "/slow/c"]);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    let pids: Vec<u64> = answers.iter().map(pid_of).collect();
    assert!(pids.iter().all(|p| *p == pids[0]), "one worker: {pids:?}");
    assert_eq!(of_app(&gw, "slow").len(), 1);
}

#[test]
fn a_worker_that_never_gets_healthy_is_503() {
    let apps = Apps::new(&[("sick", "ttl: 5m\nstartTimeout: 2s\nenv: {UNHEALTHY: '1'}")]);
    let gw = Gateway::start(apps.options());
    let t = Instant::now();
    let r = gw.get("/sick/");
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json(), json!({"error": "App unavailable", "app": "sick"}));
    let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
    assert!(retry >= 1);
    // While it backs off, the failure is answered at once.
    let t = Instant::now();
    assert_eq!(gw.get("/sick/").status, 503);
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    let listed = eventually(Duration::from_secs(15), || {
        let ws = of_app(&gw, "sick");
        ws.iter().all(|w| w["state"] == "stopped").then_some(ws)
    });
    assert!(listed.is_some(), "{:?}", of_app(&gw, "sick"));
    // The log says what was probed, and the usual cause.
    assert!(
        gw.logs().contains("GET / on 127.0.0.1:")
            && gw
                .logs()
                .contains("(does it listen on the PORT it is given?)"),
        "{}",
        gw.logs()
    );
}

/// A server that binds `localhost` instead of the 127.0.0.1 it is given (Node's
/// `server.listen(PORT, "localhost")`) listens on ::1 only where `localhost` is ::1 first,
/// as in containers and pods: it never answers the gateway, and the log now says why.
#[test]
fn a_worker_on_ipv6_loopback_only_is_named_so() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        return; // no IPv6 here: no server can bind ::1 either
    }
    let apps = Apps::new(&[("v6", "ttl: 5m\nstartTimeout: 2s\nenv: {BIND: '::1'}")]);
    let gw = Gateway::start(apps.options());
    assert_eq!(gw.get("/v6/").status, 503);
    let said = eventually(Duration::from_secs(10), || {
        let logs = gw.logs();
        logs.contains("never answered below 500 (it listens on [::1]:")
            .then_some(logs)
    });
    let logs = said.unwrap_or_else(|| gw.logs());
    assert!(
        logs.contains("only, not on the 127.0.0.1 it is given: it bound localhost"),
        "{logs}"
    );
}

#[test]
fn a_worker_exiting_at_start_is_503_at_once() {
    let apps = Apps::new(&[("broken", "ttl: 5m\nenv: {EXIT_AT_START: '1'}")]);
    let gw = Gateway::start(apps.options());
    let t = Instant::now();
    let r = gw.get("/broken/");
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.json()["app"], "broken");
    assert!(r.header("retry-after").is_some());
    // Well before the 30 s startTimeout.
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    let listed = of_app(&gw, "broken");
    assert!(listed.iter().all(|w| w["state"] == "crashed"), "{listed:?}");
}

#[test]
fn a_hanging_request_is_504_and_the_worker_serves_on() {
    let apps = Apps::new(&[("hangs", "ttl: 5m\ntimeout: 1s")]);
    let gw = Gateway::start(apps.options());
    let pid = pid_of(&gw.get("/hangs/"));
    let t = Instant::now();
    let r = gw.get("/hangs/hang");
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(r.json(), json!({"error": "Gateway Timeout"}));
    assert!(t.elapsed() < Duration::from_secs(10));
    assert_eq!(pid_of(&gw.get("/hangs/")), pid);
    let w = &of_app(&gw, "hangs")[0];
    assert_eq!(w["errors"], 1, "{w}");
}

/// An app's `timeout` bounds each wait for the worker, not the whole answer: a stream
/// that keeps sending outlives it (server-sent events); one silent for longer is cut.
#[test]
fn a_stream_outlives_the_timeout_while_it_sends() {
    let apps = Apps::new(&[("drips", "ttl: 5m\ntimeout: 2s")]);
    let gw = Gateway::start(apps.options());
    let t = Instant::now();
    let r = gw.get("/drips/drip/5/0.5");
    assert_eq!((r.status, r.text()), (200, "tick\n".repeat(5)), "{r:?}");
    assert!(t.elapsed() > Duration::from_secs(2), "{:?}", t.elapsed());
    let mut r = common::agent()
        .get(gw.url("/drips/drip/2/4"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r.body_mut().read_to_string();
    assert!(
        body.as_deref().map_or(true, |b| b == "tick\n"),
        "the second piece came after a 4 s silence: {body:?}"
    );
}

/// A WebSocket to an app lives until a side closes: idle past the app's `timeout`, its
/// `ttl` and Pingora's 60 s client read timeout (which cut it at 60 s), on the worker it
/// started on, which stops once it closes and its ttl has passed.
#[test]
fn a_websocket_to_an_app_lives_while_idle() {
    let apps = Apps::new(&[("chat", "ttl: 3s\ntimeout: 1s")]);
    let gw = Gateway::start(apps.options());
    let mut ws = common::ws_connect(gw.port, "/chat/ws");
    let ask_pid = |ws: &mut tungstenite::WebSocket<std::net::TcpStream>| {
        ws.send(tungstenite::Message::text("pid"))
            .and_then(|()| ws.read())
            .map(|answer| answer.into_text().unwrap().parse::<u64>().unwrap())
            .unwrap_or_else(|e| panic!("{e}\n{}", gw.logs()))
    };
    let pid = ask_pid(&mut ws);
    std::thread::sleep(Duration::from_secs(62));
    assert_eq!(ask_pid(&mut ws), pid);
    ws.close(None).unwrap();
    assert!(gone_within(pid, 15), "{}", gw.logs());
}

/// A client that leaves before the answer is logged 499 (nginx's "client closed
/// request"), and is neither an upstream error nor the worker's: an operator alerting on
/// `buntime_upstream_errors_total` was paged by users closing a slow page (counted
/// `reset`, status `000`, and one more error on the worker).
#[test]
fn a_client_leaving_is_not_the_workers_error() {
    let apps = Apps::new(&[("slowly", "ttl: 5m")]);
    let gw = Gateway::start(apps.options());
    pid_of(&gw.get("/slowly/"));
    let mut s = std::net::TcpStream::connect(("127.0.0.1", gw.port)).unwrap();
    s.write_all(b"GET /slowly/sleep/3 HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    drop(s);
    let logged = eventually(Duration::from_secs(10), || {
        metric(
            &gw,
            r#"buntime_http_requests_total{method="GET",route="app:slowly",status="499"}"#,
        )
    });
    assert_eq!(logged, Some(1.0));
    let line = r#"GET "/slowly/sleep/3" 499"#;
    let in_log = eventually(Duration::from_secs(10), || {
        gw.stdout().contains(line).then_some(())
    });
    assert!(in_log.is_some(), "{}", gw.logs());
    assert_eq!(
        metric(&gw, "buntime_upstream_errors_total{"),
        None,
        "{}",
        gw.get("/metrics").text()
    );
    let w = &of_app(&gw, "slowly")[0];
    assert_eq!(w["errors"], 0, "{w}");
}

/// The soft and hard open-files limits of a process.
fn open_files_limits(pid: u64) -> (u64, u64) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut n = line.split_whitespace().skip(3).map(|v| v.parse().unwrap());
    (n.next().unwrap(), n.next().unwrap())
}

/// Started with a low soft open-files limit (systemd's default is 1024), the gateway
/// lifts it to the hard limit: past it, accepts fail with EMFILE. Its workers get the
/// limit it started with, which `select()`-based programs need.
#[test]
fn the_open_files_limit_is_raised_for_the_gateway_only() {
    let apps = Apps::new(&[("files", "ttl: 5m")]);
    let mut opts = apps.options();
    opts.wrapper = ["prlimit", "--nofile=256:4096"].map(String::from).to_vec();
    let gw = Gateway::start(opts);
    assert_eq!(open_files_limits(gw.pid().into()), (4096, 4096));
    let worker = pid_of(&gw.get("/files/"));
    assert_eq!(open_files_limits(worker), (256, 4096));
}

#[test]
fn an_idle_worker_stops_after_its_ttl() {
    let apps = Apps::new(&[("brief", "ttl: 2s")]);
    let gw = Gateway::start(apps.options());
    let pid = pid_of(&gw.get("/brief/"));
    assert!(gone_within(pid, 15), "still running after its ttl");
    // The pool records the stop just after it reaps the process.
    let listed = eventually(Duration::from_secs(5), || {
        let listed = of_app(&gw, "brief");
        (listed.len() == 1 && listed[0]["state"] == "stopped").then_some(listed)
    })
    .unwrap_or_else(|| panic!("not listed as stopped: {:?}", of_app(&gw, "brief")));
    assert_eq!(listed[0]["pid"], Value::Null);
    let next = pid_of(&gw.get("/brief/"));
    assert_ne!(next, pid);
}

/// An app undeployed by removing (or renaming) its folder: no request reaches it, and its
/// workers stop, a preloading app's too, instead of running on until their ttl.
#[test]
fn an_undeployed_apps_workers_stop() {
    let apps = Apps::new(&[("gone", "ttl: 1h"), ("kept", "ttl: 1h\npreload: true")]);
    let gw = Gateway::start(apps.options());
    let gone = pid_of(&gw.get("/gone/"));
    let kept = pid_of(&gw.get("/kept/"));
    std::fs::rename(apps.dir("gone"), apps.dir("gone.old")).unwrap();
    std::fs::remove_dir_all(apps.dir("kept")).unwrap();
    for pid in [gone, kept] {
        assert!(gone_within(pid, 15), "{pid} still running\n{}", gw.logs());
    }
    assert_eq!(gw.get("/gone/").status, 404);
    let log = gw.logs();
    assert!(log.contains("stopping (folder removed)"), "{log}");
    // Not started again: a preloading app is wanted, but no longer there.
    std::thread::sleep(Duration::from_secs(3));
    assert!(
        workers(&gw).iter().all(|w| w["state"] == "stopped"),
        "{:?}",
        workers(&gw)
    );
}

/// A release deployed by repointing a symlink (or renaming a folder over the old one):
/// the workers move to the new folder, one by one, each serving until its replacement is
/// ready, with the new release's manifest; requests keep being answered throughout.
#[test]
fn a_swapped_folder_replaces_its_workers() {
    let apps = Apps::new(&[]);
    let releases = apps.temp.path().join("releases");
    for v in ["v1", "v2"] {
        write(
            &releases.join(format!("svc-{v}/manifest.yaml")),
            &format!("command: [python3, {FIXTURE}]\nttl: 5m\nenv: {{APP_GREETING: {v}}}\n"),
        );
        write(
            &releases.join(format!("site-{v}/manifest.yaml")),
            "ttl: 5m\n",
        );
        write(&releases.join(format!("site-{v}/index.html")), v);
    }
    let point = |name: &str, v: &str| {
        // Atomically, as deploy tools do: a new link renamed over the old one.
        let link = apps.temp.path().join("apps").join(format!(".{name}.new"));
        std::os::unix::fs::symlink(releases.join(format!("{name}-{v}")), &link).unwrap();
        std::fs::rename(&link, apps.dir(name)).unwrap();
    };
    std::fs::create_dir_all(apps.temp.path().join("apps")).unwrap();
    point("svc", "v1");
    point("site", "v1");
    let gw = Gateway::start(apps.options());
    let r = gw.get("/svc/");
    assert_eq!(
        r.json()["env"]["APP_GREETING"],
        "v1",
        "{r:?}\n{}",
        gw.logs()
    );
    let old = pid_of(&r);
    assert_eq!(gw.get("/site/").text(), "v1");

    point("svc", "v2");
    point("site", "v2");
    let moved = eventually(Duration::from_secs(10), || {
        let r = gw.get("/svc/");
        assert_eq!(r.status, 200, "{r:?}");
        (r.json()["env"]["APP_GREETING"] == "v2").then(|| pid_of(&r))
    })
    .unwrap_or_else(|| panic!("still on v1\n{}", gw.logs()));
    assert_ne!(moved, old);
    let site = eventually(Duration::from_secs(10), || {
        let r = gw.get("/site/");
        assert_eq!(r.status, 200, "{r:?}");
        (r.text() == "v2").then_some(())
    });
    assert!(
        site.is_some(),
        "the static app still serves v1\n{}",
        gw.logs()
    );
    assert!(gone_within(old, 15), "the v1 worker still runs");
    assert!(
        gw.logs()
            .contains("runs a folder that was replaced: starting its replacement")
    );
}

/// Every worker busy and no room for one more: the other app is answered at once, not
/// held, and the log says which setting to raise.
#[test]
fn a_full_pool_of_busy_workers_answers_503_at_once() {
    let apps = Apps::new(&[("busy", "ttl: 5m"), ("other", "ttl: 5m")]);
    let gw = Gateway::start(apps.options().env("RUNTIME_POOL_SIZE", "1"));
    assert_eq!(gw.get("/busy/").status, 200);
    let url = gw.url("/busy/sleep/4");
    let held = std::thread::spawn(move || common::agent().get(&url).call().map(|r| r.status()));
    // The held request is at the worker within this second, and stays 3 more.
    std::thread::sleep(Duration::from_secs(1));
    let asked = Instant::now();
    let r = gw.get("/other/");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert_eq!(
        r.json(),
        json!({"error": "App unavailable", "app": "other"})
    );
    assert!(
        gw.logs()
            .contains("the pool is full (1 workers, all busy): raise RUNTIME_POOL_SIZE"),
        "{}",
        gw.logs()
    );
    assert_eq!(held.join().unwrap().unwrap(), 200);
}

#[test]
fn a_full_pool_evicts_the_least_recently_used_worker() {
    let apps = Apps::new(&[("a", "ttl: 5m"), ("b", "ttl: 5m")]);
    let gw = Gateway::start(apps.options().env("RUNTIME_POOL_SIZE", "1"));
    let a = pid_of(&gw.get("/a/"));
    let b = pid_of(&gw.get("/b/"));
    assert!(gone_within(a, 15), "a not evicted");
    assert!(alive(b));
    let live: Vec<Value> = workers(&gw)
        .into_iter()
        .filter(|w| w["state"] != "stopped")
        .collect();
    assert_eq!(live.len(), 1, "{live:?}");
    assert_eq!(live[0]["app"], "b");
}

#[test]
fn ephemeral_workers_serve_one_request_each_behind_a_gate() {
    let apps = Apps::new(&[("cgi", "")]);
    let gw = Gateway::start(
        apps.options()
            .env("RUNTIME_EPHEMERAL_CONCURRENCY", "2")
            .env("RUNTIME_EPHEMERAL_QUEUE_LIMIT", "2"),
    );
    // Four fit: two run, two wait in the queue.
    let answers = concurrently(&gw, &["/cgi/sleep/1"; 4]);
    let mut pids: Vec<u64> = answers.iter().map(pid_of).collect();
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 4, "one process per request");
    for pid in &pids {
        assert!(gone_within(*pid, 15), "ephemeral worker {pid} kept running");
    }

    // Eight at once: two run, two queue, the rest find the queue full.
    let answers = concurrently(&gw, &["/cgi/sleep/3"; 8]);
    let ok = answers.iter().filter(|r| r.status == 200).count();
    let full: Vec<&Resp> = answers.iter().filter(|r| r.status == 503).collect();
    assert_eq!(ok + full.len(), 8, "{answers:?}");
    assert!(ok >= 4, "{answers:?}");
    assert!(!full.is_empty(), "the queue never filled: {answers:?}");
    for r in full {
        assert_eq!(r.json()["error"], "App unavailable");
        assert!(r.header("retry-after").is_some());
    }
    let live = eventually(Duration::from_secs(15), || {
        of_app(&gw, "cgi")
            .iter()
            .all(|w| w["state"] == "stopped")
            .then_some(())
    });
    assert!(live.is_some(), "{:?}", of_app(&gw, "cgi"));
}

/// Established TCP connections (IPv4) whose local port is `port`, from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let local = format!(":{port:04X}");
    table
        .lines()
        .skip(1)
        .filter(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && f[1].ends_with(&local) && f[3] == "01"
        })
        .count()
}

/// The gateway closes a kept-alive connection to a worker after a second without a
/// request, before the app's server would (Node's after 5 s, gunicorn's after 2 s): a
/// request sent on a connection as the server closes it is lost (`proxy.rs`, the same for
/// rule targets).
#[test]
fn idle_connections_to_a_worker_are_closed_after_a_second() {
    let apps = Apps::new(&[("kept", "ttl: 5m")]);
    let gw = Gateway::start(apps.options());
    let r = gw.get("/kept/");
    assert_eq!(r.status, 200);
    let port: u16 = r.json()["env"]["PORT"].as_str().unwrap().parse().unwrap();
    assert!(
        established_to(port) >= 1,
        "no pooled connection to the worker"
    );
    // Closed at 1 s; within 4 s, before Node's 5 s, on a loaded machine too.
    eventually(Duration::from_secs(4), || {
        (established_to(port) == 0).then_some(())
    })
    .expect("the gateway kept its idle connection to the worker");
    assert_eq!(gw.get("/kept/").status, 200);
}

#[test]
fn max_requests_recycles_a_worker_without_a_gap() {
    let apps = Apps::new(&[("recycled", "ttl: 5m\nmaxRequests: 3")]);
    let gw = Gateway::start(apps.options());
    let first = pid_of(&gw.get("/recycled/"));
    // Every request is answered while workers are replaced: the old one serves until its
    // replacement is ready.
    let mut pids = vec![first];
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().all(|p| *p == first) && Instant::now() < deadline {
        pids.push(pid_of(&gw.get("/recycled/")));
        std::thread::sleep(Duration::from_millis(20));
    }
    let second = *pids.last().unwrap();
    assert_ne!(second, first, "never recycled");
    assert!(gone_within(first, 15), "the recycled worker kept running");
    let listed = of_app(&gw, "recycled");
    let old = listed
        .iter()
        .find(|w| w["state"] == "stopped")
        .expect("stopped entry");
    assert!(old["requests"].as_u64().unwrap() >= 3, "{old}");
    assert_eq!(
        metric(&gw, "buntime_worker_crashes_total{app=\"recycled\"}"),
        None,
        "a recycle is no crash"
    );
}

/// The static worker is the gateway's own and has no leaks to contain: it is not recycled
/// every 1,000 requests unless its manifest asks (that cost a fifth of its throughput and
/// tripled its p99 under load).
#[test]
fn a_static_worker_is_not_recycled_by_default() {
    let apps = static_site("ttl: 5m\n");
    let gw = Gateway::start(apps.options());
    for _ in 0..1100 {
        assert_eq!(gw.get("/site/").status, 200);
    }
    let listed = of_app(&gw, "site");
    assert_eq!(listed.len(), 1, "{listed:?}\n{}", gw.logs());
    assert_eq!(listed[0]["state"], "ready");
    assert!(
        listed[0]["requests"].as_u64().unwrap() >= 1100,
        "{listed:?}"
    );
    assert!(
        !gw.stderr().contains("reached maxRequests"),
        "{}",
        gw.logs()
    );
}

#[test]
fn instances_share_the_load() {
    let apps = Apps::new(&[("pair", "ttl: 5m\ninstances: 2")]);
    let gw = Gateway::start(apps.options());
    let first = pid_of(&gw.get("/pair/"));
    eventually(Duration::from_secs(10), || {
        (of_app(&gw, "pair")
            .iter()
            .filter(|w| w["state"] == "ready")
            .count()
            == 2)
            .then_some(())
    })
    .expect("two ready instances");
    let mut pids: Vec<u64> = (0..6).map(|_| pid_of(&gw.get("/pair/"))).collect();
    assert!(pids.contains(&first));
    pids.sort();
    pids.dedup();
    assert_eq!(pids.len(), 2, "round-robin over both");
}

#[test]
fn restart_replaces_the_workers() {
    // A worker that takes 3 s to start: while its replacement starts, the old one serves.
    let apps = Apps::new(&[("again", "ttl: 5m\nenv: {START_DELAY: '3'}")]);
    let gw = Gateway::start(apps.options());
    let first = pid_of(&gw.get("/again/"));
    let r = gw.send("POST", &gw.api("/workers/again/restart"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    let asked = Instant::now();
    assert_eq!(
        pid_of(&gw.get("/again/")),
        first,
        "served by the old worker meanwhile"
    );
    assert!(
        asked.elapsed() < Duration::from_millis(1500),
        "waited {:?} for the replacement",
        asked.elapsed()
    );
    assert!(gone_within(first, 15));
    let second = pid_of(&gw.get("/again/"));
    assert_ne!(second, first);
    let listed = of_app(&gw, "again");
    assert!(
        listed
            .iter()
            .any(|w| w["state"] == "stopped" && w["restarts"] == 0)
    );
    // A manifest edited into one whose worker cannot start: the restart's replacement
    // fails, and the running worker goes on serving.
    apps.add("again", "ttl: 5m\nenv: {EXIT_AT_START: '1'}");
    let r = gw.send("POST", &gw.api("/workers/again/restart"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    let failed = eventually(Duration::from_secs(10), || {
        gw.logs()
            .contains("the worker exited before it was ready")
            .then_some(())
    });
    assert!(failed.is_some(), "{}", gw.logs());
    assert_eq!(pid_of(&gw.get("/again/")), second);
}

#[test]
fn restart_by_name_covers_every_version() {
    let apps = Apps::new(&[("multi@1.0.0", "ttl: 5m"), ("multi@2.0.0", "ttl: 5m")]);
    let gw = Gateway::start(apps.options());
    let (one, two) = (pid_of(&gw.get("/multi@1/")), pid_of(&gw.get("/multi@2/")));
    // A range restarts the version it picks, and only that one; a client may encode it
    // (`encodeURIComponent("multi@1")`).
    let r = gw.send("POST", &gw.api("/workers/multi%401/restart"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json()["app"], "multi@1");
    assert!(gone_within(one, 15));
    assert!(
        alive(two),
        "multi@2's worker was restarted by a restart of multi@1"
    );
    let one = pid_of(&gw.get("/multi@1/"));
    // The bare name, as /api/workers lists both: every version with workers.
    let r = gw.send("POST", &gw.api("/workers/multi/restart"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(gone_within(two, 15), "the default version kept its worker");
    assert!(gone_within(one, 15), "multi@1 kept its worker");
}

/// A worker runs as the gateway's user, and the kernel lets a process read the
/// environment of its user's other processes (`/proc/<pid>/environ`) unless they opt out:
/// no process an app can read may hold the master key or the JWT secret. As root the test
/// runs the gateway as `nobody` (root reads every process's environment anyway).
#[test]
fn a_worker_cannot_read_the_gateways_secrets() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path();
    let root = std::fs::metadata("/proc/self").unwrap().uid() == 0;
    let open = |path: &std::path::Path, mode: u32| {
        std::fs::create_dir_all(path).unwrap();
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
    };
    open(dir, 0o755);
    for sub in ["data", "plugins", "apps", "apps/snoop"] {
        open(&dir.join(sub), 0o777);
    }
    // Every environment it can read, searched for the secrets' common marker.
    write(
        &dir.join("apps/snoop/server.py"),
        r#"import json, os
from http.server import BaseHTTPRequestHandler, HTTPServer
class H(BaseHTTPRequestHandler):
    def do_GET(self):
        readable, leaks = 0, []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                env = open(f"/proc/{pid}/environ", "rb").read()
            except OSError:
                continue
            readable += 1
            if b"sesame-" in env:
                leaks.append(open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode())
        body = json.dumps({"readable": readable, "leaks": leaks}).encode()
        self.send_response(200)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#,
    );
    write(
        &dir.join("apps/snoop/manifest.yaml"),
        "command: [/usr/bin/python3, server.py]\nttl: 5m\npublicRoutes: ['/**']\n",
    );
    let mut opts = Options {
        dir: Some(dir.to_path_buf()),
        ..Options::default()
    }
    .env("RUNTIME_MASTER_KEY", "sesame-master-key")
    .env("AUTH_JWT_SECRET", "sesame-jwt-secret-sesame-jwt-secret");
    if root {
        opts.wrapper = [
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ]
        .map(String::from)
        .to_vec();
    }
    let gw = Gateway::start(opts);
    let r = gw.get("/snoop/");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    let found = r.json();
    assert!(found["readable"].as_u64().unwrap() > 0, "{found}");
    assert_eq!(
        found["leaks"],
        json!([]),
        "processes an app can read hold the secrets"
    );
}

#[test]
fn a_worker_ignoring_sigterm_is_killed_after_the_grace() {
    let apps = Apps::new(&[("stubborn", "ttl: 5m\nenv: {IGNORE_TERM: '1'}")]);
    let gw = Gateway::start(apps.options());
    let pid = pid_of(&gw.get("/stubborn/"));
    let r = gw.send("POST", &gw.api("/workers/stubborn/restart"), &[], None);
    assert_eq!(r.status, 200, "{r:?}");
    // SIGTERM is ignored: it is still there a few seconds on, then SIGKILL (10 s) ends it.
    std::thread::sleep(Duration::from_secs(3));
    assert!(alive(pid), "stopped before the grace ran out");
    assert!(gone_within(pid, 15), "not killed after the grace");
    assert!(gw.logs().contains("ignored SIGTERM"), "{}", gw.logs());
}

#[test]
fn failing_health_probes_replace_a_worker() {
    let apps = Apps::new(&[]);
    let sick = apps.temp.path().join("sick");
    apps.add(
        "probed",
        &format!(
            "ttl: 5m\nhealthPath: /health\nenv: {{SICK_FILE: '{}'}}",
            sick.display()
        ),
    );
    let gw = Gateway::start(apps.options());
    let first = pid_of(&gw.get("/probed/"));
    // Probes run every 10 s; three failures in a row replace the worker.
    write(&sick, "");
    let replaced = eventually(Duration::from_secs(60), || {
        of_app(&gw, "probed")
            .iter()
            .any(|w| w["state"] == "stopped" && w["pid"].is_null())
            .then_some(())
    });
    assert!(
        replaced.is_some(),
        "{:?}\n{}",
        of_app(&gw, "probed"),
        gw.logs()
    );
    assert!(gone_within(first, 15));
    // Healthy again: the replacement comes up and serves.
    std::fs::remove_file(&sick).unwrap();
    let next = eventually(Duration::from_secs(30), || {
        let r = gw.get("/probed/");
        (r.status == 200).then(|| pid_of(&r))
    })
    .expect("a replacement serves");
    assert_ne!(next, first);
    assert!(
        gw.logs().contains("failed 3 health probes"),
        "{}",
        gw.logs()
    );
}

#[test]
fn a_unix_socket_app() {
    let apps = Apps::new(&[("sock", "ttl: 5m\nlisten: unix")]);
    let gw = Gateway::start(apps.options());
    let r = gw.get("/sock/x");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    let body = r.json();
    assert_eq!(body["path"], "/x");
    assert!(body["env"].get("PORT").is_none());
    let socket = body["env"]["BUNTIME_SOCKET"].as_str().unwrap().to_string();
    let w = &of_app(&gw, "sock")[0];
    assert_eq!(w["address"], format!("unix:{socket}"));
    // In a folder of the gateway's own, made fresh: no other local user put it there.
    use std::os::unix::fs::PermissionsExt;
    let folder = std::path::Path::new(&socket).parent().unwrap();
    let mode = std::fs::metadata(folder).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700, "{}: {mode:o}", folder.display());
    let name = folder.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with(&format!("buntime-{}-", gw.pid())) && name.len() > 16,
        "{name}"
    );

    // A temporary dir too deep for a socket path: the start fails naming the cause.
    let deep = tempfile::tempdir().unwrap();
    let tmp = deep.path().join("d".repeat(100));
    std::fs::create_dir_all(&tmp).unwrap();
    let gw = Gateway::start(apps.options().env("TMPDIR", tmp.to_str().unwrap()));
    let r = gw.get("/sock/x");
    assert_eq!(r.status, 503, "{r:?}");
    assert!(
        gw.logs()
            .contains("is longer than a unix socket allows (107 bytes): set TMPDIR"),
        "{}",
        gw.logs()
    );
}

#[test]
fn preload_starts_at_boot() {
    let apps = Apps::new(&[
        ("early", "ttl: 5m\npreload: true"),
        // Versions: 1.0.0 preloads, though a bare /versioned/ picks 2.0.0, which does not.
        ("versioned@1.0.0", "ttl: 5m\npreload: true"),
        ("versioned@2.0.0", "ttl: 5m"),
    ]);
    let gw = Gateway::start(apps.options());
    let ready = eventually(Duration::from_secs(10), || {
        of_app(&gw, "early")
            .into_iter()
            .find(|w| w["state"] == "ready")
    })
    .expect("preloaded worker");
    assert_eq!(pid_of(&gw.get("/early/")), ready["pid"].as_u64().unwrap());
    let versioned = eventually(Duration::from_secs(10), || {
        of_app(&gw, "versioned")
            .into_iter()
            .find(|w| w["state"] == "ready")
    })
    .expect("the preloading version's worker");
    assert_eq!(versioned["version"], "1.0.0");
    assert_eq!(
        pid_of(&gw.get("/versioned@1/")),
        versioned["pid"].as_u64().unwrap()
    );
    assert_eq!(of_app(&gw, "versioned").len(), 1, "2.0.0 does not preload");
}

/// An app written for the original Buntime names a script as its entry and no command:
/// the original imported it as the app's server. Taken for a static app, the folder gave
/// out its source, credentials written in it included. It is an invalid manifest now,
/// saying what to write instead, at start and for its requests.
#[test]
fn an_app_written_for_the_original_is_not_served_as_files() {
    let apps = Apps::new(&[]);
    apps.manifest("orig", "entrypoint: index.ts\nttl: 5m\n");
    write(
        &apps.dir("orig").join("index.ts"),
        "import { db } from './src/db';\nexport default { fetch: () => new Response(db) };\n",
    );
    write(
        &apps.dir("orig").join("src/db.ts"),
        "export const db = 'postgres://admin:hunter2@db/prod';\n",
    );
    // Nor one that names no entry: the original ran its index.js.
    apps.manifest("bare", "ttl: 5m\n");
    write(
        &apps.dir("bare").join("index.js"),
        "module.exports = { fetch: () => new Response(require('./key')) };\n",
    );
    write(
        &apps.dir("bare").join("key.js"),
        "module.exports = 'hunter2';\n",
    );
    let gw = Gateway::start(apps.options());
    for path in ["/bare/", "/bare/key.js"] {
        let r = gw.get(path);
        assert_eq!(r.status, 500, "{path}: {r:?}");
        assert_eq!(
            r.json()["error"]
                .as_str()
                .unwrap()
                .split(':')
                .take(3)
                .collect::<Vec<_>>(),
            [
                "Invalid app manifest",
                " entrypoint",
                " index.html is not in the folder, but index.js is"
            ],
            "{r:?}"
        );
    }
    for path in ["/orig/", "/orig/index.ts", "/orig/src/db.ts"] {
        let r = gw.get(path);
        assert_eq!(r.status, 500, "{path}: {r:?}");
        assert!(!r.text().contains("hunter2"), "{path}: {r:?}");
        let error = r.json()["error"].as_str().unwrap().to_string();
        assert!(
            error.starts_with("Invalid app manifest: entrypoint: index.ts is a script")
                && error.contains("command: [bun, index.ts]"),
            "{error}"
        );
    }
    assert!(
        gw.stderr().contains("app orig (") && gw.stderr().contains("index.ts is a script"),
        "{}",
        gw.logs()
    );
}

#[test]
fn an_invalid_manifest_fails_that_app_only() {
    let apps = Apps::new(&[("good", "ttl: 5m")]);
    apps.manifest(
        "bad",
        "command: [python3, x.py]\ntimeout: soon\nenv:\n  API_TOKEN: hunter2\n  EMPTY:\n",
    );
    let gw = Gateway::start(apps.options());
    let r = gw.get("/bad/");
    assert_eq!(r.status, 500, "{r:?}");
    let error = r.json()["error"].as_str().unwrap().to_string();
    assert!(error.starts_with("Invalid app manifest: "), "{error}");
    assert!(
        error.contains("timeout") && error.contains("soon"),
        "{error}"
    );
    // The bad `env` entry is named; no value of the app's environment is shown, in the
    // public answer or the log.
    assert!(error.contains("env.EMPTY: has no value"), "{error}");
    assert!(!error.contains("hunter2"), "{error}");
    assert!(!gw.logs().contains("hunter2"), "{}", gw.logs());
    assert_eq!(gw.get("/good/").status, 200);
    // Deployed while the gateway runs: the start-up warnings never saw it, its first
    // request names it in the log, once however many follow.
    apps.manifest("late", "ttl: later\n");
    let seen = eventually(Duration::from_secs(5), || {
        (gw.get("/late/").status == 500).then_some(())
    });
    assert!(seen.is_some(), "{}", gw.logs());
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(gw.get("/late/").status, 500);
    let warning = "app late: invalid manifest: ttl: invalid duration";
    assert_eq!(gw.logs().matches(warning).count(), 1, "{}", gw.logs());

    // Fixed on disk: served without a restart.
    apps.add("bad", "ttl: 5m");
    let fixed = eventually(Duration::from_secs(5), || {
        (gw.get("/bad/").status == 200).then_some(())
    });
    assert!(fixed.is_some());
}

#[test]
fn body_limit_per_app() {
    let apps = Apps::new(&[("small", "ttl: 5m\nmaxBodySize: 1kb")]);
    let gw = Gateway::start(apps.options());
    let r = gw.send("POST", "/small/", &[], Some(&[1u8; 2000]));
    assert_eq!(r.status, 413, "{r:?}");
    let r = gw.send("POST", "/small/", &[], Some(&[1u8; 1000]));
    assert_eq!(r.json()["bodyLength"], 1000);
}

#[test]
fn apps_need_a_token_unless_public() {
    let secret = "s3cret-for-workers-test";
    let apps = Apps::new(&[("private", "ttl: 5m\npublicRoutes: [/open, /pub/**]")]);
    let gw = Gateway::start(apps.options().env("AUTH_JWT_SECRET", secret));
    let r = gw.get("/private/x");
    assert_eq!(r.status, 401, "{r:?}");
    assert_eq!(r.json()["reason"], "missing_token");
    assert_eq!(gw.get("/private/open").status, 200);
    assert_eq!(gw.get("/private/pub/a/b").status, 200);

    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 600;
    let token = jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({"sub": "ada", "roles": ["dev"], "exp": exp}),
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap();
    let bearer = format!("Bearer {token}");
    let r = gw.get_with(
        "/private/x",
        &[("authorization", &bearer), ("x-auth-subject", "mallory")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let h = &r.json()["headers"];
    assert_eq!(h["x-auth-subject"], "ada");
    let identity: Value = serde_json::from_str(h["x-identity"].as_str().unwrap()).unwrap();
    assert_eq!(identity["sub"], "ada");
}

/// Apps holding the static app `site` (an `index.html`) with this manifest.
fn static_site(manifest: &str) -> Apps {
    let apps = Apps::new(&[]);
    apps.manifest("site", manifest);
    write(&apps.dir("site").join("index.html"), "<h1>site</h1>");
    apps
}

#[test]
fn a_static_app() {
    let apps = static_site("ttl: 5m\n");
    write(&apps.dir("site").join("js/app.js"), "console.log(1)");
    // Over the size read on the worker's own thread: read on tokio's blocking pool.
    let big: String = (0..300_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    write(&apps.dir("site").join("big.txt"), &big);
    let gw = Gateway::start(apps.options());
    let r = gw.get("/site/");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    assert_eq!(r.text(), "<h1>site</h1>");
    assert!(r.header("content-type").unwrap().starts_with("text/html"));
    let r = gw.get("/site/js/app.js");
    assert_eq!(r.text(), "console.log(1)");
    assert!(
        r.header("content-type").unwrap().contains("javascript"),
        "{r:?}"
    );
    let r = gw.get("/site/big.txt");
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.text() == big, "big.txt came back changed");
    // SPA fallback.
    let r = gw.get("/site/deep/client/route");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>site</h1>"));
    let w = &of_app(&gw, "site")[0];
    assert_eq!(w["state"], "ready");
}

/// A static app whose entry is in a build folder (the original's own cpanel manifest:
/// `entrypoint: dist/index.html, injectBase: true`) is served from that folder, as the
/// original served it: its page's `assets/app.js` is found in `dist/assets/`, and the
/// rest of the app folder (sources, `package.json`) is not served.
#[test]
fn a_static_app_is_served_from_its_entrys_folder() {
    let apps = Apps::new(&[]);
    apps.manifest(
        "cp",
        "entrypoint: dist/index.html\nttl: 5m\ninjectBase: true\n",
    );
    let page = "<html><head></head><body><script src=\"assets/app.js\"></script></body></html>";
    write(&apps.dir("cp").join("dist/index.html"), page);
    write(&apps.dir("cp").join("dist/assets/app.js"), "console.log(1)");
    write(
        &apps.dir("cp").join("src/config.ts"),
        "const key = 'sk-live-1'",
    );
    write(&apps.dir("cp").join("package.json"), "{}");
    let gw = Gateway::start(apps.options());
    for path in ["/cp/", "/cp/users/42"] {
        let r = gw.get(path);
        assert_eq!(r.status, 200, "{path}: {r:?}\n{}", gw.logs());
        assert!(r.text().contains("<base href=\"/cp/\""), "{path}: {r:?}");
    }
    let r = gw.get("/cp/assets/app.js");
    assert_eq!((r.status, r.text().as_str()), (200, "console.log(1)"));
    for hidden in [
        "/cp/src/config.ts",
        "/cp/package.json",
        "/cp/dist/assets/app.js",
    ] {
        let r = gw.get(hidden);
        assert_eq!(r.status, 404, "{hidden}: {r:?}");
        assert!(!r.text().contains("sk-live"), "{hidden}: {r:?}");
    }
}

/// A static app answers as a file server should: validators with `304` for a file the
/// browser has, `no-cache` so a deploy is seen at once, and byte ranges (a media player
/// seeking). A large file is sent in chunks, whole or in part.
#[test]
fn a_static_app_revalidates_and_serves_ranges() {
    let apps = static_site("ttl: 5m\n");
    // Over the size read at once: sent in chunks (several, for the range below).
    let big: Vec<u8> = (0..700_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(apps.dir("site").join("big.bin"), &big).unwrap();
    let gw = Gateway::start(apps.options());
    let r = gw.get("/site/");
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    assert_eq!(r.header("cache-control"), Some("no-cache"));
    let etag = r.header("etag").expect("an etag").to_string();
    let modified = r.header("last-modified").expect("a date").to_string();
    for check in [
        ("if-none-match", etag.as_str()),
        ("if-modified-since", &modified),
    ] {
        let r = gw.get_with("/site/", &[check]);
        assert_eq!(r.status, 304, "{check:?}: {r:?}");
        assert!(r.body.is_empty());
        assert_eq!(r.header("etag"), Some(etag.as_str()));
    }
    let r = gw.get_with("/site/", &[("if-none-match", "\"something-else\"")]);
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>site</h1>"));

    let r = gw.get("/site/big.bin");
    assert_eq!(r.status, 200);
    assert_eq!(r.header("accept-ranges"), Some("bytes"));
    assert!(r.body == big, "big.bin came back changed");
    let r = gw.get_with("/site/big.bin", &[("range", "bytes=100000-599999")]);
    assert_eq!(r.status, 206, "{:?}", r.header("content-range"));
    assert_eq!(
        r.header("content-range"),
        Some("bytes 100000-599999/700000")
    );
    assert!(
        r.body == big[100_000..600_000],
        "the range came back changed"
    );
    let r = gw.get_with("/site/", &[("range", "bytes=-5")]);
    assert_eq!((r.status, r.text().as_str()), (206, "</h1>"));
    // Ranges are for GET: a HEAD describes the whole file.
    let r = gw.send("HEAD", "/site/big.bin", &[("range", "bytes=0-9")], None);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.header("content-length"), Some("700000"));
    let r = gw.get_with("/site/big.bin", &[("range", "bytes=700000-")]);
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */700000"));
    // A range of a file that changed since (If-Range) gets the whole file.
    let r = gw.get_with(
        "/site/big.bin",
        &[("range", "bytes=0-9"), ("if-range", "\"old\"")],
    );
    assert_eq!((r.status, r.body.len()), (200, 700_000));
    // A changed file has a new validator: the browser's copy is not reused.
    std::thread::sleep(std::time::Duration::from_millis(20));
    write(&apps.dir("site").join("index.html"), "<h1>new</h1>");
    let r = gw.get_with("/site/", &[("if-none-match", etag.as_str())]);
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>new</h1>"));
}

/// A single-page app built for the original Buntime asks for `<base href>` and reads its
/// run-time settings from `window.__env__` (variables starting with `PUBLIC_`/`VITE_`).
#[test]
fn a_static_app_gets_its_base_and_public_variables_in_its_pages() {
    let apps = Apps::new(&[]);
    apps.manifest(
        "spa",
        "ttl: 5m\ninjectBase: true\nenv:\n  PUBLIC_API_URL: https://api.example.com\n  DB_PASSWORD: hunter2\n",
    );
    let page = "<html><head><title>spa</title></head><body></body></html>";
    write(&apps.dir("spa").join("index.html"), page);
    write(&apps.dir("spa").join("app.js"), "<head></head>");
    write(&apps.dir("spa").join(".env"), "VITE_MODE=prod\n");
    let gw = Gateway::start(apps.options());
    let want = "<html><head><base href=\"/spa/\" /><title>spa</title>\
        <script>window.__env__={\"PUBLIC_API_URL\":\"https://api.example.com\",\"VITE_MODE\":\"prod\"};</script>\
        </head><body></body></html>";
    // The entry, and the same page as the fallback of a deep link.
    for path in ["/spa/", "/spa/users/42"] {
        let r = gw.get(path);
        assert_eq!((r.status, r.text().as_str()), (200, want), "{path}: {r:?}");
        assert_eq!(r.header("content-length"), Some(&*want.len().to_string()));
        assert!(!r.text().contains("hunter2"));
    }
    // Other files as they are; the page's validator is not the file's alone.
    assert_eq!(gw.get("/spa/app.js").text(), "<head></head>");
    let r = gw.get("/spa/");
    let etag = r.header("etag").unwrap().to_string();
    let r = gw.get_with("/spa/", &[("if-none-match", &etag)]);
    assert_eq!(r.status, 304, "{r:?}");
    // No range of the page: it is not the file's bytes.
    let r = gw.get_with("/spa/", &[("range", "bytes=0-5")]);
    assert_eq!((r.status, r.text().as_str()), (200, want));
    let r = gw.send("HEAD", "/spa/", &[], None);
    assert_eq!(r.header("content-length"), Some(&*want.len().to_string()));
    // A pinned version is another base: another page and another tag.
    let r = gw.get("/spa@latest/");
    assert!(r.text().contains("<base href=\"/spa@latest/\" />"), "{r:?}");
    assert_ne!(r.header("etag"), Some(etag.as_str()));
}

/// A large file goes out in chunks: the worker's peak memory stays far below the file's
/// size (it read the whole file into one buffer, once per request).
#[test]
fn a_static_app_sends_a_large_file_without_holding_it() {
    const SIZE: usize = 96 << 20;
    let apps = static_site("ttl: 5m\n");
    let data: Vec<u8> = (0..SIZE).map(|i| (i % 253) as u8).collect();
    std::fs::write(apps.dir("site").join("video.bin"), &data).unwrap();
    let gw = Gateway::start(apps.options());
    assert_eq!(gw.get("/site/").status, 200);
    let pid = of_app(&gw, "site")[0]["pid"].as_u64().unwrap();
    let before = peak_kib(pid);
    // Past the shared helper's 10 MB body limit: read here.
    let mut r = common::agent()
        .get(gw.url("/site/video.bin"))
        .call()
        .unwrap();
    assert_eq!(r.status(), 200);
    let body = r
        .body_mut()
        .with_config()
        .limit(SIZE as u64)
        .read_to_vec()
        .unwrap();
    assert!(body == data, "the file came back changed");
    let grown = peak_kib(pid) - before;
    assert!(
        grown * 1024 < SIZE as u64 / 4,
        "the peak grew {grown} KiB (from {before}) for a {SIZE}-byte file"
    );
}

/// A process's peak resident memory (`VmHWM`), in KiB.
fn peak_kib(pid: u64) -> u64 {
    common::status_kib(pid, "VmHWM")
}

/// A connection the gateway keeps open to a static worker (one per request in flight)
/// costs the worker tens of kilobytes: Pingora's 64 KiB read buffer per connection, zeroed
/// and touched whole by mimalloc, made it about 150 KB (600 connections: 92 MB).
#[test]
fn a_static_workers_connections_cost_little_memory() {
    let apps = static_site("ttl: 5m\n");
    let gw = Gateway::start(apps.options());
    assert_eq!(gw.get("/site/").status, 200);
    let w = &of_app(&gw, "site")[0];
    let pid = w["pid"].as_u64().unwrap();
    let each = common::kib_per_idle_connection(pid, w["address"].as_str().unwrap(), 300);
    assert!(each < 64, "{each} KiB per connection");
}

/// A build's precompressed files (`app.js.br`, `app.js.gz`) are served to clients that
/// accept them, as nginx's `gzip_static` does: with `Content-Encoding`, `Vary`, the
/// original's type and a validator of their own.
#[test]
fn a_static_app_serves_precompressed_files() {
    let apps = static_site("ttl: 5m\n");
    let dir = apps.dir("site");
    write(&dir.join("app.js"), "plain");
    std::fs::write(dir.join("app.js.gz"), b"gzip bytes").unwrap();
    std::fs::write(dir.join("app.js.br"), b"brotli bytes").unwrap();
    let gw = Gateway::start(apps.options());
    let plain = gw.get("/site/app.js");
    assert_eq!(plain.text(), "plain", "{plain:?}\n{}", gw.logs());
    assert_eq!(plain.header("content-encoding"), None);
    for (accept, coding, body) in [
        ("gzip, deflate", Some("gzip"), "gzip bytes"),
        ("gzip, deflate, br", Some("br"), "brotli bytes"),
        ("br;q=0, gzip", Some("gzip"), "gzip bytes"),
        ("deflate", None, "plain"),
    ] {
        let r = gw.get_with("/site/app.js", &[("accept-encoding", accept)]);
        assert_eq!(r.status, 200, "{accept}: {r:?}");
        assert_eq!(r.header("content-encoding"), coding, "{accept}");
        assert_eq!(r.text(), body, "{accept}");
        assert_eq!(r.header("vary"), Some("Accept-Encoding"), "{accept}");
        assert!(r.header("content-type").unwrap().contains("javascript"));
    }
    let gz = gw.get_with("/site/app.js", &[("accept-encoding", "gzip")]);
    let etag = gz.header("etag").unwrap();
    assert_ne!(Some(etag), plain.header("etag"));
    let again = [("accept-encoding", "gzip"), ("if-none-match", etag)];
    assert_eq!(gw.get_with("/site/app.js", &again).status, 304);
    // A file without stored variants is sent as it is.
    let r = gw.get_with("/site/", &[("accept-encoding", "gzip, br")]);
    assert_eq!(
        (r.header("content-encoding"), r.header("vary")),
        (None, None)
    );
    // A variant that is a link out of the folder is not served.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("x.gz"), b"outside").unwrap();
    write(&dir.join("lib.js"), "lib");
    std::os::unix::fs::symlink(outside.path().join("x.gz"), dir.join("lib.js.gz")).unwrap();
    let r = gw.get_with("/site/lib.js", &[("accept-encoding", "gzip")]);
    assert_eq!(
        (r.text().as_str(), r.header("content-encoding")),
        ("lib", None)
    );
}

/// A static app's folders are served under their trailing slash, as by nginx: at `/site`
/// or `/site/docs` a page would resolve its relative links against the parent folder. A
/// command app answers `/hello` itself.
#[test]
fn a_static_folder_asked_for_without_its_slash_is_redirected() {
    let apps = static_site("ttl: 5m\n");
    write(&apps.dir("site").join("docs/index.html"), "docs");
    apps.add("hello", "ttl: 5m");
    let gw = Gateway::start(apps.options());
    for (path, to) in [
        ("/site", "/site/"),
        ("/site?lang=en", "/site/?lang=en"),
        ("/site/docs", "/site/docs/"),
        ("/site/docs?x=1", "/site/docs/?x=1"),
    ] {
        let r = gw.get(path);
        assert_eq!(r.status, 301, "{path}: {r:?}\n{}", gw.logs());
        assert_eq!(r.header("location"), Some(to), "{path}");
    }
    assert_eq!(gw.get("/site/docs/").text(), "docs");
    assert_eq!(gw.get("/site/").text(), "<h1>site</h1>");
    // `//site` is not the app's path (the worker got `/` for any `//site/...`, and
    // answered its entry page for every file).
    for path in ["//site", "//site/docs/", "///site/"] {
        let request = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        let got = common::raw(gw.port, request.as_bytes(), Duration::from_secs(10));
        assert!(got.starts_with("HTTP/1.1 404"), "{path}: {got}");
    }
    // Only GET and HEAD move; the static worker refuses the rest.
    assert_eq!(gw.send("POST", "/site", &[], Some(b"x")).status, 405);
    assert_eq!(gw.get("/hello").status, 200);
}

/// A static app serves content only: not its `.env` (the app's secrets), not a deployed
/// `.git`, not its own manifest; `.well-known` stays public.
#[test]
fn a_static_app_keeps_its_secrets() {
    let apps = static_site("ttl: 5m\nenv: {API_KEY: s3cret}\n");
    let dir = apps.dir("site");
    write(&dir.join(".env"), "API_KEY=s3cret");
    write(&dir.join(".git/config"), "[remote] s3cret");
    write(
        &dir.join(".well-known/security.txt"),
        "Contact: ops@example.org",
    );
    let gw = Gateway::start(apps.options());
    for path in ["/site/.env", "/site/manifest.yaml", "/site/%2eenv"] {
        let r = gw.get(path);
        assert_eq!((r.status, r.text().as_str()), (404, "Not Found"), "{path}");
    }
    // No extension: the SPA fallback answers, with the entry.
    let r = gw.get("/site/.git/config");
    assert_eq!((r.status, r.text().as_str()), (200, "<h1>site</h1>"));
    let r = gw.get("/site/.well-known/security.txt");
    assert_eq!(
        (r.status, r.text().as_str()),
        (200, "Contact: ops@example.org")
    );
}

/// The names of a process's threads, from /proc.
fn thread_names(pid: u64) -> Vec<String> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).unwrap();
    tasks
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect()
}

/// Timeouts of a second or more run on tokio's timer: Pingora's timer thread, which wakes
/// 100 times a second for the life of the process, is never started, neither by the
/// pool's health checks before the server runs nor by requests and their timeouts. With
/// several proxy threads too: each has a runtime, so a tokio timer, of its own. A static
/// worker runs one thread.
#[test]
fn no_timer_thread_with_one_or_several_proxy_threads() {
    let apps = static_site("ttl: 5m\npreload: true\n");
    for threads in [1, 2] {
        let gw = Gateway::start(apps.options().env("RUNTIME_THREADS", &threads.to_string()));
        for _ in 0..3 {
            let r = gw.get("/site/");
            assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
        }
        let names = thread_names(u64::from(gw.pid()));
        let timer = names.iter().any(|n| n == "Timer thread");
        assert!(!timer, "{threads} threads: {names:?}");
        let worker = of_app(&gw, "site")[0]["pid"].as_u64().unwrap();
        let names = thread_names(worker);
        assert!(names.len() > 1, "worker: {names:?}");
        assert!(
            !names.iter().any(|n| n == "Timer thread"),
            "worker: {names:?}"
        );
    }
}

#[test]
fn the_shell_serves_navigations_through_the_pool() {
    let apps = Apps::new(&[("echo", "ttl: 5m")]);
    let shell = apps.temp.path().join("shell");
    write(
        &shell.join("manifest.yaml"),
        &format!("command: [python3, {FIXTURE}]\nttl: 5m\n"),
    );
    let gw = Gateway::start(
        apps.options()
            .env("GATEWAY_SHELL_DIR", shell.to_str().unwrap()),
    );
    let r = gw.get_with("/dashboard", &[("sec-fetch-dest", "document")]);
    assert_eq!(r.status, 200, "{r:?}\n{}", gw.logs());
    let body = r.json();
    assert_eq!(body["path"], "/dashboard", "the shell sees the whole path");
    assert_eq!(body["headers"]["x-base"], "/");
    // Not a navigation: the app itself.
    let r = gw.get_with("/echo/data", &[("sec-fetch-dest", "empty")]);
    assert_eq!(r.json()["path"], "/data");
    assert_eq!(of_app(&gw, "shell").len(), 1);
}

fn live_pids(gw: &Gateway) -> Vec<u64> {
    workers(gw)
        .iter()
        .filter_map(|w| w["pid"].as_u64())
        .collect()
}

/// The app `name` behind a shell: its server, whose pid it answers with, is the worker
/// process's child, so the gateway's grandchild (as under `npm start`).
fn add_nested(apps: &Apps, name: &str) {
    apps.manifest(
        name,
        &format!("command: [sh, -c, \"python3 {FIXTURE}; true\"]\nttl: 5m\n"),
    );
}

/// Two workers, `one` preloaded and `two` nested; every pid: the two workers' and the
/// nested server's.
fn start_two_workers() -> (Apps, Gateway, Vec<u64>) {
    let apps = Apps::new(&[("one", "ttl: 5m\npreload: true")]);
    add_nested(&apps, "two");
    let gw = Gateway::start(apps.options());
    let server = pid_of(&gw.get("/two/"));
    let mut pids = eventually(Duration::from_secs(10), || {
        let p = live_pids(&gw);
        (p.len() == 2).then_some(p)
    })
    .expect("two workers");
    assert!(!pids.contains(&server), "two's server runs under its shell");
    pids.push(server);
    assert!(pids.iter().all(|p| alive(*p)));
    (apps, gw, pids)
}

/// The pid, as this test sees it, of the one process whose command line is `argv`.
fn pid_running(argv: &[&str]) -> Option<u64> {
    let wanted = argv.join("\0") + "\0";
    std::fs::read_dir("/proc").ok()?.find_map(|e| {
        let pid: u64 = e.ok()?.file_name().to_str()?.parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        (cmdline == wanted.as_bytes()).then_some(pid)
    })
}

#[test]
fn as_pid_1_the_gateway_reaps_what_a_crashed_worker_left() {
    // A container's command runs as PID 1, which inherits every orphan: the process a
    // crashed worker left, once killed, must not stay a zombie.
    require_tool!(
        common::unshare(&["--pid", "--fork", "--mount-proc"]),
        "unshare --pid (root)"
    );
    let apps = Apps::new(&[]);
    let marker = format!("300.{}", std::process::id());
    apps.manifest(
        "parent",
        &format!("command: [sh, -c, \"sleep {marker} & exec python3 {FIXTURE}\"]\nttl: 5m\n"),
    );
    let mut opts = apps.options();
    opts.wrapper = ["unshare", "--pid", "--mount-proc", "--kill-child"]
        .map(String::from)
        .to_vec();
    let gw = Gateway::start(opts);
    assert_eq!(gw.get("/parent/").status, 200);
    let sleeper = pid_running(&["sleep", &marker]).expect("the worker's child");
    let r = common::try_send(&common::agent(), "GET", &gw.url("/parent/die"), &[], None);
    assert!(r.is_err() || r.unwrap().status == 502);
    let proc_entry = PathBuf::from(format!("/proc/{sleeper}"));
    let reaped = eventually(Duration::from_secs(5), || {
        (!proc_entry.exists()).then_some(())
    });
    assert!(
        reaped.is_some(),
        "the worker's child is still there (alive: {})\n{}",
        alive(sleeper),
        gw.logs()
    );
}

#[test]
fn what_a_crashed_worker_started_goes_with_it() {
    let apps = Apps::new(&[]);
    add_nested(&apps, "nest");
    let gw = Gateway::start(apps.options());
    let server = pid_of(&gw.get("/nest/"));
    let shell = live_pids(&gw)[0];
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &shell.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    assert!(
        gone_within(server, 5),
        "the server outlived its crashed worker\n{}",
        gw.logs()
    );
}

#[test]
fn no_worker_survives_a_sigterm() {
    let (_apps, mut gw, pids) = start_two_workers();
    let (status, _) = gw.stop();
    assert!(status.success(), "{status}\n{}", gw.logs());
    for pid in pids {
        assert!(gone_within(pid, 5), "worker {pid} outlived the gateway");
    }
}

#[test]
fn no_worker_survives_a_sigkill() {
    let (_apps, mut gw, pids) = start_two_workers();
    gw.signal("KILL");
    gw.wait_exit(Duration::from_secs(10)).expect("killed");
    for pid in pids {
        assert!(
            gone_within(pid, 5),
            "worker {pid} outlived the killed gateway"
        );
    }
}
