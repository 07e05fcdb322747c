#!/usr/bin/env bash
# The demo: builds snakepit, calls the billing example plugins in examples/liberty-apps
# through supervised CPython workers, then runs the billing job of the framework's
# plugin page (reissue-monthly-drafts) against a sample SQLite database and shows the
# run history. Needs only cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p snakepit-cli
apps=examples/liberty-apps
sp="target/release/snakepit --apps $apps"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step "snakepit call billing.pricing:quote --kwargs '{\"amount\": \"100.00\", \"region\": \"eu\"}'"
$sp call billing.pricing:quote --kwargs '{"amount": "100.00", "region": "eu"}'

step "snakepit call billing.pricing:quote_many --kwargs '{\"amounts\": [\"19.99\", \"5\"]}'"
$sp call billing.pricing:quote_many --kwargs '{"amounts": ["19.99", "5"]}'

step "snakepit call billing.pricing:quote --kwargs '{\"amount\": \"1\", \"region\": \"mars\"}'   # the plugin raises: exit 1"
$sp call billing.pricing:quote --kwargs '{"amount": "1", "region": "mars"}' || echo "(exit status $?)"

step "snakepit call billing.pricing:qoute   # a typo in the reference: exit 2"
$sp call billing.pricing:qoute || echo "(exit status $?)"

step snakepit bench billing.pricing:ping --calls 20000 --workers 2
$sp bench billing.pricing:ping --calls 20000 --workers 2

# Jobs. Sample data: draft invoices for last month (UTC, the install's time zone) in
# examples/liberty-apps/billing.db, the database of connectors.toml's [sql.billing].
step "python3: create $apps/billing.db with draft invoices for last month"
python3 - "$apps/billing.db" <<'PY'
import datetime
import os
import sqlite3
import sys

path = sys.argv[1]
if os.path.exists(path):
    os.remove(path)
today = datetime.datetime.now(datetime.timezone.utc).date()
last = (today.replace(day=1) - datetime.timedelta(days=1)).strftime("%Y-%m")
this = today.strftime("%Y-%m")
db = sqlite3.connect(path)
db.execute(
    "CREATE TABLE invoices (id INTEGER PRIMARY KEY, customer TEXT NOT NULL,"
    " amount TEXT NOT NULL, period TEXT NOT NULL, status TEXT NOT NULL)"
)
db.executemany(
    "INSERT INTO invoices (customer, amount, period, status) VALUES (?, ?, ?, ?)",
    [
        ("ACME", "120.00", last, "draft"),
        ("Globex", "75.50", last, "draft"),
        ("Initech", "310.00", last, "draft"),
        ("Umbrella", "99.00", last, "issued"),
        ("Hooli", "42.00", this, "draft"),
    ],
)
db.commit()
for status, period, n in db.execute(
    "SELECT status, period, count(*) FROM invoices GROUP BY status, period ORDER BY period, status"
):
    print(f"  {n} {status} invoice(s) for {period}")
PY

step "snakepit run reissue-monthly-drafts --user demo   # progress on stderr, the run record (JSON) on stdout"
record=$($sp run reissue-monthly-drafts --user demo) || echo "(exit status $?)"
echo "$record"
id=$(printf '%s' "$record" | python3 -c 'import json, sys; print(json.load(sys.stdin)["id"])')

step "snakepit runs   # the run history, newest first"
$sp runs --limit 5

step "snakepit runs show $id"
$sp runs show "$id"

step "python3: the invoices after the run"
python3 - "$apps/billing.db" <<'PY'
import sqlite3
import sys

db = sqlite3.connect(sys.argv[1])
for status, period, n in db.execute(
    "SELECT status, period, count(*) FROM invoices GROUP BY status, period ORDER BY period, status"
):
    print(f"  {n} {status} invoice(s) for {period}")
PY
