#!/usr/bin/env bash
# test/install/run.sh: README.md's "Installation" commands, as written, on a fresh cluster,
# then the README's WebSocket snippet ("Usage") against it.
#
# The code blocks are read from README.md at run time (so the README and this test cannot
# drift) and run by bash in order; only what ties them to a Debian host is redirected:
#   - /usr/lib/postgresql/15/bin/pg_config     -> the tree under test ($PLANK_PGBIN)
#   - port 8090                                -> $PLANK_TEST_PORT
#   - sudo -u postgres CMD                     -> CMD as postgres, PGHOST/PGPORT of the test
#                                                 cluster, the tree's bin first in PATH
#   - sudo systemctl restart postgresql@15-main -> pg_ctl restart of the test cluster
#   - the ini block                            -> appended to the test cluster's postgresql.conf
# The fresh cluster (initdb in a temp dir, PostgreSQL on 127.0.0.1:$PLANK_TEST_PGPORT) is
# stopped by pg_ctl at the end. Checks: /health answers, the INSERT of the README reaches
# the snippet (no token: plank.anonymous_role), the page is served, and the server log has
# no "database does not exist" and no refusal.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PGBIN=${PLANK_PGBIN:-/usr/lib/postgresql/15/bin}
PGPORT=${PLANK_TEST_PGPORT:-5499}
PORT=${PLANK_TEST_PORT:-18099}
source "$ROOT/scripts/lib.sh"

log() { printf '[install] %s\n' "$*"; }
fail() { printf '[install] FAILED: %s\n' "$*" >&2; exit 1; }
START=$SECONDS

TMP=$(mktemp -d /tmp/plank-install.XXXXXX)
chmod 755 "$TMP"
chown postgres:postgres "$TMP"
DATADIR=$TMP/data
LOGFILE=$TMP/server.log
cleanup() {
    local rc=$?
    if [ -f "$DATADIR/postmaster.pid" ]; then
        as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m fast -w -t 60 >/dev/null 2>&1 \
            || as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m immediate -w >/dev/null 2>&1 || true
    fi
    if [ $rc -ne 0 ] && [ -f "$LOGFILE" ]; then
        log "last lines of the server log:"
        tail -n 30 "$LOGFILE" >&2
    fi
    rm -rf "$TMP"
    [ $rc -eq 0 ] && log "PASSED in $((SECONDS - START)) s"
    exit $rc
}
trap cleanup EXIT

# --- the README's blocks ------------------------------------------------------------------
# The fenced blocks of section "## Installation" (up to its first subsection), and the js
# block of "### WebSocket protocol".
/usr/bin/python3 - "$ROOT/README.md" "$TMP/blocks" <<'EOF'
import os, re, sys
text = open(sys.argv[1]).read()
out = sys.argv[2]
os.makedirs(out)
def section(start):
    # up to the next heading of level 2 or 3 (a subsection such as "### Supported
    # PostgreSQL versions" is not part of the steps)
    i = text.index(start)
    ends = [j for j in (text.find("\n## ", i + len(start)), text.find("\n### ", i + len(start)))
            if j >= 0]
    return text[i:min(ends) if ends else len(text)]
fence = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
inst = fence.findall(section("\n## Installation"))
for n, (lang, code) in enumerate(inst, 1):
    open(f"{out}/{n:02d}.{lang or 'txt'}", "w").write(code)
ws = [c for lang, c in fence.findall(section("\n### WebSocket protocol")) if lang == "js"]
assert len(ws) == 1, "one js block under WebSocket protocol"
open(f"{out}/snippet.mjs", "w").write(ws[0])
EOF
ls "$TMP/blocks" | tr '\n' ' ' | sed 's/^/[install] README blocks: /'; echo
# the sequence this test knows: build (sh), createdb (sh), postgresql.conf (ini), restart
# (sh), schema (sh), check (sh); another shape means the README changed: update the test
shape=$(cd "$TMP/blocks" && ls [0-9]* | sed 's/^[0-9]*\.//' | tr '\n' ' ')
[ "$shape" = "sh sh ini sh sh sh " ] || fail "README Installation blocks are '$shape', expected 'sh sh ini sh sh sh '"

# --- a fresh cluster, as a package install leaves it (no Plank settings yet) -----------
as_pg "$PGBIN/initdb" -D "$DATADIR" -A trust -U postgres --encoding=UTF8 --locale=C.UTF-8 -N \
    >"$TMP/initdb.log" 2>&1 || { cat "$TMP/initdb.log"; fail initdb; }
as_pg tee -a "$DATADIR/postgresql.conf" >/dev/null <<EOF
# test/install/run.sh: the host's part
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$TMP'
fsync = off
EOF
as_pg "$PGBIN/pg_ctl" -D "$DATADIR" -l "$LOGFILE" -w -t 60 start >/dev/null || fail "pg_ctl start"
log "fresh cluster on 127.0.0.1:$PGPORT"

