"""Several socket workers per database (plank.workers = 3): the workers share plank.port
(SO_REUSEPORT, the kernel spreads new TCP connections over them); worker 0 LISTENs,
numbers the events and publishes them to every worker of the database through shared
memory. Promised: every client gets every matching change exactly once, in commit order,
with the same seq and epoch on every worker; resume works on any worker that was running
when the events happened; channel subscriptions work from any worker (acknowledged once
worker 0 listens); the views, /health and /metrics count for the whole database;
terminating a non-zero worker closes its clients only, terminating worker 0 restarts the
database's workers with a new epoch; an idle database costs no CPU.

This module starts a throwaway cluster of its own (the suite's shared cluster runs with
plank.workers = 1): PostgreSQL on PLANK_WORKERS_PGPORT (5480), Plank on
PLANK_WORKERS_PORT (18080), database plank_workers. It is stopped by its data directory
(pg_ctl stop -m fast) at the end, also after a failure. PLANK_WORKERS_KEEP=1 keeps the
temporary directory (data and server.log) for a post-mortem.

Which worker a client landed on: the welcome says nothing about it, and the views do
not have to. The test looks at the operating system instead: the server end of the
client's TCP connection (/proc/net/tcp) is a socket held open by exactly one worker
process (/proc/<pid>/fd). Which worker is worker 0 is not visible either; the tests that
must terminate worker 0 or a non-zero worker tell them apart by what a termination does
(every client of the database closed and a new epoch, or only the victim's clients), and
try another worker when the first guess was wrong."""

import asyncio
import collections
import contextlib
import http.client
import json
import os
import re
import shutil
import tempfile
import time

import psycopg2
import pytest

from conftest import PGCTL, Client, RawWebSocket, as_postgres, run, tag, write_transaction

# the suite's server (scripts/test.sh: PLANK_PGBIN, any supported major version)
PGBIN = os.path.dirname(PGCTL)
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PGPORT = int(os.environ.get("PLANK_WORKERS_PGPORT", "5480"))
PORT = int(os.environ.get("PLANK_WORKERS_PORT", "18080"))
DB = "plank_workers"
NWORKERS = 3
WS_URL = f"ws://127.0.0.1:{PORT}/ws"
CLOSE_GOING_AWAY = (1001, 1012)   # going away, service restart

_state = {"logfile": None}


# --------------------------------------------------------------------------- cluster


def log_tail(lines=60):
    path = _state["logfile"]
    if not path:
        return "(no server log)"
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return "".join(collections.deque(f, lines))
    except OSError as e:
        return f"(cannot read {path}: {e})"


def connect(autocommit=True, dbname=DB):
    conn = psycopg2.connect(host="127.0.0.1", port=PGPORT, user="postgres", dbname=dbname,
                            connect_timeout=10, application_name="plank-e2e-workers")
    conn.autocommit = autocommit
    return conn


def q(query, params=None, dbname=DB):
    """Run one statement on a fresh autocommit connection; return its rows."""
    conn = connect(dbname=dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(query, params)
            return cur.fetchall() if cur.description is not None else []
    finally:
        conn.close()


def worker_rows():
    """(pid, backend_start) of the database's plank workers, oldest first."""
    return q("SELECT pid, backend_start FROM pg_stat_activity "
             "WHERE backend_type = 'plank' AND datname = %s ORDER BY backend_start, pid", (DB,))


def worker_pids():
    return [r[0] for r in worker_rows()]


def wait_workers(timeout=30.0, gone=(), what="3 plank workers"):
    """Wait until exactly NWORKERS workers show in pg_stat_activity, none of them in
    `gone`, and a WebSocket client gets a welcome; returns (pids, welcome)."""
    deadline = time.monotonic() + timeout
    last = "nothing seen"
    while time.monotonic() < deadline:
        try:
            pids = worker_pids()
        except psycopg2.Error as e:
            pids, last = [], f"database: {str(e).strip()}"
        else:
            last = f"pg_stat_activity shows {len(pids)} plank workers: {pids}"
        if len(pids) == NWORKERS and not set(pids) & set(gone):
            try:
                async def hello():
                    c = await Client.open(url=WS_URL, timeout=5)
                    await c.close()
                    return c.welcome
                return pids, run(hello(), timeout=10)
            except Exception as e:  # noqa: BLE001 (not serving yet)
                last = f"websocket: {type(e).__name__}: {e}"
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout}s waiting for {what} ({last}).\n"
                         f"server log:\n{log_tail()}")


def _pg_ctl(datadir, *args, timeout=120):
    return as_postgres(f"{PGBIN}/pg_ctl", "-D", datadir, *args, timeout=timeout)


def _write_as_postgres(path, text, append=False):
    with open(path, "a" if append else "w", encoding="utf-8") as f:
        f.write(text)
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


@pytest.fixture(scope="module", autouse=True)
def cluster():
    """A throwaway cluster with plank.workers = 3 serving DB on PORT."""
    tmp = tempfile.mkdtemp(prefix="plank-workers.")
    datadir = os.path.join(tmp, "data")
    logfile = os.path.join(tmp, "server.log")
    _state["logfile"] = logfile
    try:
        if os.geteuid() == 0:
            shutil.chown(tmp, "postgres", "postgres")
        os.chmod(tmp, 0o755)
        r = as_postgres(f"{PGBIN}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres",
                        "--encoding=UTF8", "--locale=C.UTF-8", "-N")
        if r.returncode != 0:
            pytest.fail(f"initdb failed: {r.stdout}{r.stderr}", pytrace=False)
        _write_as_postgres(os.path.join(datadir, "plank.conf"), f"""\
listen_addresses = '127.0.0.1'
port = {PGPORT}
unix_socket_directories = '{tmp}'
fsync = off
synchronous_commit = off
full_page_writes = off
shared_preload_libraries = 'plank'
plank.port = {PORT}
plank.database = '{DB}'
plank.workers = {NWORKERS}
plank.listen_addresses = '127.0.0.1'
plank.log_connections = on
plank.anonymous_role = 'postgres'
plank.allow_privileged_roles = on
""")
        _write_as_postgres(os.path.join(datadir, "postgresql.conf"),
                           "include_if_exists = 'plank.conf'\n", append=True)
        r = _pg_ctl(datadir, "-l", logfile, "-w", "-t", "60", "start")
        if r.returncode != 0:
            about = [ln for ln in log_tail(200).splitlines() if "plank.workers" in ln]
            pytest.fail(
                f"the cluster with plank.workers = {NWORKERS} did not start (port {PGPORT} "
                f"and {PORT} must be free; PLANK_WORKERS_PGPORT / PLANK_WORKERS_PORT "
                f"override them). Does the installed plank know plank.workers?\n"
                f"{chr(10).join(about)}\npg_ctl: {r.stdout}{r.stderr}\n"
                f"server log:\n{log_tail()}", pytrace=False)
        q(f"CREATE DATABASE {DB}", dbname="postgres")
        with open(os.path.join(ROOT, "demo", "items.sql"), encoding="utf-8") as f:
            q(f.read())
        # demo/items.sql made plank_authenticator; clients here act as the superuser
        q("GRANT postgres TO plank_authenticator")
        failure = None
        try:
            wait_workers(30.0)
        except AssertionError as e:
            failure = str(e)
        if failure:
            unknown = [ln for ln in log_tail(400).splitlines() if "plank.workers" in ln]
            pytest.fail(f"plank.workers = {NWORKERS} is not in effect: the database is "
                        f"expected to have {NWORKERS} plank workers (the feature is "
                        f"expected to be installed).\n"
                        f"log lines about plank.workers: {unknown}\n{failure}", pytrace=False)
        yield {"datadir": datadir, "logfile": logfile}
    finally:
        if os.path.exists(os.path.join(datadir, "postmaster.pid")):
            r = _pg_ctl(datadir, "stop", "-m", "fast", "-w", "-t", "60")
            if r.returncode != 0:
                _pg_ctl(datadir, "stop", "-m", "immediate", "-w", "-t", "60")
        if os.environ.get("PLANK_WORKERS_KEEP"):
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


