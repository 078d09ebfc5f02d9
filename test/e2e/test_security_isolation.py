"""Isolation (docs/SECURITY.md, "Isolation"): code owned by table owners (policy functions,
casts to JSON, operators) never runs in the socket worker, and what it does in a check
worker neither escalates nor changes any session of Plank's.

The attacker is an ordinary LOGIN role that owns a schema named after it and a table in
it, tracks the table, grants SELECT on it to a client role, and writes policies, casts
and functions that try to change the session (search_path, UNLISTEN), read the change
channel, SET ROLE, make themselves superuser, sleep, and hold locks. A legitimate client
on another table meanwhile keeps receiving its changes within a second, and /health
answers. Row-level security is decided on the committed row images: no tenant receives
another tenant's rows or keys.
"""

import asyncio
import contextlib
import time

import pytest

from conftest import ServerLog, run, sql, tag
from helpers import (auth_refusal, authed, http_get, login_as, plank_settings,  # noqa: F401
                     res, token)

CLAIMS_SUB = "(current_setting('request.jwt.claims', true)::jsonb ->> 'sub')"
MARK = "PLANK-SHADOW-RAN"



def run_as(role, statements):
    with login_as(role) as conn, conn.cursor() as cur:
        for s in statements:
            cur.execute(s)


def is_superuser(role):
    return sql("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s", (role,))[0][0]


class Attacker:
    """An ordinary role with a schema of its own (first on its search_path as "$user")."""

    def __init__(self, res):
        self.name = res.role(prefix="atk", options="LOGIN")
        sql(f'CREATE SCHEMA "{self.name}" AUTHORIZATION "{self.name}"')
        self.res = res

    def q(self, obj):
        return f'"{self.name}".{obj}'

    def run(self, *statements):
        run_as(self.name, statements)

    def cleanup(self):
        with contextlib.suppress(Exception):
            sql(f'DROP SCHEMA IF EXISTS "{self.name}" CASCADE')


@pytest.fixture
def attacker(res):
    a = Attacker(res)
    try:
        yield a
    finally:
        a.cleanup()


def legit_table(res):
    """A tracked table of the superuser's that a legitimate client follows."""
    return res.table("id int PRIMARY KEY, body text")


async def receives_within(c, sub, t, value, seconds=1.0):
    """Insert into public.t and assert the change reaches c within `seconds`."""
    start = time.monotonic()
    sql(f"INSERT INTO public.{t} VALUES (%s, %s)", (value, f"v{value}"))
    m = await c.wait_for(lambda m: m["type"] == "change" and m.get("sub") == sub
                         and m["change"]["new"]["id"] == value, timeout=10,
                         what=f"row {value}")
    took = time.monotonic() - start
    assert took < seconds, f"row {value} took {took:.2f} s"
    return m


