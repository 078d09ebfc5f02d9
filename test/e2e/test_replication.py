"""Plank on several nodes through PostgreSQL's logical replication (docs/SCALING.md).

This module starts three throwaway clusters of its own, on loopback: a primary
(wal_level = logical, a publication of two tables) and two subscribers, each with Plank
serving its database, plus nginx in front of the two subscribers. Promised:

- changes applied by the subscription reach every client of every subscriber exactly
  once, in the primary's commit order, with the same transaction boundaries and commit
  markers as local writes (single rows, a 10,000-row statement, a transaction over two
  tables, a row over 8 kB, UPDATE, DELETE, TRUNCATE), directly and through nginx;
- the initial table synchronisation sends nothing, and /health says "syncing" (HTTP 503)
  while it runs;
- a change applied from the primary carries its origin position ("origin", "n"), the
  same on every subscriber: a client that moves to the other subscriber resumes after
  its last change with no gap and no duplicate; a position the node does not hold gets
  resync_required;
- a subscriber restarted mid-stream catches up, and its clients resume (resync, snapshot,
  then changes) to exactly the primary's rows;
- /health, /metrics and plank.stats report the subscription's state and the lag.

Ports: PLANK_REPL_PGPORT (default 5481; the subscribers use the next two), and
PLANK_REPL_PORT (default 18481; Plank on the primary, the subscribers on the next two,
nginx on the one after). Binaries: PLANK_PGBIN (default /usr/lib/postgresql/15/bin);
Debian's nginx, installed with apt-get when it is missing.
Every cluster is stopped by its data directory (pg_ctl stop) and nginx by its PID file
at the end, also after a failure. PLANK_REPL_KEEP=1 keeps the temporary directory."""

import asyncio
import collections
import contextlib
import http.client
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time

import psycopg2
import pytest

from conftest import Client, as_postgres, run

PGBIN = os.environ.get("PLANK_PGBIN", "/usr/lib/postgresql/15/bin")
PGPORT = int(os.environ.get("PLANK_REPL_PGPORT", "5481"))
PORT = int(os.environ.get("PLANK_REPL_PORT", "18481"))
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
DB = "plank_repl"
NODES = ("primary", "sub1", "sub2")
PGPORTS = {n: PGPORT + i for i, n in enumerate(NODES)}
WSPORTS = {n: PORT + i for i, n in enumerate(NODES)}
NGINX_PORT = PORT + 3
BULK = 10000
TIMEOUT = 30.0

_state = {"tmp": None}


# --------------------------------------------------------------------------- clusters


def ws_url(node):
    if node == "nginx":
        return f"ws://127.0.0.1:{NGINX_PORT}/ws"
    return f"ws://127.0.0.1:{WSPORTS[node]}/ws"


def connect(node, autocommit=True):
    conn = psycopg2.connect(host="127.0.0.1", port=PGPORTS[node], user="postgres",
                            dbname=DB, connect_timeout=10, application_name="plank-e2e-repl")
    conn.autocommit = autocommit
    return conn


def q(node, query, params=None, dbname=DB):
    conn = psycopg2.connect(host="127.0.0.1", port=PGPORTS[node], user="postgres",
                            dbname=dbname, connect_timeout=10)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def tx(node, statements):
    """Run [(sql, params)] in one transaction on `node` and commit it."""
    conn = connect(node, autocommit=False)
    try:
        with conn.cursor() as cur:
            for query, params in statements:
                cur.execute(query, params)
        conn.commit()
    finally:
        conn.close()


def datadir(node):
    return os.path.join(_state["tmp"], node)


def logfile(node):
    return os.path.join(_state["tmp"], node + ".log")


