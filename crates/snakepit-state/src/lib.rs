//! snakepit's state: the run history of jobs (runs, their steps, their log streams), the
//! scheduler's last ticks, and the audit log of connector calls, in SQLite (the default,
//! `<apps>/.snakepit/state.db`) or PostgreSQL (`[runtime] state = "postgres://…"`).
//!
//! # Theory of operation
//!
//! One API over two backends: [`State`] holds an sqlx pool of either kind and every
//! query is written once, with `$N` placeholders (which SQLite accepts too); only the
//! migrations differ (`migrations/sqlite`, `migrations/postgres`: TEXT times and
//! AUTOINCREMENT there, TIMESTAMPTZ and identity columns here). Opening a state runs
//! the migrations, then [`State::recover`]: a run left `queued` or `running` by a
//! process that is gone is marked `interrupted`, or, for a scheduled run on
//! PostgreSQL, re-queued (at most [`MAX_REQUEUES`] times).
//!
//! Several nodes (SPEC §8): a scheduled run is inserted `queued` with no owner and
//! taken by [`State::claim_run`] (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so each
//! queued run is executed by one node; [`State::renew_lease`] only extends a lease its
//! owner still holds. [`State::open_as`] gives a state its own owner identity (several
//! nodes in one process, in tests).
//!
//! The audit log (module `audit`) is written in batches ([`State::insert_audit`]); a
//! run's record sums its calls up per package, connector and target ([`CallSummary`])
//! and [`State::calls`] lists them a page at a time, keyed by the audit row id.
//!
//! Every write happens when the thing it records happens (a run queued, started,
//! finished; a step's attempt started and ended; a batch of log lines), so a supervisor
//! killed mid-run loses at most the log lines of its last unflushed batch. Each run
//! names its [`Owner`] (host, boot id, pid and process start time) and holds a lease
//! that its runner renews: on the same machine a dead owner is seen at once through
//! `/proc`; an owner on another machine (PostgreSQL shared by nodes) is dead when its
//! lease has run out.
//!
//! # Example
//!
//! ```no_run
//! # async fn demo() -> Result<(), snakepit_state::StateError> {
//! use snakepit_state::{State, RunFilter};
//!
//! let state = State::open_for_apps("liberty-apps".as_ref(), None).await?;
//! for run in state.runs(&RunFilter { job: None, limit: 20 }).await? {
//!     println!("{} {} {}", run.id, run.job, run.status);
//! }
//! # Ok(()) }
//! ```

mod owner;

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};

pub use audit::{AuditEntry, AuditRow, CallPage, CallSummary};
pub use owner::Owner;

/// The state url when `[runtime] state` is not set, relative to the apps dir.
pub const DEFAULT_URL: &str = "sqlite://.snakepit/state.db";

/// How long a run's lease lasts; its runner renews it every [`LEASE_RENEW`].
pub const LEASE: Duration = Duration::from_secs(60);
/// How often a runner renews the leases of its runs.
pub const LEASE_RENEW: Duration = Duration::from_secs(15);
/// How many times a scheduled run is re-queued after its node stopped renewing its
/// lease (PostgreSQL); the next time it is marked `interrupted`, so that a run that
/// kills every node does not go round forever.
pub const MAX_REQUEUES: i64 = 3;
/// The logger name of the lines snakepit itself writes in a run's log stream (the
/// runner's notes, a re-queue).
pub const JOBS_LOGGER: &str = "snakepit.jobs";

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// `[runtime] state` is not a url this version opens.
    #[error("[runtime] state = {url:?} is not a state url: {reason}")]
    Url { url: String, reason: String },
    /// The database could not be opened or reached.
    #[error("cannot open the state database {url}: {source}")]
    Connect {
        url: String,
        #[source]
        source: sqlx::Error,
    },
    /// Its tables could not be created or upgraded.
    #[error("cannot migrate the state database {url}: {source}")]
    Migrate {
        url: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("state database: {0}")]
    Query(#[from] sqlx::Error),
    /// A run id prefix names several runs.
    #[error("{prefix:?} names several runs ({}); give more of the id", .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
}

