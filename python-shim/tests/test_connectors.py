"""ctx["connectors"], ctx["pools"] and ctx["logger"] in the real worker, against a fake
supervisor that serves the connector host methods of PROTOCOL.md."""

from __future__ import annotations

import datetime
import functools
import logging
import textwrap
from decimal import Decimal
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

from conftest import Refused, start_worker
from snakepit_shim import protocol

RESULT, EXCEPTION, LOG = protocol.RESULT, protocol.EXCEPTION, protocol.LOG
CONTEXT = {"connectors": None, "pools": None}

PLUGIN = '''
import asyncio, logging
from concurrent.futures import ThreadPoolExecutor
from snakepit_shim import ConnectorError, HostError


class Text:
    """Like SQLAlchemy's text(): str() is the SQL."""

    def __init__(self, sql):
        self.sql = sql

    def __str__(self):
        return self.sql


def types(values):
    return {k: type(v).__name__ for k, v in values.items()}


def failure(exc):
    out = {"type": type(exc).__name__, "message": str(exc)}
    if isinstance(exc, ConnectorError):
        out.update(kind=exc.kind, status=exc.status, body=exc.body,
                   host_error=isinstance(exc, HostError) and exc.type == exc.kind)
    return out


# ------------------------------------------------------------------ context objects

def context_types(**ctx):
    return {k: type(v).__name__ for k, v in ctx.items()}


def only_connectors(connectors, job_id="none"):
    return [type(connectors).__name__, job_id]


def uses_logger(logger):
    logger.info("issued %d invoices", 3)
    return [isinstance(logger, logging.Logger) and logger is logging.getLogger(logger.name),
            logger.name]


# ------------------------------------------------------------------ sql

def sql(connectors, connector, query, params):
    return connectors.sql(connector).run(query, **params)


async def sql_async(connectors, connector, query, params):
    return await connectors.sql(connector).run_async(query, **params)


async def sql_sync_inside_async(connectors, connector, query, params):
    return connectors.sql(connector).run(query, **params)


def sql_threads(connectors, n=4):
    billing = connectors.sql("billing")
    with ThreadPoolExecutor(n) as pool:
        rows = pool.map(lambda i: billing.run("echo", i=i)[0]["i"], range(n))
        return sorted(rows)


async def sql_gathered(connectors, n=4):
    billing = connectors.sql("billing")
    replies = await asyncio.gather(*(billing.run_async("echo", i=i) for i in range(n)))
    return [rows[0]["i"] for rows in replies]


def sql_typed(connectors, params):
    (row,) = connectors.sql("billing").run("echo", **params)
    return {"row": row, "types": types(row)}


def sql_failure(connectors, connector, query, run_async=False):
    try:
        if run_async:
            return asyncio.run(connectors.sql(connector).run_async(query))
        return connectors.sql(connector).run(query)
    except Exception as exc:
        return failure(exc)


def sql_raises(connectors, connector, query):
    return connectors.sql(connector).run(query)


def sql_many(connectors, query, sets):
    return connectors.sql("billing").run_many(query, sets)


async def sql_many_async(connectors, query, sets):
    return await connectors.sql("billing").run_many_async(query, sets)


def sql_many_generator(connectors, n):
    return connectors.sql("billing").run_many("issue-invoice:write", ({"id": i} for i in range(n)))


def sql_many_refused(connectors, sets):
    try:
        connectors.sql("billing").run_many("issue-invoice:write", sets)
    except TypeError as exc:
        return str(exc)


def bad_names(connectors):
    out = []
    for make in (lambda: connectors.sql(None), lambda: connectors.api(""),
                 lambda: connectors.sql("billing").run(3)):
        try:
            make()
        except TypeError as exc:
            out.append(str(exc))
    return out


# ------------------------------------------------------------------ api

async def api(connectors, endpoint, params):
    try:
        return await connectors.api("crm").call(endpoint, **params)
    except ConnectorError as exc:
        return failure(exc)


def api_sync(connectors, endpoint, params):
    try:
        return connectors.api("crm").call_sync(endpoint, **params)
    except ConnectorError as exc:
        return failure(exc)


async def api_sync_inside_async(connectors):
    return connectors.api("crm").call_sync("get-customer", id=7)


def api_own_loop(connectors):
    return asyncio.run(connectors.api("crm").call("get-customer", id=8))


async def api_raises(connectors):
    return await connectors.api("crm").call("missing", id=1)


# ------------------------------------------------------------------ transactions

def summary(update, select):
    return {"update": [update.rowcount, update.all(), update.first(), update.scalar()],
            "select": [select.rowcount, select.all(), select.first(), select.scalar(),
                       list(select), types(select.first())]}


UPDATE = "UPDATE invoices SET status = 'issued' WHERE batch_id = :b"
SELECT = "SELECT id, amount FROM invoices WHERE batch_id = :b AND day = :day"


def tx_sync(pools, fail=False):
    with pools.get("billing").begin_sync() as conn:
        update = conn.execute(Text(UPDATE), {"b": 7})
        select = conn.execute(SELECT, {"b": 7}, day=datetime_day())
        if fail:
            raise ValueError("changed my mind")
    return summary(update, select)


async def tx_async(pools, fail=False):
    async with pools.get("billing").begin() as conn:
        update = await conn.execute(Text(UPDATE), {"b": 7})
        select = await conn.execute(SELECT, {"b": 7}, day=datetime_day())
        if fail:
            raise ValueError("changed my mind")
    return summary(update, select)


async def tx_sync_inside_async(pools):
    with pools.get("billing").begin_sync() as conn:
        return conn.execute(SELECT, b=1, day=datetime_day()).scalar()


def datetime_day():
    import datetime
    return datetime.date(2026, 5, 31)


def tx_failing_statement(pools):
    with pools.get("billing").begin_sync() as conn:
        conn.execute("FAIL here")


def tx_after_block(pools, how="commit"):
    try:
        with pools.get("billing").begin_sync() as conn:
            if how == "raise":
                raise KeyError("x")
    except KeyError:
        pass
    conn.execute("SELECT 1")


async def tx_after_block_async(pools):
    txn = pools.get("billing").begin()
    try:
        await txn.execute("SELECT 1")
    except RuntimeError as exc:
        before = str(exc)
    async with txn:
        pass
    try:
        async with txn:
            pass
    except RuntimeError as exc:
        again = str(exc)
    return [before, again]


def tx_wrong_with(pools, which):
    pool = pools.get("billing")
    if which == "begin":
        with pool.begin():
            pass
    else:
        async def inner():
            async with pool.begin_sync():
                pass
        asyncio.run(inner())


def tx_bad_arguments(pools):
    out = []
    with pools.get("billing").begin_sync() as conn:
        for args, kwargs in (((None,), {}), ((b"SELECT 1",), {}), (("SELECT :a", [1]), {}),
                             (("SELECT :a", {"a": 1}), {"a": 2})):
            try:
                conn.execute(*args, **kwargs)
            except TypeError as exc:
                out.append(str(exc))
        out.append(conn.execute("SELECT :sql, :params", sql=1, params=2).first())
    return out


def tx_sleeps(pools):
    import time
    with pools.get("billing").begin_sync() as conn:
        conn.execute("UPDATE x SET y = 1")
        logging.getLogger("conny").warning("inside")
        time.sleep(60)


_outcome = {}


def tx_in_a_thread_of_a_cancelled_call(pools):
    """A thread's block ends normally after the call was cancelled: no commit."""
    import threading
    from snakepit_shim import CallCancelled
    go, done = threading.Event(), threading.Event()

    def work():
        try:
            with pools.get("billing").begin_sync() as conn:
                conn.execute("UPDATE x SET y = 1")
                logging.getLogger("conny").warning("inside")
                go.wait(10)
            _outcome["thread"] = "committed"
        except BaseException as exc:
            _outcome["thread"] = type(exc).__name__
        finally:
            done.set()

    try:
        threading.Thread(target=work).start()
        done.wait()  # (not Thread.join: a signal that interrupts it marks the thread stopped)
    except CallCancelled:
        go.set()
        done.wait(10)
        raise


def thread_outcome():
    return _outcome.pop("thread", None)


async def tx_sleeps_async(pools, entered=None):
    async with pools.get("billing").begin() as conn:
        logging.getLogger("conny").warning("inside")
        if entered is not None:
            entered.set()
        await asyncio.sleep(60)


async def tx_cancelled_by_the_plugin(pools):
    entered = asyncio.Event()
    task = asyncio.ensure_future(tx_sleeps_async(pools, entered))
    await entered.wait()
    task.cancel()  # as asyncio.wait_for does on its timeout
    try:
        await task
    except asyncio.CancelledError:
        return "cancelled"
'''


