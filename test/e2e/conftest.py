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
import collections
import contextlib
import json
import os
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

PUSH_TYPES = ("change", "notify", "snapshot")  # messages of a subscription, not replies
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
    """PIDs of the Plank worker as pg_stat_activity shows them."""
    return [r[0] for r in sql("SELECT pid FROM pg_stat_activity WHERE backend_type = 'plank'")]


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
    are kept, in order, in `inbox`."""

    def __init__(self, ws, welcome):
        self.ws = ws
        self.welcome = welcome
        self.inbox = collections.deque()
        self._n = 0

    @classmethod
    async def open(cls, url=WS_URL, timeout=TIMEOUT):
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
        return cls(ws, welcome)

    # -- raw I/O
    async def send(self, message):
        """Send a dict as JSON, or a str as it is, in one text frame."""
        await self.ws.send(message if isinstance(message, str) else json.dumps(message))

    async def _recv(self, timeout):
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
            self.inbox.append(m)

    # -- requests
    async def request(self, message, timeout=TIMEOUT):
        """Send a request and return the next reply (any message that is not a pushed
        change or notify). Requests are answered in order, one at a time."""
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

    # -- pushed messages
    async def next_push(self, sub=None, timeout=TIMEOUT):
        return await self.wait_for(
            lambda m: m["type"] in PUSH_TYPES and (sub is None or m.get("sub") == sub),
            timeout, what=f"a change/notify for sub {sub!r}")

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
        return [m for m in self.inbox
                if m["type"] in PUSH_TYPES and (sub is None or m.get("sub") == sub)]

    # -- closing
    async def expect_close(self, timeout=TIMEOUT):
        """Read until the server closes; return the close code (1006: no close frame)."""
        try:
            while True:
                self.inbox.append(await self._recv(timeout))
        except Closed as e:
            return e.code
        except asyncio.TimeoutError:
            raise AssertionError(f"the server did not close the connection within {timeout}s")

    async def close(self):
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5)


@contextlib.asynccontextmanager
async def client(url=WS_URL, timeout=TIMEOUT):
    c = await Client.open(url, timeout)
    try:
        yield c
    finally:
        await c.close()


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
