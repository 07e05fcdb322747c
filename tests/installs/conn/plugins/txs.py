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
