"""The seed loop in-process: the in-process baseline of `seedloop` (benches/src/bin/seedloop.rs).

Runs the demo's ``billing.invoicing:run`` (imported unchanged from the directory given
by ``--plugins``) with a small fake ``ctx["connectors"]`` whose
``sql(name).run(query, **params)`` runs the named SQL (the demo's connectors.toml
text, given as JSON) on one connection in autocommit, the way a plugin that talks to
its database itself would: ``sqlite3``, ``psycopg`` (3) or ``PyMySQL``. Rows are dicts,
writes answer ``{"rows_affected": n}``, as through snakepit.

Prints one JSON line: ``{"seconds": <time of run()>, "result": <what run() returned>}``;
connecting and importing are outside the time.

    python seed_inprocess.py --backend sqlite --url /dev/shm/x/billing.db \\
        --plugins examples/liberty-apps/plugins --queries '{"q": "SELECT ..."}' --period 2026-05
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from typing import Any, Callable, Dict

# `:name` outside a `::cast`, as snakepit reads it (the demo's SQL has no literals with
# colons in them).
_PARAM = re.compile(r"(?<!:):([A-Za-z_][A-Za-z0-9_]*)")


def _pyformat(sql: str) -> str:
    return _PARAM.sub(r"%(\1)s", sql.replace("%", "%%"))


class Sql:
    """One connector: its named queries on one autocommit connection."""

    def __init__(self, conn: Any, queries: Dict[str, str], convert: Callable[[str], str]) -> None:
        self.conn = conn
        self.queries = {name: convert(sql) for name, sql in queries.items()}

    def run(self, query: str, /, **params: Any) -> Any:
        cur = self.conn.cursor()
        cur.execute(self.queries[query], params)
        if query.endswith(":write"):
            return {"rows_affected": cur.rowcount}
        return cur.fetchall()


class Connectors:
    def __init__(self, sql: Sql) -> None:
        self._sql = sql

    def sql(self, name: str) -> Sql:
        return self._sql


def _dict_row(cursor: Any, row: tuple) -> dict:
    return dict(zip([c[0] for c in cursor.description], row))


def connect(backend: str, url: str) -> tuple:
    if backend == "sqlite":
        import sqlite3

        conn = sqlite3.connect(url, isolation_level=None)  # autocommit
        conn.row_factory = _dict_row
        return conn, (lambda sql: sql)  # sqlite3 takes :name itself
    if backend == "postgres":
        import psycopg
        from psycopg.rows import dict_row

        return psycopg.connect(url, autocommit=True, row_factory=dict_row), _pyformat
    if backend == "mysql":
        import pymysql
        from pymysql.cursors import DictCursor

        m = re.fullmatch(r"mysql://([^:@/]+)(?::([^@/]*))?@([^:/]+)(?::(\d+))?/(\w+)", url)
        if not m:
            raise SystemExit(f"cannot read the MySQL url {url!r}")
        user, password, host, port, db = m.groups()
        conn = pymysql.connect(host=host, port=int(port or 3306), user=user,
                               password=password or "", database=db, autocommit=True,
                               cursorclass=DictCursor)
        return conn, _pyformat
    raise SystemExit(f"unknown backend {backend!r}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backend", required=True, choices=["sqlite", "postgres", "mysql"])
    ap.add_argument("--url", required=True)
    ap.add_argument("--plugins", required=True)
    ap.add_argument("--queries", required=True, help="JSON: query name -> SQL")
    ap.add_argument("--period", required=True)
    args = ap.parse_args()
    sys.path.insert(0, args.plugins)
    from billing.invoicing import run  # the demo plugin, unchanged

    conn, convert = connect(args.backend, args.url)
    ctx = {"connectors": Connectors(Sql(conn, json.loads(args.queries), convert))}
    start = time.perf_counter()
    result = run(period=args.period, **ctx)
    seconds = time.perf_counter() - start
    conn.close()
    print(json.dumps({"seconds": seconds, "result": result}))


if __name__ == "__main__":
    main()
