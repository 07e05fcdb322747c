//! The plugin host: an install (the "apps dir" of README, "Plugin host") opened by one
//! call. It reads app.toml against its full schema (README, "From the command line"),
//! starts the pools ("default" plus each `[pools.NAME]`), routes each call to the pool of
//! its package, checks every reference that app.toml names, and serves the extension points
//! (README, "Plugin host"): the password validator and the dispatch hooks.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use std::time::Duration;
//! use snakepit::{Map, Value};
//! use snakepit_host::Host;
//!
//! // An install: app.toml and a plugin package under plugins/.
//! let apps = tempfile::tempdir()?;
//! let pkg = apps.path().join("plugins/billing");
//! std::fs::create_dir_all(&pkg)?;
//! std::fs::write(pkg.join("__init__.py"), "")?;
//! std::fs::write(pkg.join("pricing.py"), "def quote(*, amount: str, **ctx):\n    return {'net': amount}\n")?;
//! std::fs::write(apps.path().join("app.toml"), "[runtime]\nworkers = 1\n")?;
//!
//! let host = Host::open(apps.path()).await?; // app.toml, the interpreter, the pools
//! assert!(host.check().await.is_empty()); // every reference app.toml names, in a worker
//! let kwargs: Map = vec![("amount".into(), Value::from("100"))];
//! let value = host.call("billing.pricing:quote", kwargs, Map::new()).await?;
//! println!("{}", value.decode()?);
//! host.shutdown(Duration::from_secs(5)).await;
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! `check` also reads every jobs.toml (`<apps>/jobs.toml`, `<apps>/plugins/<pkg>/jobs.toml`)
//! against its schema (README, "Jobs") and validates each python step's callable and kwargs in
//! a worker; running jobs belongs to the jobs feature. connectors.toml is loaded with
//! app.toml (see `snakepit-connectors`): every pool serves its connectors, and `check`
//! prepares every named query on its database.
//!
//! Hot restart: [`Host::reload`] starts a new generation of every pool beside the serving
//! one, validates it, and only then routes new calls to it while the old generation
//! finishes its calls; no call fails because of a reload. [`Watcher`] reloads on a pip
//! upgrade or an edit under `plugins/`; [`control`] is the control socket of
//! `snakepit serve`; [`Host::status`] reports pools, workers and the last reload.
//! [`Host::events`] merges the worker events of every generation's pools, and
//! [`Host::observe_calls`] tells a [`CallObserver`] of each call as it ends: what the
//! web console's metrics and crash list read. [`Install::http`] resolves `[runtime]
//! http` and `http_token`.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use snakepit::{Map, Value};
//! use snakepit_host::{Dispatch, Host, PasswordError};
//!
//! let host = Host::open("liberty-apps").await?;
//!
//! // Every reference app.toml names, checked in a worker; all problems at once.
//! for p in host.check().await {
//!     eprintln!("{}: {}: {}", p.file.display(), p.entry, p.reason);
//! }
//!
//! // A call goes to the pool of its package ([plugins.PKG] pool, else [plugins."*"]).
//! let kwargs: Map = vec![("amount".into(), Value::from("100"))];
//! let value = host.call("billing.pricing:quote", kwargs, Map::new()).await?;
//! println!("{}", value.decode()?);
//!
//! match host.validate_password("ada", "hunter2", None, None).await {
//!     Ok(()) => println!("accepted"),
//!     Err(PasswordError::Rejected(reason)) => println!("rejected: {reason}"),
//!     Err(e) => eprintln!("{e}"),
//! }
//!
//! let payload: Map = vec![("screen".into(), Value::from("invoices"))];
//! let outcome: Dispatch = host.dispatch("screen.before_save", payload, None).await;
//! if let Some(veto) = &outcome.veto {
//!     println!("vetoed by {}: {}", veto.reference, veto.message);
//! }
//!
//! // A new generation of every pool, validated before it takes a call.
//! match host.reload("deploy").await {
//!     Ok(generation) => println!("generation {generation} serves"),
//!     Err(problems) => problems.iter().for_each(|p| eprintln!("{p}")),
//! }
//! println!("{}", host.status());
//! host.shutdown(Duration::from_secs(10)).await;
//! # Ok(()) }
//! ```

