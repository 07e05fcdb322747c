//! The records of the run history: runs, steps, log lines, and how they are asked for.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::CallSummary;

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
    /// Which execution holds it: moved on by each claim and each re-queue; the writes of
    /// an older one are refused (fencing).
    pub epoch: i64,
}

/// The columns of [`RunRow`].
pub(crate) const RUN_COLUMNS: &str = "id, job, trigger_type, session_user_name, status, params, \
     scheduled_for, queued_at, started_at, finished_at, error, owner, epoch";

#[derive(sqlx::FromRow)]
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) job: String,
    pub(crate) trigger_type: String,
    pub(crate) session_user_name: String,
    pub(crate) status: String,
    pub(crate) params: String,
    pub(crate) scheduled_for: DateTime<Utc>,
    pub(crate) queued_at: DateTime<Utc>,
    pub(crate) started_at: Option<DateTime<Utc>>,
    pub(crate) finished_at: Option<DateTime<Utc>>,
    pub(crate) error: Option<String>,
    pub(crate) owner: String,
    pub(crate) epoch: i64,
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
            epoch: r.epoch,
        }
    }
}

/// Stored JSON text as JSON (text that is not JSON stays a string).
pub(crate) fn json_or_text(s: String) -> serde_json::Value {
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
    /// The epoch of the execution that last wrote it (its run's, unless the run was
    /// re-queued since and its new execution has not reached this step).
    pub epoch: i64,
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
pub(crate) struct StepRow {
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
    epoch: i64,
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
            epoch: r.epoch,
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
