"""Filter operators (docs/PROTOCOL.md "Filters"): eq, neq, lt, lte, gt, gte, in, is,
like, ilike on columns of every kind (int, numeric, float, text, bool, timestamptz, date,
jsonb, null), applied alike to live changes and to snapshots; malformed operators answered
with bad_filter; operators with row-level security and column privileges.

Each case subscribes twice to one table (live, and with a snapshot of rows inserted before),
and compares the ids each receives with the ids worked out by hand below."""

import asyncio
import contextlib

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


# ----------------------------------------------------------------- the equality index
#
# Subscriptions with an equality filter are filed by (column, value) (src/filter_index.c):
# a change only visits the subscriptions its row values name, plus those with no equality
# filter. These tests check that every subscription still gets exactly what its filters
# say (docs/PROTOCOL.md "Filters and row images"), in order.

def _model_match(filt, row):
    """A filter of the shapes used below on a row dict: plain values, gte/lt, no filter."""
    if row is None:
        return False
    for col, cond in (filt or {}).items():
        v = row.get(col)
        if isinstance(cond, dict):
            if v is None or not (cond["gte"] <= v < cond["lt"]):
                return False
        elif v != cond:
            return False
    return True


def test_many_equality_filters_across_connections(res):
    """Four connections with 40 distinct equality filters each; the first two also have
    subscriptions with a range filter, no filter, or an equality on another column (so
    they are woken for every change), the other two have equalities only.  Each change
    reaches exactly the subscriptions whose filter matches its new row or (REPLICA
    IDENTITY FULL) its old row, once, in the connection's order of subscriptions."""
    t = res.table("id int PRIMARY KEY, k int, s text", prefix="flt")
    sql(f"ALTER TABLE public.{t} REPLICA IDENTITY FULL")
    nconn, nsub = 4, 40
    subs = []       # per connection: [(sub id, filter)] in subscription order
    for c in range(nconn):
        mixed = c < 2
        mine = [(f"all{c}", None)] if mixed else []
        for i in range(nsub):
            mine.append((f"k{c}_{i}", {"k": nsub * c + i}))
            if i == 10 and mixed:
                mine.append((f"range{c}", {"k": {"gte": nsub * c, "lt": nsub * c + 10}}))
            if i == 20:
                mine.append((f"two{c}", {"k": nsub * c + 7, "s": "b"}))
                if mixed:
                    mine += [(f"sx{c}", {"s": "x"}), (f"quote{c}", {"s": 'a"b'})]
        mine.append((f"end{c}", {"id": SENTINEL}))
        subs.append(mine)

    # (statement, op, new row, old row): old rows are whole (REPLICA IDENTITY FULL)
    rows = {}
    steps = []

    def insert(i, k, s):
        rows[i] = {"id": i, "k": k, "s": s}
        steps.append((f"INSERT INTO public.{t} VALUES ({i}, {k}, %s)", (s,), "INSERT",
                      dict(rows[i]), None))

    def update(i, **vals):
        old = dict(rows[i])
        rows[i].update(vals)
        sets = ", ".join(f"{c} = %s" for c in vals)
        steps.append((f"UPDATE public.{t} SET {sets} WHERE id = {i}", tuple(vals.values()),
                      "UPDATE", dict(rows[i]), old))

    def delete(i):
        steps.append((f"DELETE FROM public.{t} WHERE id = {i}", None, "DELETE", None,
                      rows.pop(i)))

    insert(1, 5, "a")
    insert(2, 45, "x")
    insert(3, 130, 'a"b')
    update(1, k=45)             # leaves k = 5 (its old row), enters k = 45
    update(2, k=1000)           # leaves k = 45 for a value nobody filters on
    update(3, s="x")            # k unchanged: k = 130 gets it once
    delete(3)
    insert(4, 7, "b")
    insert(5, 7, "c")           # k = 7 but not s = "b"
    insert(6, 2000, "z")
    update(4, k=8, s="x")
    insert(7, 85, "q")          # the equality-only connections
    update(7, k=3000)           # leaves k = 85: reaches k2_5 by its old row only
    insert(8, 127, "b")         # k3_7 and two3
    update(8, k=121)            # k3_7 and two3 by the old row, k3_1 by the new one
    update(8, s="b2")           # k3_1, by both rows: once
    delete(8)                   # k3_1
    insert(SENTINEL, -1, "end")

    expected = []               # per connection: [(step, sub)] in arrival order
    for mine in subs:
        want = []
        for n, (_, _, op, new, old) in enumerate(steps):
            for sub_id, filt in mine:
                if sub_id.startswith("end"):
                    continue        # its one change is taken by the wait for it
                if _model_match(filt, new) or (op != "INSERT" and _model_match(filt, old)):
                    want.append((n, sub_id))
        expected.append(want)
    # the filters do pick: most subscriptions get nothing
    assert sum(len(w) for w in expected) < 20 * len(steps)

    async def body():
        async with contextlib.AsyncExitStack() as stack:
            clients = []
            for mine in subs:
                c = await stack.enter_async_context(client())
                clients.append(c)
                for sub_id, filt in mine:
                    extra = {} if filt is None else {"filter": filt}
                    await c.subscribe(sub_id, table=f"public.{t}", **extra)
            for stmt, params, *_ in steps:
                sql(stmt, params)
            for n, c in enumerate(clients):
                await c.next_push(f"end{n}")
                await c.sync()
            # each step is one change: the unfiltered subscription of the first
            # connection numbers them
            step_of = {m["seq"]: i for i, m in enumerate(
                x for x in clients[0].inbox if x["type"] == "change" and x["sub"] == "all0")}
            assert len(step_of) == len(steps), step_of
            for n, c in enumerate(clients):
                got = [(step_of[m["seq"]], m["sub"]) for m in c.inbox if m["type"] == "change"]
                assert got == expected[n], (n, got, expected[n])
    run(body(), timeout=120)


