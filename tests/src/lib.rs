//! What the workspace's test suites share (these integration tests, and those of the CLI
//! and the console): the interpreter they run workers with, and waiting for a condition
//! with a deadline rather than a sleep.

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// The interpreter the tests use: `$SNAKEPIT_PYTHON`, else `python3` (`scripts/pythons.sh`
/// runs a few tests with each CPython the machine has).
pub fn python() -> PathBuf {
    std::env::var_os("SNAKEPIT_PYTHON").map_or_else(|| "python3".into(), PathBuf::from)
}

/// The pause between two looks at a condition: 1 ms at first, doubling up to 50 ms, so
/// that a quick condition is seen at once and a costly one (a subprocess, a query) is
/// not run back to back.
fn pauses() -> impl Iterator<Item = Duration> {
    (0..).map(|n: u32| Duration::from_millis(1 << n.min(6)).min(Duration::from_millis(50)))
}

/// Waits for `cond` to hold, up to `deadline`; panics with `what` otherwise.
pub async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    wait_until(what, deadline, || std::future::ready(cond())).await
}

/// [`wait_for`] with a condition that awaits (an HTTP request, a query).
pub async fn wait_until<F, Fut>(what: &str, deadline: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let until = Instant::now() + deadline;
    let mut pauses = pauses();
    while !cond().await {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        tokio::time::sleep(pauses.next().expect("endless")).await;
    }
}

/// [`wait_for`] for a test without a runtime: blocks the thread.
pub fn wait_for_blocking(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = Instant::now() + deadline;
    let mut pauses = pauses();
    while !cond() {
        assert!(Instant::now() < until, "timed out waiting for {what}");
        std::thread::sleep(pauses.next().expect("endless"));
    }
}
