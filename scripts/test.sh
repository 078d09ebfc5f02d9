#!/usr/bin/env bash
# test.sh: Plank's whole test suite.
#
#   setup      scripts/setup.sh (packages, frontend build, make, make install)
#   layers     scripts/callgraph.sh --check: no two source files call each other,
#              directly or through others (docs/ARCHITECTURE.md)
#   regress    pg_regress (make installcheck) on a pg_virtualenv throwaway cluster
#   install    README.md's Installation commands as written, on a fresh cluster
#              (test/install/run.sh), then the README's WebSocket snippet against it
#   cluster    a throwaway cluster in a temp dir with Plank preloaded and demo/items.sql
#   e2e        pytest end-to-end tests (test/e2e) against that cluster's worker
#   browser    node --test test/browser/ (when test/browser/package.json exists)
#   pg14 pg16 pg17 pg18
#              scripts/test-version.sh: the build, pg_regress and the core of the e2e
#              suite on each PostgreSQL version of PLANK_PG_VERSIONS whose install tree
#              is present (../shared/postgresql), the whole e2e suite on
#              PLANK_PG_FULL; skipped, with the reason, where the tree is absent
#
# Every step runs even when an earlier one failed (except after a failed setup or
# cluster start, which the later steps need); the script exits non-zero if any step
# failed and ends with a line "steps: N passed, M failed[, K skipped]".
#
# Environment: PLANK_TEST_PGPORT (default 5499), PLANK_TEST_PORT (Plank's port, default
# 18099), PLANK_REGRESS_PORT (Plank's port under pg_regress, default 18098),
# PYTEST_ARGS (extra pytest arguments, e.g. "-k seq -x"), PLANK_TEST_STEPS (the steps to
# run after the cluster is up, e.g. "e2e client"; default: all of them; a step left out is
# reported as skipped), PLANK_PG_VERSIONS (the other PostgreSQL major versions, default
# "14 16 17 18"; "none": no other), PLANK_PG_FULL (the one of them that runs the whole
# e2e suite, default 18), PLANK_E2E_MODULES (the e2e modules, default test/e2e).
# With PLANK_PGBIN a server other than Debian's 15, pg_regress runs on a temporary
# instance of that server (port PLANK_REGRESS_PGPORT, default 5498) in
# PLANK_BUILD_DIR (the build directory; default: the source tree); PLANK_SKIP_SETUP=1
# skips the setup step (the caller built and installed Plank).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

# PLANK_PGBIN: another PostgreSQL tree (a relocated copy of 15, or another major
# version: scripts/test-version.sh) to build and test against
PGBIN=${PLANK_PGBIN:-/usr/lib/postgresql/15/bin}
PG_CONFIG=$PGBIN/pg_config
PGPORT=${PLANK_TEST_PGPORT:-5499}
PORT=${PLANK_TEST_PORT:-18099}
REGRESS_PORT=${PLANK_REGRESS_PORT:-18098}
DB=plank_test
PY=/usr/bin/python3   # Debian's python3 (pytest, websockets, psycopg2); a pyenv one may shadow it

log() { printf '[test] %s\n' "$*"; }

passed=0
failed=0
skipped=0
summary=()
step_start=$SECONDS
record() {  # record NAME passed|failed|skipped: the step that began at step_start
    case $2 in
        passed) passed=$((passed + 1)) ;;
        failed) failed=$((failed + 1)) ;;
        skipped) skipped=$((skipped + 1)) ;;
    esac
    local took=$((SECONDS - step_start))
    summary+=("$(printf '  %-10s %-7s %3d min %02d s' "$1" "$2" $((took / 60)) $((took % 60)))")
    log "step $1: $2 (${took} s)"
    step_start=$SECONDS
}
finish() {
    stop_cluster
    echo
    log "steps:"
    printf '%s\n' "${summary[@]}"
    if [ "$skipped" -gt 0 ]; then
        printf 'steps: %d passed, %d failed, %d skipped\n' "$passed" "$failed" "$skipped"
    else
        printf 'steps: %d passed, %d failed\n' "$passed" "$failed"
    fi
    if [ "$failed" -eq 0 ]; then exit 0; else exit 1; fi
}

# as_pg
source "$ROOT/scripts/lib.sh"

