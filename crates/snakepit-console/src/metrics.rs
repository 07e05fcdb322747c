//! `/metrics`: the Prometheus text format, from `prometheus-client`.
//!
//! Nothing here sits on a call's path inside the pool: calls are counted as the host
//! sees them end ([`CallObserver`]), connector calls from their audit records (the sink
//! the run history already gets, wrapped), runs from the scheduler's runner
//! ([`RunObserver`]), restarts from the workers' event stream, and the gauges (queue
//! depth, live workers, generation, reloads) are read from `Host::status` at scrape
//! time by a [`Collector`].

use std::fmt;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use snakepit::sync::Recover;
use snakepit::{EventKind, RetireReason, WorkerEvent};
use snakepit_connectors::{AuditRecord, Connectors};
use snakepit_host::{CallObserver, Host};
use snakepit_jobs::RunObserver;
use snakepit_state::{RunStatus, Trigger};

type Labels = Vec<(&'static str, String)>;

/// Latency buckets from 100 µs to 60 s (a small call takes about 100 µs; a job step or a
/// slow query minutes).
const LATENCY: [f64; 18] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Scheduler lag buckets, 10 ms to 10 min.
const LAG: [f64; 14] = [
    0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

fn latency() -> Histogram {
    Histogram::new(LATENCY)
}

fn lag() -> Histogram {
    Histogram::new(LAG)
}

type HistogramFamily = Family<Labels, Histogram, fn() -> Histogram>;

/// The serve's metrics. One per serve; cheap to share (`Arc`).
pub struct Metrics {
    registry: Registry,
    calls: Family<Labels, Counter>,
    call_seconds: HistogramFamily,
    restarts: Family<Labels, Counter>,
    host_requests: Family<Labels, Counter>,
    host_request_seconds: HistogramFamily,
    runs: Family<Labels, Counter>,
    scheduler_lag: HistogramFamily,
    /// The host the scrape-time gauges read (set by [`Metrics::watch_host`]).
    host: Arc<Mutex<Weak<Host>>>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Metrics {
    /// Every metric, registered and at zero.
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let calls = Family::<Labels, Counter>::default();
        let call_seconds = HistogramFamily::new_with_constructor(latency);
        let restarts = Family::<Labels, Counter>::default();
        let host_requests = Family::<Labels, Counter>::default();
        let host_request_seconds = HistogramFamily::new_with_constructor(latency);
        let runs = Family::<Labels, Counter>::default();
        let scheduler_lag = HistogramFamily::new_with_constructor(lag);
        registry.register(
            "snakepit_calls",
            "Calls made through the host, by pool and outcome (ok, raised, timeout, crashed, overloaded, cancelled, ...)",
            calls.clone(),
        );
        registry.register(
            "snakepit_call_duration_seconds",
            "Call latency as the host sees it, queueing included, by pool",
            call_seconds.clone(),
        );
        registry.register(
            "snakepit_worker_restarts",
            "Workers replaced, by pool and reason (crashed, spawn_failed, max_calls, rss, timeout, cancelled, protocol)",
            restarts.clone(),
        );
        registry.register(
            "snakepit_host_requests",
            "Connector calls from plugins, by connector, target (query or endpoint) and outcome",
            host_requests.clone(),
        );
        registry.register(
            "snakepit_host_request_duration_seconds",
            "Connector call latency, by connector and target",
            host_request_seconds.clone(),
        );
        registry.register(
            "snakepit_runs",
            "Job runs this node executed to their end, by job, trigger and status",
            runs.clone(),
        );
        registry.register(
            "snakepit_scheduler_lag_seconds",
            "How long after its due time (cron tick, or queueing) a run was claimed, by trigger",
            scheduler_lag.clone(),
        );
        let host = Arc::new(Mutex::new(Weak::new()));
        registry.register_collector(Box::new(HostGauges { host: host.clone() }));
        Arc::new(Metrics {
            registry,
            calls,
            call_seconds,
            restarts,
            host_requests,
            host_request_seconds,
            runs,
            scheduler_lag,
            host,
        })
    }

    /// Reads the pool gauges and reload counters of `host` at each scrape, and counts
    /// its calls from now on.
    pub fn watch_host(self: &Arc<Metrics>, host: &Arc<Host>) {
        *self.host.lock().recover() = Arc::downgrade(host);
        if host.observe_calls(self.clone()).is_err() {
            tracing::warn!("the host's calls are counted by another observer already");
        }
    }

    /// Counts the connector calls of `connectors` from their audit records: the sink
    /// set before (the run history's) is kept and called first.
    pub fn count_connector_calls(self: &Arc<Metrics>, connectors: &Connectors) {
        let before = connectors.audit_sink();
        let metrics = self.clone();
        connectors.set_audit_sink(move |r: &AuditRecord| {
            if let Some(sink) = &before {
                sink.record(r);
            }
            metrics.host_request(r);
        });
    }

    fn host_request(&self, r: &AuditRecord) {
        let target = vec![
            ("connector", r.connector.clone()),
            ("target", r.target.clone()),
        ];
        let mut with_outcome = target.clone();
        with_outcome.push(("outcome", r.outcome.to_string()));
        self.host_requests.get_or_create(&with_outcome).inc();
        self.host_request_seconds
            .get_or_create(&target)
            .observe(r.duration.as_secs_f64());
    }

    /// Counts a worker's replacement (a crash, a failed start, a recycling).
    pub fn worker_event(&self, e: &WorkerEvent) {
        let reason = match &e.kind {
            EventKind::Exited { .. } => "crashed",
            EventKind::SpawnFailed { .. } => "spawn_failed",
            EventKind::Retired { reason, .. } => match reason {
                RetireReason::MaxCalls => "max_calls",
                RetireReason::Rss => "rss",
                RetireReason::Timeout => "timeout",
                RetireReason::Cancelled => "cancelled",
                RetireReason::Protocol => "protocol",
                RetireReason::Shutdown => return,
            },
            EventKind::Ready { .. } | EventKind::Backoff { .. } => return,
        };
        self.restarts
            .get_or_create(&vec![
                ("pool", e.pool.to_string()),
                ("reason", reason.to_owned()),
            ])
            .inc();
    }

    /// The text exposition format (`text/plain; version=0.0.4`).
    pub fn encode(&self) -> Result<String, fmt::Error> {
        let mut out = String::with_capacity(16 * 1024);
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

impl CallObserver for Metrics {
    fn call_ended(&self, pool: &str, outcome: &str, took: Duration) {
        self.calls
            .get_or_create(&vec![
                ("pool", pool.to_owned()),
                ("outcome", outcome.to_owned()),
            ])
            .inc();
        self.call_seconds
            .get_or_create(&vec![("pool", pool.to_owned())])
            .observe(took.as_secs_f64());
    }
}

impl RunObserver for Metrics {
    fn run_claimed(&self, _job: &str, trigger: Trigger, lag: Duration) {
        self.scheduler_lag
            .get_or_create(&vec![("trigger", trigger.as_str().to_owned())])
            .observe(lag.as_secs_f64());
    }

    fn run_ended(&self, job: &str, trigger: Trigger, status: RunStatus, _took: Duration) {
        self.runs
            .get_or_create(&vec![
                ("job", job.to_owned()),
                ("trigger", trigger.as_str().to_owned()),
                ("status", status.as_str().to_owned()),
            ])
            .inc();
    }
}

/// The gauges read from the host at scrape time.
#[derive(Debug)]
struct HostGauges {
    host: Arc<Mutex<Weak<Host>>>,
}

impl Collector for HostGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let host = self.host.lock().recover().upgrade();
        let Some(host) = host else { return Ok(()) };
        let status = host.status();
        let gauge = |encoder: &mut DescriptorEncoder,
                     name: &str,
                     help: &str,
                     values: Vec<(Labels, i64)>|
         -> Result<(), fmt::Error> {
            let mut family = encoder.encode_descriptor(
                name,
                help,
                None,
                prometheus_client::metrics::MetricType::Gauge,
            )?;
            for (labels, v) in values {
                ConstGauge::new(v).encode(family.encode_family(&labels)?)?;
            }
            Ok(())
        };
        let per_pool = |f: &dyn Fn(&snakepit_host::PoolReport) -> usize| {
            status
                .pools
                .iter()
                .map(|p| (vec![("pool", p.name.clone())], f(p) as i64))
                .collect::<Vec<_>>()
        };
        gauge(
            &mut encoder,
            "snakepit_queue_depth",
            "Calls waiting for a worker, by pool (serving generation)",
            per_pool(&|p| p.queued),
        )?;
        gauge(
            &mut encoder,
            "snakepit_workers_live",
            "Workers started and ready, by pool (serving generation)",
            per_pool(&|p| p.live),
        )?;
        gauge(
            &mut encoder,
            "snakepit_workers_failing",
            "Worker slots that keep failing to start, by pool (serving generation)",
            per_pool(&|p| p.failing),
        )?;
        ConstGauge::new(status.generation as i64).encode(encoder.encode_descriptor(
            "snakepit_generation",
            "The serving generation (1 at start, one more per successful reload)",
            None,
            prometheus_client::metrics::MetricType::Gauge,
        )?)?;
        let mut reloads = encoder.encode_descriptor(
            "snakepit_reloads",
            "Reloads since the serve started, by outcome (serving, refused)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (outcome, n) in [
            ("serving", status.reloads),
            ("refused", status.failed_reloads),
        ] {
            ConstCounter::new(n).encode(reloads.encode_family(&vec![("outcome", outcome)])?)?;
        }
        Ok(())
    }
}
