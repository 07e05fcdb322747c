//! The seed loop: the demo's `billing.invoicing:run`, unchanged, over `--drafts` draft
//! invoices, through snakepit against the same plugin run in-process in Python, per
//! database.
//!
//! Parts `seed-sqlite`, `seed-postgres`, `seed-mariadb`; their candidates:
//! - **snakepit step**: the step's call as `snakepit run` makes it: an install in a
//!   temporary apps dir on tmpfs (`/dev/shm`) with the demo's plugins and its
//!   connectors.toml (only the URL changed for PostgreSQL and MariaDB), one worker, the
//!   connectors' audit attached to a state database (`sqlite://state.db`, as `snakepit
//!   run` does); timed around `Host::submit`. The audit records are flushed after the
//!   step, outside its time (reported apart).
//! - **snakepit step, no audit log attached** (SQLite only): the same with the audit
//!   records going to `tracing` only, to show what the run history's audit costs. On
//!   PostgreSQL and MariaDB each autocommit waits for the disk (milliseconds) and this
//!   difference is lost in that noise.
//! - **in-process**: `benches/python/seed_inprocess.py`, the same plugin with a fake
//!   `ctx["connectors"]` over one autocommit connection (`sqlite3`, `psycopg` 3,
//!   `PyMySQL`), the same SQL; timed inside Python around `run()`. Its drivers go into
//!   `target/seedloop-venv` (made on first use).
//! - **handler from Rust**: the step's requests (the read, then one write per draft)
//!   given to the connectors' host handler from Rust, audited, with no worker: the
//!   supervisor's share of the step (the rest is the worker↔supervisor hop and Python).
//! - **snakepit run_many**: `benches/python/seed_batch.py`, the loop written with
//!   `run_many` (not the demo): what batching gives.
//!
//! Every candidate starts from the same table: `--drafts` drafts of the period, reset
//! before each (SQLite `DELETE`, PostgreSQL and MariaDB `TRUNCATE`, then the rows
//! again), so that every round writes all of them. The databases: a file in the apps
//! dir on tmpfs; database `seedloop` on PostgreSQL (127.0.0.1:5432, user postgres) and
//! MariaDB (127.0.0.1:3306, root), created when missing. One warm-up round is not
//! counted. Figures: the median over rounds; the ratio is the median of the per-round
//! ratios to the in-process run of the same round.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use snakepit::{HostHandler, HostRequest, RawValue, Value};
use snakepit_benches::{
    bench_python, median, process_stat, python_dir, report_sched, root, thread_stats,
};
use snakepit_host::{Host, Install};
use snakepit_jobs::AuditLog;
use snakepit_state::State;
use sqlx::Connection;

use crate::{Opts, Target};

const PERIOD: &str = "2026-05";
const PG_ADMIN: &str = "postgres://postgres@127.0.0.1:5432/test";
const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/seedloop";
const MARIADB_ADMIN: &str = "mysql://root@127.0.0.1:3306/test";
const MARIADB_URL: &str = "mysql://root@127.0.0.1:3306/seedloop";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Sqlite,
    Postgres,
    MariaDb,
}

