"""Helpers shared by the security tests (test_security_*.py); this module holds no tests.

- tokens: `token()` signs HS256 with the test cluster's plank.jwt_secret; `jws()` builds
  any compact JWS by hand (alg none, crit headers, an HMAC keyed with arbitrary bytes),
  which PyJWT refuses to produce;
- settings: `plank_settings({...})` is a context manager that applies plank.* settings
  with ALTER SYSTEM + pg_reload_conf(), waits until the worker has applied them, and
  resets them (and waits again) on the way out. The reload carries a marker the worker
  can be seen to apply without any authentication or subscription:
  plank.max_message_size = 1kB (a 1.5 kB ping is closed with 1009), so it works whatever
  plank.anonymous_role, the JWT settings or the origin list say;
- clients: `open_client()` (with an Origin or extra headers), `authed()` (a client that
  sent a token and got its ack), `raw_handshake()` (a hand-written HTTP upgrade, for
  headers websockets will not send, such as a forged Host);
- `Resources`: roles and tables made with unique names and dropped afterwards;
- `login_as(role)`: a database connection (autocommit) logged in as an ordinary role.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import socket
import time

import psycopg2
import pytest
import websockets

from conftest import DB, PGHOST, PGPORT, PORT, TIMEOUT, WS_URL, Client, Closed, poll, run, sql, tag

SECRET = "plank-test-secret-0123456789abcdef"   # plank.jwt_secret set by scripts/test.sh
HS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


# --------------------------------------------------------------------------- tokens


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def jws(header, claims, key=SECRET, signature=None):
    """A compact JWS. header and claims are dicts (or str/bytes taken as they are).
    The signature is an HMAC of the header's alg keyed with `key` (str or bytes) when the
    alg is HS*, empty for anything else, or `signature` (bytes) when given."""
    h = header if isinstance(header, (str, bytes)) else json.dumps(header, separators=(",", ":"))
    c = claims if isinstance(claims, (str, bytes)) else json.dumps(claims, separators=(",", ":"))
    signing_input = f"{b64u(h)}.{b64u(c)}"
    if signature is None:
        alg = header.get("alg") if isinstance(header, dict) else None
        if alg in HS:
            k = key.encode() if isinstance(key, str) else key
            signature = hmac.new(k, signing_input.encode(), HS[alg]).digest()
        else:
            signature = b""
    return f"{signing_input}.{b64u(signature)}"


def token(role="postgres", key=SECRET, alg="HS256", header=None, **claims):
    """An HMAC-signed token naming `role` (None: no role claim), with these claims."""
    body = dict(claims)
    if role is not None:
        body["role"] = role
    hdr = {"alg": alg, "typ": "JWT"}
    hdr.update(header or {})
    return jws(hdr, body, key)


def now():
    return int(time.time())


# --------------------------------------------------------------------------- settings


def _alter_system(name, value):
    assert name.startswith("plank.") and name.replace(".", "").replace("_", "").isalnum(), name
    if value is None:
        sql(f"ALTER SYSTEM RESET {name}")
    else:
        sql(f"ALTER SYSTEM SET {name} = %s", (str(value),))


def _message_size_limited():
    """Is the marker plank.max_message_size = 1kB in effect (a 1.5 kB ping closes with
    1009)? None when the probe could not tell (the server refused the handshake)."""
    async def probe():
        try:
            ws = await asyncio.wait_for(
                websockets.connect(WS_URL, max_size=None, ping_interval=None, close_timeout=2,
                                   open_timeout=5), 5)
        except Exception:
            return None
        try:
            await asyncio.wait_for(ws.recv(), 5)   # the welcome
            await ws.send(json.dumps({"type": "ping", "id": "m", "pad": "x" * 1500}))
            while True:
                try:
                    raw = await asyncio.wait_for(ws.recv(), 5)
                except websockets.ConnectionClosed as e:
                    code = e.rcvd.code if e.rcvd is not None else 1006
                    return code == 1009
                # a pong, or an error such as unauthenticated: the ping was read
                if json.loads(raw).get("type") in ("pong", "error"):
                    return False
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)
    return run(probe(), timeout=20)


def apply_settings(settings, timeout=20.0):
    """ALTER SYSTEM SET each name = value (RESET for None), reload, and wait until the
    worker has applied them (see the module docstring)."""
    for name, value in settings.items():
        _alter_system(name, value)
    _alter_system("plank.max_message_size", "1kB")
    sql("SELECT pg_reload_conf()")
    poll(lambda: _message_size_limited() is True, timeout,
         what=f"the worker to apply {settings}")
    _alter_system("plank.max_message_size", None)
    sql("SELECT pg_reload_conf()")
    poll(lambda: _message_size_limited() is False, timeout,
         what="the worker to reset plank.max_message_size")


# what this module has set with ALTER SYSTEM, so that nested plank_settings() blocks
# restore the outer block's values instead of the configuration file's
_current = {}


@contextlib.contextmanager
def plank_settings(settings):
    """Apply plank.* settings for the duration of a with block; restore them after (to
    an enclosing block's values, else RESET)."""
    previous = {name: _current.get(name) for name in settings}
    try:
        _current.update(settings)
        apply_settings(settings)
        yield
    finally:
        for name, value in previous.items():
            if value is None:
                _current.pop(name, None)
            else:
                _current[name] = value
        apply_settings(previous)


# --------------------------------------------------------------------------- clients


async def open_client(url=WS_URL, origin=None, headers=None, ssl=None, timeout=TIMEOUT,
                      keep_commits=False):
    """A conftest.Client, with an Origin and extra handshake headers when given."""
    kw = {}
    if ssl is not None:
        kw["ssl"] = ssl
    ws = await asyncio.wait_for(
        websockets.connect(url, origin=origin, extra_headers=headers, max_size=None,
                           max_queue=None, ping_interval=None, close_timeout=2,
                           open_timeout=timeout, **kw),
        timeout)
    try:
        raw = await asyncio.wait_for(ws.recv(), timeout)
    except BaseException:
        await ws.close()
        raise
    welcome = json.loads(raw)
    assert welcome.get("type") == "welcome", welcome
    return Client(ws, welcome, keep_commits)


async def send_auth(c, tok, req_id="a1", timeout=TIMEOUT):
    """Send an auth message; return the reply (ack or error)."""
    return await c.request({"type": "auth", "id": req_id, "token": tok}, timeout)


@contextlib.asynccontextmanager
async def authed(tok, **kw):
    """A client that authenticated with `tok` (its ack is in c.auth_ack)."""
    c = await open_client(**kw)
    try:
        reply = await send_auth(c, tok)
        assert reply.get("type") == "ack" and reply.get("request") == "auth", reply
        c.auth_ack = reply
        yield c
    finally:
        await c.close()


async def refused(c, timeout=TIMEOUT):
    """After a refused token: (the error message, the close code)."""
    err = await c.wait_for(lambda m: m["type"] == "error", timeout, what="an error")
    code = await c.expect_close(timeout)
    return err, code


async def auth_refusal(tok, timeout=TIMEOUT):
    """Open a client, send tok; return (reply, close code or None if still open)."""
    c = await open_client()
    try:
        await c.send({"type": "auth", "id": "a1", "token": tok})
        try:
            reply = await c.wait_for(lambda m: m["type"] in ("ack", "error"), timeout,
                                     what="a reply to auth")
        except Closed as e:
            return None, e.code
        if reply["type"] == "ack":
            return reply, None
        return reply, await c.expect_close(timeout)
    finally:
        await c.close()


def raw_handshake(headers, path="/ws", port=PORT, timeout=10):
    """Send a hand-written WebSocket upgrade request with exactly `headers` (a list of
    (name, value), Host included when wanted); return the status code of the answer."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [f"GET {path} HTTP/1.1"]
    lines += [f"{n}: {v}" for n, v in headers]
    lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
              "Sec-WebSocket-Version: 13", "", ""]
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall("\r\n".join(lines).encode())
        buf = b""
        while b"\r\n" not in buf:
            chunk = s.recv(4096)
            if not chunk:
                break
            buf += chunk
    status = buf.split(b"\r\n", 1)[0].decode(errors="replace")
    parts = status.split()
    assert len(parts) >= 2 and parts[0].startswith("HTTP/"), f"no HTTP status: {buf[:200]!r}"
    return int(parts[1])


async def silent(c, sub=None, seconds=1.0):
    """Read for `seconds` and return the data messages of `sub` that arrived."""
    await asyncio.sleep(seconds)
    await c.sync()
    return c.kept_pushes(sub)


# --------------------------------------------------------------------------- roles, tables


@contextlib.contextmanager
def login_as(role):
    """A connection (autocommit) logged in as `role` (trust authentication on loopback)."""
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user=role, dbname=DB, connect_timeout=10,
                            application_name="plank-e2e-attacker")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()



class Resources:
    """Roles and tables with unique names, dropped at the end of the test."""

    def __init__(self):
        self.roles = []
        self.tables = []
        self.grants = []   # (channel pattern, grantee)

    def role(self, prefix="sec", options="NOLOGIN"):
        name = f"{prefix}_{tag()}"
        sql(f'CREATE ROLE "{name}" {options}')
        sql(f'GRANT "{name}" TO plank_authenticator')
        self.roles.append(name)
        return name

    def table(self, ddl_columns, prefix="sec", track=True):
        name = f"{prefix}_{tag()}"
        sql(f"CREATE TABLE public.{name} ({ddl_columns})")
        self.tables.append(name)
        if track:
            sql("SELECT plank.track(%s::regclass)", (f"public.{name}",))
        return name

    def grant_channel(self, pattern, grantee):
        sql("SELECT plank.grant_channel(%s, %s)", (pattern, grantee))
        self.grants.append((pattern, grantee))

    def cleanup(self):
        for pattern, grantee in self.grants:
            with contextlib.suppress(Exception):
                sql("SELECT plank.revoke_channel(%s, %s)", (pattern, grantee))
        for t in self.tables:
            with contextlib.suppress(Exception):
                sql(f"DROP TABLE IF EXISTS public.{t} CASCADE")
        for r in self.roles:
            with contextlib.suppress(Exception):
                sql(f'DROP OWNED BY "{r}"')
            with contextlib.suppress(Exception):
                sql(f'DROP ROLE IF EXISTS "{r}"')


@pytest.fixture
def res():
    r = Resources()
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture(scope="module")
def no_anonymous():
    """plank.anonymous_role = '' for a whole module: clients must authenticate."""
    with plank_settings({"plank.anonymous_role": ""}):
        yield


