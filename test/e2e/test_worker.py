"""The worker process: visible in pg_stat_activity, survives pg_cancel_backend, comes back
after pg_terminate_backend with a new epoch (docs/PROTOCOL.md, close code 1001)."""

import asyncio

from conftest import DB, client, run, sql, tag, wait_for_worker, worker_pids


def test_worker_in_pg_stat_activity():
    """One worker per database of plank.database (the test cluster lists two)."""
    rows = sql("SELECT datname FROM pg_stat_activity WHERE backend_type = 'plank' ORDER BY datname")
    assert [r[0] for r in rows] == [DB, DB + "2"], f"expected one plank worker per database, found {rows}"


def test_pg_cancel_backend_does_not_kill_the_worker(db):
    pid = worker_pids()[0]

    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            await c.subscribe("items", table="public.items")
            assert await asyncio.to_thread(db.scalar, "SELECT pg_cancel_backend(%s)", (pid,))
            # the same connection still works, and so does a change round trip
            pong = await c.request({"type": "ping", "id": "after-cancel"})
            assert pong["type"] == "pong", pong
            name = tag()
            await asyncio.to_thread(db.insert_item, name)
            m = await c.change_named("items", name)
            assert m["epoch"] == epoch
            async with client() as c2:
                assert c2.welcome["epoch"] == epoch
    run(body())
    assert worker_pids() == [pid], "pg_cancel_backend changed the worker"


def test_pg_terminate_backend_closes_clients_and_worker_restarts(db):
    pid = worker_pids()[0]

    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            await c.subscribe("items", table="public.items")
            assert await asyncio.to_thread(db.scalar, "SELECT pg_terminate_backend(%s)", (pid,))
            code = await c.expect_close(timeout=10)
            assert code == 1001, f"expected close code 1001 (going away), got {code}"
            return epoch
    old_epoch = run(body())

    new_pid, welcome = wait_for_worker(timeout=15, not_pid=pid)
    assert new_pid != pid
    assert welcome["epoch"] != old_epoch, "the epoch must change when the worker restarts"
    assert welcome["seq"] == 0, f"seq right after a start must be 0: {welcome}"

    async def after():
        async with client() as c:
            assert c.welcome["epoch"] == welcome["epoch"]
            ack = await c.subscribe("items", table="public.items")
            name = tag()
            await asyncio.to_thread(db.insert_item, name)
            m = await c.change_named("items", name)
            assert m["epoch"] == welcome["epoch"] and m["seq"] == ack["seq"] + 1, m
    run(after())
