//! Chaos beside a steady pool: what a hostile plugin costs the calls of another pool of
//! the same supervisor.
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin chaos [-- --rounds N] [--secs N]
//!     [--hostile flood_log,crash,...] [--out FILE]
//! ```
//!
//! A plugin host (the `Host` that `snakepit serve` runs, in this process, so that this
//! process is the supervisor whose memory is measured) serves a temporary apps dir with
//! two pools: `default` (2 workers) runs `steady:work`, `hostile` (2 workers) runs
//! `hostile:*`, which floods LOG records and prints, writes 4 MiB lines without a
//! newline to its stderr, sends host requests under forged call ids, writes garbage
//! into its channel, and crashes (`--hostile` picks some of these). Two steady callers (a thread and a current_thread
//! runtime each, as `snakepit bench` does) call `steady:work` back to back with a
//! 200 µs pause; two hostile callers go round the hostile functions. Each round
//! measures `--secs` of the steady callers alone, then `--secs` with the hostile
//! callers too. Reported: failed steady calls, the steady p50/p99 alone and under chaos
//! (medians over rounds of the per-round figures, and the median per-round p99 ratio),
//! what the hostile calls came to, and the supervisor's RSS (VmRSS of this process)
//! after start, at the end of each round, and its peak. The markdown table goes to
//! stdout (and to `--out`).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit::sync::Recover;
use snakepit::{CallError, Map};
use snakepit_benches::{bench_python, median, self_rss, Samples};
use snakepit_host::{Host, Install};

const STEADY: &str = "def work(*, x: int = 1, **ctx):\n    return x * 2\n";

const HOSTILE: &str = r#"
import logging, os, struct, sys, time

log = logging.getLogger("hostile")


def _worker():
    from snakepit_shim import host
    return host._worker


def flood_log(**ctx):
    end = time.monotonic() + 0.2
    while time.monotonic() < end:
        log.warning("flood %s", "x" * 200)


def flood_stdout(**ctx):
    for i in range(20_000):
        print(f"flood line {i}")


def endless_line(**ctx):
    os.write(2, b"z" * (4 << 20))


def forged(**ctx):
    import snakepit_shim
    worker = _worker()
    real = worker.call_id
    worker.call_id = 10 ** 9
    try:
        snakepit_shim.host_request("echo", None)
    except snakepit_shim.HostError:
        pass
    finally:
        worker.call_id = real


def garbage(**ctx):
    os.write(_worker().channel.fd, struct.pack(">I", 5) + b"\xc1" * 5)
    time.sleep(5)


def crash(**ctx):
    os._exit(3)
"#;

const HOSTILE_CALLS: [&str; 6] = [
    "flood_log",
    "flood_stdout",
    "endless_line",
    "forged",
    "garbage",
    "crash",
];

struct Opts {
    rounds: usize,
    secs: u64,
    hostile: Vec<String>,
    out: Option<PathBuf>,
}

fn parse_opts() -> Opts {
    let mut o = Opts {
        rounds: 5,
        secs: 3,
        hostile: HOSTILE_CALLS
            .iter()
            .map(|f| format!("hostile:{f}"))
            .collect(),
        out: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut num = |what: &str| -> u64 {
            args.next()
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(|| panic!("{what} needs a number"))
        };
        match a.as_str() {
            "--rounds" => o.rounds = num("--rounds") as usize,
            "--secs" => o.secs = num("--secs"),
            "--hostile" => {
                let list = args.next().expect("--hostile needs a list");
                o.hostile = list
                    .split(',')
                    .map(|f| {
                        assert!(HOSTILE_CALLS.contains(&f), "no hostile function {f}");
                        format!("hostile:{f}")
                    })
                    .collect();
            }
            "--out" => o.out = args.next().map(PathBuf::from),
            "-h" | "--help" => {
                eprintln!("chaos [--rounds N] [--secs N] [--hostile f,g,...] [--out FILE]");
                std::process::exit(0);
            }
            other => panic!("unknown option {other}"),
        }
    }
    o
}

/// One steady call: when it started (µs after `t0`) and how long it took (ns; 0: it
/// failed).
#[derive(Clone, Copy, Default)]
struct Record {
    start_us: u32,
    took_ns: u32,
}

