"""snakepit's Python side: the shim that runs inside every worker process.

Plugin code uses the context objects it is given (``ctx["connectors"]``,
``ctx["pools"]``, ``ctx["logger"]``: see ``connectors.py``) and only this package's top
level::

    from snakepit_shim import ConnectorError, host_request, host_request_async, HostError

    rows = host_request("echo", {"x": 1})            # sync, from any thread
    rows = await host_request_async("echo", {"x": 1})  # from async code

The names here are typed (``JobStepContext``, ``PasswordContext``,
``BeforeQueryContext``: the context keys of each extension point) for editors and type
checkers: ``snakepit shim --path`` prints the directory to put on ``PYTHONPATH`` or an
editor's extra paths. Outside a worker the package imports (its classes are real:
``except ConnectorError`` works), and what needs the supervisor raises
:class:`NotInWorker` saying how to get one (``snakepit test``'s fixtures).

The rest (``main``, ``runner``, ``protocol``, ``codec``, ...) is the worker's machinery;
``testing`` and ``pytest_plugin`` are ``snakepit test``'s.
The wire protocol is defined in crates/snakepit-proto/PROTOCOL.md.
"""

from .codec import EncodeError
from .connectors import (
    ApiConnector,
    ConnectorRegistry,
    Pool,
    PoolRegistry,
    Result,
    SqlConnector,
    SyncTransaction,
    Transaction,
)
from .contexts import BeforeQueryContext, JobStepContext, PasswordContext
from .host import request as host_request
from .host import request_async as host_request_async
from .errors import CallCancelled, ConnectorError, HostError, NotInWorker

__all__ = [
    "host_request",
    "host_request_async",
    "HostError",
    "ConnectorError",
    "NotInWorker",
    "ConnectorRegistry",
    "SqlConnector",
    "ApiConnector",
    "PoolRegistry",
    "Pool",
    "Transaction",
    "SyncTransaction",
    "Result",
    "JobStepContext",
    "PasswordContext",
    "BeforeQueryContext",
    "CallCancelled",
    "EncodeError",
]
