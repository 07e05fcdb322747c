//! What a call cost: the figures a [`Measured`] call carries (see PROTOCOL.md, USAGE,
//! for how the worker measures its part).

use std::time::Duration;

use snakepit_proto::{RawValue, WorkerUsage};

use crate::error::CallError;

/// What one call cost. The worker's part (CPU, peak RSS) is its own measurement; the
/// rest is the supervisor's clock.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CallUsage {
    /// From the CALL frame's write to the answer's read (waiting for a worker excluded).
    pub wall: Duration,
    /// CPU time of the worker process (every thread) from the end of its previous call
    /// to the end of this one: the plugin's code, the shim's work on the call's frames,
    /// and whatever the plugin left running in the background meanwhile. Children count
    /// once reaped.
    pub cpu_user: Duration,
    pub cpu_sys: Duration,
    /// The worker's resident high-water mark at the call's end, in bytes: the largest
    /// the worker has been so far (not reset per call), so a call's own peak is at most
    /// this.
    pub peak_rss: u64,
    /// Host requests the call made (connector calls, `echo`, refused ones included).
    pub host_requests: u32,
    /// Their durations summed, each from its read to its answer's write (requests made
    /// concurrently from async code overlap, so this can exceed `wall`).
    pub host_time: Duration,
}

impl CallUsage {
    pub(crate) fn new(
        wall: Duration,
        worker: Option<WorkerUsage>,
        host_requests: u32,
        host_time: Duration,
    ) -> Self {
        let w = worker.unwrap_or_default();
        CallUsage {
            wall,
            cpu_user: seconds(w.cpu_user),
            cpu_sys: seconds(w.cpu_sys),
            peak_rss: w.max_rss_kib.saturating_mul(1024),
            host_requests,
            host_time,
        }
    }

    /// User and system CPU together.
    pub fn cpu(&self) -> Duration {
        self.cpu_user + self.cpu_sys
    }

    /// Adds another call's figures (several attempts of one job step): times and counts
    /// add up, the peak is the larger.
    pub fn add(&mut self, other: &CallUsage) {
        self.wall += other.wall;
        self.cpu_user += other.cpu_user;
        self.cpu_sys += other.cpu_sys;
        self.peak_rss = self.peak_rss.max(other.peak_rss);
        self.host_requests = self.host_requests.saturating_add(other.host_requests);
        self.host_time += other.host_time;
    }
}

/// A worker's figure in seconds (a difference of two readings: never below zero, or not
/// a number, unless the worker lies), to the microsecond.
fn seconds(s: f64) -> Duration {
    Duration::from_micros((s * 1e6).round().clamp(0.0, 1e15) as u64)
}

/// A call's outcome with what it cost. `usage` is `None` when no worker answered the
/// call (a timeout, a crash, `Overloaded`, `ShutDown`, a bad reference refused before
/// any worker saw it): its figures are unknown.
#[derive(Debug)]
pub struct Measured {
    pub result: Result<RawValue, CallError>,
    pub usage: Option<CallUsage>,
}

impl Measured {
    pub(crate) fn unmeasured(result: Result<RawValue, CallError>) -> Self {
        Measured {
            result,
            usage: None,
        }
    }
}
