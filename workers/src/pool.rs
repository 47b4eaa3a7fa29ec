//! The worker pool (SPEC 8.3). A supervisor on its own thread spawns, probes, recycles and
//! stops worker processes; the request path only reads `ArcSwap` snapshots, and awaits
//! only while its app's first worker is starting.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use nix::sys::signal::Signal;
use pingora::lb::Backend;
use pingora::lb::health_check::{HealthCheck, HttpHealthCheck};
use serde_json::{Value as Json, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};

use crate::discovery::{Discovery, Located};
use crate::manifest::{self, AppManifest, Listen};
use crate::process;

/// How often ready workers are probed, and how many failures in a row replace one.
const PROBE_EVERY: Duration = Duration::from_secs(10);
const PROBE_FAILURES: u32 = 3;
/// Readiness probes while a worker starts.
const STARTING_PROBE_EVERY: Duration = Duration::from_millis(100);
/// Restart backoff after crashes: 1 s doubling to 60 s.
const BACKOFF_FIRST: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// Stopped workers listed by `/api/workers`.
const HISTORY: usize = 1000;
/// An invalid manifest is read again after this long (a fix needs no restart).
const MANIFEST_RECHECK: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct PoolOptions {
    pub dirs: Vec<PathBuf>,
    /// First path segments that never name an app.
    pub reserved: Vec<String>,
    pub size: usize,
    pub ephemeral_concurrency: usize,
    pub ephemeral_queue: usize,
    /// This binary: static apps run `<exe> worker static`.
    pub exe: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum State {
    Starting = 0,
    Ready = 1,
    Draining = 2,
    Stopped = 3,
    Crashed = 4,
}

impl State {
    fn from(v: u8) -> State {
        match v {
            0 => State::Starting,
            1 => State::Ready,
            2 => State::Draining,
            3 => State::Stopped,
            _ => State::Crashed,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

impl Address {
    pub fn describe(&self) -> String {
        match self {
            Address::Tcp(a) => a.to_string(),
            Address::Unix(p) => format!("unix:{}", p.display()),
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn iso(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// A folder's device and inode, through symlinks: another folder swapped in at the same
/// path (a release symlink repointed, a folder renamed over) has another.
type FolderId = (u64, u64);

fn folder_id(dir: &Path) -> Option<FolderId> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir)
        .ok()
        .filter(|m| m.is_dir())
        .map(|m| (m.dev(), m.ino()))
}

// === impl Worker ===

#[derive(Debug)]
pub struct Worker {
    pub id: String,
    pub app: String,
    pub version: String,
    pub dir: PathBuf,
    pub address: Address,
    /// Serves one request only (an app with `ttl: 0`).
    pub ephemeral: bool,
    /// Crash restarts of this worker's slot before it.
    pub restarts: u32,
    slot: usize,
    pid: AtomicU32,
    state: AtomicU8,
    inflight: AtomicUsize,
    requests: AtomicU64,
    errors: AtomicU64,
    started_at: u64,
    last_used: AtomicU64,
    probe_failures: AtomicU32,
    stopping: AtomicBool,
    /// Past `maxRequests`: it keeps serving until its replacement is ready.
    retiring: AtomicBool,
    /// Why it was asked to stop; decides whether it is replaced.
    stop_reason: Mutex<&'static str>,
    /// The app folder it was started in (see `Supervisor::tick`).
    folder: Option<FolderId>,
}

impl Worker {
    pub fn state(&self) -> State {
        State::from(self.state.load(Ordering::Acquire))
    }

    fn set_state(&self, s: State) {
        self.state.store(s as u8, Ordering::Release);
    }

    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Acquire)
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// A request through this worker failed (connect, timeout, reset, 5xx).
    pub fn count_error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    fn idle_for(&self) -> Duration {
        Duration::from_millis(now_ms().saturating_sub(self.last_used.load(Ordering::Relaxed)))
    }

    /// How long ago it last served a request; `None` if it never did (its `last_used`
    /// then holds its start).
    fn used_for(&self) -> Option<Duration> {
        (self.requests.load(Ordering::Relaxed) > 0).then(|| self.idle_for())
    }

    /// The state `/api/workers` reports: `idle` is a ready worker unused for `idleTimeout`.
    fn label(&self, idle_timeout: Duration) -> &'static str {
        match self.state() {
            State::Ready if self.inflight() == 0 && self.idle_for() >= idle_timeout => "idle",
            State::Starting => "starting",
            State::Ready => "ready",
            State::Draining => "draining",
            State::Stopped => "stopped",
            State::Crashed => "crashed",
        }
    }

    fn to_json(&self, idle_timeout: Duration) -> Json {
        let state = self.label(idle_timeout);
        let pid = self.pid();
        json!({
            "id": self.id,
            "app": self.app,
            "version": self.version,
            "dir": self.dir.display().to_string(),
            "state": state,
            "pid": if pid == 0 || matches!(self.state(), State::Stopped | State::Crashed) { Json::Null } else { json!(pid) },
            "address": self.address.describe(),
            "requests": self.requests.load(Ordering::Relaxed),
            "errors": self.errors.load(Ordering::Relaxed),
            "restarts": self.restarts,
            "startedAt": iso(self.started_at),
            "lastUsedAt": iso(self.last_used.load(Ordering::Relaxed)),
        })
    }
}

// === impl App ===

struct Loaded {
    manifest: Result<Arc<AppManifest>, String>,
    at: Instant,
}

/// One app folder and its workers.
pub struct App {
    pub name: String,
    pub version: String,
    pub dir: PathBuf,
    loaded: ArcSwap<Loaded>,
    /// Live workers (starting, ready, draining); the request path reads this.
    workers: ArcSwap<Vec<Arc<Worker>>>,
    next: AtomicUsize,
    /// Bumped whenever a worker of this app changes state; waiters look again.
    changed: watch::Sender<u64>,
    /// The last start failure, answered at once until the backoff ends.
    failure: Mutex<Option<(Instant, String)>>,
    crashes_in_row: AtomicU32,
    backoff_until: Mutex<Option<Instant>>,
    slot_restarts: Mutex<Vec<u32>>,
    pub starts: AtomicU64,
    pub crashes: AtomicU64,
    gate: Arc<Semaphore>,
    queued: AtomicUsize,
    /// When a request last waited for a worker of this app (none was ready), in ms since
    /// the epoch as `Worker::last_used`; 0 if none has.
    asked_at: AtomicU64,
    /// A worker of this app was found listening beyond loopback (`exposure.rs`): said once.
    exposed_said: AtomicBool,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "App({}@{} in {})",
            self.name,
            self.version,
            self.dir.display()
        )
    }
}

/// Reads an app's manifest; keys it does not read, or why it is invalid, are named in a
/// warning when they differ from the `before` read's (a manifest is read again up to once
/// a second). An app deployed while the gateway runs is named here, on its first request.
fn read_manifest(
    app: &str,
    dir: &Path,
    before: Option<&Result<Arc<AppManifest>, String>>,
) -> Result<Arc<AppManifest>, String> {
    let fresh = manifest::load(dir).map(Arc::new);
    match &fresh {
        Ok(m)
            if before
                .and_then(|b| b.as_ref().ok())
                .is_none_or(|b| b.ignored != m.ignored) =>
        {
            if let Some(ignored) = m.ignored_warning() {
                log::warn!("app {app}: {ignored}");
            }
        }
        Err(why) if before.is_none_or(|b| b.as_ref().err() != Some(why)) => {
            log::warn!(
                "app {app}: invalid manifest: {why}; its requests answer 500 until it is fixed"
            );
        }
        _ => {}
    }
    fresh
}

impl App {
    fn new(loc: &Located, ephemeral_concurrency: usize) -> App {
        App {
            name: loc.name.clone(),
            version: loc.version.clone(),
            dir: loc.dir.clone(),
            loaded: ArcSwap::from_pointee(Loaded {
                manifest: read_manifest(&loc.name, &loc.dir, None),
                at: Instant::now(),
            }),
            workers: ArcSwap::from_pointee(Vec::new()),
            next: AtomicUsize::new(0),
            changed: watch::Sender::new(0),
            failure: Mutex::new(None),
            crashes_in_row: AtomicU32::new(0),
            backoff_until: Mutex::new(None),
            slot_restarts: Mutex::new(Vec::new()),
            starts: AtomicU64::new(0),
            crashes: AtomicU64::new(0),
            gate: Arc::new(Semaphore::new(ephemeral_concurrency.max(1))),
            queued: AtomicUsize::new(0),
            asked_at: AtomicU64::new(0),
            exposed_said: AtomicBool::new(false),
        }
    }

    /// The manifest, or why it is invalid (`Invalid app manifest: <detail>`).
    pub fn manifest(&self) -> Result<Arc<AppManifest>, String> {
        let loaded = self.loaded.load();
        // An invalid manifest, or one of an app with no worker, is read again at most
        // once a second: a fix or a change applies without a restart.
        if loaded.at.elapsed() >= MANIFEST_RECHECK
            && (loaded.manifest.is_err() || self.workers.load().is_empty())
        {
            let fresh = read_manifest(&self.name, &self.dir, Some(&loaded.manifest));
            self.loaded.store(Arc::new(Loaded {
                manifest: fresh.clone(),
                at: Instant::now(),
            }));
            return fresh;
        }
        loaded.manifest.clone()
    }

    /// Reads the manifest again now, whether or not the app has workers.
    fn reload_manifest(&self) {
        let before = self.loaded.load();
        self.loaded.store(Arc::new(Loaded {
            manifest: read_manifest(&self.name, &self.dir, Some(&before.manifest)),
            at: Instant::now(),
        }));
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    fn add(&self, w: Arc<Worker>) {
        self.workers.rcu(|ws| {
            let mut next = (**ws).clone();
            next.push(w.clone());
            next
        });
        self.notify();
    }

    fn remove(&self, id: &str) {
        self.workers.rcu(|ws| {
            ws.iter()
                .filter(|w| w.id != id)
                .cloned()
                .collect::<Vec<_>>()
        });
        self.notify();
    }

    /// A ready, shared worker, round-robin; never one that is starting or draining.
    fn pick(&self, exclude: Option<&str>) -> Option<Arc<Worker>> {
        let ws = self.workers.load();
        let usable = |w: &&Arc<Worker>| {
            !w.ephemeral && w.state() == State::Ready && Some(w.id.as_str()) != exclude
        };
        let count = ws.iter().filter(usable).count();
        if count == 0 {
            return None;
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed) % count;
        ws.iter().filter(usable).nth(n).cloned()
    }

    fn live_shared(&self) -> usize {
        self.workers
            .load()
            .iter()
            .filter(|w| !w.ephemeral && matches!(w.state(), State::Starting | State::Ready))
            .count()
    }

    /// Whether a worker of this app that stopped (crashed, failed its probes, recycled) is
    /// replaced: the app preloads, or it was asked for or used within its `ttl`
    /// (`used_for`: how long ago the stopped worker last served, if it ever did). Past
    /// that the next request starts it again, so an app that keeps failing while nobody
    /// asks for it is not started over every minute for the life of the gateway.
    fn wanted(&self, m: &AppManifest, used_for: Option<Duration>) -> bool {
        let asked = match self.asked_at.load(Ordering::Relaxed) {
            0 => None,
            at => Some(Duration::from_millis(now_ms().saturating_sub(at))),
        };
        m.preload
            || [asked, used_for]
                .into_iter()
                .flatten()
                .any(|ago| ago < m.ttl)
    }

    fn in_backoff(&self) -> Option<Duration> {
        let until = *self.backoff_until.lock().unwrap_or_else(|e| e.into_inner());
        until.and_then(|u| u.checked_duration_since(Instant::now()))
    }

    fn recent_failure(&self) -> Option<String> {
        let f = self.failure.lock().unwrap_or_else(|e| e.into_inner());
        f.as_ref()
            .filter(|_| self.in_backoff().is_some())
            .map(|(_, why)| why.clone())
    }

    /// Backs the app off after a failure. A failed start is also answered (503) to
    /// requests until the backoff ends; after a crash of a ready worker they wait for its
    /// replacement instead.
    fn fail(&self, why: String, start_failed: bool) {
        log::warn!("app {}: {why}", self.name);
        if start_failed {
            *self.failure.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), why));
        }
        let n = self.crashes_in_row.fetch_add(1, Ordering::AcqRel);
        let delay = BACKOFF_FIRST.saturating_mul(1 << n.min(6)).min(BACKOFF_MAX);
        *self.backoff_until.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(Instant::now() + delay);
        self.notify();
    }

    /// Workers of this app by state, for `buntime_workers{app,state}`.
    pub fn states(&self) -> Vec<(&'static str, usize)> {
        let ws = self.workers.load();
        let idle = self
            .manifest()
            .map_or(Duration::from_secs(60), |m| m.idle_timeout);
        let mut counts: HashMap<&'static str, usize> = HashMap::new();
        for w in ws.iter() {
            *counts.entry(w.label(idle)).or_default() += 1;
        }
        counts.into_iter().collect()
    }
}

