"""The worker's end of the socket: framed writes, and reads shared by whoever waits.

Reads follow "the leader reads": there is no reader thread. A thread that needs a frame
(the main loop waiting for the next CALL, a sync host request waiting for its reply, a
plugin thread doing the same) becomes the reader if nobody else is, reads frames, routes
every one of them (replies to their pending requests, CANCEL to cancellation, the rest to
the inbox) and hands over as soon as what it waited for has arrived. The others wait on
one condition variable. The event loop reads with a non-blocking ``poll`` from its
``add_reader`` callback. One frame is never read by two threads, and no frame waits for a
thread hop.

Writes take a lock, so that LOG frames from plugin threads never interleave with others.

The main thread's SIGUSR1 handler must not raise in the middle of a frame: ``io_depth``
counts how deep the main thread is in this module's I/O, and a signal that arrives there
is remembered (``signal_pending``) and handed to ``on_deferred_signal`` once the frame is
complete.
"""

from __future__ import annotations

import collections
import socket
import threading
from typing import Any, Callable, Deque, List, Optional

from . import protocol
from .codec import Codec

Route = Callable[[Any, bool], None]


class Channel:
    def __init__(self, sock: socket.socket, frame_limit: int, codec: Codec) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.codec = codec
        self.frame_limit = frame_limit
        self.frames = protocol.FrameBuffer(frame_limit)
        self.cond = threading.Condition(threading.Lock())
        self.reading = False  # a leader is reading (guarded by cond)
        self.eof = False
        self.failure: Optional[BaseException] = None  # protocol error seen by a reader
        self.write_lock = threading.Lock()
        self.inbox: Deque[Any] = collections.deque()
        self.main_ident = threading.main_thread().ident
        self.io_depth = 0  # main thread only
        self.signal_pending = False
        # Set by the worker: route(message, read_on_main) is called with cond held for
        # HOST_REPLY and CANCEL; other messages go to the inbox.
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
        on_main = self._enter()
        try:
            header = protocol._LEN.pack(len(body))
            with self.write_lock:
                if len(body) < 65536:
                    self.sock.sendall(header + body)
                else:
                    self._send_large(header, body)
        finally:
            self._leave(on_main)

    def _send_large(self, header: bytes, body: bytes) -> None:
        view = memoryview(body)
        sent = self.sock.sendmsg([header, view])
        total = 4 + len(body)
        while sent < total:
            if sent < 4:
                sent += self.sock.sendmsg([header[sent:], view])
            else:
                sent += self.sock.send(view[sent - 4 :])

    # ---------------------------------------------------------------------------- reading

    def wait_for(self, done: Callable[[], bool]) -> None:
        """Return once ``done()`` holds, reading and routing frames meanwhile if needed.

        ``done`` is evaluated with the condition held. EOFError when the stream ended,
        ProtocolError when the supervisor sent something invalid.
        """
        on_main = self._enter()
        try:
            with self.cond:
                while not done():
                    if self.failure is not None:
                        raise self.failure
                    if self.eof:
                        raise EOFError("the supervisor closed the channel")
                    if self.reading:
                        self.cond.wait()
                        continue
                    self._lead_blocking(on_main)
        finally:
            self._leave(on_main)

    def _lead_blocking(self, on_main: bool) -> None:
        """Read at least one frame (cond held on entry and exit, released while reading)."""
        self.reading = True
        self.cond.release()
        bodies: List[bytes] = []
        eof = False
        error: Optional[BaseException] = None
        try:
            bodies, eof = self._recv_frames()
        except protocol.ProtocolError as exc:
            error = exc
        except (EOFError, OSError):
            eof = True
        finally:
            self.cond.acquire()
            self.reading = False
        self._dispatch(bodies, eof, error, on_main)

    def _recv_frames(self) -> "tuple[List[bytes], bool]":
        fb = self.frames
        bodies: List[bytes] = []
        while True:
            body = fb.next_frame()
            while body is not None:
                bodies.append(body)
                body = fb.next_frame()
            if bodies:
                return bodies, False
            want = min(max(fb.needed(), 65536), 1 << 22)
            data = self.sock.recv(want)
            if not data:
                if fb.pending_bytes():
                    raise EOFError(
                        f"connection closed inside a frame ({fb.pending_bytes()} bytes buffered)"
                    )
                return bodies, True
            fb.feed(data)

    def poll(self) -> None:
        """Read and route whatever is available without blocking (event loop, signals)."""
        on_main = self._enter()
        try:
            with self.cond:
                if self.reading or self.eof or self.failure is not None:
                    return
                self.reading = True
            bodies: List[bytes] = []
            eof = False
            error: Optional[BaseException] = None
            fb = self.frames
            try:
                while True:
                    try:
                        data = self.sock.recv(1 << 20, socket.MSG_DONTWAIT)
                    except (BlockingIOError, InterruptedError):
                        break
                    if not data:
                        eof = True
                        break
                    fb.feed(data)
                    if len(data) < (1 << 20):
                        break
                body = fb.next_frame()
                while body is not None:
                    bodies.append(body)
                    body = fb.next_frame()
            except protocol.ProtocolError as exc:
                error = exc
            except (EOFError, OSError):
                eof = True
            with self.cond:
                self.reading = False
                self._dispatch(bodies, eof, error, on_main)
        finally:
            self._leave(on_main)

    def _dispatch(
        self, bodies: List[bytes], eof: bool, error: Optional[BaseException], on_main: bool
    ) -> None:
        """Route frames read by a leader (cond held), then wake every waiter."""
        try:
            for body in bodies:
                msg = protocol.parse(body, self.codec)
                self.route(msg, on_main)
        except protocol.ProtocolError as exc:
            error = exc
        if error is not None and self.failure is None:
            self.failure = error
        if eof and not self.eof:
            self.eof = True
            self.on_eof(on_main)
        self.cond.notify_all()
