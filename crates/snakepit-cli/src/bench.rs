//! `snakepit bench REF`: many calls through the pool; latency percentiles and rate.

use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;
use snakepit::{Call, CallError, Map};

use crate::apps::Apps;
use crate::call::{fail, json_map};
use crate::error::CliError;
use crate::output::outln;

pub struct Options {
    pub calls: u64,
    pub concurrency: Option<usize>,
    pub workers: Option<usize>,
    pub json: bool,
}

/// The `--json` summary (README, "From the command line").
#[derive(Debug, Default, Serialize)]
struct Summary {
    calls: u64,
    ok: u64,
    errors: Errors,
    p50_us: u64,
    p99_us: u64,
    calls_per_sec: f64,
    workers_restarted: u64,
    /// The CPU time (user + system) in their workers of the measured calls (one in
    /// [`MEASURE_EVERY`]), percentiles.
    cpu_p50_us: u64,
    cpu_p99_us: u64,
    /// How many calls were measured.
    measured_calls: u64,
    /// The largest worker resident high-water mark a measured call reported.
    peak_rss_bytes: u64,
}

/// One call in this many is measured (`Pool::submit_measured`): enough samples for the
/// CPU percentiles, too few to move the latency ones (a measured call costs its worker
/// a `getrusage` or two).
const MEASURE_EVERY: u64 = 16;

/// What one caller thread saw.
#[derive(Default)]
struct Seen {
    lat: Vec<u32>,
    cpu: Vec<u32>,
    peak_rss: u64,
    errors: Errors,
}

/// Microseconds, saturated to fit the sample vectors.
fn us(d: Duration) -> u32 {
    d.as_micros().min(u32::MAX as u128) as u32
}

#[derive(Debug, Default, Serialize)]
struct Errors {
    raised: u64,
    timeout: u64,
    crashed: u64,
    overloaded: u64,
    cancelled: u64,
}

impl Errors {
    fn count(&mut self, e: &CallError) {
        match e.kind() {
            "raised" | "reference" => self.raised += 1,
            "timeout" => self.timeout += 1,
            "crashed" => self.crashed += 1,
            "overloaded" => self.overloaded += 1,
            _ => self.cancelled += 1,
        }
    }

    fn total(&self) -> u64 {
        self.raised + self.timeout + self.crashed + self.overloaded + self.cancelled
    }
}

fn percentile(sorted: &[u32], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i] as u64
}

