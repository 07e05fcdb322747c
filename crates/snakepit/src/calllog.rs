//! Where a call's log records go, and how many of them the supervisor keeps.
//!
//! A worker decides how much it logs; the supervisor decides how much of that it keeps.
//! Every record of a call (LOG frames, and lines the worker writes to its stdout and
//! stderr file descriptors) passes through the call's [`CallLog`], which admits at most
//! [`LINES_PER_SEC`] records and [`BYTES_PER_SEC`] bytes (message and exception text) in
//! each one-second window. Past either bound a record is dropped and counted, as is a
//! record that finds the call's bounded log channel full; when the next window opens,
//! and when the call ends, one record from logger `"snakepit"` (level WARNING) says
//! `N log lines dropped`. The worker is not killed: a noisy plugin keeps working, and
//! memory stays bounded whatever it writes.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use snakepit_proto::LogRecord;
use tokio::sync::mpsc;

use crate::sync::Recover;

/// Records admitted per call and second.
pub const LINES_PER_SEC: u32 = 2_000;
/// Bytes (message plus exception text) admitted per call and second.
pub const BYTES_PER_SEC: usize = 1 << 20;

const WINDOW: Duration = Duration::from_secs(1);

/// Where [`Call::logs`](crate::Call::logs) sends a call's records.
///
/// A bounded channel (`mpsc::channel`) is the safe choice: a record that finds it full
/// is dropped and counted, so a consumer slower than the plugin costs at most the
/// channel's capacity. An unbounded channel holds whatever the budget above admits
/// until its consumer reads it.
#[derive(Debug, Clone)]
pub enum LogSink {
    Bounded(mpsc::Sender<LogRecord>),
    Unbounded(mpsc::UnboundedSender<LogRecord>),
}

impl From<mpsc::Sender<LogRecord>> for LogSink {
    fn from(tx: mpsc::Sender<LogRecord>) -> Self {
        LogSink::Bounded(tx)
    }
}

impl From<mpsc::UnboundedSender<LogRecord>> for LogSink {
    fn from(tx: mpsc::UnboundedSender<LogRecord>) -> Self {
        LogSink::Unbounded(tx)
    }
}

impl LogSink {
    /// False when the record was dropped because a bounded channel is full.
    fn send(&self, rec: LogRecord) -> bool {
        match self {
            LogSink::Bounded(tx) => match tx.try_send(rec) {
                Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => true,
                Err(mpsc::error::TrySendError::Full(_)) => false,
            },
            LogSink::Unbounded(tx) => {
                let _ = tx.send(rec);
                true
            }
        }
    }
}

struct Budget {
    window: Instant,
    lines: u32,
    bytes: usize,
    dropped: u64,
}

/// One call's log: its id, its channel and its budget. Shared by the caller's exchange
/// (LOG frames) and the slot's pipe readers (fd output).
pub(crate) struct CallLog {
    pub call_id: u64,
    sink: Option<LogSink>,
    pool: std::sync::Arc<str>,
    worker: usize,
    budget: Mutex<Budget>,
}

impl CallLog {
    pub(crate) fn new(
        call_id: u64,
        sink: Option<LogSink>,
        pool: std::sync::Arc<str>,
        worker: usize,
    ) -> Self {
        CallLog {
            call_id,
            sink,
            pool,
            worker,
            budget: Mutex::new(Budget {
                window: Instant::now(),
                lines: 0,
                bytes: 0,
                dropped: 0,
            }),
        }
    }

    /// Logs `rec` (to `tracing` and the call's channel) if the budget admits it. The
    /// record is tagged with this call, whatever id the worker wrote in it.
    pub(crate) fn forward(&self, mut rec: LogRecord) {
        let size = rec.message.len() + rec.exc_text.as_ref().map_or(0, String::len);
        let (admit, report) = {
            let mut b = self.budget.lock().recover();
            let mut report = 0;
            if b.window.elapsed() >= WINDOW {
                report = std::mem::take(&mut b.dropped);
                b.window = Instant::now();
                b.lines = 0;
                b.bytes = 0;
            }
            let admit = b.lines < LINES_PER_SEC && b.bytes + size <= BYTES_PER_SEC;
            if admit {
                b.lines += 1;
                b.bytes += size;
            } else {
                b.dropped += 1;
            }
            (admit, report)
        };
        self.report(report);
        if admit {
            rec.call_id = Some(self.call_id);
            self.emit(rec);
        }
    }

