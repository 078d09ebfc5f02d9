"""Shared fixtures and helpers for Plank's end-to-end tests.

The tests talk to a real PostgreSQL cluster with the Plank worker preloaded, as started by
scripts/test.sh, which exports:

    PLANK_PGHOST, PLANK_PGPORT, PLANK_DB   where the database is (user postgres, trust)
    PLANK_PORT, PLANK_URL                  the worker's HTTP/WebSocket port and page URL
    PLANK_DATADIR, PLANK_PGCTL             for the tests that stop and start the cluster
    PLANK_LOGFILE, PLANK_STATIC            the server log, and the static files directory

No mocks: SQL goes through psycopg2 (autocommit connections), WebSocket traffic through the
`websockets` library (Debian's 10.x). pytest-asyncio is not used: each test drives its own
coroutine with `run()` (asyncio.run under a bounded timeout). Every wait is bounded.
"""

import asyncio
import base64
import collections
import contextlib
import json
import os
import socket
import struct
import subprocess
import time
import uuid

import psycopg2
import pytest
import websockets

PGHOST = os.environ.get("PLANK_PGHOST", "127.0.0.1")
PGPORT = int(os.environ.get("PLANK_PGPORT", "5499"))
DB = os.environ.get("PLANK_DB", "plank_test")
PORT = int(os.environ.get("PLANK_PORT", "18099"))
URL = os.environ.get("PLANK_URL", f"http://127.0.0.1:{PORT}/")
WS_URL = f"ws://127.0.0.1:{PORT}/ws"
DATADIR = os.environ.get("PLANK_DATADIR", "")
PGCTL = os.environ.get("PLANK_PGCTL", "/usr/lib/postgresql/15/bin/pg_ctl")
LOGFILE = os.environ.get("PLANK_LOGFILE", "")
STATIC = os.environ.get("PLANK_STATIC", "")

# Messages pushed for a subscription (they carry "sub"), as opposed to replies (ack, pong,
# error). DATA_TYPES are what most tests wait for; a `commit` marker follows the last change
# of each transaction a table subscription received changes of (it reuses that change's
# seq), and `resync_required` precedes the ack of a subscribe whose "since" was refused.
DATA_TYPES = ("change", "notify", "snapshot")
PUSH_TYPES = DATA_TYPES + ("commit", "resync_required")
TIMEOUT = 10.0  # default bound of one wait for one message


# --------------------------------------------------------------------------- utilities


def tag():
    """A short unique string to tell this test's rows and ids from others'."""
    return "t" + uuid.uuid4().hex[:12]


def log_tail(lines=40):
    """The last lines of the server log, for failure messages."""
    if not LOGFILE:
        return "(PLANK_LOGFILE not set)"
    try:
        with open(LOGFILE, encoding="utf-8", errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError as e:
        return f"(cannot read {LOGFILE}: {e})"


def run(coro, timeout=60.0):
    """Run one test coroutine to completion, bounded by `timeout` seconds."""
    return asyncio.run(asyncio.wait_for(coro, timeout))


def as_postgres(*cmd, timeout=120):
    """Run a server command as the postgres OS user (runuser when we are root)."""
    argv = list(cmd)
    if os.geteuid() == 0:
        argv = ["runuser", "-u", "postgres", "--"] + argv
    return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, check=False)


# --------------------------------------------------------------------------- SQL


def connect(dbname=DB, autocommit=True):
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user="postgres", dbname=dbname,
                            connect_timeout=10, application_name="plank-e2e")
    conn.autocommit = autocommit
    return conn


def write_transaction(statements, connect_fn=None):
    """Run statements, [(sql, params)], in one transaction on a new connection
    (connect(), or connect_fn) and commit it; returns the transaction's xid."""
    conn = (connect_fn or connect)(autocommit=False)
    try:
        with conn.cursor() as cur:
            for query, params in statements:
                cur.execute(query, params)
            cur.execute("SELECT txid_current()")
            xid = cur.fetchone()[0]
        conn.commit()
        return xid
    finally:
        conn.close()


