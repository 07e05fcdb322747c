//! What an embedder learns of the runs as they happen, besides the run history: the
//! metrics of `snakepit serve`'s console count runs and scheduler lag through it.

use std::time::Duration;

use snakepit_state::{RunStatus, Trigger};

/// Told of each run a [`crate::Runner`] claims and ends. Called on the runner's task:
/// do not block.
pub trait RunObserver: Send + Sync + 'static {
    /// A queued run was claimed; `lag` is how long after its due time (its cron tick,
    /// or the time it was queued) this was.
    fn run_claimed(&self, job: &str, trigger: Trigger, lag: Duration);
    /// A run this runner executed ended with `status` after `took`.
    fn run_ended(&self, job: &str, trigger: Trigger, status: RunStatus, took: Duration);
}
