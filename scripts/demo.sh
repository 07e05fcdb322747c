#!/usr/bin/env bash
# The demo: builds snakepit and calls the billing example plugins in
# examples/liberty-apps through supervised CPython workers. Needs only cargo and python3.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p snakepit-cli
sp="target/release/snakepit --apps examples/liberty-apps"

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }

step snakepit call billing.pricing:quote --kwargs '{"amount": "100.00", "region": "eu"}'
$sp call billing.pricing:quote --kwargs '{"amount": "100.00", "region": "eu"}'

step snakepit call billing.pricing:quote_many --kwargs '{"amounts": ["19.99", "5"]}'
$sp call billing.pricing:quote_many --kwargs '{"amounts": ["19.99", "5"]}'

step "snakepit call billing.pricing:quote --kwargs '{\"amount\": \"1\", \"region\": \"mars\"}'   # the plugin raises: exit 1"
$sp call billing.pricing:quote --kwargs '{"amount": "1", "region": "mars"}' || echo "(exit status $?)"

step "snakepit call billing.pricing:qoute   # a typo in the reference: exit 2"
$sp call billing.pricing:qoute || echo "(exit status $?)"

step snakepit bench billing.pricing:ping --calls 20000 --workers 2
$sp bench billing.pricing:ping --calls 20000 --workers 2
