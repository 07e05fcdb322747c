"""Frames and messages of the snakepit wire protocol, version 3.

The one definition of the protocol is ``crates/snakepit-proto/PROTOCOL.md``; this module
implements it and must not drift from it (the golden frames in ``fixtures/frames/`` pin
both sides).

A frame is a 4-byte big-endian unsigned length ``N`` followed by ``N`` bytes of MessagePack
holding one array ``[type, ...fields]``. ``N = 0`` is invalid, and ``N`` is checked against
the frame limit before anything is allocated for the body. Supervisor to worker: CALL (1),
CANCEL (2), SHUTDOWN (3), HOST_REPLY (4), VALIDATE (5); worker to supervisor: HANDSHAKE (0),
RESULT (16), EXCEPTION (17), LOG (18), HOST_REQUEST (19), USAGE (20). The fork-server's control channel
adds SPAWN (32), SPAWNED (33) and EXITED (34) (see ``forkserver.py``).

This module has no I/O policy of its own: :class:`FrameBuffer` turns received bytes into
frame bodies, the ``build_*`` functions turn messages into complete frames (length
included), and :func:`parse` checks an incoming message's shape.
"""

from __future__ import annotations

import struct
from typing import Any, Callable, List, NamedTuple, Optional, Union

from . import codec as _codec
from .codec import Codec
from .codec_decode import stdlib_decode_call
from .codec_encode import _float, _int, _str

PROTOCOL_VERSION = 3
DEFAULT_FRAME_LIMIT = 64 * 1024 * 1024

# Supervisor to worker.
CALL = 1
CANCEL = 2
SHUTDOWN = 3
HOST_REPLY = 4
VALIDATE = 5
# Worker to supervisor.
HANDSHAKE = 0
RESULT = 16
EXCEPTION = 17
LOG = 18
HOST_REQUEST = 19
USAGE = 20
# Fork-server control channel.
SPAWN = 32
SPAWNED = 33
EXITED = 34

NAMES = {
    CALL: "CALL",
    CANCEL: "CANCEL",
    SHUTDOWN: "SHUTDOWN",
    HOST_REPLY: "HOST_REPLY",
    VALIDATE: "VALIDATE",
    HANDSHAKE: "HANDSHAKE",
    RESULT: "RESULT",
    EXCEPTION: "EXCEPTION",
    LOG: "LOG",
    HOST_REQUEST: "HOST_REQUEST",
    USAGE: "USAGE",
    SPAWN: "SPAWN",
    SPAWNED: "SPAWNED",
    EXITED: "EXITED",
}

_LEN = struct.Struct(">I")


class ProtocolError(Exception):
    """The peer sent something the protocol does not allow."""


class FrameTooLarge(ProtocolError):
    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"frame of {size} bytes exceeds the frame limit of {limit} bytes")
        self.size = size
        self.limit = limit


# --------------------------------------------------------------------------------------
# Framing
# --------------------------------------------------------------------------------------


class FrameBuffer:
    """Accumulates received bytes and cuts them into frame bodies.

    The length header is checked against ``limit`` as soon as its 4 bytes are in, before
    the body is read or any room is made for it.
    """

    __slots__ = ("buf", "limit")

    def __init__(self, limit: int) -> None:
        self.buf = bytearray()
        self.limit = limit

    def feed(self, data: bytes) -> None:
        self.buf += data

    def next_frame(self) -> Optional[bytes]:
        """The next complete frame body, or None when more bytes are needed."""
        buf = self.buf
        if len(buf) < 4:
            return None
        (n,) = _LEN.unpack_from(buf, 0)
        if n == 0:
            raise ProtocolError("frame of length 0")
        if n > self.limit:
            raise FrameTooLarge(n, self.limit)
        end = 4 + n
        if len(buf) < end:
            return None
        body = bytes(buf[4:end])
        del buf[:end]
        return body

    def needed(self) -> int:
        """How many more bytes complete the frame in hand (at least 1)."""
        buf = self.buf
        if len(buf) < 4:
            return 4 - len(buf)
        (n,) = _LEN.unpack_from(buf, 0)
        if n > self.limit:
            raise FrameTooLarge(n, self.limit)
        return max(1, 4 + n - len(buf))


