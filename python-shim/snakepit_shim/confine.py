"""Confinement of a worker, applied in the fork-server's child before any plugin code runs.

The supervisor decides what a pool gets (it probes the kernel, makes the cgroups and
compiles the seccomp programs) and hands the fork-server a JSON plan as ``--confine``::

    {"strict": true, "landlock_abi": 7, "filesystem": "open" | "readonly",
     "network": true, "seccomp": ["<hex of struct sock_filter[]>", ...],
     "oom_first": bool, "rlimit_as": null | bytes,
     "tmp_root": null | "/tmp/snakepit....", "tmp_per_slot": bool, "tmp_size": bytes}

``prepare(plan)`` runs once in the fork-server: it opens the paths Landlock allows
(``O_PATH``) and builds the seccomp programs; ``Prepared.harden_server()`` makes the
fork-server not dumpable and a child subreaper, and installs the seccomp filter there
when no child needs a namespace (children inherit it: installing a filter costs about
0.1 ms per program). ``Prepared.apply(slot)`` runs in each child, in this order: OOM
preference, rlimits, the TMPDIR (a tmpfs the supervisor mounted for the slot, or a
private one in a user and mount namespace of the worker's own), child subreaper,
capabilities dropped, no_new_privs, Landlock (a domain of its own per worker: signals and
abstract unix sockets scoped, writes limited), seccomp last when not inherited. The
worker's cgroups are its template's: the supervisor starts a template per slot in the
slot's cgroups.
A step that fails raises ``ConfinementError`` with a sentence when the plan is strict;
otherwise it is written to stderr and the worker goes on without it.

Only ``ctypes`` and the standard library: system call numbers are those of x86_64 and
aarch64 (Landlock's are the same on both).
"""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import tempfile
from typing import Any, Dict, List, Optional, Tuple

_libc = ctypes.CDLL(None, use_errno=True)

PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_CHILD_SUBREAPER = 36
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
PR_SET_SECCOMP = 22
SECCOMP_MODE_FILTER = 2

SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_RULE_PATH_BENEATH = 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1
SCOPE_SIGNAL = 2

# Landlock filesystem access rights.
EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1, 2, 4, 8
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR = 16, 32, 64, 128
MAKE_REG, MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 256, 512, 1024, 2048, 4096
REFER, TRUNCATE, IOCTL_DEV = 8192, 16384, 32768
FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV
READ = EXECUTE | READ_FILE | READ_DIR
NET_BIND_TCP, NET_CONNECT_TCP = 1, 2

CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
MS_NOSUID, MS_NODEV = 2, 4


class ConfinementError(Exception):
    """A step of the plan could not be applied; the message says which and why."""


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("fs", ctypes.c_uint64), ("net", ctypes.c_uint64), ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


class _SockFilter(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint16), ("jt", ctypes.c_uint8), ("jf", ctypes.c_uint8),
                ("k", ctypes.c_uint32)]


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.POINTER(_SockFilter))]


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise ConfinementError(f"{what}: {os.strerror(err)}")
    return ret


def _prctl(option: int, arg: int = 0) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), ctypes.c_ulong(0), ctypes.c_ulong(0),
                       ctypes.c_ulong(0))


def _handled_fs(abi: int) -> int:
    rights = (1 << 13) - 1
    if abi >= 2:
        rights |= REFER
    if abi >= 3:
        rights |= TRUNCATE
    if abi >= 5:
        rights |= IOCTL_DEV
    return rights


