"""A plugin that dies on request: `fate` is "ok", "exit" or "sigkill"."""
import os
import signal


def maybe_die(*, i: int, fate: str = "ok", **ctx):
    if fate == "exit":
        os._exit(7)
    if fate == "sigkill":
        os.kill(os.getpid(), signal.SIGKILL)
    return i * 2
