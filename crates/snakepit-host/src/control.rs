//! The control socket of `snakepit serve`: `snakepit status`, `snakepit reload` and
//! `snakepit call --remote` talk to a running host through it.
//!
//! It is a Unix socket at `<apps>/.snakepit/control.sock`, mode 0600 in a 0700
//! directory, and the server also checks that each peer runs as its own user
//! (`SO_PEERCRED`); anyone else gets an error reply and the connection closes. An
//! exclusive lock on `<apps>/.snakepit/serve.lock` (which holds the serve's pid) makes a
//! second serve of the same apps dir refuse to start; a socket file left by a serve that
//! died is replaced.
//!
//! The protocol (ARCHITECTURE.md, "Control socket") is frames of a 4-byte big-endian
//! length and a JSON body. The client sends a [`Request`]; the server answers with
//! [`Reply`] frames: one for `status` and `reload`; for `call`, a `log` frame per log
//! record of the call, then one `result` or `failed`. A connection may carry several
//! requests, one after the other.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};
use snakepit::{CallError, CallUsage, LogRecord, Map, Value};
use snakepit_proto::{frame, FrameBuffer, FrameError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;

use crate::{format_time, Host, HostStatus, Problem};

/// The largest frame either side accepts (a call's result can be large).
pub const FRAME_LIMIT: usize = 64 << 20;

/// `<apps>/.snakepit/control.sock`.
pub fn socket_path(apps: &Path) -> PathBuf {
    apps.join(".snakepit").join("control.sock")
}

/// What a remote call cost: [`snakepit::CallUsage`] in integers, on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    pub wall_us: u64,
    pub cpu_user_us: u64,
    pub cpu_sys_us: u64,
    pub peak_rss_bytes: u64,
    pub host_requests: u32,
    pub host_us: u64,
}

impl From<&CallUsage> for Usage {
    fn from(u: &CallUsage) -> Self {
        let us = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        Usage {
            wall_us: us(u.wall),
            cpu_user_us: us(u.cpu_user),
            cpu_sys_us: us(u.cpu_sys),
            peak_rss_bytes: u.peak_rss,
            host_requests: u.host_requests,
            host_us: us(u.host_time),
        }
    }
}

impl From<Usage> for CallUsage {
    fn from(u: Usage) -> Self {
        CallUsage {
            wall: Duration::from_micros(u.wall_us),
            cpu_user: Duration::from_micros(u.cpu_user_us),
            cpu_sys: Duration::from_micros(u.cpu_sys_us),
            peak_rss: u.peak_rss_bytes,
            host_requests: u.host_requests,
            host_time: Duration::from_micros(u.host_us),
        }
    }
}

/// What a client asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "request", rename_all = "snake_case")]
pub enum Request {
    /// The serve's state: answered with [`Reply::Status`].
    Status,
    /// Reload now: answered with [`Reply::Reloaded`] or [`Reply::Refused`].
    Reload,
    /// One call through the serving generation: [`Reply::Log`] frames, then
    /// [`Reply::Result`] or [`Reply::Failed`].
    Call {
        reference: String,
        /// A JSON object (default: none).
        #[serde(default)]
        kwargs: Option<serde_json::Value>,
        /// A JSON object (default: none).
        #[serde(default)]
        ctx: Option<serde_json::Value>,
        /// The call's timeout (default: its pool's).
        #[serde(default)]
        timeout_ms: Option<u64>,
        /// Answer with what the call cost (`call --remote -v`).
        #[serde(default)]
        measure: bool,
    },
    /// Look for queued runs now (`snakepit run --enqueue` on SQLite queued one):
    /// answered with [`Reply::Woken`], or [`Reply::Error`] by a serve with no scheduler.
    Wake,
}

