//! Reading the history page by page, for the web console: runs filtered and paged by a
//! keyset cursor (so that the first screen costs the same with 100 runs or 100,000), a
//! run's log lines after a given line (the live log polls with it), and the audit log
//! summed per package, connector and target.

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{Db, LogLine, Run, RunRow, State, StateError, RUN_COLUMNS};

/// Which runs a page lists: every filter that is set, newest first, after the cursor.
#[derive(Debug, Clone, Default)]
pub struct RunQuery {
    pub job: Option<String>,
    /// queued, running, succeeded, failed, cancelled or interrupted.
    pub status: Option<String>,
    /// schedule or manual.
    pub trigger: Option<String>,
    /// Runs queued at or after this time.
    pub since: Option<DateTime<Utc>>,
    /// Runs queued before this time.
    pub until: Option<DateTime<Utc>>,
    /// The last run of the previous page (its `queued_at` and id): the page starts
    /// after it.
    pub after: Option<(DateTime<Utc>, String)>,
    /// How many runs (at least 1).
    pub limit: u32,
}

/// A log line with its position in the run's stream: the cursor of the next poll.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct NumberedLine {
    pub id: i64,
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub line: LogLine,
}

/// The audit log of one package's calls to one connector's query or endpoint.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct ConnectorActivity {
    pub package: String,
    pub connector: String,
    pub target: String,
    pub calls: i64,
    /// Denied, vetoed, failed, or answered with an HTTP status >= 400.
    pub errors: i64,
    pub total_us: i64,
    pub max_us: i64,
}

enum Bind {
    Text(String),
    Time(DateTime<Utc>),
}

impl State {
    /// One page of runs, newest first (`queued_at`, then id), filtered by `q`.
    pub async fn run_page(&self, q: &RunQuery) -> Result<Vec<Run>, StateError> {
        let mut clauses: Vec<String> = Vec::new();
        let mut binds = Vec::new();
        let mut arg = |b: Bind| {
            binds.push(b);
            format!("${}", binds.len())
        };
        let text = |s: &Option<String>| s.clone().map(Bind::Text);
        for (column, value) in [
            ("job", text(&q.job)),
            ("status", text(&q.status)),
            ("trigger_type", text(&q.trigger)),
        ] {
            if let Some(v) = value {
                clauses.push(format!("{column} = {}", arg(v)));
            }
        }
        if let Some(t) = q.since {
            clauses.push(format!("queued_at >= {}", arg(Bind::Time(t))));
        }
        if let Some(t) = q.until {
            clauses.push(format!("queued_at < {}", arg(Bind::Time(t))));
        }
        if let Some((at, id)) = &q.after {
            let (lt, eq, id) = (
                arg(Bind::Time(*at)),
                arg(Bind::Time(*at)),
                arg(Bind::Text(id.clone())),
            );
            clauses.push(format!(
                "(queued_at < {lt} OR (queued_at = {eq} AND id < {id}))"
            ));
        }
        let filter = if clauses.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", clauses.join(" AND "))
        };
        let sql = format!(
            "SELECT {RUN_COLUMNS} FROM runs {filter} ORDER BY queued_at DESC, id DESC LIMIT {}",
            q.limit.max(1)
        );
        let rows: Vec<RunRow> = with_db!(self, p => {
            let mut query = sqlx::query_as(&sql);
            for b in binds {
                query = match b {
                    Bind::Text(s) => query.bind(s),
                    Bind::Time(t) => query.bind(t),
                };
            }
            query.fetch_all(p).await?
        });
        Ok(rows.into_iter().map(Run::from).collect())
    }

    /// The log lines of run `run_id` after line `after` (0: from the first), at most
    /// `limit`, in order.
    pub async fn logs_after(
        &self,
        run_id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<NumberedLine>, StateError> {
        let lines = with_db!(self, p => {
            sqlx::query_as::<_, NumberedLine>(
                "SELECT id, run_id, step, attempt, time, level, logger, message FROM logs \
                 WHERE run_id = $1 AND id > $2 ORDER BY id LIMIT $3",
            )
            .bind(run_id)
            .bind(after)
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await?
        });
        Ok(lines)
    }

    /// The connector calls audited since `since`, summed per package, connector and
    /// target, the busiest first (at most `limit` rows).
    pub async fn connector_activity(
        &self,
        since: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<ConnectorActivity>, StateError> {
        let rows = with_db!(self, p => {
            sqlx::query_as::<_, ConnectorActivity>(
                "SELECT package, connector, target, CAST(count(*) AS BIGINT) AS calls, \
                 CAST(sum(CASE WHEN outcome IN ('denied', 'vetoed', 'failed') \
                   OR outcome LIKE 'http %' THEN 1 ELSE 0 END) AS BIGINT) AS errors, \
                 CAST(sum(duration_us) AS BIGINT) AS total_us, \
                 CAST(max(duration_us) AS BIGINT) AS max_us \
                 FROM audit WHERE time >= $1 AND outcome <> 'dropped' \
                 GROUP BY package, connector, target ORDER BY calls DESC, package, connector, target \
                 LIMIT $2",
            )
            .bind(since)
            .bind(i64::from(limit.max(1)))
            .fetch_all(p)
            .await?
        });
        Ok(rows)
    }

    /// The status of run `id` (exactly), if it exists: a cheap look for a page that
    /// follows a run.
    pub async fn run_status(&self, id: &str) -> Result<Option<String>, StateError> {
        let status = with_db!(self, p => {
            sqlx::query_scalar("SELECT status FROM runs WHERE id = $1")
                .bind(id)
                .fetch_optional(p)
                .await?
        });
        Ok(status)
    }

    /// Whether the database answers (one trivial query).
    pub async fn ping(&self) -> Result<(), StateError> {
        with_db!(self, p => {
            sqlx::query("SELECT 1").execute(p).await?;
        });
        Ok(())
    }
}
