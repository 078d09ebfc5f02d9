"""Error replies: every code of the table in docs/PROTOCOL.md that a client can cause,
and requests crafted as SQL injection."""

import asyncio
import json
import time

import pytest

from conftest import client, run, sql, tag

ANY = object()  # do not check the echoed id
NO_ID = None    # the error must not carry an id


@pytest.fixture(scope="module", autouse=True)
def untracked_table():
    sql("CREATE TABLE IF NOT EXISTS public.e2e_untracked (id int PRIMARY KEY, name text)")
    sql("SELECT plank.untrack('public.e2e_untracked')")


def sub(sid, **kw):
    return json.dumps({"type": "subscribe", "id": sid, **kw})


CASES = [
    # malformed_json: not JSON, or not a JSON object
    ("truncated-object", '{"type":', "malformed_json", NO_ID),
    ("array", "[1,2]", "malformed_json", NO_ID),
    ("string", '"hello"', "malformed_json", NO_ID),
    ("number", "42", "malformed_json", NO_ID),
    ("null", "null", "malformed_json", NO_ID),
    ("empty", "", "malformed_json", NO_ID),
    ("trailing-garbage", '{"type":"ping","id":"x"} x', "malformed_json", ANY),
    # invalid_message: a member missing or of the wrong type or value
    ("subscribe-without-id", json.dumps({"type": "subscribe", "table": "public.items"}),
     "invalid_message", NO_ID),
    ("table-and-channel", sub("both", table="public.items", channel="chat"),
     "invalid_message", "both"),
    ("neither-table-nor-channel", sub("neither"), "invalid_message", "neither"),
    ("id-not-a-string", json.dumps({"type": "ping", "id": 5}), "invalid_message", ANY),
    ("id-empty", json.dumps({"type": "ping", "id": ""}), "invalid_message", ANY),
    ("id-too-long", json.dumps({"type": "ping", "id": "i" * 65}), "invalid_message", ANY),
    ("ops-empty", sub("o1", table="public.items", ops=[]), "invalid_message", "o1"),
    ("ops-unknown", sub("o2", table="public.items", ops=["UPSERT"]), "invalid_message", "o2"),
    ("ops-not-array", sub("o3", table="public.items", ops="INSERT"), "invalid_message", "o3"),
    ("table-not-string", sub("t1", table=5), "invalid_message", "t1"),
    ("channel-not-string", sub("c1", channel=5), "invalid_message", "c1"),
    ("unsubscribe-without-id", json.dumps({"type": "unsubscribe"}), "invalid_message", NO_ID),
    ("type-missing", json.dumps({"id": "nt"}), "invalid_message", "nt"),
    # unknown_type
    ("unknown-type", json.dumps({"type": "hello", "id": "u1"}), "unknown_type", "u1"),
    # unknown_table: no such table, or not a valid qualified name
    ("no-such-table", sub("x1", table="public.e2e_no_such_table"), "unknown_table", "x1"),
    ("no-such-unqualified", sub("x2", table="e2e_no_such_table"), "unknown_table", "x2"),
    ("no-such-schema", sub("x3", table="e2e_no_schema.items"), "unknown_table", "x3"),
    ("three-part-name", sub("x4", table="a.b.c"), "unknown_table", "x4"),
    ("unterminated-quote", sub("x5", table='"items'), "unknown_table", "x5"),
    # untracked_table
    ("untracked", sub("u", table="public.e2e_untracked"), "untracked_table", "u"),
    # bad_filter
    ("filter-unknown-column", sub("f1", table="public.items", filter={"nope": 1}),
     "bad_filter", "f1"),
    ("filter-object-value", sub("f2", table="public.items", filter={"name": {"a": 1}}),
     "bad_filter", "f2"),
    ("filter-array-value", sub("f3", table="public.items", filter={"name": [1]}),
     "bad_filter", "f3"),
    ("filter-not-object", sub("f4", table="public.items", filter="name"), "bad_filter", "f4"),
    ("filter-array", sub("f5", table="public.items", filter=["name"]), "bad_filter", "f5"),
    # SQL injection attempts in names: plain errors
    ("inject-table", sub("i1", table="items; DROP TABLE items"), "unknown_table", "i1"),
    ("inject-qualified", sub("i2", table="public.items; DROP TABLE items"),
     "unknown_table", "i2"),
    ("inject-quoted", sub("i3", table='"items""; DROP TABLE items; --"'), "unknown_table", "i3"),
    ("inject-filter-column", sub("i4", table="public.items",
                                 filter={"name = name; DROP TABLE items; --": 1}),
     "bad_filter", "i4"),
]


