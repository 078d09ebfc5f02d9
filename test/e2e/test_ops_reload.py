"""Settings: "sighup" settings change on pg_reload_conf() without dropping clients,
"postmaster" settings need a restart (README "Configuration")."""

import asyncio
import re

import psycopg2
import pytest
import websockets

from conftest import PORT, ServerLog, client, run, set_settings, sql, tag
from helpers import apoll, connection_of

POSTMASTER = ["plank.database", "plank.listen_addresses", "plank.port", "plank.static_dir",
              "plank.ssl", "plank.ssl_cert_file", "plank.ssl_key_file", "plank.workers",
              "plank.shared_queue_size", "plank.permessage_deflate", "plank.check_workers"]
SIGHUP = ["plank.max_message_size", "plank.max_client_buffer", "plank.max_client_lag",
          "plank.max_subscriptions",
          "plank.snapshot_limit", "plank.replay_buffer", "plank.ping_interval",
          "plank.ping_timeout", "plank.jwt_secret", "plank.jwt_public_key_file",
          "plank.jwt_audience", "plank.jwt_issuer", "plank.jwt_role_claim",
          "plank.anonymous_role", "plank.auth_timeout", "plank.allowed_origins",
          "plank.max_connections", "plank.max_unauthenticated", "plank.rate_limit",
          "plank.http_allowed_addresses",
          "plank.log_connections", "plank.log_level", "plank.jwt_secret_file",
          "plank.jwt_jwks_file", "plank.authenticator", "plank.allow_privileged_roles",
          "plank.check_timeout", "plank.max_backlog_memory"]
RELOADED = {"plank.max_message_size": "1kB", "plank.rate_limit": "3",
            "plank.max_subscriptions": "1", "plank.log_level": "warning"}


def test_setting_contexts_are_as_documented():
    got = dict(sql("SELECT name, context FROM pg_settings WHERE name LIKE 'plank.%'"))
    want = {n: "postmaster" for n in POSTMASTER}
    want.update({n: "sighup" for n in SIGHUP})
    # plank.jwt_secret is GUC_NO_SHOW_ALL: never listed in pg_settings
    want.pop("plank.jwt_secret")
    assert got == want, f"pg_settings contexts differ from the README:\n{got}\n{want}"
    assert sql("SHOW plank.port")[0][0] == str(PORT)
    assert sql("SELECT context FROM pg_settings WHERE name = 'plank.port'")[0][0] == "postmaster"
    assert sql("SELECT context FROM pg_settings WHERE name = 'plank.rate_limit'")[0][0] == "sighup"
    # the superuser can read the secret with SHOW (the test cluster sets one)
    assert sql("SHOW plank.jwt_secret")[0][0] != ""


def test_a_restart_only_setting_is_not_applied_by_a_reload():
    other = PORT + 50
    log = ServerLog()
    try:
        set_settings({"plank.port": other})
        r = sql("SELECT setting, pending_restart FROM pg_settings WHERE name = 'plank.port'")
        assert r == [(str(PORT), True)], f"plank.port after ALTER SYSTEM + reload: {r}"
        assert sql("SHOW plank.port")[0][0] == str(PORT)
        assert re.search(r'parameter "plank\.port" cannot be changed without restarting',
                         log.text()), log.text()[-2000:]

        async def body():
            async with client() as c:   # still on PORT
                pong = await c.request({"type": "ping", "id": "p"})
                assert pong["type"] == "pong"
            with pytest.raises(OSError):
                async with client(url=f"ws://127.0.0.1:{other}/ws", timeout=3):
                    pass
        run(body())
    finally:
        set_settings({"plank.port": None})
    assert sql("SELECT pending_restart FROM pg_settings WHERE name = 'plank.port'")[0][0] is False