def test_user_code_runs_as_the_client_in_a_check_worker(res, attacker):
    """A cast to json of the attacker's type and its policy function report, through the
    snapshot, where they ran: as the client role, in a session of plank.authenticator,
    not superuser, with no LISTEN (the change channel cannot be read), and their attempts
    to SET ROLE, become superuser, UNLISTEN and change search_path fail or are undone."""
    anon = res.role()
    a = attacker
    a.run(
        # an enum of the attacker's: row_to_json renders it through its cast to json
        f"CREATE TYPE {a.q('spy')} AS ENUM ('a')",
        f"""CREATE FUNCTION {a.q('spy_json')}({a.q('spy')}) RETURNS json LANGUAGE plpgsql AS $$
        DECLARE r jsonb := jsonb_build_object(
                'path_before', current_setting('search_path'),
                'mark_before', coalesce(current_setting('atk.was_here', true), ''));
        BEGIN
            PERFORM set_config('search_path', '"{a.name}", public, pg_catalog', false);
            PERFORM set_config('atk.was_here', 'yes', false);
            BEGIN EXECUTE 'UNLISTEN *'; r := r || '{{"unlisten":"ok"}}';
            EXCEPTION WHEN OTHERS THEN r := r || jsonb_build_object('unlisten', SQLERRM); END;
            BEGIN EXECUTE 'SET ROLE postgres'; r := r || '{{"setrole":"ok"}}';
            EXCEPTION WHEN OTHERS THEN r := r || jsonb_build_object('setrole', SQLERRM); END;
            BEGIN EXECUTE 'ALTER ROLE "{a.name}" SUPERUSER'; r := r || '{{"super":"ok"}}';
            EXCEPTION WHEN OTHERS THEN r := r || jsonb_build_object('super', SQLERRM); END;
            RETURN (r || jsonb_build_object(
                'channels', (SELECT coalesce(string_agg(c, ','), '') FROM pg_listening_channels() c),
                'current_user', current_user::text, 'session_user', session_user::text,
                'is_superuser', current_setting('is_superuser')))::json;
        END $$""",
        f"CREATE CAST ({a.q('spy')} AS json) WITH FUNCTION {a.q('spy_json')}({a.q('spy')})",
        f"CREATE TABLE {a.q('t')} (id int PRIMARY KEY, owner text, v {a.q('spy')})",
        f"""CREATE FUNCTION {a.q('pol')}() RETURNS boolean LANGUAGE plpgsql AS $$
        BEGIN
            BEGIN EXECUTE 'UNLISTEN *'; EXCEPTION WHEN OTHERS THEN NULL; END;
            BEGIN EXECUTE 'ALTER ROLE "{a.name}" SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
            RETURN true;
        END $$""",
        f"ALTER TABLE {a.q('t')} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY p ON {a.q('t')} FOR SELECT USING ({a.q('pol')}())",
        f'GRANT USAGE ON SCHEMA "{a.name}" TO "{anon}"',
        f'GRANT SELECT ON {a.q("t")} TO "{anon}"',
        f'GRANT EXECUTE ON FUNCTION {a.q("pol")}() TO "{anon}"',
        f"INSERT INTO {a.q('t')} VALUES (1, 'x', 'a')",
        f"SELECT plank.track('{a.q('t')}'::regclass)",
    )
    legit = legit_table(res)

    async def body():
        async with authed(token(anon, sub="victim")) as c, authed(token("postgres")) as su:
            await su.subscribe("legit", table=f"public.{legit}")
            for i in range(3):
                await c.subscribe(f"s{i}", table=f'{a.name}.t', snapshot=True)
                rows = c.kept_pushes(f"s{i}")[-1]["rows"]
                assert len(rows) == 1, rows
                spy = rows[0]["v"]
                assert spy["channels"] == "", f"the check worker listens: {spy}"
                assert spy["current_user"] == anon and spy["session_user"] == "plank_authenticator", spy
                assert spy["is_superuser"] == "off", spy
                assert spy["setrole"] != "ok" and spy["super"] != "ok" and spy["unlisten"] != "ok", spy
                # what the previous request set with is_local = false was rolled back
                assert a.name not in spy["path_before"] and spy["mark_before"] == "", spy
            # the writer is the attacker: a change goes through the policy check
            a.run(f"INSERT INTO {a.q('t')} VALUES (2, 'y', 'a')")
            m = await c.wait_for(lambda m: m["type"] == "change" and m["change"]["new"]["id"] == 2,
                                 timeout=10, what="the attacker's row")
            assert m["change"]["op"] == "INSERT"
            # the socket worker's LISTEN and session are intact
            for i in range(3):
                await receives_within(su, "legit", legit, 100 + i)
    run(body())
    assert not is_superuser(a.name)


