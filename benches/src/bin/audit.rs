//! The audit benchmark: what writing a step's connector calls into the run history
//! costs the step. A job step (`benches/python/bench_audit.py:lookups`) makes 10,000
//! connector calls (a named query on a SQLite file in `/dev/shm`) under the jobs
//! `Runner`, in two hosts of one install: one with the audit log attached to the state
//! database (`AuditLog::attach`), one without. Then, on the run with 10,000 audit rows,
//! how long reading its record (the summary per target) and one page of its calls take.
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin audit [-- --rounds N] [--calls N] [--postgres] [--aa] [--swap]
//! ```
//!
//! `--aa` attaches the audit log to neither host: the ratios then show how far apart
//! two identical hosts measure on this machine (the bench's own bias and noise). The
//! host started first measured faster (≈ 0.85×) whichever it was, so `--swap` starts
//! the unaudited host first; the audit's own effect is the geometric mean of the ratios
//! of a run without and a run with `--swap` (the position's bias cancels).
//!
//! The state database is `<apps>/.snakepit/state.db` (SQLite, WAL, on the disk of the
//! temporary directory, as an install has it), or with `--postgres` a schema of its own
//! in `postgres://postgres@127.0.0.1:5432/test` (dropped at the end).
//!
//! Rounds interleave the two hosts (the order flips every round); each figure is the
//! median over rounds, each ratio the median of the per-round ratios. Three times per
//! run: the step's own loop (timed in the plugin), the run (`Runner::run`: the step and
//! the run's bookkeeping), and the run until its audit records are in the database
//! (`AuditLog::flush` after the run; the records a run's record summarises). Target:
//! the audited run takes at most 1.10 × the unaudited one.
//!
//! The machine is shared and its load moves the runs' times by more than the audit
//! costs, so the database's share is also measured alone, with no step running: the
//! time `State::insert_audit` takes to write 10,000 rows in batches of 1 (one commit
//! per call, as before batching), 100 and 1,000.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit_benches::{arg, bench_python, median, process_stat, python_dir};
use snakepit_host::{Host, Install};
use snakepit_jobs::{AuditLog, Clock, JobSet, RunRequest, Runner, SystemClock};
use snakepit_state::{AuditEntry, State, Trigger};

const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// An install in `apps`: the job `calls` (one step making `calls` queries), the
/// connector `billing` on `db`, the state at `state`.
fn write_install(apps: &Path, db: &Path, state: &str, calls: usize) {
    let python = python_dir();
    std::fs::write(
        apps.join("app.toml"),
        format!("[runtime]\nworkers = 1\ncall_timeout = \"600s\"\nstate = {state:?}\n"),
    )
    .unwrap();
    std::fs::write(
        apps.join("connectors.toml"),
        format!(
            "[sql.billing]\nurl = \"sqlite://{}\"\nmax_connections = 1\n[sql.billing.queries]\nby-id = \"SELECT id, customer, amount FROM invoices WHERE id = :id\"\n",
            db.display()
        ),
    )
    .unwrap();
    std::fs::write(
        apps.join("jobs.toml"),
        format!("[[jobs]]\nname = \"calls\"\n[[jobs.steps]]\nname = \"calls\"\ntype = \"python\"\ncallable = \"bench_audit:lookups\"\nkwargs = {{ n = {calls} }}\n"),
    )
    .unwrap();
    std::fs::create_dir_all(apps.join("plugins")).unwrap();
    std::fs::copy(
        python.join("bench_audit.py"),
        apps.join("plugins/bench_audit.py"),
    )
    .unwrap();
}

/// One host of the install, its jobs and its runner.
struct Side {
    host: Arc<Host>,
    jobs: JobSet,
    runner: Runner,
    audit: Option<AuditLog>,
}

impl Side {
    async fn start(apps: &Path, python: &Path, state: &State, audited: bool) -> Side {
        let install = Install::load(Some(apps), Some(python)).unwrap();
        let jobs = JobSet::load(&install).unwrap_or_else(|p| panic!("{p:?}"));
        let audit = audited.then(|| AuditLog::attach(&install.connectors, state));
        let host = Arc::new(Host::start_checked(install).await.unwrap());
        let runner = Runner::new(host.clone(), state.clone(), Arc::new(SystemClock));
        Side {
            host,
            jobs,
            runner,
            audit,
        }
    }

