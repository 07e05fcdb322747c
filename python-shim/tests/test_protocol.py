"""Framing, message shapes and the golden frames shared with the Rust side."""

from __future__ import annotations

import io
import socket
import struct

import pytest

from conftest import FRAMES
from golden_values import GOLDEN
from snakepit_shim import codec, protocol

IMPLS = [codec.STDLIB] + ([codec.MSGPACK] if codec.MSGPACK is not None else [])
ids = [c.name for c in IMPLS]


def test_golden_set_is_complete():
    on_disk = sorted(p.stem for p in FRAMES.glob("*.bin"))
    assert on_disk == sorted(name for name, _ in GOLDEN)


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
@pytest.mark.parametrize("name,message", GOLDEN, ids=[n for n, _ in GOLDEN])
def test_golden_frame_decodes_and_reencodes(impl, name, message):
    frame = (FRAMES / f"{name}.bin").read_bytes()
    body = protocol.read_frame(io.BytesIO(frame).read, protocol.DEFAULT_FRAME_LIMIT)
    decoded = impl.decode(body)
    assert decoded == message or name == "result-ext"  # Decimal NaN != NaN
    assert impl.encode(decoded) == body
    assert protocol.frame(impl.encode(message)) == frame


def _golden_body(name):
    return (FRAMES / f"{name}.bin").read_bytes()[4:]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_hand_built_envelopes_match_golden(impl):
    assert protocol.build_handshake(4242, "3.11.7", "stdlib") == _golden_body("handshake")
    assert protocol.build_call(7, "billing.invoicing:run", {"period": "2026-05", "dry_run": False},
                               {"job_id": "j1", "run_id": "r-1"}, impl, measure=True) \
        == _golden_body("call-small")
    assert protocol.build_cancel(7) == _golden_body("cancel")
    assert protocol.build_shutdown() == _golden_body("shutdown")
    assert protocol.build_host_reply(3, True, {"rows": [1, 2]}, impl) == _golden_body("host-reply-ok")
    assert protocol.build_host_reply(4, False, ["UnknownMethod", "no handler for 'x'"], impl) \
        == _golden_body("host-reply-err")
    assert protocol.build_validate(8, "billing.invoicing:run", {"period": "2026-05"},
                                   ["connectors", "run_id"], impl) == _golden_body("validate")
    for name in ("result-scalars", "result-ext", "result-long"):
        message = dict(GOLDEN)[name]
        assert protocol.build_result(message[1], message[2], impl) == _golden_body(name)
    assert protocol.build_exception(*dict(GOLDEN)["exception"][1:]) == _golden_body("exception")
    assert protocol.build_log(*dict(GOLDEN)["log"][1:]) == _golden_body("log")
    assert protocol.build_log(*dict(GOLDEN)["log-between-calls"][1:]) \
        == _golden_body("log-between-calls")
    assert protocol.build_host_request(1, 7, "echo", {"x": 1}, impl) == _golden_body("host-request")
    assert protocol.usage_frame(*dict(GOLDEN)["usage"][1:])[4:] == _golden_body("usage")


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_parse_golden_messages(impl):
    call = protocol.parse(_golden_body("call-small"), impl)
    assert call == protocol.Call(7, "billing.invoicing:run", {"period": "2026-05", "dry_run": False},
                                 {"job_id": "j1", "run_id": "r-1"}, True)
    assert protocol.parse(_golden_body("cancel"), impl) == protocol.Cancel(7)
    assert protocol.parse(_golden_body("shutdown"), impl) == protocol.Shutdown()
    assert protocol.parse(_golden_body("host-reply-err"), impl) == protocol.HostReply(
        4, False, ["UnknownMethod", "no handler for 'x'"])
    assert protocol.parse(_golden_body("validate"), impl).context_keys == ["connectors", "run_id"]


@pytest.mark.parametrize("message,error", [
    ([99, 1], "unknown message type 99"),
    ([2], "CANCEL has 0 fields, expected 1"),
    ([2, "7"], "CANCEL field 1 is str, expected int"),
    ([2, True], "CANCEL field 1 is bool, expected int"),
    ([4, 1, False, "oops"], "HOST_REPLY error value is not [type, message]"),
    ({"a": 1}, "frame is not a [type, ...] array"),
])
def test_parse_rejects_bad_shapes(message, error):
    with pytest.raises(protocol.ProtocolError, match=error.replace("[", r"\[").replace("]", r"\]")):
        protocol.parse(codec.STDLIB.encode(message), codec.STDLIB)


class CountingReader:
    """A stream that records how many bytes were asked for."""

    def __init__(self, data: bytes) -> None:
        self.stream = io.BytesIO(data)
        self.asked = 0

    def read(self, n: int) -> bytes:
        self.asked += n
        return self.stream.read(n)


def test_frame_limit_is_checked_before_the_body_is_read():
    hostile = struct.pack(">I", 2**31) + b"\x00" * 16
    reader = CountingReader(hostile)
    with pytest.raises(protocol.FrameTooLarge, match="2147483648 bytes exceeds the frame limit of 1024"):
        protocol.read_frame(reader.read, 1024)
    assert reader.asked == 4  # only the header


def test_frame_buffer_checks_limit_on_the_header_alone():
    fb = protocol.FrameBuffer(1024)
    fb.feed(struct.pack(">I", 1025))
    with pytest.raises(protocol.FrameTooLarge):
        fb.next_frame()
    with pytest.raises(protocol.FrameTooLarge):
        fb.needed()


def test_zero_length_frame_is_invalid():
    with pytest.raises(protocol.ProtocolError):
        protocol.read_frame(io.BytesIO(b"\x00\x00\x00\x00").read, 1024)


def test_truncated_frame_says_how_many_bytes_came():
    data = struct.pack(">I", 10) + b"abc"
    with pytest.raises(EOFError, match="after 3 of 10 bytes"):
        protocol.read_frame(io.BytesIO(data).read, 1024)
    with pytest.raises(EOFError, match="end of stream"):
        protocol.read_frame(io.BytesIO(b"").read, 1024)


def test_two_frames_back_to_back_and_split_arbitrarily():
    a = protocol.frame(protocol.build_cancel(1))
    b = protocol.frame(protocol.build_shutdown())
    data = a + b
    for cut in range(len(data) + 1):
        fb = protocol.FrameBuffer(1024)
        out = []
        for chunk in (data[:cut], data[cut:]):
            fb.feed(chunk)
            while (body := fb.next_frame()) is not None:
                out.append(body)
        assert out == [a[4:], b[4:]]


def test_read_frame_over_a_socket():
    left, right = socket.socketpair()
    with left, right:
        left.sendall(protocol.frame(b"\x91\x03") * 2)
        stream = right.makefile("rb")
        assert protocol.read_frame(stream.read, 1024) == b"\x91\x03"
        assert protocol.read_frame(stream.read, 1024) == b"\x91\x03"
