//! Running one job: its steps in order, each with the job-step context (README, "Jobs"),
//! retried with backoff, every change written to the run history as it happens.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use snakepit::{Call, CallError, CallUsage, LogRecord, Map, Measured, RawValue, Value};
use snakepit_host::{Backoff, Host};
use snakepit_state::{
    Claim, LogLine, NewRun, RunStatus, State, StateError, StepEnd, StepError, StepStatus,
    StepUsage, Trigger,
};
use tokio::sync::{mpsc, oneshot, watch};

use crate::clock::Clock;
use crate::jobset::{JobDef, JobSet, StepDef};
use crate::observe::RunObserver;
use crate::template::TemplateContext;

/// The first retry delay; exponential backoff doubles it per attempt.
pub const BACKOFF_BASE: Duration = Duration::from_secs(2);
/// The longest retry delay.
pub const BACKOFF_CAP: Duration = Duration::from_secs(300);
/// The logger name of the runner's own lines in a run's log stream.
pub const RUNNER_LOGGER: &str = snakepit_state::JOBS_LOGGER;
/// The most log lines written in one transaction.
const LOG_BATCH: usize = 200;
/// A step's log records waiting for the runner, at most.
const STEP_LOG_CHANNEL: usize = 1024;
/// Room that log lines leave in a run's bounded event channel for the other events.
const EVENTS_KEPT_FREE: usize = 64;

/// What runs a step's callable: the plugin host, or whatever wraps it (a host that
/// swaps worker generations on reload). Only `submit` is needed.
pub trait StepCaller: Send + Sync + 'static {
    /// Calls `reference` in the pool of its package; `options` sets the rest of the
    /// call (kwargs, context, timeout, logs, run id).
    fn call_step<'a>(
        &'a self,
        reference: &'a str,
        options: Box<dyn FnOnce(Call) -> Call + Send + 'a>,
    ) -> Pin<Box<dyn Future<Output = Measured> + Send + 'a>>;
}

impl StepCaller for Host {
    fn call_step<'a>(
        &'a self,
        reference: &'a str,
        options: Box<dyn FnOnce(Call) -> Call + Send + 'a>,
    ) -> Pin<Box<dyn Future<Output = Measured> + Send + 'a>> {
        Box::pin(self.submit_measured(reference, options))
    }
}

/// A call's cost as the run history keeps it.
pub fn step_usage(u: &CallUsage) -> StepUsage {
    let us = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    StepUsage {
        wall_us: us(u.wall),
        cpu_user_us: us(u.cpu_user),
        cpu_sys_us: us(u.cpu_sys),
        peak_rss_bytes: i64::try_from(u.peak_rss).unwrap_or(i64::MAX),
        host_requests: i64::from(u.host_requests),
        host_us: us(u.host_time),
    }
}

/// The delay before the attempt after `failed` (1-based): fixed, [`BACKOFF_BASE`]
/// each time; exponential, [`BACKOFF_BASE`] doubled per failed attempt, at most
/// [`BACKOFF_CAP`]. No jitter: runs of one job do not race each other.
pub fn backoff_delay(kind: Backoff, failed: u32) -> Duration {
    match kind {
        Backoff::Fixed => BACKOFF_BASE,
        Backoff::Exponential => {
            let factor = 1u32
                .checked_shl(failed.saturating_sub(1))
                .unwrap_or(u32::MAX);
            BACKOFF_BASE.saturating_mul(factor).min(BACKOFF_CAP)
        }
    }
}

/// Whether a failed attempt is tried again (when retries are left): an exception, a
/// timeout, a lost or unusable worker, a full queue. A reference that does not bind
/// fails at once (it would fail the same way again), and so does a call the pool
/// cancelled.
pub fn retryable(e: &CallError) -> bool {
    !matches!(
        e,
        CallError::BadReference { .. } | CallError::Cancelled | CallError::ShutDown
    )
}

/// A step's error as the run history keeps it.
pub fn step_error(e: &CallError) -> StepError {
    let kind = match e {
        CallError::Raised(x) => {
            return StepError {
                type_name: x.type_name.clone(),
                message: x.message.clone(),
                traceback: Some(x.traceback.clone()).filter(|t| !t.is_empty()),
            }
        }
        CallError::BadReference { .. } => "BadReference",
        CallError::Timeout(_) => "Timeout",
        CallError::WorkerCrashed { .. } => "WorkerCrashed",
        CallError::Overloaded(_) => "Overloaded",
        CallError::Cancelled => "Cancelled",
        CallError::Protocol(_) => "ProtocolError",
        CallError::Unserializable(_) => "Unserializable",
        CallError::Unavailable(_) => "Unavailable",
        CallError::ShutDown => "ShutDown",
    };
    StepError {
        type_name: kind.to_owned(),
        message: e.to_string(),
        traceback: None,
    }
}

