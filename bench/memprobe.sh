#!/usr/bin/env bash
# bench/memprobe.sh: where a connection's memory goes in the worker.
#
# Starts the benchmark's throwaway cluster (bench/lib.sh: PostgreSQL on
# 127.0.0.1:${BENCH_PGPORT:-5498}, Plank on 127.0.0.1:${BENCH_PORT:-18096}), takes the
# worker's /proc status, glibc's malloc_stats() and PostgreSQL's
# MemoryContextStats(TopMemoryContext) (both called in the worker through gdb; they
# print to the server log), connects N clients with bench/loadgen, each subscribed to
# public.bench_events, takes the same again, and prints the difference per
# connection: the whole process (VmRSS, RssAnon, RssShmem), what malloc has handed
# out, and how much of that is PostgreSQL memory contexts (the rest is
# libwebsockets' per-connection state).  docs/BENCHMARKS.md quotes its output.
#   N=5000 bash bench/memprobe.sh
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$BENCH_DIR/lib.sh"
N=${N:-5000}
OUT=$(mktemp -d /tmp/plank-memprobe.XXXXXX)

cleanup() { bench_cluster_down; rm -rf "$OUT"; }
trap cleanup EXIT

bench_deps
command -v gdb >/dev/null || {
    as_root apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq gdb >/dev/null
}
bench_build
bench_cluster_up
W=$(bench_worker_pids)

# snap NAME: /proc status fields and the two allocator reports, as key=value lines
snap() {
    local mark=$OUT/$1.mark
    awk '/^(VmRSS|RssAnon|RssShmem):/ { print $1 "=" $2 }' "/proc/$W/status" | tr -d ':'
    wc -c <"$BENCH_LOG" >"$mark"
    gdb -p "$W" -batch -ex 'call (void) malloc_stats()' \
        -ex 'call (void) MemoryContextStats(TopMemoryContext)' >/dev/null 2>&1
    sleep 0.5
    tail -c +"$(( $(cat "$mark") + 1 ))" "$BENCH_LOG" | awk '
        /^Total \(incl. mmap\)/ { total = 1 }
        total && /in use bytes/ { print "malloc_in_use=" $NF; total = 0 }
        /^Grand total:/ { print "contexts_total=" $3 }'
}

sleep 1
snap before >"$OUT/before"
rm -f "$OUT/ready"
"$BENCH_DIR/loadgen" --port "$BENCH_PORT" --clients "$N" --rows 1 --duration 60 \
    --ready-file "$OUT/ready" >"$OUT/loadgen.out" 2>&1 &
LG=$!
wait_file "$OUT/ready" 300 "$LG"
sleep 1
snap after >"$OUT/after"
kill "$LG" 2>/dev/null || true
wait "$LG" 2>/dev/null || true

v() { awk -F= -v k="$2" '$1 == k { print $2 }' "$OUT/$1"; }
per() { awk -v a="$1" -v b="$2" -v n="$N" -v s="$3" 'BEGIN { printf "%.2f", (b - a) * s / n / 1024 }'; }
echo "connections=$N"
for k in VmRSS RssAnon RssShmem; do
    echo "${k}_before_kb=$(v before $k) ${k}_after_kb=$(v after $k) ${k}_per_connection_kb=$(per "$(v before $k)" "$(v after $k)" 1024)"
done
echo "malloc_in_use_per_connection_kb=$(per "$(v before malloc_in_use)" "$(v after malloc_in_use)" 1)"
echo "memory_contexts_per_connection_kb=$(per "$(v before contexts_total)" "$(v after contexts_total)" 1)"