# --------------------------------------------------------------------------- which worker


def _server_inodes():
    """{client port: socket inode} of the server ends of TCP connections to PORT."""
    out = {}
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path, encoding="ascii") as f:
                lines = f.read().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) < 10:
                continue
            lport = int(fields[1].rsplit(":", 1)[1], 16)
            rport = int(fields[2].rsplit(":", 1)[1], 16)
            if lport == PORT and rport != 0 and fields[9] != "0":
                out[rport] = fields[9]
    return out


def _inode_owners(pids):
    """{socket inode: pid} for the open sockets of these processes."""
    owners = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                link = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if link.startswith("socket:["):
                owners[link[8:-1]] = pid
    return owners


def owners_of_ports(ports, pids=None):
    """The worker pid holding the server end of each client port (None when none does)."""
    pids = worker_pids() if pids is None else pids
    inodes = _server_inodes()
    owners = _inode_owners(pids)
    return [owners.get(inodes.get(p)) for p in ports]


def worker_of_all(clients, pids=None):
    """The worker pid each (connected) client landed on. Fails when that cannot be told:
    the test runs as root or postgres, so /proc shows the workers' sockets."""
    ports = [c.ws.local_address[1] for c in clients]
    got = owners_of_ports(ports, pids)
    missing = [p for p, w in zip(ports, got) if w is None]
    assert not missing, (f"cannot tell which worker holds the connections from client "
                         f"ports {missing} (/proc/net/tcp, /proc/<pid>/fd of {pids or worker_pids()})")
    return got


def by_worker(clients, pids=None):
    groups = collections.defaultdict(list)
    for c, w in zip(clients, worker_of_all(clients, pids)):
        groups[w].append(c)
    return groups


def worker0_hints(pids):
    """pids ordered from the likeliest worker 0 to the least likely: the pid plank.stats
    names, a process title naming worker 0, then the oldest. Only an order to try them
    in; what a termination does tells for sure."""
    score = {p: 0 for p in pids}
    with contextlib.suppress(Exception):
        r = q("SELECT worker_pid FROM plank.stats")
        if r and r[0][0] in score:
            score[r[0][0]] -= 10
    for p in pids:
        with contextlib.suppress(OSError):
            with open(f"/proc/{p}/cmdline", "rb") as f:
                title = f.read().replace(b"\0", b" ").decode(errors="replace")
            m = re.search(r"(?:worker|#)\s*(\d+)\b", title)
            if m:
                score[p] += -20 if m.group(1) == "0" else 5
    order = {p: i for i, p in enumerate(pids)}   # oldest first
    return sorted(pids, key=lambda p: (score[p], order[p]))


# --------------------------------------------------------------------------- clients


async def open_clients(n, keep_commits=True):
    clients = await asyncio.gather(*[Client.open(url=WS_URL, keep_commits=keep_commits)
                                     for _ in range(n)])
    return list(clients)


async def open_spread(per_worker, pids, cap=90, keep_commits=True):
    """Open clients until each worker in `pids` holds at least `per_worker` of them
    (bounded by `cap` connections; the extra ones are closed). Returns
    {pid: [clients]}."""
    groups = collections.defaultdict(list)
    opened = 0
    while opened < cap and any(len(groups[p]) < per_worker for p in pids):
        batch = await open_clients(min(6, cap - opened), keep_commits)
        opened += len(batch)
        for c, w in zip(batch, worker_of_all(batch)):
            if w in pids and len(groups[w]) < per_worker:
                groups[w].append(c)
            else:
                await c.close()
    short = {p: len(groups[p]) for p in pids if len(groups[p]) < per_worker}
    if short:
        await close_all([c for cs in groups.values() for c in cs])
        raise AssertionError(f"{opened} new connections did not reach every worker "
                             f"{per_worker} times (got {dict((p, len(groups[p])) for p in pids)}): "
                             f"the kernel does not spread connections over the workers' sockets")
    return dict(groups)


async def close_all(clients):
    await asyncio.gather(*[c.close() for c in clients])


async def closed_within(c, timeout):
    """The close code if the server closes the client within `timeout` s, else None."""
    try:
        return await asyncio.wait_for(c.expect_close(timeout=timeout), timeout)
    except (AssertionError, asyncio.TimeoutError):
        return None


def write_items(label, values, conn=None):
    """One transaction per value (INSERT into items); returns the xids."""
    own = conn is None
    conn = conn or connect(autocommit=False)
    xids = []
    try:
        with conn.cursor() as cur:
            for v in values:
                cur.execute("INSERT INTO items (name, value) VALUES (%s, %s) "
                            "RETURNING txid_current()", (label, v))
                xids.append(cur.fetchone()[0])
                conn.commit()
        return xids
    finally:
        if own:
            conn.close()


def write_multi(label, values):
    """One transaction of one INSERT statement per value; returns its xid."""
    return write_transaction(
        [("INSERT INTO items (name, value) VALUES (%s, %s)", (label, v)) for v in values],
        connect)