/// How a run that is stopped before it ends is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Halt {
    /// On request: `cancelled`.
    Cancel,
    /// By a shutdown: `interrupted`.
    Interrupt,
    /// The run's lease could not be renewed because it is no longer this node's
    /// (another node re-queued it after the lease ran out): the call is cancelled and
    /// the run's end is left to its new owner. The runner sends it itself.
    Lost,
}

impl Halt {
    fn status(self) -> RunStatus {
        match self {
            Halt::Cancel => RunStatus::Cancelled,
            Halt::Interrupt | Halt::Lost => RunStatus::Interrupted,
        }
    }

    /// Why a step stopped, for the run's log.
    fn note(self) -> String {
        match self {
            Halt::Lost => {
                "step stopped: this node lost the run's lease (another node re-queued it)".into()
            }
            h => format!("step stopped: the run was {}", h.status().as_str()),
        }
    }
}

/// Stops runs: send `Some(halt)`; the call in hand is cancelled in its worker.
pub type HaltSignal = watch::Receiver<Option<Halt>>;

/// Waits until the signal says to stop (forever if its sender goes away silent).
async fn halted(halt: &mut HaltSignal) -> Halt {
    loop {
        if let Some(h) = *halt.borrow_and_update() {
            return h;
        }
        if halt.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
    }
}

/// What happened in a run, for live progress (`snakepit run` prints these).
#[derive(Debug, Clone)]
pub enum RunEvent {
    Started {
        run_id: String,
        job: String,
        steps: usize,
    },
    StepStarted {
        step: String,
        attempt: u32,
        attempts: u32,
    },
    /// A log record or print of the step's callable.
    Log(LogLine),
    StepRetrying {
        step: String,
        attempt: u32,
        error: StepError,
        delay: Duration,
    },
    StepEnded {
        step: String,
        status: StepStatus,
        attempts: u32,
        error: Option<StepError>,
    },
    Finished {
        status: RunStatus,
        error: Option<String>,
    },
}

/// Asks for a run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job: String,
    pub trigger: Trigger,
    /// The time templates are evaluated against (a cron tick; the trigger time of a
    /// manual run).
    pub scheduled_for: DateTime<Utc>,
    /// `--param K=V` overrides of the job's params.
    pub params: Vec<(String, String)>,
    /// "system" for a scheduled run.
    pub session_user: String,
}

/// Why a run could not be started.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("there is no job named {job:?}; the jobs are: {}", list(.known))]
    UnknownJob { job: String, known: Vec<String> },
    #[error("{0}")]
    BadParam(String),
    /// A scheduled run of this job at this tick is recorded already.
    #[error("a scheduled run of {job} at {tick} is recorded already")]
    Duplicate { job: String, tick: DateTime<Utc> },
    #[error(transparent)]
    State(#[from] StateError),
}

fn list(names: &[String]) -> String {
    if names.is_empty() {
        "(none: no jobs.toml defines a job)".to_owned()
    } else {
        names.join(", ")
    }
}

/// A run recorded as queued, ready for [`Runner::execute`].
#[derive(Debug, Clone)]
pub struct QueuedRun {
    pub id: String,
    pub job: Arc<JobDef>,
    pub trigger: Trigger,
    pub params: Map,
    pub scheduled_for: DateTime<Utc>,
    pub session_user: String,
    timezone: chrono_tz::Tz,
    /// The attempts each step made before (a re-queued run's), in step order.
    prior_attempts: Vec<u32>,
    /// What every write of its execution carries (fencing).
    claim: Claim,
}

impl QueuedRun {
    /// The epoch of the claim this node executes it under.
    pub fn epoch(&self) -> i64 {
        self.claim.epoch
    }
}

/// Runs jobs and records them. Cheap to clone.
#[derive(Clone)]
pub struct Runner {
    caller: Arc<dyn StepCaller>,
    state: State,
    clock: Arc<dyn Clock>,
    renew_every: Option<Duration>,
    observer: Option<Arc<dyn RunObserver>>,
}

