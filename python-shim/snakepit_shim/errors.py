"""Exceptions shared by the shim's modules (and, for HostError and ConnectorError, by
plugin code)."""

from __future__ import annotations

from typing import Any, Optional


class CallCancelled(BaseException):
    """Raised inside a call that the supervisor cancelled (a BaseException, like
    KeyboardInterrupt, so that ``except Exception`` in plugin code lets it through)."""


class NotInWorker(RuntimeError):
    """A host request (a connector call, ``host_request``) made outside a snakepit
    worker: there is no supervisor to ask. Under ``snakepit test`` the fixtures give one
    (``plugin_ctx``, ``snakepit_call``); a unit test with mocks passes its own
    ``ctx["connectors"]``."""


NotInWorker.__module__ = "snakepit_shim"


class HostError(Exception):
    """A host request answered with ``ok = false``: ``type`` and ``message`` from Rust."""

    def __init__(self, type: str, message: str) -> None:
        super().__init__(f"{type}: {message}")
        self.type = type
        self.message = message


class ConnectorError(HostError):
    """A connector call that failed: what ``ctx["connectors"]`` and ``ctx["pools"]`` raise.

    - The supervisor refused or failed the request (HOST_REPLY ``ok = false``): ``kind``
      is its type name (``"ConnectorError"``, or e.g. ``"UnknownMethod"`` when the
      supervisor serves no connectors), ``str()`` its message, ``status`` and ``body``
      are None. (A refusal of type ``"PermissionError"`` raises the builtin
      ``PermissionError`` instead.)
    - An API endpoint answered an HTTP status >= 400: ``kind`` is ``"HTTPStatus"``,
      ``status`` the status, ``body`` the decoded body, and the message names the
      connector, the endpoint and the status with the start of the body.

    It is a :class:`HostError` (``type`` is ``kind`` too), so ``except HostError`` still
    catches every failed host request. A plugin that lets it escape is reported as
    ``snakepit_shim.ConnectorError``.
    """

    def __init__(
        self,
        message: str,
        *,
        kind: str = "ConnectorError",
        status: Optional[int] = None,
        body: Any = None,
    ) -> None:
        Exception.__init__(self, message)  # str() is the message alone
        self.type = kind
        self.kind = kind
        self.message = message
        self.status = status
        self.body = body


ConnectorError.__module__ = "snakepit_shim"  # its public home, and its name in EXCEPTION frames
