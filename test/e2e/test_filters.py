"""Filter operators (docs/PROTOCOL.md "Filters"): eq, neq, lt, lte, gt, gte, in, is,
like, ilike on columns of every kind (int, numeric, float, text, bool, timestamptz, date,
jsonb, null), applied alike to live changes and to snapshots; malformed operators answered
with bad_filter; operators with row-level security and column privileges.

Each case subscribes twice to one table (live, and with a snapshot of rows inserted before),
and compares the ids each receives with the ids worked out by hand below."""

import asyncio

import pytest

from conftest import client, run, sql
from helpers import authed, res, token  # noqa: F401

COLUMNS = ("id int PRIMARY KEY, n int, x numeric, f float8, s text, b boolean, "
           "ts timestamptz, d date, j jsonb")

# id, n, x, f, s, b, ts, d, j
ROWS = [
    (1, 1, 1.5, 0.1, "apple", True, "2026-01-01 00:00:00+00", "2026-01-01", '{"a": 1}'),
    (2, 5, 5, 5.0, "Banana", False, "2026-06-01 12:00:00+02", "2026-06-01", "null"),
    (3, 10, 10.25, "NaN", "b%nana", None, "infinity", None, "1"),
    (4, None, None, None, None, None, None, None, None),
    (5, -3, -0.5, -1e10, "a_b\\c", True, "2025-12-31 23:59:59.5+00", "2025-12-31", '"x"'),
    (6, 5, 5.000, 2.5, "b", False, "2026-06-01 10:00:00+00", "2026-06-02", "[1]"),
]
SENTINEL = 999

# (filter, ids expected); None as ids: worked out by PostgreSQL (see below)
CASES = [
    ({"n": {"gt": 4}}, {2, 3, 6}),
    ({"n": {"gte": 5, "lt": 10}}, {2, 6}),
    ({"n": {"lte": 1.0}}, {1, 5}),
    ({"n": {"neq": 5}}, {1, 3, 5}),                 # a NULL n is not "not 5"
    ({"n": {"in": [1, "5", None]}}, {1, 4}),        # "5" is not 5; null matches null
    ({"n": 5, "x": {"gt": 4.99}}, {2, 6}),
    ({"x": {"eq": 5.0}}, {2, 6}),                   # numerically equal
    ({"x": {"gt": 1.5}}, {2, 3, 6}),
    ({"x": {"lt": 0}}, {5}),
    ({"f": {"gt": 2.5}}, {2, 3}),                   # NaN sorts above every number
    ({"f": {"lt": 0.1}}, {5}),
    ({"f": {"lte": 0.1}}, {1, 5}),
    ({"s": {"lt": "b"}}, {1, 2, 5}),                # byte order: "B" < "a" < "b"
    ({"s": {"gte": "b"}}, {3, 6}),
    ({"s": {"neq": "b"}}, {1, 2, 3, 5}),
    ({"s": {"like": "b%"}}, {3, 6}),
    ({"s": {"ilike": "B%"}}, {2, 3, 6}),
    ({"s": {"like": "b\\%nana"}}, {3}),             # \% is a literal %
    ({"s": {"like": "_\\_b%"}}, {5}),               # \_ is a literal _
    ({"s": {"like": "a_b\\\\c"}}, {5}),             # \\ is a literal backslash
    ({"s": {"like": "%"}}, {1, 2, 3, 5, 6}),        # not NULL
    ({"s": {"is": None}}, {4}),
    ({"s": None}, {4}),
    ({"s": {"in": ["b", "apple", 1]}}, {1, 6}),
    ({"b": {"is": True}}, {1, 5}),
    ({"b": {"is": False}}, {2, 6}),
    ({"b": {"is": None}}, {3, 4}),
    ({"b": {"neq": True}}, {2, 6}),
    ({"b": False}, {2, 6}),
    ({"ts": {"gt": "2026-06-01T11:00:00+01:00"}}, {3}),      # = 10:00 UTC
    ({"ts": {"gte": "2026-06-01T11:00:00+01:00"}}, {2, 3, 6}),
    ({"ts": {"eq": "2026-06-01 10:00:00Z"}}, {2, 6}),         # the same instant
    ({"ts": "2026-06-01T12:00:00+02:00"}, {2, 6}),
    ({"ts": {"neq": "2026-06-01T10:00:00+00:00"}}, {1, 3, 5}),
    ({"ts": {"lt": "2026-01-01"}}, {5}),            # no offset: UTC
    ({"ts": {"in": ["2026-01-01T01:00:00+01:00", None]}}, {1, 4}),
    ({"d": {"gte": "2026-01-01"}}, {1, 2, 6}),
    ({"d": {"lt": "2026-06-02", "gt": "2025-12-31"}}, {1, 2}),
    ({"j": {"is": None}}, {2, 4}),                   # SQL NULL and the JSON null
    ({"j": {"neq": 1}}, {1, 5, 6}),
    ({"j": {"in": [1, "x"]}}, {3, 5}),
    ({"s": {"ilike": "BANANA"}}, {2}),
]

