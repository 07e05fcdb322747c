"""The plugin API's types (python-shim/README.md: the context of each extension point,
the connector objects): a small plugin type-checks against them with mypy, and its mistakes (a
misspelt method, a context key that does not exist) are found. mypy comes with the venv
of scripts/test.sh; without it the test is skipped (it fails when CI is set)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SHIM = Path(__file__).resolve().parent.parent  # the directory holding snakepit_shim

GOOD = '''
from typing import Any, Dict, List
from snakepit_shim import ConnectorError, JobStepContext, PasswordContext, SqlConnector


def drafts(ctx: JobStepContext, period: str) -> int:
    billing: SqlConnector = ctx["connectors"].sql("billing")
    rows: List[Dict[str, Any]] = billing.run("drafts-for-period", period=period)
    try:
        ctx["connectors"].api("crm").call_sync("get-customer", id=42)
    except ConnectorError as e:
        ctx["logger"].warning("crm: %s %s", e.status, e.kind)
    with ctx["pools"].get("billing").begin_sync() as conn:
        total = conn.execute("SELECT count(*) FROM invoices").scalar()
    ctx["logger"].info("%s %s %s", ctx["run_id"], ctx["session_user"], total)
    return len(rows)


async def drafts_async(ctx: JobStepContext, period: str) -> Any:
    async with ctx["pools"].get("billing").begin() as conn:
        await conn.execute("UPDATE invoices SET status = 'issued' WHERE period = :p", p=period)
    return await ctx["connectors"].sql("billing").run_async("drafts-for-period", period=period)


def validate(ctx: PasswordContext) -> None:
    if ctx["username"] in ctx["password"]:
        raise ValueError("the password contains the user name")
'''

BAD = '''
from snakepit_shim import JobStepContext


def drafts(ctx: JobStepContext) -> None:
    ctx["connectors"].sqll("billing")
    ctx["conectors"]
'''


def mypy(tmp_path: Path, source: str) -> subprocess.CompletedProcess:
    try:
        import mypy  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            raise
        pytest.skip("mypy is not installed (scripts/test.sh installs it in its venv)")
    plugin = tmp_path / "plugin.py"
    plugin.write_text(source)
    env = dict(os.environ, MYPYPATH=str(SHIM))
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--follow-imports=silent", str(plugin)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_plugin_type_checks_against_the_stubs_and_its_mistakes_are_found(tmp_path):
    good = mypy(tmp_path, GOOD)
    assert good.returncode == 0, good.stdout + good.stderr
    bad = mypy(tmp_path, BAD)
    assert bad.returncode == 1, bad.stdout + bad.stderr
    assert '"ConnectorRegistry" has no attribute "sqll"' in bad.stdout, bad.stdout
    assert '"conectors"' in bad.stdout, bad.stdout
