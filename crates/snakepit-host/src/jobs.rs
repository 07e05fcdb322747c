//! jobs.toml (README, "Jobs"), read for load-time checks: `<apps>/jobs.toml` and every
//! `<apps>/plugins/<pkg>/jobs.toml`. This module reads the files against their schema
//! and finds what is wrong before any run; running them (templates, retries, the
//! scheduler, the run history) is the `snakepit-jobs` crate's, which reads the jobs
//! through [`load_jobs`], cron schedules through [`parse_cron`] and `[runtime]
//! timezone` through [`parse_timezone`].

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{de::Error as _, Deserialize, Deserializer};
use snakepit::{Map, Value};

use crate::config::{duration, toml_error};
use crate::Problem;

/// The context keys a job python step receives (README, "Jobs"), besides its kwargs.
pub const JOB_STEP_CONTEXT: [&str; 10] = [
    "connectors",
    "pools",
    "job_id",
    "run_id",
    "step_name",
    "params",
    "step_kwargs",
    "previous_step",
    "logger",
    "session_user",
];

/// The templates a kwarg string may use, besides `${params.NAME}`.
pub const TEMPLATES: [&str; 6] = [
    "month.previous",
    "month.current",
    "date.today",
    "date.yesterday",
    "job.name",
    "run.id",
];

/// A jobs.toml, as written. Unknown keys anywhere are errors.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobsToml {
    #[serde(default)]
    pub jobs: Vec<Job>,
}

/// `[[jobs]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Job {
    pub name: String,
    /// 5-field cron.
    pub schedule: Option<String>,
    #[serde(default)]
    pub params: toml::Table,
    #[serde(default)]
    pub steps: Vec<Step>,
}

/// `[[jobs.steps]]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    pub name: String,
    /// Only "python" for now.
    #[serde(rename = "type")]
    pub kind: String,
    pub callable: Option<String>,
    #[serde(default)]
    pub kwargs: toml::Table,
    #[serde(default, deserialize_with = "retries")]
    pub retries: Option<u32>,
    pub backoff: Option<Backoff>,
    #[serde(default, deserialize_with = "duration")]
    pub timeout: Option<Duration>,
}

/// `backoff` between retries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backoff {
    Exponential,
    Fixed,
}

fn retries<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    match toml::Value::deserialize(d)? {
        toml::Value::Integer(n) if (0..=i64::from(u32::MAX)).contains(&n) => Ok(Some(n as u32)),
        v => Err(D::Error::custom(format!(
            "must be an integer >= 0, got {v}"
        ))),
    }
}

/// One jobs.toml file and the jobs that parsed.
#[derive(Debug)]
pub struct JobsFile {
    pub file: PathBuf,
    /// The file relative to the apps dir, for messages: `jobs.toml`,
    /// `plugins/billing/jobs.toml`.
    pub shown: String,
    pub jobs: Vec<Job>,
}

/// A python step to validate in a worker.
#[derive(Debug)]
pub struct StepCheck {
    pub file: PathBuf,
    pub entry: String,
    pub callable: String,
    pub kwargs: Map,
    /// The kwargs that are a whole date or month template (sent with a sample value),
    /// and the template: a problem names the template, not the sample.
    pub templates: Vec<(String, String)>,
}

/// The samples a whole `${date.*}` or `${month.*}` template is validated with.
const SAMPLE_DAY: &str = "2000-01-31";
const SAMPLE_MONTH: &str = "2000-01";

/// A worker's reason for refusing a step, with each template's sample replaced by the
/// template (`kwarg 'n' = ${date.today} (a date template) does not match ...`).
pub fn explain_templates(reason: String, templates: &[(String, String)]) -> String {
    let mut reason = reason;
    for (key, template) in templates {
        for (sample, kind) in [
            ("datetime.date(2000, 1, 31) (date)", "a date"),
            ("'2000-01' (str)", "a month's YYYY-MM text"),
        ] {
            reason = reason.replace(
                &format!("kwarg '{key}' = {sample}"),
                &format!("kwarg '{key}' = {template} ({kind} template)"),
            );
        }
    }
    reason
}