def read_exactly(read: Any, n: int) -> bytes:
    """Read exactly ``n`` bytes with ``read(k)``; EOFError says how many came."""
    chunks: List[bytes] = []
    got = 0
    while got < n:
        chunk = read(n - got)
        if not chunk:
            raise EOFError(f"connection closed after {got} of {n} bytes")
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def read_frame(read: Any, limit: int) -> bytes:
    """Read one frame body from a blocking byte stream ``read(k)``.

    The length is checked against ``limit`` before the body is read. EOFError (with the
    byte counts) when the stream ends inside a frame; EOFError("end of stream") when it
    ends cleanly between frames.
    """
    first = read(4)
    if not first:
        raise EOFError("end of stream")
    header = first if len(first) == 4 else first + read_exactly(read, 4 - len(first))
    (n,) = _LEN.unpack(header)
    if n == 0:
        raise ProtocolError("frame of length 0")
    if n > limit:
        raise FrameTooLarge(n, limit)
    return read_exactly(read, n)


def frame(body: bytes) -> bytes:
    """A complete frame: length header then body."""
    return _LEN.pack(len(body)) + body


# --------------------------------------------------------------------------------------
# Building messages (worker to supervisor). Each returns the body; envelopes are written
# by hand from the scalar encoders (byte-identical to either codec's encoding of the same
# array) so that only the free-form values go through the codec.
# --------------------------------------------------------------------------------------


def _text(v: str) -> bytes:
    """A free-text field (messages, tracebacks, names): a lone surrogate becomes '?'
    instead of failing the frame."""
    try:
        return _str(v)
    except UnicodeEncodeError:
        return _str(v.encode("utf-8", "replace").decode("utf-8"))


def _opt_int(v: Optional[int]) -> bytes:
    return b"\xc0" if v is None else _int(v)


def _opt_text(v: Optional[str]) -> bytes:
    return b"\xc0" if v is None else _text(v)


def build_handshake(pid: int, python: str, codec_name: str) -> bytes:
    return b"\x95\x00" + _int(PROTOCOL_VERSION) + _int(pid) + _str(python) + _str(codec_name)


def build_result(call_id: int, value: Any, codec: Codec) -> bytes:
    """RESULT body; EncodeError (path under ``result``) when ``value`` cannot cross."""
    return b"\x93\x10" + _int(call_id) + codec.encode(value, "result")


class _OverLimit(Exception):
    pass


def build_result_frame(call_id: int, value: Any, codec: Codec, limit: int) -> bytes:
    """A complete RESULT frame (length included), the common small values encoded
    without a trip through the codec (byte-identical to it). Raises when ``value``
    cannot cross or the frame would exceed ``limit``: the caller then builds the
    EXCEPTION with :func:`build_result` (which names the problem)."""
    t = type(value)
    if value is None:
        v = b"\xc0"
    elif t is int:
        v = _int(value)
    elif t is str:
        v = _str(value)
    elif t is bool:
        v = b"\xc3" if value else b"\xc2"
    elif t is float:
        v = _float(value)
    else:
        v = codec.encode(value, "result")
    cid = _int(call_id)
    n = 2 + len(cid) + len(v)
    if n > limit:
        raise _OverLimit(n)
    if n < 4096:
        return _LEN.pack(n) + b"\x93\x10" + cid + v
    return b"".join((_LEN.pack(n), b"\x93\x10", cid, v))


def build_result_nil(call_id: int) -> bytes:
    return b"\x93\x10" + _int(call_id) + b"\xc0"


def build_exception(call_id: int, kind: str, type_name: str, message: str, tb: str) -> bytes:
    return (
        b"\x96\x11"
        + _int(call_id)
        + _str(kind)
        + _text(type_name)
        + _text(message)
        + _text(tb)
    )


def build_log(
    call_id: Optional[int],
    level: int,
    logger: str,
    message: str,
    exc_text: Optional[str],
    time: float,
) -> bytes:
    return (
        b"\x97\x12"
        + _opt_int(call_id)
        + _int(level)
        + _text(logger)
        + _text(message)
        + _opt_text(exc_text)
        + _float(time)
    )


