#!/usr/bin/env bash
# test/fuzz/run.sh: build Plank's libFuzzer harnesses and run each for a bounded time.
#
#   fuzz_jws    src/jws.c (plank_jws_split, plank_base64url_decode), and the JSON parser
#               on each decoded header and payload
#   fuzz_json   PostgreSQL's JSON parser (pg_parse_json), the parser behind jsonb_in,
#               walked the way src/protocol.c reads a client message
#   fuzz_payload  plank_json_members() (src/jsonspan.c), which reads every change payload
#               the worker delivers (routing, filters, column restriction, RLS images)
#
# Built with clang 14 -fsanitize=fuzzer,address,undefined (UBSan findings abort, so they
# count as crashes).  The parser under test is PostgreSQL's own src/common code: by
# default the script compiles jsonapi.c, base64.c, stringinfo.c and wchar.c from the
# Debian source package of postgresql-15 with the same instrumentation (coverage
# guidance and ASan checks then reach inside the parser), and takes the rest (palloc,
# etc.) from libpgcommon.a.  When the source cannot be had it links those files from
# libpgcommon.a too, uninstrumented, and says so.
#
# Everything is built and written under a temp dir (never in the repository); the seed
# corpus test/fuzz/corpus/<harness>/ is only read.  Exits non-zero if a harness crashed
# (the crashing input is kept and its path printed) or could not be built.
#
# Environment:
#   PLANK_FUZZ_SECONDS    seconds per harness (default 60)
#   PLANK_FUZZ_HARNESSES  which to run (default "jws json payload")
#   PLANK_FUZZ_PGSRC      auto (default): Debian source package, cached; lib: libpgcommon.a
#                         only; or the path of a PostgreSQL 15 source tree
#   PLANK_FUZZ_CACHE      where the source package is kept (default $TMPDIR/plank-fuzz-cache)
#   PLANK_FUZZ_KEEP=1     keep the work dir (binaries, grown corpus) even without a crash
#   PLANK_FUZZ_ARGS       extra libFuzzer arguments (e.g. "-max_len=65536 -jobs=2")
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
FUZZ=$ROOT/test/fuzz
SECS=${PLANK_FUZZ_SECONDS:-60}
HARNESSES=${PLANK_FUZZ_HARNESSES:-"jws json payload"}
PGSRC=${PLANK_FUZZ_PGSRC:-auto}
TMP=${TMPDIR:-/tmp}
CACHE=${PLANK_FUZZ_CACHE:-$TMP/plank-fuzz-cache}
CC=clang-14
PGINC=(-I/usr/include/postgresql/15/server -I/usr/include/postgresql/internal -I/usr/include/postgresql)
PGLIB=/usr/lib/postgresql/15/lib

