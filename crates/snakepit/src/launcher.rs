//! How worker processes come to be: forked from a template process that has already
//! imported the shim (the fork-server), one template per pool, or one per worker for
//! pools of fresh interpreters.
//!
//! The fork-server turns a ≈ 70 ms interpreter start into a ≈ 3 ms fork and lets the
//! workers share the template's pages. It is one per pool, so one per code generation:
//! a new generation gets a new template. Its protocol (SPAWN, SPAWNED, EXITED) is in
//! `PROTOCOL.md`. A SPAWN frame carries three descriptors with `SCM_RIGHTS`: the worker's
//! end of a new socketpair and the write ends of its stdout and stderr pipes. The
//! template reaps its children and reports their exit statuses. When the supervisor goes
//! away (control socket EOF, or its parent-death signal SIGTERM) the template kills the
//! process group of every child before it exits, and whatever they left behind (it is a
//! child subreaper), so that not even a plugin's daemons outlive the supervisor.
//!
//! Every worker is forked, so every worker is confined the same way (`isolation/`): a
//! pool of fresh interpreters starts a template per worker, which serves that worker
//! alone and goes with it. A pool whose limits need cgroups starts a template per worker
//! *slot*, placed in the slot's cgroups once: its workers are born there. Moving each new
//! worker instead would cost a synchronize_rcu in the kernel (cgroup v1 has no
//! `CLONE_INTO_CGROUP`), about 11 ms per worker measured here.

use std::collections::HashMap;
use std::io::IoSlice;
use std::net::Shutdown;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream as StdUnixStream;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::unistd::Pid;
use snakepit_proto::{read_frame, FromWorker, ToWorker};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::config::PoolConfig;
use crate::error::{ExitStatus, SpawnError};
use crate::process::{
    exec_shim, line_text, raw_status, reap_child, FdLineSink, StderrTail, WorkerProcess, MAX_LINE,
};
use crate::sync::Recover;

/// Which way a pool starts its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaunchMode {
    Exec,
    ForkServer,
}

/// Starts worker processes for one pool.
pub(crate) enum Launcher {
    /// A fresh template per worker, kept (by worker pid) until the worker is reaped.
    Exec(Arc<PoolConfig>, Mutex<HashMap<Pid, ForkServer>>),
    ForkServer(ForkServer),
    /// A template per slot (in the slot's cgroups), and which slot each live pid is of.
    PerSlot(Vec<ForkServer>, Mutex<HashMap<Pid, usize>>),
}

impl Launcher {
    pub(crate) async fn start(
        mode: LaunchMode,
        cfg: Arc<PoolConfig>,
    ) -> Result<Launcher, SpawnError> {
        match mode {
            LaunchMode::Exec => Ok(Launcher::Exec(cfg, Mutex::default())),
            LaunchMode::ForkServer if cfg.confine.in_slot_cgroups() => {
                let starts =
                    (0..cfg.workers).map(|slot| ForkServer::start(cfg.clone(), Some(slot)));
                let servers = futures_util::future::join_all(starts)
                    .await
                    .into_iter()
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Launcher::PerSlot(servers, Mutex::default()))
            }
            LaunchMode::ForkServer => ForkServer::start(cfg, None).await.map(Launcher::ForkServer),
        }
    }

    /// Starts one worker process (not yet handshaken). Call it from the slot's own
    /// long-lived thread.
    pub(crate) async fn spawn(
        &self,
        worker: usize,
        sink: FdLineSink,
    ) -> Result<(WorkerProcess, StdUnixStream), SpawnError> {
        match self {
            Launcher::Exec(cfg, templates) => {
                let fs = ForkServer::start(cfg.clone(), Some(worker)).await?;
                let (proc, sock) = fs.spawn(worker, sink).await?;
                templates.lock().recover().insert(proc.pid, fs);
                Ok((proc, sock))
            }
            Launcher::ForkServer(fs) => fs.spawn(worker, sink).await,
            Launcher::PerSlot(servers, slots) => {
                let fs = servers
                    .get(worker)
                    .ok_or_else(|| SpawnError::Os(format!("no template for slot {worker}")))?;
                let (proc, sock) = fs.spawn(worker, sink).await?;
                slots.lock().recover().insert(proc.pid, worker);
                Ok((proc, sock))
            }
        }
    }

    /// Stops the fork-servers (their children are gone by then).
    pub(crate) fn close(&self) {
        match self {
            Launcher::ForkServer(fs) => close(&fs.state),
            Launcher::Exec(_, templates) => templates.lock().recover().clear(),
            Launcher::PerSlot(servers, _) => servers.iter().for_each(|fs| close(&fs.state)),
        }
    }

    /// The raw wait status of a worker that has exited.
    pub(crate) async fn exit_status(&self, pid: Pid) -> Option<i32> {
        match self {
            Launcher::Exec(_, templates) => {
                let fs = templates.lock().recover().remove(&pid)?;
                fs.exit_status(pid).await
            }
            Launcher::ForkServer(fs) => fs.exit_status(pid).await,
            Launcher::PerSlot(servers, slots) => {
                let slot = slots.lock().recover().remove(&pid)?;
                servers.get(slot)?.exit_status(pid).await
            }
        }
    }
}

