//! Test harness: starts the real `buntime` binary on a free 127.0.0.1 port with a temp
//! dir and a clean environment, talks HTTP to it, and stops it with a signal.
#![allow(dead_code)]

pub mod helm;
pub mod sqld;
pub mod upstream;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::client::IntoClientRequest;

pub const BIN: &str = env!("CARGO_BIN_EXE_buntime");

/// A port nobody listens on right now, for a server the test starts later: the one the
/// gateway picks for a TCP worker, below the ephemeral range (a port from it can be taken
/// meanwhile by any outgoing connection, even one to that very port).
pub fn free_port() -> u16 {
    buntime_workers::process::free_port().unwrap()
}

/// An external tool for some tests: the path in `$var` when set, else `local` (relative
/// to the repository, where the scripts/*.sh installers put it) when it exists.
pub fn tool(var: &str, local: &str) -> Option<PathBuf> {
    if let Ok(p) = std::env::var(var)
        && !p.is_empty()
    {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(local);
    p.exists().then_some(p)
}

/// `Some` when `unshare` with these flags runs here (most of them need root), for
/// `require_tool!`.
pub fn unshare(flags: &[&str]) -> Option<()> {
    Command::new("unshare")
        .args(flags)
        .arg("true")
        .status()
        .is_ok_and(|s| s.success())
        .then_some(())
}

/// Returns early from a test when a tool it needs is missing, saying so loudly.
#[macro_export]
macro_rules! require_tool {
    ($found:expr, $missing:literal) => {
        if $found.is_none() {
            eprintln!("\n*** SKIPPED {}: {} ***\n", module_path!(), $missing);
            return;
        }
    };
}

/// How to start a gateway.
#[derive(Default, Clone)]
pub struct Options {
    pub env: Vec<(String, String)>,
    /// Contents of the config file passed with `--config`.
    pub config: Option<String>,
    /// Wait for `/api/health/ready` (not just for the port).
    pub wait_ready: bool,
    /// Share another gateway's temp dir (same data dir and plugin dirs).
    pub dir: Option<PathBuf>,
    /// A command that runs the gateway (`unshare ...`): `pid()` and `signal()` then
    /// reach that command, not the gateway.
    pub wrapper: Vec<String>,
}

impl Options {
    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }

    pub fn config(mut self, yaml: &str) -> Self {
        self.config = Some(yaml.into());
        self
    }

    pub fn ready(mut self) -> Self {
        self.wait_ready = true;
        self
    }
}

pub struct Gateway {
    child: Option<Child>,
    pub port: u16,
    pub dir: PathBuf,
    _temp: Option<tempfile::TempDir>,
    log_out: PathBuf,
    log_err: PathBuf,
    config_file: PathBuf,
    api: String,
    agent: ureq::Agent,
}

pub struct Resp {
    pub status: u16,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}), status {}: {}", self.status, self.text()))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

impl std::fmt::Debug for Resp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {:?} {}", self.status, self.headers, self.text())
    }
}

pub fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .allow_non_standard_methods(true)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// Sends one request with any method, headers and body.
pub fn send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Resp {
    try_send(agent, method, url, headers, body).unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

/// `send`, with a transport error returned rather than a panic.
pub fn try_send(
    agent: &ureq::Agent,
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<Resp, ureq::Error> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let mut resp = match body {
        Some(body) => agent.run(b.body(body.to_vec()).unwrap()),
        None => agent.run(b.body(()).unwrap()),
    }?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), v.to_str().unwrap_or("").to_string()))
        .collect();
    let body = resp.body_mut().read_to_vec().unwrap_or_default();
    Ok(Resp {
        status,
        headers,
        body,
    })
}

