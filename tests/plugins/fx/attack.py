"""A plugin written the way an attacker would write it (issue 11's list). Each function
tries one attack and reports, rather than raises, how far it got: ``{"reached": bool,
"detail": str}``, so that a test can assert both that confinement blocks it and that it
succeeds without confinement."""
import ctypes
import errno
import os
import signal
import socket
import time

_libc = ctypes.CDLL(None, use_errno=True)
SYS_PIDFD_OPEN = 434
SYS_PIDFD_GETFD = 438
PTRACE_ATTACH, PTRACE_DETACH = 16, 17


def _blocked(exc: BaseException) -> dict:
    return {"reached": False, "detail": f"{type(exc).__name__}: {exc}"}


def read_environ(*, pid: int, marker: str, **ctx):
    """Reads another process's environment through /proc."""
    try:
        with open(f"/proc/{pid}/environ", "rb") as f:
            data = f.read()
    except OSError as exc:
        return _blocked(exc)
    return {"reached": marker.encode() in data, "detail": f"{len(data)} bytes"}


def read_memory(*, pid: int, **ctx):
    """Reads another process's memory three ways: /proc/PID/mem, process_vm_readv and
    PTRACE_ATTACH. Reached if any of them works."""
    results = {}
    try:
        with open(f"/proc/{pid}/maps") as f:
            start = int(f.readline().split("-")[0], 16)
    except (OSError, ValueError) as exc:
        start = None
        results["maps"] = str(exc)
    if start is not None:
        try:
            with open(f"/proc/{pid}/mem", "rb") as f:
                f.seek(start)
                results["mem"] = len(f.read(16)) == 16
        except OSError as exc:
            results["mem"] = str(exc)

        class IoVec(ctypes.Structure):
            _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]

        buf = ctypes.create_string_buffer(16)
        local = IoVec(ctypes.cast(buf, ctypes.c_void_p), 16)
        remote = IoVec(start, 16)
        n = _libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
        results["process_vm_readv"] = n == 16 or os.strerror(ctypes.get_errno())
    r = _libc.ptrace(PTRACE_ATTACH, pid, None, None)
    if r == 0:
        _libc.ptrace(PTRACE_DETACH, pid, None, None)
        results["ptrace"] = True
    else:
        results["ptrace"] = os.strerror(ctypes.get_errno())
    reached = any(v is True for v in results.values())
    return {"reached": reached, "detail": repr(results)}


def steal_socket(*, pid: int, **ctx):
    """Takes descriptors of another worker with pidfd_getfd (its channel to the
    supervisor is among them)."""
    pidfd = _libc.syscall(SYS_PIDFD_OPEN, pid, 0)
    if pidfd < 0:
        return {"reached": False, "detail": "pidfd_open: " + os.strerror(ctypes.get_errno())}
    got, last = [], ""
    try:
        for target in range(0, 16):
            fd = _libc.syscall(SYS_PIDFD_GETFD, pidfd, target, 0)
            if fd >= 0:
                got.append(target)
                os.close(fd)
            else:
                last = os.strerror(ctypes.get_errno())
    finally:
        os.close(pidfd)
    return {"reached": bool(got), "detail": f"took fds {got}; last error {last}"}


def signal_process(*, pid: int, sig: int = 0, **ctx):
    """Sends `sig` to `pid` (0 only checks that it could)."""
    try:
        os.kill(pid, sig)
    except OSError as exc:
        return _blocked(exc)
    return {"reached": True, "detail": f"signal {sig} sent"}


def connect_tcp(*, host: str = "127.0.0.1", port: int, **ctx):
    """Opens a TCP connection (a database on loopback)."""
    try:
        with socket.create_connection((host, port), timeout=5):
            return {"reached": True, "detail": f"connected to {host}:{port}"}
    except OSError as exc:
        return _blocked(exc)