class FakeConnectors:
    """The supervisor's connector host methods, with a record of what they received."""

    def __init__(self) -> None:
        self.seen: List[Tuple[str, Any]] = []
        self.next_tx = 40
        self.fail: set = set()  # method names that refuse

    def install(self, methods: Dict[str, Any]) -> None:
        for name in ("sql.run", "sql.run_many", "api.call", "tx.begin", "tx.execute", "tx.commit",
                     "tx.rollback"):
            methods[name] = functools.partial(self.handle, name)

    def methods(self) -> List[str]:
        return [method for method, _ in self.seen]

    def handle(self, method: str, payload: Any) -> Any:
        self.seen.append((method, payload))
        if method in self.fail:
            raise Refused("ConnectorError", f"{method} failed: connection reset")
        return getattr(self, method.replace(".", "_"))(payload)

    def sql_run(self, p: Dict[str, Any]) -> Any:
        if p["connector"] == "secret":
            raise Refused("PermissionError", "plugin 'conny' may not use sql connector 'secret'")
        if p["connector"] == "slow":
            raise Refused("Timeout", "sql connector 'slow': no connection within 5s")
        if p["query"] == "echo":
            return [p["params"]]
        if p["query"].endswith(":write"):
            return {"rows_affected": len(p["params"])}
        raise Refused("ConnectorError", f"sql connector {p['connector']!r} has no query {p['query']!r}")

    def sql_run_many(self, p: Dict[str, Any]) -> Any:
        if p["query"].endswith(":write"):
            return {"rows_affected": len(p["params"])}
        return [[params] for params in p["params"]]

    def api_call(self, p: Dict[str, Any]) -> Any:
        endpoint, params = p["endpoint"], p["params"]
        if endpoint == "get-customer":
            return {"status": 200, "body": {"id": params["id"], "name": "Ada"}}
        if endpoint == "no-content":
            return {"status": 204, "body": None}
        if endpoint == "missing":
            return {"status": 404, "body": {"error": "no such customer"}}
        return {"status": 502, "body": "<html>" + "x" * 500}

    def tx_begin(self, p: Dict[str, Any]) -> Any:
        if p["pool"] == "secret":
            raise Refused("PermissionError", "plugin 'conny' may not use pool 'secret'")
        self.next_tx += 1
        return {"tx": self.next_tx}

    def tx_execute(self, p: Dict[str, Any]) -> Any:
        sql, params = p["sql"], p["params"]
        if sql.startswith("FAIL"):
            raise Refused("ConnectorError", 'syntax error at or near "FAIL"')
        if sql.startswith("SELECT"):
            rows = [{"id": 1, "amount": Decimal("12.50"), **params}, {"id": 2, "amount": None}]
            return {"rowcount": len(rows), "rows": rows}
        return {"rowcount": 3, "rows": []}

    def tx_commit(self, p: Dict[str, Any]) -> Any:
        return None

    tx_rollback = tx_commit


