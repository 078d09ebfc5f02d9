"""Monitoring and control from SQL with real clients connected (README "Monitoring"):
plank.connections, plank.subscriptions and plank.stats, who may read them,
plank.disconnect() and plank.publish()."""

import asyncio
import datetime
import json
import time

import psycopg2
import pytest
import websockets

from conftest import DB, WS_URL, Closed, client, run, sql, tag
from helpers import (apoll, connection_of, connections, login_as,  # noqa: F401
                     plank_settings, roles, sign, stats, subscriptions, worker_pid)


def _settle_connections(timeout=10.0):
    """Wait until no client is connected (clients of earlier tests may still be closing);
    return the connections left (normally none)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not connections():
            return {}
        time.sleep(0.1)
    return connections()


def test_views_show_connected_clients_their_subscriptions_and_counters(db):
    """Three clients (two anonymous, acting as postgres; one authenticated as plank_web)
    with table and channel subscriptions, filters and ops; the views follow them, and
    drop them when they close."""
    left_over = _settle_connections()
    t = tag()
    name = "ops-" + t
    chan1, chan3 = f"ops_chan1_{t}", f"ops_chan3_{t}"
    s1t, s1c, s2t, s3c = f"{t}-c1t", f"{t}-c1c", f"{t}-c2t", f"{t}-c3c"
    before = stats()
    pid = worker_pid(DB)

    async def body():
        async with client() as c1, client() as c2, client() as c3:
            assert c1.welcome.get("role") == "postgres", c1.welcome
            # c2 upgrades its anonymous connection with a token naming plank_web
            ack = await c2.request({"type": "auth", "id": "a1",
                                    "token": sign({"role": "plank_web",
                                                   "exp": int(time.time()) + 600})})
            assert ack.get("type") == "ack" and ack.get("role") == "plank_web", ack

            await c1.subscribe(s1t, table="public.items", ops=["INSERT", "UPDATE"],
                               filter={"name": name})
            await c1.subscribe(s1c, channel=chan1)
            await c2.subscribe(s2t, table="public.items", filter={"value": 5})
            await c3.subscribe(s3c, channel=chan3)

            ids = {}
            for label, sub in (("c1", s1t), ("c2", s2t), ("c3", s3c)):
                ids[label] = await apoll(lambda sub=sub: connection_of(sub), 5,
                                         what=f"subscription {sub} in plank.subscriptions")
            assert len(set(ids.values())) == 3, f"three clients, three connection ids: {ids}"

            conns = connections()
            mine = {label: conns.get(i) for label, i in ids.items()}
            assert all(mine.values()), f"plank.connections lacks some of {ids}: {conns}"
            others = set(conns) - set(ids.values()) - set(left_over)
            assert not others, f"plank.connections lists unknown clients: {others} ({conns})"
            now = datetime.datetime.now(datetime.timezone.utc)
            for label, r in mine.items():
                assert r["client_addr"] == "127.0.0.1", r
                assert r["queue_depth"] >= 0 and r["queue_bytes"] >= 0, r
                assert r["messages_sent"] >= 2 and r["bytes_sent"] > 0, \
                    f"welcome and acks were sent to {label}: {r}"
                assert r["connected_at"] <= now + datetime.timedelta(seconds=5), r
                assert r["last_activity"] >= r["connected_at"], r
            assert mine["c1"]["role"] == "postgres", mine["c1"]
            assert mine["c2"]["role"] == "plank_web", mine["c2"]
            assert mine["c3"]["role"] == "postgres", mine["c3"]
            assert [mine[k]["subscriptions"] for k in ("c1", "c2", "c3")] == [2, 1, 1], mine

            subs = [r for r in subscriptions() if r["connection_id"] in ids.values()]
            got = sorted((r["connection_id"], r["id"], r["kind"], r["target"], r["ops"],
                          r["filter"]) for r in subs)
            want = sorted([
                (ids["c1"], s1t, "table", "public.items", "INSERT,UPDATE", f'name = "{name}"'),
                (ids["c1"], s1c, "channel", chan1, None, None),
                (ids["c2"], s2t, "table", "public.items", "INSERT,UPDATE,DELETE,TRUNCATE",
                 "value = 5"),
                (ids["c3"], s3c, "channel", chan3, None, None),
            ])
            assert got == want, f"plank.subscriptions:\n{got}\nexpected:\n{want}"

            # changes: one row that c1 and c2 both match, and a notification for c3
            sent_before = {k: v["messages_sent"] for k, v in mine.items()}
            bytes_before = {k: v["bytes_sent"] for k, v in mine.items()}
            row_id = db.insert_item(name, 5)
            db.execute("SELECT pg_notify(%s, 'hello')", (chan3,))
            m1 = await c1.change_named(s1t, name)
            m2 = await c2.change_named(s2t, name)
            m3 = await c3.next_push(s3c)
            assert m3["type"] == "notify" and m3["payload"] == "hello", m3
            assert m1["change"]["new"]["id"] == m2["change"]["new"]["id"] == row_id

            def grown():
                now_conns = connections()
                rs = {k: now_conns.get(i) for k, i in ids.items()}
                return rs if all(r and r["messages_sent"] > sent_before[k]
                                 and r["bytes_sent"] > bytes_before[k]
                                 for k, r in rs.items()) else None
            after = await apoll(grown, 5, what="messages_sent of every client to grow")
            assert after["c1"]["messages_sent"] >= sent_before["c1"] + 1, after

            # last_activity moves when the client sends something (a ping)
            la = after["c3"]["last_activity"]
            await asyncio.sleep(0.3)
            pong = await c3.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
            r3 = await apoll(lambda: (connections().get(ids["c3"]) or {}).get("last_activity", la) > la
                             and connections()[ids["c3"]], 5,
                             what="last_activity of c3 to move after its ping")
            assert r3["last_activity"] > la

            # a request the server answers with an error counts as a protocol error
            pe_before = stats()["protocol_errors"]
            err = await c1.request({"type": "no_such_type", "id": "bad"})
            assert err["type"] == "error" and err["code"] == "unknown_type", err
            # a resume from an epoch that is not the worker's is a resync
            rs_before = stats()["resyncs"]
            pushed, ack = await c3.request_all({"type": "subscribe", "id": f"{t}-resume",
                                                "channel": chan3,
                                                "since": {"epoch": "1", "seq": 0}})
            assert ack["type"] == "ack" and ack["resumed"] is False, ack
            assert [m["type"] for m in pushed] == ["resync_required"], pushed

            s = stats()
            assert s["protocol_errors"] == pe_before + 1, (pe_before, s)
            assert s["resyncs"] == rs_before + 1, (rs_before, s)
            assert s["worker_pid"] == pid, f"plank.stats worker_pid {s['worker_pid']} != {pid}"
            assert s["epoch"] == c1.welcome["epoch"], (s, c1.welcome)
            assert s["notifications_received"] >= before["notifications_received"] + 2, (before, s)
            assert s["messages_sent"] > before["messages_sent"], (before, s)
            assert s["bytes_sent"] > before["bytes_sent"], (before, s)
            assert s["connections_total"] >= before["connections_total"] + 3, (before, s)
            assert s["connections"] == len(connections()) >= 3, s
            assert s["subscriptions"] == len(subscriptions()) >= 5, s
            assert s["replay_ring_events"] > 0 and s["replay_ring_bytes"] > 0, s
            assert s["notify_queue_usage"] is not None and 0 <= s["notify_queue_usage"] <= 1, s
            assert s["last_seq"] >= m3["seq"], (s, m3)
            assert s["started"] is not None
            return ids

    try:
        ids = run(body())
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (name,))

    def gone():
        conns = connections()
        subs = [r for r in subscriptions() if r["connection_id"] in ids.values()]
        return not (set(ids.values()) & set(conns)) and not subs
    assert asyncio.run(apoll(gone, 10, what="the closed clients to leave the views"))
    s = stats()
    assert s["connections"] == len(connections()), s
    assert s["subscriptions"] == len(subscriptions()), s


def test_views_need_pg_monitor_and_control_functions_need_superuser_or_a_grant(roles):  # noqa: F811
    plain = roles.make("ops_plain")
    monitor = roles.make("ops_mon")
    sql(f'GRANT pg_monitor TO "{monitor}"')

    views = ["SELECT * FROM plank.stats", "SELECT * FROM plank.connections",
             "SELECT * FROM plank.subscriptions", "SELECT * FROM plank.stats()",
             "SELECT * FROM plank.connections()", "SELECT * FROM plank.subscriptions()"]
    control = ["SELECT plank.disconnect(-1)", "SELECT plank.publish('ops_chan', '{\"a\":1}')"]

    def outcomes(role, statements):
        out = {}
        with login_as(role) as conn:
            for stmt in statements:
                with conn.cursor() as cur:
                    try:
                        cur.execute(stmt)
                        out[stmt] = "ok"
                    except psycopg2.errors.InsufficientPrivilege:
                        out[stmt] = "denied"
                    except psycopg2.Error as e:
                        out[stmt] = f"{type(e).__name__}: {e}".strip()
        return out

    got = outcomes(plain, views + control)
    assert got == {s: "denied" for s in views + control}, f"a plain login role: {got}"

    got = outcomes(monitor, views)
    assert got == {s: "ok" for s in views}, f"a member of pg_monitor: {got}"
    got = outcomes(monitor, control)
    assert got == {s: "denied" for s in control}, f"pg_monitor alone must not control: {got}"
    with login_as(monitor) as conn, conn.cursor() as cur:
        cur.execute("SELECT worker_pid FROM plank.stats")
        assert cur.fetchone()[0] == worker_pid(DB)

    # plank.jwt_secret is visible to superusers only (and, as PostgreSQL does for
    # GUC_SUPERUSER_ONLY settings, to pg_read_all_settings, which pg_monitor includes)
    with login_as(plain) as conn, conn.cursor() as cur:
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("SHOW plank.jwt_secret")
        cur.execute("SELECT count(*) FROM pg_settings WHERE name = 'plank.jwt_secret'")
        assert cur.fetchone()[0] == 0, "pg_settings shows plank.jwt_secret to a plain role"

    # a grant of EXECUTE (and of the view) lets a plain role use them
    sql(f'GRANT EXECUTE ON FUNCTION plank.disconnect(bigint, interval), plank.publish(text, jsonb) '
        f'TO "{plain}"')
    chan = "ops_grant_" + tag()

    async def body():
        async with client() as c:
            await c.subscribe("g", channel=chan)
            with login_as(plain) as conn, conn.cursor() as cur:
                cur.execute("SELECT plank.disconnect(-1)")
                assert cur.fetchone()[0] is False
                cur.execute("SELECT plank.publish(%s, '{\"by\": \"grant\"}')", (chan,))
                cur.execute("SELECT pg_backend_pid()")
                backend = cur.fetchone()[0]
            m = await c.next_push("g")
            assert m["type"] == "notify" and m["channel"] == chan, m
            assert json.loads(m["payload"]) == {"by": "grant"} and m["pid"] == backend, m
    run(body())


def test_disconnect_closes_that_client_with_4003_only(db):
    t = tag()
    name = "ops-disc-" + t

    async def body():
        async with client() as victim, client() as bystander:
            await victim.subscribe(f"{t}-v", table="public.items")
            await bystander.subscribe(f"{t}-b", table="public.items")
            vid = await apoll(lambda: connection_of(f"{t}-v"), 5, what="the victim's id")
            bid = await apoll(lambda: connection_of(f"{t}-b"), 5, what="the bystander's id")
            unknown = max(connections()) + 1000000

            assert db.scalar("SELECT plank.disconnect(%s)", (unknown,)) is False
            assert db.scalar("SELECT plank.disconnect(%s)", (vid,)) is True
            code = await victim.expect_close(timeout=10)
            assert code == 4003, f"plank.disconnect() closed the client with {code}, not 4003"

            await apoll(lambda: vid not in connections(), 5, what="the victim to leave the views")
            assert connection_of(f"{t}-v") is None
            assert db.scalar("SELECT plank.disconnect(%s)", (vid,)) is False, \
                "disconnecting a gone client must return false"

            # the other client is untouched
            assert bid in connections()
            pong = await bystander.request({"type": "ping", "id": "still-here"})
            assert pong["type"] == "pong", pong
            db.insert_item(name, 1)
            m = await bystander.change_named(f"{t}-b", name)
            assert m["change"]["op"] == "INSERT"
    try:
        run(body())
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (name,))


async def _authed_client(claims):
    """An (anonymous) client upgraded with a token of these claims; returns it and its id."""
    old = set(connections())
    cm = client()
    c = await cm.__aenter__()
    ack = await c.request({"type": "auth", "id": "a", "token": sign(claims)})
    assert ack["type"] == "ack", ack
    new = await apoll(lambda: set(connections()) - old, 5, what="the new client")
    assert len(new) == 1, new
    return cm, c, new.pop()


async def _refused_with(claims):
    """The close code of a new connection that authenticates with these claims (None if
    it was accepted: then its ack came and it was closed by us)."""
    async with client() as c:
        await c.send({"type": "auth", "id": "a", "token": sign(claims)})
        try:
            m = await c.wait_for(lambda m: m["type"] in ("ack", "error"), what="the auth reply")
        except Closed as e:
            return e.code
        if m["type"] == "ack":
            return None
        return await c.expect_close()


async def _close_code_before_welcome():
    """Open a WebSocket; the close code when the server closes it before any message,
    None when a welcome comes."""
    async with websockets.connect(WS_URL, ping_interval=None, close_timeout=2,
                                  open_timeout=10) as ws:
        try:
            raw = await asyncio.wait_for(ws.recv(), 10)
        except websockets.ConnectionClosed as e:
            return e.rcvd.code if e.rcvd is not None else 1006
        assert json.loads(raw)["type"] == "welcome", raw
        return None


def test_disconnect_with_a_ban_refuses_the_same_identity_with_4004(db):
    """plank.disconnect(id, ban): the client is closed with 4003 and new connections of
    its identity (its token's sub; without a sub, its role) are closed with 4004 while
    the ban lasts; other identities are not affected."""
    t = tag()
    exp = int(time.time()) + 600
    sub = f"mallory-{t}"
    role = f"ops_ban_{t}"

    async def disconnect_banned(claims):
        cm, victim, vid = await _authed_client(claims)
        try:
            assert db.scalar("SELECT plank.disconnect(%s, '1 hour')", (vid,)) is True
            assert await victim.expect_close(timeout=10) == 4003
        finally:
            await cm.__aexit__(None, None, None)

    async def body():
        await disconnect_banned({"role": "plank_web", "sub": sub, "exp": exp})
        assert await _refused_with({"role": "plank_web", "sub": sub, "exp": exp}) == 4004
        # the same sub with another role is the same identity
        assert await _refused_with({"role": role, "sub": sub, "exp": exp}) == 4004
        # another sub of the same role is not
        assert await _refused_with({"role": "plank_web", "sub": f"alice-{t}", "exp": exp}) is None
        # a token without sub: the ban is of its role, for tokens without sub
        await disconnect_banned({"role": role, "exp": exp})
        assert await _refused_with({"role": role, "exp": exp}) == 4004
        assert await _refused_with({"role": role, "sub": f"bob-{t}", "exp": exp}) is None

    sql(f'CREATE ROLE "{role}" NOLOGIN')
    sql(f'GRANT "{role}" TO plank_authenticator')
    try:
        run(body())
    finally:
        sql(f'DROP ROLE "{role}"')


def test_disconnect_ban_of_a_client_without_token_is_of_its_address_and_ends(db):
    """An anonymous client's identity is its address: while the ban lasts every new
    connection from it is closed with 4004; when it ends, connections are accepted."""
    t = tag()

    async def body():
        async with client() as victim:
            await victim.subscribe(f"{t}-v", channel=f"ops_{t}")
            vid = await apoll(lambda: connection_of(f"{t}-v"), 5, what="the victim's id")
            assert connections()[vid]["sub"] is None
            assert db.scalar("SELECT plank.disconnect(%s, '3 seconds')", (vid,)) is True
            assert await victim.expect_close(timeout=10) == 4003
        assert await _close_code_before_welcome() == 4004
        deadline = time.monotonic() + 30
        while await _close_code_before_welcome() == 4004:
            assert time.monotonic() < deadline, "the ban did not end"
            await asyncio.sleep(0.5)
        async with client() as later:
            pong = await later.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
    run(body(), timeout=90)


def test_disconnect_refuses_a_ban_that_is_not_positive(db):
    async def body():
        async with client() as c:
            await c.subscribe("s", channel=f"ops_{tag()}")
            cid = await apoll(lambda: connection_of("s"), 5, what="the client's id")
            for ban in ("0", "-1 hour", "1 day -48 hours"):
                with pytest.raises(psycopg2.errors.InvalidParameterValue):
                    db.scalar("SELECT plank.disconnect(%s, %s::interval)", (cid, ban))
            assert db.scalar("SELECT plank.disconnect(NULL)") is None
            pong = await c.request({"type": "ping", "id": "p"})
            assert pong["type"] == "pong", pong
    run(body())


def test_connections_show_the_token_sub_and_claims_to_superusers_only(roles):  # noqa: F811
    monitor = roles.make("ops_mon")
    sql(f'GRANT pg_monitor TO "{monitor}"')
    t = tag()
    claims = {"role": "plank_web", "sub": f"s\u00e9-{t}", "exp": int(time.time()) + 600,
              "tenant": "acme"}

    async def body():
        cm, c, cid = await _authed_client(claims)
        try:
            async with client() as anon:
                await anon.subscribe("a", channel=f"ops_{t}")
                aid = await apoll(lambda: connection_of("a"), 5, what="the anonymous client's id")
                r = connections()[cid]
                assert (r["role"], r["sub"], r["claims"]) == ("plank_web", claims["sub"], claims), r
                a = connections()[aid]
                assert (a["sub"], a["claims"]) == (None, None), a
                with login_as(monitor) as conn, conn.cursor() as cur:
                    cur.execute("SELECT sub, claims FROM plank.connections WHERE id = %s", (cid,))
                    assert cur.fetchone() == (claims["sub"], None), "claims are for superusers"
        finally:
            await cm.__aexit__(None, None, None)
    run(body())


def test_multibyte_filter_values_are_cut_on_a_character_boundary():
    """plank.subscriptions shows a filter's first 127 bytes, never half a character."""
    t = tag()

    async def body():
        async with client() as c:
            for n, value in enumerate(("\u00e9" * 200, "a" + "\u20ac" * 100, "\U0001F600" * 60)):
                await c.subscribe(f"{t}-{n}", table="public.items", filter={"name": value})
                full = f'name = "{value}"'
                got = next(r["filter"] for r in subscriptions() if r["id"] == f"{t}-{n}")
                assert full.startswith(got) and len(got.encode()) <= 127, got
                assert len(got.encode()) > 127 - 4, got
    run(body())


def test_publish_reaches_channel_subscribers_as_json_and_refuses_channel_plank(db):
    async def body():
        async with client() as c:
            await c.subscribe("chat", channel="chat")
            backend = db.scalar("SELECT pg_backend_pid()")
            db.execute("SELECT plank.publish('chat', '{\"a\":1}'::jsonb)")
            m = await c.next_push("chat")
            assert m["type"] == "notify" and m["channel"] == "chat", m
            assert isinstance(m["payload"], str), m
            assert json.loads(m["payload"]) == {"a": 1}, m
            assert m["pid"] == backend, m

            # not sent on rollback: publish is a NOTIFY, delivered at commit
            conn = db._conn()
            conn.autocommit = False
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT plank.publish('chat', '{\"rolled\": \"back\"}')")
                conn.rollback()
            finally:
                conn.autocommit = True
            db.execute("SELECT plank.publish('chat', '{\"b\": [1, 2]}')")
            m = await c.next_push("chat")
            assert json.loads(m["payload"]) == {"b": [1, 2]}, \
                f"expected the committed publish only, got {m}"
    run(body())

    with pytest.raises(psycopg2.errors.InvalidParameterValue) as e:
        sql("SELECT plank.publish('plank', '{\"a\":1}'::jsonb)")
    assert e.value.pgcode == "22023"
    with pytest.raises(psycopg2.errors.NullValueNotAllowed):
        sql("SELECT plank.publish('chat', NULL)")
    with pytest.raises(psycopg2.errors.NullValueNotAllowed):
        sql("SELECT plank.publish(NULL, '{}')")
    # "The payload must stay under NOTIFY's 8000 bytes": a larger one is an error
    with pytest.raises(psycopg2.errors.InvalidParameterValue):
        sql("SELECT plank.publish('chat', jsonb_build_object('x', repeat('y', 9000)))")


def test_per_connection_counters_match_what_the_client_received(db):
    """messages_sent and bytes_sent of a connection are exactly the frames (and their
    payload bytes) the client read; queue_depth and queue_bytes are 0 once it has read
    everything; last_seq is the last seq the worker assigned."""
    t = tag()
    name = "ops-count-" + t

    async def body():
        ws = await asyncio.wait_for(websockets.connect(WS_URL, max_size=None,
                                                       ping_interval=None), 10)
        received = []

        async def recv_until(pred):
            while True:
                raw = await asyncio.wait_for(ws.recv(), 10)
                received.append(raw)
                if pred(json.loads(raw)):
                    return json.loads(raw)
        try:
            await recv_until(lambda m: m["type"] == "welcome")
            await ws.send(json.dumps({"type": "subscribe", "id": f"{t}-s",
                                      "table": "public.items", "filter": {"name": name}}))
            await recv_until(lambda m: m["type"] == "ack")
            conn = db._conn()
            conn.autocommit = False
            with conn.cursor() as cur:
                cur.execute("INSERT INTO items (name, value) VALUES (%s, 1), (%s, 2)",
                            (name, name))
            conn.commit()
            conn.autocommit = True
            await recv_until(lambda m: m.get("commit") is True)
            await ws.send(json.dumps({"type": "ping", "id": "p"}))
            pong = await recv_until(lambda m: m["type"] == "pong")
            kinds = [json.loads(r)["type"] for r in received]
            assert kinds == ["welcome", "ack", "change", "change", "pong"], kinds

            cid = connection_of(f"{t}-s")
            want = (len(received), sum(len(r.encode()) for r in received))

            def settled():
                r = connections().get(cid)
                return r if r and (r["messages_sent"], r["bytes_sent"]) == want else None
            try:
                r = await apoll(settled, 5, what="the counters to match")
            except AssertionError:
                raise AssertionError(f"plank.connections says {connections().get(cid)}, "
                                     f"the client read {want[0]} messages of {want[1]} bytes")
            assert r["queue_depth"] == 0 and r["queue_bytes"] == 0, r
            assert r["subscriptions"] == 1, r
            assert stats()["last_seq"] == pong["seq"], (stats(), pong)
        finally:
            await ws.close()
    try:
        run(body())
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (name,))


