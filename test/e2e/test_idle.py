"""Idle policy (docs/PROTOCOL.md, after "Close codes"): a connection silent for
plank.ping_interval is sent a WebSocket ping, and dropped when nothing valid arrives within
plank.ping_timeout more, as when a client's network went away without a close. Traffic
keeps a connection: answered pings, or application-level ping requests. Both settings are
1 s here (reloaded, and reset afterwards)."""

import asyncio
import json
import re
import select
import socket
import time

import pytest

from conftest import LOGFILE, PORT, RawWebSocket, ServerLog, client, poll, run, set_settings


@pytest.fixture(scope="module", autouse=True)
def fast_pings():
    set_settings({"plank.ping_interval": "1s", "plank.ping_timeout": "1s"})
    yield
    set_settings({"plank.ping_interval": None, "plank.ping_timeout": None})


def wait_peer_closed(sock, timeout):
    """Wait, without reading, until the peer closed the TCP connection (POLLRDHUP/HUP);
    returns the seconds waited, or None on timeout."""
    p = select.poll()
    p.register(sock, select.POLLRDHUP | select.POLLHUP | select.POLLERR)
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if p.poll(100):
            return time.monotonic() - started
    return None


def drain(raw, timeout=5, total=10):
    """Read a raw client's frames until the connection ends, `timeout` passes without
    data, or `total` seconds in all: [(opcode, payload)]."""
    frames = []
    deadline = time.monotonic() + total
    raw.s.settimeout(timeout)
    try:
        while time.monotonic() < deadline:
            frames.append(raw.recv_frame())
    except (EOFError, ConnectionResetError, socket.timeout):
        pass
    return frames


def last_connection_id(log):
    ids = re.findall(r"plank connection (\d+) from", log.text())
    return ids[-1] if ids else None


def test_silent_client_is_dropped_after_interval_plus_timeout():
    """Handshake, then never read nor answer pings: dropped after about 1 s + 1 s. The
    socket is watched for the peer's close without reading it."""
    log = ServerLog()
    raw = RawWebSocket(PORT)
    try:
        conn_id = poll(lambda: last_connection_id(log), 5, 0.05,
                       "the connection in the server log") if LOGFILE else None
        waited = wait_peer_closed(raw.s, 10)
        assert waited is not None, "the silent client was not dropped within 10 s"
        print(f"silent client dropped after {waited:.2f} s")
        assert 1.0 <= waited <= 5.0, f"dropped after {waited:.2f} s, not about 2 s"
        frames = drain(raw)
        assert frames and frames[0][0] == 1 and \
            json.loads(frames[0][1])["type"] == "welcome", frames[:2]
        assert any(op == 9 for op, _ in frames), \
            f"the server did not ping the silent client: {[op for op, _ in frames]}"
        if conn_id:
            poll(lambda: f"plank disconnection {conn_id} from" in log.text(), 5, 0.05,
                 f"'plank disconnection {conn_id}' in the server log")
    finally:
        raw.close()


def test_client_answering_pings_stays_connected():
    async def library_client():
        # the websockets library answers pings on its own
        async with client() as c:
            await c.subscribe("items", table="public.items")
            await asyncio.sleep(3.0)
            pong = await c.request({"type": "ping", "id": "still-here"})
            assert pong["type"] == "pong", pong
    run(library_client())

    raw = RawWebSocket(PORT)
    try:
        deadline = time.monotonic() + 3.0
        pings = 0
        raw.s.settimeout(0.5)
        while time.monotonic() < deadline:
            try:
                op, payload = raw.recv_frame()
            except socket.timeout:
                continue
            assert op != 8, "a client that answers pings was closed"
            if op == 9:
                pings += 1
                raw.send_pong(payload)
        assert pings >= 1, "no ping in 3 s with plank.ping_interval = 1s"
        raw.send_text(json.dumps({"type": "ping", "id": "raw"}))
        raw.s.settimeout(5)
        while True:
            op, payload = raw.recv_frame()
            if op == 1:
                assert json.loads(payload)["type"] == "pong"
                break
            if op == 9:
                raw.send_pong(payload)
    finally:
        raw.close()


def test_application_level_pings_count_as_traffic():
    """PROTOCOL.md: "an application-level `ping` request also counts as traffic". A client
    that sends one every 0.5 s, and does not answer WebSocket pings, stays connected."""
    raw = RawWebSocket(PORT)
    try:
        started = time.monotonic()
        n = 0
        while time.monotonic() - started < 3.0:
            n += 1
            try:
                raw.send_text(json.dumps({"type": "ping", "id": f"app-{n}"}))
            except (BrokenPipeError, ConnectionResetError):
                raise AssertionError(
                    f"a client sending a ping request every 0.5 s (and not answering "
                    f"WebSocket pings) was dropped after {time.monotonic() - started:.1f} s: "
                    f"application-level pings do not count as traffic") from None
            time.sleep(0.5)
        frames = drain(raw, timeout=0.3, total=1)  # what arrived so far
        ops = [op for op, _ in frames]
        assert 8 not in ops, f"closed although it sent a ping request every 0.5 s: {ops}"
        pongs = [p for op, p in frames if op == 1 and b'"pong"' in p]
        assert len(pongs) == n, f"{n} ping requests, {len(pongs)} pongs"
        assert wait_peer_closed(raw.s, 0.1) is None, "the connection was dropped"
    finally:
        raw.close()


def test_pings_turned_off_by_a_reload_drop_nobody():
    """A client silent since before plank.ping_interval was reloaded to 0 is not dropped:
    its timer of the old policy may still ping it once, but the hang-up that follows is
    no longer due (libwebsockets' validity timer is rescheduled far away, not to 'now')."""
    set_settings({"plank.ping_interval": "4s", "plank.ping_timeout": "1s"})
    raw = RawWebSocket(PORT)
    try:
        set_settings({"plank.ping_interval": "0"})
        waited = wait_peer_closed(raw.s, 8)
        assert waited is None, \
            f"a silent client was dropped {waited:.1f} s after pings were turned off"
        raw.send_text(json.dumps({"type": "ping", "id": "after-reload"}))
        frames = drain(raw, timeout=1, total=3)
        assert any(op == 1 and b'"after-reload"' in p for op, p in frames), \
            [op for op, _ in frames]
    finally:
        raw.close()
        set_settings({"plank.ping_interval": "1s", "plank.ping_timeout": "1s"})
