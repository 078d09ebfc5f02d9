"""Faults: the worker terminated (clients closed with 1001, a new worker with a new epoch,
resume then needs a resync), and an error inside notification processing (the worker
survives, the change still goes out, truncated). A client whose network went away is in
test_idle.py, a PostgreSQL restart in test_restart.py."""

import asyncio
import time

import pytest

from conftest import LOGFILE, ServerLog, client, connect, poll, run, sql, tag, \
    wait_for_worker, worker_pids
from helpers import resume_into_new_epoch

# docs/PROTOCOL.md, "Change payload" ("overflow": the reference the worker could not read)
DOCUMENTED_CHANGE_MEMBERS = {"schema", "table", "op", "xid", "n", "new", "old", "truncated",
                             "key", "overflow"}


# --------------------------------------------------------------------------- worker restart


def test_terminated_worker_closes_with_1001_and_resume_needs_resync(db):
    pid = worker_pids()[0]
    name = tag()

    async def before():
        async with client(keep_commits=True) as c:
            epoch = c.welcome["epoch"]
            await c.subscribe("items", table="public.items", filter={"name": name})
            await asyncio.to_thread(db.insert_item, name, 1)
            change, commit = await c.events("items", 2)
            assert commit["type"] == "commit"
            assert await asyncio.to_thread(db.scalar, "SELECT pg_terminate_backend(%s)", (pid,))
            code = await c.expect_close(timeout=10)
            assert code == 1001, f"expected close code 1001 (going away), got {code}"
            return epoch, commit["seq"]
    old_epoch, last_seq = run(before())
    terminated = time.monotonic()

    new_pid, welcome = wait_for_worker(timeout=15, not_pid=pid)
    assert time.monotonic() - terminated < 10, "the worker took 10 s or more to come back"
    assert new_pid != pid and welcome["epoch"] != old_epoch, (pid, new_pid, welcome)
    # a change made while no worker ran is not lost for a client that resyncs
    db.insert_item(name, 2)

    async def after():
        async with client(keep_commits=True) as c:
            values, ack = await resume_into_new_epoch(
                c, name, old_epoch, last_seq, c.welcome["epoch"])
            assert values == [1, 2], values
            await asyncio.to_thread(db.insert_item, name, 3)
            change = await c.next_push("items")
            assert change["change"]["new"]["value"] == 3 and change["seq"] > ack["seq"]
    run(after())


# --------------------------------------------------------------------------- plank.overflow


@pytest.fixture
def overflow_renamed():
    """Rename plank.overflow back (and empty it) whatever the test did."""
    yield
    if sql("SELECT to_regclass('plank.overflow_x') IS NOT NULL")[0][0]:
        sql("ALTER TABLE plank.overflow_x RENAME TO overflow")
    sql("DELETE FROM plank.overflow")


def check_truncated(m, rid):
    ch = m["change"]
    assert ch.get("truncated") is True, f"not truncated: {str(m)[:300]}"
    assert ch["key"] == {"id": rid} and "new" not in ch, str(m)[:300]
    extra = set(ch) - DOCUMENTED_CHANGE_MEMBERS
    assert not extra, f"undocumented members in the change payload: {extra}: {ch}"


def test_missing_overflow_table_sends_the_truncated_form(db, overflow_renamed):
    """plank.overflow cannot be written (renamed away): the writer gets no error and the
    client the row's key with "truncated": true."""
    name = tag()
    pid = worker_pids()[0]
    sql("ALTER TABLE plank.overflow RENAME TO overflow_x")

    async def body():
        async with client() as c:
            await c.subscribe("items", table="public.items", filter={"name": name})

            def write():
                conn = connect()
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO items (name) VALUES (%s) RETURNING id", (name,))
                        rid = cur.fetchone()[0]
                        cur.execute("UPDATE items SET name = name || repeat('x', 20000) "
                                    "WHERE id = %s", (rid,))
                    return rid, list(conn.notices)
                finally:
                    conn.close()
            rid, notices = await asyncio.to_thread(write)
            ins = await c.next_push("items")
            assert ins["change"]["new"]["id"] == rid
            upd = await c.next_push("items")
            check_truncated(upd, rid)
            assert upd["change"]["old"] == {"id": rid}
            return notices
    notices = run(body())
    print("writer notices:", notices)
    assert worker_pids() == [pid], "the worker changed"


def test_error_while_reading_overflow_is_survived(db, overflow_renamed):
    """The payload was stored, but plank.overflow is gone when the worker reads it (renamed
    in the same transaction): the worker logs a WARNING naming plank.overflow, survives
    (same pid), and still sends the change, in its truncated form; later changes flow."""
    name = tag()
    pid = worker_pids()[0]
    log = ServerLog()

    def write():
        conn = connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO items (name) VALUES (%s || repeat('x', 20000)) "
                            "RETURNING id", (name,))
                rid = cur.fetchone()[0]
                cur.execute("SELECT count(*) FROM plank.overflow")
                stored = cur.fetchone()[0]
                cur.execute("ALTER TABLE plank.overflow RENAME TO overflow_x")
            conn.commit()
            return rid, stored
        finally:
            conn.close()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("items", table="public.items", filter={"name": name})
            await c.subscribe("all", table="public.items")
            rid, stored = await asyncio.to_thread(write)
            assert stored >= 1, "the trigger did not store the oversized payload"
            m = await c.next_event("all")
            assert m["type"] == "change" and m["change"]["xid"] > 0
            commit = await c.next_event("all")
            assert commit["type"] == "commit" and commit["seq"] == m["seq"], commit
            check_truncated(m, rid)
            # the worker goes on: a small change, then (table back) a whole large one
            await asyncio.to_thread(db.insert_item, name + "-after")
            after = await c.next_event("all")
            assert after["change"]["new"]["name"] == name + "-after", after
            await asyncio.to_thread(sql, "ALTER TABLE plank.overflow_x RENAME TO overflow")
            left = await asyncio.to_thread(sql, "SELECT count(*) FROM plank.overflow")
            print("rows left in plank.overflow after the failed read:", left[0][0])
            await asyncio.to_thread(sql, "DELETE FROM plank.overflow")
            await asyncio.to_thread(
                db.execute, "INSERT INTO items (name) VALUES (%s || repeat('y', 20000))",
                (name + "-whole",))
            whole = await c.change_named("all", name + "-whole" + "y" * 20000)
            assert "truncated" not in whole["change"]
    run(body())
    assert worker_pids() == [pid], "the worker did not survive the error"
    text = poll(lambda: (lambda t: t if "plank.overflow" in t and "WARNING" in t else None)(
        log.text()), 5, 0.1, "a WARNING naming plank.overflow in the server log") \
        if LOGFILE else ""
    if LOGFILE:
        warnings = [ln for ln in text.splitlines() if "WARNING" in ln]
        assert any("plank.overflow" in ln for ln in warnings), warnings
        print("\n".join(warnings))
