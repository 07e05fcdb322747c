//! `snakepit jobs`: the install's jobs, their schedules, next ticks and latest runs, read
//! from its jobs.toml files and its run history (no serve needed).

use std::process::ExitCode;

use snakepit_jobs::job_reports;

use crate::apps::Apps;
use crate::error::CliError;
use crate::output::{errln, outln};
use crate::run::{load_jobs, open_state, state_error};

/// The jobs as a table on stdout (with `--json`, the list `GET /api/jobs` returns too).
pub async fn list(apps: Apps, as_json: bool) -> Result<ExitCode, CliError> {
    let jobs = load_jobs(&apps)?;
    let state = open_state(&apps).await?;
    let reports = job_reports(&jobs, &state, chrono::Utc::now())
        .await
        .map_err(state_error)?;
    if as_json {
        let text = serde_json::to_string_pretty(&reports)
            .map_err(|e| CliError::Pool(format!("cannot print the jobs: {e}")))?;
        outln!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    if reports.is_empty() {
        errln!(
            "no jobs: no jobs.toml in {} or its plugins/ defines one",
            apps.dir.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![[
        "JOB".to_owned(),
        "SCHEDULE".to_owned(),
        "NEXT TICK (UTC)".to_owned(),
        "LAST RUN".to_owned(),
        "STATUS".to_owned(),
    ]];
    for j in &reports {
        let schedule = match &j.schedule {
            Some(s) if j.timezone == "UTC" => s.clone(),
            Some(s) => format!("{s} ({})", j.timezone),
            None => "-".to_owned(),
        };
        let (last, status) = match &j.last_run {
            Some(r) => (r.id.clone(), r.status.clone()),
            None => ("never".to_owned(), "-".to_owned()),
        };
        rows.push([
            j.name.clone(),
            schedule,
            j.next_tick.clone().unwrap_or_else(|| "-".to_owned()),
            last,
            status,
        ]);
    }
    crate::table::print(&rows);
    Ok(ExitCode::SUCCESS)
}
