//! Flags and subcommands (the table in the README), the shell completions and the man
//! page generated from them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};

use crate::error::CliError;
use crate::output::outln;

#[derive(Debug, Parser)]
#[command(
    name = "snakepit",
    version,
    about = "Run Python plugins in supervised CPython workers",
    after_help = ENVIRONMENT
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

/// Every environment variable the command line reads (the README lists them too).
const ENVIRONMENT: &str = "\
Environment:
  LIBERTY_APPS_DIR    the apps dir when --apps is not given
  SNAKEPIT_PYTHON     the worker interpreter when neither --python nor [runtime] python
                      names one
  SNAKEPIT_LOG        what is logged on stderr, as tracing directives (e.g.
                      warn,snakepit=debug or snakepit::timing=debug); replaces -v and -q
  SNAKEPIT_CACHE_DIR  where the embedded Python shim is written (default
                      $XDG_CACHE_HOME/snakepit, else $HOME/.cache/snakepit, else
                      $TMPDIR/snakepit-UID)
  PATH                where python3 is found when nothing else names the interpreter
  USER                the session user of `run` when the OS user has no name
  ${VAR}              any variable connectors.toml or [runtime] http_token names
Workers get only the variables [isolation] env lists (default TZ, LANG, LC_ALL, PATH).

Exit codes: 0 ok; 1 the plugin raised, a run failed, a check found problems, a reload was
refused; 2 bad input (a file, a flag, a reference); 3 workers or a serve could not be
reached. With --json, a failure is also a JSON object on stdout: {\"error\": {\"kind\",
\"message\", ...}}.";

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
    /// next ticks; with --cluster, every node sharing the state, alive or lost.
    Status {
        /// Every node that records itself in the state (host, pid, version, start time,
        /// last seen, runs in hand), lost ones marked; read from the state database.
        #[arg(long)]
        cluster: bool,
    },
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
        /// Queue the run for any `snakepit serve` node and print its id (on SQLite the
        /// serve of this apps dir must be running, and runs it).
        #[arg(long)]
        enqueue: bool,
        /// With --enqueue: follow the run to its end (its log lines on stderr, its record
        /// on stdout, exit 0 when it succeeded, 1 when not).
        #[arg(long, requires = "enqueue")]
        wait: bool,
    },
    /// Run the plugins' pytest suites (a package of plugins/, a path; default: all of
    /// plugins/) with the install's interpreter and sys.path, with fixtures that reach
    /// the install's real connectors (plugin_ctx, snakepit_call, snakepit_api); every
    /// test's writes are rolled back. Arguments after `--` go to pytest. Exit status:
    /// pytest's.
    Test {
        /// Packages of plugins/ (billing) or paths (plugins/billing/tests/test_x.py).
        #[arg(value_name = "PKG|PATH")]
        targets: Vec<String>,
        /// pytest's own arguments (after `--`), e.g. -- -k drafts -x
        #[arg(last = true, value_name = "PYTEST_ARGS")]
        pytest_args: Vec<String>,
    },
    /// The embedded Python shim (`snakepit_shim`, with the plugin API's types).
    Shim {
        /// Print the directory to put on PYTHONPATH or an editor's extra paths (the
        /// shim is written there if it is not).
        #[arg(long, required = true)]
        path: bool,
    },
    /// Make a new, working install in DIR (which must not exist or be empty): app.toml,
    /// connectors.toml with a SQLite sample database, a plugin package with a sync and
    /// an async step, a job and tests.
    Init {
        /// The new install's directory.
        dir: PathBuf,
    },
    /// Print the completion script of SHELL, e.g. `snakepit completions bash >
    /// ~/.local/share/bash-completion/completions/snakepit`.
    Completions {
        /// bash, zsh, fish (also elvish, powershell).
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff), e.g. `snakepit man > ~/.local/share/man/man1/snakepit.1`.
    Man,
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

/// The completion script of `shell`.
pub fn completions(shell: clap_complete::Shell) -> Vec<u8> {
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Args::command(), "snakepit", &mut script);
    script
}

/// The man page, in roff.
pub fn man_page() -> Result<Vec<u8>, CliError> {
    let mut page = Vec::new();
    clap_mangen::Man::new(Args::command())
        .render(&mut page)
        .map_err(|e| CliError::Pool(format!("cannot render the man page: {e}")))?;
    Ok(page)
}

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
            remote,
        } => {
            let opts = crate::call::Options {
                reference: &reference,
                kwargs: kwargs.as_deref(),
                ctx: ctx.as_deref(),
                timeout,
                quiet: args.quiet,
                verbose: args.verbose > 0,
                json: args.json,
            };
            if remote {
                crate::remote::call(&dir()?, opts).await
            } else {
                crate::call::run(&load()?, opts).await
            }
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
        } => crate::serve::run(load()?, graceful_timeout, http.as_deref(), args.json).await,
        Command::Completions { shell } => {
            crate::output::stdout_bytes(&completions(shell));
            Ok(ExitCode::SUCCESS)
        }
        Command::Man => {
            crate::output::stdout_bytes(&man_page()?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Jobs => crate::jobs::list(load()?, args.json).await,
        Command::Status { cluster: false } => crate::remote::status(&dir()?, args.json).await,
        Command::Status { cluster: true } => crate::cluster::status(load()?, args.json).await,
        Command::Reload => crate::remote::reload(&dir()?, args.json).await,
        Command::Run {
            job,
            params,
            user,
            enqueue,
            wait,
        } => {
            let opts = crate::run::Options {
                job,
                params,
                user,
                json: args.json,
                quiet: args.quiet,
            };
            if enqueue {
                crate::cluster::enqueue(load()?, opts, wait).await
            } else {
                crate::run::run(load()?, opts).await
            }
        }
        Command::Test {
            targets,
            pytest_args,
        } => crate::test::run(load()?, &targets, &pytest_args).await,
        Command::Shim { path: _ } => {
            let dir = snakepit::shim_dir().map_err(|e| CliError::Pool(e.to_string()))?;
            outln!("{}", dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Init { dir } => crate::init::run(&dir),
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
