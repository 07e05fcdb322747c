"""The confinement plan (``confine.py``) applied in a forked child, as the fork-server
applies it: what a worker can still do, and what it no longer can. The seccomp programs
come from the supervisor (the Rust tests cover them); these plans have none."""

from __future__ import annotations

import ctypes
import json
import os
import sys
import tempfile
from typing import Callable

import pytest

from snakepit_shim import confine, protocol


def landlock_abi() -> int:
    libc = ctypes.CDLL(None, use_errno=True)
    return max(0, libc.syscall(confine.SYS_LANDLOCK_CREATE_RULESET, None, 0, 1))


needs_landlock = pytest.mark.skipif(landlock_abi() < 1, reason="this kernel has no Landlock")


def in_child(plan: dict, body: Callable[[], object]) -> object:
    """Forks, applies ``plan`` in the child, runs ``body`` there and returns its result
    (or the text of the exception it raised)."""
    prepared = confine.prepare(json.dumps(plan))
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            prepared.apply(0)
            out = {"ok": body()}
        except BaseException as exc:  # noqa: BLE001 - reported to the parent
            out = {"error": f"{type(exc).__name__}: {exc}"}
        os.write(w, json.dumps(out).encode())
        os._exit(0)
    os.close(w)
    data = b""
    while True:
        chunk = os.read(r, 65536)
        if not chunk:
            break
        data += chunk
    os.close(r)
    os.waitpid(pid, 0)
    return json.loads(data)


def plan(**over) -> dict:
    base = {"strict": True, "landlock_abi": landlock_abi(), "filesystem": "open",
            "network": True, "seccomp": [], "oom_first": False, "rlimit_as": None,
            "tmp_root": None, "tmp_per_slot": False, "tmp_size": 1 << 20}
    base.update(over)
    return base


def read(path: str) -> Callable[[], object]:
    def body():
        with open(path, "rb") as f:
            return len(f.read())
    return body


def write(path: str) -> Callable[[], object]:
    def body():
        with open(path, "w") as f:
            return f.write("x")
    return body


@needs_landlock
def test_readonly_reads_the_interpreter_but_not_other_files(tmp_path):
    secret = tmp_path / "app.toml"
    secret.write_text("[runtime]\n")
    p = plan(filesystem="readonly")
    assert "error" in in_child(p, read(str(secret))), "a file outside what a worker needs"
    assert "ok" in in_child(p, read(os.__file__)), "the standard library"
    assert in_child(p, lambda: __import__("decimal").Decimal("1.5").__str__()) == {"ok": "1.5"}
    assert "error" in in_child(p, write(str(tmp_path / "planted.py")))


@needs_landlock
def test_open_writes_anywhere_but_sys_and_proc(tmp_path):
    p = plan()
    assert "ok" in in_child(p, write(str(tmp_path / "fine.txt")))
    assert "error" in in_child(p, write("/proc/self/comm"))


def test_capabilities_and_no_new_privs_are_gone():
    def status():
        with open("/proc/self/status") as f:
            fields = dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)
        return fields["CapEff"].strip(), fields["NoNewPrivs"].strip()

    assert in_child(plan(landlock_abi=0), status) == {"ok": ["0000000000000000", "1"]}


def test_a_strict_step_that_fails_is_an_error_and_best_effort_goes_on():
    missing = os.path.join(tempfile.gettempdir(), "snakepit-no-such-root", "x")
    strict = in_child(plan(landlock_abi=0, tmp_root=missing), lambda: os.environ["TMPDIR"])
    assert "error" in strict and "tmp_size" in strict["error"], strict
    relaxed = in_child(plan(landlock_abi=0, tmp_root=missing, strict=False),
                       lambda: os.environ["TMPDIR"])
    assert "ok" in relaxed, relaxed


def test_a_bad_plan_is_refused_by_the_fork_server():
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c",
         "import sys; sys.path.insert(0, sys.argv[1]);"
         " from snakepit_shim.main import main; main(sys.argv[2:])",
         os.path.dirname(os.path.dirname(confine.__file__)),
         "forkserver", "--fd", "0", "--protocol", str(protocol.PROTOCOL_VERSION), "--confine", "{not json"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
    assert out.returncode == 2, out
    assert "bad --confine plan" in out.stderr
