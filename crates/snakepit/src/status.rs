//! Snapshots of a pool's health: [`PoolStatus`] and its slots' [`WorkerStatus`].

use std::time::Duration;

use crate::isolation::Enforcement;

/// What one worker slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerState {
    /// Its worker is being started.
    Starting,
    /// Its worker is ready and waiting for a call.
    Idle,
    /// Its worker is in a call (or being cancelled or retired).
    Busy,
    /// Its workers keep failing; it waits before the next start.
    Backoff,
    /// The pool stopped it.
    Stopped,
}

impl WorkerState {
    /// `"starting"`, `"idle"`, `"busy"`, `"backoff"` or `"stopped"`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Starting => "starting",
            WorkerState::Idle => "idle",
            WorkerState::Busy => "busy",
            WorkerState::Backoff => "backoff",
            WorkerState::Stopped => "stopped",
        }
    }
}

/// A snapshot of one worker slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerStatus {
    /// The slot, `0..workers`.
    pub slot: usize,
    pub state: WorkerState,
    /// The live worker's pid.
    pub pid: Option<u32>,
    /// Calls the live worker has finished.
    pub calls: u64,
    /// The live worker's resident size in bytes.
    pub rss: Option<u64>,
    /// How long the live worker has been ready.
    pub uptime: Option<Duration>,
    /// Workers this slot replaced since the pool started.
    pub restarts: u64,
}

/// A snapshot of a pool's health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub name: String,
    pub generation: u64,
    pub workers: usize,
    /// Workers started and ready (idle or busy).
    pub live: usize,
    /// Slots whose worker keeps failing to start or dying young.
    pub failing: usize,
    /// Workers replaced since the pool started.
    pub restarts: u64,
    /// Calls waiting for a worker.
    pub queued: usize,
    /// One entry per worker slot, in slot order.
    pub slots: Vec<WorkerStatus>,
    /// What confines the workers.
    pub isolation: Enforcement,
}
