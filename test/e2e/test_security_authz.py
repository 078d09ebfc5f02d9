"""Authorization (docs/PROTOCOL.md "What a client may see", docs/SECURITY.md
"Authorization" and "Row-level security"): table and column privileges, row-level
security per role and claims, channel grants, and isolation of a failing check.

The module runs with plank.anonymous_role = '': every client authenticates with a token
naming a role made for the test (`sub` claims tell users of one role apart)."""

import asyncio
import threading

import psycopg2
import pytest

from conftest import ServerLog, connect, poll, run, sql, tag, worker_pids
from helpers import (authed, no_anonymous, res, silent, token)  # noqa: F401

pytestmark = pytest.mark.usefixtures("no_anonymous")

CLAIMS_SUB = "current_setting('request.jwt.claims', true)::jsonb ->> 'sub'"


def changes_of(c, sub):
    return [m for m in c.kept_pushes(sub) if m["type"] == "change"]


async def until_row(c, sub, pred, what, timeout=10):
    """Wait for the change of `sub` whose change object satisfies pred."""
    return await c.wait_for(lambda m: m["type"] == "change" and m.get("sub") == sub
                            and pred(m["change"]), timeout, what=what)


def new_body(body):
    return lambda ch: (ch.get("new") or {}).get("body") == body


# --------------------------------------------------------------------------- table privileges


