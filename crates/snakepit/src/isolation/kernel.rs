//! What this machine offers (probed once per process), and the confinement of helper
//! processes (fork-servers, interpreter probes) between fork and exec.

use std::ffi::OsString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;
use std::sync::OnceLock;

use super::cgroup::{probe_cgroups, Cgroups};

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
pub(super) struct Kernel {
    pub landlock_abi: u32,
    pub seccomp: bool,
    /// cgroup v1 directories this process may make children in, by controller.
    pub cgroup: Cgroups,
}

pub(super) fn kernel() -> &'static Kernel {
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
pub(super) fn confine_command(cmd: &mut Command, env: &[(OsString, OsString)]) -> Option<OwnedFd> {
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