// === leases ===

/// A request's claim on a worker: counted in flight until dropped (with the request).
pub struct Lease {
    pub worker: Arc<Worker>,
    /// Set when the supervisor must hear of the release (a one-request worker, or one at
    /// `maxRequests`); other releases cost no cross-thread wake-up.
    tx: Option<mpsc::UnboundedSender<Cmd>>,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Lease {
    fn new(
        worker: Arc<Worker>,
        pool: &Pool,
        max_requests: u64,
        permit: Option<OwnedSemaphorePermit>,
    ) -> Lease {
        worker.inflight.fetch_add(1, Ordering::AcqRel);
        let served = worker.requests.fetch_add(1, Ordering::Relaxed) + 1;
        worker.last_used.store(now_ms(), Ordering::Relaxed);
        let tell = worker.ephemeral || served >= max_requests;
        Lease {
            worker,
            tx: tell.then(|| pool.tx.clone()),
            _permit: permit,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.worker.last_used.store(now_ms(), Ordering::Relaxed);
        self.worker.inflight.fetch_sub(1, Ordering::AcqRel);
        if let Some(tx) = &self.tx {
            let _ = tx.send(Cmd::Released(self.worker.clone()));
        }
    }
}

/// Why a request gets no worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// 500 `Invalid app manifest: <detail>`
    Invalid(String),
    /// 503 `App unavailable`, with Retry-After seconds.
    Down { why: String, retry_after: u64 },
}

// === impl Pool ===

enum Cmd {
    /// Bring the app up to its `instances`.
    Start(Arc<App>),
    /// A dedicated worker for one request of a `ttl: 0` app.
    Ephemeral(Arc<App>, oneshot::Sender<Result<Arc<Worker>, String>>),
    Ready(Arc<Worker>),
    Released(Arc<Worker>),
    Exited(Arc<Worker>, String),
    /// The readiness wait gave up, or probes failed: replace it.
    Failed(Arc<Worker>, String),
    Restart(Arc<App>),
    Shutdown(std::sync::mpsc::Sender<()>),
}

pub struct Pool {
    opts: PoolOptions,
    discovery: Discovery,
    apps: ArcSwap<HashMap<PathBuf, Arc<App>>>,
    /// Stopped and crashed workers, newest last.
    history: Mutex<VecDeque<Json>>,
    tx: mpsc::UnboundedSender<Cmd>,
    next_id: AtomicU64,
    run_dir: PathBuf,
    reaper: process::Reaper,
}

impl Pool {
    /// Starts the supervisor thread; apps with `preload: true` start at once.
    pub fn start(mut opts: PoolOptions) -> std::io::Result<Arc<Pool>> {
        // Workers run inside their app folder: every path handed to them must be absolute.
        opts.dirs = opts
            .dirs
            .iter()
            .map(std::path::absolute)
            .collect::<std::io::Result<_>>()?;
        for dir in opts.dirs.iter().filter(|d| !d.is_dir()) {
            // Not an error, nor a warning: the default list names dirs a deployment may
            // not have (the chart mounts /data/apps only), and a dir made later is
            // searched from then on. But a typo should be visible at the default level.
            log::info!(
                "worker dir {} is not a directory (yet): no app is found there until it is",
                dir.display()
            );
        }
        // Workers' unix sockets. A fresh folder of a name nobody could foresee, only ours
        // (0700): under a fixed `/tmp/buntime-<pid>`, another local user could have made
        // that folder first and put sockets of theirs where the gateway looks for its
        // workers'.
        let run_dir = tempfile::Builder::new()
            .prefix(&format!("buntime-{}-", std::process::id()))
            .permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .tempdir()?
            .keep();
        let (tx, rx) = mpsc::unbounded_channel();
        let reaper = process::Reaper::start(&opts.exe)?;
        let pool = Arc::new(Pool {
            reaper,
            discovery: Discovery::new(opts.dirs.clone(), opts.reserved.clone()),
            opts,
            apps: ArcSwap::from_pointee(HashMap::new()),
            history: Mutex::new(VecDeque::new()),
            tx,
            next_id: AtomicU64::new(1),
            run_dir,
        });
        let supervisor = pool.clone();
        std::thread::Builder::new()
            .name("worker-pool".into())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("pool runtime");
                rt.block_on(supervise(supervisor, rx));
            })?;
        // Every version's own manifest counts, not only the one a bare name picks. Only
        // preloading apps join the pool here: the others do on their first request, whose
        // read of the manifest names what is wrong with it (the start-up warnings have
        // named it already for folders there at start).
        for loc in pool.discovery.every_version() {
            if manifest::load(&loc.dir).is_ok_and(|m| m.preload) {
                let _ = pool.tx.send(Cmd::Start(pool.app_at(&loc)));
            }
        }
        Ok(pool)
    }

    /// The app a first path segment names (`hello`, `hello@1.2`).
    pub fn app(&self, segment: &str) -> Option<Arc<App>> {
        let loc = self.discovery.find(segment)?;
        Some(self.app_at(&loc))
    }

    /// The app in a folder found some other way (the shell).
    pub fn app_at(&self, loc: &Located) -> Arc<App> {
        if let Some(a) = self.apps.load().get(&loc.dir) {
            return a.clone();
        }
        let mut made = None;
        self.apps.rcu(|apps| {
            let mut next = (**apps).clone();
            let app = next
                .entry(loc.dir.clone())
                .or_insert_with(|| Arc::new(App::new(loc, self.opts.ephemeral_concurrency)))
                .clone();
            made = Some(app);
            next
        });
        made.expect("set in rcu")
    }

    pub fn discovery(&self) -> &Discovery {
        &self.discovery
    }

    /// A worker for one request: a ready one at once, else wait (up to `startTimeout`)
    /// for one to start. `exclude`: a worker that just refused a connection.
    pub async fn checkout(
        &self,
        app: &Arc<App>,
        exclude: Option<&str>,
    ) -> Result<Lease, Unavailable> {
        let m = app.manifest().map_err(Unavailable::Invalid)?;
        if m.ephemeral() {
            return self.checkout_ephemeral(app, &m).await;
        }
        if let Some(w) = app.pick(exclude) {
            return Ok(Lease::new(w, self, m.max_requests, None));
        }
        app.asked_at.store(now_ms(), Ordering::Relaxed);
        let deadline = tokio::time::Instant::now() + m.start_timeout;
        let mut changes = app.changed.subscribe();
        loop {
            if let Some(w) = app.pick(exclude) {
                return Ok(Lease::new(w, self, m.max_requests, None));
            }
            if let Some(why) = app.recent_failure() {
                return Err(down(why, app.in_backoff()));
            }
            if let Some(wait) = app.in_backoff()
                && tokio::time::Instant::now() + wait >= deadline
            {
                return Err(down(
                    "the app keeps crashing; it restarts after a backoff".into(),
                    Some(wait),
                ));
            }
            if app.live_shared() < m.instances {
                let _ = self.tx.send(Cmd::Start(app.clone()));
            }
            match tokio::time::timeout_at(deadline, changes.changed()).await {
                Ok(Ok(())) => continue,
                _ => {
                    return Err(down(
                        format!("no worker ready within {:?}", m.start_timeout),
                        None,
                    ));
                }
            }
        }
    }

    async fn checkout_ephemeral(
        &self,
        app: &Arc<App>,
        m: &AppManifest,
    ) -> Result<Lease, Unavailable> {
        if let Some(why) = app.recent_failure() {
            return Err(down(why, app.in_backoff()));
        }
        if app.queued.load(Ordering::Acquire) >= self.opts.ephemeral_queue {
            return Err(down(
                "the request queue is full".into(),
                Some(Duration::from_secs(1)),
            ));
        }
        app.queued.fetch_add(1, Ordering::AcqRel);
        let permit = app.gate.clone().acquire_owned().await;
        app.queued.fetch_sub(1, Ordering::AcqRel);
        let permit = permit.map_err(|_| down("the pool is shutting down".into(), None))?;
        let (reply, wait) = oneshot::channel();
        let _ = self.tx.send(Cmd::Ephemeral(app.clone(), reply));
        let worker = match tokio::time::timeout(m.start_timeout, wait).await {
            Ok(Ok(Ok(w))) => w,
            Ok(Ok(Err(why))) => return Err(down(why, app.in_backoff())),
            _ => {
                return Err(down(
                    format!("no worker ready within {:?}", m.start_timeout),
                    None,
                ));
            }
        };
        Ok(Lease::new(worker, self, m.max_requests, Some(permit)))
    }

    /// Replaces an app's workers (manifest read again; each ready one serves until its
    /// replacement is ready, `Cmd::Restart`); false if unknown. A
    /// bare name restarts every version of it that has workers, as `/api/workers` lists
    /// them all under that name (`hello@1` and `hello@2` both as `hello`); `hello@1`, the
    /// version it picks.
    pub fn restart(&self, segment: &str) -> bool {
        let Some(loc) = self.discovery.find(segment) else {
            return false;
        };
        let mut apps = vec![self.app_at(&loc)];
        if !segment.contains('@') {
            apps.extend(
                self.apps
                    .load()
                    .values()
                    .filter(|a| a.name == loc.name && a.dir != loc.dir)
                    .filter(|a| !a.workers.load().is_empty() && a.dir.is_dir())
                    .cloned(),
            );
        }
        for app in apps {
            app.reload_manifest();
            let _ = self.tx.send(Cmd::Restart(app));
        }
        true
    }

    /// Every worker process, live ones then stopped ones (SPEC 8.3 fields).
    pub fn list(&self) -> Vec<Json> {
        let mut out = Vec::new();
        for app in self.apps.load().values() {
            let idle = app
                .manifest()
                .map_or(Duration::from_secs(60), |m| m.idle_timeout);
            out.extend(app.workers.load().iter().map(|w| w.to_json(idle)));
        }
        out.extend(
            self.history
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .cloned(),
        );
        out
    }

    pub fn apps(&self) -> Vec<Arc<App>> {
        self.apps.load().values().cloned().collect()
    }

    /// Stops every worker (SIGTERM, SIGKILL after 10 s); returns when all are gone or the
    /// grace ran out.
    pub fn shutdown(&self) {
        let (done, wait) = std::sync::mpsc::channel();
        if self.tx.send(Cmd::Shutdown(done)).is_ok() {
            let _ = wait.recv_timeout(process::STOP_GRACE + Duration::from_secs(2));
        }
        let _ = std::fs::remove_dir_all(&self.run_dir);
    }

    fn live_total(&self) -> usize {
        self.apps
            .load()
            .values()
            .map(|a| {
                a.workers
                    .load()
                    .iter()
                    .filter(|w| {
                        matches!(w.state(), State::Starting | State::Ready | State::Draining)
                    })
                    .count()
            })
            .sum()
    }

    fn archive(&self, w: &Worker) {
        let idle = Duration::from_secs(60);
        let mut h = self.history.lock().unwrap_or_else(|e| e.into_inner());
        h.push_back(w.to_json(idle));
        while h.len() > HISTORY {
            h.pop_front();
        }
    }
}

