#!/usr/bin/env bash
# bench/run.sh: Plank's benchmark suite (about 20 minutes on 2 cores).
#
# Builds bench/ (loadgen, writer, listen_floor), starts its own throwaway cluster
# (PostgreSQL on 127.0.0.1:$BENCH_PGPORT, default 5498; Plank on 127.0.0.1:$BENCH_PORT,
# default 18096; database plank_bench; see lib.sh for the settings), runs every
# scenario against Plank and against the raw-LISTEN floor, and prints one table:
# scenario, Plank, raw-LISTEN floor, target, met.
#
#   latency     100 clients, 200 rows/s: commit-to-client p50 / p99
#   fan-out     1,000 clients, writer flat out: deliveries/s, worker CPU per delivery,
#               CPU of worker / load generator / writer (which one is the bottleneck)
#   sustained   1,000 clients, single-row transactions flat out for 10 s, then 20 s to
#               drain: deliveries/s over the run, clients closed or told to resync,
#               worker peak and final RSS (total and private), writer commit rate
#   idle-10k    10,000 idle clients, then single changes: p99 and max to reach all,
#               worker VmRSS; again with plank.workers = $IDLE_WORKERS (2: the sends
#               spread over 2 processes; a cluster restart)
#   conn100k    100,000 concurrent WebSocket connections, all subscribed, with
#               plank.workers = $CONN_WORKERS (32) and plank.max_connections = 20000 per worker (a
#               cluster restart; loadgen over --procs processes and --sources source
#               addresses), then single changes: every connection must get every change;
#               p50/p99/max to reach all, connect time, worker memory per connection
#   writer      pgbench single-row INSERT TPS: untracked, tracked, plpgsql NOTIFY floor
#   bulk        INSERT ... SELECT of 100,000 rows and UPDATE of 100,000 rows
#   stall       100 clients receive 100,000 events, with and without a stalled client
#   rls         $RLS_CLIENTS clients under row-level security (one group: same role and
#               claims), writer flat out: deliveries/s and CPU per change of the worker
#               plus its check workers
#   filters     $FLT_SUBS subscriptions with distinct filters on one table ($FLT_CONNS
#               connections), $FLT_RATE single-row transactions/s, each row matching one
#               subscription: worker CPU per change, commit-to-client p50 / p99, with
#               operator filters (range + like) and with plain equality (bench/filters.py)
#   profile     perf record of the worker under fan-out (when perf works here)
#
# Raw outputs (key=value files, perf report) go to $BENCH_OUT (default a new
# /tmp/plank-bench-results.XXXXXX), the table also to $BENCH_OUT/table.md.
# Every size below can be changed through the environment (e.g. FAN_ROWS=500), and
# SCENARIOS picks a subset (e.g. SCENARIOS="latency stall").  The 1-minute load
# average at the start of each scenario is printed under the table: other work on
# the machine shows up there (the figures are only as quiet as the machine was).
#
# BENCH_WORKERS (plank.workers, default 1) sets the number of worker processes of the
# cluster the scenarios run against (conn100k and the second idle run set their own and
# restart back); worker CPU and memory figures are summed over every Plank worker of the
# bench database (pg_stat_activity backend_type = 'plank').
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"

LAT_CLIENTS=${LAT_CLIENTS:-100}
LAT_RATE=${LAT_RATE:-200}
LAT_ROWS=${LAT_ROWS:-3000}          # 15 s at 200 rows/s
LAT_TS=${LAT_TS:-client}            # where ts_us comes from: client (writer) or server
FAN_CLIENTS=${FAN_CLIENTS:-1000}
FAN_ROWS=${FAN_ROWS:-1000}
FAN_FLOOR_CONNS=${FAN_FLOOR_CONNS:-100}
SUS_CLIENTS=${SUS_CLIENTS:-1000}
SUS_SECONDS=${SUS_SECONDS:-10}       # single-row transactions flat out for this long
SUS_DRAIN=${SUS_DRAIN:-20}           # then this long for the clients to get the rest
SUS_PROFILE=${SUS_PROFILE:-0}        # 1: perf record the worker during it (sus-profile.txt)
RLS_CLIENTS=${RLS_CLIENTS:-100}
RLS_ROWS=${RLS_ROWS:-5000}
IDLE_CLIENTS=${IDLE_CLIENTS:-10000}
IDLE_CHANGES=${IDLE_CHANGES:-5}
IDLE_WORKERS=${IDLE_WORKERS:-2}       # the idle scenario again with this plank.workers (0: skip)
CONN_CLIENTS=${CONN_CLIENTS:-100000}
CONN_WORKERS=${CONN_WORKERS:-32}
CONN_MAX_CONN=${CONN_MAX_CONN:-20000} # plank.max_connections, per worker
CONN_PER_PROC=${CONN_PER_PROC:-15000} # loadgen clients per process (20,000 open files each)
CONN_PER_SOURCE=${CONN_PER_SOURCE:-12500} # per source address (28,232 ephemeral ports each)
CONN_CHANGES=${CONN_CHANGES:-5}
CONN_RATE=${CONN_RATE:-0.5}          # changes/s: one every 2 s, so that they do not overlap
CONN_BATCH=${CONN_BATCH:-50}          # loadgen --batch: connections started per 10 ms and process
CONN_CONNECT_TIMEOUT=${CONN_CONNECT_TIMEOUT:-300}
CONN_PING=${CONN_PING:-0}             # plank.ping_interval during conn100k (0: off, see below)
PGB_CLIENTS=${PGB_CLIENTS:-4}
PGB_SECONDS=${PGB_SECONDS:-10}
BULK_ROWS=${BULK_ROWS:-100000}
BULK_BUFFER=${BULK_BUFFER:-64MB}    # a plank.max_client_buffer that holds a whole statement
STALL_CLIENTS=${STALL_CLIENTS:-100}
STALL_EVENTS=${STALL_EVENTS:-100000}
STALL_RATE=${STALL_RATE:-800}       # events/s, below saturation (see docs/BENCHMARKS.md)
STALL_PER_TXN=${STALL_PER_TXN:-10}
PROFILE=${PROFILE:-1}
PROFILE_ROWS=${PROFILE_ROWS:-500}
FLT_CONNS=${FLT_CONNS:-100}
FLT_SUBS=${FLT_SUBS:-10000}         # in all: FLT_CONNS connections x plank.max_subscriptions
FLT_ROWS=${FLT_ROWS:-2000}
FLT_RATE=${FLT_RATE:-500}           # rows/s
SCENARIOS=${SCENARIOS:-latency fanout sustained idle conn100k writer bulk stall rls filters profile}

OUT=${BENCH_OUT:-$(mktemp -d /tmp/plank-bench-results.XXXXXX)}
mkdir -p "$OUT"
READY=$OUT/ready
CONNINFO="host=127.0.0.1 port=$BENCH_PGPORT dbname=$BENCH_DB user=postgres"
PGBENCH=$PGBIN/pgbench
[ -x "$PGBENCH" ] || PGBENCH=$(command -v pgbench)

declare -a ROWS=()
# row SCENARIO PLANK FLOOR TARGET MET
row() { ROWS+=("$1|$2|$3|$4|$5"); }
want() { [[ " $SCENARIOS " == *" $1 "* ]]; }
LOADS=""
# scenario NAME DESCRIPTION: log the start of a scenario with the machine's load
scenario() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    LOADS="$LOADS $1 $load,"
    blog "=== $1: $2 (load average $load)"
}

