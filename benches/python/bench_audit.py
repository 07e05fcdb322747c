"""The plugin side of the audit benchmark (benches/src/bin/audit.rs)."""

import time


def lookups(*, n, **ctx):
    """A job step that runs the named query "by-id" n times; the nanoseconds it took."""
    billing = ctx["connectors"].sql("billing")
    t0 = time.perf_counter_ns()
    for _ in range(n):
        billing.run("by-id", id=1)
    return {"ns": time.perf_counter_ns() - t0}