impl std::fmt::Debug for Runner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runner")
            .field("state", &self.state)
            .finish()
    }
}

/// A new run id: the UTC time it was queued and 6 random hex digits
/// (`20260601-020000-3f9a1c`), sortable and short enough to type a prefix of.
fn new_run_id(now: DateTime<Utc>) -> String {
    format!(
        "{}-{:06x}",
        now.format("%Y%m%d-%H%M%S"),
        fastrand::u32(..0x100_0000)
    )
}

/// The run `req` asks for as the history records it (queued at `now`, its steps
/// pending), with its job and the params it runs with.
fn new_run(
    jobs: &JobSet,
    req: &RunRequest,
    now: DateTime<Utc>,
) -> Result<(NewRun, Arc<JobDef>, Map), RunError> {
    let Some(job) = jobs.get(&req.job) else {
        return Err(RunError::UnknownJob {
            job: req.job.clone(),
            known: jobs.names().into_iter().map(str::to_owned).collect(),
        });
    };
    let params = job.params_with(&req.params).map_err(RunError::BadParam)?;
    let new = NewRun {
        id: new_run_id(now),
        job: job.name.clone(),
        trigger: req.trigger,
        session_user: req.session_user.clone(),
        params: Value::Map(params.clone()).to_json(),
        scheduled_for: req.scheduled_for,
        queued_at: now,
        steps: job.steps.iter().map(|s| s.name.clone()).collect(),
    };
    Ok((new, job.clone(), params))
}

/// Records a run of `req.job`, queued at `now`, owned by no one: whichever node's
/// scheduler looks next claims and executes it ([`Runner::claim`], with the params
/// recorded here; on PostgreSQL the insert wakes every node). The web console's "Run
/// now" and `snakepit run --enqueue`. Returns the run's id.
pub async fn enqueue_for_any_node(
    state: &State,
    jobs: &JobSet,
    req: RunRequest,
    now: DateTime<Utc>,
) -> Result<String, RunError> {
    let (new, _, _) = new_run(jobs, &req, now)?;
    if !state.queue_run(&new).await? {
        return Err(RunError::Duplicate {
            job: req.job,
            tick: req.scheduled_for,
        });
    }
    Ok(new.id)
}

impl Runner {
    pub fn new(caller: Arc<dyn StepCaller>, state: State, clock: Arc<dyn Clock>) -> Runner {
        Runner {
            caller,
            state,
            clock,
            renew_every: None,
            observer: None,
        }
    }

    /// Tells `observer` of every run this runner claims and ends.
    pub fn observe(mut self, observer: Arc<dyn RunObserver>) -> Runner {
        self.observer = Some(observer);
        self
    }

    /// How often the leases of running runs are renewed, in real time (default a third
    /// of the state's lease, `[runtime] lease`; tests of a lost lease make it short).
    /// Each renewal extends the lease to the clock's now + the state's lease.
    pub fn renew_every(mut self, every: Duration) -> Runner {
        self.renew_every = Some(every);
        self
    }

    /// The run history this runner writes.
    pub fn state(&self) -> &State {
        &self.state
    }

    /// Records a run of `req.job` as queued (its steps pending). Returns None when it is
    /// a scheduled run of a tick that is recorded already.
    pub async fn enqueue(
        &self,
        jobs: &JobSet,
        req: RunRequest,
    ) -> Result<Option<QueuedRun>, RunError> {
        let (new, job, params) = new_run(jobs, &req, self.clock.now())?;
        if !self.state.insert_run(&new).await? {
            return Ok(None);
        }
        // A manual run recorded by its own process holds epoch 1 (`State::insert_run`);
        // a scheduled run owned by no one waits for a claim.
        let epoch = i64::from(req.trigger == Trigger::Manual);
        Ok(Some(QueuedRun {
            id: new.id.clone(),
            job,
            trigger: req.trigger,
            params,
            scheduled_for: req.scheduled_for,
            session_user: req.session_user,
            timezone: jobs.timezone,
            prior_attempts: Vec::new(),
            claim: Claim {
                run_id: new.id,
                epoch,
            },
        }))
    }