/// How a run was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// By the scheduler, at a cron tick.
    Schedule,
    /// By a person (`snakepit run`) or a program.
    Manual,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Trigger::Schedule => "schedule",
            Trigger::Manual => "manual",
        }
    }
}

/// Where a run is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    Queued,
    Running,
    Succeeded,
    /// A step failed after its retries.
    Failed,
    /// Stopped on request (Ctrl-C on `snakepit run`).
    Cancelled,
    /// Its supervisor died or shut down before the run finished.
    Interrupted,
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Queued => "queued",
            RunStatus::Running => "running",
            RunStatus::Succeeded => "succeeded",
            RunStatus::Failed => "failed",
            RunStatus::Cancelled => "cancelled",
            RunStatus::Interrupted => "interrupted",
        }
    }
}

/// Where a step is in its run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StepStatus {
    Pending,
    Running,
    /// An attempt failed; the next one waits for its backoff delay.
    Retrying,
    Succeeded,
    Failed,
    /// Not run because an earlier step failed.
    Skipped,
    Cancelled,
    Interrupted,
}

impl StepStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            StepStatus::Pending => "pending",
            StepStatus::Running => "running",
            StepStatus::Retrying => "retrying",
            StepStatus::Succeeded => "succeeded",
            StepStatus::Failed => "failed",
            StepStatus::Skipped => "skipped",
            StepStatus::Cancelled => "cancelled",
            StepStatus::Interrupted => "interrupted",
        }
    }
}

/// A run to record, with the names of its steps (recorded `pending`).
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub job: String,
    pub trigger: Trigger,
    pub session_user: String,
    /// The job's params as the run sees them (a JSON object).
    pub params: serde_json::Value,
    /// The time the templates are evaluated against: the cron tick of a scheduled run,
    /// the trigger time of a manual one.
    pub scheduled_for: DateTime<Utc>,
    pub queued_at: DateTime<Utc>,
    pub steps: Vec<String>,
}

/// One run of the history.
#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub id: String,
    pub job: String,
    /// "schedule" or "manual".
    pub trigger: String,
    pub session_user: String,
    /// queued, running, succeeded, failed, cancelled or interrupted.
    pub status: String,
    pub params: serde_json::Value,
    pub scheduled_for: DateTime<Utc>,
    pub queued_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Why the run did not succeed, in one line.
    pub error: Option<String>,
    /// The process that ran it (`host/boot id/pid/start time`).
    pub owner: String,
}

/// The columns of [`RunRow`].
const RUN_COLUMNS: &str = "id, job, trigger_type, session_user_name, status, params, \
     scheduled_for, queued_at, started_at, finished_at, error, owner";

#[derive(sqlx::FromRow)]
struct RunRow {
    id: String,
    job: String,
    trigger_type: String,
    session_user_name: String,
    status: String,
    params: String,
    scheduled_for: DateTime<Utc>,
    queued_at: DateTime<Utc>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    error: Option<String>,
    owner: String,
}

impl From<RunRow> for Run {
    fn from(r: RunRow) -> Run {
        Run {
            id: r.id,
            job: r.job,
            trigger: r.trigger_type,
            session_user: r.session_user_name,
            status: r.status,
            params: json_or_text(r.params),
            scheduled_for: r.scheduled_for,
            queued_at: r.queued_at,
            started_at: r.started_at,
            finished_at: r.finished_at,
            error: r.error,
            owner: r.owner,
        }
    }
}

/// Stored JSON text as JSON (text that is not JSON stays a string).
fn json_or_text(s: String) -> serde_json::Value {
    serde_json::from_str(&s).unwrap_or(serde_json::Value::String(s))
}

impl Run {
    /// How long it ran (until now for a run in progress).
    pub fn duration(&self, now: DateTime<Utc>) -> Option<Duration> {
        let start = self.started_at?;
        (self.finished_at.unwrap_or(now) - start).to_std().ok()
    }
}

