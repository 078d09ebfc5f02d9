#!/usr/bin/env bash
# bench/replication.sh: Plank on logical replication subscribers (docs/SCALING.md).
#
# Starts three throwaway clusters on loopback, as the postgres user: a primary
# (PostgreSQL on 127.0.0.1:$REPL_PGPORT, default 5491, wal_level = logical, a
# publication of bench_events) and two subscribers (PostgreSQL on the next two ports,
# Plank on $REPL_PORT + 1 and + 2, default 18492 and 18493), each subscribed to the
# publication with bench_events tracked by plank.track(). The writer (bench/writer)
# writes on the primary; the clients (bench/loadgen) read on the subscribers.
#
#   lat-on    $REPL_LAT_CLIENTS clients on subscriber 1, $REPL_LAT_RATE single-row
#             transactions/s on the primary, synchronous_commit = on there: primary
#             commit to client on the subscriber, p50 / p99
#   lat-off   the same with synchronous_commit = off on the primary (wal_writer_delay
#             at its default, 200 ms)
#   two-nodes $REPL_FAN_CLIENTS clients on each subscriber, the writer flat out
#             ($REPL_FAN_ROWS rows over 4 connections, synchronous_commit = on):
#             deliveries/s over both nodes, and the slowest client's last row
#
# Latency is the client's receive time minus ts_us, the wall clock the writer took
# just before sending the INSERT (one machine, one clock): it includes the INSERT, the
# commit, the walsender, the apply worker's transaction and Plank's delivery.
# Raw outputs (key=value files) go to $BENCH_OUT (default a new directory in /tmp);
# the table is printed and written to $BENCH_OUT/replication.md. The clusters are
# stopped by their data directories (pg_ctl stop) at the end, also after a failure.
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

REPL_PGPORT=${REPL_PGPORT:-5491}
REPL_PORT=${REPL_PORT:-18491}
REPL_LAT_CLIENTS=${REPL_LAT_CLIENTS:-50}
REPL_LAT_RATE=${REPL_LAT_RATE:-200}
REPL_LAT_ROWS=${REPL_LAT_ROWS:-2000}
REPL_FAN_CLIENTS=${REPL_FAN_CLIENTS:-100}
REPL_FAN_ROWS=${REPL_FAN_ROWS:-20000}
SCENARIOS=${SCENARIOS:-lat-on lat-off two-nodes}
DB=plank_bench
OUT=${BENCH_OUT:-$(mktemp -d /tmp/plank-bench-repl.XXXXXX)}
mkdir -p "$OUT"
READY=$OUT/ready
TMP=$(mktemp -d /tmp/plank-repl-bench.XXXXXX)
as_root chown postgres:postgres "$TMP"
chmod 755 "$TMP"
NODES=(primary sub1 sub2)

pgport() { case $1 in primary) echo "$REPL_PGPORT" ;; sub1) echo $((REPL_PGPORT + 1)) ;; sub2) echo $((REPL_PGPORT + 2)) ;; esac; }
wsport() { case $1 in primary) echo "$REPL_PORT" ;; sub1) echo $((REPL_PORT + 1)) ;; sub2) echo $((REPL_PORT + 2)) ;; esac; }
psql_on() {  # psql_on NODE ARGS...
    env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -h 127.0.0.1 -p "$(pgport "$1")" \
        -U postgres -v ON_ERROR_STOP=1 -qAt -d "$DB" "${@:2}"
}