def test_shadowing_operators_and_functions_never_run(res, attacker):
    """Operators and functions named like the ones Plank's SQL uses, in the attacker's
    "$user" schema and in public, never run for snapshots, filters or row-level security
    checks: Plank's SQL is parsed with search_path = pg_catalog and qualified."""
    anon = res.role()
    a = attacker
    sql(f'GRANT CREATE ON SCHEMA public TO "{a.name}"')
    try:
        stmts = []
        for schema in (f'"{a.name}"', "public"):
            for typ in ("integer", "text", "jsonb", "oid", "boolean"):
                fn = f"{schema}.shadow_eq_{typ}_{tag()}"
                stmts += [
                    f"""CREATE FUNCTION {fn}(l {typ}, r {typ}) RETURNS boolean LANGUAGE plpgsql AS $$
                    BEGIN
                        RAISE WARNING '{MARK}';
                        BEGIN EXECUTE 'ALTER ROLE "{a.name}" SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
                        RETURN l IS NOT DISTINCT FROM r;
                    END $$""",
                    f"CREATE OPERATOR {schema}.= (LEFTARG = {typ}, RIGHTARG = {typ}, FUNCTION = {fn})",
                ]
            for name, args, ret, body in (
                    ("row_to_json", "record", "json", "RETURN NULL;"),
                    ("to_jsonb", "anyelement", "jsonb", "RETURN NULL;"),
                    ("jsonb_populate_record", "anyelement, jsonb", "anyelement", "RETURN $1;"),
                    ("jsonb_array_elements", "jsonb", "SETOF jsonb", "RETURN QUERY SELECT $1;")):
                stmts.append(f"""CREATE FUNCTION {schema}.{name}({args}) RETURNS {ret}
                    LANGUAGE plpgsql AS $$ BEGIN RAISE WARNING '{MARK}'; {body} END $$""")
        a.run(*stmts)
        a.run(
            f"CREATE TABLE {a.q('t')} (id int PRIMARY KEY, owner text, n int)",
            f"ALTER TABLE {a.q('t')} ENABLE ROW LEVEL SECURITY",
            # the attacker's own SQL names pg_catalog's operators: only Plank's SQL is on trial
            f"CREATE POLICY p ON {a.q('t')} FOR SELECT USING (owner OPERATOR(pg_catalog.=) "
            f"{CLAIMS_SUB} AND n OPERATOR(pg_catalog.>=) 0)",
            f'GRANT USAGE ON SCHEMA "{a.name}" TO "{anon}"',
            f'GRANT SELECT ON {a.q("t")} TO "{anon}"',
            f"INSERT INTO {a.q('t')} VALUES (1, 'alice', 1), (2, 'bob', 2)",
            f"SELECT plank.track('{a.q('t')}'::regclass)",
        )
        log = ServerLog()

        async def body():
            async with authed(token(anon, sub="alice")) as c:
                await c.subscribe("all", table=f"{a.name}.t", snapshot=True)
                assert [r["id"] for r in c.kept_pushes("all")[-1]["rows"]] == [1]
                await c.subscribe("f", table=f"{a.name}.t", snapshot=True, filter={"n": 1})
                assert [r["id"] for r in c.kept_pushes("f")[-1]["rows"]] == [1]
                a.run(f"INSERT INTO {a.q('t')} VALUES (3, 'alice', 1), (4, 'bob', 1)",
                      f"UPDATE {a.q('t')} SET n = 5 WHERE id OPERATOR(pg_catalog.=) 1",
                      f"DELETE FROM {a.q('t')} WHERE id OPERATOR(pg_catalog.=) 2")
                got = await c.wait_for(lambda m: m["type"] == "change" and m.get("sub") == "all"
                                       and m["change"]["op"] == "UPDATE", timeout=10, what="the UPDATE")
                assert got["change"]["new"]["id"] == 1
                await asyncio.sleep(0.5)
                await c.sync()
                seen = [m["change"]["new"]["id"] for m in c.kept_pushes("all")
                        if m["type"] == "change" and m["change"]["op"] == "INSERT"]
                assert seen == [3], seen
        run(body())
        assert MARK not in log.text(), log.text()[-3000:]
        assert not is_superuser(a.name)
    finally:
        sql(f'REVOKE CREATE ON SCHEMA public FROM "{a.name}"')


