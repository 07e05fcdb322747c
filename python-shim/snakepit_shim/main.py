"""Entry point: ``main(argv)`` as started by the supervisor.

    <python> -c "import sys; sys.path.append(sys.argv[1]); from snakepit_shim.main import main; main(sys.argv[2:])" \
        <shimdir> worker --fd 3 --protocol 1 --frame-limit 67108864 --sys-path DIR [--sys-path DIR ...] \
        --pool default --generation 0 --worker-id 3 [--log-level INFO]

``worker`` serves calls on the socket at ``--fd``; ``forkserver`` is a template process
that forks workers on request (see ``forkserver.py``). Exit status: 0 after SHUTDOWN or
EOF, 2 on bad arguments or a protocol version mismatch, 3 when the supervisor broke the
protocol.
"""

from __future__ import annotations

import argparse
import atexit
import faulthandler
import logging
import os
import platform
import socket
import sys
from typing import List, Optional, Sequence

from . import host, logbridge, protocol
from .channel import Channel
from .codec import select_codec
from .runner import Worker


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="snakepit_shim", add_help=True)
    parser.add_argument("mode", choices=("worker", "forkserver"))
    parser.add_argument("--fd", type=int, required=True, help="the inherited socket")
    parser.add_argument("--protocol", type=int, required=True)
    parser.add_argument("--frame-limit", type=int, default=protocol.DEFAULT_FRAME_LIMIT)
    parser.add_argument("--sys-path", action="append", default=[], metavar="DIR")
    parser.add_argument("--pool", default="default")
    parser.add_argument("--generation", type=int, default=0)
    parser.add_argument("--worker-id", type=int, default=0)
    parser.add_argument("--confine", default=None, metavar="PLAN",
                        help="forkserver: the JSON confinement plan its children apply")
    parser.add_argument(
        "--log-level",
        default="INFO",
        help="root logger level forwarded as LOG frames (default INFO: DEBUG records"
        " of every library would cost a frame each)",
    )
    return parser.parse_args(list(argv))


def set_sys_path(first: List[str]) -> None:
    """``--sys-path`` entries first, then the interpreter's own minus ''/cwd (the shim
    directory, appended by the bootstrap, stays reachable at the end)."""
    cwd = os.getcwd()
    own = [p for p in sys.path if p not in ("", ".", cwd) and p not in first]
    sys.path[:] = list(first) + own


def main(argv: Optional[Sequence[str]] = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    opts = parse_args(args)
    if opts.protocol != protocol.PROTOCOL_VERSION:
        sys.stderr.write(
            f"snakepit shim: the supervisor speaks protocol {opts.protocol}, this shim"
            f" speaks {protocol.PROTOCOL_VERSION}\n"
        )
        sys.stderr.flush()
        sys.exit(2)
    if opts.frame_limit < 1024:
        sys.stderr.write(f"snakepit shim: --frame-limit {opts.frame_limit} is too small\n")
        sys.exit(2)
    try:
        level = logbridge.parse_level(opts.log_level)
    except ValueError as exc:
        sys.stderr.write(f"snakepit shim: {exc}\n")
        sys.exit(2)
    opts.level = level
    set_sys_path(opts.sys_path)
    if opts.mode == "worker":
        code = run_worker(opts.fd, opts)
    else:
        from . import forkserver

        code = forkserver.serve(opts)
    exit_process(code)


def run_worker(fd: int, opts: argparse.Namespace) -> int:
    """Serve calls on ``fd`` until SHUTDOWN or EOF; returns the exit status."""
    try:
        os.set_inheritable(fd, False)  # a plugin's subprocesses must not get the channel
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        sys.stderr.write(f"snakepit shim: --fd {fd} is not a usable socket: {exc}\n")
        return 2
    faulthandler.enable(file=sys.__stderr__)  # a crash in C leaves its trace on stderr
    sock.setblocking(True)
    codec = select_codec()
    channel = Channel(sock, opts.frame_limit, codec)
    worker = Worker(channel, codec, opts.frame_limit)
    host.attach(worker)
    installed = logbridge.install(
        channel.send, lambda: worker.call_id, opts.frame_limit, getattr(opts, "level", logging.INFO)
    )
    worker.output = installed
    worker.install_signal_handler()
    try:
        channel.send(protocol.build_handshake(os.getpid(), platform.python_version(), codec.name))
    except OSError:
        return 0
    code = worker.serve()
    try:
        installed.flush_partial()
    except (OSError, BaseException):
        pass
    return code


def exit_process(code: int) -> None:
    """Run atexit handlers, then exit without waiting for the plugins' threads."""
    try:
        atexit._run_exitfuncs()
    except BaseException:
        pass
    for stream in (sys.__stdout__, sys.__stderr__):
        try:
            if stream is not None:
                stream.flush()
        except Exception:
            pass
    os._exit(code)
