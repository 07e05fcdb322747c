//! A worker process: how it is started, watched, killed and reaped.
//!
//! Death is watched through a pidfd (readable once the process has exited) and, in the
//! slot that owns the worker, through the socket's EOF: either one ends the worker's life, and the
//! cleanup has a deadline. The whole process group is killed, before the worker is
//! reaped, so that nothing it spawned survives it and its pid cannot be reused meanwhile.

use std::collections::VecDeque;
use std::future::Future;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::unix::pipe;

use crate::config::{PoolConfig, WORKER_FD};
use crate::error::{ExitStatus, SpawnError};
use crate::kill::kill_worker;
use crate::sync::Recover;

/// How many of a worker's last stderr lines are kept for crash reports.
const STDERR_TAIL: usize = 20;

/// The last lines a worker wrote to its stderr file descriptor.
#[derive(Debug, Default)]
pub(crate) struct StderrTail(VecDeque<String>);

impl StderrTail {
    pub(crate) fn push(&mut self, line: String) {
        if self.0.len() == STDERR_TAIL {
            self.0.pop_front();
        }
        self.0.push_back(line);
    }

    pub(crate) fn lines(&self) -> Vec<String> {
        self.0.iter().cloned().collect()
    }
}

/// A running worker process and its end of the socket.
pub(crate) struct WorkerProcess {
    pub pid: Pid,
    pidfd: AsyncFd<OwnedFd>,
    pub stderr_tail: Arc<Mutex<StderrTail>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
    status: Option<ExitStatus>,
}

