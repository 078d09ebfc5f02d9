"""plank.track() options end to end (README "SQL API"): columns, exclude_columns and
operations reach WebSocket subscribers as documented; plank.tracked_tables shows them;
track() says what it did."""

import asyncio
import contextlib

import pytest

from conftest import client, run, sql, tag


@pytest.fixture
def table():
    name = f"ops_track_{tag()}"
    sql(f"CREATE TABLE public.{name} (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
        f"a int, b text, c text)")
    try:
        yield name
    finally:
        with contextlib.suppress(Exception):
            sql(f"DROP TABLE IF EXISTS public.{name}")


def tracked(name):
    r = sql("SELECT table_name::text, schema_name, relname, enabled, operations, columns, "
            "exclude_columns FROM plank.tracked_tables WHERE relname = %s", (name,))
    assert len(r) <= 1, r
    return r[0] if r else None


def insert(name, a, b, c):
    return sql(f"INSERT INTO public.{name} (a, b, c) VALUES (%s, %s, %s) RETURNING id",
               (a, b, c))[0][0]


async def quiet(cl, sub, seconds=0.5):
    await asyncio.sleep(seconds)
    await cl.sync()
    return cl.kept_pushes(sub)


def test_columns_send_only_those_and_the_key(table):
    msg = sql("SELECT plank.track(%s::regclass, columns => '{a}')", (f"public.{table}",))[0][0]
    assert msg == (f"tracking public.{table}: INSERT, UPDATE, DELETE, TRUNCATE; "
                   f"columns: a (and the key)"), msg
    assert tracked(table) == (f"{table}", "public", table, True,
                              ["INSERT", "UPDATE", "DELETE", "TRUNCATE"], ["a"], None), \
        tracked(table)

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{table}")
            rid = insert(table, 7, "secret-b", "secret-c")
            m = await c.next_push("s")
            assert m["type"] == "change" and m["change"]["op"] == "INSERT", m
            assert m["change"]["new"] == {"id": rid, "a": 7}, \
                f"columns => '{{a}}' must send a and the key only: {m['change']}"
            sql(f"UPDATE public.{table} SET a = 8, b = 'x' WHERE id = %s", (rid,))
            m = await c.next_push("s")
            assert m["change"]["op"] == "UPDATE" and m["change"]["new"] == {"id": rid, "a": 8}, m
            assert m["change"]["old"] == {"id": rid}, m
            # a filter on a sent column works
            await c.subscribe("f", table=f"public.{table}", filter={"a": 9})
            insert(table, 1, "no", "no")
            rid9 = insert(table, 9, "yes", "yes")
            m = await c.next_push("f")
            assert m["change"]["new"] == {"id": rid9, "a": 9}, m
    run(body())


def test_exclude_columns_send_all_but_those(table):
    msg = sql("SELECT plank.track(%s::regclass, exclude_columns => '{b,c}')",
              (f"public.{table}",))[0][0]
    assert msg == (f"tracking public.{table}: INSERT, UPDATE, DELETE, TRUNCATE; "
                   f"columns: all but b, c"), msg
    row = tracked(table)
    assert row[5] is None and row[6] == ["b", "c"], row

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{table}")
            rid = insert(table, 3, "hidden", "hidden too")
            m = await c.next_push("s")
            assert m["change"]["new"] == {"id": rid, "a": 3}, m["change"]
    run(body())


def test_operations_choose_what_is_sent_and_tracking_again_replaces_them(table):
    msg = sql("SELECT plank.track(%s::regclass, operations => '{DELETE}')",
              (f"public.{table}",))[0][0]
    assert msg == f"tracking public.{table}: DELETE; columns: all", msg
    row = tracked(table)
    assert row[4] == ["DELETE"] and row[5] is None and row[6] is None, row

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{table}")
            r1 = insert(table, 1, "b1", "c1")             # not sent
            sql(f"UPDATE public.{table} SET a = 2 WHERE id = %s", (r1,))   # not sent
            sql(f"DELETE FROM public.{table} WHERE id = %s", (r1,))        # sent
            m = await c.next_push("s")
            assert m["change"]["op"] == "DELETE" and m["change"]["old"] == {"id": r1}, \
                f"with operations => '{{DELETE}}' the first change must be the DELETE: {m}"
            sql(f"TRUNCATE public.{table}")                 # not sent
            r3 = insert(table, 3, "b3", "c3")
            sql(f"DELETE FROM public.{table} WHERE id = %s", (r3,))
            m = await c.next_push("s")
            assert m["change"]["op"] == "DELETE" and m["change"]["old"] == {"id": r3}, \
                f"TRUNCATE and INSERT are not tracked, the DELETE is: {m}"
            assert not await quiet(c, "s"), c.kept_pushes("s")

            # tracking again replaces the options: now INSERT and TRUNCATE, every column
            msg = sql("SELECT plank.track(%s::regclass, operations => '{truncate,insert}')",
                      (f"public.{table}",))[0][0]
            assert msg == f"tracking public.{table}: INSERT, TRUNCATE; columns: all", msg
            assert tracked(table)[4] == ["INSERT", "TRUNCATE"], tracked(table)
            r4 = insert(table, 4, "b4", "c4")
            sql(f"DELETE FROM public.{table} WHERE id = %s", (r4,))         # not sent now
            sql(f"TRUNCATE public.{table}")
            m = await c.next_push("s")
            assert m["change"]["op"] == "INSERT", m
            assert m["change"]["new"] == {"id": r4, "a": 4, "b": "b4", "c": "c4"}, m
            m = await c.next_push("s")
            assert m["change"]["op"] == "TRUNCATE", f"the DELETE must not be sent: {m}"
            assert not await quiet(c, "s"), c.kept_pushes("s")
    run(body())

    # the default again: every operation, every column
    msg = sql("SELECT plank.track(%s::regclass)", (f"public.{table}",))[0][0]
    assert msg == f"tracking public.{table}: INSERT, UPDATE, DELETE, TRUNCATE; columns: all", msg
    assert tracked(table)[4:] == (["INSERT", "UPDATE", "DELETE", "TRUNCATE"], None, None)
    sql("SELECT plank.untrack(%s::regclass)", (f"public.{table}",))
    assert tracked(table) is None


def test_columns_also_limit_a_full_replica_identity(table):
    """With REPLICA IDENTITY FULL, `old` is the whole row: with columns => '{a}' that is
    a and the key (README: `columns` sends "only those columns (plus the key)"; track()
    says "columns: a (and the key)"). Without the key in `new` and `old` a client cannot
    tell which row an UPDATE or DELETE concerns."""
    sql(f"ALTER TABLE public.{table} REPLICA IDENTITY FULL")
    sql("SELECT plank.track(%s::regclass, columns => '{a}')", (f"public.{table}",))

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{table}", ops=["UPDATE", "DELETE"])
            rid = insert(table, 1, "secret-b", "secret-c")
            sql(f"UPDATE public.{table} SET a = 2 WHERE id = %s", (rid,))
            sql(f"DELETE FROM public.{table} WHERE id = %s", (rid,))
            up = await c.next_push("s")
            de = await c.next_push("s")
            assert up["change"]["op"] == "UPDATE" and de["change"]["op"] == "DELETE", (up, de)
            got = (up["change"].get("new"), up["change"].get("old"), de["change"].get("old"))
            want = ({"id": rid, "a": 2}, {"id": rid, "a": 1}, {"id": rid, "a": 2})
            assert got == want, ("REPLICA IDENTITY FULL + columns => '{a}': "
                                 f"(UPDATE new, UPDATE old, DELETE old) = {got}, expected {want}"
                                 " (the key is missing)")
    run(body())
