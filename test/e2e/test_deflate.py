"""permessage-deflate (RFC 7692, plank.permessage_deflate): off by default; when on, a
client that offers it gets compressed messages that decompress to exactly what a plain
client receives, in far fewer bytes on the wire. Needs two PostgreSQL restarts (the
setting is read at server start); marked disruptive, so it runs after every other test
(conftest.DISRUPTIVE_STAGES gives the order), and leaves the cluster as it found it."""

import asyncio
import base64
import json
import os
import socket
import time

import pytest
import websockets

from conftest import DATADIR, PORT, WS_URL, restart_postgres, run, sql, tag

pytestmark = [pytest.mark.skipif(not DATADIR, reason="PLANK_DATADIR is not set (run through scripts/test.sh)"),
              pytest.mark.disruptive("deflate")]


def raw_client(offer_deflate):
    """A WebSocket handshake by hand (to count the bytes on the wire), then a subscribe to
    public.items; returns (socket, the response's Sec-WebSocket-Extensions or None)."""
    s = socket.create_connection(("127.0.0.1", PORT), timeout=10)
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /ws HTTP/1.1\r\nHost: 127.0.0.1:{PORT}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n")
    if offer_deflate:
        req += "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    s.sendall((req + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(4096)
    head = buf.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("HTTP/1.1 101"), head
    ext = None
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        if k.strip().lower() == "sec-websocket-extensions":
            ext = v.strip()
    msg = json.dumps({"type": "subscribe", "id": "s", "table": "public.items"}).encode()
    mask = os.urandom(4)
    s.sendall(bytes([0x81, 0x80 | len(msg)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(msg)))
    time.sleep(0.5)
    s.setblocking(False)
    try:  # the welcome and the ack
        while s.recv(65536):
            pass
    except BlockingIOError:
        pass
    return s, ext


def wire_bytes(s, quiet=1.5):
    """Bytes received until the socket stays quiet for `quiet` seconds."""
    n = 0
    s.settimeout(quiet)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                break
            n += len(d)
    except socket.timeout:
        pass
    return n


def test_not_offered_by_default():
    s, ext = raw_client(True)
    s.close()
    assert ext is None, f"permessage-deflate accepted while plank.permessage_deflate is off: {ext}"


def test_permessage_deflate_when_on():
    restart_postgres({"plank.permessage_deflate": "on"})
    try:
        name = tag()
        comp, ext = raw_client(True)
        plain, ext_plain = raw_client(False)
        assert ext is not None and ext.startswith("permessage-deflate"), ext
        assert ext_plain is None, ext_plain

        async def decoded():
            """What a client with compression (python websockets' default) gets."""
            async with websockets.connect(WS_URL, max_size=None, compression="deflate") as ws:
                assert "permessage-deflate" in (ws.response_headers.get("Sec-WebSocket-Extensions") or "")
                await ws.recv()
                await ws.send(json.dumps({"type": "subscribe", "id": "s", "table": "public.items",
                                          "filter": {"name": name}}))
                await ws.recv()
                await asyncio.to_thread(
                    sql, "INSERT INTO items (name, value) SELECT %s, g FROM generate_series(1, 500) g",
                    (name,))
                return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(500)]

        msgs = run(decoded())
        assert [m["change"]["new"]["value"] for m in msgs] == list(range(1, 501))
        assert msgs[-1].get("commit") is True and all("commit" not in m for m in msgs[:-1])
        n_comp, n_plain = wire_bytes(comp), wire_bytes(plain)
        comp.close()
        plain.close()
        # 500 similar rows: compression must save most of the bytes (measured: ~90%)
        assert n_plain > 50000 and n_comp < n_plain / 3, (n_comp, n_plain)
    finally:
        restart_postgres({"plank.permessage_deflate": None})
