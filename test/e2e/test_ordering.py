"""Sequence numbers and fan-out: no gaps, nothing lost, in order."""

import asyncio

from conftest import Client, Db, run, tag


def insert_names(names):
    """One INSERT per name, each in its own transaction (autocommit)."""
    db = Db()
    try:
        for n in names:
            db.execute("INSERT INTO items (name) VALUES (%s)", (n,))
    finally:
        db.close()


def test_seq_increases_by_one_without_gaps():
    prefix = tag()
    names = [f"{prefix}-{i:03d}" for i in range(200)]

    async def body():
        c = await Client.open()
        try:
            ack = await c.subscribe("items", table="public.items")
            writer = asyncio.create_task(asyncio.to_thread(insert_names, names))
            msgs = await c.pushes("items", len(names), timeout=30)
            await writer
            got = [m["change"]["new"]["name"] for m in msgs]
            assert got == names, "changes lost, duplicated or out of order"
            seqs = [m["seq"] for m in msgs]
            assert seqs[0] == ack["seq"] + 1, f"ack seq {ack['seq']}, first change seq {seqs[0]}"
            gaps = [(a, b) for a, b in zip(seqs, seqs[1:]) if b != a + 1]
            assert not gaps, f"seq does not increase by exactly one: {gaps[:10]}"
            assert {m["epoch"] for m in msgs} == {c.welcome["epoch"]}
            pong = await c.request({"type": "ping", "id": "end"})
            assert pong["seq"] == seqs[-1], pong
            # one commit marker per transaction (one row each), reusing its change's seq:
            # commits are not counted as gaps, nor do they take numbers of their own
            assert [m["seq"] for m in c.commits] == seqs, "commit markers do not follow changes"
            assert [m["xid"] for m in c.commits] == [m["change"]["xid"] for m in msgs]
        finally:
            await c.close()
    run(body(), timeout=90)


def test_fifty_clients_each_receive_all_thousand_changes():
    clients_n, rows_n = 50, 1000
    prefix = tag()
    names = [f"{prefix}-{i:04d}" for i in range(rows_n)]

    async def body():
        clients = await asyncio.gather(*(Client.open() for _ in range(clients_n)))
        try:
            await asyncio.gather(*(c.subscribe("items", table="public.items") for c in clients))
            writer = asyncio.create_task(asyncio.to_thread(insert_names, names))
            results = await asyncio.gather(
                *(c.pushes("items", rows_n, timeout=60) for c in clients))
            await writer
            for i, msgs in enumerate(results):
                got = [m["change"]["new"]["name"] for m in msgs]
                assert got == names, f"client {i}: changes lost or out of order"
                seqs = [m["seq"] for m in msgs]
                assert seqs == list(range(seqs[0], seqs[0] + rows_n)), f"client {i}: seq gaps"
            firsts = {msgs[0]["seq"] for msgs in results}
            assert len(firsts) == 1, f"clients disagree on seq: {sorted(firsts)[:5]}"
            # nothing extra arrives
            for c in clients:
                await c.sync()
                assert c.kept_pushes() == [], "more changes than rows written"
        finally:
            await asyncio.gather(*(c.close() for c in clients))
    run(body(), timeout=240)