BAD = [
    {"n": {"foo": 1}},
    {"n": {}},
    {"n": [1]},
    {"n": {"in": []}},
    {"n": {"in": 1}},
    {"n": {"in": [[1]]}},
    {"n": {"gt": "a"}},
    {"n": {"gt": None}},
    {"n": {"gt": True}},
    {"n": {"neq": None}},
    {"n": {"like": "1%"}},
    {"s": {"gt": 1}},
    {"s": {"like": 5}},
    {"s": {"like": "ab\\"}},           # ends with the escape character
    {"b": {"gt": False}},
    {"b": {"is": 1}},
    {"j": {"gt": 1}},
    {"ts": {"gt": "not a time"}},
    {"ts": {"eq": "yesterday-ish"}},
    {"ts": {"gt": 5}},
    {"missing": {"gt": 1}},
    {"n": {"eq": {"a": 1}}},
]


def insert_rows(t, rows):
    for r in rows:
        sql(f"INSERT INTO public.{t} VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)", r)


def snapshot_ids(msgs, sub):
    snaps = [m for m in msgs if m.get("sub") == sub and m["type"] == "snapshot"]
    assert len(snaps) == 1, snaps
    return {r["id"] for r in snaps[0]["rows"]}


def test_operators_live_and_snapshot(res):
    t = res.table(COLUMNS, prefix="flt")
    before = res.table(COLUMNS, prefix="flts")
    insert_rows(before, ROWS)

    async def body():
        async with client() as c:
            for i, (filt, _) in enumerate(CASES):
                await c.subscribe(f"live{i}", table=f"public.{t}", filter=filt)
                await c.subscribe(f"snap{i}", table=f"public.{before}", filter=filt, snapshot=True)
            await c.subscribe("sentinel", table=f"public.{t}", filter={"id": SENTINEL})
            insert_rows(t, ROWS)
            insert_rows(t, [(SENTINEL,) + (None,) * 8])
            await c.next_push("sentinel")
            failures = []
            for i, (filt, want) in enumerate(CASES):
                live = {m["change"]["new"]["id"] for m in c.kept_pushes(f"live{i}")
                        if m["type"] == "change"} - {SENTINEL}
                snap = snapshot_ids(c.kept_pushes(f"snap{i}"), f"snap{i}")
                if live != want or snap != want:
                    failures.append((filt, want, live, snap))
            assert not failures, "\n".join(f"{f}: want {w}, live {l}, snapshot {s}"
                                           for f, w, l, s in failures)
    run(body(), timeout=120)


def test_bad_operators_are_bad_filter(res):
    t = res.table(COLUMNS, prefix="flt")

    async def body():
        async with client() as c:
            for i, filt in enumerate(BAD):
                for snapshot in (False, True):
                    reply = await c.request({"type": "subscribe", "id": f"b{i}",
                                             "table": f"public.{t}", "filter": filt,
                                             "snapshot": snapshot})
                    assert reply["type"] == "error" and reply["code"] == "bad_filter" \
                        and reply["id"] == f"b{i}", (filt, reply)
            # the connection is fine, and nothing was subscribed
            pong = await c.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
            insert_rows(t, ROWS)
            await asyncio.sleep(0.3)
            await c.sync()
            assert not c.kept_pushes(), c.kept_pushes()
    run(body())


def test_ilike_folds_case_as_the_database_does(res):
    """ilike lowers both sides as lower() does under the database's collation."""
    t = res.table("id int PRIMARY KEY, s text", prefix="flt")
    words = ["Ápfel", "ÁPFEL", "apfel", "äpfel"]
    want = {i + 1 for i, w in enumerate(words)
            if sql("SELECT %s ILIKE 'ápfel%%'", (w,))[0][0]}

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{t}", filter={"s": {"ilike": "ápfel%"}})
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            for i, w in enumerate(words):
                sql(f"INSERT INTO public.{t} VALUES (%s, %s)", (i + 1, w))
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, 'end')")
            await c.next_push("end")
            got = {m["change"]["new"]["id"] for m in c.kept_pushes("s")}
            assert got == want, (got, want)
            assert {1} <= got, got
    run(body())