def log_tail(node, lines=40):
    try:
        with open(logfile(node), encoding="utf-8", errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError as e:
        return f"(cannot read the log of {node}: {e})"


def pg_ctl(node, *args):
    return as_postgres(f"{PGBIN}/pg_ctl", "-D", datadir(node), *args, timeout=120)


def start(node):
    r = pg_ctl(node, "-l", logfile(node), "-w", "-t", "60", "start")
    if r.returncode != 0:
        pytest.fail(f"{node} did not start (ports {PGPORTS[node]} and {WSPORTS[node]} must "
                    f"be free; PLANK_REPL_PGPORT / PLANK_REPL_PORT move them): "
                    f"{r.stdout}{r.stderr}\n{log_tail(node)}", pytrace=False)


def stop(node, mode="fast"):
    if os.path.exists(os.path.join(datadir(node), "postmaster.pid")):
        r = pg_ctl(node, "stop", "-m", mode, "-w", "-t", "60")
        if r.returncode != 0:
            pg_ctl(node, "stop", "-m", "immediate", "-w", "-t", "60")


def write_as_postgres(path, text, append=False):
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        f.write(text)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def poll(fn, timeout=TIMEOUT, interval=0.1, what="a condition"):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = fn()
        except Exception as e:  # noqa: BLE001 (not there yet)
            last = e
        else:
            if last:
                return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r})")


def http_get(port, path):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode()
    finally:
        conn.close()


def health(node):
    status, body = http_get(WSPORTS[node], "/health")
    return status, json.loads(body)


def wait_worker(node):
    async def hello():
        c = await Client.open(url=ws_url(node), timeout=5)
        await c.close()
        return c.welcome
    return poll(lambda: run(hello(), timeout=10), what=f"Plank on {node}")


SCHEMA = """
CREATE EXTENSION IF NOT EXISTS plank;
CREATE TABLE public.items (id bigint PRIMARY KEY, name text NOT NULL, big text);
CREATE TABLE public.notes (id bigint PRIMARY KEY, note text NOT NULL);
SELECT plank.track('public.items');
SELECT plank.track('public.notes');
DO $$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'plank_authenticator') THEN
        CREATE ROLE plank_authenticator LOGIN NOINHERIT;
    END IF;
END $$;
GRANT postgres TO plank_authenticator;
"""


def conninfo(node):
    return f"host=127.0.0.1 port={PGPORTS[node]} user=postgres dbname={DB}"


def ensure_nginx():
    """Debian's nginx, installed with apt-get when it is missing, as
    test/packaging/run.sh does (its service is not used: the test runs its own)."""
    global NGINX
    if os.path.exists(NGINX):
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(sudo + ["apt-get", "update", "-qq"], env=env, capture_output=True,
                   timeout=300, check=False)
    r = subprocess.run(sudo + ["apt-get", "install", "-y", "-qq", "-o", "Dpkg::Use-Pty=0",
                               "nginx"], env=env, capture_output=True, text=True,
                       timeout=600, check=False)
    NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
    if r.returncode != 0 or not os.path.exists(NGINX):
        pytest.fail(f"could not install nginx: {r.stdout[-2000:]}{r.stderr[-2000:]}",
                    pytrace=False)


def start_nginx():
    tmp = _state["tmp"]
    prefix = os.path.join(tmp, "nginx")
    os.makedirs(prefix, exist_ok=True)
    conf = os.path.join(prefix, "nginx.conf")
    with open(conf, "w", encoding="utf-8") as f:
        f.write(f"""\
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
events {{ worker_connections 512; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    # a WebSocket stays on the node it was sent to; new connections go round robin
    upstream plank_nodes {{
        server 127.0.0.1:{WSPORTS['sub1']};
        server 127.0.0.1:{WSPORTS['sub2']};
    }}
    server {{
        listen 127.0.0.1:{NGINX_PORT};
        location / {{
            proxy_pass http://plank_nodes;
            proxy_http_version 1.1;
            proxy_set_header Upgrade $http_upgrade;
            proxy_set_header Connection $connection_upgrade;
            proxy_read_timeout 1h;
        }}
    }}
}}
""")
    r = subprocess.run([NGINX, "-p", prefix, "-c", conf], capture_output=True, text=True,
                       timeout=30, check=False)
    if r.returncode != 0:
        pytest.fail(f"nginx did not start on port {NGINX_PORT}: {r.stderr}", pytrace=False)
    _state["nginx_pid"] = os.path.join(prefix, "nginx.pid")


