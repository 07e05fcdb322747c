"""The standard-library MessagePack encoder (``STDLIB.encode`` in ``codec.py``).

Why it is fast: containers encode their common members inline (fixstr, fixint, None,
bool, float) instead of one function call per value; map keys go through a small cache
of their encoded bytes; headers come from precomputed tables and precompiled
``struct.Struct`` objects; output is one ``b"".join``.
"""

from __future__ import annotations

import datetime as _dt
import struct
from decimal import Decimal
from typing import Any, Callable, Dict, List, Tuple, Union

from .codec_base import (
    _EPOCH_NAIVE,
    _EPOCH_ORDINAL,
    _EPOCH_UTC,
    _NOT_UTF8,
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    INT64_MAX,
    INT64_MIN,
    Buffer,
    EncodeError,
    _ext_header,
    _timedelta_micros,
    _type_name,
    decimal_payload,
)

_S_BB = struct.Struct(">BB")
_S_BH = struct.Struct(">BH")
_S_BI = struct.Struct(">BI")
_S_BQ = struct.Struct(">BQ")
_S_Bb = struct.Struct(">Bb")
_S_Bh = struct.Struct(">Bh")
_S_Bi = struct.Struct(">Bi")
_S_Bq = struct.Struct(">Bq")
_S_Bd = struct.Struct(">Bd")
# Complete ext frames for the fixed-size payloads.
_S_EXT_DT_NAIVE = struct.Struct(">BBq")  # 0xd7 fixext8, type 1, micros
_S_EXT_DT_AWARE = struct.Struct(">BBBqi")  # 0xc7 ext8, len 12, type 1, micros, offset
_S_EXT_DATE = struct.Struct(">BBi")  # 0xd6 fixext4, type 2, days

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
