"""The pytest fixtures of ``snakepit test`` (loaded by it; needs pytest and nothing else).

- ``plugin_ctx``: the job-step runtime context, for calling a plugin function in the
  test process: ``run(period="2026-05", **plugin_ctx)``. Its ``connectors`` and ``pools``
  reach the install's real connectors through the supervisor, with the grants of the
  test's package.
- ``snakepit_call``: ``snakepit_call("billing.invoicing:run", period="2026-05")`` calls
  through a real worker of the install (the pool and grants of the reference's
  package) and returns the value, or raises the plugin's exception.
- ``snakepit_api``: ``snakepit_api("crm", "http://127.0.0.1:8000/api")`` points an API
  connector at a test server for the test.
- ``snakepit_package``: the package a test acts as (the folder under ``plugins/`` its
  file is in); override it to test as another package.
- ``snakepit``: the test's :class:`~snakepit_shim.testing.TestSession`, which the others
  use.

Nothing is left to clean up: every write a test makes through the connectors, its own
and those of the plugins it calls, is rolled back when it ends.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from .contexts import JobStepContext
from .testing import PLUGINS_ENV, TestSession


@pytest.fixture
def snakepit_package(request: Any) -> str:
    """The package the test acts as: the first folder (or module) under ``plugins/``
    on the path of the test's file."""
    path = Path(str(getattr(request, "path", None) or request.fspath)).resolve()
    plugins = os.environ.get(PLUGINS_ENV)
    try:
        first = path.relative_to(Path(plugins).resolve()).parts[0] if plugins else None
    except ValueError:
        first = None
    if not first:
        raise pytest.UsageError(
            f"{path} is not under the install's plugins/ ({plugins}): define a fixture"
            " `snakepit_package` returning the package the test acts as"
        )
    return first[: -len(".py")] if first.endswith(".py") else first


@pytest.fixture
def snakepit(request: Any, snakepit_package: str) -> Iterator[TestSession]:
    """The test's session with the supervisor; ended (everything rolled back) after
    the test."""
    session = TestSession(snakepit_package, request.node.name)
    try:
        yield session
    finally:
        session.end()


@pytest.fixture
def plugin_ctx(snakepit: TestSession) -> JobStepContext:
    """The job-step context (connectors, pools, job_id, run_id, step_name, params,
    step_kwargs, previous_step, logger, session_user) for calling a plugin here."""
    return snakepit.context  # type: ignore[return-value]


@pytest.fixture
def snakepit_call(snakepit: TestSession) -> Callable[..., Any]:
    """Calls a "module:function" reference through a real worker of the install."""
    return snakepit.call


@pytest.fixture
def snakepit_api(snakepit: TestSession) -> Callable[[str, str], None]:
    """Points an API connector at another base URL for the test."""
    return snakepit.point_api
