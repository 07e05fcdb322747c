"""MessagePack encoding of the wire values (see crates/snakepit-proto/PROTOCOL.md, "Values").

Two implementations sit behind one interface (:class:`Codec`): the ``msgpack`` C extension
when it is importable, and a pure standard-library one. Both produce the same bytes for the
same value; the encoding is canonical: smallest int/str/bin/array/map headers, positive ints
in uint formats (as msgpack-python does), floats always float 64 (``0xcb``), ext 1 datetime,
ext 2 date, ext 3 Decimal. ``SNAKEPIT_SHIM_CODEC=stdlib`` forces the standard-library one.

Timings (CPython 3.11.7 on this project's 2-core VM, ``timeit`` best of 7; rerun with
``python python-shim/tests/bench_codec.py``). "msgpack" is the whole msgpack path as the
shim uses it, including the wire-rule check below; the raw C calls alone are
``unpackb`` 0.88 us + ``Packer.pack`` 0.27 us on the same small frames.

    small CALL frame parse + small RESULT frame build (per call)
        msgpack      3.7 us   (parse 1.7, build 1.7)
        stdlib       5.4 us   (parse 3.7, build 1.4)  = 1.46-1.55x; a naive codec ~14 us
    RESULT of 10,000 rows x 5 fields (688 KB)
        msgpack      encode  8.6 ms   decode  7.0 ms
        stdlib       encode 16.2 ms   decode 33.9 ms
    (CPython 3.9.18, stdlib: small 7.9 us, rows encode 28.9 ms, decode 62.5 ms)

Why the stdlib path is fast: containers encode their common members inline (fixstr,
fixint, None, bool, float) instead of one function call per value; map keys go through a
small cache of their encoded bytes; headers come from precomputed tables and precompiled
``struct.Struct`` objects; output is one ``b"".join``. The decoder reads one ``bytes``
object with an offset (on frames this small, slicing ``bytes`` then ``.decode()`` beats a
``memoryview`` slice, measured), decodes flat maps and arrays of scalars in one loop, and
has a dedicated envelope for CALL that builds no intermediate list.

The msgpack C packer accepts two things the wire forbids, non-str map keys and ints in
``(INT64_MAX, UINT64_MAX]``, so its output is accepted only after ``_fits_wire_rules``
walked the containers (no encoding; a C-level ``"".join`` per map checks the keys); on
any doubt the stdlib encoder runs and raises the error that names the key path.
"""

from __future__ import annotations

import datetime as _dt
import os
import struct
import threading
from decimal import Decimal
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple, Union

__all__ = [
    "Codec",
    "DecodeError",
    "EncodeError",
    "STDLIB",
    "MSGPACK",
    "select_codec",
    "EXT_DATETIME",
    "EXT_DATE",
    "EXT_DECIMAL",
]

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

_S_BB = struct.Struct(">BB")
_S_BH = struct.Struct(">BH")
_S_BI = struct.Struct(">BI")
_S_BQ = struct.Struct(">BQ")
_S_Bb = struct.Struct(">Bb")
_S_Bh = struct.Struct(">Bh")
_S_Bi = struct.Struct(">Bi")
_S_Bq = struct.Struct(">Bq")
_S_Bd = struct.Struct(">Bd")
_S_I = struct.Struct(">I")
_S_H = struct.Struct(">H")
_S_Q = struct.Struct(">Q")
_S_b = struct.Struct(">b")
_S_h = struct.Struct(">h")
_S_i = struct.Struct(">i")
_S_q = struct.Struct(">q")
_S_d = struct.Struct(">d")
_unpack_d = _S_d.unpack_from
_unpack_H = _S_H.unpack_from
_S_f = struct.Struct(">f")
_S_qi = struct.Struct(">qi")
# Complete ext frames for the fixed-size payloads.
_S_EXT_DT_NAIVE = struct.Struct(">BBq")  # 0xd7 fixext8, type 1, micros
_S_EXT_DT_AWARE = struct.Struct(">BBBqi")  # 0xc7 ext8, len 12, type 1, micros, offset
_S_EXT_DATE = struct.Struct(">BBi")  # 0xd6 fixext4, type 2, days


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


# --------------------------------------------------------------------------------------
# Stdlib encoder
# --------------------------------------------------------------------------------------