impl Gateway {
    pub fn start(opts: Options) -> Gateway {
        let (temp, dir) = match &opts.dir {
            Some(d) => (None, d.clone()),
            None => {
                let t = tempfile::tempdir().unwrap();
                let d = t.path().to_path_buf();
                (Some(t), d)
            }
        };
        for sub in ["data", "plugins", "apps"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        let port = free_port();
        let config = dir.join(format!("buntime-{port}.yaml"));
        std::fs::write(&config, opts.config.as_deref().unwrap_or("")).unwrap();
        let log_out = dir.join(format!("stdout-{port}.log"));
        let log_err = dir.join(format!("stderr-{port}.log"));
        let mut cmd = match opts.wrapper.split_first() {
            Some((program, args)) => {
                let mut c = Command::new(program);
                c.args(args).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .current_dir(&dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("PORT", port.to_string())
            .env("RUNTIME_DATA_DIR", dir.join("data"))
            .env("RUNTIME_PLUGIN_DIRS", dir.join("plugins"))
            .env("RUNTIME_WORKER_DIRS", dir.join("apps"))
            .env("RUNTIME_LOG_LEVEL", "debug")
            .env("RUNTIME_SHUTDOWN_GRACE", "10s")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log_out).unwrap())
            .stderr(std::fs::File::create(&log_err).unwrap());
        for (k, v) in &opts.env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("start buntime");
        // The API base as the gateway derives it; the harness polls health paths only,
        // which no rate limit counts by default.
        let prefix = opts
            .env
            .iter()
            .rev()
            .find(|(k, _)| k == "RUNTIME_API_PREFIX")
            .map(|(_, v)| v.trim().trim_matches('/').to_string())
            .unwrap_or_default();
        let api = if prefix.is_empty() {
            "/api".to_string()
        } else {
            format!("/{prefix}/api")
        };
        let mut gw = Gateway {
            child: Some(child),
            port,
            dir,
            _temp: temp,
            log_out,
            log_err,
            config_file: config,
            api,
            agent: agent(),
        };
        gw.wait_up(opts.wait_ready);
        gw
    }

    fn wait_up(&mut self, ready: bool) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "buntime exited during start-up ({status}):\n{}",
                    self.logs()
                );
            }
            // Refused means not listening yet; an answer from the health route itself is
            // the proof that it is.
            let ok = |path: &str| {
                try_send(&self.agent, "GET", &self.url(path), &[], None)
                    .is_ok_and(|r| r.status == 200)
            };
            if ok(&self.api("/health/live")) && (!ready || ok(&self.api("/health/ready"))) {
                return;
            }
            if Instant::now() > deadline {
                panic!("buntime did not come up within 60 s:\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{}", self.port, path)
    }

    /// The runtime API base this gateway reported (`/api`, `/_/api`).
    pub fn api(&self, rest: &str) -> String {
        format!("{}{}", self.api, rest)
    }

    pub fn get(&self, path: &str) -> Resp {
        send(&self.agent, "GET", &self.url(path), &[], None)
    }

    pub fn get_with(&self, path: &str, headers: &[(&str, &str)]) -> Resp {
        send(&self.agent, "GET", &self.url(path), headers, None)
    }

