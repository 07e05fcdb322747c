//! The audit log of connector calls: rows written in batches ([`State::insert_audit`]),
//! a run's calls summed up per package, connector and target ([`CallSummary`], in the
//! run record) and listed a page at a time ([`State::calls`]).
//!
//! A run that makes 10,000 calls keeps 10,000 rows here, but its record carries one
//! summary per package, connector and target: counts and sums by `GROUP BY` in the
//! database, the p50 and p99 (nearest rank, the ⌈n·p⌉-th smallest) from one pass over
//! the durations alone, which the database sorts by group and duration. (Window
//! functions ranking each group's durations did the same in SQL, but took SQLite twice
//! as long.) Pages are keyed by the audit row id (`--after`), so a page costs the same
//! however deep it is.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::{Db, State, StateError};

/// The outcome of the row that stands for audit records the history did not keep up
/// with ([`AuditEntry::dropped`]).
const DROPPED: &str = "dropped";

/// One connector call for the audit log (never parameter values).
#[derive(Debug, Clone)]
pub struct AuditEntry<'a> {
    pub time: DateTime<Utc>,
    /// The plugin package that made the call.
    pub package: &'a str,
    pub call_id: u64,
    pub run_id: Option<&'a str>,
    pub connector: &'a str,
    /// The query or endpoint name.
    pub target: &'a str,
    /// Rows returned or affected, when that is known.
    pub rows: Option<u64>,
    pub duration_us: u64,
    /// "ok", "denied", "failed", "http 404", "committed", "rolled back", ...
    pub outcome: &'a str,
}

impl<'a> AuditEntry<'a> {
    /// The row written in place of `count` records of `run_id` that found the queue to
    /// the database full: outcome `dropped`, target `audit records dropped`, the count
    /// as its rows. A run's record reports their sum ([`crate::RunRecord`]'s
    /// `connector_calls_dropped`).
    pub fn dropped(time: DateTime<Utc>, run_id: Option<&'a str>, count: u64) -> Self {
        AuditEntry {
            time,
            package: "",
            call_id: 0,
            run_id,
            connector: "",
            target: "audit records dropped",
            rows: Some(count),
            duration_us: 0,
            outcome: DROPPED,
        }
    }
}

/// The columns of [`AuditRow`].
const AUDIT_COLUMNS: &str =
    "id, time, package, call_id, run_id, connector, target, row_count, duration_us, outcome";

/// One row of the audit log as read back.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    /// Its place in the log (increasing): the `--after` of the next page.
    pub id: i64,
    pub time: DateTime<Utc>,
    pub package: String,
    pub call_id: i64,
    pub run_id: Option<String>,
    pub connector: String,
    pub target: String,
    pub row_count: Option<i64>,
    pub duration_us: i64,
    pub outcome: String,
}

/// A run's calls of one target (a named query, an endpoint, or `transaction`) of one
/// connector by one package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CallSummary {
    pub package: String,
    pub connector: String,
    pub target: String,
    /// How many calls.
    pub calls: i64,
    /// Rows read or affected, summed over the calls that report them (None when none
    /// does: API calls, calls that did not run).
    pub rows: Option<i64>,
    /// Their durations: the sum, the median and the 99th percentile (nearest rank: the
    /// ⌈n·p⌉-th smallest), µs.
    pub total_us: i64,
    pub p50_us: i64,
    pub p99_us: i64,
    /// Calls whose outcome is neither `ok` nor `committed` (denied, vetoed, failed,
    /// `http NNN`, rolled back).
    pub errors: i64,
}

/// One group of [`CALL_GROUPS`].
#[derive(sqlx::FromRow)]
struct CallGroup {
    package: String,
    connector: String,
    target: String,
    calls: i64,
    row_sum: Option<i64>,
    total_us: i64,
    errors: i64,
    first_id: i64,
    last_id: i64,
}

/// The calls of run `$1` per package, connector and target, in that order (rows
/// `dropped` are counted apart).
const CALL_GROUPS: &str = "\
    SELECT package, connector, target, COUNT(*) AS calls, \
      CAST(SUM(row_count) AS BIGINT) AS row_sum, \
      CAST(SUM(duration_us) AS BIGINT) AS total_us, \
      CAST(SUM(CASE WHEN outcome IN ('ok', 'committed') THEN 0 ELSE 1 END) AS BIGINT) AS errors, \
      MIN(id) AS first_id, MAX(id) AS last_id \
    FROM audit WHERE run_id = $1 AND outcome <> 'dropped' \
    GROUP BY package, connector, target ORDER BY package, connector, target";

/// The durations of the same calls (up to audit row `$2`), in the same group order and
/// ascending within a group: the groups' counts cut it into their sorted durations.
const CALL_DURATIONS: &str = "\
    SELECT duration_us FROM audit WHERE run_id = $1 AND outcome <> 'dropped' AND id <= $2 \
    ORDER BY package, connector, target, duration_us";

/// The ⌈n·pct/100⌉-th smallest of `sorted` (0 for none).
fn nearest_rank(sorted: &[i64], pct: usize) -> i64 {
    let rank = (sorted.len() * pct).div_ceil(100).max(1);
    sorted.get(rank - 1).copied().unwrap_or(0)
}

/// One page of a run's connector calls, oldest first ([`State::calls`]).
#[derive(Debug, Clone, Serialize)]
pub struct CallPage {
    pub run_id: String,
    /// The run's calls in all (every page).
    pub total: i64,
    pub calls: Vec<AuditRow>,
    /// The `after` of the next page; None on the last.
    pub next_after: Option<i64>,
}

