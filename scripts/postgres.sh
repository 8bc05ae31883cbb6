#!/usr/bin/env bash
# A private PostgreSQL server for shared Optuna studies and their tests.
#
#   scripts/postgres.sh start   # install Debian's postgresql if missing, start the server, print its URL
#   scripts/postgres.sh url     # print the SQLAlchemy URL (hydra.sweeper.storage=...)
#   scripts/postgres.sh status  # exit 0 when the server accepts connections
#   scripts/postgres.sh stop    # stop the server (data kept; `start` again resumes it)
#
# The server listens on 127.0.0.1 only, port $CL_SWEEP_PG_PORT (default 55432), keeps its
# data in $CL_SWEEP_PG_DIR (default /tmp/cl_sweep_pg) and has a role and database
# `cl_sweep` (password `cl_sweep`, for loopback connections). It never touches Debian's
# own cluster (port 5432). As root the server runs as the `postgres` OS user (PostgreSQL
# refuses root); as another user it runs as that user (postgresql must then be installed).
# Every command is idempotent and safe to run concurrently (flock). Messages go to stderr,
# the URL alone to stdout: `export CL_SWEEP_TEST_POSTGRES_URL=$(scripts/postgres.sh start)`.
set -euo pipefail

PORT="${CL_SWEEP_PG_PORT:-55432}"
DIR="${CL_SWEEP_PG_DIR:-/tmp/cl_sweep_pg}"
DATA="$DIR/data"
SOCK="$DIR/socket"
LOG="$DIR/server.log"
NAME=cl_sweep  # role, password and database
URL="postgresql+psycopg2://$NAME:$NAME@127.0.0.1:$PORT/$NAME"

say() { echo "postgres.sh: $*" >&2; }
die() { say "error: $*"; exit 1; }

