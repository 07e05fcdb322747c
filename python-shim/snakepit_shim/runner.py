"""The worker loop: calls, validation, cancellation.

One call at a time. A sync plugin function runs directly on the main thread (so that
SIGUSR1 can interrupt it even when it is blocked in C); when it returns an awaitable (an
``async def``), that runs as a task on the worker's one event loop, driven on the main
thread by ``run_until_complete`` while the loop watches the socket with ``add_reader``.

Cancellation. The supervisor sends CANCEL, then SIGUSR1 to the worker's pid.
- The SIGUSR1 handler (main thread) reads what is waiting on the socket without blocking,
  and raises :class:`CallCancelled` if a CANCEL for the call in hand is among it and the
  main thread is in plugin code (a sync call, or a step of an async call's task). A
  signal that lands while the main thread is inside a frame read or write is remembered
  and honoured as soon as the frame is complete.
- A CANCEL read by anybody else (the event loop's reader, a plugin thread waiting for a
  host reply) cancels the task, or signals the main thread so that the same handler runs.
- A stale CANCEL (another call id, no call) and a stray SIGUSR1 are ignored.
Either way the answer is an EXCEPTION of kind ``cancelled``, and the worker stays usable.
"""

from __future__ import annotations

import inspect
import itertools
import os
import resource
import signal
import sys
import threading
import traceback
from typing import Any, Dict, Optional, Set, Tuple

from . import connectors, protocol, references
from .channel import Channel
from .codec import Codec, EncodeError
from .errors import CallCancelled
from .references import ReferenceProblem, qualified_name

_UNSET = object()
_PLANS = references._CACHE  # reference -> resolved Target (its dispatch plan)
# Return values that are certainly not awaitable: no inspect.isawaitable for them.
_PLAIN = frozenset((str, int, float, bool, dict, list, tuple, bytes))

_getrusage = resource.getrusage
_RUSAGE_SELF = resource.RUSAGE_SELF

_SHIM_DIR = os.path.dirname(os.path.abspath(__file__))
# asyncio is imported on the first async call only (it costs ~45 ms of start-up).
_ASYNCIO_DIR = os.path.join(os.path.dirname(os.path.abspath(os.__file__)), "asyncio")


