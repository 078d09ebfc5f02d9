#!/usr/bin/python3
"""WebSocket check for test/packaging/run.sh (Debian's python3-websockets).

    ws_check.py URL --table public.pkg_items --psql "psql -h ... -d postgres" [--origin O]
                [--cafile PEM] [--expect-status 403]

Connects to URL (ws:// or wss://; wss is verified against --cafile), expects the
"welcome" message, subscribes to the table, waits for the ack, inserts a row with a
unique name through psql, and waits for the INSERT change carrying that name.
With --expect-status N, expects the handshake to be refused with HTTP status N instead.
Prints one line per step; exits 0 on success, 1 on failure.  Every wait is bounded.
"""

import argparse
import asyncio
import json
import shlex
import ssl
import subprocess
import sys
import uuid

import websockets

STEP_TIMEOUT = 10.0


def say(msg):
    print(f"  [ws] {msg}", flush=True)


async def recv_json(ws, what):
    raw = await asyncio.wait_for(ws.recv(), STEP_TIMEOUT)
    try:
        return json.loads(raw)
    except ValueError:
        raise AssertionError(f"{what}: not JSON: {raw[:200]!r}")


async def run(args):
    ssl_ctx = None
    if args.url.startswith("wss://"):
        ssl_ctx = ssl.create_default_context(cafile=args.cafile)
    kwargs = {"ssl": ssl_ctx, "open_timeout": STEP_TIMEOUT, "close_timeout": 2}
    if args.origin:
        kwargs["origin"] = args.origin

    if args.expect_status:
        try:
            async with websockets.connect(args.url, **kwargs):
                pass
        except websockets.exceptions.InvalidStatusCode as e:
            if e.status_code == args.expect_status:
                say(f"handshake refused with HTTP {e.status_code}, as expected"
                    f" (origin {args.origin or 'none'})")
                return
            raise AssertionError(f"handshake refused with HTTP {e.status_code},"
                                 f" expected {args.expect_status}")
        raise AssertionError(f"handshake accepted, expected HTTP {args.expect_status}")

    async with websockets.connect(args.url, **kwargs) as ws:
        welcome = await recv_json(ws, "welcome")
        if welcome.get("type") != "welcome":
            raise AssertionError(f"first message is not a welcome: {welcome}")
        say(f"welcome: protocol {welcome.get('protocol')}, server {welcome.get('server')},"
            f" role {welcome.get('role')} (origin {args.origin or 'none'})")

        await ws.send(json.dumps({"type": "subscribe", "id": "pkg",
                                  "table": args.table, "ops": ["INSERT"]}))
        while True:
            msg = await recv_json(ws, "subscribe reply")
            if msg.get("type") == "ack" and msg.get("id") == "pkg":
                break
            if msg.get("type") == "error":
                raise AssertionError(f"subscribe refused: {msg}")
        say(f"subscribed to {args.table} (ack seq {msg.get('seq')})")

        name = "pkg-" + uuid.uuid4().hex[:12]
        sql = f"INSERT INTO {args.table} (name, value) VALUES ('{name}', 42)"
        subprocess.run(shlex.split(args.psql) + ["-c", sql], check=True,
                       stdout=subprocess.DEVNULL, timeout=STEP_TIMEOUT)
        say(f"inserted {name!r}")

        loop = asyncio.get_running_loop()
        deadline = loop.time() + STEP_TIMEOUT
        while True:
            left = deadline - loop.time()
            if left <= 0:
                raise AssertionError("no change for the inserted row within"
                                     f" {STEP_TIMEOUT:.0f} s")
            raw = await asyncio.wait_for(ws.recv(), left)
            msg = json.loads(raw)
            if msg.get("type") == "error":
                raise AssertionError(f"error from server: {msg}")
            change = msg.get("change") or {}
            if (msg.get("type") == "change" and change.get("op") == "INSERT"
                    and (change.get("new") or {}).get("name") == name):
                say(f"change arrived: seq {msg.get('seq')}, op INSERT,"
                    f" new.name {name!r}")
                return


def main():
    p = argparse.ArgumentParser()
    p.add_argument("url")
    p.add_argument("--table", default="public.pkg_items")
    p.add_argument("--psql", required=False, default="")
    p.add_argument("--origin")
    p.add_argument("--cafile")
    p.add_argument("--expect-status", type=int)
    args = p.parse_args()
    if not args.expect_status and not args.psql:
        p.error("--psql is required unless --expect-status is given")
    try:
        asyncio.run(run(args))
    except Exception as e:  # noqa: BLE001 -- report any failure as one line
        print(f"  [ws] FAILED ({args.url}): {type(e).__name__}: {e}", flush=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
