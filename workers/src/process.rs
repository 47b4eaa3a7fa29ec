//! Worker processes: spawned in their own process group with a parent-death signal, so no
//! worker outlives the gateway even when it is killed; stopped with SIGTERM to the group,
//! then SIGKILL after a grace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use nix::sys::resource::{Resource, getrlimit, setrlimit};
use nix::sys::signal::{SigSet, Signal, killpg};
use nix::sys::wait::{WaitPidFlag, waitpid};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a worker has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

/// The open-files limits (soft, hard) this process started with, when it raised them.
static STARTED_NOFILE: OnceLock<(u64, u64)> = OnceLock::new();

/// Raises this process's soft open-files limit to its hard limit, and returns the two
/// when it did. Every client and upstream connection takes a descriptor, and the soft
/// limit is often 1024 (systemd's default), which a busy gateway passes: accepts then
/// fail with EMFILE. Workers get the limit back as it was, as Go does for its children:
/// a program using `select()` breaks on descriptors past 1024.
pub fn raise_open_files_limit() -> nix::Result<Option<(u64, u64)>> {
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft >= hard {
        return Ok(None);
    }
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    let _ = STARTED_NOFILE.set((soft, hard));
    Ok(Some((soft, hard)))
}

/// Keeps this process's environment and memory from the other processes of its user.
/// Workers run as the gateway's user, and the kernel lets a process read the
/// `/proc/<pid>/environ` of any other of its user's that is "dumpable": there the master
/// key, the JWT secret and the database token would be one `open` away for every app.
/// Not dumpable (as ssh-agent makes itself), those files belong to root; core dumps,
/// which would hold the same secrets, are off too. A child is dumpable again after its
/// `exec`.
pub fn hide_from_own_user() -> nix::Result<()> {
    nix::sys::prctl::set_dumpable(false)
}

/// Starts `argv` in `dir` with exactly `env`. Output lines go to the gateway's log,
/// tagged with `tag`. Must be called from the pool's own thread: the parent-death signal
/// fires when the *thread* that spawned the child exits.
pub fn spawn(
    argv: &[String],
    dir: &Path,
    env: &[(String, String)],
    tag: &str,
) -> std::io::Result<Child> {
    let program = program(&argv[0], dir);
    let mut cmd = Command::new(&program);
    cmd.args(&argv[1..])
        .current_dir(dir)
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    in_child_before_exec(&mut cmd);
    let mut child = cmd
        .spawn()
        .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", program.display())))?;
    for (stream, is_err) in [
        (
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            false,
        ),
        (
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn tokio::io::AsyncRead + Unpin + Send>),
            true,
        ),
    ] {
        let Some(stream) = stream else { continue };
        let tag = tag.to_string();
        tokio::spawn(forward_lines(stream, move |line| {
            if is_err {
                log::warn!(target: "worker", "[{tag}] {line}");
            } else {
                log::info!(target: "worker", "[{tag}] {line}");
            }
        }));
    }
    Ok(child)
}

/// A log record's most bytes of worker output; a longer line is split into records.
const MAX_LINE: u64 = 16 * 1024;

/// Hands each line of a worker's output to `emit`, until the worker closes it. The pipe
/// must be drained whatever the worker writes: a reader that stopped (on a byte that is
/// not UTF-8, say) would close it, and the worker's next write would fail with EPIPE. So
/// bytes are decoded lossily, and a line without an end is cut every `MAX_LINE` bytes
/// rather than held in memory whole.
async fn forward_lines(stream: impl AsyncRead + Unpin, mut emit: impl FnMut(&str)) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = buf.strip_suffix(b"\n").unwrap_or(&buf);
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        emit(&String::from_utf8_lossy(line));
    }
}

/// `./bin/api` and other relative paths with a slash are inside the app folder; a bare
/// name is looked up on PATH.
fn program(arg0: &str, dir: &Path) -> PathBuf {
    let p = Path::new(arg0);
    if p.is_relative() && arg0.contains('/') {
        dir.join(p)
    } else {
        p.to_path_buf()
    }
}