def test_unsubscribe_and_long_filters_in_the_views():
    t = tag()
    long_value = "v" * 300

    async def body():
        async with client() as c:
            await c.subscribe(f"{t}-a", table="public.items", filter={"name": long_value})
            await c.subscribe(f"{t}-b", channel=f"ops_{t}")
            # an unqualified name, ops in another order: the view shows what it resolved to
            await c.subscribe(f"{t}-c", table="items", ops=["DELETE", "INSERT"])
            cid = await apoll(lambda: connection_of(f"{t}-a"), 5, what="the client's id")
            r = {s["id"]: s for s in subscriptions() if s["connection_id"] == cid}
            assert set(r) == {f"{t}-a", f"{t}-b", f"{t}-c"}, r
            assert (r[f"{t}-c"]["target"], r[f"{t}-c"]["ops"], r[f"{t}-c"]["filter"]) \
                == ("public.items", "INSERT,DELETE", None), r[f"{t}-c"]
            await c.unsubscribe(f"{t}-c")
            await apoll(lambda: connection_of(f"{t}-c") is None, 5, what="-c to go")
            f = r[f"{t}-a"]["filter"]
            full = f'name = "{long_value}"'
            assert f == full[:127], f"the filter text is its first 127 bytes: {f!r}"
            assert connections()[cid]["subscriptions"] == 2

            await c.unsubscribe(f"{t}-a")
            await apoll(lambda: {s["id"] for s in subscriptions()
                                 if s["connection_id"] == cid} == {f"{t}-b"}, 5,
                        what="the unsubscribed subscription to leave plank.subscriptions")
            assert connections()[cid]["subscriptions"] == 1
            await c.unsubscribe(f"{t}-b")
            await apoll(lambda: connection_of(f"{t}-b") is None
                        and connections()[cid]["subscriptions"] == 0, 5,
                        what="no subscription left")
    run(body())


