//! The pool: its configuration, its builder, and the handle callers use.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_proto::{encode_call, RawValue, ToWorker, Value, DEFAULT_FRAME_LIMIT};
use tokio::sync::{broadcast, oneshot, watch};

use crate::calllog::LogSink;
use crate::config::{PoolConfig, DEFAULT_ENV};
use crate::dispatch::{Checkout, Dispatch, Job, Waiting};
use crate::sync::Recover;

use crate::error::{BuildError, CallError, SpawnError};
use crate::event::WorkerEvent;
use crate::host::{HostHandler, NoHandler};
use crate::isolation::{harden_supervisor, Confinement, Enforcement, Isolation};
use crate::launcher::{LaunchMode, Launcher};
use crate::usage::Measured;
use crate::worker::{self, Phase, Shared, SlotInfo};

/// Keyword arguments or context: str keys to values, in order.
pub type Map = Vec<(String, Value)>;

/// Builds a [`Pool`]. Every setting has a default; see each method.
pub struct PoolBuilder {
    name: String,
    python: PathBuf,
    sys_path: Vec<PathBuf>,
    workers: usize,
    call_timeout: Duration,
    kill_grace: Duration,
    max_calls: Option<u64>,
    max_calls_jitter: Option<u64>,
    max_rss: Option<u64>,
    queue_limit: usize,
    spawn_timeout: Duration,
    env_allow: Vec<String>,
    frame_limit: usize,
    handler: Arc<dyn HostHandler>,
    generation: u64,
    launch: LaunchMode,
    isolation: Option<Isolation>,
    pin_workers: bool,
}

impl Default for PoolBuilder {
    fn default() -> Self {
        PoolBuilder {
            name: "default".into(),
            python: "python3".into(),
            sys_path: Vec::new(),
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            call_timeout: Duration::from_secs(30),
            kill_grace: Duration::from_secs(2),
            max_calls: None,
            max_calls_jitter: None,
            max_rss: None,
            queue_limit: 1024,
            spawn_timeout: Duration::from_secs(10),
            env_allow: DEFAULT_ENV.iter().map(|s| s.to_string()).collect(),
            frame_limit: DEFAULT_FRAME_LIMIT,
            handler: Arc::new(NoHandler),
            generation: 0,
            launch: LaunchMode::ForkServer,
            isolation: Some(Isolation::default()),
            pin_workers: false,
        }
    }
}

/// The CPUs this process may run on, in order.
fn allowed_cpus() -> Vec<usize> {
    use nix::sched::{sched_getaffinity, CpuSet};
    match sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => (0..CpuSet::count())
            .filter(|&c| set.is_set(c).unwrap_or(false))
            .collect(),
        Err(_) => Vec::new(),
    }
}

