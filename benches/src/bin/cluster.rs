//! Several `snakepit serve` nodes on one PostgreSQL, on this machine (issue 17): with 1, 2
//! and 3 nodes, in one run,
//! - claims per second over N queued trivial runs (all queued at once, then claimed and
//!   run by the nodes; claims/s is N over the time from the first claim to the last,
//!   runs/s over the time until the last ended);
//! - queued-to-started latency, p50 and p99, of runs queued one at a time (paced);
//! - failover: the node running a scheduled run is stopped (SIGSTOP: what another
//!   machine sees of a node that died or was cut off; the run waits for its lease), then
//!   the node holding it is SIGKILLed (on this machine seen dead through /proc at once);
//!   the time until the run is running again on another node (2 and 3 nodes).
//!
//! Each node is a `snakepit serve` of its own apps dir with one worker, sharing a fresh
//! schema of the database; the lease is the default (15 s) unless `--lease` says.
//!
//! ```sh
//! cargo build --release -p snakepit-cli -p snakepit-benches
//! target/release/cluster [--runs 10000] [--latency 200] [--lease 15s] [--nodes 1,2,3]
//!     [--snakepit target/release/snakepit] [--postgres postgres://postgres@127.0.0.1:5432/test]
//! ```

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

const STEPS: &str = r#"
import time

def noop(**ctx):
    return None

def hang(**ctx):
    time.sleep(3600)
"#;

const JOBS: &str = r#"
[[jobs]]
name = "noop"

[[jobs.steps]]
name = "noop"
type = "python"
callable = "bench.steps:noop"

[[jobs]]
name = "hang"

[[jobs.steps]]
name = "hang"
type = "python"
callable = "bench.steps:hang"
"#;

struct Options {
    runs: u32,
    latency: u32,
    lease: String,
    nodes: Vec<usize>,
    snakepit: PathBuf,
    postgres: String,
}

fn options() -> Options {
    let args: Vec<String> = std::env::args().collect();
    let arg = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1).cloned())
    };
    Options {
        runs: arg("--runs").map_or(10_000, |v| v.parse().expect("--runs N")),
        latency: arg("--latency").map_or(200, |v| v.parse().expect("--latency N")),
        lease: arg("--lease").unwrap_or_else(|| "15s".into()),
        nodes: arg("--nodes").map_or(vec![1, 2, 3], |v| {
            v.split(',')
                .map(|n| n.parse().expect("--nodes 1,2,3"))
                .collect()
        }),
        snakepit: arg("--snakepit").map_or_else(
            || {
                let exe = std::env::current_exe().unwrap();
                exe.with_file_name("snakepit")
            },
            PathBuf::from,
        ),
        postgres: arg("--postgres")
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".into()),
    }
}

/// A node: a serve of its own apps dir.
struct Node {
    _apps: tempfile::TempDir,
    child: Child,
}