    /// Claims the oldest queued scheduled run that no node owns (see
    /// `State::claim_run`), as this runner's state's owner, ready for
    /// [`Runner::execute`]. Its job is taken from `jobs` (the current definition: a
    /// reload between queueing and claiming applies); a run whose job is no longer
    /// defined is recorded failed and the next one is claimed. None when there is
    /// nothing to claim.
    pub async fn claim(&self, jobs: &JobSet) -> Result<Option<QueuedRun>, StateError> {
        loop {
            let now = self.clock.now();
            let Some(claimed) = self.state.claim_run(now).await? else {
                return Ok(None);
            };
            let run = claimed.run;
            let Some(job) = jobs.get(&run.job) else {
                let why = format!(
                    "the job {:?} is no longer defined in any jobs.toml",
                    run.job
                );
                tracing::error!(run_id = %run.id, "{why}");
                (self.state)
                    .finish_run(&claimed.claim, RunStatus::Failed, Some(&why), now)
                    .await?;
                continue;
            };
            let trigger = match run.trigger.as_str() {
                "manual" => Trigger::Manual,
                _ => Trigger::Schedule,
            };
            if let Some(o) = &self.observer {
                let lag = (now - run.scheduled_for).to_std().unwrap_or_default();
                o.run_claimed(&run.job, trigger, lag);
            }
            // The params recorded when it was queued (a manual run's overrides).
            let params = match Value::from_json(&run.params) {
                Value::Map(m) => m,
                _ => job.params.clone(),
            };
            return Ok(Some(QueuedRun {
                id: run.id,
                job: job.clone(),
                trigger,
                params,
                scheduled_for: run.scheduled_for,
                session_user: run.session_user,
                timezone: jobs.timezone,
                prior_attempts: (claimed.step_attempts.iter())
                    .map(|&n| u32::try_from(n).unwrap_or(0))
                    .collect(),
                claim: claimed.claim,
            }));
        }
    }

    /// [`Runner::enqueue`] then [`Runner::execute`]: the run's id and how it ended.
    pub async fn run(
        &self,
        jobs: &JobSet,
        req: RunRequest,
        events: Option<mpsc::Sender<RunEvent>>,
        halt: HaltSignal,
    ) -> Result<(String, RunStatus), RunError> {
        let (job, tick) = (req.job.clone(), req.scheduled_for);
        let Some(run) = self.enqueue(jobs, req).await? else {
            return Err(RunError::Duplicate { job, tick });
        };
        let id = run.id.clone();
        let status = self.execute(run, events, halt).await?;
        Ok((id, status))
    }

    /// Runs a queued run to its end, writing each change as it happens, and returns
    /// its status. Stopped by `halt`, the call in hand is cancelled and the run is
    /// recorded cancelled or interrupted. Its lease is renewed ([`Runner::renew_every`]);
    /// when a renewal finds the run no longer this node's ([`Halt::Lost`]), the call is
    /// cancelled and the run is left to its new owner (returned as interrupted,
    /// recorded as nothing).
    pub async fn execute(
        &self,
        run: QueuedRun,
        events: Option<mpsc::Sender<RunEvent>>,
        halt: HaltSignal,
    ) -> Result<RunStatus, StateError> {
        // `events` is bounded: a log line that finds it nearly full (its reader, a
        // terminal, is slower than the plugin) is left out of it (the run's history still
        // has it), keeping room for the run's and steps' own events.
        let emit = |e: RunEvent| {
            if let Some(tx) = &events {
                if !matches!(e, RunEvent::Log(_)) || tx.capacity() > EVENTS_KEPT_FREE {
                    let _ = tx.try_send(e);
                }
            }
        };
        let id = run.id.as_str();
        let claim = &run.claim;
        let job = &run.job;
        let began = std::time::Instant::now();
        match self.state.start_run(claim, self.clock.now()).await {
            Err(StateError::Fenced { .. }) => {
                tracing::warn!(run_id = id, job = %job.name, "the run was taken over before it started");
                return Ok(RunStatus::Interrupted);
            }
            started => started?,
        }
        tracing::info!(run_id = id, job = %job.name, trigger = run.trigger.as_str(), "run started");
        emit(RunEvent::Started {
            run_id: run.id.clone(),
            job: job.name.clone(),
            steps: job.steps.len(),
        });
        // The caller's halt and the lease keeper's, in one signal (the first one holds).
        let (halt_tx, mut halt_rx) = watch::channel(*halt.borrow());
        let _forward = forward_halt(halt, halt_tx.clone());
        let _lease = self.keep_lease(claim, halt_tx);
        let sink = LogSink::spawn(self.state.clone(), claim.clone());
        let ended = self.steps(&run, &sink, &emit, &mut halt_rx).await;
        sink.flush().await;
        // Lost at a renewal, or a write was refused because another node holds the run
        // now: its record is the new owner's.
        let fenced = matches!(ended, Err(StateError::Fenced { .. }));
        if fenced || *halt_rx.borrow() == Some(Halt::Lost) {
            tracing::warn!(run_id = id, job = %job.name, "stopped a run this node lost");
            return Ok(RunStatus::Interrupted);
        }
        let (status, error) = match ended {
            Ok(ended) => ended,
            Err(e) => {
                // Best effort: the database may be back; else the next start finds the
                // run's owner gone or its lease run out.
                let why = format!("interrupted: the run history could not be written: {e}");
                let _ = (self.state)
                    .finish_run(claim, RunStatus::Interrupted, Some(&why), self.clock.now())
                    .await;
                return Err(e);
            }
        };
        match (self.state)
            .finish_run(claim, status, error.as_deref(), self.clock.now())
            .await
        {
            Err(StateError::Fenced { .. }) => {
                tracing::warn!(run_id = id, job = %job.name, "the run was taken over as it ended; its end is not recorded");
                return Ok(RunStatus::Interrupted);
            }
            finished => finished?,
        }
        let took = began.elapsed();
        tracing::info!(
            run_id = id,
            job = %job.name,
            trigger = run.trigger.as_str(),
            status = status.as_str(),
            duration_ms = took.as_millis() as u64,
            "run ended"
        );
        if let Some(o) = &self.observer {
            o.run_ended(&job.name, run.trigger, status, took);
        }
        emit(RunEvent::Finished { status, error });
        Ok(status)
    }

