//! `snakepit run JOB`: runs a job now, recorded in the run history; live progress on
//! stderr, the run record (JSON) on stdout; exit 0 when it succeeded, 1 otherwise.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use snakepit_host::{Host, HostError};
use snakepit_jobs::{
    AuditLog, Clock, Halt, JobSet, RunError, RunEvent, RunRequest, Runner, SystemClock,
};
use snakepit_proto::level_name;
use snakepit_state::{RunStatus, State, StateError, StepStatus, Trigger, DEFAULT_LEASE};
use tokio::sync::{mpsc, watch};

use crate::apps::Apps;
use crate::error::CliError;
use crate::output::{errln, outln};

const SHUTDOWN: Duration = Duration::from_secs(2);

/// What `snakepit run` was asked.
#[derive(Debug)]
pub struct Options {
    pub job: String,
    pub params: Vec<(String, String)>,
    pub user: Option<String>,
    pub json: bool,
    pub quiet: bool,
}

/// `K=V` of `--param`.
pub fn parse_param(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("{s:?} is not K=V; e.g. --param region=eu")),
    }
}

/// The jobs of the install; their problems as one usage error (exit 2).
pub fn load_jobs(apps: &Apps) -> Result<JobSet, CliError> {
    JobSet::load(apps).map_err(|problems| HostError::Invalid(problems).into())
}

/// The install's run history, its runs' leases as `[runtime] lease` says.
pub async fn open_state(apps: &Apps) -> Result<State, CliError> {
    let state = State::open_for_apps(&apps.dir, apps.config.runtime.state.as_deref())
        .await
        .map_err(state_error)?;
    Ok(state.with_lease(apps.config.runtime.lease.unwrap_or(DEFAULT_LEASE)))
}

/// A bad state url is the user's to fix (2); an unreachable database is not (3).
pub fn state_error(e: StateError) -> CliError {
    match e {
        e @ (StateError::Url { .. } | StateError::Ambiguous { .. }) => {
            CliError::Usage(e.to_string())
        }
        e => CliError::Pool(e.to_string()),
    }
}

/// The OS user running snakepit: the session user of a manual run without `--user`.
pub fn os_user() -> String {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => u.name,
        _ => std::env::var("USER").unwrap_or_else(|_| uid.to_string()),
    }
}

/// The install's jobs, once `opts.job` is known to be one of them and its `--param`s
/// fit it (else a usage error, exit 2).
pub fn checked_jobs(apps: &Apps, opts: &Options) -> Result<JobSet, CliError> {
    let jobs = load_jobs(apps)?;
    let Some(job) = jobs.get(&opts.job) else {
        return Err(CliError::Usage(
            RunError::UnknownJob {
                job: opts.job.clone(),
                known: jobs.names().into_iter().map(str::to_owned).collect(),
            }
            .to_string(),
        ));
    };
    job.params_with(&opts.params).map_err(CliError::Usage)?;
    Ok(jobs)
}

pub async fn run(apps: Apps, opts: Options) -> Result<ExitCode, CliError> {
    let jobs = checked_jobs(&apps, &opts)?;
    crate::timing::mark("jobs");
    let state = open_state(&apps).await?;
    crate::timing::mark("state database");
    let audit = AuditLog::attach(&apps.connectors, &state);
    let host = Arc::new(Host::start_checked(apps).await?);
    crate::timing::mark("pools started and validated");
    let clock = Arc::new(SystemClock);
    let runner = Runner::new(host.clone(), state.clone(), clock.clone());
    let req = RunRequest {
        job: opts.job,
        trigger: Trigger::Manual,
        scheduled_for: clock.now(),
        params: opts.params,
        session_user: opts.user.unwrap_or_else(os_user),
    };
    let (halt_tx, halt_rx) = watch::channel(None);
    let signals = tokio::spawn(async move {
        if stop_requested().await {
            let _ = halt_tx.send(Some(Halt::Cancel));
        }
    });
    // Bounded: when stderr is slower than the plugin logs, log lines are left out of the
    // progress (the run's history keeps them) instead of growing this process.
    let (events, rx) = mpsc::channel(1024);
    let printer = tokio::spawn(progress(rx, req.session_user.clone(), opts.quiet));
    let result = runner.run(&jobs, req, Some(events), halt_rx).await;
    let _ = printer.await;
    signals.abort();
    crate::timing::mark("run");
    host.shutdown(SHUTDOWN).await;
    audit.flush().await;
    crate::timing::mark("shutdown");
    let (id, status) = result.map_err(run_error)?;
    print_record(&state, &id, opts.json).await?;
    Ok(exit_code(status.as_str()))
}

