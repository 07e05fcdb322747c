"""snakepit's Python side: the shim that runs inside every worker process.

Plugin code uses the context objects it is given (``ctx["connectors"]``,
``ctx["pools"]``, ``ctx["logger"]``: see ``connectors.py``) and only this package's top
level::

    from snakepit_shim import ConnectorError, host_request, host_request_async, HostError

    rows = host_request("echo", {"x": 1})            # sync, from any thread
    rows = await host_request_async("echo", {"x": 1})  # from async code

The rest (``main``, ``runner``, ``protocol``, ``codec``, ...) is the worker's machinery.
The wire protocol is defined in crates/snakepit-proto/PROTOCOL.md.
"""

from .codec import EncodeError
from .connectors import ConnectorRegistry, PoolRegistry
from .host import request as host_request
from .host import request_async as host_request_async
from .errors import CallCancelled, ConnectorError, HostError

__all__ = [
    "host_request",
    "host_request_async",
    "HostError",
    "ConnectorError",
    "ConnectorRegistry",
    "PoolRegistry",
    "CallCancelled",
    "EncodeError",
]
