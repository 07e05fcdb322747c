//! Shared pieces of the snakepit benchmarks: where things are, the benchmark interpreter
//! (a venv under `target/` with the msgpack extension), the raw ping-pong workers (a
//! minimal Python one and a Rust echo thread), statistics and memory readings.
//!
//! The comparison runner is `src/bin/compare.rs`; the criterion benches are in
//! `benches/`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use snakepit::{Call, EventKind, Pool};
use snakepit_proto::{read_frame, FromWorker, RawValue, ToWorker, Value, DEFAULT_FRAME_LIMIT};

/// The number after flag `name` on the command line (`--rounds 5`), else `default`.
pub fn arg(name: &str, default: usize) -> usize {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(|v| {
            v.parse()
                .unwrap_or_else(|_| panic!("{name} needs a number"))
        })
        .unwrap_or(default)
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("benches/ has a parent")
        .to_owned()
}

/// `benches/python/`: the plugin and the helper scripts.
pub fn python_dir() -> PathBuf {
    root().join("benches/python")
}

/// The interpreter the benchmarks use: `$SNAKEPIT_BENCH_PYTHON`, else
/// `target/bench-venv/bin/python` (created with msgpack installed when missing and
/// `create` is set), else `python3`.
pub fn bench_python(create: bool) -> PathBuf {
    if let Some(p) = std::env::var_os("SNAKEPIT_BENCH_PYTHON") {
        return p.into();
    }
    let venv = root().join("target/bench-venv");
    let py = venv.join("bin/python");
    if has_msgpack(&py) {
        return py;
    }
    if create {
        eprintln!("creating {} with msgpack ...", venv.display());
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .is_ok_and(|s| s.success())
            && Command::new(venv.join("bin/pip"))
                .args(["install", "-q", "msgpack"])
                .status()
                .is_ok_and(|s| s.success());
        if ok && has_msgpack(&py) {
            return py;
        }
        eprintln!("could not set up the venv; falling back to python3 (stdlib codec only)");
    }
    "python3".into()
}

