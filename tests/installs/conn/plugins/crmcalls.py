"""The API connector "crm", sync and async; failures come back as data for the test."""

from snakepit_shim import ConnectorError


async def customer(*, id, **ctx):
    return await ctx["connectors"].api("crm").call("get-customer", id=id, expand="orders")


def sync_deal(*, deal_id, amount, **ctx):
    return ctx["connectors"].api("crm").call_sync("sync-deal", deal_id=deal_id, amount=amount)


def failing(*, endpoint, **ctx):
    try:
        return ctx["connectors"].api("crm").call_sync(endpoint, id=7)
    except ConnectorError as e:
        return {"kind": e.kind, "status": getattr(e, "status", None), "body": getattr(e, "body", None), "message": str(e)}
