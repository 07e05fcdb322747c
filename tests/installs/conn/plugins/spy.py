"""What a worker can see: its environment, and every reply the supervisor gives it."""

import os


def environment(**ctx):
    return dict(os.environ)


def replies(**ctx):
    seen = []
    for attempt in (
        lambda: ctx["connectors"].sql("billing").run("drafts-for-period", period="2026-05"),
        lambda: ctx["connectors"].sql("billing").run("nope"),
        lambda: ctx["connectors"].sql("billing").run("drafts-for-period"),
        lambda: ctx["connectors"].sql("ledger").run("one"),
        lambda: ctx["connectors"].sql("ledger").run("one", x=1),
        lambda: ctx["connectors"].sql("nowhere").run("one"),
        lambda: ctx["connectors"].api("crm").call_sync("get-customer", id=1),
    ):
        try:
            seen.append(repr(attempt()))
        except Exception as e:
            seen.append(f"{type(e).__name__}: {e}")
    return seen
