"""Rows whose change payload reaches NOTIFY's 8000-byte limit: the trigger stores the payload
in plank.overflow (in plank.database), the worker fetches and deletes it, and clients get
the change whole, exactly as committed (docs/PROTOCOL.md, "Change payload").

Big values are built in SQL (repeat, jsonb_build_object), never sent from Python."""

import asyncio
import json

import pytest

from conftest import client, connect, run, sql, tag

MB = 1000 * 1000


@pytest.fixture(scope="module", autouse=True)
def big_table():
    sql("CREATE TABLE IF NOT EXISTS public.e2e_big ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " label text NOT NULL, body text, doc jsonb)")
    sql("SELECT plank.track('public.e2e_big')")
    yield
    sql("TRUNCATE public.e2e_big")


def overflow_rows():
    return sql("SELECT count(*) FROM plank.overflow")[0][0]


def write(statements):
    """Run (sql, params) pairs, each in its own transaction on one connection; return the
    first row each returned, and the notices the writer got (it must get none)."""
    conn = connect()
    try:
        out = []
        with conn.cursor() as cur:
            for q, params in statements:
                cur.execute(q, params)
                out.append(cur.fetchone() if cur.description is not None else None)
        return out, list(conn.notices)
    finally:
        conn.close()


def check_whole(m, op, xid):
    ch = m["change"]
    assert m["type"] == "change" and ch["op"] == op and ch["xid"] == xid, str(m)[:300]
    assert "truncated" not in ch and "key" not in ch and "overflow" not in ch, \
        f"not the whole payload: {str(m)[:300]}"
    return ch


def test_1mb_text_row_arrives_whole_and_as_first_committed(db):
    label = tag()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("big", table="public.e2e_big", filter={"label": label})
            (ins, upd), notices = await asyncio.to_thread(write, [
                ("INSERT INTO e2e_big (label, body) VALUES (%s, repeat('x', 1000000)) "
                 "RETURNING id, txid_current()", (label,)),
                # a later transaction changes the row again at once: the first change
                # must still carry the first version
                ("UPDATE e2e_big SET body = repeat('y', 1000000) || 'v2' WHERE label = %s "
                 "RETURNING txid_current()", (label,)),
            ])
            rid, xid1 = ins
            xid2 = upd[0]
            assert notices == [], f"the writer got notices: {notices}"

            first, commit1, second, commit2 = await c.events("big", 4, timeout=30)
            ch = check_whole(first, "INSERT", xid1)
            assert ch["new"] == {"id": rid, "label": label, "body": "x" * MB, "doc": None}, \
                f"the INSERT does not carry the first version: {str(ch)[:300]}"
            assert (commit1["type"], commit1["seq"], commit1["xid"]) == \
                ("commit", first["seq"], xid1), commit1
            ch = check_whole(second, "UPDATE", xid2)
            assert ch["new"]["body"] == "y" * MB + "v2", str(ch)[:300]
            assert ch["old"] == {"id": rid}, str(ch)[:300]
            assert (commit2["type"], commit2["seq"], commit2["xid"]) == \
                ("commit", second["seq"], xid2), commit2
            assert second["seq"] > first["seq"]
    run(body(), timeout=60)
    assert overflow_rows() == 0, "plank.overflow is not empty after delivery"


def test_10mb_jsonb_row_arrives_whole(db):
    """A client that reads at once gets a 10 MB row whole, with the default
    plank.max_client_buffer (8MB): the bound leaves out the largest message."""
    label = tag()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("big", table="public.e2e_big", filter={"label": label})
            (ins, upd), notices = await asyncio.to_thread(write, [
                ("INSERT INTO e2e_big (label, doc) VALUES (%s, jsonb_build_object("
                 "'blob', repeat('z', 10000000), 'n', 42, "
                 "'nested', jsonb_build_object('a', true, 'b', null, 'c', 'ü'))) "
                 "RETURNING id, txid_current()", (label,)),
                ("UPDATE e2e_big SET doc = jsonb_set(doc, '{n}', '43') WHERE label = %s "
                 "RETURNING txid_current()", (label,)),
            ])
            rid, xid1 = ins
            assert notices == [], f"the writer got notices: {notices}"

            first = await c.next_event("big", timeout=30)
            ch = check_whole(first, "INSERT", xid1)
            assert ch["new"]["id"] == rid and ch["new"]["label"] == label, str(ch)[:300]
            assert ch["new"]["doc"] == {"blob": "z" * (10 * MB), "n": 42,
                                        "nested": {"a": True, "b": None, "c": "ü"}}, \
                f"the 10 MB jsonb value is not whole: {str(ch)[:300]}"
            commit1 = await c.next_event("big", timeout=30)
            assert (commit1["type"], commit1["seq"], commit1["xid"]) == \
                ("commit", first["seq"], xid1), commit1
            second = await c.next_event("big", timeout=30)
            ch = check_whole(second, "UPDATE", upd[0])
            assert ch["new"]["doc"]["n"] == 43 and len(ch["new"]["doc"]["blob"]) == 10 * MB
    run(body(), timeout=90)
    assert overflow_rows() == 0, "plank.overflow is not empty after delivery"