@pytest.fixture(scope="module")
def conny_worker(tmp_path_factory: pytest.TempPathFactory):
    root: Path = tmp_path_factory.mktemp("conny")
    (root / "conny.py").write_text(textwrap.dedent(PLUGIN), encoding="utf-8")
    sup = start_worker(root)
    assert sup.recv()[0] == protocol.HANDSHAKE
    fake = FakeConnectors()
    fake.install(sup.methods)
    sup.fake = fake
    try:
        yield sup
    finally:
        sup.close()


@pytest.fixture
def sup(conny_worker):
    conny_worker.fake.seen.clear()
    conny_worker.fake.fail.clear()
    conny_worker.logs.clear()
    conny_worker.host_requests.clear()
    return conny_worker


def value(msg: list) -> Any:
    assert msg[0] == RESULT, msg
    return msg[2]


def raised(msg: list) -> Tuple[str, str]:
    assert msg[0] == EXCEPTION and msg[2] == "raised", msg
    return msg[3], msg[4]


# ------------------------------------------------------------------ context objects


def test_var_kwargs_function_sees_the_context_objects(sup):
    msg = sup.call("conny:context_types", {}, {"connectors": None, "pools": {}, "logger": "jobs.x",
                                               "run_id": "r1"})
    assert value(msg) == {"connectors": "ConnectorRegistry", "pools": "PoolRegistry",
                          "logger": "Logger", "run_id": "str"}


