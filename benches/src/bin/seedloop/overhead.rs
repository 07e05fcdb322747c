//! The parts on what snakepit adds to a call: the host request against a raw ping-pong,
//! `snakepit bench` against raw ping-pong pairs, and the fixed costs of `snakepit call`
//! and `snakepit run`. `bench` and `fixed-costs` need `target/release/snakepit`
//! (`cargo build --release -p snakepit-cli`).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use snakepit::{Call, Pool, Value};
use snakepit_benches::{bench_python, median, python_dir, root, RawPeer, Samples};

use crate::Target;

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

/// The release CLI, which `bench` and `fixed-costs` run.
fn cli() -> PathBuf {
    let exe = root().join("target/release/snakepit");
    assert!(
        exe.exists(),
        "build the CLI first: cargo build --release -p snakepit-cli"
    );
    exe
}

/// The `echo` host method mid-call (`bench_connectors:echo_loop`, timed in the plugin)
/// against a raw Rust→Python ping-pong (`RawPeer`, timed in Rust).
pub struct HostRequest {
    pool: Pool,
    peer: RawPeer,
    calls: usize,
    next: u64,
    target: Target,
}

impl HostRequest {
    pub async fn start(calls: usize) -> HostRequest {
        let python = bench_python(true);
        let pool = Pool::builder()
            .python(&python)
            .sys_path(python_dir())
            .workers(1)
            .build()
            .await
            .unwrap();
        HostRequest {
            pool,
            peer: RawPeer::python(&python, None).unwrap(),
            calls,
            next: 1_000_000,
            target: Target::new(
                "host request `echo` mid-call, p50 (vs raw ping-pong)",
                "µs",
                Some((true, 1.25)),
            ),
        }
    }

    async fn echo(&self) -> Samples {
        let call = Call::new("bench_connectors:echo_loop")
            .kwarg("n", self.calls as i64)
            .timeout(Duration::from_secs(120));
        samples(self.pool.submit(call).await.unwrap().decode().unwrap())
    }

    fn raw(&mut self) -> Samples {
        let mut s = Samples::with_capacity(self.calls);
        for _ in 0..self.calls {
            self.next += 1;
            let t = Instant::now();
            self.peer.round_trip(self.next).unwrap();
            s.push(t.elapsed());
        }
        s
    }

    pub async fn round(&mut self, round: usize, counted: bool) -> String {
        let (e, r) = if round % 2 == 1 {
            let r = self.raw();
            (self.echo().await, r)
        } else {
            let e = self.echo().await;
            (e, self.raw())
        };
        if counted {
            self.target.push(e.p50(), r.p50());
        }
        format!("echo {:.1} µs, raw {:.1} µs", e.p50(), r.p50())
    }

    pub fn report(&self) -> Vec<Target> {
        vec![self.target.clone()]
    }

    pub async fn stop(self) {
        self.pool.shutdown(Duration::from_secs(2)).await;
    }
}

/// `snakepit bench` (`triv:ping`, 1 worker at concurrency 1 and 2 workers at
/// concurrency 2, callers and workers pinned in pairs) against one and two raw ping-pong
/// pairs (a Rust thread each, pinned like them).
pub struct Bench {
    exe: PathBuf,
    python: PathBuf,
    _dir: tempfile::TempDir,
    apps: PathBuf,
    /// Long enough that a start-up hiccup of the CLI does not weigh (≈ 1 s each).
    calls: usize,
    workers2: usize,
    p50_1: Target,
    tput_1: Target,
    p50_2: Target,
    tput_2: Target,
}

impl Bench {
    pub fn start(calls: usize) -> Bench {
        let python = bench_python(true);
        let dir = tempfile::tempdir().unwrap();
        let apps = trivial_install(dir.path(), &python);
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Bench {
            exe: cli(),
            python,
            _dir: dir,
            apps,
            calls: calls * 20,
            workers2: 2.min(cpus),
            p50_1: Target::new(
                "`snakepit bench`, 1 worker: p50 (vs 1 raw pair)",
                "µs",
                Some((true, 1.25)),
            ),
            tput_1: Target::new(
                "`snakepit bench`, 1 worker: calls/s (vs 1 raw pair)",
                "/s",
                None,
            ),
            p50_2: Target::new(
                "`snakepit bench`, 2 workers: p50 (vs 2 raw pairs)",
                "µs",
                Some((true, 1.25)),
            ),
            tput_2: Target::new(
                "`snakepit bench`, 2 workers: calls/s (vs 2 raw pairs)",
                "/s",
                Some((false, 0.85)),
            ),
        }
    }

    pub fn round(&mut self, round: usize, counted: bool) -> String {
        // (snakepit, raw) for 1 and 2 workers, the order flipped every round.
        let both = |workers: usize| {
            let cli = || cli_bench(&self.exe, &self.apps, workers, self.calls);
            let pairs = || raw_pairs(&self.python, workers, self.calls);
            if round % 2 == 1 {
                let c = cli();
                (c, pairs())
            } else {
                let r = pairs();
                (cli(), r)
            }
        };
        let (cli1, raw1) = both(1);
        let (cli2, raw2) = both(self.workers2);
        if counted {
            self.p50_1.push(cli1.0, raw1.0);
            self.tput_1.push(cli1.1, raw1.1);
            self.p50_2.push(cli2.0, raw2.0);
            self.tput_2.push(cli2.1, raw2.1);
        }
        format!(
            "1w {:.0} µs {:.0}/s, raw {:.0} µs {:.0}/s; 2w {:.0} µs {:.0}/s, raw {:.0} µs {:.0}/s",
            cli1.0, cli1.1, raw1.0, raw1.1, cli2.0, cli2.1, raw2.0, raw2.1
        )
    }

    pub fn report(&self) -> Vec<Target> {
        vec![
            self.p50_1.clone(),
            self.tput_1.clone(),
            self.p50_2.clone(),
            self.tput_2.clone(),
        ]
    }
}

/// The wall time of `snakepit call` of a trivial function and of `snakepit run` of a
/// one-step job (the median of 5 of each per round), against 100 ms.
pub struct FixedCosts {
    exe: PathBuf,
    _dir: tempfile::TempDir,
    apps: PathBuf,
    call: Target,
    run: Target,
}

impl FixedCosts {
    pub fn start() -> FixedCosts {
        let dir = tempfile::tempdir().unwrap();
        let apps = trivial_install(dir.path(), &bench_python(true));
        FixedCosts {
            exe: cli(),
            _dir: dir,
            apps,
            call: Target::new(
                "`snakepit call` of a trivial function, wall (vs 100 ms)",
                "ms",
                Some((true, 1.0)),
            ),
            run: Target::new(
                "`snakepit run` of a one-step job, wall (vs 100 ms)",
                "ms",
                Some((true, 1.0)),
            ),
        }
    }

    pub fn round(&mut self, counted: bool) -> String {
        let c: Vec<f64> = (0..5)
            .map(|_| wall(&self.exe, &self.apps, &["call", "triv:ping"]))
            .collect();
        let j: Vec<f64> = (0..5)
            .map(|_| wall(&self.exe, &self.apps, &["run", "trivial"]))
            .collect();
        if counted {
            self.call.push(median(&c), 100.0);
            self.run.push(median(&j), 100.0);
        }
        format!("call {:.0} ms, run {:.0} ms", median(&c), median(&j))
    }

    pub fn report(&self) -> Vec<Target> {
        vec![self.call.clone(), self.run.clone()]
    }
}