_FIXINT = [bytes((i,)) for i in range(128)]
_NEGFIX = [bytes((0x100 + i,)) for i in range(-32, 0)]  # index v + 32
_U8 = [bytes((0xCC, i)) for i in range(256)]
_FIXSTR = [bytes((0xA0 | n,)) for n in range(32)]
_FIXARR = [bytes((0x90 | n,)) for n in range(16)]
_FIXMAP = [bytes((0x80 | n,)) for n in range(16)]
_NIL, _FALSE, _TRUE = b"\xc0", b"\xc2", b"\xc3"


def _int(v: int) -> bytes:
    if v >= 0:
        if v < 0x80:
            return _FIXINT[v]
        if v < 0x100:
            return _U8[v]
        if v < 0x10000:
            return _S_BH.pack(0xCD, v)
        if v < 0x100000000:
            return _S_BI.pack(0xCE, v)
        if v <= INT64_MAX:
            return _S_BQ.pack(0xCF, v)
        raise EncodeError(f"int {v} is outside the signed 64-bit range")
    if v >= -32:
        return _NEGFIX[v + 32]
    if v >= -0x80:
        return _S_Bb.pack(0xD0, v)
    if v >= -0x8000:
        return _S_Bh.pack(0xD1, v)
    if v >= -0x80000000:
        return _S_Bi.pack(0xD2, v)
    if v >= INT64_MIN:
        return _S_Bq.pack(0xD3, v)
    raise EncodeError(f"int {v} is outside the signed 64-bit range")


def _str(v: str) -> bytes:
    b = v.encode()
    n = len(b)
    if n < 32:
        return _FIXSTR[n] + b
    if n < 0x100:
        return _S_BB.pack(0xD9, n) + b
    if n < 0x10000:
        return _S_BH.pack(0xDA, n) + b
    return _S_BI.pack(0xDB, n) + b


_KEY_CACHE: Dict[str, bytes] = {}
_KEY_CACHE_MAX = 4096


def _key(k: str) -> bytes:
    """Encoded map key, cached: the same few keys repeat across rows and calls."""
    b = _KEY_CACHE.get(k)
    if b is None:
        try:
            b = _str(k)
        except UnicodeEncodeError:
            raise EncodeError(f"map key {k!r} is not valid UTF-8 (a lone surrogate)") from None
        if len(_KEY_CACHE) >= _KEY_CACHE_MAX:
            _KEY_CACHE.clear()
        _KEY_CACHE[k] = b
    return b


def _bin(v: Buffer) -> bytes:
    b = bytes(v)
    n = len(b)
    if n < 0x100:
        return _S_BB.pack(0xC4, n) + b
    if n < 0x10000:
        return _S_BH.pack(0xC5, n) + b
    return _S_BI.pack(0xC6, n) + b


def _array_header(n: int) -> bytes:
    if n < 16:
        return _FIXARR[n]
    if n < 0x10000:
        return _S_BH.pack(0xDC, n)
    return _S_BI.pack(0xDD, n)


def _map_header(n: int) -> bytes:
    if n < 16:
        return _FIXMAP[n]
    if n < 0x10000:
        return _S_BH.pack(0xDE, n)
    return _S_BI.pack(0xDF, n)


def _datetime(v: _dt.datetime) -> bytes:
    offset = v.utcoffset()
    if offset is None:
        return _S_EXT_DT_NAIVE.pack(0xD7, EXT_DATETIME, _timedelta_micros(v - _EPOCH_NAIVE))
    if offset.microseconds:
        raise EncodeError(f"datetime UTC offset {offset} has a fraction of a second")
    return _S_EXT_DT_AWARE.pack(
        0xC7,
        12,
        EXT_DATETIME,
        _timedelta_micros(v - _EPOCH_UTC),
        offset.days * 86400 + offset.seconds,
    )


def _date(v: _dt.date) -> bytes:
    return _S_EXT_DATE.pack(0xD6, EXT_DATE, v.toordinal() - _EPOCH_ORDINAL)


def _decimal(v: Decimal) -> bytes:
    payload = decimal_payload(v)
    return _ext_header(EXT_DECIMAL, len(payload)) + payload


def _float(v: float) -> bytes:
    return _S_Bd.pack(0xCB, v)


def _pack(v: Any, ap: Callable[[bytes], None]) -> None:
    """Append the encoding of ``v``; containers inline their scalar members."""
    t = type(v)
    if t is dict:
        _pack_map(v, ap)
    elif t is list or t is tuple:
        _pack_array(v, ap)
    else:
        enc = _SCALAR.get(t)
        if enc is None:
            _pack_other(v, ap)
        else:
            ap(enc(v))


