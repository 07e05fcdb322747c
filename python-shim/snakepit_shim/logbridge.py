"""Logging records and stdout/stderr lines as LOG frames.

A :class:`FrameHandler` on the root logger turns every record at or above the worker's
``--log-level`` (default INFO; the root logger is set to the same level) into a LOG frame
tagged with the call in hand. ``sys.stdout`` and ``sys.stderr`` become :class:`LineWriter`
objects that send each complete line as a LOG frame (logger ``"stdout"`` level 20, logger
``"stderr"`` level 30); a partial line is sent when the call ends (``flush_partial``) or
once it grows past 64 KiB. Output written straight to file descriptors 1 and 2 (C
extensions, subprocesses) still goes to the pipes the supervisor reads.
"""

from __future__ import annotations

import codecs
import io
import logging
import sys
import threading
import time
from typing import Callable, List, Optional

from . import protocol

Send = Callable[[bytes], None]
CallId = Callable[[], Optional[int]]

MAX_PARTIAL = 64 * 1024
_guard = threading.local()  # no LOG frame about sending a LOG frame


class Bridge:
    """Sends LOG frames; shared by the handler and the line writers."""

    def __init__(self, send: Send, call_id: CallId, frame_limit: int) -> None:
        self._send = send
        self.call_id = call_id
        # Leave room for the envelope; a longer message is cut (and says so).
        self.max_text = max(1024, frame_limit // 2 - 4096)

    def log(self, level: int, logger: str, message: str, exc_text: Optional[str], when: float) -> None:
        if getattr(_guard, "busy", False):
            return
        _guard.busy = True
        try:
            message = self._cut(message)
            if exc_text is not None:
                exc_text = self._cut(exc_text)
            body = protocol.build_log(self.call_id(), level, logger, message, exc_text, when)
            try:
                self._send(body)
            except OSError:
                pass  # the supervisor is gone; the main loop finds out and exits
        finally:
            _guard.busy = False

    def _cut(self, text: str) -> str:
        # Worst case 4 UTF-8 bytes per character: keep the frame under the limit.
        if len(text) * 4 <= self.max_text:
            return text
        encoded = text.encode("utf-8", "replace")
        if len(encoded) <= self.max_text:
            return text
        kept = encoded[: self.max_text].decode("utf-8", "ignore")
        return kept + f"... [cut: {len(encoded)} bytes in all]"


class FrameHandler(logging.Handler):
    def __init__(self, bridge: Bridge, level: int = logging.NOTSET) -> None:
        super().__init__(level)
        self.bridge = bridge
        self._exc_formatter = logging.Formatter()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            exc_text = None
            if record.exc_info:
                exc_text = self._exc_formatter.formatException(record.exc_info)
            elif record.exc_text:
                exc_text = record.exc_text
            if record.stack_info:
                stack = self._exc_formatter.formatStack(record.stack_info)
                exc_text = stack if exc_text is None else f"{exc_text}\n{stack}"
            self.bridge.log(record.levelno, record.name, message, exc_text, record.created)
        except Exception:
            self.handleError(record)


class _BinaryView(io.RawIOBase):
    """``sys.stdout.buffer``: bytes decoded as UTF-8 (with replacement) into the writer."""

    def __init__(self, text: "LineWriter") -> None:
        super().__init__()
        self._text = text
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def writable(self) -> bool:
        return True

    def write(self, b) -> int:  # type: ignore[override]
        data = bytes(b)
        self._text.write(self._decoder.decode(data))
        return len(data)


class LineWriter(io.TextIOBase):
    """A text stream that sends each complete line as a LOG frame."""

    def __init__(self, bridge: Bridge, logger: str, level: int) -> None:
        super().__init__()
        self._bridge = bridge
        self._logger = logger
        self._level = level
        self._lock = threading.Lock()
        self._partial: List[str] = []
        self._partial_len = 0
        self.buffer = _BinaryView(self)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"

    @property
    def errors(self) -> str:  # type: ignore[override]
        return "replace"

    def writable(self) -> bool:
        return True

    def isatty(self) -> bool:
        return False

    def write(self, s: str) -> int:  # type: ignore[override]
        if not isinstance(s, str):
            raise TypeError(f"write() argument must be str, not {type(s).__name__}")
        if "\n" not in s:
            with self._lock:
                self._partial.append(s)
                self._partial_len += len(s)
                if self._partial_len < MAX_PARTIAL:
                    return len(s)
                lines = ["".join(self._partial)]
                self._partial.clear()
                self._partial_len = 0
        else:
            parts = s.split("\n")
            with self._lock:
                if self._partial:
                    parts[0] = "".join(self._partial) + parts[0]
                    self._partial.clear()
                    self._partial_len = 0
                tail = parts.pop()
                if tail:
                    self._partial.append(tail)
                    self._partial_len = len(tail)
            lines = parts
        now = time.time()
        for line in lines:
            if line.endswith("\r"):
                line = line[:-1]
            self._bridge.log(self._level, self._logger, line, None, now)
        return len(s)

    def flush(self) -> None:
        """Partial lines wait for their newline (or the end of the call)."""

    def flush_partial(self) -> None:
        if not self._partial:  # the common case, without the lock (a racy peek is fine:
            return  # a line being written by a thread right now is flushed next time)
        with self._lock:
            if not self._partial:
                return
            line = "".join(self._partial)
            self._partial.clear()
            self._partial_len = 0
        self._bridge.log(self._level, self._logger, line, None, time.time())


class Installed:
    """What :func:`install` put in place, for flushing at the end of each call."""

    def __init__(self, handler: FrameHandler, stdout: LineWriter, stderr: LineWriter) -> None:
        self.handler = handler
        self.stdout = stdout
        self.stderr = stderr

    def has_partial(self) -> bool:
        """A partial line waits (a racy peek without the locks, fine at the end of a call:
        a line that a thread is writing right now goes with the next one)."""
        return bool(self.stdout._partial or self.stderr._partial)

    def flush_partial(self) -> None:
        """End of a call: send the partial lines."""
        self.stdout.flush_partial()
        self.stderr.flush_partial()


def parse_level(text: str) -> int:
    text = text.strip().upper()
    if text.isdigit():
        return int(text)
    level = logging.getLevelName(text)
    if not isinstance(level, int):
        raise ValueError(f"unknown log level {text!r}")
    return level


def install(send: Send, call_id: CallId, frame_limit: int, level: int = logging.INFO) -> Installed:
    """Route the root logger and sys.stdout/sys.stderr to LOG frames."""
    bridge = Bridge(send, call_id, frame_limit)
    handler = FrameHandler(bridge)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    stdout = LineWriter(bridge, "stdout", logging.INFO)
    stderr = LineWriter(bridge, "stderr", logging.WARNING)
    sys.stdout = stdout
    sys.stderr = stderr
    return Installed(handler, stdout, stderr)
