"""The seed loop written with run_many (not the demo: what an author who wants more
writes): the drafts, then every `issue-invoice:write` in one host request and one
transaction."""


def run(*, period, **ctx):
    billing = ctx["connectors"].sql("billing")
    drafts = billing.run("drafts-for-period", period=period)
    return billing.run_many("issue-invoice:write", [{"id": d["id"]} for d in drafts])
