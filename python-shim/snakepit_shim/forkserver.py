"""The fork-server: a template process that forks ready-to-serve workers on request.

Started like a worker, with ``forkserver`` instead of ``worker``; ``--fd`` is its control
socket (a ``socketpair(AF_UNIX, SOCK_STREAM)`` like a worker's). It imports everything a
worker needs, runs ``gc.freeze()`` (so that the children share those pages instead of
copying them when the collector touches them), sends a HANDSHAKE on the control socket,
then serves these frames (same framing and codec as PROTOCOL.md):

| type | name    | direction            | fields |
|------|---------|----------------------|--------|
| 32   | SPAWN   | supervisor -> server | ``worker_id: int``; exactly three fds ride on the same ``sendmsg`` as SCM_RIGHTS: the worker's end of a new socketpair, then the write ends of its stdout and stderr pipes |
| 33   | SPAWNED | server -> supervisor | ``worker_id: int``, ``pid: int`` |
| 34   | EXITED  | server -> supervisor | ``pid: int``, ``status: int`` (the raw wait status from ``waitpid``) |
| 3    | SHUTDOWN| supervisor -> server | (none) |

A child makes itself a process group leader, sets its parent-death signal to SIGKILL (its
parent is the template, which itself must die with the supervisor), exits if the template
is already gone, closes the control socket, resets the signal handlers and serves as a
worker on the received fd, starting with its own HANDSHAKE there.

The template reaps its children on SIGCHLD (the handler only wakes the main loop through a
wakeup fd; ``waitpid(-1, WNOHANG)`` runs in the loop) and reports each with EXITED. At EOF
on the control socket, or on SIGTERM (its parent-death signal: the supervisor is gone), it
SIGKILLs the process group of every child it has (so that a plugin's subprocesses die
too, not only the worker), then exits; after SHUTDOWN it exits once every child has
exited and been reported.

With ``--confine PLAN`` (see ``confine.py``) the template is not dumpable and is a child
subreaper, and each child confines itself before it serves. A worker is a subreaper too,
so what a plugin double-forks stays below it; when a worker dies, whatever it left comes
to the template, which kills it (the *sweep*), and at exit the template sweeps until it
has no child left. A child whose confinement fails (strict plan) exits with status 4
after a sentence on stderr.
"""

from __future__ import annotations

import argparse
import collections
import gc
import os
import platform
import select
import signal
import socket
import sys
import time
import traceback
from typing import Deque, List, Set

# The shim's own modules, imported once here so that children start warm. asyncio is
# not: it costs ≈ 30 ms, a third of a `snakepit call`, and a worker imports it on its
# first async call only (runner.py).
from . import channel as _channel  # noqa: F401
from . import host as _host  # noqa: F401
from . import logbridge as _logbridge  # noqa: F401
from . import protocol, references as _references  # noqa: F401
from . import runner as _runner  # noqa: F401
from . import confine
from .codec import select_codec

PR_SET_PDEATHSIG = 1
_MAX_FDS_PER_RECV = 16


def _load_prctl():
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl
    except (OSError, AttributeError):  # not Linux
        return None


_prctl = _load_prctl()


def serve(opts: argparse.Namespace) -> int:
    try:
        plan = confine.prepare(getattr(opts, "confine", None))
    except (ValueError, OSError) as exc:
        sys.stderr.write(f"snakepit fork-server: bad --confine plan: {exc}\n")
        return 2
    ctrl = socket.socket(fileno=opts.fd)
    os.set_inheritable(opts.fd, False)
    ctrl.setblocking(True)
    codec = select_codec()
    template_pid = os.getpid()
    if plan is not None:
        plan.harden_server()

    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_r, False)
    os.set_blocking(wake_w, False)
    terminated = []
    signal.signal(signal.SIGCHLD, lambda signum, frame: None)
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    signal.set_wakeup_fd(wake_w)

    gc.freeze()
    _send(ctrl, protocol.build_handshake(template_pid, platform.python_version(), codec.name))

    frames = protocol.FrameBuffer(opts.frame_limit)
    fds: Deque[int] = collections.deque()
    children: Set[int] = set()
    shutting_down = False

    while True:
        if terminated:
            _kill_all(children)
            return 0
        _reap(ctrl, children, plan)
        if shutting_down and not children:
            return 0
        try:
            readable, _, _ = select.select([ctrl, wake_r], [], [])
        except InterruptedError:
            continue
        if wake_r in readable:
            _drain(wake_r)
        if ctrl not in readable:
            continue
        data, ancillary, flags, _addr = ctrl.recvmsg(
            1 << 16, socket.CMSG_SPACE(_MAX_FDS_PER_RECV * 4)
        )
        _collect_fds(ancillary, fds)
        if flags & socket.MSG_CTRUNC:
            sys.stderr.write("snakepit fork-server: too many fds in one message\n")
            return 3
        if not data:
            _kill_all(children)  # the supervisor is gone: so is everything we started
            return 0
        frames.feed(data)
        while True:
            try:
                body = frames.next_frame()
                if body is None:
                    break
                msg = protocol.parse(body, codec)
            except protocol.ProtocolError as exc:
                sys.stderr.write(f"snakepit fork-server: protocol violation: {exc}\n")
                return 3
            if type(msg) is protocol.Spawn:
                if len(fds) < 3:
                    sys.stderr.write("snakepit fork-server: SPAWN arrived without its 3 fds\n")
                    return 3
                worker_fds = (fds.popleft(), fds.popleft(), fds.popleft())
                for stream in (sys.stdout, sys.stderr):  # nothing buffered gets written twice
                    if stream is not None:
                        stream.flush()
                pid = _spawn(msg.worker_id, worker_fds, opts, ctrl, (wake_r, wake_w, *fds),
                             template_pid, plan)
                for fd in worker_fds:
                    os.close(fd)
                children.add(pid)
                _send(ctrl, protocol.build_spawned(msg.worker_id, pid))
            elif type(msg) is protocol.Shutdown:
                shutting_down = True
            else:
                sys.stderr.write(f"snakepit fork-server: unexpected {type(msg).__name__}\n")
                return 3


