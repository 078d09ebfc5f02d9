#!/usr/bin/env bash
# test-version.sh VERSION [core|full]: build Plank against another PostgreSQL major
# version and run pg_regress and the e2e suite (core: the modules below; full: all of
# test/e2e) on a throwaway cluster of that version.  scripts/test.sh runs it for each
# version of PLANK_PG_VERSIONS; it also runs on its own.
#
# The server comes from /opt/plank-pg/VERSION (pg_config, initdb, pg_ctl, pg_regress):
# the install trees kept in ../shared/postgresql beside the repository (or
# /work/shared/postgresql, or PLANK_PG_TREES), unpacked by their install.sh when
# /opt/plank-pg/VERSION is missing.  Without a tree the script says so and exits 77
# ("skipped").  The build is out of the source tree, in a fresh temporary directory,
# so the tree's own build (PostgreSQL 15) is left alone.
#
# Environment: PLANK_VERSIONS_PGPORT (PostgreSQL's ports, default 5470: the test
# cluster, then pg_regress's temporary instance, test_workers.py's and
# test_security_tls.py's clusters), PLANK_VERSIONS_PORT (Plank's ports, default 18070:
# the two test databases, then pg_regress, test_workers.py, test_security_tls.py),
# PG_CFLAGS (e.g. -Werror), PYTEST_ARGS (more pytest arguments, e.g. "-k jwt").
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# shellcheck source=lib.sh
source "$ROOT/scripts/lib.sh"

V=${1:?usage: test-version.sh VERSION [core|full]}
MODE=${2:-core}
log() { printf '[pg%s] %s\n' "$V" "$*"; }

# The core of the e2e suite: changes, transactions and commit markers, channels,
# resume, security, snapshot, overflow, and what differs between versions.
CORE=(test_changes.py test_commit.py test_channels.py test_resume.py test_resume_commit.py
      test_security_authz.py test_security_injection.py test_security_isolation.py
      test_security_jwt.py test_security_search_path.py test_security_sql.py
      test_security_tls.py test_security_transport.py test_snapshot.py test_overflow.py
      test_versions.py)

# --- the PostgreSQL tree --------------------------------------------------------------
PREFIX=/opt/plank-pg/$V
if [ ! -x "$PREFIX/bin/pg_config" ]; then
    trees=""
    for d in "${PLANK_PG_TREES:-}" "$ROOT/../shared/postgresql" /work/shared/postgresql; do
        if [ -n "$d" ] && [ -f "$d/install.sh" ] && [ -f "$d/postgresql-$V.tar.xz" ]; then
            trees=$(cd "$d" && pwd)
            break
        fi
    done
    if [ -z "$trees" ]; then
        log "skipped: no PostgreSQL $V install tree (looked for postgresql-$V.tar.xz in ../shared/postgresql and /work/shared/postgresql)"
        exit 77
    fi
    log "unpacking PostgreSQL $V from $trees into $PREFIX"
    as_root bash "$trees/install.sh" "$V" >/dev/null
fi
PGBIN=$PREFIX/bin
log "server: $("$PGBIN/postgres" --version)"

# --- build and install ----------------------------------------------------------------
BUILD=$(mktemp -d "/tmp/plank-build-$V.XXXXXX")
cleanup() { rm -rf "$BUILD"; }
trap cleanup EXIT
# from a copy of the sources without build products: objects that a build in the source
# tree left there would be found through VPATH and linked from the wrong place
SRC=$BUILD/source
mkdir -p "$SRC"
(cd "$ROOT" && tar cf - --exclude='*.o' --exclude='*.bc' --exclude='*.so' \
    Makefile plank.control plank--1.0.sql src test $( [ -d frontend/dist ] && echo frontend/dist )) |
    tar xf - -C "$SRC"
log "building in $BUILD (make -f $SRC/Makefile VPATH=$SRC${PG_CFLAGS:+, PG_CFLAGS=$PG_CFLAGS})"
make -s -j"$(nproc)" -C "$BUILD" -f "$SRC/Makefile" VPATH="$SRC" PG_CONFIG="$PGBIN/pg_config"
as_root make -s -C "$BUILD" -f "$SRC/Makefile" VPATH="$SRC" PG_CONFIG="$PGBIN/pg_config" install >/dev/null
log "installed into $("$PGBIN/pg_config" --pkglibdir)"

# --- pg_regress and the e2e suite (scripts/test.sh with this server) -------------------
MODULES=test/e2e
if [ "$MODE" = core ]; then
    MODULES="${CORE[*]/#/test/e2e/}"
fi
PGPORT=${PLANK_VERSIONS_PGPORT:-5470}
PORT=${PLANK_VERSIONS_PORT:-18070}
log "pg_regress and the $MODE e2e suite: PostgreSQL on $PGPORT, Plank on $PORT"
PLANK_PGBIN=$PGBIN PLANK_BUILD_DIR=$BUILD PLANK_SKIP_SETUP=1 \
    PLANK_TEST_PGPORT=$PGPORT PLANK_TEST_PORT=$PORT PLANK_REGRESS_PORT=$((PORT + 2)) \
    PLANK_REGRESS_PGPORT=$((PGPORT + 1)) \
    PLANK_WORKERS_PGPORT=$((PGPORT + 2)) PLANK_WORKERS_PORT=$((PORT + 3)) \
    PLANK_TLS_PGPORT=$((PGPORT + 3)) PLANK_TLS_PORT=$((PORT + 4)) \
    PLANK_TEST_STEPS="regress e2e serverlog" PLANK_PG_VERSIONS=none \
    PLANK_E2E_MODULES="$MODULES" PYTEST_ARGS="${PYTEST_ARGS:-}" bash "$ROOT/scripts/test.sh"