    /// Runs the job: (its id, the step's loop, the run, the run until its audit
    /// records are written, the CPU time this process (the supervisor) spent meanwhile).
    async fn run(&self, state: &State) -> (String, Duration, Duration, Duration, Duration) {
        let cpu0 = process_stat(std::process::id());
        let req = RunRequest {
            job: "calls".into(),
            trigger: Trigger::Manual,
            scheduled_for: SystemClock.now(),
            params: vec![],
            session_user: "bench".into(),
        };
        let (_halt, halt) = tokio::sync::watch::channel(None);
        let t0 = Instant::now();
        let (id, status) = self.runner.run(&self.jobs, req, None, halt).await.unwrap();
        let run = t0.elapsed();
        if let Some(a) = &self.audit {
            a.flush().await;
        }
        let written = t0.elapsed();
        let cpu = process_stat(std::process::id()).minus(cpu0).cpu_ns;
        assert_eq!(status.as_str(), "succeeded");
        let rec = state.run(&id).await.unwrap().unwrap();
        let ns = rec.steps[0].result.as_ref().unwrap()["ns"]
            .as_u64()
            .unwrap();
        (
            id,
            Duration::from_nanos(ns),
            run,
            written,
            Duration::from_nanos(cpu),
        )
    }
}

/// The time `State::insert_audit` takes for `rows` rows in transactions of `batch`.
async fn insert_cost(state: &State, rows: usize, batch: usize) -> Duration {
    let now = chrono::Utc::now();
    let entry = |i: usize| AuditEntry {
        time: now,
        package: "bench_audit",
        call_id: i as u64,
        run_id: Some("bench-insert"),
        connector: "billing",
        target: "by-id",
        rows: Some(1),
        duration_us: 80,
        outcome: "ok",
    };
    let entries: Vec<AuditEntry> = (0..rows).map(entry).collect();
    let t0 = Instant::now();
    for chunk in entries.chunks(batch) {
        state.insert_audit(chunk).await.unwrap();
    }
    t0.elapsed()
}

fn ms(d: f64) -> String {
    format!("{:.1} ms", d * 1e3)
}

