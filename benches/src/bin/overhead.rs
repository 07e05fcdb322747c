//! What snakepit adds to a plugin's loop, against what a user would have without it, in
//! one run of interleaved rounds (issue 13):
//!
//! - **host request**: the built-in `echo` host method from a plugin's loop, mid-call
//!   (`bench_connectors:echo_loop`, timed in the plugin), against a raw Rust→Python
//!   ping-pong (`RawPeer`, timed in Rust). Target: ≤ 1.25×.
//! - **`snakepit bench`**: the CLI's p50 and throughput (`triv:ping`, 1 worker at
//!   concurrency 1, and 2 workers at concurrency 2; callers and workers pinned in pairs)
//!   against one and two raw ping-pong pairs (a Rust thread each, pinned like them).
//!   Targets: p50 ≤ 1.25× the raw pair's, 2-worker throughput ≥ 0.85× the two pairs'.
//! - **fixed costs**: the wall time of `snakepit call` of a trivial function and of
//!   `snakepit run` of a one-step job (median of the round's runs); target ≤ 100 ms each.
//!
//! ```text
//! cargo run --release -p snakepit-benches --bin overhead [-- --rounds N] [--calls N]
//! ```
//!
//! Needs `target/release/snakepit` (`cargo build --release -p snakepit-cli`). Each
//! figure is the median over rounds; ratios are medians of the per-round ratios.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snakepit::{Call, Pool, Value};
use snakepit_benches::{arg, bench_python, median, python_dir, root, RawPeer, Samples};

fn pin_thread(cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set).unwrap();
}

fn pin_process(pid: u32, cpu: usize) {
    let mut set = nix::sched::CpuSet::new();
    set.set(cpu).unwrap();
    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(pid as i32), &set);
}

/// `pairs` raw ping-pong pairs, pair i (Rust thread and Python process) on CPU i:
/// (p50 µs of pair 0, calls per second of all).
fn raw_pairs(python: &Path, pairs: usize, calls: usize) -> (f64, f64) {
    let threads: Vec<_> = (0..pairs)
        .map(|i| {
            let python = python.to_owned();
            std::thread::spawn(move || {
                pin_thread(i);
                let mut peer = RawPeer::python(&python, None).unwrap();
                pin_process(peer.pid().unwrap(), i);
                for k in 0..200 {
                    peer.round_trip(k).unwrap();
                }
                let mut s = Samples::with_capacity(calls);
                let t0 = Instant::now();
                for k in 0..calls as u64 {
                    let t = Instant::now();
                    peer.round_trip(1000 + k).unwrap();
                    s.push(t.elapsed());
                }
                (s.p50(), t0.elapsed())
            })
        })
        .collect();
    let results: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let busiest = results.iter().map(|r| r.1).max().unwrap();
    (results[0].0, (pairs * calls) as f64 / busiest.as_secs_f64())
}

/// `snakepit bench` through the CLI: (p50 µs, calls per second).
fn cli_bench(exe: &Path, apps: &Path, workers: usize, calls: usize) -> (f64, f64) {
    let out = Command::new(exe)
        .args(["--apps"])
        .arg(apps)
        .args(["--json", "bench", "triv:ping", "--calls"])
        .arg(calls.to_string())
        .args([
            "--workers",
            &workers.to_string(),
            "--concurrency",
            &workers.to_string(),
        ])
        .stderr(Stdio::null())
        .output()
        .expect("snakepit bench");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "snakepit bench printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    });
    (
        v["p50_us"].as_f64().unwrap(),
        v["calls_per_sec"].as_f64().unwrap(),
    )
}

/// Wall milliseconds of one CLI command.
fn wall(exe: &Path, apps: &Path, args: &[&str]) -> f64 {
    let t = Instant::now();
    let st = Command::new(exe)
        .arg("--apps")
        .arg(apps)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("snakepit");
    assert!(st.success(), "snakepit {args:?} failed");
    t.elapsed().as_secs_f64() * 1000.0
}

