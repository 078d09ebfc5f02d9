#!/usr/bin/env bash
# test/packaging/run.sh: build the Debian package, install it, and check that the installed
# package serves WebSocket clients directly and through nginx (deploy/nginx/plank.conf).
#
#   build    copy the source tree to a temp dir, dpkg-buildpackage -us -uc -b there
#            (the frontend is built by the package build: npm ci && npm run build; the
#            client tarball by npm pack), inspect the .deb (files: the extension, the
#            page, the client tarball, the docs and the nginx example; Depends; the
#            copyright's license)
#   install  dpkg -i (apt-get install -f for missing dependencies), dpkg -L checks, npm
#            install of the shipped client tarball into an app, which loads it in Node
#   cluster  throwaway cluster as postgres in a temp dir: PostgreSQL on 127.0.0.1:5495,
#            Plank on 127.0.0.1:18093 (static files from the package's SHAREDIR/plank/www)
#   direct   ws:// client: welcome, subscribe, an INSERT arrives; GET / is the packaged page
#   nginx    Debian's nginx with the packaged nginx example and a self-signed certificate, run
#            from a temp prefix on 127.0.0.1:18443 (not the system service): wss:// client
#            with the site's Origin gets welcome and the change, a foreign Origin is
#            refused, GET https://127.0.0.1:18443/ is the page, /metrics is denied
#   cleanup  nginx and PostgreSQL stopped by their PID files; the package is removed again
#            and the files it replaced (a `make install`) are put back, unless the package
#            was installed before this run (then the new build stays installed)
#
# Must run as root (dpkg).  Installs dpkg-dev, debhelper, postgresql-server-dev-all and
# nginx with apt-get when they are missing; the system nginx service is never started
# (and not touched if nginx is installed already).
#
# Environment:
#   PLANK_PKG_SOURCE=worktree|head   what to package: the working tree's tracked and
#                                    untracked-but-not-ignored files (default), or the
#                                    committed HEAD (git archive)
#   PLANK_PKG_PREBUILT_FRONTEND=1    use frontend/dist as it is (build profile
#                                    pkg.plank.prebuilt-frontend; no npm in the build)
#   PLANK_PKG_NOCHECK=1              skip pg_regress during the package build
#   PLANK_PKG_BUILD_ONLY=1           build and inspect the .deb only: no install, no
#                                    cluster, no nginx (the system's files stay untouched)
#   PLANK_PKG_KEEP=1                 leave the package installed and keep the temp dir
#   PLANK_PKG_OUT=DIR                also copy the built .deb files to DIR
#
# Prints each check; exits non-zero when one fails.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
HERE=$ROOT/test/packaging
PGBIN=/usr/lib/postgresql/15/bin
PGPORT=5495
PLANK_PORT=18093
NGINX_PORT=18443
PKG=postgresql-15-plank
PY=/usr/bin/python3   # Debian's python3 with python3-websockets; a pyenv one may shadow it
SOURCE_MODE=${PLANK_PKG_SOURCE:-worktree}

log() { printf '[packaging] %s\n' "$*"; }
ok() { printf '[packaging]   ok: %s\n' "$*"; CHECKS=$((CHECKS + 1)); }
fail() { printf '[packaging] FAILED: %s\n' "$*" >&2; exit 1; }
CHECKS=0
START=$SECONDS

[ "$(id -u)" -eq 0 ] || fail "must run as root (dpkg -i, runuser)"
case $SOURCE_MODE in worktree|head) ;; *) fail "PLANK_PKG_SOURCE must be worktree or head" ;; esac

TMP=$(mktemp -d /tmp/plank-packaging.XXXXXX)
chmod 755 "$TMP"
DATADIR=$TMP/pg/data
NGINX_PREFIX=$TMP/nginx
NGINX_CONF=$NGINX_PREFIX/nginx.conf
NGINX_PID=$NGINX_PREFIX/nginx.pid
BACKUP=$TMP/backup
INSTALLED_BY_US=0
WAS_INSTALLED=0

