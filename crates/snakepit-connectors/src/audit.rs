//! The audit log of connector calls (README, "Connectors"): who used which connector for what, how
//! long it took and how it ended; never parameter values.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use snakepit::sync::Recover;

use crate::{Caller, Connectors};

/// How a connector call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// It ran (an API call answered with a status below 400).
    Ok,
    /// The package's grants do not allow it.
    Denied,
    /// A `connector.before_query` hook vetoed it.
    Vetoed,
    /// It failed: bad parameters, an unknown name, the database or the network refused.
    Failed,
    /// An API call answered with this status (>= 400).
    HttpError(u16),
    /// A transaction committed.
    Committed,
    /// A transaction was rolled back: by the plugin, or because its call ended first.
    RolledBack,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Outcome::Ok => f.write_str("ok"),
            Outcome::Denied => f.write_str("denied"),
            Outcome::Vetoed => f.write_str("vetoed"),
            Outcome::Failed => f.write_str("failed"),
            Outcome::HttpError(s) => write!(f, "http {s}"),
            Outcome::Committed => f.write_str("committed"),
            Outcome::RolledBack => f.write_str("rolled back"),
        }
    }
}

/// One audited connector call: a named query, an API call, or a whole transaction
/// (target `"transaction"`, rows summed over its statements, duration from begin to end).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// When it started.
    pub time: SystemTime,
    /// The plugin package (first dotted part of the call's reference).
    pub package: String,
    /// The call, as the supervisor knows it (the worker's call in hand).
    pub call_id: u64,
    pub run_id: Option<Arc<str>>,
    pub connector: String,
    /// The query or endpoint name, or `"transaction"`.
    pub target: String,
    /// Rows read or affected (None for API calls and calls that did not run).
    pub rows: Option<u64>,
    pub duration: Duration,
    pub outcome: Outcome,
}

/// Where audit records go besides `tracing` (target `snakepit::audit`): the embedder's
/// store (the run history). Called on the connector call's task: do not block; queue.
pub trait AuditSink: Send + Sync + 'static {
    fn record(&self, record: &AuditRecord);
}

impl<F: Fn(&AuditRecord) + Send + Sync + 'static> AuditSink for F {
    fn record(&self, record: &AuditRecord) {
        self(record)
    }
}

/// Writes `r` to tracing.
pub(crate) fn trace(r: &AuditRecord) {
    let time = r
        .time
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    tracing::info!(
        target: "snakepit::audit",
        time,
        package = %r.package,
        call_id = r.call_id,
        run_id = r.run_id.as_deref(),
        connector = %r.connector,
        target = %r.target,
        rows = r.rows,
        duration_us = r.duration.as_micros() as u64,
        outcome = %r.outcome,
        "connector call"
    );
}

impl Connectors {
    /// Sends every audit record to `sink` too (besides `tracing`), replacing the sink
    /// set before.
    pub fn set_audit_sink(&self, sink: impl AuditSink) {
        *self.inner.sink.write().recover() = Some(Arc::new(sink));
    }

    /// The sink set last, to wrap: a second consumer of the records (metrics) calls it
    /// and sets itself.
    pub fn audit_sink(&self) -> Option<Arc<dyn AuditSink>> {
        self.inner.sink.read().recover().clone()
    }

    pub(crate) fn audit(
        &self,
        who: &Caller,
        connector: &str,
        target: &str,
        rows: Option<u64>,
        start: (SystemTime, Instant),
        outcome: Outcome,
    ) {
        let record = AuditRecord {
            time: start.0,
            package: who.package.clone(),
            call_id: who.call_id,
            run_id: who.run_id.clone(),
            connector: connector.to_owned(),
            target: target.to_owned(),
            rows,
            duration: start.1.elapsed(),
            outcome,
        };
        trace(&record);
        let sink = self.inner.sink.read().recover().clone();
        if let Some(sink) = sink {
            sink.record(&record);
        }
    }
}
