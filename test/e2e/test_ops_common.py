"""Helpers shared by the operations tests (test_ops_*.py); this module holds no tests.

- SQL: `rows()` returns dicts (column name -> value), in any database of the cluster;
  `login_as()` connects as another role (the test cluster trusts 127.0.0.1);
  `worker_pid()` is the pid pg_stat_activity shows for a database's worker;
- views: `stats()`, `connections()`, `subscriptions()` read plank.stats,
  plank.connections and plank.subscriptions;
- `connection_of()` finds a client's connection id by one of its (unique) subscription
  ids, since the welcome does not carry the id;
- `apoll()` is conftest.poll for coroutines (it sleeps with asyncio.sleep);
- HTTP: `http_get()` (status, headers, body) on Plank's port;
- Prometheus: `parse_prometheus()` checks the text exposition format 0.0.4 line by line
  and returns the families;
- settings: `plank_settings({...})` applies plank.* settings (ALTER SYSTEM +
  pg_reload_conf() and a reload barrier that needs no authentication) and resets them
  afterwards;
- tokens: `token()` signs HS256 with the test cluster's plank.jwt_secret;
- `Roles`: login roles with unique names, dropped at the end of the test.
"""

import asyncio
import base64
import contextlib
import hashlib
import hmac
import http.client
import json
import math
import re
import time

import psycopg2
import psycopg2.extras
import pytest
import websockets

from conftest import DB, PGHOST, PGPORT, PORT, WS_URL, set_settings, sql, tag

DB2 = __import__("os").environ.get("PLANK_DB2", DB + "2")
PORT2 = PORT + 1
WS_URL2 = f"ws://127.0.0.1:{PORT2}/ws"
SECRET = "plank-test-secret-0123456789abcdef"   # plank.jwt_secret set by scripts/test.sh


# --------------------------------------------------------------------------- SQL


def rows(query, params=None, dbname=DB, user="postgres"):
    """Run one statement on a fresh autocommit connection; return its rows as dicts."""
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user=user, dbname=dbname,
                            connect_timeout=10, application_name="plank-e2e-ops")
    conn.autocommit = True
    try:
        with conn.cursor(cursor_factory=psycopg2.extras.RealDictCursor) as cur:
            cur.execute(query, params)
            return [dict(r) for r in cur.fetchall()] if cur.description is not None else []
    finally:
        conn.close()


@contextlib.contextmanager
def login_as(role, dbname=DB):
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user=role, dbname=dbname,
                            connect_timeout=10, application_name="plank-e2e-ops")
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
        assert fam["samples"], f"{name} is declared but has no sample"
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
    """Is plank.max_message_size = 1kB in effect (a 1.5 kB ping is closed with 1009)?
    Works whatever the authentication settings: the size is checked before the message
    is read. None when the probe could not tell."""
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
                    return (e.rcvd.code if e.rcvd is not None else 1006) == 1009
                if json.loads(raw).get("type") in ("pong", "error"):
                    return False
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 3)
    return asyncio.run(asyncio.wait_for(probe(), 20))


def _wait(fn, timeout, what):
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


def apply_settings(settings, timeout=20.0):
    """ALTER SYSTEM SET each name = value (RESET for None), pg_reload_conf(), and wait
    until the worker has applied them. The reload carries a marker the worker can be seen
    to apply without authenticating: plank.max_message_size = 1kB; a second reload resets
    the marker. When the settings include plank.max_message_size itself, conftest's
    barrier (plank.snapshot_limit) is used instead; it needs anonymous clients."""
    if "plank.max_message_size" in settings:
        set_settings(settings, timeout)
        return
    for name, value in settings.items():
        _alter_system(name, value)
    _alter_system("plank.max_message_size", "1kB")
    sql("SELECT pg_reload_conf()")
    _wait(lambda: _message_size_limited() is True, timeout, f"the worker to apply {settings}")
    _alter_system("plank.max_message_size", None)
    sql("SELECT pg_reload_conf()")
    _wait(lambda: _message_size_limited() is False, timeout, "the worker to reset the marker")


@contextlib.contextmanager
def plank_settings(settings):
    """Apply plank.* settings (reload, and wait until the worker applied them) for the
    duration of a with block; RESET them (and wait) after."""
    try:
        apply_settings(settings)
        yield
    finally:
        apply_settings({name: None for name in settings})


# --------------------------------------------------------------------------- tokens


def b64u(data):
    if isinstance(data, str):
        data = data.encode()
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def token(claims, key=SECRET, header=None):
    """An HS256 compact JWS of these claims, signed with `key`."""
    h = {"alg": "HS256", "typ": "JWT"}
    h.update(header or {})
    signing_input = (f"{b64u(json.dumps(h, separators=(',', ':')))}."
                     f"{b64u(json.dumps(claims, separators=(',', ':')))}")
    k = key.encode() if isinstance(key, str) else key
    sig = hmac.new(k, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64u(sig)}"


# --------------------------------------------------------------------------- roles


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
