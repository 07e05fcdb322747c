"""The runtime context of each extension point (README, "Writing a plugin"), as
``TypedDict``s, for editors and type checkers::

    from typing import Unpack                  # Python >= 3.11 (typing_extensions before)
    from snakepit_shim import JobStepContext

    def run(*, period: str, **ctx: Unpack[JobStepContext]) -> dict:
        rows = ctx["connectors"].sql("billing").run("drafts-for-period", period=period)

or, on any version, ``def run(*, period: str, **ctx: Any)`` with
``connectors: ConnectorRegistry = ctx["connectors"]``. Nothing checks them at run time.
A dispatch hook receives its event's payload keys: ``connector.before_query`` the keys of
:class:`BeforeQueryContext`, the ``screen.*`` events whatever their caller sends.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, Optional

try:  # Python >= 3.8
    from typing import TypedDict
except ImportError:  # pragma: no cover
    TypedDict = dict  # type: ignore[assignment,misc]

from .connectors import ConnectorRegistry, PoolRegistry


class JobStepContext(TypedDict):
    """What a job python step receives besides its kwargs."""

    connectors: ConnectorRegistry
    pools: PoolRegistry
    job_id: str
    run_id: str
    step_name: str
    params: Dict[str, Any]
    step_kwargs: Dict[str, Any]
    previous_step: Optional[Any]
    logger: logging.Logger
    session_user: str


class PasswordContext(TypedDict):
    """What ``[auth] password_validator`` receives; return None to accept, raise
    ``ValueError("reason")`` to reject."""

    username: str
    password: str
    existing_user: Optional[Dict[str, Any]]


class BeforeQueryContext(TypedDict):
    """What a ``connector.before_query`` hook receives; raise to veto the query."""

    connector: str
    query: str
    package: str


__all__ = ["JobStepContext", "PasswordContext", "BeforeQueryContext"]
