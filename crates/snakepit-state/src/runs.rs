//! Recording runs as they happen (queued, started, steps, log lines, ended) and reading
//! them back.

use chrono::{DateTime, Utc};

use crate::model::StepRow;
use crate::Claim;
use crate::{
    Db, LogLine, NewRun, Run, RunFilter, RunRecord, RunRow, RunStatus, State, StateError, Step,
    StepEnd, Trigger, RUN_COLUMNS,
};

impl State {
    /// Records a new run (`queued`) and its steps (`pending`): a manual run owned by
    /// this process (its lease starting now, its epoch 1: the process holds it as if it
    /// had claimed it), which executes it; a scheduled run owned
    /// by no one, for a node to claim ([`State::claim_run`]). Returns false, recording
    /// nothing, when a scheduled run of the same job at the same tick exists already.
    pub async fn insert_run(&self, run: &NewRun) -> Result<bool, StateError> {
        let owner = match run.trigger {
            Trigger::Manual => self.owner.to_string(),
            Trigger::Schedule => String::new(),
        };
        self.insert_run_owned(run, owner).await
    }

    /// Records a new run (`queued`) owned by no one, whatever its trigger: any node's
    /// scheduler claims it ([`State::claim_run`]), as it does a scheduled run. A manual
    /// run queued for the cluster (the web console's "Run now" on PostgreSQL).
    pub async fn queue_run(&self, run: &NewRun) -> Result<bool, StateError> {
        self.insert_run_owned(run, String::new()).await
    }

