"""Transactions on the raw pool "billing" ([plugins.txs] raw_pools): committed, rolled
back by an exception, cut by a timeout, cut by the worker's death."""

import asyncio
import os
import signal
import time
from decimal import Decimal

INSERT = "INSERT INTO {table} (customer, amount, status, period) VALUES (:c, :a, 'draft', '2026-05')"


def commit(*, table, customer, **ctx):
    with ctx["pools"].get("billing").begin_sync() as conn:
        first = conn.execute(INSERT.format(table=table), {"c": customer, "a": Decimal("1.25")})
        conn.execute(INSERT.format(table=table), c=customer, a=Decimal("2.50"))
        rows = conn.execute(f"SELECT amount FROM {table} WHERE customer = :c ORDER BY id", c=customer)
        return {"rowcount": first.rowcount, "amounts": [r["amount"] for r in rows.all()]}


async def commit_async(*, table, customer, **ctx):
    async with ctx["pools"].get("billing").begin() as conn:
        result = await conn.execute(INSERT.format(table=table), {"c": customer, "a": Decimal("3.00")})
        return result.rowcount


def fail(*, table, customer, **ctx):
    with ctx["pools"].get("billing").begin_sync() as conn:
        conn.execute(INSERT.format(table=table), c=customer, a=Decimal("1.00"))
        raise RuntimeError("something went wrong after the insert")


def hang(*, table, customer, **ctx):
    with ctx["pools"].get("billing").begin_sync() as conn:
        conn.execute(INSERT.format(table=table), c=customer, a=Decimal("1.00"))
        time.sleep(60)


def die(*, table, customer, **ctx):
    with ctx["pools"].get("billing").begin_sync() as conn:
        conn.execute(INSERT.format(table=table), c=customer, a=Decimal("1.00"))
        os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)


async def die_async(*, table, customer, **ctx):
    async with ctx["pools"].get("billing").begin() as conn:
        await conn.execute(INSERT.format(table=table), c=customer, a=Decimal("1.00"))
        os.kill(os.getpid(), signal.SIGKILL)
        await asyncio.sleep(60)


_held = []


def _worker():
    from snakepit_shim import host

    return host._worker


def forged_lock(*, table, call_id, **ctx):
    """Begins a transaction claiming another call's id (the attack of issue 12), takes
    an ACCESS EXCLUSIVE lock on `table` in it and returns without ending it."""
    worker = _worker()
    real = worker.call_id
    worker.call_id = call_id
    try:
        conn = ctx["pools"].get("billing").begin_sync().__enter__()
    except PermissionError as e:
        return {"refused": str(e), "call_id": real}
    finally:
        worker.call_id = real
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    _held.append(conn)
    return {"refused": None, "call_id": real}


def leaked_lock(*, table, **ctx):
    """Begins a transaction, locks `table` ACCESS EXCLUSIVE and keeps the transaction
    object alive after the call returns."""
    conn = ctx["pools"].get("billing").begin_sync().__enter__()
    conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    _held.append(conn)
    return _worker().call_id


def reuse_held(*, table, **ctx):
    """Uses the transaction an earlier call left behind."""
    conn = _held.pop()
    try:
        conn.execute(f"SELECT count(*) FROM {table}")
    except Exception as e:
        return {"type": type(e).__name__, "message": str(e)}
    return {"type": None}
