//! Who runs what: claiming queued runs, renewing leases, recovering the runs of dead
//! owners (re-queued on PostgreSQL, interrupted otherwise).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::{
    Db, Owner, Run, RunRow, RunStatus, State, StateError, StepStatus, Trigger, JOBS_LOGGER,
    MAX_REQUEUES, RUN_COLUMNS,
};

/// What a node's writes to a run it executes carry: the run and the epoch of the claim
/// that handed it the run. Every claim and every re-queue moves a run's epoch on, and a
/// write whose epoch is no longer the run's is refused ([`StateError::Fenced`]), so a
/// node that lost its lease cannot touch the run's record any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    pub run_id: String,
    pub epoch: i64,
}

impl Claim {
    /// The refusal of a write under this claim.
    pub(crate) fn fenced(&self) -> StateError {
        StateError::Fenced {
            run_id: self.run_id.clone(),
            epoch: self.epoch,
        }
    }
}

impl State {
    /// Recovers every run left `queued` or `running` whose owner is gone: on this
    /// machine, a process that no longer exists; elsewhere, one whose lease ran out
    /// before `now`. On PostgreSQL a process of this machine whose lease ran out is gone
    /// too (stopped, hung): fencing keeps it from writing if it wakes up. On PostgreSQL a scheduled run is re-queued up to [`MAX_REQUEUES`]
    /// times: `queued`, no owner, its steps `pending` (their attempts kept), a log line
    /// naming the old owner. Every other such run (a manual run, any run on SQLite, a
    /// run re-queued too often) is marked `interrupted`, its running step too. Queued
    /// runs that no one has claimed yet are left alone.
    pub async fn recover(&self, now: DateTime<Utc>) -> Result<Recovered, StateError> {
        let open: Vec<(String, String, DateTime<Utc>, String, i64)> = with_db!(self, p => {
            sqlx::query_as(
                "SELECT id, owner, lease_until, trigger_type, requeues FROM runs \
                 WHERE status IN ('queued', 'running') AND owner <> ''",
            )
            .fetch_all(p)
            .await?
        });
        let mut recovered = Recovered::default();
        for (id, owner, lease_until, trigger, requeues) in open {
            let lapsed = || {
                (lease_until < now).then(|| {
                    format!("its supervisor ({owner}) stopped renewing its lease at {lease_until}")
                })
            };
            let gone = match Owner::parse(&owner) {
                // This process: its runner renews the lease, or learns it lost it.
                Some(o) if o == self.owner => None,
                Some(o) if o.same_machine(&self.owner) && !o.is_alive() => Some(format!(
                    "its supervisor (pid {}) stopped before the run finished",
                    o.pid
                )),
                Some(o) if o.same_machine(&self.owner) && !self.is_shared() => None,
                _ => lapsed(),
            };
            let Some(why) = gone else { continue };
            let scheduled = trigger == Trigger::Schedule.as_str();
            if self.is_shared() && scheduled && requeues < MAX_REQUEUES {
                if self.requeue(&id, &owner, &why, requeues + 1, now).await? {
                    recovered.requeued.push(id);
                }
                continue;
            }
            let reason = if self.is_shared() && scheduled {
                format!("interrupted: {why}; it was re-queued {requeues} times already (the most is {MAX_REQUEUES})")
            } else {
                format!("interrupted: {why}")
            };
            self.end_open_run(&id, RunStatus::Interrupted, &reason, now, None)
                .await?;
            recovered.interrupted.push(id);
        }
        Ok(recovered)
    }