mod config;
pub mod control;
mod generation;
mod jobs;
mod status;
pub mod testing;
mod watch;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant, SystemTime};

use futures_util::future::join_all;
use snakepit::sync::Recover;
use snakepit::{Call, CallError, LogSink, Map, Measured, Pool, RawValue, Value, WorkerEvent};
use tokio::sync::broadcast;

use generation::Generation;

pub use config::{
    parse_app_toml, parse_duration, parse_size, AppToml, Auth, HttpSettings, Install, Isolation,
    PluginGrants, PoolSettings, RuntimeTable, EVENTS, MIN_HTTP_TOKEN,
};
pub use jobs::{
    check_cron, explain_templates, jobs_files, load_jobs, parse_cron, parse_timezone,
    timezone_problem, to_value, Backoff, Job, JobsFile, JobsToml, Step, StepCheck,
    JOB_STEP_CONTEXT, TEMPLATES,
};
/// The connectors every pool serves (`Install::connectors`): audit sink, problems, config.
pub use snakepit_connectors as connectors;
pub use status::{
    format_time, EnforcedReport, HostStatus, IsolationReport, JobReport, LandlockReport, LastRun,
    PoolReport, ReloadReport, RetiringStatus, WorkerReport,
};
pub use watch::{site_packages, Watcher, DEFAULT_QUIET};

/// The context of a one-off call (`snakepit call`, local or `--remote`): the given keys,
/// plus `connectors` and `pools` when absent, so that a job step's plugin can be tried by
/// hand (the worker makes them the registries; a function that does not declare them and
/// has no `**kwargs` does not receive them).
pub fn call_context(mut context: Map) -> Map {
    for key in ["connectors", "pools"] {
        if !context.iter().any(|(k, _)| k == key) {
            context.push((key.to_owned(), Value::Nil));
        }
    }
    context
}

/// Told of every call a [`Host`] makes, as it ends (see [`Host::observe_calls`]). Called
/// on the caller's task: do not block.
pub trait CallObserver: Send + Sync + 'static {
    /// A call in pool `pool` ended after `took`: `outcome` is `ok` or the error's
    /// [`CallError::kind`].
    fn call_ended(&self, pool: &str, outcome: &str, took: Duration);
}

/// The context keys the password validator receives (README, "Plugin host").
pub const PASSWORD_CONTEXT: [&str; 3] = ["username", "password", "existing_user"];

/// Why an install could not be opened.
#[derive(Debug, Clone, thiserror::Error)]
pub enum HostError {
    /// A file of the install is unreadable, not valid TOML or not the schema.
    #[error("{}: {reason}", file.display())]
    Config { file: PathBuf, reason: String },
    /// Bad input the user fixes: a missing apps dir, an unusable interpreter.
    #[error("{0}")]
    Usage(String),
    /// The workers could not run.
    #[error("{0}")]
    Pool(String),
    /// References in the install's TOML files do not load (every problem, as `check`
    /// reports them): a load-time error, before any call.
    #[error("{}", invalid(.0))]
    Invalid(Vec<Problem>),
}

impl HostError {
    /// The problems of an install that could not be loaded or started, as a reload
    /// reports them: each names a file (`app_toml` when the error names none).
    pub fn problems(self, app_toml: &Path) -> Vec<Problem> {
        let problem = |file: PathBuf, reason: String| Problem {
            file,
            entry: String::new(),
            reason,
        };
        match self {
            HostError::Config { file, reason } => vec![problem(file, reason)],
            HostError::Usage(m) | HostError::Pool(m) => vec![problem(app_toml.to_owned(), m)],
            HostError::Invalid(problems) => problems,
        }
    }
}

