//! What confinement costs (issue 11, `docs/benchmarks.md`): worker start (fork-server to
//! ready) and small-call latency of three pools in interleaved rounds: unconfined (no
//! confinement at all), the baseline every pool gets (no settings), and every
//! `[isolation]` setting on. Medians over rounds, and the median of the per-round ratios.
//!
//! `cargo run --release -p snakepit-benches --bin isolation [-- --rounds N --calls N
//! --starts N]`

use std::time::Duration;

use snakepit::{Enforce, Filesystem, Isolation, Pool, PoolBuilder};
use snakepit_benches::{bench_python, median, pool_latency, python_dir, startups};

struct Opts {
    rounds: usize,
    calls: usize,
    starts: usize,
    /// Only these settings in the third pool (to find what costs).
    only: Option<Vec<String>>,
}

fn opts() -> Opts {
    let mut o = Opts {
        rounds: 7,
        calls: 3000,
        starts: 15,
        only: None,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    for pair in args.chunks(2) {
        if pair[0] == "--only" {
            let list = pair.get(1).expect("--only takes a list");
            o.only = Some(list.split(',').map(str::to_owned).collect());
            continue;
        }
        let n = pair.get(1).and_then(|v| v.parse().ok());
        match (pair[0].as_str(), n) {
            ("--rounds", Some(n)) => o.rounds = n,
            ("--calls", Some(n)) => o.calls = n,
            ("--starts", Some(n)) => o.starts = n,
            (a, _) => panic!("{a}: expected --rounds N, --calls N, --starts N or --only a,b"),
        }
    }
    o
}

const KINDS: [&str; 3] = ["unconfined", "baseline", "every setting"];

/// Every setting, or only those named (memory_limit, cpu_seconds, max_processes,
/// network, filesystem).
fn everything(only: Option<&[String]>) -> Isolation {
    let on = |k: &str| only.is_none_or(|o| o.iter().any(|x| x == k));
    let d = Isolation::default();
    Isolation {
        memory_limit: on("memory_limit").then_some(512 << 20),
        cpu_seconds: on("cpu_seconds").then_some(60),
        max_processes: on("max_processes").then_some(64),
        network: !on("network"),
        filesystem: if on("filesystem") {
            Filesystem::PluginsReadonly
        } else {
            d.filesystem
        },
        enforce: Enforce::Strict,
        ..d
    }
}

fn builder(kind: usize, only: Option<&[String]>) -> PoolBuilder {
    let b = Pool::builder()
        .python(bench_python(true))
        .sys_path(python_dir())
        .workers(1);
    match kind {
        0 => b.unconfined(),
        1 => b,
        _ => b.isolation(everything(only)),
    }
}

fn main() {
    let o = opts();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let (calls, starts) = rt.block_on(async {
        let mut calls = Vec::new();
        let mut starts = Vec::new();
        for k in 0..KINDS.len() {
            calls.push(builder(k, o.only.as_deref()).build().await.expect("pool"));
            starts.push(
                builder(k, o.only.as_deref())
                    .max_calls_per_worker(1)
                    .max_calls_jitter(0)
                    .build()
                    .await
                    .expect("pool"),
            );
        }
        (calls, starts)
    });
    if let Some(iso) = starts[2].status().isolation.settings.first() {
        eprintln!("every setting: e.g. {} by {}", iso.setting, iso.by);
    }
    // Per round and kind: start median (µs), call p50 (µs).
    let mut start = vec![Vec::new(); KINDS.len()];
    let mut p50 = vec![Vec::new(); KINDS.len()];
    for round in 0..o.rounds {
        for k in 0..KINDS.len() {
            let (t, _) = rt.block_on(startups(&starts[k], o.starts));
            start[k].push(median(&t));
            let s = rt.block_on(pool_latency(&calls[k], o.calls));
            p50[k].push(s.p50());
        }
        eprintln!(
            "round {}: start {:.0}/{:.0}/{:.0} µs, p50 {:.1}/{:.1}/{:.1} µs",
            round + 1,
            start[0][round],
            start[1][round],
            start[2][round],
            p50[0][round],
            p50[1][round],
            p50[2][round]
        );
    }
    let ratio = |v: &[Vec<f64>], a: usize, b: usize| -> f64 {
        median(
            &v[a]
                .iter()
                .zip(&v[b])
                .map(|(x, y)| x / y)
                .collect::<Vec<_>>(),
        )
    };
    println!(
        "rounds {}, {} starts and {} calls per pool per round\n",
        o.rounds, o.starts, o.calls
    );
    println!("| pool | worker start (median) | vs unconfined | vs baseline | small call p50 | vs unconfined | vs baseline |");
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for k in 0..KINDS.len() {
        println!(
            "| {} | {:.0} µs | {:.2}× | {:.2}× | {:.1} µs | {:.2}× | {:.2}× |",
            KINDS[k],
            median(&start[k]),
            ratio(&start, k, 0),
            ratio(&start, k, 1),
            median(&p50[k]),
            ratio(&p50, k, 0),
            ratio(&p50, k, 1),
        );
    }
    rt.block_on(async {
        for p in calls.iter().chain(&starts) {
            p.shutdown(Duration::from_secs(5)).await;
        }
    });
}
