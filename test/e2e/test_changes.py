"""Table subscriptions: change messages, ops, filters, unsubscribe (docs/PROTOCOL.md)."""

import asyncio
import datetime

import pytest

from conftest import Db, client, connect, run, tag, write_transaction

ITEM_COLUMNS = {"id", "name", "value", "created_at", "updated_at"}


def check_change(m, sub, op, epoch, schema="public", table="items"):
    """Common shape of a change message; returns its change payload."""
    assert m["type"] == "change", m
    assert m["sub"] == sub, m
    assert isinstance(m["seq"], int) and not isinstance(m["seq"], bool), m
    assert m["epoch"] == epoch, m
    ch = m["change"]
    assert ch["schema"] == schema and ch["table"] == table, m
    assert ch["op"] == op, m
    assert isinstance(ch["xid"], int) and ch["xid"] > 0, m
    assert isinstance(ch["n"], int) and ch["n"] >= 1, m
    return ch


def iso(ts):
    assert isinstance(ts, str), ts
    return datetime.datetime.fromisoformat(ts)


def test_insert_update_delete_arrive_as_changes(db):
    name = tag()

    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            ack = await c.subscribe("items", table="public.items")

            rid, xid = (await asyncio.to_thread(
                db.query, "INSERT INTO items (name, value) VALUES (%s, 42) "
                          "RETURNING id, txid_current()", (name,)))[0]
            ins = await c.next_push("items")
            ch = check_change(ins, "items", "INSERT", epoch)
            assert ins["seq"] > ack["seq"]
            assert ch["xid"] == xid and ch["n"] == 1, ins
            assert set(ch["new"]) == ITEM_COLUMNS, ins
            assert ch["new"]["id"] == rid and ch["new"]["name"] == name, ins
            assert ch["new"]["value"] == 42, ins
            iso(ch["new"]["created_at"]), iso(ch["new"]["updated_at"])
            assert "old" not in ch, ins

            xid2 = (await asyncio.to_thread(
                db.query, "UPDATE items SET value = 43 WHERE id = %s RETURNING txid_current()",
                (rid,)))[0][0]
            upd = await c.next_push("items")
            ch = check_change(upd, "items", "UPDATE", epoch)
            assert upd["seq"] > ins["seq"]
            assert ch["xid"] == xid2 and ch["n"] == 1, upd
            assert ch["new"]["id"] == rid and ch["new"]["value"] == 43, upd
            assert iso(ch["new"]["updated_at"]) > iso(ins["change"]["new"]["updated_at"]), upd
            assert ch["old"] == {"id": rid}, upd

            await asyncio.to_thread(db.execute, "DELETE FROM items WHERE id = %s", (rid,))
            dele = await c.next_push("items")
            ch = check_change(dele, "items", "DELETE", epoch)
            assert dele["seq"] > upd["seq"]
            assert ch["old"] == {"id": rid}, dele
            assert "new" not in ch, dele
    run(body())


def test_one_transaction_numbers_its_changes():
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("items", table="public.items")

            xid = await asyncio.to_thread(write_transaction, [
                ("INSERT INTO items (name, value) VALUES (%s, %s)", (name, i)) for i in range(3)])
            msgs = await c.pushes("items", 3)
            assert [m["change"]["n"] for m in msgs] == [1, 2, 3], msgs
            assert {m["change"]["xid"] for m in msgs} == {xid}, msgs
            assert [m["change"]["new"]["value"] for m in msgs] == [0, 1, 2], msgs
            seqs = [m["seq"] for m in msgs]
            assert seqs == list(range(seqs[0], seqs[0] + 3)), seqs
    run(body())


def test_changes_arrive_in_commit_order():
    first, second = tag(), tag()

    async def body():
        async with client() as c:
            await c.subscribe("items", table="public.items")

            def write():
                a, b = connect(autocommit=False), connect(autocommit=False)
                try:
                    with a.cursor() as ca, b.cursor() as cb:
                        ca.execute("INSERT INTO items (name) VALUES (%s)", (second,))
                        cb.execute("INSERT INTO items (name) VALUES (%s)", (first,))
                    b.commit()  # started later, commits first
                    a.commit()
                finally:
                    a.close()
                    b.close()
            await asyncio.to_thread(write)
            msgs = await c.pushes("items", 2)
            assert [m["change"]["new"]["name"] for m in msgs] == [first, second], msgs
            assert msgs[1]["seq"] == msgs[0]["seq"] + 1, msgs
    run(body())