def _readonly_paths() -> List[str]:
    """What a worker must read: the interpreter, its prefixes, sys.path (plugins,
    site-packages, the shim), system libraries and the few files of /etc that the C
    library and the standard library read."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
             os.path.dirname(os.path.realpath(sys.executable))}
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    paths.update(["/usr", "/lib", "/lib64", "/lib32", "/bin", "/etc/ld.so.cache",
                  "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/timezone",
                  "/etc/passwd", "/etc/group", "/etc/nsswitch.conf", "/etc/os-release",
                  "/proc", "/sys/devices/system/cpu", "/dev/urandom", "/dev/random"])
    return sorted(p for p in paths if os.path.exists(p))


def _open_paths() -> List[str]:
    """Filesystem "open": writes anywhere but below /sys and /proc (cgroup limits, other
    processes' settings)."""
    return sorted(os.path.join("/", e) for e in os.listdir("/") if e not in ("sys", "proc"))


class Prepared:
    """A plan resolved once in the fork-server, applied in each child."""

    def __init__(self, plan: Dict[str, Any]) -> None:
        self.strict: bool = bool(plan.get("strict", True))
        self.abi: int = int(plan.get("landlock_abi", 0))
        self.readonly = plan.get("filesystem") == "readonly"
        self.network: bool = bool(plan.get("network", True))
        self.oom_first: bool = bool(plan.get("oom_first", False))
        self.rlimit_as: Optional[int] = plan.get("rlimit_as")
        self.tmp_root: Optional[str] = plan.get("tmp_root")
        self.tmp_per_slot: bool = bool(plan.get("tmp_per_slot", False))
        self.tmp_size: int = int(plan.get("tmp_size", 64 << 20))
        self.seccomp: List[Tuple[Any, Any]] = [_program(h) for h in plan.get("seccomp", [])]
        # A child that makes its own namespaces cannot be under the filter yet.
        self.private_tmp = bool(self.tmp_root) and not self.tmp_per_slot
        self.seccomp_in_server = not self.private_tmp
        self.rules: List[Tuple[int, int]] = []
        if self.abi >= 1:
            self.handled = _handled_fs(self.abi) if self.readonly else _handled_fs(self.abi) & ~(
                EXECUTE | READ_FILE | READ_DIR | IOCTL_DEV)
            if self.readonly:
                paths = [(p, READ) for p in _readonly_paths()]
                paths.append(("/dev/null", READ_FILE | WRITE_FILE))
            else:
                paths = [(p, self.handled) for p in _open_paths()]
            for path, rights in paths:
                rule = _open_rule(path, rights & self.handled)
                if rule is not None:
                    self.rules.append(rule)

    def harden_server(self) -> None:
        """In the fork-server itself: not dumpable (its memory and environ stay closed to
        workers without capabilities; the children inherit it), a child subreaper (what a
        worker leaves behind comes to it, to be killed), and under the workers' seccomp
        filter when they may inherit it."""
        _prctl(PR_SET_DUMPABLE, 0)
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        if self.seccomp_in_server:
            for prog in self.seccomp:
                self._step(lambda: _install(prog), "the seccomp filter")

    def apply(self, slot: int) -> None:
        """Confines this process (a freshly forked child); see the module docstring."""
        if self.oom_first:
            try:  # the OOM killer takes the worker, not the slot's template
                _write("/proc/self/oom_score_adj", "1000")
            except OSError:
                pass
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        if self.rlimit_as:
            self._step(lambda: resource.setrlimit(resource.RLIMIT_AS,
                                                  (self.rlimit_as, self.rlimit_as)),
                       "memory_limit as an address-space rlimit")
        tmp = None
        if self.tmp_root and self.tmp_per_slot:
            tmp = os.path.join(self.tmp_root, f"w{slot}")  # mounted by the supervisor
            os.environ["TMPDIR"] = tmp
            tempfile.tempdir = None
        elif self.tmp_root:
            tmp = os.path.join(self.tmp_root, f"w{os.getpid()}")
            self._step(lambda: _private_tmpfs(tmp, self.tmp_size),
                       f"a private tmpfs of tmp_size at {tmp} (user and mount namespaces)",
                       fix="user namespaces may be refused here (kernel.apparmor_restrict_"
                       "unprivileged_userns=1 on Ubuntu, user.max_user_namespaces=0, or a"
                       " container's seccomp profile): allow them, or run the supervisor as root")
            os.environ["TMPDIR"] = tmp
            tempfile.tempdir = None
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        # The template has no capabilities; a worker that made a user namespace has them
        # all in it, bounding set included.
        self._step(lambda: _drop_capabilities(bounding=self.private_tmp),
                   "dropping capabilities")
        self._step(lambda: _check(_prctl(PR_SET_NO_NEW_PRIVS, 1), "no_new_privs"),
                   "no_new_privs")
        if self.abi >= 1:
            self._step(lambda: self._landlock(tmp), "Landlock")
        for fd, _ in self.rules:
            os.close(fd)
        if not self.seccomp_in_server:
            for prog in self.seccomp:
                self._step(lambda: _install(prog), "the seccomp filter")

    def _step(self, fn, what: str, fix: str = "") -> None:
        try:
            fn()
        except (OSError, ConfinementError) as exc:
            if self.strict:
                raise ConfinementError(f"{what} failed: {exc}" + (f"; {fix}" if fix else "")) \
                    from None
            sys.stderr.write(f"snakepit confine: {what} failed, going on without: {exc}\n")

    def _landlock(self, tmp: Optional[str]) -> None:
        net = NET_BIND_TCP | NET_CONNECT_TCP if (not self.network and self.abi >= 4) else 0
        scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if self.abi >= 6 else 0
        attr = _RulesetAttr(self.handled, net, scoped)
        fd = _check(_libc.syscall(SYS_LANDLOCK_CREATE_RULESET, ctypes.byref(attr),
                                  ctypes.sizeof(attr), 0), "landlock_create_ruleset")
        tmp_rule = _open_rule(tmp, self.handled) if tmp is not None else None
        try:
            rules = list(self.rules)
            if tmp_rule is not None:
                rules.append(tmp_rule)
            for path_fd, rights in rules:
                attr = _PathBeneath(rights, path_fd)
                _check(_libc.syscall(SYS_LANDLOCK_ADD_RULE, fd, LANDLOCK_RULE_PATH_BENEATH,
                                     ctypes.byref(attr), 0), "landlock_add_rule")
            _check(_libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, fd, 0), "landlock_restrict_self")
        finally:
            os.close(fd)
            if tmp_rule is not None:
                os.close(tmp_rule[0])