def test_a_function_declaring_only_connectors_gets_only_that(sup):
    msg = sup.call("conny:only_connectors", {}, {"connectors": 1, "pools": 2, "logger": "x",
                                                 "job_id": "j"})
    assert value(msg) == ["ConnectorRegistry", "j"]


def test_other_keys_and_kwargs_are_passed_as_they_are(sup):
    msg = sup.call("conny:context_types", {"connectors": "mine"}, {"logger": None})
    assert value(msg) == {"connectors": "str", "logger": "NoneType"}  # kwargs win; logger not a str


def test_logger_is_a_logger_whose_records_are_tagged_with_the_call(sup):
    for name in ("jobs.reissue-monthly-drafts", "jobs.other", "jobs.reissue-monthly-drafts"):
        sup.logs.clear()
        msg = sup.call("conny:uses_logger", {}, {"logger": name})
        assert value(msg) == [True, name]
        (log,) = [m for m in sup.logs if m[3] == name]
        assert log[:6] == [LOG, msg[1], logging.INFO, name, "issued 3 invoices", None]


def test_validate_accepts_the_context_object_keys(sup):
    for reference in ("conny:only_connectors", "conny:uses_logger", "conny:tx_sync"):
        msg = sup.validate(reference, {}, ["connectors", "pools", "logger", "job_id"])
        assert msg == [RESULT, sup.next_call, None]


# ------------------------------------------------------------------ sql


@pytest.mark.parametrize("reference", ["conny:sql", "conny:sql_async",
                                       "conny:sql_sync_inside_async"])
def test_sql_run(sup, reference):
    read = sup.call(reference, {"connector": "billing", "query": "echo",
                                "params": {"period": "2026-05", "query": "a param named query"}},
                    CONTEXT)
    assert value(read) == [{"period": "2026-05", "query": "a param named query"}]
    write = sup.call(reference, {"connector": "billing", "query": "issue-invoice:write",
                                 "params": {"id": 42}}, CONTEXT)
    assert value(write) == {"rows_affected": 1}
    assert sup.fake.seen == [
        ("sql.run", {"connector": "billing", "query": "echo",
                     "params": {"period": "2026-05", "query": "a param named query"}}),
        ("sql.run", {"connector": "billing", "query": "issue-invoice:write", "params": {"id": 42}}),
    ]
    assert [r[2] for r in sup.host_requests] == [read[1], write[1]]  # tagged with their calls


@pytest.mark.parametrize("reference,expected", [
    ("conny:sql_threads", [0, 1, 2, 3]),
    ("conny:sql_gathered", [0, 1, 2, 3]),
])
def test_sql_run_concurrently(sup, reference, expected):
    assert value(sup.call(reference, {"n": 4}, CONTEXT)) == expected
    assert sup.fake.methods() == ["sql.run"] * 4


@pytest.mark.parametrize("reference", ["conny:sql_many", "conny:sql_many_async"])
def test_sql_run_many_sends_every_set_in_one_request(sup, reference):
    sets = [{"id": 1}, {"id": 2, "at": datetime.date(2026, 5, 1)}]
    write = sup.call(reference, {"query": "issue-invoice:write", "sets": sets}, CONTEXT)
    assert value(write) == {"rows_affected": 2}
    read = sup.call(reference, {"query": "echo", "sets": sets}, CONTEXT)
    assert value(read) == [[{"id": 1}], [{"id": 2, "at": datetime.date(2026, 5, 1)}]]
    assert sup.fake.seen == [
        ("sql.run_many", {"connector": "billing", "query": "issue-invoice:write", "params": sets}),
        ("sql.run_many", {"connector": "billing", "query": "echo", "params": sets}),
    ]


def test_sql_run_many_takes_any_iterable_of_dicts(sup):
    assert value(sup.call("conny:sql_many_generator", {"n": 3}, CONTEXT)) == {"rows_affected": 3}
    assert sup.fake.seen[0][1]["params"] == [{"id": 0}, {"id": 1}, {"id": 2}]


@pytest.mark.parametrize("sets,expected", [
    ({"id": 1}, "run_many() takes a list of parameter dicts (one per run), not a dict"),
    ([{"id": 1}, 2], "run_many(): parameter set 1 is a int, not a dict"),
])
def test_sql_run_many_refuses_what_is_not_a_list_of_dicts(sup, sets, expected):
    assert value(sup.call("conny:sql_many_refused", {"sets": sets}, CONTEXT)) == expected
    assert sup.fake.seen == []


