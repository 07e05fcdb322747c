"""Fixture plugins that log, print and write to their file descriptors."""
import logging
import os
import sys

import snakepit_shim

log = logging.getLogger("fx.logs")


def mixed(*, tag: str = "x", **ctx):
    log.info("info record %s", tag)
    log.warning("warning record %s", tag)
    try:
        raise ValueError("logged failure")
    except ValueError:
        log.exception("with traceback %s", tag)
    print(f"printed {tag}")
    print(f"to stderr {tag}", file=sys.stderr)
    return tag


def fd_output(*, tag: str = "x", **ctx):
    os.write(1, f"raw stdout {tag}\n".encode())
    os.write(2, f"raw stderr {tag}\n".encode())
    # A round trip to the supervisor after the writes, so the pipes have been read by
    # the time the call returns in any sane implementation.
    snakepit_shim.host_request("echo", None)
    return tag


def flood(*, seconds: float = 3.0, **ctx):
    """Logs 4 KB records as fast as it can for `seconds`."""
    import time

    big = "x" * 4000
    end = time.monotonic() + seconds
    n = 0
    while time.monotonic() < end:
        log.warning("flood %d %s", n, big)
        n += 1
    return n