cleanup() {
    bench_cluster_down
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# fcmp A OP B: float comparison, false when either side is not a number
fcmp() { awk -v a="$1" -v b="$3" -v op="$2" 'BEGIN {
    if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/) exit 1
    if (op == "<=") exit !(a + 0 <= b + 0); if (op == ">=") exit !(a + 0 >= b + 0)
    if (op == "==") exit !(a + 0 == b + 0); exit 1 }'; }
met() { if fcmp "$1" "$2" "$3"; then echo met; else echo "not met"; fi; }
calc() { awk "BEGIN { printf \"$1\", $2 }"; }

# wait_pid PID SECONDS: wait for a background tool, killing it (by its PID) at the deadline
wait_pid() {
    local deadline=$((SECONDS + $2))
    while kill -0 "$1" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            blog "PID $1 still running after $2 s: stopping it"
            kill "$1" 2>/dev/null || true
            sleep 1
            kill -9 "$1" 2>/dev/null || true
            break
        fi
        sleep 0.2
    done
    wait "$1" 2>/dev/null || true
}

# start_bg NAME TOOL ARGS...: start loadgen or listen_floor, wait until it is ready
BG_PID=""
start_bg() {
    local name=$1 tool=$2
    shift 2
    rm -f "$READY"
    "$BENCH_DIR/$tool" --ready-file "$READY" "$@" >"$OUT/$name.out" 2>"$OUT/$name.err" &
    BG_PID=$!
    if ! wait_file "$READY" "${READY_TIMEOUT:-180}" "$BG_PID"; then
        blog "$name: $tool did not get ready (see $OUT/$name.err)"
        tail -n 5 "$OUT/$name.err" >&2 || true
        return 1
    fi
}

loadgen() { start_bg "$1" loadgen --port "$BENCH_PORT" "${@:2}"; }
floor() { start_bg "$1" listen_floor --conninfo "$CONNINFO" "${@:2}"; }
writer() { "$BENCH_DIR/writer" --conninfo "$CONNINFO" "$@"; }

# every Plank worker of the bench database, space-separated (pass unquoted: cpu_s $WP)
worker_pids() { bench_worker_pids; }
# ensure_workers N: the scenarios run with plank.workers = N (a restart when it differs,
# e.g. after conn100k); N = 1 is a no-op with a build that has no plank.workers
ensure_workers() { bench_set_workers "$1" "$BENCH_MAX_CONNECTIONS"; }
mb() { awk -v k="$1" 'BEGIN { if (k ~ /^[0-9.]+$/) printf "%.1f", k / 1024; else print "NA" }'; }

# ------------------------------------------------------------------------------------
blog "building the tools"
bench_deps
bench_build

blog "starting the benchmark cluster (PG 127.0.0.1:$BENCH_PGPORT, Plank 127.0.0.1:$BENCH_PORT)"
cp "$PGBIN/../lib/plank.so" "$OUT/plank.so"     # the build the server loads (for perf symbols)
bench_cluster_up

{
    echo "machine: $(nproc) cores ($(lscpu 2>/dev/null | awk -F: '/Model name/ { gsub(/^ +/, "", $2); print $2; exit }')), $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, kernel $(uname -r)"
    echo "software: $("$PGBIN/postgres" --version), libwebsockets $(pkg-config --modversion libwebsockets), json-c $(pkg-config --modversion json-c), libpq $(pkg-config --modversion libpq)"
    echo "server settings: $(bench_settings)"
    echo "plank.so: $(stat -c '%y' "$PGBIN/../lib/plank.so" | cut -d. -f1), plank.max_client_buffer = $(bench_psql -c 'SHOW plank.max_client_buffer')"
    echo "open files: $(ulimit -H -n) per process (hard limit)"
} | tee "$OUT/machine.txt" >&2

# ------------------------------------------------------------------------------------
if want latency; then
    ensure_workers "$BENCH_WORKERS"
    scenario latency "$LAT_CLIENTS clients, $LAT_RATE rows/s, $LAT_ROWS rows (ts_us: $LAT_TS)"
    WP=$(worker_pids)
    bench_reset_table
    if loadgen lat --clients "$LAT_CLIENTS" --rows "$LAT_ROWS" --duration 120 --idle 5; then
        c0=$(cpu_s $WP)
        writer --rows "$LAT_ROWS" --rate "$LAT_RATE" --ts "$LAT_TS" >"$OUT/lat.writer" 2>&1 || true
        wait_pid "$BG_PID" 60
        c1=$(cpu_s $WP)
        echo "worker_cpu_s=$(calc %.2f "$c1 - $c0")" >>"$OUT/lat.out"
    fi
    bench_reset_table
    if floor latfloor --rows "$LAT_ROWS" --duration 120 --idle 5; then
        writer --rows "$LAT_ROWS" --rate "$LAT_RATE" --ts "$LAT_TS" >"$OUT/latfloor.writer" 2>&1 || true
        wait_pid "$BG_PID" 60
    fi
    grep summary "$OUT/lat.out" "$OUT/latfloor.out" >&2 || true
    p50=$(kv "$OUT/lat.out" p50_ms); p99=$(kv "$OUT/lat.out" p99_ms); loss=$(kv "$OUT/lat.out" loss)
    f50=$(kv "$OUT/latfloor.out" p50_ms); f99=$(kv "$OUT/latfloor.out" p99_ms)
    row "Latency p50, $LAT_CLIENTS clients x $LAT_RATE rows/s (loss $loss)" "$p50 ms" "$f50 ms (1 LISTEN conn)" "<= 0.3 ms" "$(met "$p50" "<=" 0.3)"
    row "Latency p99, same run" "$p99 ms" "$f99 ms" "<= 1 ms" "$(met "$p99" "<=" 1)"
    row "Latency run: worker CPU per delivery" \
        "$(awk -v c="$(kv "$OUT/lat.out" worker_cpu_s)" -v d="$(kv "$OUT/lat.out" deliveries)" 'BEGIN { if (d > 0) printf "%.2f us", c * 1e6 / d; else print "NA" }')" \
        "-" "-" "-"
fi

