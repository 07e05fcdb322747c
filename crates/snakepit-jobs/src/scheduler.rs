//! The cron scheduler: fires each scheduled job at its ticks, in the install's time
//! zone, through the [`Runner`].
//!
//! The last tick handled per job is kept in the state database (`schedules`), so:
//! - a job seen for the first time starts from now (it fires at its next tick, as cron
//!   does, rather than at once);
//! - ticks missed while no scheduler ran are coalesced: the latest one runs once, with
//!   its own time as the run's scheduled time (Airflow's `catchup = False`);
//! - a tick is taken by moving the job's last tick with a compare-and-set, and a
//!   scheduled run is unique per (job, tick), so two schedulers on one PostgreSQL do not
//!   both run it.
//!
//! One run per job at a time: while a scheduled run of a job is in flight, its next
//! tick waits (and is coalesced with later ones) until the run ends.

use std::collections::HashSet;
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

/// Fires due cron jobs. Build it with [`Scheduler::new`], run it with
/// [`Scheduler::run`]; [`Scheduler::set_jobs`] swaps the jobs after a reload.
pub struct Scheduler {
    runner: Runner,
    clock: Arc<dyn Clock>,
    jobs: watch::Sender<Arc<JobSet>>,
    grace: Duration,
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
        }
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

    /// Takes every due tick: for each scheduled job not in `busy`, the latest tick
    /// after its last handled one, up to now, recorded as a queued run. A job never
    /// seen before is recorded as handled up to now.
    pub async fn due(&self, busy: &HashSet<String>) -> Result<Vec<QueuedRun>, StateError> {
        let jobs = self.jobs.borrow().clone();
        let state = self.runner.state();
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
            if tick <= last || !state.advance_tick(&job.name, Some(last), tick).await? {
                continue;
            }
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

    /// Fires due jobs until `stop` completes, then stops firing, waits up to the grace
    /// period for the runs in flight, and interrupts those still running (their call
    /// is cancelled; the run is recorded `interrupted`). A database error is logged and
    /// retried at the next wake.
    pub async fn run(&self, stop: impl Future<Output = ()>) {
        let (halt_tx, halt_rx) = watch::channel(None);
        let mut runs: JoinSet<(String, Result<RunStatus, StateError>)> = JoinSet::new();
        let mut busy: HashSet<String> = HashSet::new();
        let mut jobs_changed = self.jobs.subscribe();
        tokio::pin!(stop);
        loop {
            match self.due(&busy).await {
                Ok(queued) => {
                    for run in queued {
                        let (runner, halt) = (self.runner.clone(), halt_rx.clone());
                        busy.insert(run.job.name.clone());
                        runs.spawn(async move {
                            let job = run.job.name.clone();
                            (job, runner.execute(run, None, halt).await)
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "the scheduler cannot read the state database")
                }
            }
            let wait = self.next_wake(self.clock.now());
            tokio::select! {
                () = &mut stop => break,
                () = self.clock.sleep(wait) => {}
                Some(done) = runs.join_next() => finished(&mut busy, done),
                _ = jobs_changed.changed() => {}
            }
        }
        let drained = tokio::time::timeout(self.grace, async {
            while let Some(done) = runs.join_next().await {
                finished(&mut busy, done);
            }
        })
        .await;
        if drained.is_err() {
            tracing::warn!(runs = runs.len(), "interrupting the runs still in flight");
            let _ = halt_tx.send(Some(Halt::Interrupt));
            while let Some(done) = runs.join_next().await {
                finished(&mut busy, done);
            }
        }
    }
}

fn finished(
    busy: &mut HashSet<String>,
    done: Result<(String, Result<RunStatus, StateError>), tokio::task::JoinError>,
) {
    match done {
        Ok((job, result)) => {
            busy.remove(&job);
            if let Err(e) = result {
                tracing::error!(job = %job, error = %e, "a scheduled run could not be recorded");
            }
        }
        // A run task panicked; its job stays marked busy rather than fire on top of an
        // unknown state (the state database shows the run as running, then interrupted
        // at the next start).
        Err(e) => tracing::error!(error = %e, "a scheduled run task failed"),
    }
}