fn main() {
    let rounds = arg("--rounds", 9);
    let calls = arg("--calls", 10_000);
    let postgres = std::env::args().any(|a| a == "--postgres");
    let python = bench_python(true);
    let apps = tempfile::tempdir().unwrap();
    let shm = tempfile::tempdir_in("/dev/shm").unwrap();
    let db = shm.path().join("billing.db");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let schema = format!("bench_audit_{}", std::process::id());
        let pg = || async {
            sqlx::PgPool::connect(PG_URL)
                .await
                .unwrap_or_else(|e| panic!("cannot connect to {PG_URL}: {e}"))
        };
        let state_url = if postgres {
            let admin = pg().await;
            sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
                .execute(&admin)
                .await
                .unwrap();
            admin.close().await;
            format!("{PG_URL}?options=-c%20search_path%3D{schema}")
        } else {
            "sqlite://.snakepit/state.db".to_owned()
        };
        let seed = sqlx::SqlitePool::connect(&format!("sqlite://{}?mode=rwc", db.display()))
            .await
            .unwrap();
        sqlx::raw_sql(
            "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT, amount TEXT); \
             INSERT INTO invoices (customer, amount) VALUES ('ada', '12.50')",
        )
        .execute(&seed)
        .await
        .unwrap();
        seed.close().await;
        write_install(apps.path(), &db, &state_url, calls);
        let state = State::open(&state_url, apps.path()).await.unwrap();
        // `--aa`: neither side audited (how far apart two identical sides are).
        let aa = std::env::args().any(|a| a == "--aa");
        // `--swap`: the unaudited host starts first (the host started first measures
        // faster here, audited or not: see `--aa`).
        let (audited, plain) = if std::env::args().any(|a| a == "--swap") {
            let plain = Side::start(apps.path(), &python, &state, false).await;
            (Side::start(apps.path(), &python, &state, !aa).await, plain)
        } else {
            let audited = Side::start(apps.path(), &python, &state, !aa).await;
            (audited, Side::start(apps.path(), &python, &state, false).await)
        };
        // warm up both
        audited.run(&state).await;
        plain.run(&state).await;
        let (mut step, mut run, mut written) = (vec![], vec![], vec![]);
        let (mut step_r, mut run_r, mut written_r) = (vec![], vec![], vec![]);
        let (mut step_p, mut run_p) = (vec![], vec![]);
        let (mut cpu, mut cpu_p, mut cpu_share) = (vec![], vec![], vec![]);
        let mut last = String::new();
        for round in 0..rounds {
            let (a, p) = if round % 2 == 0 {
                let a = audited.run(&state).await;
                (a, plain.run(&state).await)
            } else {
                let p = plain.run(&state).await;
                (audited.run(&state).await, p)
            };
            eprintln!(
                "round {}/{rounds}: step {:.1} / {:.1} ms, run {:.1} / {:.1} ms, audited run written {:.1} ms, supervisor CPU {:.1} / {:.1} ms (audited / not)",
                round + 1,
                a.1.as_secs_f64() * 1e3,
                p.1.as_secs_f64() * 1e3,
                a.2.as_secs_f64() * 1e3,
                p.2.as_secs_f64() * 1e3,
                a.3.as_secs_f64() * 1e3,
                a.4.as_secs_f64() * 1e3,
                p.4.as_secs_f64() * 1e3,
            );
            step.push(a.1.as_secs_f64());
            run.push(a.2.as_secs_f64());
            written.push(a.3.as_secs_f64());
            step_p.push(p.1.as_secs_f64());
            run_p.push(p.2.as_secs_f64());
            step_r.push(a.1.as_secs_f64() / p.1.as_secs_f64());
            run_r.push(a.2.as_secs_f64() / p.2.as_secs_f64());
            written_r.push(a.3.as_secs_f64() / p.2.as_secs_f64());
            cpu.push(a.4.as_secs_f64());
            cpu_p.push(p.4.as_secs_f64());
            cpu_share.push((a.4.as_secs_f64() - p.4.as_secs_f64()) / p.2.as_secs_f64());
            last = a.0;
        }
        let backend = if postgres { "PostgreSQL" } else { "SQLite" };
        println!("| {calls} connector calls in one step, state on {backend} | audited | not audited | ratio |");
        println!("|---|---:|---:|---:|");
        println!(
            "| the step's loop (timed in the plugin) | {} | {} | {:.3}× |",
            ms(median(&step)),
            ms(median(&step_p)),
            median(&step_r)
        );
        println!(
            "| the run (`Runner::run`) | {} | {} | {:.3}× |",
            ms(median(&run)),
            ms(median(&run_p)),
            median(&run_r)
        );
        println!(
            "| the run until its audit records are written | {} | {} | {:.3}× |",
            ms(median(&written)),
            ms(median(&run_p)),
            median(&written_r)
        );
        println!(
            "| the supervisor's CPU time during the run (writer included) | {} | {} | {:.3}× |",
            ms(median(&cpu)),
            ms(median(&cpu_p)),
            median(&cpu)/median(&cpu_p)
        );
        println!(
            "| … the difference, as a share of the unaudited run's time | | | {:+.1} % |",
            median(&cpu_share) * 100.0
        );
        let r = median(&written_r);
        println!(
            "| target: audited ≤ 1.10 × not audited (run until written) | | | {} |",
            if r <= 1.10 { "met" } else { "NOT met" }
        );

        // Reading back the run with `calls` audit rows (after `rounds + 1` such runs).
        let (mut show, mut page) = (vec![], vec![]);
        for _ in 0..21 {
            let t0 = Instant::now();
            let rec = state.run(&last).await.unwrap().unwrap();
            show.push(t0.elapsed().as_secs_f64());
            let audited_calls = if aa { 0 } else { calls };
            assert_eq!(rec.connector_calls.iter().map(|c| c.calls as usize).sum::<usize>(), audited_calls);
            let t0 = Instant::now();
            let p = state.calls(&last, Some(0), 100).await.unwrap().unwrap();
            page.push(t0.elapsed().as_secs_f64());
            assert_eq!(p.calls.len(), 100.min(audited_calls));
        }
        let rows = state.audit(u32::MAX).await.unwrap().len();
        println!();
        println!("| reading a run of {calls} calls ({rows} audit rows in all), {backend} | median of 21 |");
        println!("|---|---:|");
        println!("| `State::run` (the record with its summary: `runs show`) | {} |", ms(median(&show)));
        println!("| `State::calls`, a page of 100 (`runs show --calls`) | {} |", ms(median(&page)));


        // The writer's work alone: rows in transactions of 1, 100, 1000 (interleaved).
        let sizes = [(1, 1_000), (100, 10_000), (1_000, 10_000)];
        let mut per_row = vec![Vec::new(); sizes.len()];
        for round in 0..5 {
            for k in 0..sizes.len() {
                let k = if round % 2 == 0 { k } else { sizes.len() - 1 - k };
                let (batch, rows) = sizes[k];
                let took = insert_cost(&state, rows, batch).await;
                per_row[k].push(took.as_secs_f64() / rows as f64);
            }
        }
        println!();
        println!("| writing audit rows, {backend} state (no step running) | per row | per 10,000 rows |");
        println!("|---|---:|---:|");
        for ((batch, _), v) in sizes.iter().zip(&per_row) {
            let m = median(v);
            println!("| transactions of {batch} | {:.1} µs | {} |", m * 1e6, ms(m * 10_000.0));
        }

        audited.host.shutdown(Duration::from_secs(5)).await;
        plain.host.shutdown(Duration::from_secs(5)).await;
        state.close().await;
        if postgres {
            let admin = pg().await;
            sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
                .execute(&admin)
                .await
                .unwrap();
        }
    });
}
