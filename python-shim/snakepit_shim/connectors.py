"""The plugin's side of the connectors: ``ctx["connectors"]``, ``ctx["pools"]``.

Connectors live in the supervisor (URLs, passwords and tokens never enter a worker);
every call here is a host request (PROTOCOL.md, "Host methods of the plugin host"),
checked against the plugin's grants and audited there::

    rows = ctx["connectors"].sql("billing").run("drafts-for-period", period="2026-05")
    rows = await ctx["connectors"].sql("billing").run_async("drafts-for-period", period=p)
    done = ctx["connectors"].sql("billing").run_many("issue-invoice:write",
                                                     [{"id": 1}, {"id": 2}])
    body = await ctx["connectors"].api("crm").call("get-customer", id=42)
    body = ctx["connectors"].api("crm").call_sync("get-customer", id=42)

    async with ctx["pools"].get("billing").begin() as conn:
        result = await conn.execute("UPDATE invoices SET status = 'issued' WHERE batch = :b",
                                    {"b": batch})
    with ctx["pools"].get("billing").begin_sync() as conn:
        total = conn.execute(text("SELECT sum(amount) FROM invoices")).scalar()

The sync forms work from any thread and from sync code running inside an ``async def``
(they never deadlock the worker: see ``host.py``); the async forms from async code.
Parameter values keep their wire type both ways (None, bool, int, float, str, bytes,
list, dict, datetime, date, Decimal).

Failures: the supervisor's refusal of type ``"PermissionError"`` raises the builtin
:class:`PermissionError`; every other failure, and an API status >= 400, raises
:class:`~snakepit_shim.ConnectorError`.

The runner puts one :class:`ConnectorRegistry` and one :class:`PoolRegistry` (they hold
no state) in the context of every call whose context has the keys ``connectors`` and
``pools``, and a :class:`logging.Logger` for a ``logger`` key (:func:`bind_objects`).
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Tuple

from . import host
from .errors import CallCancelled, ConnectorError, HostError

_log = logging.getLogger("snakepit_shim.connectors")
_EXCERPT = 200  # characters of an HTTP error body shown in the message


def _failure(err: HostError) -> Exception:
    if err.type == "PermissionError":
        return PermissionError(err.message)
    return ConnectorError(err.message, kind=err.type)


def _request(method: str, payload: Dict[str, Any]) -> Any:
    try:
        return host.request(method, payload)
    except HostError as err:
        raise _failure(err) from None


async def _request_async(method: str, payload: Dict[str, Any]) -> Any:
    try:
        return await host.request_async(method, payload)
    except HostError as err:
        raise _failure(err) from None


def _name(kind: str, name: Any) -> str:
    if not isinstance(name, str) or not name:
        raise TypeError(f"a {kind} name is a non-empty str, not {name!r}")
    return name


# ------------------------------------------------------------------------ connectors


class ConnectorRegistry:
    """``ctx["connectors"]``: every connector of ``connectors.toml`` by name."""

    __slots__ = ()

    def sql(self, name: str) -> "SqlConnector":
        """The SQL connector ``[sql.NAME]``."""
        return SqlConnector(_name("connector", name))

    def api(self, name: str) -> "ApiConnector":
        """The HTTP API connector ``[api.NAME]``."""
        return ApiConnector(_name("connector", name))

    def __repr__(self) -> str:
        return "<snakepit ConnectorRegistry>"


class SqlConnector:
    """One SQL connector: runs its named queries (``[sql.NAME.queries]``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def run(self, query: str, /, **params: Any) -> Any:
        """Run the named query with ``:name`` parameters: a list of row dicts (columns in
        order) for a read query, ``{"rows_affected": n}`` for a write query (a name
        ending ``:write``). Sync; any thread."""
        return _request("sql.run", self._payload(query, params))

    async def run_async(self, query: str, /, **params: Any) -> Any:
        """:meth:`run` from async code."""
        return await _request_async("sql.run", self._payload(query, params))

    def run_many(self, query: str, param_sets: Iterable[Mapping[str, Any]], /) -> Any:
        """Run the named query once per dict of ``param_sets``, all in one host request
        and one transaction (all or nothing: a failing set rolls every set back, and
        the error names its index). A write query gives ``{"rows_affected": total}``, a
        read query one list of row dicts per set. Audited as one call. Sync; any
        thread."""
        return _request("sql.run_many", self._many_payload(query, param_sets))

    async def run_many_async(self, query: str, param_sets: Iterable[Mapping[str, Any]], /) -> Any:
        """:meth:`run_many` from async code."""
        return await _request_async("sql.run_many", self._many_payload(query, param_sets))

    def _payload(self, query: str, params: Dict[str, Any]) -> Dict[str, Any]:
        return {"connector": self.name, "query": _name("query", query), "params": params}

    def _many_payload(self, query: str, param_sets: Iterable[Mapping[str, Any]]) -> Dict[str, Any]:
        if isinstance(param_sets, (str, bytes, Mapping)):
            raise TypeError(
                "run_many() takes a list of parameter dicts (one per run), not a"
                f" {type(param_sets).__name__}"
            )
        sets = []
        for i, params in enumerate(param_sets):
            if not isinstance(params, Mapping):
                raise TypeError(
                    f"run_many(): parameter set {i} is a {type(params).__name__}, not a dict"
                )
            sets.append(dict(params))
        return {"connector": self.name, "query": _name("query", query), "params": sets}

    def __repr__(self) -> str:
        return f"SqlConnector({self.name!r})"


class ApiConnector:
    """One HTTP API connector: calls its named endpoints (``[api.NAME.endpoints]``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    async def call(self, endpoint: str, /, **params: Any) -> Any:
        """Call the named endpoint (``params`` fill the ``{placeholders}`` of its path;
        the supervisor decides what else they become): the decoded JSON body (or the
        text when it is not JSON). A status >= 400 raises :class:`ConnectorError` with
        ``status`` and ``body``."""
        reply = await _request_async("api.call", self._payload(endpoint, params))
        return self._body(endpoint, reply)

    def call_sync(self, endpoint: str, /, **params: Any) -> Any:
        """:meth:`call` from sync code; any thread."""
        return self._body(endpoint, _request("api.call", self._payload(endpoint, params)))

    def _payload(self, endpoint: str, params: Dict[str, Any]) -> Dict[str, Any]:
        return {"connector": self.name, "endpoint": _name("endpoint", endpoint), "params": params}

    def _body(self, endpoint: str, reply: Dict[str, Any]) -> Any:
        status, body = reply["status"], reply["body"]
        if status < 400:
            return body
        shown = body if isinstance(body, str) else repr(body)
        if len(shown) > _EXCERPT:
            shown = shown[:_EXCERPT] + f"... ({len(shown)} characters)"
        raise ConnectorError(
            f"api connector {self.name!r}, endpoint {endpoint!r}: HTTP {status}: {shown}",
            kind="HTTPStatus",
            status=status,
            body=body,
        )

    def __repr__(self) -> str:
        return f"ApiConnector({self.name!r})"


# ------------------------------------------------------------------------ pools


class PoolRegistry:
    """``ctx["pools"]``: the SQL connectors' connection pools by name, for raw SQL in
    transactions."""

    __slots__ = ()

    def get(self, name: str) -> "Pool":
        """The pool of the SQL connector ``[sql.NAME]``."""
        return Pool(_name("pool", name))

    def __repr__(self) -> str:
        return "<snakepit PoolRegistry>"


class Pool:
    """One connector's pool: :meth:`begin` (async) and :meth:`begin_sync` open a
    transaction held by the supervisor."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def begin(self) -> "Transaction":
        """``async with pool.begin() as conn:`` one transaction: committed when the block
        ends normally, rolled back when it raises (the exception goes on)."""
        return Transaction(self.name)

    def begin_sync(self) -> "SyncTransaction":
        """``with pool.begin_sync() as conn:``, the sync twin of :meth:`begin`."""
        return SyncTransaction(self.name)

    def __repr__(self) -> str:
        return f"Pool({self.name!r})"


class Result:
    """What ``execute`` returns: ``rowcount`` and the rows (dicts, columns in order)."""

    __slots__ = ("rowcount", "_rows")

    def __init__(self, rowcount: int, rows: List[Dict[str, Any]]) -> None:
        self.rowcount = rowcount
        self._rows = rows

    def all(self) -> List[Dict[str, Any]]:
        """Every row, as a new list of dicts."""
        return list(self._rows)

    def first(self) -> Optional[Dict[str, Any]]:
        """The first row, or None when there is none."""
        return self._rows[0] if self._rows else None

    def scalar(self) -> Any:
        """The first column of the first row, or None when there is none."""
        if not self._rows:
            return None
        return next(iter(self._rows[0].values()), None)

    def __iter__(self) -> Iterator[Dict[str, Any]]:
        return iter(self._rows)

    def __repr__(self) -> str:
        return f"Result(rowcount={self.rowcount}, rows={len(self._rows)})"


_NOT_SQL = (bytes, bytearray, memoryview, int, float, list, tuple, dict, set, type(None))


def _sql_text(sql: Any) -> str:
    if isinstance(sql, str):
        return sql
    if isinstance(sql, _NOT_SQL):
        raise TypeError(
            "execute() takes the SQL as a str or an object whose str() is the SQL"
            f" (SQLAlchemy's text()), not {type(sql).__name__}"
        )
    return str(sql)


def _sql_params(params: Optional[Mapping[str, Any]], more: Dict[str, Any]) -> Dict[str, Any]:
    if params is None:
        return more
    if not isinstance(params, Mapping):
        raise TypeError(
            "execute() takes the parameters as a dict of :name values (or keyword"
            f" arguments), not {type(params).__name__}"
        )
    merged = dict(params)
    for key, value in more.items():
        if key in merged:
            raise TypeError(f"execute() got the parameter {key!r} both in the dict and as a keyword")
        merged[key] = value
    return merged


class _TransactionState:
    """What the sync and the async transaction share: the state and the payloads.

    States: ``new`` (not entered yet), ``open``, then ``committed``, ``rolled back`` or
    ``abandoned`` (the call was cancelled: the supervisor rolls it back when the call
    ends). A cancellation of the plugin's own (``asyncio.wait_for`` timing out) is an
    exception like any other: rolled back at once."""

    __slots__ = ("pool", "tx", "state")

    def __init__(self, pool: str) -> None:
        self.pool = pool
        self.tx: Optional[int] = None
        self.state = "new"

    def _begin(self) -> Tuple[str, Dict[str, Any]]:
        if self.state != "new":
            raise RuntimeError(
                f"this transaction on pool {self.pool!r} was already entered; call"
                " begin() again for a new one"
            )
        return "tx.begin", {"pool": self.pool}

    def _opened(self, reply: Dict[str, Any]) -> None:
        self.tx = reply["tx"]
        self.state = "open"

    def _execute(
        self, sql: Any, params: Optional[Mapping[str, Any]], more: Dict[str, Any]
    ) -> Tuple[str, Dict[str, Any]]:
        if self.state != "open":
            where = "before its block began" if self.state == "new" else f"after it was {self.state}"
            raise RuntimeError(
                f"execute() on a transaction of pool {self.pool!r} {where}: use the"
                " connection only inside its `with` / `async with` block"
            )
        return "tx.execute", {"tx": self.tx, "sql": _sql_text(sql), "params": _sql_params(params, more)}

    def _end(self, exc_type: Any) -> Optional[Tuple[str, Dict[str, Any]]]:
        """The request that ends the block (None: nothing to send)."""
        if self.state != "open":
            return None
        if (exc_type is not None and issubclass(exc_type, CallCancelled)) or host.cancelling():
            # The call is being cancelled: its answer says so, nothing of it is committed,
            # and the supervisor rolls back what is still open when the call ends (a
            # sync call could not even wait for a reply now). A block that ended
            # normally must not go on as if it had committed.
            self.state = "abandoned"
            if exc_type is None:
                raise CallCancelled()
            return None
        if exc_type is None:
            self.state = "committed"
            return "tx.commit", {"tx": self.tx}
        self.state = "rolled back"
        return "tx.rollback", {"tx": self.tx}

    def _rollback_failed(self, err: Exception) -> None:
        # The block's own exception matters more: it goes on; the supervisor rolls the
        # transaction back when the call ends anyway.
        _log.warning("rolling back the transaction on pool %r failed: %s", self.pool, err)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} on pool {self.pool!r}, {self.state}>"


