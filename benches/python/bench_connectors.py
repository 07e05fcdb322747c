"""The plugin side of the connectors benchmark (benches/src/bin/connectors.rs)."""

import time


def query_loop(*, n, id, **ctx):
    """Runs the named query "by-id" n times; the nanoseconds of each round trip."""
    billing = ctx["connectors"].sql("billing")
    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        billing.run("by-id", id=id)
        out.append(clock() - t0)
    return out


def echo_loop(*, n, **ctx):
    """The same loop over the built-in "echo" host method: a host request's floor."""
    from snakepit_shim import host

    out = []
    clock = time.perf_counter_ns
    payload = {"connector": "billing", "query": "by-id", "params": {"id": 1}}
    for _ in range(n):
        t0 = clock()
        host.request("echo", payload)
        out.append(clock() - t0)
    return out


def spin_loop(*, n, us, **ctx):
    """Host requests that the bench's handler answers after spinning ``us`` microseconds
    on the supervisor's thread: what a wait of that length costs the worker."""
    from snakepit_shim import host

    out = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t0 = clock()
        host.request("spin", us)
        out.append(clock() - t0)
    return out
