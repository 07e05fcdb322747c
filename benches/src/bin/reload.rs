//! The hot-restart benchmark: how long an edit under `plugins/` takes to reach the
//! callers, and what a generation swap does to call latency, in one run.
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin reload [-- --rounds N] [--callers N]
//!     [--workers N] [--pause-us N] [--out FILE]
//! ```
//!
//! A host serves a temporary apps dir whose `plugins/reloadable.py` returns its
//! `VERSION`; the watcher runs with its default quiet period. `--callers` threads (each
//! with its own single-threaded runtime, as `snakepit bench` does) call it back to back,
//! pausing `--pause-us` between calls (a steady load that leaves the machine room to
//! start the next generation). Each round waits a second of steady state, rewrites the
//! module with the next `VERSION`, and waits until a caller gets it and the old
//! generation has retired. Reported: the time from the rename on disk to the end of the
//! first call that returned the new version (median over rounds), the reload itself
//! (load, start, validate) as the host timed it, and the call latency p50/p99 of calls
//! started during the swap (from the change until the old generation retired) against
//! those of the steady second before it. Progress goes to stderr; the markdown table to
//! stdout (and to `--out`).

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit::{Map, Value};
use snakepit_benches::{bench_python, median, Samples};
use snakepit_host::{Host, Install, Watcher, DEFAULT_QUIET};

