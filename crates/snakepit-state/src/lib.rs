//! snakepit's state: the run history of jobs (runs, their steps, their log streams), the
//! scheduler's last ticks, and the audit log of connector calls, in SQLite (the default,
//! `<apps>/.snakepit/state.db`) or PostgreSQL (`[runtime] state = "postgres://…"`).
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(async {
//! use snakepit_state::{RunFilter, State};
//!
//! let apps = tempfile::tempdir()?;
//! // <apps>/.snakepit/state.db, made and migrated on first use.
//! let state = State::open_for_apps(apps.path(), None).await?;
//! for run in state.runs(&RunFilter { job: None, limit: 20 }).await? {
//!     println!("{} {} {}", run.id, run.job, run.status);
//! }
//! println!("{}", state.url());
//! # Ok(())
//! # })
//! # }
//! ```
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
//! Several nodes (README, "Several machines"): a scheduled run is inserted `queued` with no owner and
//! taken by [`State::claim_run`] (`FOR UPDATE SKIP LOCKED` on PostgreSQL), so each
//! queued run is executed by one node; [`State::renew_lease`] only extends a lease its
//! owner still holds. [`State::open_as`] gives a state its own owner identity (several
//! nodes in one process, in tests).
//!
//! Each claim and each re-queue moves a run's epoch on, and every write of an execution
//! carries the [`Claim`] (run id and epoch) it runs under: a write whose epoch is no
//! longer the run's is refused ([`StateError::Fenced`]), so a node that lost its lease
//! cannot touch the run's record any more. On PostgreSQL a run queued or ended notifies
//! the nodes ([`State::wakeups`]); each serve records itself in the nodes table
//! ([`State::heartbeat`], [`State::nodes`]). Module by module: `model` (the records),
//! `open`, `runs` (recording and reading runs), `leases` (claims, leases, recovery),
//! `schedule` (last ticks), `nodes`, `wake`, `audit`, `browse` (the console's pages).
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

mod owner;

use sqlx::postgres::PgPool;
use sqlx::sqlite::SqlitePool;

pub use audit::{AuditEntry, AuditRow, CallPage, CallSummary};
pub use leases::{Claim, ClaimedRun, Recovered};
pub use model::{
    LogLine, NewRun, Run, RunFilter, RunRecord, RunStatus, Step, StepEnd, StepError, StepStatus,
    StepUsage, Trigger,
};
use model::{RunRow, RUN_COLUMNS};
pub use nodes::Node;
pub use owner::Owner;
pub use wake::Wakeups;

use std::time::Duration;

/// The state url when `[runtime] state` is not set, relative to the apps dir.
pub const DEFAULT_URL: &str = "sqlite://.snakepit/state.db";

/// How long a run's lease lasts unless `[runtime] lease` says otherwise
/// ([`State::with_lease`]); its runner renews it every third of it.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(15);
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
    /// A write to a run by a node that no longer holds it: another node re-queued or
    /// claimed it since (its epoch moved on), or it ended.
    #[error("run {run_id}: this node's claim (epoch {epoch}) no longer holds the run; the write was refused")]
    Fenced { run_id: String, epoch: i64 },
    /// A run id prefix names several runs.
    #[error("{prefix:?} names several runs ({}); give more of the id", .matches.join(", "))]
    Ambiguous {
        prefix: String,
        matches: Vec<String>,
    },
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

/// Locks the run's row for the rest of the transaction `$tx` if `$claim` still holds
/// it (its epoch, the run queued or running), else returns [`StateError::Fenced`]. A
/// write, so that it takes the row lock on PostgreSQL (a claim or re-queue under way
/// waits for the transaction, and one that committed first makes it match nothing)
/// and the write lock on SQLite.
macro_rules! fence {
    ($tx:expr, $claim:expr) => {{
        let held = sqlx::query(
            "UPDATE runs SET epoch = epoch \
             WHERE id = $1 AND epoch = $2 AND status IN ('queued', 'running')",
        )
        .bind(&$claim.run_id)
        .bind($claim.epoch)
        .execute(&mut *$tx)
        .await?
        .rows_affected();
        if held != 1 {
            return Err($claim.fenced());
        }
    }};
}

mod audit;
// After `with_db!` and `fence!`, which they use.
mod browse;
mod leases;
mod model;
mod nodes;
mod open;
mod runs;
mod schedule;
mod wake;
pub use browse::{ConnectorActivity, NumberedLine, RunQuery};

/// The run history and audit log of an install. Cheap to clone.
#[derive(Clone)]
pub struct State {
    db: Db,
    url: String,
    owner: Owner,
    lease: Duration,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State").field("url", &self.url).finish()
    }
}

impl State {
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

    /// How long the leases of the runs this state claims last ([`DEFAULT_LEASE`]
    /// unless set by [`State::with_lease`]).
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// The same state with its runs' leases lasting `lease` (`[runtime] lease`).
    pub fn with_lease(mut self, lease: Duration) -> State {
        self.lease = lease;
        self
    }

    /// Closes the database connections.
    pub async fn close(&self) {
        with_db!(self, p => p.close().await);
    }
}
