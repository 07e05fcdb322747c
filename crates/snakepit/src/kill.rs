//! Killing a worker: the process and its process group, by pid.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

/// SIGKILLs a worker and its process group. Both: a worker may leave its group (it is
/// free to call `setpgid`), and its group may hold what it started.
pub(crate) fn kill_worker(pid: Pid) {
    let _ = nix::sys::signal::kill(pid, Signal::SIGKILL);
    let _ = killpg(pid, Signal::SIGKILL);
}
