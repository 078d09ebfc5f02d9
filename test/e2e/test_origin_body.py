"""A refused Origin is answered 403 with a body that names the setting to change
(docs/SECURITY.md "Origin"): a browser page only sees "Unexpected response code: 403",
its developer finds the reason in the network panel."""

import base64
import os
import socket

from conftest import PORT

HOST = f"127.0.0.1:{PORT}"


def handshake_response(origin):
    """The whole HTTP answer (status line, headers, body) to an upgrade from `origin`."""
    key = base64.b64encode(os.urandom(16)).decode()
    req = (f"GET /ws HTTP/1.1\r\nHost: {HOST}\r\nOrigin: {origin}\r\nUpgrade: websocket\r\n"
           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n")
    with socket.create_connection(("127.0.0.1", PORT), timeout=10) as s:
        s.sendall(req.encode())
        buf = b""
        while True:
            head, sep, body = buf.partition(b"\r\n\r\n")
            if sep:
                length = [int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length:")]
                if length and len(body) >= length[0]:
                    break
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                break
            if not chunk:
                break
            buf += chunk
    return buf.decode(errors="replace")


def test_refused_origin_body_names_the_setting():
    resp = handshake_response("http://evil.example")
    status, _, rest = resp.partition("\r\n")
    assert status.split()[1] == "403", resp
    body = rest.partition("\r\n\r\n")[2]
    assert "plank.allowed_origins" in body, resp
    assert "origin" in body and "reload" in body, resp


def test_refused_origin_body_does_not_echo_the_origin():
    resp = handshake_response("http://<script>alert(1)</script>.example")
    assert resp.split()[1] == "403", resp
    assert "<script>" not in resp, resp


def test_allowed_origin_is_not_refused():
    resp = handshake_response(f"http://{HOST}")
    assert resp.split()[1] == "101", resp
