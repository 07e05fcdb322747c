//! The jobs of an install as `snakepit jobs`, `snakepit status` and the web console show
//! them: schedule, next tick, latest run.

use chrono::{DateTime, SecondsFormat, Utc};
use snakepit_host::{JobReport, LastRun};
use snakepit_state::{RunFilter, State, StateError};

use crate::jobset::JobSet;

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Every job of `jobs`, by name, with its next tick after `now` and its latest run in
/// `state`.
pub async fn job_reports(
    jobs: &JobSet,
    state: &State,
    now: DateTime<Utc>,
) -> Result<Vec<JobReport>, StateError> {
    let local = now.with_timezone(&jobs.timezone);
    let mut out = Vec::new();
    for name in jobs.names() {
        let Some(job) = jobs.get(name) else { continue };
        let next_tick = job.schedule.as_ref().and_then(|(_, cron)| {
            let next = cron.find_next_occurrence(&local, false).ok()?;
            Some(rfc3339(next.with_timezone(&Utc)))
        });
        let filter = RunFilter {
            job: Some(name.to_owned()),
            limit: 1,
        };
        let last_run = state
            .runs(&filter)
            .await?
            .into_iter()
            .next()
            .map(|r| LastRun {
                id: r.id,
                trigger: r.trigger,
                status: r.status,
                queued_at: rfc3339(r.queued_at),
                finished_at: r.finished_at.map(rfc3339),
            });
        out.push(JobReport {
            name: name.to_owned(),
            schedule: job.schedule.as_ref().map(|(s, _)| s.clone()),
            timezone: jobs.timezone.name().to_owned(),
            next_tick,
            params: job.params.iter().map(|(k, _)| k.clone()).collect(),
            steps: job.steps.iter().map(|s| s.name.clone()).collect(),
            last_run,
        });
    }
    Ok(out)
}
