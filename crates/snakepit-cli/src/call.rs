//! `snakepit call REF`: one call in a fresh worker; the result as JSON on stdout. (With
//! `--remote`, the call goes through a running serve: `remote.rs`.)

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use snakepit::{Call, CallError, LogRecord, Map, Value};
use snakepit_host::control::CallFailure;
use tokio::sync::mpsc;

use crate::apps::Apps;
use crate::error::CliError;
use crate::output::{err, errln, outln};

/// Log records waiting for stderr, at most.
const LOG_CHANNEL: usize = 1024;

/// Parses a `--kwargs`/`--ctx` flag: a JSON object.
pub fn json_map(flag: &str, text: Option<&str>) -> Result<Map, CliError> {
    let Some(text) = text else {
        return Ok(Map::new());
    };
    let usage = |why: String| {
        CliError::Usage(format!(
            "{flag} must be a JSON object such as '{{\"period\": \"2026-05\"}}': {why}"
        ))
    };
    let json: serde_json::Value = serde_json::from_str(text).map_err(|e| usage(e.to_string()))?;
    match Value::from_json(&json) {
        Value::Map(m) => Ok(m),
        other => Err(usage(format!("got a {}", other.type_name()))),
    }
}

/// A log channel for calls and the task that prints what arrives on stderr (as
/// [`print_log`]); the task ends once every sender is gone, which includes the pool's
/// (a worker's slot keeps its last call's log until its next call or its end): await it
/// after the pool or host has shut down.
pub fn log_printer(quiet: bool) -> (mpsc::Sender<LogRecord>, tokio::task::JoinHandle<()>) {
    // Bounded: a plugin that logs faster than stderr takes them loses the excess, counted
    // in a "N log lines dropped" line, instead of growing this process.
    let (tx, mut rx) = mpsc::channel(LOG_CHANNEL);
    let printer = tokio::spawn(async move {
        while let Some(rec) = rx.recv().await {
            print_log(&rec, quiet);
        }
    });
    (tx, printer)
}

/// Prints a plugin's log record on stderr.
pub fn print_log(rec: &LogRecord, quiet: bool) {
    if quiet && rec.level < 30 {
        return;
    }
    let level = snakepit_proto::level_name(rec.level);
    let mut err = std::io::stderr().lock();
    let _ = match rec.logger.as_str() {
        "stdout" | "stderr" | "fd.stdout" | "fd.stderr" => writeln!(err, "{}", rec.message),
        logger => writeln!(err, "{level} {logger}: {}", rec.message),
    };
    if let Some(exc) = &rec.exc_text {
        let _ = writeln!(err, "{exc}");
    }
}

/// The exit code and the stderr report of a failed call (README, "From the command
/// line"), as the control socket carries it: a local call and one through `snakepit
/// serve` (`--remote`) report the same.
pub fn report_failure(reference: &str, e: &CallFailure) -> u8 {
    if let Some(exc) = &e.raised {
        err!("{}", exc.traceback);
        if !exc.traceback.ends_with('\n') {
            errln!();
        }
        errln!(
            "snakepit: {reference} raised {}: {}",
            exc.type_name,
            exc.message
        );
        return 1;
    }
    match e.kind.as_str() {
        // A result that cannot cross the wire is the plugin's doing.
        "raised" => {
            errln!("snakepit: {reference}: {}", e.message);
            1
        }
        "reference" => {
            errln!("snakepit: {}", e.message);
            2
        }
        _ => {
            errln!("snakepit: {reference}: {}", e.message);
            3
        }
    }
}

/// [`report_failure`]; with `--json`, the failure on stdout too, as
/// `{"error": {"kind", "message", "raised"}}` (`raised`: the exception's `type_name`,
/// `message` and `traceback`, or null).
pub fn fail(reference: &str, e: &CallFailure, json: bool) -> u8 {
    if json {
        outln!("{}", serde_json::json!({ "error": e }));
    }
    report_failure(reference, e)
}

/// What `snakepit call` was asked (locally or, with `--remote`, of a serve).
#[derive(Debug)]
pub struct Options<'a> {
    pub reference: &'a str,
    pub kwargs: Option<&'a str>,
    pub ctx: Option<&'a str>,
    pub timeout: Option<Duration>,
    pub quiet: bool,
    /// Print the call's cost on stderr (`-v`).
    pub verbose: bool,
    pub json: bool,
}

pub async fn run(apps: &Apps, opts: Options<'_>) -> Result<ExitCode, CliError> {
    let Options {
        reference,
        kwargs,
        ctx,
        timeout,
        quiet,
        verbose,
        json,
    } = opts;
    let kwargs = json_map("--kwargs", kwargs)?;
    let context = snakepit_host::call_context(json_map("--ctx", ctx)?);
    // The pool of the reference's package ([plugins.PKG] pool): its settings (timeout,
    // limits) apply; one worker is enough for one call.
    let (pool_name, settings) = apps.pool_for(reference);
    let pool = apps
        .pool_builder_with(&settings)
        .name(pool_name)
        .workers(1)
        // One call: a fresh interpreter is one process instead of a template and a fork.
        .fresh_interpreters(true)
        .build()
        .await
        .map_err(|e| apps.build_error(e))?;
    crate::timing::mark("pool start");
    let (tx, printer) = log_printer(quiet);
    let mut call = Call::new(reference)
        .kwargs(kwargs)
        .context(context)
        .logs(tx);
    if let Some(t) = timeout {
        call = call.timeout(t);
    }
    let measured = pool.submit_measured(&call).await;
    drop(call); // its log sender: the printer ends once the worker's are gone too
    crate::timing::mark("call");
    pool.shutdown(Duration::from_secs(2)).await;
    drop(pool);
    let _ = printer.await;
    crate::timing::mark("shutdown");
    if let (true, Some(u)) = (verbose, &measured.usage) {
        print_cost(reference, u);
    }
    match measured
        .result
        .and_then(|v| v.to_json().map_err(|e| CallError::Protocol(e.to_string())))
    {
        Ok(json) => {
            outln!("{json}");
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Ok(ExitCode::from(fail(
            reference,
            &CallFailure::from(&e),
            json,
        ))),
    }
}

/// `call -v`'s cost line, on stderr (the same as a step's in `runs show`).
pub(crate) fn print_cost(reference: &str, u: &snakepit::CallUsage) {
    errln!(
        "snakepit: {reference}: {}",
        crate::runs::usage_line(&snakepit_jobs::step_usage(u))
    );
}
