//! `snakepit serve`: the install's pools, kept running until SIGTERM or SIGINT, reloaded
//! on SIGHUP, on `snakepit reload` and (unless `[runtime] watch = false`) when its code
//! changes on disk; `snakepit status`, `reload` and `call --remote` reach it through its
//! control socket. With `--http ADDR` or `[runtime] http` it serves the web console
//! (`snakepit-console`): pages, JSON API, `/metrics`, `/healthz`, `/readyz`.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use snakepit_console::{Console, Metrics};
use snakepit_host::control::{Bound, JobsReporter, ServeInfo};
use snakepit_host::{Host, Watcher, DEFAULT_QUIET};
use snakepit_jobs::{job_reports, AuditLog, JobSet, Scheduler, SystemClock};
use tokio::signal::unix::{signal, SignalKind};

use crate::apps::Apps;
use crate::error::CliError;
use crate::output::{errln, outln};

/// Serves until SIGTERM or SIGINT, then stops taking calls, lets those in hand finish for
/// up to `graceful_timeout`, stops the workers and exits 0. With `json`, the moment it
/// serves is one JSON line on stdout (`serving`, `pid`, `generation`, `control_socket`,
/// `console`); a failure to start is the `{"error": ...}` of every command.
pub async fn run(
    apps: Apps,
    graceful_timeout: Duration,
    http: Option<&str>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let started = SystemTime::now();
    // A console setting that cannot be served fails before anything starts.
    let http = apps.http(http)?;
    let signals = |kind: SignalKind| {
        signal(kind).map_err(|e| CliError::Pool(format!("cannot handle signals: {e}")))
    };
    let (mut term, mut int, mut hup) = (
        signals(SignalKind::terminate())?,
        signals(SignalKind::interrupt())?,
        signals(SignalKind::hangup())?,
    );
    // The lock and the socket first: a second serve of this apps dir refuses before it
    // starts any worker.
    let bound = Bound::bind(&apps.dir)?;
    let watch = apps.config.runtime.watch.unwrap_or(true);
    let host = Arc::new(Host::start_checked(apps).await?);
    let watcher = if watch {
        match Watcher::start(host.clone(), DEFAULT_QUIET).await {
            Ok(w) => Some(w),
            Err(e) => {
                host.shutdown(graceful_timeout).await;
                return Err(e.into());
            }
        }
    } else {
        None
    };
    // The scheduler fires the cron jobs; each generation's jobs and connectors (whose
    // audit records go to the run history, and to the console's metrics) follow reloads.
    let install = host.install();
    let state = crate::run::open_state(&install).await?;
    let metrics = http.as_ref().map(|_| {
        let m = Metrics::new();
        m.watch_host(&host);
        m
    });
    let mut scheduler = Scheduler::new(
        host.clone(),
        state.clone(),
        Arc::new(SystemClock),
        crate::run::load_jobs(&install)?,
    )
    .grace(graceful_timeout);
    if let Some(m) = &metrics {
        scheduler = scheduler.observe(m.clone());
    }
    let scheduler = Arc::new(scheduler);
    let info = ServeInfo {
        started,
        watching: watcher.as_ref().map(|w| w.roots().to_vec()),
        jobs: Some(jobs_reporter(&scheduler, &state)),
        wake: Some({
            let scheduler = Arc::downgrade(&scheduler);
            Arc::new(move || {
                if let Some(s) = scheduler.upgrade() {
                    s.wake();
                }
            })
        }),
    };
    let control = bound.serve(host.clone(), info.clone());
    let weak = Arc::downgrade(&scheduler);
    let audit_state = state.clone();
    let audit_metrics = metrics.clone();
    host.on_new_generation(move |install| {
        AuditLog::attach(&install.connectors, &audit_state);
        if let Some(m) = &audit_metrics {
            m.count_connector_calls(&install.connectors);
        }
        match (JobSet::load(install), weak.upgrade()) {
            (Ok(jobs), Some(scheduler)) => scheduler.set_jobs(jobs),
            (Err(problems), _) => {
                tracing::error!(
                    ?problems,
                    "the reloaded jobs do not load; the scheduler keeps the previous ones"
                )
            }
            (Ok(_), None) => {}
        }
    });
    let scheduling = scheduler.start();
    let console = match (http, metrics) {
        (Some(settings), Some(metrics)) => {
            let console = Console {
                host: host.clone(),
                state: state.clone(),
                scheduler: scheduler.clone(),
                info,
                metrics,
            };
            match console.serve(&settings).await {
                Ok(c) => Some(c),
                Err(e) => {
                    scheduling.stop().await;
                    tokio::join!(control.stop(), host.shutdown(graceful_timeout));
                    return Err(CliError::Usage(e.to_string()));
                }
            }
        }
        _ => None,
    };
    errln!(
        "snakepit: serving {} (generation {}, control socket {}); SIGHUP reloads, SIGTERM stops",
        host.install().dir.display(),
        host.generation(),
        control.socket().display()
    );
    let console_url = console.as_ref().map(|c| format!("http://{}/", c.addr()));
    if let Some(url) = &console_url {
        errln!("snakepit: web console at {url}");
    }
    if json {
        outln!(
            "{}",
            serde_json::json!({
                "serving": host.install().dir,
                "pid": std::process::id(),
                "generation": host.generation(),
                "control_socket": control.socket(),
                "console": console_url,
            })
        );
    }
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => report_reload(&host.install().dir, host.reload("SIGHUP").await),
        }
    };
    errln!(
        "snakepit: {why}: stopping; calls in hand have {} to finish",
        humantime::format_duration(graceful_timeout)
    );
    drop(watcher);
    if let Some(c) = console {
        c.stop().await;
    }
    // Scheduled runs in flight get the scheduler's grace, then are recorded interrupted.
    scheduling.stop().await;
    // Requests in hand over the socket end with their calls, which the host drains.
    tokio::join!(control.stop(), host.shutdown(graceful_timeout));
    Ok(ExitCode::SUCCESS)
}

/// The jobs as the scheduler has them, with their latest runs: for `snakepit status`.
fn jobs_reporter(scheduler: &Arc<Scheduler>, state: &snakepit_state::State) -> JobsReporter {
    let (scheduler, state) = (Arc::downgrade(scheduler), state.clone());
    Arc::new(move || {
        let (scheduler, state) = (scheduler.upgrade(), state.clone());
        Box::pin(async move {
            let Some(scheduler) = scheduler else {
                return Vec::new();
            };
            job_reports(&scheduler.jobs(), &state, chrono::Utc::now())
                .await
                .unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "cannot read the jobs' latest runs");
                    Vec::new()
                })
        })
    })
}

fn report_reload(apps: &Path, outcome: Result<u64, Vec<snakepit_host::Problem>>) {
    match outcome {
        Ok(generation) => errln!(
            "snakepit: reloaded {}: generation {generation} serves",
            apps.display()
        ),
        Err(problems) => {
            for p in &problems {
                errln!("{p}");
            }
            errln!("snakepit: reload refused; the previous generation still serves");
        }
    }
}
