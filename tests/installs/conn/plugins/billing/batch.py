"""run_many: every parameter set in one host request and one transaction."""


def issue(*, ids, **ctx):
    return ctx["connectors"].sql("billing").run_many("issue-invoice:write", [{"id": i} for i in ids])


async def drafts(*, periods, **ctx):
    sets = [{"period": p} for p in periods]
    return await ctx["connectors"].sql("billing").run_many_async("drafts-for-period", sets)


def attempt(*, query, sets, **ctx):
    """Any named query with any parameter sets (for the failures)."""
    try:
        return ctx["connectors"].sql("billing").run_many(query, sets)
    except Exception as e:  # the test reads the exception's type and message
        return {"type": type(e).__name__, "message": str(e)}
