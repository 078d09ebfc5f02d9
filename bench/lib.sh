# lib.sh: shared by bench/run.sh and bench/smoke.sh (source it; bash only).
#
# bench_deps            install what the tools need when it is missing (Debian)
# bench_build           make -C bench
# bench_cluster_up      a throwaway PostgreSQL 15 cluster with Plank preloaded, in a temp
#                       dir, as the postgres user, listening on 127.0.0.1 only:
#                       PG on $BENCH_PGPORT, Plank on $BENCH_PORT, database $BENCH_DB
#                       with the bench tables; sets BENCH_TMP, BENCH_DATADIR, BENCH_LOG
# bench_cluster_down    stop it by its PID file (pg_ctl stop) and remove the temp dir
# bench_psql ...        psql on the bench database
# bench_worker_pid      PID of one Plank worker of the bench database (pg_stat_activity)
# bench_worker_pids     PIDs of every Plank worker of the bench database, space-separated
# bench_wait_workers N  wait until N workers are in pg_stat_activity and N sockets listen
#                       on $BENCH_PORT
# bench_restart         stop the cluster by its data dir and start it again (for
#                       postmaster settings: ALTER SYSTEM first), then wait for the workers
# bench_set_workers N [MAX_CONN]  plank.workers = N (and plank.max_connections = MAX_CONN
#                       when given), with a restart when it changes anything (always
#                       with BENCH_FORCE_RESTART=1: fresh workers); N = 1 is a no-op
#                       with a build that has no plank.workers
# bench_reset_table     TRUNCATE bench_events RESTART IDENTITY (ids start at 1 again)
#
# Server settings (printed by bench_settings): fsync = off, synchronous_commit = off,
# full_page_writes = off (a throwaway cluster; commits do not wait for the disk, as in
# the NOTIFY floors of shared/DESIGN.md), max_connections = 250, max_worker_processes =
# $BENCH_MAX_WORKER_PROCESSES (72: room for plank.workers up to 64), plank.workers =
# $BENCH_WORKERS (1); the server's soft open-file limit is raised to the hard limit
# (ulimit -n) before it starts.

BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)}
PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
BENCH_PGPORT=${BENCH_PGPORT:-5498}
BENCH_PORT=${BENCH_PORT:-18096}
BENCH_DB=${BENCH_DB:-plank_bench}
BENCH_WORKERS=${BENCH_WORKERS:-1}
BENCH_MAX_WORKER_PROCESSES=${BENCH_MAX_WORKER_PROCESSES:-72}
BENCH_MAX_CONNECTIONS=${BENCH_MAX_CONNECTIONS:-20000}   # plank.max_connections (per worker)
BENCH_TMP=""
BENCH_DATADIR=""
BENCH_LOG=""

blog() { printf '[bench] %s\n' "$*" >&2; }

# as_pg, as_root
source "$BENCH_DIR/../scripts/lib.sh"