log() { printf '[fuzz] %s\n' "$*"; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# --- tools -----------------------------------------------------------------------------
apt_updated=0
apt_install() {
    if [ $apt_updated -eq 0 ]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null
        apt_updated=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}

need=()
command -v "$CC" >/dev/null || need+=(clang-14)
[ -f "$PGLIB/libpgcommon.a" ] && [ -f /usr/include/postgresql/15/server/common/jsonapi.h ] \
    || need+=(postgresql-server-dev-15)
command -v bzip2 >/dev/null || need+=(bzip2)
if [ ${#need[@]} -gt 0 ]; then
    apt_install "${need[@]}"
fi

WORK=$(mktemp -d "$TMP/plank-fuzz.XXXXXX")
BUILD=$WORK/build
mkdir -p "$BUILD" "$WORK/artifacts"
keep=${PLANK_FUZZ_KEEP:-0}
cleanup() {
    if [ "$keep" = 1 ]; then
        log "work dir kept: $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT

# libFuzzer's runtime is in libclang-rt-14-dev (Debian); some setups call it libfuzzer-14-dev
printf '#include <stddef.h>\n#include <stdint.h>\nint LLVMFuzzerTestOneInput(const uint8_t *d, size_t n) { return 0; }\n' \
    >"$BUILD/probe.c"
if ! $CC -fsanitize=fuzzer,address,undefined "$BUILD/probe.c" -o "$BUILD/probe" 2>/dev/null; then
    apt_install libclang-rt-14-dev || apt_install libfuzzer-14-dev
    $CC -fsanitize=fuzzer,address,undefined "$BUILD/probe.c" -o "$BUILD/probe"
fi

# --- PostgreSQL's parser sources ---------------------------------------------------------
PG_FILES=(jsonapi base64 stringinfo wchar)

# Print the src/common dir of a PostgreSQL 15 source that has PG_FILES, or nothing.
have_files() {  # DIR
    local f
    for f in "${PG_FILES[@]}"; do [ -f "$1/$f.c" ] || return 1; done
}

# Download the Debian source package of postgresql-15 (the installed version if the archive
# still has it, else another 15.x), with apt-get source and a private deb-src list made from
# this machine's deb entries (the system's apt configuration is not touched).
fetch_pg_source() {
    local apt="$CACHE/apt" dir
    for dir in "$CACHE"/postgresql-15.*/src/common; do
        if have_files "$dir"; then echo "$dir"; return 0; fi
    done
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/sources.list.d" "$CACHE/dl"
    rm -f "$apt/sources.list.d"/*
    local f n=0
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        sed -n 's/^[[:space:]]*deb[[:space:]]/deb-src /p' "$f" >"$apt/sources.list.d/src$n.list"
        n=$((n + 1))
    done
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        sed 's/^Types:.*/Types: deb-src/' "$f" >"$apt/sources.list.d/src$n.sources"
        n=$((n + 1))
    done
    local opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$apt/sources.list.d"
                -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache")
    apt-get "${opts[@]}" update -q >"$CACHE/apt-update.log" 2>&1 || true
    local installed versions v
    installed=$(dpkg-query -W -f='${Version}' postgresql-server-dev-15 2>/dev/null || true)
    versions=$( { echo "$installed"; apt-cache "${opts[@]}" showsrc postgresql-15 2>/dev/null \
                  | sed -n 's/^Version: //p' | sort -rV; } | awk 'NF && !seen[$0]++')
    for v in $versions; do
        rm -rf "${CACHE:?}/dl"/*
        if (cd "$CACHE/dl" && apt-get "${opts[@]}" source --download-only "postgresql-15=$v") \
                >"$CACHE/apt-source.log" 2>&1; then
            local tarball
            tarball=$(ls "$CACHE"/dl/postgresql-15_*.orig.tar.* 2>/dev/null | head -n 1)
            [ -n "$tarball" ] || continue
            local members=()
            for f in "${PG_FILES[@]}"; do members+=("*/src/common/$f.c"); done
            if tar -xf "$tarball" -C "$CACHE" --wildcards "${members[@]}" 2>>"$CACHE/apt-source.log"; then
                rm -rf "${CACHE:?}/dl"
                for dir in "$CACHE"/postgresql-15.*/src/common; do
                    if have_files "$dir"; then echo "$dir"; return 0; fi
                done
            fi
        fi
    done
    return 1
}

SRCDIR=""
case $PGSRC in
    lib) ;;
    auto)
        if SRCDIR=$(fetch_pg_source); then :; else
            SRCDIR=""
            log "WARNING: could not get the postgresql-15 source package (see $CACHE/apt-*.log);"
            log "WARNING: linking the parser from libpgcommon.a: no coverage guidance or ASan checks inside it"
        fi ;;
    *)
        SRCDIR=$PGSRC
        [ -f "$SRCDIR/src/common/jsonapi.c" ] && SRCDIR=$SRCDIR/src/common
        have_files "$SRCDIR" || { log "no ${PG_FILES[*]} (.c) in $PGSRC"; exit 1; } ;;
esac

# --- build -----------------------------------------------------------------------------
CFLAGS=(-g -O1 -fno-omit-frame-pointer -Wall -Wno-ignored-attributes
        -fsanitize=address,undefined -fno-sanitize-recover=undefined -DFRONTEND "${PGINC[@]}")
objs=()
if [ -n "$SRCDIR" ]; then
    log "parser: instrumented from $SRCDIR (installed headers: postgresql-server-dev-15 $(dpkg-query -W -f='${Version}' postgresql-server-dev-15 2>/dev/null || echo '?'))"
    for f in "${PG_FILES[@]}"; do
        $CC "${CFLAGS[@]}" -fsanitize=fuzzer-no-link -w -c "$SRCDIR/$f.c" -o "$BUILD/pg_$f.o"
        objs+=("$BUILD/pg_$f.o")
    done
    parser_mode="instrumented PostgreSQL source ($(basename "$(dirname "$(dirname "$SRCDIR")")"))"
else
    parser_mode="libpgcommon.a (not instrumented)"
    log "parser: $parser_mode"
fi
$CC "${CFLAGS[@]}" -fsanitize=fuzzer-no-link -I"$ROOT/src" -c "$ROOT/src/jws.c" -o "$BUILD/jws.o"
$CC "${CFLAGS[@]}" -fsanitize=fuzzer-no-link -I"$ROOT/src" -c "$ROOT/src/jsonspan.c" -o "$BUILD/jsonspan.o"

build_ok=1
for h in $HARNESSES; do
    extra=()
    [ "$h" = jws ] && extra=("$BUILD/jws.o")
    [ "$h" = payload ] && extra=("$BUILD/jsonspan.o")
    if ! $CC "${CFLAGS[@]}" -fsanitize=fuzzer -I"$ROOT/src" -I"$FUZZ" "$FUZZ/fuzz_$h.c" \
            "${extra[@]}" "${objs[@]}" "$PGLIB/libpgcommon.a" "$PGLIB/libpgport.a" -lm \
            -o "$BUILD/fuzz_$h"; then
        log "fuzz_$h: build failed"
        build_ok=0
    fi
done
[ $build_ok -eq 1 ] || exit 1

# --- run -------------------------------------------------------------------------------
passed=0
failed=0
results=()
for h in $HARNESSES; do
    corpus=$WORK/corpus-$h
    mkdir -p "$corpus"
    dict=$FUZZ/$h.dict
    # the parser drops palloc'd strings on syntax errors (the server's memory context
    # takes them back), so leak detection is for the harnesses whose code frees everything
    leaks=1
    [ "$h" = json ] && leaks=0
    [ "$h" = payload ] && leaks=0
    log "fuzz_$h: ${SECS}s"
    set +e
    # shellcheck disable=SC2086
    ASAN_OPTIONS=detect_leaks=$leaks:abort_on_error=1:symbolize=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        "$BUILD/fuzz_$h" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -detect_leaks=$leaks -dict="$dict" \
        -artifact_prefix="$WORK/artifacts/$h-" ${PLANK_FUZZ_ARGS:-} \
        "$corpus" "$FUZZ/corpus/$h" >"$WORK/fuzz_$h.log" 2>&1 </dev/null
    rc=$?
    set -e
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$WORK/fuzz_$h.log" | tail -n 1)
    cov=$(grep -o 'cov: [0-9]*' "$WORK/fuzz_$h.log" | tail -n 1 | cut -d' ' -f2)
    units=$(find "$corpus" -type f | wc -l)
    crashes=$(find "$WORK/artifacts" -name "$h-*" -type f | wc -l)
    if [ -z "$execs" ]; then
        execs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$WORK/fuzz_$h.log" | tail -n 1)
    fi
    line=$(printf 'fuzz_%-5s %12s executions in %ss, coverage %s, corpus %s new inputs, %s crashes' \
        "$h" "${execs:-?}" "$SECS" "${cov:-?}" "$units" "$crashes")
    if [ $rc -ne 0 ] || [ "$crashes" -gt 0 ]; then
        failed=$((failed + 1))
        keep=1
        results+=("$line  FAILED (exit $rc)")
        log "fuzz_$h FAILED (exit $rc); the end of its log:"
        grep -v '^#[0-9]' "$WORK/fuzz_$h.log" | tail -n 60
        for a in "$WORK"/artifacts/"$h"-*; do
            [ -f "$a" ] || continue
            log "crashing input: $a (base64: $(head -c 300 "$a" | base64 -w0))"
            log "reproduce: $BUILD/fuzz_$h $a"
        done
    else
        passed=$((passed + 1))
        results+=("$line")
    fi
done

echo
log "parser: $parser_mode"
printf '%s\n' "${results[@]}"
printf 'harnesses: %d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
