"""DDL under live subscriptions: TRUNCATE of a partition of a tracked partitioned table
(sent under the tracked table with the partition named), and tables renamed or moved to
another schema (subscriptions follow the table, get `table_renamed`, then the changes
under the new name). docs/PROTOCOL.md, "Change payload" and "table_renamed".
"""

import asyncio

from conftest import client, connect, run, sql, tag


def make_partitioned(name):
    """A tracked table partitioned by region: name_eu, name_us, and name_as itself
    partitioned by id into name_as1 and name_as2."""
    sql(f"CREATE TABLE public.{name} (id int, region text, PRIMARY KEY (id, region)) "
        f"PARTITION BY LIST (region)")
    sql(f"CREATE TABLE public.{name}_eu PARTITION OF public.{name} FOR VALUES IN ('eu')")
    sql(f"CREATE TABLE public.{name}_us PARTITION OF public.{name} FOR VALUES IN ('us')")
    sql(f"CREATE TABLE public.{name}_as PARTITION OF public.{name} FOR VALUES IN ('as') "
        f"PARTITION BY RANGE (id)")
    sql(f"CREATE TABLE public.{name}_as1 PARTITION OF public.{name}_as FOR VALUES FROM (0) TO (100)")
    sql(f"CREATE TABLE public.{name}_as2 PARTITION OF public.{name}_as FOR VALUES FROM (100) TO (200)")
    sql(f"SELECT plank.track('public.{name}')")


async def truncates(c, sub, count):
    """The next `count` changes of sub, which must all be TRUNCATEs; then nothing more."""
    out = []
    for _ in range(count):
        m = await c.next_push(sub)
        assert m["type"] == "change" and m["change"]["op"] == "TRUNCATE", m
        out.append(m["change"])
    return out


def test_truncate_of_a_partition_names_the_partition():
    name = "e2e_ddl_p_" + tag()
    make_partitioned(name)
    try:
        async def body():
            async with client() as c:
                await c.subscribe("p", table=f"public.{name}")
                # a leaf partition, named directly
                sql(f"TRUNCATE public.{name}_eu")
                [ch] = await truncates(c, "p", 1)
                assert ch["schema"] == "public" and ch["table"] == name, ch
                assert ch["partition"] == {"schema": "public", "table": f"{name}_eu"}, ch
                # a partitioned partition: one change naming it, not one per leaf
                sql(f"TRUNCATE public.{name}_as")
                [ch] = await truncates(c, "p", 1)
                assert ch["table"] == name and ch["partition"] == {"schema": "public", "table": f"{name}_as"}, ch
                # a leaf under it
                sql(f"TRUNCATE public.{name}_as2")
                [ch] = await truncates(c, "p", 1)
                assert ch["partition"] == {"schema": "public", "table": f"{name}_as2"}, ch
                # two partitions in one statement: one change each, in one transaction
                sql(f"TRUNCATE public.{name}_us, public.{name}_as1")
                chs = await truncates(c, "p", 2)
                assert sorted(ch["partition"]["table"] for ch in chs) == [f"{name}_as1", f"{name}_us"], chs
                assert chs[0]["xid"] == chs[1]["xid"], chs
                # the tracked table itself: one change, no partition
                sql(f"TRUNCATE public.{name}")
                [ch] = await truncates(c, "p", 1)
                assert ch["table"] == name and "partition" not in ch, ch
                # a row written afterwards is the next thing the client gets
                sql(f"INSERT INTO public.{name} VALUES (1, 'eu')")
                m = await c.next_push("p")
                assert m["change"]["op"] == "INSERT" and m["change"]["new"] == {"id": 1, "region": "eu"}, m
                await c.sync()
                assert c.kept_pushes() == [], c.kept_pushes()
        run(body())
    finally:
        sql(f"DROP TABLE IF EXISTS public.{name}")


