def run(*, period: str, dry_run: bool = False, **ctx):
    return None
