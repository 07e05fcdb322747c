//! Confinement of worker processes: what a pool asks for ([`Isolation`]), what this
//! machine can give, and what each pool actually gets ([`Enforcement`]).
//!
//! The supervisor decides, the shim applies. At build time a pool probes the kernel once
//! (Landlock ABI, seccomp, cgroup v1 controllers it may write), makes a cgroup per worker
//! slot where limits need one, compiles its seccomp programs, and writes it all as a JSON
//! *plan* that its fork-server receives as `--confine`. Each forked worker applies the
//! plan before any plugin code runs (`python-shim/snakepit_shim/confine.py`), in nsjail's
//! order: cgroups, rlimits, a private tmpfs TMPDIR, capabilities dropped, no_new_privs,
//! Landlock (its own domain, so that siblings are scoped from each other), seccomp last.
//!
//! The baseline holds for every pool, with no settings:
//! - the supervisor and the fork-servers are not dumpable, so a worker without
//!   capabilities cannot read their memory or environment (`/proc`, ptrace,
//!   `process_vm_readv`, `pidfd_getfd`: the last three are also denied by seccomp);
//! - fork-servers and interpreter probes start with a cleared environment, no
//!   capabilities, no_new_privs and a Landlock domain that scopes signals and abstract
//!   unix sockets (they run site-packages' `.pth` files);
//! - workers hold no capabilities, run with no_new_privs, cannot signal anything outside
//!   their own Landlock domain (ABI 6), cannot write below `/sys` or `/proc` (their own
//!   cgroup's limits included), and cannot create namespaces, mount, trace or use
//!   io_uring, bpf or perf (seccomp);
//! - nothing a worker spawns outlives it: the worker is a child subreaper, so orphans
//!   stay below it; the fork-server is one too, and kills whatever it inherits when a
//!   worker dies, and everything when the supervisor goes away.
//!
//! A setting that is asked for is enforced, or [`Confinement::new`] refuses the pool with
//! a sentence that names the setting, the missing mechanism and the fix, unless the pool
//! says `enforce = "best-effort"` (then [`Enforcement::missing`] lists what is not held).
//! A missing baseline mechanism is reported the same way but never refuses a pool: no
//! setting asked for it.

mod cgroup;
mod kernel;
mod seccomp;
mod tmp;

use std::ffi::OsString;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::BuildError;
use cgroup::{make_cgroups, PoolCgroups, Wanted};
pub(crate) use kernel::harden_supervisor;
pub use kernel::helper_command;
use kernel::{confine_command, kernel};
use seccomp::{hex, seccomp_programs};
use tmp::TmpRoot;

/// How a pool's workers may touch the filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Filesystem {
    /// Everything the worker's uid may touch, except writes below `/sys` and `/proc`.
    #[default]
    Open,
    /// Read the interpreter, system libraries, site-packages, the plugins and the shim;
    /// write only a private TMPDIR of [`Isolation::tmp_size`] bytes.
    PluginsReadonly,
}

/// What a pool does when this machine lacks a mechanism a setting needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforce {
    /// Refuse to start (the default).
    #[default]
    Strict,
    /// Start without it; [`Enforcement::missing`] says what is not held.
    BestEffort,
}

/// The confinement a pool asks for (`[isolation]` in app.toml). The default asks for
/// nothing beyond the baseline every pool gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Isolation {
    /// Bytes the worker and its children may use together.
    pub memory_limit: Option<u64>,
    /// CPU time one call may use (the worker and its children).
    pub cpu_seconds: Option<u64>,
    /// Processes the worker and all its descendants may be, together.
    pub max_processes: Option<u64>,
    /// `false`: no socket may be created in the worker (loopback, unix sockets by path,
    /// everything); connectors still work, through the supervisor.
    pub network: bool,
    pub filesystem: Filesystem,
    /// The size of the private TMPDIR under [`Filesystem::PluginsReadonly`].
    pub tmp_size: u64,
    /// Run the workers under this user (needs a root supervisor).
    pub user: Option<String>,
    pub enforce: Enforce,
}