def _pack_map(d: Dict[Any, Any], ap: Callable[[bytes], None]) -> None:
    n = len(d)
    ap(_FIXMAP[n] if n < 16 else _map_header(n))
    key_cache = _KEY_CACHE
    for k, v in d.items():
        if type(k) is str:
            kb = key_cache.get(k)
            ap(kb if kb is not None else _key(k))
        elif isinstance(k, str):
            ap(_key(str.__str__(k)))
        else:
            raise EncodeError(f"map key {k!r} ({_type_name(k)}) is not a str")
        t = type(v)
        try:
            if t is str:
                b = v.encode()
                ln = len(b)
                ap((_FIXSTR[ln] + b) if ln < 32 else _str(v))
            elif t is int:
                ap(_FIXINT[v] if 0 <= v < 0x80 else _int(v))
            elif v is None:
                ap(_NIL)
            elif t is bool:
                ap(_TRUE if v else _FALSE)
            elif t is float:
                ap(_S_Bd.pack(0xCB, v))
            elif t is dict:
                _pack_map(v, ap)
            elif t is list or t is tuple:
                _pack_array(v, ap)
            else:
                _pack(v, ap)
        except EncodeError as err:
            err.path.append(k)
            raise
        except UnicodeEncodeError:
            err = EncodeError(_NOT_UTF8)
            err.path.append(k)
            raise err from None


def _pack_array(a: Union[List[Any], Tuple[Any, ...]], ap: Callable[[bytes], None]) -> None:
    n = len(a)
    ap(_FIXARR[n] if n < 16 else _array_header(n))
    i = 0
    try:
        for v in a:
            t = type(v)
            if t is dict:
                _pack_map(v, ap)
            elif t is str:
                ap(_str(v))
            elif t is int:
                ap(_FIXINT[v] if 0 <= v < 0x80 else _int(v))
            elif v is None:
                ap(_NIL)
            elif t is bool:
                ap(_TRUE if v else _FALSE)
            elif t is float:
                ap(_S_Bd.pack(0xCB, v))
            else:
                _pack(v, ap)
            i += 1
    except EncodeError as err:
        err.path.append(i)
        raise
    except UnicodeEncodeError:
        err = EncodeError(_NOT_UTF8)
        err.path.append(i)
        raise err from None


def _pack_other(v: Any, ap: Callable[[bytes], None]) -> None:
    """Subclasses of the wire types (IntEnum, OrderedDict, namedtuple, ...) and errors."""
    if isinstance(v, bool):
        ap(_TRUE if v else _FALSE)
    elif isinstance(v, int):
        ap(_int(int(v)))
    elif isinstance(v, float):
        ap(_float(float(v)))
    elif isinstance(v, str):
        ap(_str(str.__str__(v)))
    elif isinstance(v, (bytes, bytearray, memoryview)):
        ap(_bin(v))
    elif isinstance(v, dict):
        _pack_map(v, ap)
    elif isinstance(v, (list, tuple)):
        _pack_array(v, ap)
    elif isinstance(v, _dt.datetime):
        ap(_datetime(v))
    elif isinstance(v, _dt.date):
        ap(_date(v))
    elif isinstance(v, Decimal):
        ap(_decimal(v))
    else:
        raise EncodeError(f"{_type_name(v)} is not a wire type")


_SCALAR: Dict[type, Callable[[Any], bytes]] = {
    str: _str,
    int: _int,
    float: _float,
    bool: lambda v: _TRUE if v else _FALSE,
    type(None): lambda v: _NIL,
    bytes: _bin,
    bytearray: _bin,
    memoryview: _bin,
    _dt.datetime: _datetime,
    _dt.date: _date,
    Decimal: _decimal,
}


def stdlib_encode(value: Any, root: str = "value") -> bytes:
    """Encode one value; :class:`EncodeError` names the key path under ``root``."""
    out: List[bytes] = []
    try:
        _pack(value, out.append)
    except EncodeError as err:
        err.root = root
        raise
    except UnicodeEncodeError:
        raise EncodeError(_NOT_UTF8, root) from None
    except RecursionError:
        raise EncodeError("value is nested too deeply (or contains itself)", root) from None
    return b"".join(out)