def stop_nginx():
    path = _state.get("nginx_pid")
    if not path:
        return
    with contextlib.suppress(OSError, ValueError):
        with open(path, encoding="ascii") as f:
            pid = int(f.read().strip())
        os.kill(pid, signal.SIGQUIT)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            os.kill(pid, 0)
            time.sleep(0.1)


@pytest.fixture(scope="module", autouse=True)
def clusters():
    """The primary, two subscribers and nginx; the first subscriber's initial
    synchronisation is held by a lock so that its /health can be seen saying so, and a
    client subscribed before it checks that it sends nothing."""
    ensure_nginx()
    tmp = tempfile.mkdtemp(prefix="plank-repl.")
    _state["tmp"] = tmp
    if os.geteuid() == 0:
        shutil.chown(tmp, "postgres", "postgres")
    os.chmod(tmp, 0o755)
    try:
        for node in NODES:
            r = as_postgres(f"{PGBIN}/initdb", "-D", datadir(node), "-A", "trust", "-U",
                            "postgres", "--encoding=UTF8", "--locale=C.UTF-8", "-N")
            if r.returncode != 0:
                pytest.fail(f"initdb failed: {r.stdout}{r.stderr}", pytrace=False)
            write_as_postgres(os.path.join(datadir(node), "plank.conf"), f"""\
listen_addresses = '127.0.0.1'
port = {PGPORTS[node]}
unix_socket_directories = '{tmp}'
fsync = off
full_page_writes = off
# the primary's commits reach the walsender at once (docs/SCALING.md)
synchronous_commit = on
wal_level = logical
shared_preload_libraries = 'plank'
plank.port = {WSPORTS[node]}
plank.database = '{DB}'
plank.listen_addresses = '127.0.0.1'
plank.anonymous_role = 'postgres'
plank.allow_privileged_roles = on
""")
            write_as_postgres(os.path.join(datadir(node), "postgresql.conf"),
                              "include_if_exists = 'plank.conf'\n", append=True)
            start(node)
            q(node, f"CREATE DATABASE {DB}", dbname="postgres")
            q(node, SCHEMA)
        # rows that exist before the subscribers join
        q("primary", "INSERT INTO items SELECT g, 'old ' || g FROM generate_series(1, 500) g")
        q("primary", "CREATE PUBLICATION plank_pub FOR TABLE public.items, public.notes")
        for node in ("sub1", "sub2"):
            wait_worker(node)
        start_nginx()

        # sub1: a client subscribed before the subscription exists; the table's initial
        # COPY waits for a lock held here (SHARE: CREATE SUBSCRIPTION reads the table, the COPY writes it), while /health is read
        seen = {}

        async def join_sub1():
            c = await Client.open(url=ws_url("sub1"), keep_commits=True)
            try:
                await c.subscribe("items", table="public.items")
                hold = connect("sub1", autocommit=False)
                try:
                    with hold.cursor() as cur:
                        cur.execute("LOCK TABLE public.items IN SHARE MODE")
                    await asyncio.to_thread(
                        q, "sub1", f"CREATE SUBSCRIPTION plank_sub1 CONNECTION "
                        f"'{conninfo('primary')}' PUBLICATION plank_pub")
                    seen["syncing"] = await asyncio.to_thread(
                        poll, lambda: (lambda h: h if h[1]["replication"]["state"] == "syncing"
                                       else None)(health("sub1")),
                        TIMEOUT, 0.1, "sub1's /health to say syncing")
                finally:
                    hold.rollback()
                    hold.close()
                seen["streaming"] = await asyncio.to_thread(
                    poll, lambda: (lambda h: h if h[1]["replication"]["state"] == "streaming"
                                   else None)(health("sub1")),
                    TIMEOUT, 0.1, "sub1's /health to say streaming")
                await c.sync()
                seen["pushed_during_sync"] = c.kept_events()
            finally:
                await c.close()

        run(join_sub1(), timeout=90)
        q("sub2", f"CREATE SUBSCRIPTION plank_sub2 CONNECTION '{conninfo('primary')}' "
                  f"PUBLICATION plank_pub")
        poll(lambda: health("sub2")[1]["replication"]["state"] == "streaming",
             what="sub2's /health to say streaming")
        yield seen
    finally:
        stop_nginx()
        for node in reversed(NODES):
            stop(node)
        if os.environ.get("PLANK_REPL_KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- helpers


def key_of(m):
    ch = m["change"]
    row = ch.get("new") or ch.get("old") or ch.get("key") or {}
    return (ch["table"], ch["op"], row.get("id"))


async def collect_until(c, done, timeout=TIMEOUT):
    """Pushed messages (commit markers included) of every subscription, in arrival
    order, until done(messages) is true."""
    out = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done(out):
        left = deadline - loop.time()
        assert left > 0, f"timed out; got {len(out)} messages, last {out[-3:]}"
        out.append(await c.next_event(timeout=left))
    return out


def transactions(msgs, sub):
    """A subscription's stream as [[change keys]], one list per commit marker."""
    out, cur = [], []
    for m in msgs:
        if m.get("sub") != sub:
            continue
        if m["type"] == "change":
            cur.append(key_of(m))
        else:
            assert m["type"] == "commit", m
            assert cur, f"a commit without changes: {m}"
            out.append(cur)
            cur = []
    assert not cur, f"changes without a commit after them: {cur[:5]}"
    return out


def apply_changes(state, msgs, sub):
    """Apply a subscription's snapshot and changes to {id: name} (by key)."""
    for m in msgs:
        if m.get("sub") != sub:
            continue
        if m["type"] == "snapshot":
            assert m["complete"], "snapshot not complete"
            state.clear()
            for row in m["rows"]:
                state[row["id"]] = row["name"]
        elif m["type"] == "change":
            ch = m["change"]
            if ch["op"] in ("INSERT", "UPDATE"):
                state[ch["new"]["id"]] = ch["new"]["name"]
            elif ch["op"] == "DELETE":
                state.pop(ch["old"]["id"], None)
            elif ch["op"] == "TRUNCATE":
                state.clear()
    return state


def wait_replicated():
    """Wait until both subscribers have the primary's rows of items."""
    want = q("primary", "SELECT count(*), coalesce(sum(id), 0) FROM items")[0]
    for node in ("sub1", "sub2"):
        poll(lambda: q(node, "SELECT count(*), coalesce(sum(id), 0) FROM items")[0] == want,
             what=f"{node} to have the primary's rows")


def small_items_table():
    """Snapshots are complete under plank.snapshot_limit: drop the bulk rows."""
    q("primary", "DELETE FROM items WHERE name = 'bulk'")
    wait_replicated()


def primary_items():
    return {i: n for i, n in q("primary", "SELECT id, name FROM items")}


# --------------------------------------------------------------------------- tests


def test_initial_sync_sends_nothing_and_health_says_syncing(clusters):
    status, body = clusters["syncing"]
    assert status == 503 and body["status"] == "syncing", body
    assert body["replication"]["tables_syncing"] >= 1, body
    status, body = clusters["streaming"]
    assert status == 200 and body["status"] == "ok", body
    assert body["replication"] == {"state": "streaming", "subscriptions": 1,
                                   "tables_syncing": 0}, body
    assert clusters["pushed_during_sync"] == [], clusters["pushed_during_sync"][:5]
    # the rows were copied all the same
    assert q("sub1", "SELECT count(*) FROM items")[0][0] == 500


def test_every_change_on_every_node_once_in_commit_order(clusters):
    base = 100000
    big = "x" * 20000
    writes = [
        [(f"INSERT INTO items VALUES ({base + 1}, 'one')", None)],
        [(f"INSERT INTO items VALUES ({base + 2}, 'two')", None)],
        [(f"INSERT INTO items VALUES ({base + 3}, 'three')", None)],
        [(f"INSERT INTO items SELECT g, 'bulk' FROM generate_series({base + 10}, "
          f"{base + 9 + BULK}) g", None)],
        [(f"INSERT INTO items VALUES ({base + 4}, 'both')", None),
         (f"INSERT INTO notes VALUES ({base + 4}, 'both')", None),
         (f"UPDATE items SET name = 'both2' WHERE id = {base + 4}", None)],
        [(f"INSERT INTO items VALUES ({base + 5}, 'big', %s)", (big,))],
        [(f"UPDATE items SET name = 'uno' WHERE id = {base + 1}", None)],
        [(f"DELETE FROM items WHERE id = {base + 2}", None)],
        [("TRUNCATE notes", None)],
    ]
    expected_items = [
        [("items", "INSERT", base + 1)], [("items", "INSERT", base + 2)],
        [("items", "INSERT", base + 3)],
        [("items", "INSERT", i) for i in range(base + 10, base + 10 + BULK)],
        [("items", "INSERT", base + 4), ("items", "UPDATE", base + 4)],
        [("items", "INSERT", base + 5)],
        [("items", "UPDATE", base + 1)], [("items", "DELETE", base + 2)],
    ]
    expected_notes = [[("notes", "INSERT", base + 4)], [("notes", "TRUNCATE", None)]]
    nodes = ("sub1", "sub2", "nginx", "nginx")
    streams = {}

    async def body():
        clients = [await Client.open(url=ws_url(n), keep_commits=True) for n in nodes]
        try:
            # nginx sent its two clients one to each subscriber (round robin)
            assert {clients[2].welcome["epoch"], clients[3].welcome["epoch"]} == \
                {clients[0].welcome["epoch"], clients[1].welcome["epoch"]}
            for c in clients:
                await c.subscribe("items", table="public.items")
                await c.subscribe("notes", table="public.notes")
            for w in writes:
                await asyncio.to_thread(tx, "primary", w)
            for n, c in zip(nodes, clients):
                msgs = await collect_until(
                    c, lambda out: bool(out) and out[-1]["type"] == "commit"
                    and out[-1]["sub"] == "notes" and len(out) > 2 and any(
                        m["type"] == "change" and m["change"]["op"] == "TRUNCATE"
                        for m in out[-3:]), timeout=60)
                await c.sync()
                assert c.kept_events() == [], f"{n}: more than expected"
                assert transactions(msgs, "items") == expected_items, f"{n}: items stream"
                assert transactions(msgs, "notes") == expected_notes, f"{n}: notes stream"
                # commit order: seq grows over the whole connection; the two-table
                # transaction's notes change comes between its items changes
                seqs = [m["seq"] for m in msgs if m["type"] == "change"]
                assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), n
                order = [key_of(m) for m in msgs if m["type"] == "change"
                         and key_of(m)[2] == base + 4]
                assert order == [("items", "INSERT", base + 4), ("notes", "INSERT", base + 4),
                                 ("items", "UPDATE", base + 4)], f"{n}: {order}"
                # every change applied from the primary carries its origin position,
                # the same on both subscribers
                positions = [(key_of(m), m["change"].get("origin"), m["change"]["n"])
                             for m in msgs if m["type"] == "change"]
                assert all(isinstance(p[1], str) for p in positions), positions[:3]
                streams[n] = streams.get(n) or positions
                # the row over 8 kB arrives whole
                bigrow = [m for m in msgs if m["type"] == "change"
                          and key_of(m) == ("items", "INSERT", base + 5)]
                assert bigrow[0]["change"]["new"]["big"] == big, f"{n}: big row"
                assert "truncated" not in bigrow[0]["change"], f"{n}: big row truncated"
        finally:
            for c in clients:
                await c.close()

    run(body(), timeout=150)
    assert streams["sub1"] == streams["sub2"]
    # the stats of each subscriber show the origin position
    lsn = q("primary", "SELECT pg_current_wal_lsn()")[0][0]
    for node in ("sub1", "sub2"):
        row = q(node, "SELECT replication_state, tables_syncing, origin_lsn, "
                      "origin_commit_time, replication_lag_seconds FROM plank.stats")[0]
        assert row[0] == "streaming" and row[1] == 0, row
        assert row[2] is not None and row[3] is not None and row[4] >= 0, row
        assert q(node, "SELECT %s::pg_lsn >= %s::pg_lsn", (lsn, row[2]))[0][0], (lsn, row)
        status, h = health(node)
        assert status == 200 and h["replication"]["origin_lsn"] == row[2], h
        assert h["replication"]["lag_seconds"] >= 0, h
        status, metrics = http_get(WSPORTS[node], "/metrics")
        assert "plank_replication_lag_seconds " in metrics, metrics[-800:]
        assert "plank_replication_tables_syncing 0" in metrics