def test_ops_subset_delivers_only_those_ops(db):
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("del", table="public.items", ops=["DELETE"])
            await c.subscribe("all", table="public.items")
            rid = await asyncio.to_thread(db.insert_item, name, 1)
            await asyncio.to_thread(db.execute, "UPDATE items SET value = 2 WHERE id = %s", (rid,))
            await asyncio.to_thread(db.execute, "DELETE FROM items WHERE id = %s", (rid,))
            every = await c.pushes("all", 3)
            assert [m["change"]["op"] for m in every] == ["INSERT", "UPDATE", "DELETE"], every
            await c.sync()
            dels = c.kept_pushes("del")
            assert len(dels) == 1, dels
            assert dels[0]["change"]["op"] == "DELETE" and dels[0]["change"]["old"] == {"id": rid}
            assert dels[0]["seq"] == every[2]["seq"], (dels, every)
    run(body())


def test_ops_insert_and_update_only(db):
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("iu", table="public.items", ops=["INSERT", "UPDATE"])
            await c.subscribe("all", table="public.items")
            rid = await asyncio.to_thread(db.insert_item, name, 1)
            await asyncio.to_thread(db.execute, "UPDATE items SET value = 2 WHERE id = %s", (rid,))
            await asyncio.to_thread(db.execute, "DELETE FROM items WHERE id = %s", (rid,))
            await c.pushes("all", 3)
            await c.sync()
            assert [m["change"]["op"] for m in c.kept_pushes("iu")] == ["INSERT", "UPDATE"]
    run(body())


def test_filter_delivers_only_matching_rows(db):
    name, other, marker = tag(), tag(), tag()

    async def body():
        async with client() as c:
            await c.subscribe("f", table="public.items", filter={"name": name})
            await c.subscribe("all", table="public.items")
            await asyncio.to_thread(db.insert_item, other, 1)
            rid = await asyncio.to_thread(db.insert_item, name, 2)
            await asyncio.to_thread(db.execute, "UPDATE items SET value = 3 WHERE id = %s", (rid,))
            await asyncio.to_thread(db.execute, "UPDATE items SET value = 4 WHERE name = %s", (other,))
            await asyncio.to_thread(db.insert_item, marker, 5)
            await c.change_named("all", marker)
            await c.sync()
            got = c.kept_pushes("f")
            assert [(m["change"]["op"], m["change"]["new"]["name"]) for m in got] == \
                [("INSERT", name), ("UPDATE", name)], got
            assert got[1]["change"]["new"]["value"] == 3, got
    run(body())


def test_filter_compares_json_values(db):
    name, marker = tag(), tag()

    async def body():
        async with client() as c:
            await c.subscribe("num", table="public.items", filter={"name": name, "value": 7})
            await c.subscribe("str", table="public.items", filter={"name": name, "value": "7"})
            await c.subscribe("all", table="public.items")
            await asyncio.to_thread(db.insert_item, name, 8)
            # numeric 7.0 renders as the JSON number 7.0, which equals the filter's 7
            await asyncio.to_thread(db.execute,
                                    "INSERT INTO items (name, value) VALUES (%s, 7.0)", (name,))
            await asyncio.to_thread(db.insert_item, marker)
            await c.change_named("all", marker)
            await c.sync()
            num = c.kept_pushes("num")
            assert len(num) == 1 and num[0]["change"]["new"]["value"] == 7, num
            assert c.kept_pushes("str") == [], "the string \"7\" must not equal the number 7"
    run(body())


def test_filtered_delete_without_column_in_old_is_delivered(db):
    """DELETE with the default replica identity: `old` has only the key, so a filtered
    column missing from it counts as matching (PROTOCOL.md, Filters and row images)."""
    name, other = tag(), tag()

    async def body():
        async with client() as c:
            await c.subscribe("f", table="public.items", filter={"name": name})
            rid = await asyncio.to_thread(db.insert_item, other)
            await asyncio.to_thread(db.execute, "DELETE FROM items WHERE id = %s", (rid,))
            m = await c.next_push("f")
            assert m["change"]["op"] == "DELETE" and m["change"]["old"] == {"id": rid}, m
    run(body())


def test_filtered_delete_with_replica_identity_full(db):
    db.execute("CREATE TABLE IF NOT EXISTS e2e_full (id int PRIMARY KEY, name text)")
    db.execute("ALTER TABLE e2e_full REPLICA IDENTITY FULL")
    db.execute("SELECT plank.track('e2e_full')")
    name, other = tag(), tag()

    async def body():
        async with client() as c:
            await c.subscribe("f", table="public.e2e_full", filter={"name": name},
                              ops=["DELETE"])
            await c.subscribe("all", table="public.e2e_full", ops=["DELETE"])
            base = await asyncio.to_thread(db.scalar, "SELECT coalesce(max(id), 0) FROM e2e_full")
            await asyncio.to_thread(db.execute, "INSERT INTO e2e_full VALUES (%s, %s), (%s, %s)",
                                    (base + 1, other, base + 2, name))
            await asyncio.to_thread(db.execute, "DELETE FROM e2e_full WHERE id = %s", (base + 1,))
            await asyncio.to_thread(db.execute, "DELETE FROM e2e_full WHERE id = %s", (base + 2,))
            await c.pushes("all", 2)
            await c.sync()
            got = c.kept_pushes("f")
            assert len(got) == 1, got
            assert got[0]["change"]["old"] == {"id": base + 2, "name": name}, got
    run(body())