# What the server reports about Plank's use of its internals fails the run even when
# every test passed: a failed assertion (TRAP, on assertion-enabled builds), a crashed
# process, and the warnings of resource owners, memory contexts, locks and snapshots.
SERVER_LOG_PROBLEMS='TRAP: |terminated by signal|PANIC: |reference leak|refcount leak|memory leak|file leak|resource was not closed|problem in alloc set|detected write past chunk end|you don.t own a lock|non-empty SPI stack|WARNING: +(AbortTransaction|StartTransaction|CommitTransaction)'
check_server_log() {  # check_server_log FILE...
    local found=0
    for f in "$@"; do
        [ -f "$f" ] || continue
        if grep -En "$SERVER_LOG_PROBLEMS" "$f" >/dev/null; then
            log "$f reports:"
            grep -En -B2 -A4 "$SERVER_LOG_PROBLEMS" "$f" | head -n 80
            found=1
        fi
    done
    return $found
}
TMPDIR_TEST=""
DATADIR=""
# Stop the throwaway cluster by its PID file (pg_ctl) and remove its directory.
stop_cluster() {
    if [ -n "$DATADIR" ] && [ -f "$DATADIR/postmaster.pid" ]; then
        log "stopping the test cluster"
        as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m fast -w -t 60 >/dev/null 2>&1 \
            || as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m immediate -w >/dev/null 2>&1 || true
    fi
    if [ -n "$TMPDIR_TEST" ]; then
        rm -rf "$TMPDIR_TEST"
    fi
    return 0
}

# --- setup ----------------------------------------------------------------------------
log "=== setup"
if [ "${PLANK_SKIP_SETUP:-}" = 1 ]; then
    record setup skipped
elif bash scripts/setup.sh; then
    record setup passed
else
    record setup failed
    finish
fi

# Is step $1 selected by PLANK_TEST_STEPS (all are when it is empty)?  A step left out
# is recorded as skipped.
want() {
    if [ -z "${PLANK_TEST_STEPS:-}" ] || [[ " $PLANK_TEST_STEPS " == *" $1 "* ]]; then
        return 0
    fi
    record "$1" skipped
    return 1
}

# A step that is a script of its own: run it if it exists, record the outcome.
script_step() {  # script_step NAME SCRIPT
    [ -f "$2" ] || return 0
    want "$1" || return 0
    log "=== $1: bash $2"
    if bash "$2" </dev/null; then
        record "$1" passed
    else
        record "$1" failed
    fi
}

# --- layers: no cycle between source files --------------------------------------------
if want layers; then
    log "=== layers: bash scripts/callgraph.sh --check"
    if bash scripts/callgraph.sh --check </dev/null; then
        record layers passed
    else
        record layers failed
    fi
fi

# --- pg_regress -----------------------------------------------------------------------
rm -f test/regression.diffs test/regression.out
REGRESS_DIR=${PLANK_BUILD_DIR:-$ROOT}
# pg_regress on a temporary instance of the server in $PGBIN, run by the postgres user
# in the build directory (another major version: scripts/test-version.sh)
regress_temp_instance() {
    local conf=$REGRESS_DIR/regress.conf
    printf "shared_preload_libraries = 'plank'\nplank.port = %s\nplank.listen_addresses = '127.0.0.1'\n" \
        "$REGRESS_PORT" >"$conf"
    chown -R postgres:postgres "$REGRESS_DIR"
    as_pg make -C "$REGRESS_DIR" -f "$ROOT/Makefile" VPATH="$ROOT" PG_CONFIG="$PG_CONFIG" installcheck \
        EXTRA_REGRESS_OPTS="--temp-instance=$REGRESS_DIR/tmp_check --temp-config=$conf --port=${PLANK_REGRESS_PGPORT:-5498}" \
        </dev/null
}
if ! want regress; then
    :
