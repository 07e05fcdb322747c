#!/usr/bin/env bash
# Every CPython the shim supports (3.9 to 3.13) that this machine has: for each one, the
# shim's pytest suite once with the stdlib codec (its codec and fuzz tests run both
# codecs whatever the setting, as msgpack is in the venv), and a smoke test of real
# workers, which pick the msgpack C extension: a sync and an async call, a host request,
# a crash and a reload (existing integration tests, run with that interpreter). Run by
# scripts/test.sh after the Rust tests have been built; `bash scripts/pythons.sh --venvs`
# only makes the venvs. The version of `python3` is skipped with a line saying so:
# scripts/test.sh has just run all of this with it (both codecs, every integration test).
#
# Interpreters are looked for in pyenv ($PYENV_ROOT, else ~/.pyenv:
# versions/3.X.*/bin/python3.X), then /usr/bin/python3.X, then python3.X on PATH. A version this machine does not have is
# reported (a MISSING line and the summary), not a failure: the suite promises what the
# machine can run (docs/decisions.md, "Every CPython"). A version that is there and fails
# fails the run. Each version's venv (pytest, msgpack, mypy) is target/pyvenvs/3.X, made once.
set -euo pipefail
cd "$(dirname "$0")/.."

versions=(3.9 3.10 3.11 3.12 3.13)

# The existing integration tests that make the smoke test: a sync and an async call, a
# host request (echo from sync and async code), a crash (exit hard, both launchers) and
# a reload (an edited plugin takes over under load).
smoke='test(=calls::sync_and_async_calls_return_values)
    | test(=host::echo_from_sync_async_and_sync_inside_async)
    | test(/^hostile::exit_hard_is_worker_crashed_and_replaced::/)
    | test(=reload::an_edited_plugin_takes_over_under_load_with_no_failed_call)'

find_python() {
    local v=$1 candidate
    for candidate in $(ls -d "${PYENV_ROOT:-${HOME:-}/.pyenv}"/versions/"$v".*/bin/python"$v" 2>/dev/null | sort -V -r) \
        "/usr/bin/python$v" "$(command -v "python$v" || true)"; do
        if [ -n "$candidate" ] && [ -x "$candidate" ] &&
            "$candidate" -c "import sys; assert '%d.%d' % sys.version_info[:2] == '$v'" 2>/dev/null; then
            echo "$candidate"
            return 0
        fi
    done
    return 1
}

# target/pyvenvs/3.X with pytest, msgpack and mypy (python-shim/tests/test_types.py),
# unless it is there already.
make_venv() {
    local v=$1 python=$2 venv=target/pyvenvs/$1
    if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import pytest, msgpack, mypy' 2>/dev/null; then
        return 0
    fi
    echo "== making $venv from $python (pytest, msgpack, mypy)"
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check pytest msgpack mypy
}

default_version=$(python3 -c 'import platform; print(platform.python_version())')
tested=()
missing=()
declare -A pythons
for v in "${versions[@]}"; do
    if python=$(find_python "$v"); then
        pythons[$v]=$python
        make_venv "$v" "$python"
    else
        echo "== CPython $v: MISSING on this machine (looked in ${PYENV_ROOT:-~/.pyenv}/versions/$v.*, /usr/bin/python$v, PATH); not tested"
        missing+=("$v")
    fi
done
[ "${1:-}" = --venvs ] && exit 0

for v in "${versions[@]}"; do
    [ -n "${pythons[$v]:-}" ] || continue
    venv=target/pyvenvs/$v
    version=$("$venv/bin/python" -c 'import platform; print(platform.python_version())')
    if [ "$version" = "$default_version" ]; then
        echo "== CPython $version: tested above (python3: both shim codecs, every integration test)"
        tested+=("$version")
        continue
    fi
    echo "== CPython $version: shim tests (stdlib codec)"
    SNAKEPIT_SHIM_CODEC=stdlib "$venv/bin/python" -m pytest -q python-shim/tests
    echo "== CPython $version: smoke test of real workers"
    SNAKEPIT_PYTHON="$PWD/$venv/bin/python" cargo nextest run -p snakepit-tests --no-fail-fast \
        --status-level fail -E "$smoke"
    tested+=("$version")
done

echo "== CPython versions tested: ${tested[*]:-none}; missing: ${missing[*]:-none}"
[ ${#tested[@]} -gt 0 ] || { echo "no CPython from ${versions[0]} to ${versions[-1]} found" >&2; exit 1; }