# ------------------------------------------------------------------------------------
if want fanout; then
    ensure_workers "$BENCH_WORKERS"
    scenario fanout "$FAN_CLIENTS clients, writer flat out, $FAN_ROWS rows"
    WP=$(worker_pids)
    bench_reset_table
    if loadgen fan --clients "$FAN_CLIENTS" --rows "$FAN_ROWS" --parse scan --duration 300 --idle 10; then
        w0=$(cpu_s $WP)
        t0=$(date +%s.%N)
        writer --rows "$FAN_ROWS" >"$OUT/fan.writer" 2>&1 || true
        wait_pid "$BG_PID" 320
        t1=$(date +%s.%N)
        w1=$(cpu_s $WP)
        echo "worker_cpu_s=$(calc %.2f "$w1 - $w0")" >>"$OUT/fan.out"
        echo "wall_s=$(calc %.2f "$t1 - $t0")" >>"$OUT/fan.out"
    fi
    bench_reset_table
    if floor fanfloor --conns "$FAN_FLOOR_CONNS" --rows "$FAN_ROWS" --parse scan --duration 300 --idle 10; then
        writer --rows "$FAN_ROWS" >"$OUT/fanfloor.writer" 2>&1 || true
        wait_pid "$BG_PID" 320
    fi
    grep summary "$OUT/fan.out" "$OUT/fanfloor.out" >&2 || true
    d=$(kv "$OUT/fan.out" deliveries); dexp=$(kv "$OUT/fan.out" deliveries_expected)
    dps=$(kv "$OUT/fan.out" deliveries_per_s); loss=$(kv "$OUT/fan.out" loss)
    commits=$(kv "$OUT/fan.out" other_messages)
    span=$(awk -v a="$(kv "$OUT/fan.out" first_rx_us)" -v b="$(kv "$OUT/fan.out" last_rx_us)" 'BEGIN { printf "%.2f", (b - a) / 1e6 }')
    wcpu=$(kv "$OUT/fan.out" worker_cpu_s); lcpu=$(kv "$OUT/fan.out" loadgen_cpu_s)
    wrcpu=$(awk -v a="$(kv "$OUT/fan.writer" writer_cpu_s)" -v b="$(kv "$OUT/fan.writer" backend_cpu_s)" 'BEGIN { printf "%.2f", a + b }')
    wall=$(kv "$OUT/fan.out" wall_s)
    us_per=$(awk -v c="$wcpu" -v d="$d" 'BEGIN { if (d > 0) printf "%.2f", c * 1e6 / d; else print "NA" }')
    us_per_frame=$(awk -v c="$wcpu" -v d="$d" -v m="$commits" 'BEGIN { if (d > 0) printf "%.2f", c * 1e6 / (d + m); else print "NA" }')
    share() { awk -v c="$1" -v w="$2" 'BEGIN { if (w > 0) printf "%.0f%%", 100 * c / w; else print "NA" }'; }
    fdps=$(kv "$OUT/fanfloor.out" deliveries_per_s); floss=$(kv "$OUT/fanfloor.out" loss)
    if [ "$d" = "$dexp" ] && [ "$loss" = 0 ]; then allgot=met; else allgot="not met"; fi
    row "Fan-out $FAN_CLIENTS clients, writer flat out ($FAN_ROWS rows): deliveries/s" \
        "$dps/s, $d of $dexp delivered, loss $loss" "$fdps/s ($FAN_FLOOR_CONNS LISTEN backends, loss $floss)" \
        "every event to every client" "$allgot"
    # Since the commit fold, the last change of a transaction carries "commit": true and
    # a single-row transaction is one message: other_messages (anything but a change,
    # e.g. a separate commit marker of an older build) should be 0, and per delivery =
    # per frame.
    row "Fan-out: worker CPU per delivery" "$us_per us ($us_per_frame us per frame; $commits other frames: the subscription acks)" "-" "<= 1 us" "$(met "$us_per" "<=" 1)"
    verdict=$(awk -v w="$wcpu" -v l="$lcpu" -v r="$wrcpu" -v t="$wall" 'BEGIN {
        if (t <= 0) { print "NA"; exit }
        b = "worker"; m = w; if (l > m) { b = "load generator"; m = l } if (r > m) { b = "writer"; m = r }
        printf "%s (%.0f%% of a core)", b, 100 * m / t }')
    row "Fan-out: CPU over the ${wall}s run (one core = 100%)" \
        "worker $(share "$wcpu" "$wall"), loadgen $(share "$lcpu" "$wall"), writer+backend $(share "$wrcpu" "$wall")" \
        "-" "show the bottleneck" "bottleneck: $verdict"
fi

# ------------------------------------------------------------------------------------
# sustained: SUS_CLIENTS clients subscribed to one table while one writer connection
# commits single-row INSERTs flat out for SUS_SECONDS, then SUS_DRAIN seconds for the
# clients to get the rest (a load, not a burst: the fan-out scenario writes its rows
# and then drains).  The cluster restarts first, so that the worker's peak RSS
# (VmHWM) is this scenario's; its final RSS is taken 2 s after the clients are gone.
if want sustained; then
    BENCH_FORCE_RESTART=1 ensure_workers "$BENCH_WORKERS"
    scenario sustained "$SUS_CLIENTS clients, single-row transactions flat out for $SUS_SECONDS s, $SUS_DRAIN s to drain"
    WP=$(worker_pids)
    bench_reset_table
    if loadgen sus --clients "$SUS_CLIENTS" --rows 0 --parse scan \
            --duration $((SUS_SECONDS + SUS_DRAIN + 1)) --idle "$SUS_DRAIN"; then
        w0=$(cpu_s $WP)
        # the peak of the worker's anonymous (private) memory, sampled every 0.5 s
        (
            peak=0
            while kill -0 "$BG_PID" 2>/dev/null; do
                v=$(status_kb RssAnon $WP)
                [ "$v" != NA ] && [ "$v" -gt "$peak" ] && peak=$v && echo "$peak" >"$OUT/sus.anonpeak"
                sleep 0.5
            done
        ) &
        SAMPLER=$!
        SUS_PERF=""
        if [ "$SUS_PROFILE" = 1 ] && command -v perf >/dev/null; then
            perf record -e cpu-clock -g -o "$OUT/sus.perf" -p "${WP// /,}" >/dev/null 2>"$OUT/sus-perf.err" &
            SUS_PERF=$!
            sleep 0.5
        fi
        writer --seconds "$SUS_SECONDS" >"$OUT/sus.writer" 2>&1 || true
        wait_pid "$BG_PID" $((SUS_DRAIN + 60))
        if [ -n "$SUS_PERF" ]; then
            kill -INT "$SUS_PERF" 2>/dev/null || true
            wait_pid "$SUS_PERF" 30
            {
                echo "# perf report --no-children --sort dso (worker, sustained)"
                perf report -i "$OUT/sus.perf" --stdio -g none --no-children --sort dso 2>/dev/null | grep '%' | head -8 || true
                echo "# perf report --no-children --sort dso,sym: top self costs"
                perf report -i "$OUT/sus.perf" --stdio -g none --no-children --sort dso,sym 2>/dev/null | grep '%' | head -30 || true
                echo "# perf report --children --sort sym: top inclusive costs"
                perf report -i "$OUT/sus.perf" --stdio -g none --children --sort sym 2>/dev/null | grep '%' | head -40 || true
            } >"$OUT/sus-profile.txt"
            blog "sustained profile: $OUT/sus-profile.txt"
        fi
        w1=$(cpu_s $WP)
        wait "$SAMPLER" 2>/dev/null || true
        sleep 2
        {
            echo "worker_cpu_s=$(calc %.2f "$w1 - $w0")"
            echo "worker_hwm_kb=$(status_kb VmHWM $WP)"
            echo "worker_anon_peak_kb=$(cat "$OUT/sus.anonpeak" 2>/dev/null || echo NA)"
            echo "worker_final_rss_kb=$(status_kb VmRSS $WP)"
            echo "worker_final_private_kb=$(private_kb $WP)"
        } >>"$OUT/sus.out"
    fi
    grep summary "$OUT/sus.out" "$OUT/sus.writer" >&2 || true
    srows=$(kv "$OUT/sus.writer" rows); srate=$(kv "$OUT/sus.writer" rows_per_s)
    d=$(kv "$OUT/sus.out" deliveries); subs=$(kv "$OUT/sus.out" subscribed)
    dexp=$(awk -v r="$srows" -v c="$subs" 'BEGIN { if (r != "" && c != "") print r * c; else print "NA" }')
    # deliveries/s over the whole run: from the writer's start to the last delivery
    dps=$(awk -v d="$d" -v a="$(kv "$OUT/sus.writer" start_us)" -v b="$(kv "$OUT/sus.out" last_rx_us)" \
        'BEGIN { if (b > a && a > 0) printf "%.0f", d / ((b - a) / 1e6); else print "NA" }')
    closed=$(kv "$OUT/sus.out" closed_by_server); c1013=$(kv "$OUT/sus.out" closed_1013)
    resync=$(kv "$OUT/sus.out" resync_required)
    row "Sustained $SUS_CLIENTS clients, single-row transactions flat out ${SUS_SECONDS}s + ${SUS_DRAIN}s drain: deliveries/s over the run" \
        "$dps/s, $d of $dexp delivered (the rest skipped by resync_required)" "-" ">= 265,000/s (3x the Go relay, issue 13)" \
        "$(met "$dps" ">=" 265000)"
    row "Sustained: clients closed by the server (1013) / told to resync" \
        "$closed closed ($c1013 with 1013), $resync resync_required" "-" "0 reading clients closed" \
        "$(if [ "$closed" = 0 ]; then echo met; else echo "not met"; fi)"
    row "Sustained: worker memory, peak / after the clients left" \
        "VmHWM $(mb "$(kv "$OUT/sus.out" worker_hwm_kb)") MB, RssAnon peak $(mb "$(kv "$OUT/sus.out" worker_anon_peak_kb)") MB; final VmRSS $(mb "$(kv "$OUT/sus.out" worker_final_rss_kb)") MB, private $(mb "$(kv "$OUT/sus.out" worker_final_private_kb)") MB" \
        "-" "<= 100 MB (issue 13)" "$(met "$(mb "$(kv "$OUT/sus.out" worker_hwm_kb)")" "<=" 100)"
    row "Sustained: writer commit rate (one connection, single-row transactions)" \
        "$srate commits/s ($srows rows), worker CPU $(kv "$OUT/sus.out" worker_cpu_s) s" "-" "-" "-"