def test_slow_policy_stalls_nobody_else(res, attacker):
    """A policy that sleeps 2 s per row delays only the subscribers of its table: a
    legitimate client receives each change within a second and /health answers
    meanwhile. The slow subscriber gets its first row once its check is back (checks that
    run over plank.check_timeout hide their rows, logged)."""
    anon = res.role()
    a = attacker
    a.run(
        f"CREATE TABLE {a.q('t')} (id int PRIMARY KEY)",
        f"""CREATE FUNCTION {a.q('slow')}() RETURNS boolean LANGUAGE sql AS
            'SELECT pg_catalog.pg_sleep(2) IS NOT NULL'""",
        f"ALTER TABLE {a.q('t')} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY p ON {a.q('t')} FOR SELECT USING ({a.q('slow')}())",
        f'GRANT USAGE ON SCHEMA "{a.name}" TO "{anon}"',
        f'GRANT SELECT ON {a.q("t")} TO "{anon}"',
        f"SELECT plank.track('{a.q('t')}'::regclass)",
    )
    legit = legit_table(res)

    async def body():
        async with authed(token(anon, sub="x")) as slow, authed(token("postgres")) as su:
            await slow.subscribe("s", table=f"{a.name}.t")
            await su.subscribe("legit", table=f"public.{legit}")
            for i in range(4):
                a.run(f"INSERT INTO {a.q('t')} VALUES ({i})")
            for i in range(4):
                await receives_within(su, "legit", legit, i)
                start = time.monotonic()
                status, _, _ = http_get("/health")
                assert status in (200, 503) and time.monotonic() - start < 1.0
            m = await slow.wait_for(lambda m: m["type"] == "change", timeout=30, what="a slow row")
            assert m["change"]["new"]["id"] == 0, m
    run(body())


def test_locked_table_stalls_nobody_else(res, attacker):
    """The attacker holds ACCESS EXCLUSIVE on its table: a subscribe with a snapshot of it
    answers snapshot_timeout after plank.check_timeout, a subscribe without one answers
    at once, and a legitimate client meanwhile receives its changes within a second."""
    anon = res.role()
    a = attacker
    a.run(
        f"CREATE TABLE {a.q('t')} (id int PRIMARY KEY, owner text)",
        f"ALTER TABLE {a.q('t')} ENABLE ROW LEVEL SECURITY",
        f"CREATE POLICY p ON {a.q('t')} FOR SELECT USING (owner = {CLAIMS_SUB})",
        f'GRANT USAGE ON SCHEMA "{a.name}" TO "{anon}"',
        f'GRANT SELECT ON {a.q("t")} TO "{anon}"',
        f"SELECT plank.track('{a.q('t')}'::regclass)",
    )
    legit = legit_table(res)
    with plank_settings({"plank.check_timeout": "1s"}), login_as(a.name) as locker:
        cur = locker.cursor()
        cur.execute("BEGIN")
        cur.execute(f"LOCK TABLE {a.q('t')} IN ACCESS EXCLUSIVE MODE")
        try:
            async def body():
                async with authed(token(anon, sub="x")) as c, authed(token("postgres")) as su:
                    await su.subscribe("legit", table=f"public.{legit}")
                    await c.send({"type": "subscribe", "id": "snap", "table": f"{a.name}.t",
                                  "snapshot": True})
                    await c.subscribe("live", table=f"{a.name}.t")
                    for i in range(3):
                        await receives_within(su, "legit", legit, i)
                    err = await c.wait_for(lambda m: m["type"] == "error" and m.get("id") == "snap",
                                           timeout=10, what="the snapshot's answer")
                    assert err["code"] == "snapshot_timeout", err
                    await receives_within(su, "legit", legit, 10)
            run(body())
        finally:
            cur.execute("ROLLBACK")


