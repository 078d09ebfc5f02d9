"""Every SQL statement Plank runs is immune to the search path (docs/SECURITY.md, "Search
path").

The attacker is an ordinary login role that owns a schema named like itself (so it is
its "$user" schema) and may CREATE in public (granted for the test, revoked after). In
both schemas it creates look-alikes of the operators and functions Plank's SQL uses:
exact copies (`=` for int4, int8, text, oid, name...), which win wherever a search path
puts the attacker's schemas before pg_catalog, and better matches than pg_catalog's
polymorphic or variadic ones (`cardinality(text[])`, `array_to_string(text[], text)`,
`format(text, regclass)`, `=` (oid, int4)...), which win wherever a search path merely
contains the attacker's schemas. Each look-alike computes the right answer, and also
records that it ran (a sequence, which a rollback does not undo, and a table) and tries
`ALTER ROLE <attacker> SUPERUSER` (which succeeds only when the look-alike runs as a
superuser: the escalation).

Then Plank is used as it is used in production, by a superuser whose search_path puts
the attacker first (`"<attacker>", public, pg_catalog`) and by the attacker itself:
writes to tracked tables (a row over 8 kB too, which goes through plank.overflow),
plank.track()/untrack(), plank.publish(), plank.grant_channel(), the monitoring views,
and WebSocket subscriptions with filters, snapshots, channels and row-level security.
The tests assert that no look-alike ever ran, that the attacker is still no superuser,
and that a legitimate client received its changes. One more test has the row-level
security policy function move the search path of the session that evaluates it (a
check worker, whose every request is rolled back)."""

import asyncio
import contextlib
import json

import psycopg2
import pytest

from conftest import DB, PGHOST, PGPORT, client, run, sql, tag
from helpers import authed, login_as, token

# (operator, left type, right type, pg_catalog function computing it)
OPERATORS = [
    ("=", "int4", "int4", "int4eq"),
    ("=", "int8", "int8", "int8eq"),
    ("=", "int2", "int4", "int24eq"),
    ("=", "text", "text", "texteq"),
    ("=", "name", "name", "nameeq"),
    ("=", "name", "text", "nameeqtext"),
    ("=", "oid", "oid", "oideq"),
    ("=", "oid", "int4", None),            # better than oid = oid for "tgparentid = 0"
    ("=", "regclass", "regclass", None),   # better than oid = oid (binary coercion)
    ("=", "oid", "regclass", None),
    ("=", '"char"', '"char"', "chareq"),
    ("=", "jsonb", "jsonb", "jsonb_eq"),
    ("<>", "text", "text", "textne"),
    ("<>", '"char"', '"char"', "charne"),
    ("<>", "regclass", "regclass", None),
    (">", "int2", "int4", "int24gt"),
    ("~~", "text", "text", "textlike"),
    ("~~", "name", "text", "namelike"),
    ("||", "text", "text", "textcat"),
    ("->", "jsonb", "text", "jsonb_object_field"),
]

