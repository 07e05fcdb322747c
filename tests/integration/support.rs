//! Helpers shared by the integration tests.

use std::path::{Path, PathBuf};
use std::time::Duration;

use snakepit::{Call, Pool, PoolBuilder, WorkerEvent};
use tokio::sync::broadcast::{self, error::RecvError};
use tokio::time::Instant;

pub use snakepit_tests::{python, wait_for};

/// `tests/plugins`, put on the workers' sys.path (`$SNAKEPIT_TEST_PLUGINS` when the
/// tests run from a copy, as `scripts/unprivileged.sh` runs them).
pub fn plugins_dir() -> PathBuf {
    std::env::var_os("SNAKEPIT_TEST_PLUGINS").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins"),
        PathBuf::from,
    )
}

/// A builder with the fixture plugins on sys.path and test-friendly timeouts.
pub fn builder() -> PoolBuilder {
    Pool::builder()
        .python(python())
        .sys_path(plugins_dir())
        .workers(1)
        .call_timeout(Duration::from_secs(20))
        .kill_grace(Duration::from_millis(500))
}

/// Runs an async test body once per way of starting workers: from the fork-server
/// template (the default) and as fresh interpreters (`exec`). The body is a function
/// `async fn(PoolBuilder)` in the enclosing module.
macro_rules! both_launchers {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn fork_server() {
                super::$name(crate::support::builder()).await
            }
            #[tokio::test]
            async fn exec() {
                super::$name(crate::support::builder().fresh_interpreters(true)).await
            }
        }
    )*};
}
pub(crate) use both_launchers;

/// The next event that satisfies `pred`, within `deadline`; panics with `what` otherwise.
pub async fn next_event(
    rx: &mut broadcast::Receiver<WorkerEvent>,
    what: &str,
    deadline: Duration,
    mut pred: impl FnMut(&WorkerEvent) -> bool,
) -> WorkerEvent {
    let until = Instant::now() + deadline;
    loop {
        match tokio::time::timeout_at(until, rx.recv()).await {
            Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
            Ok(Ok(ev)) if pred(&ev) => return ev,
            Ok(Ok(_)) | Ok(Err(RecvError::Lagged(_))) => continue,
            Ok(Err(RecvError::Closed)) => panic!("event stream closed waiting for {what}"),
        }
    }
}

/// How long a test waits for a worker event.
pub const EVENT_WAIT: Duration = Duration::from_secs(10);

/// Waits for the next `Retired` event and checks that it retired `pid` for `reason`.
pub async fn expect_retired(
    rx: &mut broadcast::Receiver<WorkerEvent>,
    pid: u32,
    reason: snakepit::RetireReason,
) {
    let what = format!("Retired{{{reason:?}}}");
    let ev = next_event(rx, &what, EVENT_WAIT, |e| {
        matches!(e.kind, snakepit::EventKind::Retired { .. })
    })
    .await;
    assert_eq!(ev.pid, Some(pid), "{ev:?}");
    assert!(
        matches!(ev.kind, snakepit::EventKind::Retired { reason: r, .. } if r == reason),
        "expected {what}: {ev:?}"
    );
}

/// The pid of the worker that serves the next call (`fx.basic:pid`).
pub async fn worker_pid(pool: &Pool) -> u32 {
    let v = pool
        .submit(Call::new("fx.basic:pid"))
        .await
        .expect("fx.basic:pid")
        .decode()
        .expect("decodable pid");
    v.as_i64().expect("an int pid") as u32
}

/// True when no live process has this pid (none at all, or a zombie awaiting its reaper).
pub fn process_gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_none_or(|state| state == "Z" || state == "X"),
    }
}

/// Waits until the process `pid` is gone; panics naming `what` otherwise.
pub async fn wait_gone(what: &str, pid: u32, deadline: Duration) {
    wait_for(&format!("{what} (pid {pid}) to be gone"), deadline, || {
        process_gone(pid)
    })
    .await;
}

/// Waits for a file that a plugin writes, and returns its contents.
pub async fn read_file_when_there(path: &Path, deadline: Duration) -> String {
    wait_for(&format!("{} to appear", path.display()), deadline, || {
        path.exists()
    })
    .await;
    std::fs::read_to_string(path).expect("readable file")
}

/// Waits for a file that holds a pid.
pub async fn read_pid_file(path: &Path, deadline: Duration) -> u32 {
    read_file_when_there(path, deadline)
        .await
        .trim()
        .parse()
        .expect("a pid in the file")
}

/// Live processes (not zombies) whose command line contains `needle`: the workers and
/// fork-server template of a pool with a unique name (forked workers keep the template's
/// command line, which carries `--pool NAME`).
pub fn processes_with(needle: &str) -> Vec<u32> {
    let mut found = Vec::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if cmdline.contains(needle) && !process_gone(pid) {
            found.push(pid);
        }
    }
    found
}

/// Waits until no live process has `name` in its command line; panics listing them.
pub async fn wait_no_processes_with(name: &str, deadline: Duration) {
    let until = Instant::now() + deadline;
    loop {
        let left = processes_with(name);
        if left.is_empty() {
            return;
        }
        if Instant::now() >= until {
            let shown: Vec<String> = left
                .iter()
                .map(|pid| {
                    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
                    let mode = if cmd.contains(" forkserver ") {
                        "fork-server template"
                    } else {
                        "worker"
                    };
                    format!("{pid} ({mode})")
                })
                .collect();
            panic!("processes of pool {name} still running after {deadline:?}: {shown:?}");
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Kills leftover processes on drop, so that a failing test does not leak a `sleep 300`.
/// Each pid comes with a piece of its command line, checked first: a pid that was freed
/// and reused meanwhile belongs to somebody else.
pub struct KillOnDrop(pub Vec<(u32, &'static str)>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for &(pid, needle) in &self.0 {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !process_gone(pid) && String::from_utf8_lossy(&cmdline).contains(needle) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// A child process that is killed and reaped on drop unless it was waited for.
pub struct ChildGuard(pub Option<std::process::Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A unique name for a pool, so that its processes can be found by command line.
pub fn unique_name(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "{prefix}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}
