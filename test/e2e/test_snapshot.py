"""Subscribe with "snapshot": true: the current matching rows in one snapshot message just
before the ack, with the ack's seq (docs/PROTOCOL.md, "snapshot")."""

import asyncio
import time

from conftest import client, run, sql, tag

ITEM_COLUMNS = {"id", "name", "value", "created_at", "updated_at"}


def insert_rows(db, name, n):
    return [db.insert_item(name, i) for i in range(n)]


def test_snapshot_comes_before_the_ack_with_the_same_seq(db):
    name = tag()
    ids = insert_rows(db, name, 3)
    db.insert_item(tag())  # another row, outside the filter

    async def body():
        async with client() as c:
            ack = await c.subscribe("s", table="public.items", filter={"name": name},
                                    snapshot=True)
            kept = c.kept_pushes("s")
            assert len(kept) == 1 and kept[0]["type"] == "snapshot", \
                f"expected one snapshot message before the ack, got {kept}"
            snap = kept[0]
            assert snap["seq"] == ack["seq"], (snap["seq"], ack)
            assert snap["epoch"] == c.welcome["epoch"]
            assert snap["complete"] is True, snap
            rows = sorted(snap["rows"], key=lambda r: r["id"])
            assert [r["id"] for r in rows] == ids, rows
            assert all(set(r) == ITEM_COLUMNS and r["name"] == name for r in rows), rows
            assert [r["value"] for r in rows] == [0, 1, 2], rows
            c.inbox.clear()

            # changes after the ack follow, with larger seq numbers
            rid = await asyncio.to_thread(db.insert_item, name, 9)
            m = await c.next_push("s")
            assert m["type"] == "change" and m["change"]["new"]["id"] == rid, m
            assert m["seq"] > ack["seq"]
    run(body())


def test_snapshot_rows_match_what_changes_carry(db):
    """Snapshot rows are rendered like the `new` member of changes."""
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("live", table="public.items", filter={"name": name})
            rid = await asyncio.to_thread(db.insert_item, name, 1.5)
            change = await c.next_push("live")
            await c.subscribe("snap", table="public.items", filter={"name": name},
                              snapshot=True)
            snap = c.kept_pushes("snap")[0]
            assert snap["rows"] == [change["change"]["new"]], (snap, change)
            assert snap["rows"][0]["id"] == rid
    run(body())


def test_snapshot_of_no_rows(db):
    async def body():
        async with client() as c:
            await c.subscribe("s", table="public.items", filter={"name": tag()}, snapshot=True)
            snap = c.kept_pushes("s")
            assert len(snap) == 1 and snap[0]["rows"] == [] and snap[0]["complete"] is True, snap
    run(body())


def test_no_snapshot_unless_asked(db):
    async def body():
        async with client() as c:
            await c.subscribe("a", table="public.items")
            await c.subscribe("b", table="public.items", snapshot=False)
            await c.sync()
            assert c.kept_pushes() == [], c.kept_pushes()
    run(body())


def test_snapshot_must_be_boolean():
    async def body():
        async with client() as c:
            r = await c.request({"type": "subscribe", "id": "s", "table": "public.items",
                                 "snapshot": "yes"})
            assert r["type"] == "error" and r["code"] == "invalid_message" and r["id"] == "s", r
            await c.sync()
            assert c.kept_pushes() == [], "no snapshot for a refused subscription"
    run(body())


def test_snapshot_limit(db):
    name = tag()
    insert_rows(db, name, 3)

    async def snapshot():
        async with client() as c:
            await c.subscribe("s", table="public.items", filter={"name": name}, snapshot=True)
            return c.kept_pushes("s")[0]

    sql("ALTER SYSTEM SET plank.snapshot_limit = 2")
    sql("SELECT pg_reload_conf()")
    try:
        deadline = time.monotonic() + 15
        while True:  # the worker applies the setting when it handles SIGHUP: poll, bounded
            snap = run(snapshot())
            if not snap["complete"] or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert snap["complete"] is False, f"plank.snapshot_limit = 2 not applied: {snap}"
        assert len(snap["rows"]) == 2 and all(r["name"] == name for r in snap["rows"]), snap
    finally:
        sql("ALTER SYSTEM RESET plank.snapshot_limit")
        sql("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not run(snapshot())["complete"]:
            time.sleep(0.1)


def test_snapshot_of_a_table_with_columns_named_like_plank_aliases(db):
    """Plank's snapshot query names the row plank_row.*: columns called t, k, plank_row
    or like keywords neither shadow it nor break the filter."""
    t = f"snap_alias_{tag()}"
    sql(f'CREATE TABLE public.{t} (id int PRIMARY KEY, t text, k text, plank_row text, '
        f'"select" int, "n" int)')
    try:
        sql(f"SELECT plank.track('public.{t}')")
        sql(f"INSERT INTO public.{t} VALUES (1, 'a', 'b', 'c', 1, 2), (2, 'x', 'y', 'z', 3, 4)")

        async def body():
            async with client() as c:
                await c.subscribe("all", table=f"public.{t}", snapshot=True)
                rows = sorted(c.kept_pushes("all")[0]["rows"], key=lambda r: r["id"])
                assert rows == [{"id": 1, "t": "a", "k": "b", "plank_row": "c", "select": 1, "n": 2},
                                {"id": 2, "t": "x", "k": "y", "plank_row": "z", "select": 3, "n": 4}], rows
                await c.subscribe("f", table=f"public.{t}", snapshot=True, filter={"t": "x"})
                assert [r["id"] for r in c.kept_pushes("f")[0]["rows"]] == [2]
        run(body())
    finally:
        sql(f"DROP TABLE public.{t}")


def test_ack_follows_the_snapshot_at_its_seq_while_changes_keep_coming(db):
    """A writer commits while the snapshot is read: the ack carries the snapshot's seq and
    comes right after it; changes after that seq follow the ack, none is lost."""
    name = tag()
    ids = insert_rows(db, name, 3)

    async def body():
        async with client() as c:
            stop = asyncio.Event()

            async def write():
                while not stop.is_set():
                    await asyncio.to_thread(db.insert_item, name, 7)
            w = asyncio.create_task(write())
            await asyncio.sleep(0.05)
            await c.send({"type": "subscribe", "id": "s", "table": "public.items",
                          "filter": {"name": name}, "snapshot": True})
            snap = await c.wait_for(lambda m: m["type"] == "snapshot", what="the snapshot")
            first = await c._recv(10)
            assert first["type"] == "ack" and first["seq"] == snap["seq"], (snap["seq"], first)
            await asyncio.sleep(0.3)
            stop.set()
            await w
            last = await asyncio.to_thread(db.insert_item, name, 8)
            await c.wait_for(lambda m: m["type"] == "change" and m["change"]["new"]["id"] == last,
                             what="the last row")
            got = {r["id"] for r in snap["rows"]}
            got |= {m["change"]["new"]["id"] for m in c.kept_pushes("s") if m["type"] == "change"}
            got.add(last)
            every = {r[0] for r in sql("SELECT id FROM public.items WHERE name = %s", (name,))}
            assert every <= got, sorted(every - got)
            assert set(ids) <= got
    run(body())
