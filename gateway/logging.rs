//! One logger for the process (`log` + env_logger, text or JSON lines, on stderr) and the
//! access log (one line per request, on stdout), written by its own thread so the request
//! path only pays for a channel send.

use std::io::Write;
use std::net::IpAddr;
use std::sync::mpsc::{Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use crate::config::LogFormat;

/// Installs the process logger. Pingora logs through `log` too, so this also makes its
/// errors visible.
pub fn init(level: log::LevelFilter, format: LogFormat) {
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // Pingora's per-connection chatter is debug noise at info level.
    if level > log::LevelFilter::Info {
        builder.filter_module("pingora_core", log::LevelFilter::Info);
        builder.filter_module("pingora_proxy", log::LevelFilter::Info);
    }
    // libsql's SQL parser logs every syntax error at ERROR, statement text and all; the
    // database API already answers it to the client as a 400, so it is the client's
    // mistake, not the gateway's error.
    builder.filter_module("sqlite3Parser", log::LevelFilter::Off);
    builder.filter_module("libsql_sqlite3_parser", log::LevelFilter::Off);
    match format {
        LogFormat::Json => builder.format(|buf, record| {
            let line = serde_json::json!({
                "time": buf.timestamp_millis().to_string(),
                "level": record.level().as_str(),
                "target": record.target(),
                "msg": record.args().to_string(),
            });
            writeln!(buf, "{line}")
        }),
        LogFormat::Text => builder.format(|buf, record| {
            writeln!(
                buf,
                "{} {:<5} {}: {}",
                buf.timestamp_millis(),
                record.level(),
                record.target(),
                record.args()
            )
        }),
    };
    let logger = builder.build();
    let max = logger.filter();
    // A second init (tests, reload) keeps the first logger.
    if log::set_boxed_logger(Box::new(Logger(logger))).is_ok() {
        log::set_max_level(max);
    }
}

/// env_logger, with what a client does to its own connection moved to debug under the
/// target `client`. Before any phase of the gateway runs, Pingora logs at ERROR a client
/// that hangs up or resets while its request header arrives, or before its `400` is
/// written: anyone can add such a line at will, one per connection, and an ERROR is what
/// alerts page on. nginx logs the same events at info.
struct Logger(env_logger::Logger);

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &log::Record) {
        if record.target() == "pingora_proxy" && record.level() == log::Level::Error {
            let text = record.args().to_string();
            if CLIENT_NOISE.iter().any(|start| text.starts_with(start)) {
                self.0.log(
                    &log::Record::builder()
                        .level(log::Level::Debug)
                        .target("client")
                        .args(format_args!("{text}"))
                        .build(),
                );
                return;
            }
        }
        self.0.log(record)
    }

    fn flush(&self) {
        self.0.flush()
    }
}

/// How Pingora 0.9's `pingora_proxy` starts the lines of [`Logger`]: a failed read of the
/// request header (the error is marked as the client's: `Downstream`), and a failed
/// write of the `400` for a header it could not parse.
const CLIENT_NOISE: [&str; 2] = [
    "Fail to proxy: Downstream ",
    "failed to send error response to downstream",
];

/// One request, as the access log records it. Never holds a credential.
#[derive(Debug)]
pub struct AccessEntry {
    pub time: SystemTime,
    pub request_id: String,
    pub client_ip: IpAddr,
    pub method: String,
    pub path: String,
    pub status: u16,
    pub bytes: u64,
    pub duration: Duration,
    pub route: String,
}

/// Hands access entries to the writer thread; drops them (and counts) if it falls behind,
/// rather than slowing requests down.
#[derive(Debug, Clone)]
pub struct AccessLog {
    tx: SyncSender<AccessEntry>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
    flushed: Arc<(Mutex<u64>, std::sync::Condvar)>,
    sent: Arc<std::sync::atomic::AtomicU64>,
}

const QUEUE: usize = 65_536;