# --------------------------------------------------------------------------------------
# Stdlib decoder
# --------------------------------------------------------------------------------------


def _truncated() -> DecodeError:
    return DecodeError("truncated MessagePack data")


def _dec(data: bytes, pos: int) -> Tuple[Any, int]:
    """Decode one value at ``pos``; returns (value, next position)."""
    b = data[pos]
    pos += 1
    if b < 0x80:
        return b, pos
    if b >= 0xE0:
        return b - 0x100, pos
    if b < 0x90:  # fixmap
        return _dec_map(data, pos, b & 0x0F)
    if b < 0xA0:  # fixarray
        return _dec_array(data, pos, b & 0x0F)
    if b < 0xC0:  # fixstr
        end = pos + (b & 0x1F)
        if end > len(data):
            raise _truncated()
        return data[pos:end].decode(), end
    if b == 0xC0:
        return None, pos
    if b == 0xC2:
        return False, pos
    if b == 0xC3:
        return True, pos
    if b == 0xCB:
        return _S_d.unpack_from(data, pos)[0], pos + 8
    if b == 0xCC:
        return data[pos], pos + 1
    if b == 0xCD:
        return _S_H.unpack_from(data, pos)[0], pos + 2
    if b == 0xCE:
        return _S_I.unpack_from(data, pos)[0], pos + 4
    if b == 0xCF:
        return _S_Q.unpack_from(data, pos)[0], pos + 8
    if b == 0xD0:
        return _S_b.unpack_from(data, pos)[0], pos + 1
    if b == 0xD1:
        return _S_h.unpack_from(data, pos)[0], pos + 2
    if b == 0xD2:
        return _S_i.unpack_from(data, pos)[0], pos + 4
    if b == 0xD3:
        return _S_q.unpack_from(data, pos)[0], pos + 8
    if b == 0xCA:
        return _S_f.unpack_from(data, pos)[0], pos + 4
    if b in (0xD9, 0xDA, 0xDB):
        if b == 0xD9:
            n, pos = data[pos], pos + 1
        elif b == 0xDA:
            n, pos = _S_H.unpack_from(data, pos)[0], pos + 2
        else:
            n, pos = _S_I.unpack_from(data, pos)[0], pos + 4
        end = pos + n
        if end > len(data):
            raise _truncated()
        return data[pos:end].decode(), end
    if b in (0xC4, 0xC5, 0xC6):
        if b == 0xC4:
            n, pos = data[pos], pos + 1
        elif b == 0xC5:
            n, pos = _S_H.unpack_from(data, pos)[0], pos + 2
        else:
            n, pos = _S_I.unpack_from(data, pos)[0], pos + 4
        end = pos + n
        if end > len(data):
            raise _truncated()
        return bytes(data[pos:end]), end
    if b == 0xDC:
        return _dec_array(data, pos + 2, _S_H.unpack_from(data, pos)[0])
    if b == 0xDD:
        return _dec_array(data, pos + 4, _S_I.unpack_from(data, pos)[0])
    if b == 0xDE:
        return _dec_map(data, pos + 2, _S_H.unpack_from(data, pos)[0])
    if b == 0xDF:
        return _dec_map(data, pos + 4, _S_I.unpack_from(data, pos)[0])
    if 0xD4 <= b <= 0xD8:
        n = 1 << (b - 0xD4)
        code = data[pos]
        pos += 1
    elif b == 0xC7:
        n, code = data[pos], data[pos + 1]
        pos += 2
    elif b == 0xC8:
        n, code = _S_H.unpack_from(data, pos)[0], data[pos + 2]
        pos += 3
    elif b == 0xC9:
        n, code = _S_I.unpack_from(data, pos)[0], data[pos + 4]
        pos += 5
    else:
        raise DecodeError(f"invalid MessagePack type byte 0x{b:02x}")
    end = pos + n
    if end > len(data):
        raise _truncated()
    return decode_ext(code, bytes(data[pos:end])), end


