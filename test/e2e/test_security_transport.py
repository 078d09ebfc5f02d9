"""Transport security (docs/SECURITY.md "Transport", docs/PROTOCOL.md): the Origin check
of the handshake, plank.max_connections, plank.rate_limit (close 1008), a flood of
garbage connections, static files and HTTP security headers.

Oversized messages (close 1009) are covered by test_isolation.py."""

import asyncio
import os
import random
import time
import urllib.error
import urllib.request

import pytest
import websockets

from conftest import PORT, URL, WS_URL, Closed, client, poll, run, sql, tag, worker_pids
from helpers import open_client, plank_settings, raw_handshake, send_auth, token

SELF_ORIGIN = f"http://127.0.0.1:{PORT}"
HOST = f"127.0.0.1:{PORT}"


async def handshake_status(origin=None):
    """The HTTP status of a handshake with this Origin (none when None): 101, then checked
    with a real client that gets its welcome and a pong, or the refusal's status (sent as
    HTTP/1.0, which the websockets client does not parse)."""
    headers = [("Host", HOST)] + ([("Origin", origin)] if origin is not None else [])
    status = await asyncio.get_running_loop().run_in_executor(None, raw_handshake, headers)
    if status != 101:
        return status
    c = await open_client(origin=origin, timeout=5)
    try:
        pong = await c.request({"type": "ping", "id": "p"})
        assert pong["type"] == "pong", pong
        return 101
    finally:
        await c.close()


async def try_open():
    """A client, or the HTTP status of a refused handshake."""
    try:
        return await open_client(timeout=5)
    except (websockets.InvalidStatusCode, websockets.InvalidMessage):
        return await asyncio.get_running_loop().run_in_executor(
            None, raw_handshake, [("Host", HOST)])


# --------------------------------------------------------------------------- Origin


def test_foreign_origin_is_refused():
    async def body():
        for origin in ("http://evil.example", f"http://evil.example:{PORT}",
                       f"http://localhost:{PORT}",          # another origin, same machine
                       f"http://127.0.0.1:{PORT + 1}",      # another port
                       f"http://127.0.0.1:{PORT}.evil.example",
                       "null", "file://"):
            status = await handshake_status(origin=origin)
            assert status == 403, f"Origin {origin!r}: status {status}"
    run(body())


def test_refused_origin_gets_no_welcome():
    status = raw_handshake([("Host", HOST), ("Origin", "http://evil.example")])
    assert status == 403, status


def test_own_origin_and_no_origin_are_accepted():
    async def body():
        assert await handshake_status(origin=SELF_ORIGIN) == 101
        assert await handshake_status(origin=SELF_ORIGIN.upper().replace("HTTP", "http")) == 101
        # either scheme with the server's own host (SECURITY.md: a TLS-terminating proxy)
        assert await handshake_status(origin=f"https://127.0.0.1:{PORT}") == 101
        assert await handshake_status() == 101   # no Origin: not a browser
    run(body())


def test_allowed_origins_list():
    with plank_settings({"plank.allowed_origins": "http://app.example, https://other.example:8443"}):
        async def body():
            cases = [
                ("http://app.example", 101),
                ("https://other.example:8443", 101),
                (SELF_ORIGIN, 101),
                ("http://evil.example", 403),
                ("http://app.example.evil.example", 403),
                ("http://app.example:8080", 403),
                ("https://app.example", 403),
                ("https://other.example", 403),
                ("http://evil.example/http://app.example", 403),
            ]
            got = [(o, await handshake_status(origin=o)) for o, _ in cases]
            assert got == cases
        run(body())


def test_allowed_origins_star_allows_any():
    with plank_settings({"plank.allowed_origins": "*"}):
        async def body():
            assert await handshake_status(origin="http://evil.example") == 101
        run(body())


def test_dns_rebinding_origin_matching_a_forged_host_is_refused():
    """A page on http://evil.example:PORT whose name was rebound to the server's address
    sends Host: evil.example:PORT and Origin: http://evil.example:PORT. It is another site's
    page (SECURITY.md: the check "stops other sites' pages from using a visitor's network
    position"), so it should be refused; the server only knows its own origin from Host."""
    status = raw_handshake([("Host", f"evil.example:{PORT}"),
                            ("Origin", f"http://evil.example:{PORT}")])
    assert status == 403, status


