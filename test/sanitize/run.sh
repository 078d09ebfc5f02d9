#!/usr/bin/env bash
# test/sanitize/run.sh: the end-to-end suite against a Plank built with AddressSanitizer
# and UndefinedBehaviorSanitizer, then a focused part of it with the whole cluster under
# valgrind; fails when either reports an error in Plank's code.
#
#   asan       plank.so built with gcc -fsanitize=address,undefined; the postmaster (not
#              instrumented itself) runs with gcc's libasan (and asan_preload.c) preloaded; the whole of
#              test/e2e runs against it, restarts included; afterwards every ASan/UBSan
#              report is printed, and one with a frame in Plank (plank.so, src/*.c) fails
#   valgrind   plank.so built as usual (with -g); the postmaster runs under valgrind
#              (memcheck; every backend and the worker are forks of it), the e2e tests
#              matching PLANK_VALGRIND_K run; an error or definite leak with a frame in
#              Plank fails (others are printed)
#
# Nothing system-wide is replaced: each variant is installed with DESTDIR into a temp
# dir and the clusters load it from there: dynamic_library_path puts its lib dir first
# (shared_preload_libraries = 'plank', the worker's library) and Debian's
# extension_destdir setting does the same for '$libdir/plank' (the SQL functions) and
# the extension's control and script files.  Other clusters on this machine keep using
# the installed plank.so, and there is no build to restore afterwards.  The clusters are
# throwaway ones in a temp dir (initdb as the postgres user), like scripts/test.sh's,
# stopped on exit.
#
# The e2e tests that stop and restart the server (test_deflate, test_restart,
# test_shutdown) and test_security_tls (a cluster of its own) start postgres through $PLANK_PGCTL, which
# here is a wrapper around pg_ctl: every postmaster it starts or restarts gets
# "-p <wrapper>" (a script that execs postgres with the ASan runtime preloaded, or under
# valgrind) and "-c extension_destdir=...", so restarted servers stay instrumented.
#
# Environment:
#   PLANK_SANITIZE_MODES     "asan valgrind" (default), or one of them; "plain" is a control
#                            run of the same tests with the usual build, no sanitizer
#   PLANK_SANITIZE_PGPORT    PostgreSQL's port (default 5494)
#   PLANK_SANITIZE_PORT      Plank's port (default 18086; the cluster serves two databases,
#                            as scripts/test.sh's does: the second on this port + 1)
#   PLANK_SANITIZE_TLS_PGPORT, PLANK_SANITIZE_TLS_PORT   for test_security_tls's own
#                            cluster (default 5486 and 18084)
#   PLANK_ASAN_K             a pytest -k expression for the ASan (and plain) run (default:
#                            the whole suite)
#   PLANK_ASAN_PYTEST_ARGS   extra pytest arguments for the ASan run (split on spaces)
#   PLANK_VALGRIND_K         pytest -k expression of the valgrind run
#                            (default "changes or channels or errors or resume or jwt or
#                            injection or snapshot": about 175 tests, 5 to 6 minutes)
#   PLANK_ASAN_TIMEOUT, PLANK_VALGRIND_TIMEOUT   bounds of each pytest run in seconds
#                            (default 600 and 720)
#   PLANK_SANITIZE_KEEP=1    keep the work dir (builds, logs, reports)
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$ROOT"

PGBIN=/usr/lib/postgresql/15/bin
PG_CONFIG=$PGBIN/pg_config
PKGLIBDIR=$($PG_CONFIG --pkglibdir)
PGPORT=${PLANK_SANITIZE_PGPORT:-5494}
PORT=${PLANK_SANITIZE_PORT:-18086}
TLS_PGPORT=${PLANK_SANITIZE_TLS_PGPORT:-5486}
TLS_PORT=${PLANK_SANITIZE_TLS_PORT:-18084}
MODES=${PLANK_SANITIZE_MODES:-"asan valgrind"}
VG_K=${PLANK_VALGRIND_K:-"changes or channels or errors or resume or jwt or injection or snapshot"}
ASAN_TIMEOUT=${PLANK_ASAN_TIMEOUT:-600}
VG_TIMEOUT=${PLANK_VALGRIND_TIMEOUT:-720}
SUPP=$ROOT/test/sanitize/valgrind.supp
DB=plank_test
DB2=${DB}2
PY=/usr/bin/python3

