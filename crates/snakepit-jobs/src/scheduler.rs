//! The cron scheduler: fires each scheduled job at its ticks, in the install's time
//! zone, through the [`Runner`].
//!
//! The last tick handled per job is kept in the state database (`schedules`), so:
//! - a job seen for the first time starts from now (it fires at its next tick, as cron
//!   does, rather than at once);
//! - ticks missed while no scheduler ran are coalesced: the latest one runs once, with
//!   its own time as the run's scheduled time (Airflow's `catchup = False`);
//! - a due tick is recorded as a run, unique per (job, tick), then the job's last tick
//!   is moved with a compare-and-set, so two schedulers on one PostgreSQL do not both
//!   run it, and a node killed between the two loses no tick.
//!
//! One run per job at a time: while a scheduled run of a job is queued or running (on
//! any node), its next tick waits (and is coalesced with later ones) until the run ends.
//!
//! Several nodes (README, "Several machines"): a due tick is only queued (owned by no one); every node's
//! loop claims queued runs one at a time (`State::claim_run`: `FOR UPDATE SKIP LOCKED`
//! on PostgreSQL), up to [`Scheduler::max_runs`] in hand, and executes them, renewing
//! their leases. At each wake a node also recovers the runs of dead owners
//! (`State::recover`): on PostgreSQL a scheduled run whose lease ran out is re-queued,
//! and claimed by whichever node looks next.
//!
//! When a node looks: at the next tick of any job; when one of its runs ends; on
//! PostgreSQL when any node queues or ends a run (`LISTEN/NOTIFY`, `State::wakeups`);
//! at the earliest end of a lease another node holds (a lapse has no event: the node
//! that notices acts); and at each heartbeat, every third of the lease, when it also
//! records itself in the nodes table (`State::heartbeat`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use snakepit_state::{RunStatus, State, StateError, Trigger};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::clock::Clock;
use crate::jobset::JobSet;
use crate::runner::{Halt, QueuedRun, RunRequest, Runner, StepCaller};

/// The session user of scheduled runs.
pub const SYSTEM_USER: &str = "system";
/// The longest the scheduler sleeps before it looks again (so a wall-clock jump or a
/// database hiccup costs at most this).
const MAX_SLEEP: Duration = Duration::from_secs(60);
/// How long after another node's lease ends this node looks (`recover` takes a lease
/// that ended strictly before now).
const LAPSE_MARGIN: Duration = Duration::from_millis(20);
/// The version a node records in the nodes table.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A scheduler running on its own task ([`Scheduler::start`]).
pub struct Scheduling {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Scheduling {
    /// Stops the scheduler and waits until it has (as [`Scheduler::run`] stops).
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Fires due cron jobs. Build it with [`Scheduler::new`], run it with
/// [`Scheduler::run`]; [`Scheduler::set_jobs`] swaps the jobs after a reload.
pub struct Scheduler {
    runner: Runner,
    clock: Arc<dyn Clock>,
    jobs: watch::Sender<Arc<JobSet>>,
    grace: Duration,
    /// [`Scheduler::wake`]: look at the state now.
    wake: tokio::sync::Notify,
    /// The most runs this node has in hand at once.
    max_runs: usize,
}

impl std::fmt::Debug for Scheduler {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Scheduler")
            .field("runner", &self.runner)
            .finish()
    }
}

impl Scheduler {
    /// A scheduler for `jobs` whose runs call `caller` (the plugin host) and are
    /// recorded in `state`; `clock` is [`crate::SystemClock`] outside tests.
    pub fn new(
        caller: Arc<dyn StepCaller>,
        state: State,
        clock: Arc<dyn Clock>,
        jobs: JobSet,
    ) -> Scheduler {
        Scheduler {
            runner: Runner::new(caller, state, clock.clone()),
            clock,
            jobs: watch::channel(Arc::new(jobs)).0,
            grace: Duration::from_secs(30),
            wake: tokio::sync::Notify::new(),
            max_runs: default_max_runs(),
        }
    }

    /// The most runs this node executes at once (default 4 per CPU): it claims no more
    /// while it has that many in hand, leaving the rest of the queue to other nodes.
    pub fn max_runs(mut self, max: usize) -> Scheduler {
        self.max_runs = max.max(1);
        self
    }