/// Receives the lines a worker writes to its stdout/stderr file descriptors (C code,
/// subprocesses, a crashing interpreter; Python-level prints arrive as LOG frames).
pub(crate) type FdLineSink = Arc<dyn Fn(&'static str, String) + Send + Sync>;

fn pidfd_open(pid: Pid) -> std::io::Result<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new fd or -1.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this fd to us and nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// A shim process just started by `exec`, before it is wrapped.
pub(crate) struct Spawned {
    pub pid: Pid,
    pub sock: StdUnixStream,
    pub stderr: Option<OwnedFd>,
}

/// Starts `python -c BOOTSTRAP <shimdir> <mode> <args>` in a session of its own, with
/// the environment reduced to the allowlist, its socket on fd 3, `pdeathsig` as its
/// parent-death signal, in `slot`'s cgroups if given, and confined as a helper (no
/// capabilities, no_new_privs, signals scoped: `isolation/kernel.rs`). Must be called
/// from a thread that outlives the process: the parent-death signal fires when the
/// forking *thread* exits.
pub(crate) fn exec_shim(
    cfg: &PoolConfig,
    mode: &str,
    args: Vec<std::ffi::OsString>,
    pdeathsig: Signal,
    slot: Option<usize>,
) -> Result<Spawned, SpawnError> {
    let os = |what: &str, e: std::io::Error| SpawnError::Os(format!("{what}: {e}"));
    let (ours, theirs) = StdUnixStream::pair().map_err(|e| os("socketpair", e))?;
    let mut cmd = Command::new(&cfg.python);
    cmd.arg("-c")
        .arg(crate::shim::BOOTSTRAP)
        .arg(&cfg.shim_dir)
        .arg(mode)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // The cgroups and the pool's user first: a change of uid clears the parent-death
    // signal, which is set below.
    let ruleset = cfg.confine.helper(&mut cmd, &cfg.env, slot);
    let child_fd = theirs.as_raw_fd();
    let parent = nix::unistd::getpid();
    let sig = pdeathsig as libc::c_ulong;
    // SAFETY: only async-signal-safe calls (setsid, dup2, fcntl, prctl, getppid, _exit)
    // run between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // A session of its own: its own process group, and no controlling terminal
            // (a worker that could open /dev/tty could push keystrokes into the
            // operator's shell with TIOCSTI).
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if child_fd == WORKER_FD {
                let flags = libc::fcntl(WORKER_FD, libc::F_GETFD);
                libc::fcntl(WORKER_FD, libc::F_SETFD, flags & !libc::FD_CLOEXEC);
            } else if libc::dup2(child_fd, WORKER_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, sig) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // The supervisor may have died between fork and prctl.
            if libc::getppid() != parent.as_raw() {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|e| SpawnError::Interpreter {
        path: cfg.python.clone(),
        reason: format!("{e}{}", cfg.confine.user_hint()),
    })?;
    drop((theirs, ruleset));
    // The Child handle is dropped: we reap by pid (std does not wait on drop).
    Ok(Spawned {
        pid: Pid::from_raw(child.id() as i32),
        sock: ours,
        stderr: child.stderr.take().map(OwnedFd::from),
    })
}

impl WorkerProcess {
    /// Wraps a started process: its pid, our end of its socket and its output pipes.
    pub(crate) fn adopt(
        pid: Pid,
        sock: StdUnixStream,
        stdout: Option<OwnedFd>,
        stderr: Option<OwnedFd>,
        sink: FdLineSink,
    ) -> Result<(WorkerProcess, StdUnixStream), SpawnError> {
        let os = |what: &str, e: std::io::Error| SpawnError::Os(format!("{what}: {e}"));
        let pidfd = pidfd_open(pid).map_err(|e| os("pidfd_open", e))?;
        // SAFETY: the pidfd is owned by the AsyncFd from here on and closed only when it is
        // dropped, after its deregistration.
        let pidfd = unsafe { AsyncFd::register(pidfd) }
            .map_err(|e| os("registering the pidfd", e.into()))?;
        sock.set_nonblocking(true).map_err(|e| os("socket", e))?;
        let stderr_tail = Arc::new(Mutex::new(StderrTail::default()));
        let mut readers = Vec::new();
        for (stream, fd) in [("stdout", stdout), ("stderr", stderr)] {
            let Some(fd) = fd else { continue };
            let rx = pipe::Receiver::from_owned_fd(fd).map_err(|e| os("pipe", e))?;
            let tail = (stream == "stderr").then(|| stderr_tail.clone());
            readers.push(tokio::spawn(forward_lines(rx, stream, tail, sink.clone())));
        }
        let proc = WorkerProcess {
            pid,
            pidfd,
            stderr_tail,
            readers,
            status: None,
        };
        Ok((proc, sock))
    }

    /// Resolves once the process has exited (it may still need reaping).
    pub(crate) async fn exited(&self) {
        // A pidfd only ever becomes readable once, at exit; an error means it is gone too.
        let _ = self.pidfd.readable().await.map(|mut g| g.retain_ready());
    }

    /// SIGKILLs the worker's process group, and the worker itself (which may have left
    /// its group).
    pub(crate) fn kill_group(&self) {
        if self.status.is_none() {
            kill_worker(self.pid);
        }
    }

    /// Sends a signal to the worker process alone.
    pub(crate) fn signal(&self, sig: Signal) {
        if self.status.is_none() {
            let _ = nix::sys::signal::kill(self.pid, sig);
        }
    }

    /// Ends the worker for good. With a grace period: waits that long for it to exit on
    /// its own, then SIGTERMs its process group and waits as long again; then (or at once,
    /// without one) SIGKILLs the group. Reaps it (`exit_status`, awaited once the worker
    /// is dead, is its raw wait status from whoever reaps it) and collects the rest of its
    /// stderr.
    pub(crate) async fn finish(
        &mut self,
        grace: Option<Duration>,
        exit_status: impl Future<Output = Option<i32>>,
    ) -> ExitStatus {
        if let Some(s) = self.status {
            return s;
        }
        let mut exited = false;
        if let Some(grace) = grace {
            exited = tokio::time::timeout(grace, self.exited()).await.is_ok();
            if !exited {
                let _ = killpg(self.pid, Signal::SIGTERM);
                exited = tokio::time::timeout(grace, self.exited()).await.is_ok();
            }
        }
        if !exited {
            kill_worker(self.pid);
            let _ = tokio::time::timeout(Duration::from_secs(5), self.exited()).await;
        }
        // Anything the worker left in its group goes with it; the zombie keeps the pid
        // (and so the group id) from being reused until it is reaped below.
        kill_worker(self.pid);
        let status = exit_status
            .await
            .map_or(ExitStatus::Unknown, ExitStatus::from_raw);
        self.status = Some(status);
        // Let the pipe readers drain what the process wrote before it died.
        for r in self.readers.drain(..) {
            let abort = r.abort_handle();
            if tokio::time::timeout(Duration::from_millis(200), r)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
        status
    }
}

/// The resident set size of a process, in bytes.
pub(crate) fn rss(pid: Pid) -> Option<u64> {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as u64;
    Some(pages * page)
}

/// The raw wait status (as `waitpid(2)` writes it, what [`ExitStatus::from_raw`] reads)
/// of a `waitpid` answer that says the process ended: its exit code, or its signal and
/// whether it dumped core. `None` for any other answer.
pub(crate) fn raw_status(ws: WaitStatus) -> Option<i32> {
    match ws {
        WaitStatus::Exited(_, code) => Some(code << 8),
        WaitStatus::Signaled(_, sig, core) => Some(sig as i32 | if core { 0x80 } else { 0 }),
        _ => None,
    }
}

/// Reaps a child of this process and returns its raw wait status.
pub(crate) fn reap_child(pid: Pid) -> Option<i32> {
    // The caller saw the process exit: the status is there, or very nearly.
    for _ in 0..2000 {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(1)),
            Ok(ws) => match raw_status(ws) {
                Some(raw) => return Some(raw),
                None => continue,
            },
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return None,
        }
    }
    None
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if self.status.is_none() {
            kill_worker(self.pid);
        }
        for r in &self.readers {
            r.abort();
        }
    }
}