    pub fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        send(&self.agent, method, &self.url(path), headers, body)
    }

    /// Sends a JSON body.
    pub fn json(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &Value) -> Resp {
        let mut h = headers.to_vec();
        h.push(("content-type", "application/json"));
        let bytes = serde_json::to_vec(body).unwrap();
        self.send(method, path, &h, Some(&bytes))
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// A raw connection to the gateway, whose reads give up after 10 s.
    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{sig}"), &self.pid().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{sig} failed");
    }

    /// Waits for the process to exit; `None` if it is still running after `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn is_running(&mut self) -> bool {
        self.child.as_mut().unwrap().try_wait().unwrap().is_none()
    }

    /// SIGTERM, then the exit status and how long it took.
    pub fn stop(&mut self) -> (ExitStatus, Duration) {
        let t = Instant::now();
        self.signal("TERM");
        let status = self
            .wait_exit(Duration::from_secs(30))
            .unwrap_or_else(|| panic!("buntime did not exit after SIGTERM:\n{}", self.logs()));
        (status, t.elapsed())
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.log_out).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log_err).unwrap_or_default()
    }

    pub fn logs(&self) -> String {
        format!(
            "--- stdout ---\n{}\n--- stderr ---\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// Replaces the config file this gateway was started with (then send SIGHUP).
    pub fn write_config(&self, yaml: &str) {
        std::fs::write(&self.config_file, yaml).unwrap();
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.join(rel)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take()
            && child.try_wait().ok().flatten().is_none()
        {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Writes `request` on a fresh connection and returns everything read until the server
/// closes or `timeout` passes.
pub fn raw(port: u16, request: &[u8], timeout: Duration) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(timeout)).unwrap();
    s.write_all(request).unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 8192];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A memory figure of `/proc/<pid>/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u64, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("{field} in /proc/{pid}/status"))
}

/// What `count` idle connections to `address` (never sent a byte) add to the resident
/// memory of the process `pid` that accepts them, in KiB per connection.
pub fn kib_per_idle_connection(pid: u64, address: &str, count: usize) -> u64 {
    let fds = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    };
    let before_fds = fds();
    let before = status_kib(pid, "VmRSS");
    let idle: Vec<TcpStream> = (0..count)
        .map(|_| TcpStream::connect(address).unwrap())
        .collect();
    // One fewer: a connection the gateway pooled to this process before (a worker's) is
    // closed after 1 s idle, which may fall in between.
    let accepted = eventually(Duration::from_secs(10), || {
        (fds() + 1 >= before_fds + count).then_some(())
    });
    assert!(accepted.is_some(), "{pid} did not accept them all");
    std::thread::sleep(Duration::from_millis(500));
    let each = (status_kib(pid, "VmRSS") - before) / count as u64;
    drop(idle);
    each
}

/// Runs `buntime check` with a config file and environment; returns (success, stderr+stdout).
pub fn check(config: Option<&str>, env: &[(&str, &str)]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("check").current_dir(dir.path()).env_clear();
    cmd.env("PATH", std::env::var("PATH").unwrap_or_default());
    cmd.env("RUNTIME_PLUGIN_DIRS", dir.path().join("plugins"));
    // A worker dir that exists, as `serve`'s harness gives: no test checks for the
    // warning that none does, but for its own.
    cmd.env("RUNTIME_WORKER_DIRS", dir.path());
    if let Some(text) = config {
        let p = dir.path().join("c.yaml");
        std::fs::write(&p, text).unwrap();
        cmd.arg("--config").arg(p);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A WebSocket to `path` through the gateway, its handshake checked.
pub fn ws_connect(port: u16, path: &str) -> tungstenite::WebSocket<TcpStream> {
    let stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut req = format!("ws://127.0.0.1:{port}{path}")
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "https://app.example".parse().unwrap());
    let (ws, resp) = tungstenite::client(req, stream).unwrap_or_else(|e| panic!("{path}: {e}"));
    assert_eq!(resp.status(), 101);
    // The 101 is the connection's last HTTP answer: it carries the gateway's headers.
    let headers = resp.headers();
    assert!(headers.contains_key("x-request-id"), "{headers:?}");
    assert!(headers.contains_key("ratelimit-remaining"), "{headers:?}");
    assert_eq!(headers["access-control-allow-origin"], "*");
    ws
}

/// One TCP socket of this machine, from /proc/net/tcp and tcp6.
#[derive(Debug)]
pub struct TcpSocket {
    pub local_port: u16,
    pub remote_port: u16,
    /// A keepalive timer runs (`tr` 2 on an established socket: `SO_KEEPALIVE` is set,
    /// and nothing sent waits for an acknowledgement, which shows as `tr` 1).
    pub keepalive: bool,
}

/// The established TCP sockets of this machine.
pub fn tcp_sockets() -> Vec<TcpSocket> {
    let port = |addr: &str| u16::from_str_radix(addr.rsplit(':').next().unwrap_or(""), 16).ok();
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|f| std::fs::read_to_string(f).ok())
        .flat_map(|text| {
            text.lines()
                .skip(1)
                .filter_map(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    (f.get(3) == Some(&"01")).then_some(())?;
                    Some(TcpSocket {
                        local_port: port(f.get(1)?)?,
                        remote_port: port(f.get(2)?)?,
                        keepalive: f.get(5)?.starts_with("02:"),
                    })
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Whether the socket on `local_port` connected to `remote_port` has TCP keepalive on;
/// `None` when there is no such socket.
pub fn keepalive_on(local_port: u16, remote_port: u16) -> Option<bool> {
    tcp_sockets()
        .into_iter()
        .find(|s| s.local_port == local_port && s.remote_port == remote_port)
        .map(|s| s.keepalive)
}

/// Polls `f` until it returns `Some`, for up to `timeout`.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn write(path: &Path, text: &str) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(path, text).unwrap();
}

/// Where a test's database lives.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Local,
    Remote,
}

/// A gateway on a backend, and the sqld it talks to (kept alive with it).
pub struct Env {
    pub gw: Gateway,
    pub _sqld: Option<sqld::Sqld>,
}

impl Env {
    /// Options for another gateway on the same database: the same data dir, or the same
    /// sqld.
    pub fn same_database(&self) -> Options {
        let mut opts = Options::default().ready();
        match &self._sqld {
            Some(s) => opts = opts.env("DATABASE_LIBSQL_URL", &s.url()),
            None => opts.dir = Some(self.gw.dir.clone()),
        }
        opts
    }
}

/// Starts a ready gateway whose database is a local file or a fresh sqld.
pub fn start_on(backend: Backend, opts: Options) -> Env {
    match backend {
        Backend::Local => Env {
            gw: Gateway::start(opts.ready()),
            _sqld: None,
        },
        Backend::Remote => {
            let s = sqld::Sqld::start(&[]);
            let gw = Gateway::start(opts.env("DATABASE_LIBSQL_URL", &s.url()).ready());
            Env { gw, _sqld: Some(s) }
        }
    }
}

/// One test per backend, `name::local` and `name::sqld`, for `fn name(b: Backend)`; the
/// sqld one skips loudly when no sqld is installed.
#[macro_export]
macro_rules! on_both {
    ($name:ident) => {
        mod $name {
            #[test]
            fn local() {
                super::$name($crate::common::Backend::Local);
            }
            #[test]
            fn sqld() {
                $crate::require_sqld!();
                super::$name($crate::common::Backend::Remote);
            }
        }
    };
}