    /// Renews the run's lease until the guard is dropped; sends [`Halt::Lost`] on
    /// `halt` when the run is no longer this node's.
    fn keep_lease(&self, claim: &Claim, halt: watch::Sender<Option<Halt>>) -> AbortOnDrop {
        let (state, clock, claim) = (self.state.clone(), self.clock.clone(), claim.clone());
        let lease = state.lease();
        let every = self.renew_every.unwrap_or(lease / 3);
        let id = claim.run_id.clone();
        AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(every).await;
                match state.renew_lease(&claim, clock.now() + lease).await {
                    Ok(true) => {}
                    Ok(false) => {
                        tracing::warn!(run_id = %id, "the run's lease was taken over; stopping it");
                        set_halt(&halt, Halt::Lost);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(run_id = %id, error = %e, "cannot renew the run's lease")
                    }
                }
            }
        }))
    }

    /// The steps in order; how the run ends and why.
    async fn steps(
        &self,
        run: &QueuedRun,
        sink: &LogSink,
        emit: &(dyn Fn(RunEvent) + Sync),
        halt: &mut HaltSignal,
    ) -> Result<(RunStatus, Option<String>), StateError> {
        let scheduled_for = run.scheduled_for.with_timezone(&run.timezone);
        let cx = TemplateContext {
            scheduled_for,
            job: &run.job.name,
            run_id: &run.id,
            params: &run.params,
        };
        let mut previous = Value::Nil;
        for (position, step) in run.job.steps.iter().enumerate() {
            let attempt = StepAttempt::new(run, position, step, &cx, previous.clone());
            match self.step(attempt, sink, emit, halt).await? {
                StepOutcome::Succeeded(value) => previous = value,
                StepOutcome::Failed(message) => return Ok((RunStatus::Failed, Some(message))),
                StepOutcome::Halted(h) => {
                    let why = match h {
                        Halt::Cancel => "cancelled",
                        Halt::Interrupt => "interrupted by a shutdown",
                        Halt::Lost => "stopped: the run's lease was lost",
                    };
                    return Ok((
                        h.status(),
                        Some(format!("{why} during step {:?}", step.name)),
                    ));
                }
            }
        }
        Ok((RunStatus::Succeeded, None))
    }

    /// One step, with its retries.
    async fn step(
        &self,
        a: StepAttempt<'_>,
        sink: &LogSink,
        emit: &(dyn Fn(RunEvent) + Sync),
        halt: &mut HaltSignal,
    ) -> Result<StepOutcome, StateError> {
        let s = StepRun {
            runner: self,
            a,
            sink,
            emit,
        };
        let (run, position, step) = (s.a.run, s.a.position, s.a.step);
        // A re-queued run's steps count their attempts on from the node that died.
        let mut attempt = run.prior_attempts.get(position).copied().unwrap_or(0);
        let attempts = attempt.saturating_add(step.retries).saturating_add(1);
        // What this step's attempts cost, summed.
        let mut cost: Option<CallUsage> = None;
        loop {
            attempt += 1;
            self.state
                .start_step(&run.claim, position, attempt, self.clock.now())
                .await?;
            emit(RunEvent::StepStarted {
                step: step.name.clone(),
                attempt,
                attempts,
            });
            let ended = s.call(attempt, halt).await.map(|m| {
                if let Some(u) = &m.usage {
                    cost.get_or_insert_with(CallUsage::default).add(u);
                }
                m.result
            });
            let usage = cost.as_ref().map(step_usage);
            let failure = match s.settle(attempt, ended, usage).await? {
                Ok(outcome) => return Ok(outcome),
                Err(failure) => failure,
            };
            if attempt < attempts && retryable(&failure) {
                match s.retry(attempt, attempts, &failure, usage, halt).await? {
                    Some(h) => return Ok(StepOutcome::Halted(h)),
                    None => continue,
                }
            }
            let summary = s.fail(attempt, &failure, usage).await?;
            return Ok(StepOutcome::Failed(summary));
        }
    }
}

