//! Jobs: the runner (context, templates, chaining, retries and backoff on a manual
//! clock, lost workers, timeouts, halting) and the scheduler (a due tick, missed ticks
//! run once, the loop), against real workers and the run history on SQLite and
//! PostgreSQL. The fixture install is `tests/installs/jobs`, its steps
//! `tests/plugins/fx/jobsteps.py`.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde_json::json;
use snakepit_host::Host;
use snakepit_jobs::{
    AuditLog, Clock, Halt, JobSet, ManualClock, RunRequest, Runner, Scheduler, StepCaller,
};
use snakepit_state::{Owner, RunRecord, RunStatus, State, Trigger};
use tempfile::TempDir;
use tokio::sync::watch;

use crate::support::{plugins_dir, read_file_when_there, wait_for};

/// The jobs fixture install in a temporary apps dir (its own state database), with
/// `plugins/fx` linked to the fixture plugins and `runtime` appended to `[runtime]`.
pub fn jobs_install(runtime: &str) -> TempDir {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("installs/jobs");
    let dir = tempfile::tempdir().unwrap();
    let app = std::fs::read_to_string(src.join("app.toml")).unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        format!("{app}\n[runtime]\nworkers = 1\ncall_timeout = \"20s\"\n{runtime}\n"),
    )
    .unwrap();
    std::fs::copy(src.join("jobs.toml"), dir.path().join("jobs.toml")).unwrap();
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(plugins_dir().join("fx"), dir.path().join("plugins/fx")).unwrap();
    dir
}

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";

/// Runs one statement on the test database (fails loudly when the server is down).
async fn postgres(sql: &str) {
    let pool = sqlx::PgPool::connect(POSTGRES)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL at {POSTGRES} is needed for this test: {e}"));
    sqlx::raw_sql(sql).execute(&pool).await.unwrap();
    pool.close().await;
}

/// A test's run history: its state and, on PostgreSQL, its own schema.
pub struct TestState {
    pub state: State,
    /// The database url the state was opened with.
    pub url: String,
    schema: Option<String>,
}

impl TestState {
    /// The same database opened again as another node: its runs owned by `owner`
    /// (`dir` is the apps dir of an SQLite state).
    pub async fn node(&self, dir: &Path, owner: Owner) -> State {
        State::open_as(&self.url, dir, owner)
            .await
            .expect("the state opens")
    }

    /// Runs one statement in the test's PostgreSQL schema.
    pub async fn execute(&self, sql: &str) {
        let schema = self.schema.as_deref().expect("a PostgreSQL state");
        postgres(&format!("SET search_path = {schema}; {sql}")).await;
    }

    /// Closes the state and drops its schema.
    pub async fn close(self) {
        self.state.close().await;
        if let Some(schema) = self.schema {
            postgres(&format!("DROP SCHEMA {schema} CASCADE")).await;
        }
    }
}

/// Where a test keeps its run history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// The state of `dir` on `backend`: SQLite in `dir`, or a fresh schema of the
/// PostgreSQL database `test`.
pub async fn open_state(backend: Backend, dir: &Path) -> TestState {
    let (url, schema) = match backend {
        Backend::Sqlite => ("sqlite://.snakepit/state.db".to_owned(), None),
        Backend::Postgres => {
            let schema = crate::support::unique_name("snakepit_jobs").replace('-', "_");
            postgres(&format!("CREATE SCHEMA {schema}")).await;
            let url = format!("{POSTGRES}?options=-c%20search_path%3D{schema}");
            (url, Some(schema))
        }
    };
    let state = State::open(&url, dir).await.expect("the state opens");
    TestState { state, url, schema }
}

/// A time as RFC 3339.
pub fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().to_utc()
}

struct Fixture {
    dir: TempDir,
    host: Arc<Host>,
    jobs: JobSet,
    state: State,
    store: TestState,
}