def test_rls_decided_on_committed_rows_not_later_state(res):
    """Alice's row, then reassigned to Bob, then deleted: Bob never receives the INSERT
    (it was Alice's when committed), Alice gets a visible:false marker for the UPDATE
    with the row's key only, Bob gets the UPDATE with "old" reduced to the key, and only
    Bob gets the DELETE. Nobody receives another tenant's values."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text NOT NULL, secret text")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r, sub="alice")) as alice, authed(token(r, sub="bob")) as bob, \
                authed(token(r, sub="carol")) as carol:
            for c in (alice, bob, carol):
                await c.subscribe("s", table=f"public.{t}")
            # back to back: by the time any check runs, the row is already Bob's
            sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 'a-secret')")
            sql(f"UPDATE public.{t} SET owner = 'bob', secret = 'b-secret' WHERE id = 1")
            sql(f"DELETE FROM public.{t} WHERE id = 1")
            sql(f"INSERT INTO public.{t} VALUES (2, 'bob', 'marker')")
            await bob.wait_for(lambda m: m["type"] == "change" and m["change"]["op"] == "INSERT"
                               and m["change"]["new"]["id"] == 2, timeout=10, what="bob's marker row")
            await asyncio.sleep(0.3)
            for c in (alice, bob, carol):
                await c.sync()
            a = [m["change"] for m in alice.kept_pushes("s") if m["type"] == "change"]
            b = [m["change"] for m in bob.kept_pushes("s") if m["type"] == "change"]
            cc = [m["change"] for m in carol.kept_pushes("s") if m["type"] == "change"]
            assert [x["op"] for x in a] == ["INSERT", "UPDATE"], a
            assert a[0]["new"]["secret"] == "a-secret"
            assert a[1].get("visible") is False and a[1]["key"] == {"id": 1}, a[1]
            assert "new" not in a[1] and "old" not in a[1] and "b-secret" not in str(a[1]), a[1]
            # (the INSERT of row 2 was taken by the wait above)
            assert [x["op"] for x in b] == ["UPDATE", "DELETE"], b
            assert b[0]["new"]["secret"] == "b-secret" and b[0]["old"] == {"id": 1}, b[0]
            assert "a-secret" not in str(b), b
            assert b[1]["old"] == {"id": 1}, b[1]
            assert cc == [], cc
    run(body())


def test_multi_tenant_deletes_and_markers_do_not_leak_keys(res):
    """Tenants share a table; deletes and updates of one tenant's rows never reach another
    tenant, not even as keys."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, tenant text NOT NULL, v int")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (tenant = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} SELECT g, CASE WHEN g % 2 = 0 THEN 't0' ELSE 't1' END, g "
        "FROM generate_series(1, 20) g")

    async def body():
        async with authed(token(r, sub="t0")) as t0, authed(token(r, sub="t1")) as t1:
            await t0.subscribe("s", table=f"public.{t}", snapshot=True)
            await t1.subscribe("s", table=f"public.{t}", snapshot=True)
            assert sorted(x["id"] for x in t0.kept_pushes("s")[0]["rows"]) == list(range(2, 21, 2))
            sql(f"UPDATE public.{t} SET v = v + 100")
            sql(f"DELETE FROM public.{t} WHERE id > 10")
            sql(f"INSERT INTO public.{t} VALUES (100, 't0', 0), (101, 't1', 0)")
            for c, me in ((t0, "t0"), (t1, "t1")):
                await c.wait_for(lambda m: m["type"] == "change" and m["change"]["op"] == "INSERT",
                                 timeout=10, what="the last insert")
                await c.sync()
            for c, mine in ((t0, 0), (t1, 1)):
                ch = [m["change"] for m in c.kept_pushes("s") if m["type"] == "change"]
                ids = set()
                for x in ch:
                    for k in ("new", "old", "key"):
                        if k in x:
                            ids.add(x[k]["id"])
                assert all(i % 2 == mine for i in ids if i < 100), (mine, sorted(ids))
                assert len([x for x in ch if x["op"] == "UPDATE"]) == 10
                assert len([x for x in ch if x["op"] == "DELETE"]) == 5
    run(body())


