//! Who owns a run: the process that runs it, named so that a later process can tell
//! whether it is still alive.
//!
//! An owner is `host/boot id/pid/start time` (the start time is field 22 of
//! `/proc/PID/stat`, in clock ticks since boot). On the same host and boot, a run's
//! owner is alive exactly when a process with that pid and that start time exists, so a
//! recycled pid is not mistaken for the owner. An owner on another host (PostgreSQL
//! shared by several nodes) is judged by its lease instead.

use std::fmt;

/// The process that owns the runs it starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    pub host: String,
    pub boot_id: String,
    pub pid: u32,
    /// Process start time in clock ticks since boot.
    pub start: u64,
}

impl Owner {
    /// This process.
    pub fn current() -> Owner {
        let pid = std::process::id();
        Owner {
            host: read_trimmed("/proc/sys/kernel/hostname").unwrap_or_else(|| "localhost".into()),
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id").unwrap_or_default(),
            pid,
            start: start_time(pid).unwrap_or(0),
        }
    }

    /// Parses the stored form (`host/boot/pid/start`).
    pub fn parse(s: &str) -> Option<Owner> {
        let mut it = s.rsplitn(4, '/');
        let start = it.next()?.parse().ok()?;
        let pid = it.next()?.parse().ok()?;
        let boot_id = it.next()?.to_owned();
        let host = it.next()?.to_owned();
        Some(Owner {
            host,
            boot_id,
            pid,
            start,
        })
    }

    /// Whether `other` runs on this host since the same boot (so its liveness can be
    /// read from `/proc`).
    pub fn same_machine(&self, other: &Owner) -> bool {
        self.host == other.host && self.boot_id == other.boot_id
    }

    /// Whether this owner's process still exists (meaningful on its own machine only).
    pub fn is_alive(&self) -> bool {
        start_time(self.pid) == Some(self.start)
    }
}

impl fmt::Display for Owner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}/{}",
            self.host, self.boot_id, self.pid, self.start
        )
    }
}

fn read_trimmed(path: &str) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
}

/// Field 22 of `/proc/PID/stat` (after the parenthesised command name, which may hold
/// spaces); `None` for no such process or a zombie.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    if matches!(fields.first(), Some(&"Z") | Some(&"X")) {
        return None;
    }
    fields.get(19)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_process_is_alive_and_round_trips() {
        let me = Owner::current();
        assert!(me.start > 0);
        assert!(me.is_alive());
        let back = Owner::parse(&me.to_string()).unwrap();
        assert_eq!(back, me);
        let gone = Owner {
            start: me.start + 1,
            ..me.clone()
        };
        assert!(!gone.is_alive(), "a recycled pid is not the owner");
        assert!(me.same_machine(&gone));
    }
}