def check_stream(events, values, xids, key="value"):
    """events (changes and commit markers, keep_commits) are exactly the changes with
    these values in order, each transaction closed by its commit, seqs increasing;
    returns [(seq, epoch, xid, n, value)] of the changes."""
    out = []
    last = -1
    open_xid = None
    commits = []
    for m in events:
        if m["type"] == "change":
            assert m["seq"] > last, f"seq not increasing: {m['seq']} after {last}"
            last = m["seq"]
            assert open_xid in (None, m["change"]["xid"]), f"transactions interleaved at {m}"
            open_xid = m["change"]["xid"]
            out.append((m["seq"], m["epoch"], m["change"]["xid"], m["change"]["n"],
                        int(m["change"]["new"][key])))
        else:
            assert m["type"] == "commit", f"unexpected message in the stream: {m}"
            assert m["xid"] == open_xid and m["seq"] == last, f"misplaced commit: {m}"
            commits.append(m["xid"])
            open_xid = None
    assert open_xid is None, "the stream ends inside a transaction"
    assert [v for *_, v in out] == list(values), \
        f"values not received exactly once in commit order: {[v for *_, v in out][:20]}..."
    assert commits == list(xids), f"commits {commits[:10]}... are not the xids {list(xids)[:10]}..."
    return out


async def expect_nothing_more(c, what):
    await c.sync()
    extra = c.kept_events() if c.keep_commits else c.kept_pushes()
    assert extra == [], f"{what}: unexpected extra messages {extra[:5]}"


async def settled_count(query, expected, timeout=5.0):
    """The value of `query` once it equals `expected`, or its last value after `timeout`
    s (clients closed by the previous test may take a moment to leave the counts)."""
    deadline = time.monotonic() + timeout
    while True:
        value = (await asyncio.to_thread(q, query))[0][0]
        if value == expected or time.monotonic() > deadline:
            return value
        await asyncio.sleep(0.05)