class Db:
    """An autocommit psycopg2 connection that reconnects when the server went away."""

    def __init__(self, dbname=DB):
        self.dbname = dbname
        self.conn = None

    def _conn(self):
        if self.conn is None or self.conn.closed:
            self.conn = connect(self.dbname)
        return self.conn

    def query(self, sql, params=None):
        """Run one statement; return its rows (a list of tuples; [] without a result)."""
        try:
            with self._conn().cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description is not None else []
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.close()
            raise

    def execute(self, sql, params=None):
        self.query(sql, params)

    def scalar(self, sql, params=None):
        rows = self.query(sql, params)
        return rows[0][0] if rows else None

    def insert_item(self, name, value=0):
        """INSERT one items row in its own transaction; return its id."""
        return self.scalar("INSERT INTO items (name, value) VALUES (%s, %s) RETURNING id",
                           (name, value))

    def close(self):
        if self.conn is not None:
            with contextlib.suppress(Exception):
                self.conn.close()
        self.conn = None


def sql(query, params=None):
    """Run one statement on a fresh autocommit connection; return its rows."""
    db = Db()
    try:
        return db.query(query, params)
    finally:
        db.close()


def worker_pids():
    """PIDs of the Plank worker serving the test database, as pg_stat_activity shows
    them (plank.database also lists a second database, served by another worker)."""
    return [r[0] for r in sql("SELECT pid FROM pg_stat_activity "
                              "WHERE backend_type = 'plank' AND datname = current_database()")]


# --------------------------------------------------------------------------- WebSocket


class Closed(Exception):
    """The server closed the connection while a message was awaited."""

    def __init__(self, code, reason=""):
        super().__init__(f"connection closed by the server (code {code} {reason!r})")
        self.code = code
        self.reason = reason


def close_code_of(exc, ws):
    if getattr(exc, "rcvd", None) is not None:
        return exc.rcvd.code, exc.rcvd.reason
    return ws.close_code or 1006, ""