/// The longest line kept from a worker's stdout or stderr: a longer one (or output that
/// never ends its line) is cut into pieces of this size, so that neither a piece nor the
/// stderr tail grows with what the worker writes.
pub(crate) const MAX_LINE: u64 = 16 * 1024;

/// A line as read (at most [`MAX_LINE`] bytes, its newline if any), as text: without the
/// newline, bytes that are not UTF-8 replaced.
pub(crate) fn line_text(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf.strip_suffix(b"\n").unwrap_or(buf)).into_owned()
}

async fn forward_lines(
    rx: pipe::Receiver,
    stream: &'static str,
    tail: Option<Arc<Mutex<StderrTail>>>,
    sink: FdLineSink,
) {
    let mut reader = BufReader::new(rx);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match (&mut reader)
            .take(MAX_LINE)
            .read_until(b'\n', &mut buf)
            .await
        {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        let line = line_text(&buf);
        if let Some(t) = &tail {
            t.lock().recover().push(line.clone());
        }
        sink(stream, line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The launcher once decoded a template's status on its own and dropped the core-dump
    /// bit; both reapers now go through `raw_status`.
    #[test]
    fn the_raw_status_keeps_the_exit_code_the_signal_and_the_core_dump() {
        let pid = Pid::from_raw(1);
        let decoded = |ws| raw_status(ws).map(ExitStatus::from_raw);
        assert_eq!(
            decoded(WaitStatus::Signaled(pid, Signal::SIGSEGV, true)),
            Some(ExitStatus::Signal {
                signal: libc::SIGSEGV,
                core_dumped: true
            })
        );
        assert_eq!(
            decoded(WaitStatus::Signaled(pid, Signal::SIGKILL, false)),
            Some(ExitStatus::Signal {
                signal: libc::SIGKILL,
                core_dumped: false
            })
        );
        assert_eq!(
            decoded(WaitStatus::Exited(pid, 3)),
            Some(ExitStatus::Code(3))
        );
        assert_eq!(decoded(WaitStatus::StillAlive), None);
    }
}
