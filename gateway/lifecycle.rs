//! Process lifecycle (SPEC 11): readiness phase, in-flight request count, signals, and the
//! drain. Pingora's grace period is a fixed sleep, so the drain is ours: after the
//! listener closes, a watcher thread ends the process as soon as no request is in flight,
//! or when the grace runs out.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::server::{ExecutionPhase, ShutdownSignal, ShutdownSignalWatch};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Starting = 0,
    Running = 1,
    Draining = 2,
}

/// Shared by the request path (in-flight guard, readiness) and the shutdown path.
#[derive(Debug, Default)]
pub struct Lifecycle {
    phase: AtomicU8,
    inflight: AtomicUsize,
    /// A further SIGTERM or SIGINT came once the listener was closed: stop waiting.
    stop_now: AtomicBool,
}

impl Lifecycle {
    pub fn phase(&self) -> Phase {
        match self.phase.load(Ordering::Acquire) {
            0 => Phase::Starting,
            1 => Phase::Running,
            _ => Phase::Draining,
        }
    }

    /// Plugins started; ignored once draining.
    pub fn set_running(&self) {
        let _ = self.phase.compare_exchange(
            Phase::Starting as u8,
            Phase::Running as u8,
            Ordering::AcqRel,
            Ordering::Acquire,
        );
    }

    pub fn set_draining(&self) {
        self.phase.store(Phase::Draining as u8, Ordering::Release);
    }

    pub fn inflight(&self) -> usize {
        self.inflight.load(Ordering::Acquire)
    }

    /// Counts a request until the guard is dropped (with the request context, so a
    /// panicking request is uncounted too).
    pub fn enter(self: &Arc<Self>) -> InflightGuard {
        self.inflight.fetch_add(1, Ordering::AcqRel);
        InflightGuard(self.clone())
    }
}

#[derive(Debug)]
pub struct InflightGuard(Arc<Lifecycle>);

impl Drop for InflightGuard {
    fn drop(&mut self) {
        self.0.inflight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Replaces Pingora's signal handling: SIGTERM and SIGINT both drain (Pingora would treat
/// SIGINT as a fast exit), SIGHUP reloads and keeps running.
pub struct Signals {
    pub lifecycle: Arc<Lifecycle>,
    pub drain_delay: Duration,
    pub reload: Box<dyn Fn() + Send + Sync>,
}

#[async_trait]
impl ShutdownSignalWatch for Signals {
    async fn recv(&self) -> ShutdownSignal {
        let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
            signal(SignalKind::hangup()),
        ) else {
            log::error!("cannot install signal handlers; the server will not drain on SIGTERM");
            return std::future::pending().await;
        };
        loop {
            tokio::select! {
                _ = term.recv() => break,
                _ = int.recv() => break,
                _ = hup.recv() => {
                    log::info!("SIGHUP: reloading configuration");
                    (self.reload)();
                }
            }
        }
        self.lifecycle.set_draining();
        if !self.drain_delay.is_zero() {
            log::info!(
                "draining: readiness answers 503; the listener closes in {:?}",
                self.drain_delay
            );
            // A second signal skips the rest of the delay.
            tokio::select! {
                _ = tokio::time::sleep(self.drain_delay) => {}
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        log::info!(
            "closing the listener; waiting for in-flight requests (SIGTERM or SIGINT again to stop at once)"
        );
        // Pingora's server runtime, which runs this, lives on through the grace period.
        let lifecycle = self.lifecycle.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            lifecycle.stop_now.store(true, Ordering::Release);
        });
        ShutdownSignal::GracefulTerminate
    }
}

/// How often the watcher looks at the in-flight count, and how long it must stay at zero
/// (a connection accepted just before the listener closed may not have a request yet).
const POLL: Duration = Duration::from_millis(10);
const SETTLE: Duration = Duration::from_millis(50);

/// Starts the thread that ends the process once the listener is closed and nothing is in
/// flight, or when `grace` runs out. `finish` stops plugins and workers; it runs once.
pub fn watch_drain(
    lifecycle: Arc<Lifecycle>,
    phases: tokio::sync::broadcast::Receiver<ExecutionPhase>,
    grace: Duration,
    finish: Arc<dyn Fn() + Send + Sync>,
) {
    let mut phases = phases;
    std::thread::Builder::new()
        .name("drain".into())
        .spawn(move || {
            loop {
                match phases.blocking_recv() {
                    Ok(ExecutionPhase::ShutdownGracePeriod) => break,
                    Ok(_) => continue,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                }
            }
            let deadline = Instant::now() + grace;
            let mut idle_since: Option<Instant> = None;
            loop {
                let now = Instant::now();
                if now >= deadline {
                    log::warn!(
                        "shutdown grace ran out with {} request(s) in flight",
                        lifecycle.inflight()
                    );
                    break;
                }
                // Someone at a terminal pressed Ctrl-C twice: they do not want to wait
                // out the grace (Kubernetes and Docker send one SIGTERM).
                if lifecycle.stop_now.load(Ordering::Acquire) {
                    log::warn!(
                        "stopping at once on a second signal, with {} request(s) in flight",
                        lifecycle.inflight()
                    );
                    break;
                }
                if lifecycle.inflight() == 0 {
                    let since = *idle_since.get_or_insert(now);
                    if now.duration_since(since) >= SETTLE {
                        break;
                    }
                } else {
                    idle_since = None;
                }
                std::thread::sleep(POLL);
            }
            finish();
            std::process::exit(0);
        })
        .expect("spawn the drain thread");
}
