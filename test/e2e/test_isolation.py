"""A misbehaving client is closed (or answered with an error) without disturbing other
clients (docs/PROTOCOL.md, "Close codes")."""

import asyncio
import json

import pytest
import websockets

from conftest import client, run, tag


async def observer_still_receives(db, observers):
    """Insert a row; every observer (subscribed to items as "obs") gets its change."""
    name = tag()
    await asyncio.to_thread(db.insert_item, name)
    for o in observers:
        m = await o.change_named("obs", name)
        assert m["change"]["op"] == "INSERT"


async def send_and_expect_close(bad, send):
    """Send something bad; return the close code the server sends."""
    try:
        await send()
    except websockets.ConnectionClosed:
        pass  # closed while we were still sending: the code is read below
    return await bad.expect_close(timeout=10)


def oversized_message():
    # plank.max_message_size defaults to 64 kB
    return json.dumps({"type": "ping", "id": "big", "pad": "x" * (70 * 1024)})


CLOSE_CASES = [
    ("binary-frame", 1003, lambda ws: ws.send(b'{"type":"ping","id":"b"}')),
    ("oversized-message", 1009, lambda ws: ws.send(oversized_message())),
    ("invalid-utf8", 1007,
     lambda ws: ws.write_frame(True, websockets.frames.Opcode.TEXT, b'{"type":"ping","id":"\xc3\x28"}')),
]


@pytest.mark.parametrize("code,sender", [c[1:] for c in CLOSE_CASES],
                         ids=[c[0] for c in CLOSE_CASES])
def test_bad_frame_closes_only_that_client(db, code, sender):
    async def body():
        async with client() as obs, client() as bystander, client() as bad:
            await obs.subscribe("obs", table="public.items")
            await bystander.subscribe("obs", table="public.items")
            await bad.subscribe("obs", table="public.items")
            got = await send_and_expect_close(bad, lambda: sender(bad.ws))
            assert got == code, f"expected close code {code}, got {got}"
            await observer_still_receives(db, [obs, bystander])
            pong = await bystander.request({"type": "ping", "id": "alive"})
            assert pong["type"] == "pong"
    run(body())


def test_message_just_under_the_limit_is_accepted():
    async def body():
        async with client() as c:
            msg = json.dumps({"type": "ping", "id": "near", "pad": "x" * (60 * 1024)})
            reply = await c.request(msg)
            assert reply["type"] == "pong" and reply["id"] == "near", reply
    run(body())


def test_invalid_json_keeps_connection_open_and_others_untouched(db):
    async def body():
        async with client() as obs, client() as sloppy:
            await obs.subscribe("obs", table="public.items")
            await sloppy.subscribe("obs", table="public.items")
            for raw in ('{"type":', "not json at all", "[1,2]"):
                reply = await sloppy.request(raw)
                assert reply["type"] == "error" and reply["code"] == "malformed_json", reply
            # the sloppy client keeps its subscription and gets changes, like the observer
            await observer_still_receives(db, [obs, sloppy])
    run(body())
