"""The fork-server: SPAWN with an fd, SPAWNED, EXITED, SHUTDOWN and EOF."""

from __future__ import annotations

import array
import os
import signal
import socket
import time

import pytest

from conftest import DEADLINE, Supervisor, spawn_on_fd3, worker_command
from snakepit_shim import protocol


def send_spawn(ctl: Supervisor, worker_id: int) -> socket.socket:
    ours, theirs = socket.socketpair()
    fds = array.array("i", [theirs.fileno()])
    ctl.sock.sendmsg([protocol.frame(protocol.build_spawn(worker_id))],
                     [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    theirs.close()
    return ours


@pytest.fixture
def forkserver(plugins):
    ours, theirs = socket.socketpair()
    proc = spawn_on_fd3(worker_command(plugins, mode="forkserver"), theirs)
    theirs.close()
    ctl = Supervisor(proc, ours)
    hs = ctl.recv()
    assert hs[:3] == [protocol.HANDSHAKE, 1, proc.pid]
    try:
        yield ctl
    finally:
        ctl.close()


def test_spawn_serve_and_exit(forkserver):
    started = time.monotonic()
    sock = send_spawn(forkserver, 7)
    spawned = forkserver.recv()
    assert spawned[:2] == [protocol.SPAWNED, 7]
    pid = spawned[2]
    worker = Supervisor(None, sock)
    assert worker.recv()[:3] == [protocol.HANDSHAKE, 1, pid]
    spawn_seconds = time.monotonic() - started
    assert worker.call("billing.invoicing:run", {"period": "p"})[2]["period"] == "p"
    assert os.getpgid(pid) == pid  # its own process group
    worker.send(protocol.build_shutdown())
    assert forkserver.recv() == [protocol.EXITED, pid, 0]
    sock.close()
    assert spawn_seconds < 2


def test_two_spawns_in_one_write_and_a_killed_child(forkserver):
    a_ours, a_theirs = socket.socketpair()
    b_ours, b_theirs = socket.socketpair()
    fds = array.array("i", [a_theirs.fileno(), b_theirs.fileno()])
    data = protocol.frame(protocol.build_spawn(1)) + protocol.frame(protocol.build_spawn(2))
    # both frames and both fds in one sendmsg: they pair up in order
    forkserver.sock.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds.tobytes())])
    a_theirs.close()
    b_theirs.close()
    first, second = forkserver.recv(), forkserver.recv()
    assert [first[:2], second[:2]] == [[protocol.SPAWNED, 1], [protocol.SPAWNED, 2]]
    wa, wb = Supervisor(None, a_ours), Supervisor(None, b_ours)
    assert wa.recv()[2] == first[2] and wb.recv()[2] == second[2]
    os.kill(second[2], signal.SIGKILL)
    exited = forkserver.recv()
    assert exited[:2] == [protocol.EXITED, second[2]]
    assert os.WIFSIGNALED(exited[2]) and os.WTERMSIG(exited[2]) == signal.SIGKILL
    assert wa.call("billing.invoicing:identity", {"value": 3})[2] == 3
    a_ours.close()  # EOF: the worker exits 0
    assert forkserver.recv() == [protocol.EXITED, first[2], 0]
    b_ours.close()


def test_shutdown_waits_for_children(forkserver):
    sock = send_spawn(forkserver, 1)
    pid = forkserver.recv()[2]
    worker = Supervisor(None, sock)
    worker.recv()
    forkserver.send(protocol.build_shutdown())
    time.sleep(0.1)
    assert forkserver.proc.poll() is None  # still reporting for its child
    worker.send(protocol.build_shutdown())
    assert forkserver.recv() == [protocol.EXITED, pid, 0]
    assert forkserver.proc.wait(DEADLINE) == 0
    sock.close()


def test_eof_ends_template_and_children(forkserver):
    sock = send_spawn(forkserver, 1)
    pid = forkserver.recv()[2]
    Supervisor(None, sock).recv()
    forkserver.sock.close()
    assert forkserver.proc.wait(DEADLINE) == 0
    deadline = time.monotonic() + DEADLINE
    while True:  # the child dies of its parent-death signal
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        assert time.monotonic() < deadline, "child outlived the fork-server"
        time.sleep(0.01)
    sock.close()
