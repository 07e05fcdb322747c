"""The worker's end of the socket: framed writes, and reads shared by whoever waits.

Reads follow "the leader reads": there is no reader thread. A thread that needs a frame
(the main loop waiting for the next CALL, a sync host request waiting for its reply, a
plugin thread doing the same) becomes the reader if nobody else is, reads frames, routes
every one of them (replies to their pending requests, CANCEL to cancellation, the rest to
the inbox) and hands over as soon as what it waited for has arrived. The others wait on
one condition variable. The event loop reads with a non-blocking ``poll`` from its
``add_reader`` callback. One frame is never read by two threads, and no frame waits for a
thread hop.

The common case costs one ``recv_into`` and one ``send`` per call: bytes land in one
reusable buffer, whole frames are cut out of it (a frame larger than the buffer gets a
buffer of its own, sized from its checked length), and the main loop's wait for the next
message (:meth:`Channel.next_message`) takes the state lock only to claim and hand back
the reader's role; the condition variable is notified only when somebody waits on it.

Writes take a lock, so that LOG frames from plugin threads never interleave with others.

The main thread's SIGUSR1 handler must not raise in the middle of a frame: ``io_depth``
counts how deep the main thread is in this module's I/O, and a signal that arrives there
is remembered (``signal_pending``) and handed to ``on_deferred_signal`` once the frame is
complete.
"""

from __future__ import annotations

import collections
import os
import socket
import sys
import threading
import time
from typing import Any, Callable, Deque, List, Optional, Tuple, Union

from . import protocol
from .codec import Codec

Route = Callable[[Any, bool], None]

BUFFER_SIZE = 1 << 16  # the reusable receive buffer; a larger frame gets its own
SPIN_NS = 150_000  # how long a sync host request polls for its reply before it sleeps
SPIN_MAX_MISSES = 6  # a poll that ran out skips the next 2, 4, ... 64 chances
_yield = getattr(os, "sched_yield", lambda: None)
_unpack_len = protocol._LEN.unpack_from
_pack_len = protocol._LEN.pack
_MSG_DONTWAIT = socket.MSG_DONTWAIT
_Call = protocol.Call
_HostReply = protocol.HostReply
_GIL = getattr(sys, "_is_gil_enabled", lambda: True)()  # solo mode relies on the GIL