def _send(ctrl: socket.socket, body: bytes) -> None:
    ctrl.sendall(protocol.frame(body))


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 512):
            pass
    except (BlockingIOError, InterruptedError):
        pass


def _collect_fds(ancillary: List[tuple], fds: Deque[int]) -> None:
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            usable = len(data) - len(data) % 4
            for i in range(0, usable, 4):
                fds.append(int.from_bytes(data[i : i + 4], sys.byteorder, signed=True))


def _kill_groups(children: Set[int]) -> None:
    """SIGKILLs the process group of every child (each child leads its own group)."""
    for pid in children:
        try:
            os.killpg(pid, signal.SIGKILL)
        except OSError:
            pass


def _adopted(children: Set[int]) -> List[int]:
    """Children of the template that are not workers: what dead workers left behind."""
    try:
        with open(f"/proc/self/task/{os.getpid()}/children") as f:
            pids = [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []
    return [p for p in pids if p not in children]


def _sweep(children: Set[int]) -> None:
    for pid in _adopted(children):
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass


def _kill_all(children: Set[int]) -> None:
    """Kills every worker's group, then whatever comes to the template, until it has no
    child left (or a second has passed)."""
    _kill_groups(children)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        _sweep(set())
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            time.sleep(0.001)


def _reap(ctrl: socket.socket, children: Set[int], plan) -> None:
    # Bounded: a chain of forks that outruns the sweep must not keep the template from
    # its control socket (the rest is reaped on the next turn of the loop).
    for _ in range(256):
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        if pid not in children:  # something a dead worker left, now killed
            _sweep(children)
            continue
        children.discard(pid)
        _sweep(children)
        if plan is not None and plan.tmp_root and not plan.tmp_per_slot:
            try:
                os.rmdir(os.path.join(plan.tmp_root, f"w{pid}"))
            except OSError:
                pass
        _send(ctrl, protocol.build_exited(pid, status))


def _spawn(worker_id: int, fds: tuple, opts: argparse.Namespace, ctrl: socket.socket,
           inherited: tuple, template_pid: int, plan) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 1
    try:
        code = _child(worker_id, fds, opts, ctrl, inherited, template_pid, plan)
    except confine.ConfinementError as exc:
        code = 4
        try:
            sys.stderr.write(f"snakepit: the worker cannot be confined as its pool asks: {exc}\n")
            sys.stderr.flush()
        except BaseException:
            pass
    except BaseException:
        try:
            traceback.print_exc()
        except BaseException:
            pass
    finally:
        os._exit(code)
    return 0  # not reached


def _child(worker_id: int, fds: tuple, opts: argparse.Namespace, ctrl: socket.socket,
           inherited: tuple, template_pid: int, plan) -> int:
    os.setpgid(0, 0)
    if _prctl is not None:
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != template_pid:  # the template died before we set the signal
        return 1
    fd, out_fd, err_fd = fds
    os.dup2(out_fd, 1)
    os.dup2(err_fd, 2)
    os.close(out_fd)
    os.close(err_fd)
    signal.set_wakeup_fd(-1)
    for other in inherited:  # the wakeup pipe, and fds that came for later SPAWNs
        os.close(other)
    ctrl.close()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    signal.signal(signal.SIGUSR1, signal.SIG_DFL)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if plan is not None:
        plan.apply(worker_id)
    from .main import exit_process, run_worker

    child_opts = argparse.Namespace(**vars(opts))
    child_opts.worker_id = worker_id
    child_opts.mode = "worker"
    exit_process(run_worker(fd, child_opts))
    return 0  # not reached