def test_truncate_of_the_table_and_a_partition_in_one_transaction():
    name = "e2e_ddl_q_" + tag()
    make_partitioned(name)
    try:
        async def body():
            async with client() as c:
                await c.subscribe("p", table=f"public.{name}")
                conn = connect(autocommit=False)
                try:
                    with conn.cursor() as cur:
                        cur.execute(f"TRUNCATE public.{name}")
                        cur.execute(f"TRUNCATE public.{name}_eu")  # a later statement: sent again
                    conn.commit()
                finally:
                    conn.close()
                chs = await truncates(c, "p", 2)
                assert "partition" not in chs[0], chs
                assert chs[1]["partition"] == {"schema": "public", "table": f"{name}_eu"}, chs
                await c.sync()
                assert c.kept_pushes() == [], c.kept_pushes()
        run(body())
    finally:
        sql(f"DROP TABLE IF EXISTS public.{name}")


def test_untrack_drops_the_partition_truncate_triggers():
    name = "e2e_ddl_u_" + tag()
    make_partitioned(name)
    try:
        n = sql("SELECT count(*) FROM pg_trigger WHERE tgname = 'plank_partition_truncate' "
                "AND tgrelid IN (SELECT relid FROM pg_partition_tree(%s))", (f"public.{name}",))
        assert n[0][0] == 5, n   # eu, us, as, as1, as2
        sql(f"SELECT plank.untrack('public.{name}')")
        n = sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'plank%%' "
                "AND tgrelid IN (SELECT relid FROM pg_partition_tree(%s))", (f"public.{name}",))
        assert n[0][0] == 0, n
        # operations without TRUNCATE: no truncate trigger on the partitions either
        sql(f"SELECT plank.track('public.{name}', operations => ARRAY['INSERT'])")
        n = sql("SELECT count(*) FROM pg_trigger WHERE tgname LIKE '%%truncate' "
                "AND tgrelid IN (SELECT relid FROM pg_partition_tree(%s))", (f"public.{name}",))
        assert n[0][0] == 0, n
    finally:
        sql(f"DROP TABLE IF EXISTS public.{name}")


def run_each(stmts):
    conn = connect()
    try:
        with conn.cursor() as cur:
            for stmt in stmts:
                cur.execute(stmt)
    finally:
        conn.close()


async def stream_msg(c, sub):
    """The next change or table_renamed of sub."""
    return await c.wait_for(lambda m: m["type"] in ("change", "table_renamed") and m.get("sub") == sub,
                            what=f"a change or table_renamed for {sub}")


async def renamed(c, sub, schema, table):
    m = await c.wait_for(lambda m: m["type"] == "table_renamed" and m.get("sub") == sub,
                         what=f"table_renamed for {sub}")
    assert m == {"type": "table_renamed", "sub": sub, "schema": schema, "table": table}, m
    return m