/// What the server answers.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "reply", rename_all = "snake_case")]
pub enum Reply {
    Status {
        status: Box<ServeStatus>,
    },
    /// The new generation serves.
    Reloaded {
        generation: u64,
    },
    /// The reload found problems; `generation` still serves.
    Refused {
        generation: u64,
        problems: Vec<Problem>,
    },
    /// A log record of the call in hand.
    Log {
        record: LogLine,
    },
    /// The call returned this value.
    Result {
        value: serde_json::Value,
        /// What it cost, when the request asked (`measure`) and a worker answered.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// The call failed.
    Failed {
        failure: CallFailure,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        usage: Option<Usage>,
    },
    /// The scheduler looks for queued runs now.
    Woken,
    /// The request was not understood or not allowed.
    Error {
        message: String,
    },
}

/// A plugin's log record, as [`LogRecord`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LogLine {
    pub level: i64,
    pub logger: String,
    pub message: String,
    pub exc_text: Option<String>,
    /// Unix seconds.
    pub time: f64,
}

impl From<&LogRecord> for LogLine {
    fn from(r: &LogRecord) -> Self {
        LogLine {
            level: r.level,
            logger: r.logger.clone(),
            message: r.message.clone(),
            exc_text: r.exc_text.clone(),
            time: r.time,
        }
    }
}

impl From<LogLine> for LogRecord {
    fn from(l: LogLine) -> Self {
        LogRecord {
            call_id: None,
            level: l.level,
            logger: l.logger,
            message: l.message,
            exc_text: l.exc_text,
            time: l.time,
        }
    }
}

/// How a call failed, with what a person needs to read it: the same whether the call
/// ran in a local worker or through a serve.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CallFailure {
    /// [`CallError::kind`]: raised, reference, timeout, crashed, overloaded, cancelled.
    pub kind: String,
    /// The error's sentence.
    pub message: String,
    /// Set when the plugin raised.
    pub raised: Option<Raised>,
}

/// The exception a plugin raised.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Raised {
    pub type_name: String,
    pub message: String,
    pub traceback: String,
}

impl From<&CallError> for CallFailure {
    fn from(e: &CallError) -> Self {
        CallFailure {
            kind: e.kind().to_owned(),
            message: e.to_string(),
            raised: match e {
                CallError::Raised(x) => Some(Raised {
                    type_name: x.type_name.clone(),
                    message: x.message.clone(),
                    traceback: x.traceback.clone(),
                }),
                _ => None,
            },
        }
    }
}

/// A serve's state: the host's, plus the serve process and its watcher.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ServeStatus {
    pub pid: u32,
    /// When the serve started (RFC 3339, UTC).
    pub started: String,
    pub uptime_secs: f64,
    /// Whether it reloads on changes (`[runtime] watch`), and what it watches.
    pub watch: bool,
    pub watching: Vec<PathBuf>,
    #[serde(flatten)]
    pub host: HostStatus,
    /// The install's jobs: schedule, next tick, latest run.
    #[serde(default)]
    pub jobs: Vec<crate::JobReport>,
}

impl std::fmt::Display for ServeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "snakepit serve pid {}, up {:.0}s since {}",
            self.pid, self.uptime_secs, self.started
        )?;
        if self.watch {
            let dirs: Vec<String> = self
                .watching
                .iter()
                .map(|p| p.display().to_string())
                .collect();
            writeln!(f, "watching {}", dirs.join(", "))?;
        } else {
            writeln!(f, "not watching ([runtime] watch = false)")?;
        }
        write!(f, "{}", self.host)?;
        if !self.jobs.is_empty() {
            writeln!(f, "jobs")?;
            for j in &self.jobs {
                writeln!(f, "  {j}")?;
            }
        }
        Ok(())
    }
}

/// Why the control socket could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No serve listens for this apps dir.
    #[error(
        "no `snakepit serve` is running for {} (nothing listens on {}); start one with `snakepit serve` (or, for a call, leave out --remote)",
        apps.display(), socket.display()
    )]
    NotRunning { apps: PathBuf, socket: PathBuf },
    /// Another serve of the same apps dir runs.
    #[error(
        "another `snakepit serve`{} is running for {} (it listens on {}); stop it first, or talk to it with `snakepit status`, `snakepit reload` and `snakepit call --remote`",
        pid.map_or(String::new(), |p| format!(" (pid {p})")), apps.display(), socket.display()
    )]
    AlreadyRunning {
        apps: PathBuf,
        socket: PathBuf,
        pid: Option<u32>,
    },
    /// The socket, its directory or a frame failed.
    #[error("{0}")]
    Io(String),
}

