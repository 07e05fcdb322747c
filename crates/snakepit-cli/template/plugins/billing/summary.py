"""An async job step: the invoices of a period by status, after the previous step."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


async def totals(*, period: str, **ctx: Any) -> dict:
    """How many invoices of `period` each status has; `issued_now` is what the previous
    step of the job issued (its result is ctx["previous_step"])."""
    billing = ctx["connectors"].sql("billing")
    rows = await billing.run_async("totals-by-status", period=period)
    previous = ctx.get("previous_step") or {}
    summary = {r["status"]: r["invoices"] for r in rows}
    log.info("period=%s %s", period, summary)
    return {"period": period, "by_status": summary, "issued_now": previous.get("rows_affected", 0)}