def test_update_leaving_a_range_with_replica_identity_full(res):
    """An UPDATE is matched on its new row, or on its old row when that has the column."""
    t = res.table("id int PRIMARY KEY, n int", prefix="flt")
    sql(f"ALTER TABLE public.{t} REPLICA IDENTITY FULL")
    sql(f"INSERT INTO public.{t} VALUES (1, 10), (2, 1)")

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{t}", filter={"n": {"gte": 5}})
            sql(f"UPDATE public.{t} SET n = 2 WHERE id = 1")    # leaves the range
            sql(f"UPDATE public.{t} SET n = 3 WHERE id = 2")    # never in it
            sql(f"UPDATE public.{t} SET n = 7 WHERE id = 2")    # enters it
            a, b = await c.pushes("s", 2)
            assert (a["change"]["new"], a["change"]["old"]) == ({"id": 1, "n": 2}, {"id": 1, "n": 10}), a
            assert b["change"]["new"] == {"id": 2, "n": 7}, b
            await asyncio.sleep(0.3)
            await c.sync()
            assert not c.kept_pushes("s"), c.kept_pushes("s")
    run(body())


CLAIMS_SUB = "current_setting('request.jwt.claims', true)::jsonb ->> 'sub'"


def test_operators_after_row_level_security(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text NOT NULL, n int", prefix="flt")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 1), (2, 'alice', 9), (3, 'bob', 9)")

    async def body():
        async with authed(token(r, sub="alice")) as c:
            await c.subscribe("s", table=f"public.{t}", filter={"n": {"gt": 5}}, snapshot=True)
            snap = c.kept_pushes("s")[0]
            assert snap["type"] == "snapshot" and [row["id"] for row in snap["rows"]] == [2], snap
            c.inbox.clear()
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            sql(f"INSERT INTO public.{t} VALUES (4, 'alice', 2), (5, 'bob', 50), "
                f"(6, 'alice', 6), (7, 'carol', 7)")
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, 'alice', 0)")
            await c.next_push("end")
            got = [m["change"]["new"]["id"] for m in c.kept_pushes("s")]
            assert got == [6], got
    run(body())


def test_operators_respect_column_privileges(res):
    r = res.role()
    t = res.table("id int PRIMARY KEY, n int, secret int", prefix="flt")
    sql(f'GRANT SELECT (id, n) ON public.{t} TO "{r}"')

    async def body():
        async with authed(token(r)) as c:
            hidden = await c.request({"type": "subscribe", "id": "h", "table": f"public.{t}",
                                      "filter": {"secret": {"gt": 1}}})
            missing = await c.request({"type": "subscribe", "id": "h", "table": f"public.{t}",
                                       "filter": {"nothere": {"gt": 1}}})
            assert hidden["code"] == missing["code"] == "bad_filter", (hidden, missing)
            assert hidden["message"].replace("secret", "X") == \
                missing["message"].replace("nothere", "X"), (hidden, missing)
            await c.subscribe("s", table=f"public.{t}", filter={"n": {"in": [2, 3]}})
            sql(f"INSERT INTO public.{t} VALUES (1, 1, 2), (2, 2, 3), (3, 3, 1)")
            a, b = await c.pushes("s", 2)
            assert [a["change"]["new"], b["change"]["new"]] == [{"id": 2, "n": 2}, {"id": 3, "n": 3}]
    run(body())


def test_filters_are_shown_in_the_subscriptions_view(res):
    t = res.table("id int PRIMARY KEY, n int, s text", prefix="flt")

    async def body():
        async with client() as c:
            await c.subscribe("v", table=f"public.{t}",
                              filter={"n": {"gte": 2, "in": [3, 4]}, "s": {"like": "a%"}})
            rows = sql("SELECT filter FROM plank.subscriptions WHERE id = 'v' AND target LIKE %s",
                       (f"%{t}%",))
            assert rows and rows[0][0] == 'n in [3,4] AND n gte 2 AND s like "a%"', rows
    run(body())


@pytest.mark.parametrize("value", [1, 1.0, "1e0"])
def test_plain_value_is_still_equality(res, value):
    t = res.table("id int PRIMARY KEY, x numeric", prefix="flt")

    async def body():
        async with client() as c:
            await c.subscribe("s", table=f"public.{t}", filter={"x": value})
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            sql(f"INSERT INTO public.{t} VALUES (1, 1), (2, 1.00), (3, 2)")
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, 0)")
            await c.next_push("end")
            got = {m["change"]["new"]["id"] for m in c.kept_pushes("s")}
            assert got == (set() if isinstance(value, str) else {1, 2}), got
    run(body())