def http_get(path, timeout=10):
    """GET path on PORT: (status, body, pid of the worker that answered or None)."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=timeout)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        body = resp.read().decode("utf-8", errors="replace")
        pid = None
        if conn.sock is not None:   # keep-alive: the server end is still open
            with contextlib.suppress(Exception):
                pid = owners_of_ports([conn.sock.getsockname()[1]])[0]
        return resp.status, body, pid
    finally:
        conn.close()


def metric(text, name):
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    assert m, f"{name} missing from /metrics:\n{text[:1500]}"
    return float(m.group(1))


# --------------------------------------------------------------------------- tests


def test_connections_spread_and_every_client_gets_the_same_stream():
    """24 clients over the 3 workers; a burst of 200 single-row transactions and one
    transaction of 50 INSERT statements reaches each of them exactly once, in commit
    order, with the same seq and epoch for each change on every worker."""
    label = tag()
    pids = worker_pids()
    n_clients = 24
    single = list(range(200))
    multi = list(range(1000, 1050))

    async def body():
        clients = await open_clients(n_clients)
        try:
            epochs = {c.welcome["epoch"] for c in clients}
            assert len(epochs) == 1, f"the workers welcome with different epochs: {epochs}"
            epoch = epochs.pop()
            where = worker_of_all(clients, pids)
            spread = collections.Counter(where)
            print(f"connections per worker: {dict(spread)}")
            assert len(spread) >= 2, \
                f"24 connections all landed on one worker {dict(spread)}: not spread"
            listed = await settled_count("SELECT count(*) FROM plank.connections", n_clients)
            assert listed == n_clients, \
                f"plank.connections lists {listed} clients, {n_clients} are connected " \
                f"(over workers {dict(spread)})"
            stats = await settled_count("SELECT connections FROM plank.stats", n_clients)
            assert stats == n_clients, f"plank.stats.connections = {stats}, {n_clients} " \
                                       f"are connected (over workers {dict(spread)})"

            acks = [await c.subscribe("s", table="public.items", filter={"name": label})
                    for c in clients]

            async def write():
                xids = await asyncio.to_thread(write_items, label, single)
                xids.append(await asyncio.to_thread(write_multi, label, multi))
                return xids
            n_events = len(single) * 2 + len(multi) + 1
            results = await asyncio.gather(
                write(), *[c.events("s", n_events, timeout=60) for c in clients])
            xids, streams = results[0], results[1:]
            seen = []
            for i, (c, ack, events) in enumerate(zip(clients, acks, streams)):
                try:
                    got = check_stream(events, single + multi, xids)
                except AssertionError as e:
                    raise AssertionError(f"client {i} (worker {where[i]}): {e}") from None
                assert got[0][0] > ack["seq"], (got[0], ack)
                assert all(e == epoch for _, e, *_ in got), f"client {i}: epoch changed"
                assert [n for _, _, _, n, _ in got] == [1] * 200 + list(range(1, 51))
                seen.append(got)
            for i, got in enumerate(seen):
                assert got == seen[0], \
                    f"client {i} on worker {where[i]} saw other seq/epoch/xid than client 0 " \
                    f"on worker {where[0]}: first difference " \
                    f"{next((a, b) for a, b in zip(got, seen[0]) if a != b)}"
            seqs = [s for s, *_ in seen[0]]
            assert seqs == list(range(seqs[0], seqs[0] + 250)), \
                f"one seq per notification, nothing else notifies here: {seqs[:5]}...{seqs[-5:]}"
            for i, c in enumerate(clients):
                await expect_nothing_more(c, f"client {i} on worker {where[i]}")
        finally:
            await close_all(clients)
    run(body(), timeout=180)


def test_resume_on_another_worker():
    """A client records its position and leaves; changes commit; it reconnects (new TCP
    connections, on each of the workers in turn) and resumes with since: exactly the
    missed changes, as sent live, then live changes."""
    label = tag()
    pids = worker_pids()

    async def body():
        observer = (await open_clients(1))[0]
        try:
            await observer.subscribe("obs", table="public.items", filter={"name": label})
            c1 = (await open_clients(1))[0]
            first_worker = worker_of_all([c1], pids)[0]
            epoch = c1.welcome["epoch"]
            await c1.subscribe("r", table="public.items", filter={"name": label})
            await asyncio.to_thread(write_items, label, [1, 2])
            got = await c1.events("r", 4)
            last_seq = got[-1]["seq"]
            await c1.close()
            await observer.events("obs", 4)

            xids = await asyncio.to_thread(write_items, label, [3, 4])
            xids.append(await asyncio.to_thread(write_multi, label, [5, 6, 7]))
            xids += await asyncio.to_thread(write_items, label, [8])
            live = await observer.events("obs", 2 * 2 + 4 + 2)   # the workers have them
            expected = [dict(m, sub="r") for m in live]
            check_stream(expected, [3, 4, 5, 6, 7, 8], xids)

            groups = await open_spread(1, pids)
            try:
                order = sorted(groups, key=lambda p: p == first_worker)  # another worker first
                assert order[0] != first_worker
                for w in order:
                    c2 = groups[w][0]
                    pushed, ack = await c2.request_all({
                        "type": "subscribe", "id": "r", "table": "public.items",
                        "filter": {"name": label}, "since": {"epoch": epoch, "seq": last_seq}})
                    where = f"worker {w} (the client was on {first_worker} before)"
                    assert ack["type"] == "ack" and ack["resumed"] is True, \
                        f"resume refused on {where}: {ack}, after {pushed}"
                    assert pushed == expected, \
                        f"the replay on {where} is not what was sent live: {pushed} != {expected}"
                    assert all(m["seq"] <= ack["seq"] for m in pushed), (pushed, ack)
                later = await asyncio.to_thread(write_items, label, [9])
                for w in order:
                    events = await groups[w][0].events("r", 2)
                    check_stream(events, [9], later)
                    await expect_nothing_more(groups[w][0], f"resumed client on worker {w}")
            finally:
                await close_all([c for cs in groups.values() for c in cs])
        finally:
            await observer.close()
    run(body(), timeout=120)


def test_channel_subscriptions_through_every_worker():
    """Clients on every worker subscribe to wk_chat and to a fresh channel each; a NOTIFY
    committed right after each ack reaches every client subscribed by then, exactly once,
    with the same seq and epoch on every worker."""
    pids = worker_pids()
    t = tag()

    async def body():
        groups = await open_spread(4, pids, keep_commits=False)
        clients = [c for p in pids for c in groups[p]]
        where = [p for p in pids for _ in groups[p]]
        db = await asyncio.to_thread(connect)
        chats = []
        try:
            def notify(stmt, params=None):
                with db.cursor() as cur:
                    cur.execute(stmt, params)
            for i, c in enumerate(clients):
                own = f"wk_{t}_{i}"
                await c.subscribe("own", channel=own)
                await asyncio.to_thread(notify, f'NOTIFY "{own}", %s', (f"own-{i}",))
                await c.subscribe("chat", channel="wk_chat")
                await asyncio.to_thread(notify, "SELECT pg_notify('wk_chat', %s)", (f"after-{i}",))
            for i, c in enumerate(clients):
                try:
                    m = await c.next_push("own")
                    assert (m["type"], m["channel"], m["payload"]) == \
                        ("notify", f"wk_{t}_{i}", f"own-{i}"), m
                    chat = await c.pushes("chat", len(clients) - i)
                except AssertionError as e:
                    raise AssertionError(f"client {i} on worker {where[i]}: {e}") from None
                assert [m["payload"] for m in chat] == \
                    [f"after-{k}" for k in range(i, len(clients))], \
                    f"client {i} on worker {where[i]}: {[m['payload'] for m in chat]}"
                await expect_nothing_more(c, f"client {i} on worker {where[i]}")
                chats.append({m["payload"]: (m["seq"], m["epoch"]) for m in chat})
            for k in range(len(clients)):
                ids = {chats[i][f"after-{k}"] for i in range(k + 1)}
                assert len(ids) == 1, f"NOTIFY after-{k} has different (seq, epoch) on " \
                                      f"different workers: {ids}"
        finally:
            db.close()
            await close_all(clients)
    run(body(), timeout=120)


def test_channel_subscribes_racing_on_every_worker_and_partial_unsubscribe():
    """All clients, on every worker, subscribe at once to a fresh channel each and NOTIFY
    it the moment their ack arrives (each from its own session): every NOTIFY arrives.
    Then one client per worker shares a channel; after two of them leave (an unsubscribe,
    a disconnect) the third still gets the channel's notifications, the others nothing."""
    pids = worker_pids()
    t = tag()

    async def body():
        groups = await open_spread(3, pids, keep_commits=False)
        clients = [c for p in pids for c in groups[p]]
        where = [p for p in pids for _ in groups[p]]
        conns = await asyncio.gather(*[asyncio.to_thread(connect) for _ in clients])
        try:
            def notify(conn, channel, payload):
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_notify(%s, %s)", (channel, payload))

            async def subscribe_then_notify(i):
                channel = f"wk_{t}_race_{i}"
                await clients[i].subscribe("race", channel=channel)
                await asyncio.to_thread(notify, conns[i], channel, f"race-{i}")
            await asyncio.gather(*[subscribe_then_notify(i) for i in range(len(clients))])
            for i, c in enumerate(clients):
                try:
                    m = await c.next_push("race")
                except AssertionError as e:
                    raise AssertionError(
                        f"client {i} on worker {where[i]}: the NOTIFY committed right after "
                        f"its subscribe ack did not arrive: {e}") from None
                assert (m["channel"], m["payload"]) == (f"wk_{t}_race_{i}", f"race-{i}"), m
                await expect_nothing_more(c, f"client {i} on worker {where[i]}")

            shared = f"wk_{t}_shared"
            a, b, keep = (groups[p][0] for p in pids)
            for c in (a, b, keep):
                await c.subscribe("sh", channel=shared)
            await asyncio.to_thread(notify, conns[0], shared, "all")
            for c in (a, b, keep):
                assert (await c.next_push("sh"))["payload"] == "all"
            await a.unsubscribe("sh")
            await b.close()
            await asyncio.to_thread(notify, conns[0], shared, "one")
            m = await keep.next_push("sh")
            assert m["payload"] == "one", \
                f"the client on worker {pids[2]} got {m} after the clients of workers " \
                f"{pids[0]} and {pids[1]} left the channel"
            await expect_nothing_more(a, f"the client that unsubscribed (worker {pids[0]})")
        finally:
            for conn in conns:
                conn.close()
            await close_all(clients)
    run(body(), timeout=120)