def test_parameters_and_rows_keep_their_types(sup):
    params = {
        "amount": Decimal("1234.50"),
        "when": datetime.datetime(2026, 5, 31, 23, 59, 1, 5,
                                  tzinfo=datetime.timezone(datetime.timedelta(hours=2))),
        "naive": datetime.datetime(2026, 1, 1, 8, 0),
        "day": datetime.date(2026, 5, 31),
        "blob": b"\x00\xff",
        "none": None,
        "flag": True,
        "ratio": 0.5,
    }
    result = value(sup.call("conny:sql_typed", {"params": params}, CONTEXT))
    ((_, payload),) = sup.fake.seen
    assert payload["params"] == params  # as the supervisor decodes them
    assert {k: type(v) for k, v in payload["params"].items()} == {k: type(v) for k, v in params.items()}
    assert payload["params"]["when"].utcoffset() == datetime.timedelta(hours=2)
    assert result["row"] == params
    assert result["types"] == {"amount": "Decimal", "when": "datetime", "naive": "datetime",
                               "day": "date", "blob": "bytes", "none": "NoneType",
                               "flag": "bool", "ratio": "float"}


@pytest.mark.parametrize("run_async", [False, True])
@pytest.mark.parametrize("connector,query,expected", [
    ("secret", "echo", {"type": "PermissionError",
                        "message": "plugin 'conny' may not use sql connector 'secret'"}),
    ("billing", "nope", {"type": "ConnectorError", "kind": "ConnectorError",
                         "message": "sql connector 'billing' has no query 'nope'",
                         "status": None, "body": None, "host_error": True}),
    ("slow", "echo", {"type": "ConnectorError", "kind": "Timeout",
                      "message": "sql connector 'slow': no connection within 5s",
                      "status": None, "body": None, "host_error": True}),
])
def test_sql_failures(sup, connector, query, expected, run_async):
    msg = sup.call("conny:sql_failure", {"connector": connector, "query": query,
                                         "run_async": run_async}, CONTEXT)
    assert value(msg) == expected


def test_an_escaping_connector_error_is_reported_under_its_public_name(sup):
    type_name, message = raised(sup.call("conny:sql_raises", {"connector": "billing",
                                                              "query": "nope"}, CONTEXT))
    assert (type_name, message) == ("snakepit_shim.ConnectorError",
                                    "sql connector 'billing' has no query 'nope'")
    type_name, message = raised(sup.call("conny:sql_raises", {"connector": "secret",
                                                              "query": "echo"}, CONTEXT))
    assert (type_name, message) == ("PermissionError",
                                    "plugin 'conny' may not use sql connector 'secret'")


def test_a_host_without_connectors(sup):
    del sup.methods["sql.run"]
    try:
        msg = sup.call("conny:sql_failure", {"connector": "billing", "query": "echo"}, CONTEXT)
    finally:
        sup.fake.install(sup.methods)
    assert value(msg)["kind"] == "UnknownMethod"


def test_names_must_be_strings(sup):
    assert value(sup.call("conny:bad_names", {}, CONTEXT)) == [
        "a connector name is a non-empty str, not None",
        "a connector name is a non-empty str, not ''",
        "a query name is a non-empty str, not 3",
    ]
    assert sup.fake.seen == []


# ------------------------------------------------------------------ api


@pytest.mark.parametrize("reference", ["conny:api", "conny:api_sync"])
def test_api_call(sup, reference):
    ok = sup.call(reference, {"endpoint": "get-customer", "params": {"id": 42}}, CONTEXT)
    assert value(ok) == {"id": 42, "name": "Ada"}
    empty = sup.call(reference, {"endpoint": "no-content", "params": {}}, CONTEXT)
    assert value(empty) is None
    assert sup.fake.seen[0] == ("api.call", {"connector": "crm", "endpoint": "get-customer",
                                             "params": {"id": 42}})


