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


def _worker():
    from snakepit_shim import host

    return host._worker


def forged(*, method: str, payload, call_id, **ctx):
    """A host request that claims `call_id` (None: as if made between calls)."""
    worker = _worker()
    real = worker.call_id
    worker.call_id = call_id
    try:
        return custom(method=method, payload=payload)
    finally:
        worker.call_id = real


_late = []


def late_request(*, method: str, payload, sent: str, **ctx):
    """Starts a thread that sends a host request once this call has ended (between
    calls), creates `sent` once the frame is written, and keeps the reply for
    `late_outcome`."""
    import threading
    import time

    from snakepit_shim import host, protocol

    worker = _worker()

    def run():
        while worker.call_id is not None:
            time.sleep(0.001)
        slot = host._SyncSlot()
        request_id = worker.new_request(slot)
        worker.channel.send(
            protocol.build_host_request(request_id, None, method, payload, worker.codec)
        )
        open(sent, "w").close()
        worker.channel.wait_for(lambda: slot.done)
        _late.append({"ok": slot.ok, "value": slot.value})

    threading.Thread(target=run, daemon=True).start()
    return "started"


def late_outcome(*, limit: float = 10.0, **ctx):
    import time

    end = time.monotonic() + limit
    while not _late:
        if time.monotonic() > end:
            raise TimeoutError("the late request got no reply")
        time.sleep(0.005)
    return _late.pop()


def flood_requests(*, method: str, n: int = 200, size: int = 0, **ctx):
    """Sends `n` host requests at once (payloads of `size` bytes) without waiting, then
    collects every reply."""
    from snakepit_shim import host, protocol

    worker = _worker()
    payload = b"x" * size if size else None
    slots = []
    for i in range(n):
        slot = host._SyncSlot()
        request_id = worker.new_request(slot)
        worker.channel.send(
            protocol.build_host_request(request_id, worker.call_id, method, payload, worker.codec)
        )
        slots.append(slot)
    worker.channel.wait_for(lambda: all(s.done for s in slots))
    refused = [s.value[0] for s in slots if not s.ok]
    return {"ok": sum(1 for s in slots if s.ok), "refused": sorted(set(refused)), "n_refused": len(refused)}