def test_resume_on_every_worker_while_changes_keep_committing():
    """While a writer commits 150 transactions, clients on each worker resume from the
    same position: each gets the replay, the ack, then live changes, together exactly the
    changes after that position, in order, without a gap or a duplicate."""
    label = tag()
    pids = worker_pids()

    async def body():
        c1 = (await open_clients(1))[0]
        epoch = c1.welcome["epoch"]
        await c1.subscribe("r", table="public.items", filter={"name": label})
        await asyncio.to_thread(write_items, label, [0, 1, 2])
        pos = (await c1.events("r", 6))[-1]["seq"]
        await c1.close()

        groups = await open_spread(1, pids)
        clients = [groups[p][0] for p in pids]
        values = list(range(3, 153))
        conn = await asyncio.to_thread(connect, False)

        def writer():
            xids = []
            for v in values:
                xids += write_items(label, [v], conn)
                time.sleep(0.005)
            return xids
        try:
            wtask = asyncio.create_task(asyncio.to_thread(writer))
            await asyncio.sleep(0.3)

            async def resume(c, p):
                pushed, ack = await c.request_all({
                    "type": "subscribe", "id": "r", "table": "public.items",
                    "filter": {"name": label}, "since": {"epoch": epoch, "seq": pos}})
                assert ack["type"] == "ack" and ack["resumed"] is True, \
                    f"worker {p} refused the resume: {ack} after {pushed[:3]}"
                replayed = [m for m in pushed if m["type"] == "change"]
                live = await c.events("r", 2 * len(values) - len(pushed), timeout=60)
                return pushed, ack, live, len(replayed)
            results = await asyncio.gather(*[resume(c, p) for c, p in zip(clients, pids)])
            xids = await wtask
            streams = []
            for p, (pushed, ack, live, n_replayed) in zip(pids, results):
                assert all(m["seq"] <= ack["seq"] for m in pushed), f"worker {p}"
                assert all(m["seq"] > ack["seq"] for m in live), f"worker {p}"
                try:
                    got = check_stream(pushed + live, values, xids)
                except AssertionError as e:
                    raise AssertionError(f"worker {p} ({n_replayed} replayed, then live): "
                                         f"{e}") from None
                streams.append(got)
                print(f"worker {p}: {n_replayed} replayed, {len(values) - n_replayed} live")
                await expect_nothing_more(groups[p][0], f"client on worker {p}")
            assert all(s == streams[0] for s in streams), "the workers disagree on seqs"
        finally:
            conn.close()
            await close_all(clients)
    run(body(), timeout=120)


def test_big_row_reaches_clients_on_every_worker_whole():
    """A row of about 10 MB travels through plank.overflow; clients on all three workers
    get it whole, followed in order by a small change; plank.overflow is empty after."""
    q("CREATE TABLE IF NOT EXISTS public.wk_big ("
      " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text NOT NULL, body text)")
    q("SELECT plank.track('public.wk_big')")
    label = tag()
    size = 10 * 1000 * 1000
    pids = worker_pids()

    async def body():
        groups = await open_spread(2, pids)
        clients = [c for cs in groups.values() for c in cs]
        where = [p for p, cs in groups.items() for _ in cs]
        try:
            for c in clients:
                await c.subscribe("big", table="public.wk_big", filter={"label": label})

            def write():
                conn = connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO wk_big (label, body) VALUES "
                                    "(%s, repeat('x', %s) || %s) RETURNING id, txid_current()",
                                    (label, size, label))
                        big = cur.fetchone()
                        cur.execute("INSERT INTO wk_big (label, body) VALUES (%s, 'small') "
                                    "RETURNING id, txid_current()", (label,))
                        return big, cur.fetchone()
                finally:
                    conn.close()
            (big_id, big_xid), (small_id, small_xid) = await asyncio.to_thread(write)
            expected = "x" * size + label
            streams = await asyncio.gather(*[c.events("big", 4, timeout=90) for c in clients])
            seqs = set()
            for i, ev in enumerate(streams):
                who = f"client {i} on worker {where[i]}"
                assert [m["type"] for m in ev] == ["change", "commit", "change", "commit"], \
                    f"{who}: {[str(m)[:200] for m in ev]}"
                ch = ev[0]["change"]
                assert "truncated" not in ch and "overflow" not in ch and "new" in ch, \
                    f"{who}: the big row did not arrive whole: {str(ch)[:300]}"
                assert ch["xid"] == big_xid and ch["new"]["id"] == big_id, f"{who}: {str(ch)[:300]}"
                body_ = ch["new"]["body"]
                assert len(body_) == len(expected) and body_ == expected, \
                    f"{who}: body of {len(body_)} characters, expected {len(expected)}"
                assert ev[2]["change"]["new"] == {"id": small_id, "label": label, "body": "small"}
                assert ev[2]["change"]["xid"] == small_xid
                seqs.add((ev[0]["seq"], ev[0]["epoch"], ev[2]["seq"]))
                await expect_nothing_more(clients[i], who)
            assert len(seqs) == 1, f"the workers numbered the changes differently: {seqs}"
        finally:
            await close_all(clients)
    run(body(), timeout=180)
    deadline = time.monotonic() + 10
    while q("SELECT count(*) FROM plank.overflow")[0][0] and time.monotonic() < deadline:
        time.sleep(0.1)
    left = q("SELECT count(*) FROM plank.overflow")[0][0]
    assert left == 0, f"plank.overflow keeps {left} rows after the big row was delivered"


def test_row_larger_than_the_shared_queue_arrives_whole():
    """A 20 MB row is larger than the whole shared queue between the workers
    (plank.shared_queue_size, 16MB by default): it still reaches clients on every worker
    whole, and the change after it follows."""
    q("CREATE TABLE IF NOT EXISTS public.wk_big ("
      " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text NOT NULL, body text)")
    q("SELECT plank.track('public.wk_big')")
    label = tag()
    size = 20 * 1000 * 1000
    pids = worker_pids()

    async def body():
        groups = await open_spread(1, pids)
        clients = [groups[p][0] for p in pids]
        try:
            for c in clients:
                await c.subscribe("big", table="public.wk_big", filter={"label": label})

            def write():
                conn = connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO wk_big (label, body) VALUES "
                                    "(%s, repeat('y', %s) || %s) RETURNING txid_current()",
                                    (label, size, label))
                        xid = cur.fetchone()[0]
                        cur.execute("INSERT INTO wk_big (label, body) VALUES (%s, 'after')",
                                    (label,))
                        return xid
                finally:
                    conn.close()
            xid = await asyncio.to_thread(write)
            expected = "y" * size + label
            streams = await asyncio.gather(*[c.events("big", 4, timeout=90) for c in clients])
            for p, c, ev in zip(pids, clients, streams):
                assert [m["type"] for m in ev] == ["change", "commit", "change", "commit"], \
                    f"worker {p}: {[str(m)[:200] for m in ev]}"
                ch = ev[0]["change"]
                assert ch["xid"] == xid and "truncated" not in ch and "new" in ch, \
                    f"worker {p}: {str(ch)[:300]}"
                got = ch["new"]["body"]
                assert len(got) == len(expected) and got == expected, \
                    f"worker {p}: body of {len(got)} characters, expected {len(expected)}"
                assert ev[2]["change"]["new"]["body"] == "after"
                await expect_nothing_more(c, f"client on worker {p}")
            assert len({(ev[0]["seq"], ev[2]["seq"]) for ev in streams}) == 1
        finally:
            await close_all(clients)
    run(body(), timeout=180)