def test_roles_not_granted_to_the_authenticator_are_refused():
    """Only roles granted to plank.authenticator may be named by a token; a superuser only
    with plank.allow_privileged_roles. Refusals answer unknown_role and the log names the
    role."""
    name = f"sec_nogrant_{tag()}"
    sql(f'CREATE ROLE "{name}" NOLOGIN')
    bypass = f"sec_bypass_{tag()}"
    sql(f'CREATE ROLE "{bypass}" NOLOGIN BYPASSRLS')
    sql(f'GRANT "{bypass}" TO plank_authenticator')
    try:
        log = ServerLog()
        reply, _ = run(auth_refusal(token(name)))
        assert reply["code"] == "unknown_role", reply
        assert name in log.text()
        reply, _ = run(auth_refusal(token("plank_authenticator")))
        assert reply["code"] == "unknown_role", reply
        with plank_settings({"plank.allow_privileged_roles": "off"}):
            for role in ("postgres", bypass):
                reply, _ = run(auth_refusal(token(role)))
                assert reply["code"] == "unknown_role", (role, reply)
        reply, code = run(auth_refusal(token(bypass)))
        assert reply["type"] == "ack", reply
    finally:
        sql(f'DROP ROLE IF EXISTS "{name}"')
        sql(f'DROP ROLE IF EXISTS "{bypass}"')


def test_check_workers_killed_lose_no_change(res):
    """The check workers are terminated while changes wait for their checks: the changes
    wait for new check workers (started again within seconds) and all arrive, in order;
    a snapshot meanwhile is answered (rows or snapshot_failed), never left hanging."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text NOT NULL")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    def check_pids():
        return [p for (p,) in sql("SELECT pid FROM pg_catalog.pg_stat_activity "
                                  "WHERE backend_type = 'plank check'")]

    async def body():
        async with authed(token(r, sub="alice")) as c:
            await c.subscribe("s", table=f"public.{t}")
            sql(f"INSERT INTO public.{t} VALUES (0, 'alice')")
            await c.wait_for(lambda m: m["type"] == "change", what="the first row")
            pids = check_pids()
            assert pids, "no check worker is running"
            for p in pids:
                sql("SELECT pg_catalog.pg_terminate_backend(%s)", (p,))
            for i in range(1, 21):
                sql(f"INSERT INTO public.{t} VALUES ({i}, %s)", ("alice" if i % 2 else "bob",))
            got = []
            while len(got) < 10:
                m = await c.wait_for(lambda m: m["type"] == "change", timeout=20,
                                     what=f"row {len(got)} after the kill")
                got.append(m["change"]["new"]["id"])
            assert got == list(range(1, 21, 2)), got
            reply = await c.request({"type": "subscribe", "id": "snap", "table": f"public.{t}",
                                     "snapshot": True}, timeout=20)
            assert reply["type"] in ("ack", "error"), reply
    run(body())
    status, _, body_ = http_get("/health")
    assert '"check_workers":' in body_


def test_resume_under_row_level_security_replays_only_visible_rows(res):
    """A client under row-level security, with a filter, resumes after a disconnection:
    the replayed changes are decided on their committed rows like live ones, in order,
    each once, and the other tenant's rows stay out."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text NOT NULL, kind text")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r, sub="alice")) as c:
            await c.subscribe("s", table=f"public.{t}", filter={"kind": "a"})
            sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 'a')")
            first = await c.wait_for(lambda m: m["type"] == "change", what="row 1")
            since = {"epoch": first["epoch"], "seq": first["seq"]}
        for i in range(2, 12):
            sql(f"INSERT INTO public.{t} VALUES ({i}, %s, %s)",
                ("alice" if i % 2 == 0 else "bob", "a" if i % 3 else "b"))
        sql(f"UPDATE public.{t} SET owner = 'bob' WHERE id = 2")
        async with authed(token(r, sub="alice")) as c:
            ack = await c.subscribe("s", table=f"public.{t}", filter={"kind": "a"}, since=since)
            assert ack["resumed"] is True, ack
            sql(f"INSERT INTO public.{t} VALUES (100, 'alice', 'a')")
            await c.wait_for(lambda m: m["type"] == "change" and m["change"].get("new", {}).get("id") == 100,
                             what="the live row after the replay")
            await c.sync()
            got = [(m["change"]["op"], (m["change"].get("new") or m["change"].get("key"))["id"])
                   for m in c.kept_pushes("s") if m["type"] == "change"]
            # alice's rows of kind a (2, 4, 8, 10), then row 2 leaving her view
            assert got == [("INSERT", 2), ("INSERT", 4), ("INSERT", 8), ("INSERT", 10),
                           ("UPDATE", 2)], got
    run(body())