def rename_scenario(ddl, old_schema, new_schema, new_table_of):
    """Subscribe to old_schema.t, commit an INSERT, ddl(t), and an INSERT right after it
    (each its own transaction): the subscribers get the first INSERT under the old name,
    table_renamed, then the second INSERT and later changes under the new name."""
    t = "e2e_ddl_r_" + tag()
    new_table = new_table_of(t)
    sql(f"CREATE TABLE {old_schema}.{t} (id int PRIMARY KEY, name text)")
    sql(f"SELECT plank.track('{old_schema}.{t}')")
    writer = connect()
    try:
        async def body():
            async with client() as c, client() as other:
                await c.subscribe("s", table=f"{old_schema}.{t}")
                await c.subscribe("f", table=f"{old_schema}.{t}", filter={"name": "b"})
                await other.subscribe("o", table=f"{old_schema}.{t}")
                with writer.cursor() as cur:
                    cur.execute(f"INSERT INTO {old_schema}.{t} VALUES (1, 'a')")
                    cur.execute(ddl(t))
                    # committed right after the rename, before the worker could recheck
                    cur.execute(f"INSERT INTO {new_schema}.{new_table} VALUES (2, 'b')")
                # in this order: the change before, table_renamed, the change after
                for cl, sub in ((c, "s"), (c, "f"), (other, "o")):
                    got = [await stream_msg(cl, sub) for _ in range(2 if sub == "f" else 3)]
                    if sub != "f":
                        first = got.pop(0)["change"]
                        assert first["new"]["id"] == 1, first
                        assert first["schema"] == old_schema and first["table"] == t, first
                    assert got[0] == {"type": "table_renamed", "sub": sub,
                                      "schema": new_schema, "table": new_table}, got
                    ch = got[1]["change"]
                    assert ch["op"] == "INSERT" and ch["new"] == {"id": 2, "name": "b"}, got
                    assert ch["schema"] == new_schema and ch["table"] == new_table, got
                await c.unsubscribe("f")
                # and later changes too
                with writer.cursor() as cur:
                    cur.execute(f"UPDATE {new_schema}.{new_table} SET name = 'c' WHERE id = 2")
                m = await c.next_push("s")
                assert m["change"]["op"] == "UPDATE" and m["change"]["table"] == new_table, m
                # a new subscription under the new name gets the same stream
                await c.subscribe("n", table=f"{new_schema}.{new_table}")
                with writer.cursor() as cur:
                    cur.execute(f"DELETE FROM {new_schema}.{new_table} WHERE id = 1")
                for sub in ("s", "n"):
                    m = await c.next_push(sub)
                    assert m["change"]["op"] == "DELETE" and m["change"]["old"] == {"id": 1}, m
                await c.sync()
                await other.sync()
                assert [m for m in c.inbox if m["type"] != "commit"] == [], list(c.inbox)
        run(body())
    finally:
        writer.close()
        sql(f"DROP TABLE IF EXISTS {new_schema}.{new_table}")
        sql(f"DROP TABLE IF EXISTS {old_schema}.{t}")


def test_rename_table_moves_live_subscriptions():
    rename_scenario(lambda t: f"ALTER TABLE public.{t} RENAME TO {t}_new",
                    "public", "public", lambda t: f"{t}_new")


def test_set_schema_moves_live_subscriptions():
    schema = "e2e_ddl_s_" + tag()
    sql(f"CREATE SCHEMA {schema}")
    try:
        rename_scenario(lambda t: f"ALTER TABLE public.{t} SET SCHEMA {schema}",
                        "public", schema, lambda t: t)
    finally:
        sql(f"DROP SCHEMA {schema} CASCADE")


