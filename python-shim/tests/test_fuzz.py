"""Randomized fuzzing of the shim's read side: the frame buffer and ``protocol.parse``
(both codecs) get the hostile frames of ``fixtures/hostile/``, random bytes, and golden
frames with random edits, and must answer with a message or a ``ProtocolError``: never
another exception, a crash or a hang. Values the encoder writes decode to themselves.

Bounded for CI: ``SNAKEPIT_FUZZ_SECONDS`` (default 1) per randomized test and codec;
the seed is ``SNAKEPIT_FUZZ_SEED`` (default: a new one, printed when a test fails). A
longer run: ``SNAKEPIT_FUZZ_SECONDS=300 python -m pytest -q python-shim/tests/test_fuzz.py``.
A crash found here becomes a fixture (``fixtures/hostile/make.py``).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import time
from decimal import Decimal
from typing import Any, Callable, Iterator, List

import pytest

from conftest import FRAMES, REPO
from snakepit_shim import codec, protocol

HOSTILE = REPO / "fixtures" / "hostile"
IMPLS = [codec.STDLIB] + ([codec.MSGPACK] if codec.MSGPACK is not None else [])
BUDGET = float(os.environ.get("SNAKEPIT_FUZZ_SECONDS", "1"))
SEED = int(os.environ.get("SNAKEPIT_FUZZ_SEED", str(random.SystemRandom().randrange(1 << 32))))
LIMIT = 1 << 20


def bodies(frame: bytes, cut: int = 1 << 30) -> Iterator[bytes]:
    """The bodies a worker's frame buffer cuts out of ``frame`` fed in ``cut``-byte
    pieces; stops at its first ProtocolError."""
    fb = protocol.FrameBuffer(LIMIT)
    for i in range(0, len(frame), cut):
        fb.feed(frame[i : i + cut])
        while True:
            try:
                body = fb.next_frame()
            except protocol.ProtocolError:
                return
            if body is None:
                break
            yield bytes(body)


def parse_or_refuse(body: bytes, impl: codec.Codec) -> None:
    """What the worker does with a frame body: a message, or a ProtocolError."""
    try:
        protocol.parse(body, impl)
    except protocol.ProtocolError:
        pass


def for_a_while(seed_offset: int) -> Iterator[random.Random]:
    rng = random.Random(SEED + seed_offset)
    end = time.monotonic() + BUDGET
    while time.monotonic() < end:
        yield rng


def fuzz(check: Callable[[random.Random], None], seed_offset: int) -> int:
    n = 0
    for rng in for_a_while(seed_offset):
        state = rng.getstate()
        try:
            check(rng)
        except Exception as exc:  # report the input's seed, then fail
            rng.setstate(state)
            raise AssertionError(f"seed {SEED} case {n}: {exc!r}") from exc
        n += 1
    return n


# Values that Python reads as what they are (the Rust decoder refuses them): harmless.
LENIENT = ("to-worker-host-reply-float32.bin", "to-worker-host-reply-uint64-max.bin")


@pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.name)
def test_hostile_fixtures_are_refused(impl: codec.Codec) -> None:
    files = sorted(HOSTILE.glob("*.bin"))
    assert len(files) > 10, "fixtures/hostile is missing"
    for path in files:
        frame = path.read_bytes()
        for body in bodies(frame):
            start = time.monotonic()
            if path.name.startswith("to-worker-") and path.name not in LENIENT:
                with pytest.raises(protocol.ProtocolError):
                    protocol.parse(body, impl)
            else:
                parse_or_refuse(body, impl)
            assert time.monotonic() - start < 2.0, f"{path.name} took long"


def random_bytes(rng: random.Random) -> bytes:
    n = rng.choice([rng.randrange(8), rng.randrange(64), rng.randrange(512)])
    return bytes(rng.getrandbits(8) for _ in range(n))


@pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.name)
def test_random_bodies_parse_or_are_refused(impl: codec.Codec) -> None:
    def check(rng: random.Random) -> None:
        body = random_bytes(rng)
        # Often start like a message, so that the decoder gets past the first byte.
        if body and rng.random() < 0.5:
            body = bytes([0x90 + rng.randrange(6), rng.randrange(6)]) + body
        parse_or_refuse(body, impl)

    assert fuzz(check, 1) > 0


GOLDEN: List[bytes] = [p.read_bytes() for p in sorted(FRAMES.glob("*.bin"))]


def mutate(rng: random.Random, frame: bytes) -> bytes:
    f = bytearray(frame)
    for _ in range(rng.randrange(1, 8)):
        at = rng.randrange(len(f) + 1)
        how = rng.randrange(3)
        if how == 0 and at < len(f):
            f[at] = rng.getrandbits(8)
        elif how == 1:
            del f[at:]
        else:
            f[at:at] = bytes([rng.getrandbits(8)])
    return bytes(f)


@pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.name)
def test_mutated_golden_frames_parse_or_are_refused(impl: codec.Codec) -> None:
    def check(rng: random.Random) -> None:
        frame = mutate(rng, rng.choice(GOLDEN))
        for body in bodies(frame, rng.randrange(1, 64)):
            parse_or_refuse(body, impl)

    assert fuzz(check, 2) > 0


def random_value(rng: random.Random, depth: int = 0) -> Any:
    kinds = 11 if depth < 4 else 9
    k = rng.randrange(kinds)
    if k == 0:
        return None
    if k == 1:
        return rng.random() < 0.5
    if k == 2:
        return rng.randrange(-(1 << 63), 1 << 63)
    if k == 3:
        return rng.uniform(-1e300, 1e300)
    if k == 4:
        return "".join(chr(rng.randrange(0x20, 0x2FF)) for _ in range(rng.randrange(20)))
    if k == 5:
        return bytes(rng.getrandbits(8) for _ in range(rng.randrange(20)))
    if k == 6:
        return dt.date(1970, 1, 1) + dt.timedelta(days=rng.randrange(-700_000, 2_900_000))
    if k == 7:
        naive = dt.datetime(2000, 1, 1) + dt.timedelta(microseconds=rng.randrange(-(10**15), 10**15))
        if rng.random() < 0.5:
            return naive
        return naive.replace(tzinfo=dt.timezone(dt.timedelta(minutes=rng.randrange(-1439, 1440))))
    if k == 8:
        return Decimal(rng.randrange(-(10**12), 10**12)).scaleb(-rng.randrange(6))
    if k == 9:
        return [random_value(rng, depth + 1) for _ in range(rng.randrange(6))]
    return {f"k{rng.randrange(100)}": random_value(rng, depth + 1) for _ in range(rng.randrange(6))}


@pytest.mark.parametrize("impl", IMPLS, ids=lambda c: c.name)
def test_values_round_trip(impl: codec.Codec) -> None:
    def check(rng: random.Random) -> None:
        v = random_value(rng)
        data = impl.encode(v)
        assert impl.decode(data) == v
        assert data == codec.STDLIB.encode(v), "both codecs write the same bytes"

    assert fuzz(check, 3) > 0