    /// Reports the records dropped since the last report (the call ended).
    pub(crate) fn finish(&self) {
        let n = std::mem::take(&mut self.budget.lock().recover().dropped);
        self.report(n);
    }

    /// A warning of the supervisor's about this call (logger `"snakepit"`), within the
    /// budget: what a worker provokes, it pays for.
    pub(crate) fn warn(&self, message: String) {
        self.forward(self.own(message));
    }

    fn report(&self, dropped: u64) {
        if dropped == 0 {
            return;
        }
        self.emit(self.own(format!(
            "{dropped} log lines dropped (a call may log {LINES_PER_SEC} lines and {} KiB a second, into a channel that has room)",
            BYTES_PER_SEC >> 10
        )));
    }

    fn own(&self, message: String) -> LogRecord {
        LogRecord {
            call_id: Some(self.call_id),
            level: 30,
            logger: "snakepit".into(),
            message,
            exc_text: None,
            time: now_unix(),
        }
    }

    fn emit(&self, rec: LogRecord) {
        log_record(&rec, &self.pool, self.worker);
        if let Some(sink) = &self.sink {
            if !sink.send(rec) {
                self.budget.lock().recover().dropped += 1;
            }
        }
    }
}

pub(crate) fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Writes a worker's record to `tracing` (target `snakepit::plugin`).
pub(crate) fn log_record(rec: &LogRecord, pool: &str, worker: usize) {
    let (logger, msg, call) = (&rec.logger, &rec.message, rec.call_id);
    let exc = rec.exc_text.as_deref().unwrap_or("");
    macro_rules! ev {
        ($lvl:expr) => {
            tracing::event!(target: "snakepit::plugin", $lvl, pool, worker, call, logger = %logger, exc, "{msg}")
        };
    }
    match rec.level {
        l if l >= 40 => ev!(tracing::Level::ERROR),
        l if l >= 30 => ev!(tracing::Level::WARN),
        l if l >= 20 => ev!(tracing::Level::INFO),
        l if l >= 10 => ev!(tracing::Level::DEBUG),
        _ => ev!(tracing::Level::TRACE),
    }
}

/// The call in hand, for routing the lines a worker writes to its fds.
#[derive(Default)]
pub(crate) struct CurrentCall(Mutex<Option<Arc<CallLog>>>);

impl CurrentCall {
    pub(crate) fn set(&self, v: Option<Arc<CallLog>>) {
        *self.0.lock().recover() = v;
    }

    /// Logs `rec` within the budget of the call in hand (see [`crate::calllog`]);
    /// before the worker's first call, to `tracing` only.
    pub(crate) fn forward(&self, rec: LogRecord, pool: &str, worker: usize) {
        let log = self.0.lock().recover().clone();
        match log {
            Some(log) => log.forward(rec),
            None => log_record(&rec, pool, worker),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(message: &str) -> LogRecord {
        LogRecord {
            call_id: Some(999),
            level: 20,
            logger: "x".into(),
            message: message.into(),
            exc_text: None,
            time: 0.0,
        }
    }

    #[test]
    fn a_flood_is_cut_at_the_budget_and_the_rest_counted() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let log = CallLog::new(7, Some(tx.into()), "p".into(), 0);
        for _ in 0..LINES_PER_SEC + 500 {
            log.forward(rec("x"));
        }
        log.finish();
        let mut n = 0;
        let mut last = None;
        while let Ok(r) = rx.try_recv() {
            assert_eq!(r.call_id, Some(7), "tagged by the supervisor");
            n += 1;
            last = Some(r);
        }
        assert_eq!(n, LINES_PER_SEC as usize + 1);
        let last = last.unwrap();
        assert_eq!(last.logger, "snakepit");
        assert!(
            last.message.starts_with("500 log lines dropped"),
            "{last:?}"
        );
    }

    #[test]
    fn bytes_are_bounded_and_a_full_channel_drops() {
        let (tx, mut rx) = mpsc::channel(2);
        let log = CallLog::new(1, Some(tx.into()), "p".into(), 0);
        log.forward(rec(&"y".repeat(BYTES_PER_SEC + 1))); // over the byte budget alone
        for _ in 0..3 {
            log.forward(rec("z")); // the third finds the channel full
        }
        let got: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
            .map(|r| r.message)
            .collect();
        assert_eq!(got, ["z", "z"]);
        assert_eq!(log.budget.lock().unwrap().dropped, 2);
    }
}