def test_local_writes_on_a_subscriber_still_sent(clusters):
    async def body():
        c = await Client.open(url=ws_url("sub2"), keep_commits=True)
        try:
            await c.subscribe("notes", table="public.notes")
            await asyncio.to_thread(q, "sub2", "INSERT INTO notes VALUES (-1, 'local')")
            change, commit = await c.events("notes", 2)
            assert key_of(change) == ("notes", "INSERT", -1), change
            assert commit["type"] == "commit", commit
        finally:
            await c.close()
    run(body())
    q("sub2", "DELETE FROM notes WHERE id = -1")


def origin_since(msg):
    """The since of a change message: this node's epoch and seq, and the origin
    position that every node shares."""
    return {"epoch": msg["epoch"], "seq": msg["seq"], "origin": msg["change"]["origin"],
            "n": msg["change"]["n"]}


def test_client_moving_to_the_other_node_resumes_by_origin(clusters):
    small_items_table()

    async def body():
        a = await Client.open(url=ws_url("sub1"), keep_commits=True)
        try:
            await a.subscribe("items", table="public.items")
            await asyncio.to_thread(tx, "primary", [
                ("INSERT INTO items VALUES (200001, 'move1')", None),
                ("INSERT INTO items VALUES (200002, 'move2')", None)])
            first, second, commit = await a.events("items", 3)
            assert commit["type"] == "commit", commit
            assert first["change"]["origin"] == second["change"]["origin"], (first, second)
        finally:
            await a.close()
        # while the client is away: two more transactions
        await asyncio.to_thread(q, "primary", "INSERT INTO items VALUES (200003, 'move3')")
        await asyncio.to_thread(tx, "primary", [
            ("INSERT INTO items VALUES (200004, 'move4')", None),
            ("UPDATE items SET name = 'moved' WHERE id = 200001", None)])
        await asyncio.to_thread(wait_replicated)
        after_tx1 = [("items", "INSERT", 200003), "commit", ("items", "INSERT", 200004),
                     ("items", "UPDATE", 200001), "commit"]

        def keys(msgs):
            return [key_of(m) if m["type"] == "change" else m["type"] for m in msgs]

        b = await Client.open(url=ws_url("sub2"), keep_commits=True)
        try:
            assert b.welcome["epoch"] != first["epoch"]
            # from the client's last change: exactly what came after it
            pushed, ack = await b.request_all({"type": "subscribe", "id": "items",
                                               "table": "public.items",
                                               "since": origin_since(second)})
            assert ack["type"] == "ack" and ack["resumed"] is True, ack
            assert keys(pushed) == after_tx1, pushed
            # from inside a transaction: the rest of it, its commit, and the others
            pushed, ack = await b.request_all({"type": "subscribe", "id": "mid",
                                               "table": "public.items",
                                               "since": origin_since(first)})
            assert ack["resumed"] is True, ack
            assert keys(pushed) == [("items", "INSERT", 200002), "commit"] + after_tx1, pushed
            # every change keeps its origin and n from node to node
            assert pushed[0]["change"]["origin"] == second["change"]["origin"]
            assert pushed[0]["change"]["n"] == second["change"]["n"]
            # a position this node does not hold: resync
            gone = dict(origin_since(second), origin="0/10")
            pushed, ack = await b.request_all({"type": "subscribe", "id": "gone",
                                               "table": "public.items", "since": gone})
            assert ack["resumed"] is False, ack
            assert [m["type"] for m in pushed] == ["resync_required"], pushed
            # malformed origin positions are refused
            for bad in ({"origin": "zz"}, {"origin": "0/10"}, {"n": 1},
                        {"origin": "0/10", "n": 0}, {"origin": "0/10", "n": 1.5},
                        {"origin": "123456789/0", "n": 1}):
                since = {"epoch": first["epoch"], "seq": first["seq"]}
                since.update(bad)
                reply = await b.request({"type": "subscribe", "id": "bad",
                                         "table": "public.items", "since": since})
                assert reply["type"] == "error" and reply["code"] == "invalid_message", \
                    (bad, reply)
        finally:
            await b.close()
    run(body())