bench_deps() {
    local missing=()
    command -v gcc >/dev/null || missing+=(gcc)
    command -v make >/dev/null || missing+=(make)
    command -v pkg-config >/dev/null || missing+=(pkg-config)
    command -v pgbench >/dev/null || [ -x "$PGBIN/pgbench" ] || missing+=(postgresql-15)
    if command -v pkg-config >/dev/null; then
        pkg-config --exists libwebsockets || missing+=(libwebsockets-dev)
        pkg-config --exists libpq || missing+=(libpq-dev)
        pkg-config --exists json-c || missing+=(libjson-c-dev)
    else
        missing+=(libwebsockets-dev libpq-dev libjson-c-dev)
    fi
    [ -f /usr/include/ev.h ] || missing+=(libev-dev)
    if [ ${#missing[@]} -gt 0 ]; then
        blog "installing ${missing[*]}"
        as_root apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
    fi
    if [ ! -f "$PGBIN/../lib/plank.so" ]; then
        blog "plank.so is not installed in $PGBIN/../lib: build and install the extension first (scripts/setup.sh)"
        return 1
    fi
}

bench_build() {
    make -s -C "$BENCH_DIR" all
}

bench_psql() {
    env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -h 127.0.0.1 -p "$BENCH_PGPORT" \
        -U postgres -v ON_ERROR_STOP=1 -qAt -d "$BENCH_DB" "$@"
}

bench_settings() {
    echo "fsync=off synchronous_commit=off full_page_writes=off max_connections=250 shared_buffers=256MB autovacuum=off max_worker_processes=$BENCH_MAX_WORKER_PROCESSES plank.workers=$(bench_psql -c 'SHOW plank.workers' 2>/dev/null || echo NA) plank.max_connections=$(bench_psql -c 'SHOW plank.max_connections' 2>/dev/null || echo NA); server open files: soft limit raised to $(as_pg bash -c 'ulimit -H -n')"
}

# bench_has_setting NAME: the installed plank.so knows the setting
bench_has_setting() {
    grep -q "$1" "$PGBIN/../lib/plank.so" 2>/dev/null
}

# start the postmaster with the soft open-file limit raised to the hard limit
bench_pg_start() {
    # The postmaster (and so the Plank worker) inherits the soft open-file limit, 1024
    # for the postgres user under runuser: raise it to the hard limit, or a worker
    # that does not raise it itself cannot accept more than about 1,000 clients.
    as_pg bash -c 'ulimit -S -n "$(ulimit -H -n)" && exec "$@"' pg_ctl \
        "$PGBIN/pg_ctl" -D "$BENCH_DATADIR" -l "$BENCH_LOG" -w -t 60 start >/dev/null || {
        tail -n 30 "$BENCH_LOG" >&2
        return 1
    }
}

bench_cluster_up() {
    BENCH_TMP=$(mktemp -d /tmp/plank-bench.XXXXXX)
    BENCH_DATADIR=$BENCH_TMP/data
    BENCH_LOG=$BENCH_TMP/server.log
    as_root chown postgres:postgres "$BENCH_TMP"
    chmod 755 "$BENCH_TMP"
    mkdir -p "$BENCH_TMP/www"
    echo '<!doctype html><title>plank bench</title>' >"$BENCH_TMP/www/index.html"
    chmod -R a+rX "$BENCH_TMP/www"

    as_pg "$PGBIN/initdb" -D "$BENCH_DATADIR" -A trust -U postgres --encoding=UTF8 \
        --locale=C.UTF-8 -N >"$BENCH_TMP/initdb.log" 2>&1 \
        || { cat "$BENCH_TMP/initdb.log" >&2; return 1; }
    as_pg tee "$BENCH_DATADIR/plank-bench.conf" >/dev/null <<EOF || return 1
listen_addresses = '127.0.0.1'
port = $BENCH_PGPORT
unix_socket_directories = '$BENCH_TMP'
fsync = off
synchronous_commit = off
full_page_writes = off
max_connections = 250
shared_buffers = 256MB
max_wal_size = 4GB
checkpoint_timeout = 30min
autovacuum = off
max_worker_processes = $BENCH_MAX_WORKER_PROCESSES
shared_preload_libraries = 'plank'
plank.port = $BENCH_PORT
plank.database = '$BENCH_DB'
plank.listen_addresses = '127.0.0.1'
plank.static_dir = '$BENCH_TMP/www'
EOF
    if bench_has_setting plank.workers; then
        echo "plank.workers = $BENCH_WORKERS" | as_pg tee -a "$BENCH_DATADIR/plank-bench.conf" >/dev/null || return 1
    elif [ "$BENCH_WORKERS" != 1 ]; then
        blog "the installed plank.so has no plank.workers: BENCH_WORKERS=$BENCH_WORKERS is ignored"
    fi
    printf "include_if_exists = 'plank-bench.conf'\n" | as_pg tee -a "$BENCH_DATADIR/postgresql.conf" >/dev/null \
        || return 1
    bench_pg_start || return 1
    BENCH_DB=postgres bench_psql -c "CREATE DATABASE $BENCH_DB" || return 1
    bench_psql >/dev/null <<'EOF' || return 1
CREATE EXTENSION plank;
-- tracked by Plank
CREATE TABLE bench_events (id bigserial PRIMARY KEY, ts_us bigint, payload text);
SELECT plank.track('public.bench_events');
-- the same table, untracked (writer cost baseline)
CREATE TABLE bench_plain (id bigserial PRIMARY KEY, ts_us bigint, payload text);
-- the same table with the cheapest NOTIFY capture there is (writer cost floor):
-- a plpgsql row trigger sending row_to_json(NEW) on channel bench_floor
CREATE TABLE bench_notify (id bigserial PRIMARY KEY, ts_us bigint, payload text);
CREATE FUNCTION bench_notify_row() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('bench_floor', row_to_json(NEW)::text);
    RETURN NULL;
END $$;
CREATE TRIGGER bench_notify_row AFTER INSERT ON bench_notify
    FOR EACH ROW EXECUTE FUNCTION bench_notify_row();
-- tracked, with row-level security for every reader (a policy that passes every row,
-- so that each client expects each row): the cost of the checks per change
CREATE TABLE bench_rls (id bigserial PRIMARY KEY, ts_us bigint, payload text);
SELECT plank.track('public.bench_rls');
ALTER TABLE bench_rls ENABLE ROW LEVEL SECURITY;
CREATE POLICY bench_all ON bench_rls FOR SELECT USING (id > 0);
EOF
    # Settings of newer builds (a build without them would warn about unknown plank.*
    # names): the bench clients connect without a token, as role plank_bench_reader,
    # and the 10,000-client scenario must not hit plank.max_connections.
    if bench_has_setting plank.anonymous_role; then
        bench_psql -c "CREATE ROLE plank_bench_reader" \
            -c "GRANT SELECT ON bench_events, bench_plain, bench_notify, bench_rls TO plank_bench_reader" \
            -c "CREATE ROLE plank_authenticator LOGIN NOINHERIT" \
            -c "GRANT plank_bench_reader TO plank_authenticator" \
            -c "ALTER SYSTEM SET plank.anonymous_role = 'plank_bench_reader'" || return 1
    fi
    if bench_has_setting plank.max_connections; then
        bench_psql -c "ALTER SYSTEM SET plank.max_connections = $BENCH_MAX_CONNECTIONS" || return 1
    fi
    bench_psql -c "SELECT pg_reload_conf()" >/dev/null || return 1
    # the workers exit while the database is missing and come back a second later
    bench_wait_workers "$BENCH_WORKERS"
}

# bench_wait_workers N: N workers of the bench database in pg_stat_activity, and N
# sockets listening on the Plank port (SO_REUSEPORT: the kernel spreads connections
# only over the sockets that are listening, so a client must not start before all are)
bench_wait_workers() {
    local n=$1 deadline=$((SECONDS + 60)) have=0 socks=0
    bench_has_setting plank.workers || n=1
    while [ $SECONDS -lt $deadline ]; do
        have=$(bench_worker_pids | wc -w)
        socks=$(ss -Hltn "sport = :$BENCH_PORT" 2>/dev/null | wc -l)
        if [ "$have" -ge "$n" ] && { [ "$socks" -ge "$n" ] || ! command -v ss >/dev/null; }; then
            return 0
        fi
        sleep 0.2
    done
    blog "$have of $n Plank workers in pg_stat_activity, $socks sockets listening on $BENCH_PORT after 60 s"
    tail -n 30 "$BENCH_LOG" >&2
    return 1
}

bench_restart() {
    as_pg "$PGBIN/pg_ctl" -D "$BENCH_DATADIR" stop -m fast -w -t 60 >/dev/null || return 1
    bench_pg_start || return 1
    bench_wait_workers "$(bench_psql -c 'SHOW plank.workers' 2>/dev/null || echo 1)"
}

# bench_set_workers N [MAX_CONN]
bench_set_workers() {
    local n=$1 maxconn=${2:-} cur=1 curmax
    if bench_has_setting plank.workers; then
        cur=$(bench_psql -c 'SHOW plank.workers') || return 1
    elif [ "$n" != 1 ]; then
        blog "the installed plank.so has no plank.workers"
        return 1
    fi
    curmax=$(bench_psql -c 'SHOW plank.max_connections' 2>/dev/null || echo "")
    if [ "$cur" = "$n" ] && { [ -z "$maxconn" ] || [ "$curmax" = "$maxconn" ]; } &&
            [ "${BENCH_FORCE_RESTART:-0}" != 1 ]; then
        return 0
    fi
    if [ "$cur" != "$n" ]; then
        bench_psql -c "ALTER SYSTEM SET plank.workers = $n" || return 1
    fi
    if [ -n "$maxconn" ] && [ "$curmax" != "$maxconn" ]; then
        bench_psql -c "ALTER SYSTEM SET plank.max_connections = $maxconn" || return 1
    fi
    blog "restarting the cluster: plank.workers = $n${maxconn:+, plank.max_connections = $maxconn}"
    bench_restart || return 1
    local got
    got=$(bench_psql -c 'SHOW plank.workers' 2>/dev/null || echo 1)
    [ "$got" = "$n" ] || { blog "plank.workers is $got after the restart, not $n"; return 1; }
}

bench_cluster_down() {
    if [ -n "$BENCH_DATADIR" ] && [ -f "$BENCH_DATADIR/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$BENCH_DATADIR" stop -m fast -w -t 60 >/dev/null 2>&1 \
            || as_pg "$PGBIN/pg_ctl" -D "$BENCH_DATADIR" stop -m immediate -w >/dev/null 2>&1 || true
    fi
    if [ -n "$BENCH_TMP" ] && [ -z "${BENCH_KEEP:-}" ]; then
        rm -rf "$BENCH_TMP"
    fi
    BENCH_DATADIR=""
    return 0
}

bench_worker_pids() {
    BENCH_DB=postgres bench_psql -c "SELECT string_agg(pid::text, ' ' ORDER BY backend_start, pid) FROM pg_stat_activity WHERE backend_type = 'plank' AND datname = '$BENCH_DB'" 2>/dev/null
}

# bench_check_pids: the PIDs of the check workers of the bench database (none before the
# first snapshot or row-level security check)
bench_check_pids() {
    BENCH_DB=postgres bench_psql -c "SELECT string_agg(pid::text, ' ' ORDER BY pid) FROM pg_stat_activity WHERE backend_type = 'plank check' AND datname = '$BENCH_DB'" 2>/dev/null
}

bench_worker_pid() {
    bench_worker_pids | awk '{ print $1 }'
}

bench_reset_table() {
    bench_psql -c "TRUNCATE ${1:-bench_events} RESTART IDENTITY"
}

# kv FILE KEY: the value of KEY=value in FILE (last one wins)
kv() {
    [ -f "$1" ] || return 0
    awk -F= -v k="$2" '$1 == k { v = substr($0, length(k) + 2) } END { print v }' "$1"
}

# cpu_s PID...: utime + stime in seconds (/proc/PID/stat), summed over the PIDs
# (NA when one of them is gone)
cpu_s() {
    local p files=()
    for p in "$@"; do
        [ -r "/proc/$p/stat" ] || { echo NA; return; }
        files+=("/proc/$p/stat")
    done
    [ ${#files[@]} -gt 0 ] || { echo NA; return; }
    awk -v hz="$(getconf CLK_TCK)" '{ sub(/^.*\) /, ""); t += $12 + $13 } END { print t / hz }' \
        "${files[@]}" 2>/dev/null || echo NA
}

# status_kb FIELD PID...: a /proc/PID/status field in kB (VmRSS, RssAnon, VmHWM, ...),
# summed over the PIDs (NA when one of them is gone)
status_kb() {
    local f=$1 p files=()
    shift
    for p in "$@"; do
        [ -r "/proc/$p/status" ] || { echo NA; return; }
        files+=("/proc/$p/status")
    done
    [ ${#files[@]} -gt 0 ] || { echo NA; return; }
    awk -v f="$f:" '$1 == f { t += $2 } END { print t }' "${files[@]}" 2>/dev/null || echo NA
}

# rss_kb PID...: VmRSS in kB, summed over the PIDs
rss_kb() { status_kb VmRSS "$@"; }

# private_kb PID...: private memory in kB (Private_Clean + Private_Dirty of
# /proc/PID/smaps_rollup), summed over the PIDs (NA when one of them is gone)
private_kb() {
    local p files=()
    for p in "$@"; do
        [ -r "/proc/$p/smaps_rollup" ] || { echo NA; return; }
        files+=("/proc/$p/smaps_rollup")
    done
    [ ${#files[@]} -gt 0 ] || { echo NA; return; }
    awk '$1 == "Private_Clean:" || $1 == "Private_Dirty:" { t += $2 } END { print t }' \
        "${files[@]}" 2>/dev/null || echo NA
}

# wait_file FILE SECONDS [PID]: wait for FILE to appear (fails early if PID exits)
wait_file() {
    local deadline=$((SECONDS + $2))
    while [ $SECONDS -lt $deadline ]; do
        [ -f "$1" ] && return 0
        if [ -n "${3:-}" ] && ! kill -0 "$3" 2>/dev/null; then
            return 1
        fi
        sleep 0.05
    done
    return 1
}
