//! `snakepit runs` (the run history, newest first) and `snakepit runs show ID` (one
//! run: its steps, their results and errors with tracebacks, and its log stream).
//! Opening the history marks the runs of a supervisor that died `interrupted`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use snakepit_state::{level_name, RunFilter, RunRecord};

use crate::apps::Apps;
use crate::error::CliError;
use crate::run::{open_state, out, state_error};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run: its steps, results, errors with tracebacks, and logs.
    Show {
        /// The run id, or a prefix of it that names one run.
        id: String,
    },
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(v).map_err(|e| CliError::Pool(format!("cannot print: {e}")))
}

fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// `12ms`, `3.4s`, `2m 5s`.
fn seconds(d: std::time::Duration) -> String {
    match d.as_millis() {
        ms @ 0..=999 => format!("{ms}ms"),
        1000..=59_999 => format!("{:.1}s", d.as_secs_f64()),
        _ => format!("{}m {}s", d.as_secs() / 60, d.as_secs() % 60),
    }
}

/// The run table (or, with `--json`, the runs as a JSON list).
pub async fn list(
    apps: Apps,
    job: Option<String>,
    limit: u32,
    as_json: bool,
) -> Result<ExitCode, CliError> {
    let state = open_state(&apps).await?;
    let what = match &job {
        Some(j) => format!("no runs of job {j:?} recorded yet"),
        None => "no runs recorded yet".to_owned(),
    };
    let runs = state
        .runs(&RunFilter { job, limit })
        .await
        .map_err(state_error)?;
    if as_json {
        out(&json(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        eprintln!("{what} in {}", state.url());
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    let mut rows = vec![[
        "ID".to_owned(),
        "JOB".to_owned(),
        "TRIGGER".to_owned(),
        "USER".to_owned(),
        "STATUS".to_owned(),
        "SCHEDULED FOR (UTC)".to_owned(),
        "STARTED (UTC)".to_owned(),
        "DURATION".to_owned(),
    ]];
    for r in &runs {
        rows.push([
            r.id.clone(),
            r.job.clone(),
            r.trigger.clone(),
            r.session_user.clone(),
            r.status.clone(),
            time(r.scheduled_for),
            r.started_at.map(time).unwrap_or_else(|| "-".into()),
            r.duration(now).map(seconds).unwrap_or_else(|| "-".into()),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        out(cells.join("  ").trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// One run in full (or, with `--json`, its record).
pub async fn show(apps: Apps, id: &str, as_json: bool) -> Result<ExitCode, CliError> {
    let state = open_state(&apps).await?;
    let Some(record) = state.run(id).await.map_err(state_error)? else {
        return Err(CliError::Usage(format!(
            "no run {id:?} in {}; `snakepit runs` lists the runs",
            state.url()
        )));
    };
    if as_json {
        out(&json(&record)?);
    } else {
        out(render(&record, Utc::now()).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// A run record for a person.
pub fn render(rec: &RunRecord, now: DateTime<Utc>) -> String {
    let r = &rec.run;
    let mut out = format!("run {}\n", r.id);
    let mut field = |k: &str, v: String| out.push_str(&format!("  {k:<14} {v}\n"));
    field("job", r.job.clone());
    field(
        "status",
        match &r.error {
            Some(e) => format!("{} — {e}", r.status),
            None => r.status.clone(),
        },
    );
    field("trigger", format!("{} by {}", r.trigger, r.session_user));
    field("scheduled for", format!("{} UTC", time(r.scheduled_for)));
    if let Some(t) = r.started_at {
        field("started", format!("{} UTC", time(t)));
    }
    if let Some(t) = r.finished_at {
        let took = r.duration(now).map(seconds).unwrap_or_default();
        field("finished", format!("{} UTC ({took})", time(t)));
    }
    field("params", r.params.to_string());
    out.push_str("\nsteps\n");
    for s in &rec.steps {
        let took = match (s.started_at, s.finished_at) {
            (Some(a), Some(b)) => (b - a)
                .to_std()
                .map(|d| format!(", {}", seconds(d)))
                .unwrap_or_default(),
            _ => String::new(),
        };
        out.push_str(&format!(
            "  {}. {} — {} ({} attempt{}{took})\n",
            s.position + 1,
            s.name,
            s.status,
            s.attempts,
            if s.attempts == 1 { "" } else { "s" }
        ));
        if let Some(result) = &s.result {
            out.push_str(&format!("     result: {result}\n"));
        }
        if let Some(e) = &s.error {
            out.push_str(&format!("     error: {}: {}\n", e.type_name, e.message));
            if let Some(tb) = &e.traceback {
                for line in tb.trim_end().lines() {
                    out.push_str(format!("       {line}").trim_end());
                    out.push('\n');
                }
            }
        }
    }
    if !rec.connector_calls.is_empty() {
        out.push_str("\nconnector calls\n");
        for c in &rec.connector_calls {
            let rows = match c.row_count {
                Some(1) => ", 1 row".to_owned(),
                Some(n) => format!(", {n} rows"),
                None => String::new(),
            };
            let took = seconds(std::time::Duration::from_micros(c.duration_us.max(0) as u64));
            out.push_str(&format!(
                "  {} {} → {}.{} — {}{rows}, {took}\n",
                c.time.format("%H:%M:%S%.3f"),
                c.package,
                c.connector,
                c.target,
                c.outcome
            ));
        }
    }
    out.push_str("\nlogs\n");
    if rec.logs.is_empty() {
        out.push_str("  (none)\n");
    }
    for l in &rec.logs {
        let step = match (&l.step, l.attempt) {
            (Some(s), Some(a)) => format!("{s}#{a}"),
            (Some(s), None) => s.clone(),
            _ => "-".into(),
        };
        let mut lines = l.message.lines();
        out.push_str(&format!(
            "  {} {step} {} {}: {}\n",
            l.time.format("%H:%M:%S%.3f"),
            level_name(l.level),
            l.logger,
            lines.next().unwrap_or("")
        ));
        for more in lines {
            out.push_str(&format!("      {more}\n"));
        }
    }
    out
}