/// One step of one run, with its rendered kwargs and its context.
struct StepAttempt<'a> {
    run: &'a QueuedRun,
    position: usize,
    step: &'a StepDef,
    kwargs: Map,
    context: Map,
}

impl<'a> StepAttempt<'a> {
    /// Step `position` of `run`: its kwargs rendered with `cx`, and its job-step
    /// context, with `previous`, the result of the step before.
    fn new(
        run: &'a QueuedRun,
        position: usize,
        step: &'a StepDef,
        cx: &TemplateContext<'_>,
        previous: Value,
    ) -> StepAttempt<'a> {
        let kwargs: Map = step
            .kwargs
            .iter()
            .map(|(k, v)| (k.clone(), cx.render(v)))
            .collect();
        let context: Map = vec![
            ("connectors".into(), Value::Nil),
            ("pools".into(), Value::Nil),
            ("job_id".into(), Value::from(run.job.name.as_str())),
            ("run_id".into(), Value::from(run.id.as_str())),
            ("step_name".into(), Value::from(step.name.as_str())),
            ("params".into(), Value::Map(run.params.clone())),
            ("step_kwargs".into(), Value::Map(kwargs.clone())),
            ("previous_step".into(), previous),
            (
                "logger".into(),
                Value::from(format!("job.{}", run.job.name)),
            ),
            (
                "session_user".into(),
                Value::from(run.session_user.as_str()),
            ),
        ];
        StepAttempt {
            run,
            position,
            step,
            kwargs,
            context,
        }
    }
}

enum StepOutcome {
    Succeeded(Value),
    Failed(String),
    Halted(Halt),
}

/// A step being run: its attempt, the runner, and where its log lines and events go.
struct StepRun<'a> {
    runner: &'a Runner,
    a: StepAttempt<'a>,
    sink: &'a LogSink,
    emit: &'a (dyn Fn(RunEvent) + Sync),
}