impl Server {
    fn name(self) -> &'static str {
        match self {
            Server::Sqlite => "SQLite (tmpfs)",
            Server::Postgres => "PostgreSQL",
            Server::MariaDb => "MariaDB",
        }
    }

    /// The in-process driver, as `seed_inprocess.py --backend` names it.
    fn backend(self) -> &'static str {
        match self {
            Server::Sqlite => "sqlite",
            Server::Postgres => "postgres",
            Server::MariaDb => "mysql",
        }
    }

    fn driver(self) -> &'static str {
        match self {
            Server::Sqlite => "sqlite3",
            Server::Postgres => "psycopg",
            Server::MariaDb => "PyMySQL",
        }
    }

    /// The url of connectors.toml (SQLite: the demo's own, relative to the apps dir).
    fn connector_url(self) -> &'static str {
        match self {
            Server::Sqlite => "sqlite://billing.db",
            Server::Postgres => PG_URL,
            Server::MariaDb => MARIADB_URL,
        }
    }

    /// The url the bench itself and the in-process run use.
    fn direct_url(self, apps: &Path) -> String {
        match self {
            Server::Sqlite => apps.join("billing.db").display().to_string(),
            Server::Postgres => PG_URL.into(),
            Server::MariaDb => MARIADB_URL.into(),
        }
    }

    fn create_table(self) -> &'static str {
        match self {
            // scripts/demo.sh's table.
            Server::Sqlite => "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT NOT NULL, amount TEXT NOT NULL, period TEXT NOT NULL, status TEXT NOT NULL)",
            Server::Postgres => "CREATE TABLE invoices (id SERIAL PRIMARY KEY, customer TEXT NOT NULL, amount TEXT NOT NULL, period TEXT NOT NULL, status TEXT NOT NULL)",
            Server::MariaDb => "CREATE TABLE invoices (id INT AUTO_INCREMENT PRIMARY KEY, customer VARCHAR(100) NOT NULL, amount VARCHAR(20) NOT NULL, period VARCHAR(7) NOT NULL, status VARCHAR(20) NOT NULL)",
        }
    }

    fn empty_table(self) -> &'static str {
        match self {
            Server::Sqlite => "DELETE FROM invoices",
            Server::Postgres => "TRUNCATE invoices RESTART IDENTITY",
            Server::MariaDb => "TRUNCATE TABLE invoices",
        }
    }
}

/// Runs `statements` on `db` directly.
async fn exec(db: Server, url: &str, statements: &[String]) {
    macro_rules! run {
        ($conn:ty, $url:expr) => {{
            let mut c = <$conn>::connect($url).await.unwrap_or_else(|e| {
                panic!(
                    "cannot connect to {} (is the server up? bash scripts/services.sh): {e}",
                    $url
                )
            });
            for s in statements {
                sqlx::raw_sql(s)
                    .execute(&mut c)
                    .await
                    .unwrap_or_else(|e| panic!("{}: {e}", &s[..s.len().min(80)]));
            }
        }};
    }
    match db {
        Server::Sqlite => run!(sqlx::SqliteConnection, &format!("sqlite://{url}?mode=rwc")),
        Server::Postgres => run!(sqlx::PgConnection, url),
        Server::MariaDb => run!(sqlx::MySqlConnection, url),
    }
}

/// The `seedloop` database on the server, made when missing.
async fn create_database(db: Server) {
    match db {
        Server::Sqlite => {}
        Server::Postgres => {
            let mut c = sqlx::PgConnection::connect(PG_ADMIN)
                .await
                .unwrap_or_else(|e| {
                    panic!("cannot connect to {PG_ADMIN} (bash scripts/services.sh): {e}")
                });
            let there: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = 'seedloop')",
            )
            .fetch_one(&mut c)
            .await
            .unwrap();
            if !there {
                sqlx::raw_sql("CREATE DATABASE seedloop")
                    .execute(&mut c)
                    .await
                    .unwrap();
            }
        }
        Server::MariaDb => {
            exec(
                db,
                MARIADB_ADMIN,
                &["CREATE DATABASE IF NOT EXISTS seedloop".into()],
            )
            .await
        }
    }
}

/// Empties the table and puts `n` drafts of [`PERIOD`] in (ids 1..=n).
async fn reset(db: Server, url: &str, n: usize) {
    let mut statements = vec![db.empty_table().to_owned()];
    for chunk in (1..=n).collect::<Vec<_>>().chunks(1000) {
        let rows: Vec<String> = chunk
            .iter()
            .map(|i| {
                format!(
                    "('c{i}', '{}.{:02}', '{PERIOD}', 'draft')",
                    i % 500,
                    i % 100
                )
            })
            .collect();
        statements.push(format!(
            "INSERT INTO invoices (customer, amount, period, status) VALUES {}",
            rows.join(", ")
        ));
    }
    if db == Server::Postgres {
        statements.push("ANALYZE invoices".into());
    }
    exec(db, url, &statements).await;
}

