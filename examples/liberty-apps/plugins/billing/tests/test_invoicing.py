# plugins/billing/tests/test_invoicing.py
#
# Run with `snakepit --apps examples/liberty-apps test` (after scripts/demo.sh made
# billing.db). The first test is the framework page's, unchanged: it mocks the context
# and also runs with plain pytest (PYTHONPATH=plugins pytest plugins/billing). The
# second runs the same step against the real billing database through plugin_ctx; what
# it writes is rolled back when it ends.
from decimal import Decimal
from unittest.mock import MagicMock
from billing.invoicing import run


def test_dry_run_returns_count_only(monkeypatch):
    billing = MagicMock()
    billing.run.return_value = [{"id": 1}, {"id": 2}, {"id": 3}]
    ctx = {"connectors": MagicMock(sql=MagicMock(return_value=billing))}

    result = run(period="2026-05", dry_run=True, **ctx)

    assert result == {"rows_affected": 0, "matched": 3}
    billing.run.assert_called_once_with("drafts-for-period", period="2026-05")


def test_run_issues_the_drafts_of_the_period_in_the_real_database(plugin_ctx):
    billing = plugin_ctx["connectors"].sql("billing")
    for customer in ("ACME", "Globex"):
        billing.run("add-draft:write", customer=customer, amount=Decimal("10.00"), period="2001-01")

    assert run(period="2001-01", dry_run=True, **plugin_ctx) == {"rows_affected": 0, "matched": 2}
    assert run(period="2001-01", **plugin_ctx) == {"rows_affected": 2}
    assert billing.run("drafts-for-period", period="2001-01") == []
