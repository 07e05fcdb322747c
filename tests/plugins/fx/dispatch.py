"""Fixture plugins for keyword dispatch and validation."""
from typing import Optional


def needs_period(*, period: str, dry_run: bool = False) -> dict:
    return {"period": period, "dry_run": dry_run}


def declared_only(*, run_id: str, job_id: int = 0) -> dict:
    """No **kwargs: receives only the context keys it declares."""
    return {"run_id": run_id, "job_id": job_id}


def everything(**ctx) -> dict:
    return {"keys": sorted(ctx)}


def typed(*, period: str, count: int = 1, ratio: float = 1.0, flag: bool = False,
          note: Optional[str] = None, items: list = None, **ctx) -> None:
    return None


not_callable = 42


class Holder:
    @staticmethod
    def nested(**ctx) -> str:
        return "nested"
