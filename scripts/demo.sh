#!/usr/bin/env bash
# demo.sh: build Plank and run it on a local PostgreSQL 15 cluster with the demo table.
#
# Runs scripts/setup.sh, then starts (or, on a rerun, restarts) a cluster owned by user
# postgres in /var/lib/postgresql/plank-demo, listening on 127.0.0.1 only, with Plank
# preloaded; creates database plank_demo with the demo schema (demo/items.sql), waits
# for the Plank worker and prints the page address and the commands to try and to stop.
#
# Environment: PLANK_DEMO_PGPORT (PostgreSQL port, default 5433),
#              PLANK_DEMO_PORT (Plank's HTTP/WebSocket port, default 8090),
#              PLANK_DEMO_DATADIR (data directory, default /var/lib/postgresql/plank-demo).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PGBIN=/usr/lib/postgresql/15/bin
DATA=${PLANK_DEMO_DATADIR:-/var/lib/postgresql/plank-demo}
PGPORT=${PLANK_DEMO_PGPORT:-5433}
PORT=${PLANK_DEMO_PORT:-8090}
DB=plank_demo
LOG=$DATA/plank-demo.log
SOCKDIR=/var/run/postgresql

log() { printf '[demo] %s\n' "$*"; }
fail() {
    printf '[demo] ERROR: %s\n' "$*" >&2
    if [ -f "$LOG" ]; then
        printf '[demo] last lines of %s:\n' "$LOG" >&2
        tail -n 40 "$LOG" >&2 || true
    fi
    exit 1
}

# as_pg, as_root
source "$ROOT/scripts/lib.sh"

# psql as the database user postgres over TCP (trust authentication on 127.0.0.1).
psql_db() { PGOPTIONS='-c client_min_messages=warning' "$PGBIN/psql" -X -h 127.0.0.1 -p "$PGPORT" -U postgres -v ON_ERROR_STOP=1 -qAt "$@"; }

bash "$ROOT/scripts/setup.sh"

# --- cluster ----------------------------------------------------------------------------
as_root install -d -o postgres -g postgres -m 2775 "$SOCKDIR"

if [ ! -s "$DATA/PG_VERSION" ]; then
    # a directory without PG_VERSION is a failed initdb of ours: start over
    as_root rm -rf "$DATA"
    as_root install -d -o postgres -g postgres -m 700 "$DATA"
    log "initdb $DATA"
    as_pg "$PGBIN/initdb" -D "$DATA" -A trust -U postgres --encoding=UTF8 --locale=C.UTF-8 \
        >/tmp/plank-demo-initdb.log 2>&1 \
        || { cat /tmp/plank-demo-initdb.log >&2; fail "initdb failed"; }
fi

# Plank's settings live in plank.conf, rewritten on every run and included once.
as_pg tee "$DATA/plank.conf" >/dev/null <<EOF
# Written by scripts/demo.sh on every run: edit the script, not this file.
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$SOCKDIR'
shared_preload_libraries = 'plank'
plank.port = $PORT
plank.database = '$DB'
plank.listen_addresses = '127.0.0.1'
# the demo page's visitors have no token: they act as plank_web (demo/items.sql)
plank.anonymous_role = 'plank_web'
EOF
if ! as_pg grep -q "^include_if_exists = 'plank.conf'" "$DATA/postgresql.conf"; then
    printf "\n# Plank demo settings (scripts/demo.sh)\ninclude_if_exists = 'plank.conf'\n" \
        | as_pg tee -a "$DATA/postgresql.conf" >/dev/null
fi

if as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; then
    log "restarting PostgreSQL (port $PGPORT)"
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 restart -m fast >/dev/null \
        || fail "pg_ctl restart failed"
else
    log "starting PostgreSQL (port $PGPORT)"
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 60 start >/dev/null \
        || fail "pg_ctl start failed (is port $PGPORT in use?)"
fi

# --- database -------------------------------------------------------------------------
# The worker connects to plank_demo; until it exists the worker exits and is restarted
# after its restart delay, so creating the database now is enough.
if [ -z "$(psql_db -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" ]; then
    log "creating database $DB"
    psql_db -d postgres -c "CREATE DATABASE $DB" || fail "CREATE DATABASE $DB failed"
fi
log "applying demo/items.sql"
psql_db -d "$DB" -f "$ROOT/demo/items.sql" >/dev/null || fail "demo/items.sql failed"

# --- wait for the worker --------------------------------------------------------------
log "waiting for the Plank worker (up to 30 s)"
deadline=$((SECONDS + 30))
worker=""
listening=""
while [ $SECONDS -lt $deadline ]; do
    if [ -z "$worker" ]; then
        worker=$(psql_db -d postgres -c "SELECT pid FROM pg_stat_activity WHERE backend_type = 'plank'" 2>/dev/null || true)
    fi
    if [ -n "$worker" ] && (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
        listening=yes
        break
    fi
    sleep 0.2
done
[ -n "$worker" ] || fail "the Plank worker did not start within 30 s (no backend_type 'plank' in pg_stat_activity)"
[ -n "$listening" ] || fail "the Plank worker (pid $worker) does not accept connections on 127.0.0.1:$PORT"

cat <<EOF

Plank demo is running.
  page:        http://127.0.0.1:$PORT/
  try:         psql -h 127.0.0.1 -p $PGPORT -U postgres $DB -c "INSERT INTO items (name, value) VALUES ('hello', 42)"
  server log:  $LOG
  stop:        runuser -u postgres -- $PGBIN/pg_ctl -D $DATA stop -m fast
EOF
