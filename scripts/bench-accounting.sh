#!/usr/bin/env bash
# What per-call accounting costs (issue 15): `snakepit bench` of a trivial plugin
# (billing.pricing:ping, 1 worker, concurrency 1, caller and worker pinned) with two
# snakepit binaries, in interleaved rounds; prints each round's p50 and the median of
# the per-round ratios (new / base). Build the base from the commit before:
#
#   git archive <commit> | tar -x -C /tmp/base && (cd /tmp/base && cargo build --release -p snakepit-cli)
#   bash scripts/bench-accounting.sh /tmp/base/target/release/snakepit target/release/snakepit [ROUNDS] [CALLS]
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1 new=$2 rounds=${3:-15} calls=${4:-20000}
apps=examples/liberty-apps
p50() {
    "$1" --apps "$apps" bench billing.pricing:ping --calls "$calls" --workers 1 --concurrency 1 --json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["p50_us"])'
}
out=$(for r in $(seq "$rounds"); do
    if (( r % 2 )); then b=$(p50 "$base"); n=$(p50 "$new"); else n=$(p50 "$new"); b=$(p50 "$base"); fi
    echo "$r $b $n"
done)
echo "round base_p50_us new_p50_us"
echo "$out"
python3 - "$out" <<'PY'
import statistics, sys
rows = [tuple(map(float, l.split()[1:])) for l in sys.argv[1].splitlines()]
base, new = [b for b, _ in rows], [n for _, n in rows]
ratios = [n / b for b, n in rows]
print(f"median p50: base {statistics.median(base):.1f} us, new {statistics.median(new):.1f} us; "
      f"median of per-round ratios {statistics.median(ratios):.3f} "
      f"(min {min(ratios):.3f}, max {max(ratios):.3f}, {len(rows)} rounds)")
PY
