//! What every part of a pool needs to know about it, fixed when the pool is built.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use snakepit_proto::PROTOCOL_VERSION;

use crate::host::HostHandler;
use crate::isolation::Confinement;

/// The variables passed to workers (and interpreter probes) by default.
pub const DEFAULT_ENV: &[&str] = &["TZ", "LANG", "LC_ALL", "PATH"];

/// The fd number a worker finds its socket on.
pub(crate) const WORKER_FD: i32 = 3;

/// Everything a worker slot needs to know, fixed when the pool is built.
pub(crate) struct PoolConfig {
    pub name: Arc<str>,
    pub generation: u64,
    pub python: PathBuf,
    pub shim_dir: PathBuf,
    pub sys_path: Vec<PathBuf>,
    pub workers: usize,
    pub call_timeout: Duration,
    pub kill_grace: Duration,
    pub max_calls: Option<u64>,
    pub max_calls_jitter: u64,
    pub max_rss: Option<u64>,
    pub queue_limit: usize,
    pub spawn_timeout: Duration,
    pub env: Vec<(OsString, OsString)>,
    pub frame_limit: usize,
    pub handler: Arc<dyn HostHandler>,
    pub backoff_base: Duration,
    pub backoff_cap: Duration,
    pub confine: Arc<Confinement>,
    /// `pin_workers`: the CPU each slot's worker is pinned to (slot i: the i-th allowed
    /// CPU, round robin); empty when workers float.
    pub cpus: Vec<usize>,
}

impl PoolConfig {
    /// The CPU slot `slot`'s worker is pinned to, if the pool pins its workers.
    pub(crate) fn cpu_of(&self, slot: usize) -> Option<usize> {
        (!self.cpus.is_empty()).then(|| self.cpus[slot % self.cpus.len()])
    }

    /// The shim's command-line options for one worker (after the mode word).
    pub(crate) fn worker_args(&self, worker_id: usize, generation: u64) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--fd".into(),
            WORKER_FD.to_string().into(),
            "--protocol".into(),
            PROTOCOL_VERSION.to_string().into(),
            "--frame-limit".into(),
            self.frame_limit.to_string().into(),
            "--pool".into(),
            (*self.name).into(),
            "--generation".into(),
            generation.to_string().into(),
            "--worker-id".into(),
            worker_id.to_string().into(),
        ];
        for p in &self.sys_path {
            args.push("--sys-path".into());
            args.push(p.into());
        }
        if !self.confine.plan.is_empty() {
            args.push("--confine".into());
            args.push(self.confine.plan.clone().into());
        }
        args
    }
}