def test_large_and_small_rows_of_one_transaction_in_order_then_one_commit(db):
    label = tag()
    # (body built in SQL, expected body): small, 50 kB, small, 1 MB, small
    rows = [("'s1'", "s1"), ("repeat('a', 50000)", "a" * 50000), ("'s2'", "s2"),
            ("repeat('b', 1000000)", "b" * MB), ("'s3'", "s3")]

    def tx():
        conn = connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                for expr, _ in rows:
                    cur.execute(f"INSERT INTO e2e_big (label, body) VALUES (%s, {expr})",
                                (label,))
                cur.execute("SELECT txid_current()")
                xid = cur.fetchone()[0]
            conn.commit()
            return xid, list(conn.notices)
        finally:
            conn.close()

    async def body():
        async with client(keep_commits=True) as c:
            ack = await c.subscribe("big", table="public.e2e_big", filter={"label": label})
            await c.subscribe("all", table="public.e2e_big")
            xid, notices = await asyncio.to_thread(tx)
            assert notices == [], f"the writer got notices: {notices}"
            got = await c.events("big", len(rows) + 1, timeout=30)
            changes, commit = got[:-1], got[-1]
            for m, (_, expected) in zip(changes, rows):
                ch = check_whole(m, "INSERT", xid)
                assert ch["new"]["body"] == expected, str(ch)[:200]
            assert [m["change"]["n"] for m in changes] == list(range(1, len(rows) + 1))
            seqs = [m["seq"] for m in changes]
            assert seqs[0] > ack["seq"] and seqs == list(range(seqs[0], seqs[0] + len(rows)))
            assert commit["type"] == "commit" and commit["xid"] == xid \
                and commit["seq"] == seqs[-1], commit
            # the unfiltered subscription got the same, and nothing else
            every = await c.events("all", len(rows) + 1, timeout=30)
            assert [m["seq"] for m in every] == seqs + [seqs[-1]]
            assert [m["type"] for m in every] == ["change"] * len(rows) + ["commit"]
            await c.sync()
            assert c.kept_events() == [], c.kept_events()
    run(body(), timeout=60)
    assert overflow_rows() == 0, "plank.overflow is not empty after delivery"


def test_other_database_keeps_the_truncated_form():
    """Outside plank.database no worker reads plank.overflow: the trigger sends the row's
    key with "truncated": true and stores nothing."""
    other = "e2e_other_db"
    if not sql("SELECT 1 FROM pg_database WHERE datname = %s", (other,)):
        sql(f"CREATE DATABASE {other}")
    conn = connect(dbname=other)
    try:
        with conn.cursor() as cur:
            cur.execute("SET client_min_messages = warning")
            cur.execute("CREATE EXTENSION IF NOT EXISTS plank")
            cur.execute("CREATE TABLE IF NOT EXISTS big (id int PRIMARY KEY, body text)")
            cur.execute("SELECT plank.track('big')")
            cur.execute("SELECT plank.change_channel()")
            cur.execute(f'LISTEN "{cur.fetchone()[0]}"')
            cur.execute("INSERT INTO big SELECT coalesce(max(id), 0) + 1, repeat('x', 20000) "
                        "FROM big RETURNING id")
            rid = cur.fetchone()[0]
            conn.poll()
            assert len(conn.notifies) == 1, conn.notifies
            payload = json.loads(conn.notifies[0].payload)
            assert payload["truncated"] is True and payload["key"] == {"id": rid}, payload
            assert "new" not in payload and "overflow" not in payload, payload
            cur.execute("SELECT count(*) FROM plank.overflow")
            assert cur.fetchone()[0] == 0
            assert [n for n in conn.notices if "WARNING" in n] == [], conn.notices
    finally:
        conn.close()
