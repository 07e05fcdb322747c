//! Several `snakepit serve` nodes on one PostgreSQL, on this machine (issue 17): with 1, 2
//! and 3 nodes, in one run,
//! - claims per second over N queued trivial runs (all queued at once, then claimed and
//!   run by the nodes; claims/s is N over the time from the first claim to the last,
//!   runs/s over the time until the last ended);
//! - where that phase's time goes: the machine's CPUs busy (`/proc/stat`, all CPUs), the
//!   CPU used per run by the PostgreSQL server processes (comm `postgres`), by the nodes
//!   and their workers, by this bench, by kernel threads and by the rest of the machine
//!   (`/proc/PID/stat`, the rest from `/proc/stat`);
//!   PostgreSQL's commits (`pg_stat_database`, the bench's own polls taken off) and WAL
//!   syncs and bytes (`pg_stat_wal`, PostgreSQL 15), as deltas over the phase;
//! - queued-to-started latency, p50 and p99, of runs queued one at a time (paced);
//! - failover: the node running a scheduled run is stopped (SIGSTOP: what another
//!   machine sees of a node that died or was cut off; the run waits for its lease), then
//!   the node holding it is SIGKILLed (on this machine seen dead through /proc at once);
//!   the time until the run is running again on another node (2 and 3 nodes).
//!
//! Each node is a `snakepit serve` of its own apps dir with one worker, sharing a fresh
//! schema of the database; the lease is the default (15 s) unless `--lease` says.
//! `--sync-commit off` is an experiment: the nodes' connections (and the bench's) get
//! `synchronous_commit = off` through the url's `options`, to see whether waiting for
//! the WAL flush limits the claims; snakepit itself never sets it.
//!
//! ```sh
//! cargo build --release -p snakepit-cli -p snakepit-benches
//! target/release/cluster [--runs 10000] [--latency 200] [--lease 15s] [--nodes 1,2,3]
//!     [--sync-commit off] [--snakepit target/release/snakepit]
//!     [--postgres postgres://postgres@127.0.0.1:5432/test]
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
    /// False with `--sync-commit off`: the experiment above.
    sync_commit: bool,
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
        sync_commit: arg("--sync-commit").is_none_or(|v| match v.as_str() {
            "on" => true,
            "off" => false,
            _ => panic!("--sync-commit on|off"),
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

/// Polls `done` every 10 ms; returns how many times it asked.
async fn wait_until(what: &str, limit: Duration, mut done: impl AsyncFnMut() -> bool) -> i64 {
    let until = Instant::now() + limit;
    let mut polls = 1;
    while !done().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
        polls += 1;
    }
    polls
}

/// Waits until no run of the schema is queued or running; returns how many queries
/// (transactions) that took.
async fn all_ended(db: &PgPool, what: &str, limit: Duration) -> i64 {
    wait_until(what, limit, async || {
        let open: i64 =
            sqlx::query_scalar("SELECT count(*) FROM runs WHERE status IN ('queued', 'running')")
                .fetch_one(db)
                .await
                .unwrap();
        open == 0
    })
    .await
}

/// Queues `n` runs of `job` owned by no one, queued at `now`, in one statement each for
/// the runs and their steps.
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

/// CPU ticks (`USER_HZ`) so far: the machine's busy and total (`/proc/stat`, all CPUs),
/// the PostgreSQL server processes', the nodes' with their descendants', this bench's
/// own and the kernel threads' (such as the file system's journal writing the WAL's
/// syncs; utime, stime and their reaped children's, so that processes ending between two
/// samples still count).
struct Cpu {
    at: Instant,
    busy: u64,
    total: u64,
    postgres: u64,
    nodes: u64,
    bench: u64,
    kernel: u64,
}

impl Cpu {
    fn sample(nodes: &[u32]) -> Cpu {
        let stat = std::fs::read_to_string("/proc/stat").unwrap();
        let all: Vec<u64> = stat
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect();
        // user nice system idle iowait irq softirq steal (guest time is within user).
        let total: u64 = all.iter().take(8).sum();
        struct Proc {
            pid: u32,
            ppid: u32,
            comm: String,
            ticks: u64,
        }
        let procs: Vec<Proc> = std::fs::read_dir("/proc")
            .unwrap()
            .filter_map(|e| {
                let pid: u32 = e.ok()?.file_name().to_str()?.parse().ok()?;
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let (head, tail) = stat.rsplit_once(')')?;
                let comm = head.split_once('(')?.1.to_owned();
                let f: Vec<&str> = tail.split_whitespace().collect();
                // After the comm: state ppid … utime stime cutime cstime (fields 14–17).
                let ticks = f[11..15]
                    .iter()
                    .map(|v| v.parse::<u64>().unwrap_or(0))
                    .sum();
                Some(Proc {
                    pid,
                    ppid: f[1].parse().ok()?,
                    comm,
                    ticks,
                })
            })
            .collect();
        let mut tree: Vec<u32> = nodes.to_vec();
        while let Some(more) = procs
            .iter()
            .find(|p| tree.contains(&p.ppid) && !tree.contains(&p.pid))
        {
            tree.push(more.pid);
        }
        let sum =
            |keep: &dyn Fn(&Proc) -> bool| procs.iter().filter(|p| keep(p)).map(|p| p.ticks).sum();
        Cpu {
            at: Instant::now(),
            busy: total - all[3] - all[4],
            total,
            postgres: sum(&|p| p.comm == "postgres"),
            nodes: sum(&|p| tree.contains(&p.pid)),
            bench: sum(&|p| p.pid == std::process::id()),
            kernel: sum(&|p| p.pid == 2 || p.ppid == 2),
        }
    }
}

/// PostgreSQL's counters so far: the database's commits and the server's WAL syncs and
/// bytes. Backends report them when idle at the latest 10 s after the fact: sampled
/// after [`settle`].
struct Pg {
    commits: i64,
    wal_syncs: i64,
    wal_bytes: i64,
}

impl Pg {
    async fn sample(db: &PgPool) -> Pg {
        let (commits, wal_syncs, wal_bytes) = sqlx::query_as(
            "SELECT (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()), \
             wal_sync, wal_bytes::int8 FROM pg_stat_wal",
        )
        .fetch_one(db)
        .await
        .unwrap();
        Pg {
            commits,
            wal_syncs,
            wal_bytes,
        }
    }
}

/// Until the idle backends have reported their counters (PostgreSQL 15's
/// `PGSTAT_IDLE_INTERVAL`, 10 s).
async fn settle() {
    tokio::time::sleep(Duration::from_secs(11)).await;
}

/// Where the claims phase's time went, per run and per second of the phase.
struct Usage {
    busy: f64,
    postgres_ms: f64,
    nodes_ms: f64,
    bench_ms: f64,
    kernel_ms: f64,
    rest_ms: f64,
    commits_per_run: f64,
    commits_per_sec: f64,
    syncs_per_sec: f64,
    wal_kb: f64,
}

impl Usage {
    /// `polls`: the bench's own transactions over the phase, taken off the commits.
    fn between(runs: u32, cpu: (&Cpu, &Cpu), pg: (&Pg, &Pg), polls: i64) -> Usage {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let runs = f64::from(runs);
        let ms = |a: u64, b: u64| (b - a) as f64 / hz * 1000.0 / runs;
        let secs = (cpu.1.at - cpu.0.at).as_secs_f64();
        let postgres_ms = ms(cpu.0.postgres, cpu.1.postgres);
        let nodes_ms = ms(cpu.0.nodes, cpu.1.nodes);
        let bench_ms = ms(cpu.0.bench, cpu.1.bench);
        let kernel_ms = ms(cpu.0.kernel, cpu.1.kernel);
        let commits = (pg.1.commits - pg.0.commits - polls) as f64;
        Usage {
            busy: (cpu.1.busy - cpu.0.busy) as f64 / (cpu.1.total - cpu.0.total) as f64,
            postgres_ms,
            nodes_ms,
            bench_ms,
            kernel_ms,
            rest_ms: ms(cpu.0.busy, cpu.1.busy) - postgres_ms - nodes_ms - bench_ms - kernel_ms,
            commits_per_run: commits / runs,
            commits_per_sec: commits / secs,
            syncs_per_sec: (pg.1.wal_syncs - pg.0.wal_syncs) as f64 / secs,
            wal_kb: (pg.1.wal_bytes - pg.0.wal_bytes) as f64 / 1000.0 / runs,
        }
    }
}

struct Figures {
    nodes: usize,
    claims_per_sec: f64,
    runs_per_sec: f64,
    usage: Usage,
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
    let sync = if opts.sync_commit {
        ""
    } else {
        "%20-c%20synchronous_commit%3Doff"
    };
    let state = format!(
        "{}?options=-c%20search_path%3D{schema}{sync}",
        opts.postgres
    );
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
    let shown: String = sqlx::query_scalar("SHOW synchronous_commit")
        .fetch_one(&db)
        .await
        .unwrap();
    assert_eq!(
        shown == "off",
        !opts.sync_commit,
        "synchronous_commit is {shown}"
    );

    // Throughput: every run queued at once.
    let pids: Vec<u32> = nodes.iter().map(Node::pid).collect();
    settle().await;
    let (cpu0, pg0) = (Cpu::sample(&pids), Pg::sample(&db).await);
    queue(&db, "noop", "manual", opts.runs, "t").await;
    let polls = all_ended(&db, "the queued runs to end", Duration::from_secs(1800)).await;
    let cpu1 = Cpu::sample(&pids);
    settle().await;
    let usage = Usage::between(
        opts.runs,
        (&cpu0, &cpu1),
        (&pg0, &Pg::sample(&db).await),
        polls,
    );
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
        usage,
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
            "{} trivial runs queued at once; {} runs queued 20 ms apart; lease {}; one worker per node; \
             synchronous_commit {}",
            opts.runs,
            opts.latency,
            opts.lease,
            if opts.sync_commit { "as the server has it" } else { "off (experiment)" }
        );
        println!("| nodes | claims/s | runs/s | queued→started p50 | p99 | failover after SIGSTOP (lease) | after SIGKILL |");
        println!("|---:|---:|---:|---:|---:|---:|---:|");
        let mut usages = Vec::new();
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
            usages.push((f.nodes, f.claims_per_sec, f.usage));
        }
        println!("\nThe queued runs' phase: CPU time per run, PostgreSQL's counters over the phase");
        println!("| nodes | claims/s | CPUs busy | PostgreSQL CPU/run | nodes + workers CPU/run | bench CPU/run | kernel threads CPU/run | rest of the machine CPU/run | commits/run | commits/s | WAL syncs/s | WAL/run |");
        println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (n, claims, u) in usages {
            println!(
                "| {n} | {claims:.0} | {:.0}% | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.2} ms | {:.1} | {:.0} | {:.0} | {:.1} kB |",
                u.busy * 100.0,
                u.postgres_ms,
                u.nodes_ms,
                u.bench_ms,
                u.kernel_ms,
                u.rest_ms,
                u.commits_per_run,
                u.commits_per_sec,
                u.syncs_per_sec,
                u.wal_kb,
            );
        }
        admin.close().await;
    });
}