def test_stalled_clients_do_not_hold_back_other_clients_on_any_worker():
    """A client that never reads sits on every worker (subscribed, with a 4 kB receive
    buffer); 2,000 changes of about 5 kB (10 MB) in 20 transactions still reach a reading
    client on every worker, whole and in order, within the bound of the wait."""
    q("CREATE TABLE IF NOT EXISTS public.wk_stall ("
      " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text NOT NULL,"
      " n int NOT NULL, pad text)")
    q("SELECT plank.track('public.wk_stall')")
    label = tag()
    pids = worker_pids()

    async def body():
        stalled = {}
        opened = []
        try:
            for _ in range(60):
                if len(stalled) == len(pids):
                    break
                raw = await asyncio.to_thread(RawWebSocket, PORT)
                opened.append(raw)
                w = owners_of_ports([raw.s.getsockname()[1]])[0]
                if w in pids and w not in stalled:
                    stalled[w] = raw
            assert len(stalled) == len(pids), f"no stalled client on every worker: {stalled}"
            for raw in stalled.values():
                assert (await asyncio.to_thread(raw.recv_json))["type"] == "welcome"
                raw.send_text(json.dumps({"type": "subscribe", "id": "s",
                                          "table": "public.wk_stall", "filter": {"label": label}}))
            groups = await open_spread(1, pids)
            readers = [groups[p][0] for p in pids]
            for c in readers:
                await c.subscribe("s", table="public.wk_stall", filter={"label": label})

            def write():
                conn = connect(autocommit=False)
                xids = []
                try:
                    with conn.cursor() as cur:
                        for t in range(20):
                            cur.execute("INSERT INTO wk_stall (label, n, pad) "
                                        "SELECT %s, %s * 100 + g, repeat('p', 5000) "
                                        "FROM generate_series(0, 99) g", (label, t))
                            cur.execute("SELECT txid_current()")
                            xids.append(cur.fetchone()[0])
                            conn.commit()
                    return xids
                finally:
                    conn.close()
            started = time.monotonic()
            results = await asyncio.gather(asyncio.to_thread(write),
                                           *[c.events("s", 2020, timeout=30) for c in readers])
            xids, streams = results[0], results[1:]
            took = time.monotonic() - started
            print(f"2,000 changes (10 MB) reached a reader on each worker in {took:.1f} s "
                  f"with a stalled client on each")
            for p, ev in zip(pids, streams):
                try:
                    check_stream(ev, list(range(2000)), xids, key="n")
                except AssertionError as e:
                    raise AssertionError(f"reader on worker {p}: {e}") from None
                assert all(len(m["change"]["new"]["pad"]) == 5000
                           for m in ev if m["type"] == "change"), f"worker {p}: a row not whole"
            await close_all(readers)
        finally:
            for raw in opened:
                raw.close()
    run(body(), timeout=120)


def test_health_and_metrics_answer_from_every_worker_for_the_whole_database():
    """GET /health and /metrics, on new connections (spread over the workers): 200, the
    same epoch as the WebSocket clients, and the database's 9 clients counted by
    whichever worker answers."""
    pids = worker_pids()

    async def body():
        groups = await open_spread(3, pids, keep_commits=False)
        clients = [c for cs in groups.values() for c in cs]
        try:
            for i, c in enumerate(clients):
                await c.subscribe(f"s{i}", table="public.items")
                await c.sync()
            epoch = clients[0].welcome["epoch"]
            listed = await settled_count("SELECT count(*) FROM plank.connections", len(clients))
            assert listed == len(clients), \
                f"plank.connections lists {listed} clients, {len(clients)} are connected"
            answered = collections.Counter()
            health_n = metrics_n = 0
            deadline = time.monotonic() + 30

            def known():
                return {p for p in answered if p is not None}
            while (health_n < 10 or metrics_n < 10
                   or (known() and len(known()) < NWORKERS)) and time.monotonic() < deadline:
                status, text, pid = await asyncio.to_thread(http_get, "/health")
                health_n += 1
                answered[pid] += 1
                assert status == 200, f"/health answered {status} (worker {pid}): {text}"
                h = json.loads(text)
                assert h["status"] == "ok" and h["database"] == DB, f"worker {pid}: {h}"
                assert h["epoch"] == epoch, f"/health from worker {pid}: epoch {h['epoch']}, " \
                                            f"the clients have {epoch}"
                assert h["connections"] == len(clients), \
                    f"/health from worker {pid} counts {h['connections']} connections, the " \
                    f"database has {len(clients)} (over {len(pids)} workers): {h}"
                assert h["subscriptions"] == len(clients), f"worker {pid}: {h}"

                status, text, pid = await asyncio.to_thread(http_get, "/metrics")
                metrics_n += 1
                answered[pid] += 1
                assert status == 200, f"/metrics answered {status} (worker {pid})"
                assert metric(text, "plank_connections") == len(clients), \
                    f"/metrics from worker {pid}: plank_connections " \
                    f"{metric(text, 'plank_connections')}, the database has {len(clients)}"
                assert metric(text, "plank_subscriptions") == len(clients), f"worker {pid}"
            print(f"HTTP answers per worker: {dict(answered)}")
            if known():   # None: the server closed the connection, no telling who answered
                assert len(known()) == NWORKERS, \
                    f"{health_n + metrics_n} HTTP requests on new connections were answered " \
                    f"by {dict(answered)} only"
            subs = await asyncio.to_thread(q, "SELECT count(*) FROM plank.subscriptions")
            assert subs[0][0] == len(clients), f"plank.subscriptions lists {subs[0][0]}"
        finally:
            await close_all(clients)
    run(body(), timeout=90)


def _cpu_ticks(pid):
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])   # utime, stime (fields 14 and 15)