class Client:
    """One WebSocket client. Messages that arrive while the test waits for something else
    are kept, in order, in `inbox`.

    `commit` markers: with keep_commits=False (the default, for tests that are not about
    transactions) they are set aside in `commits` as they arrive and never reach `inbox`,
    so that waits, `kept_pushes()` and `request()` see changes and replies only. With
    keep_commits=True they stay in `inbox` in arrival order, and `next_event()` /
    `events()` return them interleaved with the changes."""

    def __init__(self, ws, welcome, keep_commits=False):
        self.ws = ws
        self.welcome = welcome
        self.keep_commits = keep_commits
        self._unfolded = []     # commit markers that a change with "commit": true stood for
        self.folded = 0         # how many changes arrived with "commit": true
        self.inbox = collections.deque()
        self.commits = []
        self._n = 0

    @classmethod
    async def open(cls, url=WS_URL, timeout=TIMEOUT, keep_commits=False):
        ws = await asyncio.wait_for(
            websockets.connect(url, max_size=None, max_queue=None, ping_interval=None,
                               close_timeout=2, open_timeout=timeout),
            timeout)
        try:
            raw = await asyncio.wait_for(ws.recv(), timeout)
        except BaseException:
            await ws.close()
            raise
        assert isinstance(raw, str), f"welcome is not a text frame: {raw!r}"
        welcome = json.loads(raw)
        assert welcome.get("type") == "welcome", f"first message is not a welcome: {welcome}"
        return cls(ws, welcome, keep_commits)

    # -- raw I/O
    async def send(self, message):
        """Send a dict as JSON, or a str as it is, in one text frame."""
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def _recv(self, timeout):
        if self._unfolded:
            return self._unfolded.pop(0)
        try:
            raw = await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as e:
            raise Closed(*close_code_of(e, self.ws)) from None
        assert isinstance(raw, str), f"server sent a non-text frame: {raw!r}"
        try:
            msg = json.loads(raw)
        except ValueError:
            raise AssertionError(f"server sent invalid JSON: {raw!r}") from None
        assert isinstance(msg, dict) and "type" in msg, f"not a message object: {raw!r}"
        if msg["type"] == "change" and "commit" in msg:
            # The last change of a transaction carries "commit": true instead of being
            # followed by a commit marker (docs/PROTOCOL.md, "commit"). Tests see the two
            # messages that it stands for; test_commit.py checks the wire form itself.
            assert msg.pop("commit") is True, f"commit member that is not true: {raw!r}"
            self.folded += 1
            self._unfolded.append({"sub": msg["sub"], "type": "commit", "seq": msg["seq"],
                                   "epoch": msg["epoch"], "xid": msg["change"]["xid"]})
        return msg

    async def wait_for(self, pred, timeout=TIMEOUT, what="a matching message"):
        """Remove and return the first message (kept or new) that satisfies pred."""
        for m in list(self.inbox):
            if pred(m):
                self.inbox.remove(m)
                return m
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}; "
                                     f"kept messages: {list(self.inbox)[:10]}")
            try:
                m = await self._recv(left)
            except asyncio.TimeoutError:
                continue
            if pred(m):
                return m
            self._keep(m)

    def _keep(self, m):
        if m["type"] == "commit" and not self.keep_commits:
            self.commits.append(m)
        else:
            self.inbox.append(m)

    # -- requests
    async def request(self, message, timeout=TIMEOUT):
        """Send a request and return the next reply (any message that is not pushed for a
        subscription: not a change, notify, snapshot, commit or resync_required). Requests
        are answered in order, one at a time."""
        await self.send(message)
        return await self.wait_for(lambda m: m["type"] not in PUSH_TYPES, timeout,
                                   what=f"a reply to {str(message)[:200]}")

    async def subscribe(self, sub_id, table=None, channel=None, **extra):
        """Subscribe and assert the ack; return it."""
        req = {"type": "subscribe", "id": sub_id}
        if table is not None:
            req["table"] = table
        if channel is not None:
            req["channel"] = channel
        req.update(extra)
        reply = await self.request(req)
        assert reply.get("type") == "ack" and reply.get("id") == sub_id \
            and reply.get("request") == "subscribe" and isinstance(reply.get("seq"), int), \
            f"subscribe {req} got {reply}"
        # every subscribe ack says whether a "since" was honoured; without one it was not
        assert isinstance(reply.get("resumed"), bool), f"subscribe ack without resumed: {reply}"
        if "since" not in req:
            assert reply["resumed"] is False, f"resumed without a since: {reply}"
        return reply

    async def unsubscribe(self, sub_id):
        reply = await self.request({"type": "unsubscribe", "id": sub_id})
        assert reply.get("type") == "ack" and reply.get("id") == sub_id \
            and reply.get("request") == "unsubscribe" and isinstance(reply.get("seq"), int), \
            f"unsubscribe {sub_id} got {reply}"
        return reply

    async def sync(self, timeout=TIMEOUT):
        """A ping round trip: every message the server sent before the pong is then in
        `inbox`."""
        self._n += 1
        pid = f"sync-{self._n}"
        await self.send({"type": "ping", "id": pid})
        return await self.wait_for(lambda m: m["type"] == "pong" and m.get("id") == pid,
                                   timeout, what=f"pong {pid}")

    async def request_all(self, message, timeout=TIMEOUT):
        """Send a request; return (pushed, reply): every message pushed for a subscription
        (commit markers included) that came before the reply, in arrival order, and the
        reply. For a subscribe with "since" these are the replayed events, or
        resync_required and the snapshot. Kept messages count as having come first."""
        pushed = [m for m in self.inbox if m["type"] in PUSH_TYPES]
        others = [m for m in self.inbox if m["type"] not in PUSH_TYPES]
        self.inbox.clear()
        assert not others, f"replies pending before {str(message)[:200]}: {others}"
        await self.send(message)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError(f"timed out after {timeout}s waiting for a reply to "
                                     f"{str(message)[:200]}; pushed before: {pushed[:10]}")
            try:
                m = await self._recv(left)
            except asyncio.TimeoutError:
                continue
            if m["type"] not in PUSH_TYPES:
                return pushed, m
            pushed.append(m)

    # -- pushed messages
    async def next_push(self, sub=None, timeout=TIMEOUT):
        """The next change, notify or snapshot (not a commit marker) of `sub`."""
        return await self.wait_for(
            lambda m: m["type"] in DATA_TYPES and (sub is None or m.get("sub") == sub),
            timeout, what=f"a change/notify for sub {sub!r}")

    async def next_event(self, sub=None, timeout=TIMEOUT):
        """The next pushed message of `sub`, commit markers included (keep_commits=True)."""
        assert self.keep_commits, "next_event() needs a client opened with keep_commits=True"
        return await self.wait_for(
            lambda m: m["type"] in PUSH_TYPES and (sub is None or m.get("sub") == sub),
            timeout, what=f"a pushed message for sub {sub!r}")

    async def events(self, sub, count, timeout=TIMEOUT):
        """The next `count` pushed messages of `sub`, commits included, in arrival order."""
        return [await self.next_event(sub, timeout) for _ in range(count)]

    async def pushes(self, sub, count, timeout=TIMEOUT):
        """The next `count` pushed messages of subscription `sub`, in arrival order."""
        out = []
        for _ in range(count):
            out.append(await self.next_push(sub, timeout))
        return out

    async def change_named(self, sub, name, timeout=TIMEOUT):
        """Wait for the change of subscription `sub` whose new row has this name."""
        return await self.wait_for(
            lambda m: m["type"] == "change" and m.get("sub") == sub
            and (m["change"].get("new") or {}).get("name") == name,
            timeout, what=f"a change of {sub!r} with name {name!r}")

    def kept_pushes(self, sub=None):
        """Kept changes, notifies and snapshots (not commit markers)."""
        return [m for m in self.inbox
                if m["type"] in DATA_TYPES and (sub is None or m.get("sub") == sub)]

    def kept_events(self, sub=None):
        """Every kept pushed message, commit markers included (with keep_commits=True)."""
        return [m for m in self.inbox
                if m["type"] in PUSH_TYPES and (sub is None or m.get("sub") == sub)]

    # -- closing
    async def expect_close(self, timeout=TIMEOUT):
        """Read until the server closes; return the close code (1006: no close frame)."""
        try:
            while True:
                self._keep(await self._recv(timeout))
        except Closed as e:
            return e.code
        except asyncio.TimeoutError:
            raise AssertionError(f"the server did not close the connection within {timeout}s")

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