fi

# ------------------------------------------------------------------------------------
if want idle; then
    ensure_workers "$BENCH_WORKERS"
    IW=$(bench_psql -c 'SHOW plank.workers' 2>/dev/null || echo 1)
    scenario idle "$IDLE_CLIENTS idle clients, $IDLE_CHANGES single changes 0.5 s apart (plank.workers = $IW$([ "${IDLE_WORKERS:-0}" != 0 ] && echo ", then $IDLE_WORKERS"))"
    # idle_run NAME WORKERS: restart with that many workers (fresh processes, so that
    # their RSS is not what earlier scenarios left behind), connect IDLE_CLIENTS clients,
    # send IDLE_CHANGES single-row changes 0.5 s apart; memory (kB, summed over the
    # workers) and CPU per worker go to $OUT/NAME.mem
    idle_run() {
        local name=$1 n=$2 wp p c0
        BENCH_FORCE_RESTART=1 bench_set_workers "$n" "$BENCH_MAX_CONNECTIONS" || return 1
        sleep 1
        wp=$(worker_pids)
        {
            echo "workers=$(echo "$wp" | wc -w)"
            echo "worker_pids=$wp"
            echo "rss_before_kb=$(rss_kb $wp)"
            echo "anon_before_kb=$(status_kb RssAnon $wp)"
        } >"$OUT/$name.mem"
        bench_reset_table
        if loadgen "$name" --clients "$IDLE_CLIENTS" --rows "$IDLE_CHANGES" ${IDLE_LOADGEN_ARGS:-} --duration 120 --idle 10; then
            sleep 1
            {
                echo "rss_connected_kb=$(rss_kb $wp)"
                echo "anon_connected_kb=$(status_kb RssAnon $wp)"
                for p in $wp; do
                    echo "worker_${p}_fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
                    echo "worker_${p}_status=$(grep -E 'VmRSS|RssAnon|RssFile|RssShmem' "/proc/$p/status" | tr -s ' \t' ' ' | tr '\n' ';')"
                done
            } >>"$OUT/$name.mem"
            for p in $wp; do echo "c0_$p=$(cpu_s "$p")"; done >"$OUT/$name.cpu0"
            writer --rows "$IDLE_CHANGES" --rate 2 >"$OUT/$name.writer" 2>&1 || true
            wait_pid "$BG_PID" 150
            {
                echo "rss_end_kb=$(rss_kb $wp)"
                echo "anon_end_kb=$(status_kb RssAnon $wp)"
                for p in $wp; do
                    echo "worker_${p}_cpu_s=$(calc %.2f "$(cpu_s "$p") - $(kv "$OUT/$name.cpu0" "c0_$p")")"
                done
            } >>"$OUT/$name.mem"
        fi
    }
    idle_run idle "$IW" || true
    bench_reset_table
    if floor idlefloor --rows "$IDLE_CHANGES" --duration 60 --idle 5; then
        writer --rows "$IDLE_CHANGES" --rate 2 >"$OUT/idlefloor.writer" 2>&1 || true
        wait_pid "$BG_PID" 70
    fi
    grep summary "$OUT/idle.out" "$OUT/idlefloor.out" >&2 || true
    ip99=$(kv "$OUT/idle.out" p99_ms); imax=$(kv "$OUT/idle.out" max_ms); iloss=$(kv "$OUT/idle.out" loss)
    iconn=$(kv "$OUT/idle.out" connect_ms)
    rss_end=$(kv "$OUT/idle.mem" rss_end_kb); rss_mb=$(mb "${rss_end:-$(kv "$OUT/idle.mem" rss_connected_kb)}")
    fp99=$(kv "$OUT/idlefloor.out" p99_ms)
    wl=""; [ "$IW" != 1 ] && wl=" ($IW workers)"
    row "$IDLE_CLIENTS idle clients$wl, one change: p99 to reach all (max; loss $iloss; connect ${iconn} ms)" \
        "$ip99 ms (max $imax ms)" "$fp99 ms (1 LISTEN conn)" "<= 20 ms" "$(met "$ip99" "<=" 20)"
    row "$IDLE_CLIENTS clients: worker VmRSS$wl" \
        "$rss_mb MB ($(mb "$(kv "$OUT/idle.mem" rss_before_kb)") MB before connecting; RssAnon $(mb "$(kv "$OUT/idle.mem" anon_end_kb)") MB)" \
        "-" "<= 50 MB" "$(met "$rss_mb" "<=" 50)"
    if [ "${IDLE_WORKERS:-0}" != 0 ] && [ "$IDLE_WORKERS" != "$IW" ]; then
        idle_run idlew "$IDLE_WORKERS" || true
        grep summary "$OUT/idlew.out" >&2 || true
        wp99=$(kv "$OUT/idlew.out" p99_ms)
        wrss_end=$(kv "$OUT/idlew.mem" rss_end_kb); wrss_mb=$(mb "${wrss_end:-$(kv "$OUT/idlew.mem" rss_connected_kb)}")
        wcpus=$(awk -F= '/^worker_[0-9]+_cpu_s=/ { printf "%s%s s", (n++ ? " + " : ""), $2 }' "$OUT/idlew.mem" 2>/dev/null)
        wfds=$(awk -F= '/^worker_[0-9]+_fds=/ { printf "%s%s", (n++ ? " / " : ""), $2 }' "$OUT/idlew.mem" 2>/dev/null)
        row "$IDLE_CLIENTS idle clients, plank.workers = $IDLE_WORKERS: p99 to reach all (max; loss $(kv "$OUT/idlew.out" loss); connect $(kv "$OUT/idlew.out" connect_ms) ms); total VmRSS" \
            "$wp99 ms (max $(kv "$OUT/idlew.out" max_ms) ms); $wrss_mb MB over $IDLE_WORKERS workers ($(mb "$(kv "$OUT/idlew.mem" rss_before_kb)") MB before; open files $wfds; CPU during the changes $wcpus)" \
            "$fp99 ms (1 LISTEN conn)" "<= 20 ms, <= 50 MB" \
            "p99 $(met "$wp99" "<=" 20), RSS $(met "$wrss_mb" "<=" 50)"
    fi