def test_idle_workers_use_no_cpu():
    """No client, no change: the 3 workers together use less than 5 clock ticks in 3 s."""
    time.sleep(1.0)   # let the previous tests' disconnections settle
    pids = worker_pids()
    assert len(pids) == NWORKERS, pids
    before = {p: _cpu_ticks(p) for p in pids}
    time.sleep(3.0)
    after = {p: _cpu_ticks(p) for p in pids}
    used = {p: after[p] - before[p] for p in pids}
    hz = os.sysconf("SC_CLK_TCK")
    print(f"CPU ticks in 3 s (1/{hz} s each): {used}")
    assert sum(used.values()) < 5, \
        f"idle workers used {used} clock ticks (1/{hz} s) in 3 s: they are not sleeping"


async def terminate_and_watch(victim, groups, others_grace):
    """pg_terminate_backend(victim); returns (close codes of the victim's clients, close
    codes of the other workers' clients, None for those still open after
    `others_grace` s)."""
    r = await asyncio.to_thread(q, "SELECT pg_terminate_backend(%s)", (victim,))
    assert r[0][0] is True, f"pg_terminate_backend({victim}) returned {r}"
    victims = groups.get(victim, [])
    others = [c for p, cs in groups.items() if p != victim for c in cs]
    codes = await asyncio.gather(*[closed_within(c, 15) for c in victims],
                                 *[closed_within(c, others_grace) for c in others])
    return list(codes[:len(victims)]), list(codes[len(victims):])


def wait_new_epoch(old_epoch, gone, timeout=30.0):
    """After worker 0 ended: wait until 3 workers (none of `gone`) welcome with an epoch
    other than `old_epoch`; returns (pids, welcome)."""
    deadline = time.monotonic() + timeout
    while True:
        pids, welcome = wait_workers(timeout, gone, "the workers after worker 0's end")
        if welcome["epoch"] != old_epoch:
            return pids, welcome
        assert time.monotonic() < deadline, \
            f"{timeout}s after worker 0 ended, clients are still welcomed with the old " \
            f"epoch {old_epoch}\nserver log:\n{log_tail()}"
        time.sleep(0.2)


def test_terminating_a_non_zero_worker_closes_only_its_clients():
    """pg_terminate_backend on a worker other than worker 0: its clients are closed (1001
    or 1012); the clients of the other workers stay connected and get every change
    committed before, during and after, in order; a client of the terminated worker
    resumes on a surviving worker; a new worker takes its place, with the same epoch,
    and numbers the changes that follow as the others do."""
    label = tag()

    async def attempt(pids):
        victim = worker0_hints(pids)[-1]   # the least likely worker 0
        groups = await open_spread(3, pids)
        clients = [c for cs in groups.values() for c in cs]
        try:
            epoch = clients[0].welcome["epoch"]
            for c in clients:
                await c.subscribe("s", table="public.items", filter={"name": label})
            await asyncio.to_thread(write_items, label, list(range(10)))
            initial_last = {}
            for c in clients:
                initial_last[id(c)] = (await c.events("s", 20))[-1]["seq"]

            # changes keep committing while the victim goes away
            conn = await asyncio.to_thread(connect, False)

            def writer():
                xids = []
                for n in range(10, 70):
                    xids += write_items(label, [n], conn)
                    time.sleep(0.02)
                return list(range(10, 70)), xids
            wtask = asyncio.create_task(asyncio.to_thread(writer))
            await asyncio.sleep(0.2)
            try:
                v_codes, o_codes = await terminate_and_watch(victim, groups, 10.0)
            finally:
                values, xids = await wtask
                conn.close()
            if o_codes and all(code is not None for code in o_codes):
                return "worker0", victim, epoch
            assert all(code in CLOSE_GOING_AWAY for code in v_codes), \
                f"the terminated worker {victim}'s clients got close codes {v_codes}, " \
                f"expected 1001 or 1012"
            assert all(code is None for code in o_codes), \
                f"terminating worker {victim} closed some clients of other workers " \
                f"({o_codes}) but not all: expected only its own to close"

            new_pids, welcome = await asyncio.to_thread(
                wait_workers, 30.0, (victim,), f"a new worker in place of {victim}")
            assert welcome["epoch"] == epoch, \
                f"after a non-zero worker restarted, a welcome has epoch {welcome['epoch']}, " \
                f"not the database's {epoch}"
            assert set(pids) - {victim} <= set(new_pids), \
                f"terminating {victim} also replaced other workers: {pids} -> {new_pids}"
            newcomer = (set(new_pids) - set(pids)).pop()

            more = await asyncio.to_thread(write_items, label, [100, 101])
            survivors = [c for p, cs in groups.items() if p != victim for c in cs]
            ref_events = None
            for c in survivors:
                events = await c.events("s", 2 * (len(values) + 2), timeout=30)
                got = check_stream(events, values + [100, 101], xids + more)
                assert {e for _, e, *_ in got} == {epoch}
                await expect_nothing_more(c, "a client of a surviving worker")
                ref_events = ref_events or events

            # a client of the victim resumes on a surviving worker from where it was cut
            vc = groups[victim][0]
            pos = max([initial_last[id(vc)]] +
                      [m["seq"] for m in vc.kept_events() if m["type"] == "commit"])
            missed = [dict(m, sub="r") for m in ref_events if m["seq"] > pos]
            survivor_pid = next(p for p in pids if p != victim)
            fresh = await open_spread(1, [newcomer, survivor_pid])
            try:
                r = fresh[survivor_pid][0]
                pushed, ack = await r.request_all({
                    "type": "subscribe", "id": "r", "table": "public.items",
                    "filter": {"name": label}, "since": {"epoch": epoch, "seq": pos}})
                assert ack["type"] == "ack" and ack["resumed"] is True, \
                    f"a client of the terminated worker could not resume on worker " \
                    f"{survivor_pid}: {ack} after {pushed[:3]}"
                assert pushed == missed, f"replay {pushed[:4]}... != missed {missed[:4]}..."

                # the new worker serves with the same epoch and numbering
                c = fresh[newcomer][0]
                assert c.welcome["epoch"] == epoch, c.welcome
                # ... but its replay ring starts when it joined: from before, a resync
                pushed, ack = await c.request_all({
                    "type": "subscribe", "id": "old", "table": "public.items",
                    "filter": {"name": label}, "since": {"epoch": epoch, "seq": pos}})
                assert [m["type"] for m in pushed] == ["resync_required"] and \
                    pushed[0]["reason"] == "out_of_range" and ack["resumed"] is False, \
                    f"a resume from before the new worker {newcomer} started: {pushed}, {ack}"
                await c.unsubscribe("old")
                ack = await c.subscribe("s", table="public.items", filter={"name": label})
                xid = await asyncio.to_thread(write_items, label, [200])
                mine, theirs = await c.events("s", 2), await survivors[0].events("s", 2)
                check_stream(mine, [200], xid)
                assert mine[0]["seq"] > ack["seq"]
                assert (mine[0]["seq"], mine[0]["epoch"]) == \
                    (theirs[0]["seq"], theirs[0]["epoch"]), \
                    f"the new worker {newcomer} numbers the change {mine[0]['seq']}/" \
                    f"{mine[0]['epoch']}, a surviving worker {theirs[0]['seq']}/" \
                    f"{theirs[0]['epoch']}"
            finally:
                await close_all([c for cs in fresh.values() for c in cs])
            return "ok", victim, epoch
        finally:
            await close_all(clients)

    tried = []
    pids, _ = wait_workers(30.0)
    for _ in range(NWORKERS):
        outcome, victim, epoch = run(attempt(pids), timeout=240)
        if outcome == "ok":
            return
        # it was worker 0 (every client closed): try another worker once the restart is over
        print(f"worker {victim} turned out to be worker 0; trying another")
        tried.append(victim)
        pids, _ = wait_new_epoch(epoch, (victim,))
        time.sleep(1.0)
    raise AssertionError(f"every worker terminated ({tried}) closed all the database's "
                         f"clients: no worker behaves as a non-zero worker")