@pytest.mark.parametrize("reference", ["conny:api", "conny:api_sync"])
def test_api_status_400_and_up_raises_connector_error(sup, reference):
    missing = value(sup.call(reference, {"endpoint": "missing", "params": {"id": 1}}, CONTEXT))
    assert missing == {
        "type": "ConnectorError", "kind": "HTTPStatus", "status": 404,
        "body": {"error": "no such customer"}, "host_error": True,
        "message": "api connector 'crm', endpoint 'missing': HTTP 404:"
                   " {'error': 'no such customer'}",
    }
    broken = value(sup.call(reference, {"endpoint": "broken", "params": {}}, CONTEXT))
    assert broken["status"] == 502 and broken["body"] == "<html>" + "x" * 500
    assert broken["message"] == ("api connector 'crm', endpoint 'broken': HTTP 502: <html>"
                                 + "x" * 194 + "... (506 characters)")


@pytest.mark.parametrize("reference,expected", [
    ("conny:api_sync_inside_async", {"id": 7, "name": "Ada"}),
    ("conny:api_own_loop", {"id": 8, "name": "Ada"}),
])
def test_api_from_other_places(sup, reference, expected):
    assert value(sup.call(reference, {}, CONTEXT)) == expected


def test_an_escaping_http_error(sup):
    type_name, message = raised(sup.call("conny:api_raises", {}, CONTEXT))
    assert type_name == "snakepit_shim.ConnectorError"
    assert message.startswith("api connector 'crm', endpoint 'missing': HTTP 404")


# ------------------------------------------------------------------ transactions


def tx_requests(first_tx: int, end: str) -> List[Tuple[str, Any]]:
    return [
        ("tx.begin", {"pool": "billing"}),
        ("tx.execute", {"tx": first_tx, "sql": "UPDATE invoices SET status = 'issued'"
                        " WHERE batch_id = :b", "params": {"b": 7}}),
        ("tx.execute", {"tx": first_tx, "sql": "SELECT id, amount FROM invoices WHERE"
                        " batch_id = :b AND day = :day",
                        "params": {"b": 7, "day": datetime.date(2026, 5, 31)}}),
        (end, {"tx": first_tx}),
    ]


@pytest.mark.parametrize("reference", ["conny:tx_sync", "conny:tx_async"])
def test_transaction_commits_on_normal_exit(sup, reference):
    tx = sup.fake.next_tx + 1
    result = value(sup.call(reference, {}, {"pools": None}))
    assert sup.fake.seen == tx_requests(tx, "tx.commit")
    rows = [{"id": 1, "amount": Decimal("12.50"), "b": 7, "day": datetime.date(2026, 5, 31)},
            {"id": 2, "amount": None}]
    assert result == {
        "update": [3, [], None, None],
        "select": [2, rows, rows[0], 1, rows,
                   {"id": "int", "amount": "Decimal", "b": "int", "day": "date"}],
    }


@pytest.mark.parametrize("reference", ["conny:tx_sync", "conny:tx_async"])
def test_transaction_rolls_back_on_exception_and_reraises(sup, reference):
    tx = sup.fake.next_tx + 1
    type_name, message = raised(sup.call(reference, {"fail": True}, {"pools": None}))
    assert (type_name, message) == ("ValueError", "changed my mind")
    assert sup.fake.seen == tx_requests(tx, "tx.rollback")


def test_a_failing_statement_rolls_back(sup):
    type_name, message = raised(sup.call("conny:tx_failing_statement", {}, {"pools": None}))
    assert (type_name, message) == ("snakepit_shim.ConnectorError", 'syntax error at or near "FAIL"')
    assert sup.fake.methods() == ["tx.begin", "tx.execute", "tx.rollback"]


@pytest.mark.parametrize("fail,expected", [(False, "ConnectorError"), (True, "ValueError")])
def test_a_failing_commit_raises_a_failing_rollback_does_not_hide_the_error(sup, fail, expected):
    sup.fake.fail.update({"tx.commit", "tx.rollback"})
    type_name, message = raised(sup.call("conny:tx_sync", {"fail": fail}, {"pools": None}))
    assert type_name.endswith(expected)
    assert sup.fake.methods()[-1] == ("tx.rollback" if fail else "tx.commit")
    if fail:
        (log,) = [m for m in sup.logs if m[3] == "snakepit_shim.connectors"]
        assert log[2] == logging.WARNING
        assert log[4] == ("rolling back the transaction on pool 'billing' failed:"
                          " tx.rollback failed: connection reset")
    else:
        assert message == "tx.commit failed: connection reset"


def test_sync_transaction_inside_async_code(sup):
    assert value(sup.call("conny:tx_sync_inside_async", {}, {"pools": None})) == 1
    assert sup.fake.methods() == ["tx.begin", "tx.execute", "tx.commit"]


