"""A client that does not read is dropped with close code 1013 once its backlog is over
plank.max_client_buffer and its socket has taken nothing for plank.max_client_lag, and
other clients keep receiving everything; clients that read are never dropped, however
far the worker falls behind (docs/PROTOCOL.md, "Close codes"; docs/RELIABILITY.md)."""

import asyncio
import contextlib
import selectors
import json
import struct
import threading
import time

from conftest import (PORT, Db, RawWebSocket, client, connect, run, set_setting, set_settings,
                      sql, tag)

# pg_notification_queue_usage() is the fraction of the NOTIFY queue's maximum size (about
# 8 GB in PostgreSQL 15) that is in use. The changes these tests write (a few to 11 MB)
# would occupy about 0.0005 to 0.0014 of it if the worker stopped draining, so besides
# the bound 0.01 the tests compare with what the rows would occupy undrained.
QUEUE_BYTES = 8 * 1024 ** 3


@contextlib.contextmanager
def queue_usage_sampler(interval=0.005):
    """Sample pg_notification_queue_usage() on a connection of its own until the block
    ends; yields a list that then holds every sample."""
    samples = []
    stop = threading.Event()
    conn = connect()

    def sample():
        with conn.cursor() as cur:
            while not stop.is_set():
                cur.execute("SELECT pg_notification_queue_usage()")
                samples.append(cur.fetchone()[0])
                stop.wait(interval)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield samples
    finally:
        stop.set()
        t.join(10)
        conn.close()


def check_queue_usage(samples, written_bytes):
    assert len(samples) >= 3, f"too few samples of the NOTIFY queue: {samples}"
    peak = max(samples)
    print(f"pg_notification_queue_usage(): peak {peak:.6f} over {len(samples)} samples")
    assert peak < 0.01, f"the NOTIFY queue filled up to {peak} while a client stalled"
    undrained = written_bytes / QUEUE_BYTES
    assert peak < undrained / 3, \
        f"the NOTIFY queue peaked at {peak:.6f}, a third or more of what the rows would " \
        f"occupy undrained ({undrained:.6f}): the worker did not keep draining it"


def test_slow_client_is_dropped_with_1013_and_others_get_everything():
    rows, width = 1600, 7000  # about 11 MB of changes, each payload under NOTIFY's limit
    prefix = tag()
    names = [f"{prefix}-{i:04d}-" + "x" * width for i in range(rows)]
    # 2MB: far less than the 11 MB written, yet room for a burst of ~300 changes that the
    # worker queues at once when it reads a batch of notifications, so that the reading
    # client, whose Python process also runs the writer, is not dropped for a hiccup of
    # some milliseconds (64kB, nine rows, was; 1MB was still dropped once in a loaded run)
    set_setting("plank.max_client_buffer", "2MB")
    # the stalled client is closed once its socket has taken nothing for 200 ms with more
    # than the bound queued: far less than the rest of the writes take
    set_setting("plank.max_client_lag", "200ms")
    slow = None
    try:
        slow = RawWebSocket(PORT)
        assert slow.recv_json()["type"] == "welcome"
        slow.send_text(json.dumps({"type": "subscribe", "id": "items", "table": "public.items"}))
        ack = slow.recv_json()
        assert ack["type"] == "ack", ack
        # from here on the slow client reads nothing until the server has closed it (its
        # clients_dropped_slow counts it); then it reads what it was sent, promptly, so
        # that libwebsockets' wait for the answer to its close frame (a few seconds, after
        # which the socket is dropped with what it still holds) does not run out
        dropped_before = sql("SELECT clients_dropped_slow FROM plank.stats()")[0][0]
        outcome = {}

        def read_slow():
            # until the server closes it, or 5 s after the writes are over
            deadline = time.monotonic() + 120
            while sql("SELECT clients_dropped_slow FROM plank.stats()")[0][0] <= dropped_before:
                if "stop" in outcome:
                    deadline = min(deadline, outcome["stop"] + 5)
                if time.monotonic() > deadline:
                    return
                time.sleep(0.05)
            outcome["received"] = 0
            try:
                while True:
                    op, payload = slow.recv_frame()
                    if op == 8:
                        outcome["code"] = (struct.unpack("!H", payload[:2])[0]
                                           if len(payload) >= 2 else 1005)
                        return
                    outcome["received"] += 1
            except (EOFError, ConnectionResetError):
                outcome["code"] = "connection ended without a close frame"
            except OSError as e:
                outcome["code"] = f"no close frame: {e!r}"
        slow.s.settimeout(20)
        slow_reader = threading.Thread(target=read_slow, daemon=True)
        slow_reader.start()

        def write():
            db = Db()
            try:
                for n in names:
                    db.execute("INSERT INTO items (name) VALUES (%s)", (n,))
            finally:
                db.close()

        async def body():
            async with client() as fast:
                await fast.subscribe("items", table="public.items")
                writer = asyncio.create_task(asyncio.to_thread(write))
                msgs = await fast.pushes("items", rows, timeout=60)
                await writer
                assert [m["change"]["new"]["name"] for m in msgs] == names, \
                    "a fast client lost changes while a slow one stalled"
        started = time.monotonic()
        try:
            with queue_usage_sampler() as samples:
                run(body(), timeout=120)
        finally:
            # the writes are over: the slow client has been closed by now, or never is
            outcome["stop"] = time.monotonic()
            slow_reader.join(60)
        assert time.monotonic() - started < 60
        check_queue_usage(samples, rows * width)

        # what the slow client was sent: some changes, then close 1013
        assert "received" in outcome, "the slow client was not closed (clients_dropped_slow)"
        received, code = outcome["received"], outcome.get("code")
        print(f"slow client: {received} messages, then close {code}")
        assert received < rows, "the slow client was sent everything: nothing was bounded"
        assert code == 1013, f"expected close code 1013, got {code} after {received} messages"
    finally:
        if slow is not None:
            slow.close()
        set_setting("plank.max_client_buffer", None)
        set_setting("plank.max_client_lag", None)
        sql("DELETE FROM items WHERE name LIKE %s", (prefix + "%",))


