"""The value codec: round trips, canonical bytes, both implementations identical."""

from __future__ import annotations

import collections
import enum
import math
from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

import pytest

from snakepit_shim import codec

IMPLS = [codec.STDLIB] + ([codec.MSGPACK] if codec.MSGPACK is not None else [])
ids = [c.name for c in IMPLS]

try:
    from zoneinfo import ZoneInfo
except ImportError:  # 3.8
    ZoneInfo = None

VALUES = [
    None, True, False,
    0, 1, 127, 128, 255, 256, 65535, 65536, 2**32 - 1, 2**32, 2**63 - 1,
    -1, -32, -33, -128, -129, -32768, -32769, -2**31, -2**31 - 1, -2**63,
    0.0, 1.5, -0.25, 1e300, float("inf"), -float("inf"),
    "", "a", "é" * 10, "x" * 31, "x" * 32, "x" * 255, "x" * 256, "x" * 65535, "x" * 65536,
    b"", b"\x00\xff", bytes(255), bytes(256), bytes(65536),
    [], [1, "a", None], list(range(15)), list(range(16)), list(range(70000)),
    {}, {"a": {"b": []}}, {f"k{i}": i for i in range(15)}, {f"k{i}": i for i in range(16)},
    {f"k{i}": i for i in range(70000)},
    datetime(2026, 5, 1, 12, 30, 45, 123456, tzinfo=timezone(timedelta(hours=2))),
    datetime(2026, 5, 1, 12, 30, 45),
    datetime(1969, 12, 31, 23, 59, 59, 999999),
    datetime(1, 1, 1), datetime(9999, 12, 31, 23, 59, 59, 999999),
    datetime(2026, 1, 1, tzinfo=timezone.utc),
    datetime(2026, 1, 1, tzinfo=timezone(timedelta(hours=-5, minutes=-30))),
    date(2026, 5, 1), date(1969, 12, 31), date(1, 1, 1), date(9999, 12, 31),
    Decimal("12.50"), Decimal("-1E+3"), Decimal("0"), Decimal("1.2345678901234567"),
    Decimal("Infinity"), Decimal("-0.000"),
    {"rows": [{"id": 1, "when": date(2026, 1, 1), "amount": Decimal("9.99"), "note": None}]},
]


def same(a, b) -> bool:
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    if isinstance(a, Decimal) and a.is_nan():
        return isinstance(b, Decimal) and b.is_nan()
    if type(a) is not type(b):
        return False
    if isinstance(a, datetime):
        return a == b and a.utcoffset() == b.utcoffset()
    if isinstance(a, Decimal):
        return str(a) == str(b)
    return a == b


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_round_trip(impl, value):
    data = impl.encode(value)
    assert same(impl.decode(data), value)
    assert codec.STDLIB.decode(data) == impl.decode(data) or same(value, value)


@pytest.mark.skipif(codec.MSGPACK is None, reason="msgpack not installed")
@pytest.mark.parametrize("value", VALUES, ids=lambda v: repr(v)[:40])
def test_both_paths_byte_identical(value):
    assert codec.STDLIB.encode(value) == codec.MSGPACK.encode(value)


@pytest.mark.skipif(codec.MSGPACK is None, reason="msgpack not installed")
def test_plain_values_match_msgpack_python():
    import msgpack

    for value in VALUES:
        if isinstance(value, (datetime, date, Decimal)) or "rows" in repr(value)[:8]:
            continue
        assert codec.STDLIB.encode(value) == msgpack.packb(value, use_bin_type=True), value


def test_canonical_bytes():
    enc = codec.STDLIB.encode
    assert enc(None) == b"\xc0" and enc(True) == b"\xc3" and enc(False) == b"\xc2"
    assert enc(127) == b"\x7f" and enc(128) == b"\xcc\x80" and enc(-1) == b"\xff"
    assert enc(-33) == b"\xd0\xdf" and enc(65535) == b"\xcd\xff\xff"
    assert enc(2**63 - 1) == b"\xcf\x7f" + b"\xff" * 7
    assert enc(1.5) == b"\xcb\x3f\xf8" + bytes(6)  # float 64 always
    assert enc("x" * 31)[:1] == b"\xbf" and enc("x" * 32)[:2] == b"\xd9\x20"
    assert enc(date(1970, 1, 2)) == b"\xd6\x02\x00\x00\x00\x01"
    assert enc(datetime(1970, 1, 1, 0, 0, 1)) == b"\xd7\x01" + (1000000).to_bytes(8, "big")
    aware = datetime(1970, 1, 1, 2, tzinfo=timezone(timedelta(hours=2)))
    assert enc(aware) == b"\xc7\x0c\x01" + bytes(8) + (7200).to_bytes(4, "big")
    assert enc(Decimal("1.5")) == b"\xc7\x03\x031.5"
    assert enc(Decimal("1.25")) == b"\xd6\x031.25"  # 4 bytes: fixext 4


