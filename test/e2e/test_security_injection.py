"""Hostile input (docs/SECURITY.md "Input handling"): SQL injection through table names,
filter columns and values, channel names and token claims; JSON injection through
subscription ids, channel names and payloads; format strings. Nothing may run as SQL,
break the JSON of a message, or take the worker down."""

import pytest

from conftest import client, run, sql, tag, worker_pids
from helpers import authed, plank_settings, res, token  # noqa: F401

CLAIMS_SUB = "current_setting('request.jwt.claims', true)::jsonb ->> 'sub'"


@pytest.fixture
def sentinel():
    """A table that every injection attempt below tries to drop or read."""
    name = f"sec_sentinel_{tag()}"
    sql(f"CREATE TABLE public.{name} (id int PRIMARY KEY, secret text)")
    sql(f"INSERT INTO public.{name} VALUES (1, 'sentinel-secret')")
    pids = worker_pids()
    try:
        yield name
        assert sql(f"SELECT secret FROM public.{name}") == [("sentinel-secret",)], \
            "the sentinel table was changed"
        assert sql("SELECT count(*) FROM pg_tables WHERE tablename = 'items'")[0][0] == 1
        assert worker_pids() == pids, "the worker restarted"
    finally:
        sql(f"DROP TABLE IF EXISTS public.{name}")


def test_table_names(sentinel):
    names = [
        (f"public.{sentinel}; DROP TABLE public.{sentinel}", ("unknown_table",)),
        (f'public."{sentinel}; DROP TABLE public.{sentinel}; --"', ("unknown_table",)),
        (f"items; DROP TABLE public.{sentinel}", ("unknown_table",)),
        ("public.items' OR '1'='1", ("unknown_table",)),
        (f"public.items UNION SELECT * FROM public.{sentinel}", ("unknown_table",)),
        (f"(SELECT * FROM public.{sentinel})", ("unknown_table",)),
        (f"public.{sentinel}", ("untracked_table",)),
        ("pg_catalog.pg_authid", ("untracked_table",)),
        # no schema means public (PROTOCOL.md): there is no public.pg_authid
        ("pg_authid", ("unknown_table",)),
        ("information_schema.tables", ("untracked_table", "unknown_table")),
        ("plank.channel_grants", ("untracked_table",)),
        ("%s%s%s%n%n%n", ("unknown_table",)),
        ("public.items\u0000x", ("unknown_table", "malformed_json")),
        ("a.b.c.d", ("unknown_table",)),
        ("\"\"", ("unknown_table",)),
    ]

    async def body():
        async with client() as c:
            failures = []
            for i, (name, codes) in enumerate(names):
                reply = await c.request({"type": "subscribe", "id": f"t{i}", "table": name,
                                         "snapshot": True})
                if reply["type"] != "error" or reply["code"] not in codes:
                    failures.append((name, reply))
            assert not failures, failures
            assert not c.kept_pushes(), c.kept_pushes()
            # quoted identifiers are names, not SQL: this one is valid
            await c.subscribe("ok", table='"public"."items"')
    run(body())


def test_filter_columns_and_values(sentinel, db):
    name = "inj-" + tag()
    db.insert_item(name, 7)

    async def body():
        async with client() as c:
            for i, col in enumerate(["name = name OR 1=1 --", "name\" OR \"1\"=\"1", "1",
                                     f"(SELECT secret FROM public.{sentinel})", "%s%n"]):
                reply = await c.request({"type": "subscribe", "id": f"c{i}",
                                         "table": "public.items", "filter": {col: "x"},
                                         "snapshot": True})
                assert reply["type"] == "error" and reply["code"] == "bad_filter", (col, reply)
            for i, value in enumerate(["x' OR '1'='1", "x'); DROP TABLE items; --",
                                       f"' UNION SELECT secret FROM public.{sentinel} --",
                                       "\\", "'", '"', "%s%n"]):
                sid = f"v{i}"
                await c.subscribe(sid, table="public.items", filter={"name": value}, snapshot=True)
                snap = c.kept_pushes(sid)[0]
                assert snap["rows"] == [], (value, snap)
            # the real value still matches exactly
            await c.subscribe("real", table="public.items", filter={"name": name}, snapshot=True)
            rows = c.kept_pushes("real")[0]["rows"]
            assert [r["name"] for r in rows] == [name], rows
    try:
        run(body())
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (name,))


CHANNELS = [
    "x'; DROP TABLE {s}; --",
    'quote"d',
    "semi;colon",
    "back\\slash",
    "new\nline",
    "%s%n%x",
    "uni\u00e9\u4e2d",
    "a" * 63,
]


def test_channel_names_are_names_not_sql(sentinel):
    async def body():
        async with client() as c:
            for i, ch in enumerate(CHANNELS):
                ch = ch.format(s=sentinel)
                sid = f"ch{i}"
                await c.subscribe(sid, channel=ch)
                payload = f'p{i}", "type":"welcome'
                sql("SELECT pg_notify(%s, %s)", (ch, payload))
                m = await c.next_push(sid)
                assert m["type"] == "notify" and m["channel"] == ch and m["payload"] == payload, m
            reply = await c.request({"type": "subscribe", "id": "long", "channel": "a" * 64})
            assert reply["type"] == "error" and reply["code"] == "bad_channel", reply
    run(body())


