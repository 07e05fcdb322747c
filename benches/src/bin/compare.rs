//! The comparison runner: snakepit against a raw ping-pong with the same Python worker,
//! a Rust echo (the transport floor) and Python's own process pools, in one run.
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin compare [-- --quick] [--rounds N]
//!     [--calls N] [--soak N] [--out FILE]
//! cargo run --release -p snakepit-benches --bin compare -- --profile-pool N [--workers 2] [--fresh]
//! cargo run --release -p snakepit-benches --bin compare -- --profile-raw N [--workers 2] [--shim]
//! cargo run --release -p snakepit-benches --bin compare -- --stickiness
//! ```
//!
//! The machine is small (2 cores) and noisy: every measurement is taken in rounds, the
//! baseline and the candidate interleaved (their order flips every round), and the table
//! reports the median over rounds of each round's figure, and the ratio of the medians.
//! Progress goes to stderr; the markdown table to stdout (and to `--out`).
//!
//! `--profile-pool N` only builds a pool and makes N small calls and prints, per call,
//! the CPU time, run-queue wait, sleeps and preemptions of every thread of this process
//! and of the workers (from /proc schedstat/status); `--profile-raw N` does the same for
//! the raw ping-pong (`--shim`: with the real shim as the worker). Run them under
//! `strace -f`, `perf record` or `taskset -c 0`: see docs/benchmarks.md.

#![allow(clippy::vec_init_then_push)] // the table is built row by row, in order
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use snakepit::{Call, CallError, Pool};
use snakepit_benches::{
    bench_python, call_frame, expect_ok, median, pool_latency, process_stat, python_dir,
    report_sched, self_rss, small, startups, thread_stats, RawPeer, Samples, SchedStat,
};
use tokio::runtime::Runtime;

struct Opts {
    quick: bool,
    rounds: usize,
    calls: usize,
    soak: usize,
    out: Option<PathBuf>,
    profile_pool: Option<usize>,
    profile_raw: Option<usize>,
    workers: usize,
    fresh: bool,
    shim: bool,
    stickiness: bool,
    python: PathBuf,
}

fn parse_opts() -> Opts {
    let mut args = std::env::args().skip(1);
    let mut o = Opts {
        quick: false,
        rounds: 0,
        calls: 0,
        soak: usize::MAX,
        out: None,
        profile_pool: None,
        profile_raw: None,
        workers: 1,
        fresh: false,
        shim: false,
        stickiness: false,
        python: PathBuf::new(),
    };
    let num = |v: Option<String>, what: &str| -> usize {
        v.and_then(|s| s.replace('_', "").parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = num(args.next(), "--rounds"),
            "--calls" => o.calls = num(args.next(), "--calls"),
            "--soak" => o.soak = num(args.next(), "--soak"),
            "--out" => o.out = args.next().map(PathBuf::from),
            "--profile-pool" => o.profile_pool = Some(num(args.next(), "--profile-pool")),
            "--profile-raw" => o.profile_raw = Some(num(args.next(), "--profile-raw")),
            "--workers" => o.workers = num(args.next(), "--workers"),
            "--fresh" => o.fresh = true,
            "--stickiness" => o.stickiness = true,
            "--shim" => o.shim = true,
            "-h" | "--help" => {
                eprintln!(
                    "compare [--quick] [--rounds N] [--calls N] [--soak N] [--out FILE]\n\
                     compare --profile-pool N [--workers W] [--fresh]\n\
                     compare --profile-raw N [--workers W] [--shim]"
                );
                std::process::exit(0);
            }
            other => panic!("unknown option {other}"),
        }
    }
    if o.rounds == 0 {
        o.rounds = if o.quick { 3 } else { 15 };
    }
    if o.calls == 0 {
        o.calls = if o.quick { 1_000 } else { 2_000 };
    }
    if o.soak == usize::MAX {
        o.soak = if o.quick { 100_000 } else { 1_000_000 };
    }
    o.python = bench_python(true);
    o
}

fn current_rt() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// A pool of the benchmark interpreter with benches/python on its path.
fn builder(o: &Opts, workers: usize) -> snakepit::PoolBuilder {
    Pool::builder()
        .python(&o.python)
        .sys_path(python_dir())
        .workers(workers)
        .env_allowlist(["TZ", "LANG", "LC_ALL", "PATH", "SNAKEPIT_SHIM_CODEC"])
}

fn raw_latency(peer: &mut RawPeer, n: usize, first_id: u64) -> Samples {
    let mut s = Samples::with_capacity(n);
    for i in 0..n as u64 {
        let t = Instant::now();
        peer.round_trip(first_id + i).expect("raw round trip");
        s.push(t.elapsed());
    }
    s
}

