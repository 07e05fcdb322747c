"""The billing steps' tests: `snakepit test` runs them (docs/plugin-authors.md).

plugin_ctx is a job step's context whose connectors are the install's real ones;
snakepit_call calls a step through a real worker. Whatever a test writes is rolled back
when it ends: billing.db is left as it was.
"""

import asyncio
from decimal import Decimal
from unittest.mock import MagicMock

import pytest

from billing.invoicing import run
from billing.summary import totals

PERIOD = "2001-01"  # a period of its own: the sample data has none


def add_draft(ctx, customer, amount="10.00", period=PERIOD):
    ctx["connectors"].sql("billing").run(
        "add-draft:write", customer=customer, amount=Decimal(amount), period=period
    )


def test_dry_run_returns_count_only():
    """A unit test with a mocked context (no database)."""
    billing = MagicMock()
    billing.run.return_value = [{"id": 1}, {"id": 2}, {"id": 3}]
    ctx = {"connectors": MagicMock(sql=MagicMock(return_value=billing))}

    result = run(period="2026-05", dry_run=True, **ctx)

    assert result == {"rows_affected": 0, "matched": 3}
    billing.run.assert_called_once_with("drafts-for-period", period="2026-05")


def test_run_issues_the_drafts_of_its_period(plugin_ctx):
    """Against the real database: the writes are rolled back after the test."""
    add_draft(plugin_ctx, "ACME")
    add_draft(plugin_ctx, "Globex", "75.50")

    assert run(period=PERIOD, **plugin_ctx) == {"rows_affected": 2}

    billing = plugin_ctx["connectors"].sql("billing")
    assert billing.run("drafts-for-period", period=PERIOD) == []


def test_summary_counts_by_status(plugin_ctx):
    add_draft(plugin_ctx, "Initech")
    plugin_ctx["previous_step"] = {"rows_affected": 0}

    summary = asyncio.run(totals(period=PERIOD, **plugin_ctx))

    assert summary == {"period": PERIOD, "by_status": {"draft": 1}, "issued_now": 0}


def test_the_step_through_a_worker(plugin_ctx, snakepit_call):
    """snakepit_call runs the step in a worker, with the package's grants; its writes
    land in the test's transaction too."""
    add_draft(plugin_ctx, "Umbrella")

    assert snakepit_call("billing.invoicing:run", period=PERIOD) == {"rows_affected": 1}

    with pytest.raises(ValueError, match="YYYY-MM"):
        snakepit_call("billing.invoicing:run", period="May")
