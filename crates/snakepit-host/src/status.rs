//! What [`crate::Host::status`] reports: the serving generation's pools and workers, the
//! generations still finishing their calls, and the last reload. Serializable, for
//! `snakepit status --json` and the control socket; `Display` is the text `snakepit
//! status` prints.

use std::fmt;
use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use snakepit::Pool;

use crate::Problem;

/// A host's state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostStatus {
    pub apps: PathBuf,
    /// The serving generation.
    pub generation: u64,
    /// When the serving generation's pools were ready (RFC 3339, UTC).
    pub since: String,
    pub pools: Vec<PoolReport>,
    /// Replaced generations still finishing their calls in hand.
    pub retiring: Vec<RetiringStatus>,
    /// Successful reloads since the host started.
    pub reloads: u64,
    /// Reloads refused (the serving generation kept serving).
    pub failed_reloads: u64,
    pub last_reload: Option<ReloadReport>,
}

/// A job of the install, as `snakepit jobs`, `snakepit status` and the web console show
/// it. Its params are named, never their values.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobReport {
    pub name: String,
    /// The cron expression; None for a job that only runs when asked.
    pub schedule: Option<String>,
    /// The time zone of the schedule (`[runtime] timezone`).
    pub timezone: String,
    /// The next cron tick (RFC 3339, UTC).
    pub next_tick: Option<String>,
    /// The names of its params.
    pub params: Vec<String>,
    /// The names of its steps, in order.
    pub steps: Vec<String>,
    /// Its latest run in the history.
    pub last_run: Option<LastRun>,
}

/// The latest run of a job.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LastRun {
    pub id: String,
    pub trigger: String,
    pub status: String,
    /// When it was queued (RFC 3339, UTC).
    pub queued_at: String,
    /// When it ended, if it did.
    pub finished_at: Option<String>,
}

impl fmt::Display for JobReport {
    /// One line: name, schedule, next tick, last run.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let schedule = match &self.schedule {
            Some(s) => format!("{s:?} ({})", self.timezone),
            None => "no schedule".to_owned(),
        };
        let next = self.next_tick.as_deref().unwrap_or("-");
        let last = match &self.last_run {
            Some(r) => format!("{} {} ({}, {})", r.id, r.status, r.trigger, r.queued_at),
            None => "never run".to_owned(),
        };
        write!(f, "{}: {schedule}; next {next}; last {last}", self.name)
    }
}

/// A replaced generation that has calls in hand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetiringStatus {
    pub generation: u64,
    pub pools: Vec<PoolReport>,
}

/// One reload attempt.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReloadReport {
    /// Why: `"snakepit reload"`, `"SIGHUP"`, `"plugins/billing/invoicing.py changed"`.
    pub trigger: String,
    /// When it began (RFC 3339, UTC).
    pub at: String,
    /// How long loading, starting and validating took.
    pub took_ms: u64,
    /// The generation it started.
    pub generation: u64,
    /// Whether that generation serves; when not, `problems` says why.
    pub serving: bool,
    pub problems: Vec<Problem>,
}

/// A pool's health.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolReport {
    pub name: String,
    pub generation: u64,
    pub workers: usize,
    /// Workers started and ready (idle or busy).
    pub live: usize,
    /// Slots whose worker keeps failing to start.
    pub failing: usize,
    /// Workers replaced since the pool started.
    pub restarts: u64,
    /// Calls waiting for a worker.
    pub queued: usize,
    /// One per worker slot.
    pub slots: Vec<WorkerReport>,
    /// What confines the pool's workers.
    pub isolation: IsolationReport,
}

