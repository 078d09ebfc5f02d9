"""Ordinary database users (not WebSocket clients) against Plank: the change channel,
the SQL API's privileges.

PostgreSQL puts no privilege on NOTIFY: any role that can connect to plank.database may
notify any channel, "plank" included. PROTOCOL.md says a `change` carries "the change
payload below, exactly as the trigger produced it", and plank.publish() refuses channel
"plank" ("reserved for table changes"), so a notification on "plank" that the capture
trigger did not produce must not reach clients as a change."""

import json

import psycopg2
import pytest

from conftest import client, run, sql, tag
from helpers import login_as, res  # noqa: F401



def test_forged_change_on_channel_plank_is_not_delivered(res, db):
    """An unprivileged login role (no privilege on items) notifies channel "plank" with a
    well-formed change payload for public.items: subscribers must not receive it."""
    r = res.role("sec_sqluser", "LOGIN")
    marker = "FORGED-" + tag()
    forged = {"schema": "public", "table": "items", "op": "INSERT", "xid": 1, "n": 1,
              "new": {"id": -1, "name": marker, "value": 0,
                      "created_at": "2026-01-01T00:00:00+00:00",
                      "updated_at": "2026-01-01T00:00:00+00:00"}}
    real = "real-" + tag()

    async def body():
        async with client() as c:
            await c.subscribe("s", table="public.items")
            with login_as(r) as conn, conn.cursor() as cur:
                cur.execute("SELECT pg_notify('plank', %s)", (json.dumps(forged),))
                cur.execute("NOTIFY plank, %s", (json.dumps(dict(forged, op="DELETE",
                                                                 old={"id": 1})),))
            db.insert_item(real, 1)
            await c.wait_for(lambda m: m["type"] == "change"
                             and (m["change"].get("new") or {}).get("name") == real,
                             what="the real insert")
            got = [m["change"] for m in c.kept_pushes("s")]
            assert not got, f"changes forged by role {r} with NOTIFY were delivered: {got}"
    try:
        run(body())
    finally:
        db.execute("DELETE FROM items WHERE name = %s", (real,))


def test_unprivileged_role_cannot_use_the_admin_api(res):
    r = res.role("sec_sqluser", "LOGIN")
    denied = [
        "SELECT plank.publish('chat', '{}')",
        "SELECT plank.disconnect(1)",
        "SELECT * FROM plank.connections",
        "SELECT * FROM plank.subscriptions",
        "SELECT * FROM plank.stats",
        "SELECT * FROM plank.overflow",
        "SELECT plank.grant_channel('%', 'public')",
        "SELECT plank.revoke_channel('%', 'public')",
        "INSERT INTO plank.channel_grants VALUES ('%', 'public')",
        "DELETE FROM plank.channel_grants",
        "SELECT plank.untrack('public.items')",
        "SELECT plank.track('public.items')",
    ]
    with login_as(r) as conn:
        failures = []
        for stmt in denied:
            with conn.cursor() as cur:
                try:
                    cur.execute(stmt)
                    failures.append((stmt, "allowed"))
                except psycopg2.errors.InsufficientPrivilege:
                    pass
                except psycopg2.Error as e:
                    failures.append((stmt, f"{type(e).__name__}: {e}".strip()))
        assert not failures, failures
    # items is still tracked, and nobody granted channels
    assert sql("SELECT count(*) FROM plank.tracked_tables WHERE schema_name = 'public' AND relname = 'items'")[0][0] >= 1
    assert sql("SELECT count(*) FROM plank.channel_grants WHERE channel = '%'")[0][0] == 0


def test_publish_refuses_the_change_channel():
    with pytest.raises(psycopg2.errors.InvalidParameterValue):
        sql("SELECT plank.publish('plank', '{\"schema\":\"public\"}')")