# --- the shims, then each block as written ---------------------------------------------
cat >"$TMP/shims.sh" <<EOF
sudo() {
    if [ "\$1" = -u ]; then
        local user=\$2
        shift 2
        runuser -u "\$user" -- env PATH="$PGBIN:\$PATH" PGHOST=127.0.0.1 PGPORT=$PGPORT "\$@"
    elif [ "\$*" = "systemctl restart postgresql@15-main" ]; then
        runuser -u postgres -- "$PGBIN/pg_ctl" -D "$DATADIR" -l "$LOGFILE" -w -t 60 restart >/dev/null
    else
        "\$@"
    fi
}
EOF
run_block() {  # run_block FILE: bash, in the repository root, with the shims
    local f=$1
    sed -e "s|/usr/lib/postgresql/15/bin/pg_config|$PGBIN/pg_config|g" -e "s|8090|$PORT|g" "$f" >"$f.run"
    log "running $(basename "$f"): $(grep -v '^\s*$' "$f" | head -1)"
    (cd "$ROOT" && bash -c "set -eo pipefail; source '$TMP/shims.sh'; source '$f.run'") >"$f.out" 2>&1 \
        || { cat "$f.out" >&2; fail "README block $(basename "$f")"; }
}
B=$TMP/blocks
run_block "$B/01.sh"                          # build and install
run_block "$B/02.sh"                          # createdb app
sed -e "s|8090|$PORT|g" "$B/03.ini" | as_pg tee -a "$DATADIR/postgresql.conf" >/dev/null
log "postgresql.conf: the README's settings appended"
run_block "$B/04.sh"                          # restart
run_block "$B/05.sh"                          # extension, table, roles
# the worker serves once its database has the extension; wait for its port
PSQL=("$PGBIN/psql" -X -h 127.0.0.1 -p "$PGPORT" -U postgres -d app -qAt)
deadline=$((SECONDS + 30))
until curl -s -o /dev/null "http://127.0.0.1:$PORT/health"; do
    [ $SECONDS -lt $deadline ] || fail "Plank did not answer on port $PORT within 30 s"
    sleep 0.2
done

# the snippet first (subscribed, filter name = apple), then the README's check block
cat >"$TMP/prelude.mjs" <<EOF
globalThis.location = { host: "127.0.0.1:$PORT", protocol: "http:" };
EOF
node --experimental-websocket --no-warnings --import "$TMP/prelude.mjs" "$B/snippet.mjs" >"$TMP/snippet.out" 2>&1 &
SNIPPET=$!
deadline=$((SECONDS + 20))
until grep -q '^rows' "$TMP/snippet.out"; do
    [ $SECONDS -lt $deadline ] || { kill "$SNIPPET"; cat "$TMP/snippet.out"; fail "the WebSocket snippet got no snapshot"; }
    sleep 0.1
done
log "the README's WebSocket snippet subscribed: $(head -1 "$TMP/snippet.out")"
run_block "$B/06.sh"                          # curl /health, INSERT
/usr/bin/python3 - "$B/06.sh.out" <<'EOF' || fail "the check block's output"
import json, sys
out = open(sys.argv[1]).read().splitlines()
health = json.loads(out[0])
assert health.get("status") == "ok", health
assert "INSERT 0 1" in out, out
print(f"[install] /health: status {health['status']}; psql: INSERT 0 1")
EOF
"${PSQL[@]}" -c "INSERT INTO items (name, value) VALUES ('apple', 7)" >/dev/null
deadline=$((SECONDS + 20))
until grep -q "^[0-9]* INSERT" "$TMP/snippet.out" && grep -q "name: 'apple'" "$TMP/snippet.out"; do
    [ $SECONDS -lt $deadline ] || { kill "$SNIPPET"; cat "$TMP/snippet.out"; fail "the snippet did not get the INSERT of 'apple'"; }
    sleep 0.1
done
kill "$SNIPPET"
wait "$SNIPPET" 2>/dev/null || true
log "the snippet received: $(grep -A2 -m1 INSERT "$TMP/snippet.out" | tr -s ' \n' ' ')..."
grep -q "unauthenticated\|auth_required" "$TMP/snippet.out" && fail "the snippet was refused: $(cat "$TMP/snippet.out")"
# the page
curl -sf "http://127.0.0.1:$PORT/" | grep -q '<div id="app">' || fail "GET / is not the demo page"
log "GET / serves the demo page"
# the page's anonymous visitor sees the row the README inserted: a snapshot as web_anon
rows=$("${PSQL[@]}" -c "SET ROLE web_anon; SELECT count(*) FROM items WHERE name = 'hello'")
[ "$rows" = 1 ] || fail "web_anon does not see the README's row"
if grep -q 'database "app" does not exist' "$LOGFILE"; then fail "the worker ran before its database existed"; fi
if grep -qi 'refus' "$LOGFILE"; then grep -i refus "$LOGFILE" >&2; fail "a refusal in the server log"; fi
log "server log: no missing database, no refusal"