class Worker:
    def __init__(self, channel: Channel, codec: Codec, frame_limit: int) -> None:
        self.channel = channel
        self.codec = codec
        self.frame_limit = frame_limit
        self.call_id: Optional[int] = None
        self.cancel_requested = False
        self.cancellable = False  # the main thread is in a sync plugin function
        self.task: Any = None  # the asyncio.Task of an async call in hand
        self.loop: Any = None  # the worker's asyncio event loop, made on first use
        self.cancelled_early: Set[int] = set()  # CANCELs for CALLs still in the inbox
        self.pending: Dict[int, Any] = {}  # request_id -> slot with resolve(ok, value)
        self.request_ids = itertools.count(1)
        # The log bridge's stdout/stderr writers: partial lines are sent when a call ends.
        self.output: Any = None  # with has_partial() and flush_partial()
        self.main_ident = threading.main_thread().ident
        # The CPU time (s, user and system) at the last reading, and whether that reading
        # was the end of the previous call (a measured one): a measured call's USAGE is
        # the difference, so one getrusage per measured call in a row of them, two for
        # the first, none for an unmeasured call (see PROTOCOL.md, USAGE).
        self.cpu_user = self.cpu_sys = 0.0
        self.cpu_fresh = False
        channel.route = self._route
        channel.on_deferred_signal = self._honour_signal
        channel.on_eof = self._on_eof

    # --------------------------------------------------------------------------- loop

    def install_signal_handler(self) -> None:
        signal.signal(signal.SIGUSR1, self._on_sigusr1)

    def serve(self) -> int:
        """Handle frames until SHUTDOWN or EOF (0); a protocol violation exits 3."""
        next_message = self.channel.next_message
        run_call = self.run_call
        Call = protocol.Call
        while True:
            try:
                msg = next_message()
            except EOFError:
                return 0
            except protocol.ProtocolError as exc:
                _stderr(f"snakepit worker: protocol violation from the supervisor: {exc}")
                return 3
            kind = type(msg)
            try:
                if kind is Call:
                    run_call(msg)
                elif kind is protocol.Validate:
                    self.validate(msg)
                elif kind is protocol.Shutdown:
                    return 0
                else:
                    _stderr(f"snakepit worker: unexpected {kind.__name__} message")
                    return 3
            except (BrokenPipeError, ConnectionResetError):
                return 0

    # -------------------------------------------------------------------------- calls

    def run_call(self, msg: protocol.Call) -> None:
        """Run one CALL and send its answer. From the start until the plugin function
        returns (importing the plugin included), SIGUSR1 may raise CallCancelled.

        The common case is one flat path: the plan (resolved function, parameter sets,
        async or not) comes from the cache, kwargs without context that fit the
        signature are passed as they are, and a small result is framed without the
        codec."""
        call_id, reference, kwargs, context, measure = msg
        self.call_id = call_id
        if measure and not self.cpu_fresh:
            self.cpu_user, self.cpu_sys = _getrusage(_RUSAGE_SELF)[:2]
        if self.cancelled_early:  # a CANCEL that overtook us while the CALL waited
            self.cancel_requested = call_id in self.cancelled_early
            self.cancelled_early.discard(call_id)
        frame = None
        target = None
        value = _UNSET
        try:
            try:
                try:
                    self.cancellable = True
                    if self.cancel_requested:
                        raise CallCancelled()
                    target = _PLANS.get(reference)
                    if (
                        target is None
                        or context
                        or not (
                            target.direct
                            or target.var_kw
                            or (
                                target.name_set.issuperset(kwargs)
                                and kwargs.keys() >= target.required_set
                            )
                        )
                    ):
                        target, kwargs, frame = self._bind(
                            call_id, reference, target, kwargs, context
                        )
                    if frame is None:
                        if target.coerce:
                            kwargs = references.coerce(target, kwargs)
                        value = target.func(**kwargs)
                        self.cancellable = False
                        if target.is_async or (
                            value is not None
                            and type(value) not in _PLAIN
                            and inspect.isawaitable(value)
                        ):
                            value = self._run_async(value)
                finally:
                    self.cancellable = False
            except CallCancelled:
                frame = protocol.frame(self._cancelled(call_id))
            except BaseException as exc:  # the plugin's own, SystemExit included
                if self.cancel_requested and _is_asyncio_cancel(exc):
                    frame = protocol.frame(self._cancelled(call_id))
                elif (
                    value is _UNSET
                    and type(exc) is TypeError
                    and target is not None
                    and target.direct
                    and exc.__traceback__ is not None
                    and exc.__traceback__.tb_next is None  # raised by the call itself
                ):
                    frame = self._direct_call_failed(call_id, target, kwargs, context, exc)
                else:
                    frame = protocol.frame(self._raised(call_id, exc))
            if frame is None:
                try:
                    frame = protocol.build_result_frame(
                        call_id, value, self.codec, self.frame_limit
                    )
                except Exception:
                    frame = protocol.frame(self._result(call_id, value))
            output = self.output
            if output is not None and output.has_partial():
                output.flush_partial()
        finally:
            self.cancellable = False
            self.call_id = None
            self.cancel_requested = False
        if measure:
            self.channel.write_result(self._usage(call_id), frame)
        else:
            self.cpu_fresh = False
            self.channel.write_result(b"", frame)

    def _usage(self, call_id: int) -> bytes:
        """The USAGE frame of the measured call that just ended: CPU since the last
        reading (the previous measured call's end, or this call's start)."""
        self.cpu_fresh = True
        r = _getrusage(_RUSAGE_SELF)
        user = r[0]
        system = r[1]
        frame = protocol.usage_frame(call_id, user - self.cpu_user, system - self.cpu_sys, r[2])
        self.cpu_user = user
        self.cpu_sys = system
        return frame

    def _direct_call_failed(
        self,
        call_id: int,
        target: Any,
        kwargs: Dict[str, Any],
        context: Dict[str, Any],
        exc: BaseException,
    ) -> bytes:
        """A direct call refused its arguments: the reference problem that ``bind``
        names, or (the arguments did fit) the plugin's own TypeError."""
        try:
            references.bind(target, kwargs, context)
        except ReferenceProblem as problem:
            body = protocol.build_exception(
                call_id, "reference", problem.type_name, problem.message, problem.tb
            )
        else:
            body = self._raised(call_id, exc)
        return protocol.frame(body)

    def _bind(
        self,
        call_id: int,
        reference: str,
        target: Any,
        kwargs: Dict[str, Any],
        context: Dict[str, Any],
    ) -> Tuple[Any, Dict[str, Any], Optional[bytes]]:
        """Resolve (first call: ``target`` is None) and fit the arguments (context to
        merge, with its context objects in place, or kwargs that do not fit): (target,
        arguments, None), or (None, None, the EXCEPTION frame)."""
        if context:
            connectors.bind_objects(context)
        try:
            if target is None:
                target = references.resolve(reference)
            return target, references.bind(target, kwargs, context), None
        except ReferenceProblem as problem:
            self.cancellable = False
            body = protocol.build_exception(
                call_id, "reference", problem.type_name, problem.message, problem.tb
            )
            return None, None, protocol.frame(body)

    def _result(self, call_id: int, value: Any) -> bytes:
        try:
            body = protocol.build_result(call_id, value, self.codec)
        except EncodeError as err:
            return protocol.build_exception(
                call_id, "encode", "snakepit_shim.EncodeError", str(err), ""
            )
        except Exception as exc:  # e.g. a tzinfo whose utcoffset() raises
            return protocol.build_exception(
                call_id,
                "encode",
                qualified_name(type(exc)),
                f"the result could not be encoded: {type(exc).__name__}: {exc}",
                format_plugin_traceback(exc),
            )
        if len(body) > self.frame_limit:
            return protocol.build_exception(
                call_id,
                "encode",
                "snakepit_shim.EncodeError",
                f"the result frame of {len(body)} bytes exceeds the frame limit of"
                f" {self.frame_limit} bytes",
                "",
            )
        return body

    def _cancelled(self, call_id: int) -> bytes:
        return protocol.build_exception(
            call_id, "cancelled", "snakepit_shim.CallCancelled", "the call was cancelled", ""
        )

    def _raised(self, call_id: int, exc: BaseException) -> bytes:
        type_name = qualified_name(type(exc))
        try:
            message = str(exc)
        except Exception:
            message = f"<unprintable {type_name}>"
        return protocol.build_exception(
            call_id, "raised", type_name, message, format_plugin_traceback(exc)
        )

    def _run_async(self, awaitable: Any) -> Any:
        import asyncio

        loop = self._event_loop()
        coro = awaitable if asyncio.iscoroutine(awaitable) else _await(awaitable)
        task = loop.create_task(coro)
        self.task = task
        fd = self.channel.fd
        loop.add_reader(fd, self.channel.poll)
        try:
            if self.cancel_requested:
                task.cancel()
            return loop.run_until_complete(task)
        finally:
            loop.remove_reader(fd)
            self.task = None

    def _event_loop(self) -> Any:
        import asyncio

        if self.loop is None or self.loop.is_closed():
            self.loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self.loop)
        return self.loop

    def validate(self, msg: protocol.Validate) -> None:
        try:
            target = references.resolve(msg.reference)
            references.check(target, msg.kwargs, msg.context_keys)
        except ReferenceProblem as problem:
            body = protocol.build_exception(
                msg.call_id, "reference", problem.type_name, problem.message, problem.tb
            )
        else:
            body = protocol.build_result_nil(msg.call_id)
        self.cpu_fresh = False  # an import's cost is not the next call's
        self.channel.send(body)

    # -------------------------------------------------------------------- host requests

    def new_request(self, slot: Any) -> int:
        request_id = next(self.request_ids)
        on_main = self.channel._enter()  # the SIGUSR1 handler must not wait for the lock
        try:
            with self.channel.lock:
                self.pending[request_id] = slot
        finally:
            self.channel._leave(on_main)
        return request_id

    def drop_request(self, request_id: int) -> None:
        on_main = self.channel._enter()
        try:
            with self.channel.lock:
                self.pending.pop(request_id, None)
        finally:
            self.channel._leave(on_main)

    # --------------------------------------------------------------------- routing

    def _route(self, msg: Any, on_main: bool) -> None:
        """Called by whichever thread read ``msg``, with the channel's lock held."""
        kind = type(msg)
        if kind is protocol.HostReply:
            slot = self.pending.pop(msg.request_id, None)
            if slot is not None:
                slot.resolve(msg.ok, msg.value)
        elif kind is protocol.Cancel:
            if msg.call_id == self.call_id:
                if not self.cancel_requested:
                    self.cancel_requested = True
                    self._interrupt(on_main)
            elif any(
                type(m) is protocol.Call and m.call_id == msg.call_id
                for m in self.channel.inbox
            ):
                self.cancelled_early.add(msg.call_id)
            # else: stale (that call is over), ignored
        else:
            self.channel.inbox.append(msg)

    def _interrupt(self, on_main: bool) -> None:
        task = self.task
        loop = self.loop
        if task is not None and loop is not None:
            # Through the loop's self-pipe even on the main thread: from the SIGUSR1
            # handler, the loop would otherwise go back to its interrupted selector wait
            # with the whole timeout left (PEP 475 retries it) and cancel only then.
            loop.call_soon_threadsafe(task.cancel)
        if not on_main:
            # The main thread may be blocked in C inside plugin code: let its handler run.
            signal.pthread_kill(self.main_ident, signal.SIGUSR1)

    def _on_eof(self, on_main: bool) -> None:
        if self.call_id is not None:
            self._interrupt(on_main)

    # -------------------------------------------------------------------- signals

    def _on_sigusr1(self, signum: int, frame: Any) -> None:
        if self.channel.io_depth > 0:
            self.channel.signal_pending = True
            return
        self._honour_signal()

    def _honour_signal(self) -> None:
        """Main thread, not inside a frame: raise CallCancelled if the call in hand was
        cancelled and we are in plugin code."""
        if self.call_id is None:
            return
        if not self.cancel_requested and not self.channel.eof:
            self.channel.poll()
        if not (self.cancel_requested or self.channel.eof):
            return
        if self.task is None:
            if self.cancellable:
                raise CallCancelled()
        elif self._in_task_step():
            raise CallCancelled()

    def _in_task_step(self) -> bool:
        """True while the loop runs a task's code (plugin code), not its own machinery."""
        import asyncio

        return self.loop is not None and asyncio.current_task(self.loop) is not None

    def check_cancelled_on_main(self) -> None:
        """After a wait on the main thread: raise if the call in hand was cancelled."""
        if self.call_id is not None and (self.cancel_requested or self.channel.eof):
            if self.task is None or self._in_task_step():
                raise CallCancelled()


async def _await(awaitable: Any) -> Any:
    return await awaitable


def _is_asyncio_cancel(exc: BaseException) -> bool:
    asyncio = sys.modules.get("asyncio")
    return asyncio is not None and isinstance(exc, asyncio.CancelledError)


def format_plugin_traceback(exc: BaseException) -> str:
    """The formatted traceback with its chain, without the shim's and asyncio's frames
    at the top."""
    tb = exc.__traceback__
    while tb is not None:
        filename = os.path.abspath(tb.tb_frame.f_code.co_filename)
        if not (filename.startswith(_SHIM_DIR) or filename.startswith(_ASYNCIO_DIR)):
            break
        tb = tb.tb_next
    try:
        return "".join(traceback.format_exception(type(exc), exc, tb))
    except Exception as fmt_exc:  # a broken __str__ somewhere in the chain
        return f"<traceback could not be formatted: {type(fmt_exc).__name__}>"


def _stderr(line: str) -> None:
    stream = sys.__stderr__
    if stream is not None:
        try:
            stream.write(line + "\n")
            stream.flush()
        except OSError:
            pass
