//! The `snakepit` command line: a thin layer over the `snakepit` crate that reads an
//! install's TOML files, maps errors to the exit codes of the product contract, and
//! keeps stdout for machine output only (plugin logs and progress go to stderr).
//!
//! ```no_run
//! // The whole of the `snakepit` binary's main.rs (not run here: it would parse the
//! // doc test's own command line).
//! fn main() -> std::process::ExitCode {
//!     snakepit_cli::main()
//! }
//! ```
//!
//! Install it with `cargo install --locked --path crates/snakepit-cli`; `snakepit --help` lists
//! the commands, flags and environment variables, `snakepit man` prints the man page.

mod apps;
mod bench;
mod call;
mod cli;
mod cluster;
mod error;
mod host_cmds;
mod init;
mod jobs;
mod output;
mod remote;
mod run;
mod runs;
mod serve;
mod table;
mod test;
mod timing;

use std::process::ExitCode;

use clap::Parser;

pub use error::CliError;
use output::{errln, outln};

/// Parses the command line, runs the command, and returns its exit code.
pub fn main() -> ExitCode {
    timing::start();
    let args = match cli::Args::try_parse() {
        Ok(args) => args,
        Err(e) => {
            // Help and --version are "errors" that go to stdout with exit 0.
            if e.use_stderr() && json_wanted() {
                outln!("{}", usage_json(&e));
            }
            e.exit()
        }
    };
    let json = args.json;
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
            let e = CliError::Pool(format!("failed to start the async runtime: {e}"));
            return report(&e, json);
        }
    };
    timing::mark("runtime");
    match rt.block_on(cli::run(args)) {
        Ok(code) if code == ExitCode::SUCCESS && output::stdout_failed() => ExitCode::from(3),
        Ok(code) => code,
        Err(e) => report(&e, json),
    }
}

/// A command's error: on stderr for people, and with `--json` on stdout too.
fn report(e: &CliError, json: bool) -> ExitCode {
    if json {
        outln!("{}", e.to_json());
    }
    errln!("snakepit: {e}");
    ExitCode::from(e.exit_code())
}

/// `--json` among the arguments of a command line that did not parse.
fn json_wanted() -> bool {
    std::env::args_os()
        .skip(1)
        .take_while(|a| a != "--")
        .any(|a| a == "--json")
}

/// A command line that did not parse, as `--json` reports errors (exit 2).
fn usage_json(e: &clap::Error) -> serde_json::Value {
    // The first paragraph ("error: ..." and what it lists), without the usage and tip.
    let text = e.render().to_string();
    let first = text.split("\n\n").next().unwrap_or_default();
    let first = first.strip_prefix("error: ").unwrap_or(first);
    CliError::Usage(first.split_whitespace().collect::<Vec<_>>().join(" ")).to_json()
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
