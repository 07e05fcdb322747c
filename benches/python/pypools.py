"""Python's own process pools, measured the way compare.rs measures snakepit.

Prints one JSON object (times in microseconds):
  ppe_submit_p50/p99   ProcessPoolExecutor(2).submit(echo, 1).result(), one at a time
  ppe_map_per_s        list(ProcessPoolExecutor(2).map(echo, range(N))) items per second
  mp_apply_p50/p99     multiprocessing.Pool(2).apply(echo, (1,)), one at a time
  mp_map_per_s         multiprocessing.Pool(2).map(echo, range(N)) items per second

    python pypools.py [--calls 2000] [--map-items 20000]
"""

import argparse
import json
import multiprocessing
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from bench_plugin import echo  # noqa: E402


def pct(samples, q):
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))]


def latency(fn, calls):
    for _ in range(min(200, calls)):  # warm-up: workers started, modules imported
        fn()
    clock = time.perf_counter_ns
    out = []
    for _ in range(calls):
        t = clock()
        fn()
        out.append((clock() - t) / 1000.0)
    return pct(out, 0.50), pct(out, 0.99)


def rate(fn, items):
    fn(range(min(items, 1000)))  # warm-up
    t = time.perf_counter()
    got = fn(range(items))
    dt = time.perf_counter() - t
    assert len(got) == items
    return items / dt


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--map-items", type=int, default=20000)
    a = ap.parse_args()
    res = {}
    with ProcessPoolExecutor(2) as ex:
        res["ppe_submit_p50"], res["ppe_submit_p99"] = latency(
            lambda: ex.submit(echo, 1).result(), a.calls
        )
        res["ppe_map_per_s"] = rate(lambda it: list(ex.map(echo, it)), a.map_items)
    with multiprocessing.Pool(2) as pool:
        res["mp_apply_p50"], res["mp_apply_p99"] = latency(
            lambda: pool.apply(echo, (1,)), a.calls
        )
        res["mp_map_per_s"] = rate(lambda it: pool.map(echo, it), a.map_items)
    res["start_method"] = multiprocessing.get_start_method()
    print(json.dumps(res))


if __name__ == "__main__":
    main()
