"""The server log (README "Monitoring", plank.log_connections and plank.log_level):
connections, authentications (role, token sub, address) and disconnections (role, close
code, session time); refused tokens with the address and reason (and the role they
name), never the token; rate-limit closes with the role."""

import asyncio
import re
import time

import pytest

import websockets

from conftest import LOGFILE, ServerLog, client, run, tag
from helpers import (SECRET, apoll, connection_of, http_get, metric_value, parse_prometheus,
                     plank_settings, sign)

pytestmark = pytest.mark.skipif(not LOGFILE, reason="PLANK_LOGFILE is not set")


@pytest.fixture(scope="module")
def log_level_log():
    with plank_settings({"plank.log_level": "log", "plank.log_connections": "on"}):
        yield


def test_connection_and_disconnection_are_logged_with_address_and_role(log_level_log):
    log = ServerLog()
    t = tag()

    async def body():
        async with client() as c:
            await c.subscribe(f"{t}-s", table="public.items")
            cid = await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
            await apoll(lambda: re.search(rf"LOG:  plank connection {cid} from 127\.0\.0\.1 "
                                          rf"as role postgres\n", log.text()), 5,
                        what=f"the connection line of client {cid}")
            assert f"plank disconnection {cid} " not in log.text()
            return cid
    cid = run(body())
    line = asyncio.run(apoll(
        lambda: re.search(rf"LOG:  plank disconnection {cid} from 127\.0\.0\.1 as role postgres: "
                          rf"close code 1000, session time \d+:\d\d:\d\d\.\d\d\d\n",
                          log.text()), 5, what=f"the disconnection line of client {cid}"))
    assert line


def test_authentication_is_logged_with_role_sub_and_address(log_level_log):
    log = ServerLog()
    t = tag()
    exp = int(time.time()) + 300
    sub = f"user-{t}"

    async def body():
        async with client() as c:
            ack = await c.request({"type": "auth", "id": "a",
                                   "token": sign({"role": "plank_web", "sub": sub, "exp": exp})})
            assert ack["type"] == "ack", ack
            await c.subscribe(f"{t}-s", table="public.items")
            cid = await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
            await apoll(lambda: re.search(
                rf"LOG:  plank connection {cid} from 127\.0\.0\.1 authenticated as role plank_web "
                rf"\(token sub \"{sub}\", expires \d{{4}}-\d\d-\d\d [0-9:]+\S*\)\n", log.text()), 5,
                what=f"the authentication line of client {cid}")
            # a fresh token on the same connection: one more line
            ack = await c.request({"type": "auth", "id": "b",
                                   "token": sign({"role": "plank_web", "sub": sub, "exp": exp + 60})})
            assert ack["type"] == "ack", ack
            await apoll(lambda: re.search(
                rf"LOG:  plank connection {cid} from 127\.0\.0\.1 sent a fresh token as role plank_web "
                rf"\(token sub \"{sub}\"", log.text()), 5, what="the fresh token's line")
            # and one without sub
            async with client() as c2:
                ack = await c2.request({"type": "auth", "id": "a",
                                        "token": sign({"role": "plank_web"})})
                assert ack["type"] == "ack", ack
                await c2.subscribe(f"{t}-s2", table="public.items")
                cid2 = await apoll(lambda: connection_of(f"{t}-s2"), 5, what="the second client's id")
                await apoll(lambda: re.search(
                    rf"plank connection {cid2} from 127\.0\.0\.1 authenticated as role plank_web "
                    rf"\(token sub none, expires never\)", log.text()), 5, what="the line without sub")
            return cid
    cid = run(body())
    asyncio.run(apoll(
        lambda: re.search(rf"LOG:  plank disconnection {cid} from 127\.0\.0\.1 as role plank_web: "
                          rf"close code 1000, ", log.text()),
        5, what=f"the disconnection line of client {cid}"))


def test_unauthenticated_connection_and_close_code_4001_are_logged(log_level_log):
    """Without plank.anonymous_role a connection waits to authenticate; a refused token
    names its role in the log, and the disconnection line has close code 4001."""
    with plank_settings({"plank.anonymous_role": ""}):
        log = ServerLog()
        role = "ops_no_such_role_" + tag()

        async def body():
            async with client() as c:
                await c.send({"type": "auth", "id": "a",
                              "token": sign({"role": role, "exp": int(time.time()) + 300})})
                err = await c.wait_for(lambda m: m["type"] == "error", what="the refusal")
                assert err["code"] == "unknown_role", err
                assert await c.expect_close() == 4001
        run(body())
        text = asyncio.run(apoll(
            lambda: (lambda s: s if re.search(rf'plank refused a token from 127\.0\.0\.1: role "{role}" '
                                              rf"named by the token does not exist", s) else None)(log.text()),
            5, what="the refusal naming the role"))
        m = re.search(r"LOG:  plank connection (\d+) from 127\.0\.0\.1 waiting to authenticate\n", text)
        assert m, text[-2000:]
        asyncio.run(apoll(
            lambda: re.search(rf"plank disconnection {m.group(1)} from 127\.0\.0\.1 as role \(none\): "
                              rf"close code 4001, ", log.text()), 5, what="the disconnection with 4001"))