as_pg() { runuser -u postgres -- "$@"; }

# Run dpkg/apt commands, waiting (bounded) while another dpkg holds the lock.
with_dpkg_lock() {
    local deadline=$((SECONDS + 120)) out rc
    while :; do
        set +e
        out=$("$@" 2>&1)
        rc=$?
        set -e
        if [ $rc -ne 0 ] && grep -q 'dpkg frontend lock\|dpkg status database is locked\|Could not get lock' <<<"$out" \
                && [ $SECONDS -lt $deadline ]; then
            sleep 2
            continue
        fi
        printf '%s\n' "$out" >"$TMP/last-dpkg.log"
        return $rc
    done
}

stop_nginx() {
    [ -f "$NGINX_PID" ] || return 0
    local pid
    pid=$(cat "$NGINX_PID" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    if kill -0 "$pid" 2>/dev/null; then
        log "stopping nginx (pid $pid)"
        kill -QUIT "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        if kill -0 "$pid" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
            sleep 1
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$NGINX_PID"
}

stop_cluster() {
    [ -f "$DATADIR/postmaster.pid" ] || return 0
    log "stopping the test cluster (pg_ctl, PID file $DATADIR/postmaster.pid)"
    as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m fast -w -t 30 >/dev/null 2>&1 \
        || as_pg "$PGBIN/pg_ctl" -D "$DATADIR" stop -m immediate -w -t 30 >/dev/null 2>&1 || true
}

# Put the system back: remove the package we installed and restore the files it replaced.
restore_system() {
    [ "$INSTALLED_BY_US" = 1 ] || return 0
    if [ "${PLANK_PKG_KEEP:-}" = 1 ]; then
        log "PLANK_PKG_KEEP=1: $PKG stays installed"
        return 0
    fi
    if [ "$WAS_INSTALLED" = 1 ]; then
        log "$PKG was installed before this run: the new build stays installed"
        return 0
    fi
    log "removing $PKG and restoring the files it replaced"
    # files changed since dpkg -i (a `make install` run meanwhile) are the newest: keep them
    local newer=$TMP/newer
    mkdir -p "$newer"
    dpkg --verify "$PKG" 2>/dev/null | awk '$1 ~ /^..5/ {print substr($NF, 2)}' >"$TMP/changed.list" || true
    if [ -s "$TMP/changed.list" ]; then
        log "keeping $(wc -l <"$TMP/changed.list") files replaced during the test (a concurrent make install?)"
        tar -C / -cf - --files-from="$TMP/changed.list" 2>/dev/null | tar -C "$newer" -xf - || true
    fi
    with_dpkg_lock dpkg -r "$PKG" || { cat "$TMP/last-dpkg.log" >&2; log "dpkg -r $PKG failed"; }
    if [ -d "$BACKUP" ] && [ -n "$(ls -A "$BACKUP")" ]; then
        cp -a "$BACKUP/." /
    fi
    if [ -n "$(ls -A "$newer")" ]; then
        cp -a "$newer/." /
    fi
}

cleanup() {
    local rc=$?
    set +e
    stop_nginx
    stop_cluster
    restore_system
    if [ "${PLANK_PKG_KEEP:-}" = 1 ]; then
        log "kept $TMP"
    else
        rm -rf "$TMP"
    fi
    if [ $rc -eq 0 ]; then
        log "PASSED: $CHECKS checks in $((SECONDS - START)) s"
    else
        log "FAILED (exit $rc) after $CHECKS checks, $((SECONDS - START)) s"
    fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

port_in_use() { ss -Hltn "sport = :$1" 2>/dev/null | grep -q .; }

# --- tools ----------------------------------------------------------------------------
log "=== tools"
need=()
command -v dpkg-buildpackage >/dev/null || need+=(dpkg-dev)
command -v dh >/dev/null || need+=(debhelper)
[ -f /usr/share/perl5/Debian/Debhelper/Sequence/pgxs_loop.pm ] || need+=(postgresql-server-dev-all)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v openssl >/dev/null || need+=(openssl)
"$PY" -c 'import websockets' 2>/dev/null || need+=(python3-websockets)
if [ ${#need[@]} -gt 0 ]; then
    log "apt-get install ${need[*]} (services are not started by this script)"
    with_dpkg_lock env DEBIAN_FRONTEND=noninteractive apt-get update -qq || true
    with_dpkg_lock env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Use-Pty=0 "${need[@]}" \
        || { tail -n 30 "$TMP/last-dpkg.log" >&2; fail "apt-get install ${need[*]}"; }
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
ok "build tools, nginx ($($NGINX -v 2>&1 | sed 's/.*: //')), openssl, python3-websockets present"

for p in $PGPORT $PLANK_PORT $NGINX_PORT; do
    port_in_use "$p" && fail "port $p is in use: this test needs 127.0.0.1:$PGPORT, :$PLANK_PORT and :$NGINX_PORT"
done
ok "ports $PGPORT, $PLANK_PORT, $NGINX_PORT are free"

# --- build ----------------------------------------------------------------------------
log "=== build: dpkg-buildpackage -us -uc -b in a copy of the source ($SOURCE_MODE)"
SRC=$TMP/build/plank
mkdir -p "$SRC"
if [ "$SOURCE_MODE" = head ]; then
    git -C "$ROOT" archive HEAD | tar -x -C "$SRC"
else
    # tracked and untracked files that .gitignore does not exclude: no build outputs,
    # no node_modules, no frontend/dist
    (cd "$ROOT" && git ls-files -z -co --exclude-standard \
        | while IFS= read -r -d '' f; do [ -e "$f" ] && printf '%s\0' "$f"; done \
        | xargs -0 cp -a --parents -t "$SRC")
fi
[ -f "$SRC/debian/control" ] || fail "no debian/control in the copied source"
build_args=(-us -uc -b)
if [ "${PLANK_PKG_PREBUILT_FRONTEND:-}" = 1 ]; then
    [ -f "$ROOT/frontend/dist/index.html" ] || fail "PLANK_PKG_PREBUILT_FRONTEND=1 but frontend/dist/index.html is missing"
    mkdir -p "$SRC/frontend/dist" && cp -a "$ROOT/frontend/dist/." "$SRC/frontend/dist/"
    # and the client tarball, for a build without npm
    (cd "$ROOT/client" && npm pack --pack-destination "$SRC/client" --silent >/dev/null)
    build_args+=(--build-profiles=pkg.plank.prebuilt-frontend)
fi
build_env=()
[ "${PLANK_PKG_NOCHECK:-}" = 1 ] && build_env+=(DEB_BUILD_OPTIONS=nocheck)
# the build-time pg_regress cluster's worker uses our Plank port (no cluster of ours yet)
build_env+=(PLANK_BUILD_TEST_PORT=$PLANK_PORT)
if ! (cd "$SRC" && env "${build_env[@]}" timeout 300 dpkg-buildpackage "${build_args[@]}") \
        >"$TMP/build.log" 2>&1 </dev/null; then
    tail -n 60 "$TMP/build.log" >&2
    fail "dpkg-buildpackage (log above)"
fi
DEB=$(ls "$TMP"/build/${PKG}_*.deb 2>/dev/null | head -1)
[ -n "$DEB" ] && [ -f "$DEB" ] || fail "no ${PKG}_*.deb built"
ok "built $(basename "$DEB") in $((SECONDS - START)) s"
if grep -q 'All 2 tests passed\|All [0-9]* tests passed' "$TMP/build.log"; then
    ok "pg_regress during the build: $(grep -o 'All [0-9]* tests passed' "$TMP/build.log" | tail -1)"
elif [ "${PLANK_PKG_NOCHECK:-}" != 1 ]; then
    fail "the build log shows no passing pg_regress run"
fi
if [ -n "${PLANK_PKG_OUT:-}" ]; then
    mkdir -p "$PLANK_PKG_OUT" && cp "$TMP"/build/*.deb "$PLANK_PKG_OUT/"
    log "copied the .deb files to $PLANK_PKG_OUT"
fi

contents=$(dpkg-deb -c "$DEB" | awk '{print $6}' | sed 's|^\./|/|')
for f in /usr/lib/postgresql/15/lib/plank.so /usr/share/postgresql/15/extension/plank.control \
         /usr/share/postgresql/15/extension/plank--1.0.sql /usr/share/postgresql/15/plank/www/index.html; do
    grep -qx "$f" <<<"$contents" || fail "$(basename "$DEB") lacks $f"
done
ok ".deb contains plank.so, plank.control, plank--1.0.sql, www/index.html"
DOC=/usr/share/doc/$PKG
for f in "$DOC/README.md" "$DOC/docs/PROTOCOL.md" "$DOC/docs/SECURITY.md" "$DOC/docs/DEPLOYMENT.md" \
         "$DOC/examples/nginx/plank.conf"; do
    grep -qx -e "$f" -e "$f.gz" <<<"$contents" || fail "$(basename "$DEB") lacks $f"
done
ok ".deb contains the docs (README.md, docs/*.md) and the nginx example"
CLIENT_TGZ=$(grep -x '/usr/share/postgresql/15/plank/client/plank-db-client-[0-9.]*\.tgz' <<<"$contents" || true)
[ -n "$CLIENT_TGZ" ] || fail "$(basename "$DEB") lacks /usr/share/postgresql/15/plank/client/plank-db-client-*.tgz"
ok ".deb contains the client package $(basename "$CLIENT_TGZ")"
dpkg-deb --fsys-tarfile "$DEB" | tar -xO ".$DOC/copyright" | grep -qx 'License: PostgreSQL' \
    || fail "debian/copyright does not state the PostgreSQL License"
ok "copyright: License: PostgreSQL"
depends=$(dpkg-deb -f "$DEB" Depends)
for d in postgresql-15 libwebsockets17 libssl3; do
    grep -Eq "(^|, )$d( |,|$)" <<<"$depends" || fail "Depends lacks $d: $depends"
done
ok "Depends: $depends"

if [ "${PLANK_PKG_BUILD_ONLY:-}" = 1 ]; then
    log "PLANK_PKG_BUILD_ONLY=1: the package is not installed"
    exit 0
fi

# --- install --------------------------------------------------------------------------
log "=== install: dpkg -i $(basename "$DEB")"
if dpkg-query -W -f='${db:Status-Status}' "$PKG" 2>/dev/null | grep -qx installed; then
    WAS_INSTALLED=1
fi
# keep what the package will overwrite (usually the lead's `make install`)
mkdir -p "$BACKUP"
dpkg-deb -c "$DEB" | awk '$1 !~ /^d/ {print $6}' | sed 's|^\./||' \
    | while IFS= read -r f; do [ -f "/$f" ] && printf '%s\n' "$f"; done >"$TMP/replaced.list" || true
if [ -s "$TMP/replaced.list" ]; then
    tar -C / -cf - --files-from="$TMP/replaced.list" | tar -C "$BACKUP" -xf - \
        || fail "could not back up the files the package replaces"
fi
log "backed up $(wc -l <"$TMP/replaced.list") installed files the package replaces"
INSTALLED_BY_US=1
if ! with_dpkg_lock dpkg -i "$DEB"; then
    log "dpkg -i failed; apt-get install -f for the dependencies"
    with_dpkg_lock env DEBIAN_FRONTEND=noninteractive apt-get install -f -y -qq -o Dpkg::Use-Pty=0 \
        || { cat "$TMP/last-dpkg.log" >&2; fail "apt-get install -f"; }
fi
dpkg-query -W -f='${db:Status-Status}' "$PKG" | grep -qx installed || fail "$PKG is not installed"
ok "$PKG $(dpkg-query -W -f='${Version}' "$PKG") installed"
listing=$(dpkg -L "$PKG")
for f in /usr/lib/postgresql/15/lib/plank.so /usr/share/postgresql/15/extension/plank.control \
         /usr/share/postgresql/15/extension/plank--1.0.sql /usr/share/postgresql/15/plank/www/index.html; do
    grep -qx "$f" <<<"$listing" || fail "dpkg -L $PKG lacks $f"
    [ -f "$f" ] || fail "$f is listed but missing"
done
ok "dpkg -L $PKG lists plank.so, plank.control, plank--1.0.sql, www/index.html"
cmp -s "$SRC/debian/$PKG/usr/share/postgresql/15/plank/www/index.html" \
       /usr/share/postgresql/15/plank/www/index.html 2>/dev/null \
    || cmp -s <(dpkg-deb --fsys-tarfile "$DEB" | tar -xO ./usr/share/postgresql/15/plank/www/index.html) \
              /usr/share/postgresql/15/plank/www/index.html \
    || fail "installed www/index.html differs from the package's"
ok "installed www/index.html is the package's"
# the shipped client tarball installs into an app and loads in Node
APPDIR=$TMP/client-app
mkdir -p "$APPDIR" && printf '{"name":"pkg-app","private":true,"type":"module"}\n' >"$APPDIR/package.json"
(cd "$APPDIR" && npm install --no-audit --no-fund --loglevel=error "$CLIENT_TGZ" >/dev/null) \
    || fail "npm install $CLIENT_TGZ"
(cd "$APPDIR" && node -e 'import("@plank-db/client").then((m) => { if (typeof m.PlankClient !== "function" || typeof m.liveTable !== "function") process.exit(1); })') \
    || fail "the installed client package does not load"
ok "npm install of the shipped $(basename "$CLIENT_TGZ") into an app; it loads in Node"

# --- cluster --------------------------------------------------------------------------
log "=== cluster: PostgreSQL 127.0.0.1:$PGPORT, Plank 127.0.0.1:$PLANK_PORT (as postgres)"
mkdir -p "$TMP/pg"
chown postgres:postgres "$TMP/pg"
as_pg "$PGBIN/initdb" -D "$DATADIR" -A trust -U postgres --encoding=UTF8 --locale=C.UTF-8 -N \
    >"$TMP/pg/initdb.log" 2>&1 || { cat "$TMP/pg/initdb.log" >&2; fail "initdb"; }
as_pg tee -a "$DATADIR/postgresql.conf" >/dev/null <<EOF
# test/packaging/run.sh
listen_addresses = '127.0.0.1'
port = $PGPORT
unix_socket_directories = '$TMP/pg'
fsync = off
shared_preload_libraries = 'plank'
plank.database = 'postgres'
plank.listen_addresses = '127.0.0.1'
plank.port = $PLANK_PORT
plank.anonymous_role = 'postgres'
plank.allow_privileged_roles = on
# the page's origin through nginx (see docs/DEPLOYMENT.md: TLS termination)
plank.allowed_origins = 'https://127.0.0.1:$NGINX_PORT'
plank.log_connections = on
EOF
as_pg "$PGBIN/pg_ctl" -D "$DATADIR" -l "$TMP/pg/server.log" -w -t 60 start >/dev/null \
    || { tail -n 40 "$TMP/pg/server.log" >&2; fail "pg_ctl start"; }
ok "cluster started (pid $(head -1 "$DATADIR/postmaster.pid"))"
PSQL="$PGBIN/psql -X -h 127.0.0.1 -p $PGPORT -U postgres -d postgres -v ON_ERROR_STOP=1 -qAt"
$PSQL -c "SET client_min_messages = warning; CREATE EXTENSION plank" >/dev/null \
    || fail "CREATE EXTENSION plank"
$PSQL -c "CREATE ROLE plank_authenticator LOGIN NOINHERIT" -c "GRANT postgres TO plank_authenticator" >/dev/null \
    || fail "CREATE ROLE plank_authenticator"
$PSQL -c "CREATE TABLE public.pkg_items (id serial PRIMARY KEY, name text NOT NULL, value int)" >/dev/null
$PSQL -c "SELECT plank.track('public.pkg_items')" >/dev/null || fail "plank.track"
ok "CREATE EXTENSION plank (version $($PSQL -c "SELECT extversion FROM pg_extension WHERE extname = 'plank'")), public.pkg_items tracked"
deadline=$((SECONDS + 30))
until [ -n "$($PSQL -c "SELECT 1 FROM pg_stat_activity WHERE backend_type = 'plank'" 2>/dev/null)" ] \
        && port_in_use $PLANK_PORT; do
    [ $SECONDS -lt $deadline ] || { tail -n 40 "$TMP/pg/server.log" >&2; fail "Plank worker not listening on :$PLANK_PORT within 30 s"; }
    sleep 0.2
done
ok "Plank worker in pg_stat_activity, listening on 127.0.0.1:$PLANK_PORT"

# --- direct ---------------------------------------------------------------------------
log "=== direct: ws://127.0.0.1:$PLANK_PORT/ws"
timeout 60 "$PY" "$HERE/ws_check.py" "ws://127.0.0.1:$PLANK_PORT/ws" --table public.pkg_items \
    --psql "$PSQL" || fail "WebSocket client directly on Plank's port"
ok "direct ws://: welcome, subscribe, INSERT delivered"
"$PY" - "http://127.0.0.1:$PLANK_PORT/" /usr/share/postgresql/15/plank/www/index.html <<'EOF' || fail "GET / on Plank's port"
import sys, urllib.request
body = urllib.request.urlopen(sys.argv[1], timeout=10).read()
assert body == open(sys.argv[2], "rb").read(), "GET / is not the packaged index.html"
EOF
ok "GET http://127.0.0.1:$PLANK_PORT/ serves the packaged www/index.html"

# --- nginx ----------------------------------------------------------------------------
log "=== nginx: the packaged examples/nginx/plank.conf (deploy/nginx/plank.conf) on 127.0.0.1:$NGINX_PORT (temp prefix $NGINX_PREFIX)"
mkdir -p "$NGINX_PREFIX/logs" "$NGINX_PREFIX/tls"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=127.0.0.1" \
    -addext "subjectAltName=IP:127.0.0.1" \
    -keyout "$NGINX_PREFIX/tls/key.pem" -out "$NGINX_PREFIX/tls/cert.pem" >/dev/null 2>&1 \
    || fail "openssl: self-signed certificate"
chmod 600 "$NGINX_PREFIX/tls/key.pem"
ok "self-signed certificate for 127.0.0.1"
sed -e "s|@SERVER_NAME@|127.0.0.1|g" -e "s|@HTTPS_LISTEN@|127.0.0.1:$NGINX_PORT|g" \
    -e "s|@TLS_CERT@|$NGINX_PREFIX/tls/cert.pem|g" -e "s|@TLS_KEY@|$NGINX_PREFIX/tls/key.pem|g" \
    -e "s|@PLANK_ADDR@|127.0.0.1:$PLANK_PORT|g" <(zcat -f "$DOC/examples/nginx/plank.conf"*) >"$NGINX_PREFIX/plank.conf"
if grep -n '^[^#]*@[A-Z_]*@' "$NGINX_PREFIX/plank.conf"; then fail "placeholders left in the rendered plank.conf"; fi
cat >"$NGINX_CONF" <<EOF
# minimal main configuration around deploy/nginx/plank.conf (test/packaging/run.sh)
worker_processes 1;
pid $NGINX_PID;
error_log $NGINX_PREFIX/logs/error.log warn;
events { worker_connections 64; }
http {
    access_log $NGINX_PREFIX/logs/access.log;
    client_body_temp_path $NGINX_PREFIX/client_body;
    proxy_temp_path $NGINX_PREFIX/proxy;
    fastcgi_temp_path $NGINX_PREFIX/fastcgi;
    uwsgi_temp_path $NGINX_PREFIX/uwsgi;
    scgi_temp_path $NGINX_PREFIX/scgi;
    include $NGINX_PREFIX/plank.conf;
}
EOF
"$NGINX" -t -q -e "$NGINX_PREFIX/logs/error.log" -p "$NGINX_PREFIX" -c "$NGINX_CONF" \
    || { cat "$NGINX_PREFIX/logs/error.log" >&2; fail "nginx -t with deploy/nginx/plank.conf"; }
ok "nginx -t accepts deploy/nginx/plank.conf"
"$NGINX" -e "$NGINX_PREFIX/logs/error.log" -p "$NGINX_PREFIX" -c "$NGINX_CONF" \
    || { cat "$NGINX_PREFIX/logs/error.log" >&2; fail "nginx start"; }
deadline=$((SECONDS + 15))
until [ -s "$NGINX_PID" ] && port_in_use $NGINX_PORT; do
    [ $SECONDS -lt $deadline ] || { cat "$NGINX_PREFIX/logs/error.log" >&2; fail "nginx not listening on :$NGINX_PORT within 15 s"; }
    sleep 0.1
done
ok "nginx running (master pid $(cat "$NGINX_PID")) on 127.0.0.1:$NGINX_PORT"

CA=$NGINX_PREFIX/tls/cert.pem
ORIGIN=https://127.0.0.1:$NGINX_PORT
timeout 60 "$PY" "$HERE/ws_check.py" "wss://127.0.0.1:$NGINX_PORT/ws" --cafile "$CA" \
    --origin "$ORIGIN" --table public.pkg_items --psql "$PSQL" \
    || { tail -n 20 "$NGINX_PREFIX/logs/error.log" >&2; fail "wss:// client through nginx"; }
ok "wss:// through nginx (Origin $ORIGIN): welcome, subscribe, INSERT delivered"
timeout 60 "$PY" "$HERE/ws_check.py" "wss://127.0.0.1:$NGINX_PORT/ws" --cafile "$CA" \
    --origin "https://evil.example" --expect-status 403 \
    || fail "a foreign Origin through nginx was not refused"
ok "wss:// through nginx with a foreign Origin: refused (403)"
"$PY" - "$NGINX_PORT" "$CA" /usr/share/postgresql/15/plank/www/index.html <<'EOF' || fail "HTTPS requests through nginx"
import ssl, sys, urllib.error, urllib.request
port, ca, index = sys.argv[1], sys.argv[2], sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
base = f"https://127.0.0.1:{port}"
r = urllib.request.urlopen(base + "/", context=ctx, timeout=10)
body = r.read()
assert r.status == 200, f"GET / status {r.status}"
assert body == open(index, "rb").read(), "GET / through nginx is not the packaged index.html"
print(f"  [https] GET / -> 200, {len(body)} bytes, the packaged index.html;"
      f" Content-Security-Policy: {'present' if r.headers.get('Content-Security-Policy') else 'MISSING'}")
assert r.headers.get("Content-Security-Policy"), "Plank's CSP header was not passed through"
for path in ("/metrics", "/health"):
    try:
        urllib.request.urlopen(base + path, context=ctx, timeout=10)
        raise AssertionError(f"GET {path} through nginx was not denied")
    except urllib.error.HTTPError as e:
        assert e.code == 403, f"GET {path} through nginx: {e.code}, expected 403"
        print(f"  [https] GET {path} -> 403 (denied by the proxy)")
req = urllib.request.Request(base + "/", method="POST", data=b"x")
try:
    urllib.request.urlopen(req, context=ctx, timeout=10)
    raise AssertionError("POST / through nginx was not refused")
except urllib.error.HTTPError as e:
    assert e.code == 403, f"POST / through nginx: {e.code}, expected 403"
    print("  [https] POST / -> 403")
EOF
ok "GET https://127.0.0.1:$NGINX_PORT/ is the page (CSP passed through); /metrics, /health and POST denied"

# --- done -----------------------------------------------------------------------------
log "=== cleanup"
stop_nginx
[ ! -f "$NGINX_PID" ] || fail "nginx did not stop"
stop_cluster
[ ! -f "$DATADIR/postmaster.pid" ] || fail "the test cluster did not stop"
ok "nginx and PostgreSQL stopped by their PID files"