def _program(hexdata: str) -> Tuple[Any, Any]:
    raw = bytes.fromhex(hexdata)
    n = len(raw) // ctypes.sizeof(_SockFilter)
    filters = (_SockFilter * n).from_buffer_copy(raw)
    return _SockFprog(n, filters), filters


def _write(path: str, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)


def _install(prog: Tuple[Any, Any]) -> None:
    _check(_libc.prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, ctypes.byref(prog[0]), 0, 0),
           "seccomp")


def _open_rule(path: str, rights: int) -> Optional[Tuple[int, int]]:
    """An ``O_PATH`` descriptor of ``path`` and the rights a rule may give it (a file
    takes only file rights); None when it does not exist or gets nothing."""
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return None
    if not os.path.isdir(path):
        rights &= FILE_RIGHTS
    if not rights:
        os.close(fd)
        return None
    return fd, rights


def _private_tmpfs(path: str, size: int) -> None:
    """A tmpfs of ``size`` bytes at ``path``, seen by this process and its children only;
    it goes away with them."""
    os.mkdir(path, 0o700)
    uid, gid = os.geteuid(), os.getegid()
    # A process that is not dumpable has its /proc/self files owned by root: it could
    # not write its own uid_map. Dumpable for these few calls; other workers are in
    # Landlock domains of their own, which may not trace this one anyway.
    _prctl(PR_SET_DUMPABLE, 1)
    try:
        _check(_libc.unshare(CLONE_NEWUSER | CLONE_NEWNS), "unshare(user, mount)")
        _write("/proc/self/setgroups", "deny")
        _write("/proc/self/uid_map", f"{uid} {uid} 1")
        _write("/proc/self/gid_map", f"{gid} {gid} 1")
        opts = f"size={size},mode=0700".encode()
        _check(_libc.mount(b"tmpfs", path.encode(), b"tmpfs", MS_NOSUID | MS_NODEV, opts),
               "mount tmpfs")
    finally:
        _prctl(PR_SET_DUMPABLE, 0)


def _drop_capabilities(bounding: bool) -> None:
    _prctl(PR_SET_SECUREBITS, 1 | 2)  # NOROOT, locked; EPERM without CAP_SETPCAP
    for cap in range(64 if bounding else 0):
        if _prctl(PR_CAPBSET_DROP, cap) < 0 and ctypes.get_errno() == 22:  # EINVAL: no such
            break
    _prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(0x20080522, 0)
    data = (_CapData * 2)()
    _check(_libc.capset(ctypes.byref(header), data), "capset")


def prepare(text: Optional[str]) -> Optional[Prepared]:
    """The plan of ``--confine``, resolved; None without one."""
    if not text:
        return None
    return Prepared(json.loads(text))
