//! Running snakepit jobs (README, "Jobs"): the jobs of an install ([`JobSet`]), the templates
//! of their kwargs ([`TemplateContext`]), the [`Runner`] that runs a job's steps in
//! order with retries and records everything in the run history
//! (`snakepit_state::State`), and the cron [`Scheduler`] that `snakepit serve` runs.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use std::sync::Arc;
//! use snakepit_host::{Host, Install};
//! use snakepit_jobs::{Clock, JobSet, RunRequest, Runner, SystemClock};
//! use snakepit_state::{RunStatus, State, Trigger};
//!
//! // An install with one job of one python step.
//! let apps = tempfile::tempdir()?;
//! let pkg = apps.path().join("plugins/billing");
//! std::fs::create_dir_all(&pkg)?;
//! std::fs::write(pkg.join("__init__.py"), "")?;
//! std::fs::write(pkg.join("invoicing.py"), "def run(*, period, **ctx):\n    return {'period': period}\n")?;
//! std::fs::write(apps.path().join("jobs.toml"), r#"
//!     [[jobs]]
//!     name = "reissue-monthly-drafts"
//!     [[jobs.steps]]
//!     name = "reissue"
//!     type = "python"
//!     callable = "billing.invoicing:run"
//!     kwargs = { period = "${month.previous}" }
//! "#)?;
//!
//! let install = Install::load(Some(apps.path()), None)?;
//! let jobs = JobSet::load(&install).map_err(|p| format!("{p:?}"))?;
//! let state = State::open_for_apps(&install.dir, install.config.runtime.state.as_deref()).await?;
//! let host = Arc::new(Host::start_checked(install).await?);
//! let clock = Arc::new(SystemClock);
//! let runner = Runner::new(host.clone(), state.clone(), clock.clone());
//! let req = RunRequest {
//!     job: "reissue-monthly-drafts".into(),
//!     trigger: Trigger::Manual,
//!     scheduled_for: clock.now(),
//!     params: vec![],
//!     session_user: "ada".into(),
//! };
//! let (_halt, halt_rx) = tokio::sync::watch::channel(None);
//! let (run_id, status) = runner.run(&jobs, req, None, halt_rx).await?;
//! assert_eq!(status, RunStatus::Succeeded);
//! let record = state.run(&run_id).await?.expect("recorded");
//! println!("{}", serde_json::to_string_pretty(&record)?);
//! host.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # })
//! # }
//! ```
//!
//! # Theory of operation
//!
//! A run is first recorded `queued` with its steps `pending` ([`Runner::enqueue`]),
//! then [`Runner::execute`] marks it `running` and calls each step's callable through
//! a [`StepCaller`] (the plugin host's `submit`) with the job-step context (README, "Jobs"):
//! `job_id`, `run_id`, `step_name`, `params`, `step_kwargs`, `previous_step` (the prior
//! step's result), `session_user`, `logger` (the str `job.<job name>`, which the shim
//! turns into a `logging.Logger`), `connectors` and `pools` (nil, which the shim turns
//! into the registries), plus the step's rendered kwargs. The call is tagged with the
//! run id and its log records stream into the run's log (in batches) and to the
//! caller's [`RunEvent`] channel. A scheduled run is queued by the [`Scheduler`] and
//! taken by whichever node's scheduler claims it first ([`Runner::claim`]); a manual
//! run is executed by the process that queued it.
//!
//! A failed attempt is retried when the step has retries left and the failure is one
//! that may pass ([`retryable`]: an exception, a timeout, a lost worker; not a
//! reference that does not bind), after [`backoff_delay`] measured on the [`Clock`].
//! A step that fails after its retries fails the run; later steps are `skipped`.
//!
//! [`AuditLog::attach`] keeps the connectors' audit records (each tagged with the run
//! id of the call that made it) in the same database, table `audit`: a bounded queue
//! and one writer that writes what is queued in one transaction, in order.
//!
//! A run queued with [`enqueue_for_any_node`] (the web console's "Run now") is
//! owned by no one, like a scheduled run, and claimed by whichever node's scheduler
//! looks next ([`Scheduler::wake`] makes this node's look at once), with the params it
//! was queued with. A [`RunObserver`] ([`Scheduler::observe`]) is told of each claim
//! (with the lag behind its due time) and each run's end: the console's metrics.
//! [`job_reports`] is what `snakepit jobs`, `status` and the console show of the jobs.
//!
//! All time goes through the [`Clock`] trait: [`SystemClock`] in production,
//! [`ManualClock`] in tests of backoff and scheduling.
//!
//! # Example: the scheduler in `snakepit serve`
//!
//! ```no_run
//! # async fn demo(host: std::sync::Arc<snakepit_host::Host>, state: snakepit_state::State,
//! #               jobs: snakepit_jobs::JobSet) {
//! use std::sync::Arc;
//! use snakepit_jobs::{Scheduler, SystemClock};
//!
//! let scheduler = Scheduler::new(host, state, Arc::new(SystemClock), jobs);
//! // Fires due jobs until the future completes, then finishes or interrupts runs.
//! scheduler.run(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # }
//! ```

mod audit;
mod clock;
mod jobset;
mod observe;
mod report;
mod runner;
mod scheduler;
mod template;

pub use audit::AuditLog;
pub use clock::{Clock, ManualClock, Sleep, SystemClock};
pub use jobset::{JobDef, JobSet, StepDef};
pub use observe::RunObserver;
pub use report::job_reports;
pub use runner::{
    backoff_delay, enqueue_for_any_node, retryable, step_error, step_usage, Halt, HaltSignal,
    QueuedRun, RunError, RunEvent, RunRequest, Runner, StepCaller, BACKOFF_BASE, BACKOFF_CAP,
    RUNNER_LOGGER,
};
pub use scheduler::{Scheduler, Scheduling, SYSTEM_USER};
pub use template::TemplateContext;