/// What confines a pool's workers, as it started (`[isolation]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IsolationReport {
    /// The uid the workers run as.
    pub uid: u32,
    /// Namespaces each worker gets.
    pub namespaces: Vec<String>,
    pub landlock: LandlockReport,
    /// Whether each worker has a seccomp filter.
    pub seccomp: bool,
    /// Each setting (and part of the baseline) and the mechanism that enforces it.
    pub settings: Vec<EnforcedReport>,
    /// What is asked for, or part of the baseline, and not held.
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LandlockReport {
    /// The kernel's Landlock ABI (0: none).
    pub abi: u32,
    /// Whether every Landlock feature the pool uses is in that ABI.
    pub fully_enforced: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EnforcedReport {
    pub setting: String,
    pub value: String,
    pub by: String,
}

impl IsolationReport {
    fn of(e: snakepit::Enforcement) -> IsolationReport {
        IsolationReport {
            uid: e.uid,
            namespaces: e.namespaces,
            landlock: LandlockReport {
                abi: e.landlock_abi,
                fully_enforced: e.landlock_full,
            },
            seccomp: e.seccomp,
            settings: e
                .settings
                .into_iter()
                .map(|s| EnforcedReport {
                    setting: s.setting,
                    value: s.value,
                    by: s.by,
                })
                .collect(),
            missing: e.missing,
        }
    }
}

impl fmt::Display for IsolationReport {
    /// Lines of `  isolation: …`, indented for `snakepit status` and `check`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let landlock = match (self.landlock.abi, self.landlock.fully_enforced) {
            (0, _) => "no landlock".to_owned(),
            (abi, true) => format!("landlock ABI {abi} (fully enforced)"),
            (abi, false) => format!("landlock ABI {abi} (partly enforced)"),
        };
        let ns = if self.namespaces.is_empty() {
            "no namespaces".to_owned()
        } else {
            format!("{} namespaces", self.namespaces.join("+"))
        };
        let seccomp = if self.seccomp {
            "seccomp"
        } else {
            "no seccomp"
        };
        writeln!(
            f,
            "    isolation: uid {}, {ns}, {landlock}, {seccomp}",
            self.uid
        )?;
        for s in &self.settings {
            writeln!(f, "      {} = {}: {}", s.setting, s.value, s.by)?;
        }
        for m in &self.missing {
            writeln!(f, "      missing: {m}")?;
        }
        Ok(())
    }
}

/// One worker slot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkerReport {
    pub slot: usize,
    /// `starting`, `idle`, `busy`, `backoff` or `stopped`.
    pub state: String,
    pub pid: Option<u32>,
    /// Calls the live worker has finished.
    pub calls: u64,
    pub rss_bytes: Option<u64>,
    pub uptime_secs: Option<f64>,
    /// Workers this slot replaced since the pool started.
    pub restarts: u64,
}

impl PoolReport {
    /// The report of `pool` right now.
    pub fn of(pool: &Pool) -> PoolReport {
        let s = pool.status();
        PoolReport {
            name: s.name,
            generation: s.generation,
            workers: s.workers,
            live: s.live,
            failing: s.failing,
            restarts: s.restarts,
            queued: s.queued,
            isolation: IsolationReport::of(s.isolation),
            slots: s
                .slots
                .into_iter()
                .map(|w| WorkerReport {
                    slot: w.slot,
                    state: w.state.as_str().to_owned(),
                    pid: w.pid,
                    calls: w.calls,
                    rss_bytes: w.rss,
                    uptime_secs: w.uptime.map(|d| (d.as_secs_f64() * 10.0).round() / 10.0),
                    restarts: w.restarts,
                })
                .collect(),
        }
    }
}

/// RFC 3339 in UTC, to the second.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn pools(f: &mut fmt::Formatter<'_>, pools: &[PoolReport]) -> fmt::Result {
    for p in pools {
        writeln!(
            f,
            "  pool {}: {}/{} live, {} failing, {} restarts, {} queued",
            p.name, p.live, p.workers, p.failing, p.restarts, p.queued
        )?;
        write!(f, "{}", p.isolation)?;
        for w in &p.slots {
            let pid = w.pid.map_or("-".to_owned(), |p| p.to_string());
            let rss = w.rss_bytes.map_or("-".to_owned(), |b| {
                format!("{:.1} MiB", b as f64 / 1048576.0)
            });
            let up = w.uptime_secs.map_or("-".to_owned(), |s| format!("{s:.0}s"));
            writeln!(
                f,
                "    worker {} pid {pid} {} calls {} rss {rss} up {up} restarts {}",
                w.slot, w.state, w.calls, w.restarts
            )?;
        }
    }
    Ok(())
}

impl fmt::Display for HostStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "apps {}", self.apps.display())?;
        writeln!(
            f,
            "generation {} serving since {} ({} reload{}, {} refused)",
            self.generation,
            self.since,
            self.reloads,
            if self.reloads == 1 { "" } else { "s" },
            self.failed_reloads
        )?;
        pools(f, &self.pools)?;
        for r in &self.retiring {
            writeln!(f, "generation {} finishing its calls", r.generation)?;
            pools(f, &r.pools)?;
        }
        if let Some(r) = &self.last_reload {
            let outcome = if r.serving { "serving" } else { "refused" };
            writeln!(
                f,
                "last reload at {} ({}): generation {} {outcome} after {} ms",
                r.at, r.trigger, r.generation, r.took_ms
            )?;
            for p in &r.problems {
                writeln!(f, "  {}", p)?;
            }
        }
        Ok(())
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.entry.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.reason)
        } else {
            write!(
                f,
                "{}: {}: {}",
                self.file.display(),
                self.entry,
                self.reason
            )
        }
    }
}