def test_reload_applies_limits_without_dropping_a_subscribed_client(db):
    t = tag()
    names = [f"ops-reload-{t}-{i}" for i in range(3)]
    whole = ServerLog()
    ids = {}

    async def body():
        async with client() as c:
            ack = await c.subscribe(f"{t}-r", table="public.items")
            epoch = c.welcome["epoch"]
            db.insert_item(names[0], 1)
            await c.change_named(f"{t}-r", names[0])
            cid = ids["c"] = connection_of(f"{t}-r")
            assert cid is not None
            try:
                await asyncio.to_thread(set_settings, RELOADED)
                log = ServerLog()

                # the client subscribed before the reload is still there and served
                db.insert_item(names[1], 2)
                m = await c.change_named(f"{t}-r", names[1])
                assert m["epoch"] == epoch and m["seq"] > ack["seq"], m
                assert connection_of(f"{t}-r") == cid

                # max_subscriptions = 1: the connection holds one already
                err = await c.request({"type": "subscribe", "id": f"{t}-r2",
                                       "table": "public.items"})
                assert err.get("type") == "error" \
                    and err.get("code") == "too_many_subscriptions", err

                # ... and a new connection may hold one
                async with client() as c2:
                    await c2.subscribe("one", table="public.items")
                    err = await c2.request({"type": "subscribe", "id": "two",
                                            "channel": "ops_reload"})
                    assert err.get("type") == "error" \
                        and err.get("code") == "too_many_subscriptions", err

                # max_message_size = 1kB: a 2 kB message closes a new connection with 1009
                async with client() as c3:
                    await c3.send({"type": "ping", "id": "big", "pad": "x" * 2048})
                    code = await c3.expect_close()
                    assert code == 1009, f"a 2 kB message with a 1 kB limit: close {code}"
                # (a 900-byte one is still fine)
                async with client() as c3:
                    pong = await c3.request({"type": "ping", "id": "small", "pad": "x" * 900})
                    assert pong["type"] == "pong", pong

                # rate_limit = 3 (bursts of 6): 7 messages at once, then silence, close a
                # new connection with 1008 (the default, 50, allows bursts of 100). Only
                # one message past the burst: a client that keeps sending after the limit
                # may see the TCP connection reset instead (test_security_transport.py).
                async with client() as c4:
                    for i in range(7):
                        try:
                            await c4.send({"type": "ping", "id": f"f{i}"})
                        except websockets.ConnectionClosed:
                            break
                    code = await c4.expect_close()
                    assert code == 1008, f"7 messages at once with rate_limit 3: close {code}"

                # log_level = warning: connection lines are now WARNINGs
                await apoll(lambda: re.search(r"WARNING:  plank connection \d+ from 127\.0\.0\.1 "
                                              r"as role postgres", log.text()), 5,
                            what="a WARNING-level connection line in the server log")

                # the first client is still connected after all that
                pong = await c.request({"type": "ping", "id": "still"})
                assert pong["type"] == "pong", pong
            finally:
                await asyncio.to_thread(set_settings, {n: None for n in RELOADED})

            # and after the reset too; the limits are back to their defaults
            db.insert_item(names[2], 3)
            m = await c.change_named(f"{t}-r", names[2])
            assert m["epoch"] == epoch
            await c.subscribe(f"{t}-r2", table="public.items")
            async with client() as c3:
                pong = await c3.request({"type": "ping", "id": "big", "pad": "x" * 2048})
                assert pong["type"] == "pong", pong
    try:
        run(body(), timeout=120)
    finally:
        db.execute("DELETE FROM items WHERE name = ANY(%s)", (names,))
    # the first client was never disconnected while the settings changed (its
    # disconnection is logged only when the test closes it, at the very end)
    text = whole.text()
    lines = [ln for ln in text.splitlines() if f"plank disconnection {ids['c']} from" in ln]
    assert len(lines) <= 1, lines


def test_invalid_value_for_a_reloadable_setting_is_refused():
    with pytest.raises(psycopg2.errors.InvalidParameterValue):
        sql("ALTER SYSTEM SET plank.log_level = 'verbose'")
    with pytest.raises(psycopg2.errors.InvalidParameterValue):
        sql("ALTER SYSTEM SET plank.max_subscriptions = -1")
    with pytest.raises(psycopg2.errors.InvalidParameterValue):
        sql("ALTER SYSTEM SET plank.rate_limit = 'fast'")
    with pytest.raises(psycopg2.errors.CantChangeRuntimeParam):
        sql("SET plank.rate_limit = 1")