async fn fixture(backend: Backend, runtime: &str) -> Fixture {
    let dir = jobs_install(runtime);
    let install = snakepit_host::Install::load(Some(dir.path()), None).unwrap();
    let jobs = JobSet::load(&install).expect("the fixture jobs load");
    let store = open_state(backend, dir.path()).await;
    let host = Arc::new(
        Host::start_checked(install)
            .await
            .expect("the install opens"),
    );
    Fixture {
        dir,
        host,
        jobs,
        state: store.state.clone(),
        store,
    }
}

impl Fixture {
    fn runner(&self, clock: Arc<dyn Clock>) -> Runner {
        Runner::new(self.host.clone(), self.state.clone(), clock)
    }

    /// Runs `job` as `ada` at `when` (dir param set to the test's dir when the job has
    /// one) and returns its record.
    async fn run(&self, clock: Arc<dyn Clock>, job: &str, when: DateTime<Utc>) -> RunRecord {
        let (_halt, rx) = watch::channel(None);
        self.run_with(clock, job, when, rx).await
    }

    async fn run_with(
        &self,
        clock: Arc<dyn Clock>,
        job: &str,
        when: DateTime<Utc>,
        halt: snakepit_jobs::HaltSignal,
    ) -> RunRecord {
        let has_dir = self
            .jobs
            .get(job)
            .unwrap()
            .params
            .iter()
            .any(|(k, _)| k == "dir");
        let params = if has_dir {
            vec![("dir".into(), self.dir.path().display().to_string())]
        } else {
            vec![]
        };
        let req = RunRequest {
            job: job.into(),
            trigger: Trigger::Manual,
            scheduled_for: when,
            params,
            session_user: "ada".into(),
        };
        let (id, _) = self
            .runner(clock)
            .run(&self.jobs, req, None, halt)
            .await
            .expect("the run is recorded");
        self.state
            .run(&id)
            .await
            .unwrap()
            .expect("the run is in the history")
    }

    async fn close(self) {
        self.host.shutdown(Duration::from_secs(2)).await;
        self.store.close().await;
    }
}

fn result(rec: &RunRecord, step: usize) -> &serde_json::Value {
    rec.steps[step].result.as_ref().expect("a step result")
}

async fn context_templates_and_chaining(backend: Backend) {
    let f = fixture(backend, "").await;
    let clock = Arc::new(ManualClock::new(at("2026-01-01T00:30:00Z")));
    let rec = f.run(clock.clone(), "etl", clock.now()).await;
    assert_eq!(rec.run.status, "succeeded", "{rec:#?}");
    assert_eq!(
        (rec.run.trigger.as_str(), rec.run.session_user.as_str()),
        ("manual", "ada")
    );
    let first = result(&rec, 0);
    // Templates against the scheduled time (a year boundary), typed values typed.
    assert_eq!(first["period"], "2025-12");
    assert_eq!(first["tag"], "eu-etl-2025-12-31");
    assert_eq!(first["limit"], 10);
    assert_eq!(first["dry_run"], false);
    // The job-step context.
    assert_eq!(first["job_id"], "etl");
    assert_eq!(first["run_id"], rec.run.id.as_str());
    assert_eq!(first["step_name"], "extract");
    assert_eq!(first["session_user"], "ada");
    assert_eq!(first["logger"], "job.etl");
    assert_eq!(first["previous_step"], serde_json::Value::Null);
    assert_eq!(first["params"]["region"], "eu");
    assert_eq!(first["step_kwargs"]["period"], "2025-12");
    // The next step gets the previous one's result.
    assert_eq!(result(&rec, 1), &json!({"got": first}));
    assert!(rec
        .steps
        .iter()
        .all(|s| s.status == "succeeded" && s.attempts == 1));
    // Each step's cost is on the record, read back from the history.
    for s in &rec.steps {
        let u = s.usage.expect("a step a worker answered has its cost");
        assert!(u.wall_us > 0 && u.cpu_user_us + u.cpu_sys_us > 0, "{u:?}");
        assert!(u.peak_rss_bytes > 4 << 20, "{u:?}");
        assert_eq!((u.host_requests, u.host_us), (0, 0));
    }
    // The plugin's log records and prints, tagged with step and attempt.
    let logs: Vec<(&str, i64, &str, &str)> = rec
        .logs
        .iter()
        .map(|l| {
            (
                l.step.as_deref().unwrap(),
                l.level,
                l.logger.as_str(),
                l.message.as_str(),
            )
        })
        .collect();
    assert_eq!(
        logs,
        [
            (
                "extract",
                20,
                "fx.jobsteps",
                "extract period=2025-12 limit=10"
            ),
            ("extract", 30, "job.etl", "through ctx logger"),
            ("extract", 20, "stdout", "a print from extract"),
        ]
    );
    assert!(rec.logs.iter().all(|l| l.attempt == Some(1)));
    f.close().await;
}