    async fn insert_run_owned(&self, run: &NewRun, owner: String) -> Result<bool, StateError> {
        let lease = run.queued_at + self.lease;
        let epoch = i64::from(!owner.is_empty());
        let params = run.params.to_string();
        let inserted = with_db!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "INSERT INTO runs (id, job, trigger_type, session_user_name, status, params, \
                 scheduled_for, queued_at, owner, lease_until, epoch) \
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9, $10) ON CONFLICT DO NOTHING",
            )
            .bind(&run.id)
            .bind(&run.job)
            .bind(run.trigger.as_str())
            .bind(&run.session_user)
            .bind(&params)
            .bind(run.scheduled_for)
            .bind(run.queued_at)
            .bind(&owner)
            .bind(lease)
            .bind(epoch)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if n == 1 {
                for (i, name) in run.steps.iter().enumerate() {
                    sqlx::query(
                        "INSERT INTO steps (run_id, position, name, status) VALUES ($1, $2, $3, 'pending')",
                    )
                    .bind(&run.id)
                    .bind(i as i64)
                    .bind(name)
                    .execute(&mut *tx)
                    .await?;
                }
            }
            tx.commit().await?;
            n == 1
        });
        Ok(inserted)
    }

    /// Marks a run `running` (a claimed run is already; a re-queued run keeps the time
    /// it first started). Every write of an execution is refused with
    /// [`StateError::Fenced`] once `claim` no longer holds the run.
    pub async fn start_run(&self, claim: &Claim, now: DateTime<Utc>) -> Result<(), StateError> {
        let n = with_db!(self, p => {
            sqlx::query(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, $1) \
                 WHERE id = $2 AND epoch = $3 AND status IN ('queued', 'running')",
            )
            .bind(now)
            .bind(&claim.run_id)
            .bind(claim.epoch)
            .execute(p)
            .await?
            .rows_affected()
        });
        if n != 1 {
            return Err(claim.fenced());
        }
        Ok(())
    }

    /// Ends a run: `succeeded`, `failed` (with `error`), `cancelled` or `interrupted`.
    /// Steps still pending become `skipped` after a failure; a step still running takes
    /// the run's status when it was cancelled or interrupted.
    pub async fn finish_run(
        &self,
        claim: &Claim,
        status: RunStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        match status {
            RunStatus::Cancelled | RunStatus::Interrupted => {
                return self
                    .end_open_run(
                        &claim.run_id,
                        status,
                        error.unwrap_or(status.as_str()),
                        now,
                        Some(claim),
                    )
                    .await
            }
            _ => {}
        }
        let id = &claim.run_id;
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            fence!(tx, claim);
            sqlx::query("UPDATE runs SET status = $1, error = $2, finished_at = $3 WHERE id = $4")
                .bind(status.as_str())
                .bind(error)
                .bind(now)
                .bind(id)
                .execute(&mut *tx)
                .await?;
            sqlx::query("UPDATE steps SET status = 'skipped' WHERE run_id = $1 AND status = 'pending'")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Marks a step `running` in its `attempt` (1-based).
    pub async fn start_step(
        &self,
        claim: &Claim,
        position: usize,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            fence!(tx, claim);
            sqlx::query(
                "UPDATE steps SET status = 'running', attempts = $1, \
                 started_at = COALESCE(started_at, $2), finished_at = NULL, epoch = $3 \
                 WHERE run_id = $4 AND position = $5",
            )
            .bind(i64::from(attempt))
            .bind(now)
            .bind(claim.epoch)
            .bind(&claim.run_id)
            .bind(position as i64)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Records how a step ended.
    pub async fn finish_step(
        &self,
        claim: &Claim,
        position: usize,
        end: &StepEnd,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let result = end.result.as_ref().map(|r| r.to_string());
        let e = end.error.as_ref();
        let u = end.usage.as_ref();
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            fence!(tx, claim);
            sqlx::query(
                "UPDATE steps SET status = $1, attempts = $2, result = $3, error_type = $4, \
                 error_message = $5, error_traceback = $6, finished_at = $7, epoch = $8, \
                 wall_us = $11, cpu_user_us = $12, cpu_sys_us = $13, peak_rss_bytes = $14, \
                 host_requests = $15, host_us = $16 WHERE run_id = $9 AND position = $10",
            )
            .bind(end.status.as_str())
            .bind(i64::from(end.attempts))
            .bind(&result)
            .bind(e.map(|e| e.type_name.as_str()))
            .bind(e.map(|e| e.message.as_str()))
            .bind(e.and_then(|e| e.traceback.as_deref()))
            .bind(now)
            .bind(claim.epoch)
            .bind(&claim.run_id)
            .bind(position as i64)
            .bind(u.map(|u| u.wall_us))
            .bind(u.map(|u| u.cpu_user_us))
            .bind(u.map(|u| u.cpu_sys_us))
            .bind(u.map(|u| u.peak_rss_bytes))
            .bind(u.map(|u| u.host_requests))
            .bind(u.map(|u| u.host_us))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
        });
        Ok(())
    }

    /// Appends log lines of the run `claim` holds, in one transaction (each line's
    /// `run_id` is the claim's).
    pub async fn append_logs(&self, claim: &Claim, lines: &[LogLine]) -> Result<(), StateError> {
        if lines.is_empty() {
            return Ok(());
        }
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            fence!(tx, claim);
            for l in lines {
                sqlx::query(
                    "INSERT INTO logs (run_id, step, attempt, time, level, logger, message, epoch) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                )
                .bind(&claim.run_id)
                .bind(&l.step)
                .bind(l.attempt)
                .bind(l.time)
                .bind(l.level)
                .bind(&l.logger)
                .bind(&l.message)
                .bind(claim.epoch)
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The latest runs first, of one job or all.
    pub async fn runs(&self, filter: &RunFilter) -> Result<Vec<Run>, StateError> {
        let limit = i64::from(filter.limit.max(1));
        let rows: Vec<RunRow> = with_db!(self, p => match &filter.job {
            Some(job) => sqlx::query_as(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE job = $1 ORDER BY queued_at DESC, id DESC LIMIT $2"
            ))
            .bind(job)
            .bind(limit)
            .fetch_all(p)
            .await?,
            None => sqlx::query_as(&format!(
                "SELECT {RUN_COLUMNS} FROM runs ORDER BY queued_at DESC, id DESC LIMIT $1"
            ))
            .bind(limit)
            .fetch_all(p)
            .await?,
        });
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// The run named by `id` or a prefix of it that names one run.
    pub(crate) async fn find_run(&self, id: &str) -> Result<Option<Run>, StateError> {
        let found: Vec<RunRow> = with_db!(self, p => {
            sqlx::query_as(&format!(
                "SELECT {RUN_COLUMNS} FROM runs WHERE substr(id, 1, length($1)) = $1 \
                 ORDER BY id = $1 DESC, id LIMIT 5"
            ))
            .bind(id)
            .fetch_all(p)
            .await?
        });
        match found.len() {
            0 => Ok(None),
            1 => Ok(found.into_iter().next().map(Run::from)),
            _ if found[0].id == id => Ok(found.into_iter().next().map(Run::from)),
            _ => Err(StateError::Ambiguous {
                prefix: id.to_owned(),
                matches: found.into_iter().map(|r| r.id).collect(),
            }),
        }
    }

    /// A run with its steps, logs and the summary of its connector calls, by its id or
    /// a prefix of it that names one run.
    pub async fn run(&self, id: &str) -> Result<Option<RunRecord>, StateError> {
        let Some(run) = self.find_run(id).await? else {
            return Ok(None);
        };
        let (steps, logs): (Vec<StepRow>, Vec<LogLine>) = with_db!(self, p => {
            let steps = sqlx::query_as::<_, StepRow>(
                "SELECT position, name, status, attempts, result, error_type, error_message, \
                 error_traceback, started_at, finished_at, epoch, wall_us, cpu_user_us, \
                 cpu_sys_us, peak_rss_bytes, host_requests, host_us FROM steps WHERE run_id = $1 \
                 ORDER BY position",
            )
            .bind(&run.id)
            .fetch_all(p)
            .await?;
            let logs = sqlx::query_as::<_, LogLine>(
                "SELECT run_id, step, attempt, time, level, logger, message FROM logs \
                 WHERE run_id = $1 ORDER BY id",
            )
            .bind(&run.id)
            .fetch_all(p)
            .await?;
            (steps, logs)
        });
        let (connector_calls, connector_calls_dropped) = self.call_summary(&run.id).await?;
        Ok(Some(RunRecord {
            run,
            steps: steps.into_iter().map(Step::from).collect(),
            logs,
            connector_calls,
            connector_calls_dropped,
        }))
    }
}
