"""Probes and resources shared by the e2e test modules; this module holds no tests
(conftest.py holds the basics every module uses: sql(), client(), poll(), run()).

- SQL: `rows()` returns dicts (column name -> value), in any database of the cluster;
  `login_as(role)` is a database connection (autocommit) logged in as another role (the
  test cluster trusts 127.0.0.1); `worker_pid()` is the pid pg_stat_activity shows for a
  database's worker;
- views: `stats()`, `connections()`, `subscriptions()` read plank.stats,
  plank.connections and plank.subscriptions; `connection_of()` finds a client's
  connection id by one of its (unique) subscription ids, since the welcome does not
  carry the id;
- `apoll()` is conftest.poll for coroutines (it sleeps with asyncio.sleep);
- HTTP: `http_get()` (status, headers, body) on Plank's port;
- Prometheus: `parse_prometheus()` checks the text exposition format 0.0.4 line by line
  and returns the families; `metric_value()` reads one unlabelled sample;
- settings: `plank_settings({...})` is a context manager that applies plank.* settings
  with ALTER SYSTEM + pg_reload_conf(), waits until the worker has applied them, and
  restores them (and waits again) on the way out: to an enclosing block's values, else
  RESET. The reload carries a marker the worker can be seen to apply without any
  authentication or subscription: plank.max_message_size = 1kB (a 1.5 kB ping is closed
  with 1009), so it works whatever plank.anonymous_role, the JWT settings or the origin
  list say; `apply_settings()` is the same without the restore;
- tokens: `token(role, **claims)` signs HS256 (or another HS* alg) with the test
  cluster's plank.jwt_secret; `sign(claims)` signs a claims dict as it is; `jws()`
  builds any compact JWS by hand (alg none, crit headers, an HMAC keyed with arbitrary
  bytes), which PyJWT refuses to produce;
- clients: `open_client()` (with an Origin or extra headers), `authed()` (a client that
  sent a token and got its ack), `auth_refusal()`, `refused()`, `silent()`,
  `raw_handshake()` (a hand-written HTTP upgrade, for headers websockets will not send,
  such as a forged Host);
- fixtures (import them into a test module to use them): `res` (`Resources`: roles,
  tables and channel grants with unique names, dropped afterwards), `roles` (`Roles`:
  login roles dropped afterwards, in both databases), `no_anonymous` (module scope:
  clients must authenticate).
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import math
import os
import re
import socket
import time

import psycopg2
import psycopg2.extras
import pytest
import websockets

from conftest import (DB, PGHOST, PGPORT, PORT, TIMEOUT, WS_URL, Client, Closed, poll, run,
                      set_settings, sql, tag)

DB2 = os.environ.get("PLANK_DB2", DB + "2")
PORT2 = PORT + 1
WS_URL2 = f"ws://127.0.0.1:{PORT2}/ws"
SECRET = "plank-test-secret-0123456789abcdef"   # plank.jwt_secret set by scripts/test.sh
HS = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}


# --------------------------------------------------------------------------- SQL


def rows(query, params=None, dbname=DB, user="postgres"):
    """Run one statement on a fresh autocommit connection; return its rows as dicts."""
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user=user, dbname=dbname,
                            connect_timeout=10, application_name="plank-e2e")
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            return [dict(r) for r in cur.fetchall()] if cur.description is not None else []
    finally:
        conn.close()


@contextlib.contextmanager
def login_as(role, dbname=DB):
    """A connection (autocommit) logged in as `role` (trust authentication on loopback)."""
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user=role, dbname=dbname,
                            connect_timeout=10, application_name="plank-e2e-role")
    conn.autocommit = True
    try:
        yield conn
    finally:
        conn.close()


def worker_pid(dbname=DB):
    r = sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'plank' AND datname = %s",
            (dbname,))
    assert len(r) == 1, f"expected one plank worker for {dbname}, pg_stat_activity shows {r}"
    return r[0][0]


def stats(dbname=DB):
    r = rows("SELECT * FROM plank.stats", dbname=dbname)
    assert len(r) == 1, r
    return r[0]


def connections(dbname=DB):
    return {r["id"]: r for r in rows("SELECT * FROM plank.connections", dbname=dbname)}


def subscriptions(dbname=DB):
    return rows("SELECT * FROM plank.subscriptions ORDER BY connection_id, id", dbname=dbname)


def connection_of(sub_id, dbname=DB):
    """The connection id that holds subscription `sub_id` (None when none does)."""
    ids = {r["connection_id"] for r in subscriptions(dbname) if r["id"] == sub_id}
    assert len(ids) <= 1, f"subscription id {sub_id} is on several connections: {ids}"
    return ids.pop() if ids else None


async def apoll(fn, timeout=10.0, interval=0.05, what="a condition"):
    """Call fn (a plain function) until it returns something truthy; return that."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


