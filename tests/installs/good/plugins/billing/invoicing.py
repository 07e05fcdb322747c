def run(*, period: str, dry_run: bool = False, **ctx):
    return {"period": period, "dry_run": dry_run}


def notify(*, channel: str, recipients: list, run_id, job_id):
    # No **ctx: it declares the context keys it wants and receives only those.
    return None