impl PoolBuilder {
    /// The pool's name, in events and logs (default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }
    /// The worker interpreter (default `python3` on PATH). It is resolved once to the real
    /// executable behind it.
    pub fn python(mut self, python: impl Into<PathBuf>) -> Self {
        self.python = python.into();
        self
    }
    /// A directory put on the workers' `sys.path`, in order, before the interpreter's own.
    pub fn sys_path(mut self, dir: impl Into<PathBuf>) -> Self {
        self.sys_path.push(dir.into());
        self
    }
    /// Number of worker processes (default: the CPU count).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n;
        self
    }
    /// Default timeout of a call, queueing included (default 30 s).
    pub fn call_timeout(mut self, t: Duration) -> Self {
        self.call_timeout = t;
        self
    }
    /// How long a cancelled or timed-out call may take to stop before the worker's process
    /// group is killed; also the grace of a shutdown (default 2 s).
    pub fn kill_grace(mut self, t: Duration) -> Self {
        self.kill_grace = t;
        self
    }
    /// Recycle a worker after this many calls (default: never), plus a random jitter of up
    /// to [`PoolBuilder::max_calls_jitter`] so that workers do not all recycle at once.
    pub fn max_calls_per_worker(mut self, n: u64) -> Self {
        self.max_calls = Some(n.max(1));
        self
    }
    /// The jitter added to `max_calls_per_worker` (default: a tenth of it).
    pub fn max_calls_jitter(mut self, n: u64) -> Self {
        self.max_calls_jitter = Some(n);
        self
    }
    /// Recycle a worker whose resident size goes above this many bytes, after the call in
    /// hand (default: no limit).
    pub fn max_worker_rss(mut self, bytes: u64) -> Self {
        self.max_rss = Some(bytes);
        self
    }
    /// How many calls may wait for a worker before `call` answers `Overloaded`
    /// (default 1024).
    pub fn queue_limit(mut self, n: usize) -> Self {
        self.queue_limit = n;
        self
    }
    /// How long a worker may take from spawn to handshake (default 10 s).
    pub fn spawn_timeout(mut self, t: Duration) -> Self {
        self.spawn_timeout = t;
        self
    }
    /// The only environment variables passed from this process to the workers
    /// (default `TZ`, `LANG`, `LC_ALL`, `PATH`). Replaces the list.
    pub fn env_allowlist<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.env_allow = names.into_iter().map(Into::into).collect();
        self
    }
    /// The largest frame either side accepts (default 64 MiB).
    pub fn frame_limit(mut self, bytes: usize) -> Self {
        self.frame_limit = bytes;
        self
    }
    /// Serves the workers' host requests (default: none; `echo` always works).
    pub fn host_handler(mut self, h: impl HostHandler) -> Self {
        self.handler = Arc::new(h);
        self
    }
    /// [`PoolBuilder::host_handler`] with a handler shared by several pools.
    pub fn shared_host_handler(mut self, h: Arc<dyn HostHandler>) -> Self {
        self.handler = h;
        self
    }
    /// The code generation this pool runs (default 0), for events and logs.
    pub fn generation(mut self, g: u64) -> Self {
        self.generation = g;
        self
    }
    /// Pin each worker to one CPU (slot i to the i-th CPU this process may use, round
    /// robin), and hand a caller the idle worker on the CPU it runs on when there is one.
    /// A caller thread pinned to a worker's CPU then talks to it without crossing CPUs:
    /// on a VM, where waking a thread on another CPU costs ≈ 60 µs against ≈ 9 µs on the
    /// same one, this is the difference between the two modes of `docs/benchmarks.md`
    /// ("CPU placement"). Off by default: with more busy workers than CPUs, or callers
    /// that float, fixed placement can only lose to the scheduler's. `snakepit bench`
    /// turns it on, with one caller thread pinned per worker.
    pub fn pin_workers(mut self, yes: bool) -> Self {
        self.pin_workers = yes;
        self
    }
    /// Start each worker as a fresh interpreter (`exec`) instead of forking it from the
    /// pool's template process (the default: ≈ 20× faster to start, a fraction of the
    /// memory). Fresh interpreters suit a single call, or plugins that cannot bear a fork.
    pub fn fresh_interpreters(mut self, yes: bool) -> Self {
        self.launch = if yes {
            LaunchMode::Exec
        } else {
            LaunchMode::ForkServer
        };
        self
    }

    /// How the workers are confined beyond the baseline every pool gets (see
    /// [`Isolation`]; default: nothing more). A setting this machine cannot enforce makes
    /// [`PoolBuilder::build`] fail, unless it is [`Enforce::BestEffort`](crate::Enforce).
    pub fn isolation(mut self, isolation: Isolation) -> Self {
        self.isolation = Some(isolation);
        self
    }

    /// Turns every confinement off, the baseline included: workers run as plain
    /// children of this process with its uid and capabilities, and this process stays
    /// dumpable. For measuring what confinement costs, and for tests that show an attack
    /// succeeds without it; never for code you do not trust.
    pub fn unconfined(mut self) -> Self {
        self.isolation = None;
        self
    }

    /// Starts the workers and waits until each is ready. Fails if the interpreter cannot
    /// be used or no worker starts.
    pub async fn build(self) -> Result<Pool, BuildError> {
        if self.workers == 0 {
            return Err(BuildError::Config("workers must be at least 1".into()));
        }
        if self.frame_limit < 1024 || self.frame_limit > u32::MAX as usize {
            return Err(BuildError::Config(
                "frame_limit must be between 1 KiB and 4 GiB".into(),
            ));
        }
        let confine = match &self.isolation {
            Some(iso) => {
                harden_supervisor();
                Confinement::new(iso, &self.name, self.generation, self.workers)?
            }
            None => Confinement::unconfined(self.workers),
        };
        let confine = Arc::new(confine);
        Confinement::start_cpu_watchdog(&confine, &self.name);
        let python = self.python.clone();
        let (python, shim_dir) = tokio::task::spawn_blocking(move || {
            Ok::<_, SpawnError>((
                crate::shim::resolve_interpreter(&python)?,
                crate::shim::materialize()?,
            ))
        })
        .await
        .map_err(|e| BuildError::Config(format!("start-up task failed: {e}")))??;
        let shim_dir = confine.shim_dir(&shim_dir)?;
        let env = self
            .env_allow
            .iter()
            .filter_map(|k| Some((OsString::from(k), std::env::var_os(k)?)))
            .collect();
        let cfg = Arc::new(PoolConfig {
            name: self.name.into(),
            generation: self.generation,
            python,
            shim_dir,
            sys_path: self.sys_path,
            workers: self.workers,
            call_timeout: self.call_timeout,
            kill_grace: self.kill_grace,
            max_calls: self.max_calls,
            max_calls_jitter: self
                .max_calls_jitter
                .unwrap_or_else(|| self.max_calls.map_or(0, |n| n / 10)),
            max_rss: self.max_rss,
            queue_limit: self.queue_limit.max(1),
            spawn_timeout: self.spawn_timeout,
            env,
            frame_limit: self.frame_limit,
            handler: self.handler,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_secs(10),
            confine,
            cpus: if self.pin_workers {
                allowed_cpus()
            } else {
                Vec::new()
            },
        });
        Pool::start(cfg, self.launch).await
    }
}