#[tokio::test]
async fn a_run_gets_its_context_templates_and_the_previous_result_sqlite() {
    context_templates_and_chaining(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_run_gets_its_context_templates_and_the_previous_result_postgres() {
    context_templates_and_chaining(Backend::Postgres).await;
}

#[tokio::test]
async fn templates_use_the_install_time_zone() {
    let f = fixture(Backend::Sqlite, "timezone = \"America/New_York\"").await;
    // 03:00 UTC on March 1st is 22:00 on February 28th in New York.
    let clock = Arc::new(ManualClock::new(at("2026-03-01T03:00:00Z")));
    let rec = f.run(clock.clone(), "etl", clock.now()).await;
    let first = result(&rec, 0);
    assert_eq!(first["period"], "2026-01");
    assert_eq!(first["tag"], "eu-etl-2026-02-27");
    f.close().await;
}

#[tokio::test]
async fn retries_back_off_exponentially_on_the_clock() {
    let f = fixture(Backend::Sqlite, "").await;
    let clock = Arc::new(ManualClock::auto_advancing(at("2026-05-01T02:00:00Z")));
    let started = Instant::now();
    let rec = f.run(clock.clone(), "flaky", clock.now()).await;
    assert_eq!(rec.run.status, "succeeded", "{rec:#?}");
    assert_eq!(rec.steps[0].attempts, 4);
    assert_eq!(result(&rec, 0), &json!({"attempt": 4}));
    let secs: Vec<u64> = clock.sleeps().iter().map(Duration::as_secs).collect();
    assert_eq!(secs, [2, 4, 8], "2 s doubling, on the clock");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "no real sleeping"
    );
    let retries: Vec<&str> = rec
        .logs
        .iter()
        .filter(|l| l.logger == "snakepit.jobs")
        .map(|l| l.message.as_str())
        .collect();
    assert_eq!(retries.len(), 3, "{retries:?}");
    assert!(
        retries[2].starts_with("attempt 3/4 failed: RuntimeError: flaky failure 3; retrying in 8s"),
        "{retries:?}"
    );
    // The step's times span the backoff: started at the first attempt, 14 s before its end.
    let s = &rec.steps[0];
    assert_eq!(
        (s.finished_at.unwrap() - s.started_at.unwrap()).num_seconds(),
        14
    );
    f.close().await;
}

async fn a_failed_step_fails_the_run(backend: Backend) {
    let f = fixture(backend, "").await;
    let clock = Arc::new(ManualClock::auto_advancing(at("2026-05-01T02:00:00Z")));
    let rec = f.run(clock.clone(), "failing", clock.now()).await;
    assert_eq!(rec.run.status, "failed");
    let error = rec.run.error.as_deref().unwrap();
    assert!(
        error.contains("step \"boom\" failed after 3 attempt(s): ValueError: boom"),
        "{error}"
    );
    let (boom, never) = (&rec.steps[0], &rec.steps[1]);
    assert_eq!((boom.status.as_str(), boom.attempts), ("failed", 3));
    let e = boom.error.as_ref().unwrap();
    assert_eq!(
        (e.type_name.as_str(), e.message.as_str()),
        ("ValueError", "boom")
    );
    let tb = e.traceback.as_deref().unwrap();
    assert!(
        tb.contains("KeyError: 'inner'") && tb.contains("direct cause"),
        "{tb}"
    );
    assert_eq!((never.status.as_str(), never.attempts), ("skipped", 0));
    // The failed step's three attempts were answered: their cost summed; the skipped
    // step has none.
    assert!(boom.usage.is_some_and(|u| u.wall_us > 0), "{boom:?}");
    assert!(never.usage.is_none());
    assert_eq!(clock.sleeps(), [Duration::from_secs(2); 2], "fixed backoff");
    f.close().await;
}

#[tokio::test]
async fn a_step_that_fails_after_its_retries_fails_the_run_sqlite() {
    a_failed_step_fails_the_run(Backend::Sqlite).await;
}

#[tokio::test]
async fn a_step_that_fails_after_its_retries_fails_the_run_postgres() {
    a_failed_step_fails_the_run(Backend::Postgres).await;
}

#[tokio::test]
async fn a_lost_worker_is_retried_and_a_timeout_fails_the_step() {
    let f = fixture(Backend::Sqlite, "").await;
    let clock = Arc::new(ManualClock::auto_advancing(at("2026-05-01T02:00:00Z")));
    let rec = f.run(clock.clone(), "crashy", clock.now()).await;
    assert_eq!(rec.run.status, "succeeded", "{rec:#?}");
    assert_eq!(rec.steps[0].attempts, 2);
    let note = &rec
        .logs
        .iter()
        .find(|l| l.logger == "snakepit.jobs")
        .unwrap()
        .message;
    assert!(note.contains("WorkerCrashed"), "{note}");

    let started = Instant::now();
    let rec = f.run(clock.clone(), "too-slow", clock.now()).await;
    assert_eq!(rec.run.status, "failed");
    let e = rec.steps[0].error.as_ref().unwrap();
    assert_eq!(e.type_name, "Timeout", "{e:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "timeout = \"1s\" applies"
    );
    f.close().await;
}

#[tokio::test]
async fn a_halted_run_cancels_its_call_and_is_recorded_so() {
    let f = fixture(Backend::Sqlite, "").await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(at("2026-05-01T02:00:00Z")));
    let (halt, rx) = watch::channel(None);
    let marker = f.dir.path().join("hang");
    let stopper = async {
        read_file_when_there(&marker, Duration::from_secs(20)).await;
        halt.send(Some(Halt::Cancel)).unwrap();
    };
    let (rec, ()) = tokio::join!(f.run_with(clock.clone(), "hang", clock.now(), rx), stopper);
    assert_eq!(rec.run.status, "cancelled");
    assert_eq!(rec.steps[0].status, "cancelled");
    assert!(rec
        .run
        .error
        .as_deref()
        .unwrap()
        .contains("cancelled during step \"hang\""));
    f.close().await;
}