    /// Puts a run whose owner is gone back in the queue, for any node to claim: status
    /// `queued`, no owner, its steps `pending` again (their attempts kept, so that the
    /// next ones count on), a log line saying from which owner and why. Returns false
    /// when another node recovered it first (the owner changed meanwhile).
    async fn requeue(
        &self,
        id: &str,
        owner: &str,
        why: &str,
        nth: i64,
        now: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let message = format!(
            "re-queued from {owner} ({nth} of at most {MAX_REQUEUES}): {why}; its steps run again"
        );
        let requeued = with_db!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "UPDATE runs SET status = 'queued', owner = '', requeues = $1, epoch = epoch + 1 \
                 WHERE id = $2 AND owner = $3 AND status IN ('queued', 'running')",
            )
            .bind(nth)
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                sqlx::query(
                    "UPDATE steps SET status = 'pending', result = NULL, error_type = NULL, \
                     error_message = NULL, error_traceback = NULL, started_at = NULL, \
                     finished_at = NULL, wall_us = NULL, cpu_user_us = NULL, cpu_sys_us = NULL, \
                     peak_rss_bytes = NULL, host_requests = NULL, host_us = NULL WHERE run_id = $1",
                )
                .bind(id)
                .execute(&mut *tx)
                .await?;
                sqlx::query(
                    "INSERT INTO logs (run_id, step, attempt, time, level, logger, message) \
                     VALUES ($1, NULL, NULL, $2, 30, $3, $4)",
                )
                .bind(id)
                .bind(now)
                .bind(JOBS_LOGGER)
                .bind(&message)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
            n == 1
        });
        Ok(requeued)
    }

    /// Claims the oldest queued run that no one owns, unless a scheduled run of its job
    /// is `running` (on any node): it becomes `running`, owned by this state's owner,
    /// its lease until `now` + [`State::lease`], its epoch moved on (the claim's, that
    /// every write of its execution carries). On PostgreSQL the candidate row is locked
    /// with `FOR UPDATE SKIP LOCKED`, so nodes claiming at once take different runs;
    /// two runs of one job claimed at once by two nodes are refused by a unique index
    /// (one running scheduled run per job) and the loser looks again. None when there
    /// is nothing to claim.
    pub async fn claim_run(&self, now: DateTime<Utc>) -> Result<Option<ClaimedRun>, StateError> {
        let lock = if self.is_shared() {
            " FOR UPDATE SKIP LOCKED"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE runs SET status = 'running', owner = $1, lease_until = $2, epoch = epoch + 1, \
             started_at = COALESCE(started_at, $3) \
             WHERE status = 'queued' AND id = (SELECT r.id FROM runs r \
               WHERE r.status = 'queued' AND r.owner = '' AND NOT EXISTS (SELECT 1 FROM runs o \
                 WHERE o.job = r.job AND o.status = 'running' AND o.trigger_type = 'schedule') \
               ORDER BY r.queued_at, r.id LIMIT 1{lock}) \
             RETURNING {RUN_COLUMNS}"
        );
        let owner = self.owner.to_string();
        let (row, attempts): (Option<RunRow>, Vec<i64>) = with_db!(self, p => {
            let mut tries = 0;
            let row: Option<RunRow> = loop {
                let claimed = sqlx::query_as(&sql)
                    .bind(&owner)
                    .bind(now + self.lease)
                    .bind(now)
                    .fetch_optional(p)
                    .await;
                match claimed {
                    // Another node claimed a run of the same job at the same moment (the
                    // index `runs_one_running_per_job` refused the second): look again,
                    // now that its run shows as running.
                    Err(e) if is_unique_violation(&e) && tries < CLAIM_TRIES => tries += 1,
                    Err(e) if is_unique_violation(&e) => break None,
                    other => break other?,
                }
            };
            let attempts = match &row {
                Some(r) => sqlx::query_scalar(
                    "SELECT attempts FROM steps WHERE run_id = $1 ORDER BY position",
                )
                .bind(&r.id)
                .fetch_all(p)
                .await?,
                None => Vec::new(),
            };
            (row, attempts)
        });
        Ok(row.map(|r| {
            let run = Run::from(r);
            ClaimedRun {
                claim: Claim {
                    run_id: run.id.clone(),
                    epoch: run.epoch,
                },
                run,
                step_attempts: attempts,
            }
        }))
    }

    /// The jobs that have a scheduled run queued or running (on any node): the
    /// scheduler does not queue another run of them (one at a time).
    pub async fn busy_jobs(&self) -> Result<HashSet<String>, StateError> {
        let jobs: Vec<String> = with_db!(self, p => {
            sqlx::query_scalar(
                "SELECT DISTINCT job FROM runs \
                 WHERE trigger_type = 'schedule' AND status IN ('queued', 'running')",
            )
            .fetch_all(p)
            .await?
        });
        Ok(jobs.into_iter().collect())
    }

    /// Ends a run that is still queued or running, and its unfinished steps: running
    /// steps take the run's status, pending ones stay pending (they never ran). Under
    /// `fence`, only if that claim still holds the run.
    pub(crate) async fn end_open_run(
        &self,
        id: &str,
        status: RunStatus,
        reason: &str,
        now: DateTime<Utc>,
        fence: Option<&Claim>,
    ) -> Result<(), StateError> {
        let step_status = match status {
            RunStatus::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Interrupted,
        };
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            if let Some(claim) = fence {
                fence!(tx, claim);
            }
            sqlx::query(
                "UPDATE runs SET status = $1, error = $2, finished_at = $3 \
                 WHERE id = $4 AND status IN ('queued', 'running')",
            )
            .bind(status.as_str())
            .bind(reason)
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE steps SET status = $1, finished_at = $2 \
                 WHERE run_id = $3 AND status IN ('running', 'retrying')",
            )
            .bind(step_status.as_str())
            .bind(now)
            .bind(id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Extends the lease of a run `claim` holds, as this state's owner, until `until`.
    /// Returns false when the claim no longer holds it: it ended, or another node
    /// re-queued it after the lease ran out (the owner should stop running it).
    pub async fn renew_lease(
        &self,
        claim: &Claim,
        until: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let n = with_db!(self, p => {
            sqlx::query(
                "UPDATE runs SET lease_until = $1 \
                 WHERE id = $2 AND epoch = $3 AND owner = $4 AND status IN ('queued', 'running')",
            )
            .bind(until)
            .bind(&claim.run_id)
            .bind(claim.epoch)
            .bind(self.owner.to_string())
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
    }

    /// The earliest end of a lease that another owner holds on a run in progress: when
    /// that owner is lost if it does not renew (a lapse has no event; the scheduler
    /// looks again then).
    pub async fn next_lease_end(&self) -> Result<Option<DateTime<Utc>>, StateError> {
        let owner = self.owner.to_string();
        let t: Option<DateTime<Utc>> = with_db!(self, p => {
            sqlx::query_scalar(
                "SELECT min(lease_until) FROM runs \
                 WHERE status IN ('queued', 'running') AND owner <> '' AND owner <> $1",
            )
            .bind(&owner)
            .fetch_one(p)
            .await?
        });
        Ok(t)
    }
}

/// What [`State::recover`] did: the ids of the runs it re-queued and of those it
/// marked interrupted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Recovered {
    pub requeued: Vec<String>,
    pub interrupted: Vec<String>,
}

impl Recovered {
    /// Logs what was recovered, if anything.
    pub fn log(&self) {
        if !self.requeued.is_empty() {
            tracing::warn!(runs = ?self.requeued, "re-queued scheduled runs of a dead node");
        }
        if !self.interrupted.is_empty() {
            tracing::warn!(runs = ?self.interrupted, "marked runs of a dead supervisor interrupted");
        }
    }
}

/// A run claimed by [`State::claim_run`], with the attempts its steps made before
/// (nonzero for a re-queued run), in step order.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub run: Run,
    /// What the writes of its execution carry.
    pub claim: Claim,
    pub step_attempts: Vec<i64>,
}

/// How many times a claim is tried again after it lost a race for a job.
const CLAIM_TRIES: u32 = 3;

/// Whether a query failed on a unique index.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
