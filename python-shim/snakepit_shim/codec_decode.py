"""The standard-library MessagePack decoder (``STDLIB.decode`` in ``codec.py``).

It reads one ``bytes`` object with an offset (on frames this small, slicing ``bytes``
then ``.decode()`` beats a ``memoryview`` slice, measured), decodes flat maps and arrays
of scalars in one loop, and has a dedicated envelope for CALL that builds no intermediate
list.
"""

from __future__ import annotations

import struct
from typing import Any, Dict, List, Optional, Tuple

from .codec_base import _S_H, _S_I, _S_i, _S_q, Buffer, DecodeError, decode_ext

_S_Q = struct.Struct(">Q")
_S_b = struct.Struct(">b")
_S_h = struct.Struct(">h")
_S_d = struct.Struct(">d")
_unpack_d = _S_d.unpack_from
_unpack_H = _S_H.unpack_from
_S_f = struct.Struct(">f")


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


def stdlib_decode_call(data: bytes) -> Optional[Tuple[Any, Any, Any, Any, Any]]:
    """The fields of a CALL body ``[1, call_id, reference, kwargs, context, measure]``
    decoded without building the list (the per-call hot path); None when ``data`` does
    not start like a CALL (the caller then decodes it generically)."""
    if len(data) < 7 or data[0] != 0x96 or data[1] != 0x01:
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
        b = data[pos]
        if b == 0xC3 or b == 0xC2:
            measure, pos = b == 0xC3, pos + 1
        else:
            measure, pos = _dec(data, pos)
    except (IndexError, struct.error):
        raise _truncated() from None
    except UnicodeDecodeError as exc:
        raise DecodeError(f"invalid UTF-8 in str: {exc}") from None
    except RecursionError:
        raise DecodeError("value is nested too deeply") from None
    if pos != len(data):
        raise DecodeError(f"{len(data) - pos} trailing bytes after the value")
    return call_id, reference, kwargs, context, measure