def test_channel_grant_check_is_not_injectable(sentinel, res):
    r = res.role()
    res.grant_channel(f"safe{tag()}", "public")
    with plank_settings({"plank.anonymous_role": r}):
        async def body():
            async with client() as c:
                assert c.welcome.get("role") == r, c.welcome
                for i, ch in enumerate(["x' OR '1'='1", "x' OR true --", "%", "_", "%%",
                                        "x') OR (1=1", f"x'; DELETE FROM plank.channel_grants; --"]):
                    reply = await c.request({"type": "subscribe", "id": f"c{i}", "channel": ch})
                    assert reply["type"] == "error" and reply["code"] == "permission_denied", (ch, reply)
        run(body())
    assert sql("SELECT count(*) FROM plank.channel_grants WHERE grantee = 'public' "
               "AND channel LIKE 'safe%%'")[0][0] >= 1


def test_subscription_ids_cannot_inject_json(sentinel, db):
    name = "jsonid-" + tag()
    ids = ['a","type":"welcome', 'b\\', "c\u0000", "d\n\t\r", "e</script>", "f%s%n",
           "'; DROP TABLE x; --"]

    async def body():
        async with client() as c:
            subscribed = []
            for sid in ids:
                reply = await c.request({"type": "subscribe", "id": sid, "table": "public.items",
                                         "filter": {"name": name}})
                if reply["type"] == "ack":
                    assert reply["id"] == sid, reply
                    subscribed.append(sid)
                else:
                    assert reply["code"] in ("invalid_message", "malformed_json"), (sid, reply)
            assert len(subscribed) >= len(ids) - 1, subscribed   # only the NUL may be refused
            db.insert_item(name, 1)
            got = set()
            for _ in subscribed:
                m = await c.next_push()
                assert m["type"] == "change", m
                got.add(m["sub"])
            assert got == set(subscribed), got
    try:
        run(body())
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (name,))


def test_format_strings_in_requests(sentinel):
    async def body():
        async with client() as c:
            for req in ({"type": "%s%s%s%n%n%n", "id": "f1"},
                        {"type": "%" * 1000, "id": "f2"},
                        {"type": "unsubscribe", "id": "%s%n%s%n"},
                        {"type": "subscribe", "id": "%n", "table": "%n%n%n%s"}):
                reply = await c.request(req)
                assert reply["type"] == "error", (req, reply)
            assert (await c.request({"type": "ping", "id": "p"}))["type"] == "pong"
    run(body())


def test_token_claims_are_data(sentinel, res):
    """A role claim with SQL is an unknown role; a sub with SQL, used by a policy, only
    compares unequal; claims with odd JSON reach request.jwt.claims as they are."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text, body text")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 'a'), (2, 'x'' OR ''1''=''1', 'odd')")
    with plank_settings({"plank.anonymous_role": ""}):
        async def body():
            from helpers import auth_refusal
            for role_claim in (f"postgres; DROP TABLE public.{sentinel}",
                               f"{r}' OR '1'='1", f'{r}"; DROP TABLE public.{sentinel}; --'):
                reply, close = await auth_refusal(token(role_claim))
                # (invalid_token: a claim of 64 bytes or more cannot name a role)
                assert reply["code"] in ("unknown_role", "invalid_token") and close == 4001, \
                    (role_claim, reply)
            for sub, expected in (("x' OR '1'='1", ["odd"]),
                                  (f"' OR 1=1; DROP TABLE public.{sentinel}; --", []),
                                  ("alice", ["a"])):
                async with authed(token(r, sub=sub, extra={"nested": ["'", '"', "\\"]},
                                        **{"weird key'\"": 1})) as c:
                    await c.subscribe("s", table=f"public.{t}", snapshot=True)
                    rows = [x["body"] for x in c.kept_pushes("s")[0]["rows"]]
                    assert rows == expected, (sub, rows)
        run(body())


def test_notify_payloads_are_json_strings(sentinel):
    payloads = ['{"type":"welcome"}', '"', "\\", "\u0001\u001f", "</script><script>", "\u2028",
                "x" * 7000]

    async def body():
        async with client() as c:
            ch = f"payload{tag()}"
            await c.subscribe("c", channel=ch)
            for p in payloads:
                sql("SELECT pg_notify(%s, %s)", (ch, p))
                m = await c.next_push("c")
                assert m["type"] == "notify" and m["payload"] == p, m
    run(body())


def test_json_nesting_and_size_attacks(sentinel):
    async def body():
        async with client() as c:
            deep = '{"type":"ping","id":"d","x":' + "[" * 5000 + "]" * 5000 + "}"
            for raw in (deep, '{"type":"ping","id":"d","x":' + '{"a":' * 3000 + "1" + "}" * 3000 + "}",
                        '{"type":"ping","id":"dup","id":"dup2"}',
                        '{"type":"ping","type":"subscribe","id":"dup3","table":"public.items"}'):
                await c.send(raw)
                reply = await c.wait_for(lambda m: m["type"] not in ("change", "notify", "snapshot"),
                                         what="a reply")
                assert reply["type"] in ("pong", "error", "ack"), reply
            assert (await c.request({"type": "ping", "id": "p"}))["type"] == "pong"
    run(body())

