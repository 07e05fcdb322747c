//! A run's log stream as Server-Sent Events: the lines recorded so far, then each new
//! one as the run history gets it, until the run has ended and every line is sent.
//!
//! The stream reads the history, not the runner: the runner writes each line as it
//! comes (group commit, see `snakepit-jobs`), so a line is in the database a few
//! milliseconds after the plugin logged it, and a run that another node executes
//! (PostgreSQL) streams the same way. It looks for new lines every [`POLL`] while the
//! run goes on. Events:
//! - `lines`: a JSON list of log lines (as `runs show --json` has them, plus `id`); the
//!   event's id is the last line's, so a reconnecting `EventSource` resumes after it;
//! - `status`: the run's status, whenever it changes (the page then reloads the run);
//! - `end`: the run has ended and every line was sent; the stream closes.

use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::stream::{self, Stream};
use snakepit_state::State;

/// How often a stream looks for new lines while its run goes on.
pub const POLL: Duration = Duration::from_millis(200);
/// The most lines in one event.
const BATCH: u32 = 500;

const FINISHED: [&str; 4] = ["succeeded", "failed", "cancelled", "interrupted"];

struct Follow {
    state: State,
    run: String,
    after: i64,
    status: Option<String>,
    done: bool,
}

/// The stream of run `run`'s log lines after line `after`.
pub fn stream(
    state: State,
    run: String,
    after: i64,
) -> Sse<impl Stream<Item = Result<Event, std::convert::Infallible>>> {
    let follow = Follow {
        state,
        run,
        after,
        status: None,
        done: false,
    };
    let events = stream::unfold(follow, |mut f| async move {
        if f.done {
            return None;
        }
        loop {
            // The status first: lines written before a run ended are all read after.
            let status = match f.state.run_status(&f.run).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(run_id = %f.run, error = %e, "live log: cannot read the run");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            let lines = match f.state.logs_after(&f.run, f.after, BATCH).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(run_id = %f.run, error = %e, "live log: cannot read the lines");
                    tokio::time::sleep(POLL).await;
                    continue;
                }
            };
            if let Some(last) = lines.last() {
                f.after = last.id;
                let data = serde_json::to_string(&lines).unwrap_or_else(|_| "[]".into());
                let event = Event::default()
                    .event("lines")
                    .id(f.after.to_string())
                    .data(data);
                return Some((Ok(event), f));
            }
            if status != f.status {
                f.status = status.clone();
                let data = serde_json::to_string(&status).unwrap_or_else(|_| "null".into());
                return Some((Ok(Event::default().event("status").data(data)), f));
            }
            let ended = status.as_deref().is_none_or(|s| FINISHED.contains(&s));
            if ended {
                f.done = true;
                return Some((Ok(Event::default().event("end").data("{}")), f));
            }
            tokio::time::sleep(POLL).await;
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
