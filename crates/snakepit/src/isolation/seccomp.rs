//! The workers' seccomp programs, compiled with seccompiler.

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule,
};

use crate::error::BuildError;

/// The terminal ioctls no worker may make (the same numbers on x86_64 and aarch64).
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

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
        "ioctl" => libc::SYS_ioctl,
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
pub(super) fn seccomp_programs(network: bool) -> Result<Vec<BpfProgram>, BuildError> {
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
    // `clone` making a namespace; keystrokes pushed into a terminal (TIOCSTI) and the
    // console's own ioctls, the request compared on its low 32 bits as the kernel reads it.
    let clone_ns = CLONE_NAMESPACES
        .iter()
        .map(|&f| (0, SeccompCmpArgLen::Qword, SeccompCmpOp::MaskedEq(f), f));
    let terminal = [TIOCSTI, TIOCLINUX]
        .into_iter()
        .map(|r| (1, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, r));
    rules.insert(nr("clone"), any_of(clone_ns).map_err(err)?);
    rules.insert(nr("ioctl"), any_of(terminal).map_err(err)?);
    let second = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(err)?;
    Ok(vec![first, second.try_into().map_err(err)?])
}

/// One rule per condition: the call matches when any of them holds.
fn any_of(
    conditions: impl Iterator<Item = (u8, SeccompCmpArgLen, SeccompCmpOp, u64)>,
) -> Result<Vec<SeccompRule>, seccompiler::BackendError> {
    conditions
        .map(|(arg, len, op, value)| {
            SeccompCondition::new(arg, len, op, value).and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect()
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

pub(super) fn hex(prog: &BpfProgram) -> String {
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
}
