"""Bulk statements: plank.track() captures INSERT, UPDATE and DELETE with statement triggers
and transition tables, so a statement changing 100,000 rows costs a few notifications (an
array of changes, or ~1 MB arrays stored in plank.overflow and referenced by one
notification each); the worker expands them so that every row still reaches clients as a
`change` message of its own, with its own seq, in order, followed by the transaction's
commit marker (docs/PROTOCOL.md, "Change payload").

Commit markers are read through `commit_xid()`, which accepts both forms: a separate
{"type":"commit"} message, and `"commit": true` on the transaction's last change.

Notifications are counted by a psycopg2 connection that LISTENs on plank.change_channel();
a marker NOTIFY sent after the statement commits tells when it has them all (notifications
are delivered in commit order)."""

import asyncio
import json
import time

import psycopg2
import pytest

from conftest import client, connect, log_tail, run, sql, tag, ServerLog

N = 100_000
MARKER = "e2e_bulk_marker"


# --------------------------------------------------------------------------- helpers


def commit_xid(m):
    """The xid whose end this message marks, in either form, or None."""
    if m["type"] == "commit":
        return m["xid"]
    if m["type"] == "change" and m.get("commit") is True:
        return m["change"]["xid"]
    return None


class Listener:
    """A LISTEN on the capture trigger's channel: counts the notifications (not the rows)
    the writers send."""

    def __init__(self):
        self.conn = connect()
        with self.conn.cursor() as cur:
            cur.execute("SELECT plank.change_channel()")
            self.channel = cur.fetchone()[0]
            cur.execute(f'LISTEN "{self.channel}"')
            cur.execute(f"LISTEN {MARKER}")

    def count_until_marker(self, writer, timeout=60):
        """Send a marker from `writer` (after its statements committed); return the
        payloads of the change notifications received before it, and reset."""
        with writer.cursor() as cur:
            cur.execute(f"NOTIFY {MARKER}")
        got = []
        deadline = time.monotonic() + timeout
        while True:
            self.conn.poll()
            while self.conn.notifies:
                n = self.conn.notifies.pop(0)
                if n.channel == MARKER:
                    return got
                got.append(n.payload)
            assert time.monotonic() < deadline, "the marker notification did not arrive"
            time.sleep(0.01)

    def close(self):
        self.conn.close()


@pytest.fixture
def listener():
    li = Listener()
    try:
        yield li
    finally:
        li.close()


def make_table(name, ddl="(id int PRIMARY KEY, grp text, v int, pad text)", **track):
    sql(f"DROP TABLE IF EXISTS public.{name} CASCADE")
    sql(f"CREATE TABLE public.{name} {ddl}")
    args = "".join(f", {k} => %s" for k in track)
    sql(f"SELECT plank.track('public.{name}'{args})", tuple(track.values()) or None)


def overflow_rows():
    return sql("SELECT count(*) FROM plank.overflow")[0][0]


async def read_stream(c, subs, ncommits, timeout=120):
    """Read every message pushed for the subscriptions `subs` until `ncommits` commit
    markers (either form) were seen for them; return them in arrival order as
    (sub, kind, message) with kind "change" or "commit" (a change that carries the
    commit mark is listed as a change, then as a commit)."""
    out = []
    seen = 0
    pending = [m for m in c.inbox if m.get("sub") in subs]
    c.inbox.clear()
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while seen < ncommits:
        if pending:
            m = pending.pop(0)
        else:
            left = deadline - loop.time()
            assert left > 0, f"timed out: {seen} of {ncommits} commits, {len(out)} messages"
            m = json.loads(await asyncio.wait_for(c.ws.recv(), left))
        if m.get("sub") not in subs:
            continue
        if m["type"] == "change":
            out.append((m["sub"], "change", m))
        xid = commit_xid(m)
        if xid is not None:
            out.append((m["sub"], "commit", m))
            seen += 1
    return out


def changes_of(stream, sub=None):
    return [m for s, kind, m in stream if kind == "change" and (sub is None or s == sub)]