find_bin() {  # newest installed server's bin dir, or nothing
    local d
    d=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
    if [[ -n "$d" && -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; fi
}

as_pg() {  # run a server tool as the postgres OS user when we are root
    if [[ $(id -u) == 0 ]]; then
        (cd / && runuser -u postgres -- "$@")
    else
        (cd / && "$@")
    fi
}

install_postgresql() {
    [[ -n "$(find_bin)" ]] && return 0
    [[ $(id -u) == 0 ]] || die "PostgreSQL is not installed and we are not root; install it with: sudo apt-get install -y postgresql"
    command -v apt-get >/dev/null || die "PostgreSQL is not installed and apt-get is missing (not Debian/Ubuntu); install a PostgreSQL server"
    say "installing Debian's postgresql (apt-get update && apt-get install -y postgresql)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update >&2 || die "apt-get update failed"
    apt-get install -y --no-install-recommends postgresql >&2 || die "apt-get install postgresql failed"
    [[ -n "$(find_bin)" ]] || die "postgresql installed but no /usr/lib/postgresql/*/bin/initdb found"
}

running() {  # the server of $DATA is up
    local bin="$1"
    [[ -f "$DATA/PG_VERSION" ]] && as_pg "$bin/pg_ctl" status -D "$DATA" >/dev/null 2>&1
}

psql_admin() {  # SQL as the superuser over the private unix socket
    local bin="$1"; shift
    as_pg "$bin/psql" -X -q -v ON_ERROR_STOP=1 -h "$SOCK" -p "$PORT" -U postgres -d postgres "$@"
}

start() {
    install_postgresql
    local bin owner major
    bin=$(find_bin)
    major=$(basename "$(dirname "$bin")")
    mkdir -p "$DIR"
    if [[ $(id -u) == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "the postgres OS user is missing (it comes with Debian's postgresql package)"
        chown postgres: "$DIR"
        chmod 700 "$DIR"
        as_pg test -w "$DIR" || die "$DIR is not usable by the postgres user (a parent directory is not searchable by it?); set CL_SWEEP_PG_DIR to a place like /tmp/cl_sweep_pg"
    fi
    owner=$(stat -c %U "$DIR")

    if [[ -f "$DATA/PG_VERSION" && "$(cat "$DATA/PG_VERSION")" != "$major" ]]; then
        die "$DATA holds a PostgreSQL $(cat "$DATA/PG_VERSION") cluster but the installed server is $major; remove $DIR (or set CL_SWEEP_PG_DIR) and start again"
    fi
    if [[ ! -f "$DATA/PG_VERSION" ]]; then
        rm -rf "$DATA"  # an interrupted initdb leaves a partial directory
        say "creating a cluster in $DATA (PostgreSQL $major, owner $owner)"
        as_pg "$bin/initdb" -D "$DATA" -U postgres -E UTF8 --locale=C.UTF-8 \
            --auth-local=trust --auth-host=scram-sha-256 --no-instructions >"$DIR/initdb.log" 2>&1 ||
            { cat "$DIR/initdb.log" >&2; die "initdb failed (log above)"; }
        # loopback only, the port from the environment at each start (see -o below)
        printf "listen_addresses = '127.0.0.1'\nunix_socket_directories = '%s'\nmax_connections = 200\n" "$SOCK" \
            | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
        as_pg mkdir -p "$SOCK"
    fi

    if running "$bin"; then
        local actual
        actual=$(sed -n 4p "$DATA/postmaster.pid" 2>/dev/null || true)
        [[ "$actual" == "$PORT" ]] || die "the server in $DATA is running on port $actual, not $PORT; run '$0 stop' first"
        say "already running on 127.0.0.1:$PORT (data $DATA)"
    else
        say "starting on 127.0.0.1:$PORT (data $DATA, log $LOG)"
        # 9>&-: the server must not inherit (and hold forever) the lock of this script
        if ! as_pg "$bin/pg_ctl" start -D "$DATA" -l "$LOG" -w -t 60 -o "-p $PORT -h 127.0.0.1 -k $SOCK" >&2 9>&-; then
            tail -n 20 "$LOG" >&2 || true
            die "the server did not start (last lines of $LOG above; port $PORT taken? set CL_SWEEP_PG_PORT)"
        fi
        # Who started it (a test run's id, tests/pg_lifetime.py): only that run stops it when it ends.
        printf '%s\n' "${CL_SWEEP_PG_STARTED_BY:-}" > "$DIR/started_by"
    fi

    # role and database, created once
    if [[ -z "$(psql_admin "$bin" -tAc "SELECT 1 FROM pg_roles WHERE rolname = '$NAME'")" ]]; then
        psql_admin "$bin" -c "CREATE ROLE $NAME LOGIN PASSWORD '$NAME'"
    fi
    if [[ -z "$(psql_admin "$bin" -tAc "SELECT 1 FROM pg_database WHERE datname = '$NAME'")" ]]; then
        psql_admin "$bin" -c "CREATE DATABASE $NAME OWNER $NAME"
    fi
    # the URL must work: check it through TCP with the password, as the sweeper will connect
    PGPASSWORD=$NAME as_pg "$bin/psql" -X -q -h 127.0.0.1 -p "$PORT" -U "$NAME" -d "$NAME" -tAc "SELECT 1" >/dev/null ||
        die "the server runs but $NAME@127.0.0.1:$PORT does not accept the password login"
    say "ready: $URL"
    echo "$URL"
}

stop() {
    local bin
    bin=$(find_bin)
    if [[ -z "$bin" || ! -f "$DATA/PG_VERSION" ]] || ! running "$bin"; then
        say "not running (data $DATA)"
        return 0
    fi
    as_pg "$bin/pg_ctl" stop -D "$DATA" -m fast -w -t 60 >&2
    rm -f "$DIR/started_by"
    say "stopped"
}

status() {
    local bin
    bin=$(find_bin)
    if [[ -n "$bin" ]] && running "$bin"; then
        say "running on 127.0.0.1:$(sed -n 4p "$DATA/postmaster.pid") (data $DATA)"
        return 0
    fi
    say "not running (data $DATA)"
    return 1
}

cmd="${1:-}"
case "$cmd" in
    start | stop | status)
        mkdir -p "$(dirname "$DIR")"
        exec 9>"$DIR.lock"  # one start/stop at a time (e.g. two pytest workers starting it)
        flock -w 300 9 || die "timed out waiting for $DIR.lock"
        "$cmd"
        ;;
    url) echo "$URL" ;;
    *) die "usage: $0 start|stop|status|url" ;;
esac