impl Default for Isolation {
    fn default() -> Self {
        Isolation {
            memory_limit: None,
            cpu_seconds: None,
            max_processes: None,
            network: true,
            filesystem: Filesystem::Open,
            tmp_size: 64 << 20,
            user: None,
            enforce: Enforce::Strict,
        }
    }
}

/// One setting and the mechanism that holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enforced {
    pub setting: String,
    pub value: String,
    pub by: String,
}

/// What a pool's workers are confined by, as the pool started.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Enforcement {
    /// The uid the workers run as.
    pub uid: u32,
    /// Namespaces each worker gets.
    pub namespaces: Vec<String>,
    /// The kernel's Landlock ABI (0: none).
    pub landlock_abi: u32,
    /// Whether every Landlock feature the pool uses is in that ABI.
    pub landlock_full: bool,
    /// Whether a seccomp filter is installed in each worker.
    pub seccomp: bool,
    /// Each setting asked for (and the baseline's parts), and what enforces it.
    pub settings: Vec<Enforced>,
    /// What was asked for (or is part of the baseline) and is not held, as sentences.
    pub missing: Vec<String>,
}

/// One pool's confinement: its report, the plan its fork-server applies, and the
/// per-slot state the supervisor reads back (cgroups, CPU use, why a worker died).
#[derive(Debug)]
pub(crate) struct Confinement {
    pub report: Enforcement,
    /// The JSON plan passed to the fork-server as `--confine`.
    pub plan: String,
    cgroups: Option<PoolCgroups>,
    cpu_limit: Option<Duration>,
    tmp: Option<TmpRoot>,
    /// Per slot: the memory cgroup's OOM-kill count when its worker started.
    oom_base: Vec<AtomicU64>,
    /// Per slot: its worker was killed for going over the CPU limit.
    cpu_killed: Vec<AtomicBool>,
    /// Per slot: the call in hand (0: none) and its worker, for the CPU watchdog.
    calls: Vec<(AtomicU64, AtomicI32)>,
    /// The uid and gid the workers run as (`user`).
    run_as: Option<(u32, u32)>,
    /// The shim's copy for workers of another user.
    shim: Option<SharedShim>,
    memory_limit: Option<u64>,
}

impl Confinement {
    /// No confinement at all, the baseline included (see [`PoolBuilder::unconfined`]).
    ///
    /// [`PoolBuilder::unconfined`]: crate::PoolBuilder::unconfined
    pub(crate) fn unconfined(workers: usize) -> Confinement {
        Confinement {
            report: Enforcement {
                uid: nix::unistd::geteuid().as_raw(),
                missing: vec!["unconfined: this pool was built without any confinement".into()],
                ..Enforcement::default()
            },
            plan: String::new(),
            cgroups: None,
            cpu_limit: None,
            tmp: None,
            oom_base: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            cpu_killed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            calls: slot_calls(workers),
            memory_limit: None,
            run_as: None,
            shim: None,
        }
    }