@contextlib.asynccontextmanager
async def client(url=WS_URL, timeout=TIMEOUT, keep_commits=False):
    c = await Client.open(url, timeout, keep_commits)
    try:
        yield c
    finally:
        await c.close()


# --------------------------------------------------------------------------- settings, log


def pg_ctl(*args, timeout=120):
    """pg_ctl on the suite's cluster, as the postgres user."""
    return as_postgres(PGCTL, "-D", DATADIR, *args, timeout=timeout)


def restart_postgres(settings):
    """ALTER SYSTEM each of `settings` (RESET for None), restart PostgreSQL (pg_ctl restart
    -m fast; the server keeps logging to the suite's log file) and wait for the new
    worker. Returns (pid, welcome) of the new worker. Never leaves the cluster down."""
    old_pid = worker_pids()[0]
    for name, value in settings.items():
        _alter_system(name, value)
    try:
        result = pg_ctl("restart", "-m", "fast", "-w", "-t", "60",
                        "-l", LOGFILE or f"{DATADIR}/restart.log")
        assert result.returncode == 0, \
            f"pg_ctl restart failed: {result.stdout}{result.stderr}\n{log_tail()}"
    finally:
        if pg_ctl("status").returncode != 0:
            pg_ctl("start", "-w", "-t", "60", "-l", LOGFILE or f"{DATADIR}/restart.log")
    return wait_for_worker(timeout=30, not_pid=old_pid)


