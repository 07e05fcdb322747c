//! How worker processes come to be: a fresh interpreter per worker (`exec`), or a fork
//! of a per-pool template process that has already imported the shim (fork-server).

use std::sync::Arc;

use nix::unistd::Pid;
use tokio::net::UnixStream;

use crate::error::SpawnError;
use crate::pool::PoolConfig;
use crate::process::{reap_child, FdLineSink, WorkerProcess};

/// Which way a pool starts its workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LaunchMode {
    Exec,
}

/// Starts worker processes for one pool.
pub(crate) enum Launcher {
    Exec(Arc<PoolConfig>),
}

impl Launcher {
    pub(crate) async fn start(
        mode: LaunchMode,
        cfg: Arc<PoolConfig>,
    ) -> Result<Launcher, SpawnError> {
        match mode {
            LaunchMode::Exec => Ok(Launcher::Exec(cfg)),
        }
    }

    /// Starts one worker process (not yet handshaken). Call it from the slot's own
    /// long-lived thread.
    pub(crate) async fn spawn(
        &self,
        worker: usize,
        generation: u64,
        sink: FdLineSink,
    ) -> Result<(WorkerProcess, UnixStream), SpawnError> {
        match self {
            Launcher::Exec(cfg) => WorkerProcess::spawn_exec(cfg, worker, generation, sink),
        }
    }

    /// The raw wait status of a worker that has exited.
    pub(crate) async fn exit_status(&self, pid: Pid) -> Option<i32> {
        match self {
            Launcher::Exec(_) => reap_child(pid),
        }
    }
}