pub async fn run(
    apps: &Apps,
    reference: &str,
    kwargs: Option<&str>,
    opts: Options,
) -> Result<ExitCode, CliError> {
    let kwargs: Arc<Map> = Arc::new(json_map("--kwargs", kwargs)?);
    let mut builder = apps.pool_builder();
    if let Some(w) = opts.workers {
        builder = builder.workers(w);
    }
    // A bench keeps every call it makes: the queue must hold them all.
    let concurrency = opts
        .concurrency
        .or(opts.workers)
        .or(apps.runtime().workers)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let pool = builder
        .queue_limit(concurrency.max(1024))
        .pin_workers(true)
        .build()
        .await
        .map_err(|e| apps.build_error(e))?;
    // Load the plugin once: a bad reference is an error, not ten thousand of them.
    if let Err(e) = pool
        .submit(Call::new(reference).kwargs((*kwargs).clone()))
        .await
    {
        if matches!(e, CallError::BadReference { .. }) {
            return Ok(ExitCode::from(fail(reference, &(&e).into(), opts.json)));
        }
    }
    let restarts_before = pool.status().restarts;
    let bar = ProgressBar::new(opts.calls);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {pos}/{len} calls [{bar:30}] {per_sec} eta {eta}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let next = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    // Each caller runs on an OS thread of its own with a single-threaded runtime: the
    // caller then waits on its worker's socket directly, one wakeup per call (see the
    // dispatch notes in ARCHITECTURE.md); a shared multi-threaded runtime adds hand-offs.
    // Caller i is pinned to the CPU of worker i, which the pool hands it first: a call
    // then wakes nobody on another CPU (docs/benchmarks.md, "CPU placement").
    let mut tasks = Vec::with_capacity(concurrency);
    for i in 0..concurrency.max(1) {
        let cpu = pool.worker_cpu(i);
        let (pool, next, kwargs, bar, reference) = (
            pool.clone(),
            next.clone(),
            kwargs.clone(),
            bar.clone(),
            reference.to_owned(),
        );
        let calls = opts.calls;
        tasks.push(std::thread::spawn(move || {
            if let Some(cpu) = cpu {
                let mut set = nix::sched::CpuSet::new();
                if set.set(cpu).is_ok() {
                    // Best effort: a refused pin leaves the thread where it was.
                    let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &set);
                }
            }
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            Ok::<_, std::io::Error>(rt.block_on(async move {
                let mut seen = Seen::default();
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= calls {
                        break;
                    }
                    let t = Instant::now();
                    let call = Call::new(reference.as_str()).kwargs((*kwargs).clone());
                    let result = if n % MEASURE_EVERY == 0 {
                        let measured = pool.submit_measured(&call).await;
                        if let Some(u) = &measured.usage {
                            seen.cpu.push(us(u.cpu()));
                            seen.peak_rss = seen.peak_rss.max(u.peak_rss);
                        }
                        measured.result
                    } else {
                        pool.submit_ref(&call).await
                    };
                    let elapsed = t.elapsed();
                    match result {
                        Ok(_) => seen.lat.push(us(elapsed)),
                        Err(e) => seen.errors.count(&e),
                    }
                    bar.inc(1);
                }
                seen
            }))
        }));
    }
    let mut lat = Vec::with_capacity(opts.calls as usize);
    let mut cpu = Vec::with_capacity(opts.calls as usize);
    let mut peak_rss = 0;
    let mut errors = Errors::default();
    for t in tasks {
        let Seen {
            lat: l,
            cpu: c,
            peak_rss: p,
            errors: e,
        } = tokio::task::block_in_place(|| t.join())
            .map_err(|_| CliError::Pool("a bench thread panicked".into()))?
            .map_err(|e| {
                CliError::Pool(format!("a bench thread could not start its runtime: {e}"))
            })?;
        lat.extend(l);
        cpu.extend(c);
        peak_rss = peak_rss.max(p);
        errors.raised += e.raised;
        errors.timeout += e.timeout;
        errors.crashed += e.crashed;
        errors.overloaded += e.overloaded;
        errors.cancelled += e.cancelled;
    }
    let elapsed = started.elapsed();
    bar.finish_and_clear();
    let workers_restarted = pool.status().restarts - restarts_before;
    pool.shutdown(Duration::from_secs(5)).await;
    lat.sort_unstable();
    cpu.sort_unstable();
    let s = Summary {
        calls: opts.calls,
        ok: lat.len() as u64,
        p50_us: percentile(&lat, 0.50),
        p99_us: percentile(&lat, 0.99),
        calls_per_sec: ((lat.len() as u64 + errors.total()) as f64 / elapsed.as_secs_f64() * 10.0)
            .round()
            / 10.0,
        errors,
        workers_restarted,
        cpu_p50_us: percentile(&cpu, 0.50),
        cpu_p99_us: percentile(&cpu, 0.99),
        measured_calls: cpu.len() as u64,
        peak_rss_bytes: peak_rss,
    };
    let accounted = s.ok + s.errors.total() == s.calls;
    if opts.json {
        outln!(
            "{}",
            serde_json::to_string(&s).map_err(|e| CliError::Pool(e.to_string()))?
        );
    } else {
        outln!(
            "{reference}: {} calls, {} ok, {} errors ({} raised, {} timeout, {} crashed, {} overloaded, {} cancelled)",
            s.calls, s.ok, s.errors.total(), s.errors.raised, s.errors.timeout, s.errors.crashed, s.errors.overloaded, s.errors.cancelled
        );
        outln!(
            "latency p50 {} µs, p99 {} µs; {} calls/s; {} worker{} restarted (recycled by max_calls_per_worker / max_worker_rss, or replaced after a crash)",
            s.p50_us, s.p99_us, s.calls_per_sec, s.workers_restarted, if s.workers_restarted == 1 { "" } else { "s" }
        );
        outln!(
            "worker CPU per call p50 {} µs, p99 {} µs (of {} measured calls, one in {MEASURE_EVERY}); peak worker RSS {:.1} MiB",
            s.cpu_p50_us,
            s.cpu_p99_us,
            s.measured_calls,
            s.peak_rss_bytes as f64 / f64::from(1u32 << 20)
        );
    }
    Ok(if accounted {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn percentiles_use_nearest_rank() {
        let v: Vec<u32> = (1..=100).collect();
        assert_eq!((percentile(&v, 0.5), percentile(&v, 0.99)), (50, 99));
        assert_eq!(percentile(&[], 0.5), 0);
        assert_eq!(percentile(&[7], 0.99), 7);
    }
}
