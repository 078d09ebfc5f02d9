"""GET /health and GET /metrics on Plank's port (README "Monitoring"), and
plank.http_allowed_addresses."""

import asyncio
import json

import time

from conftest import DB, PORT, client, run, sql, tag
from helpers import (PORT2, apoll, http_get, metric_value, parse_prometheus, plank_settings,
                     roles, sign, stats, worker_pid)

COUNTERS = ["plank_notifications_received_total", "plank_messages_sent_total",
            "plank_bytes_sent_total", "plank_connections_total",
            "plank_clients_dropped_slow_total", "plank_resyncs_total",
            "plank_protocol_errors_total", "plank_auth_failures_total",
            "plank_clients_rate_limited_total", "plank_rls_check_failures_total"]
GAUGES = ["plank_connections", "plank_subscriptions", "plank_replay_ring_events",
          "plank_replay_ring_bytes", "plank_last_seq", "plank_notify_queue_usage",
          "plank_uptime_seconds"]
HISTOGRAM = "plank_send_latency_seconds"


def metrics():
    status, headers, body = http_get("/metrics")
    assert status == 200, (status, body[:300])
    assert headers.get("content-type", "").startswith("text/plain"), headers
    return parse_prometheus(body)


def test_health_reports_the_worker_and_its_clients():
    async def body():
        async with client() as c:
            await c.subscribe("h", table="public.items")
            status, headers, text = http_get("/health")
            assert status == 200, (status, text)
            assert headers.get("content-type", "").startswith("application/json"), headers
            h = json.loads(text)
            assert h["status"] == "ok", h
            assert h["database_reachable"] is True, h
            assert h["database"] == DB, h
            assert h["worker_pid"] == worker_pid(DB), h
            assert h["epoch"] == c.welcome["epoch"], (h, c.welcome)
            s = stats()
            assert isinstance(h["connections"], int) and h["connections"] >= 1, h
            assert h["connections"] == s["connections"], (h, s)
            assert isinstance(h["subscriptions"], int) and h["subscriptions"] >= 1, h
            assert 0 <= h["notify_queue_usage"] <= 1, h
            assert h["uptime_seconds"] >= 0, h
            assert h["check_workers"] >= 0 and h["checks_queued"] >= 0, h
            assert isinstance(h["seq"], int) and h["seq"] >= c.welcome["seq"], h
    run(body())


def test_metrics_parse_as_prometheus_text_and_counters_grow(db):
    fams = metrics()
    for name in COUNTERS:
        assert fams.get(name, {}).get("type") == "counter", f"{name} missing or not a counter"
    for name in GAUGES:
        assert fams.get(name, {}).get("type") == "gauge", f"{name} missing or not a gauge"
    assert fams.get(HISTOGRAM, {}).get("type") == "histogram", f"{HISTOGRAM} missing"
    assert [le for le, _ in fams[HISTOGRAM]["buckets"]][-1] == float("inf")

    name = "ops-metrics-" + tag()
    before = fams

    async def body():
        async with client() as c:
            await c.subscribe("m", table="public.items")
            for i in range(3):
                db.insert_item(f"{name}-{i}", i)
            for i in range(3):
                await c.change_named("m", f"{name}-{i}")
            err = await c.request({"type": "bogus"})
            assert err["type"] == "error", err
            during = metrics()
            assert metric_value(during, "plank_connections") >= 1
            assert metric_value(during, "plank_subscriptions") >= 1
            return during
    try:
        during = run(body())
    finally:
        db.execute("DELETE FROM items WHERE name LIKE %s", (name + "-%",))

    def grew(n, by=1):
        return metric_value(during, n) >= metric_value(before, n) + by
    assert grew("plank_notifications_received_total", 3), (before, during)
    assert grew("plank_messages_sent_total", 4)
    assert grew("plank_bytes_sent_total", 100)
    assert grew("plank_connections_total", 1)
    assert grew("plank_protocol_errors_total", 1)
    assert grew("plank_last_seq", 3)
    assert metric_value(during, "plank_replay_ring_events") > 0
    assert during[HISTOGRAM]["count"] >= before[HISTOGRAM]["count"] + 3
    # counters never go down between scrapes
    after = metrics()
    for n in COUNTERS:
        assert metric_value(after, n) >= metric_value(during, n), n
    assert after[HISTOGRAM]["count"] >= during[HISTOGRAM]["count"]
    # the views and /metrics read the same counters
    s = stats()
    after = metrics()
    assert metric_value(after, "plank_notifications_received_total") >= s["notifications_received"]
    assert metric_value(after, "plank_resyncs_total") == s["resyncs"]
    assert metric_value(after, "plank_protocol_errors_total") == s["protocol_errors"]