/// A trivial install: `triv:ping`, `triv:step`, and a job `trivial` of one step.
fn trivial_install(dir: &Path, python: &Path) -> PathBuf {
    let apps = dir.join("apps");
    let pkg = apps.join("plugins/triv");
    std::fs::create_dir_all(&pkg).unwrap();
    std::fs::write(
        apps.join("app.toml"),
        format!(
            "[runtime]\npython = {:?}\nworkers = 1\n",
            python.display().to_string()
        ),
    )
    .unwrap();
    std::fs::write(
        pkg.join("__init__.py"),
        "def ping():\n    return 1\n\n\ndef step(**ctx):\n    return {\"ok\": True}\n",
    )
    .unwrap();
    std::fs::write(
        pkg.join("jobs.toml"),
        "[[jobs]]\nname = \"trivial\"\n\n[[jobs.steps]]\nname = \"one\"\ntype = \"python\"\ncallable = \"triv:step\"\n",
    )
    .unwrap();
    apps
}

fn samples(v: Value) -> Samples {
    let Value::List(items) = v else { panic!("{v}") };
    let mut s = Samples::with_capacity(items.len());
    for i in items {
        s.push(Duration::from_nanos(i.as_i64().unwrap() as u64));
    }
    s
}

struct Row {
    what: &'static str,
    ours: Vec<f64>,
    base: Vec<f64>,
    unit: &'static str,
    target: &'static str,
    /// true: ours/base must be at most the target ratio; false: at least.
    at_most: Option<(bool, f64)>,
}

impl Row {
    fn new(
        what: &'static str,
        unit: &'static str,
        target: &'static str,
        at_most: Option<(bool, f64)>,
    ) -> Row {
        Row {
            what,
            ours: vec![],
            base: vec![],
            unit,
            target,
            at_most,
        }
    }
    fn print(&self) {
        let ratios: Vec<f64> = self
            .ours
            .iter()
            .zip(&self.base)
            .map(|(o, b)| o / b)
            .collect();
        let (o, b, r) = (median(&self.ours), median(&self.base), median(&ratios));
        let met = match self.at_most {
            Some((true, t)) => {
                if r <= t {
                    "yes"
                } else {
                    "**no**"
                }
            }
            Some((false, t)) => {
                if r >= t {
                    "yes"
                } else {
                    "**no**"
                }
            }
            None => "—",
        };
        println!(
            "| {} | {b:.1} {u} | {o:.1} {u} | {r:.2}× | {} | {met} |",
            self.what,
            self.target,
            u = self.unit
        );
    }
}