def check_transaction(stream, sub, xid):
    """The sub's messages of transaction xid: its changes, contiguous, n increasing, seqs
    increasing, then exactly one commit marker for xid right after the last one."""
    mine = [(kind, m) for s, kind, m in stream if s == sub]
    idx = [i for i, (kind, m) in enumerate(mine)
           if (kind == "change" and m["change"]["xid"] == xid)
           or (kind == "commit" and commit_xid(m) == xid)]
    assert idx, f"nothing of transaction {xid} for {sub}"
    assert idx == list(range(idx[0], idx[-1] + 1)), "the transaction is not contiguous"
    block = [mine[i] for i in idx]
    assert block[-1][0] == "commit" and sum(k == "commit" for k, _ in block) == 1, \
        f"not one commit marker at the end: {[k for k, _ in block][-3:]}"
    changes = [m for k, m in block if k == "change"]
    commit = block[-1][1]
    if commit["type"] == "commit":
        # the seq of the transaction's last change, which this sub may not have received
        assert commit["seq"] >= changes[-1]["seq"], (commit, changes[-1]["seq"])
    else:
        assert commit is changes[-1], "commit: true is not on the last change"
    assert all(m.get("commit") is not True for m in changes[:-1]), "commit mark before the end"
    seqs = [m["seq"] for m in changes]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs), "seqs not increasing"
    ns = [m["change"]["n"] for m in changes]
    assert ns == sorted(ns) and len(set(ns)) == len(ns), "n not increasing"
    return changes


def run_statement(conn, statement, params=None):
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(statement, params)
        cur.execute("SELECT txid_current()")
        xid = cur.fetchone()[0]
        cur.execute("COMMIT")
    return xid


# --------------------------------------------------------------------------- tests