def test_permission_refused_at_begin(sup):
    msg = sup.call("conny:tx_sync", {}, {"pools": None})
    assert msg[0] == RESULT  # the pool named in the plugin is allowed; now one that is not:
    sup.fake.seen.clear()
    sup.methods["tx.begin"] = lambda payload: (_ for _ in ()).throw(
        Refused("PermissionError", "plugin 'conny' may not use pool 'billing'"))
    try:
        type_name, message = raised(sup.call("conny:tx_sync", {}, {"pools": None}))
    finally:
        sup.fake.install(sup.methods)
    assert (type_name, message) == ("PermissionError", "plugin 'conny' may not use pool 'billing'")


@pytest.mark.parametrize("how,state", [("commit", "committed"), ("raise", "rolled back")])
def test_use_after_the_block_ended_is_a_clear_error(sup, how, state):
    type_name, message = raised(sup.call("conny:tx_after_block", {"how": how}, {"pools": None}))
    assert type_name == "RuntimeError"
    assert message == (f"execute() on a transaction of pool 'billing' after it was {state}:"
                       " use the connection only inside its `with` / `async with` block")
    assert sup.fake.methods()[-1] == ("tx.commit" if how == "commit" else "tx.rollback")


def test_use_before_the_block_and_a_second_entry(sup):
    before, again = value(sup.call("conny:tx_after_block_async", {}, {"pools": None}))
    assert before == ("execute() on a transaction of pool 'billing' before its block began:"
                      " use the connection only inside its `with` / `async with` block")
    assert again == ("this transaction on pool 'billing' was already entered; call begin()"
                     " again for a new one")
    assert sup.fake.methods() == ["tx.begin", "tx.commit"]


@pytest.mark.parametrize("which,fragment", [
    ("begin", "pool.begin() is for `async with`; from sync code use `with pool.begin_sync()`"),
    ("begin_sync", "pool.begin_sync() is for `with`; from async code use `async with pool.begin()`"),
])
def test_the_wrong_with_says_which_to_use(sup, which, fragment):
    type_name, message = raised(sup.call("conny:tx_wrong_with", {"which": which}, {"pools": None}))
    assert (type_name, message) == ("TypeError", fragment)
    assert sup.fake.seen == []


def test_execute_arguments(sup):
    errors = value(sup.call("conny:tx_bad_arguments", {}, {"pools": None}))
    assert errors == [
        "execute() takes the SQL as a str or an object whose str() is the SQL"
        " (SQLAlchemy's text()), not NoneType",
        "execute() takes the SQL as a str or an object whose str() is the SQL"
        " (SQLAlchemy's text()), not bytes",
        "execute() takes the parameters as a dict of :name values (or keyword arguments),"
        " not list",
        "execute() got the parameter 'a' both in the dict and as a keyword",
        {"id": 1, "amount": Decimal("12.50"), "sql": 1, "params": 2},
    ]
    assert sup.fake.methods() == ["tx.begin", "tx.execute", "tx.commit"]


@pytest.mark.parametrize("reference,methods", [
    ("conny:tx_sleeps", ["tx.begin", "tx.execute"]),
    ("conny:tx_in_a_thread_of_a_cancelled_call", ["tx.begin", "tx.execute"]),
    ("conny:tx_sleeps_async", ["tx.begin"]),
])
def test_a_cancelled_call_leaves_its_transaction_to_the_supervisor(sup, reference, methods):
    call_id = sup.start_call(reference, {}, {"pools": None})
    assert sup.recv_until((LOG,))[4] == "inside"  # host requests answered on the way
    sup.cancel(call_id)
    msg = sup.recv_until((RESULT, EXCEPTION))
    assert msg[:3] == [EXCEPTION, call_id, "cancelled"]
    assert sup.fake.methods() == methods  # no commit, no rollback
    assert value(sup.call("conny:thread_outcome")) == (
        "CallCancelled" if "thread" in reference else None)
    assert value(sup.call("conny:tx_sync", {}, {"pools": None}))  # the worker goes on


def test_a_cancellation_of_the_plugins_own_rolls_back(sup):
    assert value(sup.call("conny:tx_cancelled_by_the_plugin", {}, {"pools": None})) == "cancelled"
    assert sup.fake.methods() == ["tx.begin", "tx.rollback"]