    /// Sets up `cmd` (a fork-server) with the environment `env`, in `slot`'s cgroups when
    /// given, and, unless this pool is unconfined, as a confined helper. Keep the
    /// returned fd until it is spawned.
    pub(crate) fn helper(
        &self,
        cmd: &mut Command,
        env: &[(OsString, OsString)],
        slot: Option<usize>,
    ) -> Option<OwnedFd> {
        if self.plan.is_empty() {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
            return None;
        }
        let files: Vec<std::ffi::CString> = match (slot, &self.cgroups) {
            (Some(slot), Some(cg)) => cg
                .dirs
                .iter()
                .filter_map(|d| {
                    let f = PoolCgroups::slot(d, slot).join("cgroup.procs");
                    std::ffi::CString::new(f.into_os_string().into_encoded_bytes()).ok()
                })
                .collect(),
            _ => Vec::new(),
        };
        let run_as = self.run_as;
        // SAFETY: open, write, close, setgroups, setgid and setuid are async-signal-safe;
        // the paths were made before the fork.
        unsafe {
            cmd.pre_exec(move || {
                // Into the slot's cgroups while still root, then the pool's user.
                for f in &files {
                    let fd = libc::open(f.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                    if fd < 0 || libc::write(fd, b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                    libc::close(fd);
                }
                if let Some((uid, gid)) = run_as {
                    let groups = [gid as libc::gid_t];
                    if libc::setgroups(1, groups.as_ptr()) < 0
                        || libc::setgid(gid) < 0
                        || libc::setuid(uid) < 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        confine_command(cmd, env)
    }

    /// Whether the workers are born in their slot's cgroups (a template per slot).
    pub(crate) fn in_slot_cgroups(&self) -> bool {
        self.cgroups.is_some()
    }
}

/// A size in the unit that reads best.
pub fn format_size(n: u64) -> String {
    match n {
        n if n >= 1 << 30 && n % (1 << 30) == 0 => format!("{}GiB", n >> 30),
        n if n >= 1 << 20 && n % (1 << 20) == 0 => format!("{}MiB", n >> 20),
        n if n >= 1 << 10 && n % (1 << 10) == 0 => format!("{}KiB", n >> 10),
        n => n.to_string(),
    }
}

impl Confinement {
    /// Works out what the pool `name` gets on this machine, makes its cgroups and its
    /// TMPDIR root, and builds the plan; refuses what cannot be enforced unless the pool
    /// is best-effort.
    pub(crate) fn new(
        iso: &Isolation,
        name: &str,
        generation: u64,
        workers: usize,
    ) -> Result<Confinement, BuildError> {
        let k = kernel();
        let strict = iso.enforce == Enforce::Strict;
        let mut report = Enforcement {
            uid: nix::unistd::geteuid().as_raw(),
            landlock_abi: k.landlock_abi,
            seccomp: k.seccomp,
            ..Enforcement::default()
        };
        let mut refusals = Vec::new();
        let mut lacks = |report: &mut Enforcement, asked: bool, sentence: String| {
            if asked && strict {
                refusals.push(sentence.clone());
            }
            report.missing.push(sentence);
        };
        let held = |report: &mut Enforcement, setting: &str, value: String, by: &str| {
            report.settings.push(Enforced {
                setting: setting.into(),
                value,
                by: by.into(),
            })
        };

        // The baseline.
        held(
            &mut report,
            "credentials",
            "not in workers".into(),
            "cleared environment; supervisor and fork-server not dumpable; no capabilities",
        );
        if k.seccomp {
            held(
                &mut report,
                "tracing",
                "denied".into(),
                "seccomp (ptrace, process_vm_readv, pidfd_getfd, namespaces, mount, bpf, io_uring)",
            );
        } else {
            lacks(&mut report, false, "seccomp is not available: workers may ptrace each other and create namespaces; use a kernel with CONFIG_SECCOMP_FILTER".into());
        }
        if k.landlock_abi >= 6 {
            held(
                &mut report,
                "signals",
                "own domain only".into(),
                "landlock scope",
            );
        } else {
            lacks(&mut report, false, format!(
                "signals are not scoped (Landlock ABI 6 is needed, this kernel has {}): a worker can signal the supervisor; set `user` to run workers under another uid", k.landlock_abi));
        }
        held(
            &mut report,
            "descendants",
            "die with the worker".into(),
            "child subreapers (worker and fork-server)",
        );

        // The settings.
        let mut run_as = None;
        if let Some(user) = &iso.user {
            match nix::unistd::User::from_name(user) {
                Ok(Some(u)) if report.uid == 0 => {
                    run_as = Some((u.uid.as_raw(), u.gid.as_raw()));
                    report.uid = u.uid.as_raw();
                    held(&mut report, "user", user.clone(), "setuid in the fork-server (files protect what Landlock does not)");
                }
                Ok(Some(_)) => {
                    let uid = report.uid;
                    lacks(&mut report, true, format!(
                    "[isolation] user = {user:?} cannot be enforced: switching users needs a root supervisor, and this one runs as uid {uid}; run the supervisor as root, remove `user`, or set enforce = \"best-effort\""))
                }
                _ => {
                    return Err(BuildError::Config(format!(
                        "pool {name:?}: [isolation] user = {user:?}: there is no such user on this machine; create it (useradd --system --no-create-home {user}) or name another"
                    )))
                }
            }
        }
        let mut cg_dirs: Vec<Wanted> = Vec::new();
        let mut rlimit_as = None;
        if let Some(limit) = iso.memory_limit {
            let v = format_size(limit);
            match &k.cgroup.memory {
                Some(dir) => {
                    cg_dirs.push((
                        "memory",
                        dir.clone(),
                        vec![("memory.limit_in_bytes", limit.to_string())],
                    ));
                    held(&mut report, "memory_limit", v, "cgroup v1 memory");
                }
                None => {
                    rlimit_as = Some(limit);
                    held(
                        &mut report,
                        "memory_limit",
                        v,
                        "rlimit AS (address space, per process)",
                    );
                    report.missing.push(format!(
                        "memory_limit is an address-space rlimit, not a cgroup ({}): it counts reserved, not used, memory, per process, and a leak raises MemoryError",
                        k.cgroup.why
                    ));
                }
            }
        }
        if let Some(n) = iso.max_processes {
            match &k.cgroup.pids {
                Some(dir) => {
                    // The slot's template lives in the cgroup too: one more.
                    let max = (n + 1).to_string();
                    cg_dirs.push(("pids", dir.clone(), vec![("pids.max", max)]));
                    held(&mut report, "max_processes", n.to_string(), "cgroup v1 pids");
                }
                None => lacks(&mut report, true, format!(
                    "[isolation] max_processes = {n} cannot be enforced: {}; an rlimit would count every process of the uid", k.cgroup.why)),
            }
        }
        let cpu_limit = iso.cpu_seconds.map(Duration::from_secs);
        if let Some(s) = iso.cpu_seconds {
            match &k.cgroup.cpuacct {
                Some(dir) => {
                    cg_dirs.push(("cpuacct", dir.clone(), vec![]));
                    held(
                        &mut report,
                        "cpu_seconds",
                        s.to_string(),
                        "cgroup v1 cpuacct, per call",
                    );
                }
                None => {
                    held(
                        &mut report,
                        "cpu_seconds",
                        s.to_string(),
                        "/proc accounting of the worker, per call",
                    );
                    report.missing.push(format!("cpu_seconds counts the worker's CPU, and its children's only once they are reaped ({})", k.cgroup.why));
                }
            }
        }
        if !iso.network {
            if k.seccomp {
                held(
                    &mut report,
                    "network",
                    "false".into(),
                    "seccomp (socket() denied)",
                );
            } else {
                lacks(&mut report, true, "[isolation] network = false cannot be enforced: seccomp is not available on this kernel".into());
            }
        }
        let readonly = iso.filesystem == Filesystem::PluginsReadonly;
        if readonly {
            if k.landlock_abi >= 1 {
                held(
                    &mut report,
                    "filesystem",
                    "plugins-readonly".into(),
                    "landlock",
                );
                if nix::unistd::geteuid().is_root() {
                    held(
                        &mut report,
                        "tmp_size",
                        format_size(iso.tmp_size),
                        "a tmpfs per worker slot, mounted by the supervisor",
                    );
                } else {
                    held(
                        &mut report,
                        "tmp_size",
                        format_size(iso.tmp_size),
                        "a tmpfs per worker, in its own user and mount namespaces",
                    );
                    report.namespaces = vec!["user".into(), "mount".into()];
                }
            } else {
                lacks(&mut report, true, "[isolation] filesystem = \"plugins-readonly\" cannot be enforced: this kernel has no Landlock (5.13 or newer, with lsm=landlock)".into());
            }
        }
        if report.uid == 0 && !readonly {
            report.missing.push("the workers run as uid 0 with filesystem = \"open\": they can write every file root owns (/etc, other pools' plugins, this binary); set `user`, or filesystem = \"plugins-readonly\"".into());
        }
        if k.landlock_abi == 0 {
            report.missing.push("no Landlock on this kernel: workers may write below /sys and /proc (a worker of uid 0 could leave its cgroup)".into());
        }
        // Scoping (ABI 6) is the newest Landlock feature a pool uses.
        report.landlock_full = k.landlock_abi >= 6;
        if !refusals.is_empty() {
            return Err(BuildError::Config(format!(
                "pool {name:?} refuses to start: {}",
                refusals.join("; ")
            )));
        }

        let tag = format!(
            "snakepit.{}.{}.g{generation}.{:08x}",
            std::process::id(),
            name.replace(|c: char| !c.is_ascii_alphanumeric(), "_"),
            fastrand::u32(..)
        );
        let cgroups = if cg_dirs.is_empty() {
            None
        } else {
            Some(make_cgroups(&tag, &cg_dirs, workers)?)
        };
        let tmp = if readonly && k.landlock_abi >= 1 {
            Some(TmpRoot::new(
                std::env::temp_dir().join(&tag),
                iso.tmp_size,
                nix::unistd::geteuid().is_root(),
                run_as,
                workers,
            )?)
        } else {
            None
        };
        let shim = run_as.map(|_| SharedShim(std::env::temp_dir().join(format!("{tag}.shim"))));
        let seccomp: Vec<String> = if k.seccomp {
            seccomp_programs(iso.network)?.iter().map(hex).collect()
        } else {
            Vec::new()
        };
        let plan = serde_json::json!({
            "strict": strict,
            "landlock_abi": k.landlock_abi,
            "filesystem": if readonly { "readonly" } else { "open" },
            "network": iso.network,
            "seccomp": seccomp,
            "oom_first": cgroups.as_ref().is_some_and(|c| c.memory.is_some()),
            "rlimit_as": rlimit_as,
            "tmp_root": tmp.as_ref().map(|t| t.dir.to_string_lossy().into_owned()),
            "tmp_per_slot": tmp.as_ref().is_some_and(|t| t.per_slot),
            "tmp_size": iso.tmp_size,
        })
        .to_string();
        Ok(Confinement {
            report,
            plan,
            cpu_limit,
            tmp,
            memory_limit: iso.memory_limit,
            oom_base: (0..workers).map(|_| AtomicU64::new(0)).collect(),
            cpu_killed: (0..workers).map(|_| AtomicBool::new(false)).collect(),
            calls: slot_calls(workers),
            cgroups,
            run_as,
            shim,
        })
    }

    /// Where the workers find the shim: the supervisor's copy, or, for workers of
    /// another user (who cannot read the supervisor's cache), a root-owned copy that
    /// they can read and not write, made here.
    pub(crate) fn shim_dir(&self, cached: &Path) -> Result<PathBuf, BuildError> {
        let Some(SharedShim(dir)) = &self.shim else {
            return Ok(cached.to_owned());
        };
        let fail = |e: std::io::Error| {
            BuildError::Config(format!("copying the shim to {}: {e}", dir.display()))
        };
        // Made here, not found: a directory someone made before us is refused.
        let pkg = dir.join("snakepit_shim");
        for d in [dir, &pkg] {
            std::fs::DirBuilder::new()
                .mode(0o755)
                .create(d)
                .map_err(fail)?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755)).map_err(fail)?;
        }
        for entry in std::fs::read_dir(cached.join("snakepit_shim")).map_err(fail)? {
            let path = entry.map_err(fail)?.path();
            if path.extension().is_some_and(|e| e == "py") {
                let to = pkg.join(path.file_name().unwrap_or_default());
                std::fs::copy(&path, &to).map_err(fail)?;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o644))
                    .map_err(fail)?;
            }
        }
        Ok(dir.clone())
    }

    /// A note for errors of a pool whose workers run as another user.
    pub(crate) fn user_hint(&self) -> String {
        match self.run_as {
            Some((uid, _)) => format!(
                " (the pool's workers run as uid {uid}: the interpreter, site-packages and the plugins must be readable by it)"
            ),
            None => String::new(),
        }
    }

    /// Marks slot `slot` as in call `call_id` on worker `pid` until the guard drops, for
    /// the CPU watchdog (nothing without `cpu_seconds`).
    pub(crate) fn watch_call(
        &self,
        slot: usize,
        call_id: u64,
        pid: nix::unistd::Pid,
    ) -> Option<CallWatch<'_>> {
        self.cpu_limit?;
        let (call, worker) = self.calls.get(slot)?;
        worker.store(pid.as_raw(), Ordering::Relaxed);
        call.store(call_id, Ordering::Release);
        Some(CallWatch(call, call_id))
    }

    /// The CPU watchdog of a pool with `cpu_seconds`: a thread that looks at the calls in
    /// hand every twentieth of the limit (10 to 250 ms), takes a call's CPU use when it
    /// first sees it as its base, and kills the worker's group once the call has used
    /// the limit; the time after a call is watched as if it were a call (a worker that
    /// spends the limit between two calls is killed). A call can go over by what it
    /// used before it was first seen plus one
    /// look: at most two looks' worth of CPU time per core. A thread rather than a timer
    /// per call: a timer armed and dropped on every call cost ≈ 12 µs of the ≈ 10 µs
    /// call (an extra wakeup of the caller's runtime). Ends with the pool.
    pub(crate) fn start_cpu_watchdog(this: &Arc<Confinement>, pool: &str) {
        let Some(limit) = this.cpu_limit else { return };
        let tick = (limit / 20).clamp(Duration::from_millis(10), Duration::from_millis(250));
        let weak = Arc::downgrade(this);
        let _ = std::thread::Builder::new()
            .name(format!("snakepit-{pool}-cpu"))
            .spawn(move || {
                // Per slot: the call seen and its CPU use when first seen.
                let mut seen: Vec<(u64, Duration)> = Vec::new();
                loop {
                    std::thread::sleep(tick);
                    let Some(c) = weak.upgrade() else { return };
                    seen.resize(c.calls.len(), (0, Duration::ZERO));
                    for (slot, (call, pid)) in c.calls.iter().enumerate() {
                        // A call, or the time after one (`!call_id`): a plugin may return
                        // and leave a thread or a child spinning. 0: no worker yet.
                        let id = call.load(Ordering::Acquire);
                        let pid = nix::unistd::Pid::from_raw(pid.load(Ordering::Relaxed));
                        if id == 0 || pid.as_raw() == 0 {
                            continue;
                        }
                        let Some(now) = c.cpu_used(slot, pid) else {
                            continue;
                        };
                        if seen[slot].0 != id {
                            seen[slot] = (id, now);
                        } else if now.saturating_sub(seen[slot].1) >= limit
                            && call.load(Ordering::Acquire) == id
                        {
                            tracing::warn!(
                                slot,
                                pid = pid.as_raw(),
                                "call over its CPU limit; killing the worker"
                            );
                            c.killed_for_cpu(slot);
                            crate::kill::kill_worker(pid);
                        }
                    }
                }
            });
    }

    /// CPU time used so far by slot `slot`'s worker (and its children, with a cgroup).
    fn cpu_used(&self, slot: usize, pid: nix::unistd::Pid) -> Option<Duration> {
        if let Some(dir) = self.cgroups.as_ref().and_then(|c| c.cpuacct.as_ref()) {
            let ns: u64 =
                std::fs::read_to_string(PoolCgroups::slot(dir, slot).join("cpuacct.usage"))
                    .ok()?
                    .trim()
                    .parse()
                    .ok()?;
            return Some(Duration::from_nanos(ns));
        }
        // utime, stime, cutime, cstime: fields 14 to 17, after the parenthesised name.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let rest = &stat[stat.rfind(')')? + 2..];
        let ticks: u64 = rest
            .split_whitespace()
            .skip(11)
            .take(4)
            .filter_map(|f| f.parse::<u64>().ok())
            .sum();
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Some(Duration::from_millis(ticks * 1000 / hz))
    }

    /// Notes that slot `slot`'s worker was killed for going over the CPU limit.
    fn killed_for_cpu(&self, slot: usize) {
        if let Some(f) = self.cpu_killed.get(slot) {
            f.store(true, Ordering::Release);
        }
    }

    /// Called before slot `slot`'s worker is reaped: the CPU watchdog forgets it (its
    /// pid may be reused once it is reaped), and its TMPDIR goes (a tmpfs the supervisor
    /// mounted; a worker's own goes with its namespaces).
    pub(crate) fn worker_ending(&self, slot: usize) {
        if let Some((call, pid)) = self.calls.get(slot) {
            pid.store(0, Ordering::Release);
            call.store(0, Ordering::Release);
        }
        if let Some(t) = &self.tmp {
            t.gone(slot);
        }
    }

    /// Called as slot `slot` starts a worker: its TMPDIR starts empty.
    pub(crate) fn worker_starting(&self, slot: usize) {
        if let Some(t) = &self.tmp {
            t.fresh(slot);
        }
        if let Some(f) = self.cpu_killed.get(slot) {
            f.store(false, Ordering::Release);
        }
        if let (Some(n), Some(base)) = (self.oom_kills(slot), self.oom_base.get(slot)) {
            base.store(n, Ordering::Release);
        }
    }

    fn oom_kills(&self, slot: usize) -> Option<u64> {
        let dir = self.cgroups.as_ref()?.memory.as_ref()?;
        let text = std::fs::read_to_string(PoolCgroups::slot(dir, slot).join("memory.oom_control"))
            .ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|n| n.trim().parse().ok())
    }

