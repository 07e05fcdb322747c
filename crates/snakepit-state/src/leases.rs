//! Who runs what: claiming queued runs, renewing leases, recovering the runs of dead
//! owners (re-queued on PostgreSQL, interrupted otherwise).

use std::collections::HashSet;

use chrono::{DateTime, Utc};

use crate::{
    Db, Owner, Run, RunRow, RunStatus, State, StateError, StepStatus, Trigger, JOBS_LOGGER, LEASE,
    MAX_REQUEUES, RUN_COLUMNS,
};

impl State {
    /// Recovers every run left `queued` or `running` whose owner is gone: on this
    /// machine, a process that no longer exists; elsewhere, one whose lease ran out
    /// before `now`. On PostgreSQL a scheduled run is re-queued up to [`MAX_REQUEUES`]
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
            let gone = match Owner::parse(&owner) {
                Some(o) if o.same_machine(&self.owner) => (!o.is_alive()).then(|| {
                    format!(
                        "its supervisor (pid {}) stopped before the run finished",
                        o.pid
                    )
                }),
                _ => (lease_until < now).then(|| {
                    format!("its supervisor ({owner}) stopped renewing its lease at {lease_until}")
                }),
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
            self.end_open_run(&id, RunStatus::Interrupted, &reason, now)
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
                "UPDATE runs SET status = 'queued', owner = '', requeues = $1 \
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
                     finished_at = NULL WHERE run_id = $1",
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
    /// its lease until `now` + [`LEASE`]. On PostgreSQL the candidate row is locked
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
            "UPDATE runs SET status = 'running', owner = $1, lease_until = $2, \
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
                    .bind(now + LEASE)
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
        Ok(row.map(|r| ClaimedRun {
            run: Run::from(r),
            step_attempts: attempts,
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
    /// steps take the run's status, pending ones stay pending (they never ran).
    pub(crate) async fn end_open_run(
        &self,
        id: &str,
        status: RunStatus,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let step_status = match status {
            RunStatus::Cancelled => StepStatus::Cancelled,
            _ => StepStatus::Interrupted,
        };
        with_db!(self, p => {
            let mut tx = p.begin().await?;
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

    /// Extends the lease of a run this state's owner holds until `until`. Returns
    /// false when the run is no longer its own: it ended, or another node re-queued it
    /// after the lease ran out (the owner should stop running it).
    pub async fn renew_lease(
        &self,
        run_id: &str,
        until: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let owner = self.owner.to_string();
        let n = with_db!(self, p => {
            sqlx::query(
                "UPDATE runs SET lease_until = $1 \
                 WHERE id = $2 AND owner = $3 AND status IN ('queued', 'running')",
            )
            .bind(until)
            .bind(run_id)
            .bind(&owner)
            .execute(p)
            .await?
            .rows_affected()
        });
        Ok(n == 1)
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
    pub step_attempts: Vec<i64>,
}

/// How many times a claim is tried again after it lost a race for a job.
const CLAIM_TRIES: u32 = 3;

/// Whether a query failed on a unique index.
fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}