/// A call to make: the reference, its kwargs and context, and per-call options. A clone
/// makes the same call again (the same log channel, the same run id).
#[derive(Debug, Clone)]
pub struct Call {
    reference: String,
    kwargs: Map,
    context: Map,
    timeout: Option<Duration>,
    logs: Option<LogSink>,
    run_id: Option<Arc<str>>,
}

impl Call {
    /// A call of `"module.path:function"` with no kwargs and no context.
    pub fn new(reference: impl Into<String>) -> Self {
        Call {
            reference: reference.into(),
            kwargs: Map::new(),
            context: Map::new(),
            timeout: None,
            logs: None,
            run_id: None,
        }
    }
    pub fn kwargs(mut self, kwargs: Map) -> Self {
        self.kwargs = kwargs;
        self
    }
    pub fn kwarg(mut self, key: impl Into<String>, v: impl Into<Value>) -> Self {
        self.kwargs.push((key.into(), v.into()));
        self
    }
    pub fn context(mut self, context: Map) -> Self {
        self.context = context;
        self
    }
    /// This call's timeout instead of the pool's.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
    /// Also send the call's log records (logging, prints, fd output) to this channel:
    /// a bounded `mpsc::Sender` (records that find it full are dropped and counted) or
    /// an `mpsc::UnboundedSender`. Either way a call logs at most
    /// [`LINES_PER_SEC`](crate::LINES_PER_SEC) records and
    /// [`BYTES_PER_SEC`](crate::BYTES_PER_SEC) bytes a second; the rest are dropped and
    /// counted in a record from logger `"snakepit"`.
    pub fn logs(mut self, tx: impl Into<LogSink>) -> Self {
        self.logs = Some(tx.into());
        self
    }
    /// Tags the call with the job run it belongs to: the host handler sees it in each
    /// [`HostRequest`](crate::HostRequest) of the call (for the audit log).
    pub fn run_id(mut self, run_id: impl Into<Arc<str>>) -> Self {
        self.run_id = Some(run_id.into());
        self
    }
}

/// Tells the host handler that a call ended, when dropped.
struct CallEnded<'a> {
    handler: &'a dyn HostHandler,
    pool: &'a str,
    call_id: u64,
}

impl Drop for CallEnded<'_> {
    fn drop(&mut self) {
        self.handler.call_ended(self.pool, self.call_id);
    }
}

/// A pool of supervised Python workers. Cheap to clone; the workers stop when the last
/// clone is dropped (or at [`Pool::shutdown`]).
#[derive(Clone)]
pub struct Pool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    cfg: Arc<PoolConfig>,
    shared: Arc<Shared>,
    closed: AtomicBool,
    next_id: AtomicU64,
    slots: Mutex<Vec<oneshot::Receiver<()>>>,
    launcher: Arc<Launcher>,
    /// Set once a shutdown has stopped every worker.
    stopped: watch::Sender<bool>,
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        self.shared
            .phase
            .send_replace(Phase::Draining(Instant::now()));
    }
}

