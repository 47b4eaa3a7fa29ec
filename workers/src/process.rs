//! Worker processes: spawned in their own process group with a parent-death signal, so no
//! worker outlives the gateway even when it is killed; stopped with SIGTERM to the group,
//! then SIGKILL after a grace.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

/// How long a worker has to exit after SIGTERM before it gets SIGKILL.
pub const STOP_GRACE: Duration = Duration::from_secs(10);

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
    die_with_parent(&mut cmd);
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
        tokio::spawn(async move {
            let mut lines = BufReader::new(stream).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if is_err {
                    log::warn!(target: "worker", "[{tag}] {line}");
                } else {
                    log::info!(target: "worker", "[{tag}] {line}");
                }
            }
        });
    }
    Ok(child)
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

/// The child gets SIGKILL when the gateway dies, however it dies. The one unsafe block:
/// `pre_exec` runs between fork and exec, where only async-signal-safe calls belong
/// (prctl and getppid are).
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure only makes async-signal-safe system calls and allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died before prctl took effect.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("the gateway exited"));
            }
            Ok(())
        });
    }
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

/// A free TCP port on 127.0.0.1 for a worker to listen on.
pub fn free_port() -> std::io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