fi

# ------------------------------------------------------------------------------------
if want conn100k; then
    cprocs=$(( (CONN_CLIENTS + CONN_PER_PROC - 1) / CONN_PER_PROC ))
    csrc=$(( (CONN_CLIENTS + CONN_PER_SOURCE - 1) / CONN_PER_SOURCE ))
    scenario conn100k "$CONN_CLIENTS connections, plank.workers = $CONN_WORKERS (plank.max_connections = $CONN_MAX_CONN each), loadgen --procs $cprocs --sources $csrc, $CONN_CHANGES changes at $CONN_RATE/s"
    # the kernel's limits that matter for this many loopback connections
    limits() {
        echo "open_files_hard=$(ulimit -H -n)"
        for k in net.ipv4.ip_local_port_range net.core.somaxconn net.ipv4.tcp_max_syn_backlog \
                net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_count net.ipv4.tcp_mem \
                fs.file-max fs.file-nr; do
            echo "$k=$(sysctl -n "$k" 2>/dev/null | tr -s '\t ' ' ')"
        done
        echo "sockstat_tcp=$(awk '$1 == "TCP:" { $1 = ""; print }' /proc/net/sockstat)"
        echo "mem_available_kb=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo)"
    }
    tcp_mem_pages() { awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat; }
    limits >"$OUT/conn.limits0"
    # Connecting this many clients takes minutes on 2 cores, and clients subscribed early
    # stay silent meanwhile: with pings at their default a connection whose pong the busy
    # worker has not seen 40 s after its last valid frame is dropped without a close frame
    # (a first attempt lost 62,603 of 80,361 subscribed clients that way).  CONN_PING=30s
    # repeats that.
    bench_psql -c "ALTER SYSTEM SET plank.ping_interval = '$CONN_PING'" >/dev/null
    if BENCH_FORCE_RESTART=1 bench_set_workers "$CONN_WORKERS" "$CONN_MAX_CONN"; then
        sleep 1
        WP=$(worker_pids)
        {
            echo "workers=$(echo "$WP" | wc -w)"
            echo "worker_pids=$WP"
            echo "rss_before_kb=$(rss_kb $WP)"
            echo "anon_before_kb=$(status_kb RssAnon $WP)"
            echo "tcp_mem_pages_before=$(tcp_mem_pages)"
            echo "mem_available_before_kb=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo)"
        } >"$OUT/conn.mem"
        bench_reset_table
        # while the clients connect: every 10 s the workers' open files (about one per
        # connection), VmRSS and RssAnon, so that memory per connection is known even
        # when not every client gets in
        (
            t0=$SECONDS
            while sleep 10; do
                fds=0
                for p in $WP; do fds=$((fds + $(ls "/proc/$p/fd" 2>/dev/null | wc -l))); done
                echo "t=$((SECONDS - t0)) fds=$fds rss_kb=$(rss_kb $WP) anon_kb=$(status_kb RssAnon $WP)"
            done
        ) >"$OUT/conn.progress" 2>/dev/null &
        SAMPLER=$!
        if READY_TIMEOUT=660 loadgen conn --clients "$CONN_CLIENTS" --procs "$cprocs" --sources "$csrc" \
                --rows "$CONN_CHANGES" --batch "$CONN_BATCH" --connect-timeout "$CONN_CONNECT_TIMEOUT" \
                --duration 300 --idle 20; then
            sleep 2
            {
                echo "rss_connected_kb=$(rss_kb $WP)"
                echo "anon_connected_kb=$(status_kb RssAnon $WP)"
                echo "tcp_mem_pages_connected=$(tcp_mem_pages)"
                echo "mem_available_connected_kb=$(awk '$1 == "MemAvailable:" { print $2 }' /proc/meminfo)"
                for p in $WP; do
                    echo "worker_${p}_fds=$(ls "/proc/$p/fd" 2>/dev/null | wc -l)"
                    echo "worker_${p}_status=$(grep -E 'VmRSS|RssAnon|RssFile|RssShmem' "/proc/$p/status" | tr -s ' \t' ' ' | tr '\n' ';')"
                done
            } >>"$OUT/conn.mem"
            limits >"$OUT/conn.limits1"
            c0=$(cpu_s $WP)
            writer --rows "$CONN_CHANGES" --rate "$CONN_RATE" >"$OUT/conn.writer" 2>&1 || true
            wait_pid "$BG_PID" 400
            {
                echo "worker_cpu_s=$(calc %.2f "$(cpu_s $WP) - $c0")"
                echo "rss_end_kb=$(rss_kb $WP)"
                echo "anon_end_kb=$(status_kb RssAnon $WP)"
            } >>"$OUT/conn.mem"
        else
            wait_pid "$BG_PID" 60
            limits >"$OUT/conn.limits1"
            grep -iE 'plank' "$BENCH_LOG" | grep -viE 'serving database|checkpoint' | tail -n 200 >"$OUT/conn.serverlog" || true
        fi
        kill "$SAMPLER" 2>/dev/null || true
        wait "$SAMPLER" 2>/dev/null || true
    fi
    bench_psql -c "ALTER SYSTEM RESET plank.ping_interval" -c "SELECT pg_reload_conf()" >/dev/null || true
    grep summary "$OUT/conn.out" >&2 || true
    f=$OUT/conn.out
    csub=$(kv "$f" subscribed); cconn=$(kv "$f" connected)
    if [ "${csub:-0}" = "$CONN_CLIENTS" ]; then cmet=met; else cmet="not met"; fi
    row "$CONN_CLIENTS concurrent WebSocket connections (plank.workers = $CONN_WORKERS, plank.max_connections = $CONN_MAX_CONN each; loadgen $cprocs processes, $csrc source addresses; plank.ping_interval = $CONN_PING)" \
        "${csub:-0} subscribed (${cconn:-0} connected, $(kv "$f" connect_errors) connect errors, $(kv "$f" closed_by_server) closed by the server) in $(kv "$f" connect_ms) ms" \
        "- (a LISTEN connection is a backend: max_connections = 250)" "$CONN_CLIENTS" "$cmet"
    d=$(kv "$f" deliveries); dexp=$(kv "$f" deliveries_expected)
    if [ -n "$d" ] && [ "$d" = "$dexp" ] && [ "$(kv "$f" loss)" = 0 ] && [ "$cmet" = met ]; then dmet=met; else dmet="not met"; fi
    row "$CONN_CLIENTS connections, $CONN_CHANGES single changes ${CONN_RATE}/s: every connection gets each change; p50 / p99 / max to reach all" \
        "${d:-0} of ${dexp:-0} delivered, loss $(kv "$f" loss), duplicates $(kv "$f" duplicates); $(kv "$f" p50_ms) / $(kv "$f" p99_ms) / $(kv "$f" max_ms) ms; worker CPU $(kv "$OUT/conn.mem" worker_cpu_s) s" \
        "-" "every change to every connection" "$dmet"
    if [ -n "$(kv "$OUT/conn.mem" rss_connected_kb)" ] && [ "${cconn:-0}" -gt 0 ]; then
        per() { awk -v a="$1" -v b="$2" -v n="$3" 'BEGIN { if (a ~ /^[0-9]+$/ && b ~ /^[0-9]+$/ && n > 0) printf "%.1f", (a - b) / n; else print "NA" }'; }
        cm=$OUT/conn.mem
        kpair=$(awk -v a="$(kv "$cm" tcp_mem_pages_connected)" -v b="$(kv "$cm" tcp_mem_pages_before)" -v n="$cconn" -v ps="$(getconf PAGESIZE)" \
            'BEGIN { if (n > 0 && a != "" && b != "") printf "%.1f", (a - b) * ps / 1024 / n; else print "NA" }')
        wfds=$(awk -F= '/^worker_[0-9]+_fds=/ { printf "%s%s", (n++ ? " / " : ""), $2 }' "$cm")
        row "$CONN_CLIENTS connections: worker memory (summed over the $CONN_WORKERS workers)" \
            "VmRSS $(mb "$(kv "$cm" rss_connected_kb)") MB ($(mb "$(kv "$cm" rss_before_kb)") MB before): $(per "$(kv "$cm" rss_connected_kb)" "$(kv "$cm" rss_before_kb)" "$cconn") kB per connection; RssAnon $(mb "$(kv "$cm" anon_connected_kb)") MB ($(mb "$(kv "$cm" anon_before_kb)") before): $(per "$(kv "$cm" anon_connected_kb)" "$(kv "$cm" anon_before_kb)" "$cconn") kB per connection; kernel TCP buffers $kpair kB per connection (both ends); open files per worker $wfds" \
            "-" "-" "-"
    elif [ -s "$OUT/conn.progress" ]; then
        # not every client got in: the largest sample taken while they connected
        last=$(awk '{ split($2, a, "="); if (a[2] + 0 >= m) { m = a[2] + 0; l = $0 } } END { print l }' "$OUT/conn.progress")
        lf=$(echo "$last" | sed -E 's/.*fds=([0-9]+).*/\1/'); lr=$(echo "$last" | sed -E 's/.*rss_kb=([0-9]+).*/\1/')
        la=$(echo "$last" | sed -E 's/.*anon_kb=([0-9]+).*/\1/')
        cm=$OUT/conn.mem
        row "$CONN_CLIENTS connections: worker memory while connecting (summed over the $CONN_WORKERS workers; largest sample)" \
            "$lf open files: VmRSS $(mb "$lr") MB ($(mb "$(kv "$cm" rss_before_kb)") MB before): $(awk -v a="$lr" -v b="$(kv "$cm" rss_before_kb)" -v n="$lf" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "NA" }') kB per open file; RssAnon $(mb "$la") MB: $(awk -v a="$la" -v b="$(kv "$cm" anon_before_kb)" -v n="$lf" 'BEGIN { if (n > 0) printf "%.1f", (a - b) / n; else print "NA" }') kB per open file" \
            "-" "-" "-"
    fi