fn invalid(problems: &[Problem]) -> String {
    let mut text = format!(
        "the install has {} problem{} (fix them, then run `snakepit check`):",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" }
    );
    for p in problems {
        text.push_str(&format!(
            "\n  {}: {}: {}",
            p.file.display(),
            p.entry,
            p.reason
        ));
    }
    text
}

/// One problem `check` found: the file, the entry that names the reference, the reason.
/// A problem found before any reference could be checked (a TOML file that does not
/// load, an interpreter that does not start) has an empty entry.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Problem {
    pub file: PathBuf,
    /// e.g. `[auth] password_validator`, `[hooks] "screen.before_save"[0]`,
    /// `[[jobs]] "reissue-monthly-drafts" step "reissue-drafts"`.
    pub entry: String,
    pub reason: String,
}

/// How the password validator answered when it did not accept.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PasswordError {
    /// It raised `ValueError`; the message is the reason.
    #[error("{0}")]
    Rejected(String),
    /// app.toml names no `[auth] password_validator`.
    #[error("app.toml has no [auth] password_validator")]
    NotConfigured,
    /// It could not be called, or raised something other than `ValueError`.
    #[error("the password validator {reference} failed: {error}")]
    Failed { reference: String, error: CallError },
}

/// A `before_*` hook that raised: the action is vetoed.
#[derive(Debug, Clone)]
pub struct Veto {
    pub reference: String,
    pub message: String,
}

/// What `dispatch` did.
#[derive(Debug, Clone, Default)]
pub struct Dispatch {
    /// The hooks that were called and returned, in order.
    pub passed: Vec<String>,
    /// Set when a `before_*` hook failed; the hooks after it were not called.
    pub veto: Option<Veto>,
    /// Hooks of other events that failed (logged; the others still ran).
    pub failed: Vec<(String, CallError)>,
}

/// An open install: its settings and its running pools, one generation at a time.
///
/// [`Host::reload`] loads the install again, starts a new generation of every pool beside
/// the serving one, validates every reference in it, and only then routes new calls to it;
/// the old generation finishes its calls in hand and exits. A call that the old
/// generation refused because it had begun to drain is made again on the new one, so no
/// call fails because of a reload.
pub struct Host {
    /// The apps dir and the `--python` override, to load the install again.
    dir: PathBuf,
    python: Option<PathBuf>,
    current: RwLock<Arc<Generation>>,
    /// One reload at a time; `true` once the host is shut down.
    reloading: tokio::sync::Mutex<bool>,
    /// The number the next generation gets (a refused one uses its number up).
    next_number: AtomicU64,
    /// Replaced generations finishing their calls in hand.
    retiring: Mutex<Vec<Retiring>>,
    log: Mutex<ReloadLog>,
    /// Called with each new generation's install before it takes calls.
    on_generation: Mutex<Vec<GenerationHook>>,
    /// The worker events of every generation's pools (see [`Host::events`]).
    events: broadcast::Sender<WorkerEvent>,
    calls: OnceLock<Arc<dyn CallObserver>>,
}

/// See [`Host::on_new_generation`].
type GenerationHook = Arc<dyn Fn(&Install) + Send + Sync>;

struct Retiring {
    generation: Arc<Generation>,
    done: tokio::task::JoinHandle<()>,
}

#[derive(Default)]
struct ReloadLog {
    reloads: u64,
    failed: u64,
    last: Option<ReloadReport>,
}

