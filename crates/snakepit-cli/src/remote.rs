//! `snakepit status`, `snakepit reload` and `snakepit call --remote`: clients of a running
//! `snakepit serve`, through its control socket (`snakepit_host::control`). They do not
//! read the install's TOML files: the serve does.

use std::path::Path;
use std::process::ExitCode;

use snakepit_host::control::{Client, ControlError, Reply, Request, Usage};

use crate::call::{fail, json_map, print_cost, print_log, Options};
use crate::error::CliError;
use crate::output::{errln, outln};

impl From<ControlError> for CliError {
    fn from(e: ControlError) -> Self {
        match e {
            e @ ControlError::AlreadyRunning { .. } => CliError::Usage(e.to_string()),
            e @ (ControlError::NotRunning { .. } | ControlError::Io(_)) => {
                CliError::Pool(e.to_string())
            }
        }
    }
}

fn unexpected(reply: &Reply) -> CliError {
    match reply {
        Reply::Error { message } => CliError::Usage(format!("the serve refused: {message}")),
        other => CliError::Pool(format!("the serve answered out of turn: {other:?}")),
    }
}

/// Prints the serve's state: text, or with `--json` the `ServeStatus` object.
pub async fn status(apps: &Path, json: bool) -> Result<ExitCode, CliError> {
    let mut client = Client::connect(apps).await?;
    match client.ask(&Request::Status).await? {
        Reply::Status { status } if json => {
            let text = serde_json::to_string_pretty(&status)
                .map_err(|e| CliError::Pool(format!("cannot print the status: {e}")))?;
            outln!("{text}");
        }
        Reply::Status { status } => crate::output::stdout(format_args!("{status}")),
        other => return Err(unexpected(&other)),
    }
    Ok(ExitCode::SUCCESS)
}

/// Asks the serve to reload: 0 once the new generation serves; 1 with the problems
/// (the old generation still serves).
pub async fn reload(apps: &Path, json: bool) -> Result<ExitCode, CliError> {
    let mut client = Client::connect(apps).await?;
    let reply = client.ask(&Request::Reload).await?;
    if json {
        if !matches!(reply, Reply::Reloaded { .. } | Reply::Refused { .. }) {
            return Err(unexpected(&reply));
        }
        let text = serde_json::to_string_pretty(&reply)
            .map_err(|e| CliError::Pool(format!("cannot print the outcome: {e}")))?;
        outln!("{text}");
    }
    match reply {
        Reply::Reloaded { generation } => {
            if !json {
                errln!("snakepit: generation {generation} serves");
            }
            Ok(ExitCode::SUCCESS)
        }
        Reply::Refused {
            generation,
            problems,
        } => {
            if !json {
                for p in &problems {
                    errln!("{p}");
                }
                errln!(
                    "snakepit: reload refused ({} problem{}); generation {generation} still serves",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                );
            }
            Ok(ExitCode::from(1))
        }
        other => Err(unexpected(&other)),
    }
}

/// The same call as `snakepit call`, made by the running serve: the same output (the
/// result on stdout, the plugin's logs on stderr) and the same exit codes.
pub async fn call(apps: &Path, opts: Options<'_>) -> Result<ExitCode, CliError> {
    let Options {
        reference,
        kwargs,
        ctx,
        timeout,
        quiet,
        verbose,
        json,
    } = opts;
    // Checked here, with the local call's messages; sent as the JSON they are.
    json_map("--kwargs", kwargs)?;
    json_map("--ctx", ctx)?;
    let parse = |t: Option<&str>| t.and_then(|t| serde_json::from_str(t).ok());
    let mut client = Client::connect(apps).await?;
    client
        .send(&Request::Call {
            reference: reference.to_owned(),
            kwargs: parse(kwargs),
            ctx: parse(ctx),
            timeout_ms: timeout.map(|t| t.as_millis() as u64),
            measure: verbose,
        })
        .await?;
    let print_usage = |usage: Option<Usage>| {
        if let Some(u) = usage {
            print_cost(reference, &u.into());
        }
    };
    loop {
        match client.next().await? {
            Reply::Log { record } => print_log(&record.into(), quiet),
            Reply::Result { value, usage } => {
                print_usage(usage);
                outln!("{value}");
                return Ok(ExitCode::SUCCESS);
            }
            Reply::Failed { failure, usage } => {
                print_usage(usage);
                return Ok(ExitCode::from(fail(reference, &failure, json)));
            }
            other => return Err(unexpected(&other)),
        }
    }
}