/// A step's error: the exception's qualified type, message and traceback, or the
/// supervisor's reason (Timeout, WorkerCrashed, ...).
#[derive(Debug, Clone, Serialize)]
pub struct StepError {
    #[serde(rename = "type")]
    pub type_name: String,
    pub message: String,
    pub traceback: Option<String>,
}

/// One step of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub position: i64,
    pub name: String,
    /// pending, running, retrying, succeeded, failed, skipped, cancelled or
    /// interrupted.
    pub status: String,
    pub attempts: i64,
    /// What the callable returned (JSON), for a step that succeeded.
    pub result: Option<serde_json::Value>,
    pub error: Option<StepError>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// What the step's calls cost, summed over its attempts that a worker answered;
    /// None when none was.
    pub usage: Option<StepUsage>,
}

/// What a step's calls cost (`snakepit::CallUsage`, summed over the step's attempts;
/// the peak is the largest). Integers, so that JSON readers need no duration format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StepUsage {
    /// From each CALL's write to its answer's read (waiting for a worker and retry
    /// delays excluded).
    pub wall_us: i64,
    /// The worker's CPU time (every thread), user and system.
    pub cpu_user_us: i64,
    pub cpu_sys_us: i64,
    /// The worker's resident high-water mark at the end of the call (not reset per
    /// call: a bound on the step's own peak).
    pub peak_rss_bytes: i64,
    /// Host requests (connector calls) and the time the supervisor spent serving them.
    pub host_requests: i64,
    pub host_us: i64,
}

#[derive(sqlx::FromRow)]
struct StepRow {
    position: i64,
    name: String,
    status: String,
    attempts: i64,
    result: Option<String>,
    error_type: Option<String>,
    error_message: Option<String>,
    error_traceback: Option<String>,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    wall_us: Option<i64>,
    cpu_user_us: Option<i64>,
    cpu_sys_us: Option<i64>,
    peak_rss_bytes: Option<i64>,
    host_requests: Option<i64>,
    host_us: Option<i64>,
}

impl From<StepRow> for Step {
    fn from(r: StepRow) -> Step {
        Step {
            position: r.position,
            name: r.name,
            status: r.status,
            attempts: r.attempts,
            result: r.result.map(json_or_text),
            error: r.error_type.map(|type_name| StepError {
                type_name,
                message: r.error_message.unwrap_or_default(),
                traceback: r.error_traceback,
            }),
            started_at: r.started_at,
            finished_at: r.finished_at,
            usage: r.wall_us.map(|wall_us| StepUsage {
                wall_us,
                cpu_user_us: r.cpu_user_us.unwrap_or(0),
                cpu_sys_us: r.cpu_sys_us.unwrap_or(0),
                peak_rss_bytes: r.peak_rss_bytes.unwrap_or(0),
                host_requests: r.host_requests.unwrap_or(0),
                host_us: r.host_us.unwrap_or(0),
            }),
        }
    }
}

/// One line of a run's log stream: a plugin's log record or print, or the runner's own
/// note (logger `snakepit.jobs`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LogLine {
    #[serde(skip)]
    pub run_id: String,
    /// The step it came from (None for the run's own lines).
    pub step: Option<String>,
    pub attempt: Option<i64>,
    pub time: DateTime<Utc>,
    /// Python's levels: 10 DEBUG, 20 INFO, 30 WARNING, 40 ERROR, 50 CRITICAL.
    pub level: i64,
    pub logger: String,
    pub message: String,
}

/// The name of a Python log level.
pub fn level_name(level: i64) -> &'static str {
    match level {
        ..=10 => "DEBUG",
        11..=20 => "INFO",
        21..=30 => "WARNING",
        31..=40 => "ERROR",
        _ => "CRITICAL",
    }
}

/// A run with its steps and its log stream: what `snakepit run` prints and
/// `snakepit runs show` reads.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    #[serde(flatten)]
    pub run: Run,
    pub steps: Vec<Step>,
    pub logs: Vec<LogLine>,
    /// The connector calls its steps made, from the audit log: one entry per package,
    /// connector and target (`snakepit runs show ID --calls` lists each call).
    pub connector_calls: Vec<CallSummary>,
    /// Audit records of this run that the history did not keep up with (counted, not
    /// written; 0 normally).
    pub connector_calls_dropped: u64,
}