/// How long a replaced generation may take to finish its calls in hand at most. Every
/// call has its own timeout (and the kill grace after it), so a generation normally
/// retires as soon as its last call ends; this is only a backstop.
const RETIRE_BACKSTOP: Duration = Duration::from_secs(24 * 3600);

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let g = self.current();
        f.debug_struct("Host")
            .field("dir", &self.dir)
            .field("generation", &g.number)
            .field("pools", &g.pools.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Host {
    /// Opens the install in `apps_dir`: reads app.toml, resolves the interpreter (README,
    /// "From the command line"), starts the pools and validates every reference its TOML
    /// files name (see [`Host::check`]); any problem fails the open with all of them.
    pub async fn open(apps_dir: impl AsRef<Path>) -> Result<Host, HostError> {
        Host::start_checked(Install::load(Some(apps_dir.as_ref()), None)?).await
    }

    /// [`Host::start`], then [`Host::check`]: an install with problems does not open.
    pub async fn start_checked(install: Install) -> Result<Host, HostError> {
        let began = std::time::Instant::now();
        let host = Host::start(install).await?;
        let started = began.elapsed();
        let problems = host.check().await;
        // The split of `run`'s start-up (see the CLI's `-vv`).
        tracing::debug!(target: "snakepit::timing", pools_ms = format!("{:.1}", started.as_secs_f64() * 1e3),
            validation_ms = format!("{:.1}", (began.elapsed() - started).as_secs_f64() * 1e3), "pools started, references validated");
        if problems.is_empty() {
            return Ok(host);
        }
        host.shutdown(Duration::from_secs(2)).await;
        Err(HostError::Invalid(problems))
    }

    /// Starts the pools of an already loaded install (generation 1): "default" with the
    /// `[runtime]` settings, and one per `[pools.NAME]`. Does not validate references:
    /// `check` does. A reload loads the install again from the same apps dir, with the
    /// same `--python` if `install` was loaded with one.
    pub async fn start(install: Install) -> Result<Host, HostError> {
        let dir = install.dir.clone();
        // Install::load records an interpreter given explicitly as coming from "--python".
        let python = (install.python_from == "--python").then(|| install.python.clone());
        let generation = Generation::start(install, 1).await?;
        let events = broadcast::channel(1024).0;
        generation.forward_events(&events);
        Ok(Host {
            dir,
            python,
            current: RwLock::new(Arc::new(generation)),
            reloading: tokio::sync::Mutex::new(false),
            next_number: AtomicU64::new(2),
            retiring: Mutex::new(Vec::new()),
            log: Mutex::new(ReloadLog::default()),
            on_generation: Mutex::new(Vec::new()),
            events,
            calls: OnceLock::new(),
        })
    }

    /// The worker events (ready, exited with its stderr tail, retired, backoff) of every
    /// pool of the serving generation and of each one a reload starts. A receiver that
    /// falls more than 1024 events behind loses the oldest (`Lagged`).
    pub fn events(&self) -> broadcast::Receiver<WorkerEvent> {
        self.events.subscribe()
    }

    /// Tells `observer` of every call the host makes from now on (once per host: a
    /// second observer is refused and returned).
    pub fn observe_calls(
        &self,
        observer: Arc<dyn CallObserver>,
    ) -> Result<(), Arc<dyn CallObserver>> {
        self.calls.set(observer)
    }

    fn current(&self) -> Arc<Generation> {
        self.current.read().recover().clone()
    }

    /// Calls `hook` with the serving generation's install now, and with each new
    /// generation's install after its checks passed and before it takes calls: what an
    /// embedder attaches to an install (the run history's audit sink on its connectors,
    /// the scheduler's jobs) follows every reload.
    pub fn on_new_generation(&self, hook: impl Fn(&Install) + Send + Sync + 'static) {
        hook(&self.install());
        self.on_generation.lock().recover().push(Arc::new(hook));
    }

    /// The install the serving generation runs.
    pub fn install(&self) -> Arc<Install> {
        self.current().install.clone()
    }

    /// The serving generation's number: 1 at start, higher after each successful reload.
    pub fn generation(&self) -> u64 {
        self.current().number
    }

    /// The name of the pool that runs `reference`'s package: `[plugins.PKG] pool`, else
    /// `[plugins."*"] pool`, else "default".
    pub fn pool_name(&self, reference: &str) -> String {
        self.install().pool_for(reference).0.to_owned()
    }

    /// The serving generation's pool that runs `reference`.
    pub fn pool_for(&self, reference: &str) -> Pool {
        self.current().pool_for(reference).clone()
    }

    /// A pool of the serving generation, by name.
    pub fn pool(&self, name: &str) -> Option<Pool> {
        self.current().pools.get(name).cloned()
    }

    /// Calls `reference` in the pool of its package, with `kwargs` and `context`.
    pub async fn call(
        &self,
        reference: &str,
        kwargs: Map,
        context: Map,
    ) -> Result<RawValue, CallError> {
        self.submit(reference, |c| c.kwargs(kwargs).context(context))
            .await
    }

    /// Makes a call of `reference` in the pool of its package; `options` sets the rest
    /// of the [`Call`] (timeout, logs). (`Call` does not tell its reference, hence the
    /// reference apart.)
    ///
    /// A call refused with `ShutDown` by a generation that a reload replaced meanwhile is
    /// made again on the serving generation.
    pub async fn submit(
        &self,
        reference: &str,
        options: impl FnOnce(Call) -> Call,
    ) -> Result<RawValue, CallError> {
        let call = options(Call::new(reference));
        self.submit_from(self.current(), reference, call, false)
            .await
            .result
    }

    /// [`Host::submit`], with what the call cost ([`snakepit::CallUsage`]).
    pub async fn submit_measured(
        &self,
        reference: &str,
        options: impl FnOnce(Call) -> Call,
    ) -> Measured {
        let call = options(Call::new(reference));
        self.submit_from(self.current(), reference, call, true)
            .await
    }

    /// Makes `call` on `generation`, then again on the serving generation for as long as
    /// a generation that was replaced answers `ShutDown`.
    async fn submit_from(
        &self,
        mut generation: Arc<Generation>,
        reference: &str,
        call: Call,
        measure: bool,
    ) -> Measured {
        loop {
            let began = Instant::now();
            let pool = generation.pool_for(reference);
            let measured = if measure {
                pool.submit_measured(&call).await
            } else {
                Measured {
                    result: pool.submit_ref(&call).await,
                    usage: None,
                }
            };
            if let Some(o) = self.calls.get() {
                let outcome = match &measured.result {
                    Ok(_) => "ok",
                    Err(e) => e.kind(),
                };
                o.call_ended(
                    generation.install.pool_name(reference),
                    outcome,
                    began.elapsed(),
                );
            }
            match measured.result {
                Err(CallError::ShutDown) => {
                    let current = self.current();
                    if current.number == generation.number {
                        return measured;
                    }
                    tracing::debug!(
                        reference,
                        generation = generation.number,
                        "the generation is retiring; calling the next one"
                    );
                    generation = current;
                }
                _ => return measured,
            }
        }
    }

    /// Validates, in a worker of the serving generation, every reference app.toml and
    /// the jobs.toml files name, prepares every named query of connectors.toml on its
    /// database, and returns every problem.
    ///
    /// The password validator is checked against its context keys (username, password,
    /// existing_user). A hook's payload keys are not known before dispatch, so a hook is
    /// checked with no context: it must import, exist and be callable; a required
    /// parameter it declares is accepted (the payload is expected to carry it). Each job
    /// python step is checked against the job step context keys ([`JOB_STEP_CONTEXT`])
    /// and its kwargs, after the jobs.toml files are read against their schema (see
    /// [`load_jobs`]).
    pub async fn check(&self) -> Vec<Problem> {
        self.current().check().await
    }

    /// Loads the install again (app.toml, jobs.toml files, the interpreter), starts a new
    /// generation of every pool, validates every reference in it (as [`Host::check`]),
    /// and only then routes new calls to it; the replaced generation finishes its calls
    /// in hand and exits in the background. `trigger` says why, in logs and
    /// [`Host::status`].
    ///
    /// Returns the new generation's number, or every problem found: then the serving
    /// generation keeps serving. Reloads run one at a time.
    pub async fn reload(&self, trigger: &str) -> Result<u64, Vec<Problem>> {
        let stopped = self.reloading.lock().await;
        if *stopped {
            return Err(vec![Problem {
                file: self.dir.clone(),
                entry: String::new(),
                reason: "the host is shut down".into(),
            }]);
        }
        let began = Instant::now();
        let at = SystemTime::now();
        let number = self.next_number.fetch_add(1, Ordering::Relaxed);
        tracing::info!(generation = number, trigger, "reloading");
        let outcome = self.next_generation(number).await;
        let took = began.elapsed();
        let mut report = ReloadReport {
            trigger: trigger.to_owned(),
            at: format_time(at),
            took_ms: took.as_millis() as u64,
            generation: number,
            serving: outcome.is_ok(),
            problems: Vec::new(),
        };
        let result = match outcome {
            Ok(generation) => {
                generation.forward_events(&self.events);
                let hooks = self.on_generation.lock().recover().clone();
                for hook in hooks {
                    hook(&generation.install);
                }
                let new = Arc::new(generation);
                let old = std::mem::replace(&mut *self.current.write().recover(), new);
                tracing::info!(generation = number, ?took, "the new generation serves");
                let retired = old.clone();
                let done = tokio::spawn(async move {
                    retired.shutdown(RETIRE_BACKSTOP).await;
                    tracing::info!(generation = retired.number, "generation retired");
                });
                let mut retiring = self.retiring.lock().recover();
                retiring.retain(|r| !r.done.is_finished());
                retiring.push(Retiring {
                    generation: old,
                    done,
                });
                self.log.lock().recover().reloads += 1;
                Ok(number)
            }
            Err(problems) => {
                for p in &problems {
                    tracing::error!(file = %p.file.display(), entry = %p.entry, reason = %p.reason, "reload refused");
                }
                report.problems = problems.clone();
                self.log.lock().recover().failed += 1;
                Err(problems)
            }
        };
        self.log.lock().recover().last = Some(report);
        drop(stopped);
        result
    }

    /// Loads, starts and checks generation `number`.
    async fn next_generation(&self, number: u64) -> Result<Generation, Vec<Problem>> {
        let app_toml = self.dir.join("app.toml");
        let install = Install::load(Some(&self.dir), self.python.as_deref())
            .map_err(|e| e.problems(&app_toml))?;
        Generation::forget_bytecode(&self.dir.join("plugins"));
        let generation = Generation::start(install, number)
            .await
            .map_err(|e| e.problems(&app_toml))?;
        let problems = generation.check().await;
        if problems.is_empty() {
            Ok(generation)
        } else {
            generation.shutdown(Duration::from_secs(2)).await;
            Err(problems)
        }
    }

    /// The serving generation's pools and workers, the generations still finishing their
    /// calls, and the last reload with its problems.
    pub fn status(&self) -> HostStatus {
        let current = self.current();
        let retiring = self
            .retiring
            .lock()
            .recover()
            .iter()
            .filter(|r| !r.done.is_finished())
            .map(|r| RetiringStatus {
                generation: r.generation.number,
                pools: r.generation.pools.values().map(PoolReport::of).collect(),
            })
            .collect();
        let log = self.log.lock().recover();
        HostStatus {
            apps: self.dir.clone(),
            generation: current.number,
            since: format_time(current.started),
            pools: current.pools.values().map(PoolReport::of).collect(),
            retiring,
            reloads: log.reloads,
            failed_reloads: log.failed,
            last_reload: log.last.clone(),
        }
    }

    /// Calls `[auth] password_validator` with username, password and existing_user:
    /// returning accepts, `ValueError` rejects with its message. The password is never
    /// logged.
    ///
    /// The validator's log records and prints go to `logs` too, when given.
    pub async fn validate_password(
        &self,
        username: &str,
        password: &str,
        existing_user: Option<Value>,
        logs: Option<LogSink>,
    ) -> Result<(), PasswordError> {
        let reference = self
            .install()
            .config
            .auth
            .password_validator
            .clone()
            .ok_or(PasswordError::NotConfigured)?;
        let ctx: Map = vec![
            ("username".into(), Value::from(username)),
            ("password".into(), Value::from(password)),
            ("existing_user".into(), existing_user.unwrap_or(Value::Nil)),
        ];
        let call = |c: Call| {
            let c = c.context(ctx);
            match logs {
                Some(l) => c.logs(l),
                None => c,
            }
        };
        match self.submit(&reference, call).await {
            Ok(_) => Ok(()),
            Err(CallError::Raised(e)) if e.type_name == "ValueError" => {
                Err(PasswordError::Rejected(e.message))
            }
            Err(error) => Err(PasswordError::Failed { reference, error }),
        }
    }

    /// Calls the hooks of `event` in order, with the payload's keys as their context. In
    /// a `before_*` event the first hook that fails vetoes (the rest are not called);
    /// in any other event a failing hook is logged and reported and the rest still run.
    /// The hooks' log records and prints go to `logs` too, when given.
    pub async fn dispatch(&self, event: &str, payload: Map, logs: Option<LogSink>) -> Dispatch {
        let mut out = Dispatch::default();
        let install = self.install();
        let Some(hooks) = install.config.hooks.get(event) else {
            return out;
        };
        let before = event
            .rsplit('.')
            .next()
            .unwrap_or(event)
            .starts_with("before_");
        for reference in hooks {
            let call = |c: Call| {
                let c = c.context(payload.clone());
                match &logs {
                    Some(l) => c.logs(l.clone()),
                    None => c,
                }
            };
            match self.submit(reference, call).await {
                Ok(_) => out.passed.push(reference.clone()),
                Err(e) if before => {
                    let message = match &e {
                        CallError::Raised(x) => x.message.clone(),
                        other => other.to_string(),
                    };
                    out.veto = Some(Veto {
                        reference: reference.clone(),
                        message,
                    });
                    break;
                }
                Err(e) => {
                    tracing::warn!(event, reference = %reference, error = %e, "hook failed");
                    out.failed.push((reference.clone(), e));
                }
            }
        }
        out
    }

    /// Stops every pool, giving calls in flight up to `deadline`, including those of
    /// generations still retiring. Reloads are refused from then on.
    pub async fn shutdown(&self, deadline: Duration) {
        *self.reloading.lock().await = true;
        let retiring = std::mem::take(&mut *self.retiring.lock().recover());
        let current = self.current();
        let older = retiring.iter().map(|r| r.generation.shutdown(deadline));
        join_all(older.chain(std::iter::once(current.shutdown(deadline)))).await;
        for r in retiring {
            let _ = r.done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The race `submit` covers, made certain: a call that picked a generation which a
    /// reload then replaced and stopped is made on the serving generation.
    #[tokio::test]
    async fn a_call_refused_by_a_replaced_generation_is_made_on_the_serving_one() {
        let dir = tempfile::tempdir().unwrap();
        let module = dir.path().join("plugins/v.py");
        std::fs::create_dir(module.parent().unwrap()).unwrap();
        std::fs::write(&module, "def version(**ctx):\n    return 1\n").unwrap();
        std::fs::write(dir.path().join("app.toml"), "[runtime]\nworkers = 1\n").unwrap();
        let python = std::env::var_os("SNAKEPIT_PYTHON")
            .map_or_else(|| PathBuf::from("python3"), PathBuf::from);
        let install = Install::load(Some(dir.path()), Some(&python)).unwrap();
        let host = Host::start(install).await.unwrap();
        let old = host.current();
        std::fs::write(&module, "def version(**ctx):\n    return 2\n").unwrap();
        assert_eq!(host.reload("test").await, Ok(2));
        // The replaced generation stops taking calls (this waits for its retirement).
        old.shutdown(Duration::from_secs(5)).await;
        let direct = old
            .pool_for("v:version")
            .submit(Call::new("v:version"))
            .await;
        assert!(matches!(direct, Err(CallError::ShutDown)), "{direct:?}");
        let value = host
            .submit_from(old, "v:version", Call::new("v:version"), false)
            .await
            .result
            .unwrap();
        assert_eq!(value.decode().unwrap(), Value::Int(2));
        host.shutdown(Duration::from_secs(5)).await;
        // Once the host itself is shut down, ShutDown is the answer.
        let after = host.call("v:version", Map::new(), Map::new()).await;
        assert!(matches!(after, Err(CallError::ShutDown)), "{after:?}");
    }
}