fn main() {
    let rounds = arg("--rounds", 9);
    let calls = arg("--calls", 5000);
    let python = bench_python(true);
    let exe = root().join("target/release/snakepit");
    assert!(
        exe.exists(),
        "build the CLI first: cargo build --release -p snakepit-cli"
    );
    let dir = tempfile::tempdir().unwrap();
    let apps = trivial_install(dir.path(), &python);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(async {
        Pool::builder()
            .python(&python)
            .sys_path(python_dir())
            .workers(1)
            .build()
            .await
            .unwrap()
    });
    let mut peer = RawPeer::python(&python, None).unwrap();
    let echo = |n: usize| -> Samples {
        rt.block_on(async {
            let call = Call::new("bench_connectors:echo_loop")
                .kwarg("n", n as i64)
                .timeout(Duration::from_secs(120));
            samples(pool.submit(call).await.unwrap().decode().unwrap())
        })
    };
    echo(500);
    for k in 0..500 {
        peer.round_trip(k).unwrap();
    }
    let mut host = Row::new(
        "host request `echo` mid-call (vs raw ping-pong)",
        "µs",
        "≤ 1.25×",
        Some((true, 1.25)),
    );
    let mut p50_1 = Row::new(
        "`snakepit bench`, 1 worker: p50 (vs 1 raw pair)",
        "µs",
        "≤ 1.25×",
        Some((true, 1.25)),
    );
    let mut tput_1 = Row::new(
        "`snakepit bench`, 1 worker: calls/s (vs 1 raw pair)",
        "/s",
        "(info)",
        None,
    );
    let mut p50_2 = Row::new(
        "`snakepit bench`, 2 workers: p50 (vs 2 raw pairs)",
        "µs",
        "≤ 1.25×",
        Some((true, 1.25)),
    );
    let mut tput_2 = Row::new(
        "`snakepit bench`, 2 workers: calls/s (vs 2 raw pairs)",
        "/s",
        "≥ 0.85×",
        Some((false, 0.85)),
    );
    let mut call = Row::new(
        "`snakepit call` of a trivial function, wall (vs 100 ms)",
        "ms",
        "≤ 1.00×",
        Some((true, 1.0)),
    );
    let mut run = Row::new(
        "`snakepit run` of a one-step job, wall (vs 100 ms)",
        "ms",
        "≤ 1.00×",
        Some((true, 1.0)),
    );
    let mut next = 1_000_000u64;
    for round in 0..rounds {
        let flip = round % 2 == 1;
        // host request vs ping-pong
        let mut raw = |peer: &mut RawPeer| {
            let mut s = Samples::with_capacity(calls);
            for _ in 0..calls {
                next += 1;
                let t = Instant::now();
                peer.round_trip(next).unwrap();
                s.push(t.elapsed());
            }
            s
        };
        let (e, r) = if flip {
            let r = raw(&mut peer);
            (echo(calls), r)
        } else {
            let e = echo(calls);
            (e, raw(&mut peer))
        };
        host.ours.push(e.p50());
        host.base.push(r.p50());
        // CLI bench vs raw pairs
        // Long enough that a start-up hiccup of the CLI does not weigh (≈ 1 s each).
        let bench_calls = calls * 20;
        // Pairs of (snakepit, raw) for 1 and 2 workers, the order flipped every round.
        let both = |workers: usize| {
            let cli = || cli_bench(&exe, &apps, workers, bench_calls);
            let pairs = || raw_pairs(&python, workers, bench_calls);
            if flip {
                let c = cli();
                (c, pairs())
            } else {
                let r = pairs();
                (cli(), r)
            }
        };
        let (cli1, raw1) = both(1);
        let (cli2, raw2) = both(2.min(cpus));
        p50_1.ours.push(cli1.0);
        p50_1.base.push(raw1.0);
        tput_1.ours.push(cli1.1);
        tput_1.base.push(raw1.1);
        p50_2.ours.push(cli2.0);
        p50_2.base.push(raw2.0);
        tput_2.ours.push(cli2.1);
        tput_2.base.push(raw2.1);
        // fixed costs: the median of 5 of each
        let c: Vec<f64> = (0..5)
            .map(|_| wall(&exe, &apps, &["call", "triv:ping"]))
            .collect();
        let j: Vec<f64> = (0..5)
            .map(|_| wall(&exe, &apps, &["run", "trivial"]))
            .collect();
        call.ours.push(median(&c));
        call.base.push(100.0);
        run.ours.push(median(&j));
        run.base.push(100.0);
        eprintln!(
            "round {}/{rounds}: echo {:.1} raw {:.1} µs; bench 1w {:.0} µs {:.0}/s, raw {:.0} µs {:.0}/s; 2w {:.0} µs {:.0}/s, raw {:.0} µs {:.0}/s; call {:.0} ms, run {:.0} ms",
            round + 1, e.p50(), r.p50(), cli1.0, cli1.1, raw1.0, raw1.1, cli2.0, cli2.1, raw2.0, raw2.1,
            call.ours.last().unwrap(), run.ours.last().unwrap()
        );
    }
    rt.block_on(pool.shutdown(Duration::from_secs(2)));
    println!("| what | baseline | snakepit | ratio | target | met? |");
    println!("|---|---:|---:|---:|---|---|");
    for row in [&host, &p50_1, &tput_1, &p50_2, &tput_2, &call, &run] {
        row.print();
    }
}
