"""What differs between the PostgreSQL major versions Plank supports (README "Supported
PostgreSQL versions"): MERGE exists from PostgreSQL 15, where one statement's inserts,
updates and deletes reach clients grouped by kind in one transaction; on 14 the statement
is refused by the server and nothing reaches clients.  From 15 the "plank." prefix of
settings is reserved (MarkGUCPrefixReserved): a misspelt plank.* setting is refused; 14
accepts it as a placeholder.  scripts/test.sh runs this module on
every version whose install tree is present."""

import asyncio

import psycopg2
import pytest

from conftest import Db, client, run, sql, tag


def server_version_num():
    return int(sql("SHOW server_version_num")[0][0])


@pytest.fixture
def merge_table():
    """A tracked table with rows 1 (to update) and 2 (to delete); dropped afterwards."""
    t = f"merge_{tag()}"
    sql(f"CREATE TABLE public.{t} (id int PRIMARY KEY, body text)")
    sql(f"INSERT INTO public.{t} VALUES (1, 'one'), (2, 'two')")
    sql("SELECT plank.track(%s)", (f"public.{t}",))
    try:
        yield t
    finally:
        sql(f"DROP TABLE public.{t}")


MERGE = """MERGE INTO public.{t} AS t
    USING (VALUES (1, 'uno'), (2, NULL), (3, 'tres')) AS s(id, body) ON t.id = s.id
    WHEN MATCHED AND s.body IS NULL THEN DELETE
    WHEN MATCHED THEN UPDATE SET body = s.body
    WHEN NOT MATCHED THEN INSERT VALUES (s.id, s.body)"""


def test_merge_is_captured_from_15_and_refused_on_14(merge_table):
    t = merge_table
    version = server_version_num()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("m", table=f"public.{t}")
            if version < 150000:
                with pytest.raises(psycopg2.errors.SyntaxError):
                    await asyncio.to_thread(sql, MERGE.format(t=t))
                # the next change the subscription gets is this INSERT's
                await asyncio.to_thread(sql, f"INSERT INTO public.{t} VALUES (4, 'four')")
                change = await c.next_event("m")
                assert change["type"] == "change" and change["change"]["op"] == "INSERT", change
                assert change["change"]["new"] == {"id": 4, "body": "four"}, change
                return
            await asyncio.to_thread(sql, MERGE.format(t=t))
            events = await c.events("m", 4)
            changes, commit = events[:3], events[3]
            assert all(e["type"] == "change" for e in changes), events
            got = sorted((e["change"]["op"], (e["change"].get("new") or e["change"]["old"])["id"])
                         for e in changes)
            assert got == [("DELETE", 2), ("INSERT", 3), ("UPDATE", 1)], events
            # one statement, one transaction, closed by one commit
            assert len({e["change"]["xid"] for e in changes}) == 1, events
            assert commit["type"] == "commit" and commit["xid"] == changes[0]["change"]["xid"], events
    run(body())


def test_misspelt_setting_refused_from_15():
    db = Db()
    try:
        if server_version_num() < 150000:
            db.execute("SET plank.no_such_setting = 'x'")
            assert db.scalar("SHOW plank.no_such_setting") == "x"
        else:
            with pytest.raises(psycopg2.errors.InvalidName, match="invalid configuration parameter name"):
                db.execute("SET plank.no_such_setting = 'x'")
    finally:
        db.close()