/// What one worker slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Its worker is being started.
    Starting,
    /// Its worker is ready and waiting for a call.
    Idle,
    /// Its worker is in a call (or being cancelled or retired).
    Busy,
    /// Its workers keep failing; it waits before the next start.
    Backoff,
    /// The pool stopped it.
    Stopped,
}

impl WorkerState {
    /// `"starting"`, `"idle"`, `"busy"`, `"backoff"` or `"stopped"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Backoff => "backoff",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A snapshot of one worker slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The slot, `0..workers`.
    pub slot: usize,
    pub state: WorkerState,
    /// The live worker's pid.
    pub pid: Option<u32>,
    /// Calls the live worker has finished.
    pub calls: u64,
    /// The live worker's resident size in bytes.
    pub rss: Option<u64>,
    /// How long the live worker has been ready.
    pub uptime: Option<Duration>,
    /// Workers this slot replaced since the pool started.
    pub restarts: u64,
}

/// A snapshot of a pool's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub name: String,
    pub generation: u64,
    pub workers: usize,
    /// Workers started and ready (idle or busy).
    pub live: usize,
    /// Slots whose worker keeps failing to start or dying young.
    pub failing: usize,
    /// Workers replaced since the pool started.
    pub restarts: u64,
    /// Calls waiting for a worker.
    pub queued: usize,
    /// One entry per worker slot, in slot order.
    pub slots: Vec<WorkerStatus>,
    /// What confines the workers.
    pub isolation: Enforcement,
}

impl Pool {
    /// A builder with every setting at its default.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }

    async fn start(cfg: Arc<PoolConfig>, mode: LaunchMode) -> Result<Pool, BuildError> {
        let shared = Arc::new(Shared {
            events: broadcast::channel(1024).0,
            phase: watch::channel(Phase::Running).0,
            live: AtomicUsize::new(0),
            failing: AtomicUsize::new(0),
            restarts: AtomicU64::new(0),
            last_spawn_error: Mutex::new(None),
            dispatch: Dispatch::default(),
            slots: (0..cfg.workers).map(|_| SlotInfo::default()).collect(),
        });
        let launcher = Arc::new(Launcher::start(mode, cfg.clone()).await?);
        let mut ready_rx = Vec::new();
        let mut slots = Vec::new();
        for slot in 0..cfg.workers {
            let (ready_tx, ready) = oneshot::channel();
            let (done_tx, done) = oneshot::channel();
            worker::spawn_slot(
                worker::Slot {
                    id: slot,
                    cfg: cfg.clone(),
                    shared: shared.clone(),
                    launcher: launcher.clone(),
                },
                ready_tx,
                done_tx,
            )
            .map_err(|e| BuildError::Spawn(SpawnError::Os(format!("thread: {e}"))))?;
            ready_rx.push(ready);
            slots.push(done);
        }
        let pool = Pool {
            inner: Arc::new(PoolInner {
                cfg,
                shared,
                closed: AtomicBool::new(false),
                next_id: AtomicU64::new(1),
                slots: Mutex::new(slots),
                launcher,
                stopped: watch::channel(false).0,
            }),
        };
        // Every slot reports its first start; the pool is usable if one worker is.
        let mut first_error = None;
        let mut any = false;
        for r in ready_rx {
            match r.await {
                Ok(Ok(())) => any = true,
                Ok(Err(e)) => first_error = first_error.or(Some(e)),
                Err(_) => {}
            }
        }
        match (any, first_error) {
            (false, Some(e)) => Err(BuildError::Spawn(e)),
            (false, None) => Err(BuildError::Spawn(SpawnError::Os(
                "no worker started".into(),
            ))),
            _ => Ok(pool),
        }
    }

    /// Calls `reference` with `kwargs` and `context` (merged as keyword arguments).
    pub async fn call(
        &self,
        reference: &str,
        kwargs: Map,
        context: Map,
    ) -> Result<RawValue, CallError> {
        self.submit(Call::new(reference).kwargs(kwargs).context(context))
            .await
    }