    /// Tells `observer` of every run this scheduler claims and ends (see
    /// [`crate::RunObserver`]).
    pub fn observe(mut self, observer: Arc<dyn crate::RunObserver>) -> Scheduler {
        self.runner = self.runner.observe(observer);
        self
    }

    /// The jobs it fires now.
    pub fn jobs(&self) -> Arc<JobSet> {
        self.jobs.borrow().clone()
    }

    /// The runner of its runs (the same run history, clock and observer).
    pub fn runner(&self) -> &Runner {
        &self.runner
    }

    /// Makes the running loop look at the state now (a run was queued for any node).
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// How long [`Scheduler::run`] waits, once stopped, for runs in flight to finish
    /// before it interrupts them (default 30 s).
    pub fn grace(mut self, grace: Duration) -> Scheduler {
        self.grace = grace;
        self
    }

    /// Replaces the jobs (after a reload); the running loop picks them up at once.
    pub fn set_jobs(&self, jobs: JobSet) {
        self.jobs.send_replace(Arc::new(jobs));
    }

    /// Takes every due tick: for each scheduled job without a scheduled run queued or
    /// running (on any node), the latest tick after its last handled one, up to now,
    /// recorded as a queued run that no one owns yet. A job never seen before is
    /// recorded as handled up to now.
    pub async fn due(&self) -> Result<Vec<QueuedRun>, StateError> {
        let jobs = self.jobs.borrow().clone();
        let state = self.runner.state();
        let busy = state.busy_jobs().await?;
        let now = self.clock.now();
        let local = now.with_timezone(&jobs.timezone);
        let mut queued = Vec::new();
        for (job, cron) in jobs.scheduled() {
            if busy.contains(&job.name) {
                continue;
            }
            let Some(last) = state.last_tick(&job.name).await? else {
                state.advance_tick(&job.name, None, now).await?;
                continue;
            };
            let Ok(tick) = cron.find_previous_occurrence(&local, true) else {
                continue;
            };
            let tick = tick.with_timezone(&Utc);
            if tick <= last {
                continue;
            }
            // The run first, then the last tick: a node killed between the two loses no
            // tick (the next one records it again, and the run's uniqueness per job and
            // tick keeps it one run).
            let req = RunRequest {
                job: job.name.clone(),
                trigger: Trigger::Schedule,
                scheduled_for: tick,
                params: Vec::new(),
                session_user: SYSTEM_USER.to_owned(),
            };
            match self.runner.enqueue(&jobs, req).await {
                Ok(Some(run)) => queued.push(run),
                Ok(None) => {}
                Err(crate::RunError::State(e)) => return Err(e),
                Err(e) => {
                    tracing::error!(job = %job.name, error = %e, "cannot queue a scheduled run")
                }
            }
            state.advance_tick(&job.name, Some(last), tick).await?;
        }
        Ok(queued)
    }

    /// When the next tick of any job is due (at most [`MAX_SLEEP`] from now).
    fn next_wake(&self, now: DateTime<Utc>) -> Duration {
        let jobs = self.jobs.borrow().clone();
        let local = now.with_timezone(&jobs.timezone);
        jobs.scheduled()
            .filter_map(|(_, cron)| cron.find_next_occurrence(&local, false).ok())
            .map(|t| (t.with_timezone(&Utc) - now).to_std().unwrap_or_default())
            .min()
            .unwrap_or(MAX_SLEEP)
            .min(MAX_SLEEP)
    }

    /// One look at the state: recovers the runs of dead owners, queues due ticks,
    /// then claims queued runs (this node's and other nodes') until none is left or it
    /// has [`Scheduler::max_runs`] in hand (`in_hand` before the look), each claimed run
    /// handed to `spawn`. Returns the earliest end of a lease another node holds.
    async fn look(
        &self,
        mut in_hand: usize,
        mut spawn: impl FnMut(QueuedRun),
    ) -> Result<Option<DateTime<Utc>>, StateError> {
        let state = self.runner.state();
        state.recover(self.clock.now()).await?.log();
        self.due().await?;
        let jobs = self.jobs.borrow().clone();
        while in_hand < self.max_runs {
            let Some(run) = self.runner.claim(&jobs).await? else {
                break;
            };
            spawn(run);
            in_hand += 1;
        }
        state.next_lease_end().await
    }

