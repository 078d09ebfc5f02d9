#!/usr/bin/env bash
# bench/smoke.sh: build the benchmark tools and run each of them for a few seconds
# against a tiny scenario on a throwaway cluster of its own (PostgreSQL on
# 127.0.0.1:${BENCH_PGPORT:-5497}, Plank on 127.0.0.1:${BENCH_PORT:-18095}); exits non-zero
# when a tool fails or a client misses a row.  scripts/test.sh runs it; so can anyone:
#   bash bench/smoke.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export BENCH_PGPORT=${BENCH_PGPORT:-5497}
export BENCH_PORT=${BENCH_PORT:-18095}
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

OUT=$(mktemp -d /tmp/plank-bench-smoke.XXXXXX)
READY=$OUT/ready
CONNINFO="host=127.0.0.1 port=$BENCH_PGPORT dbname=$BENCH_DB user=postgres"
passed=0
failed=0

cleanup() {
    bench_cluster_down
    rm -rf "$OUT"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

check() { # NAME CONDITION-COMMAND...
    local name=$1
    shift
    if "$@"; then
        passed=$((passed + 1))
        blog "ok: $name"
    else
        failed=$((failed + 1))
        blog "FAILED: $name"
    fi
}

# every delivery expected, no loss, no duplicate
complete() { # OUTFILE
    [ -f "$1" ] && [ "$(kv "$1" loss)" = 0 ] && [ "$(kv "$1" duplicates)" = 0 ] &&
        [ -n "$(kv "$1" deliveries)" ] && [ "$(kv "$1" deliveries)" = "$(kv "$1" deliveries_expected)" ] ||
        { [ -f "$1" ] && grep summary "$1" >&2; [ -f "$1.err" ] && tail -n 5 "$1.err" >&2; return 1; }
}

# run_bg NAME TOOL ARGS...: start a receiving tool and wait (bounded) until it is ready
BG=""
run_bg() {
    local name=$1 tool=$2
    shift 2
    rm -f "$READY"
    "$BENCH_DIR/$tool" --ready-file "$READY" "$@" >"$OUT/$name" 2>"$OUT/$name.err" &
    BG=$!
    wait_file "$READY" 60 "$BG"
}

finish_bg() { # wait at most 60 s for the tool started by run_bg
    local deadline=$((SECONDS + 60))
    while kill -0 "$BG" 2>/dev/null && [ $SECONDS -lt $deadline ]; do sleep 0.1; done
    kill "$BG" 2>/dev/null || true
    wait "$BG" 2>/dev/null || true
}

blog "smoke: dependencies and build"
bench_deps
bench_build
blog "smoke: cluster on 127.0.0.1:$BENCH_PGPORT, Plank on 127.0.0.1:$BENCH_PORT"
bench_cluster_up

W=("$BENCH_DIR/writer" --conninfo "$CONNINFO")

# 1. loadgen (json-c parse) + paced writer
bench_reset_table
if run_bg lg1 loadgen --port "$BENCH_PORT" --clients 20 --rows 200 --duration 30 --idle 5; then
    "${W[@]}" --rows 200 --rate 200 >"$OUT/w1" 2>&1 || true
    finish_bg
fi
check "loadgen: 20 clients get 200 rows each" complete "$OUT/lg1"

# 2. two processes, text scan, a stalled client, two writer connections, 10 rows per transaction
bench_reset_table
if run_bg lg2 loadgen --port "$BENCH_PORT" --clients 10 --stall 1 --procs 2 --parse scan --rows 300 \
        --duration 30 --idle 5 --drain 2; then
    "${W[@]}" --rows 300 --conns 2 --per-txn 10 >"$OUT/w2" 2>&1 || true
    finish_bg
fi
check "loadgen: 2 processes, stalled client, 2 writer connections" complete "$OUT/lg2"

# 3. raw LISTEN floor
bench_reset_table
if run_bg lf listen_floor --conninfo "$CONNINFO" --conns 2 --rows 200 --duration 30 --idle 5; then
    "${W[@]}" --rows 200 --rate 400 >"$OUT/w3" 2>&1 || true
    finish_bg
fi
check "listen_floor: 2 LISTEN connections get 200 notifications each" complete "$OUT/lf"

# 4. bulk statements
bench_reset_table
if run_bg lg4 loadgen --port "$BENCH_PORT" --clients 2 --rows 2000 --duration 30 --idle 5; then
    "${W[@]}" --bulk-insert 2000 >"$OUT/w4" 2>&1 || true
    finish_bg
fi
check "writer --bulk-insert: 2 clients get 2000 rows" complete "$OUT/lg4"
if run_bg lg5 loadgen --port "$BENCH_PORT" --clients 2 --rows 2000 --duration 30 --idle 5; then
    "${W[@]}" --bulk-update >"$OUT/w5" 2>&1 || true
    finish_bg
fi
check "writer --bulk-update: 2 clients get 2000 updates" complete "$OUT/lg5"
check "writer reports its rate" test -n "$(kv "$OUT/w1" rows_per_s)"

# 5. sustained load: 50 clients while one writer commits single-row transactions flat
#    out for 2 s, with plank.max_client_buffer small (64kB) and plank.max_client_lag 1s:
#    the worker falls behind and every backlog passes the bound for longer than the lag,
#    yet the clients read everything, so none may be closed (slow means the client is not
#    reading, docs/RELIABILITY.md); the 2 s of rows fit in the replay ring, so every
#    client gets every row; and the worker's peak RSS (VmHWM) stays under
#    SMOKE_SUS_MAX_MB, the memory target of the full scenario (the backlogs are positions
#    in the ring, not copies).  A check of behaviour, not of speed.
SMOKE_SUS_MAX_MB=${SMOKE_SUS_MAX_MB:-100}
bench_psql -c "ALTER SYSTEM SET plank.max_client_buffer = '64kB'" >/dev/null
bench_psql -c "ALTER SYSTEM SET plank.max_client_lag = '1s'" >/dev/null
bench_psql -c "SELECT pg_reload_conf()" >/dev/null
sleep 1
WP=$(bench_worker_pids)
bench_reset_table
if run_bg lg7 loadgen --port "$BENCH_PORT" --clients 50 --rows 0 --parse scan --duration 60 --idle 3; then
    "${W[@]}" --seconds 2 >"$OUT/w7" 2>&1 || true
    finish_bg
fi
sus_rows=$(kv "$OUT/w7" rows)
sus_hwm=$(status_kb VmHWM $WP)
blog "sustained: ${sus_rows:-?} rows in 2 s, $(kv "$OUT/lg7" deliveries) deliveries, closed $(kv "$OUT/lg7" closed_by_server), $(kv "$OUT/lg7" resync_required) resync_required, worker VmHWM ${sus_hwm} kB"
check "sustained: no reading client closed" test "$(kv "$OUT/lg7" closed_by_server)" = 0
check "sustained: 50 clients get every row" test -n "$sus_rows" -a \
    "$(kv "$OUT/lg7" deliveries)" = "$(( ${sus_rows:-0} * 50 ))"
check "sustained: worker peak RSS under $SMOKE_SUS_MAX_MB MB" \
    test "$sus_hwm" != NA -a "${sus_hwm/NA/0}" -lt $((SMOKE_SUS_MAX_MB * 1024))
bench_psql -c "ALTER SYSTEM RESET plank.max_client_buffer" >/dev/null
bench_psql -c "ALTER SYSTEM RESET plank.max_client_lag" >/dev/null
bench_psql -c "SELECT pg_reload_conf()" >/dev/null

# 6. several workers sharing the port (plank.workers = 2, a restart): the kernel spreads
#    the 20 clients over both, and the second worker gets its events from the first
if bench_has_setting plank.workers; then
    if bench_set_workers 2 >"$OUT/restart.err" 2>&1; then
        check "plank.workers = 2: two workers running" test "$(bench_worker_pids | wc -w)" = 2
        bench_reset_table
        if run_bg lg6 loadgen --port "$BENCH_PORT" --clients 20 --rows 5 --duration 30 --idle 5; then
            "${W[@]}" --rows 5 --rate 50 >"$OUT/w6" 2>&1 || true
            finish_bg
        fi
        check "plank.workers = 2: 20 clients get 5 rows each" complete "$OUT/lg6"
    else
        cat "$OUT/restart.err" >&2
        check "plank.workers = 2: restart" false
    fi
fi

blog "smoke: $passed checks passed, $failed failed"
[ "$failed" -eq 0 ]