/// The interpreter of the in-process runs: `target/seedloop-venv` with psycopg and
/// PyMySQL, made on first use.
fn baseline_python() -> PathBuf {
    let venv = root().join("target/seedloop-venv");
    let py = venv.join("bin/python");
    let ready = |py: &Path| {
        Command::new(py)
            .args(["-c", "import psycopg, pymysql"])
            .status()
            .is_ok_and(|s| s.success())
    };
    if !ready(&py) {
        eprintln!("creating {} with psycopg and PyMySQL ...", venv.display());
        let made = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "psycopg[binary]", "pymysql"])
                .status()
                .is_ok_and(|s| s.success());
        assert!(
            made && ready(&py),
            "could not make {} (pip install psycopg[binary] pymysql)",
            venv.display()
        );
    }
    py
}

/// A temporary apps dir on tmpfs: the demo's plugins and connectors.toml (its URL set to
/// `db`'s), the run_many variant, app.toml with one worker and the state on tmpfs.
fn apps_dir(db: Server) -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("seedloop-")
        .tempdir_in("/dev/shm")
        .expect("a directory in /dev/shm");
    let demo = root().join("examples/liberty-apps");
    let plugins = dir.path().join("plugins");
    std::fs::create_dir(&plugins).unwrap();
    std::os::unix::fs::symlink(demo.join("plugins/billing"), plugins.join("billing")).unwrap();
    std::os::unix::fs::symlink(
        python_dir().join("seed_batch.py"),
        plugins.join("seed_batch.py"),
    )
    .unwrap();
    let toml = std::fs::read_to_string(demo.join("connectors.toml")).unwrap();
    let toml = toml.replacen(
        "url = \"sqlite://billing.db\"",
        &format!("url = \"{}\"", db.connector_url()),
        1,
    );
    assert!(toml.contains(db.connector_url()), "the demo's url moved");
    std::fs::write(dir.path().join("connectors.toml"), toml).unwrap();
    std::fs::write(
        dir.path().join("app.toml"),
        "[runtime]\nworkers = 1\ncall_timeout = \"600s\"\nstate = \"sqlite://state.db\"\n\n\
         [plugins.billing]\nconnectors = [\"billing\"]\nwrite = true\n\n\
         [plugins.seed_batch]\nconnectors = [\"billing\"]\nwrite = true\n",
    )
    .unwrap();
    dir
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Candidate {
    Step,
    /// The step with no audit sink (the records go to `tracing` only): what the audit
    /// log costs.
    StepUnaudited,
    InProcess,
    RunMany,
    /// The step's requests (the read, then one write per draft) given to the connectors'
    /// host handler from Rust, with no worker: the supervisor's share of the step.
    Handler,
}

impl Candidate {
    fn name(self, db: Server) -> String {
        match self {
            Candidate::Step => "snakepit step (`billing.invoicing:run`, audited)".into(),
            Candidate::StepUnaudited => "snakepit step, no audit log attached".into(),
            Candidate::InProcess => format!("in-process `{}` (autocommit)", db.driver()),
            Candidate::RunMany => "snakepit, the loop with `run_many` (not the demo)".into(),
            Candidate::Handler => {
                "the step's requests to the connectors' handler from Rust (no worker), audited"
                    .into()
            }
        }
    }
}

pub struct Seed {
    db: Server,
    apps: tempfile::TempDir,
    host: Host,
    state: State,
    audit: AuditLog,
    queries: String,
    python: PathBuf,
    drafts: usize,
    sched: bool,
    /// The candidates, in the order of a round that is not flipped.
    order: &'static [Candidate],
    /// `[candidate][round]` seconds, counted rounds only.
    secs: Vec<Vec<f64>>,
    /// The audit flushes after the audited step.
    flush: Vec<f64>,
}

