"""A package granted the billing connector read-only ([plugins.reports] write = false)."""


def read(*, period, **ctx):
    return ctx["connectors"].sql("billing").run("drafts-for-period", period=period)


def write(*, id, **ctx):
    return ctx["connectors"].sql("billing").run("issue-invoice:write", id=id)


def crm(**ctx):
    return ctx["connectors"].api("crm").call_sync("get-customer", id=1)


def transaction(**ctx):
    with ctx["pools"].get("billing").begin_sync() as conn:
        return conn.execute("SELECT 1 AS one").scalar()


def forbidden(**ctx):
    return ctx["connectors"].sql("billing").run("forbidden-report")


def run_query(*, query, params, **ctx):
    """Any named query with any parameters (for the parameter errors)."""
    try:
        return ctx["connectors"].sql("billing").run(query, **params)
    except Exception as e:  # the test reads the exception's type and message
        return {"type": type(e).__name__, "message": str(e)}


def write_many(*, ids, **ctx):
    return ctx["connectors"].sql("billing").run_many("issue-invoice:write", [{"id": i} for i in ids])
