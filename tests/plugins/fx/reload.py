"""The module the reload tests serve: copied into a temporary apps dir as
plugins/reloadable.py, then edited (VERSION bumped, a function removed, an import
broken) to see a new generation take over, or be refused."""

import os
import time

VERSION = 1


def version(**ctx):
    return VERSION


def slow(*, seconds: float, **ctx):
    time.sleep(seconds)
    return VERSION


def held(*, release: str, **ctx):
    """Returns once `release` exists (at most a minute): a call the test ends itself.
    Writes `release` + ".started" first: the module (this VERSION) is loaded."""
    open(release + ".started", "w").close()
    end = time.monotonic() + 60
    while not os.path.exists(release) and time.monotonic() < end:
        time.sleep(0.005)
    return VERSION


def pid(**ctx):
    return os.getpid()


def hook(**ctx):
    return None


def step(**ctx):
    return {"version": VERSION}
