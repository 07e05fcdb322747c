"""Fixture plugins making host requests back to the supervisor."""
import asyncio

import snakepit_shim


def echo_sync(*, payload, **ctx):
    return snakepit_shim.host_request("echo", payload)


async def echo_async(*, payload, **ctx):
    return await snakepit_shim.host_request_async("echo", payload)


async def sync_echo_inside_async(*, payload, **ctx):
    # A blocking request from the event loop's thread: must not deadlock the worker.
    return snakepit_shim.host_request("echo", payload)


async def echo_gather(*, n: int = 10, **ctx):
    replies = await asyncio.gather(
        *(snakepit_shim.host_request_async("echo", {"i": i}) for i in range(n))
    )
    return [r["i"] for r in replies]


def custom(*, method: str, payload, **ctx):
    """Calls a handler method; a HostError comes back as a dict."""
    try:
        return {"ok": snakepit_shim.host_request(method, payload)}
    except snakepit_shim.HostError as e:
        return {"error_type": e.type, "error_message": e.message}


async def custom_async(*, method: str, payload, **ctx):
    try:
        return {"ok": await snakepit_shim.host_request_async(method, payload)}
    except snakepit_shim.HostError as e:
        return {"error_type": e.type, "error_message": e.message}


def custom_uncaught(*, method: str, payload, **ctx):
    return snakepit_shim.host_request(method, payload)
