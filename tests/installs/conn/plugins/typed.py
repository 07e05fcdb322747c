"""Typed values through a write query and back through a read query."""


def roundtrip(*, values, **ctx):
    billing = ctx["connectors"].sql("billing")
    written = billing.run("put-types:write", **values)
    return {"written": written, "rows": billing.run("get-types")}


def put_day(*, day, **ctx):
    """A date template's value, unannotated, into a DATE column and back."""
    billing = ctx["connectors"].sql("billing")
    billing.run("put-day:write", day=day)
    return {"given": type(day).__name__, "rows": billing.run("get-days")}


def put_month(*, day: "date", **ctx):
    """A month template's text, for a `date` parameter, into a DATE column and back."""
    billing = ctx["connectors"].sql("billing")
    billing.run("put-day:write", day=day)
    return {"given": type(day).__name__, "rows": billing.run("get-days")}