/// The jobs.toml files of an install: `<apps>/jobs.toml`, then
/// `<apps>/plugins/<pkg>/jobs.toml` by package name.
pub fn jobs_files(dir: &Path) -> Vec<(PathBuf, String)> {
    let mut out = Vec::new();
    let top = dir.join("jobs.toml");
    if top.is_file() {
        out.push((top, "jobs.toml".to_owned()));
    }
    let mut pkgs: Vec<String> = std::fs::read_dir(dir.join("plugins"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("jobs.toml").is_file())
        .filter_map(|e| e.file_name().to_str().map(str::to_owned))
        .collect();
    pkgs.sort();
    for pkg in pkgs {
        out.push((
            dir.join("plugins").join(&pkg).join("jobs.toml"),
            format!("plugins/{pkg}/jobs.toml"),
        ));
    }
    out
}

/// Reads every jobs.toml of the install in `dir` and checks what can be checked without
/// a worker; returns the files, the python steps to validate in a worker, and every
/// problem found.
pub fn load_jobs(dir: &Path) -> (Vec<JobsFile>, Vec<StepCheck>, Vec<Problem>) {
    let mut files = Vec::new();
    let mut problems = Vec::new();
    for (file, shown) in jobs_files(dir) {
        let jobs = match std::fs::read_to_string(&file) {
            Ok(text) => parse_jobs(&file, &text, &mut problems),
            Err(e) => {
                problems.push(Problem {
                    file: file.clone(),
                    entry: "(file)".into(),
                    reason: format!("cannot read it: {e}"),
                });
                Vec::new()
            }
        };
        files.push(JobsFile { file, shown, jobs });
    }
    let mut steps = Vec::new();
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for f in &files {
        for job in &f.jobs {
            let entry = job_entry(Some(&job.name), None);
            let problem = |reason: String| Problem {
                file: f.file.clone(),
                entry: entry.clone(),
                reason,
            };
            match seen.get(job.name.as_str()) {
                Some(first) if *first == f.shown => problems.push(problem(format!(
                    "another job named {:?} comes earlier in {}; job names must be unique across all jobs.toml files",
                    job.name, f.shown
                ))),
                Some(first) => problems.push(problem(format!(
                    "another job named {:?} is in {first}; job names must be unique across all jobs.toml files ({first} and {})",
                    job.name, f.shown
                ))),
                None => {
                    seen.insert(&job.name, &f.shown);
                }
            }
            if let Some(s) = &job.schedule {
                if let Err(e) = check_cron(s) {
                    problems.push(problem(format!("schedule = {s:?}: {e}")));
                }
            }
            if job.steps.is_empty() {
                problems.push(problem(
                    "has no [[jobs.steps]]; a job needs at least one step".into(),
                ));
            }
            let mut step_names = BTreeSet::new();
            for step in &job.steps {
                let entry = job_entry(Some(&job.name), Some(&step.name));
                let mut problem = |reason: String| {
                    problems.push(Problem {
                        file: f.file.clone(),
                        entry: entry.clone(),
                        reason,
                    })
                };
                if !step_names.insert(step.name.as_str()) {
                    problem(format!(
                        "a second step named {:?} in this job; step names must be unique within a job",
                        step.name
                    ));
                }
                for (key, value) in &step.kwargs {
                    for reason in templates_in(value, &format!("kwargs.{key}"), &job.params) {
                        problem(reason);
                    }
                }
                if step.kind != "python" {
                    problem(format!(
                        "type = {:?} is not a step type; the only step type for now is \"python\"",
                        step.kind
                    ));
                    continue;
                }
                match &step.callable {
                    None => problem(
                        "has no callable; a python step needs callable = \"module.path:function\""
                            .into(),
                    ),
                    Some(callable) => steps.push(StepCheck {
                        file: f.file.clone(),
                        entry: entry.clone(),
                        callable: callable.clone(),
                        kwargs: step
                            .kwargs
                            .iter()
                            .map(|(k, v)| (k.clone(), to_value(&as_rendered(v, &job.params))))
                            .collect(),
                        templates: step
                            .kwargs
                            .iter()
                            .filter_map(|(k, v)| {
                                let t = v.as_str()?;
                                let name = t.strip_prefix("${")?.strip_suffix('}')?;
                                (name.starts_with("date.") || name.starts_with("month."))
                                    .then(|| (k.clone(), t.to_owned()))
                            })
                            .collect(),
                    }),
                }
            }
        }
    }
    (files, steps, problems)
}

/// A kwarg with the type it has once rendered, for checking it against the
/// callable's annotations: a string that is exactly one `${params.NAME}` takes the
/// param's value (and type), exactly one `${date.*}` is a date and exactly one
/// `${month.*}` a month's text (sample values: only their types matter); every other
/// template renders to a string.
fn as_rendered(v: &toml::Value, params: &toml::Table) -> toml::Value {
    match v {
        toml::Value::String(s) => match s.strip_prefix("${").and_then(|r| r.strip_suffix('}')) {
            Some("date.today" | "date.yesterday") => SAMPLE_DAY
                .parse::<toml::value::Datetime>()
                .map_or_else(|_| v.clone(), toml::Value::Datetime),
            Some("month.current" | "month.previous") => toml::Value::String(SAMPLE_MONTH.into()),
            Some(name) => name
                .strip_prefix("params.")
                .and_then(|name| params.get(name))
                .cloned()
                .unwrap_or_else(|| v.clone()),
            None => v.clone(),
        },
        toml::Value::Array(a) => {
            toml::Value::Array(a.iter().map(|v| as_rendered(v, params)).collect())
        }
        toml::Value::Table(t) => toml::Value::Table(
            t.iter()
                .map(|(k, v)| (k.clone(), as_rendered(v, params)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// `[[jobs]] "name"`, `[[jobs]] "name" step "step"`.
fn job_entry(job: Option<&str>, step: Option<&str>) -> String {
    let job = match job {
        Some(name) => format!("[[jobs]] {name:?}"),
        None => "[[jobs]]".to_owned(),
    };
    match step {
        Some(step) => format!("{job} step {step:?}"),
        None => job,
    }
}

/// Parses one jobs.toml. A syntax error is one problem for the file. A schema error is
/// reported per job: the file is cut at its `[[jobs]]` headers and each job is read on
/// its own (line numbers kept), so that one bad job does not hide the others.
fn parse_jobs(file: &Path, text: &str, problems: &mut Vec<Problem>) -> Vec<Job> {
    let problem = |entry: String, e: &toml::de::Error, text: &str| Problem {
        file: file.to_owned(),
        entry,
        reason: toml_error(text, e, "jobs.toml"),
    };
    if let Err(e) = toml::from_str::<toml::Table>(text) {
        problems.push(problem("(TOML syntax)".into(), &e, text));
        return Vec::new();
    }
    let whole = match toml::from_str::<JobsToml>(text) {
        Ok(doc) => return doc.jobs,
        Err(e) => e,
    };
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut starts: Vec<usize> = lines
        .iter()
        .enumerate()
        .filter(|(_, l)| l.trim_start().starts_with("[[jobs]]"))
        .map(|(i, _)| i)
        .collect();
    starts.insert(0, 0);
    starts.push(lines.len());
    let mut jobs = Vec::new();
    let mut found = false;
    for (i, w) in starts.windows(2).enumerate() {
        let (from, to) = (w[0], w[1]);
        if from == to {
            continue;
        }
        // Keep line numbers: the lines before the chunk become empty lines.
        let chunk = "\n".repeat(from) + &lines[from..to].concat();
        match toml::from_str::<JobsToml>(&chunk) {
            Ok(doc) => jobs.extend(doc.jobs),
            Err(e) => {
                found = true;
                let entry = match e.span() {
                    Some(span) => entry_at(&chunk, span.start, i),
                    None => entry_at(&chunk, chunk.len(), i),
                };
                problems.push(problem(entry, &e, &chunk));
            }
        }
    }
    if !found {
        problems.push(problem("(file)".into(), &whole, text));
    }
    jobs
}

/// The entry of the job (and step) at byte `at` of a one-job chunk.
fn entry_at(chunk: &str, at: usize, index: usize) -> String {
    let Ok(table) = toml::from_str::<toml::Table>(chunk) else {
        return "(file)".into();
    };
    let Some(job) = table
        .get("jobs")
        .and_then(|j| j.as_array())
        .and_then(|a| a.first())
    else {
        return "(top level)".into();
    };
    let name = |v: &toml::Value| v.get("name").and_then(|n| n.as_str()).map(str::to_owned);
    let job_name = name(job);
    // The lines up to and including the one of `at`: a missing key is reported at its
    // table's header.
    let end = chunk[at.min(chunk.len())..]
        .find('\n')
        .map_or(chunk.len(), |i| at + i);
    let step_headers = chunk[..end]
        .lines()
        .filter(|l| l.trim_start().starts_with("[[jobs.steps]]"))
        .count();
    let step = (step_headers > 0)
        .then(|| {
            job.get("steps")
                .and_then(|s| s.as_array())
                .and_then(|s| s.get(step_headers - 1))
                .map(|s| name(s).unwrap_or_else(|| format!("#{step_headers}")))
        })
        .flatten();
    match job_name {
        Some(name) => job_entry(Some(&name), step.as_deref()),
        None => format!("[[jobs]] #{index} (no name)"),
    }
}

/// Every bad `${...}` in the strings of `value` (also inside lists and tables).
fn templates_in(value: &toml::Value, path: &str, params: &toml::Table) -> Vec<String> {
    let mut out = Vec::new();
    match value {
        toml::Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(i) = rest.find("${") {
                let after = &rest[i + 2..];
                let Some(end) = after.find('}') else {
                    out.push(format!(
                        "{path}: {s:?} has a \"${{\" without its closing \"}}\""
                    ));
                    break;
                };
                let name = &after[..end];
                rest = &after[end + 1..];
                if TEMPLATES.contains(&name) {
                    continue;
                }
                if let Some(param) = name.strip_prefix("params.") {
                    if params.contains_key(param) {
                        continue;
                    }
                    let known: Vec<&str> = params.keys().map(String::as_str).collect();
                    let known = if known.is_empty() {
                        "it has no params".to_owned()
                    } else {
                        format!("its params are {}", known.join(", "))
                    };
                    out.push(format!(
                        "{path}: the template ${{{name}}} names no param of the job ({known})"
                    ));
                    continue;
                }
                let known: Vec<String> = TEMPLATES
                    .iter()
                    .map(|t| format!("${{{t}}}"))
                    .chain(["${params.NAME}".to_owned()])
                    .collect();
                out.push(format!(
                    "{path}: unknown template ${{{name}}}; the templates are {}",
                    known.join(", ")
                ));
            }
        }
        toml::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                out.extend(templates_in(v, &format!("{path}[{i}]"), params));
            }
        }
        toml::Value::Table(t) => {
            for (k, v) in t {
                out.extend(templates_in(v, &format!("{path}.{k}"), params));
            }
        }
        _ => {}
    }
    out
}

/// Checks a cron expression (see [`parse_cron`]).
pub fn check_cron(s: &str) -> Result<(), String> {
    parse_cron(s).map(|_| ())
}

/// Parses a cron expression of 5 fields (minute hour day-of-month month day-of-week)
/// or 6 fields (second first: `*/10 * * * * *` fires every ten seconds), each a comma
/// list of `*`, `N` or `N-M`, optionally `/STEP`; month and weekday names (`JAN`,
/// `MON`) are accepted; a day-of-month and a day-of-week both restricted match either
/// (Vixie cron). Years and `@daily`-style nicknames are not (README, "Jobs").
pub fn parse_cron(s: &str) -> Result<croner::Cron, String> {
    use croner::parser::{CronParser, Seconds, Year};
    const FIELDS: [(&str, &str); 6] = [
        ("second", "0-59"),
        ("minute", "0-59"),
        ("hour", "0-23"),
        ("day of month", "1-31"),
        ("month", "1-12 or JAN-DEC"),
        ("day of week", "0-7 or SUN-SAT"),
    ];
    let fields: Vec<&str> = s.split_whitespace().collect();
    let (names, seconds) = match fields.len() {
        5 => (&FIELDS[1..], Seconds::Disallowed),
        6 => (&FIELDS[..], Seconds::Required),
        n => {
            return Err(format!(
                "has {n} field(s); a schedule is 5-field cron (minute hour day-of-month month day-of-week), e.g. \"0 2 1 * *\", or 6 fields with the second first, e.g. \"*/10 * * * * *\""
            ))
        }
    };
    let parser = CronParser::builder()
        .seconds(seconds)
        .year(Year::Disallowed)
        .build();
    parser.parse(s).map_err(|e| {
        // Name the field: parse each one alone (the others `*`) with the same parser.
        let bad = (0..fields.len()).find_map(|i| {
            let alone: Vec<&str> = (0..fields.len())
                .map(|j| if j == i { fields[i] } else { "*" })
                .collect();
            parser.parse(&alone.join(" ")).err().map(|e| (i, e))
        });
        match bad {
            Some((i, e)) => {
                let (what, range) = names[i];
                let field = fields[i];
                let e = e.to_string();
                if e.contains("Range out of bounds") {
                    format!("the {what} field {field:?} has a range that runs backwards or leaves {range}")
                } else if e.contains("out of bounds") {
                    format!("the {what} field {field:?} is out of range {range}")
                } else {
                    let why = e.rsplit(": ").next().unwrap_or(&e).trim_end_matches('.');
                    format!("the {what} field {field:?} is not valid ({why}); it takes {range}, *, lists, ranges and /steps")
                }
            }
            None => format!("is not a cron schedule: {e}"),
        }
    })
}

/// `[runtime] timezone`: an IANA name (`Europe/Paris`); UTC when not set.
pub fn parse_timezone(name: Option<&str>) -> Result<chrono_tz::Tz, String> {
    match name {
        None => Ok(chrono_tz::UTC),
        Some(n) => n.parse().map_err(|_| {
            format!("{n:?} is not a time zone; use an IANA name like \"UTC\" or \"Europe/Paris\"")
        }),
    }
}

/// A bad `[runtime] timezone`, as a problem of app.toml (jobs run in that time zone).
pub fn timezone_problem(install: &crate::Install) -> Option<Problem> {
    let tz = install.config.runtime.timezone.as_deref();
    parse_timezone(tz).err().map(|reason| Problem {
        file: install.app_toml.clone(),
        entry: "[runtime] timezone".into(),
        reason,
    })
}

/// A TOML value as the worker receives it: strings, integers, floats, booleans, lists
/// and tables as themselves, a date as `date`, a date-time as `datetime`.
pub fn to_value(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::Str(s.clone()),
        toml::Value::Integer(n) => Value::Int(*n),
        toml::Value::Float(x) => Value::Float(*x),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Array(a) => Value::List(a.iter().map(to_value).collect()),
        toml::Value::Table(t) => {
            Value::Map(t.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
        }
        toml::Value::Datetime(d) => datetime(d).unwrap_or_else(|| Value::Str(d.to_string())),
    }
}

/// A TOML date → `date`, a date-time → `datetime` (aware with an offset); a bare time
/// has no wire type and stays a string.
fn datetime(d: &toml::value::Datetime) -> Option<Value> {
    let date = d.date?;
    let days = days_from_civil(i64::from(date.year), date.month.into(), date.day.into());
    let Some(t) = d.time else {
        return Some(Value::Date(i32::try_from(days).ok()?));
    };
    let secs =
        days * 86_400 + i64::from(t.hour) * 3600 + i64::from(t.minute) * 60 + i64::from(t.second);
    let local = secs * 1_000_000 + i64::from(t.nanosecond / 1000);
    let offset = d.offset.map(|o| match o {
        toml::value::Offset::Z => 0,
        toml::value::Offset::Custom { minutes } => i32::from(minutes) * 60,
    });
    let micros = local - i64::from(offset.unwrap_or(0)) * 1_000_000;
    Some(Value::DateTime(snakepit::DateTime { micros, offset }))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron() {
        for ok in [
            "0 2 1 * *",
            "*/15 * * * *",
            "0 9-17 * * 1-5",
            "0,30 * 1,15 * 0",
            "0 2 * * MON",
            "*/10 * * * * *",
            "30 0 2 1 * *",
        ] {
            assert_eq!(check_cron(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("0 2 1 *", "has 4 field(s)"),
            ("0 0 0 2 1 * *", "has 7 field(s)"),
            (
                "60 * * * * *",
                "the second field \"60\" is out of range 0-59",
            ),
            (
                "* 60 * * * *",
                "the minute field \"60\" is out of range 0-59",
            ),
            ("60 * * * *", "the minute field \"60\" is out of range 0-59"),
            (
                "* * * 0 *",
                "the month field \"0\" is out of range 1-12 or JAN-DEC",
            ),
            (
                "* 5-2 * * *",
                "the hour field \"5-2\" has a range that runs backwards",
            ),
            ("@daily", "has 1 field(s)"),
            (
                "*/0 * * * *",
                "the minute field \"*/0\" is not valid (Step cannot be zero)",
            ),
            (
                "* * * * MONX",
                "the day of week field \"MONX\" is not valid",
            ),
        ] {
            let e = check_cron(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn next_ticks_in_a_time_zone() {
        use chrono::TimeZone;
        let tz = parse_timezone(Some("Europe/Paris")).unwrap();
        let cron = parse_cron("0 2 1 * *").unwrap();
        let from = tz.with_ymd_and_hms(2026, 5, 20, 12, 0, 0).unwrap();
        let next = cron.find_next_occurrence(&from, false).unwrap();
        assert_eq!(next, tz.with_ymd_and_hms(2026, 6, 1, 2, 0, 0).unwrap());
        assert_eq!(next.naive_utc().to_string(), "2026-06-01 00:00:00");
        // Six fields: the second first.
        let every_10s = parse_cron("*/10 * * * * *").unwrap();
        let from = tz.with_ymd_and_hms(2026, 5, 20, 12, 0, 1).unwrap();
        let next = every_10s.find_next_occurrence(&from, false).unwrap();
        assert_eq!(next, tz.with_ymd_and_hms(2026, 5, 20, 12, 0, 10).unwrap());
        assert!(parse_timezone(Some("Mars/Olympus"))
            .unwrap_err()
            .contains("is not a time zone"));
        assert_eq!(parse_timezone(None), Ok(chrono_tz::UTC));
    }

    #[test]
    fn days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn templates() {
        let params: toml::Table = toml::from_str("region = \"eu\"").unwrap();
        let v: toml::Value = toml::from_str::<toml::Table>(
            "x = [\"${month.previous}-${params.region}\", { y = \"${run.id} ${nope} ${params.zone}\" }, \"${open\"]",
        )
        .unwrap()["x"]
            .clone();
        let out = templates_in(&v, "kwargs.x", &params);
        assert_eq!(out.len(), 3, "{out:#?}");
        assert!(out[0].starts_with("kwargs.x[1].y: unknown template ${nope}"));
        assert!(out[1].contains("${params.zone} names no param of the job (its params are region)"));
        assert!(out[2].starts_with("kwargs.x[2]: "));
    }

    fn parse(text: &str) -> (Vec<Job>, Vec<Problem>) {
        let mut problems = Vec::new();
        let jobs = parse_jobs(Path::new("jobs.toml"), text, &mut problems);
        (jobs, problems)
    }

    #[test]
    fn a_schema_error_is_per_job_with_line_and_column() {
        let (jobs, problems) = parse(
            r#"
[[jobs]]
name = "a"
[[jobs.steps]]
name = "s"
type = "python"
callable = "m:f"
retries = -1

[[jobs]]
name = "b"
[[jobs.steps]]
name = "t"
type = "python"
callable = "m:f"
backoff = "fixed"
timeout = "10m"

[[jobs]]
name = "c"
shedule = "* * * * *"
"#,
        );
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].steps[0].backoff, Some(Backoff::Fixed));
        assert_eq!(jobs[0].steps[0].timeout, Some(Duration::from_secs(600)));
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0].entry, "[[jobs]] \"a\" step \"s\"");
        assert!(
            problems[0]
                .reason
                .contains("line 8, column 11: [[jobs.steps]] retries must be an integer >= 0"),
            "{problems:#?}"
        );
        assert_eq!(problems[1].entry, "[[jobs]] \"c\"");
        assert!(
            problems[1]
                .reason
                .contains("line 21, column 1: [[jobs]] shedule is not a setting"),
            "{problems:#?}"
        );
        let (_, problems) = parse(
            "[[jobs]]\nname = \"a\"\n[[jobs.steps]]\nname = \"s\"\n[[jobs]]\nschedule = \"* * * * *\"\n",
        );
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert_eq!(problems[0].entry, "[[jobs]] \"a\" step \"s\"");
        assert!(
            problems[0]
                .reason
                .contains("line 3, column 1: [[jobs.steps]] is missing field `type`"),
            "{problems:#?}"
        );
        assert_eq!(problems[1].entry, "[[jobs]] #2 (no name)");
        let (_, problems) = parse("[[jobs]]\nname = \"a\n");
        assert_eq!(problems[0].entry, "(TOML syntax)");
        assert!(
            problems[0].reason.contains("line 2, column "),
            "{problems:#?}"
        );
    }
}