# --------------------------------------------------------------------------- max_connections


def test_max_connections():
    limit = 5
    with plank_settings({"plank.max_connections": limit}):
        async def body():
            clients = []
            try:
                deadline = time.monotonic() + 10
                while len(clients) < limit:
                    c = await try_open()
                    if isinstance(c, int):
                        # a connection of an earlier test may still be closing
                        assert c == 503, c
                        assert time.monotonic() < deadline, f"only {len(clients)} of {limit} accepted"
                        await asyncio.sleep(0.2)
                    else:
                        clients.append(c)
                extra = await try_open()
                if not isinstance(extra, int):
                    await extra.close()
                    raise AssertionError(f"handshake {limit + 1} accepted with max_connections {limit}")
                assert extra == 503, extra
                # the others keep working
                for i, c in enumerate(clients):
                    pong = await c.request({"type": "ping", "id": f"p{i}"})
                    assert pong["type"] == "pong", pong
                # a slot freed is a slot usable again
                await clients.pop().close()
                deadline = time.monotonic() + 10
                while True:
                    c = await try_open()
                    if not isinstance(c, int):
                        clients.append(c)
                        break
                    assert time.monotonic() < deadline, "the freed slot was not reused"
                    await asyncio.sleep(0.2)
            finally:
                for c in clients:
                    await c.close()
        run(body(), timeout=90)


# --------------------------------------------------------------------------- max_unauthenticated


async def open_settled(n):
    """Open n clients, retrying refusals of connections of earlier tests still closing."""
    out = []
    deadline = time.monotonic() + 10
    while len(out) < n:
        c = await try_open()
        if isinstance(c, int):
            assert c == 503, c
            assert time.monotonic() < deadline, f"only {len(out)} of {n} accepted"
            await asyncio.sleep(0.2)
        else:
            out.append(c)
    return out


def test_silent_sockets_cannot_lock_out_clients_that_authenticate():
    """Sockets that never send a token are bounded by plank.max_unauthenticated: past it,
    the one that waited longest is closed with 1013; a client that authenticates at once
    still gets in, however many silent sockets an attacker opens."""
    with plank_settings({"plank.anonymous_role": "", "plank.max_unauthenticated": 3,
                         "plank.auth_timeout": 60}):
        async def body():
            silent, late = [], []
            try:
                silent = await open_settled(3)
                for c in silent:
                    assert c.welcome.get("auth") == "required", c.welcome
                # a fourth waiting socket evicts the oldest, not itself
                late = await open_settled(1)
                assert await silent[0].expect_close(timeout=10) == 1013
                for i, c in enumerate(silent[1:] + late):
                    reply = await c.request({"type": "ping", "id": f"p{i}"})
                    assert reply["type"] == "error" and reply["code"] == "unauthenticated", reply
                # a flood of silent sockets: a client that sends its token at once still gets in
                late += await open_settled(20)
                good = await open_client()
                late.append(good)
                reply = await send_auth(good, token("postgres"))
                assert reply["type"] == "ack", reply
                await good.subscribe("s", table="public.items")
                # and the silent ones were closed down to the bound
                waiting = lambda: sql("SELECT count(*) FROM plank.connections WHERE role IS NULL")[0][0]  # noqa: E731
                poll(lambda: waiting() <= 3, 10, what="at most 3 unauthenticated connections")
            finally:
                for c in silent + late:
                    await c.close()
        run(body(), timeout=90)


def test_unauthenticated_sockets_do_not_count_against_max_connections():
    """plank.max_connections bounds clients that have a role: waiting sockets do not use
    it up; a socket that authenticates past it is closed with 1013, and handshakes are
    refused (503) while it is full."""
    with plank_settings({"plank.anonymous_role": "", "plank.max_connections": 2,
                         "plank.max_unauthenticated": 10, "plank.auth_timeout": 60}):
        async def body():
            clients = []
            try:
                clients = await open_settled(5)      # 5 waiting sockets, more than 2
                for c in clients[:2]:
                    reply = await send_auth(c, token("postgres"))
                    assert reply["type"] == "ack", reply
                    pong = await c.request({"type": "ping", "id": "p"})
                    assert pong["type"] == "pong", pong
                # a third one authenticating is closed: try again later
                await clients[2].send({"type": "auth", "id": "a1", "token": token("postgres")})
                assert await clients[2].expect_close(timeout=10) == 1013
                # a new handshake is refused: no room for one more client with a role
                extra = await try_open()
                if not isinstance(extra, int):
                    await extra.close()
                    raise AssertionError("handshake accepted with max_connections clients authenticated")
                assert extra == 503, extra
            finally:
                for c in clients:
                    await c.close()
        run(body(), timeout=90)