impl Node {
    fn start(opts: &Options, state: &str) -> Node {
        let apps = tempfile::tempdir().unwrap();
        let pkg = apps.path().join("plugins/bench");
        std::fs::create_dir_all(&pkg).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::write(pkg.join("steps.py"), STEPS).unwrap();
        std::fs::write(apps.path().join("jobs.toml"), JOBS).unwrap();
        std::fs::write(
            apps.path().join("app.toml"),
            format!(
                "[runtime]\nworkers = 1\nwatch = false\nstate = {state:?}\nlease = {:?}\n",
                opts.lease
            ),
        )
        .unwrap();
        let child = Command::new(&opts.snakepit)
            .arg("--apps")
            .arg(apps.path())
            .arg("serve")
            .env_remove("LIBERTY_APPS_DIR")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", opts.snakepit.display()));
        Node { _apps: apps, child }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) {
    let until = Instant::now() + limit;
    while !done().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Queues `n` runs of `job` owned by no one, queued at `now`, in one statement each for
/// the runs and their steps.
/// Waits until no run of the schema is queued or running.
async fn all_ended(db: &PgPool, what: &str, limit: Duration) {
    wait_until(what, limit, async || {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
                .fetch_one(db)
                .await
                .unwrap();
        open == 0
    })
    .await;
}

async fn queue(db: &PgPool, job: &str, trigger: &str, n: u32, tag: &str) {
    sqlx::raw_sql(&format!(
        "INSERT INTO runs (id, job, trigger_type, session_user_name, status, params, \
         scheduled_for, queued_at, owner, lease_until) \
         SELECT '{tag}-' || lpad(i::text, 6, '0'), '{job}', '{trigger}', 'bench', 'queued', '{{}}', \
         now() + i * interval '1 microsecond', clock_timestamp(), '', now() \
         FROM generate_series(1, {n}) i; \
         INSERT INTO steps (run_id, position, name, status) \
         SELECT '{tag}-' || lpad(i::text, 6, '0'), 0, '{job}', 'pending' FROM generate_series(1, {n}) i"
    ))
    .execute(db)
    .await
    .unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

struct Figures {
    nodes: usize,
    claims_per_sec: f64,
    runs_per_sec: f64,
    p50_ms: f64,
    p99_ms: f64,
    /// Failover after SIGSTOP (the lease) and after SIGKILL (seen dead at once).
    stop_s: Option<f64>,
    kill_s: Option<f64>,
}

async fn round(opts: &Options, admin: &PgPool, nodes_n: usize) -> Figures {
    let schema = format!("snakepit_bench_cluster_{}_{nodes_n}", std::process::id());
    sqlx::raw_sql(&format!(
        "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
    ))
    .execute(admin)
    .await
    .unwrap();
    let state = format!("{}?options=-c%20search_path%3D{schema}", opts.postgres);
    let mut nodes: Vec<Node> = (0..nodes_n).map(|_| Node::start(opts, &state)).collect();
    let db = PgPool::connect(&state).await.unwrap();
    wait_until(
        "the nodes to record themselves",
        Duration::from_secs(60),
        async || {
            let n: i64 = sqlx::query_scalar("SELECT count(*) FROM nodes")
                .fetch_one(&db)
                .await
                .unwrap_or(0);
            n == nodes_n as i64
        },
    )
    .await;

    // Throughput: every run queued at once.
    queue(&db, "noop", "manual", opts.runs, "t").await;
    all_ended(&db, "the queued runs to end", Duration::from_secs(1800)).await;
    let (first, last_start, last_end): (DateTime<Utc>, DateTime<Utc>, DateTime<Utc>) =
        sqlx::query_as(
            "SELECT min(started_at), max(started_at), max(finished_at) FROM runs WHERE id LIKE 't-%'",
        )
        .fetch_one(&db)
        .await
        .unwrap();
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM runs WHERE id LIKE 't-%' AND status <> 'succeeded'",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(failed, 0, "every trivial run succeeds");
    let secs =
        |a: DateTime<Utc>, b: DateTime<Utc>| (b - a).num_microseconds().unwrap() as f64 / 1e6;
    let claims_per_sec = f64::from(opts.runs) / secs(first, last_start);
    let runs_per_sec = f64::from(opts.runs) / secs(first, last_end);

    // Latency: runs queued one at a time, 20 ms apart, on idle nodes.
    for i in 0..opts.latency {
        queue(&db, "noop", "manual", 1, &format!("l{i:04}")).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    all_ended(&db, "the paced runs to end", Duration::from_secs(300)).await;
    let mut lat: Vec<f64> = sqlx::query_scalar(
        "SELECT EXTRACT(EPOCH FROM started_at - queued_at)::float8 * 1000 FROM runs WHERE id LIKE 'l%'",
    )
    .fetch_all(&db)
    .await
    .unwrap();
    lat.sort_by(f64::total_cmp);

    // Failover: a scheduled run that hangs. Its node is first stopped (SIGSTOP): alive
    // to /proc, it renews nothing, as a node on another machine that died or was cut off
    // looks; the run waits for its lease. Then the node holding it is SIGKILLed: on this
    // machine the others see at once that its process is gone.
    let (stop_s, kill_s) = if nodes_n > 1 {
        queue(&db, "hang", "schedule", 1, "f").await;
        let stop_s = failover(&db, &mut nodes, Disrupt::Stop).await;
        let kill_s = failover(&db, &mut nodes, Disrupt::Kill).await;
        (Some(stop_s), Some(kill_s))
    } else {
        (None, None)
    };
    for n in &mut nodes {
        n.kill();
    }
    db.close().await;
    sqlx::raw_sql(&format!("DROP SCHEMA {schema} CASCADE"))
        .execute(admin)
        .await
        .unwrap();
    Figures {
        nodes: nodes_n,
        claims_per_sec,
        runs_per_sec,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        stop_s,
        kill_s,
    }
}

enum Disrupt {
    Stop,
    Kill,
}

/// The owner of the hanging run once it is running (polled).
async fn hang_owner(db: &PgPool, not: &str) -> String {
    let mut owner = String::new();
    wait_until(
        "the hanging run to run",
        Duration::from_secs(300),
        async || {
            owner = sqlx::query_scalar(
                "SELECT owner FROM runs WHERE id = 'f-000001' AND status = 'running'",
            )
            .fetch_optional(db)
            .await
            .unwrap()
            .unwrap_or_default();
            !owner.is_empty() && owner != not
        },
    )
    .await;
    owner
}

/// Disrupts the node running the hanging run, a second after it started it, and
/// returns the seconds until the run is running on another node.
async fn failover(db: &PgPool, nodes: &mut [Node], how: Disrupt) -> f64 {
    let owner = hang_owner(db, "").await;
    let pid: u32 = owner.split('/').nth(2).unwrap().parse().unwrap();
    let victim = nodes.iter().position(|n| n.pid() == pid).unwrap();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let signal = |sig| {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), sig).unwrap();
    };
    let disrupted = Instant::now();
    match how {
        Disrupt::Stop => signal(nix::sys::signal::Signal::SIGSTOP),
        Disrupt::Kill => nodes[victim].kill(),
    }
    hang_owner(db, &owner).await;
    let took = disrupted.elapsed().as_secs_f64();
    if let Disrupt::Stop = how {
        signal(nix::sys::signal::Signal::SIGCONT);
    }
    took
}

fn main() {
    let opts = options();
    assert!(
        Path::new(&opts.snakepit).exists(),
        "{} is missing: cargo build --release -p snakepit-cli (or give --snakepit PATH)",
        opts.snakepit.display()
    );
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let admin = PgPool::connect(&opts.postgres)
            .await
            .unwrap_or_else(|e| panic!("PostgreSQL at {}: {e}", opts.postgres));
        println!(
            "{} trivial runs queued at once; {} runs queued 20 ms apart; lease {}; one worker per node",
            opts.runs, opts.latency, opts.lease
        );
        println!("| nodes | claims/s | runs/s | queued→started p50 | p99 | failover after SIGSTOP (lease) | after SIGKILL |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        for &n in &opts.nodes {
            let f = round(&opts, &admin, n).await;
            let secs = |s: Option<f64>| s.map_or_else(|| "-".to_owned(), |s| format!("{s:.1} s"));
            println!(
                "| {} | {:.0} | {:.0} | {:.1} ms | {:.1} ms | {} | {} |",
                f.nodes,
                f.claims_per_sec,
                f.runs_per_sec,
                f.p50_ms,
                f.p99_ms,
                secs(f.stop_s),
                secs(f.kill_s),
            );
        }
        admin.close().await;
    });
}
