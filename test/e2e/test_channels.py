"""NOTIFY channel subscriptions (docs/PROTOCOL.md, "subscribe to a NOTIFY channel")."""

import asyncio

import pytest

from conftest import client, run, tag


def test_pg_notify_arrives_as_notify_message(db):
    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            ack = await c.subscribe("c1", channel="chat")
            pid = (await asyncio.to_thread(
                db.query, "SELECT pg_backend_pid(), pg_notify('chat', 'hi')"))[0][0]
            m = await c.next_push("c1")
            expected = {"sub": "c1", "type": "notify", "epoch": epoch,
                        "channel": "chat", "payload": "hi", "pid": pid}
            assert {k: m.get(k) for k in expected} == expected, m
            assert isinstance(m["seq"], int) and m["seq"] > ack["seq"], m
    run(body())


def test_notify_statement_and_payload_kept_as_string(db):
    payload = '{"not": "parsed", "n": 1}'

    async def body():
        async with client() as c:
            await c.subscribe("c", channel="e2e_chan")
            await asyncio.to_thread(db.execute, "NOTIFY e2e_chan, '" + payload.replace("'", "''") + "'")
            await asyncio.to_thread(db.execute, "NOTIFY e2e_chan")
            first, second = await c.pushes("c", 2)
            assert first["type"] == "notify" and first["channel"] == "e2e_chan"
            assert first["payload"] == payload, "the payload must be the JSON string, unparsed"
            assert second["payload"] == "", second
            assert second["seq"] == first["seq"] + 1
    run(body())


def test_other_channels_are_not_delivered(db):
    async def body():
        async with client() as c:
            await c.subscribe("mine", channel="e2e_mine")
            await asyncio.to_thread(db.execute, "SELECT pg_notify('e2e_other', 'no')")
            await asyncio.to_thread(db.execute, "SELECT pg_notify('e2e_mine', 'yes')")
            m = await c.next_push("mine")
            assert m["payload"] == "yes", m
            await c.sync()
            assert c.kept_pushes() == []
    run(body())


def test_table_changes_and_channels_share_one_sequence(db):
    name = tag()

    async def body():
        async with client() as c:
            await c.subscribe("t", table="public.items", filter={"name": name})
            await c.subscribe("c", channel="e2e_seq")
            await asyncio.to_thread(db.insert_item, name)
            await asyncio.to_thread(db.execute, "SELECT pg_notify('e2e_seq', 'x')")
            t = await c.next_push("t")
            n = await c.next_push("c")
            assert n["seq"] == t["seq"] + 1, (t, n)
    run(body())


@pytest.mark.parametrize("channel", ["plank", "", "x" * 64],
                         ids=["reserved", "empty", "too-long"])
def test_bad_channel(channel):
    async def body():
        async with client() as c:
            reply = await c.request({"type": "subscribe", "id": "bad", "channel": channel})
            assert reply["type"] == "error" and reply["code"] == "bad_channel", reply
            assert reply["id"] == "bad" and isinstance(reply["message"], str), reply
            assert (await c.request({"type": "ping", "id": "still"}))["type"] == "pong"
    run(body())


def test_channel_name_of_63_bytes_is_accepted(db):
    channel = "c" * 63

    async def body():
        async with client() as c:
            await c.subscribe("long", channel=channel)
            await asyncio.to_thread(db.execute, "SELECT pg_notify(%s, 'ok')", (channel,))
            m = await c.next_push("long")
            assert m["channel"] == channel and m["payload"] == "ok"
    run(body())


def test_channel_name_with_sql_is_just_a_name(db):
    channel = "e2e'; DROP TABLE items; --"

    async def body():
        async with client() as c:
            await c.subscribe("inj", channel=channel)
            await asyncio.to_thread(db.execute, "SELECT pg_notify(%s, 'ok')", (channel,))
            m = await c.next_push("inj")
            assert m["channel"] == channel
    run(body())
    assert db.scalar("SELECT to_regclass('public.items') IS NOT NULL")