def test_role_is_null_until_authenticated_and_auth_failures_are_counted():
    before = stats()["auth_failures"]
    with plank_settings({"plank.anonymous_role": ""}):
        async def body():
            old = set(connections())
            async with client() as c:
                assert c.welcome.get("auth") == "required", c.welcome
                new = await apoll(lambda: set(connections()) - old, 5, what="the new client")
                assert len(new) == 1, new
                cid = new.pop()
                assert connections()[cid]["role"] is None, connections()[cid]
                ack = await c.request({"type": "auth", "id": "a",
                                       "token": sign({"role": "plank_web",
                                                       "exp": int(time.time()) + 300})})
                assert ack["type"] == "ack", ack
                await apoll(lambda: connections()[cid]["role"] == "plank_web", 5,
                            what="the role to show after auth")
            async with client() as c:
                await c.send({"type": "auth", "id": "a",
                              "token": sign({"role": "plank_web"}, key="wrong")})
                err = await c.wait_for(lambda m: m["type"] == "error", what="the refusal")
                assert err["code"] == "invalid_token", err
                assert await c.expect_close() == 4001
        run(body())
    assert stats()["auth_failures"] == before + 1


def test_last_activity_moves_with_client_messages():
    """plank.connections.last_activity is the last time the client sent a message
    (plank.connections() comment; libwebsockets consumes the empty pongs answering its
    own keepalive pings, so those are not seen): a ping request moves it, and a client
    that only answers the server's WebSocket pings stays connected."""
    t = tag()
    with plank_settings({"plank.ping_interval": "1s", "plank.ping_timeout": "5s"}):
        async def body():
            async with client() as c:
                await c.subscribe(f"{t}-s", table="public.items")
                cid = await apoll(lambda: connection_of(f"{t}-s"), 5, what="the client's id")
                first = connections()[cid]["last_activity"]
                await asyncio.sleep(2.5)
                assert c.ws.open, "the client answering pings was dropped"
                pong = await c.request({"type": "ping", "id": f"{t}-p"})
                assert pong["type"] == "pong", pong
                now = await apoll(lambda: (lambda v: v if v > first else None)(
                    connections()[cid]["last_activity"]), 5, what="last_activity to move")
                assert now > first
        run(body())