/// Calls `steady:work` back to back until `stop`. The records go into a buffer
/// allocated and touched before the measurement, so that the supervisor's RSS is not
/// the bench's own bookkeeping.
fn steady_caller(host: Arc<Host>, stop: Arc<AtomicBool>, t0: Instant, cap: usize) -> Vec<Record> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut records = vec![Record::default(); cap];
    let mut n = 0;
    rt.block_on(async {
        while !stop.load(Ordering::Relaxed) && n < cap {
            let start = Instant::now();
            let r = host.call("steady:work", Map::new(), Map::new()).await;
            let took = start.elapsed();
            if let Err(e) = &r {
                eprintln!("a steady call failed: {e}");
            }
            records[n] = Record {
                start_us: (start - t0).as_micros() as u32,
                took_ns: if r.is_ok() {
                    took.as_nanos().max(1) as u32
                } else {
                    0
                },
            };
            n += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    records.truncate(n);
    records
}

/// Goes round the hostile functions while `on` is set; counts outcomes by kind.
fn hostile_caller(
    host: Arc<Host>,
    calls: Vec<String>,
    on: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    kinds: Arc<Mutex<std::collections::BTreeMap<String, u64>>>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let mut i = 0;
        while !stop.load(Ordering::Relaxed) {
            if !on.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            let f = &calls[i % calls.len()];
            i += 1;
            let kind = match host.call(f, Map::new(), Map::new()).await {
                Ok(_) => "ok",
                Err(CallError::WorkerCrashed { .. }) => "crashed",
                Err(CallError::Protocol(_)) => "protocol",
                Err(CallError::Timeout(_)) => "timeout",
                Err(CallError::Unavailable(_)) => "unavailable",
                Err(CallError::Overloaded(_)) => "overloaded",
                Err(_) => "other",
            };
            *kinds
                .lock()
                .recover()
                .entry(format!("{f} {kind}"))
                .or_default() += 1;
        }
    });
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn main() {
    let o = parse_opts();
    let python = bench_python(true);
    let dir = tempfile::tempdir().expect("a temporary apps dir");
    std::fs::create_dir(dir.path().join("plugins")).expect("plugins/");
    std::fs::write(dir.path().join("plugins/steady.py"), STEADY).expect("steady.py");
    std::fs::write(dir.path().join("plugins/hostile.py"), HOSTILE).expect("hostile.py");
    std::fs::write(
        dir.path().join("app.toml"),
        "[runtime]\nworkers = 2\ncall_timeout = \"10s\"\n\n[plugins.hostile]\npool = \"hostile\"\n\n[pools.hostile]\nworkers = 2\ncall_timeout = \"1s\"\n",
    )
    .expect("app.toml");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let host = rt.block_on(async {
        let install = Install::load(Some(dir.path()), Some(&python)).expect("the install loads");
        Arc::new(Host::start_checked(install).await.expect("the host starts"))
    });
    let stop = Arc::new(AtomicBool::new(false));
    let on = Arc::new(AtomicBool::new(false));
    let kinds = Arc::new(Mutex::new(std::collections::BTreeMap::new()));
    let t0 = Instant::now();
    // Room for 20,000 calls a second per caller, over the whole run.
    let cap = 20_000 * (2 * o.secs as usize * o.rounds + 2);
    let steady: Vec<_> = (0..2)
        .map(|_| {
            let (host, stop) = (host.clone(), stop.clone());
            std::thread::spawn(move || steady_caller(host, stop, t0, cap))
        })
        .collect();
    let hostile: Vec<_> = (0..2)
        .map(|_| {
            let (host, on, stop, kinds) = (host.clone(), on.clone(), stop.clone(), kinds.clone());
            let calls = o.hostile.clone();
            std::thread::spawn(move || hostile_caller(host, calls, on, stop, kinds))
        })
        .collect();
    // Warm up, then the supervisor's size before any chaos.
    std::thread::sleep(Duration::from_secs(1));
    let rss_start = self_rss();
    let mut rss_peak = rss_start;
    let mut rss_rounds = Vec::new();
    let mut phases = Vec::new();
    let phase = Duration::from_secs(o.secs);
    let sample = |peak: &mut u64, until: Instant| {
        while Instant::now() < until {
            *peak = (*peak).max(self_rss());
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    for r in 0..o.rounds {
        // Hostile calls in hand finish before the steady callers are measured alone.
        if r > 0 {
            std::thread::sleep(Duration::from_millis(500));
        }
        let alone = Instant::now();
        sample(&mut rss_peak, alone + phase);
        let chaos = Instant::now();
        on.store(true, Ordering::Relaxed);
        sample(&mut rss_peak, chaos + phase);
        on.store(false, Ordering::Relaxed);
        let end = Instant::now();
        phases.push((alone, chaos, end));
        rss_rounds.push(self_rss());
        eprintln!(
            "round {}: supervisor RSS {:.1} MiB",
            r + 1,
            mib(*rss_rounds.last().unwrap_or(&0))
        );
    }
    stop.store(true, Ordering::Relaxed);
    let records: Vec<Record> = steady
        .into_iter()
        .flat_map(|t| t.join().expect("steady caller"))
        .collect();
    for t in hostile {
        t.join().expect("hostile caller");
    }
    rt.block_on(host.shutdown(Duration::from_secs(5)));

    let failed = records.iter().filter(|r| r.took_ns == 0).count();
    let (mut p50a, mut p99a, mut p50c, mut p99c, mut ratio) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut n_alone, mut n_chaos) = (0, 0);
    for (alone, chaos, end) in &phases {
        let (mut a, mut c) = (Samples::default(), Samples::default());
        let us = |t: &Instant| (*t - t0).as_micros() as u32;
        let (alone, chaos, end) = (us(alone), us(chaos), us(end));
        for r in records.iter().filter(|r| r.took_ns > 0) {
            let took = Duration::from_nanos(u64::from(r.took_ns));
            if r.start_us >= alone && r.start_us < chaos {
                a.push(took);
            } else if r.start_us >= chaos && r.start_us < end {
                c.push(took);
            }
        }
        n_alone += a.0.len();
        n_chaos += c.0.len();
        p50a.push(a.p50());
        p99a.push(a.p99());
        p50c.push(c.p50());
        p99c.push(c.p99());
        ratio.push(c.p99() / a.p99());
    }
    let hostile_calls: u64 = kinds.lock().map(|k| k.values().sum()).unwrap_or(0);
    let mut t = String::from("| measure | value |\n|---|---|\n");
    t.push_str(&format!(
        "| steady calls (alone / beside chaos) | {n_alone} / {n_chaos}, failed: {failed} |\n"
    ));
    t.push_str(&format!(
        "| steady p50 alone / beside chaos (median of {} rounds) | {:.0} µs / {:.0} µs |\n",
        o.rounds,
        median(&p50a),
        median(&p50c)
    ));
    t.push_str(&format!(
        "| steady p99 alone / beside chaos | {:.0} µs / {:.0} µs |\n",
        median(&p99a),
        median(&p99c)
    ));
    t.push_str(&format!(
        "| p99 beside chaos ÷ p99 alone, median of per-round ratios (min–max) | {:.2}× ({:.2}–{:.2}) |\n",
        median(&ratio),
        ratio.iter().copied().fold(f64::INFINITY, f64::min),
        ratio.iter().copied().fold(0.0, f64::max)
    ));
    t.push_str(&format!("| hostile calls made | {hostile_calls} |\n"));
    t.push_str(&format!(
        "| supervisor RSS after start / after each round / peak | {:.1} MiB / {} / {:.1} MiB |\n",
        mib(rss_start),
        rss_rounds
            .iter()
            .map(|b| format!("{:.1}", mib(*b)))
            .collect::<Vec<_>>()
            .join(", "),
        mib(rss_peak)
    ));
    let mut k = String::from("\n| hostile call | outcome | count |\n|---|---|---|\n");
    for (what, n) in kinds.lock().recover().iter() {
        let (f, outcome) = what.split_once(' ').unwrap_or((what, ""));
        k.push_str(&format!("| `{f}` | {outcome} | {n} |\n"));
    }
    t.push_str(&k);
    print!("{t}");
    if let Some(out) = &o.out {
        std::fs::write(out, &t).expect("write --out");
    }
}
