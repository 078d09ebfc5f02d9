"""Several databases (README "Behaviour of the worker"): plank.database lists
plank_test and plank_test2; the second worker serves plank_test2 on plank.port + 1, with
its own epoch, sequence numbers and views."""

import asyncio
import json

from conftest import DB, Db, client, run, tag
from helpers import (DB2, PORT2, WS_URL2, apoll, connection_of, connections,
                     http_get, stats, subscriptions, worker_pid)


def test_second_database_is_served_on_the_next_port_only():
    t = tag()
    in2, in1 = f"ops-db2-{t}", f"ops-db1-{t}"
    db1, db2 = Db(DB), Db(DB2)

    async def body():
        async with client() as c1, client(url=WS_URL2) as c2:
            assert c1.welcome["epoch"] != c2.welcome["epoch"], \
                f"two workers, two epochs: {c1.welcome} {c2.welcome}"
            await c1.subscribe(f"{t}-1", table="public.items")
            await c2.subscribe(f"{t}-2", table="public.items")

            # a change in plank_test2 reaches the client of port + 1 ...
            db2.insert_item(in2, 2)
            m = await c2.change_named(f"{t}-2", in2)
            assert m["change"]["schema"] == "public" and m["change"]["table"] == "items", m
            assert m["epoch"] == c2.welcome["epoch"], m
            # ... a change in plank_test reaches the client of port only
            db1.insert_item(in1, 1)
            m = await c1.change_named(f"{t}-1", in1)
            assert m["epoch"] == c1.welcome["epoch"], m
            await c1.sync()
            await c2.sync()
            wrong1 = [x for x in c1.kept_pushes() if (x.get("change", {}).get("new") or {}).get("name") == in2]
            assert not wrong1, f"a change of {DB2} reached a client of {DB}'s port: {wrong1}"
            # wait a little more for the other direction, then look again
            await asyncio.sleep(0.5)
            await c2.sync()
            wrong2 = [x for x in c2.kept_pushes() if (x.get("change", {}).get("new") or {}).get("name") == in1]
            assert not wrong2, f"a change of {DB} reached a client of {DB2}'s port: {wrong2}"

            # the views of each database concern the worker that serves it
            pid1, pid2 = worker_pid(DB), worker_pid(DB2)
            assert pid1 != pid2
            s1, s2 = stats(DB), stats(DB2)
            assert s1["worker_pid"] == pid1 and s2["worker_pid"] == pid2, (s1, s2)
            assert s1["epoch"] == c1.welcome["epoch"] and s2["epoch"] == c2.welcome["epoch"]
            cid2 = await apoll(lambda: connection_of(f"{t}-2", DB2), 5,
                               what="the port + 1 client in plank.subscriptions of plank_test2")
            assert cid2 in connections(DB2)
            assert connection_of(f"{t}-2", DB) is None, \
                f"{DB}'s view lists a subscription of {DB2}'s worker"
            assert connection_of(f"{t}-1", DB2) is None, \
                f"{DB2}'s view lists a subscription of {DB}'s worker"
            assert {r["target"] for r in subscriptions(DB2) if r["id"] == f"{t}-2"} == {"public.items"}

            # /health of each port names its database and worker
            for port, dbname, pid, c in ((PORT2, DB2, pid2, c2),):
                status, _, text = http_get("/health", port=port)
                assert status == 200, (status, text)
                h = json.loads(text)
                assert h["database"] == dbname and h["worker_pid"] == pid, h
                assert h["epoch"] == c.welcome["epoch"], h

            # plank.disconnect() in plank_test concerns plank_test's worker only
            if cid2 not in connections(DB):
                assert db1.scalar("SELECT plank.disconnect(%s)", (cid2,)) is False
                await asyncio.sleep(0.3)
                pong = await c2.request({"type": "ping", "id": "still"})
                assert pong["type"] == "pong", pong

            # disconnect from plank_test2 closes that worker's client
            assert db2.scalar("SELECT plank.disconnect(%s)", (cid2,)) is True
            code = await c2.expect_close()
            assert code == 4003, code
            pong = await c1.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong"
    try:
        run(body())
    finally:
        db1.execute("DELETE FROM items WHERE name = %s", (in1,))
        db2.execute("DELETE FROM items WHERE name = %s", (in2,))
        db1.close()
        db2.close()
