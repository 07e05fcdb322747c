"""Exceptions shared by the shim's modules (and, for HostError, by plugin code)."""

from __future__ import annotations


class CallCancelled(BaseException):
    """Raised inside a call that the supervisor cancelled (a BaseException, like
    KeyboardInterrupt, so that ``except Exception`` in plugin code lets it through)."""


class HostError(Exception):
    """A host request answered with ``ok = false``: ``type`` and ``message`` from Rust."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message
