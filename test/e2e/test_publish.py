"""Broadcast between clients (docs/PROTOCOL.md "publish"): a client granted it by
plank.grant_publish publishes a string to a channel; the channel's WebSocket subscribers
get a notify message with the sender's role and token sub attached by the server.
Without a grant the request is refused (permission_denied); fields a client adds to
claim another sender are ignored; a NOTIFY from SQL cannot pass as a publication; the
size limit answers payload_too_large and plank.rate_limit applies."""

import asyncio
import contextlib

import pytest
import websockets

from conftest import client, connect, run, sql, tag
from helpers import authed, plank_settings, res, token  # noqa: F401


@contextlib.contextmanager
def publish_grant(pattern, grantee):
    sql("SELECT plank.grant_publish(%s, %s)", (pattern, grantee))
    try:
        yield
    finally:
        sql("SELECT plank.revoke_publish(%s, %s)", (pattern, grantee))


async def publish(c, channel, payload, req_id="p1", **extra):
    msg = {"type": "publish", "id": req_id, "channel": channel, "payload": payload}
    msg.update(extra)
    return await c.request(msg)


def test_publish_without_a_grant_is_permission_denied(res):
    r = res.role()
    ch = f"chat_{tag()}"

    async def body():
        async with client() as watcher, authed(token(r, sub="alice")) as c:
            await watcher.subscribe("w", channel=ch)
            reply = await publish(c, ch, "hello")
            assert reply["type"] == "error" and reply["code"] == "permission_denied" \
                and reply["id"] == "p1", reply
            # the connection stays, and nothing reached the channel
            assert (await c.request({"type": "ping", "id": "x"}))["type"] == "pong"
            sql(f"NOTIFY {ch}, 'marker'")
            m = await watcher.next_push("w")
            assert m["payload"] == "marker", m
    run(body())


def test_published_message_carries_the_senders_role_and_sub(res):
    r = res.role()
    ch = f"chat_{tag()}"

    async def body():
        with publish_grant(ch, r):
            async with client() as watcher, authed(token(r, sub="alice")) as c:
                await watcher.subscribe("w", channel=ch)
                # forged sender fields are ignored
                reply = await publish(c, ch, "hi \"there\" \u00e9", role="postgres", sub="admin",
                                      publisher={"role": "postgres", "sub": "admin"})
                assert reply["type"] == "ack" and reply["request"] == "publish" \
                    and reply["id"] == "p1", reply
                m = await watcher.next_push("w")
                assert m["type"] == "notify" and m["channel"] == ch, m
                assert m["payload"] == "hi \"there\" \u00e9", m
                assert m["publisher"] == {"role": r, "sub": "alice"}, m
                assert isinstance(m["seq"], int) and m["epoch"] == watcher.welcome["epoch"], m
    run(body())


def test_publisher_without_sub_and_pattern_grants(res):
    r = res.role()
    base = f"room_{tag()}"

    async def body():
        with publish_grant(f"{base}_%", r):
            async with client() as watcher, authed(token(r)) as c:
                await watcher.subscribe("w", channel=f"{base}_1")
                assert (await publish(c, f"{base}_1", "a"))["type"] == "ack"
                other = await publish(c, f"other_{tag()}", "b")
                assert other["type"] == "error" and other["code"] == "permission_denied", other
                m = await watcher.next_push("w")
                assert m["payload"] == "a" and m["publisher"] == {"role": r, "sub": None}, m
    run(body())


def test_publish_reaches_the_publisher_and_other_subscribers_in_order(res):
    r = res.role()
    ch = f"chat_{tag()}"
    sql("SELECT plank.grant_channel(%s, %s)", (ch, r))

    async def body():
        try:
            with publish_grant(ch, r):
                async with authed(token(r, sub="a")) as a, authed(token(r, sub="b")) as b:
                    await a.subscribe("s", channel=ch)
                    await b.subscribe("s", channel=ch)
                    for i in range(5):
                        assert (await publish(a, ch, f"m{i}", req_id=f"p{i}"))["type"] == "ack"
                    got_a = [(await a.next_push("s"))["payload"] for _ in range(5)]
                    got_b = [(await b.next_push("s"))["payload"] for _ in range(5)]
                    assert got_a == got_b == [f"m{i}" for i in range(5)], (got_a, got_b)
        finally:
            sql("SELECT plank.revoke_channel(%s, %s)", (ch, r))
    run(body())


def test_sql_notify_cannot_pass_as_a_publication(res):
    """An ordinary role's NOTIFY with a publication's shape is a plain notification."""
    r = res.role(options="LOGIN")
    ch = f"chat_{tag()}"
    forged = '{"channel":"%s","role":"postgres","sub":"admin","payload":"x"}' % ch

    async def body():
        async with client() as watcher:
            await watcher.subscribe("w", channel=ch)
            conn = connect()
            with conn.cursor() as cur:
                cur.execute(f'SET ROLE "{r}"')
                cur.execute("SELECT pg_notify(%s, %s)", (ch, forged))
            conn.close()
            m = await watcher.next_push("w")
            assert m["payload"] == forged and "publisher" not in m, m
    run(body())


@pytest.mark.parametrize("msg,code", [
    ({"channel": "plank_x", "payload": "a"}, "bad_channel"),
    ({"channel": "", "payload": "a"}, "bad_channel"),
    ({"channel": "c" * 64, "payload": "a"}, "bad_channel"),
    ({"channel": "chat"}, "invalid_message"),
    ({"channel": "chat", "payload": {"a": 1}}, "invalid_message"),
    ({"payload": "a"}, "invalid_message"),
])
def test_malformed_publish(msg, code):
    async def body():
        async with client() as c:
            reply = await c.request(dict({"type": "publish", "id": "m"}, **msg))
            assert reply["type"] == "error" and reply["code"] == code and reply["id"] == "m", reply
    run(body())


def test_publish_size_limit():
    ch = f"chat_{tag()}"

    async def body():
        async with client() as c:
            await c.subscribe("w", channel=ch)
            big = await publish(c, ch, "x" * 7999)
            assert big["type"] == "error" and big["code"] == "payload_too_large", big
            # escapes count: 2,000 quotes are 4,000 bytes as a JSON string
            esc = await publish(c, ch, '"' * 4000)
            assert esc["type"] == "error" and esc["code"] == "payload_too_large", esc
            text = "y" * 7800
            ok = await publish(c, ch, text)
            assert ok["type"] == "ack", ok
            m = await c.next_push("w")
            assert m["payload"] == text and m["publisher"]["role"] == "postgres", m
    run(body())


def test_publish_counts_against_the_rate_limit():
    ch = f"chat_{tag()}"
    with plank_settings({"plank.rate_limit": "5"}):
        async def body():
            async with client() as c:
                # rate_limit = 5 (bursts of 10): 11 publishes at once, the last one past
                # the burst (more might see the TCP connection reset instead of the close)
                for i in range(11):
                    try:
                        await c.send({"type": "publish", "id": f"p{i}", "channel": ch,
                                      "payload": "x"})
                    except websockets.ConnectionClosed:
                        break
                assert await c.expect_close() == 1008
        run(body())