impl State {
    /// Appends connector calls to the audit log in order, in one transaction (a
    /// multi-row insert per 500 entries).
    pub async fn insert_audit(&self, entries: &[AuditEntry<'_>]) -> Result<(), StateError> {
        if entries.is_empty() {
            return Ok(());
        }
        let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            for chunk in entries.chunks(INSERT_ROWS) {
                sqlx::QueryBuilder::new(
                    "INSERT INTO audit (time, package, call_id, run_id, connector, target, \
                     row_count, duration_us, outcome) ",
                )
                .push_values(chunk, |mut row, e| {
                    row.push_bind(e.time)
                        .push_bind(e.package)
                        .push_bind(int(e.call_id))
                        .push_bind(e.run_id)
                        .push_bind(e.connector)
                        .push_bind(e.target)
                        .push_bind(e.rows.map(int))
                        .push_bind(int(e.duration_us))
                        .push_bind(e.outcome);
                })
                .build()
                .execute(&mut *tx)
                .await?;
            }
            tx.commit().await?;
        });
        Ok(())
    }

    /// The audit log, newest first.
    pub async fn audit(&self, limit: u32) -> Result<Vec<AuditRow>, StateError> {
        let rows = with_db!(self, p => {
            sqlx::query_as::<_, AuditRow>(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit ORDER BY id DESC LIMIT $1"
            ))
            .bind(i64::from(limit))
            .fetch_all(p)
            .await?
        });
        Ok(rows)
    }

    /// The connector calls of run `run_id` per package, connector and target, in the
    /// order of each group's first call, and how many of its audit records were dropped.
    /// Counts and sums come from a GROUP BY; the percentiles from one ordered pass over
    /// the durations alone (the database sorts; no other column comes back).
    pub(crate) async fn call_summary(
        &self,
        run_id: &str,
    ) -> Result<(Vec<CallSummary>, u64), StateError> {
        let (groups, durations, dropped): (Vec<CallGroup>, Vec<i64>, Option<i64>) = with_db!(self, p => {
            let groups = sqlx::query_as::<_, CallGroup>(CALL_GROUPS)
                .bind(run_id)
                .fetch_all(p)
                .await?;
            // Rows written meanwhile (a run in progress) come after the last one counted.
            let last = groups.iter().map(|g| g.last_id).max().unwrap_or(0);
            let durations = sqlx::query_scalar(CALL_DURATIONS)
                .bind(run_id)
                .bind(last)
                .fetch_all(p)
                .await?;
            let dropped = sqlx::query_scalar(
                "SELECT CAST(SUM(row_count) AS BIGINT) FROM audit \
                 WHERE run_id = $1 AND outcome = 'dropped'",
            )
            .bind(run_id)
            .fetch_one(p)
            .await?;
            (groups, durations, dropped)
        });
        let mut rest = durations.as_slice();
        let mut summary: Vec<(i64, CallSummary)> = groups
            .into_iter()
            .map(|g| {
                let n = usize::try_from(g.calls).unwrap_or(0).min(rest.len());
                let (sorted, after) = rest.split_at(n);
                rest = after;
                let s = CallSummary {
                    package: g.package,
                    connector: g.connector,
                    target: g.target,
                    calls: g.calls,
                    rows: g.row_sum,
                    total_us: g.total_us,
                    p50_us: nearest_rank(sorted, 50),
                    p99_us: nearest_rank(sorted, 99),
                    errors: g.errors,
                };
                (g.first_id, s)
            })
            .collect();
        summary.sort_by_key(|(first, _)| *first);
        let summary = summary.into_iter().map(|(_, s)| s).collect();
        Ok((summary, dropped.unwrap_or(0).max(0) as u64))
    }

    /// A page of the connector calls of the run named by `id` (or a prefix of it that
    /// names one run), oldest first: at most `limit` (at least 1) calls after the audit
    /// row `after` (None: from the first). None when there is no such run.
    pub async fn calls(
        &self,
        id: &str,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Option<CallPage>, StateError> {
        let Some(run) = self.find_run(id).await? else {
            return Ok(None);
        };
        let limit = i64::from(limit.max(1));
        let (total, mut calls): (i64, Vec<AuditRow>) = with_db!(self, p => {
            let total = sqlx::query_scalar("SELECT COUNT(*) FROM audit WHERE run_id = $1")
                .bind(&run.id)
                .fetch_one(p)
                .await?;
            // One more than asked for: whether there is a next page.
            let calls = sqlx::query_as::<_, AuditRow>(&format!(
                "SELECT {AUDIT_COLUMNS} FROM audit WHERE run_id = $1 AND id > $2 \
                 ORDER BY id LIMIT $3"
            ))
            .bind(&run.id)
            .bind(after.unwrap_or(0))
            .bind(limit + 1)
            .fetch_all(p)
            .await?;
            (total, calls)
        });
        let more = calls.len() as i64 > limit;
        calls.truncate(limit as usize);
        let next_after = more.then(|| calls.last().map(|c| c.id)).flatten();
        Ok(Some(CallPage {
            run_id: run.id,
            total,
            calls,
            next_after,
        }))
    }
}

/// Audit rows per INSERT statement: 9 parameters each keeps a statement well within
/// SQLite's 32,766 and PostgreSQL's 65,535 bound parameters.
const INSERT_ROWS: usize = 500;