impl AccessLog {
    pub fn start(format: LogFormat) -> AccessLog {
        let (tx, rx) = std::sync::mpsc::sync_channel(QUEUE);
        let flushed = Arc::new((Mutex::new(0u64), std::sync::Condvar::new()));
        let log = AccessLog {
            tx,
            dropped: Arc::default(),
            flushed: flushed.clone(),
            sent: Arc::default(),
        };
        std::thread::Builder::new()
            .name("access-log".into())
            .spawn(move || writer(rx, format, flushed))
            .expect("spawn the access-log thread");
        log
    }

    pub fn record(&self, entry: AccessEntry) {
        use std::sync::atomic::Ordering::Relaxed;
        match self.tx.try_send(entry) {
            Ok(()) => {
                self.sent.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                if self.dropped.fetch_add(1, Relaxed).is_multiple_of(10_000) {
                    log::warn!("access log is falling behind; dropping lines");
                }
            }
        }
    }

    /// Waits (bounded) until everything recorded so far is written; used at exit.
    pub fn flush(&self, timeout: Duration) {
        let target = self.sent.load(std::sync::atomic::Ordering::Relaxed);
        let (lock, cv) = &*self.flushed;
        let guard = lock.lock().unwrap_or_else(|e| e.into_inner());
        let _ = cv.wait_timeout_while(guard, timeout, |written| *written < target);
    }
}

fn writer(
    rx: Receiver<AccessEntry>,
    format: LogFormat,
    flushed: Arc<(Mutex<u64>, std::sync::Condvar)>,
) {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, stdout.lock());
    let mut line = String::with_capacity(256);
    while let Ok(first) = rx.recv() {
        let mut n = 0u64;
        let mut next = Some(first);
        // Write whatever is queued, then flush once: one syscall per batch, not per line.
        while let Some(entry) = next {
            line.clear();
            format_entry(&entry, format, &mut line);
            let _ = out.write_all(line.as_bytes());
            n += 1;
            next = rx.try_recv().ok();
        }
        let _ = out.flush();
        let (lock, cv) = &*flushed;
        *lock.lock().unwrap_or_else(|e| e.into_inner()) += n;
        cv.notify_all();
    }
}

fn format_entry(e: &AccessEntry, format: LogFormat, out: &mut String) {
    use std::fmt::Write as _;
    let time = humantime::format_rfc3339_millis(e.time);
    let ms = e.duration.as_secs_f64() * 1000.0;
    match format {
        LogFormat::Json => {
            let v = serde_json::json!({
                "time": time.to_string(),
                "type": "access",
                "requestId": e.request_id,
                "clientIp": e.client_ip.to_string(),
                "method": e.method,
                "path": e.path,
                "status": e.status,
                "bytes": e.bytes,
                "durationMs": (ms * 1000.0).round() / 1000.0,
                "route": e.route,
            });
            let _ = writeln!(out, "{v}");
        }
        LogFormat::Text => {
            let _ = writeln!(
                out,
                "{time} access {} {} {} {:?} {} {}B {:.3}ms route={}",
                e.request_id, e.client_ip, e.method, e.path, e.status, e.bytes, ms, e.route
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_lines_escape_paths() {
        let e = AccessEntry {
            time: SystemTime::UNIX_EPOCH,
            request_id: "r1".into(),
            client_ip: "127.0.0.1".parse().unwrap(),
            method: "GET".into(),
            path: "/a\"b\n".into(),
            status: 200,
            bytes: 5,
            duration: Duration::from_micros(1500),
            route: "api".into(),
        };
        let mut s = String::new();
        format_entry(&e, LogFormat::Json, &mut s);
        let v: serde_json::Value = serde_json::from_str(s.trim_end()).unwrap();
        assert_eq!(v["path"], "/a\"b\n");
        assert_eq!(v["durationMs"], 1.5);
        assert_eq!(s.lines().count(), 1);
    }
}
