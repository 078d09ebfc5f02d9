"""Fast shutdown of the cluster: clients get close code 1001 (going away). The cluster is
started again afterwards, so the server is left as it was found. Marked disruptive: it
runs last (conftest.DISRUPTIVE_STAGES)."""

import asyncio

import pytest

from conftest import DATADIR, LOGFILE, PGCTL, as_postgres, client, log_tail, run, tag, \
    wait_for_worker


def pg_ctl(*args, timeout=120):
    return as_postgres(PGCTL, "-D", DATADIR, *args, timeout=timeout)


@pytest.mark.disruptive("shutdown")
@pytest.mark.skipif(not DATADIR, reason="PLANK_DATADIR is not set (run through scripts/test.sh)")
def test_fast_shutdown_sends_going_away(db):
    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            await c.subscribe("items", table="public.items")
            stop = asyncio.create_task(asyncio.to_thread(pg_ctl, "stop", "-m", "fast", "-w",
                                                         "-t", "60"))
            try:
                code = await c.expect_close(timeout=30)
            finally:
                result = await stop
            assert result.returncode == 0, f"pg_ctl stop failed: {result.stdout}{result.stderr}"
            assert code == 1001, f"expected close code 1001 (going away), got {code}"
            return epoch

    try:
        old_epoch = run(body(), timeout=90)
    finally:
        # always bring the cluster back for whatever runs next
        status = pg_ctl("status")
        if status.returncode != 0:
            start = pg_ctl("start", "-w", "-t", "60", "-l", LOGFILE or f"{DATADIR}/restart.log")
            assert start.returncode == 0, \
                f"pg_ctl start failed: {start.stdout}{start.stderr}\n{log_tail()}"

    pid, welcome = wait_for_worker(timeout=30)
    assert welcome["epoch"] != old_epoch
    assert welcome["seq"] == 0, welcome

    async def after():
        async with client() as c:
            ack = await c.subscribe("items", table="public.items")
            name = tag()
            await asyncio.to_thread(db.insert_item, name)
            m = await c.change_named("items", name)
            assert m["seq"] == ack["seq"] + 1
    run(after())
