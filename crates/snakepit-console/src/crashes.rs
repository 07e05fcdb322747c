//! The workers' event stream, read once for the console: each replacement counted in
//! the metrics, and the latest crashes (a worker that died on its own, one that could
//! not start, one killed for a timeout or a protocol error) kept with their stderr tail
//! for the pools page.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use serde::Serialize;
use snakepit::sync::Recover;
use snakepit::{EventKind, RetireReason, WorkerEvent};
use tokio::sync::broadcast::error::RecvError;

use crate::metrics::Metrics;

/// How many crashes the pools page shows.
pub const KEPT: usize = 20;

/// One crash.
#[derive(Debug, Clone, Serialize)]
pub struct Crash {
    /// RFC 3339, UTC.
    pub time: String,
    pub pool: String,
    pub worker: usize,
    pub generation: u64,
    pub pid: Option<u32>,
    /// `exit status 1`, `killed by signal 9`, `timeout`, `could not start: …`.
    pub what: String,
    /// The last lines the worker wrote on stderr.
    pub stderr: Vec<String>,
}

/// The latest crashes, newest first.
#[derive(Debug, Clone, Default)]
pub struct Crashes(Arc<Mutex<VecDeque<Crash>>>);

impl Crashes {
    pub fn list(&self) -> Vec<Crash> {
        self.0.lock().recover().iter().cloned().collect()
    }

    fn record(&self, e: &WorkerEvent) {
        let (what, stderr) = match &e.kind {
            EventKind::Exited { status, stderr } => (status.to_string(), stderr.clone()),
            EventKind::SpawnFailed { error } => (format!("could not start: {error}"), vec![]),
            EventKind::Retired {
                reason: reason @ (RetireReason::Timeout | RetireReason::Protocol),
                status,
            } => {
                let why = match reason {
                    RetireReason::Timeout => "killed after a call timed out",
                    _ => "killed for breaking the protocol",
                };
                (format!("{why} ({status})"), vec![])
            }
            _ => return,
        };
        let crash = Crash {
            time: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            pool: e.pool.to_string(),
            worker: e.worker,
            generation: e.generation,
            pid: e.pid,
            what,
            stderr,
        };
        let mut kept = self.0.lock().recover();
        kept.push_front(crash);
        kept.truncate(KEPT);
    }

    /// Reads `events` until the host is gone: metrics and crashes.
    pub async fn follow(
        self,
        mut events: tokio::sync::broadcast::Receiver<WorkerEvent>,
        metrics: Arc<Metrics>,
    ) {
        loop {
            match events.recv().await {
                Ok(e) => {
                    metrics.worker_event(&e);
                    self.record(&e);
                }
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the console fell behind the worker events")
                }
                Err(RecvError::Closed) => return,
            }
        }
    }
}