    /// Makes a call. Dropping the returned future cancels the call in its worker.
    pub async fn submit(&self, call: Call) -> Result<RawValue, CallError> {
        self.submit_ref(&call).await
    }

    /// [`Pool::submit`] of a call the caller keeps: one it may make again elsewhere
    /// (after `ShutDown`) without copying its kwargs.
    pub async fn submit_ref(&self, call: &Call) -> Result<RawValue, CallError> {
        self.submit_call(call, false).await.result
    }

    /// [`Pool::submit_ref`], with what the call cost: its CPU time, the worker's peak
    /// resident size, its host requests and its wall time (see [`CallUsage`](crate::CallUsage)).
    ///
    /// Only a measured call costs the worker its CPU readings (a syscall or two, a few
    /// microseconds): a call made with `submit_ref` costs nothing for accounting.
    pub async fn submit_measured(&self, call: &Call) -> Measured {
        self.submit_call(call, true).await
    }

    async fn submit_call(&self, call: &Call, measure: bool) -> Measured {
        let inner = &self.inner;
        if let Err(e) = check_reference(&call.reference) {
            return Measured::unmeasured(Err(e));
        }
        let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = encode_call(id, &call.reference, &call.kwargs, &call.context, measure);
        // However the call ends (answer, timeout, crash, or the caller dropping it), the
        // handler hears of it: it rolls back what the call left open.
        let _ended = CallEnded {
            handler: &*self.inner.cfg.handler,
            pool: &self.inner.cfg.name,
            call_id: id,
        };
        self.enqueue(
            id,
            call.reference.clone(),
            frame,
            call.timeout,
            call.logs.clone(),
            call.run_id.clone(),
        )
        .await
    }

    /// Checks, in a worker, that `reference` imports and accepts `kwargs` (names and
    /// simple annotations) with a context that has `context_keys`, without calling it.
    pub async fn validate(
        &self,
        reference: &str,
        kwargs: Map,
        context_keys: Vec<String>,
    ) -> Result<(), CallError> {
        check_reference(reference)?;
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let frame = ToWorker::Validate {
            call_id: id,
            reference: reference.to_owned(),
            kwargs,
            context_keys,
        }
        .encode();
        self.enqueue(id, reference.to_owned(), frame, None, None, None)
            .await
            .result
            .map(drop)
    }