# (name, argument types, result type, pg_catalog expression over $1, $2...)
FUNCTIONS = [
    ("lower", ["text"], "text", "pg_catalog.lower($1)"),
    ("upper", ["text"], "text", "pg_catalog.upper($1)"),
    ("quote_ident", ["text"], "text", "pg_catalog.quote_ident($1)"),
    ("quote_literal", ["text"], "text", "pg_catalog.quote_literal($1)"),
    ("format", ["text"], "text", "pg_catalog.format($1)"),
    ("format", ["text", "text"], "text", "pg_catalog.format($1, $2)"),
    ("format", ["text", "regclass"], "text", "pg_catalog.format($1, $2)"),
    ("format", ["text", "text", "regclass"], "text", "pg_catalog.format($1, $2, $3)"),
    ("format", ["text", "text", "text", "regclass", "text", "text"], "text",
     "pg_catalog.format($1, $2, $3, $4, $5, $6)"),
    ("format", ["text", "regclass", "text", "text"], "text",
     "pg_catalog.format($1, $2, $3, $4)"),
    ("cardinality", ["text[]"], "int4", "pg_catalog.cardinality($1)"),
    ("array_position", ["text[]", "text"], "int4", "pg_catalog.array_position($1, $2)"),
    ("array_to_string", ["text[]", "text"], "text", "pg_catalog.array_to_string($1, $2)"),
    ("unnest", ["text[]"], "SETOF text", "pg_catalog.unnest($1)"),
    ("pg_partition_tree", ["regclass"],
     "TABLE (relid regclass, parentrelid regclass, isleaf boolean, level integer)",
     "pg_catalog.pg_partition_tree($1)"),
    ("pg_notify", ["text", "text"], "void", "pg_catalog.pg_notify($1, $2)"),
    ("pg_has_role", ["oid", "oid", "text"], "bool", "pg_catalog.pg_has_role($1, $2, $3)"),
    ("now", [], "timestamptz", "pg_catalog.now()"),
    ("current_setting", ["text"], "text", "pg_catalog.current_setting($1)"),
    ("current_setting", ["text", "bool"], "text", "pg_catalog.current_setting($1, $2)"),
    ("row_to_json", ["record"], "json", "pg_catalog.row_to_json($1)"),
    ("to_jsonb", ["anyelement"], "jsonb", "pg_catalog.to_jsonb($1)"),
    ("jsonb_build_object", ["text", "text"], "jsonb", "pg_catalog.jsonb_build_object($1, $2)"),
    ("jsonb_populate_record", ["anyelement", "jsonb"], "anyelement",
     "pg_catalog.jsonb_populate_record($1, $2)"),
    ("encode", ["bytea", "text"], "text", "pg_catalog.encode($1, $2)"),
    ("string_to_array", ["text", "text"], "text[]", "pg_catalog.string_to_array($1, $2)"),
    ("txid_current", [], "int8", "pg_catalog.txid_current()"),
]

HOSTILE_PATH_FMT = 'SET search_path = "{a}", public, pg_catalog'


@contextlib.contextmanager
def superuser_session(search_path_sql):
    """A postgres session whose search_path puts the attacker's schemas first."""
    conn = psycopg2.connect(host=PGHOST, port=PGPORT, user="postgres", dbname=DB,
                            connect_timeout=10, application_name="plank-e2e-hostile-path")
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(search_path_sql)
        yield conn
    finally:
        conn.close()