impl Seed {
    /// One candidate's run over fresh drafts: the seconds it took (and, for the steps,
    /// the seconds the audit flush took after it).
    async fn run(&mut self, c: Candidate, round: usize, counted: bool) -> (f64, f64) {
        let url = self.db.direct_url(self.apps.path());
        reset(self.db, &url, self.drafts).await;
        let want = Value::map([("rows_affected", Value::Int(self.drafts as i64))]);
        match c {
            Candidate::InProcess => {
                let out = Command::new(&self.python)
                    .arg(python_dir().join("seed_inprocess.py"))
                    .args([
                        "--backend",
                        self.db.backend(),
                        "--url",
                        &url,
                        "--period",
                        PERIOD,
                    ])
                    .arg("--plugins")
                    .arg(root().join("examples/liberty-apps/plugins"))
                    .args(["--queries", &self.queries])
                    .output()
                    .expect("the in-process run starts");
                assert!(
                    out.status.success(),
                    "seed_inprocess.py: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                assert_eq!(
                    v["result"]["rows_affected"].as_u64(),
                    Some(self.drafts as u64),
                    "{v}"
                );
                (v["seconds"].as_f64().unwrap(), 0.0)
            }
            Candidate::Handler => {
                let connectors = self.host.install().connectors.clone();
                let request = |method: &str, query: &str, params: Value| HostRequest {
                    pool: "default".into(),
                    worker: 0,
                    call_id: round as u64 + 1,
                    reference: "billing.invoicing:run".into(),
                    run_id: Some(format!("seedloop-{round}").into()),
                    method: method.into(),
                    payload: RawValue::encode(&Value::map([
                        ("connector", Value::from("billing")),
                        ("query", Value::from(query)),
                        ("params", params),
                    ])),
                };
                let t = Instant::now();
                let drafts = connectors
                    .handle(request(
                        "sql.run",
                        "drafts-for-period",
                        Value::map([("period", Value::from(PERIOD))]),
                    ))
                    .await
                    .expect("drafts-for-period");
                let Value::List(drafts) = drafts else {
                    panic!("{drafts}")
                };
                let mut issued = 0;
                for d in &drafts {
                    let id = d.get("id").cloned().expect("an id");
                    connectors
                        .handle(request(
                            "sql.run",
                            "issue-invoice:write",
                            Value::map([("id", id)]),
                        ))
                        .await
                        .expect("issue-invoice:write");
                    issued += 1;
                }
                let took = t.elapsed().as_secs_f64();
                assert_eq!(issued, self.drafts);
                let t = Instant::now();
                self.audit.flush().await;
                (took, t.elapsed().as_secs_f64())
            }
            Candidate::Step | Candidate::StepUnaudited | Candidate::RunMany => {
                let reference = if c == Candidate::RunMany {
                    "seed_batch:run"
                } else {
                    "billing.invoicing:run"
                };
                let connectors = self.host.install().connectors.clone();
                if c == Candidate::StepUnaudited {
                    connectors.set_audit_sink(|_: &snakepit_connectors::AuditRecord| {});
                }
                let run_id = format!("seedloop-{round}");
                let context = vec![
                    ("connectors".to_owned(), Value::Nil),
                    ("pools".to_owned(), Value::Nil),
                    ("job_id".to_owned(), Value::from("seedloop")),
                    ("run_id".to_owned(), Value::from(run_id.as_str())),
                    ("step_name".to_owned(), Value::from("reissue-drafts")),
                    ("logger".to_owned(), Value::from("jobs.seedloop")),
                ];
                let worker = self.host.pool_for(reference).status().slots[0].pid;
                let before = (thread_stats(), worker.map(process_stat));
                let t = Instant::now();
                let got = self
                    .host
                    .submit(reference, |call| {
                        call.kwarg("period", PERIOD)
                            .context(context)
                            .run_id(run_id.as_str())
                            .timeout(Duration::from_secs(600))
                    })
                    .await
                    .unwrap_or_else(|e| panic!("{reference}: {e}"));
                let step = t.elapsed().as_secs_f64();
                if self.sched && counted && c != Candidate::RunMany {
                    let procs: Vec<_> = worker
                        .zip(before.1)
                        .map(|(pid, b)| ("worker".to_owned(), b, process_stat(pid)))
                        .into_iter()
                        .collect();
                    let label = format!("round {round}, {}", c.name(self.db));
                    let queries = self.drafts + 1;
                    eprint!(
                        "{}",
                        report_sched(&label, queries, &before.0, &thread_stats(), &procs)
                    );
                }
                assert_eq!(got.decode().unwrap(), want, "{reference}");
                if c == Candidate::StepUnaudited {
                    self.audit = AuditLog::attach(&connectors, &self.state);
                }
                let t = Instant::now();
                self.audit.flush().await;
                (step, t.elapsed().as_secs_f64())
            }
        }
    }