log() { printf '[sanitize] %s\n' "$*"; }

# as_pg, as_root
source "$ROOT/scripts/lib.sh"

# --- packages --------------------------------------------------------------------------
PKGS=(postgresql-15 postgresql-server-dev-15 libkrb5-dev libwebsockets-dev libssl-dev pkg-config
      make gcc libgcc-12-dev valgrind python3 python3-pytest python3-websockets python3-psycopg2
      python3-jwt python3-cryptography)
missing=()
for p in "${PKGS[@]}"; do
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || exit 1
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >/dev/null || exit 1
fi
LIBASAN=$(gcc -print-file-name=libasan.so)
if [ ! -e "$LIBASAN" ]; then
    log "gcc has no libasan.so ($LIBASAN)"
    exit 1
fi
LIBASAN=$(readlink -f "$LIBASAN")
if ! $PGBIN/postgres --describe-config 2>/dev/null | grep '^extension_destdir' >/dev/null; then
    log "this PostgreSQL has no extension_destdir (a Debian patch): cannot load a private build"
    exit 1
fi

for p in "$PGPORT" "$PORT" "$((PORT + 1))"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        log "port $p is in use (PLANK_SANITIZE_PGPORT / PLANK_SANITIZE_PORT choose others)"
        exit 1
    fi
done

