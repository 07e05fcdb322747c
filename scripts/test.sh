#!/usr/bin/env bash
# Runs every test: the Rust workspace (unit, golden-frame and integration tests, which
# spawn real CPython workers) and the shim's pytest suite, once with the msgpack C
# extension and once with the stdlib codec; then the same under every other CPython from
# 3.9 to 3.13 on the machine (scripts/pythons.sh). Needs only cargo and python3: pytest,
# msgpack and mypy (the plugin API's types are checked with it) go into a venv under
# target/ that this script makes itself (and scripts/pythons.sh one per version);
# `snakepit test`'s tests run pytest with it.
set -euo pipefail
cd "$(dirname "$0")/.."

python=${PYTHON:-python3}
venv=target/pyvenv
if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import pytest, msgpack, mypy' 2>/dev/null; then
    echo "== making $venv (pytest, msgpack, mypy)"
    "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest msgpack mypy
fi

echo "== headless Chromium for the web console's browser tests"
# Debian's packages; the browser tests fail (not skip) without them when CI is set.
if ! command -v chromedriver >/dev/null 2>&1 || ! { command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; }; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "chromium and chromedriver are missing: apt-get install chromium chromium-driver (as root)" >&2
    fi
fi

echo "== database servers"
bash scripts/services.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== rustdoc, warnings denied"
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet

echo "== cargo package, a dry run: each published crate packaged and built against the others' packages, nothing uploaded"
# --allow-dirty: what is checked is the working tree, committed or not.
cargo package --workspace --exclude snakepit-tests --exclude snakepit-benches --allow-dirty --quiet

echo "== Rust tests"
if cargo nextest --version >/dev/null 2>&1; then
    cargo nextest run --workspace --no-fail-fast
    cargo test --workspace --doc
else
    cargo test --workspace --no-fail-fast
fi

echo "== isolation tests as an unprivileged user"
bash scripts/unprivileged.sh

echo "== shim tests (msgpack C extension)"
"$venv/bin/python" -m pytest -q python-shim/tests
echo "== shim tests (stdlib codec)"
SNAKEPIT_SHIM_CODEC=stdlib "$venv/bin/python" -m pytest -q python-shim/tests

echo "== every CPython from 3.9 to 3.13 on this machine"
bash scripts/pythons.sh