elif [ "$PGBIN" != /usr/lib/postgresql/15/bin ] && [ -n "${PLANK_BUILD_DIR:-}" ]; then
    log "=== regress: pg_regress on a temporary $("$PGBIN/postgres" --version) instance (plank.port $REGRESS_PORT)"
    if regress_temp_instance && check_server_log "$REGRESS_DIR"/test/log/postmaster.log; then
        record regress passed
    else
        if [ -f "$REGRESS_DIR/test/regression.diffs" ]; then
            log "regression.diffs:"
            cat "$REGRESS_DIR/test/regression.diffs"
        fi
        for f in "$REGRESS_DIR"/test/log/postmaster.log "$REGRESS_DIR"/tmp_check/log/*.log; do
            [ -f "$f" ] && { log "last lines of $f:"; tail -n 40 "$f"; }
        done
        record regress failed
    fi
elif log "=== regress: pg_regress on a pg_virtualenv cluster (plank.port $REGRESS_PORT)" && pg_virtualenv -t -v 15 -o shared_preload_libraries=plank -o plank.port="$REGRESS_PORT" \
        -o "plank.listen_addresses='127.0.0.1'" \
        make installcheck PG_CONFIG="$PG_CONFIG" </dev/null; then
    record regress passed
else
    if [ -f test/regression.diffs ]; then
        log "test/regression.diffs:"
        cat test/regression.diffs
    fi
    record regress failed
fi

# README "Installation" as written, on a fresh cluster of its own (the ports of the test
# cluster, before it starts)
script_step install test/install/run.sh

# --- throwaway cluster ----------------------------------------------------------------
step_start=$SECONDS
log "=== cluster: PostgreSQL on 127.0.0.1:$PGPORT, Plank on 127.0.0.1:$PORT"
TMPDIR_TEST=$(mktemp -d /tmp/plank-test.XXXXXX)
DATADIR=$TMPDIR_TEST/data
LOGFILE=$TMPDIR_TEST/server.log

trap stop_cluster EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

chown postgres:postgres "$TMPDIR_TEST" 2>/dev/null || sudo chown postgres:postgres "$TMPDIR_TEST"
chmod 755 "$TMPDIR_TEST"

# Static files: the built frontend when the postgres user can read it, else a copy, else
# a minimal page, so that the HTTP test always has an index.html to fetch.
STATIC=$TMPDIR_TEST/www
if [ -f frontend/dist/index.html ] && as_pg test -r "$ROOT/frontend/dist/index.html"; then
    STATIC=$ROOT/frontend/dist
elif [ -f frontend/dist/index.html ]; then
    mkdir -p "$STATIC" && cp -R frontend/dist/. "$STATIC/"
else
    mkdir -p "$STATIC"
    cat >"$STATIC/index.html" <<'EOF'
<!doctype html>
<html><head><meta charset="utf-8"><title>Plank test page</title></head>
<body><p>Plank test page (frontend/dist is not built).</p></body></html>
EOF
fi
chmod -R a+rX "$TMPDIR_TEST"

cluster_up() {
    as_pg "$PGBIN/initdb" -D "$DATADIR" -A trust -U postgres --encoding=UTF8 \
        --locale=C.UTF-8 -N >"$TMPDIR_TEST/initdb.log" 2>&1 \
        || { cat "$TMPDIR_TEST/initdb.log"; return 1; }
    as_pg tee "$DATADIR/plank.conf" >/dev/null <<EOF || return 1
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$TMPDIR_TEST'
fsync = off
synchronous_commit = off
# test_commit.py checks that PREPARE TRANSACTION refuses a tracked write
max_prepared_transactions = 4
full_page_writes = off
shared_preload_libraries = 'plank'
plank.port = $PORT
# two databases: one worker each, $DB on plank.port, ${DB}2 on plank.port + 1
plank.database = '$DB, ${DB}2'
plank.listen_addresses = '127.0.0.1'
plank.static_dir = '$STATIC'
plank.log_connections = on
# clients without a token act as the superuser here; tests of authentication
# and authorization set plank.anonymous_role themselves
plank.anonymous_role = 'postgres'
# the check workers' login role; clients here may act as the superuser
plank.authenticator = 'plank_authenticator'
plank.allow_privileged_roles = on
plank.jwt_secret = 'plank-test-secret-0123456789abcdef'
EOF
    printf "include_if_exists = 'plank.conf'\n" | as_pg tee -a "$DATADIR/postgresql.conf" >/dev/null \
        || return 1
    as_pg "$PGBIN/pg_ctl" -D "$DATADIR" -l "$LOGFILE" -w -t 60 start >/dev/null || return 1
    local psql=(env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
    # the authenticator (docs/SECURITY.md); tests grant it every role they make
    "${psql[@]}" -d postgres -c "CREATE ROLE plank_authenticator LOGIN NOINHERIT" || return 1
    "${psql[@]}" -d postgres -c "GRANT postgres TO plank_authenticator" || return 1
    "${psql[@]}" -d postgres -c "CREATE DATABASE $DB" || return 1
    "${psql[@]}" -d postgres -c "CREATE DATABASE ${DB}2" || return 1
    "${psql[@]}" -d "$DB" -f demo/items.sql >/dev/null || return 1
    "${psql[@]}" -d "${DB}2" -f demo/items.sql >/dev/null || return 1
    # the worker exits while plank_test is missing and comes back after its restart delay
    local deadline=$((SECONDS + 30))
    while [ $SECONDS -lt $deadline ]; do
        if [ "$("${psql[@]}" -d postgres -c "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'plank'" 2>/dev/null)" = 2 ]; then
            return 0
        fi
        sleep 0.2
    done
    log "the Plank worker did not show up in pg_stat_activity within 30 s"
    return 1
}

if cluster_up; then
    record cluster passed
else
    record cluster failed
    if [ -f "$LOGFILE" ]; then
        log "last lines of $LOGFILE:"
        tail -n 60 "$LOGFILE"
    fi
    finish
fi

export PLANK_PGHOST=127.0.0.1
export PLANK_PGPORT=$PGPORT
export PLANK_DB=$DB
export PLANK_DB2=${DB}2
export PLANK_PORT=$PORT
export PLANK_DATADIR=$DATADIR
export PLANK_PGCTL=$PGBIN/pg_ctl
export PLANK_LOGFILE=$LOGFILE
export PLANK_STATIC=$STATIC
export PLANK_URL=http://127.0.0.1:$PORT/
export PLANK_PSQL="psql -h 127.0.0.1 -p $PGPORT -U postgres -d $DB -v ON_ERROR_STOP=1 -qAt"

# --- pytest ---------------------------------------------------------------------------
if ! want e2e; then
    :
# shellcheck disable=SC2086
elif log "=== e2e: pytest ${PLANK_E2E_MODULES:-test/e2e}" \
        && "$PY" -m pytest -v -p no:cacheprovider ${PLANK_E2E_MODULES:-test/e2e} ${PYTEST_ARGS:-} </dev/null; then
    record e2e passed
else
    record e2e failed
    log "last lines of $LOGFILE:"
    tail -n 60 "$LOGFILE" || true
fi

# --- the server log (check_server_log) ------------------------------------------------
if want serverlog; then
    log "=== serverlog: $LOGFILE"
    if check_server_log "$LOGFILE"; then
        record serverlog passed
    else
        record serverlog failed
    fi
fi

# --- JavaScript client tests (node's test runner, against the same worker) -------------
if [ -f client/package.json ] && want client; then
    log "=== client: node --test client/test/"
    # one file at a time: server.test.mjs ends by restarting the worker
    if npm ci --prefix client --no-audit --no-fund --loglevel=error </dev/null \
            && node --test --test-concurrency=1 client/test/ </dev/null; then
        record client passed
    else
        record client failed
    fi
fi

# benchmark smoke run (seconds; keeps bench/ from rotting)
script_step bench bench/smoke.sh
# Debian package and nginx reverse proxy (builds and installs the .deb)
script_step packaging test/packaging/run.sh
# fuzzing the parsers that see client bytes (bounded time)
script_step fuzz test/fuzz/run.sh
# the e2e suite against an ASan+UBSan build, and a focused part of it under valgrind
script_step sanitize test/sanitize/run.sh

# --- other PostgreSQL major versions (scripts/test-version.sh) --------------------------
# Each runs with its own build, cluster and ports (PLANK_VERSIONS_PGPORT/_PORT) while
# this cluster stays up; a version whose install tree is absent is skipped.
if [ "${PLANK_PG_VERSIONS:-}" != none ]; then
    for v in ${PLANK_PG_VERSIONS:-14 16 17 18}; do
        want "pg$v" || continue
        mode=core
        [ "$v" = "${PLANK_PG_FULL:-18}" ] && mode=full
        step_start=$SECONDS
        log "=== pg$v: bash scripts/test-version.sh $v $mode"
        rc=0
        bash scripts/test-version.sh "$v" "$mode" </dev/null || rc=$?
        case $rc in
            0) record "pg$v" passed ;;
            77) record "pg$v" skipped ;;
            *) record "pg$v" failed ;;
        esac
    done
fi

# --- browser tests --------------------------------------------------------------------
if ! [ -f test/browser/package.json ]; then
    record browser skipped
elif want browser; then
    log "=== browser: node --test test/browser/"
    if npm ci --prefix test/browser --no-audit --no-fund --loglevel=error </dev/null \
            && node --test test/browser/ </dev/null; then
        record browser passed
    else
        record browser failed
    fi
fi

finish