/// A run that could not be started: the database's fault (3) or the request's (2).
pub fn run_error(e: RunError) -> CliError {
    match e {
        RunError::State(e) => state_error(e),
        e => CliError::Usage(e.to_string()),
    }
}

/// Prints the record of the run `id` on stdout (JSON, pretty unless `json`).
pub async fn print_record(state: &State, id: &str, json: bool) -> Result<(), CliError> {
    let record =
        state.run(id).await.map_err(state_error)?.ok_or_else(|| {
            CliError::Pool(format!("the run {id} is missing from {}", state.url()))
        })?;
    let text = if json {
        serde_json::to_string(&record)
    } else {
        serde_json::to_string_pretty(&record)
    }
    .map_err(|e| CliError::Pool(format!("cannot print the run record: {e}")))?;
    outln!("{text}");
    Ok(())
}

/// `run`'s exit code for a run that ended with `status`: 0 when it succeeded, else 1.
pub fn exit_code(status: &str) -> ExitCode {
    if status == RunStatus::Succeeded.as_str() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// True on Ctrl-C or SIGTERM (false if neither can be watched).
pub async fn stop_requested() -> bool {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return tokio::signal::ctrl_c().await.is_ok();
    };
    tokio::select! {
        r = tokio::signal::ctrl_c() => r.is_ok(),
        _ = term.recv() => true,
    }
}

/// Prints the run's progress on stderr: each step's attempts, the plugin's log lines,
/// retries and the outcome, with the time since the run started.
pub async fn progress(mut rx: mpsc::Receiver<RunEvent>, user: String, quiet: bool) {
    let start = Instant::now();
    let at = || format!("[{:>6.1}s]", start.elapsed().as_secs_f64());
    while let Some(ev) = rx.recv().await {
        let line = match ev {
            RunEvent::Started { run_id, job, steps } if !quiet => format!(
                "snakepit: run {run_id} of {job} ({steps} step{}, manual, user {user})",
                if steps == 1 { "" } else { "s" }
            ),
            RunEvent::StepStarted {
                step,
                attempt,
                attempts,
            } if !quiet => format!("{} {step}: attempt {attempt}/{attempts}", at()),
            RunEvent::Log(l) if !quiet || l.level >= 30 => {
                let step = l.step.as_deref().unwrap_or("");
                match l.logger.as_str() {
                    "stdout" | "stderr" | "fd.stdout" | "fd.stderr" => {
                        format!("{} {step}: {}", at(), l.message)
                    }
                    logger => format!(
                        "{} {step}: {} {logger}: {}",
                        at(),
                        level_name(l.level),
                        l.message
                    ),
                }
            }
            RunEvent::StepRetrying {
                step,
                attempt,
                error,
                delay,
            } => format!(
                "{} {step}: attempt {attempt} failed: {}: {}; retrying in {}",
                at(),
                error.type_name,
                error.message,
                humantime::format_duration(delay)
            ),
            RunEvent::StepEnded {
                step,
                status: StepStatus::Failed,
                attempts,
                error,
            } => {
                let mut text = format!("{} {step}: failed after {attempts} attempt(s)", at());
                if let Some(e) = error {
                    text = match &e.traceback {
                        Some(tb) => format!("{text}\n{}", tb.trim_end()),
                        None => format!("{text}: {}: {}", e.type_name, e.message),
                    };
                }
                text
            }
            RunEvent::StepEnded {
                step,
                status,
                attempts,
                ..
            } if !quiet => format!("{} {step}: {} (attempt {attempts})", at(), status.as_str()),
            RunEvent::Finished { status, error } => match error {
                Some(e) => format!("snakepit: run {} ({e})", status.as_str()),
                None if !quiet => format!(
                    "snakepit: run {} in {:.1}s",
                    status.as_str(),
                    start.elapsed().as_secs_f64()
                ),
                None => continue,
            },
            _ => continue,
        };
        errln!("{line}");
    }
}
