//! The `snakepit` command line: a thin layer over the `snakepit` crate that reads an
//! install's TOML files, maps errors to the exit codes of the product contract, and
//! keeps stdout for machine output only (plugin logs and progress go to stderr).

mod apps;
mod bench;
mod call;
mod cli;
mod cluster;
mod error;
mod host_cmds;
mod jobs;
mod remote;
mod run;
mod runs;
mod serve;
mod table;
mod timing;

use std::process::ExitCode;

use clap::Parser;

pub use error::CliError;

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    timing::start();
    let args = cli::Args::parse();
    let serving = matches!(args.command, cli::Command::Serve { .. });
    init_tracing(args.verbose, args.quiet, serving);
    // A serve answers many clients at once, and a bench's callers run on threads of
    // their own; the other commands make one call or one run at a time, and on one
    // runtime thread the task serving a worker's host requests is the one the worker
    // woke, with no hand-off to another thread, maybe on another CPU (the seed loop
    // through `snakepit run`: 2.7x in-process on a multi-threaded runtime, 1.8x on
    // this one; docs/benchmarks.md).
    let many = matches!(
        args.command,
        cli::Command::Serve { .. } | cli::Command::Bench { .. }
    );
    let built = if many {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
    } else {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    };
    let rt = match built {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("snakepit: failed to start the async runtime: {e}");
            return ExitCode::from(3);
        }
    };
    timing::mark("runtime");
    match rt.block_on(cli::run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("snakepit: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn init_tracing(verbose: u8, quiet: bool, serving: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        // A serve reports its reloads (and their problems) and dying workers.
        // And each run's start and end, and the web console's address and actions.
        (false, 0) if serving => {
            "warn,snakepit_host=info,snakepit_jobs::runner=info,snakepit_console=info"
        }
        // The outcome of a call is reported on its own; supervisor warnings (a worker
        // died, was recycled) are for -v.
        (false, 0) => "error",
        (false, 1) => "warn,snakepit=info",
        (false, 2) => "debug",
        _ => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("SNAKEPIT_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new(format!("{level},snakepit::plugin=off"))
    });
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(verbose > 1)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