def connect_unix(*, path: str, **ctx):
    """Connects to a unix socket by path (a database's, the control socket)."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    except OSError as exc:
        return _blocked(exc)
    with s:
        try:
            s.connect(path)
        except OSError as exc:
            return _blocked(exc)
    return {"reached": True, "detail": f"connected to {path}"}


def plant(*, path: str, **ctx):
    """Writes code where a later process would run it (plugins/, a .pth in
    site-packages)."""
    try:
        with open(path, "w") as f:
            f.write("import os\n")
    except OSError as exc:
        return _blocked(exc)
    return {"reached": True, "detail": f"wrote {path}"}


def read_file(*, path: str, **ctx):
    """Reads a file the worker was not given (app.toml, a database, a home directory)."""
    try:
        with open(path, "rb") as f:
            data = f.read(64)
    except OSError as exc:
        return _blocked(exc)
    return {"reached": True, "detail": f"read {len(data)} bytes"}


def daemon(*, pid_file: str, **ctx):
    """Double-fork and setsid: a daemon that leaves the worker's process group. Its pid
    is written to `pid_file`; it sleeps for five minutes."""
    first = os.fork()
    if first == 0:
        os.setsid()
        if os.fork() == 0:
            tmp = pid_file + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(os.getpid()))
            os.rename(tmp, pid_file)
            time.sleep(300)
        os._exit(0)
    os.waitpid(first, 0)
    return {"reached": True, "detail": "daemon started"}


def fork_many(*, n: int, **ctx):
    """Forks up to `n` sleeping children and reports how many it got; kills them."""
    children, error = [], ""
    for _ in range(n):
        try:
            pid = os.fork()
        except OSError as exc:
            error = f"{type(exc).__name__}: {exc}"
            break
        if pid == 0:
            time.sleep(60)
            os._exit(0)
        children.append(pid)
    for pid in children:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
    return {"reached": len(children) == n, "detail": f"{len(children)} forked; {error}"}


def hold_memory(*, mib: int, **ctx):
    """Allocates and touches `mib` MiB, and holds it."""
    blocks = []
    try:
        for _ in range(mib):
            blocks.append(bytearray(1 << 20))
    except MemoryError as exc:
        return _blocked(exc)
    return {"reached": True, "detail": f"held {len(blocks)} MiB"}


def burn_cpu(*, seconds: float, **ctx):
    """Spins for `seconds` of CPU time."""
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return {"reached": True, "detail": f"burned {seconds} s"}


def privileges(**ctx):
    """The worker's capabilities and no_new_privs, as /proc/self/status has them."""
    with open("/proc/self/status") as f:
        status = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
    caps = 0
    for kind in ("CapEff", "CapPrm", "CapInh", "CapAmb"):
        caps |= int(status.get(kind, "0"), 16)
    nnp = status.get("NoNewPrivs", "0").strip() == "1"
    # Without no_new_privs an exec could gain what the bounding set allows: with it,
    # nothing, so the bounding set does not count.
    return {
        "reached": caps != 0 or not nnp,
        "detail": f"CapEff|CapPrm|CapInh|CapAmb={caps:x} NoNewPrivs={nnp}",
        "tmpdir": os.environ.get("TMPDIR"),
    }


def parent_pid(**ctx):
    """The worker's parent (its fork-server) and its own pid."""
    return {"ppid": os.getppid(), "pid": os.getpid(), "env": sorted(os.environ)}


def write_tmp(*, mib: int, **ctx):
    """Writes `mib` MiB into TMPDIR."""
    import tempfile

    try:
        with tempfile.NamedTemporaryFile() as f:
            for _ in range(mib):
                f.write(b"x" * (1 << 20))
            f.flush()
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
            return _blocked(exc)
        raise
    return {"reached": True, "detail": f"wrote {mib} MiB to {tempfile.gettempdir()}"}


def control_request(*, path: str, **ctx):
    """Asks the serve's control socket for its status, as `snakepit status` would."""
    import json
    import struct

    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        with s:
            s.connect(path)
            body = json.dumps({"request": "status"}).encode()
            try:
                s.sendall(struct.pack(">I", len(body)) + body)
            except BrokenPipeError:
                pass  # refused at once: the refusal is waiting to be read
            head = s.recv(4, socket.MSG_WAITALL)
            reply = json.loads(s.recv(struct.unpack(">I", head)[0], socket.MSG_WAITALL))
    except OSError as exc:
        return _blocked(exc)
    return {"reached": reply.get("reply") == "status", "detail": json.dumps(reply)[:300]}


def leave_group_then_burn(*, seconds: float, **ctx):
    """Moves the worker into its fork-server's process group (out of its own, which is
    what a supervisor kills), then spins."""
    try:
        os.setpgid(0, os.getpgid(os.getppid()))
    except OSError as exc:
        return _blocked(exc)
    return burn_cpu(seconds=seconds)


def push_keystrokes(**ctx):
    """TIOCSTI: pushes a command into the controlling terminal's input."""
    import fcntl
    import termios

    try:
        fd = os.open("/dev/tty", os.O_RDWR)
    except OSError as exc:
        return _blocked(exc)
    try:
        for ch in b"echo INJECTED\n":
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([ch]))
    except OSError as exc:
        return _blocked(exc)
    finally:
        os.close(fd)
    return {"reached": True, "detail": "pushed a command into the terminal"}