def test_100k_row_insert_select_and_update_arrive_whole_in_order(listener):
    name = "e2e_bulk_" + tag()
    make_table(name)
    writer = connect()
    try:
        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("b", table=f"public.{name}")

                t0 = time.monotonic()
                xid = await asyncio.to_thread(
                    run_statement, writer,
                    f"INSERT INTO {name} SELECT g, 'g' || (g % 7), g, 'pad' "
                    f"FROM generate_series(1, {N}) g")
                t_stmt = time.monotonic() - t0
                stream = await read_stream(c, {"b"}, 1)
                t_all = time.monotonic() - t0
                changes = check_transaction(stream, "b", xid)
                assert len(changes) == N, f"{len(changes)} INSERT changes, not {N}"
                assert [m["change"]["new"]["id"] for m in changes] == list(range(1, N + 1))
                assert [m["change"]["n"] for m in changes] == list(range(1, N + 1))
                for m in (changes[0], changes[-1], changes[N // 2]):
                    ch = m["change"]
                    i = ch["new"]["id"]
                    assert ch == {"schema": "public", "table": name, "op": "INSERT", "xid": xid,
                                  "n": i, "new": {"id": i, "grp": f"g{i % 7}", "v": i,
                                                  "pad": "pad"}}, ch
                notes = await asyncio.to_thread(listener.count_until_marker, writer)
                print(f"\nINSERT ... SELECT of {N} rows: statement {t_stmt:.2f}s, all rows at "
                      f"the client {t_all:.2f}s after it began, {len(notes)} notifications")
                assert 1 <= len(notes) <= 40, f"{len(notes)} notifications for {N} rows"

                t0 = time.monotonic()
                xid = await asyncio.to_thread(run_statement, writer,
                                              f"UPDATE {name} SET v = v * 2, grp = 'u'")
                t_stmt = time.monotonic() - t0
                stream = await read_stream(c, {"b"}, 1)
                t_all = time.monotonic() - t0
                changes = check_transaction(stream, "b", xid)
                assert len(changes) == N, f"{len(changes)} UPDATE changes, not {N}"
                assert [m["change"]["n"] for m in changes] == list(range(1, N + 1))
                ids = []
                for m in changes:
                    ch = m["change"]
                    i = ch["old"]["id"]
                    assert ch["op"] == "UPDATE" and ch["old"] == {"id": i} and \
                        ch["new"] == {"id": i, "grp": "u", "v": 2 * i, "pad": "pad"}, ch
                    ids.append(i)
                assert sorted(ids) == list(range(1, N + 1)), "not every row exactly once"
                notes = await asyncio.to_thread(listener.count_until_marker, writer)
                print(f"UPDATE of {N} rows: statement {t_stmt:.2f}s, all rows at the client "
                      f"{t_all:.2f}s after it began, {len(notes)} notifications")
                assert 1 <= len(notes) <= 40, f"{len(notes)} notifications for {N} rows"

                xid = await asyncio.to_thread(run_statement, writer,
                                              f"DELETE FROM {name} WHERE id % 2 = 0")
                stream = await read_stream(c, {"b"}, 1)
                changes = check_transaction(stream, "b", xid)
                assert sorted(m["change"]["old"]["id"] for m in changes) == \
                    list(range(2, N + 1, 2))
                assert all(m["change"]["op"] == "DELETE" and "new" not in m["change"]
                           and len(m["change"]["old"]) == 1 for m in changes)
                notes = await asyncio.to_thread(listener.count_until_marker, writer)
                assert 1 <= len(notes) <= 20, f"{len(notes)} notifications for {N // 2} rows"
        run(body(), timeout=300)
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS public.{name}")
    assert overflow_rows() == 0, "plank.overflow is not empty after delivery"


def test_mixed_transaction_keeps_commit_order_and_markers(listener):
    a, b = "e2e_bulk_a_" + tag(), "e2e_bulk_b_" + tag()
    make_table(a)
    make_table(b)
    writer = connect()
    try:
        def tx():
            with writer.cursor() as cur:
                cur.execute("BEGIN")
                cur.execute(f"INSERT INTO {a} SELECT g, 'x', g FROM generate_series(1, 5000) g")
                cur.execute(f"INSERT INTO {b} VALUES (1, 'single', 1)")
                cur.execute(f"UPDATE {a} SET v = -v WHERE id <= 3000")
                cur.execute(f"DELETE FROM {b} WHERE id = 1")
                cur.execute(f"INSERT INTO {a} VALUES (5001, 'last', 0)")
                cur.execute("SELECT txid_current()")
                xid1 = cur.fetchone()[0]
                cur.execute("COMMIT")
            xid2 = run_statement(writer, f"INSERT INTO {b} SELECT g, 'y', g "
                                         f"FROM generate_series(10, 12) g")
            return xid1, xid2

        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("a", table=f"public.{a}")
                await c.subscribe("b", table=f"public.{b}")
                xid1, xid2 = await asyncio.to_thread(tx)
                stream = await read_stream(c, {"a", "b"}, 3)

                a1 = check_transaction(stream, "a", xid1)
                b1 = check_transaction(stream, "b", xid1)
                b2 = check_transaction(stream, "b", xid2)
                assert [m["change"]["op"] for m in a1] == \
                    ["INSERT"] * 5000 + ["UPDATE"] * 3000 + ["INSERT"]
                assert [m["change"]["op"] for m in b1] == ["INSERT", "DELETE"]
                assert [m["change"]["new"]["id"] for m in b2] == [10, 11, 12]
                # the transaction's changes in the order made, across both tables
                t1 = sorted(a1 + b1, key=lambda m: m["seq"])
                assert [m["change"]["n"] for m in t1] == list(range(1, 5000 + 1 + 3000 + 1 + 1 + 1))
                assert [(m["sub"], m["change"]["op"]) for m in t1[4999:5002]] == \
                    [("a", "INSERT"), ("b", "INSERT"), ("a", "UPDATE")]
                assert (t1[8001]["sub"], t1[8001]["change"]["op"]) == ("b", "DELETE")
                assert t1[-1]["change"]["new"] == {"id": 5001, "grp": "last", "v": 0, "pad": None}
                assert a1[5000]["change"]["old"] == {"id": 1} and a1[5000]["change"]["new"]["v"] == -1
                # b's marker carries the seq of the transaction's last change (a's)
                b_commit = [m for s, kind, m in stream
                            if s == "b" and kind == "commit" and commit_xid(m) == xid1][0]
                assert b_commit["seq"] == t1[-1]["seq"], (b_commit, t1[-1]["seq"])
                # the second transaction comes after the first one's commit markers
                assert min(m["seq"] for m in b2) > max(m["seq"] for m in t1)
                # the commit markers come in commit order
                commits = [commit_xid(m) for s, kind, m in stream if kind == "commit"]
                assert commits in ([xid1, xid1, xid2],), commits
                notes = await asyncio.to_thread(listener.count_until_marker, writer)
                assert len(notes) <= 10, f"{len(notes)} notifications for 8,006 rows"
        run(body(), timeout=120)
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS public.{a}, public.{b}")
    assert overflow_rows() == 0


def test_partitioned_bulk_insert_update_cross_partition():
    name = "e2e_bulk_p_" + tag()
    sql(f"DROP TABLE IF EXISTS public.{name} CASCADE")
    sql(f"CREATE TABLE public.{name} (id int, region text, v int, PRIMARY KEY (id, region)) "
        f"PARTITION BY LIST (region)")
    sql(f"CREATE TABLE public.{name}_eu PARTITION OF public.{name} FOR VALUES IN ('eu')")
    sql(f"CREATE TABLE public.{name}_us PARTITION OF public.{name} FOR VALUES IN ('us')")
    sql(f"SELECT plank.track('public.{name}')")
    rows = 20_000
    writer = connect()
    try:
        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("p", table=f"public.{name}")
                x_ins = await asyncio.to_thread(
                    run_statement, writer,
                    f"INSERT INTO {name} SELECT g, CASE WHEN g % 2 = 0 THEN 'eu' ELSE 'us' END, g "
                    f"FROM generate_series(1, {rows}) g")
                # a statement naming a partition
                x_direct = await asyncio.to_thread(
                    run_statement, writer,
                    f"INSERT INTO {name}_eu SELECT g, 'eu', 0 FROM generate_series({rows + 1}, {rows + 1000}) g")
                # every eu row moves to us (cross-partition), every us row stays
                x_upd = await asyncio.to_thread(
                    run_statement, writer, f"UPDATE {name} SET region = 'us', v = v + 1 WHERE id <= {rows}")
                stream = await read_stream(c, {"p"}, 3)

                ins = check_transaction(stream, "p", x_ins)
                assert sorted(m["change"]["new"]["id"] for m in ins) == list(range(1, rows + 1))
                assert all(m["change"]["table"] == name and m["change"]["op"] == "INSERT" for m in ins)
                direct = check_transaction(stream, "p", x_direct)
                assert [m["change"]["new"]["id"] for m in direct] == list(range(rows + 1, rows + 1001))
                assert all(m["change"]["table"] == name for m in direct), direct[0]
                upd = check_transaction(stream, "p", x_upd)
                assert len(upd) == rows
                seen = set()
                for m in upd:
                    ch = m["change"]
                    i = ch["new"]["id"]
                    assert ch["table"] == name and ch["op"] == "UPDATE", ch
                    assert ch["old"] == {"id": i, "region": "eu" if i % 2 == 0 else "us"}, ch
                    assert ch["new"] == {"id": i, "region": "us", "v": i + 1}, ch
                    seen.add(i)
                assert seen == set(range(1, rows + 1))
        run(body(), timeout=120)
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS public.{name}")
    assert overflow_rows() == 0


def test_statement_touching_no_row_sends_nothing(listener):
    name = "e2e_bulk_z_" + tag()
    make_table(name)
    writer = connect()
    try:
        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("z", table=f"public.{name}")
                for statement in (f"UPDATE {name} SET v = 1 WHERE false",
                                  f"DELETE FROM {name}",
                                  f"INSERT INTO {name} SELECT 1, 'x', 1, 'x' WHERE false"):
                    await asyncio.to_thread(run_statement, writer, statement)
                notes = await asyncio.to_thread(listener.count_until_marker, writer)
                assert notes == [], notes
                xid = await asyncio.to_thread(run_statement, writer,
                                              f"INSERT INTO {name} VALUES (7, 'after', 7)")
                stream = await read_stream(c, {"z"}, 1)
                changes = check_transaction(stream, "z", xid)
                assert [m["change"]["new"]["id"] for m in changes] == [7], \
                    "something was sent before the first row"
        run(body(), timeout=60)
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS public.{name}")


def test_column_restrictions_honoured_in_bulk():
    inc, exc = "e2e_bulk_c_" + tag(), "e2e_bulk_x_" + tag()
    make_table(inc, columns="{v}")
    make_table(exc, exclude_columns="{pad, grp}")
    writer = connect()
    try:
        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("i", table=f"public.{inc}")
                await c.subscribe("x", table=f"public.{exc}")
                xs = []
                for t in (inc, exc):
                    xs.append(await asyncio.to_thread(
                        run_statement, writer,
                        f"INSERT INTO {t} SELECT g, 'hidden', g, 'hidden' FROM generate_series(1, 3000) g"))
                    xs.append(await asyncio.to_thread(
                        run_statement, writer, f"UPDATE {t} SET v = v + 1, grp = 'h2'"))
                stream = await read_stream(c, {"i", "x"}, 4)
                for sub, (xi, xu) in (("i", xs[0:2]), ("x", xs[2:4])):
                    ins = check_transaction(stream, sub, xi)
                    upd = check_transaction(stream, sub, xu)
                    assert len(ins) == len(upd) == 3000
                    for m in ins:
                        assert m["change"]["new"] == {"id": m["change"]["new"]["id"],
                                                      "v": m["change"]["new"]["id"]}, m
                    for m in upd:
                        i = m["change"]["old"]["id"]
                        assert m["change"]["new"] == {"id": i, "v": i + 1}, m
                        assert m["change"]["old"] == {"id": i}, m
        run(body(), timeout=60)
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS public.{inc}, public.{exc}")


def test_large_rows_among_small_in_a_bulk_statement_arrive_whole(listener):
    """Rows over NOTIFY's limit inside a large statement: stored one by one and referenced
    from the stored array; delivered whole, in place."""
    name = "e2e_bulk_l_" + tag()
    make_table(name)
    writer = connect()
    try:
        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("l", table=f"public.{name}")
                xid = await asyncio.to_thread(
                    run_statement, writer,
                    f"INSERT INTO {name} SELECT g, 'x', g, "
                    f"CASE WHEN g % 100 = 0 THEN repeat(chr(65 + g % 26), 20000) ELSE 's' END "
                    f"FROM generate_series(1, 20000) g")
                stream = await read_stream(c, {"l"}, 1)
                changes = check_transaction(stream, "l", xid)
                assert [m["change"]["new"]["id"] for m in changes] == list(range(1, 20001))
                for m in changes:
                    ch = m["change"]
                    i = ch["new"]["id"]
                    assert "truncated" not in ch and "overflow" not in ch, str(ch)[:200]
                    assert ch["new"]["pad"] == (chr(65 + i % 26) * 20000 if i % 100 == 0 else "s")
                notes = await asyncio.to_thread(listener.count_until_marker, writer)
                assert len(notes) <= 20, f"{len(notes)} notifications"
        run(body(), timeout=120)
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS public.{name}")
    assert overflow_rows() == 0


def test_malformed_multi_change_payloads_are_skipped():
    """Forged arrays and batch references on the change channel are logged and skipped;
    the worker keeps delivering."""
    name = "e2e_bulk_m_" + tag()
    make_table(name)
    log = ServerLog()
    try:
        async def body():
            async with client(keep_commits=True) as c:
                await c.subscribe("m", table=f"public.{name}")
                channel = sql("SELECT plank.change_channel()")[0][0]
                for payload in ('[{"schema":"public"', '[1, "x", null]', '[]',
                                '{"batch":9223372036854775807,"xid":1,"changes":1}',
                                '{"batch":"x"}', '[[{"a":1}]]'):
                    sql("SELECT pg_notify(%s, %s)", (channel, payload))
                conn = connect()
                try:
                    xid = run_statement(conn, f"INSERT INTO {name} SELECT g, 'ok', g "
                                              f"FROM generate_series(1, 3) g")
                finally:
                    conn.close()
                stream = await read_stream(c, {"m"}, 1)
                changes = check_transaction(stream, "m", xid)
                assert [m["change"]["new"]["id"] for m in changes] == [1, 2, 3]
        run(body(), timeout=60)
        text = log.text()
        assert "malformed array of changes" in text, log_tail()
        assert "could not find the payload of oversized batch of changes" in text, log_tail()
        assert "malformed reference to a batch of changes" in text, log_tail()
    finally:
        sql(f"DROP TABLE IF EXISTS public.{name}")