class Transaction(_TransactionState):
    """``async with pool.begin() as conn``: ``conn`` is this object;
    ``await conn.execute(sql, params)``."""

    __slots__ = ()

    async def __aenter__(self) -> "Transaction":
        self._opened(await _request_async(*self._begin()))
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        end = self._end(exc_type)
        if end is not None:
            try:
                await _request_async(*end)
            except Exception as err:
                if exc_type is None:
                    raise
                self._rollback_failed(err)
        return False

    async def execute(
        self, sql: Any, params: Optional[Mapping[str, Any]] = None, /, **more: Any
    ) -> Result:
        """Run ``sql`` (a str, or an object whose ``str()`` is the SQL, like SQLAlchemy's
        ``text()``) with ``:name`` parameters from the ``params`` dict and/or keyword
        arguments, in this transaction."""
        reply = await _request_async(*self._execute(sql, params, more))
        return Result(reply["rowcount"], reply["rows"])

    def __enter__(self) -> None:
        raise TypeError("pool.begin() is for `async with`; from sync code use `with pool.begin_sync()`")

    def __exit__(self, *exc: Any) -> None:
        """Never called (``__enter__`` refuses); ``with`` needs it to reach ``__enter__``."""


class SyncTransaction(_TransactionState):
    """``with pool.begin_sync() as conn``: ``conn`` is this object;
    ``conn.execute(sql, params)``. Any thread."""

    __slots__ = ()

    def __enter__(self) -> "SyncTransaction":
        self._opened(_request(*self._begin()))
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> bool:
        end = self._end(exc_type)
        if end is not None:
            try:
                _request(*end)
            except Exception as err:
                if exc_type is None:
                    raise
                self._rollback_failed(err)
        return False

    def execute(
        self, sql: Any, params: Optional[Mapping[str, Any]] = None, /, **more: Any
    ) -> Result:
        """Like :meth:`Transaction.execute`, sync."""
        reply = _request(*self._execute(sql, params, more))
        return Result(reply["rowcount"], reply["rows"])

    async def __aenter__(self) -> None:
        raise TypeError("pool.begin_sync() is for `with`; from async code use `async with pool.begin()`")

    async def __aexit__(self, *exc: Any) -> None:
        """Never called (``__aenter__`` refuses); ``async with`` needs it."""


# ------------------------------------------------------------------------ context objects

_CONNECTORS = ConnectorRegistry()
_POOLS = PoolRegistry()
# logger name -> logging.getLogger(name), which is the same object for ever: kept here
# to skip getLogger's module lock on every call.
_LOGGERS: Dict[str, logging.Logger] = {}


def bind_objects(context: Dict[str, Any]) -> None:
    """Replace the context objects' keys of a CALL's context in place (PROTOCOL.md,
    "Context objects"): ``connectors`` and ``pools`` (any value) by the registries,
    ``logger`` (a str) by ``logging.getLogger(that str)``."""
    if "connectors" in context:
        context["connectors"] = _CONNECTORS
    if "pools" in context:
        context["pools"] = _POOLS
    name = context.get("logger")
    if type(name) is str:
        logger = _LOGGERS.get(name)
        if logger is None:
            logger = _LOGGERS[name] = logging.getLogger(name)
        context["logger"] = logger
