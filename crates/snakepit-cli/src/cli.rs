//! Flags and subcommands (SPEC §7).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::error::CliError;

#[derive(Debug, Parser)]
#[command(
    name = "snakepit",
    version,
    about = "Run Python plugins in supervised CPython workers"
)]
pub struct Args {
    /// The apps dir (default: $LIBERTY_APPS_DIR, else the working directory).
    #[arg(long, global = true, env = "LIBERTY_APPS_DIR", value_name = "DIR")]
    pub apps: Option<PathBuf>,
    /// The worker interpreter (default: [runtime] python in app.toml, $SNAKEPIT_PYTHON,
    /// <apps>/.venv/bin/python, ./.venv/bin/python, python3).
    #[arg(long, global = true, value_name = "PATH")]
    pub python: Option<PathBuf>,
    /// Machine-readable output on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// More tracing output on stderr (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// Only errors on stderr (plugin log lines below WARNING are dropped too).
    #[arg(short, long, global = true)]
    pub quiet: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call a plugin once; its result as JSON on stdout.
    Call {
        /// "module.path:function"
        reference: String,
        /// The call's kwargs, a JSON object.
        #[arg(long, value_name = "JSON")]
        kwargs: Option<String>,
        /// The runtime context, a JSON object.
        #[arg(long, value_name = "JSON")]
        ctx: Option<String>,
        /// Call timeout, e.g. 30s, 2m (default: [runtime] call_timeout, else 30s).
        #[arg(long, value_name = "DUR", value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Call through the running `snakepit serve` of this apps dir.
        #[arg(long)]
        remote: bool,
    },
    /// Load a plugin through the pool and call it many times; report latency and rate.
    Bench {
        /// "module.path:function"
        reference: String,
        /// The kwargs of every call, a JSON object.
        #[arg(long, value_name = "JSON")]
        kwargs: Option<String>,
        /// How many calls in all.
        #[arg(long, default_value_t = 10_000)]
        calls: u64,
        /// How many calls in flight at once (default: the number of workers).
        #[arg(long)]
        concurrency: Option<usize>,
        /// Worker processes (default: [runtime] workers, else the CPU count).
        #[arg(long)]
        workers: Option<usize>,
    },
    /// Load app.toml, connectors.toml and every jobs.toml, validate every reference they
    /// name in workers and prepare every named query; each problem as `file: entry:
    /// reason` (with --json, a list on stdout). Exit 0 when there is none, else 1.
    Check,
    /// Ask the [auth] password_validator about the password read from stdin.
    ValidatePassword {
        #[arg(long)]
        username: String,
        /// The existing user record, a JSON object (default: none, a new user).
        #[arg(long, value_name = "JSON")]
        existing_user: Option<String>,
    },
    /// Call the [hooks] of EVENT in order, with the payload's keys as their context.
    Dispatch {
        /// The event, e.g. screen.before_save
        event: String,
        /// The payload, a JSON object.
        #[arg(long, value_name = "JSON")]
        payload: Option<String>,
    },
    /// Run the install's pools until SIGTERM; reload on SIGHUP, `snakepit reload` and
    /// code changes ([runtime] watch); answer `status`, `reload`, `call --remote`.
    Serve {
        /// How long calls in hand may take to finish at SIGTERM before their workers are
        /// stopped.
        #[arg(long, value_name = "DUR", default_value = "30s", value_parser = parse_duration)]
        graceful_timeout: Duration,
        /// Serve the web console, /metrics, /healthz and /readyz on ADDR, e.g.
        /// 127.0.0.1:8650 (default: [runtime] http; an address other than loopback needs
        /// [runtime] http_token).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
    },
    /// The running serve's pools, workers, generation, last reload, and jobs with their
    /// next ticks.
    Status,
    /// The install's jobs: schedule, next tick, last run (with --json, a list).
    Jobs,
    /// Ask the running serve to reload: 0 once the new generation serves, 1 with the
    /// problems (the previous generation keeps serving).
    Reload,
    /// Run a job now, recorded in the run history; progress on stderr, the run record
    /// (JSON) on stdout. Exit 0 when it succeeded, 1 when not.
    Run {
        /// The job's name (from a jobs.toml).
        job: String,
        /// Override one of the job's params (repeatable).
        #[arg(long = "param", value_name = "K=V", value_parser = crate::run::parse_param)]
        params: Vec<(String, String)>,
        /// The session user the steps see (default: the OS user).
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// The run history, newest first; `runs show ID` for one run.
    Runs {
        #[command(subcommand)]
        show: Option<crate::runs::RunsCommand>,
        /// Only this job's runs.
        #[arg(long, value_name = "JOB")]
        job: Option<String>,
        /// How many runs (at least 1).
        #[arg(long, default_value_t = 20, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
    },
}

pub use snakepit_host::parse_duration;

pub async fn run(args: Args) -> Result<ExitCode, CliError> {
    let load = || {
        let apps = crate::apps::Apps::load(args.apps.as_deref(), args.python.as_deref());
        crate::timing::mark("config");
        apps
    };
    // The clients of a running serve read no TOML file (the serve does): an app.toml that
    // the serve refused to reload must not keep `status` from saying why.
    let dir = || match &args.apps {
        Some(d) => Ok(d.clone()),
        None => std::env::current_dir()
            .map_err(|e| CliError::Usage(format!("cannot read the working directory: {e}"))),
    };
    match args.command {
        Command::Call {
            reference,
            kwargs,
            ctx,
            timeout,
            remote: true,
        } => {
            crate::remote::call(
                &dir()?,
                &reference,
                kwargs.as_deref(),
                ctx.as_deref(),
                timeout,
                args.quiet,
            )
            .await
        }
        Command::Call {
            reference,
            kwargs,
            ctx,
            timeout,
            remote: false,
        } => {
            crate::call::run(
                &load()?,
                &reference,
                kwargs.as_deref(),
                ctx.as_deref(),
                timeout,
                args.quiet,
                args.verbose > 0,
            )
            .await
        }
        Command::Bench {
            reference,
            kwargs,
            calls,
            concurrency,
            workers,
        } => {
            let opts = crate::bench::Options {
                calls,
                concurrency,
                workers,
                json: args.json,
            };
            crate::bench::run(&load()?, &reference, kwargs.as_deref(), opts).await
        }
        Command::Check => crate::host_cmds::check(load(), args.json, args.quiet).await,
        Command::ValidatePassword {
            username,
            existing_user,
        } => {
            crate::host_cmds::validate_password(
                load(),
                &username,
                existing_user.as_deref(),
                args.json,
                args.quiet,
            )
            .await
        }
        Command::Dispatch { event, payload } => {
            crate::host_cmds::dispatch(load(), &event, payload.as_deref(), args.json, args.quiet)
                .await
        }
        Command::Serve {
            graceful_timeout,
            http,
        } => crate::serve::run(load()?, graceful_timeout, http.as_deref()).await,
        Command::Jobs => crate::jobs::list(load()?, args.json).await,
        Command::Status => crate::remote::status(&dir()?, args.json).await,
        Command::Reload => crate::remote::reload(&dir()?, args.json).await,
        Command::Run { job, params, user } => {
            let opts = crate::run::Options {
                job,
                params,
                user,
                json: args.json,
                quiet: args.quiet,
            };
            crate::run::run(load()?, opts).await
        }
        Command::Runs { show, job, limit } => match show {
            Some(crate::runs::RunsCommand::Show {
                id,
                calls,
                limit,
                after,
            }) => {
                let page = calls.then_some(crate::runs::CallsPage { limit, after });
                crate::runs::show(load()?, &id, page, args.json).await
            }
            None => crate::runs::list(load()?, job, limit, args.json).await,
        },
    }
}