def _alter_system(name, value):
    assert name.replace(".", "").replace("_", "").isalnum(), name
    if value is None:
        sql(f"ALTER SYSTEM RESET {name}")
    else:
        sql(f"ALTER SYSTEM SET {name} = %s", (str(value),))


def _snapshot_limited():
    """Is plank.snapshot_limit = 1 in effect in the worker (a 2-row table's snapshot is
    incomplete)?"""
    async def probe():
        async with client() as c:
            await c.subscribe("probe", table="public.e2e_reload_probe", snapshot=True)
            return c.kept_pushes("probe")[0]["complete"] is False
    return run(probe(), timeout=20)


def set_setting(name, value, timeout=15.0):
    """set_settings({name: value})."""
    set_settings({name: value}, timeout)


def set_settings(settings, timeout=15.0):
    """ALTER SYSTEM SET name = 'value' for each item (RESET when value is None),
    pg_reload_conf(), and wait until the worker has applied the reload. The worker
    handles SIGHUP on its own time and shows no setting to SQL, so the reload carries a
    marker it can be seen to apply: plank.snapshot_limit = 1 (a snapshot of a 2-row table becomes incomplete);
    then a second reload resets the marker, and is waited for the same way."""
    sql("CREATE TABLE IF NOT EXISTS public.e2e_reload_probe (id int PRIMARY KEY)")
    sql("INSERT INTO public.e2e_reload_probe VALUES (1), (2) ON CONFLICT DO NOTHING")
    sql("SELECT plank.track('public.e2e_reload_probe')")
    for name, value in settings.items():
        _alter_system(name, value)
    _alter_system("plank.snapshot_limit", 1)
    sql("SELECT pg_reload_conf()")
    poll(_snapshot_limited, timeout, what=f"the worker to apply {settings}")
    _alter_system("plank.snapshot_limit", None)
    sql("SELECT pg_reload_conf()")
    poll(lambda: not _snapshot_limited(), timeout, what="the worker to reset the marker")


def poll(fn, timeout=15.0, interval=0.1, what="a condition"):
    """Call fn until it returns something truthy; return that (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        result = fn()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


class ServerLog:
    """The server log from the moment this object was made: `text()` is what was written
    since (PLANK_LOGFILE; empty when it is not set)."""

    def __init__(self):
        self.offset = os.path.getsize(LOGFILE) if LOGFILE and os.path.exists(LOGFILE) else 0

    def text(self):
        if not LOGFILE:
            return ""
        with open(LOGFILE, "rb") as f:
            f.seek(self.offset)
            return f.read().decode("utf-8", errors="replace")


# --------------------------------------------------------------------------- raw WebSocket


class RawWebSocket:
    """A minimal blocking WebSocket client over a plain socket with a tiny receive buffer,
    so that a client which stops reading really stops the flow."""

    def __init__(self, port, rcvbuf=4096, timeout=10):
        self.s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        self.s.settimeout(timeout)
        self.s.connect(("127.0.0.1", port))
        key = base64.b64encode(os.urandom(16)).decode()
        self.s.sendall((f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.s.recv(4096)
            assert chunk, "connection closed during the handshake"
            self.buf += chunk
        head, rest = self.buf.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 101"), head
        self.buf = bytearray(rest)  # appended to in place: large frames stay cheap

    def send_pong(self, payload=b""):
        """A masked pong frame (answer to the server's ping)."""
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.s.sendall(struct.pack("!BB", 0x8A, 0x80 | len(payload)) + mask + masked)

    def send_text(self, text):
        data = text.encode()
        mask = os.urandom(4)
        n = len(data)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
        self.s.sendall(header + mask + masked)

    def _need(self, n):
        while len(self.buf) < n:
            chunk = self.s.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise EOFError
            self.buf += chunk

    def recv_frame(self):
        """(opcode, payload) of the next frame (server frames are not masked)."""
        self._need(2)
        b0, b1 = self.buf[0], self.buf[1]
        n, off = b1 & 0x7F, 2
        if n == 126:
            self._need(4)
            n, off = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10)
            n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
        self._need(off + n)
        payload = bytes(self.buf[off:off + n])
        del self.buf[:off + n]
        return b0 & 0x0F, payload

    def recv_json(self):
        op, payload = self.recv_frame()
        assert op == 1, f"expected a text frame, got opcode {op}"
        return json.loads(payload)

    def close(self):
        self.s.close()