def execute(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall() if cur.description is not None else []


class Attacker:
    """The attacking role, its schema and its look-alikes."""

    def __init__(self):
        self.role = f"sec_sp_{tag()}"
        self.reader = f"sec_sp_reader_{tag()}"
        self.table = f'"{self.role}".watched'
        self.rls_table = f'"{self.role}".tenants'            # a plain policy function
        self.moving_table = f'"{self.role}".tenants_moving'  # one that moves the path
        self.hostile_path = HOSTILE_PATH_FMT.format(a=self.role)

    # -- set-up, as postgres and as the attacker
    def create(self):
        a = self.role
        sql(f'CREATE ROLE "{a}" LOGIN NOSUPERUSER NOCREATEROLE')
        sql(f'CREATE ROLE "{self.reader}" NOLOGIN')
        sql(f'GRANT "{self.reader}" TO plank_authenticator')
        sql(f'CREATE SCHEMA "{a}" AUTHORIZATION "{a}"')
        sql(f'GRANT CREATE ON SCHEMA public TO "{a}"')
        sql(f'GRANT USAGE ON SCHEMA "{a}" TO "{self.reader}"')
        with login_as(a) as conn:
            self._create_objects(conn)
        # a channel the reader may subscribe to (plank.channel_grants is looked up)
        sql("SELECT plank.grant_channel(%s, %s)", (f"{a}_%", self.reader))

    def _create_objects(self, conn):
        a = self.role
        statements = [
            f'CREATE SEQUENCE "{a}".shadow_calls',
            f'CREATE TABLE "{a}".shadow_log (what text, by_user name, session_user_name name, '
            f'escalated boolean, at timestamptz DEFAULT pg_catalog.clock_timestamp())',
            f'GRANT USAGE ON SEQUENCE "{a}".shadow_calls TO PUBLIC',
            f'GRANT INSERT ON "{a}".shadow_log TO PUBLIC',
            # records that a look-alike ran, and tries to escalate
            f'''CREATE FUNCTION "{a}".shadow_ran(what text) RETURNS void
                LANGUAGE plpgsql AS $f$
                DECLARE
                    escalated boolean := false;
                BEGIN
                    PERFORM pg_catalog.nextval('"{a}".shadow_calls'::pg_catalog.regclass);
                    BEGIN
                        EXECUTE 'ALTER ROLE "{a}" SUPERUSER';
                        escalated := true;
                    EXCEPTION WHEN OTHERS THEN
                        escalated := false;
                    END;
                    INSERT INTO "{a}".shadow_log (what, by_user, session_user_name, escalated)
                        VALUES (what, current_user, session_user, escalated);
                END;
                $f$''',
            f'GRANT EXECUTE ON FUNCTION "{a}".shadow_ran(text) TO PUBLIC',
            f'CREATE TABLE {self.table} (id int PRIMARY KEY, owner text NOT NULL, body text)',
            f'SELECT plank.track(\'{self.table}\'::pg_catalog.regclass)',
            f'GRANT SELECT ON {self.table} TO "{self.reader}"',
            # row-level security through policy functions: a plain one, and one that
            # moves the search path of the session evaluating it (set_config with
            # is_local = false: for the rest of the session)
            f'''CREATE FUNCTION "{a}".visible(owner text) RETURNS boolean
                LANGUAGE plpgsql AS $f$
                BEGIN
                    RETURN owner OPERATOR(pg_catalog.=) 'alice';
                END;
                $f$''',
            f'''CREATE FUNCTION "{a}".visible_moving(owner text) RETURNS boolean
                LANGUAGE plpgsql AS $f$
                BEGIN
                    PERFORM pg_catalog.set_config('search_path', '"{a}", public, pg_catalog', false);
                    RETURN owner OPERATOR(pg_catalog.=) 'alice';
                END;
                $f$''',
            f'GRANT EXECUTE ON FUNCTION "{a}".visible(text), "{a}".visible_moving(text) TO PUBLIC',
        ]
        for table, fn in ((self.rls_table, "visible"), (self.moving_table, "visible_moving")):
            statements += [
                f'CREATE TABLE {table} (id int PRIMARY KEY, owner text NOT NULL, body text)',
                f'ALTER TABLE {table} ENABLE ROW LEVEL SECURITY',
                f'CREATE POLICY seen ON {table} FOR SELECT USING ("{a}".{fn}(owner))',
                f'GRANT SELECT ON {table} TO "{self.reader}"',
                f"SELECT plank.track('{table}'::pg_catalog.regclass)",
            ]
        for schema in (f'"{a}"', "public"):
            for i, (op, left, right, proc) in enumerate(OPERATORS):
                fn = f"{schema}.shadow_op_{i}"
                result = "text" if op == "||" else ("jsonb" if op == "->" else "boolean")
                if proc is not None:
                    compute = f"pg_catalog.{proc}(l, r)"
                elif op == "=":
                    compute = "l::pg_catalog.oid OPERATOR(pg_catalog.=) r::pg_catalog.oid"
                else:
                    compute = "l::pg_catalog.oid OPERATOR(pg_catalog.<>) r::pg_catalog.oid"
                statements.append(
                    f'''CREATE FUNCTION {fn}(l {left}, r {right}) RETURNS {result}
                        LANGUAGE plpgsql AS $f$
                        BEGIN
                            PERFORM "{a}".shadow_ran('{schema}.{op}({left}, {right})');
                            RETURN {compute};
                        END;
                        $f$''')
                statements.append(f"CREATE OPERATOR {schema}.{op} (LEFTARG = {left}, "
                                  f"RIGHTARG = {right}, FUNCTION = {fn})")
            for name, argtypes, rettype, expr in FUNCTIONS:
                params = ", ".join(f"p{i + 1} {t}" for i, t in enumerate(argtypes))
                body = expr
                for i in range(len(argtypes), 0, -1):
                    body = body.replace(f"${i}", f"p{i}")
                label = f"{schema}.{name}({', '.join(argtypes)})".replace("'", "")
                if rettype.startswith("TABLE"):
                    ret = f"RETURN QUERY SELECT * FROM {body};"
                elif rettype.startswith("SETOF"):
                    ret = f"RETURN QUERY SELECT {body};"
                elif rettype == "void":
                    ret = f"PERFORM {body}; RETURN;"
                else:
                    ret = f"RETURN {body};"
                statements.append(
                    f'''CREATE FUNCTION {schema}.{name}({params}) RETURNS {rettype}
                        LANGUAGE plpgsql AS $f$
                        BEGIN
                            PERFORM "{a}".shadow_ran('{label}');
                            {ret}
                        END;
                        $f$''')
        for s in statements:
            execute(conn, s)

    def drop(self):
        a = self.role
        with contextlib.suppress(Exception):
            sql("SELECT plank.revoke_channel(%s, %s)", (f"{a}_%", self.reader))
        with contextlib.suppress(Exception):
            sql(f'REVOKE CREATE ON SCHEMA public FROM "{a}"')
        with contextlib.suppress(Exception):
            sql(f'ALTER ROLE "{a}" NOSUPERUSER')
        for r in (a, self.reader):
            with contextlib.suppress(Exception):
                sql(f'DROP OWNED BY "{r}" CASCADE')
            with contextlib.suppress(Exception):
                sql(f'DROP ROLE IF EXISTS "{r}"')

    # -- what the assertions read
    def calls(self):
        """How many times a look-alike started (rollbacks included) and what the
        committed log says."""
        last, called = sql(f'SELECT last_value, is_called FROM "{self.role}".shadow_calls')[0]
        rows = sql(f'SELECT what, by_user, session_user_name, escalated '
                   f'FROM "{self.role}".shadow_log ORDER BY at')
        return (last if called else 0), rows

    def is_superuser(self):
        return sql("SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = %s",
                   (self.role,))[0][0]

    def assert_untouched(self, what):
        n, rows = self.calls()
        assert n == 0 and not rows, \
            f"{what}: the attacker's look-alikes ran {n} time(s): {rows}"
        assert not self.is_superuser(), f"{what}: role {self.role} became superuser"


async def next_change(c, sub):
    """The next change of `sub`, past its snapshot."""
    return await c.wait_for(lambda m: m["type"] == "change" and m.get("sub") == sub,
                            what=f"a change of {sub!r}")


@pytest.fixture
def attacker():
    att = Attacker()
    try:
        att.create()
        yield att
    finally:
        att.drop()


def test_look_alikes_work_where_the_path_allows_them(attacker):
    """The look-alikes are real: an unqualified statement run with the hostile path does
    call them (and, run by a superuser, escalates). This keeps the other tests from
    passing because the look-alikes could never run."""
    with superuser_session(attacker.hostile_path) as conn:
        assert execute(conn, "SELECT 1 = 1")[0][0] is True
    n, rows = attacker.calls()
    assert n >= 1 and any(r[0] == f'"{attacker.role}".=(int4, int4)' for r in rows), rows
    assert attacker.is_superuser(), "the probe did not escalate: the escalation check is void"


def test_writers_with_a_hostile_search_path_run_no_look_alike(attacker, db):
    """Writers whose search path puts the attacker's schemas first (a superuser, and the
    attacker itself) write tracked tables, one row of them over NOTIFY's 8000 bytes;
    the capture trigger and the overflow path run no look-alike, and a client receives
    every change, the large row whole."""
    big = "B" * 20000
    marker = "sp-" + tag()

    async def body():
        async with client() as c:
            await c.subscribe("w", table=attacker.table)
            await c.subscribe("i", table="public.items")
            with superuser_session(attacker.hostile_path) as su:
                # no operator or function in these statements: only Plank's code can
                # reach the look-alikes
                execute(su, f"INSERT INTO {attacker.table} (id, owner, body) VALUES (1, 'alice', %s)",
                        (marker,))
                execute(su, f"INSERT INTO {attacker.table} (id, owner, body) VALUES (2, 'bob', %s)",
                        (big,))
                execute(su, "INSERT INTO public.items (name, value) VALUES (%s, 1)", (marker,))
            with login_as(attacker.role) as conn:
                execute(conn, attacker.hostile_path)
                execute(conn, f"UPDATE {attacker.table} SET body = %s "
                              f"WHERE id OPERATOR(pg_catalog.=) 1", (marker + "-u",))
                execute(conn, f"INSERT INTO {attacker.table} (id, owner, body) VALUES (3, 'carol', %s)",
                        (big + "3",))
                execute(conn, f"DELETE FROM {attacker.table} WHERE id OPERATOR(pg_catalog.=) 3")
            got = {}
            for _ in range(5):
                m = await c.next_push("w")
                ch = m["change"]
                got[(ch["op"], (ch.get("new") or ch.get("old") or {}).get("id"))] = ch
            item = await c.next_push("i")
            assert item["change"]["new"]["name"] == marker, item
            assert got[("INSERT", 1)]["new"]["body"] == marker, got
            assert got[("INSERT", 2)]["new"]["body"] == big, "the 20 kB row did not arrive whole"
            assert got[("UPDATE", 1)]["new"]["body"] == marker + "-u", got
            assert got[("INSERT", 3)]["new"]["body"] == big + "3", got
            assert ("DELETE", 3) in got, got
    run(body())
    attacker.assert_untouched("writing tracked tables with a hostile search path")
    assert sql("SELECT count(*) FROM plank.overflow")[0][0] == 0


def test_sql_api_with_a_hostile_search_path_runs_no_look_alike(attacker):
    """plank.track/untrack (partitioned table and column options included), publish,
    grant_channel/revoke_channel and the monitoring views, called by a superuser whose
    search path puts the attacker first, and track/untrack by the attacker itself."""
    a = attacker.role
    part = f'"{a}".parted'
    with login_as(a) as conn:
        execute(conn, f"CREATE TABLE {part} (id int, k text, PRIMARY KEY (id, k)) "
                      f"PARTITION BY LIST (k)")
        execute(conn, f"CREATE TABLE \"{a}\".parted_a PARTITION OF {part} FOR VALUES IN ('a')")
        execute(conn, attacker.hostile_path)
        execute(conn, "SELECT plank.track(%s::pg_catalog.regclass, ARRAY['id']::pg_catalog.text[])",
                (part,))
        execute(conn, "SELECT plank.untrack(%s::pg_catalog.regclass)", (part,))
        execute(conn, "SELECT plank.track(%s::pg_catalog.regclass, NULL, ARRAY['k']::pg_catalog.text[], "
                      "ARRAY['insert', 'DELETE']::pg_catalog.text[])", (part,))
        execute(conn, "SELECT * FROM plank.tracked_tables")
    with superuser_session(attacker.hostile_path) as su:
        msg = execute(su, "SELECT plank.track(%s::pg_catalog.regclass)", (part,))[0][0]
        assert msg.startswith("tracking "), msg
        execute(su, "SELECT plank.untrack(%s::pg_catalog.regclass)", (part,))
        execute(su, "SELECT plank.untrack(%s::pg_catalog.regclass)", (part,))   # NOTICE path
        execute(su, "SELECT plank.track(%s::pg_catalog.regclass, operations => "
                    "ARRAY['TRUNCATE']::pg_catalog.text[])", (attacker.table,))
        execute(su, "SELECT plank.track(%s::pg_catalog.regclass)", (attacker.table,))
        execute(su, "SELECT plank.publish(%s, '{\"x\": 1}'::pg_catalog.jsonb)", (f"{a}_chat",))
        execute(su, "SELECT plank.grant_channel(%s, %s)", (f"{a}_other", "public"))
        execute(su, "SELECT plank.revoke_channel(%s, %s)", (f"{a}_other", "public"))
        for view in ("plank.tracked_tables", "plank.connections", "plank.subscriptions",
                     "plank.stats"):
            execute(su, f"SELECT * FROM {view}")
        execute(su, "SELECT plank.change_channel()")
        execute(su, "SELECT plank.disconnect(-1)")
    attacker.assert_untouched("the SQL API with a hostile search path")


async def exercise_clients(attacker, rls_table):
    """What clients make Plank do, with row-level security on `rls_table` evaluated
    first: every later key look-up, tracked-table check, channel grant, snapshot (with
    rows for its filter to compare), overflow read and row-level security check runs
    after the policy function did. Asserts that the legitimate clients receive what
    they should."""
    a = attacker.role
    big = "R" * 12000
    # rows already there, so that the snapshots' filters and policies are evaluated
    sql(f"INSERT INTO {rls_table} VALUES (1, 'alice', 'a1'), (2, 'bob', 'b1')")
    sql(f"INSERT INTO {attacker.table} VALUES (1, 'alice', 'w1'), (2, 'bob', 'w2')")
    async with client() as su, authed(token(attacker.reader, sub="alice")) as alice:
        await alice.subscribe("rls", table=rls_table, snapshot=True)
        snap = await alice.next_push("rls")
        assert [r["body"] for r in snap["rows"]] == ["a1"], snap
        sql(f"INSERT INTO {rls_table} VALUES (3, 'alice', 'a3'), (4, 'bob', 'b3')")
        m = await next_change(alice, "rls")
        assert m["change"]["new"]["body"] == "a3", m
        # after the policy ran: everything else Plank does for clients
        for c in (alice, su):
            await c.subscribe("f", table=attacker.table, filter={"owner": "alice"},
                              snapshot=True)
            snap = await c.next_push("f")
            assert [r["body"] for r in snap["rows"]] == ["w1"], snap
            await c.subscribe("ch", channel=f"{a}_chat")
        await su.subscribe("items", table="items")
        sql(f"INSERT INTO {attacker.table} VALUES (10, 'alice', %s), (11, 'bob', 'x')", (big,))
        sql(f"INSERT INTO {rls_table} VALUES (5, 'alice', 'a5'), (6, 'bob', 'b5')")
        sql("SELECT plank.publish(%s, %s::jsonb)", (f"{a}_chat", json.dumps({"n": 1})))
        marker = "cl-" + tag()
        sql("INSERT INTO public.items (name, value) VALUES (%s, 2)", (marker,))
        for c in (alice, su):
            ch = await next_change(c, "f")
            assert ch["change"]["new"]["body"] == big and ch["change"]["new"]["id"] == 10, ch
            n = await c.next_push("ch")
            assert n["type"] == "notify" and json.loads(n["payload"]) == {"n": 1}, n
        m = await next_change(alice, "rls")
        assert m["change"]["new"]["body"] == "a5", m
        item = await su.next_push("items")
        assert item["change"]["new"]["name"] == marker, item
        await asyncio.sleep(0.3)
        await alice.sync()
        seen = [x["change"]["new"]["body"] for x in alice.kept_pushes("rls")
                if x["type"] == "change"]
        assert not {"b1", "b3", "b5"} & set(seen), seen
        seen = [x["change"]["new"]["id"] for x in alice.kept_pushes("f") if x["type"] == "change"]
        assert 11 not in seen, seen


def test_clients_run_no_look_alike(attacker):
    """WebSocket clients subscribe with filters, snapshots and channels, as the superuser
    (anonymous here) and as an ordinary role under row-level security; a row over 8 kB
    goes through plank.overflow. No look-alike runs in the worker's queries, and the
    legitimate clients receive their changes."""
    run(exercise_clients(attacker, attacker.rls_table))
    attacker.assert_untouched("clients with filters, snapshots, channels and RLS")
    assert sql("SELECT count(*) FROM plank.overflow")[0][0] == 0


def test_a_policy_moving_the_search_path_runs_no_look_alike(attacker):
    """As test_clients_run_no_look_alike, but the row-level security policy function
    sets the evaluating session's search_path to the attacker's schemas, for the session
    (set_config(..., false)). Whatever session evaluates it, none of Plank's later
    queries may resolve to the look-alikes."""
    run(exercise_clients(attacker, attacker.moving_table))
    attacker.assert_untouched("clients after a policy that moves the search path")