@pytest.mark.parametrize("raw,code,echo", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_error_reply(raw, code, echo):
    async def body():
        async with client() as c:
            reply = await c.request(raw)
            assert reply["type"] == "error", f"request {raw[:100]!r} got {reply}"
            assert reply["code"] == code, f"request {raw[:100]!r} got {reply}"
            assert isinstance(reply.get("message"), str) and reply["message"], reply
            if echo is NO_ID:
                assert reply.get("id") is None, f"no id was sent, yet the error has one: {reply}"
            elif echo is not ANY:
                assert reply.get("id") == echo, f"the error does not echo id {echo!r}: {reply}"
            # the connection stays open and usable
            pong = await c.request({"type": "ping", "id": "after"})
            assert pong["type"] == "pong" and pong["id"] == "after", pong
    run(body())


def test_items_survive_injection_attempts():
    assert sql("SELECT to_regclass('public.items') IS NOT NULL")[0][0]


def test_filter_value_with_sql_matches_nothing(db):
    evil = "x'); DROP TABLE items; --"
    marker = tag()

    async def body():
        async with client() as c:
            await c.subscribe("evil", table="public.items", filter={"name": evil})
            await c.subscribe("all", table="public.items")
            await asyncio.to_thread(db.insert_item, marker)
            await c.change_named("all", marker)
            await c.sync()
            assert c.kept_pushes("evil") == []
    run(body())
    assert db.scalar("SELECT to_regclass('public.items') IS NOT NULL")
    assert db.scalar("SELECT count(*) FROM items WHERE name = %s", (marker,)) == 1


def test_unknown_subscription():
    async def body():
        async with client() as c:
            reply = await c.request({"type": "unsubscribe", "id": "nope"})
            assert reply["type"] == "error" and reply["code"] == "unknown_subscription", reply
            assert reply["id"] == "nope", reply
            # an id that was subscribed and then unsubscribed is unknown again
            await c.subscribe("s", table="public.items")
            await c.unsubscribe("s")
            reply = await c.request({"type": "unsubscribe", "id": "s"})
            assert reply["type"] == "error" and reply["code"] == "unknown_subscription", reply
    run(body())


def test_subscriptions_are_per_connection():
    async def body():
        async with client() as a, client() as b:
            await a.subscribe("same", table="public.items")
            await b.subscribe("same", table="public.items")  # not a duplicate: other connection
            reply = await b.request({"type": "unsubscribe", "id": "other"})
            assert reply["code"] == "unknown_subscription", reply
    run(body())


def test_duplicate_subscription(db):
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("dup", table="public.items")
            for req in ({"type": "subscribe", "id": "dup", "table": "public.items"},
                        {"type": "subscribe", "id": "dup", "channel": "chat"}):
                reply = await c.request(req)
                assert reply["type"] == "error", reply
                assert reply["code"] == "duplicate_subscription", reply
                assert reply["id"] == "dup", reply
            # the first subscription still works, and is delivered once
            await asyncio.to_thread(db.insert_item, name)
            m = await c.next_push("dup")
            assert m["change"]["new"]["name"] == name
            await c.sync()
            assert c.kept_pushes() == []
    run(body())


async def _subscribe_three():
    """Subscribe three times on one new connection; return the third reply."""
    async with client() as c:
        await c.subscribe("s1", table="public.items")
        await c.subscribe("s2", channel="e2e_limit")
        return await c.request({"type": "subscribe", "id": "s3", "table": "public.items"})


def _reload_max_subscriptions(value):
    if value is None:
        sql("ALTER SYSTEM RESET plank.max_subscriptions")
    else:
        sql(f"ALTER SYSTEM SET plank.max_subscriptions = {int(value)}")
    sql("SELECT pg_reload_conf()")


def test_too_many_subscriptions():
    _reload_max_subscriptions(2)
    try:
        # the worker applies the new value when it handles SIGHUP: poll, bounded
        deadline = time.monotonic() + 15
        while True:
            reply = run(_subscribe_three(), timeout=20)
            if reply["type"] == "error" or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        assert reply["type"] == "error", \
            f"with plank.max_subscriptions = 2 a third subscription got {reply} (15 s after reload)"
        assert reply["code"] == "too_many_subscriptions" and reply["id"] == "s3", reply

        async def body():
            async with client() as c:
                await c.subscribe("s1", table="public.items")
                await c.subscribe("s2", table="public.items")
                r = await c.request({"type": "subscribe", "id": "s3", "channel": "x"})
                assert r["code"] == "too_many_subscriptions", r
                await c.unsubscribe("s2")
                await c.subscribe("s3", channel="x")  # a slot is free again
        run(body())
    finally:
        _reload_max_subscriptions(None)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if run(_subscribe_three(), timeout=20)["type"] == "ack":
                break
            time.sleep(0.1)