def test_stalled_client_keeps_its_backlog_and_the_notify_queue_stays_drained():
    """A client that stops reading, with a backlog under plank.max_client_buffer (8MB by
    default), stays connected; the worker keeps draining the NOTIFY queue meanwhile (the
    queue stays near empty), a reading client gets everything at once, and the stalled
    client gets its whole backlog, in order, when it reads again."""
    rows, width = 600, 7000  # about 4 MB: under the default 8MB buffer
    prefix = tag()
    names = [f"{prefix}-{i:04d}-" + "x" * width for i in range(rows)]
    stalled = RawWebSocket(PORT)
    try:
        assert stalled.recv_json()["type"] == "welcome"
        stalled.send_text(json.dumps({"type": "subscribe", "id": "items",
                                      "table": "public.items", "filter": {"value": 7007}}))
        ack = stalled.recv_json()
        assert ack["type"] == "ack", ack

        def write():
            db = Db()
            try:
                for n in names:
                    db.execute("INSERT INTO items (name, value) VALUES (%s, 7007)", (n,))
            finally:
                db.close()

        async def body():
            async with client() as reader:
                await reader.subscribe("items", table="public.items", filter={"value": 7007})
                writer = asyncio.create_task(asyncio.to_thread(write))
                msgs = await reader.pushes("items", rows, timeout=60)
                await writer
                assert [m["change"]["new"]["name"] for m in msgs] == names
        with queue_usage_sampler() as samples:
            run(body(), timeout=90)
        check_queue_usage(samples, rows * width)

        # the stalled client was not dropped: it now reads its whole backlog
        got = []
        stalled.s.settimeout(20)
        while len(got) < rows:
            op, payload = stalled.recv_frame()
            assert op == 1, f"opcode {op} after {len(got)} changes (8 is a close: dropped)"
            m = json.loads(payload)
            if m["type"] == "change":
                got.append(m["change"]["new"]["name"])
            else:
                assert m["type"] == "commit", m
        assert got == names, "the stalled client's backlog lost or reordered changes"
    finally:
        stalled.close()
        sql("DELETE FROM items WHERE name LIKE %s", (prefix + "%",))