impl StepRun<'_> {
    /// Calls the step once, passing its log records on as they come; the halt instead
    /// if one comes first.
    async fn call(&self, attempt: u32, halt: &mut HaltSignal) -> Result<Measured, Halt> {
        let StepAttempt {
            run,
            step,
            kwargs,
            context,
            ..
        } = &self.a;
        let id = run.id.as_str();
        // Bounded: records that find it full are dropped and counted (see
        // `snakepit::LogSink`), so a flooding step cannot grow the runner.
        let (tx, mut rx) = mpsc::channel::<LogRecord>(STEP_LOG_CHANNEL);
        let call = self.runner.caller.call_step(
            &step.callable,
            Box::new(|c: Call| {
                let c = c
                    .kwargs(kwargs.clone())
                    .context(context.clone())
                    .logs(tx)
                    .run_id(id);
                match step.timeout {
                    Some(t) => c.timeout(t),
                    None => c,
                }
            }),
        );
        tokio::pin!(call);
        let ended = loop {
            tokio::select! {
                biased;
                Some(r) = rx.recv() => self.log(attempt, r),
                r = &mut call => break Ok(r),
                h = halted(halt) => break Err(h),
            }
        };
        // Records sent before the result are in the channel already.
        while let Ok(r) = rx.try_recv() {
            self.log(attempt, r);
        }
        ended
    }

    /// Emits one of the step's log records and writes it to the run's log.
    fn log(&self, attempt: u32, r: LogRecord) {
        let message = match r.exc_text {
            Some(exc) if !exc.is_empty() => format!("{}\n{exc}", r.message),
            _ => r.message,
        };
        let time = DateTime::from_timestamp_micros((r.time * 1e6) as i64)
            .unwrap_or_else(|| self.runner.clock.now());
        let l = LogLine {
            run_id: self.a.run.id.as_str().to_owned(),
            step: Some(self.a.step.name.clone()),
            attempt: Some(i64::from(attempt)),
            time,
            level: r.level,
            logger: r.logger,
            message,
        };
        (self.emit)(RunEvent::Log(l.clone()));
        self.sink.push(l);
    }

    /// One of the runner's own lines about the step.
    fn note(&self, attempt: u32, level: i64, message: String) -> LogLine {
        LogLine {
            run_id: self.a.run.id.as_str().to_owned(),
            step: Some(self.a.step.name.clone()),
            attempt: Some(i64::from(attempt)),
            time: self.runner.clock.now(),
            level,
            logger: RUNNER_LOGGER.to_owned(),
            message,
        }
    }

    /// Ends the step when the attempt settles it (a result, a halt, the pool shut
    /// down); else returns the attempt's failure.
    async fn settle(
        &self,
        attempt: u32,
        ended: Result<Result<RawValue, CallError>, Halt>,
        usage: Option<StepUsage>,
    ) -> Result<Result<StepOutcome, CallError>, StateError> {
        let failure = match ended {
            Err(h) => {
                self.sink.push(self.note(attempt, 30, h.note()));
                self.sink.flush().await;
                return Ok(Ok(StepOutcome::Halted(h)));
            }
            Ok(Ok(raw)) => match (raw.to_json(), raw.decode()) {
                (Ok(json), Ok(value)) => {
                    let end = StepEnd {
                        status: StepStatus::Succeeded,
                        attempts: attempt,
                        result: Some(json),
                        error: None,
                        usage,
                    };
                    let event = RunEvent::StepEnded {
                        step: self.a.step.name.clone(),
                        status: StepStatus::Succeeded,
                        attempts: attempt,
                        error: None,
                    };
                    self.end(&end, event).await?;
                    return Ok(Ok(StepOutcome::Succeeded(value)));
                }
                (Err(e), _) | (_, Err(e)) => CallError::Unserializable(e.to_string()),
            },
            Ok(Err(CallError::ShutDown)) => {
                let note = self.note(attempt, 30, "step stopped: the pool shut down".into());
                self.sink.push(note);
                self.sink.flush().await;
                return Ok(Ok(StepOutcome::Halted(Halt::Interrupt)));
            }
            Ok(Err(e)) => e,
        };
        Ok(Err(failure))
    }

    /// Records a failed attempt that will be retried, then waits out its backoff; the
    /// halt instead if one comes first.
    async fn retry(
        &self,
        attempt: u32,
        attempts: u32,
        failure: &CallError,
        usage: Option<StepUsage>,
        halt: &mut HaltSignal,
    ) -> Result<Option<Halt>, StateError> {
        let error = step_error(failure);
        let delay = backoff_delay(self.a.step.backoff, attempt);
        self.sink.push(self.note(
            attempt,
            30,
            format!(
                "attempt {attempt}/{attempts} failed: {}: {}; retrying in {}",
                error.type_name,
                error.message,
                humantime::format_duration(delay)
            ),
        ));
        let end = StepEnd {
            status: StepStatus::Retrying,
            attempts: attempt,
            result: None,
            error: Some(error.clone()),
            usage,
        };
        let event = RunEvent::StepRetrying {
            step: self.a.step.name.clone(),
            attempt,
            error,
            delay,
        };
        self.end(&end, event).await?;
        tokio::select! {
            () = self.runner.clock.sleep(delay) => Ok(None),
            h = halted(halt) => Ok(Some(h)),
        }
    }

    /// Records the step's failure, retries spent or not allowed; the run's error.
    async fn fail(
        &self,
        attempt: u32,
        failure: &CallError,
        usage: Option<StepUsage>,
    ) -> Result<String, StateError> {
        let error = step_error(failure);
        let why = if retryable(failure) {
            format!("after {attempt} attempt(s)")
        } else {
            "(not retried: it would fail the same way)".to_owned()
        };
        self.sink.push(self.note(
            attempt,
            40,
            format!("step failed {why}: {}: {}", error.type_name, error.message),
        ));
        let summary = format!(
            "step {:?} failed {why}: {}: {}",
            self.a.step.name, error.type_name, error.message
        );
        let end = StepEnd {
            status: StepStatus::Failed,
            attempts: attempt,
            result: None,
            error: Some(error.clone()),
            usage,
        };
        let event = RunEvent::StepEnded {
            step: self.a.step.name.clone(),
            status: StepStatus::Failed,
            attempts: attempt,
            error: Some(error),
        };
        self.end(&end, event).await?;
        Ok(summary)
    }

    /// Waits for the step's log lines to be written, then records the attempt's end
    /// and emits its event.
    async fn end(&self, end: &StepEnd, event: RunEvent) -> Result<(), StateError> {
        self.sink.flush().await;
        let (run, position) = (self.a.run, self.a.position);
        self.runner
            .state
            .finish_step(&run.claim, position, end, self.runner.clock.now())
            .await?;
        (self.emit)(event);
        Ok(())
    }
}