/// Sets up the child: SIGKILL when the gateway dies, however it dies, and the open-files
/// limit the gateway started with. The one unsafe block: `pre_exec` runs between fork and
/// exec, where only async-signal-safe calls belong (prctl, getppid and setrlimit are).
#[allow(unsafe_code)]
fn in_child_before_exec(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    let nofile = STARTED_NOFILE.get().copied();
    // SAFETY: the closure only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("the gateway exited"));
            }
            if let Some((soft, hard)) = nofile {
                setrlimit(Resource::RLIMIT_NOFILE, soft, hard).map_err(std::io::Error::from)?;
            }
            Ok(())
        });
    }
}

/// Kills the workers' process groups when the gateway dies, however it dies. The parent-death
/// signal reaches only a worker's own process; what that process started (`npm start` runs
/// node as the gateway's grandchild, `sh -c` its command) would outlive a SIGKILLed
/// gateway. One helper process, `<exe> worker reaper`, is told every worker's group on a
/// pipe that only the gateway holds; the kernel closes it when the gateway dies, and at
/// that end of input the helper kills every group it was told of.
#[derive(Debug)]
pub struct Reaper {
    pipe: std::sync::Mutex<Option<std::process::ChildStdin>>,
}

impl Reaper {
    pub fn start(exe: &Path) -> std::io::Result<Reaper> {
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new(exe)
            .args(["worker", "reaper"])
            // It needs none of the gateway's environment, whose secrets any process of
            // the user (a worker) could read from its `/proc/<pid>/environ`.
            .env_clear()
            .stdin(Stdio::piped())
            // Its own group: a Ctrl-C meant for the gateway must not take it first.
            .process_group(0)
            .spawn()
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", exe.display())))?;
        Ok(Reaper {
            pipe: std::sync::Mutex::new(child.stdin.take()),
        })
    }

    /// From now on, kill group `pgid` if the gateway dies.
    pub fn watch(&self, pgid: u32) {
        self.tell(&format!("+{pgid}\n"));
    }

    /// Group `pgid` is gone; its number may be reused.
    pub fn forget(&self, pgid: u32) {
        self.tell(&format!("-{pgid}\n"));
    }

    fn tell(&self, line: &str) {
        use std::io::Write;
        let mut pipe = self.pipe.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = pipe.as_mut()
            && let Err(e) = p.write_all(line.as_bytes())
        {
            log::error!("the worker reaper is gone ({e}): workers may outlive a crash");
            *pipe = None;
        }
    }
}

/// `buntime worker reaper`: deaf to the signals a terminal or a `killall buntime` sends (it
/// ends when the gateway does, and must outlive it), then `reap` on stdin.
pub fn reaper_main() -> usize {
    let mut deaf = SigSet::empty();
    for sig in [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        deaf.add(sig);
    }
    if let Err(e) = deaf.thread_block() {
        eprintln!("worker reaper: cannot block signals: {e}");
    }
    reap(std::io::stdin().lock())
}

/// Reads `+<pgid>` and `-<pgid>` lines until the input ends (the gateway is gone), then
/// SIGKILLs every group still listed. Returns how many it killed.
pub fn reap(input: impl std::io::BufRead) -> usize {
    let mut groups = std::collections::BTreeSet::new();
    for line in input.lines() {
        let Ok(line) = line else { break };
        let (sign, number) = line.split_at(line.len().min(1));
        match (sign, number.parse::<u32>()) {
            ("+", Ok(pgid)) if pgid > 1 => {
                groups.insert(pgid);
            }
            ("-", Ok(pgid)) => {
                groups.remove(&pgid);
            }
            _ => {}
        }
    }
    groups
        .iter()
        .filter(|&&pgid| killpg(Pid::from_raw(pgid as i32), Signal::SIGKILL).is_ok())
        .count()
}

/// When the gateway is PID 1 (a container's command, as in the Helm chart), orphans are
/// reparented to it, and what a crashed worker left (which the pool kills) would stay a
/// zombie for good. Reaps the zombie children that lead no process group: every process
/// the gateway starts leads its own, and tokio reaps those. Returns how many.
pub fn reap_orphans() -> usize {
    if std::process::id() != 1 {
        return 0;
    }
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|&pid| is_orphan_zombie(pid))
        .filter(|&pid| waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)).is_ok())
        .count()
}

