//! `snakepit serve`: the install's pools, kept running until SIGTERM or SIGINT, reloaded
//! on SIGHUP, on `snakepit reload` and (unless `[runtime] watch = false`) when its code
//! changes on disk; `snakepit status`, `reload` and `call --remote` reach it through its
//! control socket.

use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use snakepit_host::control::{Bound, ServeInfo};
use snakepit_host::{Host, Watcher, DEFAULT_QUIET};
use snakepit_jobs::{AuditLog, JobSet, Scheduler, SystemClock};
use tokio::signal::unix::{signal, SignalKind};

use crate::apps::Apps;
use crate::error::CliError;

/// Serves until SIGTERM or SIGINT, then stops taking calls, lets those in hand finish for
/// up to `graceful_timeout`, stops the workers and exits 0.
pub async fn run(apps: Apps, graceful_timeout: Duration) -> Result<ExitCode, CliError> {
    let started = SystemTime::now();
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
    let control = bound.serve(
        host.clone(),
        ServeInfo {
            started,
            watching: watcher.as_ref().map(|w| w.roots().to_vec()),
        },
    );
    // The scheduler fires the cron jobs; each generation's jobs and connectors (whose
    // audit records go to the run history) follow reloads.
    let install = host.install();
    let state = crate::run::open_state(&install).await?;
    let scheduler = Arc::new(
        Scheduler::new(
            host.clone(),
            state.clone(),
            Arc::new(SystemClock),
            crate::run::load_jobs(&install)?,
        )
        .grace(graceful_timeout),
    );
    let weak = Arc::downgrade(&scheduler);
    host.on_new_generation(move |install| {
        AuditLog::attach(&install.connectors, &state);
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
    let (stop_scheduler, stopped) = tokio::sync::oneshot::channel::<()>();
    let scheduling = tokio::spawn({
        let scheduler = scheduler.clone();
        async move {
            scheduler
                .run(async {
                    let _ = stopped.await;
                })
                .await
        }
    });
    eprintln!(
        "snakepit: serving {} (generation {}, control socket {}); SIGHUP reloads, SIGTERM stops",
        host.install().dir.display(),
        host.generation(),
        control.socket().display()
    );
    let why = loop {
        tokio::select! {
            _ = term.recv() => break "SIGTERM",
            _ = int.recv() => break "SIGINT",
            _ = hup.recv() => report_reload(&host.install().dir, host.reload("SIGHUP").await),
        }
    };
    eprintln!(
        "snakepit: {why}: stopping; calls in hand have {} to finish",
        humantime::format_duration(graceful_timeout)
    );
    drop(watcher);
    // Scheduled runs in flight get the scheduler's grace, then are recorded interrupted.
    let _ = stop_scheduler.send(());
    let _ = scheduling.await;
    // Requests in hand over the socket end with their calls, which the host drains.
    tokio::join!(control.stop(), host.shutdown(graceful_timeout));
    Ok(ExitCode::SUCCESS)
}

fn report_reload(apps: &Path, outcome: Result<u64, Vec<snakepit_host::Problem>>) {
    match outcome {
        Ok(generation) => eprintln!(
            "snakepit: reloaded {}: generation {generation} serves",
            apps.display()
        ),
        Err(problems) => {
            for p in &problems {
                eprintln!("{p}");
            }
            eprintln!("snakepit: reload refused; the previous generation still serves");
        }
    }
}