# --------------------------------------------------------------------------- rate_limit


async def _flood(c, n, make=lambda i: {"type": "ping", "id": f"f{i}"}):
    for i in range(n):
        try:
            await c.send(make(i))
        except websockets.ConnectionClosed:
            return


def test_rate_limit_disconnects_a_flooding_client_not_a_slow_one():
    """plank.rate_limit = 5 (bursts of 10): a client sending 200 pings as fast as it can is
    disconnected; one sending 3 a second stays open."""
    with plank_settings({"plank.rate_limit": 5}):
        async def body():
            fast = await open_client()
            slow = await open_client()
            try:
                task = asyncio.create_task(_flood(fast, 200))
                code = await fast.expect_close(timeout=10)
                await task
                assert code in (1008, 1006), code
                for i in range(12):
                    pong = await slow.request({"type": "ping", "id": f"s{i}"})
                    assert pong["type"] == "pong", pong
                    await asyncio.sleep(1 / 3)
                assert slow.ws.open
            finally:
                await fast.close()
                await slow.close()
        run(body(), timeout=60)


def test_rate_limit_burst_overrun_closes_with_1008():
    """12 messages at once, two more than the burst of 10, then silence: close 1008."""
    with plank_settings({"plank.rate_limit": 5}):
        async def body():
            for make in (lambda i: {"type": "ping", "id": f"f{i}"},
                         lambda i: {"type": "auth", "id": f"a{i}"}):   # token guessing counts too
                c = await open_client()
                try:
                    await _flood(c, 12, make)
                    code = await c.expect_close(timeout=10)
                    assert code == 1008, code
                finally:
                    await c.close()
        run(body())


def test_rate_limit_flooding_client_sees_close_1008():
    """PROTOCOL.md, close codes: 1008 "the client sent messages faster than
    plank.rate_limit". A client that keeps sending (200 pings as fast as it can) is closed;
    as documented, it may see the reset (1006) instead of the close frame, because TCP
    discards the frame while its unread messages are pending. Either way it is closed."""
    with plank_settings({"plank.rate_limit": 5}):
        async def body():
            codes = []
            for _ in range(3):
                c = await open_client()
                try:
                    task = asyncio.create_task(_flood(c, 200))
                    codes.append(await c.expect_close(timeout=10))
                    await task
                finally:
                    await c.close()
            assert set(codes) <= {1008, 1006}, f"close codes seen by flooding clients: {codes}"
        run(body(), timeout=60)


# --------------------------------------------------------------------------- garbage


def _garbage(kind):
    key = "dGhlIHNhbXBsZSBub25jZQ=="
    upgrade = (f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode()
    if kind == 0:
        return os.urandom(random.randint(1, 4096))
    if kind == 1:   # half a handshake, never finished
        return f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nUpgrade: websocket\r\n".encode()
    if kind == 2:   # a handshake, then random bytes as frames
        return upgrade + os.urandom(2048)
    if kind == 3:   # a handshake, then a frame that claims 2^63 - 1 bytes
        return upgrade + bytes([0x81, 0xFF]) + (2 ** 63 - 1).to_bytes(8, "big") + os.urandom(64)
    if kind == 4:   # huge headers
        return (f"GET / HTTP/1.1\r\nHost: {HOST}\r\nX-Junk: " + "a" * 20000 + "\r\n\r\n").encode()
    if kind == 5:   # a TLS ClientHello on the plain port
        return bytes.fromhex("16030100a10100009d0303") + os.urandom(200)
    if kind == 6:   # a handshake, then an unmasked client frame (RFC 6455: must be masked)
        return upgrade + b"\x81\x05hello"
    if kind == 7:   # a handshake with a bogus version
        return upgrade.replace(b"Version: 13", b"Version: 99")
    return b""      # connect and say nothing


def test_garbage_connection_flood_leaves_the_worker_serving(db):
    pids = worker_pids()
    name = "flood-" + tag()

    async def one(i, hold):
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", PORT), 5)
        except (OSError, asyncio.TimeoutError):
            return "connect-failed"
        try:
            data = _garbage(i % 9)
            if data:
                writer.write(data)
                await asyncio.wait_for(writer.drain(), 5)
            try:
                await asyncio.wait_for(reader.read(4096), 0.2)
            except asyncio.TimeoutError:
                pass
            await hold.wait()
            return "ok"
        except (OSError, asyncio.TimeoutError):
            return "reset"
        finally:
            writer.close()

    async def body():
        async with client() as c:
            await c.subscribe("items", table="public.items", filter={"name": name})
            hold = asyncio.Event()
            tasks = [asyncio.create_task(one(i, hold)) for i in range(200)]
            await asyncio.sleep(1.0)
            # while the garbage connections are open, changes still flow
            db.insert_item(name, 1)
            m = await c.next_push("items", timeout=10)
            assert m["change"]["new"]["value"] == 1, m
            # and a new client gets in
            async with client(timeout=10) as d:
                assert (await d.request({"type": "ping", "id": "p"}))["type"] == "pong"
            hold.set()
            results = await asyncio.wait_for(asyncio.gather(*tasks), 30)
            assert results.count("connect-failed") == 0, results
            db.insert_item(name, 2)
            m = await c.next_push("items", timeout=10)
            assert m["change"]["new"]["value"] == 2, m
    try:
        run(body(), timeout=90)
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (name,))
    assert worker_pids() == pids, "the worker restarted during the flood"