async fn write_frame<W: AsyncWriteExt + Unpin>(w: &mut W, body: &[u8]) -> std::io::Result<()> {
    w.write_all(&frame(body)).await?;
    w.flush().await
}

/// The next frame's body, read through `frames` (the wire protocol's framing: a length
/// over [`FRAME_LIMIT`] is refused before anything is allocated for it); `None` at a
/// clean end of stream. Cancel-safe: what was read stays in `frames`.
async fn read_frame<R: AsyncReadExt + Unpin>(
    r: &mut R,
    frames: &mut FrameBuffer,
) -> Result<Option<Bytes>, FrameError> {
    loop {
        if let Some(body) = frames.next_frame()? {
            return Ok(Some(body));
        }
        if r.read_buf(frames.read_space()).await? == 0 {
            return frames.check_eof().map(|()| None);
        }
    }
}

async fn send<T: Serialize>(stream: &mut Stream, msg: &T) -> std::io::Result<()> {
    let body = serde_json::to_vec(msg).map_err(std::io::Error::other)?;
    write_frame(stream, &body).await
}

/// A client of a running serve's control socket.
#[derive(Debug)]
pub struct Client {
    stream: Stream,
    frames: FrameBuffer,
}

impl Client {
    /// Connects to the serve of `apps`.
    pub async fn connect(apps: &Path) -> Result<Client, ControlError> {
        let socket = socket_path(apps);
        let name = socket
            .as_path()
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| ControlError::Io(format!("{}: {e}", socket.display())))?;
        match Stream::connect(name).await {
            Ok(stream) => Ok(Client {
                stream,
                frames: FrameBuffer::new(FRAME_LIMIT),
            }),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                ) =>
            {
                Err(ControlError::NotRunning {
                    apps: apps.to_owned(),
                    socket,
                })
            }
            Err(e) => Err(ControlError::Io(format!(
                "cannot connect to {}: {e}",
                socket.display()
            ))),
        }
    }

    /// Sends a request.
    pub async fn send(&mut self, request: &Request) -> Result<(), ControlError> {
        send(&mut self.stream, request)
            .await
            .map_err(|e| ControlError::Io(format!("cannot send to the serve: {e}")))
    }

    /// The next reply.
    pub async fn next(&mut self) -> Result<Reply, ControlError> {
        let gone = || ControlError::Io("the serve closed the connection".into());
        let body = read_frame(&mut self.stream, &mut self.frames)
            .await
            .map_err(|e| ControlError::Io(format!("reading from the serve: {e}")))?
            .ok_or_else(gone)?;
        serde_json::from_slice(&body)
            .map_err(|e| ControlError::Io(format!("the serve's reply does not decode: {e}")))
    }

    /// Sends a request that has a single reply, and returns it.
    pub async fn ask(&mut self, request: &Request) -> Result<Reply, ControlError> {
        self.send(request).await?;
        self.next().await
    }
}

/// The listening side, run by `snakepit serve`. Stops at [`ControlServer::stop`].
#[derive(Debug)]
pub struct ControlServer {
    socket: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    /// Held while the serve runs: a second serve of the same apps dir cannot take it.
    lock: Flock<File>,
}

/// What `status` reports of the serve besides its host.
#[derive(Clone)]
pub struct ServeInfo {
    pub started: SystemTime,
    pub watching: Option<Vec<PathBuf>>,
    /// The install's jobs as they stand (the scheduler's), when it has a scheduler.
    pub jobs: Option<JobsReporter>,
    /// Makes the scheduler look for queued runs now ([`Request::Wake`]), when it has
    /// one.
    pub wake: Option<Arc<dyn Fn() + Send + Sync>>,
}

