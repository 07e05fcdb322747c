"""Per-call dispatch cost of the shim's worker (not a test: pytest collects test_*.py only).

    target/pyvenv/bin/python python-shim/tests/bench_dispatch.py [--calls 20000] [--rounds 5]
        [--codec both|msgpack|stdlib] [--strace] [--shim DIR] [--pin CPUS]

A fake supervisor (this process) drives, over a socketpair on fd 3, alternately
- the real worker, started the way snakepit starts it
  (``python -c BOOTSTRAP <shimdir> worker --fd 3 ...``, as in conftest.py), and
- a raw worker: the least a Python worker can do per call (blocking ``recv_into``,
  decode with the shim's codec, call the function, encode a RESULT with the same codec,
  ``sendall``; no threads, signals, logging bridge or reference resolution),
with a blocking loop of small CALLs: ``ping(**ctx) -> None`` with no kwargs and
``two(a, b) -> a`` with two kwargs. For each it reports the median round trip as seen by
this process and the worker's own CPU time per call (from ``/proc/<pid>/task/*/schedstat``,
the scheduler's nanosecond count, so threads and system time are included), and the ratio
of the shim to the raw loop on both. ``--strace`` also counts the worker's syscalls per
call (``strace -f -c -p <pid>`` over a separate batch of calls).

It also runs both loops in one process on a fake socket (one frame per ``recv_into``,
answers dropped): the Python work per call alone, without the kernel and the scheduler.

``--shim DIR`` points at another copy of the package's parent directory (e.g. a saved
"before" copy) to compare versions. ``--pin 1`` puts this process and the workers on one
CPU: on a shared machine the round trips then stop depending on where the scheduler
happens to put the two ends.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

HERE = Path(__file__).resolve().parent
SHIM_PARENT = HERE.parent

BOOT = (
    "import sys; sys.path.append(sys.argv[1]); "
    "from snakepit_shim.main import main; main(sys.argv[2:])"
)

PLUGIN = '''
def ping(**ctx):
    return None


def two(a, b):
    return a
'''

# The raw worker: this file run with --raw-worker. Kept to the bare minimum on purpose.
RAW_WORKER = r'''
import os, socket, struct, sys
sys.path.insert(0, sys.argv[1])
sys.path.insert(0, sys.argv[2])
from snakepit_shim.codec import select_codec
import benchplug

def main():
    sock = socket.socket(fileno=3)
    sock.setblocking(True)
    codec = select_codec()
    encode, decode = codec.encode, codec.decode
    funcs = {"ping": benchplug.ping, "two": benchplug.two}
    unpack_from = struct.Struct(">I").unpack_from
    pack = struct.Struct(">I").pack
    recv_into, sendall = sock.recv_into, sock.sendall
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    sendall(pack(2) + b"\x91\x00")  # "ready"
    while True:
        got = 0
        while got < 4 or got < 4 + unpack_from(buf)[0]:
            k = recv_into(view[got:])
            if not k:
                return
            got += k
        n = unpack_from(buf)[0]
        msg = decode(bytes(buf[4 : 4 + n]))
        call_id, reference, kwargs, context = msg[1], msg[2], msg[3], msg[4]
        value = funcs[reference.rpartition(":")[2]](**kwargs)
        out = encode([16, call_id, value])
        sendall(pack(len(out)) + out)

main()
'''


def log(line: str) -> None:
    print(line, flush=True)


# ---------------------------------------------------------------------------- encoding
# The supervisor side builds its frames by hand (canonical MessagePack, as protocol.py
# does): it must not depend on the shim version under test.


def _int(v: int) -> bytes:
    if v < 0x80:
        return bytes((v,))
    if v < 0x100:
        return bytes((0xCC, v))
    if v < 0x10000:
        return b"\xcd" + v.to_bytes(2, "big")
    return b"\xce" + v.to_bytes(4, "big")


def _str(s: str) -> bytes:
    b = s.encode()
    assert len(b) < 32
    return bytes((0xA0 | len(b),)) + b


def call_frame(call_id: int, reference: str, kwargs: Dict[str, object]) -> bytes:
    body = b"\x96\x01" + _int(call_id) + _str(reference)
    body += bytes((0x80 | len(kwargs),))
    for k, v in kwargs.items():
        body += _str(k) + (_int(v) if isinstance(v, int) else _str(v))  # type: ignore[arg-type]
    body += b"\x80\xc2"  # empty context, unmeasured
    return len(body).to_bytes(4, "big") + body


def result_frame_prefix(call_id: int) -> bytes:
    body_head = b"\x93\x10" + _int(call_id)
    return body_head


# ---------------------------------------------------------------------------- workers


class Peer:
    def __init__(self, kind: str, proc: subprocess.Popen, sock: socket.socket) -> None:
        self.kind = kind
        self.proc = proc
        self.sock = sock
        self.buf = bytearray(1 << 16)
        self.view = memoryview(self.buf)
        self.got = 0

    def recv_frame(self) -> bytes:
        buf, view = self.buf, self.view
        while True:
            if self.got >= 4:
                n = int.from_bytes(buf[0:4], "big")
                if self.got >= 4 + n:
                    body = bytes(buf[4 : 4 + n])
                    rest = self.got - 4 - n
                    buf[0:rest] = buf[4 + n : self.got]
                    self.got = rest
                    return body
            k = self.sock.recv_into(view[self.got :])
            if not k:
                raise EOFError(f"{self.kind} worker closed the socket")
            self.got += k

    def cpu_ns(self) -> int:
        total = 0
        task_dir = f"/proc/{self.proc.pid}/task"
        for tid in os.listdir(task_dir):
            try:
                with open(f"{task_dir}/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                pass
        return total

    def close(self) -> None:
        try:
            if self.kind == "shim":
                try:
                    self.sock.sendall(b"\x00\x00\x00\x02\x91\x03")  # SHUTDOWN
                    self.proc.wait(5)
                except Exception:
                    pass
            self.sock.close()
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(5)


def _spawn(cmd: List[str], env: Dict[str, str]) -> Tuple[subprocess.Popen, socket.socket]:
    ours, theirs = socket.socketpair()
    fd = theirs.fileno()

    def put_on_fd3() -> None:
        if fd != 3:
            os.dup2(fd, 3)
        else:
            os.set_inheritable(3, True)

    proc = subprocess.Popen(cmd, pass_fds=(3,), preexec_fn=put_on_fd3, env=env,
                            stdout=subprocess.DEVNULL, stderr=None)
    theirs.close()
    return proc, ours


def start_shim(shim: Path, plugins: Path, env: Dict[str, str]) -> Peer:
    cmd = [sys.executable, "-c", BOOT, str(shim), "worker", "--fd", "3", "--protocol", "3",
           "--frame-limit", "67108864", "--sys-path", str(plugins), "--pool", "default",
           "--generation", "0", "--worker-id", "1"]
    proc, sock = _spawn(cmd, env)
    peer = Peer("shim", proc, sock)
    hs = peer.recv_frame()
    assert hs[:2] == b"\x95\x00", hs
    return peer


def start_raw(shim: Path, plugins: Path, env: Dict[str, str]) -> Peer:
    proc, sock = _spawn([sys.executable, "-c", RAW_WORKER, str(shim), str(plugins)], env)
    peer = Peer("raw", proc, sock)
    assert peer.recv_frame() == b"\x91\x00"
    return peer


# ---------------------------------------------------------------------------- measuring

WORKLOADS = {
    "ping": ("benchplug:ping", {}, b"\xc0"),
    "two": ("benchplug:two", {"a": 7, "b": "bee"}, b"\x07"),
}


def run_calls(peer: Peer, frames: List[bytes], expect_tail: bytes,
              samples: Optional[List[float]]) -> None:
    sendall, recv_frame = peer.sock.sendall, peer.recv_frame
    clock = time.perf_counter_ns
    first = True
    for frame in frames:
        t = clock()
        sendall(frame)
        body = recv_frame()
        dt = clock() - t
        if samples is not None:
            samples.append(dt / 1000.0)
        if first:
            first = False
            if not (body.startswith(b"\x93\x10") and body.endswith(expect_tail)):
                raise AssertionError(f"{peer.kind}: unexpected answer {body!r}")


def measure(peers: List[Peer], workload: str, calls: int, rounds: int, block: int
            ) -> Dict[str, Tuple[float, float]]:
    """Median round trip and worker CPU per call of each peer: ``rounds`` x ``calls``
    calls each, alternating between the peers every ``block`` calls so that the noise of
    a shared machine hits them alike."""
    reference, kwargs, tail = WORKLOADS[workload]
    frames = [call_frame(1000 + i, reference, kwargs) for i in range(calls)]
    lat: Dict[str, List[float]] = {p.kind: [] for p in peers}
    cpu_ns: Dict[str, int] = {p.kind: 0 for p in peers}
    for peer in peers:  # warm-up: imports, caches
        run_calls(peer, frames[: min(2000, calls)], tail, None)
    for _ in range(rounds):
        for at in range(0, calls, block):
            chunk = frames[at : at + block]
            for peer in peers:
                before = peer.cpu_ns()
                run_calls(peer, chunk, tail, lat[peer.kind])
                cpu_ns[peer.kind] += peer.cpu_ns() - before
    return {k: (statistics.median(lat[k]), cpu_ns[k] / (calls * rounds) / 1000.0) for k in lat}


_STRACE_LINE = re.compile(r"^\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)\s*$")


def count_syscalls(peer: Peer, workload: str, calls: int) -> Optional[Dict[str, float]]:
    reference, kwargs, tail = WORKLOADS[workload]
    frames = [call_frame(5000 + i, reference, kwargs) for i in range(calls)]
    out = tempfile.NamedTemporaryFile(prefix="strace-", suffix=".txt", delete=False)
    out.close()
    try:
        st = subprocess.Popen(["strace", "-f", "-c", "-o", out.name, "-p", str(peer.proc.pid)],
                              stderr=subprocess.PIPE, stdout=subprocess.DEVNULL)
    except FileNotFoundError:
        return None
    try:
        # strace says "Process N attached" on stderr once it is in
        line = st.stderr.readline() if st.stderr else b""
        if b"attached" not in line:
            time.sleep(0.5)
        time.sleep(0.1)
        run_calls(peer, frames, tail, None)
        time.sleep(0.1)
    finally:
        st.send_signal(signal.SIGINT)
        st.wait(10)
    counts: Dict[str, float] = {}
    with open(out.name) as f:
        for text in f:
            m = _STRACE_LINE.match(text)
            if m and m.group(2) != "total":
                counts[m.group(2)] = int(m.group(1)) / calls
    os.unlink(out.name)
    return counts


# ---------------------------------------------------------------------------- in process
# The Python work alone, without the kernel and the scheduler (which dominate the round
# trip and vary a lot on a shared machine): the shim's real Worker loop and the raw loop,
# each in this process, reading the same CALL frames from a fake socket, one frame per
# recv_into, and dropping their answers. Run in a child process per codec.

INPROC = r'''
import logging, os, struct, sys, time
shim, plugins, workload, calls, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
frames = [bytes.fromhex(h) for h in sys.argv[6].split(",")]
sys.path.insert(0, shim)
sys.path.insert(0, plugins)
from snakepit_shim import channel, host, logbridge, runner
from snakepit_shim.codec import select_codec
import benchplug
codec = select_codec()
err = sys.__stderr__

class FakeSocket:
    def __init__(self):
        self.i = 0
        self.sent = 0
    def fileno(self):
        return 1 << 20
    def recv_into(self, view, n=0, flags=0):
        if self.i >= calls:
            return 0
        f = frames[self.i % len(frames)]
        self.i += 1
        view[: len(f)] = f
        return len(f)
    def recv(self, n, flags=0):  # for shim versions that read with recv()
        if self.i >= calls:
            return b""
        f = frames[self.i % len(frames)]
        self.i += 1
        return f
    def sendall(self, data):
        self.sent += 1

def shim_once():
    sock = FakeSocket()
    chan = channel.Channel(sock, 1 << 26, codec)
    worker = runner.Worker(chan, codec, 1 << 26)
    host.attach(worker)
    installed = logbridge.install(chan.send, lambda: worker.call_id, 1 << 26, logging.INFO)
    if hasattr(worker, "end_of_call"):  # older shim versions
        worker.end_of_call.append(installed.flush_partial)
    else:
        worker.output = installed
    worker.install_signal_handler()
    t = time.perf_counter()
    worker.serve()
    dt = time.perf_counter() - t
    assert sock.sent == calls, sock.sent
    return dt / calls

def raw_once():
    sock = FakeSocket()
    encode, decode = codec.encode, codec.decode
    funcs = {"ping": benchplug.ping, "two": benchplug.two}
    unpack_from = struct.Struct(">I").unpack_from
    pack = struct.Struct(">I").pack
    recv_into, sendall = sock.recv_into, sock.sendall
    buf = bytearray(1 << 16)
    view = memoryview(buf)
    t = time.perf_counter()
    while True:
        got = 0
        while got < 4 or got < 4 + unpack_from(buf)[0]:
            k = recv_into(view[got:])
            if not k:
                return (time.perf_counter() - t) / calls
            got += k
        n = unpack_from(buf)[0]
        msg = decode(bytes(buf[4 : 4 + n]))
        call_id, reference, kwargs, context = msg[1], msg[2], msg[3], msg[4]
        value = funcs[reference.rpartition(":")[2]](**kwargs)
        out = encode([16, call_id, value])
        sendall(pack(len(out)) + out)

shim_t, raw_t = [], []
for _ in range(rounds):  # interleaved; the best of each
    shim_t.append(shim_once())
    raw_t.append(raw_once())
sys.__stdout__.write(f"{min(raw_t) * 1e6} {min(shim_t) * 1e6}\n")
'''


def inproc(shim: Path, plugins: Path, env: Dict[str, str], workload: str, calls: int,
           rounds: int) -> Tuple[float, float]:
    reference, kwargs, _tail = WORKLOADS[workload]
    frames = ",".join(call_frame(1000 + i, reference, kwargs).hex() for i in range(100))
    out = subprocess.run(
        [sys.executable, "-c", INPROC, str(shim), str(plugins), workload, str(calls),
         str(rounds), frames], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True)
    if out.returncode != 0:
        raise RuntimeError(f"in-process run failed: {out.stderr.strip()[-2000:]}")
    raw_us, shim_us = out.stdout.split()
    return float(raw_us), float(shim_us)


# ---------------------------------------------------------------------------- main


def bench_codec(codec: str, args: argparse.Namespace, plugins: Path) -> None:
    env = dict(os.environ)
    if codec == "stdlib":
        env["SNAKEPIT_SHIM_CODEC"] = "stdlib"
    else:
        env.pop("SNAKEPIT_SHIM_CODEC", None)
    shim = Path(args.shim).resolve()
    raw = start_raw(shim, plugins, env)
    sup = start_shim(shim, plugins, env)
    try:
        log(f"\n== codec {codec} (shim {shim}; {args.calls} calls x {args.rounds} rounds"
            f" in blocks of {args.block}, python {sys.version.split()[0]})")
        log(f"{'workload':8} {'worker':5} {'round trip p50':>15} {'worker CPU/call':>16}")
        for workload in WORKLOADS:
            res = measure([raw, sup], workload, args.calls, args.rounds, args.block)
            for kind in ("raw", "shim"):
                rt, cpu = res[kind]
                log(f"{workload:8} {kind:5} {rt:12.2f} us {cpu:13.2f} us")
            (rt_raw, cpu_raw), (rt_sup, cpu_sup) = res["raw"], res["shim"]
            log(f"{workload:8} ratio {rt_sup / rt_raw:12.2f} x  {cpu_sup / cpu_raw:12.2f} x"
                f"   (shim - raw: {rt_sup - rt_raw:+.2f} us round trip,"
                f" {cpu_sup - cpu_raw:+.2f} us CPU)")
        log(f"in process (Python work only, fake socket; best of {args.inproc_rounds} x"
            f" {args.inproc_calls} calls):")
        for workload in WORKLOADS:
            raw_us, shim_us = inproc(shim, plugins, env, workload, args.inproc_calls,
                                     args.inproc_rounds)
            log(f"{workload:8} raw {raw_us:6.2f} us  shim {shim_us:6.2f} us"
                f"  ratio {shim_us / raw_us:.2f} x  (shim - raw: {shim_us - raw_us:+.2f} us)")
        if args.strace:
            for peer in (raw, sup):
                for workload in WORKLOADS:
                    counts = count_syscalls(peer, workload, args.strace_calls)
                    if counts is None:
                        log("strace not found")
                        return
                    shown = ", ".join(f"{name} {n:.2f}" for name, n in
                                      sorted(counts.items(), key=lambda kv: -kv[1]) if n >= 0.005)
                    log(f"syscalls/call {peer.kind:4} {workload:5}: {sum(counts.values()):.2f}"
                        f" ({shown})")
    finally:
        raw.close()
        sup.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--block", type=int, default=500,
                    help="calls in a row to one worker before switching to the other")
    ap.add_argument("--codec", choices=("both", "msgpack", "stdlib"), default="both")
    ap.add_argument("--strace", action="store_true", help="count the workers' syscalls per call")
    ap.add_argument("--strace-calls", type=int, default=2000)
    ap.add_argument("--inproc-calls", type=int, default=20000)
    ap.add_argument("--inproc-rounds", type=int, default=9)
    ap.add_argument("--pin", metavar="CPUS",
                    help="pin this process and the workers to these CPUs (e.g. 1 or 0,1)")
    ap.add_argument("--shim", default=str(SHIM_PARENT),
                    help="the directory holding snakepit_shim/ (default: this checkout's)")
    args = ap.parse_args()
    if args.pin:
        os.sched_setaffinity(0, {int(c) for c in args.pin.split(",")})  # inherited
    with tempfile.TemporaryDirectory(prefix="snakepit-bench-") as tmp:
        plugins = Path(tmp)
        (plugins / "benchplug.py").write_text(textwrap.dedent(PLUGIN))
        codecs = ["msgpack", "stdlib"] if args.codec == "both" else [args.codec]
        for codec in codecs:
            bench_codec(codec, args, plugins)


if __name__ == "__main__":
    main()