struct Opts {
    rounds: usize,
    callers: usize,
    workers: usize,
    pause: Duration,
    out: Option<PathBuf>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        rounds: 7,
        callers: 2,
        workers: 2,
        pause: Duration::from_micros(500),
        out: None,
    };
    let mut args = std::env::args().skip(1);
    let num = |v: Option<String>, what: &str| -> u64 {
        v.and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--rounds" => o.rounds = num(args.next(), "--rounds") as usize,
            "--callers" => o.callers = num(args.next(), "--callers") as usize,
            "--workers" => o.workers = num(args.next(), "--workers") as usize,
            "--pause-us" => o.pause = Duration::from_micros(num(args.next(), "--pause-us")),
            "--out" => o.out = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                eprintln!(
                    "reload [--rounds N] [--callers N] [--workers N] [--pause-us N] [--out FILE]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// One call: when it started and ended, and the version it got (`None`: it failed).
struct Record {
    start: Instant,
    end: Instant,
    version: Option<i64>,
}

/// One round: the steady second, the change on disk, the old generation retired.
struct Round {
    steady: Instant,
    change: Instant,
    settled: Instant,
    version: i64,
    reload_ms: u64,
}

fn write_module(dir: &Path, version: i64) {
    let text = format!("VERSION = {version}\n\n\ndef version(**ctx):\n    return VERSION\n");
    let tmp = dir.join("plugins/.reloadable.py.tmp");
    std::fs::write(&tmp, text).expect("write the module");
    std::fs::rename(&tmp, dir.join("plugins/reloadable.py")).expect("rename the module");
}

fn caller(
    host: Arc<Host>,
    stop: Arc<AtomicBool>,
    seen: Arc<AtomicI64>,
    pause: Duration,
) -> Vec<Record> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut records = Vec::new();
    rt.block_on(async {
        while !stop.load(Ordering::Relaxed) {
            let start = Instant::now();
            let r = host
                .call("reloadable:version", Map::new(), Map::new())
                .await;
            let end = Instant::now();
            let version = match r.map(|v| v.decode()) {
                Ok(Ok(Value::Int(v))) => Some(v),
                other => {
                    eprintln!("a call failed: {other:?}");
                    None
                }
            };
            if let Some(v) = version {
                seen.fetch_max(v, Ordering::Relaxed);
            }
            records.push(Record {
                start,
                end,
                version,
            });
            if !pause.is_zero() {
                std::thread::sleep(pause);
            }
        }
    });
    records
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + Duration::from_secs(60);
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn main() {
    let o = parse_opts();
    let python = bench_python(true);
    let dir = tempfile::tempdir().expect("a temporary apps dir");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins/");
    write_module(dir.path(), 1);
    std::fs::write(
        dir.path().join("app.toml"),
        format!("[runtime]\nworkers = {}\n", o.workers),
    )
    .expect("app.toml");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let (host, watcher) = rt.block_on(async {
        let install = Install::load(Some(dir.path()), Some(&python)).expect("the install loads");
        let host = Arc::new(Host::start_checked(install).await.expect("the host starts"));
        let watcher = Watcher::start(host.clone(), DEFAULT_QUIET)
            .await
            .expect("the watcher starts");
        (host, watcher)
    });
    eprintln!(
        "{} callers, {} workers, {} rounds, interpreter {}",
        o.callers,
        o.workers,
        o.rounds,
        python.display()
    );
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(AtomicI64::new(0));
    let threads: Vec<_> = (0..o.callers)
        .map(|_| {
            let (host, stop, seen) = (host.clone(), stop.clone(), seen.clone());
            let pause = o.pause;
            std::thread::spawn(move || caller(host, stop, seen, pause))
        })
        .collect();
    let mut rounds = Vec::new();
    for r in 0..o.rounds {
        let version = r as i64 + 2;
        let steady = Instant::now();
        std::thread::sleep(Duration::from_secs(1));
        let change = Instant::now();
        write_module(dir.path(), version);
        wait_until("the new version", || {
            seen.load(Ordering::Relaxed) >= version
        });
        wait_until("the old generation to retire", || {
            host.status().retiring.is_empty()
        });
        let settled = Instant::now();
        let status = host.status();
        let reload_ms = status.last_reload.map_or(0, |l| l.took_ms);
        eprintln!(
            "round {}: generation {} serves version {version} ({} ms to settle)",
            r + 1,
            status.generation,
            (settled - change).as_millis()
        );
        rounds.push(Round {
            steady,
            change,
            settled,
            version,
            reload_ms,
        });
    }
    stop.store(true, Ordering::Relaxed);
    let records: Vec<Record> = threads
        .into_iter()
        .flat_map(|t| t.join().expect("caller thread"))
        .collect();
    drop(watcher);
    rt.block_on(host.shutdown(Duration::from_secs(5)));

    let failed = records.iter().filter(|r| r.version.is_none()).count();
    let mut to_first = Vec::new();
    let mut reload_ms = Vec::new();
    let (mut steady, mut swap) = (Samples::with_capacity(0), Samples::with_capacity(0));
    for round in &rounds {
        let first = records
            .iter()
            .filter(|r| r.version == Some(round.version))
            .map(|r| r.end)
            .min()
            .expect("a call got the new version");
        to_first.push((first - round.change).as_secs_f64() * 1000.0);
        reload_ms.push(round.reload_ms as f64);
        for r in &records {
            if r.start >= round.steady && r.start < round.change {
                steady.push(r.end - r.start);
            } else if r.start >= round.change && r.start < round.settled {
                swap.push(r.end - r.start);
            }
        }
    }
    let min = to_first.iter().copied().fold(f64::INFINITY, f64::min);
    let max = to_first.iter().copied().fold(0.0, f64::max);
    let mut table = String::new();
    table.push_str("| measure | value |\n|---|---|\n");
    table.push_str(&format!(
        "| change on disk → first call served by the new generation, median of {} (min–max) | {:.0} ms ({:.0}–{:.0}) |\n",
        rounds.len(),
        median(&to_first),
        min,
        max
    ));
    table.push_str(&format!(
        "| of which the watcher's quiet period | {} ms |\n",
        DEFAULT_QUIET.as_millis()
    ));
    table.push_str(&format!(
        "| the reload itself (load, start {} workers + template, validate), median | {:.0} ms |\n",
        o.workers,
        median(&reload_ms)
    ));
    table.push_str(&format!(
        "| call latency p50: steady / during the swap (ratio) | {:.0} µs / {:.0} µs ({:.2}×) |\n",
        steady.p50(),
        swap.p50(),
        swap.p50() / steady.p50()
    ));
    table.push_str(&format!(
        "| call latency p99: steady / during the swap (ratio) | {:.0} µs / {:.0} µs ({:.2}×) |\n",
        steady.p99(),
        swap.p99(),
        swap.p99() / steady.p99()
    ));
    table.push_str(&format!(
        "| calls (steady / during the swap / failed) | {} / {} / {failed} |\n",
        steady.0.len(),
        swap.0.len()
    ));
    print!("{table}");
    if let Some(out) = &o.out {
        std::fs::write(out, &table).expect("write --out");
    }
    assert_eq!(failed, 0, "calls failed during the reloads");
}