#[derive(Default)]
struct FsState {
    /// The control socket's write side, while a template is up.
    ctrl: Option<StdUnixStream>,
    /// Spawns waiting for their SPAWNED, by slot.
    pending: HashMap<u64, oneshot::Sender<u32>>,
    /// Exit statuses reported and not yet asked for.
    exits: HashMap<u32, i32>,
    /// Who waits for which pid's exit status.
    waiters: HashMap<u32, oneshot::Sender<i32>>,
    closed: bool,
}

/// The per-pool template process and the thread that owns it.
pub(crate) struct ForkServer {
    state: Arc<Mutex<FsState>>,
    spawn_timeout: Duration,
}

impl ForkServer {
    /// Starts a template; one for `slot` alone is placed in that slot's cgroups.
    async fn start(cfg: Arc<PoolConfig>, slot: Option<usize>) -> Result<ForkServer, SpawnError> {
        let state = Arc::new(Mutex::new(FsState::default()));
        let (ready_tx, ready_rx) = oneshot::channel();
        let st = state.clone();
        let timeout = cfg.spawn_timeout;
        std::thread::Builder::new()
            .name(format!("snakepit-{}-forkserver", cfg.name))
            .spawn(move || own_template(cfg, slot, st, ready_tx))
            .map_err(|e| SpawnError::Os(format!("thread: {e}")))?;
        match tokio::time::timeout(timeout, ready_rx).await {
            Ok(Ok(Ok(()))) => Ok(ForkServer {
                state,
                spawn_timeout: timeout,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(SpawnError::Os("the fork-server thread ended".into())),
            Err(_) => {
                close(&state);
                Err(SpawnError::Timeout(timeout))
            }
        }
    }

    async fn spawn(
        &self,
        worker: usize,
        sink: FdLineSink,
    ) -> Result<(WorkerProcess, StdUnixStream), SpawnError> {
        let os = |what: &str, e: std::io::Error| SpawnError::Os(format!("{what}: {e}"));
        let (ours, theirs) = StdUnixStream::pair().map_err(|e| os("socketpair", e))?;
        let (out_r, out_w) = pipe().map_err(|e| os("pipe", e))?;
        let (err_r, err_w) = pipe().map_err(|e| os("pipe", e))?;
        let (tx, rx) = oneshot::channel();
        {
            let mut st = self.state.lock().recover();
            let ctrl = st
                .ctrl
                .as_ref()
                .ok_or_else(|| SpawnError::Os("the fork-server is not running".into()))?;
            let frame = ToWorker::Spawn {
                worker_id: worker as u64,
            }
            .encode();
            let fds = [theirs.as_raw_fd(), out_w.as_raw_fd(), err_w.as_raw_fd()];
            send_with_fds(ctrl, &frame, &fds)
                .map_err(|e| os("sending SPAWN to the fork-server", e))?;
            st.pending.insert(worker as u64, tx);
        }
        drop((theirs, out_w, err_w));
        let pid = match tokio::time::timeout(self.spawn_timeout, rx).await {
            Ok(Ok(pid)) => Pid::from_raw(pid as i32),
            Ok(Err(_)) => return Err(SpawnError::Os("the fork-server died".into())),
            Err(_) => {
                self.state.lock().recover().pending.remove(&(worker as u64));
                return Err(SpawnError::Timeout(self.spawn_timeout));
            }
        };
        WorkerProcess::adopt(pid, ours, Some(out_r), Some(err_r), sink).inspect_err(|_| {
            let _ = killpg(pid, Signal::SIGKILL);
        })
    }

    async fn exit_status(&self, pid: Pid) -> Option<i32> {
        let pid = pid.as_raw() as u32;
        let rx = {
            let mut st = self.state.lock().recover();
            if let Some(s) = st.exits.remove(&pid) {
                return Some(s);
            }
            let (tx, rx) = oneshot::channel();
            st.waiters.insert(pid, tx);
            rx
        };
        let status = tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()?
            .ok();
        if status.is_none() {
            self.state.lock().recover().waiters.remove(&pid);
        }
        status
    }
}

impl Drop for ForkServer {
    fn drop(&mut self) {
        close(&self.state);
    }
}

/// Closes the control socket: the template kills its children's groups and exits.
fn close(state: &Mutex<FsState>) {
    let mut st = state.lock().recover();
    st.closed = true;
    if let Some(c) = st.ctrl.take() {
        let _ = c.shutdown(Shutdown::Both);
    }
}

fn pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(std::io::Error::from)
}

fn send_with_fds(sock: &StdUnixStream, frame: &[u8], fds: &[i32]) -> std::io::Result<()> {
    let cmsg = [ControlMessage::ScmRights(fds)];
    let mut sent = sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(frame)],
        &cmsg,
        MsgFlags::empty(),
        None,
    )?;
    while sent < frame.len() {
        sent += nix::sys::socket::send(sock.as_raw_fd(), &frame[sent..], MsgFlags::empty())?;
    }
    Ok(())
}

