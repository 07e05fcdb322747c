"""A sync job step: re-issue the draft invoices of a period (snakepit's plugin page)."""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def run(*, period: str, dry_run: bool = False, **ctx: Any) -> dict:
    """Re-issue every draft invoice of `period` (YYYY-MM).

    `ctx` is the job step's context: ctx["connectors"], ctx["pools"], ctx["run_id"], ...
    (its keys and types: snakepit_shim.JobStepContext; `snakepit shim --path` gives
    editors the types).
    """
    if len(period) != 7 or period[4] != "-":
        raise ValueError(f"period must be YYYY-MM, not {period!r}")
    billing = ctx["connectors"].sql("billing")
    drafts = billing.run("drafts-for-period", period=period)
    log.info("period=%s drafts=%d dry_run=%s", period, len(drafts), dry_run)
    if dry_run:
        return {"rows_affected": 0, "matched": len(drafts)}
    for draft in drafts:
        billing.run("issue-invoice:write", id=draft["id"])
    return {"rows_affected": len(drafts)}