def test_subscriber_restarted_mid_stream_catches_up(clusters):
    small_items_table()
    stop_writing = threading.Event()
    written = []

    def writer():
        i = 300000
        while not stop_writing.is_set():
            q("primary", "INSERT INTO items VALUES (%s, 'stream')", (i,))
            written.append(i)
            i += 1
            time.sleep(0.005)

    async def body():
        c = await Client.open(url=ws_url("sub2"), keep_commits=True)
        t = threading.Thread(target=writer)
        t.start()
        try:
            pushed, ack = await c.request_all({"type": "subscribe", "id": "items",
                                               "table": "public.items", "snapshot": True})
            await asyncio.sleep(0.5)
            await asyncio.to_thread(stop, "sub2")
            assert await c.expect_close() in (1001, 1006, 1012)
            state = apply_changes({}, pushed + c.kept_events(), "items")
            last = [m for m in c.kept_events() if m["type"] in ("change", "commit")]
            since = {"epoch": c.welcome["epoch"], "seq": last[-1]["seq"] if last
                     else ack["seq"]}
            await asyncio.sleep(0.5)          # the primary goes on writing meanwhile
            await asyncio.to_thread(start, "sub2")
            await asyncio.to_thread(wait_worker, "sub2")
            c2 = await Client.open(url=ws_url("sub2"), keep_commits=True)
            try:
                pushed, ack = await c2.request_all({"type": "subscribe", "id": "items",
                                                    "table": "public.items", "since": since,
                                                    "snapshot": True})
                # a restarted node has a new epoch: the client resyncs with the snapshot
                assert ack["resumed"] is False, ack
                assert pushed[0]["type"] == "resync_required", pushed[:2]
                apply_changes(state, pushed, "items")
                stop_writing.set()
                await asyncio.to_thread(t.join)
                await asyncio.to_thread(q, "primary",
                                        "INSERT INTO items VALUES (399999, 'last')")
                await c2.wait_for(lambda m: m["type"] == "change"
                                  and key_of(m) == ("items", "INSERT", 399999),
                                  timeout=TIMEOUT, what="the last row")
                apply_changes(state, list(c2.inbox), "items")
                state[399999] = "last"
                assert state == await asyncio.to_thread(primary_items)
                assert len(written) > 20
            finally:
                await c2.close()
        finally:
            stop_writing.set()
            t.join()
            await c.close()
    run(body(), timeout=120)
    poll(lambda: health("sub2")[1]["replication"]["state"] == "streaming",
         what="sub2 streaming again")