def test_channel_registry_full_answers_limit_exceeded_and_the_worker_goes_on():
    """Worker 0 LISTENs for every worker on at most 1,024 channels: the subscription to
    one more gets the error limit_exceeded (not internal_error), the connection and the
    other subscriptions keep working. Runs just before the worker 0 restart, which
    empties the registry (idle channels are otherwise kept 5 minutes)."""
    label = tag()

    async def body():
        clients = await open_clients(11, keep_commits=False)
        try:
            # fresh channels until the registry is full (earlier tests' channels may
            # still hold some of its 1,024 entries)
            n, reply = 0, None
            while reply is None and n < 1100:
                c = clients[n // 100]
                r = await c.request({"type": "subscribe", "id": f"ch{n % 100}",
                                     "channel": f"wkfull_{label}_{n}"})
                if r["type"] == "error":
                    reply = r
                else:
                    assert r["type"] == "ack", r
                    n += 1
            assert reply is not None, "1,100 distinct channels were all accepted"
            assert reply.get("code") == "limit_exceeded", reply
            assert "1024" in reply.get("message", ""), reply
            assert n >= 900, f"the registry was full after {n} channels"
            # the rest goes on: the last channel subscribed still delivers
            last = n - 1
            await asyncio.to_thread(q, "SELECT pg_notify(%s, 'still here')",
                                    (f"wkfull_{label}_{last}",))
            m = await clients[last // 100].next_push(f"ch{last % 100}")
            assert m["type"] == "notify" and m["payload"] == "still here", m
            pong = await clients[n // 100].request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
        finally:
            await close_all(clients)
    run(body(), timeout=120)


def test_terminating_worker_0_restarts_the_database_with_a_new_epoch():
    """pg_terminate_backend on worker 0 closes every client of the database (1001 or
    1012); 3 workers serve again with a new epoch; a resume with the old epoch gets
    resync_required epoch_changed on every worker; new changes flow again, numbered alike
    on every worker."""
    label = tag()

    async def attempt(victim, pids):
        groups = await open_spread(2, pids)
        clients = [c for cs in groups.values() for c in cs]
        try:
            epoch = clients[0].welcome["epoch"]
            for c in clients:
                await c.subscribe("s", table="public.items", filter={"name": label})
            await asyncio.to_thread(write_items, label, [1])
            last = [(await c.events("s", 2))[-1]["seq"] for c in clients]
            assert len(set(last)) == 1, last
            v_codes, o_codes = await terminate_and_watch(victim, groups, 15.0)
            if all(code is None for code in o_codes):
                assert all(code in CLOSE_GOING_AWAY for code in v_codes), v_codes
                return None   # a non-zero worker: try another
            codes = v_codes + o_codes
            assert all(code in CLOSE_GOING_AWAY for code in codes), \
                f"terminating worker 0 ({victim}) closed the clients with {codes} (None: " \
                f"still open after 15 s); expected all closed with 1001 or 1012"
            return epoch, last[0]
        finally:
            await close_all(clients)

    found = None
    tried = []
    nonzero = set()   # terminated non-zero workers and the workers that replaced them
    pids, _ = wait_workers(30.0)
    for _ in range(NWORKERS):
        victim = [p for p in worker0_hints(pids) if p not in nonzero][0]
        found = run(attempt(victim, pids), timeout=120)
        tried.append(victim)
        if found:
            break
        print(f"worker {victim} turned out to be a non-zero worker; trying another")
        new_pids, _ = wait_workers(30.0, (victim,), f"a new worker in place of {victim}")
        nonzero |= {victim} | (set(new_pids) - set(pids))
        pids = new_pids
    assert found, f"terminating each worker ({tried}) closed only its own clients: none " \
                  f"behaves as worker 0 (which restarts the database's workers)"
    old_epoch, old_seq = found
    new_pids, welcome = wait_new_epoch(old_epoch, (tried[-1],))

    async def after():
        groups = await open_spread(1, new_pids)
        clients = [groups[p][0] for p in new_pids]
        try:
            for p, c in zip(new_pids, clients):
                assert c.welcome["epoch"] == welcome["epoch"], \
                    f"worker {p} welcomes with epoch {c.welcome['epoch']}, another with " \
                    f"{welcome['epoch']}"
                pushed, ack = await c.request_all({
                    "type": "subscribe", "id": "s", "table": "public.items",
                    "filter": {"name": label}, "since": {"epoch": old_epoch, "seq": old_seq}})
                assert [(m["type"], m.get("reason")) for m in pushed] == \
                    [("resync_required", "epoch_changed")], f"worker {p}: {pushed}"
                assert pushed[0]["epoch"] == welcome["epoch"], pushed
                assert ack["type"] == "ack" and ack["resumed"] is False, ack
            xids = await asyncio.to_thread(write_items, label, [2, 3])
            seen = []
            for p, c in zip(new_pids, clients):
                got = check_stream(await c.events("s", 4, timeout=20), [2, 3], xids)
                assert {e for _, e, *_ in got} == {welcome["epoch"]}, f"worker {p}: {got}"
                seen.append(got)
                await expect_nothing_more(c, f"client on worker {p}")
            assert all(s == seen[0] for s in seen), f"workers disagree: {seen}"
        finally:
            await close_all(clients)
    run(after(), timeout=90)
