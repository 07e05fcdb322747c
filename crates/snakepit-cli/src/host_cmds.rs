//! `snakepit check`, `validate-password` and `dispatch`: the plugin host's commands.

use std::io::Read;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use snakepit::{CallError, Value};
use snakepit_host::{Host, HostError, PasswordError, Problem};

use crate::apps::Apps;
use crate::call::json_map;
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

/// The password comes from stdin (one trailing newline dropped) and is never printed.
pub async fn validate_password(
    apps: Apps,
    username: &str,
    existing_user: Option<&str>,
) -> Result<ExitCode, CliError> {
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
    let result = host.validate_password(username, password, existing).await;
    host.shutdown(SHUTDOWN).await;
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(PasswordError::Rejected(reason)) => {
            errln!("{reason}");
            Ok(ExitCode::from(1))
        }
        Err(e @ PasswordError::NotConfigured) => Err(CliError::Usage(format!(
            "{e}; add password_validator = \"module:function\" to [auth]"
        ))),
        Err(PasswordError::Failed { reference, error }) => Ok(ExitCode::from(
            crate::call::report_error(&reference, &error),
        )),
    }
}

/// 0 when no hook vetoed (failed `after_*` hooks are reported on stderr); 1 on a veto.
pub async fn dispatch(
    apps: Apps,
    event: &str,
    payload: Option<&str>,
    json: bool,
) -> Result<ExitCode, CliError> {
    let payload = json_map("--payload", payload)?;
    let host = Host::start_checked(apps).await?;
    let out = host.dispatch(event, payload).await;
    host.shutdown(SHUTDOWN).await;
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
            .map(|(r, e)| serde_json::json!({"reference": r, "error": e.to_string()}))
            .collect();
        let veto = out
            .veto
            .as_ref()
            .map(|v| serde_json::json!({"reference": v.reference, "message": v.message}));
        outln!(
            "{}",
            serde_json::json!({"passed": out.passed, "veto": veto, "failed": failed})
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
