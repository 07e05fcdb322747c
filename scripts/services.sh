#!/usr/bin/env bash
# Starts the database servers the tests use when they are not running: PostgreSQL on
# 127.0.0.1:5432 (user postgres, trust auth, database `test`) and MariaDB on
# 127.0.0.1:3306 (user root, empty password, database `test`). Fails loudly when one
# cannot be reached afterwards: the tests that need them do not skip.
set -euo pipefail

wait_for() { # name, probe command...
    local name=$1; shift
    for _ in $(seq 1 100); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.1
    done
    echo "error: $name is not reachable; the connector and run-history tests need it" >&2
    return 1
}

if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
    echo "== starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql)" main start
fi
wait_for PostgreSQL pg_isready -q -h 127.0.0.1 -p 5432
psql -h 127.0.0.1 -U postgres -tAc "SELECT 1 FROM pg_database WHERE datname = 'test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -c "CREATE DATABASE test" >/dev/null

if ! mariadb-admin -h 127.0.0.1 -u root status >/dev/null 2>&1; then
    echo "== starting MariaDB"
    start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
fi
wait_for MariaDB mariadb-admin -h 127.0.0.1 -u root status
mariadb -h 127.0.0.1 -u root -e "CREATE DATABASE IF NOT EXISTS test"
