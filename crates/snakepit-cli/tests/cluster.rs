//! Chaos on a cluster (issue 17): three `snakepit serve` nodes on one PostgreSQL schema
//! run a job every 5 seconds while, every 15 s, a random node is SIGKILLed and
//! restarted, and once a node is stopped (SIGSTOP) in the middle of a step for longer
//! than its lease, then continued. At the end every tick since the start ran exactly
//! once to success, every run's record is one node's execution (its steps, results and
//! log lines carry the run's epoch, and the result names the node that owns the run),
//! and no run was executed by two nodes that stayed healthy.
//!
//! It fails when fencing is broken (the stalled node, continued, overwrites the record
//! of the run another node finished) and when the claim is not once-only (two healthy
//! nodes execute a run).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};

const POSTGRES: &str = "postgres://postgres@127.0.0.1:5432/test";
/// How long the nodes run under chaos.
const CHAOS: Duration = Duration::from_secs(95);
/// Every this long a random node is SIGKILLed and restarted.
const KILL_EVERY: Duration = Duration::from_secs(15);
const LEASE_SECS: u64 = 3;

const STEPS: &str = r#"
import os, time

def serve_pid():
    # worker -> its pool's fork-server -> the serve
    with open(f"/proc/{os.getppid()}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])

def tick(*, out, **ctx):
    node = serve_pid()
    with open(out, "a") as f:
        f.write(f"{ctx['run_id']} {node}\n")
    time.sleep(1.5)
    return {"node": node}
"#;

fn python() -> PathBuf {
    std::env::var_os("SNAKEPIT_PYTHON").map_or_else(|| PathBuf::from("python3"), PathBuf::from)
}

/// A node: a `snakepit serve` of its own apps dir (each node is its own install, as on
/// its own machine), all sharing the state.
struct Node {
    apps: tempfile::TempDir,
    child: Option<Child>,
}

impl Node {
    fn new(state: &str, out: &Path) -> Node {
        let apps = tempfile::tempdir().unwrap();
        let pkg = apps.path().join("plugins/chaos");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::write(pkg.join("steps.py"), STEPS).unwrap();
        std::fs::write(
            apps.path().join("app.toml"),
            format!(
                "[runtime]\nworkers = 1\nwatch = false\nstate = {state:?}\nlease = \"{LEASE_SECS}s\"\n"
            ),
        )
        .unwrap();
        std::fs::write(
            apps.path().join("jobs.toml"),
            format!(
                "[[jobs]]\nname = \"tick\"\nschedule = \"*/5 * * * * *\"\n\n\
                 [[jobs.steps]]\nname = \"tick\"\ntype = \"python\"\ncallable = \"chaos.steps:tick\"\n\
                 kwargs = {{ out = {:?} }}\n",
                out.display().to_string()
            ),
        )
        .unwrap();
        let mut node = Node { apps, child: None };
        node.start();
        node
    }

    fn start(&mut self) {
        let log = std::fs::File::create(self.apps.path().join("serve.log")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_snakepit"))
            .arg("--apps")
            .arg(self.apps.path())
            .arg("--python")
            .arg(python())
            .arg("serve")
            .env_remove("LIBERTY_APPS_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A run as the chaos check reads it.
#[derive(Debug, sqlx::FromRow)]
struct RunRow {
    id: String,
    status: String,
    owner: String,
    epoch: i64,
    scheduled_for: DateTime<Utc>,
}

#[test]
fn three_nodes_run_every_tick_once_while_nodes_die_and_stall() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let schema = format!("snakepit_chaos_{}", std::process::id());
    let pool = rt.block_on(async {
        let pool = sqlx::PgPool::connect(POSTGRES)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {POSTGRES} is needed for this test: {e}"));
        sqlx::raw_sql(&format!(
            "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
        ))
        .execute(&pool)
        .await
        .unwrap();
        pool
    });
    let state = format!("{POSTGRES}?options=-c%20search_path%3D{schema}");
    let db = rt.block_on(sqlx::PgPool::connect(&state)).unwrap();
    let work = tempfile::tempdir().unwrap();
    let out = work.path().join("executions.txt");
    std::fs::write(&out, "").unwrap();
    let query =
        |sql: &str| -> Vec<RunRow> { rt.block_on(sqlx::query_as(sql).fetch_all(&db)).unwrap() };

    let mut nodes: Vec<Node> = (0..3).map(|_| Node::new(&state, &out)).collect();
    let start = Utc::now();
    let began = Instant::now();
    // Pids that were killed or stalled: the only ones that may have executed a run
    // another node finished.
    let mut disrupted: BTreeSet<i64> = BTreeSet::new();
    let mut stalled = false;
    let mut next_kill = began + KILL_EVERY;
    while began.elapsed() < CHAOS {
        if Instant::now() >= next_kill {
            next_kill += KILL_EVERY;
            let victim = fastrand::usize(..nodes.len());
            disrupted.insert(i64::from(nodes[victim].pid()));
            nodes[victim].kill();
            nodes[victim].start();
        } else if !stalled && began.elapsed() > KILL_EVERY + Duration::from_secs(5) {
            // Stall the node in the middle of a step, past its lease: another node
            // re-queues and finishes the run; the stalled one, continued, must not
            // write to it.
            let running = query(
                "SELECT id, status, owner, epoch, scheduled_for FROM runs WHERE status = 'running'",
            );
            let holder = running.first().and_then(|r| {
                let pid: i32 = r.owner.split('/').nth(2)?.parse().ok()?;
                nodes.iter().position(|n| n.pid() == pid)
            });
            if let Some(i) = holder {
                stalled = true;
                disrupted.insert(i64::from(nodes[i].pid()));
                nodes[i].signal(nix::sys::signal::Signal::SIGSTOP);
                std::thread::sleep(Duration::from_secs(2 * LEASE_SECS + 2));
                nodes[i].signal(nix::sys::signal::Signal::SIGCONT);
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(stalled, "no node was ever caught in a step to stall");
    let end = Utc::now();
    // The ticks before the end settle (a run takes 1.5 s; a failover a lease).
    std::thread::sleep(Duration::from_secs(3 * LEASE_SECS + 3));
    for n in &mut nodes {
        n.kill();
    }

    let runs =
        query("SELECT id, status, owner, epoch, scheduled_for FROM runs ORDER BY scheduled_for");
    let logs_of =
        |n: &Node| std::fs::read_to_string(n.apps.path().join("serve.log")).unwrap_or_default();
    let serve_logs: String = nodes
        .iter()
        .map(logs_of)
        .collect::<Vec<_>>()
        .join("\n----\n");
    let context = || format!("{runs:#?}\nserve logs:\n{serve_logs}");

    // Every tick from the first whole 5 s after the start to the end ran exactly once,
    // to success.
    let mut by_tick: BTreeMap<DateTime<Utc>, Vec<&RunRow>> = BTreeMap::new();
    for r in &runs {
        by_tick.entry(r.scheduled_for).or_default().push(r);
    }
    let first = start.timestamp() - start.timestamp().rem_euclid(5) + 10;
    let mut tick = first;
    while tick + 5 <= end.timestamp() {
        let t = DateTime::from_timestamp(tick, 0).unwrap();
        let at_t = by_tick.get(&t).cloned().unwrap_or_default();
        assert_eq!(at_t.len(), 1, "tick {t}: {at_t:#?}\n{}", context());
        assert_eq!(at_t[0].status, "succeeded", "tick {t}\n{}", context());
        tick += 5;
    }

    // No record mixes two executions: steps and log lines carry the run's epoch, and
    // the step's result names the node that owns the run.
    let executions = std::fs::read_to_string(&out).unwrap();
    let mut executed_by: BTreeMap<&str, Vec<i64>> = BTreeMap::new();
    for line in executions.lines() {
        let (id, pid) = line.split_once(' ').unwrap();
        executed_by
            .entry(id)
            .or_default()
            .push(pid.parse().unwrap());
    }
    for r in runs.iter().filter(|r| r.status == "succeeded") {
        let owner_pid: i64 = r.owner.split('/').nth(2).unwrap().parse().unwrap();
        let (steps, results, logs): (Vec<i64>, Vec<Option<String>>, Vec<i64>) =
            rt.block_on(async {
                let steps: Vec<(i64, Option<String>)> =
                    sqlx::query_as("SELECT epoch, result FROM steps WHERE run_id = $1")
                        .bind(&r.id)
                        .fetch_all(&db)
                        .await
                        .unwrap();
                // The lines after the last re-queue note are the last execution's.
                let logs: Vec<i64> = sqlx::query_scalar(
                    "SELECT epoch FROM logs WHERE run_id = $1 AND id > COALESCE((SELECT max(id) \
                 FROM logs WHERE run_id = $1 AND message LIKE 're-queued from %'), 0)",
                )
                .bind(&r.id)
                .fetch_all(&db)
                .await
                .unwrap();
                let (e, res) = steps.into_iter().unzip();
                (e, res, logs)
            });
        assert!(
            steps.iter().chain(&logs).all(|&e| e == r.epoch),
            "run {} (epoch {}) mixes executions: steps {steps:?}, logs {logs:?}\n{}",
            r.id,
            r.epoch,
            context()
        );
        let result: serde_json::Value =
            serde_json::from_str(results[0].as_deref().unwrap_or("null")).unwrap();
        assert_eq!(
            result["node"].as_i64(),
            Some(owner_pid),
            "run {} is owned by {} but its result is another node's\n{}",
            r.id,
            r.owner,
            context()
        );
        // Executed at least once by its owner; by any other node only if that node was
        // killed or stalled (a step's side effects are at-least-once).
        let by = executed_by.get(r.id.as_str()).cloned().unwrap_or_default();
        assert!(by.contains(&owner_pid), "run {}: executions {by:?}", r.id);
        for pid in by.iter().filter(|&&p| p != owner_pid) {
            assert!(
                disrupted.contains(pid),
                "run {} was executed by healthy node {pid} and by its owner {owner_pid}\n{}",
                r.id,
                context()
            );
        }
    }
    rt.block_on(async {
        db.close().await;
        sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
}