def test_rate_limit_close_is_logged_with_the_role_and_counted(log_level_log):
    before = metric_value(parse_prometheus(http_get("/metrics")[2]), "plank_clients_rate_limited_total")
    with plank_settings({"plank.rate_limit": "3"}):
        log = ServerLog()
        t = tag()

        async def body():
            async with client() as c:
                await c.subscribe(f"{t}-s", table="public.items")
                cid = await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
                for i in range(7):
                    try:
                        await c.send({"type": "ping", "id": f"f{i}"})
                    except websockets.ConnectionClosed:
                        break
                code = await c.expect_close()
                return cid, code
        cid, code = run(body())
        assert code in (1008, 1006), code
        asyncio.run(apoll(
            lambda: re.search(rf"plank closing connection {cid} from 127\.0\.0\.1 as role postgres: "
                              rf"messages faster than plank.rate_limit \(3 per second\)", log.text()),
            5, what="the rate-limit line"))
        asyncio.run(apoll(
            lambda: re.search(rf"plank disconnection {cid} from 127\.0\.0\.1 as role postgres: "
                              rf"close code 1008, ", log.text()), 5, what="the disconnection with 1008"))
    after = metric_value(parse_prometheus(http_get("/metrics")[2]), "plank_clients_rate_limited_total")
    assert after >= before + 1, (before, after)


def test_refused_tokens_are_logged_without_the_token(log_level_log):
    marker = "NOTLOGGED123" + tag()
    now = int(time.time())
    tokens = {
        "bad signature": sign({"role": "postgres", "note": marker, "exp": now + 300},
                              key="not-the-secret"),
        "expired": sign({"role": "postgres", "note": marker, "exp": now - 3600}),
        "unknown role": sign({"role": "ops_no_such_role", "note": marker, "exp": now + 300}),
        "malformed": f"{marker}.{marker}.{marker}",
    }
    log = ServerLog()

    async def one(tok):
        async with client() as c:
            await c.send({"type": "auth", "id": "a", "token": tok})
            err = await c.wait_for(lambda m: m["type"] == "error", what="the refusal")
            code = await c.expect_close()
            return err, code

    for what, tok in tokens.items():
        err, code = run(one(tok))
        assert err["code"] in ("invalid_token", "token_expired", "unknown_role"), (what, err)
        assert code == 4001, (what, code)
        assert marker not in err.get("message", ""), (what, err)

    text = asyncio.run(apoll(
        lambda: (lambda s: s if len(re.findall(r"plank refused a token from 127\.0\.0\.1: ",
                                               s)) >= len(tokens) else None)(log.text()),
        5, what="a log line per refused token"))
    assert marker not in text, "the server log shows a refused token's content:\n" + \
        "\n".join(ln for ln in text.splitlines() if marker in ln)
    for tok in tokens.values():
        for part in set(tok.split(".")):
            assert part not in text, f"a part of a refused token is in the log: {part[:40]}"
    assert SECRET not in text


def test_log_level_below_the_server_threshold_hides_connection_lines():
    """plank.log_level = debug1 (log_min_messages is warning): no connection lines."""
    t = tag()
    with plank_settings({"plank.log_level": "debug1"}):
        log = ServerLog()

        async def body():
            async with client() as c:
                await c.subscribe(f"{t}-s", table="public.items")
                return await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
        cid = run(body())
        time.sleep(0.5)
        # the reload barrier's own probe clients connect too: look for this client only
        assert f"plank connection {cid} " not in log.text()
        assert f"plank disconnection {cid} " not in log.text()


def test_log_connections_off_logs_no_connection_lines():
    t = tag()
    with plank_settings({"plank.log_connections": "off"}):
        log = ServerLog()

        async def body():
            async with client() as c:
                await c.subscribe(f"{t}-s", table="public.items")
                return await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
        cid = run(body())
        time.sleep(0.5)
        assert f"plank connection {cid} " not in log.text()
        assert f"plank disconnection {cid} " not in log.text()