def _dec_map(data: bytes, pos: int, n: int) -> Tuple[Dict[str, Any], int]:
    d: Dict[str, Any] = {}
    for _ in range(n):
        b = data[pos]
        if 0xA0 <= b <= 0xBF:  # fixstr key, the common case
            end = pos + 1 + (b & 0x1F)
            k = data[pos + 1 : end].decode()
            pos = end
        else:
            k, pos = _dec(data, pos)
            if type(k) is not str:
                raise DecodeError(f"map key {k!r} is not a str")
        b = data[pos]
        if 0xA0 <= b <= 0xBF:
            end = pos + 1 + (b & 0x1F)
            d[k] = data[pos + 1 : end].decode()
            pos = end
        elif b < 0x80:
            d[k] = b
            pos += 1
        elif b == 0xC0:
            d[k] = None
            pos += 1
        elif b == 0xC2:
            d[k] = False
            pos += 1
        elif b == 0xC3:
            d[k] = True
            pos += 1
        elif b == 0xCB:
            d[k] = _unpack_d(data, pos + 1)[0]
            pos += 9
        elif b == 0xCC:
            d[k] = data[pos + 1]
            pos += 2
        elif b == 0xCD:
            d[k] = _unpack_H(data, pos + 1)[0]
            pos += 3
        else:
            d[k], pos = _dec(data, pos)
    if pos > len(data):
        raise _truncated()
    return d, pos


def _dec_array(data: bytes, pos: int, n: int) -> Tuple[List[Any], int]:
    a: List[Any] = []
    ap = a.append
    for _ in range(n):
        b = data[pos]
        if b < 0x80:
            ap(b)
            pos += 1
        elif 0xA0 <= b <= 0xBF:
            end = pos + 1 + (b & 0x1F)
            ap(data[pos + 1 : end].decode())
            pos = end
        elif 0x80 <= b <= 0x8F:
            v, pos = _dec_map(data, pos + 1, b & 0x0F)
            ap(v)
        elif b == 0xC0:
            ap(None)
            pos += 1
        else:
            v, pos = _dec(data, pos)
            ap(v)
    if pos > len(data):
        raise _truncated()
    return a, pos


def stdlib_decode(data: Buffer) -> Any:
    """Decode exactly one value filling ``data``."""
    if type(data) is not bytes:
        data = bytes(data)
    try:
        b = data[0]
        if 0x90 <= b <= 0x9F:  # a message: skip one dispatch
            value, pos = _dec_array(data, 1, b & 0x0F)
        else:
            value, pos = _dec(data, 0)
    except (IndexError, struct.error):
        raise _truncated() from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in str: {exc}") from None
    except RecursionError:
        raise DecodeError("value is nested too deeply") from None
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing bytes after the value")
    return value


def stdlib_decode_call(data: bytes) -> Optional[Tuple[Any, Any, Any, Any]]:
    """The fields of a CALL body ``[1, call_id, reference, kwargs, context]`` decoded
    without building the list (the per-call hot path); None when ``data`` does not start
    like a CALL (the caller then decodes it generically)."""
    if len(data) < 6 or data[0] != 0x95 or data[1] != 0x01:
        return None
    try:
        b = data[2]
        if b < 0x80:
            call_id, pos = b, 3
        else:
            call_id, pos = _dec(data, 2)
        b = data[pos]
        if 0xA0 <= b <= 0xBF:
            end = pos + 1 + (b & 0x1F)
            reference = data[pos + 1 : end].decode()
            pos = end
        else:
            reference, pos = _dec(data, pos)
        b = data[pos]
        if 0x80 <= b <= 0x8F:
            kwargs, pos = _dec_map(data, pos + 1, b & 0x0F)
        else:
            kwargs, pos = _dec(data, pos)
        b = data[pos]
        if 0x80 <= b <= 0x8F:
            context, pos = _dec_map(data, pos + 1, b & 0x0F)
        else:
            context, pos = _dec(data, pos)
    except (IndexError, struct.error):
        raise _truncated() from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in str: {exc}") from None
    except RecursionError:
        raise DecodeError("value is nested too deeply") from None
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing bytes after the value")
    return call_id, reference, kwargs, context


# --------------------------------------------------------------------------------------
# The interface
# --------------------------------------------------------------------------------------


class Codec(NamedTuple):
    """One implementation of the value codec.

    ``encode(value, root)`` returns bytes or raises :class:`EncodeError` naming the path
    below ``root``; ``decode(data)`` returns the value or raises :class:`DecodeError`.
    """

    name: str
    encode: Callable[..., bytes]
    decode: Callable[[Buffer], Any]


STDLIB = Codec("stdlib", stdlib_encode, stdlib_decode)