# --- work dir, sources -----------------------------------------------------------------
WORK=$(mktemp -d /tmp/plank-sanitize.XXXXXX)
chmod 755 "$WORK"
DATADIR=""
CUR_PGCTL=""
stop_cluster() {
    if [ -n "$DATADIR" ] && [ -f "$DATADIR/postmaster.pid" ]; then
        log "stopping the cluster"
        as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m fast -w -t 180 >/dev/null 2>&1 \
            || as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m immediate -w -t 60 >/dev/null 2>&1 || true
    fi
    return 0
}
cleanup() {
    stop_cluster
    if [ "${PLANK_SANITIZE_KEEP:-0}" = 1 ]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# a copy of the sources, so that the builds never touch the work tree's objects
mkdir -p "$WORK/src"
cp -R Makefile plank.control plank--1.0.sql src "$WORK/src/"

STATIC=$WORK/www
mkdir -p "$STATIC"
if [ -f frontend/dist/index.html ]; then
    cp -R frontend/dist/. "$STATIC/"
else
    printf '<!doctype html>\n<html><head><meta charset="utf-8"><title>Plank test page</title></head><body><p>Plank test page.</p></body></html>\n' \
        >"$STATIC/index.html"
fi

# build NAME PG_CFLAGS: a build of plank installed under $WORK/dest-NAME
build() {
    local name=$1 cflags=$2
    log "build $name: PG_CFLAGS=\"$cflags\""
    if ! (cd "$WORK/src" \
            && make clean PG_CONFIG="$PG_CONFIG" \
            && make PG_CONFIG="$PG_CONFIG" PG_CFLAGS="$cflags" \
            && make install PG_CONFIG="$PG_CONFIG" DESTDIR="$WORK/dest-$name") \
            >"$WORK/build-$name.log" 2>&1; then
        tail -n 40 "$WORK/build-$name.log"
        log "build $name failed"
        return 1
    fi
}

# --- clusters --------------------------------------------------------------------------
# cluster_up NAME: initdb, configure, start with $CUR_PGCTL, create the test database
cluster_up() {
    local name=$1 dest=$2
    local dir=$WORK/cluster-$name
    mkdir -p "$dir"
    chown postgres:postgres "$dir"
    DATADIR=$dir/data
    LOGFILE=$dir/server.log
    as_pg "$PGBIN/initdb" -D "$DATADIR" -A trust -U postgres --encoding=UTF8 \
        --locale=C.UTF-8 -N >"$dir/initdb.log" 2>&1 || { cat "$dir/initdb.log"; return 1; }
    as_pg tee -a "$DATADIR/postgresql.conf" >/dev/null <<EOF || return 1
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$dir'
fsync = off
synchronous_commit = off
full_page_writes = off
extension_destdir = '$dest'
dynamic_library_path = '$dest$PKGLIBDIR:\$libdir'
shared_preload_libraries = 'plank'
plank.port = $PORT
plank.database = '$DB, $DB2'
plank.listen_addresses = '127.0.0.1'
plank.static_dir = '$STATIC'
plank.log_connections = on
plank.anonymous_role = 'postgres'
plank.allow_privileged_roles = on
# test_commit's two-phase commit test (as scripts/test.sh)
max_prepared_transactions = 4
plank.jwt_secret = 'plank-test-secret-0123456789abcdef'
EOF
    if [ "$name" = valgrind ]; then
        # fewer processes under valgrind, and room for its slowness
        as_pg tee -a "$DATADIR/postgresql.conf" >/dev/null <<EOF || return 1
autovacuum = off
max_connections = 40
shared_buffers = 32MB
authentication_timeout = 5min
EOF
    fi
    as_pg "$CUR_PGCTL" -D "$DATADIR" -l "$LOGFILE" -w -t 300 start >/dev/null \
        || { tail -n 40 "$LOGFILE"; return 1; }
    local psql=(env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qAt)
    local d
    "${psql[@]}" -d postgres -c "CREATE ROLE plank_authenticator LOGIN NOINHERIT" || return 1
    "${psql[@]}" -d postgres -c "GRANT postgres TO plank_authenticator" || return 1
    for d in "$DB" "$DB2"; do
        "${psql[@]}" -d postgres -c "CREATE DATABASE $d" || return 1
        "${psql[@]}" -d "$d" -f demo/items.sql >/dev/null || return 1
    done
    # one worker per database (each exits while its database is missing and comes back)
    local deadline=$((SECONDS + 180)) wpids="" n=0 wpid
    while [ $SECONDS -lt $deadline ]; do
        wpids=$("${psql[@]}" -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'plank'" 2>/dev/null)
        n=$(printf '%s\n' "$wpids" | grep -c '[0-9]')
        [ "$n" -eq 2 ] && break
        sleep 0.5
    done
    if [ "$n" -ne 2 ]; then
        log "the Plank workers did not start ($n of 2)"; tail -n 40 "$LOGFILE"; return 1
    fi
    for wpid in $wpids; do
        # the workers must run the build under test
        if ! grep -q "$dest/.*plank.so" "/proc/$wpid/maps" 2>/dev/null; then
            log "the worker (pid $wpid) has not loaded $dest's plank.so"; return 1
        fi
        if [ "$name" = asan ] && ! grep -q "libasan" "/proc/$wpid/maps"; then
            log "the worker (pid $wpid) runs without libasan"; return 1
        fi
    done
    log "cluster $name up: PostgreSQL on $PGPORT, Plank on $PORT and $((PORT + 1)), workers" $wpids
}

# run_pytest TIMEOUT ARGS...: the e2e tests against the current cluster
run_pytest() {
    local t=$1
    shift
    (
        export PLANK_PGHOST=127.0.0.1 PLANK_PGPORT=$PGPORT PLANK_DB=$DB PLANK_DB2=$DB2 PLANK_PORT=$PORT
        export PLANK_DATADIR=$DATADIR PLANK_PGCTL=$CUR_PGCTL PLANK_LOGFILE=$LOGFILE
        export PLANK_STATIC=$STATIC PLANK_URL=http://127.0.0.1:$PORT/
        export PLANK_PSQL="psql -h 127.0.0.1 -p $PGPORT -U postgres -d $DB -v ON_ERROR_STOP=1 -qAt"
        export PLANK_TLS_PGPORT=$TLS_PGPORT PLANK_TLS_PORT=$TLS_PORT
        export PYTHONDONTWRITEBYTECODE=1
        timeout -k 30 "$t" "$PY" -m pytest -q -p no:cacheprovider "$@" </dev/null
    )
}

# make_pgctl NAME: $WORK/bin-NAME/pg_ctl, a pg_ctl that starts (and restarts) the
# postmaster through $WORK/bin-NAME/postgres (written by the caller) and with
# extension_destdir=$DEST; pg_ctl itself runs as usual
make_pgctl() {
    local name=$1
    local bin=$WORK/bin-$name
    mkdir -p "$bin"
    ln -sf "$PGBIN/initdb" "$bin/initdb"  # test_security_tls runs initdb from PLANK_PGCTL's dir
    cat >"$bin/pg_ctl" <<EOF
#!/bin/sh
# pg_ctl for test/sanitize ($name): every postmaster it starts runs through
# $bin/postgres and loads plank from the private install $DEST
for a in "\$@"; do
    case \$a in
        start|restart)
            # (pg_ctl hands -o to sh -c: the quotes keep \$libdir for postgres)
            set -- "\$@" -p "$bin/postgres" \\
                -o "-c extension_destdir=$DEST -c 'dynamic_library_path=$DEST$PKGLIBDIR:\\\$libdir'"
            break ;;
    esac
done
exec $PGBIN/pg_ctl "\$@"
EOF
    chmod 755 "$bin" "$bin/pg_ctl" "$bin/postgres"
    CUR_PGCTL=$bin/pg_ctl
}

status=0
summary=()

# --- ASan + UBSan ----------------------------------------------------------------------
run_asan() {
    local reports=$WORK/reports-asan rc plank_reports=0 other_reports=0 f
    mkdir -p "$reports"
    chown postgres:postgres "$reports"
    build asan "-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g" || return 1
    DEST=$WORK/dest-asan
    # see asan_preload.c: without it the postmaster hangs before main()
    gcc -shared -fPIC -O1 -o "$WORK/asan_preload.so" "$ROOT/test/sanitize/asan_preload.c" -ldl || return 1
    chmod 755 "$WORK/asan_preload.so"
    mkdir -p "$WORK/bin-asan"
    cat >"$WORK/bin-asan/postgres" <<EOF
#!/bin/sh
# postgres with gcc's ASan runtime preloaded, for test/sanitize (plank.so is instrumented)
export LD_PRELOAD="$LIBASAN:$WORK/asan_preload.so"
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=0:log_path=$reports/asan"
export UBSAN_OPTIONS="print_stacktrace=1:log_path=$reports/ubsan"
exec $PGBIN/postgres "\$@"
EOF
    make_pgctl asan
    cluster_up asan "$DEST" || return 1
    log "pytest test/e2e (all) against the ASan+UBSan build"
    # shellcheck disable=SC2086
    run_pytest "$ASAN_TIMEOUT" test/e2e ${PLANK_ASAN_K:+-k "$PLANK_ASAN_K"} ${PLANK_ASAN_PYTEST_ARGS:-} 2>&1 | tee "$WORK/pytest-asan.log"
    rc=${PIPESTATUS[0]}
    stop_cluster
    for f in "$reports"/*; do
        [ -f "$f" ] || continue
        if grep -qE 'plank\.so|(^|[^a-z_])src/[a-z_]+\.c|(^|[^a-z_])plank_[a-z_]+' "$f"; then
            plank_reports=$((plank_reports + 1))
            log "REPORT IN PLANK CODE: $(basename "$f")"
        else
            other_reports=$((other_reports + 1))
            log "report without Plank frames (not counted): $(basename "$f")"
        fi
        sed -n '1,80p' "$f"
    done
    summary+=("asan: pytest exit $rc ($(tail -n 1 "$WORK/pytest-asan.log")); reports in Plank code: $plank_reports; other reports: $other_reports")
    [ "$rc" -eq 0 ] && [ "$plank_reports" -eq 0 ]
}

# --- plain (a control run, not in the default modes) ----------------------------------
# The same cluster and tests with the usual build and no sanitizer: tells a test that
# fails under the sanitizers from one that fails anyway.
run_plain() {
    local rc
    build plain "" || return 1
    DEST=$WORK/dest-plain
    mkdir -p "$WORK/bin-plain"
    printf '#!/bin/sh\nexec %s "$@"\n' "$PGBIN/postgres" >"$WORK/bin-plain/postgres"
    make_pgctl plain
    cluster_up plain "$DEST" || return 1
    log "pytest test/e2e against the usual build (control run)"
    # shellcheck disable=SC2086
    run_pytest "$ASAN_TIMEOUT" test/e2e ${PLANK_ASAN_K:+-k "$PLANK_ASAN_K"} ${PLANK_ASAN_PYTEST_ARGS:-} 2>&1 | tee "$WORK/pytest-plain.log"
    rc=${PIPESTATUS[0]}
    stop_cluster
    summary+=("plain: pytest exit $rc ($(tail -n 1 "$WORK/pytest-plain.log"))")
    [ "$rc" -eq 0 ]
}

# --- valgrind --------------------------------------------------------------------------
run_valgrind() {
    local logs=$WORK/reports-valgrind rc
    mkdir -p "$logs"
    chown postgres:postgres "$logs"
    build valgrind "-g -fno-omit-frame-pointer" || return 1
    DEST=$WORK/dest-valgrind
    mkdir -p "$WORK/bin-valgrind"
    cat >"$WORK/bin-valgrind/postgres" <<EOF
#!/bin/sh
# postgres under valgrind for test/sanitize
exec valgrind --tool=memcheck --trace-children=yes --child-silent-after-fork=no \\
    --track-origins=yes --leak-check=full --show-leak-kinds=definite \\
    --errors-for-leak-kinds=definite --num-callers=30 --error-limit=no \\
    --suppressions=$SUPP --gen-suppressions=all \\
    --log-file=$logs/vg.%p.log $PGBIN/postgres "\$@"
EOF
    make_pgctl valgrind
    cluster_up valgrind "$DEST" || return 1
    log "pytest test/e2e -k \"$VG_K\" under valgrind"
    run_pytest "$VG_TIMEOUT" test/e2e -k "$VG_K" 2>&1 | tee "$WORK/pytest-valgrind.log"
    rc=${PIPESTATUS[0]}
    stop_cluster
    local out
    out=$("$PY" "$ROOT/test/sanitize/vgcheck.py" "$logs")
    local vrc=$?
    printf '%s\n' "$out"
    summary+=("valgrind: pytest exit $rc ($(tail -n 1 "$WORK/pytest-valgrind.log")); $(printf '%s\n' "$out" | tail -n 1)")
    [ "$rc" -eq 0 ] && [ "$vrc" -eq 0 ]
}

passed=0
failed=0
for m in $MODES; do
    started=$SECONDS
    case $m in
        asan) run_asan ;;
        valgrind) run_valgrind ;;
        plain) run_plain ;;
        *) log "unknown mode $m"; false ;;
    esac
    rc=$?
    stop_cluster
    DATADIR=""
    if [ $rc -eq 0 ]; then
        passed=$((passed + 1))
        summary+=("$m: passed in $((SECONDS - started))s")
    else
        failed=$((failed + 1))
        summary+=("$m: FAILED in $((SECONDS - started))s")
        PLANK_SANITIZE_KEEP=1
    fi
done

echo
log "summary:"
printf '  %s\n' "${summary[@]}"
printf 'sanitize: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
