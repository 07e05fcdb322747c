"""Typed values through a write query and back through a read query."""


def roundtrip(*, values, **ctx):
    billing = ctx["connectors"].sql("billing")
    written = billing.run("put-types:write", **values)
    return {"written": written, "rows": billing.run("get-types")}
