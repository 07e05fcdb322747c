"""The plugin every benchmark calls: through a snakepit pool, the raw ping-pong worker
(raw_worker.py) and Python's process pools (pypools.py) alike."""

import os

_ROWS = None


def echo(x=None):
    """The small call: return the argument."""
    return x


def rows(n=10000):
    """A 10,000-row x 5-field result, built once per worker and returned from the cache,
    so that only encoding and transport are measured."""
    global _ROWS
    if _ROWS is None or len(_ROWS) != n:
        _ROWS = make_rows(n)
    return _ROWS


def make_rows(n):
    return [
        {
            "id": i,
            "name": "customer-%d" % i,
            "email": "customer%d@example.com" % i,
            "balance": i * 1.25,
            "active": i % 3 != 0,
        }
        for i in range(n)
    ]


def crash():
    """A worker that dies mid-call without a word."""
    os._exit(13)


def pid():
    return os.getpid()


def codec_name():
    """Which codec this worker's shim chose (msgpack or stdlib)."""
    from snakepit_shim.codec import select_codec

    return select_codec().name
