#!/usr/bin/env bash
# Runs the isolation tests again as an unprivileged user (uid 65534 through setpriv),
# where user namespaces and Landlock are the tools: each setting either holds, or its
# pool refuses to start with a sentence (tests/integration/isolation.rs). Needs root to
# switch users; run by scripts/test.sh after the Rust tests have been built.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
    echo "not root: the isolation tests above already ran unprivileged"
    exit 0
fi
uid=65534
as_user() { setpriv --reuid=$uid --regid=$uid --clear-groups --inh-caps=-all "$@"; }

# An interpreter the unprivileged user can run (a pyenv under /root is private).
python=""
for candidate in "$(command -v python3 || true)" /usr/bin/python3 /usr/local/bin/python3; do
    [ -n "$candidate" ] || continue
    real=$(python3 -c 'import os,sys; print(os.path.realpath(sys.argv[1]))' "$candidate")
    if as_user "$real" -c 'import sys; assert sys.version_info >= (3, 9)' 2>/dev/null; then
        python=$real
        break
    fi
done
if [ -z "$python" ]; then
    echo "no python3 that uid $uid can run (tried PATH, /usr/bin, /usr/local/bin);" \
         "install python3 from the distribution (apt-get install python3)" >&2
    exit 1
fi

# The test binary and the fixture plugins, copied where the user can read them (a
# fresh clone under mktemp -d is private to root).
binary=$(cargo test -p snakepit-tests --test integration --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "integration":
        print(m["executable"])')
stage=$(mktemp -d /tmp/snakepit-unprivileged.XXXXXX)
trap 'rm -rf "$stage"' EXIT
cp "$binary" "$stage/integration"
cp -r tests/plugins "$stage/plugins"
find "$stage/plugins" -name __pycache__ -prune -exec rm -rf {} +
mkdir "$stage/home"
chown -R $uid:$uid "$stage/home"
chmod -R a+rX "$stage"
echo "uid $uid, $python"
# One process per test, as nextest runs them: a pool hardens its whole process (not
# dumpable), which the unconfined test must not inherit from the others.
failed=0
for t in $("$stage/integration" isolation:: --list --format terse | sed -n 's/: test$//p'); do
    if ! as_user env -i PATH=/usr/bin:/bin HOME="$stage/home" TMPDIR=/tmp \
        SNAKEPIT_PYTHON="$python" SNAKEPIT_TEST_PLUGINS="$stage/plugins" \
        "$stage/integration" "$t" --exact --quiet; then
        failed=1
    fi
done
exit $failed
