//! Several nodes from the command line: `snakepit run JOB --enqueue [--wait]` queues a
//! run that any serve node claims (and follows it to its end), `snakepit status
//! --cluster` lists the nodes that share the state.

use std::process::ExitCode;
use std::time::Duration;

use chrono::Utc;
use snakepit_host::control::{Client, ControlError, Reply, Request};
use snakepit_jobs::{enqueue_for_any_node, RunEvent, RunRequest};
use snakepit_state::{RunStatus, State, Trigger};
use tokio::sync::mpsc;

use crate::apps::Apps;
use crate::error::CliError;
use crate::output::{errln, outln};
use crate::run::{
    checked_jobs, exit_code, open_state, os_user, print_record, progress, run_error, state_error,
    stop_requested, Options,
};

/// How often `--wait` reads the run's new log lines and status.
const FOLLOW_EVERY: Duration = Duration::from_millis(100);

/// `snakepit run JOB --enqueue [--wait]`: queues the run for any node and prints its
/// id; with `wait`, follows it instead (its log lines on stderr as they are written,
/// its record on stdout at the end, `run`'s exit code). On SQLite the serve of this
/// apps dir must be running: it is asked to look at once, and runs it.
pub async fn enqueue(apps: Apps, opts: Options, wait: bool) -> Result<ExitCode, CliError> {
    let jobs = checked_jobs(&apps, &opts)?;
    let state = open_state(&apps).await?;
    let serve = if state.is_shared() {
        None
    } else {
        let client = Client::connect(&apps.dir).await.map_err(|e| {
            let why = match e {
                ControlError::NotRunning { .. } => "none is running".to_owned(),
                e => e.to_string(),
            };
            CliError::Usage(format!(
                "--enqueue queues the run for a running `snakepit serve`, and on SQLite \
                 ([runtime] state in {}) only the serve of this apps dir can run it: {why}; \
                 start `snakepit serve`, run the job here without --enqueue, or share a \
                 PostgreSQL state between nodes ([runtime] state = \"postgres://…\")",
                apps.dir.join("app.toml").display()
            ))
        })?;
        Some(client)
    };
    let user = opts.user.clone().unwrap_or_else(os_user);
    let req = RunRequest {
        job: opts.job.clone(),
        trigger: Trigger::Manual,
        scheduled_for: Utc::now(),
        params: opts.params.clone(),
        session_user: user.clone(),
    };
    let id = enqueue_for_any_node(&state, &jobs, req, Utc::now())
        .await
        .map_err(run_error)?;
    // PostgreSQL: the insert notified every node. SQLite: tell the serve.
    if let Some(mut client) = serve {
        match client.ask(&Request::Wake).await? {
            Reply::Woken => {}
            other => {
                return Err(CliError::Pool(format!(
                    "run {id} is queued, but the serve did not take the wake-up: {other:?}"
                )))
            }
        }
    }
    if !wait {
        if opts.json {
            outln!("{}", serde_json::json!({ "run_id": id }));
        } else {
            outln!("{id}");
        }
        return Ok(ExitCode::SUCCESS);
    }
    if !opts.quiet {
        errln!("snakepit: queued run {id} of {} for any node", opts.job);
    }
    let (events, rx) = mpsc::channel(1024);
    let printer = tokio::spawn(progress(rx, user, opts.quiet));
    let followed = tokio::select! {
        r = follow(&state, &id, events) => Some(r),
        true = stop_requested() => None,
    };
    let _ = printer.await;
    let Some(status) = followed.transpose().map_err(state_error)? else {
        errln!("snakepit: stopped following run {id}; it goes on (`snakepit runs show {id}`)");
        return Ok(ExitCode::from(1));
    };
    print_record(&state, &id, opts.json).await?;
    Ok(exit_code(&status))
}

/// Sends the run's events as they show in the history until it ends: started (when a
/// node claimed it), each log line, finished. Returns its last status.
async fn follow(
    state: &State,
    id: &str,
    events: mpsc::Sender<RunEvent>,
) -> Result<String, snakepit_state::StateError> {
    let mut after = 0;
    let mut started = false;
    loop {
        let status = state.run_status(id).await?.unwrap_or_default();
        let open = matches!(status.as_str(), "queued" | "running");
        if !started && status != RunStatus::Queued.as_str() {
            started = true;
            if let Some(record) = state.run(id).await? {
                let _ = events
                    .send(RunEvent::Started {
                        run_id: record.run.id,
                        job: record.run.job,
                        steps: record.steps.len(),
                    })
                    .await;
            }
        }
        // After the status: the lines written before the run ended are all there.
        loop {
            let lines = state.logs_after(id, after, 1000).await?;
            let Some(last) = lines.last() else { break };
            after = last.id;
            for line in lines {
                let _ = events.send(RunEvent::Log(line.line)).await;
            }
        }
        if !open {
            let error = state.run(id).await?.and_then(|r| r.run.error);
            let ended = match status.as_str() {
                "succeeded" => RunStatus::Succeeded,
                "failed" => RunStatus::Failed,
                "cancelled" => RunStatus::Cancelled,
                _ => RunStatus::Interrupted,
            };
            let _ = events
                .send(RunEvent::Finished {
                    status: ended,
                    error,
                })
                .await;
            return Ok(status);
        }
        tokio::time::sleep(FOLLOW_EVERY).await;
    }
}

/// `snakepit status --cluster [--json]`: every node recorded in the state, alive or
/// lost.
pub async fn status(apps: Apps, json: bool) -> Result<ExitCode, CliError> {
    let state = open_state(&apps).await?;
    let now = Utc::now();
    let nodes = state.nodes(now).await.map_err(state_error)?;
    if json {
        let text = serde_json::to_string_pretty(&nodes)
            .map_err(|e| CliError::Pool(format!("cannot print the nodes: {e}")))?;
        outln!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if nodes.is_empty() {
        outln!(
            "no node serves {} now (a node is a `snakepit serve`; one that stops cleanly leaves the list)",
            state.url()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let ago = |t: chrono::DateTime<Utc>| {
        let secs = (now - t).num_seconds().max(0) as u64;
        format!(
            "{} ago",
            humantime::format_duration(Duration::from_secs(secs))
        )
    };
    let mut rows = vec![[
        "NODE",
        "HOST",
        "PID",
        "VERSION",
        "STARTED",
        "LAST SEEN",
        "RUNS",
        "STATE",
    ]
    .map(String::from)];
    for n in &nodes {
        rows.push([
            n.id.clone(),
            n.host.clone(),
            n.pid.to_string(),
            n.version.clone(),
            ago(n.started_at),
            ago(n.last_seen),
            n.runs.to_string(),
            if n.lost { "lost" } else { "alive" }.to_owned(),
        ]);
    }
    crate::table::print(&rows);
    Ok(ExitCode::SUCCESS)
}
