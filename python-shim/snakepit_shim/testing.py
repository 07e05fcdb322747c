"""The plugin authors' kit: what ``snakepit test`` runs in the test process.

``snakepit test`` starts the install's host, listens on a Unix socket (its path in
``SNAKEPIT_TEST_SOCKET``) and runs :func:`main` with the install's interpreter: pytest,
with the fixtures of ``pytest_plugin.py``. The test process talks to the host with the
workers' own frames and the shim's own host-request code: a :class:`~.runner.Worker`
over that socket, attached as this process's worker (``host.attach``), whose call in hand
is the test open now. So ``ctx["connectors"]`` and ``ctx["pools"]`` work here as in a
worker, and the host methods ``test.begin``, ``test.end``, ``test.call`` and
``test.api`` (crates/snakepit-host/src/testing.rs) open and end a test, call a plugin
through a real worker, and point an API connector at a test server.

Everything a test writes through the connectors (its own calls and those of the plugins
it calls through a worker) is rolled back when the test ends: one transaction per SQL
connector per test.
"""

from __future__ import annotations

import builtins
import importlib
import logging
import os
import socket
import sys
from typing import Any, Dict, List, Optional, Sequence

from . import host, protocol
from .channel import Channel
from .codec import select_codec
from .connectors import _CONNECTORS, _POOLS
from .errors import HostError
from .runner import Worker

SOCKET_ENV = "SNAKEPIT_TEST_SOCKET"
PLUGINS_ENV = "SNAKEPIT_TEST_PLUGINS"
# The exit status when pytest cannot be imported (as the CLI's bad-input errors).
NO_PYTEST = 2


class PluginError(Exception):
    """What ``snakepit_call`` raises when the plugin raised: ``type_name`` (its qualified
    type name), ``message`` and ``traceback`` (the worker's formatted traceback, also
    shown as this exception's cause). When the plugin's exception class can be imported
    here, the exception raised is also an instance of it (``pytest.raises(ValueError)``
    works)."""

    def __init__(self, type_name: str, message: str, traceback: str) -> None:
        Exception.__init__(self, message)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback

    def __str__(self) -> str:
        return self.message


class CallFailed(Exception):
    """``snakepit_call`` ended without an answer of the plugin's: ``kind`` is the
    supervisor's (``reference``: a bad reference or arguments, ``timeout``, ``crashed``,
    ...)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(f"{kind}: {message}")
        self.kind = kind
        self.message = message


class RemoteTraceback(Exception):
    """The plugin's traceback in the worker, as the cause of the exception raised here."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return "\n" + self.text.rstrip("\n")


def _exception_class(type_name: str) -> Optional[type]:
    """The class named ``module.QualName`` (builtins without a module), if it imports
    and is an exception class."""
    candidates = [("builtins", type_name)] if "." not in type_name else []
    parts = type_name.split(".")
    for i in range(len(parts) - 1, 0, -1):
        candidates.append((".".join(parts[:i]), ".".join(parts[i:])))
    for module_name, qualname in candidates:
        try:
            obj: Any = builtins if module_name == "builtins" else importlib.import_module(module_name)
            for attr in qualname.split("."):
                obj = getattr(obj, attr)
        except Exception:
            continue
        if isinstance(obj, type) and issubclass(obj, BaseException):
            return obj
    return None


def plugin_exception(type_name: str, message: str, traceback: str) -> PluginError:
    """A :class:`PluginError` that is also an instance of the plugin's exception class
    when that class can be imported and combined."""
    cls = _exception_class(type_name)
    kind: type = PluginError
    if cls is not None and not issubclass(cls, PluginError):
        try:
            kind = type(
                cls.__name__, (PluginError, cls), {"__module__": cls.__module__, "__qualname__": cls.__qualname__}
            )
        except TypeError:  # a layout that cannot be combined: PluginError alone
            kind = PluginError
    try:
        exc = kind.__new__(kind, message)
        PluginError.__init__(exc, type_name, message, traceback)
    except Exception:
        exc = PluginError(type_name, message, traceback)
    exc.__cause__ = RemoteTraceback(traceback)
    return exc