/// Sets the halt unless one is set already (the first reason holds).
fn set_halt(tx: &watch::Sender<Option<Halt>>, h: Halt) {
    tx.send_if_modified(|cur| cur.is_none() && cur.replace(h).is_none());
}

/// Forwards the caller's halt signal into the run's own.
fn forward_halt(mut from: HaltSignal, to: watch::Sender<Option<Halt>>) -> AbortOnDrop {
    AbortOnDrop(tokio::spawn(async move {
        while from.changed().await.is_ok() {
            if let Some(h) = *from.borrow_and_update() {
                set_halt(&to, h);
            }
        }
    }))
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

enum SinkMsg {
    Line(LogLine),
    Flush(oneshot::Sender<()>),
}

/// Writes a run's log lines as they come, group-commit style: a line is written at
/// once, and the lines that arrive while a write is in progress go together in the
/// next one (up to [`LOG_BATCH`] a transaction). A supervisor killed mid-step loses
/// only the lines of the write in progress.
struct LogSink {
    tx: mpsc::UnboundedSender<SinkMsg>,
}

impl LogSink {
    fn spawn(state: State, claim: Claim) -> LogSink {
        let (tx, mut rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut batch: Vec<LogLine> = Vec::new();
            let mut acks: Vec<oneshot::Sender<()>> = Vec::new();
            while let Some(first) = rx.recv().await {
                let mut next = Some(first);
                while let Some(msg) = next.take() {
                    match msg {
                        SinkMsg::Line(l) => batch.push(l),
                        SinkMsg::Flush(ack) => acks.push(ack),
                    }
                    if batch.len() < LOG_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if let Err(e) = state.append_logs(&claim, &batch).await {
                    tracing::warn!(error = %e, lines = batch.len(), "cannot write run log lines");
                }
                batch.clear();
                for ack in acks.drain(..) {
                    let _ = ack.send(());
                }
            }
        });
        LogSink { tx }
    }

    fn push(&self, line: LogLine) {
        let _ = self.tx.send(SinkMsg::Line(line));
    }

    /// Returns once every line pushed so far is written.
    async fn flush(&self) {
        let (ack, done) = oneshot::channel();
        if self.tx.send(SinkMsg::Flush(ack)).is_ok() {
            let _ = done.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_two_seconds_up_to_five_minutes() {
        let exp: Vec<u64> = (1..=10)
            .map(|n| backoff_delay(Backoff::Exponential, n).as_secs())
            .collect();
        assert_eq!(exp, [2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(backoff_delay(Backoff::Exponential, 200), BACKOFF_CAP);
        assert_eq!(backoff_delay(Backoff::Fixed, 7), BACKOFF_BASE);
        let sixth = backoff_delay(Backoff::Exponential, 6);
        assert_eq!(humantime::format_duration(sixth).to_string(), "1m 4s");
    }
}