    /// Why slot `slot`'s worker died, when a limit of this pool killed it.
    pub(crate) fn death_reason(&self, slot: usize) -> Option<String> {
        if self
            .cpu_killed
            .get(slot)
            .is_some_and(|f| f.load(Ordering::Acquire))
        {
            return Some(format!(
                "CPU limit: the call used more than cpu_seconds = {} of CPU time",
                self.cpu_limit.map_or(0, |d| d.as_secs())
            ));
        }
        let base = self.oom_base.get(slot)?.load(Ordering::Acquire);
        (self.oom_kills(slot)? > base).then(|| {
            format!(
                "memory limit: the worker and its children went over memory_limit = {}",
                format_size(self.memory_limit.unwrap_or(0))
            )
        })
    }
}

/// A directory removed with the pool.
#[derive(Debug)]
struct SharedShim(PathBuf);

impl Drop for SharedShim {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl Confinement {
    /// Removes what the pool made on the machine: the TMPDIR tmpfs and their contents,
    /// the shim's copy, the cgroups (retried for up to 2 s while the templates exit).
    /// Called at the end of `Pool::shutdown`; dropping the pool does it too, but a
    /// process that exits does not drop what its threads hold.
    pub(crate) async fn release(&self) {
        if let Some(t) = &self.tmp {
            t.remove();
        }
        if let Some(s) = &self.shim {
            let _ = std::fs::remove_dir_all(&s.0);
        }
        if let Some(cg) = &self.cgroups {
            let until = tokio::time::Instant::now() + Duration::from_secs(2);
            while !cg.remove() && tokio::time::Instant::now() < until {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

fn slot_calls(workers: usize) -> Vec<(AtomicU64, AtomicI32)> {
    (0..workers)
        .map(|_| (AtomicU64::new(0), AtomicI32::new(0)))
        .collect()
}

/// A call in hand, as the CPU watchdog sees it; when dropped, the slot is after that
/// call (`!call_id`, a period of its own).
pub(crate) struct CallWatch<'a>(&'a AtomicU64, u64);

impl Drop for CallWatch<'_> {
    fn drop(&mut self) {
        self.0.store(!self.1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_well() {
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1000), "1000");
    }
}