#[tokio::test]
async fn the_scheduler_fires_a_due_tick_and_runs_missed_ticks_once() {
    let f = fixture(Backend::Sqlite, "").await;
    let clock = Arc::new(ManualClock::new(at("2026-03-01T00:30:00Z")));
    let caller: Arc<dyn StepCaller> = f.host.clone();
    let sched = Scheduler::new(caller, f.state.clone(), clock.clone(), f.jobs.clone());
    // First sight of "hourly": it starts from now, like cron.
    assert!(sched.due().await.unwrap().is_empty());
    assert_eq!(
        f.state.last_tick("hourly").await.unwrap(),
        Some(at("2026-03-01T00:30:00Z"))
    );
    clock.set(at("2026-03-01T00:59:59Z"));
    assert!(sched.due().await.unwrap().is_empty(), "not due yet");
    clock.set(at("2026-03-01T01:00:00Z"));
    let due = sched.due().await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].scheduled_for, at("2026-03-01T01:00:00Z"));
    assert!(sched.due().await.unwrap().is_empty(), "a tick fires once");
    // Down from 01:00 to 05:30: the 02, 03, 04 and 05 o'clock ticks make one run, at
    // 05:00, once the 01:00 run (still queued) has ended: one run per job at a time.
    clock.set(at("2026-03-01T05:30:00Z"));
    assert!(
        sched.due().await.unwrap().is_empty(),
        "one run per job at a time"
    );
    f.state
        .finish_run(
            &crate::state::unclaimed(&due[0].id),
            RunStatus::Succeeded,
            None,
            clock.now(),
        )
        .await
        .unwrap();
    let due = sched.due().await.unwrap();
    assert_eq!(due.len(), 1);
    assert_eq!(due[0].scheduled_for, at("2026-03-01T05:00:00Z"));
    assert!(sched.due().await.unwrap().is_empty());
    let runs = f.state.runs(&Default::default()).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert!(runs
        .iter()
        .all(|r| r.trigger == "schedule" && r.session_user == "system"));
    assert_eq!(runs[0].status, "queued");
    assert_eq!(runs[0].owner, "", "a queued scheduled run is no node's yet");
    f.close().await;
}

