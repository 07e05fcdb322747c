"""The connector.before_query hook of the fixture install: vetoes the queries whose
name says so, and nothing else."""


def before_query(*, connector, query, package):
    if "forbidden" in query:
        raise PermissionError(f"{package} may not run {query} on {connector}: closed for audit")