def _make_msgpack_codec() -> Optional[Codec]:
    try:
        import msgpack  # type: ignore[import-not-found]
    except ImportError:
        return None
    ExtType = msgpack.ExtType

    def default(v: Any) -> Any:
        # Called for the types the C packer does not know (or, with strict_types, for
        # subclasses of the ones it knows): turn them into what it does.
        if isinstance(v, _dt.datetime):
            return ExtType(EXT_DATETIME, datetime_payload(v))
        if isinstance(v, _dt.date):
            return ExtType(EXT_DATE, date_payload(v))
        if isinstance(v, Decimal):
            return ExtType(EXT_DECIMAL, decimal_payload(v))
        if isinstance(v, bool):
            return bool(v)
        if isinstance(v, int):
            return int(v)
        if isinstance(v, float):
            return float(v)
        if isinstance(v, str):
            return str.__str__(v)
        if isinstance(v, (bytes, bytearray, memoryview)):
            return bytes(v)
        if isinstance(v, dict):
            return dict(v)
        if isinstance(v, (list, tuple)):
            return list(v)
        raise TypeError  # turned into the stdlib path's precise EncodeError below

    packer_opts = dict(use_bin_type=True, strict_types=True, default=default, autoreset=True)
    local = threading.local()  # a Packer is not thread-safe; log frames come from anywhere
    unpackb = msgpack.unpackb

    def ext_hook(code: int, payload: bytes) -> Any:
        return decode_ext(code, payload)

    def encode(value: Any, root: str = "value") -> bytes:
        try:
            packer = local.packer
        except AttributeError:
            packer = local.packer = msgpack.Packer(**packer_opts)
        try:
            data = packer.pack(value)
        except Exception:
            packer.reset()
            return stdlib_encode(value, root)  # raises the precise, path-naming error
        # The C packer also accepts what the wire forbids (non-str map keys, uint64 above
        # the int64 range): check the value, and let the stdlib path name the problem.
        if not _fits_wire_rules(value):
            return stdlib_encode(value, root)
        return data

    def decode(data: Buffer) -> Any:
        try:
            return unpackb(data, raw=False, strict_map_key=True, ext_hook=ext_hook)
        except DecodeError:
            raise
        except Exception as exc:
            raise DecodeError(f"{type(exc).__name__}: {exc}") from None

    return Codec("msgpack", encode, decode)


_LEAVES = frozenset(
    (str, float, bool, type(None), bytes, bytearray, _dt.datetime, _dt.date, Decimal)
)


def _fits_wire_rules(value: Any, depth: int = 0) -> bool:
    """What the C packer does not check: every map key a str, no int above INT64_MAX
    (below INT64_MIN it raises by itself). Walks the tree without encoding anything:
    recursively near the top (the common values: a map of keyword arguments, a message's
    array), with an explicit stack below 32 levels."""
    t = type(value)
    if t in _LEAVES:
        return True
    if t is dict:
        items: Any = value.values()
        for k in value:
            if type(k) is not str:
                return False
    elif t is list or t is tuple:
        items = value
    else:
        return _fits_tree(value)
    for v in items:
        t = type(v)
        if t in _LEAVES:
            continue
        if t is int:
            if v > INT64_MAX:
                return False
        elif not (_fits_wire_rules(v, depth + 1) if depth < 32 else _fits_tree(v)):
            return False
    return True


def _fits_tree(value: Any) -> bool:
    leaves = _LEAVES
    join = "".join
    stack = [value]
    pop = stack.pop
    push = stack.append
    while stack:
        o = pop()
        if isinstance(o, dict):
            try:
                join(o)  # TypeError unless every key is a str
            except TypeError:
                return False
            children = o.values()
        elif isinstance(o, (list, tuple)):
            children = o
        elif isinstance(o, int) and not isinstance(o, bool):
            if o > INT64_MAX:
                return False
            continue
        else:
            continue
        for v in children:
            t = type(v)
            if t in leaves:
                continue
            if t is int:
                if v > INT64_MAX:
                    return False
            else:
                push(v)
    return True


MSGPACK = _make_msgpack_codec()


def select_codec() -> Codec:
    """The msgpack C extension when importable, unless ``SNAKEPIT_SHIM_CODEC=stdlib``."""
    wanted = os.environ.get("SNAKEPIT_SHIM_CODEC", "").strip().lower()
    if wanted == "stdlib" or MSGPACK is None:
        return STDLIB
    return MSGPACK