/// Two callers on two threads: the merged latency samples and calls per second.
fn two_threads<T: Send + 'static>(
    state: [T; 2],
    n: usize,
    each: fn(&mut T, usize) -> Samples,
) -> (Samples, f64, [T; 2]) {
    let barrier = Arc::new(Barrier::new(2));
    let handles: Vec<_> = state
        .into_iter()
        .map(|mut st| {
            let b = barrier.clone();
            std::thread::spawn(move || {
                b.wait();
                let t = Instant::now();
                let s = each(&mut st, n);
                (s, t, Instant::now(), st)
            })
        })
        .collect();
    let mut all = Samples::with_capacity(2 * n);
    let mut start: Option<Instant> = None;
    let mut end: Option<Instant> = None;
    let mut back = Vec::new();
    for h in handles {
        let (s, t0, t1, st) = h.join().expect("caller thread");
        all.0.extend(s.0);
        start = Some(start.map_or(t0, |x| x.min(t0)));
        end = Some(end.map_or(t1, |x| x.max(t1)));
        back.push(st);
    }
    let secs = (end.unwrap() - start.unwrap()).as_secs_f64();
    let back: [T; 2] = back.try_into().ok().expect("two");
    (all, (2 * n) as f64 / secs, back)
}

fn pool_caller(pool: &mut Pool, n: usize) -> Samples {
    current_rt().block_on(pool_latency(pool, n))
}

fn raw_caller(peer: &mut RawPeer, n: usize) -> Samples {
    raw_latency(peer, n, 1)
}

/// Many calls in flight at once (`inflight` tasks), like a `map`: calls per second.
async fn pool_pipelined(pool: &Pool, n: usize, inflight: usize) -> f64 {
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for k in 0..inflight {
        let p = pool.clone();
        let share = n / inflight + usize::from(k < n % inflight);
        set.spawn(async move {
            for _ in 0..share {
                expect_ok(&p, small()).await;
            }
        });
    }
    while set.join_next().await.is_some() {}
    n as f64 / t.elapsed().as_secs_f64()
}

/// Crash recovery: µs from the crashed call's error to the next successful call.
async fn crashes(pool: &Pool, k: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for _ in 0..k {
        expect_ok(pool, small()).await; // a worker that has served: no back-off
        match pool.submit(Call::new("bench_plugin:crash")).await {
            Err(CallError::WorkerCrashed { .. }) => {}
            other => panic!("expected WorkerCrashed, got {other:?}"),
        }
        let t0 = Instant::now();
        expect_ok(pool, small()).await;
        out.push(t0.elapsed().as_secs_f64() * 1e6);
    }
    out
}

async fn pool_rows(pool: &Pool, k: usize) -> (Samples, usize) {
    let mut s = Samples::with_capacity(k);
    let mut len = 0;
    for _ in 0..k {
        let t = Instant::now();
        let v = expect_ok(pool, Call::new("bench_plugin:rows")).await;
        s.push(t.elapsed());
        len = v.as_bytes().len();
    }
    (s, len)
}

fn raw_rows(peer: &mut RawPeer, k: usize, func: &str) -> (Samples, usize) {
    let mut s = Samples::with_capacity(k);
    let mut len = 0;
    let frame = call_frame(0, func);
    for _ in 0..k {
        let t = Instant::now();
        len = peer.call(&frame, 0).expect("raw rows");
        s.push(t.elapsed());
    }
    (s, len)
}

/// Pins a thread (`0`: the calling thread) to `cpus`.
fn set_affinity(tid: i32, cpus: &[usize]) {
    // SAFETY: a zeroed cpu_set_t is valid; CPU_SET writes inside it.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for &c in cpus {
            libc::CPU_SET(c, &mut set);
        }
        libc::sched_setaffinity(tid, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Pins every thread of process `pid` to `cpus`.
fn pin_process(pid: u32, cpus: &[usize]) {
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            if let Ok(tid) = e.file_name().to_string_lossy().parse::<i32>() {
                set_affinity(tid, cpus);
            }
        }
    }
}