def build_host_request(
    request_id: int, call_id: Optional[int], method: str, payload: Any, codec: Codec
) -> bytes:
    try:  # one trip through the codec for the whole message (a host request's hot path)
        return codec.encode([HOST_REQUEST, request_id, call_id, method, payload])
    except _codec.EncodeError:
        pass
    return (  # the envelope by hand, so that the error names the payload's bad part
        b"\x95\x13"
        + _int(request_id)
        + _opt_int(call_id)
        + _str(method)
        + codec.encode(payload, "payload")
    )


_CPU_PAIR = struct.Struct(">BdBd")


def usage_frame(call_id: int, cpu_user: float, cpu_sys: float, max_rss_kib: int) -> bytes:
    """A complete USAGE frame (length included): what a call cost the worker. The CPU
    times are floats (seconds): fixed-size, so one ``pack`` (this runs on every call)."""
    body = (
        b"\x95\x14"
        + _int(call_id)
        + _CPU_PAIR.pack(0xCB, cpu_user, 0xCB, cpu_sys)
        + _int(max_rss_kib)
    )
    return _LEN.pack(len(body)) + body


def build_spawned(worker_id: int, pid: int) -> bytes:
    return b"\x93\x21" + _int(worker_id) + _int(pid)


def build_exited(pid: int, status: int) -> bytes:
    return b"\x93\x22" + _int(pid) + _int(status)


# Supervisor-side builders: used by the tests and the golden-frame generator.


def build_call(
    call_id: int, reference: str, kwargs: dict, context: dict, codec: Codec, measure: bool = False
) -> bytes:
    return (
        b"\x96\x01"
        + _int(call_id)
        + _str(reference)
        + codec.encode(kwargs, "kwargs")
        + codec.encode(context, "context")
        + (b"\xc3" if measure else b"\xc2")
    )


def build_cancel(call_id: int) -> bytes:
    return b"\x92\x02" + _int(call_id)


def build_shutdown() -> bytes:
    return b"\x91\x03"


def build_host_reply(request_id: int, ok: bool, value: Any, codec: Codec) -> bytes:
    return b"\x94\x04" + _int(request_id) + (b"\xc3" if ok else b"\xc2") + codec.encode(value)


def build_validate(
    call_id: int, reference: str, kwargs: dict, context_keys: List[str], codec: Codec
) -> bytes:
    return (
        b"\x95\x05"
        + _int(call_id)
        + _str(reference)
        + codec.encode(kwargs, "kwargs")
        + codec.encode(list(context_keys), "context_keys")
    )


def build_spawn(worker_id: int) -> bytes:
    return b"\x92\x20" + _int(worker_id)


# --------------------------------------------------------------------------------------
# Parsing messages
# --------------------------------------------------------------------------------------


class Call(NamedTuple):
    call_id: int
    reference: str
    kwargs: dict
    context: dict
    measure: bool  # answer with a USAGE frame (see PROTOCOL.md, USAGE)


class Cancel(NamedTuple):
    call_id: int


class Shutdown(NamedTuple):
    pass


class HostReply(NamedTuple):
    request_id: int
    ok: bool
    value: Any


class Validate(NamedTuple):
    call_id: int
    reference: str
    kwargs: dict
    context_keys: List[str]


class Spawn(NamedTuple):
    worker_id: int


Message = Union[Call, Cancel, Shutdown, HostReply, Validate, Spawn]

# type -> (class, field types); `int` excludes bool.
_SHAPES = {
    CALL: (Call, (int, str, dict, dict, bool)),
    CANCEL: (Cancel, (int,)),
    SHUTDOWN: (Shutdown, ()),
    HOST_REPLY: (HostReply, (int, bool, object)),
    VALIDATE: (Validate, (int, str, dict, list)),
    SPAWN: (Spawn, (int,)),
}


_new_tuple = tuple.__new__


def _fast_call(body: bytes, decode_call: Callable[[bytes], Any]) -> Optional[Message]:
    """A CALL decoded by the stdlib codec's specialised decoder, or None for anything else."""
    try:
        fields = decode_call(body)
    except _codec.DecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    if fields is not None:
        call_id, reference, kwargs, context, measure = fields
        if (
            type(call_id) is int
            and type(reference) is str
            and type(kwargs) is dict
            and type(context) is dict
            and type(measure) is bool
        ):
            return _new_tuple(Call, fields)
    return None


