"""The fork-server: SPAWN with its fds, SPAWNED, EXITED, SHUTDOWN, EOF and SIGTERM."""

from __future__ import annotations

import array
import os
import signal
import socket
import time
from typing import Tuple

import pytest

from conftest import DEADLINE, Supervisor, spawn_on_fd3, worker_command
from snakepit_shim import protocol


class Spawned:
    """Our ends of one forked worker: its socket and its stdout/stderr pipes."""

    def __init__(self, sock: socket.socket, out_r: int, err_r: int) -> None:
        self.sup = Supervisor(None, sock)
        self.out_r = out_r
        self.err_r = err_r

    def read_err(self, needle: bytes) -> bytes:
        os.set_blocking(self.err_r, False)
        got = b""
        deadline = time.monotonic() + DEADLINE
        while needle not in got:
            assert time.monotonic() < deadline, got
            try:
                chunk = os.read(self.err_r, 65536)
            except BlockingIOError:
                time.sleep(0.01)
                continue
            if not chunk:
                break
            got += chunk
        return got

    def close(self) -> None:
        self.sup.sock.close()
        os.close(self.out_r)
        os.close(self.err_r)


def send_spawn(ctl: Supervisor, worker_id: int) -> Spawned:
    """One SPAWN frame with its three fds on one sendmsg, as the supervisor sends it."""
    ours, theirs = socket.socketpair()
    out_r, out_w = os.pipe()
    err_r, err_w = os.pipe()
    fds = array.array("i", [theirs.fileno(), out_w, err_w])
    ctl.sock.sendmsg([protocol.frame(protocol.build_spawn(worker_id))],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    theirs.close()
    os.close(out_w)
    os.close(err_w)
    return Spawned(ours, out_r, err_r)


def spawn_ready(ctl: Supervisor, worker_id: int) -> Tuple[int, Spawned]:
    spawned = send_spawn(ctl, worker_id)
    msg = ctl.recv()
    assert msg[:2] == [protocol.SPAWNED, worker_id]
    hs = spawned.sup.recv()
    assert hs[:3] == [protocol.HANDSHAKE, protocol.PROTOCOL_VERSION, msg[2]]
    return msg[2], spawned


@pytest.fixture
def forkserver(plugins):
    ours, theirs = socket.socketpair()
    proc = spawn_on_fd3(worker_command(plugins, mode="forkserver"), theirs)
    theirs.close()
    ctl = Supervisor(proc, ours)
    hs = ctl.recv()
    assert hs[:3] == [protocol.HANDSHAKE, protocol.PROTOCOL_VERSION, proc.pid]
    try:
        yield ctl
    finally:
        ctl.close()


def wait_gone(pid: int) -> None:
    deadline = time.monotonic() + DEADLINE
    while True:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                    return  # a zombie waiting for its reaper
        except FileNotFoundError:
            return
        assert time.monotonic() < deadline, f"{pid} is still alive"
        time.sleep(0.01)


def test_spawn_serve_and_exit(forkserver):
    started = time.monotonic()
    pid, w = spawn_ready(forkserver, 7)
    spawn_seconds = time.monotonic() - started
    assert w.sup.call("billing.invoicing:run", {"period": "p"})[2]["period"] == "p"
    assert os.getpgid(pid) == pid  # its own process group
    w.sup.send(protocol.build_shutdown())
    assert forkserver.recv() == [protocol.EXITED, pid, 0]
    w.close()
    assert spawn_seconds < 2


def test_worker_output_goes_to_its_own_pipes(forkserver):
    pid, w = spawn_ready(forkserver, 1)
    os.kill(pid, signal.SIGSEGV)  # faulthandler writes to the worker's stderr pipe
    exited = forkserver.recv()
    assert exited[:2] == [protocol.EXITED, pid]
    assert os.WIFSIGNALED(exited[2]) and os.WTERMSIG(exited[2]) == signal.SIGSEGV
    assert b"Fatal Python error" in w.read_err(b"Fatal Python error")
    w.close()


def test_spawns_back_to_back_and_a_killed_child(forkserver):
    a = send_spawn(forkserver, 1)
    b = send_spawn(forkserver, 2)  # both written before either is answered
    first, second = forkserver.recv(), forkserver.recv()
    assert [first[:2], second[:2]] == [[protocol.SPAWNED, 1], [protocol.SPAWNED, 2]]
    assert a.sup.recv()[2] == first[2] and b.sup.recv()[2] == second[2]
    os.kill(second[2], signal.SIGKILL)
    exited = forkserver.recv()
    assert exited[:2] == [protocol.EXITED, second[2]]
    assert os.WIFSIGNALED(exited[2]) and os.WTERMSIG(exited[2]) == signal.SIGKILL
    # worker 2's socket sees EOF: no other process (worker 1) holds a copy of its end
    b.sup.sock.settimeout(DEADLINE)
    assert b.sup.sock.recv(1) == b""
    assert a.sup.call("billing.invoicing:identity", {"value": 3})[2] == 3
    a.sup.sock.close()  # EOF: the worker exits 0
    assert forkserver.recv() == [protocol.EXITED, first[2], 0]
    a.close()
    b.close()


def test_shutdown_waits_for_children(forkserver):
    pid, w = spawn_ready(forkserver, 1)
    forkserver.send(protocol.build_shutdown())
    time.sleep(0.1)
    assert forkserver.proc.poll() is None  # still reporting for its child
    w.sup.send(protocol.build_shutdown())
    assert forkserver.recv() == [protocol.EXITED, pid, 0]
    assert forkserver.proc.wait(DEADLINE) == 0
    w.close()


@pytest.mark.parametrize("how", ["eof", "sigterm"])
def test_supervisor_gone_kills_children_and_their_groups(forkserver, tmp_path, how):
    pid, w = spawn_ready(forkserver, 1)
    pid_file = tmp_path / "grandchild.pid"
    call_id = w.sup.start_call("billing.invoicing:spawn_grandchild", {"pid_file": str(pid_file)})
    assert w.sup.recv_until((protocol.RESULT,))[1] == call_id
    grandchild = int(pid_file.read_text())
    if how == "eof":
        forkserver.sock.close()
    else:
        forkserver.proc.send_signal(signal.SIGTERM)
    assert forkserver.proc.wait(DEADLINE) == 0
    wait_gone(pid)
    wait_gone(grandchild)
    w.close()
