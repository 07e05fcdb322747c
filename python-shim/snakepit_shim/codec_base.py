"""What the shim's two MessagePack codecs share (see ``codec.py``): the :class:`Codec`
interface, the errors, the ext type codes and the int range of the wire, and the ext
payloads (datetime, date, Decimal) with their decoding."""

from __future__ import annotations

import datetime as _dt
import struct
from decimal import Decimal
from typing import Any, Callable, Dict, List, NamedTuple, Union

EXT_DATETIME = 1
EXT_DATE = 2
EXT_DECIMAL = 3

INT64_MIN = -(1 << 63)
INT64_MAX = (1 << 63) - 1

Buffer = Union[bytes, bytearray, memoryview]


class EncodeError(ValueError):
    """A value that cannot cross the wire; ``str()`` names the key path.

    The path is collected while the error unwinds through the containers, so the happy
    path pays nothing for it.
    """

    def __init__(self, reason: str, root: str = "value") -> None:
        super().__init__(reason)
        self.reason = reason
        self.root = root
        self.path: List[Union[str, int]] = []  # innermost last once complete

    def __str__(self) -> str:
        return f"{self.key_path()}: {self.reason}"

    def key_path(self) -> str:
        parts = [self.root]
        for key in reversed(self.path):
            if isinstance(key, str):
                parts.append('["' + key.replace("\\", "\\\\").replace('"', '\\"') + '"]')
            else:
                parts.append(f"[{key}]")
        return "".join(parts)


class DecodeError(ValueError):
    """Bytes that are not one well-formed wire value."""


_NOT_UTF8 = "str is not valid UTF-8 (a lone surrogate)"


def _type_name(v: Any) -> str:
    t = type(v)
    if t.__module__ == "builtins":
        return t.__qualname__
    return f"{t.__module__}.{t.__qualname__}"



# --------------------------------------------------------------------------------------
# Ext payloads (shared by both implementations)
# --------------------------------------------------------------------------------------

_EPOCH_NAIVE = _dt.datetime(1970, 1, 1)
_EPOCH_UTC = _dt.datetime(1970, 1, 1, tzinfo=_dt.timezone.utc)
_EPOCH_ORDINAL = _dt.date(1970, 1, 1).toordinal()
_UTC = _dt.timezone.utc

_S_I = struct.Struct(">I")
_S_H = struct.Struct(">H")
_S_i = struct.Struct(">i")
_S_q = struct.Struct(">q")
_S_qi = struct.Struct(">qi")


def _timedelta_micros(td: _dt.timedelta) -> int:
    return (td.days * 86400 + td.seconds) * 1000000 + td.microseconds


def datetime_payload(v: _dt.datetime) -> bytes:
    """ext 1 payload: 8 bytes (naive) or 12 bytes (aware)."""
    offset = v.utcoffset()
    if offset is None:
        return _S_q.pack(_timedelta_micros(v - _EPOCH_NAIVE))
    if offset.microseconds:
        raise EncodeError(f"datetime UTC offset {offset} has a fraction of a second")
    return _S_qi.pack(
        _timedelta_micros(v - _EPOCH_UTC), offset.days * 86400 + offset.seconds
    )


def date_payload(v: _dt.date) -> bytes:
    return _S_i.pack(v.toordinal() - _EPOCH_ORDINAL)


def decimal_payload(v: Decimal) -> bytes:
    return str(v).encode("ascii")


_TZ_CACHE: Dict[int, _dt.tzinfo] = {0: _UTC}


def _tz(offset_seconds: int) -> _dt.tzinfo:
    tz = _TZ_CACHE.get(offset_seconds)
    if tz is None:
        tz = _dt.timezone(_dt.timedelta(seconds=offset_seconds))
        if len(_TZ_CACHE) < 256:
            _TZ_CACHE[offset_seconds] = tz
    return tz


def decode_ext(code: int, payload: bytes) -> Any:
    """Turn an ext payload back into its Python value (DecodeError on anything else)."""
    try:
        if code == EXT_DATETIME:
            if len(payload) == 8:
                (micros,) = _S_q.unpack(payload)
                return _EPOCH_NAIVE + _dt.timedelta(microseconds=micros)
            if len(payload) == 12:
                micros, offset = _S_qi.unpack(payload)
                utc = _EPOCH_UTC + _dt.timedelta(microseconds=micros)
                return utc.astimezone(_tz(offset))
            raise DecodeError(f"ext 1 (datetime) payload of {len(payload)} bytes")
        if code == EXT_DATE:
            if len(payload) != 4:
                raise DecodeError(f"ext 2 (date) payload of {len(payload)} bytes")
            (days,) = _S_i.unpack(payload)
            return _dt.date.fromordinal(days + _EPOCH_ORDINAL)
        if code == EXT_DECIMAL:
            return Decimal(bytes(payload).decode("ascii"))
    except DecodeError:
        raise
    except (ValueError, OverflowError, ArithmeticError) as exc:
        raise DecodeError(f"ext {code} payload out of range: {exc}") from None
    raise DecodeError(f"unknown ext type {code}")


def _ext_header(code: int, n: int) -> bytes:
    if n == 1:
        return bytes((0xD4, code))
    if n == 2:
        return bytes((0xD5, code))
    if n == 4:
        return bytes((0xD6, code))
    if n == 8:
        return bytes((0xD7, code))
    if n == 16:
        return bytes((0xD8, code))
    if n < 0x100:
        return bytes((0xC7, n, code))
    if n < 0x10000:
        return b"\xc8" + _S_H.pack(n) + bytes((code,))
    return b"\xc9" + _S_I.pack(n) + bytes((code,))


class Codec(NamedTuple):
    """One implementation of the value codec.

    ``encode(value, root)`` returns bytes or raises :class:`EncodeError` naming the path
    below ``root``; ``decode(data)`` returns the value or raises :class:`DecodeError`.
    """

    name: str
    encode: Callable[..., bytes]
    decode: Callable[[Buffer], Any]

