"""The shim's own Python work per call, without any wakeup: N CALL frames are written
into a socketpair up front, then the shim's real worker (snakepit_shim.main.run_worker,
as a worker process runs it) serves them on this thread until SHUTDOWN; its replies
(handshake included) pile up in the socket buffer. Compared with the raw worker's loop (decode + encode) on the same frames.

    python shim_cost.py [--calls 4000] [--profile]

Prints µs per call for both, and with --profile the top of a cProfile of the shim loop.
"""

import argparse
import cProfile
import logging
import os
import pstats
import socket
import struct
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "python-shim"))
sys.path.insert(0, HERE)

from snakepit_shim import main as main_mod  # noqa: E402
from snakepit_shim import protocol  # noqa: E402
from snakepit_shim.codec import select_codec  # noqa: E402

LEN = struct.Struct(">I")


def frames(codec, n):
    out = []
    for i in range(1, n + 1):
        body = protocol.build_call(i, "bench_plugin:echo", {"x": 1}, {}, codec)
        out.append(LEN.pack(len(body)) + body)
    return b"".join(out)


def shim_loop(n, codec, profile):
    """The shim's own worker entry point (snakepit_shim.main.run_worker) on one end of a
    socketpair whose other end already holds n CALL frames and a SHUTDOWN."""
    a, b = socket.socketpair()
    for s in (a, b):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 8 << 20)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
    shutdown = protocol.build_shutdown()
    a.sendall(frames(codec, n) + LEN.pack(len(shutdown)) + shutdown)
    opts = argparse.Namespace(frame_limit=64 << 20, level=logging.INFO)
    prof = cProfile.Profile() if profile else None
    t = time.perf_counter()
    if prof:
        prof.enable()
    code = main_mod.run_worker(b.detach(), opts)
    if prof:
        prof.disable()
    dt = time.perf_counter() - t
    sys.stdout, sys.stderr = sys.__stdout__, sys.__stderr__  # undo the log bridge
    assert code == 0, code
    a.close()
    return dt / n * 1e6, prof


def raw_loop(n, codec):
    data = frames(codec, n)
    encode, decode, unpack_from = codec.encode, codec.decode, LEN.unpack_from
    t = time.perf_counter()
    pos = 0
    out = []
    while pos < len(data):
        k = unpack_from(data, pos)[0]
        body = data[pos + 4 : pos + 4 + k]
        pos += 4 + k
        msg = decode(body)
        value = msg[3]["x"]
        o = encode([16, msg[1], value])
        out.append(LEN.pack(len(o)) + o)
    return (time.perf_counter() - t) / n * 1e6


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=4000)
    ap.add_argument("--profile", action="store_true")
    a = ap.parse_args()
    codec = select_codec()
    shim_loop(200, codec, False)  # warm-up: imports, caches
    best_shim = min(shim_loop(a.calls, codec, False)[0] for _ in range(5))
    best_raw = min(raw_loop(a.calls, codec) for _ in range(5))
    out = sys.__stdout__
    print(f"codec {codec.name}: shim loop {best_shim:.2f} us/call, raw loop {best_raw:.2f} us/call (best of 5, no wakeups)", file=out)
    if a.profile:
        _, prof = shim_loop(a.calls, codec, True)
        st = pstats.Stats(prof, stream=out)
        st.sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    try:
        main()
    except BaseException:  # the log bridge took over sys.stderr: report on the real one
        import traceback

        traceback.print_exc(file=sys.__stderr__)
        raise