/// A replacement for a recycled worker failed to start: the old one, still serving, may
/// be recycled again later.
fn unretire(app: &App, failed: &Worker) {
    for w in app.workers.load().iter() {
        if w.slot == failed.slot && w.id != failed.id {
            w.retiring.store(false, Ordering::Release);
        }
    }
}

/// Names, once per app, a worker whose port is open beyond this host: its requests
/// there skip the token check and the rate limit.
fn warn_if_exposed(app: &App, w: &Worker) {
    let Address::Tcp(addr) = &w.address else {
        return;
    };
    if app.exposed_said.load(Ordering::Relaxed) {
        return;
    }
    let open = crate::exposure::open_listeners(addr.port());
    if open.is_empty() || app.exposed_said.swap(true, Ordering::Relaxed) {
        return;
    }
    let on: Vec<String> = open.iter().map(|ip| format!("{ip}")).collect();
    log::warn!(
        "worker {} listens on {} port {}, not only 127.0.0.1: anyone who can reach this \
         host reaches app {} there, past the token check and the rate limit. Have it bind \
         127.0.0.1 (the HOST it is given; Node: server.listen(PORT, \"127.0.0.1\")) or use \
         listen: unix",
        w.id,
        on.join(" and "),
        addr.port(),
        app.name
    );
}