fi

# ------------------------------------------------------------------------------------
if want writer; then
    ensure_workers "$BENCH_WORKERS"
    scenario writer "pgbench -c $PGB_CLIENTS -T $PGB_SECONDS single-row INSERT"
    pgb() { # NAME TABLE
        printf "INSERT INTO %s (ts_us, payload) VALUES (0, repeat('x', 64));\n" "$2" >"$OUT/pgb-$1.sql"
        bench_psql -c "TRUNCATE $2 RESTART IDENTITY" -c "CHECKPOINT"
        "$PGBENCH" -n -h 127.0.0.1 -p "$BENCH_PGPORT" -U postgres -c "$PGB_CLIENTS" -j 2 -T "$PGB_SECONDS" \
            -f "$OUT/pgb-$1.sql" "$BENCH_DB" >"$OUT/pgb-$1.out" 2>&1 || true
        awk '/^tps = / { printf "%.0f", $3 }' "$OUT/pgb-$1.out"
    }
    tps_plain=$(pgb plain bench_plain)
    # tracked, with one subscribed client draining the events
    if loadgen pgbclient --clients 1 --parse scan --duration $((PGB_SECONDS + 30)) --idle 3; then
        tps_tracked=$(pgb tracked bench_events)
        wait_pid "$BG_PID" 60
    else
        tps_tracked=NA
    fi
    # floor: the cheapest NOTIFY capture (plpgsql pg_notify) with one raw listener
    if floor pgbfloor --channel bench_floor --parse scan --duration $((PGB_SECONDS + 30)) --idle 3; then
        tps_floor=$(pgb floor bench_notify)
        wait_pid "$BG_PID" 60
    else
        tps_floor=NA
    fi
    pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0 && a ~ /^[0-9.]+$/) printf "%.0f", 100 * a / b; else print "NA" }'; }
    ratio=$(pct "$tps_tracked" "$tps_plain"); fratio=$(pct "$tps_floor" "$tps_plain")
    row "Writer cost: pgbench INSERT TPS tracked / untracked ($PGB_CLIENTS clients, 1 subscriber)" \
        "$ratio% ($tps_tracked vs $tps_plain TPS)" "$fratio% ($tps_floor TPS, plpgsql pg_notify + 1 listener)" ">= 85%" "$(met "$ratio" ">=" 85)"
fi