# --------------------------------------------------------------------------- waiting


def wait_for_worker(timeout=30.0, not_pid=None):
    """Wait until the worker shows in pg_stat_activity (with a pid other than `not_pid`)
    and a WebSocket client gets its welcome. Returns (pid, welcome)."""
    deadline = time.monotonic() + timeout
    last = "nothing tried"
    while time.monotonic() < deadline:
        try:
            pids = [p for p in worker_pids() if p != not_pid]
        except psycopg2.Error as e:
            pids, last = [], f"database: {e}".strip()
        if pids:
            try:
                async def hello():
                    async with client(timeout=5) as c:
                        return c.welcome
                welcome = run(hello(), timeout=10)
                return pids[0], welcome
            except Exception as e:  # not listening yet, or restarting
                last = f"websocket: {type(e).__name__}: {e}"
        elif last == "nothing tried":
            last = "no backend_type 'plank' in pg_stat_activity"
        time.sleep(0.2)
    raise AssertionError(f"the Plank worker is not up after {timeout}s ({last}).\n"
                         f"server log:\n{log_tail()}")


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session", autouse=True)
def worker():
    """The worker is up before the first test: (pid, welcome)."""
    return wait_for_worker(30.0)


@pytest.fixture
def db():
    d = Db()
    try:
        yield d
    finally:
        d.close()


# --------------------------------------------------------------------------- test order

# Tests that restart or stop the shared cluster (or change a setting that is read at server
# start) carry @pytest.mark.disruptive(STAGE). They run after every other test, in the
# order of the stages below, each stage's tests in the order they were collected; every
# one leaves the cluster running as it found it, but a restart ends every connection, a
# new epoch begins and the worker's counters start again, so nothing else runs after them.
DISRUPTIVE_STAGES = (
    "deflate",    # test_deflate.py: two restarts, plank.permessage_deflate on then off
    "restart",    # test_restart.py: pg_ctl restart -m fast with clients connected
    "shutdown",   # test_shutdown.py: pg_ctl stop -m fast, then start again
)


def pytest_configure(config):
    config.addinivalue_line(
        "markers",
        "disruptive(stage): restarts or stops the shared cluster; runs after every other "
        f"test, by stage in this order: {', '.join(DISRUPTIVE_STAGES)}")


def _disruptive_rank(item):
    mark = item.get_closest_marker("disruptive")
    if mark is None:
        return 0
    stage = mark.args[0] if mark.args else None
    if stage not in DISRUPTIVE_STAGES:
        raise pytest.UsageError(f"{item.nodeid}: disruptive stage {stage!r} is not one of "
                                f"conftest.DISRUPTIVE_STAGES {DISRUPTIVE_STAGES}")
    return 1 + DISRUPTIVE_STAGES.index(stage)


def pytest_collection_modifyitems(session, config, items):
    """Move the disruptive tests to the end, by stage (a stable sort: the others keep
    their order)."""
    items.sort(key=_disruptive_rank)