def test_http_allowed_addresses_refuses_other_clients_with_403():
    assert http_get("/health")[0] == 200
    with plank_settings({"plank.http_allowed_addresses": "192.0.2.1"}):
        for port in (PORT, PORT2):   # both workers reload
            for path in ("/health", "/metrics"):
                status, _, text = asyncio.run(apoll(
                    lambda: (lambda r: r if r[0] == 403 else None)(http_get(path, port=port)),
                    5, what=f"GET {path} on port {port} to be refused"))
                assert "plank_" not in text and "database" not in text, text[:200]

        # WebSocket clients are not affected
        async def ws():
            async with client() as c:
                pong = await c.request({"type": "ping", "id": "p"})
                assert pong["type"] == "pong"
        run(ws())
    for port in (PORT, PORT2):
        for path in ("/health", "/metrics"):
            assert http_get(path, port=port)[0] == 200, f"GET {path} on {port} after the reset"
    with plank_settings({"plank.http_allowed_addresses": "192.0.2.1, 127.0.0.1"}):
        assert http_get("/health")[0] == 200
        assert http_get("/metrics")[0] == 200


def _changes_of(fams, schema, table):
    for name, labels, value in fams.get("plank_changes_total", {}).get("samples", []):
        if labels == {"schema": schema, "table": table}:
            return value
    return 0


def test_metrics_count_changes_per_table(db):
    fams = metrics()
    assert fams.get("plank_changes_total", {}).get("type") == "counter"
    before = _changes_of(fams, "public", "items")
    name = "ops-pertable-" + tag()

    async def body():
        async with client() as c:
            await c.subscribe("pt", table="public.items")
            for i in range(4):
                db.insert_item(f"{name}-{i}", i)
            db.execute("DELETE FROM items WHERE name LIKE %s", (name + "-%",))
            for i in range(4):
                await c.change_named("pt", f"{name}-{i}")
            await c.wait_for(lambda m: m.get("type") == "change" and m["change"]["op"] == "DELETE",
                             what="a delete")
    try:
        run(body())
    finally:
        db.execute("DELETE FROM items WHERE name LIKE %s", (name + "-%",))
    after = asyncio.run(apoll(lambda: (lambda v: v if v >= before + 8 else None)(
        _changes_of(metrics(), "public", "items")), 5, what="8 more changes of public.items"))
    assert after >= before + 8, (before, after)


def test_metrics_time_row_level_security_checks_and_count_failures(db, roles):
    """plank_rls_check_seconds counts every batch of checks; a policy that raises makes
    plank_rls_check_failures_total grow (the change is then hidden from that role)."""
    role = roles.make("opsrls", "NOLOGIN")
    t = f"ops_rls_{tag()}"
    sql(f"CREATE TABLE public.{t} (id int PRIMARY KEY, v int NOT NULL)")
    sql(f"""CREATE FUNCTION public.{t}_ok(v int) RETURNS boolean LANGUAGE plpgsql AS $$
            BEGIN IF v < 0 THEN RAISE EXCEPTION 'negative'; END IF; RETURN true; END $$""")
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY p ON public.{t} FOR SELECT USING (public.{t}_ok(v))")
    sql(f'GRANT SELECT ON public.{t} TO "{role}"')
    sql(f"SELECT plank.track('public.{t}')")
    before = metrics()

    async def body():
        async with client() as c:
            ack = await c.request({"type": "auth", "id": "a",
                                   "token": sign({"role": role, "exp": int(time.time()) + 300})})
            assert ack["type"] == "ack", ack
            await c.subscribe("r", table=f"public.{t}")
            db.execute(f"INSERT INTO public.{t} VALUES (1, 1)")
            await c.wait_for(lambda m: m.get("type") == "change" and m["change"]["new"]["id"] == 1,
                             what="the visible row")
            db.execute(f"INSERT INTO public.{t} VALUES (2, -1)")
            db.execute(f"INSERT INTO public.{t} VALUES (3, 3)")
            await c.wait_for(lambda m: m.get("type") == "change" and m["change"]["new"]["id"] == 3,
                             what="the row after the failing check")
            assert not any(m.get("type") == "change" and m["change"].get("new", {}).get("id") == 2
                           for m in c.inbox), "the row whose check failed was sent"
    try:
        run(body())
    finally:
        sql(f"DROP TABLE IF EXISTS public.{t}")
        sql(f"DROP FUNCTION IF EXISTS public.{t}_ok(int)")
    after = metrics()
    hist = "plank_rls_check_seconds"
    assert after[hist]["type"] == "histogram"
    assert after[hist]["count"] >= before[hist]["count"] + 3, (before[hist], after[hist])
    assert after[hist]["sum"] > before[hist]["sum"]
    assert metric_value(after, "plank_rls_check_failures_total") >= \
        metric_value(before, "plank_rls_check_failures_total") + 1
