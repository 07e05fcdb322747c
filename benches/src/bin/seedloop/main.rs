//! What snakepit adds to a plugin's loop (issue 13), against what a user would have
//! without it, in one run of interleaved rounds:
//!
//! - **seed loop** (`seed-sqlite`, `seed-postgres`, `seed-mariadb`): the demo's
//!   `billing.invoicing:run`, unchanged, over `--drafts` draft invoices (10,000),
//!   through snakepit against the same plugin run in-process in Python (`sqlite3`,
//!   `psycopg`, `PyMySQL`); see `seed.rs`. Targets: ≤ 2× (SQLite), ≤ 1.5× (PostgreSQL).
//! - **host request** (`host-request`): the built-in `echo` host method from a plugin's
//!   loop, mid-call, against a raw Rust→Python ping-pong. Target: ≤ 1.25×.
//! - **`snakepit bench`** (`bench`): the CLI's p50 and throughput, 1 and 2 workers,
//!   against one and two raw ping-pong pairs. Targets: p50 ≤ 1.25×, 2-worker
//!   throughput ≥ 0.85×.
//! - **fixed costs** (`fixed-costs`): the wall time of `snakepit call` of a trivial
//!   function and of `snakepit run` of a one-step job. Target: ≤ 100 ms each.
//!
//! ```text
//! cargo build --release -p snakepit-cli
//! cargo run --release -p snakepit-benches --bin seedloop [-- --rounds N (5)] [--drafts N (10000)]
//!     [--calls N (5000)] [--only seed-sqlite,seed-postgres,seed-mariadb,host-request,bench,fixed-costs] [--sched]
//! ```
//!
//! Every part is set up first; then each round runs one round of every part, in an
//! order that flips every round, so that a part's rounds and its baseline's are spread
//! over the same stretch of time. Round 0 is a warm-up, not counted. Each part prints its
//! own table, and the run ends with one table of the targets: figures are medians over
//! rounds, ratios the medians of the per-round ratios.
//!
//! `--sched` prints, for each counted seed step, the scheduler's figures per query
//! (on-CPU time, run-queue wait, sleeps, preemptions) of every supervisor thread and the
//! worker.

mod overhead;
mod seed;

use snakepit_benches::median;

use overhead::{Bench, FixedCosts, HostRequest};
use seed::{Seed, Server};

pub struct Opts {
    rounds: usize,
    drafts: usize,
    calls: usize,
    only: Option<Vec<String>>,
    /// Print the scheduler's figures per query of each step (`--sched`).
    sched: bool,
}

/// The parts, by the names `--only` takes.
const PARTS: &[&str] = &[
    "seed-sqlite",
    "seed-postgres",
    "seed-mariadb",
    "host-request",
    "bench",
    "fixed-costs",
];

fn args() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let value = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
    };
    let number = |name: &str, default: usize| {
        value(name).map_or(default, |v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number, not {v:?}"))
        })
    };
    let only = value("--only").map(|v| v.split(',').map(str::to_owned).collect::<Vec<_>>());
    for n in only.iter().flatten() {
        assert!(
            PARTS.contains(&n.as_str()),
            "--only: no part {n:?} (parts: {})",
            PARTS.join(", ")
        );
    }
    Opts {
        rounds: number("--rounds", 5),
        drafts: number("--drafts", 10_000),
        calls: number("--calls", 5000),
        only,
        sched: args.iter().any(|a| a == "--sched"),
    }
}

/// One part of the run.
enum Part {
    Seed(Seed),
    HostRequest(HostRequest),
    Bench(Bench),
    FixedCosts(FixedCosts),
}

impl Part {
    async fn start(name: &str, opts: &Opts) -> Part {
        match name {
            "seed-sqlite" => Part::Seed(Seed::start(opts, Server::Sqlite).await),
            "seed-postgres" => Part::Seed(Seed::start(opts, Server::Postgres).await),
            "seed-mariadb" => Part::Seed(Seed::start(opts, Server::MariaDb).await),
            "host-request" => Part::HostRequest(HostRequest::start(opts.calls).await),
            "bench" => Part::Bench(Bench::start(opts.calls)),
            "fixed-costs" => Part::FixedCosts(FixedCosts::start()),
            _ => unreachable!("checked by args()"),
        }
    }

