//! Helpers shared by the integration tests.

use std::path::PathBuf;
use std::time::Duration;

use snakepit::{Pool, PoolBuilder};

/// `tests/plugins`, put on the workers' sys.path.
pub fn plugins_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("plugins")
}

/// The interpreter the tests use: `$SNAKEPIT_PYTHON`, else `python3`.
pub fn python() -> PathBuf {
    std::env::var_os("SNAKEPIT_PYTHON").map_or_else(|| "python3".into(), PathBuf::from)
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

/// Waits for `cond` to hold, polling, up to `deadline`; panics with `what` otherwise.
pub async fn wait_for(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let until = tokio::time::Instant::now() + deadline;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < until,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
