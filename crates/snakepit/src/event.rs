//! Worker lifecycle events, broadcast to whoever subscribes with [`crate::Pool::events`].

use std::sync::Arc;
use std::time::Duration;

use crate::error::{ExitStatus, SpawnError};

/// Something that happened to one worker of a pool.
#[derive(Debug, Clone)]
pub struct WorkerEvent {
    pub pool: Arc<str>,
    /// The worker slot, `0..workers`.
    pub worker: usize,
    pub generation: u64,
    pub pid: Option<u32>,
    pub kind: EventKind,
}

/// Why a worker was retired or killed on purpose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetireReason {
    /// It served its `max_calls_per_worker`.
    MaxCalls,
    /// Its resident size went over `max_worker_rss`.
    Rss,
    /// A call timed out and the worker did not stop within the grace period.
    Timeout,
    /// A call was cancelled and the worker did not stop within the grace period.
    Cancelled,
    /// It broke the protocol.
    Protocol,
    /// The pool is shutting down.
    Shutdown,
}

/// What happened.
#[derive(Debug, Clone)]
pub enum EventKind {
    /// The process started and said hello; `startup` is spawn to handshake.
    Ready { startup: Duration },
    /// Starting a worker failed.
    SpawnFailed { error: SpawnError },
    /// The worker died on its own.
    Exited {
        status: ExitStatus,
        stderr: Vec<String>,
    },
    /// The supervisor retired or killed it.
    Retired {
        reason: RetireReason,
        status: ExitStatus,
    },
    /// It keeps failing; the next start waits this long.
    Backoff { delay: Duration, failures: u32 },
}