    /// One round; `counted` is false for the warm-up. Returns a line for the progress log.
    async fn round(&mut self, round: usize, counted: bool) -> String {
        match self {
            Part::Seed(s) => s.round(round, counted).await,
            Part::HostRequest(h) => h.round(round, counted).await,
            Part::Bench(b) => b.round(round, counted),
            Part::FixedCosts(f) => f.round(counted),
        }
    }

    /// Prints the part's table; returns its rows of the summary.
    fn report(&self) -> Vec<Target> {
        match self {
            Part::Seed(s) => s.report(),
            Part::HostRequest(h) => h.report(),
            Part::Bench(b) => b.report(),
            Part::FixedCosts(f) => f.report(),
        }
    }

    async fn stop(self) {
        match self {
            Part::Seed(s) => s.stop().await,
            Part::HostRequest(h) => h.stop().await,
            Part::Bench(_) | Part::FixedCosts(_) => {}
        }
    }
}

/// A figure against its baseline, round by round, and the target on their ratio.
#[derive(Clone)]
pub struct Target {
    what: String,
    ours: Vec<f64>,
    base: Vec<f64>,
    unit: &'static str,
    /// `(true, t)`: ours/base must be at most `t`; `(false, t)`: at least; `None`: for
    /// information.
    goal: Option<(bool, f64)>,
}

impl Target {
    pub fn new(what: impl Into<String>, unit: &'static str, goal: Option<(bool, f64)>) -> Target {
        Target {
            what: what.into(),
            ours: vec![],
            base: vec![],
            unit,
            goal,
        }
    }

    pub fn push(&mut self, ours: f64, base: f64) {
        self.ours.push(ours);
        self.base.push(base);
    }

    /// The median of the per-round ratios.
    pub fn ratio(&self) -> f64 {
        let r: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.base)
            .map(|(o, b)| o / b)
            .collect();
        median(&r)
    }

    fn print(&self) {
        let r = self.ratio();
        let (goal, met) = match self.goal {
            Some((true, t)) => (format!("≤ {t:.2}×"), r <= t),
            Some((false, t)) => (format!("≥ {t:.2}×"), r >= t),
            None => ("(info)".into(), true),
        };
        let met = match (self.goal, met) {
            (None, _) => "—",
            (_, true) => "yes",
            (_, false) => "**no**",
        };
        println!(
            "| {} | {:.1} {u} | {:.1} {u} | {r:.2}× | {goal} | {met} |",
            self.what,
            median(&self.base),
            median(&self.ours),
            u = self.unit
        );
    }
}

// One runtime thread, as `snakepit run` has (crates/snakepit-cli/src/lib.rs).
#[tokio::main(flavor = "current_thread")]
async fn main() {
    let opts = args();
    println!(
        "seedloop: {} drafts, {} calls, {} rounds (+1 warm-up), {} CPUs",
        opts.drafts,
        opts.calls,
        opts.rounds,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let mut parts = Vec::new();
    for name in PARTS {
        if opts
            .only
            .as_ref()
            .is_none_or(|o| o.iter().any(|n| n == name))
        {
            parts.push((*name, Part::start(name, &opts).await));
        }
    }
    for round in 0..=opts.rounds {
        let counted = round > 0;
        let mut order: Vec<usize> = (0..parts.len()).collect();
        if round % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let (name, part) = &mut parts[i];
            let line = part.round(round, counted).await;
            eprintln!(
                "round {round}{} {name}: {line}",
                if counted { "" } else { " (warm-up)" }
            );
        }
    }
    let mut targets = Vec::new();
    for (_, part) in &parts {
        targets.extend(part.report());
    }
    println!("\n## targets\n");
    println!("| what | baseline | snakepit | ratio | target | met? |");
    println!("|---|---:|---:|---:|---|---|");
    for t in &targets {
        t.print();
    }
    for (_, part) in parts {
        part.stop().await;
    }
}
