"""The server log (README "Monitoring", plank.log_connections and plank.log_level):
connections and disconnections with the client address and role; refused tokens with the
address and reason, never the token."""

import asyncio
import re
import time

import pytest

from conftest import LOGFILE, ServerLog, client, run, tag
from helpers import SECRET, apoll, connection_of, plank_settings, sign

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
        lambda: re.search(rf"LOG:  plank disconnection {cid} from 127\.0\.0\.1 as role postgres\n",
                          log.text()), 5, what=f"the disconnection line of client {cid}"))
    assert line


def test_authenticated_role_is_in_the_disconnection_line(log_level_log):
    log = ServerLog()
    t = tag()

    async def body():
        async with client() as c:
            ack = await c.request({"type": "auth", "id": "a",
                                   "token": sign({"role": "plank_web",
                                                  "exp": int(time.time()) + 300})})
            assert ack["type"] == "ack", ack
            await c.subscribe(f"{t}-s", table="public.items")
            return await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
    cid = run(body())
    asyncio.run(apoll(
        lambda: re.search(rf"LOG:  plank disconnection {cid} from 127\.0\.0\.1 as role plank_web\n",
                          log.text()), 5, what=f"the disconnection line of client {cid}"))


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