def test_equality_index_keeps_the_order_of_queued_subscriptions(res):
    """A role that may read only some columns has each change queued per subscription as
    it is dispatched (not read from the log): subscriptions with an equality filter and
    others on one connection still get one event in the order they subscribed."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, k int, secret int", prefix="flt")
    sql(f'GRANT SELECT (id, k) ON public.{t} TO "{r}"')
    order = [("e1", {"k": 7}), ("w1", {"k": {"gte": 0}}), ("e2", {"k": 7}), ("u", None),
             ("e3", {"k": 8}), ("e4", {"id": 1}), ("w2", {"k": {"in": [7, 8]}}),
             ("end", {"id": SENTINEL})]

    async def body():
        async with authed(token(r)) as c:
            for sub_id, filt in order:
                extra = {} if filt is None else {"filter": filt}
                await c.subscribe(sub_id, table=f"public.{t}", **extra)
            sql(f"INSERT INTO public.{t} VALUES (1, 7, 0)")
            sql(f"INSERT INTO public.{t} VALUES (2, 8, 0)")
            sql(f"UPDATE public.{t} SET k = 9 WHERE id = 2")
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, -1, 0)")
            await c.next_push("end")
            got = [(m["sub"], m["change"]["op"], (m["change"].get("new") or {}).get("id"))
                   for m in c.kept_pushes() if m["type"] == "change"]
            assert got == [("e1", "INSERT", 1), ("w1", "INSERT", 1), ("e2", "INSERT", 1),
                           ("u", "INSERT", 1), ("e4", "INSERT", 1), ("w2", "INSERT", 1),
                           ("w1", "INSERT", 2), ("u", "INSERT", 2), ("e3", "INSERT", 2),
                           ("w2", "INSERT", 2),
                           # old has only the key: only the new row (k = 9) is compared
                           ("w1", "UPDATE", 2), ("u", "UPDATE", 2),
                           ("u", "INSERT", SENTINEL)], got
            assert all("secret" not in str(m) for m in c.kept_pushes()), c.kept_pushes()
    run(body())


# json values as committed (the change carries them verbatim), and filter operands as
# JSON text: equality is jsonb's (1 = 1.0 = 1e0 = 10e-1, "ab" = "a\u0062", -0 = 0)
JSON_ROWS = ["1", "1.00", "10e-1", "1E+0", "0", "-0.0", "100", "1e2", '"ab"', '"a\\u0062"',
             '"a\\"b"', '"1"', "true", "false", "null", '{"a": 1}', "[1]", None, '"é"',
             '"\\u00e9"']
JSON_FILTERS = ["1", "1.0", "1e0", "-0", "0.00", "1E2", '"ab"', '"a\\u0062"', '"a\\"b"',
                '"1"', "true", "false", "null", '"\\u00e9"']


def test_equality_compares_json_values_as_jsonb(res):
    """Equality filters on a json column: numbers numerically whatever their spelling,
    strings by their de-escaped text, a string never equal to a number; a number outside
    numeric's range, an object or an array equals no operand (and does not stop the
    changes after it)."""
    t = res.table("id int PRIMARY KEY, j json", prefix="flt")
    # what PostgreSQL's jsonb equality says for each pair (a SQL NULL renders as null)
    want = {}
    for fi, f in enumerate(JSON_FILTERS):
        want[fi] = {ri + 1 for ri, j in enumerate(JSON_ROWS)
                    if sql("SELECT coalesce(%s::jsonb, 'null'::jsonb) = %s::jsonb", (j, f))[0][0]}
    assert want[0] == {1, 2, 3, 4} and want[3] == {5, 6} and want[6] == {9, 10}, want

    async def body():
        async with client() as c:
            for fi, f in enumerate(JSON_FILTERS):
                # the operand as written, not as Python's json would spell it
                reply = await c.request('{"type": "subscribe", "id": "f%d", "table": "public.%s",'
                                        ' "filter": {"j": %s}}' % (fi, t, f))
                assert reply["type"] == "ack", (f, reply)
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            for ri, j in enumerate(JSON_ROWS):
                sql(f"INSERT INTO public.{t} VALUES (%s, %s)", (ri + 1, j))
            sql(f"INSERT INTO public.{t} VALUES (%s, '1e1000000')", (len(JSON_ROWS) + 1,))
            sql(f"INSERT INTO public.{t} VALUES (%s, '1')", (len(JSON_ROWS) + 2,))
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, %s)", ('"end"',))
            await c.next_push("end")
            failures = []
            for fi, f in enumerate(JSON_FILTERS):
                got = [m["change"]["new"]["id"] for m in c.kept_pushes(f"f{fi}")]
                w = sorted(want[fi] | ({len(JSON_ROWS) + 2} if fi in (0, 1, 2) else set()))
                if got != w:
                    failures.append((f, w, got))
            assert not failures, failures
    run(body(), timeout=120)


def test_equality_on_row_images_without_the_column(res):
    """The default replica identity: the old row of an UPDATE or a DELETE has only the key.
    An UPDATE is compared with its new row (and with the old one on the key); a DELETE
    reaches every subscription filtering on a column the old row lacks; TRUNCATE reaches
    every subscription."""
    t = res.table("id int PRIMARY KEY, k int", prefix="flt")
    subs = [("k5", {"k": 5}), ("k6", {"k": 6}), ("k9", {"k": 9}), ("id3", {"id": 3}),
            ("id4", {"id": 4})]

    async def body():
        async with client() as c:
            for sub_id, filt in subs:
                await c.subscribe(sub_id, table=f"public.{t}", filter=filt)
            sql(f"INSERT INTO public.{t} VALUES (1, 5)")
            sql(f"INSERT INTO public.{t} VALUES (3, 9)")
            sql(f"UPDATE public.{t} SET k = 6 WHERE id = 1")     # old {"id": 1}
            sql(f"UPDATE public.{t} SET id = 4 WHERE id = 3")    # old {"id": 3}
            sql(f"DELETE FROM public.{t} WHERE id = 1")          # old {"id": 1}
            sql(f"TRUNCATE public.{t}")
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, 0)")
            await c.next_push("end")
            got = {}
            for m in c.kept_pushes():
                if m["type"] == "change" and m["sub"] != "end":
                    ch = m["change"]
                    got.setdefault(m["sub"], []).append(
                        (ch["op"], (ch.get("new") or ch.get("old") or {}).get("id")))
            assert got == {
                "k5": [("INSERT", 1), ("DELETE", 1), ("TRUNCATE", None)],
                "k6": [("UPDATE", 1), ("DELETE", 1), ("TRUNCATE", None)],
                "k9": [("INSERT", 3), ("UPDATE", 4), ("DELETE", 1), ("TRUNCATE", None)],
                "id3": [("INSERT", 3), ("UPDATE", 4), ("TRUNCATE", None)],
                "id4": [("UPDATE", 4), ("TRUNCATE", None)],
            }, got
    run(body())


def op_visible_ids(pushes):
    """(op, visible, id) of each change pushed: id from its new row, else its key."""
    return [(m["change"]["op"], m["change"].get("visible", True),
             (m["change"].get("new") or m["change"].get("key") or {}).get("id"))
            for m in pushes]


def test_row_level_security_subscription_with_equality_filter(res):
    """A subscription under row-level security is never skipped for its filter: its
    changes go through the check (visibility.c), which sends an UPDATE that hides a row as
    visible:false whatever the filters say."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text NOT NULL, n int", prefix="flt")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 5)")

    async def body():
        async with authed(token(r, sub="alice")) as c:
            await c.subscribe("s", table=f"public.{t}", filter={"n": 1})
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            sql(f"INSERT INTO public.{t} VALUES (2, 'alice', 1), (3, 'alice', 2)")
            sql(f"UPDATE public.{t} SET owner = 'bob' WHERE id = 1")
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, 'alice', 0)")
            await c.next_push("end")
            got = op_visible_ids(c.kept_pushes("s"))
            assert got == [("INSERT", True, 2), ("UPDATE", False, 1)], got
    run(body())


