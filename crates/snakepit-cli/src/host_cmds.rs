//! `snakepit check`, `validate-password` and `dispatch`: the plugin host's commands.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use serde_json::json;
use snakepit::{CallError, Value};
use snakepit_host::control::CallFailure;
use snakepit_host::{Host, HostError, PasswordError, Problem};

use crate::apps::Apps;
use crate::call::{json_map, log_printer};
use crate::error::CliError;
use crate::output::{err, errln, outln};

const SHUTDOWN: Duration = Duration::from_secs(2);

/// 0 when every reference is valid; 1 with one `file: entry: reason` line per problem
/// (a list on stdout with `--json`). A TOML file that does not load is such a problem
/// too, and so is an apps dir with nothing in it to check (likely the wrong directory).
pub async fn check(
    apps: Result<Apps, HostError>,
    json: bool,
    quiet: bool,
) -> Result<ExitCode, CliError> {
    let (dir, problems, pools) = match apps {
        Ok(apps) => {
            let dir = apps.dir.clone();
            let host = Host::start(apps).await?;
            let problems = host.check().await;
            let pools = host.status().pools;
            host.shutdown(SHUTDOWN).await;
            (Some(dir), problems, pools)
        }
        Err(e @ HostError::Config { .. }) => (None, e.problems(Path::new("app.toml")), vec![]),
        Err(e) => return Err(e.into()),
    };
    let problems = match dir.as_deref() {
        Some(dir) if problems.is_empty() && nothing_to_check(dir) => vec![Problem {
            file: dir.to_owned(),
            entry: "apps dir".into(),
            reason: "nothing to check here: no app.toml, connectors.toml, jobs.toml or plugins/; pass --apps DIR or set LIBERTY_APPS_DIR".into(),
        }],
        _ => problems,
    };
    if json {
        let text = serde_json::to_string_pretty(&problems)
            .map_err(|e| CliError::Pool(format!("cannot print the problems: {e}")))?;
        outln!("{text}");
    } else {
        for p in &problems {
            match p.entry.as_str() {
                "" => errln!("{}: {}", p.file.display(), p.reason),
                entry => errln!("{}: {entry}: {}", p.file.display(), p.reason),
            }
        }
        if let (true, false, Some(dir)) = (problems.is_empty(), quiet, &dir) {
            // What confines each pool, as `status` shows it.
            for pool in &pools {
                err!("pool {}:\n{}", pool.name, pool.isolation);
            }
            errln!("snakepit: {}: no problems", dir.display());
        }
    }
    Ok(if problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn nothing_to_check(dir: &Path) -> bool {
    ["app.toml", "connectors.toml", "jobs.toml", "plugins"]
        .iter()
        .all(|f| !dir.join(f).exists())
}

/// How a command that answers with JSON on every outcome (`validate-password`,
/// `dispatch`) reports an error that kept it from answering: without `--json` the error
/// goes up as any command's; with it, on stderr and as `answer`'s `error` (`{kind,
/// message, raised: null}` plus `more`), with the error's exit code.
fn answer_error(
    json: bool,
    mut answer: serde_json::Value,
    e: CliError,
    more: serde_json::Value,
) -> Result<ExitCode, CliError> {
    if !json {
        return Err(e);
    }
    errln!("snakepit: {e}");
    let kind = match &e {
        CliError::Config { .. } | CliError::Invalid { .. } => "config",
        CliError::Usage(_) => "usage",
        CliError::Pool(_) => "pool",
    };
    let mut error = json!({"kind": kind, "message": e.to_string(), "raised": null});
    if let (Some(error), serde_json::Value::Object(more)) = (error.as_object_mut(), more) {
        error.extend(more);
    }
    answer["error"] = error;
    outln!("{answer}");
    Ok(ExitCode::from(e.exit_code()))
}

/// The password comes from stdin (one trailing newline dropped) and is never printed.
/// The validator's log records and prints go to stderr (as `call`'s). With `--json`,
/// `{accepted, reason, error}` on stdout whatever the outcome.
pub async fn validate_password(
    apps: Result<Apps, HostError>,
    username: &str,
    existing_user: Option<&str>,
    json: bool,
    quiet: bool,
) -> Result<ExitCode, CliError> {
    let answer = |accepted: bool, reason: Option<&str>, error: Option<serde_json::Value>| json!({"accepted": accepted, "reason": reason, "error": error});
    let verdict = match ask_validator(apps, username, existing_user, quiet).await {
        Ok(v) => v,
        Err(e) => return answer_error(json, answer(false, None, None), e, json!({})),
    };
    let (code, out) = match verdict {
        Ok(()) => (0, answer(true, None, None)),
        Err(PasswordError::Rejected(reason)) => {
            errln!("{reason}");
            (1, answer(false, Some(&reason), None))
        }
        Err(e @ PasswordError::NotConfigured) => {
            let e = CliError::Usage(format!(
                "{e}; add password_validator = \"module:function\" to [auth]"
            ));
            return answer_error(json, answer(false, None, None), e, json!({}));
        }
        Err(PasswordError::Failed { reference, error }) => {
            let failure = CallFailure::from(&error);
            let code = crate::call::report_failure(&reference, &failure);
            (
                code,
                answer(false, None, serde_json::to_value(failure).ok()),
            )
        }
    };
    if json {
        outln!("{out}");
    }
    Ok(ExitCode::from(code))
}

/// Reads the password and asks the install's validator, its log lines on stderr.
async fn ask_validator(
    apps: Result<Apps, HostError>,
    username: &str,
    existing_user: Option<&str>,
    quiet: bool,
) -> Result<Result<(), PasswordError>, CliError> {
    let apps = apps?;
    let existing = match existing_user {
        None => None,
        Some(text) => Some(Value::Map(json_map("--existing-user", Some(text))?)),
    };
    let mut password = String::new();
    std::io::stdin()
        .read_to_string(&mut password)
        .map_err(|e| CliError::Usage(format!("cannot read the password from stdin: {e}")))?;
    let password = password
        .strip_suffix('\n')
        .map(|p| p.strip_suffix('\r').unwrap_or(p))
        .unwrap_or(&password);
    let host = Host::start_checked(apps).await?;
    let (logs, printer) = log_printer(quiet);
    let verdict = host
        .validate_password(username, password, existing, Some(logs.into()))
        .await;
    host.shutdown(SHUTDOWN).await;
    drop(host); // with its workers' last log senders
    let _ = printer.await;
    Ok(verdict)
}

/// 0 when no hook vetoed (failed `after_*` hooks are reported on stderr); 1 on a veto;
/// 2 for an event that neither `[hooks]` nor the documented events name. The hooks' log
/// records and prints go to stderr (as `call`'s). With `--json`, `{event, passed, veto,
/// failed, error}` on stdout whatever the outcome.
pub async fn dispatch(
    apps: Result<Apps, HostError>,
    event: &str,
    payload: Option<&str>,
    json: bool,
    quiet: bool,
) -> Result<ExitCode, CliError> {
    let answer = json!({"event": event, "passed": [], "veto": null, "failed": [], "error": null});
    let apps = match apps {
        Ok(apps) => apps,
        Err(e) => return answer_error(json, answer, e.into(), json!({})),
    };
    let known = apps.known_events();
    if !known.iter().any(|k| k == event) {
        let e = CliError::Usage(format!(
            "no hook in app.toml [hooks] uses the event {event:?} and it is not a documented event; the known events are {}",
            known.join(", ")
        ));
        return answer_error(json, answer, e, json!({"known_events": known}));
    }
    let out = match run_hooks(apps, event, payload, quiet).await {
        Ok(out) => out,
        Err(e) => return answer_error(json, answer, e, json!({})),
    };
    for (reference, e) in &out.failed {
        match e {
            CallError::Raised(x) => errln!(
                "snakepit: hook {reference} raised {}: {}",
                x.type_name,
                x.message
            ),
            e => errln!("snakepit: hook {reference}: {e}"),
        }
    }
    if json {
        let failed: Vec<_> = out
            .failed
            .iter()
            .map(|(r, e)| json!({"reference": r, "error": e.to_string()}))
            .collect();
        let veto = out
            .veto
            .as_ref()
            .map(|v| json!({"reference": v.reference, "message": v.message}));
        outln!(
            "{}",
            json!({"event": event, "passed": out.passed, "veto": veto, "failed": failed, "error": null})
        );
    }
    match out.veto {
        Some(v) => {
            errln!("{}", v.message);
            Ok(ExitCode::from(1))
        }
        None => Ok(ExitCode::SUCCESS),
    }
}

/// Starts the install and calls the event's hooks, their log lines on stderr.
async fn run_hooks(
    apps: Apps,
    event: &str,
    payload: Option<&str>,
    quiet: bool,
) -> Result<snakepit_host::Dispatch, CliError> {
    let payload = json_map("--payload", payload)?;
    let host = Host::start_checked(apps).await?;
    let (logs, printer) = log_printer(quiet);
    let out = host.dispatch(event, payload, Some(logs.into())).await;
    host.shutdown(SHUTDOWN).await;
    drop(host); // with its workers' last log senders
    let _ = printer.await;
    Ok(out)
}