class Supervisor:
    """The test process's connection to the host of ``snakepit test``."""

    def __init__(self, path: str) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"cannot reach the supervisor of `snakepit test` at {path}: {exc}") from None
        codec = select_codec()
        self.worker = Worker(Channel(sock, protocol.DEFAULT_FRAME_LIMIT, codec), codec, protocol.DEFAULT_FRAME_LIMIT)
        host.attach(self.worker)

    def begin(self, package: str, name: str) -> int:
        """Opens a test acting as ``package`` (its grants apply): its id."""
        self.worker.call_id = None
        reply = host.request("test.begin", {"package": package, "name": name})
        self.worker.call_id = reply["test"]
        return reply["test"]

    def end(self) -> None:
        """Ends the open test: everything it wrote is rolled back."""
        try:
            host.request("test.end")
        finally:
            self.worker.call_id = None


_SUPERVISOR: Optional[Supervisor] = None


def supervisor() -> Supervisor:
    """The connection, made at first need."""
    global _SUPERVISOR
    if _SUPERVISOR is None:
        path = os.environ.get(SOCKET_ENV)
        if not path:
            raise RuntimeError(
                "the snakepit fixtures (plugin_ctx, snakepit_call, snakepit_api) need the"
                " supervisor that `snakepit test` runs: run the tests with"
                " `snakepit --apps DIR test`"
            )
        _SUPERVISOR = Supervisor(path)
    return _SUPERVISOR


class TestSession:
    """One test's side of the host: its job-step context, calls through workers, API
    connectors pointed elsewhere. Made and ended by the ``snakepit`` fixture."""

    __test__ = False  # not a test class for pytest

    def __init__(self, package: str, name: str) -> None:
        self.package = package
        self.supervisor = supervisor()
        test = self.supervisor.begin(package, name)
        self.context: Dict[str, Any] = {
            "connectors": _CONNECTORS,
            "pools": _POOLS,
            "job_id": "test",
            "run_id": f"test-{test}",
            "step_name": name,
            "params": {},
            "step_kwargs": {},
            "previous_step": None,
            "logger": logging.getLogger("job.test"),
            "session_user": "test",
        }

    def call(self, reference: str, /, **kwargs: Any) -> Any:
        """Calls ``reference`` through a worker of the install (the pool and grants of
        its package) with ``kwargs`` and this test's context; returns its value or
        raises its exception (see :class:`PluginError`). Its log records are replayed
        here (pytest's ``caplog`` sees them)."""
        context = {
            k: (None if k in ("connectors", "pools") else v.name if isinstance(v, logging.Logger) else v)
            for k, v in self.context.items()
        }
        try:
            reply = host.request("test.call", {"reference": reference, "kwargs": kwargs, "context": context})
        except HostError as err:
            kind = err.type[len("snakepit."):] if err.type.startswith("snakepit.") else err.type
            raise CallFailed(kind, err.message) from None
        _replay(reply.get("logs") or [])
        raised = reply.get("raised")
        if raised is not None:
            raise plugin_exception(raised["type_name"], raised["message"], raised["traceback"])
        return reply["value"]

    def point_api(self, connector: str, base_url: str) -> None:
        """Sends API connector ``connector``'s calls to ``base_url`` (a test server)
        until the test ends."""
        host.request("test.api", {"connector": connector, "base_url": base_url})

    def end(self) -> None:
        self.supervisor.end()


def _replay(records: List[Dict[str, Any]]) -> None:
    for rec in records:
        logger = logging.getLogger(rec["logger"])
        record = logger.makeRecord(
            logger.name, rec["level"], "(snakepit worker)", 0, rec["message"], None, None
        )
        record.created = rec["time"]
        if rec.get("exc_text"):
            record.exc_text = rec["exc_text"]
        logger.handle(record)


def main(argv: Sequence[str]) -> int:
    """``snakepit test``'s entry: ``main([PLUGINS_DIR, PYTEST_ARG...])``. The plugins
    directory goes first on ``sys.path`` (as in a worker); pytest runs with the
    fixtures. Returns pytest's exit status."""
    from .main import set_sys_path

    plugins, args = argv[0], list(argv[1:])
    set_sys_path([plugins])
    os.environ[PLUGINS_ENV] = plugins
    try:
        import pytest
    except ImportError:
        python = sys.executable or "python"
        sys.stderr.write(
            f"snakepit test: pytest is not installed in the install's interpreter {python}:"
            f" add it with\n    {python} -m pip install pytest\n"
        )
        return NO_PYTEST
    from . import pytest_plugin

    return int(pytest.main(args, plugins=[pytest_plugin]))
