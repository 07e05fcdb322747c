//! `snakepit runs` (the run history, newest first), `snakepit runs show ID` (one run:
//! its steps, their results and errors with tracebacks, its log stream and a summary of
//! its connector calls) and `snakepit runs show ID --calls` (each connector call, a page
//! at a time). Opening the history marks the runs of a supervisor that died
//! `interrupted`.

use std::process::ExitCode;

use chrono::{DateTime, Utc};
use clap::Subcommand;
use snakepit_proto::level_name;
use snakepit_state::{AuditRow, CallPage, RunFilter, RunRecord, StepUsage};

use crate::apps::Apps;
use crate::error::CliError;
use crate::output::{errln, outln};
use crate::run::{open_state, state_error};

#[derive(Debug, Subcommand)]
pub enum RunsCommand {
    /// One run: its steps, results, errors with tracebacks, and logs.
    Show {
        /// The run id, or a prefix of it that names one run.
        id: String,
        /// List the run's connector calls instead, oldest first, a page at a time.
        #[arg(long)]
        calls: bool,
        /// Calls per page (with --calls).
        #[arg(long, default_value_t = 100, value_name = "N", requires = "calls",
              value_parser = clap::value_parser!(u32).range(1..))]
        limit: u32,
        /// Start after this call: the `next_after` of the previous page (with --calls).
        #[arg(long, value_name = "CALL", requires = "calls")]
        after: Option<i64>,
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

/// What a step (or a call) cost, on one line: `wall 1.2ms · cpu 850µs (user 610µs, sys
/// 240µs) · peak RSS 23.4 MiB · 2 host requests, 310µs`.
pub fn usage_line(u: &StepUsage) -> String {
    format!(
        "wall {} · cpu {} (user {}, sys {}) · peak RSS {:.1} MiB · {} host request{}, {}",
        micros(u.wall_us),
        micros(u.cpu_user_us + u.cpu_sys_us),
        micros(u.cpu_user_us),
        micros(u.cpu_sys_us),
        u.peak_rss_bytes as f64 / f64::from(1u32 << 20),
        u.host_requests,
        if u.host_requests == 1 { "" } else { "s" },
        micros(u.host_us),
    )
}

/// A duration given in µs: `85µs`, `1.2ms`, then as [`seconds`].
fn micros(us: i64) -> String {
    match us.max(0) {
        us @ 0..=999 => format!("{us}µs"),
        us @ 1000..=999_999 => format!("{:.1}ms", us as f64 / 1000.0),
        us => seconds(std::time::Duration::from_micros(us as u64)),
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
        outln!("{}", json(&runs)?);
        return Ok(ExitCode::SUCCESS);
    }
    if runs.is_empty() {
        errln!("{what} in {}", state.url());
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
    crate::table::print(&rows);
    Ok(ExitCode::SUCCESS)
}

/// A page of `runs show ID --calls`: at most `limit` calls after the call `after`.
#[derive(Debug, Clone, Copy)]
pub struct CallsPage {
    pub limit: u32,
    pub after: Option<i64>,
}

/// One run in full (or, with `--json`, its record); with `calls`, a page of its
/// connector calls instead.
pub async fn show(
    apps: Apps,
    id: &str,
    calls: Option<CallsPage>,
    as_json: bool,
) -> Result<ExitCode, CliError> {
    let state = open_state(&apps).await?;
    let missing = || {
        CliError::Usage(format!(
            "no run {id:?} in {}; `snakepit runs` lists the runs",
            state.url()
        ))
    };
    if let Some(page) = calls {
        let found = state.calls(id, page.after, page.limit).await;
        let after = page.after;
        let page = found.map_err(state_error)?.ok_or_else(missing)?;
        let text = if as_json {
            json(&page)?
        } else {
            render_calls(&page, after)
        };
        outln!("{text}");
        return Ok(ExitCode::SUCCESS);
    }
    let record = state
        .run(id)
        .await
        .map_err(state_error)?
        .ok_or_else(missing)?;
    if as_json {
        outln!("{}", json(&record)?);
    } else {
        outln!("{}", render(&record, Utc::now()).trim_end());
    }
    Ok(ExitCode::SUCCESS)
}

/// How a page that starts after `after` is introduced.
fn page_start(after: Option<i64>) -> String {
    match after {
        Some(a) => format!("after call #{a}"),
        None => "from the first".to_owned(),
    }
}

/// One connector call on one line.
fn call_line(c: &AuditRow) -> String {
    let rows = match c.row_count {
        Some(1) => ", 1 row".to_owned(),
        Some(n) => format!(", {n} rows"),
        None => String::new(),
    };
    format!(
        "#{} {} {} → {}.{} — {}{rows}, {}",
        c.id,
        c.time.format("%H:%M:%S%.3f"),
        c.package,
        c.connector,
        c.target,
        c.outcome,
        micros(c.duration_us)
    )
}

/// A page of a run's connector calls for a person, with the command for the next.
pub fn render_calls(page: &CallPage, after: Option<i64>) -> String {
    let start = page_start(after);
    let mut text = format!(
        "connector calls of run {} ({} in all; {} shown, {start})\n",
        page.run_id,
        page.total,
        page.calls.len()
    );
    for c in &page.calls {
        text.push_str(&format!("  {}\n", call_line(c)));
    }
    match page.next_after {
        Some(next) => text.push_str(&format!(
            "next page: snakepit runs show {} --calls --after {next}",
            page.run_id
        )),
        None => text.push_str("(last page)"),
    }
    text
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
        if let Some(u) = &s.usage {
            out.push_str(&format!("     cost: {}\n", usage_line(u)));
        }
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
    if !rec.connector_calls.is_empty() || rec.connector_calls_dropped > 0 {
        let calls: i64 = rec.connector_calls.iter().map(|c| c.calls).sum();
        out.push_str(&format!(
            "\nconnector calls ({calls}; each: snakepit runs show {} --calls)\n",
            r.id
        ));
        let mut rows = vec![[
            "PACKAGE",
            "CONNECTOR",
            "TARGET",
            "CALLS",
            "ROWS",
            "ERRORS",
            "TOTAL",
            "P50",
            "P99",
        ]
        .map(str::to_owned)];
        for c in &rec.connector_calls {
            rows.push([
                c.package.clone(),
                c.connector.clone(),
                c.target.clone(),
                c.calls.to_string(),
                c.rows.map_or_else(|| "-".to_owned(), |n| n.to_string()),
                c.errors.to_string(),
                micros(c.total_us),
                micros(c.p50_us),
                micros(c.p99_us),
            ]);
        }
        for line in crate::table::lines(&rows, "  ") {
            out.push_str(&line);
            out.push('\n');
        }
        if rec.connector_calls_dropped > 0 {
            out.push_str(&format!(
                "  and {} calls not recorded: the history did not keep up with them\n",
                rec.connector_calls_dropped
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