    /// Runs the scheduler on a task of its own ([`Scheduler::run`]) until
    /// [`Scheduling::stop`].
    pub fn start(self: &Arc<Self>) -> Scheduling {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = self.clone();
        let task = tokio::spawn(async move {
            scheduler
                .run(async {
                    let _ = stopped.await;
                })
                .await
        });
        Scheduling { stop, task }
    }

    /// Fires due jobs and executes claimed runs until `stop` completes, then stops
    /// firing and claiming, waits up to the grace period for the runs in flight, and
    /// interrupts those still running (their call is cancelled; the run is recorded
    /// `interrupted`), and removes this node from the nodes table. It looks again at
    /// the times the module documentation lists, when the jobs change, and after 60 s
    /// at most. A database error is logged and retried at the next wake.
    pub async fn run(&self, stop: impl Future<Output = ()>) {
        let (halt_tx, halt_rx) = watch::channel(None);
        let mut runs: JoinSet<(String, Result<RunStatus, StateError>)> = JoinSet::new();
        let mut jobs_changed = self.jobs.subscribe();
        let state = self.runner.state();
        let lease = state.lease();
        let beat_every = lease / 3;
        let started = self.clock.now();
        let mut next_beat = tokio::time::Instant::now();
        let mut wakeups = state.wakeups().await.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot listen for queued runs; looking on timers only");
            None
        });
        tokio::pin!(stop);
        loop {
            let looked = self
                .look(runs.len(), |run| {
                    let (runner, halt) = (self.runner.clone(), halt_rx.clone());
                    runs.spawn(async move {
                        let job = run.job.name.clone();
                        (job, runner.execute(run, None, halt).await)
                    });
                })
                .await;
            let now = self.clock.now();
            // The heartbeat is in real time; ticks and leases are on the clock.
            if tokio::time::Instant::now() >= next_beat {
                next_beat = tokio::time::Instant::now() + beat_every;
                if let Err(e) = state.heartbeat(VERSION, started, runs.len(), now).await {
                    tracing::warn!(error = %e, "cannot record this node in the state database");
                }
            }
            let mut wait = self.next_wake(now);
            match looked {
                Ok(Some(lease_end)) => {
                    let lapse = (lease_end - now).to_std().unwrap_or_default() + LAPSE_MARGIN;
                    wait = wait.min(lapse);
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(error = %e, "the scheduler cannot read the state database")
                }
            }
            tokio::select! {
                () = &mut stop => break,
                () = self.clock.sleep(wait) => {}
                () = tokio::time::sleep_until(next_beat) => {}
                Some(done) = runs.join_next() => finished(done),
                _ = jobs_changed.changed() => {}
                () = self.wake.notified() => {}
                () = woken(&mut wakeups) => {}
            }
        }
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(done) = runs.join_next().await {
                finished(done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(runs = runs.len(), "interrupting the runs still in flight");
            let _ = halt_tx.send(Some(Halt::Interrupt));
            while let Some(done) = runs.join_next().await {
                finished(done);
            }
        }
        if let Err(e) = state.leave().await {
            tracing::warn!(error = %e, "cannot remove this node from the state database");
        }
    }
}

/// Four runs in hand per CPU.
fn default_max_runs() -> usize {
    std::thread::available_parallelism().map_or(4, |n| n.get() * 4)
}

/// Returns at the next wake-up from the database (never without a listener).
async fn woken(wakeups: &mut Option<snakepit_state::Wakeups>) {
    match wakeups {
        Some(w) => w.next().await,
        None => std::future::pending().await,
    }
}

fn finished(done: Result<(String, Result<RunStatus, StateError>), tokio::task::JoinError>) {
    match done {
        Ok((job, Err(e))) => {
            tracing::error!(job = %job, error = %e, "a scheduled run could not be recorded")
        }
        Ok((_, Ok(_))) => {}
        // A run task panicked; its run stays `running` in the state (so its job is
        // busy) until this process is gone and the run is recovered.
        Err(e) => tracing::error!(error = %e, "a scheduled run task failed"),
    }
}