def test_schema_rename_moves_live_subscriptions():
    schema = "e2e_ddl_a_" + tag()
    sql(f"CREATE SCHEMA {schema}")
    try:
        rename_scenario(lambda t: f"ALTER SCHEMA {schema} RENAME TO {schema}_b",
                        schema, f"{schema}_b", lambda t: t)
    finally:
        sql(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        sql(f"DROP SCHEMA IF EXISTS {schema}_b CASCADE")


def test_changes_before_and_after_a_rename_in_one_burst():
    """Changes committed before the rename and dispatched after the subscription moved
    still arrive (under the old name), and every change after it under the new one."""
    t = "e2e_ddl_b_" + tag()
    sql(f"CREATE TABLE public.{t} (id int PRIMARY KEY)")
    sql(f"SELECT plank.track('public.{t}')")
    try:
        async def body():
            async with client() as c:
                await c.subscribe("s", table=f"public.{t}")
                # a statement of many rows keeps the worker busy while the next ones
                # commit: the rename is then read before the changes committed before it
                stmts = [f"INSERT INTO public.{t} SELECT g FROM generate_series(1, 20000) g"]
                stmts += [f"INSERT INTO public.{t} VALUES ({i})" for i in range(20001, 20051)]
                stmts.append(f"ALTER TABLE public.{t} RENAME TO {t}_x")
                stmts += [f"INSERT INTO public.{t}_x VALUES ({i})" for i in range(20051, 20101)]
                # one transaction each, back to back on one connection
                await asyncio.to_thread(run_each, stmts)
                got = []
                while len(got) < 20100:
                    m = await c.next_push("s", timeout=30)
                    got.append((m["change"]["table"], m["change"]["new"]["id"]))
                assert [i for _, i in got] == list(range(1, 20101)), got[-200:]
                assert all(tb == (t if i <= 20050 else f"{t}_x") for tb, i in got), got[-200:]
                await renamed(c, "s", "public", f"{t}_x")
        run(body(), timeout=120)
    finally:
        sql(f"DROP TABLE IF EXISTS public.{t}_x")
        sql(f"DROP TABLE IF EXISTS public.{t}")


def test_a_new_table_under_the_old_name_is_not_sent_to_the_renamed_ones():
    t = "e2e_ddl_n_" + tag()
    sql(f"CREATE TABLE public.{t} (id int PRIMARY KEY)")
    sql(f"SELECT plank.track('public.{t}')")
    try:
        async def body():
            async with client() as c:
                await c.subscribe("s", table=f"public.{t}")
                sql(f"ALTER TABLE public.{t} RENAME TO {t}_old")
                await renamed(c, "s", "public", f"{t}_old")
                sql(f"INSERT INTO public.{t}_old VALUES (1)")
                m = await c.next_push("s")
                assert m["change"]["new"] == {"id": 1}, m
                sql(f"CREATE TABLE public.{t} (id int PRIMARY KEY)")
                sql(f"SELECT plank.track('public.{t}')")
                await c.subscribe("n", table=f"public.{t}")
                sql(f"INSERT INTO public.{t} VALUES (2)")
                m = await c.next_push("n")
                assert m["change"]["new"] == {"id": 2} and m["change"]["table"] == t, m
                sql(f"INSERT INTO public.{t}_old VALUES (3)")
                m = await c.next_push("s")
                assert m["change"]["new"] == {"id": 3}, m
                await c.sync()
                assert c.kept_pushes() == [], c.kept_pushes()
        run(body())
    finally:
        sql(f"DROP TABLE IF EXISTS public.{t}_old")
        sql(f"DROP TABLE IF EXISTS public.{t}")


def test_resume_across_a_rename():
    """A client away while its table was renamed resumes under the new name and gets what
    it missed: the changes under the old name, then those under the new one (another
    subscriber stayed connected, so the worker saw the rename)."""
    t = "e2e_ddl_m_" + tag()
    sql(f"CREATE TABLE public.{t} (id int PRIMARY KEY)")
    sql(f"SELECT plank.track('public.{t}')")
    try:
        async def body():
            async with client() as stay:
                await stay.subscribe("k", table=f"public.{t}")
                async with client() as c1:
                    epoch = c1.welcome["epoch"]
                    await c1.subscribe("r", table=f"public.{t}")
                    sql(f"INSERT INTO public.{t} VALUES (1)")
                    last = (await c1.next_push("r"))["seq"]
                sql(f"INSERT INTO public.{t} VALUES (2)")
                sql(f"ALTER TABLE public.{t} RENAME TO {t}_y")
                sql(f"INSERT INTO public.{t}_y VALUES (3)")
                await renamed(stay, "k", "public", f"{t}_y")
                live = [(await stay.next_push("k"))["change"] for _ in range(3)]
                assert [ch["new"]["id"] for ch in live] == [1, 2, 3], live
                async with client() as c2:
                    pushed, ack = await c2.request_all(
                        {"type": "subscribe", "id": "r", "table": f"public.{t}_y",
                         "since": {"epoch": epoch, "seq": last}})
                    assert ack["type"] == "ack" and ack["resumed"] is True, (pushed, ack)
                    changes = [m["change"] for m in pushed if m["type"] == "change"]
                    assert [(ch["table"], ch["new"]["id"]) for ch in changes] == \
                        [(t, 2), (f"{t}_y", 3)], pushed
        run(body())
    finally:
        sql(f"DROP TABLE IF EXISTS public.{t}_y")
        sql(f"DROP TABLE IF EXISTS public.{t}")