/// Which runs to list: the latest `limit` (at least 1), of `job` or of all jobs.
#[derive(Debug, Clone)]
pub struct RunFilter {
    pub job: Option<String>,
    pub limit: u32,
}

impl Default for RunFilter {
    /// The latest 20 runs of all jobs.
    fn default() -> Self {
        RunFilter {
            job: None,
            limit: 20,
        }
    }
}

/// How a step ended.
#[derive(Debug, Clone)]
pub struct StepEnd {
    pub status: StepStatus,
    pub attempts: u32,
    /// The result as JSON, for a step that succeeded.
    pub result: Option<serde_json::Value>,
    pub error: Option<StepError>,
    /// What its attempts so far cost.
    pub usage: Option<StepUsage>,
}

#[derive(Clone)]
enum Db {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// Runs `$body` with `$pool` bound to the backend's pool: one query text, two backends.
macro_rules! with_db {
    ($state:expr, $pool:ident => $body:expr) => {
        match &$state.db {
            Db::Sqlite($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

mod audit;
// After `with_db!`, which it uses.
mod browse;
pub use browse::{ConnectorActivity, NumberedLine, RunQuery};

/// The run history and audit log of an install. Cheap to clone.
#[derive(Clone)]
pub struct State {
    db: Db,
    url: String,
    owner: Owner,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("url", &self.url).finish()
    }
}

impl State {
    /// Opens the state of the install in `apps_dir`: `configured` (its `[runtime]
    /// state`), else [`DEFAULT_URL`]. A relative SQLite path is relative to the apps
    /// dir, and its directory is created.
    pub async fn open_for_apps(
        apps_dir: &Path,
        configured: Option<&str>,
    ) -> Result<State, StateError> {
        State::open(configured.unwrap_or(DEFAULT_URL), apps_dir).await
    }

    /// Opens `url` (`sqlite://PATH`, `sqlite:PATH`, `postgres://…`, `postgresql://…`),
    /// a relative SQLite path taken from `base`; migrates; recovers the runs of dead
    /// owners (see [`State::recover`]). The runs this state starts or claims are owned
    /// by this process ([`Owner::current`]).
    pub async fn open(url: &str, base: &Path) -> Result<State, StateError> {
        State::open_as(url, base, Owner::current()).await
    }

    /// [`State::open`] with the runs owned by `owner`: several "nodes" in one process
    /// (tests of SPEC §8) each open the database as their own owner, on distinct hosts
    /// so that each judges the others by their leases.
    pub async fn open_as(url: &str, base: &Path, owner: Owner) -> Result<State, StateError> {
        let bad = |reason: &str| StateError::Url {
            url: snakepit_redact::mask_url(url),
            reason: reason.to_owned(),
        };
        let (db, shown) = if let Some(path) = url
            .strip_prefix("sqlite://")
            .or_else(|| url.strip_prefix("sqlite:"))
        {
            let path = path.split('?').next().unwrap_or(path);
            if path.is_empty() {
                return Err(bad("it has no file path; e.g. sqlite://.snakepit/state.db"));
            }
            let file: PathBuf = base.join(path);
            private_file(&file).map_err(|e| bad(&e))?;
            let shown = format!("sqlite://{}", file.display());
            let opts = SqliteConnectOptions::new()
                .filename(&file)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal)
                .busy_timeout(Duration::from_secs(10))
                .foreign_keys(true);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(opts)
                .await
                .map_err(|source| StateError::Connect {
                    url: shown.clone(),
                    source,
                })?;
            (Db::Sqlite(pool), shown)
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let shown = snakepit_redact::mask_url(url);
            let pool = PgPoolOptions::new()
                .max_connections(5)
                .acquire_timeout(Duration::from_secs(10))
                .connect(url)
                .await
                .map_err(|source| StateError::Connect {
                    url: shown.clone(),
                    source,
                })?;
            (Db::Postgres(pool), shown)
        } else {
            return Err(bad(
                "use sqlite://PATH (relative to the apps dir) or postgres://USER@HOST/DB",
            ));
        };
        let state = State {
            db,
            url: shown,
            owner,
        };
        let migrated = match &state.db {
            Db::Sqlite(p) => sqlx::migrate!("migrations/sqlite").run(p).await,
            Db::Postgres(p) => sqlx::migrate!("migrations/postgres").run(p).await,
        };
        migrated.map_err(|source| StateError::Migrate {
            url: state.url.clone(),
            source,
        })?;
        state.recover(Utc::now()).await?.log();
        Ok(state)
    }

    /// The database, for messages (a PostgreSQL password is masked).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Whether several nodes can share this database (PostgreSQL; SQLite serves one).
    pub fn is_shared(&self) -> bool {
        matches!(self.db, Db::Postgres(_))
    }

    /// The owner of the runs this state starts or claims.
    pub fn owner(&self) -> &Owner {
        &self.owner
    }

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
    async fn end_open_run(
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

    /// Records a new run (`queued`) and its steps (`pending`): a manual run owned by
    /// this process (its lease starting now), which executes it; a scheduled run owned
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
        let lease = run.queued_at + LEASE;
        let params = run.params.to_string();
        let inserted = with_db!(self, p => {
            let mut tx = p.begin().await?;
            let n = sqlx::query(
                "INSERT INTO runs (id, job, trigger_type, session_user_name, status, params, \
                 scheduled_for, queued_at, owner, lease_until) \
                 VALUES ($1, $2, $3, $4, 'queued', $5, $6, $7, $8, $9) ON CONFLICT DO NOTHING",
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
    /// it first started).
    pub async fn start_run(&self, id: &str, now: DateTime<Utc>) -> Result<(), StateError> {
        with_db!(self, p => {
            sqlx::query(
                "UPDATE runs SET status = 'running', started_at = COALESCE(started_at, $1) \
                 WHERE id = $2",
            )
                .bind(now)
                .bind(id)
                .execute(p)
                .await?;
        });
        Ok(())
    }

    /// Ends a run: `succeeded`, `failed` (with `error`), `cancelled` or `interrupted`.
    /// Steps still pending become `skipped` after a failure; a step still running takes
    /// the run's status when it was cancelled or interrupted.
    pub async fn finish_run(
        &self,
        id: &str,
        status: RunStatus,
        error: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        match status {
            RunStatus::Cancelled | RunStatus::Interrupted => {
                return self
                    .end_open_run(id, status, error.unwrap_or(status.as_str()), now)
                    .await
            }
            _ => {}
        }
        with_db!(self, p => {
            let mut tx = p.begin().await?;
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
        run_id: &str,
        position: usize,
        attempt: u32,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        with_db!(self, p => {
            sqlx::query(
                "UPDATE steps SET status = 'running', attempts = $1, \
                 started_at = COALESCE(started_at, $2), finished_at = NULL \
                 WHERE run_id = $3 AND position = $4",
            )
            .bind(i64::from(attempt))
            .bind(now)
            .bind(run_id)
            .bind(position as i64)
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Records how a step ended.
    pub async fn finish_step(
        &self,
        run_id: &str,
        position: usize,
        end: &StepEnd,
        now: DateTime<Utc>,
    ) -> Result<(), StateError> {
        let result = end.result.as_ref().map(|r| r.to_string());
        let e = end.error.as_ref();
        let u = end.usage.as_ref();
        with_db!(self, p => {
            sqlx::query(
                "UPDATE steps SET status = $1, attempts = $2, result = $3, error_type = $4, \
                 error_message = $5, error_traceback = $6, finished_at = $7, wall_us = $10, \
                 cpu_user_us = $11, cpu_sys_us = $12, peak_rss_bytes = $13, host_requests = $14, \
                 host_us = $15 WHERE run_id = $8 AND position = $9",
            )
            .bind(end.status.as_str())
            .bind(i64::from(end.attempts))
            .bind(&result)
            .bind(e.map(|e| e.type_name.as_str()))
            .bind(e.map(|e| e.message.as_str()))
            .bind(e.and_then(|e| e.traceback.as_deref()))
            .bind(now)
            .bind(run_id)
            .bind(position as i64)
            .bind(u.map(|u| u.wall_us))
            .bind(u.map(|u| u.cpu_user_us))
            .bind(u.map(|u| u.cpu_sys_us))
            .bind(u.map(|u| u.peak_rss_bytes))
            .bind(u.map(|u| u.host_requests))
            .bind(u.map(|u| u.host_us))
            .execute(p)
            .await?;
        });
        Ok(())
    }

    /// Appends log lines, in one transaction.
    pub async fn append_logs(&self, lines: &[LogLine]) -> Result<(), StateError> {
        if lines.is_empty() {
            return Ok(());
        }
        with_db!(self, p => {
            let mut tx = p.begin().await?;
            for l in lines {
                sqlx::query(
                    "INSERT INTO logs (run_id, step, attempt, time, level, logger, message) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7)",
                )
                .bind(&l.run_id)
                .bind(&l.step)
                .bind(l.attempt)
                .bind(l.time)
                .bind(l.level)
                .bind(&l.logger)
                .bind(&l.message)
                .execute(&mut *tx)
                .await?;
            }
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
    async fn find_run(&self, id: &str) -> Result<Option<Run>, StateError> {
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
                 error_traceback, started_at, finished_at, wall_us, cpu_user_us, cpu_sys_us, \
                 peak_rss_bytes, host_requests, host_us FROM steps WHERE run_id = $1 ORDER BY position",
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

    /// Closes the database connections.
    pub async fn close(&self) {
        with_db!(self, p => p.close().await);
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

/// Makes `file`'s directory (0700, like `.snakepit/`) and the file itself (0600) if
/// they are missing, and takes the group's and others' bits off a file already there:
/// the history holds plugin output and audit records that workers running under
/// another uid must not read. (SQLite gives its `-wal` and `-shm` files the database
/// file's mode.)
fn private_file(file: &Path) -> Result<(), String> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| format!("cannot create the directory {}: {e}", dir.display()))?;
    }
    let opened = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(file)
        .and_then(|f| {
            let mut perms = f.metadata()?.permissions();
            if perms.mode() & 0o077 != 0 {
                perms.set_mode(perms.mode() & 0o700);
                f.set_permissions(perms)?;
            }
            Ok(())
        });
    opened.map_err(|e| format!("cannot create {} private (0600): {e}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_password_is_masked_in_every_message_about_the_url() {
        let dir = tempfile::tempdir().unwrap();
        // An invalid port: the connection fails at once, and says where it went.
        let url = "postgres://u:p@ss@127.0.0.1:99999/db?password=p@ss";
        let e = State::open(url, dir.path()).await.unwrap_err().to_string();
        assert!(
            e.contains("postgres://u:***@127.0.0.1:99999/db?password=***") && !e.contains("p@ss"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn the_state_directory_and_database_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let apps = tempfile::tempdir().unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        let state = State::open_for_apps(apps.path(), None).await.unwrap();
        let dir = apps.path().join(".snakepit");
        assert_eq!(mode(&dir), 0o700);
        for f in ["state.db", "state.db-wal", "state.db-shm"] {
            assert_eq!(mode(&dir.join(f)), 0o600, "{f}");
        }
        state.close().await;
        // A database made readable by others before is made private again.
        let db = dir.join("state.db");
        std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();
        State::open_for_apps(apps.path(), None)
            .await
            .unwrap()
            .close()
            .await;
        assert_eq!(mode(&db), 0o600);
    }

    #[tokio::test]
    async fn a_bad_url_says_what_to_write() {
        let dir = tempfile::tempdir().unwrap();
        let e = State::open("mysql://x", dir.path()).await.unwrap_err();
        assert!(e.to_string().contains("use sqlite://PATH"), "{e}");
    }
}