def test_small_backlog_behind_a_large_message_is_not_dropped():
    """A client that is slow to take one large message (6 MB, under the 8MB default
    bound) while small ones queue behind it is far under plank.max_client_buffer: it must
    not be closed, and gets everything in order once it reads."""
    label = tag()
    sql("CREATE TABLE IF NOT EXISTS public.e2e_backlog ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text, body text)")
    sql("SELECT plank.track('public.e2e_backlog')")
    raw = RawWebSocket(PORT)
    try:
        assert raw.recv_json()["type"] == "welcome"
        raw.send_text(json.dumps({"type": "subscribe", "id": "b", "table": "public.e2e_backlog",
                                  "filter": {"label": label}}))
        assert raw.recv_json()["type"] == "ack"
        # not reading from here: the large change fills the socket buffers, then small
        # changes come
        sql("INSERT INTO e2e_backlog (label, body) VALUES (%s, repeat('x', 6000000))", (label,))
        time.sleep(0.3)
        for i in range(3):
            sql("INSERT INTO e2e_backlog (label, body) VALUES (%s, %s)", (label, f"small-{i}"))
        time.sleep(0.3)

        raw.s.settimeout(20)
        got = []
        while len(got) < 4:
            op, payload = raw.recv_frame()
            if op == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                raise AssertionError(
                    f"closed with {code} {payload[2:]!r} after {[t for t, _ in got]}: a backlog "
                    f"of a few hundred bytes behind one 6 MB message is not past the 8MB bound")
            if op == 1:
                m = json.loads(payload)
                # each single-row transaction: one change carrying "commit": true
                got.append((m["type"] + ("+commit" if m.get("commit") is True else ""),
                            (m.get("change") or {}).get("new", {}).get("body", "")))
        assert [t for t, _ in got] == ["change+commit"] * 4, [t for t, _ in got]
        assert len(got[0][1]) == 6000000
        assert [b for t, b in got[1:]] == ["small-0", "small-1", "small-2"]
    finally:
        raw.close()


def test_fast_readers_behind_a_busy_worker_are_not_dropped():
    """Slow means the client is not reading (docs/RELIABILITY.md): 200 clients that read
    everything as fast as they can, while single-row transactions are committed flat out
    for 5 s, fall far behind plank.max_client_buffer (64kB here) because the worker itself
    is behind, for longer than plank.max_client_lag (1s here); none is closed, and every
    one gets every row. (At most `cap` rows, so that the clients drain in well under
    plank.ping_interval: they answer no ping. With the rule this replaced, a backlog over
    the bound for max_client_lag, all 200 were closed.)"""
    clients, seconds, cap = 200, 5, 50000
    label = tag()
    sql("CREATE TABLE IF NOT EXISTS public.e2e_sustained ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text, n int)")
    sql("SELECT plank.track('public.e2e_sustained')")
    set_settings({"plank.max_client_buffer": "64kB", "plank.max_client_lag": "1s"})
    socks = []
    try:
        for _ in range(clients):
            ws = RawWebSocket(PORT, rcvbuf=256 * 1024, timeout=30)
            socks.append(ws)
            assert ws.recv_json()["type"] == "welcome"
            ws.send_text(json.dumps({"type": "subscribe", "id": "s",
                                     "table": "public.e2e_sustained",
                                     "filter": {"label": label}}))
            ack = ws.recv_json()
            assert ack["type"] == "ack", ack

        # each client: [changes received, how it ended (None: open), the last bytes]. The
        # reader counts the changes in the raw stream (bytes.count, at C speed), so that
        # it reads as fast as the socket delivers; the last 64 bytes of a stream that
        # ends show how (a close frame with 1013 "client too slow", or none).
        marker = b'"type":"change"'
        state = {ws: [bytes(ws.buf).count(marker), None, bytes(ws.buf[-64:])] for ws in socks}
        stop = threading.Event()

        def read_all():
            sel = selectors.DefaultSelector()
            for ws in socks:
                ws.s.setblocking(False)
                sel.register(ws.s, selectors.EVENT_READ, ws)
            while not stop.is_set():
                for key, _ in sel.select(0.1):
                    ws = key.data
                    st = state[ws]
                    try:
                        chunk = ws.s.recv(1 << 20)
                    except (BlockingIOError, InterruptedError):
                        continue
                    except ConnectionError:
                        chunk = b""
                    if not chunk:
                        sel.unregister(ws.s)
                        st[1] = "closed, ending with %r" % st[2]
                        continue
                    # a marker split between two reads is counted in the joined bytes
                    joined = st[2][-(len(marker) - 1):] + chunk
                    st[0] += joined.count(marker)
                    st[2] = joined[-64:]
            sel.close()

        reader = threading.Thread(target=read_all, daemon=True)
        reader.start()
        # the writer: one single-row transaction after another, in the server (no client
        # round trip per row), for `seconds` or `cap` rows, whichever comes first
        sql(f"""DO $$
            DECLARE
                t timestamptz := clock_timestamp();
                i int := 0;
            BEGIN
                WHILE clock_timestamp() < t + interval '{seconds} s' AND i < {cap} LOOP
                    i := i + 1;
                    INSERT INTO public.e2e_sustained (label, n) VALUES (%s, i);
                    COMMIT;
                END LOOP;
            END $$""", (label,))
        wrote = time.monotonic()
        rows = sql("SELECT count(*) FROM public.e2e_sustained WHERE label = %s", (label,))[0][0]
        assert rows > 0

        def done():
            return all(st[0] >= rows or st[1] is not None for st in state.values())
        deadline = time.monotonic() + 180
        while not done() and time.monotonic() < deadline:
            time.sleep(0.2)
        stop.set()
        reader.join(10)
        closed = [st[1] for st in state.values() if st[1] is not None]
        short = [st[0] for st in state.values() if st[0] != rows]
        print(f"{rows} rows written; {clients} clients; closed: {len(closed)}; "
              f"short: {len(short)}; drained {time.monotonic() - wrote:.1f} s after the writes")
        assert not closed, f"{len(closed)} reading clients were closed: {closed[:5]}"
        assert not short, f"{len(short)} clients did not get all {rows} rows: {short[:5]}"
    finally:
        for ws in socks:
            ws.close()
        set_settings({"plank.max_client_buffer": None, "plank.max_client_lag": None})
        sql("DELETE FROM public.e2e_sustained WHERE label = %s", (label,))


