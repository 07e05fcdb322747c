"""Codec timings (not a test): ``python python-shim/tests/bench_codec.py``.

Measures, for each available codec, what a worker does per call: parse a small CALL frame
body and build a small RESULT body; then encode and decode a 10,000-row x 5-field result.
"""

from __future__ import annotations

import sys
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from snakepit_shim import codec, protocol  # noqa: E402

CALL = protocol.build_call(7, "billing.invoicing:run", {"period": "2026-05", "dry_run": False},
                           {"job_id": "j1", "run_id": "r-1"}, codec.STDLIB)
RESULT = {"issued": 3, "period": "2026-05", "skipped": 0}
ROWS = [{"id": i, "customer": f"customer-{i}", "amount": i * 1.25, "period": "2026-05",
         "issued": bool(i % 2)} for i in range(10_000)]


def best(fn, number: int, repeat: int = 7) -> float:
    return min(timeit.repeat(fn, number=number, repeat=repeat)) / number


def main() -> None:
    impls = [c for c in (codec.MSGPACK, codec.STDLIB) if c is not None]
    small = {}
    for c in impls:
        def small_call(c=c):
            protocol.parse(CALL, c)
            protocol.build_result(7, RESULT, c)
        small[c.name] = best(small_call, 20_000)
        dec = best(lambda c=c: protocol.parse(CALL, c), 20_000)
        enc = best(lambda c=c: protocol.build_result(7, RESULT, c), 20_000)
        print(f"{c.name:8} small CALL parse + RESULT build: {small[c.name] * 1e6:6.2f} us"
              f"  (parse {dec * 1e6:.2f} us, build {enc * 1e6:.2f} us)")
    for c in impls:
        data = c.encode(ROWS)
        enc = best(lambda c=c: c.encode(ROWS), 5, 5)
        dec = best(lambda c=c, data=data: c.decode(data), 5, 5)
        print(f"{c.name:8} 10,000 rows x 5 fields ({len(data)} bytes):"
              f" encode {enc * 1e3:6.2f} ms, decode {dec * 1e3:6.2f} ms")
    if len(small) == 2:
        print(f"stdlib / msgpack on the small call: {small['stdlib'] / small['msgpack']:.2f}x")


if __name__ == "__main__":
    main()
