#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the job-store tests, from Debian's postgresql package: data, socket and log
# under a temporary directory, listening on 127.0.0.1 only (a free port), trust authentication (loopback only).
# Source it: it exports MEMPLAN_TEST_DATABASE_URL and defines pg_test_stop (which .ci/run traps on exit).
# As root (CI) the server runs as Debian's `postgres` user, since initdb and postgres refuse to run as root.

pg_test_start() {
    if ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
        if [ "$(id -u)" != 0 ]; then
            echo "postgres.sh: install Debian's postgresql package (as root: apt-get install postgresql)" >&2
            return 1
        fi
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
    fi
    PG_TEST_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    PG_TEST_DIR=$(mktemp -d /tmp/memplan-pg.XXXXXX)
    local port user run=()
    port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    user=$(id -un)
    if [ "$(id -u)" = 0 ]; then
        user=postgres
        chown postgres "$PG_TEST_DIR"
        run=(runuser -u postgres --)
    fi
    PG_TEST_RUN=("${run[@]}")
    "${run[@]}" "$PG_TEST_BIN/initdb" -D "$PG_TEST_DIR/data" -U "$user" --auth=trust -E UTF8 >"$PG_TEST_DIR/initdb.log"
    "${run[@]}" "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -l "$PG_TEST_DIR/server.log" -w -o \
        "-c listen_addresses=127.0.0.1 -p $port -k $PG_TEST_DIR -c fsync=off -c full_page_writes=off" start >/dev/null
    "${run[@]}" "$PG_TEST_BIN/createdb" -h 127.0.0.1 -p "$port" -U "$user" memplan_test
    export MEMPLAN_TEST_DATABASE_URL="postgresql+psycopg://$user@127.0.0.1:$port/memplan_test"
    echo "PostgreSQL $("$PG_TEST_BIN/postgres" --version | awk '{print $3}') on 127.0.0.1:$port ($PG_TEST_DIR)"
}

pg_test_stop() {
    if [ -n "${PG_TEST_DIR:-}" ] && [ -d "$PG_TEST_DIR/data" ]; then
        "${PG_TEST_RUN[@]}" "$PG_TEST_BIN/pg_ctl" -D "$PG_TEST_DIR/data" -m fast -w stop >/dev/null || true
        rm -rf "$PG_TEST_DIR"
    fi
}