/// Reports the jobs of a serve (see [`ServeInfo::jobs`]).
pub type JobsReporter = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<crate::JobReport>> + Send>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for ServeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeInfo")
            .field("started", &self.started)
            .field("watching", &self.watching)
            .finish_non_exhaustive()
    }
}

impl ServeInfo {
    /// The serve's state now: `snakepit status --json`, and the web console's.
    pub async fn status(&self, host: &Host) -> ServeStatus {
        let jobs = match &self.jobs {
            Some(report) => report().await,
            None => Vec::new(),
        };
        ServeStatus {
            pid: std::process::id(),
            started: format_time(self.started),
            uptime_secs: (self.started.elapsed().unwrap_or_default().as_secs_f64() * 10.0).round()
                / 10.0,
            watch: self.watching.is_some(),
            watching: self.watching.clone().unwrap_or_default(),
            host: host.status(),
            jobs,
        }
    }
}

/// A control socket bound, with the serve lock taken, before the host starts: a second
/// serve of the same apps dir refuses before it starts any worker.
#[derive(Debug)]
pub struct Bound {
    socket: PathBuf,
    listener: interprocess::local_socket::tokio::Listener,
    lock: Flock<File>,
}

impl Bound {
    /// Takes the serve lock of the apps dir `apps` (writing this process's pid in it),
    /// replaces a stale socket file and listens on the control socket (mode 0600, in a
    /// 0700 directory).
    pub fn bind(apps: &Path) -> Result<Bound, ControlError> {
        let apps = apps.to_owned();
        let socket = socket_path(&apps);
        let dir = socket.parent().expect("the socket is in .snakepit");
        let io = |what: &str, e: &dyn std::fmt::Display| {
            ControlError::Io(format!(
                "cannot {what}: {e}; check the permissions of {}",
                dir.display()
            ))
        };
        std::fs::create_dir_all(dir).map_err(|e| io("create the control directory", &e))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| io("make the control directory private (0700)", &e))?;
        let lock_path = dir.join("serve.lock");
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600)
            .open(&lock_path)
            .map_err(|e| io("open the serve lock", &e))?;
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                return Err(ControlError::AlreadyRunning {
                    apps,
                    socket,
                    pid: pid.trim().parse().ok(),
                });
            }
            Err((_, e)) => return Err(io("lock the serve lock", &e)),
        };
        lock.set_len(0)
            .and_then(|()| lock.rewind())
            .and_then(|()| writeln!(lock, "{}", std::process::id()))
            .map_err(|e| io("write the serve lock", &e))?;
        // We hold the lock: a socket file there is a dead serve's.
        if socket.exists() {
            std::fs::remove_file(&socket).map_err(|e| io("remove a stale control socket", &e))?;
        }
        // sun_path holds 108 bytes with the final NUL.
        if socket.as_os_str().len() > 107 {
            return Err(ControlError::Io(format!(
                "the control socket path {} is longer than the 107 bytes a Unix socket path may have; serve the apps dir from a shorter path",
                socket.display()
            )));
        }
        let name = socket
            .as_path()
            .to_fs_name::<GenericFilePath>()
            .map_err(|e| io("name the control socket", &e))?;
        let listener = ListenerOptions::new()
            .name(name)
            .mode(0o600)
            .create_tokio()
            .map_err(|e| io("listen on the control socket", &e))?;
        Ok(Bound {
            socket,
            listener,
            lock,
        })
    }

    /// Answers requests about `host` until [`ControlServer::stop`].
    pub fn serve(self, host: Arc<Host>, info: ServeInfo) -> ControlServer {
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(accept(self.listener, host, info, stop_rx));
        ControlServer {
            socket: self.socket,
            stop,
            task,
            lock: self.lock,
        }
    }
}

