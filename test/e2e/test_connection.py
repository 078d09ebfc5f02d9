"""Connection basics (docs/PROTOCOL.md, "Connection", "ping") and static files over HTTP."""

import asyncio
import os
import urllib.request

from conftest import PORT, STATIC, URL, client, run


def test_welcome_shape():
    async def body():
        async with client() as c:
            w = c.welcome
            assert w["type"] == "welcome"
            assert w["protocol"] == 1
            assert isinstance(w["server"], str) and w["server"].startswith("plank/"), w
            assert isinstance(w["epoch"], str) and w["epoch"], w
            assert isinstance(w["seq"], int) and not isinstance(w["seq"], bool) and w["seq"] >= 0, w
    run(body())


def test_epoch_is_the_same_for_every_connection():
    async def body():
        async with client() as a, client() as b:
            assert a.welcome["epoch"] == b.welcome["epoch"]
    run(body())


def test_ping_pong_echoes_id():
    async def body():
        async with client() as c:
            reply = await c.request({"type": "ping", "id": "p1"})
            assert reply["type"] == "pong", reply
            assert reply["id"] == "p1", reply
            assert isinstance(reply["seq"], int) and reply["seq"] >= c.welcome["seq"], reply
            reply = await c.request({"type": "ping", "id": "p2"})
            assert reply["type"] == "pong" and reply["id"] == "p2", reply
    run(body())


def test_ping_without_id():
    async def body():
        async with client() as c:
            reply = await c.request({"type": "ping"})
            assert reply["type"] == "pong", reply
            assert reply.get("id") is None, reply
            assert isinstance(reply["seq"], int), reply
    run(body())


def test_websocket_ping_frame_gets_pong_frame():
    async def body():
        async with client() as c:
            waiter = await c.ws.ping(b"plank")
            await asyncio.wait_for(waiter, 5)
    run(body())


def test_any_path_upgrades_to_websocket():
    async def body():
        for path in ("/", "/some/other/path"):
            async with client(f"ws://127.0.0.1:{PORT}{path}") as c:
                assert c.welcome["type"] == "welcome"
                assert (await c.request({"type": "ping", "id": "x"}))["type"] == "pong"
    run(body())


def test_static_index_is_served():
    with urllib.request.urlopen(URL, timeout=10) as resp:
        assert resp.status == 200
        ctype = resp.headers.get("Content-Type", "")
        body = resp.read()
    assert ctype.startswith("text/html"), ctype
    index = os.path.join(STATIC, "index.html") if STATIC else ""
    if index and os.path.exists(index):
        with open(index, "rb") as f:
            assert body == f.read(), "GET / did not return plank.static_dir/index.html"
    else:
        assert body.strip(), "GET / returned an empty body"