cleanup() {
    local n
    for n in "${NODES[@]}"; do
        if [ -f "$TMP/$n/postmaster.pid" ]; then
            as_pg "$PGBIN/pg_ctl" -D "$TMP/$n" stop -m fast -w -t 60 >/dev/null 2>&1 \
                || as_pg "$PGBIN/pg_ctl" -D "$TMP/$n" stop -m immediate -w >/dev/null 2>&1 || true
        fi
    done
    [ -n "${BENCH_KEEP:-}" ] || rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

node_up() {  # node_up NODE
    local n=$1
    as_pg "$PGBIN/initdb" -D "$TMP/$n" -A trust -U postgres --encoding=UTF8 --locale=C.UTF-8 -N \
        >"$TMP/$n.initdb.log" 2>&1 || { cat "$TMP/$n.initdb.log" >&2; return 1; }
    as_pg tee -a "$TMP/$n/postgresql.conf" >/dev/null <<EOF
listen_addresses = '127.0.0.1'
port = $(pgport "$n")
unix_socket_directories = '$TMP'
fsync = off
full_page_writes = off
synchronous_commit = on
wal_level = logical
max_connections = 250
shared_buffers = 256MB
autovacuum = off
shared_preload_libraries = 'plank'
plank.port = $(wsport "$n")
plank.database = '$DB'
plank.listen_addresses = '127.0.0.1'
plank.max_connections = 20000
EOF
    as_pg bash -c 'ulimit -S -n "$(ulimit -H -n)" && exec "$@"' pg_ctl \
        "$PGBIN/pg_ctl" -D "$TMP/$n" -l "$TMP/$n.log" -w -t 60 start >/dev/null \
        || { tail -n 30 "$TMP/$n.log" >&2; return 1; }
    env PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -h 127.0.0.1 -p "$(pgport "$n")" \
        -U postgres -qAt -d postgres -c "CREATE DATABASE $DB"
    psql_on "$n" >/dev/null <<'EOF'
CREATE EXTENSION plank;
CREATE TABLE bench_events (id bigserial PRIMARY KEY, ts_us bigint, payload text);
SELECT plank.track('public.bench_events');
CREATE ROLE plank_authenticator LOGIN NOINHERIT;
CREATE ROLE plank_bench_reader;
GRANT SELECT ON bench_events TO plank_bench_reader;
GRANT plank_bench_reader TO plank_authenticator;
ALTER SYSTEM SET plank.anonymous_role = 'plank_bench_reader';
SELECT pg_reload_conf();
EOF
}

# wait until both subscribers have as many rows as the primary
wait_caught_up() {
    local want deadline=$((SECONDS + 120)) n ok
    want=$(psql_on primary -c "SELECT count(*) FROM bench_events")
    while [ $SECONDS -lt $deadline ]; do
        ok=1
        for n in sub1 sub2; do
            [ "$(psql_on "$n" -c "SELECT count(*) FROM bench_events")" = "$want" ] || ok=0
        done
        [ $ok = 1 ] && return 0
        sleep 0.2
    done
    blog "the subscribers did not catch up within 120 s"
    return 1
}

reset_table() {
    psql_on primary -c "TRUNCATE bench_events RESTART IDENTITY"
    wait_caught_up
}

set_sync_commit() {  # set_sync_commit on|off (on the primary)
    psql_on primary -c "ALTER SYSTEM SET synchronous_commit = $1" -c "SELECT pg_reload_conf()" >/dev/null
}

wait_pid() {  # wait_pid PID SECONDS: wait for a loadgen, stopping it (by its PID) at the deadline
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            kill "$1" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    wait "$1" 2>/dev/null || true
}

loadgen_on() {  # loadgen_on NODE NAME ARGS...: start a loadgen, wait until it is subscribed
    rm -f "$READY.$2"
    "$BENCH_DIR/loadgen" --port "$(wsport "$1")" --ready-file "$READY.$2" "${@:3}" \
        >"$OUT/$2.out" 2>"$OUT/$2.err" &
    LG_PID=$!
    wait_file "$READY.$2" 120 "$LG_PID" || { blog "$2: loadgen did not get ready"; tail -n 5 "$OUT/$2.err" >&2; return 1; }
}

writer() { "$BENCH_DIR/writer" --conninfo "host=127.0.0.1 port=$REPL_PGPORT dbname=$DB user=postgres" "$@"; }

ROWS=()

latency() {  # latency NAME on|off
    set_sync_commit "$2"
    reset_table
    loadgen_on sub1 "$1" --clients "$REPL_LAT_CLIENTS" --rows "$REPL_LAT_ROWS" --duration 120 --idle 5 || return 1
    writer --rows "$REPL_LAT_ROWS" --rate "$REPL_LAT_RATE" >"$OUT/$1.writer" 2>&1
    wait_pid "$LG_PID" 150
    ROWS+=("$1|$REPL_LAT_CLIENTS clients on a subscriber, $REPL_LAT_RATE rows/s on the primary, synchronous_commit = $2|p50 $(kv "$OUT/$1.out" p50_ms) ms, p99 $(kv "$OUT/$1.out" p99_ms) ms, max $(kv "$OUT/$1.out" max_ms) ms|loss $(kv "$OUT/$1.out" loss)")
}

blog "building the tools"
bench_deps
bench_build
for n in "${NODES[@]}"; do
    node_up "$n"
done
psql_on primary -c "CREATE PUBLICATION bench_pub FOR TABLE public.bench_events"
for n in sub1 sub2; do
    psql_on "$n" -c "CREATE SUBSCRIPTION bench_$n CONNECTION 'host=127.0.0.1 port=$REPL_PGPORT dbname=$DB user=postgres' PUBLICATION bench_pub"
done
deadline=$((SECONDS + 60))
until [ "$(psql_on sub1 -c "SELECT replication_state FROM plank.stats")" = streaming ] &&
      [ "$(psql_on sub2 -c "SELECT replication_state FROM plank.stats")" = streaming ]; do
    [ $SECONDS -lt $deadline ] || { blog "the subscriptions are not streaming after 60 s"; exit 1; }
    sleep 0.2
done
{
    echo "machine: $(nproc) cores, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM; $("$PGBIN/postgres" --version)"
    echo "three clusters on one machine: fsync = off, wal_level = logical, wal_writer_delay = $(psql_on primary -c 'SHOW wal_writer_delay')"
} | tee "$OUT/machine.txt" >&2

for s in $SCENARIOS; do
    blog "=== $s (load average $(cut -d' ' -f1 /proc/loadavg))"
    case $s in
        lat-on) latency lat-on on ;;
        lat-off) latency lat-off off ;;
        two-nodes)
            set_sync_commit on
            reset_table
            loadgen_on sub1 two1 --clients "$REPL_FAN_CLIENTS" --rows "$REPL_FAN_ROWS" --duration 120 --idle 5 --parse scan
            P1=$LG_PID
            loadgen_on sub2 two2 --clients "$REPL_FAN_CLIENTS" --rows "$REPL_FAN_ROWS" --duration 120 --idle 5 --parse scan
            P2=$LG_PID
            writer --rows "$REPL_FAN_ROWS" --conns 4 >"$OUT/two.writer" 2>&1
            wait_pid "$P1" 150
            wait_pid "$P2" 150
            d1=$(kv "$OUT/two1.out" deliveries_per_s); d2=$(kv "$OUT/two2.out" deliveries_per_s)
            ROWS+=("two-nodes|$REPL_FAN_CLIENTS clients on each of 2 subscribers, $REPL_FAN_ROWS rows flat out on the primary ($(kv "$OUT/two.writer" rows_per_s) rows/s committed)|$(awk -v a="$d1" -v b="$d2" 'BEGIN { printf "%.0f deliveries/s (%.0f + %.0f)", a + b, a, b }'), p99 $(kv "$OUT/two1.out" p99_ms) / $(kv "$OUT/two2.out" p99_ms) ms|loss $(kv "$OUT/two1.out" loss) / $(kv "$OUT/two2.out" loss)")
            ;;
        *) blog "unknown scenario $s" ;;
    esac
done

{
    echo "| scenario | setup | result | loss |"
    echo "|---|---|---|---|"
    for r in "${ROWS[@]}"; do
        echo "| ${r//|/ | } |"
    done
} | tee "$OUT/replication.md"
blog "raw outputs in $OUT"
