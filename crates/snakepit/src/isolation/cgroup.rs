//! cgroup v1: which controllers this process may use, and a pool's cgroups (one per
//! worker slot, in each controller its limits need).

use std::path::{Path, PathBuf};

use crate::error::BuildError;

/// A controller the pool uses, its parent directory, and the files to write in each
/// slot's cgroup.
pub(super) type Wanted = (&'static str, PathBuf, Vec<(&'static str, String)>);

#[derive(Debug, Default)]
pub(super) struct Cgroups {
    pub memory: Option<PathBuf>,
    pub pids: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
    /// Why a controller is missing, for the sentences.
    pub why: String,
}

/// The cgroup v1 hierarchy of each controller and this process's place in it, kept when
/// a child cgroup can be made there (root, or a delegated directory).
pub(super) fn probe_cgroups() -> Cgroups {
    let mut out = Cgroups::default();
    let (Ok(mountinfo), Ok(own)) = (
        std::fs::read_to_string("/proc/self/mountinfo"),
        std::fs::read_to_string("/proc/self/cgroup"),
    ) else {
        out.why = "/proc/self/cgroup cannot be read".into();
        return out;
    };
    let find = |controller: &str| -> Option<PathBuf> {
        // mountinfo: "... mountpoint ... - cgroup cgroup rw,memory"
        let mount = mountinfo.lines().find_map(|l| {
            let (left, right) = l.split_once(" - ")?;
            let mut r = right.split_whitespace();
            let (fstype, _src, opts) = (r.next()?, r.next()?, r.next()?);
            (fstype == "cgroup" && opts.split(',').any(|o| o == controller))
                .then(|| left.split_whitespace().nth(4).map(PathBuf::from))?
        })?;
        let path = own.lines().find_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            list.split(',').any(|c| c == controller).then_some(path)
        })?;
        let dir = mount.join(path.trim_start_matches('/'));
        nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK)
            .ok()
            .map(|_| dir)
    };
    out.memory = find("memory");
    out.pids = find("pids");
    out.cpuacct = find("cpuacct");
    if out.memory.is_none() || out.pids.is_none() {
        out.why = if mountinfo.contains(" - cgroup2 ") && !mountinfo.contains(" - cgroup ") {
            "this host has cgroup v2 only, which this version does not manage yet".into()
        } else {
            "no writable cgroup v1 directory (run the supervisor as root, or delegate one)".into()
        };
    }
    out
}

/// A cgroup per worker slot for one pool, in each controller the limits need; removed
/// with the pool.
#[derive(Debug)]
pub(super) struct PoolCgroups {
    /// The pool's directory in each controller used.
    pub dirs: Vec<PathBuf>,
    pub memory: Option<PathBuf>,
    pub cpuacct: Option<PathBuf>,
}

impl PoolCgroups {
    pub fn slot(dir: &Path, slot: usize) -> PathBuf {
        dir.join(format!("w{slot}"))
    }
}

impl PoolCgroups {
    /// Removes the pool's cgroups; true once they are all gone (a cgroup that still
    /// holds a process, such as a template on its way out, stays until the next try).
    pub fn remove(&self) -> bool {
        let mut gone = true;
        for dir in &self.dirs {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            gone &= std::fs::remove_dir(dir).is_ok() || !dir.exists();
        }
        gone
    }
}

impl Drop for PoolCgroups {
    fn drop(&mut self) {
        self.remove();
    }
}

pub(super) fn make_cgroups(
    tag: &str,
    wanted: &[Wanted],
    workers: usize,
) -> Result<PoolCgroups, BuildError> {
    let mut made = PoolCgroups {
        dirs: Vec::new(),
        memory: None,
        cpuacct: None,
    };
    for (controller, parent, settings) in wanted {
        let dir = parent.join(tag);
        let fail = |what: &Path, e: std::io::Error| {
            BuildError::Config(format!(
                "the {controller} cgroup {} cannot be set up: {e}",
                what.display()
            ))
        };
        std::fs::create_dir(&dir).map_err(|e| fail(&dir, e))?;
        made.dirs.push(dir.clone());
        for slot in 0..workers {
            let s = PoolCgroups::slot(&dir, slot);
            std::fs::create_dir(&s).map_err(|e| fail(&s, e))?;
            for (file, value) in settings {
                let f = s.join(file);
                std::fs::write(&f, value).map_err(|e| fail(&f, e))?;
            }
            if *controller == "memory" {
                // Swap would let a leak go on past the limit, slowly.
                let _ = std::fs::write(s.join("memory.memsw.limit_in_bytes"), &settings[0].1);
            }
        }
        match *controller {
            "memory" => made.memory = Some(dir),
            "cpuacct" => made.cpuacct = Some(dir),
            _ => {}
        }
    }
    Ok(made)
}