/// A zombie child of PID 1 that is not its group's leader, from `/proc/<pid>/stat`.
fn is_orphan_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // "pid (comm) state ppid pgrp ...": the name may hold spaces and parentheses.
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return false;
    };
    let mut fields = rest.split(' ');
    let (state, ppid, pgrp) = (fields.next(), fields.next(), fields.next());
    state == Some("Z") && ppid == Some("1") && pgrp != Some(pid.to_string().as_str())
}

/// Sends `sig` to the worker's whole process group.
pub fn signal_group(pid: u32, sig: Signal) {
    if pid == 0 {
        return;
    }
    if let Err(e) = killpg(Pid::from_raw(pid as i32), sig)
        && e != nix::errno::Errno::ESRCH
    {
        log::warn!("cannot send {sig} to worker group {pid}: {e}");
    }
}

/// Whether a process group still has a live member.
pub fn group_alive(pid: u32) -> bool {
    pid != 0 && killpg(Pid::from_raw(pid as i32), None).is_ok()
}

/// A free TCP port on 127.0.0.1 for a worker to listen on, taken below the kernel's
/// ephemeral range. The worker binds it only once it has started; a port from that range
/// (what binding port 0 gives) can meanwhile become the source port of any outgoing
/// connection, even the health probe's own connection to that very port (TCP
/// self-connect while nothing listens yet), and the worker's bind then fails.
pub fn free_port() -> std::io::Result<u16> {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU32, Ordering};
    // How many ports below the ephemeral range are tried, from a place that moves on with
    // each call, so that ports just handed out are not offered again while their workers
    // start. Each process starts at a random place (std's hasher keys are random), so that
    // two processes on one host, such as a test and the gateways it starts, walk apart.
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    // (first port, where this process starts), or None when the ephemeral range starts
    // too low to leave room below it.
    static RANGE: OnceLock<Option<(u32, u32)>> = OnceLock::new();
    let range = RANGE.get_or_init(|| {
        let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .ok()
            .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
            .unwrap_or(32_768);
        let base = low.checked_sub(SPAN).filter(|b| *b >= 1024)?;
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        Some((base, (random % u64::from(SPAN)) as u32))
    });
    let Some((base, start)) = *range else {
        return Ok(std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port());
    };
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (base + start.wrapping_add(n) % SPAN) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    Err(std::io::Error::new(
        std::io::ErrorKind::AddrInUse,
        format!("every port in {base}-{} is taken", base + SPAN - 1),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reaper_kills_the_groups_still_listed_when_its_input_ends() {
        use std::os::unix::process::CommandExt;
        let group = || {
            std::process::Command::new("sleep")
                .arg("60")
                .process_group(0)
                .spawn()
                .unwrap()
        };
        let (mut listed, mut forgotten) = (group(), group());
        let input = format!(
            "+{}\n+{}\nnoise\n+1\n-{}\n",
            listed.id(),
            forgotten.id(),
            forgotten.id()
        );
        assert_eq!(reap(input.as_bytes()), 1);
        assert!(
            listed.wait().unwrap().code().is_none(),
            "killed by a signal"
        );
        assert!(
            forgotten.try_wait().unwrap().is_none(),
            "a forgotten group lives"
        );
        forgotten.kill().unwrap();
        forgotten.wait().unwrap();
    }

    #[test]
    fn any_output_is_forwarded_in_bounded_lines() {
        let mut out: Vec<u8> = b"caf\xe9\r\nplain\n".to_vec();
        out.extend(std::iter::repeat_n(b'x', 40_000));
        out.extend(b"\nno end");
        let mut lines = Vec::new();
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(forward_lines(&out[..], |l| lines.push(l.to_string())));
        let x = |n| "x".repeat(n);
        assert_eq!(
            lines,
            [
                "caf\u{fffd}".to_string(),
                "plain".into(),
                x(16_384),
                x(16_384),
                x(7_232),
                "no end".into()
            ]
        );
    }

    #[test]
    fn worker_ports_are_below_the_ephemeral_range_and_free() {
        let low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let a = free_port().unwrap();
        let b = free_port().unwrap();
        assert!(a < low && b < low, "{a}, {b} not below {low}");
        assert_ne!(a, b, "the next call offers another port");
        // Free: a worker can listen on it.
        std::net::TcpListener::bind(("127.0.0.1", a)).unwrap();
    }
}