def test_no_select_privilege_is_unknown_table(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, name text")

    async def body():
        async with authed(token(r)) as c:
            for req in ({"type": "subscribe", "id": "s1", "table": f"public.{t}"},
                        {"type": "subscribe", "id": "s2", "table": t, "snapshot": True},
                        {"type": "subscribe", "id": "s3", "table": f"public.{t}",
                         "filter": {"name": "x"}}):
                reply = await c.request(req)
                assert reply["type"] == "error" and reply["code"] == "unknown_table", (req, reply)
                assert reply.get("id") == req["id"], reply
            # nothing is delivered for a refused subscription
            sql(f"INSERT INTO public.{t} VALUES (1, 'a')")
            await asyncio.sleep(0.5)
            await c.sync()
            assert not c.kept_pushes(), c.kept_pushes()
    run(body())


def test_privilege_through_role_membership(res):
    group = res.role("sec_group")
    member = res.role("sec_member")
    sql(f'GRANT "{group}" TO "{member}"')
    t = res.table("id int PRIMARY KEY, name text")
    sql(f'GRANT SELECT ON public.{t} TO "{group}"')

    async def body():
        async with authed(token(member)) as c:
            await c.subscribe("s", table=f"public.{t}")
            sql(f"INSERT INTO public.{t} VALUES (1, 'via-group')")
            m = await c.next_push("s")
            assert m["change"]["new"] == {"id": 1, "name": "via-group"}, m
    run(body())


def test_schema_without_usage_is_unknown_table(res):
    r = res.role()
    schema = f"sec_schema_{tag()}"
    sql(f"CREATE SCHEMA {schema}")
    try:
        sql(f"CREATE TABLE {schema}.t (id int PRIMARY KEY)")
        sql(f"SELECT plank.track('{schema}.t')")
        sql(f'GRANT SELECT ON {schema}.t TO "{r}"')

        async def body():
            async with authed(token(r)) as c:
                reply = await c.request({"type": "subscribe", "id": "s", "table": f"{schema}.t"})
                assert reply["type"] == "error" and reply["code"] == "unknown_table", reply
            sql(f'GRANT USAGE ON SCHEMA {schema} TO "{r}"')
            async with authed(token(r)) as c:
                await c.subscribe("s", table=f"{schema}.t")
        run(body())
    finally:
        sql(f"DROP SCHEMA {schema} CASCADE")


def test_superuser_token_reads_everything(res):
    t = res.table("id int PRIMARY KEY, secret text")
    sql(f"INSERT INTO public.{t} VALUES (1, 's1')")

    async def body():
        async with authed(token("postgres")) as c:
            await c.subscribe("s", table=f"public.{t}", snapshot=True)
            snap = c.kept_pushes("s")[0]
            assert snap["rows"] == [{"id": 1, "secret": "s1"}], snap
    run(body())


def test_unknown_and_forbidden_tables_answer_alike(res):
    """No oracle: a table that does not exist, one the role may not read, one in a schema
    it has no USAGE on, an untracked one it may not read and an index all answer
    unknown_table with the same message (but for the name); the server log says why.
    Only a table the role may read can be untracked_table."""
    r = res.role()
    forbidden = res.table("id int PRIMARY KEY, name text")
    readable_untracked = f"sec_untracked_{tag()}"
    hidden_untracked = f"sec_untracked_{tag()}"
    schema = f"sec_schema_{tag()}"
    sql(f"CREATE TABLE public.{readable_untracked} (id int)")
    sql(f"CREATE TABLE public.{hidden_untracked} (id int)")
    sql(f'GRANT SELECT ON public.{readable_untracked} TO "{r}"')
    sql(f"CREATE SCHEMA {schema}")
    log = ServerLog()
    try:
        sql(f"CREATE TABLE {schema}.t (id int PRIMARY KEY)")
        sql(f"SELECT plank.track('{schema}.t')")
        sql(f'GRANT SELECT ON {schema}.t TO "{r}"')
        names = {
            "missing": f"public.sec_missing_{tag()}",
            "forbidden": f"public.{forbidden}",
            "no_usage": f"{schema}.t",
            "hidden_untracked": f"public.{hidden_untracked}",
            "index": f"public.{forbidden}_pkey",
            "missing_schema": f"sec_missing_{tag()}.t",
        }

        async def body():
            async with authed(token(r)) as c:
                shapes = {}
                for what, name in names.items():
                    for filt in (None, {"id": 1}, {"nope": 1}):
                        req = {"type": "subscribe", "id": "s", "table": name, "snapshot": True}
                        if filt is not None:
                            req["filter"] = filt
                        reply = await c.request(req)
                        assert reply["type"] == "error" and reply["code"] == "unknown_table", \
                            (what, filt, reply)
                        shapes[(what, str(filt))] = reply["message"].replace(name, "NAME")
                assert len(set(shapes.values())) == 1, shapes
                reply = await c.request({"type": "subscribe", "id": "u",
                                         "table": f"public.{readable_untracked}"})
                assert reply["type"] == "error" and reply["code"] == "untracked_table", reply
        run(body())
        poll(lambda: f'plank refused table "public.{forbidden}" to role {r}: the role may not SELECT'
             in log.text(), 5, what="the true reason in the server log")
        text = log.text()
        assert f'plank refused table "{names["missing"]}" to role {r}: it does not exist' in text
        assert f'plank refused table "{schema}.t" to role {r}: the role has no USAGE' in text
    finally:
        sql(f"DROP SCHEMA {schema} CASCADE")
        sql(f"DROP TABLE public.{readable_untracked}, public.{hidden_untracked}")


def test_unknown_and_forbidden_columns_answer_alike(res):
    """A filter on a column the table lacks and one on a column the role may not read
    answer the same code and message shape; on a table the role may not read at all,
    any filter answers unknown_table (no probing of its columns)."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, name text, secret text")
    hidden = res.table("id int PRIMARY KEY, secret text")
    sql(f'GRANT SELECT (id, name) ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r)) as c:
            shapes = set()
            for col in ("secret", "no_such_column", "ctid", "xmin"):
                reply = await c.request({"type": "subscribe", "id": "f", "table": f"public.{t}",
                                         "filter": {col: "x"}})
                assert reply["type"] == "error" and reply["code"] == "bad_filter", (col, reply)
                shapes.add(reply["message"].replace(col, "COL"))
            assert len(shapes) == 1, shapes
            for col in ("secret", "no_such_column"):
                reply = await c.request({"type": "subscribe", "id": "h", "table": f"public.{hidden}",
                                         "filter": {col: "x"}})
                assert reply["type"] == "error" and reply["code"] == "unknown_table", (col, reply)
    run(body())


# --------------------------------------------------------------------------- column privileges


def test_column_privileges_restrict_changes_and_snapshots(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, name text, secret text, note text")
    sql(f'GRANT SELECT (id, name) ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} VALUES (1, 'one', 'hidden-1', 'n1')")

    async def body():
        async with authed(token(r)) as c:
            await c.subscribe("s", table=f"public.{t}", snapshot=True)
            snap = c.kept_pushes("s")[0]
            assert snap["type"] == "snapshot", snap
            assert snap["rows"] == [{"id": 1, "name": "one"}], snap
            c.inbox.clear()

            sql(f"INSERT INTO public.{t} VALUES (2, 'two', 'hidden-2', 'n2')")
            sql(f"UPDATE public.{t} SET name = 'two!', secret = 'hidden-3' WHERE id = 2")
            sql(f"DELETE FROM public.{t} WHERE id = 2")
            ins, upd, dele = await c.pushes("s", 3)
            assert ins["change"]["op"] == "INSERT" and ins["change"]["new"] == {"id": 2, "name": "two"}, ins
            assert upd["change"]["op"] == "UPDATE", upd
            assert upd["change"]["new"] == {"id": 2, "name": "two!"}, upd
            assert upd["change"].get("old") == {"id": 2}, upd
            assert dele["change"]["op"] == "DELETE" and dele["change"]["old"] == {"id": 2}, dele
            for m in (ins, upd, dele):
                assert "hidden" not in str(m) and "n2" not in str(m), m
    run(body())


def test_column_privileges_with_replica_identity_full(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, name text, secret text")
    sql(f"ALTER TABLE public.{t} REPLICA IDENTITY FULL")
    sql(f'GRANT SELECT (id, name) ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} VALUES (1, 'one', 'hidden-1')")

    async def body():
        async with authed(token(r)) as c:
            await c.subscribe("s", table=f"public.{t}")
            sql(f"UPDATE public.{t} SET name = 'uno' WHERE id = 1")
            sql(f"DELETE FROM public.{t} WHERE id = 1")
            upd, dele = await c.pushes("s", 2)
            assert upd["change"]["old"] == {"id": 1, "name": "one"}, upd
            assert upd["change"]["new"] == {"id": 1, "name": "uno"}, upd
            assert dele["change"]["old"] == {"id": 1, "name": "uno"}, dele
    run(body())


def test_filter_on_a_hidden_column_is_bad_filter(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, name text, secret text")
    sql(f'GRANT SELECT (id, name) ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r)) as c:
            for filt in ({"secret": "x"}, {"name": "a", "secret": "x"}, {"secret": None}):
                reply = await c.request({"type": "subscribe", "id": "f", "table": f"public.{t}",
                                         "filter": filt, "snapshot": True})
                assert reply["type"] == "error" and reply["code"] == "bad_filter", (filt, reply)
            # a filter on a visible column works
            await c.subscribe("ok", table=f"public.{t}", filter={"name": "b"})
            sql(f"INSERT INTO public.{t} VALUES (1, 'a', 's'), (2, 'b', 's')")
            m = await c.next_push("ok")
            assert m["change"]["new"] == {"id": 2, "name": "b"}, m
            await asyncio.sleep(0.3)
            await c.sync()
            assert not c.kept_pushes("ok"), c.kept_pushes("ok")
    run(body())


# --------------------------------------------------------------------------- row-level security


def rls_table(res, role, columns="id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                                 "owner text NOT NULL, body text", policy=None):
    t = res.table(columns)
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING "
        f"({policy or f'owner = {CLAIMS_SUB}'})")
    sql(f'GRANT SELECT ON public.{t} TO "{role}"')
    return t


def insert(t, owner, body):
    return sql(f"INSERT INTO public.{t} (owner, body) VALUES (%s, %s) RETURNING id",
               (owner, body))[0][0]


def test_rls_each_user_receives_only_own_rows(res):
    r = res.role()
    t = rls_table(res, r)
    insert(t, "alice", "a-old")
    insert(t, "bob", "b-old")

    async def body():
        async with authed(token(r, sub="alice")) as alice, authed(token(r, sub="bob")) as bob:
            await alice.subscribe("s", table=f"public.{t}", snapshot=True)
            await bob.subscribe("s", table=f"public.{t}", snapshot=True)
            snap_a = alice.kept_pushes("s")[0]
            snap_b = bob.kept_pushes("s")[0]
            assert [row["body"] for row in snap_a["rows"]] == ["a-old"], snap_a
            assert [row["body"] for row in snap_b["rows"]] == ["b-old"], snap_b
            alice.inbox.clear()
            bob.inbox.clear()

            insert(t, "bob", "b1")
            insert(t, "alice", "a1")
            insert(t, "carol", "c1")
            insert(t, "alice", "a-end")
            insert(t, "bob", "b-end")
            await until_row(alice, "s", new_body("a-end"), "alice's last row")
            await until_row(bob, "s", new_body("b-end"), "bob's last row")
            got_a = [m["change"]["new"]["body"] for m in changes_of(alice, "s")]
            got_b = [m["change"]["new"]["body"] for m in changes_of(bob, "s")]
            assert got_a == ["a1"], f"alice received {got_a}"
            assert got_b == ["b1"], f"bob received {got_b}"
    run(body())


def test_rls_update_moving_a_row_between_users(res):
    r = res.role()
    t = rls_table(res, r)
    row = insert(t, "alice", "moving")

    async def body():
        async with authed(token(r, sub="alice")) as alice, authed(token(r, sub="bob")) as bob:
            await alice.subscribe("s", table=f"public.{t}")
            await bob.subscribe("s", table=f"public.{t}")
            sql(f"UPDATE public.{t} SET owner = 'bob', body = 'moved' WHERE id = %s", (row,))

            m = await bob.next_push("s")
            ch = m["change"]
            assert ch["op"] == "UPDATE" and ch.get("visible", True) is not False, m
            assert ch["new"] == {"id": row, "owner": "bob", "body": "moved"}, m

            m = await alice.next_push("s")
            ch = m["change"]
            assert ch["op"] == "UPDATE" and ch.get("visible") is False, m
            assert ch.get("key") == {"id": row}, m
            assert "new" not in ch and "old" not in ch, m
            assert "moved" not in str(m) and "bob" not in str(m), m

            # and back: alice sees it again with its new row, bob gets the marker
            sql(f"UPDATE public.{t} SET owner = 'alice', body = 'back' WHERE id = %s", (row,))
            m = await alice.next_push("s")
            assert m["change"]["new"] == {"id": row, "owner": "alice", "body": "back"}, m
            m = await bob.next_push("s")
            assert m["change"].get("visible") is False and m["change"]["key"] == {"id": row}, m
            assert "back" not in str(m), m
    run(body())


def test_rls_delete_carries_only_the_key(res):
    r = res.role()
    t = rls_table(res, r)
    row = insert(t, "alice", "to-delete")

    async def body():
        async with authed(token(r, sub="alice")) as alice, authed(token(r, sub="bob")) as bob:
            await alice.subscribe("s", table=f"public.{t}")
            await bob.subscribe("s", table=f"public.{t}")
            sql(f"DELETE FROM public.{t} WHERE id = %s", (row,))
            m = await alice.next_push("s")
            assert m["change"]["op"] == "DELETE", m
            assert m["change"]["old"] == {"id": row}, m
            assert "new" not in m["change"], m
            # decided on the deleted row: bob could not see it, he learns nothing
            assert await silent(bob, "s", 0.5) == []
    run(body())


IDENTITIES = {
    # a primary key and REPLICA IDENTITY FULL: "old" of a change holds every column
    "replica-identity-full": ("id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, "
                              "owner text NOT NULL, body text", "REPLICA IDENTITY FULL"),
    # no key at all: "old" holds every column (PROTOCOL.md, "Change payload")
    "no-key": ("id bigint GENERATED ALWAYS AS IDENTITY, owner text NOT NULL, body text", None),
}


def identity_table(res, role, which):
    columns, identity = IDENTITIES[which]
    t = rls_table(res, role, columns=columns)
    if identity:
        sql(f"ALTER TABLE public.{t} {identity}")
    return t


@pytest.mark.parametrize("which", list(IDENTITIES))
def test_rls_delete_never_carries_hidden_columns(res, which):
    """SECURITY.md, Row-level security, DELETE: "the change with old reduced to the key
    columns (never the other columns of a REPLICA IDENTITY FULL old row)"."""
    r = res.role()
    t = identity_table(res, r, which)
    row = insert(t, "alice", "alice-secret-body")

    async def body():
        async with authed(token(r, sub="alice")) as alice, authed(token(r, sub="bob")) as bob:
            await alice.subscribe("s", table=f"public.{t}")
            await bob.subscribe("s", table=f"public.{t}")
            sql(f"DELETE FROM public.{t} WHERE id = %s", (row,))
            m = await alice.next_push("s")
            assert m["change"]["op"] == "DELETE", m
            old = m["change"].get("old")
            assert "alice-secret-body" not in str(m) and "owner" not in (old or {}), \
                f"the deleted row's other columns were sent: old = {old}"
            if which == "replica-identity-full":
                assert old == {"id": row}, m
            assert await silent(bob, "s", 0.5) == [], "bob received a delete of alice's row"
    run(body())


@pytest.mark.parametrize("which", list(IDENTITIES))
def test_rls_update_marker_carries_only_the_key(res, which):
    """SECURITY.md, Row-level security, UPDATE: a row the role does not see is sent as
    {"op":"UPDATE","visible":false,"key":{...}} -- "it learns only the key"."""
    r = res.role()
    t = identity_table(res, r, which)
    row = insert(t, "alice", "first")

    async def body():
        async with authed(token(r, sub="alice")) as alice, authed(token(r, sub="bob")) as bob:
            await alice.subscribe("s", table=f"public.{t}")
            await bob.subscribe("s", table=f"public.{t}")
            # the row moves from alice to carol: alice could see it, no longer can
            sql(f"UPDATE public.{t} SET owner = 'carol', body = 'carol-private-text' WHERE id = %s",
                (row,))
            m = await alice.next_push("s")
            ch = m["change"]
            assert ch["op"] == "UPDATE" and ch.get("visible") is False, m
            assert "carol" not in str(m) and "owner" not in (ch.get("key") or {}), \
                f"alice's marker for carol's row carries {ch.get('key')}"
            if which == "replica-identity-full":
                assert ch.get("key") == {"id": row}, m
            assert await silent(bob, "s", 0.5) == [], "bob received an update of rows he never saw"
    run(body())


def test_rls_filter_does_not_reveal_columns_of_rows_the_role_cannot_see(res):
    """SECURITY.md: for an UPDATE of a row the role does not see, "it learns only the
    key". A filter on a column of such a row must then not tell the client whether the
    row's hidden values match: both updates below must look the same to bob."""
    r = res.role()
    t = rls_table(res, r)
    row1 = insert(t, "bob", "x")
    row2 = insert(t, "bob", "y")

    async def body():
        async with authed(token(r, sub="bob")) as bob:
            await bob.subscribe("guess", table=f"public.{t}", filter={"body": "pin-1234"})
            await bob.subscribe("all", table=f"public.{t}")
            # both rows move to alice: bob gets markers, and learns nothing of their values
            sql(f"UPDATE public.{t} SET owner = 'alice', body = 'pin-1234' WHERE id = %s", (row1,))
            sql(f"UPDATE public.{t} SET owner = 'alice', body = 'pin-9999' WHERE id = %s", (row2,))
            # both updates reach "all" (as markers); then whatever "guess" got is there
            await bob.pushes("all", 2)
            await asyncio.sleep(0.3)
            await bob.sync()
            keys = sorted(m["change"].get("key", {}).get("id") for m in bob.kept_pushes("guess"))
            assert keys in ([], [row1, row2]), \
                (f"the filter on alice's hidden column tells bob which row holds 'pin-1234': "
                 f"markers for rows {keys} (row {row1} has it, row {row2} does not)")
    run(body())


def test_rls_claims_groups_share_a_role_but_not_visibility(res):
    """Three users of one role, two of them with the same claims: one check per group,
    and each group gets its own answer."""
    r = res.role()
    t = rls_table(res, r)

    async def body():
        async with authed(token(r, sub="alice")) as a1, authed(token(r, sub="alice")) as a2, \
                authed(token(r, sub="bob")) as b:
            for c in (a1, a2, b):
                await c.subscribe("s", table=f"public.{t}")
            insert(t, "alice", "for-alice")
            insert(t, "bob", "for-bob")
            for c in (a1, a2):
                m = await c.next_push("s")
                assert m["change"]["new"]["body"] == "for-alice", m
            m = await b.next_push("s")
            assert m["change"]["new"]["body"] == "for-bob", m
            for c in (a1, a2):
                await asyncio.sleep(0.2)
                await c.sync()
                assert not c.kept_pushes("s"), c.kept_pushes("s")
    run(body())


def test_rls_table_owner_and_bypassrls_see_everything(res):
    owner = res.role("sec_owner")
    bypass = res.role("sec_bypass", "NOLOGIN BYPASSRLS")
    t = rls_table(res, bypass)
    sql(f'ALTER TABLE public.{t} OWNER TO "{owner}"')

    async def body():
        async with authed(token(owner, sub="nobody")) as o, authed(token(bypass, sub="nobody")) as b:
            await o.subscribe("s", table=f"public.{t}")
            await b.subscribe("s", table=f"public.{t}")
            insert(t, "alice", "seen-by-all")
            for c in (o, b):
                m = await c.next_push("s")
                assert m["change"]["new"]["body"] == "seen-by-all", m
    run(body())


def test_rls_failing_check_hides_the_change_from_that_group_only(res):
    r = res.role()
    # 1/(length(owner) - length(owner)) cannot be folded at plan time: it fails per row
    t = rls_table(res, r, policy=(f"CASE WHEN {CLAIMS_SUB} = 'boom' "
                                  "THEN 1/(length(owner) - length(owner)) = 1 ELSE true END"))
    pid = worker_pids()

    async def body():
        async with authed(token(r, sub="boom")) as boom, authed(token(r, sub="ok")) as ok:
            await boom.subscribe("s", table=f"public.{t}")
            await ok.subscribe("s", table=f"public.{t}")
            insert(t, "someone", "b1")
            insert(t, "someone", "b2")
            await until_row(ok, "s", new_body("b1"), "b1 for ok")
            await until_row(ok, "s", new_body("b2"), "b2 for ok")
            await asyncio.sleep(0.5)
            pong = await boom.sync()
            assert pong["type"] == "pong"
            assert not boom.kept_pushes("s"), boom.kept_pushes("s")
    run(body())
    assert worker_pids() == pid, "the worker restarted"


def test_failing_snapshot_check_does_not_leave_the_worker_acting_as_the_client(res):
    """A snapshot whose policy raises is an error for that request only; the worker goes
    back to its own user (a later client's privileges are its own, not the failed
    client's, and the superuser still reads what it may)."""
    r = res.role()
    t = rls_table(res, r, policy=(f"CASE WHEN {CLAIMS_SUB} = 'boom' "
                                  "THEN 1/(length(owner) - length(owner)) = 1 ELSE true END"))
    insert(t, "x", "row")
    secret = res.table("id int PRIMARY KEY, s text")
    sql(f"INSERT INTO public.{secret} VALUES (1, 'top')")
    pid = worker_pids()

    async def body():
        async with authed(token(r, sub="boom")) as boom:
            reply = await boom.request({"type": "subscribe", "id": "s", "table": f"public.{t}",
                                        "snapshot": True})
            assert reply["type"] == "error" and reply["code"] == "snapshot_failed", reply
            reply = await boom.request({"type": "subscribe", "id": "x", "table": f"public.{secret}"})
            assert reply["type"] == "error" and reply["code"] == "unknown_table", reply
        async with authed(token("postgres")) as su:
            await su.subscribe("x", table=f"public.{secret}", snapshot=True)
            assert su.kept_pushes("x")[0]["rows"] == [{"id": 1, "s": "top"}]
        async with authed(token(r, sub="ok")) as ok:
            await ok.subscribe("s", table=f"public.{t}", snapshot=True)
            assert [x["body"] for x in ok.kept_pushes("s")[0]["rows"]] == ["row"]
    run(body())
    assert worker_pids() == pid


def test_rls_snapshot_as_the_role(res):
    r = res.role()
    t = rls_table(res, r)
    for i in range(5):
        insert(t, "alice", f"a{i}")
        insert(t, "bob", f"b{i}")

    async def body():
        async with authed(token(r, sub="bob")) as bob, authed(token(r, sub="nobody")) as nobody, \
                authed(token(r)) as no_sub:
            await bob.subscribe("s", table=f"public.{t}", snapshot=True, filter={"owner": "alice"})
            await nobody.subscribe("s", table=f"public.{t}", snapshot=True)
            await no_sub.subscribe("s", table=f"public.{t}", snapshot=True)
            assert bob.kept_pushes("s")[0]["rows"] == [], bob.kept_pushes("s")
            assert nobody.kept_pushes("s")[0]["rows"] == [], nobody.kept_pushes("s")
            assert no_sub.kept_pushes("s")[0]["rows"] == [], no_sub.kept_pushes("s")
            await bob.subscribe("mine", table=f"public.{t}", snapshot=True)
            rows = bob.kept_pushes("mine")[0]["rows"]
            assert sorted(x["body"] for x in rows) == [f"b{i}" for i in range(5)], rows
    run(body())


# --------------------------------------------------------------------------- privilege changes
# docs/SECURITY.md "Privilege changes on live subscriptions": a change of privileges, row-level
# security, policies or roles applies to existing subscriptions. Worker 0 applies the catalog
# changes committed before a batch of changes before it dispatches that batch, so a change
# written after the privilege change is never sent under the old privileges; with no writes,
# a timer finds the change within half a second.


async def sub_error(c, sub, timeout=5):
    """The error pushed when the server ends subscription `sub` (it has "sub", no "id")."""
    m = await c.wait_for(lambda m: m["type"] == "error" and m.get("sub") == sub, timeout,
                         what=f"the error ending subscription {sub!r}")
    assert "id" not in m and isinstance(m.get("message"), str), m
    return m


async def witness(c, t, sub="w", body="witness"):
    """A legitimate client keeps receiving: insert a row and wait for it on c."""
    sql(f"INSERT INTO public.{t} (body) VALUES (%s)", (body,))
    return await until_row(c, sub, new_body(body), f"the witness row {body!r}")


def test_revoked_select_stops_delivery_on_existing_subscriptions(res):
    """After REVOKE SELECT the role is not sent new rows of the table (its connection may
    live as long as its token, or forever without exp): the subscription ends with an error
    naming it, the connection stays open, and another role keeps receiving."""
    r = res.role()
    other = res.role("sec_other")
    t = res.table("id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{r}", "{other}"')

    async def body():
        async with authed(token(r)) as c, authed(token(other)) as o:
            await c.subscribe("s", table=f"public.{t}")
            await o.subscribe("w", table=f"public.{t}")
            sql(f"INSERT INTO public.{t} (body) VALUES ('before')")
            await c.next_push("s")
            sql(f'REVOKE SELECT ON public.{t} FROM "{r}"')
            sql(f"INSERT INTO public.{t} (body) VALUES ('after-revoke')")
            await until_row(o, "w", new_body("after-revoke"), "the row on the other client")
            err = await sub_error(c, "s")
            assert err["code"] == "permission_denied" and t in err["message"], err
            await witness(o, t)
            await asyncio.sleep(0.5)
            await c.sync()
            assert not c.kept_pushes("s"), f"still delivered after REVOKE: {c.kept_pushes('s')}"
            # the subscription is gone, the connection is not
            reply = await c.request({"type": "unsubscribe", "id": "s"})
            assert reply["type"] == "error" and reply["code"] == "unknown_subscription", reply
    run(body())


def test_revoke_without_writes_ends_the_subscription_within_a_second(res):
    """No change is written after the REVOKE: the worker's timer finds it."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r)) as c:
            await c.subscribe("s", table=f"public.{t}")
            sql(f'REVOKE SELECT ON public.{t} FROM "{r}"')
            err = await sub_error(c, "s", timeout=1.5)
            assert err["code"] == "permission_denied", err
    run(body())


def test_rls_enabled_after_subscribe_applies(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r, sub="bob")) as c:
            await c.subscribe("s", table=f"public.{t}")
            sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
            sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
            sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 'alice-only')")
            sql(f"INSERT INTO public.{t} VALUES (2, 'bob', 'bob-own')")
            m = await until_row(c, "s", new_body("bob-own"), "bob's own row")
            await asyncio.sleep(0.5)
            await c.sync()
            got = [m["change"]["new"]["body"] for m in changes_of(c, "s")]
            assert got == [], f"alice's row delivered to bob: {got}"
    run(body())


def test_column_revoke_and_grant_apply_to_live_subscriptions(res):
    r = res.role()
    other = res.role("sec_other")
    t = res.table("id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text, secret text")
    sql(f'GRANT SELECT (id, body, secret) ON public.{t} TO "{r}"')
    sql(f'GRANT SELECT ON public.{t} TO "{other}"')

    def ins(b):
        sql(f"INSERT INTO public.{t} (body, secret) VALUES (%s, 'x')", (b,))

    async def body():
        async with authed(token(r)) as c, authed(token(other)) as o:
            await c.subscribe("s", table=f"public.{t}")
            await o.subscribe("w", table=f"public.{t}")
            ins("all-three")
            m = await until_row(c, "s", new_body("all-three"), "the first row")
            assert set(m["change"]["new"]) == {"id", "body", "secret"}, m

            # a column REVOKE: the column disappears from later changes
            sql(f'REVOKE SELECT (secret) ON public.{t} FROM "{r}"')
            ins("no-secret")
            m = await until_row(c, "s", new_body("no-secret"), "the row after the REVOKE")
            assert set(m["change"]["new"]) == {"id", "body"}, m
            m = await until_row(o, "w", new_body("no-secret"), "the other client's row")
            assert m["change"]["new"]["secret"] == "x", m

            # a column GRANT: the column appears again
            sql(f'GRANT SELECT (secret) ON public.{t} TO "{r}"')
            ins("secret-again")
            m = await until_row(c, "s", new_body("secret-again"), "the row after the GRANT")
            assert set(m["change"]["new"]) == {"id", "body", "secret"}, m

            # SELECT on the whole table, then only some columns (in one transaction)
            sql(f'GRANT SELECT ON public.{t} TO "{r}"')
            sql(f'REVOKE SELECT ON public.{t} FROM "{r}"; '
                f'GRANT SELECT (id, body) ON public.{t} TO "{r}"')
            ins("two-columns")
            m = await until_row(c, "s", new_body("two-columns"), "the row of two columns")
            assert set(m["change"]["new"]) == {"id", "body"}, m
            await witness(o, t)
    run(body())


def test_filter_on_a_revoked_column_ends_the_subscription(res):
    r = res.role()
    other = res.role("sec_other")
    t = res.table("id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text, secret text")
    sql(f'GRANT SELECT (id, body, secret) ON public.{t} TO "{r}"')
    sql(f'GRANT SELECT ON public.{t} TO "{other}"')

    async def body():
        async with authed(token(r)) as c, authed(token(other)) as o:
            await c.subscribe("s", table=f"public.{t}", filter={"secret": "x"})
            await o.subscribe("w", table=f"public.{t}")
            sql(f'REVOKE SELECT (secret) ON public.{t} FROM "{r}"')
            sql(f"INSERT INTO public.{t} (body, secret) VALUES ('probe', 'x')")
            err = await sub_error(c, "s")
            assert err["code"] == "permission_denied" and "secret" in err["message"], err
            await witness(o, t)
            await c.sync()
            assert not c.kept_pushes("s"), c.kept_pushes("s")
    run(body())


def test_disable_and_force_row_level_security_apply_to_live_subscriptions(res):
    reader = res.role()
    owner = res.role("sec_owner")
    t = rls_table(res, reader)
    sql(f'ALTER TABLE public.{t} OWNER TO "{owner}"')

    async def body():
        async with authed(token(reader, sub="bob")) as c, \
                authed(token(owner, sub="bob")) as o:
            await c.subscribe("s", table=f"public.{t}")
            await o.subscribe("s", table=f"public.{t}")

            async def round_(tag_, reader_sees, owner_sees):
                """Insert alice's row, then bob's; each client must get bob's; alice's
                only where stated."""
                insert(t, "alice", f"alice-{tag_}")
                insert(t, "bob", f"bob-{tag_}")
                for cl, sees in ((c, reader_sees), (o, owner_sees)):
                    await until_row(cl, "s", new_body(f"bob-{tag_}"), f"bob's row {tag_}")
                    got = [m["change"]["new"]["body"] for m in changes_of(cl, "s")]
                    assert got == ([f"alice-{tag_}"] if sees else []), (tag_, cl is o, got)
                    cl.inbox.clear()

            # RLS on, the owner is exempt
            await round_("on", reader_sees=False, owner_sees=True)
            # FORCE: the owner too
            sql(f"ALTER TABLE public.{t} FORCE ROW LEVEL SECURITY")
            await round_("forced", reader_sees=False, owner_sees=False)
            sql(f"ALTER TABLE public.{t} NO FORCE ROW LEVEL SECURITY")
            await round_("unforced", reader_sees=False, owner_sees=True)
            # DISABLE: nobody is filtered
            sql(f"ALTER TABLE public.{t} DISABLE ROW LEVEL SECURITY")
            await round_("off", reader_sees=True, owner_sees=True)
            sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
            await round_("on-again", reader_sees=False, owner_sees=True)
            # BYPASSRLS granted to the reader's role, then taken away
            sql(f'ALTER ROLE "{reader}" BYPASSRLS')
            await round_("bypass", reader_sees=True, owner_sees=True)
            sql(f'ALTER ROLE "{reader}" NOBYPASSRLS')
            await round_("nobypass", reader_sees=False, owner_sees=True)
    run(body())


def test_created_and_dropped_policies_narrow_live_subscriptions(res):
    """Policies are evaluated per change, so a new or dropped policy applies to the next
    change without any recheck; this guards that it stays so (with policies cached per
    role and claims, the cache must follow the catalog)."""
    r = res.role()
    t = rls_table(res, r, policy="true")

    async def body():
        async with authed(token(r, sub="bob")) as c, authed(token(r, sub="alice")) as a:
            await c.subscribe("s", table=f"public.{t}")
            await a.subscribe("s", table=f"public.{t}")
            insert(t, "alice", "open")
            for cl in (c, a):
                await until_row(cl, "s", new_body("open"), "the row everyone sees")
            # replace the open policy by a narrow one
            sql(f"CREATE POLICY mine ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB}); "
                f"DROP POLICY own ON public.{t}")
            insert(t, "alice", "alice-narrow")
            insert(t, "bob", "bob-narrow")
            await until_row(c, "s", new_body("bob-narrow"), "bob's row")
            await until_row(a, "s", new_body("alice-narrow"), "alice's row")
            await a.sync()
            await c.sync()
            assert [m["change"]["new"]["body"] for m in changes_of(c, "s")] == [], c.inbox
            assert [m["change"]["new"]["body"] for m in changes_of(a, "s")] == [], a.inbox
            # no policy at all: RLS denies everything
            sql(f"DROP POLICY mine ON public.{t}")
            insert(t, "bob", "bob-none")
            await asyncio.sleep(0.5)
            await c.sync()
            assert changes_of(c, "s") == [], c.inbox
    run(body())


def test_dropped_role_closes_its_connections(res):
    """A role with no objects of its own (it reads through a group) is dropped while its
    client is subscribed: the client is told and closed with 4005; others keep receiving."""
    group = res.role("sec_group")
    doomed = res.role("sec_doomed")
    other = res.role("sec_other")
    sql(f'GRANT "{group}" TO "{doomed}"')
    t = res.table("id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{group}", "{other}"')

    async def body():
        async with authed(token(doomed)) as c, authed(token(doomed)) as idle, \
                authed(token(other)) as o:
            await c.subscribe("s", table=f"public.{t}")
            await o.subscribe("w", table=f"public.{t}")
            sql(f'DROP ROLE "{doomed}"')
            sql(f"INSERT INTO public.{t} (body) VALUES ('after-drop')")
            for cl in (c, idle):
                err = await cl.wait_for(lambda m: m["type"] == "error", 5, what="the error")
                assert err["code"] == "unknown_role" and doomed in err["message"], err
                assert await cl.expect_close(5) == 4005
            assert not c.kept_pushes("s"), c.kept_pushes("s")
            await until_row(o, "w", new_body("after-drop"), "the other client's row")
            await witness(o, t)
    run(body())


def test_revoked_membership_ends_the_subscription(res):
    """The role read the table through a group: REVOKE of the membership ends it."""
    group = res.role("sec_group")
    member = res.role("sec_member")
    sql(f'GRANT "{group}" TO "{member}"')
    t = res.table("id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{group}"')

    async def body():
        async with authed(token(member)) as c, authed(token(group)) as g:
            await c.subscribe("s", table=f"public.{t}")
            await g.subscribe("w", table=f"public.{t}")
            sql(f'REVOKE "{group}" FROM "{member}"')
            sql(f"INSERT INTO public.{t} (body) VALUES ('after-revoke')")
            err = await sub_error(c, "s")
            assert err["code"] == "permission_denied", err
            await until_row(g, "w", new_body("after-revoke"), "the group's row")
            await c.sync()
            assert not c.kept_pushes("s"), c.kept_pushes("s")
    run(body())


def test_revoked_schema_usage_ends_the_subscription(res):
    r = res.role()
    other = res.role("sec_other")
    schema = f"sec_schema_{tag()}"
    sql(f"CREATE SCHEMA {schema}")
    try:
        sql(f"CREATE TABLE {schema}.t (id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY, body text)")
        sql(f"SELECT plank.track('{schema}.t')")
        sql(f'GRANT USAGE ON SCHEMA {schema} TO "{r}", "{other}"')
        sql(f'GRANT SELECT ON {schema}.t TO "{r}", "{other}"')

        async def body():
            async with authed(token(r)) as c, authed(token(other)) as o:
                await c.subscribe("s", table=f"{schema}.t")
                await o.subscribe("w", table=f"{schema}.t")
                sql(f'REVOKE USAGE ON SCHEMA {schema} FROM "{r}"')
                sql(f"INSERT INTO {schema}.t (body) VALUES ('after-revoke')")
                err = await sub_error(c, "s")
                assert err["code"] == "permission_denied" and "schema" in err["message"], err
                await until_row(o, "w", new_body("after-revoke"), "the other client's row")
                await c.sync()
                assert not c.kept_pushes("s"), c.kept_pushes("s")
        run(body())
    finally:
        sql(f"DROP SCHEMA {schema} CASCADE")


def test_recheck_does_not_wait_for_a_locked_table(res):
    """A table held in ACCESS EXCLUSIVE mode by another session: the worker does not wait
    for the lock to recheck it (clients are answered meanwhile) and ends the subscription
    once the lock is released.  The REVOKE runs in a thread: from PostgreSQL 18 it takes
    an ACCESS SHARE lock on the table, so it commits only once the lock is released."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r)) as c:
            await c.subscribe("s", table=f"public.{t}")
            locker = connect(autocommit=False)
            revoker = None
            try:
                locker.cursor().execute(f"LOCK TABLE public.{t} IN ACCESS EXCLUSIVE MODE")
                revoker = threading.Thread(target=sql, args=(f'REVOKE SELECT ON public.{t} FROM "{r}"',))
                revoker.start()
                await asyncio.sleep(1.0)
                await c.sync()
                assert not [m for m in c.inbox if m["type"] == "error"], c.inbox
            finally:
                locker.rollback()
                locker.close()
                if revoker is not None:
                    revoker.join(timeout=30)
            err = await sub_error(c, "s", timeout=1.5)
            assert err["code"] == "permission_denied", err
    run(body())


def test_dropped_table_ends_the_subscription(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, body text")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r)) as c:
            await c.subscribe("s", table=f"public.{t}")
            sql(f"DROP TABLE public.{t}")
            err = await sub_error(c, "s", timeout=1.5)
            assert err["code"] == "unknown_table", err
    run(body())


# --------------------------------------------------------------------------- channels


def test_channel_needs_a_grant(res):
    r = res.role()
    prefix = f"room{tag()}"

    async def body():
        async with authed(token(r)) as c:
            reply = await c.request({"type": "subscribe", "id": "c", "channel": f"{prefix}_1"})
            assert reply["type"] == "error" and reply["code"] == "permission_denied", reply

            res.grant_channel(f"{prefix}_%", "public")
            await c.subscribe("c1", channel=f"{prefix}_1")
            sql("SELECT pg_notify(%s, 'x')", (f"{prefix}_1",))
            m = await c.next_push("c1")
            assert m["type"] == "notify" and m["channel"] == f"{prefix}_1" and m["payload"] == "x", m
            reply = await c.request({"type": "subscribe", "id": "o", "channel": f"other{prefix}"})
            assert reply["type"] == "error" and reply["code"] == "permission_denied", reply

            sql("SELECT plank.revoke_channel(%s, 'public')", (f"{prefix}_%",))
            reply = await c.request({"type": "subscribe", "id": "c2", "channel": f"{prefix}_2"})
            assert reply["type"] == "error" and reply["code"] == "permission_denied", reply
    run(body())


def test_channel_grant_to_a_role_and_its_members(res):
    grantee = res.role("sec_chan")
    member = res.role("sec_chan_member")
    stranger = res.role("sec_stranger")
    sql(f'GRANT "{grantee}" TO "{member}"')
    chan = f"room{tag()}"
    res.grant_channel(chan, grantee)

    async def body():
        for role_, allowed in ((grantee, True), (member, True), (stranger, False)):
            async with authed(token(role_)) as c:
                reply = await c.request({"type": "subscribe", "id": "c", "channel": chan})
                if allowed:
                    assert reply["type"] == "ack", (role_, reply)
                else:
                    assert reply["type"] == "error" and reply["code"] == "permission_denied", reply
    run(body())


def test_superuser_may_subscribe_to_any_channel():
    async def body():
        async with authed(token("postgres")) as c:
            await c.subscribe("c", channel=f"nogrant{tag()}")
    run(body())


def test_channel_grants_are_not_writable_by_ordinary_roles(res):
    r = res.role()
    conn = connect(autocommit=False)
    try:
        for stmt in ("SELECT plank.grant_channel('%', 'public')",
                     "INSERT INTO plank.channel_grants VALUES ('%', 'public')",
                     "UPDATE plank.channel_grants SET channel = '%'",
                     "SELECT plank.revoke_channel('x', 'public')"):
            try:
                with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                    with conn.cursor() as cur:
                        cur.execute(f'SET LOCAL ROLE "{r}"')
                        cur.execute(stmt)
            finally:
                conn.rollback()
    finally:
        conn.close()
    assert sql("SELECT count(*) FROM plank.channel_grants WHERE channel = '%'")[0][0] == 0