# ------------------------------------------------------------------------------------
if want bulk; then
    ensure_workers "$BENCH_WORKERS"
    scenario bulk "INSERT ... SELECT and UPDATE of $BULK_ROWS rows"
    bench_psql -c "TRUNCATE bench_plain RESTART IDENTITY"
    writer --table bench_plain --bulk-insert "$BULK_ROWS" >"$OUT/bulk-plain-ins.writer" 2>&1 || true
    writer --table bench_plain --bulk-update >"$OUT/bulk-plain-upd.writer" 2>&1 || true
    bulk() { # NAME TOOL(loadgen|floor) WRITER-ARGS...
        local name=$1 tool=$2
        shift 2
        if "$tool" "$name" --clients 1 --rows "$BULK_ROWS" --duration 300 --idle 20; then
            writer "$@" >"$OUT/$name.writer" 2>&1 || true
            wait_pid "$BG_PID" 330
        fi
    }
    WP=$(worker_pids)
    rss_before=$(rss_kb $WP)
    # with the default plank.max_client_buffer, then with a buffer that holds a whole statement
    bench_reset_table
    bulk bulkins loadgen --bulk-insert "$BULK_ROWS"
    bulk bulkupd loadgen --bulk-update
    bench_psql -c "ALTER SYSTEM SET plank.max_client_buffer = '$BULK_BUFFER'" -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    bench_reset_table
    bulk bulkinsbig loadgen --bulk-insert "$BULK_ROWS"
    bulk bulkupdbig loadgen --bulk-update
    bench_psql -c "ALTER SYSTEM RESET plank.max_client_buffer" -c "SELECT pg_reload_conf()" >/dev/null
    { echo "VmRSS: $(rss_kb $WP) kB"; echo "VmHWM: $(status_kb VmHWM $WP) kB"; } >"$OUT/bulk.rss"
    bench_reset_table
    # No raw-LISTEN floor here since the statement triggers: a bulk statement's
    # notifications are a few dozen references to chunks in plank.overflow, not rows, so
    # listen_floor would wait its whole --duration for ids that never come (BULK_FLOOR=1
    # runs it anyway).
    if [ "${BULK_FLOOR:-0}" = 1 ]; then
        floor bulkinsfloor --rows "$BULK_ROWS" --duration 60 --idle 20 &&
            { writer --bulk-insert "$BULK_ROWS" >"$OUT/bulkinsfloor.writer" 2>&1 || true; wait_pid "$BG_PID" 90; }
        floor bulkupdfloor --rows "$BULK_ROWS" --duration 60 --idle 20 &&
            { writer --bulk-update >"$OUT/bulkupdfloor.writer" 2>&1 || true; wait_pid "$BG_PID" 90; }
    fi
    reach() { # NAME: seconds from statement start to the last row at the client, or why not
        awk -v s="$(kv "$OUT/$1.writer" start_us)" -v l="$(kv "$OUT/$1.out" last_rx_us)" \
            -v d="$(kv "$OUT/$1.out" deliveries)" -v n="$BULK_ROWS" -v c="$(kv "$OUT/$1.out" close_codes)" \
            'BEGIN { if (s == "") { print "-"; exit } if (d + 0 >= n && s > 0) printf "%.2f s", (l - s) / 1e6
                     else printf "never: %d rows, then closed (%s)", d, (c == "" ? "no close frame" : "code:count " c) }'
    }
    for op in ins upd; do
        what=$([ $op = ins ] && echo "INSERT ... SELECT" || echo "UPDATE")
        row "Bulk $what of $BULK_ROWS rows: statement time (untracked table: $(kv "$OUT/bulk-plain-$op.writer" seconds) s)" \
            "$(kv "$OUT/bulk$op.writer" seconds) s" "$(fs=$(kv "$OUT/bulk${op}floor.writer" seconds); echo "${fs:+$fs s}${fs:--}")" "-" "-"
        row "Bulk $what: statement start to last row at 1 client (plank.max_client_buffer default)" \
            "$(reach bulk$op)" "$(reach bulk${op}floor)" "all rows reach the client" \
            "$([ "$(kv "$OUT/bulk$op.out" loss)" = 0 ] && echo met || echo "not met")"
        row "Bulk $what: same with plank.max_client_buffer = $BULK_BUFFER" \
            "$(reach bulk${op}big)" "$(reach bulk${op}floor)" "all rows reach the client" \
            "$([ "$(kv "$OUT/bulk${op}big.out" loss)" = 0 ] && echo met || echo "not met")"
    done
    row "Worker memory after the bulk statements" \
        "VmRSS $(awk '/VmRSS/ { printf "%.0f", $2 / 1024 }' "$OUT/bulk.rss") MB, peak VmHWM $(awk '/VmHWM/ { printf "%.0f", $2 / 1024 }' "$OUT/bulk.rss") MB (before: $(awk -v k="${rss_before:-0}" 'BEGIN { printf "%.0f", k / 1024 }') MB)" \
        "-" "-" "-"
fi

# ------------------------------------------------------------------------------------
if want rls; then
    ensure_workers "$BENCH_WORKERS"
    scenario rls "$RLS_CLIENTS clients under row-level security, writer flat out, $RLS_ROWS rows"
    WP=$(worker_pids)
    bench_reset_table bench_rls
    if loadgen rls --table public.bench_rls --clients "$RLS_CLIENTS" --rows "$RLS_ROWS" --parse scan \
            --duration 300 --idle 10; then
        CP0=$(bench_check_pids)
        w0=$(cpu_s $WP); k0=$( [ -n "$CP0" ] && cpu_s $CP0 || echo 0)
        t0=$(date +%s.%N)
        writer --table bench_rls --rows "$RLS_ROWS" >"$OUT/rls.writer" 2>&1 || true
        wait_pid "$BG_PID" 320
        t1=$(date +%s.%N)
        w1=$(cpu_s $WP)
        CP1=$(bench_check_pids)
        # check workers started during the run count from 0
        k1=$( [ -n "$CP1" ] && cpu_s $CP1 || echo 0)
        [ "$CP0" = "$CP1" ] || k0=0
        {
            echo "worker_cpu_s=$(calc %.2f "$w1 - $w0")"
            echo "check_cpu_s=$(calc %.2f "$k1 - $k0")"
            echo "wall_s=$(calc %.2f "$t1 - $t0")"
        } >>"$OUT/rls.out"
    fi
    grep summary "$OUT/rls.out" >&2 || true
    d=$(kv "$OUT/rls.out" deliveries); dexp=$(kv "$OUT/rls.out" deliveries_expected)
    dps=$(kv "$OUT/rls.out" deliveries_per_s); loss=$(kv "$OUT/rls.out" loss)
    wcpu=$(kv "$OUT/rls.out" worker_cpu_s); kcpu=$(kv "$OUT/rls.out" check_cpu_s)
    if [ "$d" = "$dexp" ] && [ "$loss" = 0 ]; then allgot=met; else allgot="not met"; fi
    row "RLS $RLS_CLIENTS clients, writer flat out ($RLS_ROWS rows): deliveries/s" \
        "$dps/s, $d of $dexp delivered, loss $loss" "-" "every event to every client" "$allgot"
    row "RLS: CPU per change (worker + check workers)" \
        "$(awk -v w="$wcpu" -v k="$kcpu" -v n="$RLS_ROWS" 'BEGIN { if (n > 0) printf "%.1f us + %.1f us", w * 1e6 / n, k * 1e6 / n; else print "NA" }')" \
        "-" "-" "-"
fi

# ------------------------------------------------------------------------------------
if want filters; then
    ensure_workers "$BENCH_WORKERS"
    scenario filters "$FLT_SUBS subscriptions with distinct filters, $FLT_ROWS single-row transactions"
    bench_psql -c "ALTER SYSTEM SET plank.max_subscriptions = $(( (FLT_SUBS + FLT_CONNS - 1) / FLT_CONNS ))" \
        -c "SELECT pg_reload_conf()" >/dev/null
    sleep 1
    /usr/bin/python3 "$BENCH_DIR/filters.py" --port "$BENCH_PORT" --dsn "$CONNINFO" \
        --conns "$FLT_CONNS" --subs $(( (FLT_SUBS + FLT_CONNS - 1) / FLT_CONNS )) \
        --rows "$FLT_ROWS" --rate "$FLT_RATE" >"$OUT/filters.out" 2>&1 || true
    bench_psql -c "ALTER SYSTEM RESET plank.max_subscriptions" -c "SELECT pg_reload_conf()" >/dev/null
    grep summary "$OUT/filters.out" >&2 || tail -5 "$OUT/filters.out" >&2
    for shape in ops plain; do
        what="range + like"; [ "$shape" = plain ] && what="plain equality"
        row "Filters: $(kv "$OUT/filters.out" ${shape}_subscriptions) subscriptions on one table, $what, $FLT_ROWS rows at $FLT_RATE/s: worker CPU per change; commit-to-client p50 / p99" \
            "$(kv "$OUT/filters.out" ${shape}_us_per_change) us; $(kv "$OUT/filters.out" ${shape}_p50_ms) / $(kv "$OUT/filters.out" ${shape}_p99_ms) ms (loss $(kv "$OUT/filters.out" ${shape}_loss))" \
            "-" "-" "-"
    done