# --------------------------------------------------------------------------- HTTP


async def resume_into_new_epoch(c, name, old_epoch, last_seq, epoch):
    """Subscribe c to the rows of public.items named name, with a snapshot and
    "since" (old_epoch, last_seq) from a worker that is gone: the answer is
    resync_required (epoch_changed, the new worker's epoch), then the snapshot, then
    an ack that did not resume at the snapshot's seq (docs/PROTOCOL.md, "Resuming").
    Returns the snapshot's values, sorted, and the ack."""
    pushed, ack = await c.request_all({
        "type": "subscribe", "id": "items", "table": "public.items",
        "filter": {"name": name}, "snapshot": True,
        "since": {"epoch": old_epoch, "seq": last_seq}})
    assert [m["type"] for m in pushed] == ["resync_required", "snapshot"], pushed
    rs, snap = pushed
    assert rs["reason"] == "epoch_changed" and rs["epoch"] == epoch, rs
    assert ack["type"] == "ack" and ack["resumed"] is False and snap["seq"] == ack["seq"]
    return sorted(r["value"] for r in snap["rows"]), ack


def http_get(path, port=PORT, timeout=10):
    """GET path on Plank's port: (status, headers as a lower-cased dict, body as str)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", errors="replace")
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, body
    finally:
        conn.close()


# --------------------------------------------------------------------------- Prometheus

_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
_SAMPLE = re.compile(rf"^({_NAME})(?:\{{(.*)\}})?[ \t]+(\S+)(?:[ \t]+(-?\d+))?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\\n]|\\[\\"n])*)"\s*(,|$)')
_TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def _value(text, line):
    if text in ("+Inf", "Inf"):
        return math.inf
    if text == "-Inf":
        return -math.inf
    if text == "NaN":
        return math.nan
    assert re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", text), \
        f"not a Prometheus sample value: {text!r} in {line!r}"
    return float(text)


def _labels(text, line):
    out = {}
    pos = 0
    while pos < len(text):
        m = _LABEL.match(text, pos)
        assert m, f"bad label set {{{text}}} in {line!r}"
        assert m.group(1) not in out, f"label {m.group(1)} repeated in {line!r}"
        out[m.group(1)] = m.group(2)
        pos = m.end()
        if m.group(3) == "":
            break
    assert pos >= len(text.rstrip()), f"bad label set {{{text}}} in {line!r}"
    return out


def _family_of(name, types):
    if name in types:
        return name
    for suffix in ("_bucket", "_sum", "_count"):
        if name.endswith(suffix) and types.get(name[:-len(suffix)]) in ("histogram", "summary"):
            return name[:-len(suffix)]
    return name


LABELLED_ONLY = {"plank_changes_total"}


def parse_prometheus(text):
    """Check a Prometheus text format 0.0.4 body and return {family: {"type", "help",
    "samples": [(name, labels, value)]}}.

    Checked: the body ends with a newline; every line is a comment (# HELP name text,
    # TYPE name type) or a sample `name{labels} value [timestamp]`; HELP and TYPE appear at
    most once per family, before its samples; a family's samples are contiguous; sample
    names belong to a declared family (histograms: _bucket, _sum, _count); no sample
    (name + labels) appears twice; counters end in _total; each histogram has buckets with
    an `le` label in increasing order whose cumulative counts never decrease, ending in
    le="+Inf" equal to _count, and a _sum."""
    assert text.endswith("\n"), "the body must end with a line feed"
    families = {}
    types = {}
    order = []          # families in the order their samples appear
    seen = set()
    for line in text.split("\n")[:-1]:
        assert line.strip() == line or line == "", f"stray whitespace in {line!r}"
        if line == "":
            continue
        if line.startswith("#"):
            parts = line.split(None, 3)
            if len(parts) >= 3 and parts[1] in ("HELP", "TYPE"):
                name = parts[2]
                assert re.fullmatch(_NAME, name), f"bad metric name in {line!r}"
                fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
                assert not fam["samples"], f"{parts[1]} of {name} after its samples: {line!r}"
                if parts[1] == "HELP":
                    assert fam["help"] is None, f"second HELP for {name}"
                    assert len(parts) == 4 and parts[3].strip(), f"empty HELP: {line!r}"
                    fam["help"] = parts[3]
                else:
                    assert fam["type"] is None, f"second TYPE for {name}"
                    assert len(parts) == 4 and parts[3] in _TYPES, f"bad TYPE line {line!r}"
                    fam["type"] = parts[3]
                    types[name] = parts[3]
            continue   # other comments are allowed
        m = _SAMPLE.match(line)
        assert m, f"not a sample line: {line!r}"
        name, labels_text, value_text = m.group(1), m.group(2) or "", m.group(3)
        labels = _labels(labels_text, line)
        value = _value(value_text, line)
        fam_name = _family_of(name, types)
        assert fam_name in families and families[fam_name]["type"] is not None, \
            f"sample {name} has no TYPE line before it"
        key = (name, tuple(sorted(labels.items())))
        assert key not in seen, f"sample repeated: {line!r}"
        seen.add(key)
        if not order or order[-1] != fam_name:
            assert fam_name not in order, f"samples of {fam_name} are not contiguous"
            order.append(fam_name)
        families[fam_name]["samples"].append((name, labels, value))

    for name, fam in families.items():
        assert fam["type"] is not None, f"{name} has HELP but no TYPE"
        # a family whose samples are per label value (per table) has none before the
        # first value; every other family always has its sample
        assert fam["samples"] or name in LABELLED_ONLY, f"{name} is declared but has no sample"
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} does not end in _total"
            for s in fam["samples"]:
                assert s[0] == name and s[2] >= 0, f"bad counter sample {s}"
        elif fam["type"] == "gauge":
            for s in fam["samples"]:
                assert s[0] == name, f"bad gauge sample {s}"
        elif fam["type"] == "histogram":
            buckets = [s for s in fam["samples"] if s[0] == name + "_bucket"]
            sums = [s for s in fam["samples"] if s[0] == name + "_sum"]
            counts = [s for s in fam["samples"] if s[0] == name + "_count"]
            assert len(sums) == 1 and len(counts) == 1, f"{name}: one _sum and one _count"
            assert buckets, f"histogram {name} has no buckets"
            les = []
            for s in buckets:
                assert set(s[1]) == {"le"}, f"bucket without (only) an le label: {s}"
                les.append(_value(s[1]["le"], str(s)))
            assert les == sorted(les) and len(set(les)) == len(les), \
                f"{name} buckets are not in increasing order of le: {les}"
            assert les[-1] == math.inf, f"{name}: the last bucket is not le=\"+Inf\""
            cumulative = [s[2] for s in buckets]
            assert all(a <= b for a, b in zip(cumulative, cumulative[1:])), \
                f"{name} bucket counts are not cumulative: {cumulative}"
            assert cumulative[-1] == counts[0][2], \
                f"{name}: +Inf bucket {cumulative[-1]} != _count {counts[0][2]}"
            assert sums[0][2] >= 0
            fam["buckets"] = list(zip(les, cumulative))
            fam["count"] = counts[0][2]
            fam["sum"] = sums[0][2]
    return families


def metric_value(families, name):
    """The value of a metric family with one unlabelled sample."""
    fam = families[name]
    assert len(fam["samples"]) == 1, fam
    return fam["samples"][0][2]


# --------------------------------------------------------------------------- settings


def _alter_system(name, value):
    assert name.startswith("plank.") and name.replace(".", "").replace("_", "").isalnum(), name
    if value is None:
        sql(f"ALTER SYSTEM RESET {name}")
    else:
        sql(f"ALTER SYSTEM SET {name} = %s", (str(value),))


def _message_size_limited():
    """Is the marker plank.max_message_size = 1kB in effect (a 1.5 kB ping closes with
    1009)? Works whatever the authentication settings: the size is checked before the
    message is read. None when the probe could not tell (the server refused the
    handshake)."""
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
    worker has applied them (see the module docstring). When the settings include
    plank.max_message_size itself, conftest's barrier (plank.snapshot_limit) is used
    instead; it needs anonymous clients."""
    if "plank.max_message_size" in settings:
        set_settings(settings, timeout)
        return
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


def sign(claims, key=SECRET, alg="HS256", header=None):
    """An HMAC-signed compact JWS of the claims dict `claims`, as it is."""
    hdr = {"alg": alg, "typ": "JWT"}
    hdr.update(header or {})
    return jws(hdr, claims, key)


def token(role="postgres", key=SECRET, alg="HS256", header=None, **claims):
    """An HMAC-signed token naming `role` (None: no role claim), with these claims."""
    body = dict(claims)
    if role is not None:
        body["role"] = role
    return sign(body, key, alg, header)


def now():
    return int(time.time())


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


class Roles:
    """Roles with unique names, dropped (with what they own and were granted) at the end."""

    def __init__(self):
        self.names = []

    def make(self, prefix="ops", options="LOGIN"):
        name = f"{prefix}_{tag()}"
        sql(f'CREATE ROLE "{name}" {options}')
        sql(f'GRANT "{name}" TO plank_authenticator')
        self.names.append(name)
        return name

    def cleanup(self):
        for r in self.names:
            for dbname in (DB, DB2):
                with contextlib.suppress(Exception):
                    rows(f'DROP OWNED BY "{r}"', dbname=dbname)
            with contextlib.suppress(Exception):
                sql(f'DROP ROLE IF EXISTS "{r}"')


@pytest.fixture
def roles():
    r = Roles()
    try:
        yield r
    finally:
        r.cleanup()
