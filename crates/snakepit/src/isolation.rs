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

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::error::BuildError;

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

// Landlock (include/uapi/linux/landlock.h).
const LANDLOCK_CREATE_RULESET_VERSION: u32 = 1;
const LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET: u64 = 1;
const LANDLOCK_SCOPE_SIGNAL: u64 = 2;
#[cfg(target_arch = "x86_64")]
const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
#[cfg(target_arch = "x86_64")]
const SYS_LANDLOCK_RESTRICT_SELF: libc::c_long = 446;
#[cfg(target_arch = "aarch64")]
const SYS_LANDLOCK_CREATE_RULESET: libc::c_long = 444;
#[cfg(target_arch = "aarch64")]
const SYS_LANDLOCK_RESTRICT_SELF: libc::c_long = 446;

#[repr(C)]
struct RulesetAttr {
    handled_access_fs: u64,
    handled_access_net: u64,
    scoped: u64,
}

/// What this machine offers, probed once per process.
#[derive(Debug)]
struct Kernel {
    landlock_abi: u32,
    seccomp: bool,
    /// cgroup v1 directories this process may make children in, by controller.
    cgroup: Cgroups,
}

#[derive(Debug, Default)]
struct Cgroups {
    memory: Option<PathBuf>,
    pids: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
    /// Why a controller is missing, for the sentences.
    why: String,
}

fn kernel() -> &'static Kernel {
    static KERNEL: OnceLock<Kernel> = OnceLock::new();
    KERNEL.get_or_init(|| Kernel {
        landlock_abi: landlock_abi(),
        // SAFETY: prctl(PR_GET_SECCOMP) only reads the calling thread's mode.
        seccomp: unsafe { libc::prctl(libc::PR_GET_SECCOMP) } >= 0,
        cgroup: probe_cgroups(),
    })
}

fn landlock_abi() -> u32 {
    // SAFETY: with a null attribute and the VERSION flag the call only returns a number.
    let v = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            std::ptr::null::<RulesetAttr>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    v.max(0) as u32
}