fn down(why: String, backoff: Option<Duration>) -> Unavailable {
    let retry_after = backoff.map_or(1, |d| d.as_secs().max(1));
    Unavailable::Down { why, retry_after }
}

// === supervisor ===

/// HTTP probes, one checker per health path.
#[derive(Default)]
struct Prober {
    checks: Mutex<HashMap<String, Arc<HttpHealthCheck>>>,
}

impl Prober {
    fn check_for(&self, path: &str) -> Arc<HttpHealthCheck> {
        let mut checks = self.checks.lock().unwrap_or_else(|e| e.into_inner());
        checks
            .entry(path.to_string())
            .or_insert_with(|| {
                let mut c = HttpHealthCheck::new("localhost", false);
                if let Ok(uri) = path.parse() {
                    c.req.set_uri(uri);
                }
                c.peer_template.options.connection_timeout = Some(Duration::from_secs(1));
                c.peer_template.options.read_timeout = Some(Duration::from_secs(2));
                c.validator = Some(Box::new(|resp| {
                    if resp.status.as_u16() < 500 {
                        Ok(())
                    } else {
                        pingora::Error::e_explain(
                            pingora::ErrorType::InternalError,
                            "the worker answered 5xx",
                        )
                    }
                }));
                Arc::new(c)
            })
            .clone()
    }

