"""Requests from plugin code to the supervisor (HOST_REQUEST / HOST_REPLY).

``request(method, payload)`` works from any thread, sync code and sync code running
inside an ``async def``; ``await request_async(method, payload)`` from async code. Several
may be in flight at once; each gets a request id unique in this worker, and the reply is
routed to it by whichever thread reads it (see ``channel.py``). A reply with ``ok =
false`` raises :class:`HostError`. The built-in method ``"echo"`` answers with the
payload.

No deadlock by construction: a waiter that finds nobody reading the socket reads it
itself, so a sync request made while the event loop is blocked (sync code inside an
``async def``) reads its own reply, and replies for the loop's futures that it meets on
the way are handed to them.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any, Optional

from . import protocol
from .errors import CallCancelled, HostError, NotInWorker

if TYPE_CHECKING:  # runner imports connectors, which imports this module
    from .runner import Worker

_worker: Optional[Worker] = None


def attach(worker: Optional[Worker]) -> None:
    global _worker
    _worker = worker


def _current() -> Worker:
    worker = _worker
    if worker is None:
        raise NotInWorker(
            "no snakepit supervisor to ask: connector calls and host_request work inside a"
            " snakepit worker, or in a test run by `snakepit test` through its fixtures"
            " (plugin_ctx gives the job-step context with the real connectors,"
            " snakepit_call calls through a worker); a unit test with mocks passes its own"
            ' ctx["connectors"]'
        )
    return worker


class _SyncSlot:
    __slots__ = ("done", "ok", "value")

    def __init__(self) -> None:
        self.done = False
        self.ok = False
        self.value: Any = None

    def resolve(self, ok: bool, value: Any) -> None:  # channel lock held; waiters notified
        self.ok = ok
        self.value = value
        self.done = True


class _AsyncSlot:
    __slots__ = ("loop", "future", "loop_thread")

    def __init__(self, loop: Any, future: Any) -> None:
        self.loop = loop
        self.future = future
        self.loop_thread = threading.get_ident()

    def resolve(self, ok: bool, value: Any) -> None:
        if threading.get_ident() == self.loop_thread:
            self._set(ok, value)
        else:
            self.loop.call_soon_threadsafe(self._set, ok, value)

    def _set(self, ok: bool, value: Any) -> None:
        if self.future.done():  # the awaiting task was cancelled
            return
        if ok:
            self.future.set_result(value)
        else:
            self.future.set_exception(_host_error(value))


def _host_error(value: Any) -> HostError:
    if isinstance(value, list) and len(value) == 2:
        return HostError(str(value[0]), str(value[1]))
    return HostError("HostError", repr(value))


def cancelling() -> bool:
    """True while the call in hand is being cancelled (its CANCEL has been read)."""
    worker = _worker
    return worker is not None and worker.cancel_requested


def request(method: str, payload: Any = None) -> Any:
    """Send a host request and wait for its reply (sync; any thread)."""
    worker = _current()
    channel = worker.channel
    if threading.get_ident() == channel.main_ident:
        # The fast path: the main thread asks and, holding the reader's token, reads its
        # own reply (when another thread or the event loop holds the token, the general
        # path below waits for the reader to route the reply to a pending slot).
        request_id = next(worker.request_ids)
        body = protocol.build_host_request(
            request_id, worker.call_id, method, payload, worker.codec
        )
        if channel.reader.acquire(False):
            reply = channel.round_trip(body, request_id, worker.check_cancelled_on_main)
            if reply.ok:
                return reply.value
            raise _host_error(reply.value)
    slot = _SyncSlot()
    request_id = worker.new_request(slot)
    try:
        body = protocol.build_host_request(
            request_id, worker.call_id, method, payload, worker.codec
        )
        worker.channel.send(body)
        on_main = threading.get_ident() == worker.main_ident
        if on_main:
            worker.channel.wait_for(
                lambda: slot.done or worker.cancel_requested or worker.channel.eof
            )
            if not slot.done:
                worker.check_cancelled_on_main()
                if worker.channel.eof:
                    raise EOFError("the supervisor closed the channel")
                # cancelled, but not in a place where that can be raised: keep waiting
                worker.channel.wait_for(lambda: slot.done)
        else:
            worker.channel.wait_for(lambda: slot.done)
    except BaseException:
        if not slot.done:
            worker.drop_request(request_id)
        raise
    if slot.ok:
        return slot.value
    raise _host_error(slot.value)


async def request_async(method: str, payload: Any = None) -> Any:
    """Send a host request from async code and await its reply."""
    import asyncio  # already imported: we are in async code

    worker = _current()
    loop = asyncio.get_running_loop()
    if loop is not worker.loop or worker.task is None:
        # A loop of the plugin's own (asyncio.run inside a sync function): it does not
        # watch our socket, so wait in a thread, which reads the reply itself.
        return await loop.run_in_executor(None, request, method, payload)
    future = loop.create_future()
    request_id = worker.new_request(_AsyncSlot(loop, future))
    try:
        body = protocol.build_host_request(
            request_id, worker.call_id, method, payload, worker.codec
        )
        worker.channel.send(body)
        return await future
    except BaseException:
        worker.drop_request(request_id)
        raise


__all__ = ["request", "request_async", "HostError", "CallCancelled", "attach"]
