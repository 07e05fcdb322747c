"""The messages pinned by fixtures/frames/ (shared by make_golden.py and the tests)."""

from datetime import date, datetime, timedelta, timezone
from decimal import Decimal

GOLDEN = [
    ("handshake", [0, 3, 4242, "3.11.7", "stdlib"]),
    ("call-small", [1, 7, "billing.invoicing:run", {"period": "2026-05", "dry_run": False},
                    {"job_id": "j1", "run_id": "r-1"}, True]),
    ("cancel", [2, 7]),
    ("shutdown", [3]),
    ("host-reply-ok", [4, 3, True, {"rows": [1, 2]}]),
    ("host-reply-err", [4, 4, False, ["UnknownMethod", "no handler for 'x'"]]),
    ("validate", [5, 8, "billing.invoicing:run", {"period": "2026-05"}, ["connectors", "run_id"]]),
    ("result-scalars", [16, 7, {
        "none": None, "t": True, "f": False, "i0": 0, "i127": 127, "i128": 128, "i-1": -1,
        "i-33": -33, "i-129": -129, "max": 2**63 - 1, "min": -2**63, "u16": 65535,
        "u32": 4294967295, "float": 1.5, "neg_float": -0.25, "str": "héllo", "empty": "",
        "bytes": b"\x00\xff", "list": [1, "a", None], "nested": {"a": {"b": []}},
    }]),
    ("result-ext", [16, 9, [
        datetime(2026, 5, 1, 12, 30, 45, 123456, tzinfo=timezone(timedelta(hours=2))),
        datetime(2026, 5, 1, 12, 30, 45),
        datetime(2026, 1, 1, tzinfo=timezone.utc),
        date(2026, 5, 1),
        date(1969, 12, 31),
        Decimal("12.50"),
        Decimal("-1E+3"),
        Decimal("NaN"),
    ]]),
    ("result-long", [16, 10, {
        "s8": "x" * 40, "s16": "y" * 300, "b8": bytes(range(200)), "arr16": list(range(20)),
        "map16": {f"k{i:02}": i for i in range(17)},
    }]),
    ("exception", [17, 7, "raised", "ValueError", "bad period",
                   "Traceback (most recent call last):\n  File \"<plugin>\", line 1, in run\n"
                   "ValueError: bad period\n"]),
    ("log", [18, 7, 20, "billing.invoicing", "drafts=3", None, 1780000000.25]),
    ("log-between-calls", [18, None, 30, "stderr", "warning line", "exc text", 1780000000.5]),
    ("host-request", [19, 1, 7, "echo", {"x": 1}]),
    ("usage", [20, 7, 0.25, 0.0625, 70000]),
]

# How README.md shows each message (the notation of the brief).
NOTATION = {
    "handshake": '[0, 3, 4242, "3.11.7", "stdlib"]',
    "call-small": '[1, 7, "billing.invoicing:run", {"period": "2026-05", "dry_run": False}, {"job_id": "j1", "run_id": "r-1"}, True]',
    "cancel": "[2, 7]",
    "shutdown": "[3]",
    "host-reply-ok": '[4, 3, True, {"rows": [1, 2]}]',
    "host-reply-err": '[4, 4, False, ["UnknownMethod", "no handler for \'x\'"]]',
    "validate": '[5, 8, "billing.invoicing:run", {"period": "2026-05"}, ["connectors", "run_id"]]',
    "result-scalars": '[16, 7, {"none": None, "t": True, "f": False, "i0": 0, "i127": 127, "i128": 128, "i-1": -1, "i-33": -33, "i-129": -129, "max": 2**63-1, "min": -2**63, "u16": 65535, "u32": 4294967295, "float": 1.5, "neg_float": -0.25, "str": "héllo", "empty": "", "bytes": b"\\x00\\xff", "list": [1, "a", None], "nested": {"a": {"b": []}}}]',
    "result-ext": '[16, 9, [datetime(2026,5,1,12,30,45,123456,tzinfo=timezone(timedelta(hours=2))), datetime(2026,5,1,12,30,45), datetime(2026,1,1,tzinfo=timezone.utc), date(2026,5,1), date(1969,12,31), Decimal("12.50"), Decimal("-1E+3"), Decimal("NaN")]]',
    "result-long": '[16, 10, {"s8": "x"*40, "s16": "y"*300, "b8": bytes(range(200)), "arr16": list(range(20)), "map16": {f"k{i:02}": i for i in range(17)}}]',
    "exception": '[17, 7, "raised", "ValueError", "bad period", "Traceback (most recent call last):\\n  File \\"<plugin>\\", line 1, in run\\nValueError: bad period\\n"]',
    "log": '[18, 7, 20, "billing.invoicing", "drafts=3", None, 1780000000.25]',
    "log-between-calls": '[18, None, 30, "stderr", "warning line", "exc text", 1780000000.5]',
    "host-request": '[19, 1, 7, "echo", {"x": 1}]',
    "usage": "[20, 7, 0.25, 0.0625, 70000]",
}
