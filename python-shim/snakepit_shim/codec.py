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

The modules: ``codec_base`` (the interface, errors, ext payloads), ``codec_encode`` and
``codec_decode`` (the standard-library encoder and decoder; why they are fast is written
there), ``codec_msgpack`` (the C extension, and the wire rules it does not check).
"""

from __future__ import annotations

import os

from .codec_base import (
    EXT_DATE,
    EXT_DATETIME,
    EXT_DECIMAL,
    Codec,
    DecodeError,
    EncodeError,
)
from .codec_decode import stdlib_decode
from .codec_encode import stdlib_encode
from .codec_msgpack import _make_msgpack_codec

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

STDLIB = Codec("stdlib", stdlib_encode, stdlib_decode)

MSGPACK = _make_msgpack_codec()


def select_codec() -> Codec:
    """The msgpack C extension when importable, unless ``SNAKEPIT_SHIM_CODEC=stdlib``."""
    wanted = os.environ.get("SNAKEPIT_SHIM_CODEC", "").strip().lower()
    if wanted == "stdlib" or MSGPACK is None:
        return STDLIB
    return MSGPACK
