//! The scheduler's last handled tick per job.

use chrono::{DateTime, Utc};

use crate::{Db, State, StateError};

impl State {
    /// The last cron tick the scheduler handled for `job`, if it ever saw the job.
    pub async fn last_tick(&self, job: &str) -> Result<Option<DateTime<Utc>>, StateError> {
        let t: Option<DateTime<Utc>> = with_db!(self, p => {
            sqlx::query_scalar("SELECT last_tick FROM schedules WHERE job = $1")
                .bind(job)
                .fetch_optional(p)
                .await?
        });
        Ok(t)
    }

    /// Moves `job`'s last tick from `from` (None: the job was never seen) to `to`.
    /// Returns false when another scheduler moved it first: only the one that moved
    /// it enqueues the tick.
    pub async fn advance_tick(
        &self,
        job: &str,
        from: Option<DateTime<Utc>>,
        to: DateTime<Utc>,
    ) -> Result<bool, StateError> {
        let n = with_db!(self, p => match from {
            None => sqlx::query(
                "INSERT INTO schedules (job, last_tick) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(job)
            .bind(to)
            .execute(p)
            .await?
            .rows_affected(),
            Some(from) => sqlx::query(
                "UPDATE schedules SET last_tick = $1 WHERE job = $2 AND last_tick = $3",
            )
            .bind(to)
            .bind(job)
            .bind(from)
            .execute(p)
            .await?
            .rows_affected(),
        });
        Ok(n == 1)
    }
}
