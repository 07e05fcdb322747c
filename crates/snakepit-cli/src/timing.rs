//! Where a command's start-up goes: with `-vv` (or `SNAKEPIT_LOG=snakepit::timing=debug`)
//! each phase of `call` and `run` is logged with its milliseconds, from the start of
//! `main` (the time before it, loading the binary, is the wall time minus their sum).

use std::sync::Mutex;
use std::time::Instant;

use snakepit::sync::Recover;

static LAST: Mutex<Option<Instant>> = Mutex::new(None);

/// Starts the clock (at the top of `main`).
pub fn start() {
    *LAST.lock().recover() = Some(Instant::now());
}

/// Logs the time since the previous mark as `phase`.
pub fn mark(phase: &'static str) {
    let now = Instant::now();
    let last = LAST.lock().recover().replace(now).unwrap_or(now);
    let ms = (now - last).as_secs_f64() * 1000.0;
    tracing::debug!(target: "snakepit::timing", phase, ms = format!("{ms:.1}"), "start-up phase");
}
