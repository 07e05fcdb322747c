"""Job step callables for the jobs tests: context, chaining, logs, retries, crashes,
timeouts and a step that hangs (to kill its supervisor mid-step)."""
from __future__ import annotations

import logging
import os
import time
from pathlib import Path

log = logging.getLogger(__name__)

CONTEXT_KEYS = ("job_id", "run_id", "step_name", "params", "step_kwargs", "session_user")


def extract(*, period: str, dry_run: bool = False, limit: int = 0, tag: str = "", **ctx) -> dict:
    """Returns what it was given: its kwargs (typed), the context, the logger's name."""
    log.info("extract period=%s limit=%d", period, limit)
    ctx["logger"].warning("through ctx logger")
    print("a print from extract")
    return {
        "period": period,
        "dry_run": dry_run,
        "limit": limit,
        "tag": tag,
        "logger": ctx["logger"].name,
        "previous_step": ctx["previous_step"],
        **{k: ctx[k] for k in CONTEXT_KEYS},
    }


def load(*, previous_step, **ctx) -> dict:
    """Chains: returns the prior step's result."""
    return {"got": previous_step}


def _attempt(marker: str) -> int:
    """Counts calls through a file (attempts may run in different workers)."""
    path = Path(marker)
    n = int(path.read_text()) + 1 if path.exists() else 1
    path.write_text(str(n))
    return n


def flaky(*, fail_times: int, marker: str, **ctx) -> dict:
    """Raises on its first `fail_times` calls."""
    n = _attempt(marker)
    if n <= fail_times:
        raise RuntimeError(f"flaky failure {n}")
    return {"attempt": n}


def crash_once(*, marker: str, **ctx) -> dict:
    """Kills its worker on the first call."""
    n = _attempt(marker)
    if n == 1:
        os._exit(9)
    return {"attempt": n}


def boom(**ctx) -> None:
    try:
        raise KeyError("inner")
    except KeyError as e:
        raise ValueError("boom") from e


def hang(*, marker: str = "", seconds: float = 60.0, **ctx) -> None:
    """Writes its pid to `marker` (if given), then sleeps."""
    log.info("hanging for %s s", seconds)
    if marker:
        Path(marker).write_text(str(os.getpid()))
    time.sleep(seconds)


def nothing(**ctx) -> None:
    return None


def reissue(*, period: str, dry_run: bool = False, **ctx) -> dict:
    """The seed's billing step: issue every draft invoice of `period`."""
    billing = ctx["connectors"].sql("billing")
    drafts = billing.run("drafts-for-period", period=period)
    log.info("reissue period=%s drafts=%d dry_run=%s", period, len(drafts), dry_run)
    if dry_run:
        return {"rows_affected": 0, "matched": len(drafts)}
    for draft in drafts:
        billing.run("issue-invoice:write", id=draft["id"])
    return {"rows_affected": len(drafts)}


def lookups(*, n: int, **ctx) -> dict:
    """Runs the named query "one" n times, then a query that does not exist once (an
    audited failure): a run with many connector calls."""
    billing = ctx["connectors"].sql("billing")
    for i in range(n):
        billing.run("one", id=i + 1)
    try:
        billing.run("missing")
    except Exception as e:  # noqa: BLE001 - the failure is the point
        return {"calls": n, "failed": type(e).__name__}
    return {"calls": n, "failed": None}