def test_reader_behind_the_replay_ring_is_told_to_resync_and_kept():
    """A client's backlog is its position in the replay ring (docs/RELIABILITY.md): a
    client that stops reading keeps its connection, and when it reads again it gets, in
    order, the changes the kernel and the ring still held, with resync_required (reason
    out_of_range) where the ring (64kB here) lost some, then live changes again. The
    worker's memory for it is its position, not the 6 MB written."""
    rows, width = 3000, 2000  # about 6 MB: far more than the 64kB ring
    label = tag()
    sql("CREATE TABLE IF NOT EXISTS public.e2e_ring ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, label text, n int, body text)")
    sql("SELECT plank.track('public.e2e_ring')")
    # no close for the pause: the stall rule needs plank.max_client_lag of no progress
    set_settings({"plank.replay_buffer": "64kB", "plank.max_client_lag": "10min"})
    raw = RawWebSocket(PORT)
    try:
        assert raw.recv_json()["type"] == "welcome"
        raw.send_text(json.dumps({"type": "subscribe", "id": "r", "table": "public.e2e_ring",
                                  "filter": {"label": label}}))
        assert raw.recv_json()["type"] == "ack"
        # not reading from here
        sql(f"""DO $$
            BEGIN
                FOR i IN 1..{rows} LOOP
                    INSERT INTO public.e2e_ring (label, n, body) VALUES (%s, i, repeat('x', {width}));
                    COMMIT;
                END LOOP;
            END $$""", (label,))

        # a change after them, seen by another client, shows that the worker has them all
        # (events are dispatched in commit order)
        async def sentinel():
            async with client() as c:
                await c.subscribe("s", table="public.e2e_ring", filter={"label": label, "n": -2})
                await asyncio.to_thread(
                    sql, "INSERT INTO public.e2e_ring (label, n, body) VALUES (%s, -2, '')",
                    (label,))
                (m,) = await c.pushes("s", 1, timeout=60)
                return m["seq"]
        sentinel_seq = run(sentinel(), timeout=90)

        raw.s.settimeout(20)
        runs, resyncs, live = [[]], [], False

        def go_live():
            # caught up with the log: a change committed now arrives live
            sql("INSERT INTO public.e2e_ring (label, n, body) VALUES (%s, -1, 'live')", (label,))

        while True:
            op, payload = raw.recv_frame()
            assert op == 1, f"opcode {op} after {sum(map(len, runs))} changes (8 is a close)"
            m = json.loads(payload)
            if m["type"] == "resync_required":
                assert m["reason"] == "out_of_range", m
                resyncs.append(m["seq"])
                runs.append([])
                if m["seq"] >= sentinel_seq and not live:
                    go_live()
                    live = True
                continue
            assert m["type"] == "change", m
            n = m["change"]["new"]["n"]
            if n == -1:
                break
            if n == -2:
                # the sentinel itself (the kernel's buffers let the worker move on
                # during the writes, and a resync then may come before it)
                if not live:
                    go_live()
                    live = True
                continue
            runs[-1].append(n)
        assert resyncs, "no resync_required although the ring lost changes"
        assert resyncs == sorted(resyncs), resyncs
        got = [n for r in runs for n in r]
        assert len(got) < rows
        assert runs[0] == list(range(1, len(runs[0]) + 1)), "a gap or reorder before a resync"
        for r in runs[1:]:
            assert r == list(range(r[0], r[0] + len(r))) if r else True, "a gap within a run"
        assert got == sorted(got), "changes out of order across a resync"
    finally:
        raw.close()
        set_settings({"plank.replay_buffer": None, "plank.max_client_lag": None})
        sql("DELETE FROM public.e2e_ring WHERE label = %s", (label,))
