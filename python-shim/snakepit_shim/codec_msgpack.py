"""The ``msgpack`` C extension behind the :class:`Codec` interface, when it is importable.

The msgpack C packer accepts two things the wire forbids, non-str map keys and ints in
``(INT64_MAX, UINT64_MAX]``, so its output is accepted only after ``_fits_wire_rules``
walked the containers (no encoding; a C-level ``"".join`` per map checks the keys); on
any doubt the stdlib encoder runs and raises the error that names the key path.
"""

from __future__ import annotations

import datetime as _dt
import threading
from decimal import Decimal
from typing import Any, Optional

from .codec_base import (
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    INT64_MAX,
    Buffer,
    Codec,
    DecodeError,
    date_payload,
    datetime_payload,
    decimal_payload,
    decode_ext,
)
from .codec_encode import stdlib_encode


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
