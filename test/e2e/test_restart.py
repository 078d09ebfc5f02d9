"""A PostgreSQL restart (pg_ctl restart -m fast): connected clients get close code 1001
(going away); once the new worker is up, a client that resumes with the old epoch is told
epoch_changed and reloads with a snapshot. Marked disruptive: it runs after every other
test, between test_deflate.py and test_shutdown.py (conftest.DISRUPTIVE_STAGES), and
leaves the cluster running."""

import asyncio

import pytest

from conftest import DATADIR, LOGFILE, PGCTL, as_postgres, client, log_tail, run, tag, \
    wait_for_worker, worker_pids
from helpers import resume_into_new_epoch


def pg_ctl(*args, timeout=120):
    return as_postgres(PGCTL, "-D", DATADIR, *args, timeout=timeout)


@pytest.mark.disruptive("restart")
@pytest.mark.skipif(not DATADIR, reason="PLANK_DATADIR is not set (run through scripts/test.sh)")
def test_postgres_restart_closes_with_1001_and_resume_gets_epoch_changed(db):
    name = tag()
    old_pid = worker_pids()[0]

    async def before():
        async with client(keep_commits=True) as c:
            epoch = c.welcome["epoch"]
            await c.subscribe("items", table="public.items", filter={"name": name})
            await asyncio.to_thread(db.insert_item, name, 1)
            change, commit = await c.events("items", 2)
            # -l: the server keeps logging to the same file (without it pg_ctl would hand
            # the server our captured stdout, and this call would wait for the server)
            restart = asyncio.create_task(asyncio.to_thread(
                pg_ctl, "restart", "-m", "fast", "-w", "-t", "60",
                "-l", LOGFILE or f"{DATADIR}/restart.log"))
            try:
                code = await c.expect_close(timeout=30)
            finally:
                result = await restart
            assert result.returncode == 0, \
                f"pg_ctl restart failed: {result.stdout}{result.stderr}\n{log_tail()}"
            assert code == 1001, f"expected close code 1001 (going away), got {code}"
            return epoch, commit["seq"]

    try:
        old_epoch, last_seq = run(before(), timeout=90)
    finally:
        if pg_ctl("status").returncode != 0:  # never leave the cluster down
            pg_ctl("start", "-w", "-t", "60", "-l", LOGFILE or f"{DATADIR}/restart.log")

    db.close()  # its connection died with the server
    pid, welcome = wait_for_worker(timeout=30, not_pid=old_pid)
    assert welcome["epoch"] != old_epoch and welcome["seq"] == 0, welcome

    async def after():
        async with client(keep_commits=True) as c:
            values, ack = await resume_into_new_epoch(
                c, name, old_epoch, last_seq, welcome["epoch"])
            assert values == [1], values
            await asyncio.to_thread(db.insert_item, name, 2)
            change, commit = await c.events("items", 2)
            assert change["change"]["new"]["value"] == 2 and change["seq"] > ack["seq"]
            assert commit["type"] == "commit" and commit["seq"] == change["seq"]
    run(after())