fn all_cpus() -> Vec<usize> {
    (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect()
}

/// CPU time of every thread of this process, in ns.
fn process_cpu_ns() -> u64 {
    thread_stats().iter().map(|(_, _, s)| s.cpu_ns).sum()
}

/// Python's pools, measured by benches/python/pypools.py.
fn pypools(o: &Opts) -> BTreeMap<String, f64> {
    let (calls, items) = if o.quick {
        ("400", "4000")
    } else {
        ("1500", "20000")
    };
    let out = std::process::Command::new(&o.python)
        .arg(python_dir().join("pypools.py"))
        .args(["--calls", calls, "--map-items", items])
        .output()
        .expect("run pypools.py");
    assert!(
        out.status.success(),
        "pypools.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("pypools JSON");
    v.as_object()
        .expect("object")
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect()
}

/// Per-metric values, one per round.
#[derive(Default)]
struct Metrics(BTreeMap<&'static str, Vec<f64>>);

impl Metrics {
    fn add(&mut self, k: &'static str, v: f64) {
        self.0.entry(k).or_default().push(v);
    }
    fn extend(&mut self, k: &'static str, v: &[f64]) {
        self.0.entry(k).or_default().extend_from_slice(v);
    }
    /// `num / den`: the median of the per-round ratios when both have one figure per
    /// round (the two were measured side by side, so a round where the machine was slow
    /// for both still gives a fair ratio), else the ratio of the medians.
    fn ratio(&self, num: &str, den: &str) -> f64 {
        match (self.0.get(num), self.0.get(den)) {
            (Some(a), Some(b)) if a.len() == b.len() => {
                let r: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
                median(&r)
            }
            _ => self.med(num) / self.med(den),
        }
    }
    fn med(&self, k: &str) -> f64 {
        self.0.get(k).map_or(f64::NAN, |v| median(v))
    }
    fn spread(&self, k: &str) -> String {
        match self.0.get(k) {
            Some(v) if v.len() > 1 => {
                let lo = v.iter().copied().fold(f64::INFINITY, f64::min);
                let hi = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{} – {}", fmt_num(lo), fmt_num(hi))
            }
            _ => String::new(),
        }
    }
}

fn fmt_num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

fn us(x: f64) -> String {
    if x >= 10_000.0 {
        format!("{:.2} ms", x / 1000.0)
    } else {
        format!("{} µs", fmt_num(x))
    }
}

fn per_s(x: f64) -> String {
    format!("{:.0}/s", x)
}

fn mib(x: f64) -> String {
    format!("{:.2} MiB", x / (1024.0 * 1024.0))
}

enum Target {
    /// ratio must be at most this
    AtMost(f64),
    /// ratio must be at least this
    AtLeast(f64),
    /// the snakepit value itself must be at most this (in the value's unit), with its text
    Abs(f64, &'static str),
    Info,
    Header,
}

struct Row {
    what: String,
    base: String,
    snake: String,
    ratio: f64,
    ratio_text: String,
    target: Target,
    snake_value: f64,
}

impl Row {
    fn verdict(&self) -> (String, String) {
        let miss = |by: f64| format!("no ({:+.0}%)", by * 100.0);
        match self.target {
            Target::AtMost(t) => (
                format!("≤ {t}×"),
                if !self.ratio.is_finite() {
                    "n/a".into()
                } else if self.ratio <= t {
                    "yes".into()
                } else {
                    miss(self.ratio / t - 1.0)
                },
            ),
            Target::AtLeast(t) => (
                format!("≥ {t}×"),
                if !self.ratio.is_finite() {
                    "n/a".into()
                } else if self.ratio >= t {
                    "yes".into()
                } else {
                    miss(self.ratio / t - 1.0)
                },
            ),
            Target::Abs(t, text) => (
                text.into(),
                if !self.snake_value.is_finite() {
                    "n/a".into()
                } else if self.snake_value <= t {
                    "yes".into()
                } else {
                    miss(self.snake_value / t - 1.0)
                },
            ),
            Target::Info => ("(info)".into(), "—".into()),
            Target::Header => (String::new(), String::new()),
        }
    }
}

fn row(what: impl Into<String>, base: String, snake: String, ratio: f64, target: Target) -> Row {
    Row {
        what: what.into(),
        base,
        snake,
        ratio,
        ratio_text: if matches!(target, Target::Header) {
            String::new()
        } else if ratio.is_finite() {
            format!("{ratio:.2}×")
        } else {
            "n/a".into()
        },
        target,
        snake_value: f64::NAN,
    }
}

fn main() {
    let o = parse_opts();
    if o.stickiness {
        return stickiness(&o);
    }
    if let Some(n) = o.profile_pool {
        return profile_pool(&o, n);
    }
    if let Some(n) = o.profile_raw {
        return profile_raw(&o, n);
    }
    let rt = current_rt();
    eprintln!("python: {}", o.python.display());

    // ---------------------------------------------------------------- set-up
    let mut raw1 = RawPeer::python(&o.python, None).expect("raw worker");
    let raw2 = [
        RawPeer::python(&o.python, None).expect("raw worker"),
        RawPeer::python(&o.python, None).expect("raw worker"),
    ];
    let mut raw2 = Some(raw2);
    let mut shim1 = RawPeer::shim(&o.python, None).expect("shim worker");
    let mut shim2 = Some([
        RawPeer::shim(&o.python, None).expect("shim worker"),
        RawPeer::shim(&o.python, None).expect("shim worker"),
    ]);
    let mut echo = RawPeer::rust_echo().expect("echo");
    let (p1, p2, pstd, start_fork, start_exec, crash_fork, crash_exec) = rt.block_on(async {
        std::env::remove_var("SNAKEPIT_SHIM_CODEC");
        let p1 = builder(&o, 1).build().await.expect("pool p1");
        let p2 = builder(&o, 2).build().await.expect("pool p2");
        std::env::set_var("SNAKEPIT_SHIM_CODEC", "stdlib");
        let pstd = builder(&o, 1).build().await.expect("pool stdlib");
        std::env::remove_var("SNAKEPIT_SHIM_CODEC");
        let recycle = |b: snakepit::PoolBuilder| b.max_calls_per_worker(1).max_calls_jitter(0);
        let start_fork = recycle(builder(&o, 1))
            .build()
            .await
            .expect("pool start fork");
        let start_exec = recycle(builder(&o, 1).fresh_interpreters(true))
            .build()
            .await
            .expect("pool start exec");
        let crash_fork = builder(&o, 1).build().await.expect("pool crash fork");
        let crash_exec = builder(&o, 1)
            .fresh_interpreters(true)
            .build()
            .await
            .expect("pool crash exec");
        (p1, p2, pstd, start_fork, start_exec, crash_fork, crash_exec)
    });
    let codec_of = |p: &Pool| -> String {
        rt.block_on(expect_ok(p, Call::new("bench_plugin:codec_name")))
            .decode()
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default()
    };
    let (codec_default, codec_std) = (codec_of(&p1), codec_of(&pstd));
    let pid_of = |p: &Pool| -> u32 {
        rt.block_on(expect_ok(p, Call::new("bench_plugin:pid")))
            .decode()
            .ok()
            .and_then(|v| v.as_i64())
            .unwrap_or(0) as u32
    };
    let (p1_pid, pstd_pid) = (pid_of(&p1), pid_of(&pstd));
    let ncpu = all_cpus().len();
    eprintln!("codecs: default pool = {codec_default}, stdlib pool = {codec_std}");
    // Warm-up: every worker has imported the plugin and built its rows.
    rt.block_on(async {
        for p in [&p1, &p2, &pstd] {
            for _ in 0..200 {
                expect_ok(p, small()).await;
            }
            expect_ok(p, Call::new("bench_plugin:rows")).await;
            expect_ok(p, Call::new("bench_plugin:rows")).await;
        }
    });
    raw_latency(&mut raw1, 200, 1);
    raw_latency(&mut shim1, 200, 1);
    raw_latency(&mut echo, 200, 1);
    raw_rows(&mut shim1, 2, "rows");

    // ---------------------------------------------------------------- rounds
    let mut m = Metrics::default();
    let n = o.calls;
    let rows_k = if o.quick { 10 } else { 15 };
    let (start_k, crash_k) = if o.quick { (4, 4) } else { (6, 6) };
    let mut rows_bytes = (0, 0);
    for round in 0..o.rounds {
        let flip = round % 2 == 1;
        eprintln!("round {}/{}", round + 1, o.rounds);
        // 1 worker latency: raw python, snakepit, rust echo
        let mut one = |m: &mut Metrics, which: u8| match which {
            0 => {
                let before = process_cpu_ns();
                let s = raw_latency(&mut raw1, n, 1);
                m.add(
                    "raw1_cpu",
                    (process_cpu_ns() - before) as f64 / 1000.0 / n as f64,
                );
                m.add("raw1_p50", s.p50());
                m.add("raw1_p99", s.p99());
            }
            1 => {
                let before = process_cpu_ns();
                let s = rt.block_on(pool_latency(&p1, n));
                m.add(
                    "pool1_cpu",
                    (process_cpu_ns() - before) as f64 / 1000.0 / n as f64,
                );
                m.add("pool1_p50", s.p50());
                m.add("pool1_p99", s.p99());
            }
            2 => {
                let s = raw_latency(&mut shim1, n, 1);
                m.add("shim1_p50", s.p50());
                m.add("shim1_p99", s.p99());
            }
            _ => {
                let s = raw_latency(&mut echo, n, 1);
                m.add("echo_p50", s.p50());
                m.add("echo_p99", s.p99());
            }
        };
        for w in if flip { [3, 2, 1, 0] } else { [0, 1, 2, 3] } {
            one(&mut m, w);
        }
        // 2 workers, 2 callers
        for w in if flip { [2, 1, 0] } else { [0, 1, 2] } {
            if w == 0 {
                let (s, rate, back) = two_threads(raw2.take().unwrap(), n, raw_caller);
                raw2 = Some(back);
                m.add("raw2_p50", s.p50());
                m.add("raw2_rate", rate);
            } else if w == 2 {
                let (s, rate, back) = two_threads(shim2.take().unwrap(), n, raw_caller);
                shim2 = Some(back);
                m.add("shim2_p50", s.p50());
                m.add("shim2_rate", rate);
            } else {
                let (s, rate, _) = two_threads([p2.clone(), p2.clone()], n, pool_caller);
                m.add("pool2_p50", s.p50());
                m.add("pool2_rate", rate);
            }
        }
        // 1 worker with the placement fixed: caller and worker on the same CPU, then on
        // two CPUs (the unpinned figures above mix the two, as the scheduler places them)
        if ncpu >= 2 {
            let pins: [(&str, usize); 2] = [("same", 0), ("cross", 1)];
            for (mode, wcpu) in pins {
                set_affinity(0, &[0]);
                let order: [u8; 3] = if flip { [2, 1, 0] } else { [0, 1, 2] };
                for w in order {
                    let (pid, key): (u32, &'static str) = match (w, mode) {
                        (0, "same") => (raw1.pid().unwrap(), "pin_same_raw1"),
                        (0, _) => (raw1.pid().unwrap(), "pin_cross_raw1"),
                        (1, "same") => (p1_pid, "pin_same_pool1"),
                        (1, _) => (p1_pid, "pin_cross_pool1"),
                        (_, "same") => (shim1.pid().unwrap(), "pin_same_shim1"),
                        _ => (shim1.pid().unwrap(), "pin_cross_shim1"),
                    };
                    pin_process(pid, &[wcpu]);
                    let s = match w {
                        0 => raw_latency(&mut raw1, n, 1),
                        1 => rt.block_on(pool_latency(&p1, n)),
                        _ => raw_latency(&mut shim1, n, 1),
                    };
                    m.add(key, s.p50());
                    pin_process(pid, &all_cpus());
                }
            }
            // the codecs, both pools' workers and the caller on one CPU
            for w in if flip { [1, 0] } else { [0, 1] } {
                let (p, pid, key) = if w == 0 {
                    (&p1, p1_pid, "pin_same_msgpack")
                } else {
                    (&pstd, pstd_pid, "pin_same_stdlib")
                };
                pin_process(pid, &[0]);
                let s = rt.block_on(pool_latency(p, n));
                m.add(key, s.p50());
                pin_process(pid, &all_cpus());
            }
            set_affinity(0, &all_cpus());
        }
        // Python's pools, then snakepit as a map (many calls in flight)
        let py = pypools(&o);
        for (k, v) in &py {
            let key: &'static str = Box::leak(format!("py_{k}").into_boxed_str());
            m.add(key, *v);
        }
        m.add(
            "pool2_pipelined",
            rt.block_on(pool_pipelined(&p2, 2 * n, 16)),
        );
        // 10,000 rows: bytes pushed by Python vs a pool call (and Python encoding + push)
        for w in if flip { [3, 2, 1, 0] } else { [0, 1, 2, 3] } {
            match w {
                3 => {
                    let (s, _) = raw_rows(&mut shim1, rows_k, "rows");
                    m.add("rows_shim", s.p50());
                }
                0 => {
                    let (s, len) = raw_rows(&mut raw1, rows_k, "rows_bytes");
                    rows_bytes.0 = len;
                    m.add("rows_raw_bytes", s.p50());
                }
                1 => {
                    let (s, len) = rt.block_on(pool_rows(&p1, rows_k));
                    rows_bytes.1 = len;
                    m.add("rows_pool", s.p50());
                }
                _ => {
                    let (s, _) = raw_rows(&mut raw1, rows_k, "rows");
                    m.add("rows_raw_encode", s.p50());
                }
            }
        }
        // codecs: stdlib vs msgpack pool, small and rows
        for w in if flip { [1, 0] } else { [0, 1] } {
            let (p, small_k, rows_key) = if w == 0 {
                (&p1, "codec_msgpack_p50", "codec_msgpack_rows")
            } else {
                (&pstd, "codec_stdlib_p50", "codec_stdlib_rows")
            };
            let s = rt.block_on(pool_latency(p, n));
            m.add(small_k, s.p50());
            let (r, _) = rt.block_on(pool_rows(p, rows_k.min(10)));
            m.add(rows_key, r.p50());
        }
        // start-up and idle memory: fork-server vs exec
        for w in if flip { [1, 0] } else { [0, 1] } {
            if w == 0 {
                let (t, mem) = rt.block_on(startups(&start_exec, (start_k / 2).max(2)));
                m.extend("start_exec", &t);
                m.extend("mem_exec", &mem);
            } else {
                let (t, mem) = rt.block_on(startups(&start_fork, start_k));
                m.extend("start_fork", &t);
                m.extend("mem_fork", &mem);
            }
        }
        // crash recovery
        for w in if flip { [1, 0] } else { [0, 1] } {
            if w == 0 {
                let v = rt.block_on(crashes(&crash_exec, (crash_k / 2).max(2)));
                m.extend("crash_exec", &v);
            } else {
                let v = rt.block_on(crashes(&crash_fork, crash_k));
                m.extend("crash_fork", &v);
            }
        }
    }

    // ---------------------------------------------------------------- soak
    let mut rss = Vec::new();
    if o.soak > 0 {
        let step = (o.soak / 10).max(1);
        eprintln!("soak: {} calls on 2 workers, RSS every {step}", o.soak);
        rt.block_on(async {
            let mut done = 0;
            while done < o.soak {
                let half = step / 2;
                let (a, b) = (p2.clone(), p2.clone());
                tokio::join!(
                    async move {
                        for _ in 0..half {
                            expect_ok(&a, small()).await;
                        }
                    },
                    async move {
                        for _ in 0..step - half {
                            expect_ok(&b, small()).await;
                        }
                    }
                );
                done += step;
                rss.push((done, self_rss()));
            }
        });
    }

    // ---------------------------------------------------------------- table
    let mut rows = Vec::new();
    rows.push(row(
        "small call p50, 1 worker (vs raw Python ping-pong)",
        us(m.med("raw1_p50")),
        us(m.med("pool1_p50")),
        m.ratio("pool1_p50", "raw1_p50"),
        Target::AtMost(1.25),
    ));
    rows.push(row(
        "↳ same, caller and worker pinned to one CPU",
        us(m.med("pin_same_raw1")),
        us(m.med("pin_same_pool1")),
        m.ratio("pin_same_pool1", "pin_same_raw1"),
        Target::Info,
    ));
    rows.push(row(
        "↳ same, caller and worker pinned to two CPUs",
        us(m.med("pin_cross_raw1")),
        us(m.med("pin_cross_pool1")),
        m.ratio("pin_cross_pool1", "pin_cross_raw1"),
        Target::Info,
    ));
    rows.push(row(
        "small call p99, 1 worker (vs raw Python ping-pong)",
        us(m.med("raw1_p99")),
        us(m.med("pool1_p99")),
        m.ratio("pool1_p99", "raw1_p99"),
        Target::AtMost(2.0),
    ));
    rows.push(row(
        "small call p50, 2 workers busy (vs raw, 2 threads)",
        us(m.med("raw2_p50")),
        us(m.med("pool2_p50")),
        m.ratio("pool2_p50", "raw2_p50"),
        Target::AtMost(1.25),
    ));
    rows.push(row(
        "throughput, 2 workers × 2 callers (vs raw, 2 threads)",
        per_s(m.med("raw2_rate")),
        per_s(m.med("pool2_rate")),
        m.ratio("pool2_rate", "raw2_rate"),
        Target::AtLeast(0.85),
    ));
    rows.push(row(
        "per call vs ProcessPoolExecutor(2).submit().result() p50 (speed-up)",
        us(m.med("py_ppe_submit_p50")),
        us(m.med("pool1_p50")),
        m.ratio("py_ppe_submit_p50", "pool1_p50"),
        Target::AtLeast(8.0),
    ));
    rows.push(row(
        "throughput vs ProcessPoolExecutor(2).map (snakepit: 16 calls in flight, 2 workers)",
        per_s(m.med("py_ppe_map_per_s")),
        per_s(m.med("pool2_pipelined")),
        m.ratio("pool2_pipelined", "py_ppe_map_per_s"),
        Target::AtLeast(1.0),
    ));
    let mut start = row(
        "worker start to ready (Ready.startup): exec → fork-server",
        us(m.med("start_exec")),
        us(m.med("start_fork")),
        m.ratio("start_fork", "start_exec"),
        Target::Abs(5_000.0, "≤ 5 ms"),
    );
    start.snake_value = m.med("start_fork");
    rows.push(start);
    let mut crash = row(
        "crashed worker: crash error → next call served: exec → fork-server",
        us(m.med("crash_exec")),
        us(m.med("crash_fork")),
        m.ratio("crash_fork", "crash_exec"),
        Target::Abs(10_000.0, "≤ 10 ms"),
    );
    crash.snake_value = m.med("crash_fork");
    rows.push(crash);
    let mut mem = row(
        "idle worker private memory (smaps_rollup Private_*): exec → fork-server",
        mib(m.med("mem_exec")),
        mib(m.med("mem_fork")),
        m.ratio("mem_fork", "mem_exec"),
        Target::Abs(3.0 * 1024.0 * 1024.0, "≤ 3 MiB"),
    );
    mem.snake_value = m.med("mem_fork");
    rows.push(mem);
    rows.push(row(
        format!(
            "10,000 rows × 5 fields ({} KB RESULT) p50 (vs the same bytes pushed by Python)",
            rows_bytes.0 / 1000
        ),
        us(m.med("rows_raw_bytes")),
        us(m.med("rows_pool")),
        m.ratio("rows_pool", "rows_raw_bytes"),
        Target::AtMost(1.5),
    ));
    rows.push(row(
        format!("stdlib codec vs msgpack extension, small call p50 (pools: {codec_std} vs {codec_default})"),
        us(m.med("codec_msgpack_p50")),
        us(m.med("codec_stdlib_p50")),
        m.ratio("codec_stdlib_p50", "codec_msgpack_p50"),
        Target::AtMost(1.5),
    ));
    rows.push(row(
        "↳ same, caller and worker pinned to one CPU",
        us(m.med("pin_same_msgpack")),
        us(m.med("pin_same_stdlib")),
        m.ratio("pin_same_stdlib", "pin_same_msgpack"),
        Target::Info,
    ));
    let mut info = Vec::new();
    info.push(row(
        "small call p50 vs Rust echo worker (transport floor)",
        us(m.med("echo_p50")),
        us(m.med("pool1_p50")),
        m.ratio("pool1_p50", "echo_p50"),
        Target::Info,
    ));
    info.push(row(
        "raw Python ping-pong p50 vs Rust echo (the Python side's share)",
        us(m.med("echo_p50")),
        us(m.med("raw1_p50")),
        m.ratio("raw1_p50", "echo_p50"),
        Target::Info,
    ));
    info.push(row(
        "↳ split: shim worker with the raw blocking Rust loop p50 vs raw Python worker (the shim's share)",
        us(m.med("raw1_p50")),
        us(m.med("shim1_p50")),
        m.ratio("shim1_p50", "raw1_p50"),
        Target::Info,
    ));
    info.push(row(
        "↳ split: pool p50 vs the same shim worker with the raw blocking Rust loop (the supervisor's share)",
        us(m.med("shim1_p50")),
        us(m.med("pool1_p50")),
        m.ratio("pool1_p50", "shim1_p50"),
        Target::Info,
    ));
    info.push(row(
        "↳ split, one CPU: shim worker with the raw blocking loop vs raw Python worker (the shim's share)",
        us(m.med("pin_same_raw1")),
        us(m.med("pin_same_shim1")),
        m.ratio("pin_same_shim1", "pin_same_raw1"),
        Target::Info,
    ));
    info.push(row(
        "↳ split, one CPU: pool vs the shim worker with the raw blocking loop (the supervisor's share)",
        us(m.med("pin_same_shim1")),
        us(m.med("pin_same_pool1")),
        m.ratio("pin_same_pool1", "pin_same_shim1"),
        Target::Info,
    ));
    info.push(row(
        "↳ supervisor CPU per small call, all threads of the bench process: pool vs raw loop",
        us(m.med("raw1_cpu")),
        us(m.med("pool1_cpu")),
        m.ratio("pool1_cpu", "raw1_cpu"),
        Target::Info,
    ));
    info.push(row(
        "↳ split: 2 workers, pool vs shim workers with the raw loop: throughput",
        per_s(m.med("shim2_rate")),
        per_s(m.med("pool2_rate")),
        m.ratio("pool2_rate", "shim2_rate"),
        Target::Info,
    ));
    info.push(row(
        "↳ split: 10,000 rows p50, pool vs the shim worker with the raw blocking Rust loop",
        us(m.med("rows_shim")),
        us(m.med("rows_pool")),
        m.ratio("rows_pool", "rows_shim"),
        Target::Info,
    ));
    info.push(row(
        "10,000 rows p50 (vs raw worker encoding + pushing them each call)",
        us(m.med("rows_raw_encode")),
        us(m.med("rows_pool")),
        m.ratio("rows_pool", "rows_raw_encode"),
        Target::Info,
    ));
    info.push(row(
        "stdlib codec vs msgpack extension, 10,000 rows p50",
        us(m.med("codec_msgpack_rows")),
        us(m.med("codec_stdlib_rows")),
        m.ratio("codec_stdlib_rows", "codec_msgpack_rows"),
        Target::Info,
    ));
    info.push(row(
        "per call vs multiprocessing.Pool(2).apply p50 (speed-up)",
        us(m.med("py_mp_apply_p50")),
        us(m.med("pool1_p50")),
        m.ratio("py_mp_apply_p50", "pool1_p50"),
        Target::Info,
    ));
    info.push(row(
        "throughput vs multiprocessing.Pool(2).map (auto chunksize)",
        per_s(m.med("py_mp_map_per_s")),
        per_s(m.med("pool2_pipelined")),
        m.ratio("pool2_pipelined", "py_mp_map_per_s"),
        Target::Info,
    ));
    if let (Some(first), Some(last)) = (rss.first(), rss.last()) {
        let mut soak = row(
            format!(
                "supervisor RSS after {} → {} calls (2 workers)",
                first.0, last.0
            ),
            mib(first.1 as f64),
            mib(last.1 as f64),
            last.1 as f64 / first.1 as f64,
            Target::Abs(1024.0 * 1024.0, "flat: growth ≤ 1 MiB"),
        );
        soak.snake_value = last.1 as f64 - first.1 as f64;
        rows.push(soak);
    }
    rows.push(row(
        "**supporting measurements: where the time goes**",
        String::new(),
        String::new(),
        f64::NAN,
        Target::Header,
    ));
    rows.extend(info);

    let mut out = String::new();
    out.push_str("| what | baseline | snakepit | ratio | target | met? |\n");
    out.push_str("|---|---:|---:|---:|---|---|\n");
    for row in &rows {
        let (t, met) = row.verdict();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            row.what, row.base, row.snake, row.ratio_text, t, met
        ));
    }
    out.push('\n');
    out.push_str(&format!(
        "{} rounds, {} calls per latency measurement per round, baseline and snakepit \
         interleaved (order reversed every other round). Figures: medians over rounds; \
         ratios: medians of the per-round ratios (start-up, memory and crash: medians over \
         all samples, ratio of the medians).\n\n",
        o.rounds, n
    ));
    out.push_str("Per-round spread (min – max of the per-round figures, µs or per second):\n\n");
    for k in m.0.keys() {
        out.push_str(&format!(
            "- `{k}`: median {} ({})\n",
            fmt_num(m.med(k)),
            m.spread(k)
        ));
    }
    if !rss.is_empty() {
        out.push_str("\nSupervisor RSS samples (calls: MiB): ");
        let v: Vec<String> = rss
            .iter()
            .map(|(c, b)| format!("{c}: {:.2}", *b as f64 / 1048576.0))
            .collect();
        out.push_str(&v.join(", "));
        out.push('\n');
    }
    print!("{out}");
    if let Some(path) = &o.out {
        std::fs::write(path, &out).expect("write --out");
    }
    drop((p1, p2, pstd, start_fork, start_exec, crash_fork, crash_exec));
}

/// `--profile-pool N`: build a pool, warm it, make N small calls (one caller per worker,
/// all on this thread's runtime) and print the scheduler figures per call of every thread
/// of this process and of the workers. `--profile-raw N`: the same on the raw ping-pong
/// (one controller thread per worker).
fn profile_pool(o: &Opts, n: usize) {
    let rt = current_rt();
    rt.block_on(async {
        let pool = builder(o, o.workers)
            .fresh_interpreters(o.fresh)
            .build()
            .await
            .expect("pool");
        for _ in 0..100 {
            expect_ok(&pool, small()).await;
        }
        // the workers' pids: ask until every worker answered
        let mut pids = std::collections::BTreeSet::new();
        for _ in 0..1000 {
            if pids.len() == o.workers {
                break;
            }
            let (a, b) = tokio::join!(
                pool.submit(Call::new("bench_plugin:pid")),
                pool.submit(Call::new("bench_plugin:pid"))
            );
            for v in [a, b].into_iter().flatten() {
                if let Some(p) = v.decode().ok().and_then(|v| v.as_i64()) {
                    pids.insert(p as u32);
                }
            }
        }
        eprintln!(
            "ready: pid {}, workers {:?}; {} calls",
            std::process::id(),
            pids,
            n
        );
        let before = thread_stats();
        let wbefore: Vec<_> = pids.iter().map(|p| process_stat(*p)).collect();
        let t = Instant::now();
        let mut set = tokio::task::JoinSet::new();
        for k in 0..o.workers {
            let p = pool.clone();
            let share = n / o.workers + usize::from(k < n % o.workers);
            set.spawn(async move {
                for _ in 0..share {
                    expect_ok(&p, small()).await;
                }
            });
        }
        while set.join_next().await.is_some() {}
        let dt = t.elapsed();
        let after = thread_stats();
        let procs: Vec<_> = pids
            .iter()
            .zip(wbefore)
            .map(|(p, b)| (format!("worker {p}"), b, process_stat(*p)))
            .collect();
        eprintln!(
            "{n} calls in {:.3} s: {:.1} µs per call",
            dt.as_secs_f64(),
            dt.as_secs_f64() * 1e6 / n as f64
        );
        eprint!("{}", report_sched("pool", n, &before, &after, &procs));
        pool.shutdown(Duration::from_secs(2)).await;
    });
}

/// `--stickiness`: two callers on two threads, 2 workers; how often a caller's next call
/// lands on another worker than its previous one (each switch can move a caller/worker
/// pair apart on the CPUs).
fn stickiness(o: &Opts) {
    let rt = current_rt();
    let pool = rt.block_on(builder(o, 2).build()).expect("pool");
    let per = |p: Pool| -> (usize, usize) {
        current_rt().block_on(async move {
            let (mut last, mut switches) = (0i64, 0usize);
            for _ in 0..5000 {
                let pid = expect_ok(&p, Call::new("bench_plugin:pid"))
                    .await
                    .decode()
                    .ok()
                    .and_then(|v| v.as_i64())
                    .unwrap_or(0);
                if last != 0 && pid != last {
                    switches += 1;
                }
                last = pid;
            }
            (switches, 5000)
        })
    };
    let (a, b) = (pool.clone(), pool.clone());
    let h = std::thread::spawn(move || per(a));
    let r2 = per(b);
    let r1 = h.join().unwrap();
    println!(
        "caller 1: {} of {} calls on another worker than its previous call; caller 2: {} of {}",
        r1.0, r1.1, r2.0, r2.1
    );
}

fn profile_raw(o: &Opts, n: usize) {
    let peers: Vec<RawPeer> = (0..o.workers)
        .map(|_| {
            if o.shim {
                RawPeer::shim(&o.python, None).expect("shim worker")
            } else {
                RawPeer::python(&o.python, None).expect("raw worker")
            }
        })
        .collect();
    let pids: Vec<u32> = peers.iter().filter_map(|p| p.pid()).collect();
    let wbefore: Vec<_> = pids.iter().map(|p| process_stat(*p)).collect();
    let t = Instant::now();
    let handles: Vec<_> = peers
        .into_iter()
        .map(|mut p| {
            let share = n / o.workers;
            std::thread::spawn(move || {
                let b = SchedStat::read("/proc/thread-self/schedstat").unwrap_or_default();
                raw_latency(&mut p, share, 1);
                let a = SchedStat::read("/proc/thread-self/schedstat").unwrap_or_default();
                (p, a.minus(b))
            })
        })
        .collect();
    let mut ctl = SchedStat::default();
    let mut peers = Vec::new();
    for h in handles {
        let (p, d) = h.join().unwrap();
        ctl.cpu_ns += d.cpu_ns;
        ctl.wait_ns += d.wait_ns;
        ctl.slices += d.slices;
        ctl.vol += d.vol;
        ctl.invol += d.invol;
        peers.push(p);
    }
    let dt = t.elapsed();
    let mut procs: Vec<_> = vec![("controllers (sum)".to_string(), SchedStat::default(), ctl)];
    procs.extend(
        pids.iter()
            .zip(wbefore)
            .map(|(p, b)| (format!("worker {p}"), b, process_stat(*p))),
    );
    eprintln!(
        "{n} calls in {:.3} s: {:.1} µs per call",
        dt.as_secs_f64(),
        dt.as_secs_f64() * 1e6 / n as f64
    );
    eprint!("{}", report_sched("raw", n, &[], &[], &procs));
    drop(peers);
}