    pub async fn start(opts: &Opts, db: Server) -> Seed {
        create_database(db).await;
        let apps = apps_dir(db);
        let url = db.direct_url(apps.path());
        exec(
            db,
            &url,
            &[
                "DROP TABLE IF EXISTS invoices".into(),
                db.create_table().into(),
            ],
        )
        .await;
        let install = Install::load(Some(apps.path()), Some(&bench_python(true)))
            .unwrap_or_else(|e| panic!("the bench install: {e}"));
        let queries: serde_json::Map<String, serde_json::Value> = install.connectors.config().sql
            ["billing"]
            .queries
            .iter()
            .map(|(name, q)| (name.clone(), q.text.clone().into()))
            .collect();
        let state = State::open("sqlite://state.db", apps.path())
            .await
            .unwrap_or_else(|e| panic!("the state database: {e}"));
        let audit = AuditLog::attach(&install.connectors, &state);
        let host = Host::start_checked(install)
            .await
            .unwrap_or_else(|e| panic!("the bench install does not start: {e}"));
        // The servers' commits wait for the disk (ms): there the audit's share is noise.
        let order: &[Candidate] = match db {
            Server::Sqlite => &[
                Candidate::Step,
                Candidate::InProcess,
                Candidate::StepUnaudited,
                Candidate::Handler,
                Candidate::RunMany,
            ],
            _ => &[
                Candidate::Step,
                Candidate::InProcess,
                Candidate::Handler,
                Candidate::RunMany,
            ],
        };
        Seed {
            db,
            apps,
            host,
            state,
            audit,
            queries: serde_json::Value::Object(queries).to_string(),
            python: baseline_python(),
            drafts: opts.drafts,
            sched: opts.sched,
            order,
            secs: vec![Vec::new(); order.len()],
            flush: Vec::new(),
        }
    }

    /// One round of every candidate, in an order that flips every round.
    pub async fn round(&mut self, round: usize, counted: bool) -> String {
        let mut this = self.order.to_vec();
        if round % 2 == 1 {
            this.reverse();
        }
        let mut got = vec![0.0; self.order.len()];
        for c in this {
            let i = self.order.iter().position(|o| *o == c).unwrap();
            let (s, f) = self.run(c, round, counted).await;
            got[i] = s;
            if c == Candidate::Step && counted {
                self.flush.push(f);
            }
        }
        if counted {
            for (i, s) in got.iter().enumerate() {
                self.secs[i].push(*s);
            }
        }
        got.iter()
            .map(|s| format!("{s:.3} s"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    fn in_process(&self) -> usize {
        self.order
            .iter()
            .position(|c| *c == Candidate::InProcess)
            .unwrap()
    }

    pub fn report(&self) -> Vec<Target> {
        let db = self.db;
        println!("\n## seed loop: {}\n", db.name());
        let base = self.in_process();
        let queries = (self.drafts + 1) as f64;
        println!("| {} | step, median (s) | per query (µs) | ratio to in-process (median of rounds) | per-round ratios |", db.name());
        println!("|---|---:|---:|---:|---|");
        let mut step = None;
        for (i, c) in self.order.iter().enumerate() {
            let mut t = Target::new(
                format!(
                    "seed loop, {}: {} (vs {})",
                    db.name(),
                    c.name(db),
                    Candidate::InProcess.name(db)
                ),
                "s",
                None,
            );
            for (s, b) in self.secs[i].iter().zip(&self.secs[base]) {
                t.push(*s, *b);
            }
            let m = median(&self.secs[i]);
            println!(
                "| {} | {m:.3} | {:.1} | {:.2}× | {} |",
                c.name(db),
                m / queries * 1e6,
                t.ratio(),
                t.ours
                    .iter()
                    .zip(&t.base)
                    .map(|(o, b)| format!("{:.2}", o / b))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            if *c == Candidate::Step {
                step = Some(t);
            }
        }
        println!(
            "\naudit flush after the step (outside its time): median {:.3} s",
            median(&self.flush)
        );
        let mut step = step.expect("the step is a candidate");
        step.goal = match db {
            Server::Sqlite => Some((true, 2.0)),
            Server::Postgres => Some((true, 1.5)),
            Server::MariaDb => None,
        };
        vec![step]
    }

    pub async fn stop(self) {
        self.host.shutdown(Duration::from_secs(5)).await;
    }
}