def test_two_subscriptions_each_get_a_copy_with_the_same_seq(db):
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("a", table="public.items")
            await c.subscribe("b", table="items")
            await asyncio.to_thread(db.insert_item, name)
            a = await c.next_push("a")
            b = await c.next_push("b")
            assert a["seq"] == b["seq"], (a, b)
            assert a["change"] == b["change"], (a, b)
            assert a["change"]["new"]["name"] == name
            await c.sync()
            assert c.kept_pushes() == [], "one copy per subscription"
    run(body())


def test_rollback_sends_nothing(db):
    rolled_back, marker = tag(), tag()

    async def body():
        async with client() as c:
            await c.subscribe("items", table="public.items")

            def write():
                conn = connect(autocommit=False)
                try:
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO items (name) VALUES (%s)", (rolled_back,))
                        cur.execute("UPDATE items SET value = value + 1 WHERE name = %s",
                                    (rolled_back,))
                    conn.rollback()
                finally:
                    conn.close()
                db.insert_item(marker)
            await asyncio.to_thread(write)
            m = await c.next_push("items")
            assert m["change"]["op"] == "INSERT" and m["change"]["new"]["name"] == marker, \
                f"the first change after a rolled-back transaction is not the marker: {m}"
    run(body())


def test_unsubscribe_stops_messages(db):
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("a", table="public.items")
            await c.subscribe("b", table="public.items")
            ack = await c.unsubscribe("a")
            assert ack["seq"] >= 0
            c.inbox.clear()
            await asyncio.to_thread(db.insert_item, name)
            m = await c.next_push("b")
            assert m["change"]["new"]["name"] == name
            await c.sync()
            assert c.kept_pushes("a") == [], "a message for an unsubscribed subscription"
            # the id is free again
            await c.subscribe("a", table="public.items")
            await asyncio.to_thread(db.insert_item, name)
            m = await c.next_push("a")
            assert m["change"]["new"]["name"] == name
    run(body())


def test_unqualified_and_quoted_table_names(db):
    db.execute('CREATE TABLE IF NOT EXISTS public."Mixed Case" '
               '(id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "Label" text)')
    db.execute("""SELECT plank.track('public."Mixed Case"')""")
    label = tag()

    async def body():
        async with client() as c:
            await c.subscribe("q", table='"Mixed Case"')
            await c.subscribe("qq", table='public."Mixed Case"')
            err = await c.request({"type": "subscribe", "id": "lower",
                                   "table": "public.mixed case"})
            assert err["type"] == "error" and err["code"] == "unknown_table", err
            await asyncio.to_thread(db.execute,
                                    'INSERT INTO "Mixed Case" ("Label") VALUES (%s)', (label,))
            for sub in ("q", "qq"):
                m = await c.next_push(sub)
                ch = m["change"]
                assert (ch["schema"], ch["table"], ch["op"]) == ("public", "Mixed Case", "INSERT")
                assert ch["new"]["Label"] == label
    run(body())


def test_truncate(db):
    db.execute("CREATE TABLE IF NOT EXISTS e2e_trunc (id int PRIMARY KEY, v text)")
    db.execute("SELECT plank.track('e2e_trunc')")
    next_id = db.scalar("SELECT coalesce(max(id), 0) + 1 FROM e2e_trunc")

    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            await c.subscribe("t", table="public.e2e_trunc", ops=["TRUNCATE"])
            await c.subscribe("noop", table="public.e2e_trunc", ops=["INSERT"],
                              filter={"v": "never"})
            await c.subscribe("all", table="public.e2e_trunc")
            await asyncio.to_thread(db.execute, "INSERT INTO e2e_trunc VALUES (%s, 'x')",
                                    (next_id,))
            await asyncio.to_thread(db.execute, "TRUNCATE e2e_trunc")
            every = await c.pushes("all", 2)
            assert [m["change"]["op"] for m in every] == ["INSERT", "TRUNCATE"], every
            t = await c.next_push("t")
            check_change(t, "t", "TRUNCATE", epoch, table="e2e_trunc")
            assert t["seq"] == every[1]["seq"]
            await c.sync()
            assert c.kept_pushes() == [], c.kept_pushes()
    run(body())


@pytest.mark.parametrize("ops", [["INSERT"], ["INSERT", "UPDATE", "DELETE", "TRUNCATE"]])
def test_ops_accepts_valid_lists(ops):
    async def body():
        async with client() as c:
            await c.subscribe("s", table="public.items", ops=ops)
    run(body())


def test_db_helper_reconnects():
    """Sanity check of the test helper itself."""
    d = Db()
    assert d.scalar("SELECT 1") == 1
    d.close()
    assert d.scalar("SELECT 2") == 2
    d.close()