impl ControlServer {
    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Stops taking connections (the socket file goes away); the requests in hand are
    /// answered. Returns once they are. The serve lock is emptied (no stale pid in it)
    /// and released.
    pub async fn stop(self) {
        self.stop.send_replace(true);
        let _ = self.task.await;
        let _ = self.lock.set_len(0);
    }
}

async fn accept(
    listener: interprocess::local_socket::tokio::Listener,
    host: Arc<Host>,
    info: ServeInfo,
    mut stop: watch::Receiver<bool>,
) {
    let uid = nix::unistd::geteuid().as_raw();
    let mut conns = JoinSet::new();
    let stopping = stop.clone();
    loop {
        tokio::select! {
            _ = stop.wait_for(|s| *s) => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            conn = listener.accept() => match conn {
                Ok(mut stream) => {
                    let creds = stream.peer_creds().ok();
                    let peer = creds.as_ref().and_then(|c| c.euid());
                    let refusal = if peer != Some(uid) {
                        tracing::warn!(?peer, "control socket: refused a peer of another user");
                        Some(format!(
                            "refused: this serve runs as uid {uid}, the peer as {}",
                            peer.map_or("an unknown uid".into(), |p| p.to_string())
                        ))
                    } else if let Some(pid) = creds.and_then(|c| c.pid()).filter(|&p| descends_from_us(p)) {
                        tracing::warn!(pid, "control socket: refused a worker (or what one started)");
                        Some(format!("refused: process {pid} is a worker of this serve, or was started by one"))
                    } else {
                        None
                    };
                    if let Some(message) = refusal {
                        let refusal = Reply::Error { message };
                        conns.spawn(async move { let _ = send(&mut stream, &refusal).await; });
                        continue;
                    }
                    conns.spawn(serve_connection(stream, host.clone(), info.clone(), stopping.clone()));
                }
                Err(e) => tracing::warn!(error = %e, "control socket: accept failed"),
            },
        }
    }
    // Dropping the listener removes the socket file: no new connection from here on.
    drop(listener);
    while conns.join_next().await.is_some() {}
}