# --------------------------------------------------------------------------- HTTP


def test_static_files_do_not_escape_the_directory():
    import socket
    for path in ("/../../../../etc/passwd", "/%2e%2e/%2e%2e/%2e%2e/etc/passwd",
                 "/..%2f..%2f..%2fetc%2fpasswd", "/....//....//etc/passwd",
                 "//etc/passwd", "/%252e%252e/etc/passwd", "/.%00./etc/passwd"):
        with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
            s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
            data = b""
            s.settimeout(5)
            try:
                while len(data) < 1 << 20:
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    data += chunk
            except socket.timeout:
                pass
        assert b"root:x:0:0" not in data, f"{path} served /etc/passwd"


def test_http_responses_carry_security_headers():
    try:
        resp = urllib.request.urlopen(URL, timeout=10)
    except urllib.error.HTTPError as e:
        resp = e
    headers = {k.lower(): v for k, v in resp.headers.items()}
    resp.close()
    assert "content-security-policy" in headers, headers
    assert headers.get("x-frame-options", "").lower() == "deny", headers
    assert headers.get("x-content-type-options", "").lower() == "nosniff", headers
    assert "referrer-policy" in headers, headers


def test_ws_handshake_is_not_served_to_a_refused_origin_on_another_path():
    # the Origin check holds for every path that upgrades, not only /ws
    for path in ("/", "/x/y", "/ws?token=1"):
        assert raw_handshake([("Host", HOST), ("Origin", "http://evil.example")], path=path) == 403


# --------------------------------------------------------------------------- /health, /metrics


def _http_get(path, headers=()):
    """(status, headers as a lower-case dict, body) of a GET on Plank's port."""
    import socket
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        extra = "".join(f"{k}: {v}\r\n" for k, v in headers)
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\n{extra}Connection: close\r\n\r\n".encode())
        s.settimeout(5)
        data = b""
        try:
            while len(data) < 1 << 20:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode(errors="replace").split("\r\n")
    status = int(lines[0].split()[1])
    hdrs = {}
    for line in lines[1:]:
        k, _, v = line.partition(":")
        hdrs[k.strip().lower()] = v.strip()
    return status, hdrs, body


def test_health_and_metrics_only_for_allowed_addresses():
    for path in ("/health", "/metrics"):
        status, hdrs, body = _http_get(path, [("Origin", "http://evil.example")])
        assert status == 200, (path, status, body[:200])
        # readable by scripts on the host, not by other sites' pages
        assert "access-control-allow-origin" not in hdrs, hdrs
    with plank_settings({"plank.http_allowed_addresses": "192.0.2.1"}):
        for path in ("/health", "/metrics", "/health?x=1", "/metrics/", "/health/../metrics"):
            status, _, body = _http_get(path)
            assert status in (403, 404), (path, status, body[:200])
            assert b"plank_" not in body and b"worker_pid" not in body, (path, body[:200])
