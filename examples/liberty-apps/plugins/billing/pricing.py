"""Demo plugin: price a draft invoice. Sync and async callables, logging, a raise."""
from __future__ import annotations

import asyncio
import logging
from decimal import Decimal
from typing import Any

log = logging.getLogger(__name__)

VAT = {"eu": Decimal("0.20"), "us": Decimal("0.00")}


def quote(*, amount: str, region: str = "eu", **ctx: Any) -> dict:
    """Gross amount of a net `amount` for `region`."""
    if region not in VAT:
        raise ValueError(f"unknown region {region!r}; expected one of {sorted(VAT)}")
    net = Decimal(amount)
    gross = (net * (1 + VAT[region])).quantize(Decimal("0.01"))
    log.info("quote region=%s net=%s gross=%s run_id=%s", region, net, gross, ctx.get("run_id"))
    return {"net": net, "gross": gross, "region": region}


async def quote_many(*, amounts: list, region: str = "eu", **ctx: Any) -> dict:
    """The same for several amounts, concurrently."""
    async def one(a: str) -> Decimal:
        await asyncio.sleep(0)
        return quote(amount=a, region=region)["gross"]

    grosses = await asyncio.gather(*(one(a) for a in amounts))
    return {"grosses": grosses, "total": sum(grosses, Decimal("0"))}


def ping(**ctx: Any) -> None:
    """The smallest call, for `snakepit bench`."""
    return None