fn has_msgpack(py: &Path) -> bool {
    py.exists()
        && Command::new(py)
            .args(["-c", "import msgpack"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// The small call every latency benchmark makes: `bench_plugin:echo(x=1)`.
pub fn small_call_frame(call_id: u64) -> Vec<u8> {
    ToWorker::Call {
        call_id,
        reference: "bench_plugin:echo".into(),
        kwargs: vec![("x".into(), Value::Int(1))],
        context: vec![],
        measure: false,
    }
    .encode()
}

/// A CALL of `bench_plugin:<func>` with no arguments.
pub fn call_frame(call_id: u64, func: &str) -> Vec<u8> {
    ToWorker::Call {
        call_id,
        reference: format!("bench_plugin:{func}"),
        kwargs: vec![],
        context: vec![],
        measure: false,
    }
    .encode()
}

/// The rows `bench_plugin.rows()` returns, as a Rust value (for the codec benches).
pub fn rows_value(n: usize) -> Value {
    Value::List(
        (0..n as i64)
            .map(|i| {
                Value::map([
                    ("id", Value::Int(i)),
                    ("name", Value::Str(format!("customer-{i}"))),
                    ("email", Value::Str(format!("customer{i}@example.com"))),
                    ("balance", Value::Float(i as f64 * 1.25)),
                    ("active", Value::Bool(i % 3 != 0)),
                ])
            })
            .collect(),
    )
}

/// One end of a raw ping-pong: the controller's side of the socket and the peer.
pub struct RawPeer {
    pub sock: UnixStream,
    child: Option<Child>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl RawPeer {
    /// `benches/python/raw_worker.py` on fd 3, with `codec` ("stdlib" forces the stdlib
    /// codec; anything else leaves the shim's choice).
    pub fn python(python: &Path, codec: Option<&str>) -> std::io::Result<RawPeer> {
        let mut cmd = Command::new(python);
        cmd.arg(python_dir().join("raw_worker.py")).arg("3");
        let mut peer = Self::spawn(cmd, codec)?;
        // Wait until it answers (imports done).
        peer.round_trip(0)?;
        Ok(peer)
    }

    /// The real shim worker (python-shim/ from the work tree, started the way the
    /// supervisor's exec launcher starts it) driven by the same blocking Rust loop: the
    /// pool's Python side without the pool.
    pub fn shim(python: &Path, codec: Option<&str>) -> std::io::Result<RawPeer> {
        let mut cmd = Command::new(python);
        cmd.args([
            "-c",
            "import sys; sys.path.append(sys.argv[1]); \
             from snakepit_shim.main import main; main(sys.argv[2:])",
        ])
        .arg(root().join("python-shim"))
        .args(["worker", "--fd", "3", "--protocol"])
        .arg(snakepit_proto::PROTOCOL_VERSION.to_string())
        .arg("--sys-path")
        .arg(python_dir());
        let mut peer = Self::spawn(cmd, codec)?;
        match read_frame(&mut peer.sock, DEFAULT_FRAME_LIMIT) {
            Ok(Some(body)) => match FromWorker::decode(&Bytes::from(body)) {
                Ok(FromWorker::Handshake { .. }) => {}
                other => {
                    return Err(std::io::Error::other(format!(
                        "expected HANDSHAKE: {other:?}"
                    )))
                }
            },
            other => return Err(std::io::Error::other(format!("no HANDSHAKE: {other:?}"))),
        }
        peer.round_trip(0)?;
        Ok(peer)
    }

    fn spawn(mut cmd: Command, codec: Option<&str>) -> std::io::Result<RawPeer> {
        let (ours, theirs) = UnixStream::pair()?;
        let fd = OwnedFd::from(theirs);
        let raw = fd.as_raw_fd();
        cmd.stdin(Stdio::null());
        match codec {
            Some(c) => cmd.env("SNAKEPIT_SHIM_CODEC", c),
            None => cmd.env_remove("SNAKEPIT_SHIM_CODEC"),
        };
        // SAFETY: dup2 is async-signal-safe; the new fd 3 is not close-on-exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::dup2(raw, 3) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn()?;
        drop(fd);
        Ok(RawPeer {
            sock: ours,
            child: Some(child),
            thread: None,
        })
    }

    /// A Rust thread that answers every CALL with a RESULT of `1`: the transport floor.
    pub fn rust_echo() -> std::io::Result<RawPeer> {
        let (ours, mut theirs) = UnixStream::pair()?;
        let thread = std::thread::spawn(move || {
            let one = RawValue::encode(&Value::Int(1));
            while let Ok(Some(body)) = read_frame(&mut theirs, DEFAULT_FRAME_LIMIT) {
                let Ok(ToWorker::Call { call_id, .. }) = ToWorker::decode(&body) else {
                    return;
                };
                let out = FromWorker::Result {
                    call_id,
                    value: one.clone(),
                }
                .encode();
                if theirs.write_all(&out).is_err() {
                    return;
                }
            }
        });
        Ok(RawPeer {
            sock: ours,
            child: None,
            thread: Some(thread),
        })
    }

    /// The Python worker's pid (None for the Rust echo thread).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// One small call: encode the CALL, write it, read and decode the RESULT envelope.
    pub fn round_trip(&mut self, call_id: u64) -> std::io::Result<()> {
        self.call(&small_call_frame(call_id), call_id).map(drop)
    }

    /// Writes `frame`, reads the answer, checks it is the RESULT of `call_id` (0 matches
    /// any); returns the body's length.
    pub fn call(&mut self, frame: &[u8], call_id: u64) -> std::io::Result<usize> {
        self.sock.write_all(frame)?;
        loop {
            let body = read_frame(&mut self.sock, DEFAULT_FRAME_LIMIT)
                .map_err(std::io::Error::other)?
                .ok_or_else(|| std::io::Error::other("raw worker closed its socket"))?;
            let n = body.len();
            match FromWorker::decode(&Bytes::from(body)) {
                // The shim says what the call cost before its answer.
                Ok(FromWorker::Usage { .. }) => {}
                Ok(FromWorker::Result { call_id: id, .. })
                    if id == call_id || call_id == 0 || id == 0 =>
                {
                    return Ok(n)
                }
                other => {
                    return Err(std::io::Error::other(format!(
                        "unexpected answer {other:?}"
                    )))
                }
            }
        }
    }
}

impl Drop for RawPeer {
    fn drop(&mut self) {
        let _ = self.sock.shutdown(std::net::Shutdown::Both);
        if let Some(mut c) = self.child.take() {
            let _ = c.wait();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Latency samples in nanoseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples(pub Vec<u64>);

impl Samples {
    pub fn with_capacity(n: usize) -> Self {
        Samples(Vec::with_capacity(n))
    }
    pub fn push(&mut self, d: Duration) {
        self.0.push(d.as_nanos() as u64);
    }
    /// The `q` quantile (0..=1) in microseconds.
    pub fn quantile_us(&self, q: f64) -> f64 {
        let mut s = self.0.clone();
        s.sort_unstable();
        if s.is_empty() {
            return f64::NAN;
        }
        let i = ((s.len() as f64 * q) as usize).min(s.len() - 1);
        s[i] as f64 / 1000.0
    }
    pub fn p50(&self) -> f64 {
        self.quantile_us(0.5)
    }
    pub fn p99(&self) -> f64 {
        self.quantile_us(0.99)
    }
}

/// The median of some numbers (NaN when there are none).
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

/// Private memory of a process in bytes: `Private_Clean + Private_Dirty +
/// Private_Hugetlb` from `/proc/<pid>/smaps_rollup`.
pub fn private_bytes(pid: u32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
    let mut kb = 0;
    let mut found = false;
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("Private_Clean:")
            .or_else(|| line.strip_prefix("Private_Dirty:"))
            .or_else(|| line.strip_prefix("Private_Hugetlb:"))
        {
            kb += rest
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()?;
            found = true;
        }
    }
    found.then_some(kb * 1024)
}

/// This process's resident set in bytes (`VmRSS`).
pub fn self_rss() -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Runs `f` and returns how long it took.
pub fn timed<T>(f: impl FnOnce() -> T) -> (T, Duration) {
    let t = Instant::now();
    let v = f();
    (v, t.elapsed())
}

/// Reads from a reader until EOF (for draining a child's pipe).
pub fn read_all(mut r: impl Read) -> String {
    let mut s = String::new();
    let _ = r.read_to_string(&mut s);
    s
}

/// Scheduler statistics of one thread or process (`/proc/.../schedstat`): nanoseconds on
/// a CPU, nanoseconds waiting on a run queue, and how many times it was scheduled in.
#[derive(Debug, Clone, Copy, Default)]
pub struct SchedStat {
    pub cpu_ns: u64,
    pub wait_ns: u64,
    pub slices: u64,
    /// voluntary context switches: the times it went to sleep (waits for a wakeup)
    pub vol: u64,
    /// involuntary context switches: preemptions
    pub invol: u64,
}

impl SchedStat {
    /// `path` is a `/proc/.../schedstat`; the `status` beside it gives the switches.
    pub fn read(path: &str) -> Option<SchedStat> {
        let text = std::fs::read_to_string(path).ok()?;
        let mut it = text.split_whitespace().map(|x| x.parse::<u64>().ok());
        let status =
            std::fs::read_to_string(path.replace("schedstat", "status")).unwrap_or_default();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap_or(0)
        };
        Some(SchedStat {
            cpu_ns: it.next()??,
            wait_ns: it.next()??,
            slices: it.next()??,
            vol: field("voluntary_ctxt_switches:"),
            invol: field("nonvoluntary_ctxt_switches:"),
        })
    }
    pub fn minus(self, o: SchedStat) -> SchedStat {
        SchedStat {
            cpu_ns: self.cpu_ns.saturating_sub(o.cpu_ns),
            wait_ns: self.wait_ns.saturating_sub(o.wait_ns),
            slices: self.slices.saturating_sub(o.slices),
            vol: self.vol.saturating_sub(o.vol),
            invol: self.invol.saturating_sub(o.invol),
        }
    }
}

/// Every thread of this process: (tid, name, schedstat).
pub fn thread_stats() -> Vec<(u32, String, SchedStat)> {
    let mut out = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let tid = e.file_name().to_string_lossy().to_string();
            let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                .unwrap_or_default()
                .trim()
                .to_owned();
            if let (Ok(t), Some(s)) = (
                tid.parse::<u32>(),
                SchedStat::read(&format!("/proc/self/task/{tid}/schedstat")),
            ) {
                out.push((t, comm, s));
            }
        }
    }
    out
}

/// A process's schedstat, all its threads together.
pub fn process_stat(pid: u32) -> SchedStat {
    let mut total = SchedStat::default();
    if let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for e in dir.flatten() {
            let tid = e.file_name().to_string_lossy().to_string();
            if let Some(s) = SchedStat::read(&format!("/proc/{pid}/task/{tid}/schedstat")) {
                total.cpu_ns += s.cpu_ns;
                total.wait_ns += s.wait_ns;
                total.slices += s.slices;
                total.vol += s.vol;
                total.invol += s.invol;
            }
        }
    }
    total
}

/// Prints per-call scheduler figures between two snapshots: each thread of this process
/// (grouped by name) and each listed process.
pub fn report_sched(
    label: &str,
    calls: usize,
    before: &[(u32, String, SchedStat)],
    after: &[(u32, String, SchedStat)],
    procs: &[(String, SchedStat, SchedStat)],
) -> String {
    let mut out = format!(
        "{label}: per call over {calls} calls (on-CPU µs, run-queue wait µs, sleeps = voluntary \
         context switches, preemptions)\n"
    );
    let c = calls as f64;
    let per = |s: SchedStat| {
        format!(
            "cpu {:6.2} µs  wait {:6.2} µs  sleeps {:5.2}  preempted {:5.2}",
            s.cpu_ns as f64 / 1000.0 / c,
            s.wait_ns as f64 / 1000.0 / c,
            s.vol as f64 / c,
            s.invol as f64 / c,
        )
    };
    let mut total = SchedStat::default();
    for (tid, name, a) in after {
        let Some((_, _, b)) = before.iter().find(|(t, _, _)| t == tid) else {
            continue;
        };
        let d = a.minus(*b);
        if d.slices == 0 {
            continue;
        }
        total.cpu_ns += d.cpu_ns;
        total.wait_ns += d.wait_ns;
        total.slices += d.slices;
        total.vol += d.vol;
        total.invol += d.invol;
        out.push_str(&format!("  thread {name:<20} {}\n", per(d)));
    }
    out.push_str(&format!("  this process (sum)   {}\n", per(total)));
    for (name, b, a) in procs {
        out.push_str(&format!("  process {name:<19} {}\n", per(a.minus(*b))));
    }
    out
}

/// A small call of the benchmark plugin.
pub fn small() -> Call {
    Call::new("bench_plugin:echo").kwarg("x", 1i64)
}

pub async fn expect_ok(pool: &Pool, call: Call) -> RawValue {
    match pool.submit(call).await {
        Ok(v) => v,
        Err(e) => panic!("call failed: {e}"),
    }
}

pub async fn pool_latency(pool: &Pool, n: usize) -> Samples {
    let mut s = Samples::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        expect_ok(pool, small()).await;
        s.push(t.elapsed());
    }
    s
}

/// Waits for the next Ready event; `(startup, pid)`.
pub async fn next_ready(
    ev: &mut tokio::sync::broadcast::Receiver<snakepit::WorkerEvent>,
) -> Option<(Duration, u32)> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, ev.recv()).await {
            Ok(Ok(e)) => {
                if let EventKind::Ready { startup } = e.kind {
                    return Some((startup, e.pid.unwrap_or(0)));
                }
            }
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(_))) => continue,
            _ => return None,
        }
    }
}

/// Start-to-ready times (µs) and idle private memory (bytes) of `k` recycled workers of a
/// pool built with `max_calls_per_worker(1)`.
pub async fn startups(pool: &Pool, k: usize) -> (Vec<f64>, Vec<f64>) {
    let mut ev = pool.events();
    let (mut times, mut mem) = (Vec::new(), Vec::new());
    for _ in 0..k {
        expect_ok(pool, small()).await; // the worker retires after this call
        let Some((startup, pid)) = next_ready(&mut ev).await else {
            eprintln!("  no Ready event");
            break;
        };
        times.push(startup.as_secs_f64() * 1e6);
        tokio::time::sleep(Duration::from_millis(20)).await; // idle, settled
        if let Some(b) = private_bytes(pid) {
            mem.push(b as f64);
        }
    }
    (times, mem)
}
