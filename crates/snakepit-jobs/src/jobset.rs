//! The jobs of an install, ready to run: every jobs.toml read (by
//! `snakepit_host::load_jobs`), cron schedules parsed, the time zone resolved.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use chrono_tz::Tz;
use snakepit::{Map, Value};
use snakepit_host::{load_jobs, parse_cron, parse_timezone, to_value, Backoff, Install, Problem};

/// A job as the runner runs it.
#[derive(Debug, Clone)]
pub struct JobDef {
    pub name: String,
    /// The jobs.toml that defines it.
    pub file: PathBuf,
    /// The cron expression and its parsed form.
    pub schedule: Option<(String, croner::Cron)>,
    /// `params`, as values.
    pub params: Map,
    pub steps: Vec<StepDef>,
}

/// A python step.
#[derive(Debug, Clone)]
pub struct StepDef {
    pub name: String,
    pub callable: String,
    /// The kwargs as written (templates not yet rendered).
    pub kwargs: Map,
    /// Attempts after the first (default 0).
    pub retries: u32,
    /// Default [`Backoff::Fixed`].
    pub backoff: Backoff,
    /// Per-attempt timeout; None: the pool's `call_timeout`.
    pub timeout: Option<Duration>,
}

/// Every job of an install and the time zone their schedules and templates use.
#[derive(Debug, Clone)]
pub struct JobSet {
    pub timezone: Tz,
    jobs: BTreeMap<String, Arc<JobDef>>,
}

impl JobSet {
    /// Reads every jobs.toml of `install` and `[runtime] timezone`. Fails with the
    /// problems found without a worker (schema, names, cron, templates, time zone);
    /// callables are validated when the host opens.
    pub fn load(install: &Install) -> Result<JobSet, Vec<Problem>> {
        let (files, _steps, mut problems) = load_jobs(&install.dir);
        problems.extend(snakepit_host::timezone_problem(install));
        let timezone = parse_timezone(install.config.runtime.timezone.as_deref());
        let (Ok(timezone), true) = (timezone, problems.is_empty()) else {
            return Err(problems);
        };
        let mut jobs = BTreeMap::new();
        for f in files {
            for job in f.jobs {
                let schedule = match job.schedule {
                    Some(s) => match parse_cron(&s) {
                        Ok(c) => Some((s, c)),
                        Err(_) => continue, // reported by load_jobs
                    },
                    None => None,
                };
                let steps = job
                    .steps
                    .into_iter()
                    .filter_map(|s| {
                        Some(StepDef {
                            name: s.name,
                            callable: s.callable?,
                            kwargs: table(&s.kwargs),
                            retries: s.retries.unwrap_or(0),
                            backoff: s.backoff.unwrap_or(Backoff::Fixed),
                            timeout: s.timeout,
                        })
                    })
                    .collect();
                let def = JobDef {
                    name: job.name.clone(),
                    file: f.file.clone(),
                    schedule,
                    params: table(&job.params),
                    steps,
                };
                jobs.insert(job.name, Arc::new(def));
            }
        }
        Ok(JobSet { timezone, jobs })
    }

    /// A job by name.
    pub fn get(&self, name: &str) -> Option<&Arc<JobDef>> {
        self.jobs.get(name)
    }

    /// Every job name, sorted.
    pub fn names(&self) -> Vec<&str> {
        self.jobs.keys().map(String::as_str).collect()
    }

    /// The jobs that have a schedule.
    pub fn scheduled(&self) -> impl Iterator<Item = (&Arc<JobDef>, &croner::Cron)> {
        self.jobs
            .values()
            .filter_map(|j| j.schedule.as_ref().map(|(_, c)| (j, c)))
    }
}

fn table(t: &toml::Table) -> Map {
    t.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()
}

impl JobDef {
    /// The job's params with `overrides` (`--param K=V`) applied: a declared param takes
    /// the type it is declared with (`true`/`false` for a bool, a number for an int or
    /// a float, any text for a string; a list, table or date param takes JSON); an
    /// undeclared name is an error naming the declared ones (it is likely a typo).
    pub fn params_with(&self, overrides: &[(String, String)]) -> Result<Map, String> {
        let mut params = self.params.clone();
        for (key, text) in overrides {
            let Some(slot) = params.iter_mut().find(|(k, _)| k == key) else {
                let known: Vec<&str> = self.params.iter().map(|(k, _)| k.as_str()).collect();
                return Err(format!(
                    "--param {key}={text}: the job {:?} has no param {key:?} ({})",
                    self.name,
                    if known.is_empty() {
                        "it has no params".to_owned()
                    } else {
                        format!("its params are {}", known.join(", "))
                    }
                ));
            };
            let wrong = |what: &str| {
                format!(
                    "--param {key}={text}: the param {key:?} of {:?} is {what}",
                    self.name
                )
            };
            slot.1 = match &slot.1 {
                Value::Str(_) => Value::Str(text.clone()),
                Value::Bool(_) => match text.as_str() {
                    "true" => Value::Bool(true),
                    "false" => Value::Bool(false),
                    _ => return Err(wrong("a bool; give true or false")),
                },
                Value::Int(_) => Value::Int(text.parse().map_err(|_| wrong("an integer"))?),
                Value::Float(_) => Value::Float(text.parse().map_err(|_| wrong("a number"))?),
                _ => serde_json::from_str::<serde_json::Value>(text)
                    .map(|j| Value::from_json(&j))
                    .map_err(|e| wrong(&format!("a list, table or date; give JSON ({e})")))?,
            };
        }
        Ok(params)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_take_the_declared_type() {
        let job = JobDef {
            name: "j".into(),
            file: "jobs.toml".into(),
            schedule: None,
            params: vec![
                ("region".into(), Value::from("eu")),
                ("limit".into(), Value::Int(1)),
                ("dry".into(), Value::Bool(false)),
            ],
            steps: vec![],
        };
        let set = |k: &str, v: &str| job.params_with(&[(k.into(), v.into())]);
        let p = set("limit", "20").unwrap();
        assert_eq!(p[1].1, Value::Int(20));
        assert_eq!(set("dry", "true").unwrap()[2].1, Value::Bool(true));
        assert_eq!(set("region", "us").unwrap()[0].1, Value::from("us"));
        assert!(set("limit", "x").unwrap_err().contains("is an integer"));
        let e = set("regoin", "us").unwrap_err();
        assert!(
            e.contains("has no param \"regoin\" (its params are region, limit, dry)"),
            "{e}"
        );
    }
}
