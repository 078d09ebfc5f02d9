#!/usr/bin/env bash
# setup.sh: prepare a Debian bookworm machine to build, run and test Plank.
#
#   1. installs the Debian packages Plank needs (skipped when they are all installed,
#      except in CI, where CI=true always runs apt-get);
#   2. builds the frontend when frontend/package.json exists (npm ci && npm run build);
#   3. builds and installs the extension (make && make install) for PostgreSQL 15.
#
# Idempotent: run it again at any time. Runs as root, or through sudo otherwise.
# Environment: CI=true forces the apt step; PG_CFLAGS (e.g. -Werror) reaches the compiler.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PLANK_PGBIN:-/usr/lib/postgresql/15/bin}/pg_config

log() { printf '[setup] %s\n' "$*"; }
die() { printf '[setup] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is not installed"
    SUDO=(sudo)
fi

# --- 1. Debian packages ---------------------------------------------------------------
# postgresql-15 and postgresql-server-dev-15 go in one apt-get call so that their minor
# versions match (the module is built against the headers of the server it loads into).
PKGS=(postgresql-15 postgresql-server-dev-15 libkrb5-dev libwebsockets-dev libssl-dev pkg-config
      make gcc nodejs npm python3 python3-pytest python3-websockets python3-psycopg2 python3-jwt python3-cryptography
      chromium)

# A Node.js from NodeSource (as on the project's machines) bundles npm and declares
# "Conflicts: npm": asking apt for Debian's npm then fails. Keep the npm already there.
if command -v npm >/dev/null 2>&1; then
    want=()
    for p in "${PKGS[@]}"; do [ "$p" = npm ] || want+=("$p"); done
    PKGS=("${want[@]}")
fi

missing=()
for p in "${PKGS[@]}"; do
    status=$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)
    [ "$status" = installed ] || missing+=("$p")
done

if [ "${CI:-}" = true ] || [ ${#missing[@]} -gt 0 ]; then
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages (missing: ${missing[*]})"
    else
        log "CI=true: refreshing Debian packages"
    fi
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq \
        || die "apt-get update failed"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
        -o Dpkg::Use-Pty=0 "${PKGS[@]}" >/tmp/plank-setup-apt.log 2>&1 \
        || { tail -n 40 /tmp/plank-setup-apt.log >&2; die "apt-get install failed (log: /tmp/plank-setup-apt.log)"; }
    log "Debian packages installed"
else
    log "Debian packages already installed"
fi

[ -x "$PG_CONFIG" ] || die "$PG_CONFIG not found (is postgresql-server-dev-15 installed?)"

# --- 2. frontend ----------------------------------------------------------------------
if [ -f "$ROOT/frontend/package.json" ]; then
    cd "$ROOT/frontend"
    stamp=node_modules/.plank-setup-stamp
    lockhash=$( (cat package.json package-lock.json 2>/dev/null || true) | sha256sum | cut -d' ' -f1)
    if [ "${CI:-}" != true ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$lockhash" ]; then
        log "frontend: dependencies up to date"
    else
        if [ -f package-lock.json ]; then
            log "frontend: npm ci"
            npm ci --no-audit --no-fund --loglevel=error
        else
            log "frontend: no package-lock.json, npm install"
            npm install --no-audit --no-fund --loglevel=error
        fi
        printf '%s\n' "$lockhash" >"$stamp"
    fi
    log "frontend: npm run build"
    npm run build --silent
    cd "$ROOT"
else
    log "frontend: no frontend/package.json, skipped"
fi

# --- 3. extension ---------------------------------------------------------------------
cd "$ROOT"
log "building the extension (make${PG_CFLAGS:+, PG_CFLAGS=$PG_CFLAGS})"
make -s PG_CONFIG="$PG_CONFIG"
log "installing the extension (make install)"
"${SUDO[@]}" make -s install PG_CONFIG="$PG_CONFIG"
log "done: plank installed into $("$PG_CONFIG" --pkglibdir)"
