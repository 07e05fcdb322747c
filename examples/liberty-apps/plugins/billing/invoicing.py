# plugins/billing/invoicing.py
from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)


def run(*, period: str, dry_run: bool = False, **ctx: Any) -> dict:
    """Re-issue every draft invoice for the given period.

    Args:
        period: YYYY-MM the job is running for.
        dry_run: if True, count but don't write.
        ctx: every other key the framework injects (see below).

    Returns:
        Step result dict — surfaced in the run history.
    """
    connectors = ctx["connectors"]  # type: ConnectorRegistry
    billing = connectors.sql("billing")

    drafts = billing.run("drafts-for-period", period=period)
    log.info("billing.invoicing.run period=%s drafts=%d dry_run=%s", period, len(drafts), dry_run)

    if dry_run:
        return {"rows_affected": 0, "matched": len(drafts)}

    inserted = 0
    for draft in drafts:
        billing.run("issue-invoice:write", id=draft["id"])
        inserted += 1

    return {"rows_affected": inserted}