fi

# ------------------------------------------------------------------------------------
if want stall; then
    ensure_workers "$BENCH_WORKERS"
    scenario stall "$STALL_CLIENTS clients, $STALL_EVENTS events at $STALL_RATE/s ($STALL_PER_TXN per transaction), without and with a stalled client"
    stall() { # NAME NSTALL
        bench_reset_table
        if loadgen "$1" --clients "$STALL_CLIENTS" --stall "$2" --rows "$STALL_EVENTS" --parse scan \
                --duration 900 --idle 10 --drain 10; then
            local wp c0
            wp=$(worker_pids)
            c0=$(cpu_s $wp)
            writer --rows "$STALL_EVENTS" --rate "$STALL_RATE" --per-txn "$STALL_PER_TXN" --max-seconds 900 \
                >"$OUT/$1.writer" 2>&1 || true
            wait_pid "$BG_PID" 930
            echo "worker_cpu_s=$(calc %.2f "$(cpu_s $wp) - $c0")" >>"$OUT/$1.out"
        fi
    }
    # A client that stops reading also stops answering pings: with plank.ping_interval at
    # its default it is dropped by the ping timeout (no close frame) before its buffer
    # fills at this rate.  Pings are off here so that the buffer bound is what is tested.
    bench_psql -c "ALTER SYSTEM SET plank.ping_interval = 0" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
    sleep 1
    n1013_0=$(grep -cE 'plank closing connection .*plank\.max_client_buffer' "$BENCH_LOG" || true)
    stall stall0 0
    stall stall1 1
    n1013_1=$(grep -cE 'plank closing connection .*plank\.max_client_buffer' "$BENCH_LOG" || true)
    bench_psql -c "ALTER SYSTEM RESET plank.ping_interval" -c "SELECT pg_reload_conf()" >/dev/null 2>&1 || true
    grep summary "$OUT/stall0.out" "$OUT/stall1.out" >&2 || true
    for n in 0 1; do
        f=$OUT/stall$n.out
        d=$(kv "$f" deliveries); de=$(kv "$f" deliveries_expected)
        if [ "$d" = "$de" ] && [ "$(kv "$f" loss)" = 0 ]; then ok=met; else ok="not met"; fi
        if [ $n = 0 ]; then
            label="Stall: $STALL_CLIENTS clients x $STALL_EVENTS events, no stalled client: p99 (p50)"
            extra=""
        else
            label="Stall: same with 1 stalled client: others' p99 (p50)"
            extra="; stalled client closed with 1013: $(kv "$f" stalled_closed_1013) (server log: $((n1013_1 - n1013_0)) closes)"
        fi
        row "$label" "$(kv "$f" p99_ms) ms ($(kv "$f" p50_ms) ms), $d of $de delivered, worker CPU $(kv "$f" worker_cpu_s) s, loadgen CPU $(kv "$f" loadgen_cpu_s) s$extra" "-" \
            "others get everything" "$ok"
    done
fi

# ------------------------------------------------------------------------------------
if want profile && [ "$PROFILE" = 1 ] && command -v perf >/dev/null &&
        perf record -e cpu-clock -o "$OUT/perf-check.data" -- true >/dev/null 2>&1; then
    ensure_workers "$BENCH_WORKERS"
    scenario profile "perf record -e cpu-clock -g of the worker, $FAN_CLIENTS clients, $PROFILE_ROWS rows"
    WP=$(worker_pids)
    bench_reset_table
    if loadgen prof --clients "$FAN_CLIENTS" --rows "$PROFILE_ROWS" --parse scan --duration 300 --idle 10; then
        perf record -e cpu-clock -g -o "$OUT/worker.perf" -p "${WP// /,}" >/dev/null 2>"$OUT/perf.err" &
        PERF_PID=$!
        sleep 0.5
        writer --rows "$PROFILE_ROWS" >"$OUT/prof.writer" 2>&1 || true
        wait_pid "$BG_PID" 320
        kill -INT "$PERF_PID" 2>/dev/null || true
        wait_pid "$PERF_PID" 30
        report() { perf report -i "$OUT/worker.perf" --stdio -g none "$@" 2>/dev/null | grep '%' || true; }
        # plank.so is often reinstalled while the server runs, and perf cannot read a
        # deleted file: name its addresses from the copy taken before the server started
        name_plank() {
            local line addr
            while IFS= read -r line; do
                if [[ $line == *"plank.so"* && $line =~ 0x([0-9a-f]+) ]]; then
                    addr=$(addr2line -f -e "$OUT/plank.so" "0x${BASH_REMATCH[1]}" 2>/dev/null | head -n 1)
                    line="$line  <- $addr"
                fi
                printf '%s\n' "$line"
            done
        }
        {
            echo "# perf report --no-children --sort dso (worker, $FAN_CLIENTS clients, $PROFILE_ROWS rows)"
            report --no-children --sort dso | head -8
            echo "# perf report --no-children --sort dso,sym: top self costs"
            report --no-children --sort dso,sym | head -25 | name_plank
            echo "# plank.so self cost by function (addresses named from the copy of plank.so)"
            report --no-children --sort dso,sym | grep 'plank.so' | name_plank |
                awk '{ f = $NF; sub(/%/, "", $1); t[f] += $1 } END { for (f in t) printf "%7.2f%%  %s\n", t[f], f }' |
                sort -rn | head -10
            echo "# perf report --children --sort sym: top inclusive costs"
            report --children --sort sym | head -40 | name_plank
        } >"$OUT/profile.txt"
        blog "profile: $OUT/profile.txt"
        sed -n '1,8p' "$OUT/profile.txt" >&2
    fi
elif want profile; then
    blog "perf does not work here: no profile (PROFILE=$PROFILE)"
fi

# ------------------------------------------------------------------------------------
{
    echo
    cat "$OUT/machine.txt"
    echo "Plank: loadgen over WebSocket; floor: listen_floor (raw libpq LISTEN on the same notifications);"
    echo "latency = receive time - ts_us the writer put in the row (CLOCK_REALTIME, taken $([ "$LAT_TS" = server ] && echo "by the server while the INSERT runs" || echo "just before the INSERT is sent"))"
    echo
    echo "| scenario | Plank | raw-LISTEN floor | target | met |"
    echo "|---|---|---|---|---|"
    for r in "${ROWS[@]}"; do
        IFS='|' read -r a b c t m <<<"$r"
        echo "| $a | $b | $c | $t | $m |"
    done
    echo
    echo "load average (1 min) at the start of each scenario:${LOADS%,}"
    echo "raw outputs: $OUT"
} | tee "$OUT/table.md"