    /// One HTTP GET of `path`: healthy when it answers below 500.
    async fn ok(&self, address: &Address, path: &str) -> bool {
        let addr = match address {
            Address::Tcp(a) => pingora::protocols::l4::socket::SocketAddr::Inet(*a),
            Address::Unix(p) => match std::os::unix::net::SocketAddr::from_pathname(p) {
                Ok(u) => pingora::protocols::l4::socket::SocketAddr::Unix(u),
                Err(_) => return false,
            },
        };
        let backend = Backend {
            addr,
            weight: 1,
            ext: Default::default(),
        };
        self.check_for(path).check(&backend).await.is_ok()
    }
}

struct Supervisor {
    pool: Arc<Pool>,
    tx: mpsc::UnboundedSender<Cmd>,
    probe: Arc<Prober>,
    shutting_down: bool,
}

async fn supervise(pool: Arc<Pool>, mut rx: mpsc::UnboundedReceiver<Cmd>) {
    let mut sup = Supervisor {
        tx: pool.tx.clone(),
        pool,
        probe: Arc::default(),
        shutting_down: false,
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last_probe = Instant::now();
    loop {
        tokio::select! {
            cmd = rx.recv() => match cmd {
                Some(cmd) => sup.handle(cmd),
                None => return,
            },
            _ = tick.tick() => {
                let probe_now = last_probe.elapsed() >= PROBE_EVERY;
                if probe_now {
                    last_probe = Instant::now();
                }
                sup.tick(probe_now);
            }
        }
    }
}

impl Supervisor {
    fn handle(&mut self, cmd: Cmd) {
        match cmd {
            Cmd::Start(app) => self.fill(&app),
            Cmd::Ephemeral(app, reply) => match self.spawn(&app, true, 0) {
                Ok(w) => self.await_ready(app, w, Some(reply)),
                Err(why) => {
                    app.fail(why.clone(), true);
                    let _ = reply.send(Err(why));
                }
            },
            Cmd::Ready(w) => {
                if let Some(app) = self.app_of(&w) {
                    app.crashes_in_row.store(0, Ordering::Release);
                    *app.failure.lock().unwrap_or_else(|e| e.into_inner()) = None;
                    app.notify();
                    // A recycled worker's replacement is up: now the old one drains.
                    let retired: Vec<Arc<Worker>> = app
                        .workers
                        .load()
                        .iter()
                        .filter(|o| {
                            o.id != w.id && o.slot == w.slot && o.retiring.load(Ordering::Acquire)
                        })
                        .cloned()
                        .collect();
                    for old in retired {
                        self.stop(&old, "recycled");
                    }
                }
            }
            Cmd::Released(w) => {
                let past_max = self
                    .app_of(&w)
                    .and_then(|a| a.manifest().ok())
                    .is_some_and(|m| w.requests.load(Ordering::Relaxed) >= m.max_requests);
                if w.ephemeral {
                    self.stop(&w, "done");
                } else if past_max {
                    self.recycle(&w, "reached maxRequests");
                }
            }
            Cmd::Exited(w, status) => self.exited(w, status),
            Cmd::Failed(w, why) => {
                if let Some(app) = self.app_of(&w) {
                    if w.state() == State::Starting {
                        unretire(&app, &w);
                    }
                    app.fail(why, w.state() == State::Starting);
                }
                self.stop(&w, "failed");
            }
            Cmd::Restart(app) => {
                // Cleared first: neither a replacement nor a fill starts during a backoff.
                *app.backoff_until.lock().unwrap_or_else(|e| e.into_inner()) = None;
                app.crashes_in_row.store(0, Ordering::Release);
                let running = !app.workers.load().is_empty();
                let instances = app.manifest().map_or(0, |m| m.instances);
                for w in app.workers.load().iter() {
                    // A ready worker serves on until its replacement (from the manifest
                    // just read again) is ready: a slow start keeps nobody waiting, and a
                    // replacement that fails leaves the app served. One-request workers
                    // finish theirs; the others (starting, past the new `instances`) stop.
                    if w.ephemeral {
                        continue;
                    }
                    if w.state() == State::Ready
                        && w.slot < instances
                        && !w.retiring.load(Ordering::Acquire)
                    {
                        self.recycle(w, "is restarted");
                    } else {
                        self.stop(w, "restart");
                    }
                }
                if running || app.manifest().is_ok_and(|m| app.wanted(&m, None)) {
                    self.fill(&app);
                }
            }
            Cmd::Shutdown(done) => {
                self.shutting_down = true;
                let workers: Vec<Arc<Worker>> = self
                    .pool
                    .apps
                    .load()
                    .values()
                    .flat_map(|a| a.workers.load().iter().cloned().collect::<Vec<_>>())
                    .collect();
                tokio::spawn(async move {
                    for w in &workers {
                        w.stopping.store(true, Ordering::Release);
                        process::signal_group(w.pid(), Signal::SIGTERM);
                    }
                    let deadline = Instant::now() + process::STOP_GRACE;
                    while Instant::now() < deadline
                        && workers.iter().any(|w| process::group_alive(w.pid()))
                    {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                    }
                    for w in &workers {
                        process::signal_group(w.pid(), Signal::SIGKILL);
                    }
                    let _ = done.send(());
                });
            }
        }
    }

    fn app_of(&self, w: &Worker) -> Option<Arc<App>> {
        self.pool.apps.load().get(&w.dir).cloned()
    }

    /// Starts workers until the app has `instances` of them (unless it is backing off).
    fn fill(&mut self, app: &Arc<App>) {
        if self.shutting_down || app.in_backoff().is_some() {
            return;
        }
        let Ok(m) = app.manifest() else { return };
        if m.ephemeral() {
            return;
        }
        let live = app.live_shared();
        for _ in live..m.instances {
            let slot = self.free_slot(app, m.instances);
            match self.spawn(app, false, slot) {
                Ok(w) => self.await_ready(app.clone(), w, None),
                Err(why) => {
                    app.fail(why, true);
                    return;
                }
            }
        }
    }

    fn free_slot(&self, app: &App, instances: usize) -> usize {
        let used: Vec<usize> = app
            .workers
            .load()
            .iter()
            .filter(|w| !w.ephemeral)
            .map(|w| w.slot)
            .collect();
        (0..instances).find(|s| !used.contains(s)).unwrap_or(0)
    }

    /// Makes room under `RUNTIME_POOL_SIZE` by stopping the least recently used idle
    /// worker; false when every worker is busy.
    fn make_room(&mut self) -> bool {
        if self.pool.live_total() < self.pool.opts.size {
            return true;
        }
        let victim = self
            .pool
            .apps
            .load()
            .values()
            .flat_map(|a| a.workers.load().iter().cloned().collect::<Vec<_>>())
            .filter(|w| w.state() == State::Ready && w.inflight() == 0)
            .min_by_key(|w| w.last_used.load(Ordering::Relaxed));
        match victim {
            Some(w) => {
                log::info!(
                    "pool full ({} workers): stopping the least recently used, {}",
                    self.pool.opts.size,
                    w.id
                );
                self.stop(&w, "evicted");
                true
            }
            None => false,
        }
    }

    fn spawn(
        &mut self,
        app: &Arc<App>,
        ephemeral: bool,
        slot: usize,
    ) -> Result<Arc<Worker>, String> {
        let m = app.manifest()?;
        if !self.make_room() {
            return Err(format!(
                "the pool is full ({} workers, all busy): raise RUNTIME_POOL_SIZE if \
                 this is the usual load",
                self.pool.opts.size
            ));
        }
        let n = self.pool.next_id.fetch_add(1, Ordering::Relaxed);
        let id = format!("{}-{n}", app.name);
        let (address, env_addr, defaults) = match m.listen {
            Listen::Tcp => {
                let port = process::free_port().map_err(|e| format!("no free port: {e}"))?;
                (
                    Address::Tcp(SocketAddr::from(([127, 0, 0, 1], port))),
                    ("PORT", port.to_string()),
                    &[manifest::TCP_HOST][..],
                )
            }
            Listen::Unix => {
                let path = self.pool.run_dir.join(format!("{n}.sock"));
                // sockaddr_un holds 107 bytes and a NUL; past that the worker fails to
                // bind with an error that does not say where the path came from.
                if path.as_os_str().len() > 107 {
                    return Err(format!(
                        "the socket path {} is longer than a unix socket allows (107 bytes): \
                         set TMPDIR to a shorter directory",
                        path.display()
                    ));
                }
                let _ = std::fs::remove_file(&path);
                (
                    Address::Unix(path.clone()),
                    ("BUNTIME_SOCKET", path.display().to_string()),
                    &[][..],
                )
            }
        };
        let argv = match &m.command {
            Some(c) => c.clone(),
            None => vec![
                self.pool.opts.exe.display().to_string(),
                "worker".into(),
                "static".into(),
                "--dir".into(),
                app.dir.display().to_string(),
                "--entrypoint".into(),
                m.entrypoint.clone(),
            ],
        };
        let own = |k: &str| std::env::var(k).ok();
        let env = manifest::worker_env(&m, &own, defaults, env_addr);
        let restarts = {
            let slots = app.slot_restarts.lock().unwrap_or_else(|e| e.into_inner());
            if ephemeral {
                0
            } else {
                slots.get(slot).copied().unwrap_or(0)
            }
        };
        // Before the start: a folder swapped in meanwhile costs one needless replacement,
        // never a worker on an old folder taken for a new one.
        let folder = folder_id(&app.dir);
        let mut child = process::spawn(&argv, &app.dir, &env, &id)
            .map_err(|e| format!("cannot start the worker: {e}"))?;
        let pid = child.id().unwrap_or(0);
        self.pool.reaper.watch(pid);
        let now = now_ms();
        let w = Arc::new(Worker {
            id,
            app: app.name.clone(),
            version: app.version.clone(),
            dir: app.dir.clone(),
            address,
            ephemeral,
            restarts,
            slot,
            pid: AtomicU32::new(pid),
            state: AtomicU8::new(State::Starting as u8),
            inflight: AtomicUsize::new(0),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            started_at: now,
            last_used: AtomicU64::new(now),
            probe_failures: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            retiring: AtomicBool::new(false),
            stop_reason: Mutex::new(""),
            folder,
        });
        app.starts.fetch_add(1, Ordering::Relaxed);
        app.add(w.clone());
        log::info!(
            "worker {} started (pid {pid}, {})",
            w.id,
            w.address.describe()
        );
        let (tx, exited) = (self.tx.clone(), w.clone());
        tokio::spawn(async move {
            let status = child
                .wait()
                .await
                .map_or_else(|e| e.to_string(), |s| s.to_string());
            let _ = tx.send(Cmd::Exited(exited, status));
        });
        Ok(w)
    }

    /// Probes a starting worker until it answers, then publishes it as ready.
    fn await_ready(
        &self,
        app: Arc<App>,
        w: Arc<Worker>,
        reply: Option<oneshot::Sender<Result<Arc<Worker>, String>>>,
    ) {
        let (tx, probe) = (self.tx.clone(), self.probe.clone());
        let Ok(m) = app.manifest() else { return };
        tokio::spawn(async move {
            let deadline = Instant::now() + m.start_timeout;
            loop {
                if w.state() != State::Starting {
                    if let Some(r) = reply {
                        let _ = r.send(Err(app
                            .recent_failure()
                            .unwrap_or_else(|| "the worker stopped while starting".into())));
                    }
                    return;
                }
                if probe.ok(&w.address, &m.health_path).await {
                    w.set_state(State::Ready);
                    log::info!("worker {} ready", w.id);
                    // Off the pool's thread: the socket tables list every connection
                    // of the host, megabytes on a busy one.
                    let (app, worker) = (app.clone(), w.clone());
                    tokio::task::spawn_blocking(move || warn_if_exposed(&app, &worker));
                    let _ = tx.send(Cmd::Ready(w.clone()));
                    if let Some(r) = reply {
                        let _ = r.send(Ok(w));
                    }
                    return;
                }
                if Instant::now() >= deadline {
                    // Most often the app listens elsewhere than it was told.
                    let hint = match w.address {
                        Address::Tcp(a) => {
                            // Off the pool's thread, as in `warn_if_exposed`.
                            let port = a.port();
                            let v6_only = tokio::task::spawn_blocking(move || {
                                crate::exposure::ipv6_loopback_only(port)
                            });
                            if v6_only.await.unwrap_or(false) {
                                format!(
                                    "it listens on [::1]:{port} only, not on the 127.0.0.1 \
                                     it is given: it bound localhost, which is ::1 here; have \
                                     it bind 127.0.0.1 (the HOST it is given)"
                                )
                            } else {
                                "does it listen on the PORT it is given?".to_string()
                            }
                        }
                        Address::Unix(_) => {
                            "does it listen on the BUNTIME_SOCKET it is given?".to_string()
                        }
                    };
                    let why = format!(
                        "worker {} not healthy within {:?}: GET {} on {} never answered \
                         below 500 ({hint})",
                        w.id,
                        m.start_timeout,
                        m.health_path,
                        w.address.describe()
                    );
                    let _ = tx.send(Cmd::Failed(w.clone(), why.clone()));
                    if let Some(r) = reply {
                        let _ = r.send(Err(why));
                    }
                    return;
                }
                tokio::time::sleep(STARTING_PROBE_EVERY).await;
            }
        });
    }

    /// Replaces a worker (past `maxRequests`, or on a replaced folder) without a gap: it
    /// keeps serving while its replacement starts, and drains once that one is ready
    /// (`Cmd::Ready`). If the replacement cannot start, it serves on and the next request
    /// tries again after the backoff.
    fn recycle(&mut self, w: &Arc<Worker>, why: &str) {
        let Some(app) = self.app_of(w) else { return };
        if self.shutting_down
            || app.in_backoff().is_some()
            || w.stopping.load(Ordering::Acquire)
            || w.retiring.swap(true, Ordering::AcqRel)
        {
            return;
        }
        log::info!("worker {} {why}: starting its replacement", w.id);
        match self.spawn(&app, false, w.slot) {
            Ok(fresh) => self.await_ready(app, fresh, None),
            Err(why) => {
                w.retiring.store(false, Ordering::Release);
                app.fail(why, true);
            }
        }
    }

    /// Drains `w` (no new requests), then SIGTERM once idle, SIGKILL after 10 s.
    fn stop(&self, w: &Arc<Worker>, why: &'static str) {
        if w.stopping.swap(true, Ordering::AcqRel) {
            return;
        }
        *w.stop_reason.lock().unwrap_or_else(|e| e.into_inner()) = why;
        log::info!("worker {} stopping ({why})", w.id);
        if w.state() == State::Ready || w.state() == State::Starting {
            w.set_state(State::Draining);
        }
        if let Some(app) = self.app_of(w) {
            app.notify();
        }
        let w = w.clone();
        let drain_for = self
            .app_of(&w)
            .and_then(|a| a.manifest().ok())
            .map_or(Duration::from_secs(30), |m| m.timeout);
        tokio::spawn(async move {
            let deadline = Instant::now() + drain_for;
            while w.inflight() > 0 && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            process::signal_group(w.pid(), Signal::SIGTERM);
            tokio::time::sleep(process::STOP_GRACE).await;
            if process::group_alive(w.pid()) {
                log::warn!("worker {} ignored SIGTERM; killing it", w.id);
                process::signal_group(w.pid(), Signal::SIGKILL);
            }
        });
    }

    fn exited(&mut self, w: Arc<Worker>, status: String) {
        let app = self.app_of(&w);
        let expected = w.stopping.load(Ordering::Acquire);
        let was = w.state();
        if let Address::Unix(p) = &w.address {
            let _ = std::fs::remove_file(p);
        }
        if expected {
            w.set_state(State::Stopped);
            log::info!("worker {} stopped ({status})", w.id);
        } else {
            w.set_state(State::Crashed);
            log::warn!("worker {} exited unexpectedly ({status})", w.id);
            // What it started would live on, holding its port or files, unowned.
            process::signal_group(w.pid(), Signal::SIGKILL);
        }
        self.forget_group_once_gone(w.pid());
        self.pool.archive(&w);
        let Some(app) = app else { return };
        app.remove(&w.id);
        if expected {
            // Recycled or replaced after failed probes: keep the app at its instances.
            // (TTL and eviction mean "not needed now"; the next request starts one.)
            let reason = *w.stop_reason.lock().unwrap_or_else(|e| e.into_inner());
            if !w.ephemeral
                && !self.shutting_down
                && matches!(reason, "recycled" | "failed")
                && app.manifest().is_ok_and(|m| app.wanted(&m, w.used_for()))
            {
                let (tx, app) = (self.tx.clone(), app.clone());
                let wait = app.in_backoff().unwrap_or_default();
                tokio::spawn(async move {
                    tokio::time::sleep(wait).await;
                    let _ = tx.send(Cmd::Start(app));
                });
            }
            return;
        }
        app.crashes.fetch_add(1, Ordering::Relaxed);
        if !w.ephemeral {
            let mut slots = app.slot_restarts.lock().unwrap_or_else(|e| e.into_inner());
            if slots.len() <= w.slot {
                slots.resize(w.slot + 1, 0);
            }
            slots[w.slot] += 1;
        }
        let start_failed = was == State::Starting;
        if start_failed {
            unretire(&app, &w);
        }
        let why = if start_failed {
            format!("the worker exited before it was ready ({status})")
        } else {
            format!("the worker crashed ({status})")
        };
        app.fail(why, start_failed);
        if !w.ephemeral
            && !self.shutting_down
            && app.manifest().is_ok_and(|m| app.wanted(&m, w.used_for()))
        {
            // Replace it once the backoff ends.
            let (tx, app) = (self.tx.clone(), app.clone());
            let wait = app.in_backoff().unwrap_or_default();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = tx.send(Cmd::Start(app));
            });
        }
    }

    /// Tells the reaper to forget a worker's group once none of it is left: after a stop,
    /// the rest of the group has the stop's grace before its SIGKILL. Bounded, because a
    /// zombie nobody has reaped yet still counts as a member of its group.
    fn forget_group_once_gone(&self, pgid: u32) {
        let pool = self.pool.clone();
        tokio::spawn(async move {
            let deadline = Instant::now() + process::STOP_GRACE + Duration::from_secs(2);
            while process::group_alive(pgid) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            pool.reaper.forget(pgid);
        });
    }

    /// TTL, health probes, recycling.
    fn tick(&mut self, probe_now: bool) {
        // New and removed app folders count within a tick; requests never read the dirs.
        self.pool.discovery.refresh();
        process::reap_orphans();
        for app in self.pool.apps.load().values() {
            let ready: Vec<Arc<Worker>> = app
                .workers
                .load()
                .iter()
                .filter(|w| !w.ephemeral && w.state() == State::Ready)
                .cloned()
                .collect();
            if ready.is_empty() {
                continue;
            }
            let Some(folder) = folder_id(&app.dir) else {
                // Undeployed: the folder was removed or renamed, so no request reaches the
                // app, yet its workers would run on until their ttl (a preloading app's
                // for ever), on code that is gone.
                for w in &ready {
                    self.stop(w, "folder removed");
                }
                continue;
            };
            // Redeployed by swapping the folder (a release symlink repointed, a folder
            // renamed over the old one): a worker runs the folder it started in (a process
            // keeps its directory; the static worker resolved its root), and under traffic
            // a sliding ttl never ends. Each is replaced, serving until its replacement,
            // started from the new folder with its manifest, is ready.
            let stale: Vec<&Arc<Worker>> = ready
                .iter()
                .filter(|w| w.folder != Some(folder) && !w.retiring.load(Ordering::Acquire))
                .collect();
            if !stale.is_empty() {
                app.reload_manifest();
                for w in stale {
                    self.recycle(w, "runs a folder that was replaced");
                }
                continue;
            }
            let Ok(m) = app.manifest() else { continue };
            for w in &ready {
                if !m.ttl.is_zero() && w.inflight() == 0 && w.idle_for() >= m.ttl {
                    self.stop(w, "ttl");
                    continue;
                }
                if w.requests.load(Ordering::Relaxed) >= m.max_requests {
                    self.recycle(w, "reached maxRequests");
                    continue;
                }
                if probe_now {
                    let (tx, probe, w, path) = (
                        self.tx.clone(),
                        self.probe.clone(),
                        w.clone(),
                        m.health_path.clone(),
                    );
                    tokio::spawn(async move {
                        if probe.ok(&w.address, &path).await {
                            w.probe_failures.store(0, Ordering::Release);
                        } else if w.probe_failures.fetch_add(1, Ordering::AcqRel) + 1
                            >= PROBE_FAILURES
                        {
                            let _ = tx.send(Cmd::Failed(
                                w.clone(),
                                format!("worker {} failed {PROBE_FAILURES} health probes", w.id),
                            ));
                        }
                    });
                }
            }
        }
    }
}