def test_equality_filter_subscription_that_comes_under_row_level_security(res):
    """A subscription with an equality filter whose table enables row-level security
    while it is live: from then on its changes go through the check like any other's,
    the UPDATE that hides a row from it included, whatever its filter says."""
    r = res.role()
    t = res.table("id int PRIMARY KEY, owner text NOT NULL, n int", prefix="flt")
    sql(f'GRANT SELECT ON public.{t} TO "{r}"')
    sql(f"INSERT INTO public.{t} VALUES (1, 'alice', 5)")

    async def body():
        async with authed(token(r, sub="alice")) as c:
            await c.subscribe("s", table=f"public.{t}", filter={"n": 1})
            await c.subscribe("end", table=f"public.{t}", filter={"id": SENTINEL})
            sql(f"INSERT INTO public.{t} VALUES (2, 'bob', 1)")     # before: no policy
            sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING (owner = {CLAIMS_SUB})")
            sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
            sql(f"INSERT INTO public.{t} VALUES (3, 'bob', 1)")     # not alice's
            sql(f"UPDATE public.{t} SET owner = 'bob' WHERE id = 1")
            sql(f"INSERT INTO public.{t} VALUES ({SENTINEL}, 'alice', 0)")
            await c.next_push("end")
            got = op_visible_ids(c.kept_pushes("s"))
            assert got == [("INSERT", True, 2), ("UPDATE", False, 1)], got
    run(body())
