"""Well-behaved fixture plugins."""
import asyncio
import logging

log = logging.getLogger(__name__)


def add(*, a: int, b: int) -> dict:
    return {"sum": a + b}


async def add_async(*, a: int, b: int) -> dict:
    await asyncio.sleep(0)
    return {"sum": a + b}


def ping(**ctx):
    return None


def chatty(*, n: int = 3, **ctx) -> dict:
    for i in range(n):
        log.info("record %d", i)
        print(f"printed {i}")
    return {"n": n}


def fail(*, message: str = "boom") -> None:
    try:
        raise KeyError("inner")
    except KeyError as e:
        raise ValueError(message) from e


def pid(**ctx) -> int:
    """The worker's pid: which process served a call."""
    import os

    return os.getpid()


def cpus(**ctx) -> list:
    """The CPUs this worker may run on."""
    import os

    return sorted(os.sched_getaffinity(0))


def burn(*, ms: int) -> int:
    """Spends `ms` milliseconds of CPU."""
    import time

    end = time.process_time() + ms / 1000
    while time.process_time() < end:
        pass
    return ms