/// Whether `pid` may be a worker of this serve, or anything a worker started: it
/// descends from this process (workers and fork-servers are child subreapers, so even a
/// daemon that double-forked stays below them), or it is under more seccomp filters than
/// this process (every worker and fork-server is, and filters are never shed: this
/// catches what escaped to init). In doubt (the peer is gone, the chain too long), yes.
/// The same uid passes `SO_PEERCRED`; this keeps the plugins off the control socket.
fn descends_from_us(pid: i32) -> bool {
    let filters = |p: &str| -> Option<u32> {
        let status = std::fs::read_to_string(format!("/proc/{p}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("Seccomp_filters:"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    match (filters(&pid.to_string()), filters("self")) {
        (Some(theirs), Some(ours)) if theirs > ours => return true,
        (None, Some(_)) => return true, // gone: refuse
        _ => {}
    }
    let me = std::process::id() as i32;
    let mut p = pid;
    for _ in 0..4096 {
        if p == me {
            return true;
        }
        if p <= 1 {
            return false;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            return true;
        };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat
            .rfind(')')
            .and_then(|i| stat.get(i + 2..))
            .and_then(|rest| rest.split_whitespace().nth(1))
            .and_then(|s| s.parse().ok());
        match ppid {
            Some(pp) => p = pp,
            None => return true,
        }
    }
    true
}

/// Answers one connection's requests in turn. Once the server stops, a connection
/// waiting for its next request is closed; a request in hand is answered first.
async fn serve_connection(
    mut stream: Stream,
    host: Arc<Host>,
    info: ServeInfo,
    mut stop: watch::Receiver<bool>,
) {
    let mut frames = FrameBuffer::new(FRAME_LIMIT);
    loop {
        let next = tokio::select! {
            _ = stop.wait_for(|s| *s) => return,
            next = read_frame(&mut stream, &mut frames) => next,
        };
        let body = match next {
            Ok(Some(b)) => b,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!(error = %e, "control socket: connection failed");
                return;
            }
        };
        let request: Request = match serde_json::from_slice(&body) {
            Ok(r) => r,
            Err(e) => {
                let message = format!("not a request: {e}");
                let _ = send(&mut stream, &Reply::Error { message }).await;
                return;
            }
        };
        let sent = match request {
            Request::Status => {
                let status = info.status(&host).await;
                send(
                    &mut stream,
                    &Reply::Status {
                        status: Box::new(status),
                    },
                )
                .await
            }
            Request::Wake => {
                let reply = match &info.wake {
                    Some(wake) => {
                        wake();
                        Reply::Woken
                    }
                    None => Reply::Error {
                        message: "this serve runs no scheduler".into(),
                    },
                };
                send(&mut stream, &reply).await
            }
            Request::Reload => {
                let reply = match host.reload("snakepit reload").await {
                    Ok(generation) => Reply::Reloaded { generation },
                    Err(problems) => Reply::Refused {
                        generation: host.generation(),
                        problems,
                    },
                };
                send(&mut stream, &reply).await
            }
            Request::Call {
                reference,
                kwargs,
                ctx,
                timeout_ms,
                measure,
            } => {
                call(
                    &mut stream,
                    &host,
                    &reference,
                    kwargs,
                    ctx,
                    timeout_ms.map(Duration::from_millis),
                    measure,
                )
                .await
            }
        };
        if sent.is_err() {
            return;
        }
    }
}

fn map_of(flag: &str, json: Option<serde_json::Value>) -> Result<Map, String> {
    match json.map(|j| Value::from_json(&j)) {
        None => Ok(Map::new()),
        Some(Value::Map(m)) => Ok(m),
        Some(other) => Err(format!(
            "{flag} must be a JSON object, got a {}",
            other.type_name()
        )),
    }
}

/// Runs one call, streaming its log records, then its outcome. A client that goes away
/// cancels the call (its future is dropped).
async fn call(
    stream: &mut Stream,
    host: &Host,
    reference: &str,
    kwargs: Option<serde_json::Value>,
    ctx: Option<serde_json::Value>,
    timeout: Option<Duration>,
    measure: bool,
) -> std::io::Result<()> {
    let (kwargs, ctx) = match (map_of("--kwargs", kwargs), map_of("--ctx", ctx)) {
        (Ok(k), Ok(c)) => (k, c),
        (Err(message), _) | (_, Err(message)) => {
            return send(stream, &Reply::Error { message }).await
        }
    };
    // Bounded: a client slower than the plugin gets records dropped and counted (calllog.rs).
    let (tx, mut logs) = mpsc::channel(1024);
    let began = Instant::now();
    let options = |c: snakepit::Call| {
        let c = c.kwargs(kwargs).context(crate::call_context(ctx)).logs(tx);
        match timeout {
            Some(t) => c.timeout(t),
            None => c,
        }
    };
    let outcome = async {
        if measure {
            host.submit_measured(reference, options).await
        } else {
            snakepit::Measured {
                result: host.submit(reference, options).await,
                usage: None,
            }
        }
    };
    tokio::pin!(outcome);
    let result = loop {
        tokio::select! {
            biased;
            Some(rec) = logs.recv() => {
                send(stream, &Reply::Log { record: LogLine::from(&rec) }).await?;
            }
            r = &mut outcome => break r,
        }
    };
    while let Ok(rec) = logs.try_recv() {
        send(
            stream,
            &Reply::Log {
                record: LogLine::from(&rec),
            },
        )
        .await?;
    }
    tracing::debug!(reference, took = ?began.elapsed(), "remote call");
    let usage = result.usage.as_ref().map(Usage::from);
    let reply = match result
        .result
        .and_then(|v| v.to_json().map_err(|e| CallError::Protocol(e.to_string())))
    {
        Ok(value) => Reply::Result { value, usage },
        Err(e) => Reply::Failed {
            failure: CallFailure::from(&e),
            usage,
        },
    };
    send(stream, &reply).await
}

#[cfg(test)]
mod fuzz {
    //! The request parser of the control socket (frames, then JSON, then the kwargs and
    //! context maps) under arbitrary input: every stream ends in requests or errors,
    //! never a panic or an allocation over the frame limit. Bounded for CI; a longer
    //! run: `PROPTEST_CASES=100000 cargo test -p snakepit-host control::fuzz`.

    use super::*;
    use proptest::prelude::*;

    /// What the server makes of `stream`: each frame's request (kwargs and ctx
    /// converted as a call would), until the first error.
    fn parse(stream: &[u8]) -> Vec<Result<Request, String>> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        let mut r = stream;
        let mut frames = FrameBuffer::new(FRAME_LIMIT);
        let mut out = Vec::new();
        rt.block_on(async {
            loop {
                let body = match read_frame(&mut r, &mut frames).await {
                    Ok(Some(b)) => b,
                    Ok(None) => return,
                    Err(e) => return out.push(Err(e.to_string())),
                };
                let parsed = serde_json::from_slice::<Request>(&body)
                    .map_err(|e| e.to_string())
                    .and_then(|req| match &req {
                        Request::Call { kwargs, ctx, .. } => {
                            map_of("--kwargs", kwargs.clone())?;
                            map_of("--ctx", ctx.clone())?;
                            Ok(req)
                        }
                        _ => Ok(req),
                    });
                out.push(parsed);
            }
        });
        out
    }

    fn config(cases: u32) -> ProptestConfig {
        let mut c = ProptestConfig::default();
        if std::env::var_os("PROPTEST_CASES").is_none() {
            c.cases = cases;
        }
        c.failure_persistence = None;
        c
    }

    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>().prop_map(serde_json::Value::from),
            ".{0,20}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(4, 64, 8, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..8).prop_map(serde_json::Value::from),
                proptest::collection::btree_map(".{0,8}", inner, 0..8)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn hostile_frames_are_refused() {
        let deep = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
        let deep_call =
            format!(r#"{{"request": "call", "reference": "m:f", "kwargs": {{"a": {deep}}}}}"#);
        for (what, stream) in [
            ("a length of 2^32-1", b"\xff\xff\xff\xff{}".to_vec()),
            ("a truncated body", b"\x00\x00\x01\x00{}".to_vec()),
            ("an empty frame", b"\x00\x00\x00\x00".to_vec()),
            ("deep nesting", frame(deep.as_bytes())),
            ("deep kwargs", frame(deep_call.as_bytes())),
            ("not UTF-8", frame(b"{\"request\": \"\xff\"}")),
            ("an unknown request", frame(br#"{"request": "shutdown"}"#)),
            (
                "kwargs not a map",
                frame(br#"{"request": "call", "reference": "m:f", "kwargs": [1]}"#),
            ),
        ] {
            let got = parse(&stream);
            assert!(matches!(got.last(), Some(Err(_))), "{what}: {got:?}");
        }
    }

    proptest! {
        #![proptest_config(config(2000))]

        #[test]
        fn arbitrary_streams_parse_or_fail(stream in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&stream);
        }

        #[test]
        fn arbitrary_bodies_parse_or_fail(body in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse(&frame(&body));
        }

        #[test]
        fn calls_with_any_json_parse_or_fail(
            kwargs in json(),
            ctx in json(),
            reference in ".{0,20}",
            timeout in proptest::option::of(any::<u64>()),
        ) {
            let req = serde_json::json!({
                "request": "call", "reference": reference, "kwargs": kwargs, "ctx": ctx,
                "timeout_ms": timeout,
            });
            let got = parse(&frame(req.to_string().as_bytes()));
            prop_assert_eq!(got.len(), 1);
            let objects = kwargs.is_object() || kwargs.is_null();
            let objects = objects && (ctx.is_object() || ctx.is_null());
            prop_assert_eq!(got[0].is_ok(), objects, "{:?}", got);
        }
    }
}