def parse(body: bytes, codec: Codec) -> Message:
    """Decode a supervisor-to-worker message and check its shape (ProtocolError)."""
    if codec is _codec.STDLIB and type(body) is bytes:
        call = _fast_call(body, stdlib_decode_call)  # the per-call hot path
        if call is not None:
            return call
    try:
        msg = codec.decode(body)
    except _codec.DecodeError as exc:
        raise ProtocolError(f"undecodable frame: {exc}") from None
    return check_message(msg)


def make_parser(codec: Codec) -> Callable[[Union[bytes, bytearray]], Message]:
    """``parse`` specialised for one codec (what a worker's channel uses per frame)."""
    if codec is _codec.STDLIB:
        decode_call = stdlib_decode_call

        def parse_stdlib(body: Union[bytes, bytearray]) -> Message:
            if type(body) is bytes:
                call = _fast_call(body, decode_call)
                if call is not None:
                    return call
            return parse(body, codec)

        return parse_stdlib

    decode = codec.decode

    def parse_other(body: Union[bytes, bytearray]) -> Message:
        try:
            msg = decode(body)
        except _codec.DecodeError as exc:
            raise ProtocolError(f"undecodable frame: {exc}") from None
        if type(msg) is list and len(msg) == 6 and msg[0] == CALL:  # the hot path
            _, call_id, reference, kwargs, context, measure = msg
            if (
                type(call_id) is int
                and type(reference) is str
                and type(kwargs) is dict
                and type(context) is dict
                and type(measure) is bool
            ):
                return _new_tuple(Call, (call_id, reference, kwargs, context, measure))
        elif type(msg) is list and len(msg) == 4 and msg[0] == HOST_REPLY:
            if type(msg[1]) is int and msg[2] is True:  # a host request's successful reply
                return _new_tuple(HostReply, (msg[1], True, msg[3]))
        return check_message(msg)

    return parse_other


def check_message(msg: Any) -> Message:
    """The message for a decoded ``[type, ...fields]`` array (ProtocolError)."""
    if type(msg) is list and len(msg) == 6 and msg[0] == CALL:  # the hot path
        call_id, reference, kwargs, context, measure = msg[1:]
        if (
            type(call_id) is int
            and type(reference) is str
            and type(kwargs) is dict
            and type(context) is dict
            and type(measure) is bool
        ):
            return Call(call_id, reference, kwargs, context, measure)
    if type(msg) is list and len(msg) == 4 and msg[0] == HOST_REPLY and msg[2] is True:
        if type(msg[1]) is int:  # the host request's hot path: a successful reply
            return _new_tuple(HostReply, (msg[1], True, msg[3]))
    if type(msg) is not list or not msg or type(msg[0]) is not int:
        raise ProtocolError(f"frame is not a [type, ...] array: {_preview(msg)}")
    shape = _SHAPES.get(msg[0])
    if shape is None:
        raise ProtocolError(f"unknown message type {msg[0]}")
    cls, types = shape
    fields = msg[1:]
    if len(fields) != len(types):
        raise ProtocolError(
            f"{NAMES[msg[0]]} has {len(fields)} fields, expected {len(types)}"
        )
    for i, (value, want) in enumerate(zip(fields, types)):
        if want is object:
            continue
        if type(value) is not want:
            raise ProtocolError(
                f"{NAMES[msg[0]]} field {i + 1} is {type(value).__name__}, expected {want.__name__}"
            )
    if msg[0] == HOST_REPLY and not fields[1]:
        err = fields[2]
        if not (type(err) is list and len(err) == 2 and all(type(x) is str for x in err)):
            raise ProtocolError("HOST_REPLY error value is not [type, message]")
    if msg[0] == VALIDATE and not all(type(k) is str for k in fields[3]):
        raise ProtocolError("VALIDATE context_keys is not a list of str")
    return cls(*fields)


def _preview(v: Any) -> str:
    text = repr(v)
    return text if len(text) <= 80 else text[:77] + "..."