#[tokio::test]
async fn the_scheduler_loop_runs_a_job_at_its_tick_and_stops_cleanly() {
    let f = fixture(Backend::Sqlite, "").await;
    let clock = Arc::new(ManualClock::new(at("2026-03-01T05:59:30Z")));
    let caller: Arc<dyn StepCaller> = f.host.clone();
    let sched = Scheduler::new(caller, f.state.clone(), clock.clone(), f.jobs.clone());
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let state = f.state.clone();
    let driver = async {
        wait_for("the scheduler to sleep", Duration::from_secs(10), || {
            clock.sleeping() > 0
        })
        .await;
        assert_eq!(
            clock.sleeps(),
            [Duration::from_secs(30)],
            "it sleeps until 06:00"
        );
        clock.set(at("2026-03-01T06:00:00Z"));
        let until = Instant::now() + Duration::from_secs(20);
        let run = loop {
            let runs = state.runs(&Default::default()).await.unwrap();
            if let Some(r) = runs.into_iter().find(|r| r.status == "succeeded") {
                break r;
            }
            assert!(Instant::now() < until, "no scheduled run succeeded");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(run.scheduled_for, at("2026-03-01T06:00:00Z"));
        assert_eq!(run.trigger, "schedule");
        stop_tx.send(true).unwrap();
    };
    tokio::join!(sched.run(stop), driver);
    f.close().await;
}

#[tokio::test]
async fn a_stopped_scheduler_interrupts_the_runs_still_going_after_its_grace() {
    let f = fixture(Backend::Sqlite, "").await;
    let clock = Arc::new(ManualClock::new(at("2026-12-31T23:59:59Z")));
    let caller: Arc<dyn StepCaller> = f.host.clone();
    let sched = Scheduler::new(caller, f.state.clone(), clock.clone(), f.jobs.clone())
        .grace(Duration::from_millis(300));
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let stop = async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    };
    let state = f.state.clone();
    let driver = async {
        wait_for("the scheduler to sleep", Duration::from_secs(10), || {
            clock.sleeping() > 0
        })
        .await;
        clock.set(at("2027-01-01T00:00:00Z"));
        let until = Instant::now() + Duration::from_secs(20);
        let id = loop {
            let runs = state.runs(&Default::default()).await.unwrap();
            if let Some(r) = runs.iter().find(|r| r.job == "new-year") {
                let rec = state.run(&r.id).await.unwrap().unwrap();
                if rec.logs.iter().any(|l| l.message.starts_with("hanging")) {
                    break r.id.clone();
                }
            }
            assert!(
                Instant::now() < until,
                "the new-year run never started its step"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        stop_tx.send(true).unwrap();
        id
    };
    let started = Instant::now();
    let ((), id) = tokio::join!(sched.run(stop), driver);
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "the grace is 300 ms, not the step's 60 s"
    );
    let rec = f.state.run(&id).await.unwrap().unwrap();
    assert_eq!(rec.run.status, "interrupted", "{rec:#?}");
    assert_eq!(rec.run.scheduled_for, at("2027-01-01T00:00:00Z"));
    assert_eq!(
        rec.run.error.as_deref(),
        Some("interrupted by a shutdown during step \"hang\"")
    );
    assert_eq!(rec.steps[0].status, "interrupted");
    f.close().await;
}

/// The seed's billing job end to end: the step reads and writes through the SQL
/// connector, and every connector call lands in the history's audit table with the
/// run's id (and in the run's record).
#[tokio::test]
async fn a_job_step_uses_a_connector_and_its_calls_carry_the_run_id() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("installs/jobs-billing");
    let dir = tempfile::tempdir().unwrap();
    for f in ["app.toml", "connectors.toml", "jobs.toml"] {
        std::fs::copy(src.join(f), dir.path().join(f)).unwrap();
    }
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    std::os::unix::fs::symlink(plugins_dir().join("fx"), dir.path().join("plugins/fx")).unwrap();
    let db = sqlx::SqlitePool::connect(&format!(
        "sqlite://{}?mode=rwc",
        dir.path().join("billing.db").display()
    ))
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT, amount TEXT, period TEXT, status TEXT); \
         INSERT INTO invoices (customer, amount, period, status) VALUES \
           ('ACME', '120.00', '2026-05', 'draft'), ('Globex', '75.50', '2026-05', 'draft'), \
           ('Initech', '10.00', '2026-05', 'issued'), ('Hooli', '42.00', '2026-06', 'draft')",
    )
    .execute(&db)
    .await
    .unwrap();

    let install = snakepit_host::Install::load(Some(dir.path()), None).unwrap();
    let jobs = JobSet::load(&install).unwrap();
    let store = open_state(Backend::Sqlite, dir.path()).await;
    let audit = AuditLog::attach(&install.connectors, &store.state);
    let host = Arc::new(
        Host::start_checked(install)
            .await
            .expect("the install opens"),
    );
    let clock = Arc::new(ManualClock::new(at("2026-06-01T02:00:00Z")));
    let runner = Runner::new(host.clone(), store.state.clone(), clock.clone());
    let req = RunRequest {
        job: "reissue-monthly-drafts".into(),
        trigger: Trigger::Schedule,
        scheduled_for: clock.now(),
        params: vec![],
        session_user: snakepit_jobs::SYSTEM_USER.into(),
    };
    let (_halt, rx) = watch::channel(None);
    let (id, _) = runner.run(&jobs, req, None, rx).await.unwrap();
    let rec = store.state.run(&id).await.unwrap().unwrap();
    assert_eq!(rec.run.status, "succeeded", "{rec:#?}");
    assert_eq!(result(&rec, 0), &json!({"rows_affected": 2}));
    assert_eq!(
        rec.logs[0].message,
        "reissue period=2026-05 drafts=2 dry_run=False"
    );
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT customer, status FROM invoices ORDER BY id")
            .fetch_all(&db)
            .await
            .unwrap();
    let issued: Vec<&str> = statuses
        .iter()
        .filter(|(_, s)| s == "issued")
        .map(|(c, _)| c.as_str())
        .collect();
    assert_eq!(issued, ["ACME", "Globex", "Initech"]);

    audit.flush().await;
    let rec = store.state.run(&id).await.unwrap().unwrap();
    let summary: Vec<(&str, &str, i64, Option<i64>, i64)> = rec
        .connector_calls
        .iter()
        .map(|c| {
            (
                c.package.as_str(),
                c.target.as_str(),
                c.calls,
                c.rows,
                c.errors,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("fx", "drafts-for-period", 1, Some(2), 0),
            ("fx", "issue-invoice:write", 2, Some(2), 0),
        ]
    );
    let page = store.state.calls(&id, None, 2).await.unwrap().unwrap();
    let calls: Vec<(&str, &str, Option<i64>, &str)> = page
        .calls
        .iter()
        .map(|c| {
            (
                c.package.as_str(),
                c.target.as_str(),
                c.row_count,
                c.outcome.as_str(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        [
            ("fx", "drafts-for-period", Some(2), "ok"),
            ("fx", "issue-invoice:write", Some(1), "ok"),
        ]
    );
    assert_eq!(page.total, 3);
    let rest = store
        .state
        .calls(&id, page.next_after, 2)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rest.calls.len(), 1);
    assert_eq!(rest.next_after, None);
    assert!(page
        .calls
        .iter()
        .chain(&rest.calls)
        .all(|c| c.run_id.as_deref() == Some(id.as_str())));
    assert_eq!(store.state.audit(10).await.unwrap().len(), 3);
    host.shutdown(Duration::from_secs(2)).await;
    store.close().await;
    db.close().await;
}