/// The cgroup v1 hierarchy of each controller and this process's place in it, kept when
/// a child cgroup can be made there (root, or a delegated directory).
fn probe_cgroups() -> Cgroups {
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

/// Makes this process non-dumpable: a worker without capabilities can then read neither
/// its memory nor its `/proc/PID/environ`. Process-wide and idempotent.
pub(crate) fn harden_supervisor() {
    // SAFETY: prctl(PR_SET_DUMPABLE, 0) changes a flag of this process only.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) };
}

/// A Landlock ruleset that only scopes signals and abstract unix sockets, for a helper
/// process to enter between fork and exec. `None` below Landlock ABI 6.
fn scope_ruleset() -> Option<OwnedFd> {
    if kernel().landlock_abi < 6 {
        return None;
    }
    let attr = RulesetAttr {
        handled_access_fs: 0,
        handled_access_net: 0,
        scoped: LANDLOCK_SCOPE_ABSTRACT_UNIX_SOCKET | LANDLOCK_SCOPE_SIGNAL,
    };
    // SAFETY: attr is a valid landlock_ruleset_attr of the size given.
    let fd = unsafe {
        libc::syscall(
            SYS_LANDLOCK_CREATE_RULESET,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        )
    };
    // SAFETY: a non-negative return is a new fd that nothing else owns.
    (fd >= 0).then(|| unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// Between fork and exec of a helper (a fork-server, an interpreter probe): no
/// capabilities (bounding set, ambient, effective, permitted), no_new_privs, and the
/// scope-only Landlock domain. Only async-signal-safe system calls.
fn confine_helper(ruleset: Option<RawFd>) -> std::io::Result<()> {
    // SAFETY: plain prctl/capset/syscall calls on this process, no allocation.
    unsafe {
        // Root keeps no capabilities across exec (EPERM for non-root: nothing to drop).
        const SECBIT_NOROOT: libc::c_ulong = 1;
        const SECBIT_NOROOT_LOCKED: libc::c_ulong = 2;
        libc::prctl(
            libc::PR_SET_SECUREBITS,
            SECBIT_NOROOT | SECBIT_NOROOT_LOCKED,
            0,
            0,
            0,
        );
        for cap in 0..64 {
            if libc::prctl(libc::PR_CAPBSET_DROP, cap, 0, 0, 0) < 0
                && *libc::__errno_location() == libc::EINVAL
            {
                break;
            }
        }
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        );
        #[repr(C)]
        struct CapHeader {
            version: u32,
            pid: i32,
        }
        #[repr(C)]
        struct CapData {
            effective: u32,
            permitted: u32,
            inheritable: u32,
        }
        let header = CapHeader {
            version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
            pid: 0,
        };
        let data = [
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
            CapData {
                effective: 0,
                permitted: 0,
                inheritable: 0,
            },
        ];
        if libc::syscall(libc::SYS_capset, &header, data.as_ptr()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        if let Some(fd) = ruleset {
            if libc::syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0u32) < 0 {
                return Err(std::io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

/// Sets `cmd` up as a confined helper: the environment reduced to `env`, no
/// capabilities, no_new_privs, signals and abstract sockets scoped. The returned fd must
/// live until the command is spawned.
fn confine_command(cmd: &mut Command, env: &[(OsString, OsString)]) -> Option<OwnedFd> {
    cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
    let ruleset = scope_ruleset();
    let fd = ruleset.as_ref().map(|f| f.as_raw_fd());
    // SAFETY: confine_helper makes only async-signal-safe system calls.
    unsafe { cmd.pre_exec(move || confine_helper(fd)) };
    ruleset
}

/// A command for running `python` as a helper of the supervisor (an interpreter probe):
/// confined like a fork-server, with only the variables of `env` that this process has.
/// Keep the returned fd until the command has been spawned.
pub fn helper_command(python: &Path, env: &[&str]) -> (Command, Option<OwnedFd>) {
    let env: Vec<(OsString, OsString)> = env
        .iter()
        .filter_map(|k| Some((OsString::from(k), std::env::var_os(k)?)))
        .collect();
    let mut cmd = Command::new(python);
    let fd = confine_command(&mut cmd, &env);
    (cmd, fd)
}

/// A cgroup per worker slot for one pool, in each controller the limits need; removed
/// with the pool.
#[derive(Debug)]
struct PoolCgroups {
    /// The pool's directory in each controller used.
    dirs: Vec<PathBuf>,
    memory: Option<PathBuf>,
    cpuacct: Option<PathBuf>,
}

impl PoolCgroups {
    fn slot(dir: &Path, slot: usize) -> PathBuf {
        dir.join(format!("w{slot}"))
    }
}

impl Drop for PoolCgroups {
    fn drop(&mut self) {
        for dir in &self.dirs {
            if let Ok(entries) = std::fs::read_dir(dir) {
                for e in entries.flatten() {
                    if e.path().is_dir() {
                        let _ = std::fs::remove_dir(e.path());
                    }
                }
            }
            let _ = std::fs::remove_dir(dir);
        }
    }
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
            memory_limit: None,
        }
    }

    /// Sets up `cmd` (a fork-server) with the environment `env` and, unless this pool is
    /// unconfined, as a confined helper. Keep the returned fd until it is spawned.
    pub(crate) fn helper(
        &self,
        cmd: &mut Command,
        env: &[(OsString, OsString)],
    ) -> Option<OwnedFd> {
        if self.plan.is_empty() {
            cmd.env_clear().envs(env.iter().map(|(k, v)| (k, v)));
            return None;
        }
        confine_command(cmd, env)
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
        if let Some(user) = &iso.user {
            lacks(&mut report, true, format!(
                "[isolation] user = {user:?} cannot be enforced: running workers under another uid is not supported by this version; remove `user`, or set enforce = \"best-effort\""));
        }
        let mut cg_dirs: Vec<(&'static str, PathBuf, Vec<(&'static str, String)>)> = Vec::new();
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
                    cg_dirs.push(("pids", dir.clone(), vec![("pids.max", n.to_string())]));
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
                None => held(
                    &mut report,
                    "cpu_seconds",
                    s.to_string(),
                    "/proc accounting of the worker, per call (children counted once reaped)",
                ),
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
                if report.uid == 0 {
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
                report.uid == 0,
                workers,
            )?)
        } else {
            None
        };
        let seccomp: Vec<String> = if k.seccomp {
            seccomp_programs(iso.network)?.iter().map(hex).collect()
        } else {
            Vec::new()
        };
        let procs: Vec<String> = cgroups.as_ref().map_or_else(Vec::new, |c| {
            c.dirs
                .iter()
                .map(|d| format!("{}/w{{slot}}/cgroup.procs", d.display()))
                .collect()
        });
        let plan = serde_json::json!({
            "strict": strict,
            "landlock_abi": k.landlock_abi,
            "filesystem": if readonly { "readonly" } else { "open" },
            "network": iso.network,
            "seccomp": seccomp,
            "cgroup_procs": procs,
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
            cgroups,
        })
    }

    /// The per-call CPU limit, if any.
    pub(crate) fn cpu_limit(&self) -> Option<Duration> {
        self.cpu_limit
    }

    /// CPU time used so far by slot `slot`'s worker (and its children, with a cgroup).
    pub(crate) fn cpu_used(&self, slot: usize, pid: nix::unistd::Pid) -> Option<Duration> {
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
    pub(crate) fn killed_for_cpu(&self, slot: usize) {
        if let Some(f) = self.cpu_killed.get(slot) {
            f.store(true, Ordering::Release);
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

/// The directory of a pool's TMPDIRs. A root supervisor mounts a tmpfs of `tmp_size`
/// per worker slot (`w<slot>`), anew for each worker of the slot: a worker without
/// capabilities cannot map uid 0 into a user namespace of its own (that needs
/// CAP_SETFCAP), so it cannot mount one itself. Otherwise each worker mounts its own
/// (`w<pid>`) in user and mount namespaces of its own, and it goes with them.
#[derive(Debug)]
struct TmpRoot {
    dir: PathBuf,
    per_slot: bool,
    size: u64,
}

impl TmpRoot {
    fn new(dir: PathBuf, size: u64, per_slot: bool, workers: usize) -> Result<TmpRoot, BuildError> {
        let fail = |what: &Path, e: &dyn std::fmt::Display| {
            BuildError::Config(format!(
                "[isolation] tmp_size cannot be enforced: the tmpfs at {} cannot be made: {e}",
                what.display()
            ))
        };
        std::fs::DirBuilder::new()
            .mode(0o711)
            .create(&dir)
            .map_err(|e| fail(&dir, &e))?;
        let root = TmpRoot {
            dir,
            per_slot,
            size,
        };
        if per_slot {
            for slot in 0..workers {
                let d = root.slot(slot);
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| fail(&d, &e))?;
                root.mount(slot).map_err(|e| fail(&d, &e))?;
            }
        }
        Ok(root)
    }

    fn slot(&self, slot: usize) -> PathBuf {
        self.dir.join(format!("w{slot}"))
    }

    fn mount(&self, slot: usize) -> nix::Result<()> {
        use nix::mount::{mount, MsFlags};
        let opts = format!("size={},mode=0700", self.size);
        mount(
            Some("tmpfs"),
            &self.slot(slot),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(opts.as_str()),
        )
    }

    fn unmount(&self, slot: usize) {
        let _ = nix::mount::umount2(&self.slot(slot), nix::mount::MntFlags::MNT_DETACH);
    }

    /// An empty tmpfs for the slot's next worker.
    fn fresh(&self, slot: usize) {
        if self.per_slot {
            self.unmount(slot);
            if let Err(e) = self.mount(slot) {
                tracing::warn!(slot, error = %e, "cannot mount the worker's TMPDIR");
            }
        }
    }
}

impl Drop for TmpRoot {
    fn drop(&mut self) {
        if self.per_slot {
            let slots = std::fs::read_dir(&self.dir).map_or(0, |d| d.count());
            for slot in 0..slots {
                self.unmount(slot);
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

use std::os::unix::fs::DirBuilderExt;

fn make_cgroups(
    tag: &str,
    wanted: &[(&'static str, PathBuf, Vec<(&'static str, String)>)],
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

/// The syscalls no worker may make (EPERM).
const DENIED: &[&str] = &[
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "pidfd_getfd",
    "kcmp",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "mount",
    "umount2",
    "pivot_root",
    "move_mount",
    "open_tree",
    "fsopen",
    "fsmount",
    "fsconfig",
    "fspick",
    "mount_setattr",
    "unshare",
    "setns",
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "reboot",
    "swapon",
    "swapoff",
    "acct",
    "quotactl",
    "syslog",
];

fn syscall_nr(name: &str) -> Option<i64> {
    Some(match name {
        "ptrace" => libc::SYS_ptrace,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "kcmp" => libc::SYS_kcmp,
        "keyctl" => libc::SYS_keyctl,
        "add_key" => libc::SYS_add_key,
        "request_key" => libc::SYS_request_key,
        "bpf" => libc::SYS_bpf,
        "perf_event_open" => libc::SYS_perf_event_open,
        "userfaultfd" => libc::SYS_userfaultfd,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "mount" => libc::SYS_mount,
        "umount2" => libc::SYS_umount2,
        "pivot_root" => libc::SYS_pivot_root,
        "move_mount" => libc::SYS_move_mount,
        "open_tree" => libc::SYS_open_tree,
        "fsopen" => libc::SYS_fsopen,
        "fsmount" => libc::SYS_fsmount,
        "fsconfig" => libc::SYS_fsconfig,
        "fspick" => libc::SYS_fspick,
        "mount_setattr" => libc::SYS_mount_setattr,
        "unshare" => libc::SYS_unshare,
        "setns" => libc::SYS_setns,
        "kexec_load" => libc::SYS_kexec_load,
        "kexec_file_load" => libc::SYS_kexec_file_load,
        "init_module" => libc::SYS_init_module,
        "finit_module" => libc::SYS_finit_module,
        "delete_module" => libc::SYS_delete_module,
        "reboot" => libc::SYS_reboot,
        "swapon" => libc::SYS_swapon,
        "swapoff" => libc::SYS_swapoff,
        "acct" => libc::SYS_acct,
        "quotactl" => libc::SYS_quotactl,
        "syslog" => libc::SYS_syslog,
        "socket" => libc::SYS_socket,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        _ => return None,
    })
}

/// The flags of `clone` that make namespaces.
const CLONE_NAMESPACES: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The workers' seccomp programs, installed in this order: `clone3` answers ENOSYS (so
/// that the C library falls back to `clone`, whose flags can be checked), and x32 system
/// calls are refused; then the deny list (EPERM), with `clone` making a namespace and,
/// without network, `socket()`.
fn seccomp_programs(network: bool) -> Result<Vec<BpfProgram>, BuildError> {
    let arch = std::env::consts::ARCH
        .try_into()
        .map_err(|e| BuildError::Config(format!("seccomp: {e}")))?;
    let err = |e: seccompiler::BackendError| BuildError::Config(format!("seccomp: {e}"));
    let nr = |name: &str| syscall_nr(name).expect("every name of the table has a number");
    let mut first = std::collections::BTreeMap::new();
    first.insert(nr("clone3"), vec![]);
    let first = SeccompFilter::new(
        first,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(err)?;
    let mut first: BpfProgram = first.try_into().map_err(err)?;
    if cfg!(target_arch = "x86_64") {
        // After the architecture check and the load of the number: x32 numbers have bit 30.
        x32_refusal(&mut first);
    }
    let mut rules = std::collections::BTreeMap::new();
    for name in DENIED {
        rules.insert(nr(name), vec![]);
    }
    if !network {
        rules.insert(nr("socket"), vec![]);
    }
    let clone_rules = CLONE_NAMESPACES
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    rules.insert(nr("clone"), clone_rules);
    let second = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(err)?;
    Ok(vec![first, second.try_into().map_err(err)?])
}

/// Inserts, after the first load of the syscall number, "number >= 0x40000000 → EPERM".
fn x32_refusal(prog: &mut BpfProgram) {
    const BPF_LD_W_ABS: u16 = 0x20;
    const BPF_JGE_K: u16 = 0x35;
    const BPF_RET_K: u16 = 0x06;
    let Some(at) = prog.iter().position(|i| i.code == BPF_LD_W_ABS && i.k == 0) else {
        return;
    };
    let insert = [
        seccompiler::sock_filter {
            code: BPF_JGE_K,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        },
        seccompiler::sock_filter {
            code: BPF_RET_K,
            jt: 0,
            jf: 0,
            k: 0x0005_0000 | libc::EPERM as u32, // SECCOMP_RET_ERRNO
        },
    ];
    prog.splice(at + 1..at + 1, insert);
}

fn hex(prog: &BpfProgram) -> String {
    let mut s = String::with_capacity(prog.len() * 16);
    for i in prog {
        for b in i
            .code
            .to_ne_bytes()
            .iter()
            .chain([i.jt, i.jf].iter())
            .chain(i.k.to_ne_bytes().iter())
        {
            s.push_str(&format!("{b:02x}"));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x32_refusal_goes_after_the_number_load() {
        let progs = seccomp_programs(false).unwrap();
        assert_eq!(progs.len(), 2);
        if cfg!(target_arch = "x86_64") {
            let first = &progs[0];
            let at = first
                .iter()
                .position(|i| i.code == 0x20 && i.k == 0)
                .unwrap();
            assert_eq!(first[at + 1].k, 0x4000_0000);
        }
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(format_size(256 << 20), "256MiB");
        assert_eq!(format_size(1 << 30), "1GiB");
        assert_eq!(format_size(1000), "1000");
    }
}
