//! [`PoolBuilder`]: a pool's settings, checked and turned into a started [`Pool`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use snakepit_proto::DEFAULT_FRAME_LIMIT;

use crate::config::{PoolConfig, DEFAULT_ENV};
use crate::error::{BuildError, SpawnError};
use crate::host::{HostHandler, NoHandler};
use crate::isolation::{harden_supervisor, Confinement, Isolation};
use crate::launcher::LaunchMode;
use crate::pool::Pool;

impl Pool {
    /// A builder with every setting at its default.
    pub fn builder() -> PoolBuilder {
        PoolBuilder::default()
    }
}

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
