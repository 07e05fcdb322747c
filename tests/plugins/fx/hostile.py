"""Fixture plugins written to misbehave: crash, hang, ignore signals, fork grandchildren,
flood, write garbage into the channel, return what cannot cross the wire, leak memory."""
import os
import signal
import struct
import subprocess
import sys
import time


def _channel_fd() -> int:
    """The worker's end of the socket (fd 3 under exec, any number under the fork-server)."""
    from snakepit_shim import host

    return host._worker.channel.fd


def _spawn_grandchild(pid_file: str) -> None:
    child = subprocess.Popen(["sleep", "300"])
    tmp = pid_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(child.pid))
    os.rename(tmp, pid_file)  # appears complete or not at all


def exit_hard(*, code: int = 3, **ctx):
    sys.stderr.flush()
    os._exit(code)


def segfault(**ctx):
    import ctypes

    ctypes.string_at(0)


def sleep(*, seconds: float = 60.0, started: str = "", cleanup: str = "", **ctx):
    """A sync sleep, interruptible only by the supervisor's cancel; `cleanup` is written
    by the `finally:` so that a test can see the cancellation unwound the call."""
    if started:
        open(started, "w").close()
    try:
        time.sleep(seconds)
    finally:
        if cleanup:
            with open(cleanup, "w") as f:
                f.write("cleaned up")
    return {"slept": seconds, "pid": os.getpid()}


def wait_for_file(*, path: str, started: str = "", limit: float = 30.0, **ctx):
    """Blocks until `path` exists (polling), so that a test controls when it returns."""
    if started:
        open(started, "w").close()
    end = time.monotonic() + limit
    while not os.path.exists(path):
        if time.monotonic() > end:
            raise TimeoutError(path)
        time.sleep(0.005)
    return "released"


def busy_ignoring_signals(*, started: str = "", **ctx):
    """Ignores the cancel (SIGUSR1) and SIGTERM, and spins in pure Python."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if started:
        open(started, "w").close()
    n = 0
    while True:
        n += 1


def busy_in_c(**ctx):
    """Ignores SIGUSR1 and SIGTERM and spins inside one C call (no bytecode boundary)."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A regex with catastrophic backtracking runs for ages inside the C engine.
    import re

    re.match(r"(a+)+$", "a" * 64 + "b")


def grandchild_then_crash(*, pid_file: str, **ctx):
    _spawn_grandchild(pid_file)
    os._exit(1)


def grandchild_then_hang(*, pid_file: str, **ctx):
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    _spawn_grandchild(pid_file)
    while True:
        time.sleep(0.05)


def grandchild_then_sleep(*, pid_file: str, **ctx):
    """For the supervisor-killed test: a grandchild, then a long interruptible sleep."""
    _spawn_grandchild(pid_file)
    time.sleep(300)


def flood_stdout(*, lines: int = 100_000, **ctx):
    for i in range(lines):
        print(f"flood line {i}")
    return {"lines": lines}


def garbage_header(**ctx):
    """A length header far over any frame limit."""
    os.write(_channel_fd(), b"\xff\xff\xff\xff garbage")
    time.sleep(30)


def garbage_body(**ctx):
    """A valid length, then a body that is not MessagePack (0xc1 is never used)."""
    os.write(_channel_fd(), struct.pack(">I", 5) + b"\xc1\xc1\xc1\xc1\xc1")
    time.sleep(30)


def unknown_message(**ctx):
    """A well-formed frame of a message type the supervisor does not know."""
    os.write(_channel_fd(), struct.pack(">I", 2) + b"\x91\x63")  # [99]
    time.sleep(30)


def big_bytes(*, size: int = 1 << 20, **ctx):
    return b"\x00" * size


def unserializable(**ctx):
    return {"rows": [{"id": 1}, {"id": 2, "tags": {"a", "b"}}]}


_hoard = []


def grow(*, mib: int = 200, **ctx):
    """Allocates and touches `mib` MiB, kept alive in a global."""
    _hoard.append(b"\x01" * (mib << 20))
    return {"pid": os.getpid()}


def ignore_cancel_idle(**ctx):
    """Ignores the cancel (SIGUSR1) without using the CPU: never answers it."""
    signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    while True:
        time.sleep(0.05)


def endless_stderr_line(*, mib: int = 8, **ctx):
    """Writes `mib` MiB to fd 2 without a newline, then dies."""
    os.write(2, b"z" * (mib << 20))
    os._exit(3)


def tamper_shim(*, marker: str, pool: str, **ctx):
    """Appends code to the shim's cached copy (the attack of issue 12): code that would
    create `marker` in the processes of pool `pool` (named on their command line) that
    import the shim from it next. (Other tests' pools may import it meanwhile.)"""
    import snakepit_shim.codec

    path = snakepit_shim.codec.__file__
    with open(path, "a") as f:
        f.write(f"\nimport sys\nif {pool!r} in sys.argv: open({marker!r}, 'w').close()\n")
    return path