@pytest.mark.skipif(ZoneInfo is None, reason="no zoneinfo")
def test_named_zone_arrives_as_fixed_offset():
    try:
        paris = ZoneInfo("Europe/Paris")
    except Exception:
        pytest.skip("no tz database")
    value = datetime(2026, 7, 1, 12, tzinfo=paris)
    for impl in IMPLS:
        back = impl.decode(impl.encode(value))
        assert back == value and back.utcoffset() == timedelta(hours=2)


class Color(enum.IntEnum):
    RED = 1


class Name(str, enum.Enum):
    A = "a"


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_subclasses_encode_as_their_base(impl):
    Point = collections.namedtuple("Point", "x y")
    value = {"c": Color.RED, "n": Name.A, "od": collections.OrderedDict(a=1), "p": Point(1, 2),
             "ba": bytearray(b"ab"), "t": (1, 2)}
    assert impl.decode(impl.encode(value)) == {"c": 1, "n": "a", "od": {"a": 1}, "p": [1, 2],
                                               "ba": b"ab", "t": [1, 2]}
    assert impl.encode(value) == codec.STDLIB.encode(value)


BAD = [
    ({"rows": [{}, {}, {}, {"when": {1, 2}}]}, 'result["rows"][3]["when"]: set is not a wire type'),
    ({1: "a"}, "result: map key 1 (int) is not a str"),
    ({"a": {b"k": 1}}, "result[\"a\"]: map key b'k' (bytes) is not a str"),
    ({"a": {None: 1}}, "result[\"a\"]: map key None (NoneType) is not a str"),
    ({"n": [0, 2**63]}, 'result["n"][1]: int 9223372036854775808 is outside the signed 64-bit range'),
    ({"n": [0, 2**64 - 1]}, 'result["n"][1]: int 18446744073709551615 is outside the signed 64-bit range'),
    ({"n": 2**64}, 'result["n"]: int 18446744073709551616 is outside the signed 64-bit range'),
    (-2**63 - 1, "result: int -9223372036854775809 is outside the signed 64-bit range"),
    ([object()], "result[0]: object is not a wire type"),
    ({"x": complex(1, 2)}, 'result["x"]: complex is not a wire type'),
    ({"s": "\ud800"}, 'result["s"]: str is not valid UTF-8 (a lone surrogate)'),
    ({'we"ird': {1}}, 'result["we\\"ird"]: set is not a wire type'),
]


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
@pytest.mark.parametrize("value,message", BAD, ids=[m for _, m in BAD])
def test_encode_errors_name_the_key_path(impl, value, message):
    with pytest.raises(codec.EncodeError) as info:
        impl.encode(value, "result")
    assert str(info.value) == message


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_payload_bytes_that_look_like_uint64_are_fine(impl):
    # float and str payloads containing 0xcf followed by a high byte are not ints
    value = {"f": float.fromhex("0x1.fcf8000000000p+0"), "s": "\u03cf\u0080"}
    assert impl.encode(value) == codec.STDLIB.encode(value)


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
def test_self_containing_value_is_an_error(impl):
    loop: list = []
    loop.append(loop)
    with pytest.raises(codec.EncodeError):
        impl.encode(loop, "result")


@pytest.mark.parametrize("impl", IMPLS, ids=ids)
@pytest.mark.parametrize("data", [
    b"", b"\x92\x01", b"\xa5abc", b"\xc1", b"\x81\x01\x02", b"\xd4\x09\x00", b"\x01\x02",
    b"\xd6\x01\x00\x00\x00\x00", b"\xc7\x02\x03\xff\xfe",
])
def test_decode_errors(impl, data):
    with pytest.raises(codec.DecodeError):
        impl.decode(data)


def test_select_codec(monkeypatch):
    monkeypatch.setenv("SNAKEPIT_SHIM_CODEC", "stdlib")
    assert codec.select_codec() is codec.STDLIB
    monkeypatch.delenv("SNAKEPIT_SHIM_CODEC")
    expected = codec.MSGPACK if codec.MSGPACK is not None else codec.STDLIB
    assert codec.select_codec() is expected