/// The fork-server thread: starts the template (this long-lived thread is the parent
/// its parent-death signal watches), reads its control socket, and starts a new
/// template if it dies while the pool is open.
fn own_template(
    cfg: Arc<PoolConfig>,
    slot: Option<usize>,
    state: Arc<Mutex<FsState>>,
    ready: oneshot::Sender<Result<(), SpawnError>>,
) {
    let mut ready = Some(ready);
    let mut failures = 0u32;
    loop {
        if state.lock().recover().closed {
            return;
        }
        let result = run_template(&cfg, slot, &state, &mut ready);
        // The template is gone: its spawns in flight will not be answered.
        {
            let mut st = state.lock().recover();
            st.ctrl = None;
            st.pending.clear();
            if st.closed {
                return;
            }
        }
        match result {
            Err(e) => {
                warn!(pool = %cfg.name, error = %e, "the fork-server failed");
                if let Some(r) = ready.take() {
                    let _ = r.send(Err(e));
                    return;
                }
                failures += 1;
            }
            Ok(()) => failures = 0,
        }
        std::thread::sleep(Duration::from_millis(100).saturating_mul(1 << failures.min(6)));
    }
}

/// Runs one template until it goes away.
fn run_template(
    cfg: &PoolConfig,
    slot: Option<usize>,
    state: &Mutex<FsState>,
    ready: &mut Option<oneshot::Sender<Result<(), SpawnError>>>,
) -> Result<(), SpawnError> {
    let args = cfg.worker_args(0, cfg.generation);
    let s = exec_shim(cfg, "forkserver", args, Signal::SIGTERM, slot)?;
    let tail = Arc::new(Mutex::new(StderrTail::default()));
    let stderr_thread = s.stderr.map(|fd| {
        let (tail, name) = (tail.clone(), cfg.name.clone());
        std::thread::spawn(move || {
            use std::io::{BufRead, Read};
            let mut reader = std::io::BufReader::new(std::fs::File::from(fd));
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match (&mut reader).take(MAX_LINE).read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = line_text(&buf);
                warn!(pool = %name, "fork-server: {line}");
                tail.lock().recover().push(line);
            }
        })
    });
    let mut reader = s
        .sock
        .try_clone()
        .map_err(|e| SpawnError::Os(format!("socket: {e}")))?;
    state.lock().recover().ctrl = Some(s.sock);
    let mut handshaken = false;
    let outcome = loop {
        let body = match read_frame(&mut reader, cfg.frame_limit) {
            Ok(Some(b)) => bytes::Bytes::from(b),
            Ok(None) => break Ok(()),
            Err(e) => {
                break Err(SpawnError::Handshake(format!(
                    "fork-server control socket: {e}"
                )))
            }
        };
        match FromWorker::decode(&body) {
            Ok(FromWorker::Handshake { version, .. })
                if version == snakepit_proto::PROTOCOL_VERSION && !handshaken =>
            {
                handshaken = true;
                debug!(pool = %cfg.name, pid = s.pid.as_raw(), "fork-server ready");
                if let Some(r) = ready.take() {
                    let _ = r.send(Ok(()));
                }
            }
            Ok(FromWorker::Spawned { worker_id, pid }) => {
                match state.lock().recover().pending.remove(&worker_id) {
                    Some(tx) => {
                        if let Err(pid) = tx.send(pid) {
                            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                        }
                    }
                    // A spawn that timed out meanwhile: nobody owns this worker.
                    None => {
                        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
                    }
                }
            }
            Ok(FromWorker::Exited { pid, status }) => {
                let mut st = state.lock().recover();
                match st.waiters.remove(&pid) {
                    Some(tx) => {
                        let _ = tx.send(status);
                    }
                    None => {
                        st.exits.insert(pid, status);
                    }
                }
            }
            Ok(other) => {
                break Err(SpawnError::Handshake(format!(
                    "unexpected message from the fork-server: {other:?}"
                )))
            }
            Err(e) => {
                break Err(SpawnError::Handshake(format!(
                    "undecodable frame from the fork-server: {e}"
                )))
            }
        }
    };
    if let Some(c) = state.lock().recover().ctrl.take() {
        let _ = c.shutdown(Shutdown::Both);
    }
    // The template exits at EOF; make sure of it, then reap it.
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    let status = loop {
        match nix::sys::wait::waitpid(s.pid, Some(nix::sys::wait::WaitPidFlag::WNOHANG)) {
            Ok(nix::sys::wait::WaitStatus::StillAlive) if std::time::Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(2))
            }
            Ok(nix::sys::wait::WaitStatus::StillAlive) => {
                let _ = killpg(s.pid, Signal::SIGKILL);
                break reap_child(s.pid);
            }
            Ok(ws) => break raw_status(ws),
            Err(_) => break None,
        }
    };
    if let Some(t) = stderr_thread {
        let _ = t.join();
    }
    if handshaken {
        return outcome;
    }
    let stderr = tail.lock().recover().lines();
    Err(SpawnError::Exited {
        status: status.map_or(ExitStatus::Unknown, ExitStatus::from_raw),
        stderr,
    })
}