class Channel:
    def __init__(self, sock: socket.socket, frame_limit: int, codec: Codec) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.codec = codec
        self.parse = protocol.make_parser(codec)
        # the msgpack C decoder reads a memoryview of the buffer without a copy
        self.parse_bytes = codec.name != "msgpack"
        self.frame_limit = frame_limit
        # Received bytes: rbuf[rstart:rend] (only the reader touches these).
        self.rbuf = bytearray(BUFFER_SIZE)
        self.rview = memoryview(self.rbuf)
        self.spin_skip = 0
        self.spin_misses = 0
        self.rstart = 0
        self.rend = 0
        self.big: Optional[bytearray] = None  # the body of a frame larger than rbuf
        self.big_got = 0
        self.reader = threading.Lock()  # held by the one reading (try-acquired only)
        self.lock = threading.Lock()  # guards what follows, and the worker's routing
        self.cond = threading.Condition(self.lock)
        self.waiters = 0  # threads waiting on cond, or about to (guarded by lock)
        self.eof = False
        self.failure: Optional[BaseException] = None  # protocol error seen by a reader
        self.write_lock = threading.Lock()
        self.inbox: Deque[Any] = collections.deque()
        self.main_ident = threading.main_thread().ident
        # Solo mode (see "Solo mode" below): no other thread has used the channel yet.
        self.solo = _GIL
        self.main_reading = False  # main thread, in next_message's read without the token
        self.main_writing = False  # main thread, in write_result without the write lock
        self.join_lock = threading.Lock()  # serialises joins; guards proxy
        self.proxy = False  # a joiner took the token for the main thread's read
        self.join_seen = False  # the main thread has seen the end of solo mode
        self.io_depth = 0  # main thread only
        self.signal_pending = False
        # Set by the worker: route(message, read_on_main) is called with the lock held for
        # HOST_REPLY and CANCEL; CALL, VALIDATE and SHUTDOWN go to the inbox.
        self.route: Route = lambda msg, on_main: self.inbox.append(msg)
        self.on_deferred_signal: Callable[[], None] = lambda: None
        self.on_eof: Callable[[bool], None] = lambda on_main: None

    # ---------------------------------------------------------------- main-thread I/O guard

    def _enter(self) -> bool:
        if threading.get_ident() == self.main_ident:
            self.io_depth += 1
            return True
        return False

    def _leave(self, on_main: bool) -> None:
        if on_main:
            self.io_depth -= 1
            if self.io_depth == 0 and self.signal_pending:
                self.signal_pending = False
                self.on_deferred_signal()

    # ---------------------------------------------------------------------------- writing

    def send(self, body: bytes) -> None:
        """Write one frame (body without its length). OSError when the peer is gone."""
        if len(body) < 65536:
            self.send_frame(_pack_len(len(body)) + body)
            return
        if self.solo and threading.get_ident() != self.main_ident:
            self._join()
        on_main = self._enter()
        try:
            with self.write_lock:
                self._send_large(_pack_len(len(body)), body)
        finally:
            self._leave(on_main)

    def send_frame(self, frame: bytes) -> None:
        """Write one complete frame (length included)."""
        if threading.get_ident() != self.main_ident:
            if self.solo:
                self._join()
            with self.write_lock:
                self.sock.sendall(frame)
            return
        self.io_depth += 1
        try:
            with self.write_lock:
                self.sock.sendall(frame)
        finally:
            self.io_depth -= 1
            if self.io_depth == 0 and self.signal_pending:
                self.signal_pending = False
                self.on_deferred_signal()

    def write_result(self, usage: bytes, frame: bytes) -> None:
        """Main thread, no call in hand (so no I/O guard: SIGUSR1 does nothing): write a
        call's USAGE (empty for an unmeasured call) and answer frames, in one ``send``
        unless the answer is large;
        without the write lock in solo mode."""
        self.main_writing = True
        try:
            if self.solo:
                self._send_answer(usage, frame)
                return
        finally:
            self.main_writing = False
        with self.write_lock:
            self._send_answer(usage, frame)

    def _send_answer(self, usage: bytes, frame: bytes) -> None:
        if not usage:  # an unmeasured call
            self.sock.sendall(frame)
        elif len(frame) < 65536:
            self.sock.sendall(usage + frame)
        else:  # not worth copying a large answer to save a syscall
            self.sock.sendall(usage)
            self.sock.sendall(frame)

    def _send_large(self, header: bytes, body: bytes) -> None:
        view = memoryview(body)
        sent = self.sock.sendmsg([header, view])
        total = 4 + len(body)
        while sent < total:
            if sent < 4:
                sent += self.sock.sendmsg([header[sent:], view])
            else:
                sent += self.sock.send(view[sent - 4 :])

    # -------------------------------------------------------------------------- solo mode
    #
    # As long as no other thread has used the channel ("solo"), the main thread reads
    # the next message without the reader token and writes a call's answer without the
    # write lock. A thread's first use of the channel (a LOG frame, a host request) goes
    # through _join, which ends solo mode for good: it sets ``solo`` to False, then
    # waits for an unlocked write of the main thread to finish, and takes the reader
    # token on behalf of an unlocked read in progress (``proxy``), which the main thread
    # hands back when it is done. The main thread sets ``main_reading``/``main_writing``
    # before it looks at ``solo``, and the joiner sets ``solo`` before it looks at them,
    # so one of the two always sees the other (the GIL orders these plain attribute
    # accesses; without a GIL, solo mode is off from the start).

    def _join(self) -> None:
        """A thread other than the main one is about to use the channel."""
        with self.join_lock:
            if not self.solo:
                return
            self.solo = False
            while self.main_writing:  # a short write: the answer to a call
                time.sleep(0.0001)
            if self.main_reading:  # the main thread reads without the token: take it
                self.reader.acquire()  # free: the main thread waits for join_lock first
                self.proxy = True

    def _take_proxy(self) -> bool:
        """Main thread, after an unlocked read that overlapped a join: True if the joiner
        took the reader token on our behalf (we hold it now)."""
        with self.join_lock:  # the one join that mattered is over
            held, self.proxy = self.proxy, False
            self.join_seen = True  # no proxy after it: later joins find solo off
            return held

    # ---------------------------------------------------------------------------- reading
    #
    # The reader's role is a token, ``self.reader`` (a lock only ever try-acquired): its
    # holder alone touches the receive buffer and appends to the inbox. Waiting is done
    # under the state lock ``self.lock`` with ``self.cond``: a thread that finds the token
    # taken counts itself in ``waiters`` and tries the token once more before it waits,
    # and a reader that hands the token back notifies when ``waiters`` is not zero, so
    # that no wake-up is lost even when the main loop hands it back without the lock.

    def next_message(self) -> Any:
        """Main loop, main thread, no call in hand: the next message for the inbox (CALL,
        VALIDATE, SHUTDOWN), reading and routing frames meanwhile.

        The uncontended path is a plain blocking ``recv_into``, and a read that brings
        exactly one CALL returns it straight away: in solo mode without any lock; once
        threads use the channel, with the reader token (taken and handed back without
        waiting) and a notification only when somebody waits. No I/O guard: with no call
        in hand, SIGUSR1 does nothing. EOFError when the stream ended, ProtocolError
        when the supervisor broke it."""
        inbox = self.inbox
        reader = self.reader
        while True:
            if inbox:
                return inbox.popleft()
            # Set once, by whoever reads (with the token once out of solo mode): seen in
            # time by the reader, or on the next turn after waiting for the token.
            if self.failure is not None:
                raise self.failure
            if self.eof:
                raise EOFError("the supervisor closed the channel")
            self.main_reading = True
            if self.solo:
                held = False
            else:
                self.main_reading = False
                if not self.join_seen and self._take_proxy():
                    self._hand_back()
                if not reader.acquire(False):
                    self._wait_as_follower(inbox.__len__)
                    continue
                held = True
                # The token's holder alone adds to the inbox or sets eof/failure.
                if inbox or self.eof or self.failure is not None:
                    self._hand_back()
                    continue
            msg = None
            bodies: List[Union[bytes, bytearray]] = []
            eof = False
            error: Optional[BaseException] = None
            try:
                if self.rend == 0 and self.big is None:  # nothing buffered
                    k = self.sock.recv_into(self.rview)
                    if k > 4 and k == 4 + _unpack_len(self.rbuf, 0)[0]:  # one whole frame
                        if k - 4 > self.frame_limit:
                            raise protocol.FrameTooLarge(k - 4, self.frame_limit)
                        if self.parse_bytes:
                            msg = self.parse(bytes(self.rview[4:k]))
                        else:
                            msg = self.parse(self.rview[4:k])
                    elif k == 0:
                        eof = True
                    else:
                        self.rend = k
                if msg is None and not eof:
                    eof = self._recv_frames(bodies, True)
            except protocol.ProtocolError as exc:
                error = exc
            except (EOFError, OSError):
                eof = True
            except BaseException:
                if not held:
                    self.main_reading = False
                    held = not self.solo and self._take_proxy()
                self._finish_reading(bodies, False, None, True, held)
                raise
            if not held:
                self.main_reading = False
                held = not self.solo and self._take_proxy()
            if type(msg) is _Call:
                if held:
                    reader.release()
                    if self.waiters:
                        with self.lock:
                            self.cond.notify_all()
                return msg
            if msg is not None:
                with self.lock:
                    self.route(msg, True)
            self._finish_reading(bodies, eof, error, True, held)

    def _wait_as_follower(self, done: Callable[[], Any]) -> None:
        """The token is taken: wait until ``done()`` or until the token is free."""
        with self.lock:
            while not done():
                if self.failure is not None or self.eof:
                    return  # the caller reports it
                self.waiters += 1
                try:
                    if self.reader.acquire(False):  # the reader left meanwhile
                        self.reader.release()
                        return
                    self.cond.wait()
                finally:
                    self.waiters -= 1

    def _hand_back(self) -> None:
        with self.lock:
            self.reader.release()
            if self.waiters:
                self.cond.notify_all()

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` holds, reading and routing frames meanwhile if needed.

        ``done`` is evaluated with the state lock held. EOFError when the stream ended,
        ProtocolError when the supervisor sent something invalid.
        """
        on_main = self._enter()
        if self.solo and not on_main:
            self._join()
        try:
            with self.lock:
                while not done():
                    if self.failure is not None:
                        raise self.failure
                    if self.eof:
                        raise EOFError("the supervisor closed the channel")
                    self.waiters += 1
                    try:
                        got = self.reader.acquire(False)
                        if not got:
                            self.cond.wait()
                    finally:
                        self.waiters -= 1
                    if not got:
                        continue
                    self.lock.release()
                    try:
                        self._lead_unlocked(on_main)
                    finally:
                        self.lock.acquire()
        finally:
            self._leave(on_main)

    def round_trip(
        self, body: bytes, request_id: int, on_cancel: Callable[[], None]
    ) -> Any:
        """Main thread, holding the reader token (the caller took it with
        ``reader.acquire(False)``): send a HOST_REQUEST and read until its HOST_REPLY,
        which is returned, routing whatever else comes meanwhile. The token is handed back
        whatever happens.

        This is a sync host request's fast path (see ``host.request``): as only the
        token's holder reads, the reply needs no pending slot, no condition variable and
        no second thread: one ``send`` and one ``recv_into``, like a raw ping-pong.
        ``on_cancel`` is called when a read brought something else than the reply and
        the call in hand may have been cancelled; it raises to give the request up (its
        reply, when it comes, is dropped as stale)."""
        self.io_depth += 1
        try:
            try:
                with self.write_lock:
                    if len(body) < 65536:
                        self.sock.sendall(_pack_len(len(body)) + body)
                    else:
                        self._send_large(_pack_len(len(body)), body)
                return self._read_reply(request_id, on_cancel)
            finally:
                self.reader.release()
                if self.waiters:
                    with self.lock:
                        self.cond.notify_all()
        finally:
            self.io_depth -= 1
            if self.io_depth == 0 and self.signal_pending:
                self.signal_pending = False
                self.on_deferred_signal()

    def _recv_soon(self) -> int:
        """``recv_into`` the empty buffer, first spinning for up to ``SPIN_NS`` on a
        non-blocking read with a ``sched_yield`` between tries: a reply from a supervisor
        thread on another CPU then finds this process awake instead of paying a
        cross-CPU wake-up (≈ 60 µs on a VM, against ≈ 10 µs for the whole round trip).
        A spin that ran out (the supervisor shares this CPU, or the request is slow)
        skips the next 2, 4, ... 64 chances; one that found its reply starts over. The
        supervisor's side does the same (``dispatch.rs``, ``Backoff``). Bytes received,
        0 at end of stream, -1 on an error (the caller reads again and reports it)."""
        recv_into = self.sock.recv_into
        rview = self.rview
        try:
            if self.spin_skip:
                self.spin_skip -= 1
                return recv_into(rview)
            clock = time.perf_counter_ns
            deadline = clock() + SPIN_NS
            while True:
                try:
                    k = recv_into(rview, 0, _MSG_DONTWAIT)
                    self.spin_misses = 0
                    return k
                except BlockingIOError:
                    if clock() >= deadline:
                        self.spin_misses = min(self.spin_misses + 1, SPIN_MAX_MISSES)
                        self.spin_skip = 1 << self.spin_misses
                        return recv_into(rview)
                    _yield()
        except OSError:
            return -1

    def _read_reply(self, request_id: int, on_cancel: Callable[[], None]) -> Any:
        if self.rend == 0 and self.big is None:
            # Nothing buffered: one recv_into, which most often brings just the reply.
            # Anything else is left in the buffer for the loop below to cut and route.
            k = self._recv_soon()
            if k > 4 and k == 4 + _unpack_len(self.rbuf, 0)[0] and k - 4 <= self.frame_limit:
                try:
                    if self.parse_bytes:
                        msg = self.parse(bytes(self.rview[4:k]))
                    else:
                        msg = self.parse(self.rview[4:k])
                except protocol.ProtocolError:
                    msg = None
                if type(msg) is _HostReply and msg.request_id == request_id:
                    return msg
            if k > 0:
                self.rend = k
        while True:
            if self.failure is not None:
                raise self.failure
            if self.eof:
                raise EOFError("the supervisor closed the channel")
            bodies: List[Union[bytes, bytearray]] = []
            eof, error = self._read_some(bodies, True)
            with self.lock:
                reply = self._dispatch(bodies, eof, error, True, request_id)
            if reply is not None:
                return reply
            on_cancel()

    def _lead_unlocked(self, on_main: bool) -> None:
        """As the reader (token held, state lock not held): read at least one frame, then
        route what came and hand the token back."""
        bodies: List[Union[bytes, bytearray]] = []
        eof, error = False, None
        try:
            eof, error = self._read_some(bodies, True)
        finally:  # also when interrupted: somebody else must be able to lead
            self._finish_reading(bodies, eof, error, on_main)

    def _read_some(
        self, bodies: List[Union[bytes, bytearray]], blocking: bool
    ) -> Tuple[bool, Optional[BaseException]]:
        """``_recv_frames``, with the end of the stream (or a failed read) and a protocol
        error as results: (eof, error)."""
        try:
            return self._recv_frames(bodies, blocking), None
        except protocol.ProtocolError as exc:
            return False, exc
        except (EOFError, OSError):
            return True, None

    def _finish_reading(
        self,
        bodies: List[Union[bytes, bytearray]],
        eof: bool,
        error: Optional[BaseException],
        on_main: bool,
        held: bool = True,
    ) -> None:
        """Route what the reader read, hand the token back (if ``held``: not in solo
        mode), wake the waiters if any."""
        with self.lock:
            try:
                self._dispatch(bodies, eof, error, on_main)
            finally:
                if held:
                    self.reader.release()
                if self.waiters:
                    self.cond.notify_all()

    def _recv_frames(self, bodies: List[Union[bytes, bytearray]], blocking: bool) -> bool:
        """Cut whole frames out of what was received, reading (one ``recv_into`` when a
        frame fits the buffer) until at least one is complete; without ``blocking``, read
        only what is there. True at a clean end of stream."""
        rbuf = self.rbuf
        rview = self.rview
        limit = self.frame_limit
        recv_into = self.sock.recv_into
        while True:
            if self.big is not None:
                if bodies and blocking:
                    return False
                big = self.big
                n = len(big)
                while self.big_got < n:
                    if blocking:
                        k = recv_into(memoryview(big)[self.big_got :])
                    else:
                        try:
                            k = recv_into(memoryview(big)[self.big_got :], 0, _MSG_DONTWAIT)
                        except (BlockingIOError, InterruptedError):
                            return False
                    if not k:
                        raise EOFError(f"connection closed inside a frame of {n} bytes")
                    self.big_got += k
                self.big = None
                bodies.append(big)
                if not blocking:
                    continue  # more may be waiting
                return False
            start, end = self.rstart, self.rend
            while end - start >= 4:
                (n,) = _unpack_len(rbuf, start)
                if n == 0:
                    raise protocol.ProtocolError("frame of length 0")
                if n > limit:
                    raise protocol.FrameTooLarge(n, limit)
                stop = start + 4 + n
                if stop > end:
                    if 4 + n > BUFFER_SIZE:  # give it a buffer of its own
                        big = bytearray(n)
                        have = end - start - 4
                        big[:have] = rbuf[start + 4 : end]
                        self.big = big
                        self.big_got = have
                        start = end = 0
                    break
                bodies.append(bytes(rview[start + 4 : stop]))
                start = stop
            if start == end:
                start = end = 0
            elif start:  # a partial frame: to the front, where the buffer has room for it
                rbuf[: end - start] = rbuf[start:end]  # same size: allowed while exported
                end -= start
                start = 0
            self.rstart, self.rend = start, end
            if bodies and blocking:
                return False
            if self.big is not None:
                continue
            if blocking:
                k = recv_into(rview[end:])
            else:
                try:
                    k = recv_into(rview[end:], 0, _MSG_DONTWAIT)
                except (BlockingIOError, InterruptedError):
                    return False
            if not k:
                if end - start:
                    raise EOFError(
                        f"connection closed inside a frame ({end - start} bytes buffered)"
                    )
                return True
            self.rend = end + k

    def poll(self) -> None:
        """Read and route whatever is available without blocking (event loop, signals)."""
        on_main = self._enter()
        if self.solo and not on_main:
            self._join()
        try:
            if not self.reader.acquire(False):
                return  # somebody is reading: they route it
            if self.eof or self.failure is not None:
                self._hand_back()
                return
            bodies: List[Union[bytes, bytearray]] = []
            eof, error = False, None
            try:
                eof, error = self._read_some(bodies, False)
            finally:
                self._finish_reading(bodies, eof, error, on_main)
        finally:
            self._leave(on_main)

    def _dispatch(
        self,
        bodies: List[Union[bytes, bytearray]],
        eof: bool,
        error: Optional[BaseException],
        on_main: bool,
        keep: Optional[int] = None,
    ) -> Any:
        """Route frames read by the reader (state lock held). The HOST_REPLY to request
        ``keep``, if one came, is returned instead of routed."""
        found = None
        try:
            for body in bodies:
                msg = self.parse(body)
                kind = type(msg)
                if kind is _Call:
                    self.inbox.append(msg)
                elif kind is _HostReply and msg.request_id == keep:
                    found = msg
                else:
                    self.route(msg, on_main)
        except protocol.ProtocolError as exc:
            error = exc
        if error is not None and self.failure is None:
            self.failure = error
        if eof and not self.eof:
            self.eof = True
            self.on_eof(on_main)
        return found