    async fn enqueue(
        &self,
        id: u64,
        reference: String,
        frame: Vec<u8>,
        timeout: Option<Duration>,
        logs: Option<LogSink>,
        run_id: Option<Arc<str>>,
    ) -> Measured {
        let unmeasured = Measured::unmeasured;
        let inner = &self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return unmeasured(Err(CallError::ShutDown));
        }
        if frame.len() - 4 > inner.cfg.frame_limit {
            return unmeasured(Err(CallError::Unserializable(format!(
                "the call's arguments take {} bytes, over the frame limit of {}",
                frame.len() - 4,
                inner.cfg.frame_limit
            ))));
        }
        if inner.shared.live.load(Ordering::Acquire) == 0
            && inner.shared.failing.load(Ordering::Acquire) == inner.cfg.workers
        {
            let e = inner.shared.last_spawn_error.lock().recover().clone();
            if let Some(e) = e {
                return unmeasured(Err(CallError::Unavailable(e)));
            }
        }
        let timeout = timeout.unwrap_or(inner.cfg.call_timeout);
        let deadline = Instant::now() + timeout;
        let job = Job {
            id,
            reference: reference.into(),
            frame,
            deadline,
            timeout,
            logs,
            run_id,
        };
        let dispatch = &inner.shared.dispatch;
        let lease = match dispatch.checkout(inner.cfg.queue_limit) {
            Checkout::Ready(lease) => lease,
            Checkout::Full => return unmeasured(Err(CallError::Overloaded(inner.cfg.queue_limit))),
            Checkout::Closed => return unmeasured(Err(CallError::ShutDown)),
            // Waiting for a worker counts against the call's timeout.
            Checkout::Wait(rx) => {
                let mut waiting = Waiting::new(rx, dispatch);
                match tokio::time::timeout_at(deadline.into(), waiting.lease()).await {
                    Ok(Some(lease)) => lease,
                    Ok(None) => return unmeasured(Err(CallError::ShutDown)),
                    Err(_) => return unmeasured(Err(CallError::Timeout(timeout))),
                }
            }
        };
        crate::dispatch::call_on(&inner.cfg, dispatch, lease, &job).await
    }

    /// Subscribes to worker lifecycle events (from now on).
    pub fn events(&self) -> broadcast::Receiver<WorkerEvent> {
        self.inner.shared.events.subscribe()
    }

    /// The CPU worker slot `slot` is pinned to (`PoolBuilder::pin_workers`): a caller
    /// thread pinned there talks to that worker without crossing CPUs.
    pub fn worker_cpu(&self, slot: usize) -> Option<usize> {
        self.inner.cfg.cpu_of(slot)
    }

    /// The pool's health right now, with each worker's state, pid, calls, resident size
    /// (read from `/proc`), uptime and restarts.
    pub fn status(&self) -> PoolStatus {
        let i = &self.inner;
        let (idle, served) = i.shared.dispatch.snapshot();
        let slots = i
            .shared
            .slots
            .iter()
            .enumerate()
            .map(|(slot, info)| {
                let life = *info.0.lock().recover();
                let state = match life.live {
                    Some(_) if idle.contains(&slot) => WorkerState::Idle,
                    Some(_) => WorkerState::Busy,
                    None if life.stopped => WorkerState::Stopped,
                    None if life.backoff => WorkerState::Backoff,
                    None => WorkerState::Starting,
                };
                let pid = life.live.map(|(pid, _)| pid);
                WorkerStatus {
                    slot,
                    state,
                    pid,
                    calls: if pid.is_some() {
                        served.get(slot).copied().unwrap_or(0)
                    } else {
                        0
                    },
                    rss: pid
                        .and_then(|p| crate::process::rss(nix::unistd::Pid::from_raw(p as i32))),
                    uptime: life.live.map(|(_, since)| since.elapsed()),
                    restarts: life.restarts,
                }
            })
            .collect();
        PoolStatus {
            name: i.cfg.name.to_string(),
            generation: i.cfg.generation,
            workers: i.cfg.workers,
            live: i.shared.live.load(Ordering::Acquire),
            failing: i.shared.failing.load(Ordering::Acquire),
            restarts: i.shared.restarts.load(Ordering::Acquire),
            queued: i.shared.dispatch.waiting(),
            slots,
            isolation: i.cfg.confine.report.clone(),
        }
    }

    /// The real interpreter the workers run.
    pub fn python(&self) -> &std::path::Path {
        &self.inner.cfg.python
    }

    /// Stops taking calls, lets the queued and running ones finish for up to `deadline`,
    /// then stops the workers (SHUTDOWN, then SIGTERM, then SIGKILL of their process
    /// groups after the kill grace). Calls still unfinished then fail with `ShutDown`.
    ///
    /// Called again while a shutdown is under way, it brings the deadline forward (never
    /// back) and returns when the workers are stopped.
    pub async fn shutdown(&self, deadline: Duration) {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        let until = Instant::now() + deadline;
        inner.shared.phase.send_if_modified(|phase| {
            let sooner = !matches!(*phase, Phase::Draining(t) if t <= until);
            if sooner {
                *phase = Phase::Draining(until);
            }
            sooner
        });
        inner.shared.dispatch.drain();
        let slots = std::mem::take(&mut *inner.slots.lock().recover());
        if slots.is_empty() {
            // Another shutdown is stopping the workers: wait for it.
            let _ = inner.stopped.subscribe().wait_for(|stopped| *stopped).await;
            return;
        }
        for done in slots {
            let _ = done.await;
        }
        inner.shared.dispatch.fail_waiters();
        inner.launcher.close();
        inner.cfg.confine.release().await;
        inner.stopped.send_replace(true);
    }
}

fn check_reference(reference: &str) -> Result<(), CallError> {
    let ok = reference.split_once(':').is_some_and(|(module, func)| {
        let ident = |s: &str| {
            !s.is_empty()
                && !s.starts_with(|c: char| c.is_ascii_digit())
                && s.chars().all(|c| c.is_alphanumeric() || c == '_')
        };
        module.split('.').all(ident) && func.split('.').all(ident)
    });
    if ok {
        Ok(())
    } else {
        Err(CallError::BadReference {
            reference: reference.to_owned(),
            message: "a reference is \"module.path:function\"".into(),
        })
    }
}
