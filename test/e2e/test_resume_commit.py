"""Resume in the middle of a transaction: a client that resumes from a change it received
gets the commit marker of that change's transaction when the transaction ended after it,
whether the end was a change on another table, a change its filter left out, or one that
row-level security hid (docs/PROTOCOL.md, "resume after a reconnect", "commit"). It
never gets a marker for a transaction of which it received nothing."""

import asyncio

from conftest import Client, client, run, sql, write_transaction
from helpers import authed, res, token  # noqa: F401

CLAIMS_SUB = "(current_setting('request.jwt.claims', true)::jsonb ->> 'sub')"


def write_tx(rows):
    """One transaction inserting (table, grp, owner) rows in order; returns its xid."""
    return write_transaction([(f"INSERT INTO public.{table} (grp, owner) VALUES (%s, %s)", (grp, owner))
                              for table, grp, owner in rows])


COLUMNS = "id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, grp int, owner text"


def since(epoch, seq):
    return {"epoch": epoch, "seq": seq}


async def resume(sub_id, table, epoch, seq, **extra):
    """Resume in a new client; return (client, replayed messages, ack). The caller
    closes the client."""
    c = await Client.open(keep_commits=True)
    pushed, ack = await c.request_all({"type": "subscribe", "id": sub_id, "table": table,
                                       "since": since(epoch, seq), **extra})
    assert ack["type"] == "ack" and ack["resumed"] is True, (ack, pushed)
    return c, pushed, ack


def marker(sub, seq, epoch, xid):
    return {"sub": sub, "type": "commit", "seq": seq, "epoch": epoch, "xid": xid}


def test_resume_from_a_change_whose_transaction_ended_on_another_table(res):  # noqa: F811
    a = res.table(COLUMNS, prefix="rca")
    b = res.table(COLUMNS, prefix="rcb")

    async def body():
        async with client(keep_commits=True) as c1:
            epoch = c1.welcome["epoch"]
            await c1.subscribe("s", table=f"public.{a}")
            xid = await asyncio.to_thread(write_tx, [(a, 1, "x"), (b, 1, "x")])
            change, commit = await c1.events("s", 2)
            assert change["type"] == "change" and change["change"]["xid"] == xid, change
            assert commit["type"] == "commit" and commit["seq"] > change["seq"], commit
            assert c1.folded == 0, "the last change was on the other table"

        # the client got the change, then lost the connection before the marker
        c2, pushed, ack = await resume("s", f"public.{a}", epoch, change["seq"])
        try:
            assert pushed == [marker("s", commit["seq"], epoch, xid)], pushed
            await c2.sync()
            assert c2.kept_events() == [], c2.kept_events()
        finally:
            await c2.close()

        # resuming from the marker itself: nothing again
        c3, pushed, ack = await resume("s", f"public.{a}", epoch, commit["seq"])
        try:
            assert pushed == [], pushed
        finally:
            await c3.close()
    run(body())


def test_resume_from_a_change_whose_transaction_ended_with_a_filtered_change(res):  # noqa: F811
    a = res.table(COLUMNS, prefix="rcf")
    flt = {"grp": 1}

    async def body():
        async with client(keep_commits=True) as c1:
            epoch = c1.welcome["epoch"]
            await c1.subscribe("s", table=f"public.{a}", filter=flt)
            xid = await asyncio.to_thread(write_tx, [(a, 1, "x"), (a, 2, "x")])
            change, commit = await c1.events("s", 2)
            assert change["change"]["new"]["grp"] == 1 and commit["type"] == "commit"

        c2, pushed, ack = await resume("s", f"public.{a}", epoch, change["seq"], filter=flt)
        try:
            assert pushed == [marker("s", commit["seq"], epoch, xid)], pushed
            # live delivery goes on after the ack, the next transaction whole
            xid2 = await asyncio.to_thread(write_tx, [(a, 1, "y")])
            fresh = await c2.events("s", 2)
            assert [m["type"] for m in fresh] == ["change", "commit"], fresh
            assert fresh[1]["xid"] == xid2 and fresh[0]["seq"] > ack["seq"]
        finally:
            await c2.close()
    run(body())


def test_resume_from_a_seq_another_subscription_received(res):  # noqa: F811
    """A client that resumes every subscription of a connection from the last seq the
    connection received: each subscription with a change of the open transaction gets
    its marker; one without gets none."""
    a = res.table(COLUMNS, prefix="rcx")
    b = res.table(COLUMNS, prefix="rcy")
    c = res.table(COLUMNS, prefix="rcz")

    async def body():
        async with client(keep_commits=True) as c1:
            epoch = c1.welcome["epoch"]
            await c1.subscribe("a", table=f"public.{a}")
            await c1.subscribe("b", table=f"public.{b}")
            await c1.subscribe("a2", table=f"public.{a}", filter={"grp": 9})
            xid = await asyncio.to_thread(write_tx, [(a, 1, "x"), (b, 1, "x"), (c, 1, "x")])
            ev_a = await c1.events("a", 2)
            ev_b = await c1.events("b", 2)
            last_seq = ev_b[0]["seq"]      # the connection's last change before the markers
            end = ev_a[1]["seq"]
            assert ev_b[1]["seq"] == end and ev_a[0]["seq"] < last_seq < end

        c2 = await Client.open(keep_commits=True)
        try:
            for sub_id, table, extra in (("a", a, {}), ("b", b, {}),
                                         ("a2", a, {"filter": {"grp": 9}})):
                pushed, ack = await c2.request_all(
                    {"type": "subscribe", "id": sub_id, "table": f"public.{table}",
                     "since": since(epoch, last_seq), **extra})
                assert ack["resumed"] is True, ack
                want = [] if sub_id == "a2" else [marker(sub_id, end, epoch, xid)]
                assert pushed == want, (sub_id, pushed)
            await c2.sync()
            assert c2.kept_events() == [], c2.kept_events()
        finally:
            await c2.close()
    run(body())


def test_resume_without_a_change_of_the_transaction_gets_no_marker(res):  # noqa: F811
    a = res.table(COLUMNS, prefix="rcn")
    b = res.table(COLUMNS, prefix="rco")
    flt = {"grp": 1}

    async def body():
        async with client(keep_commits=True) as c1:
            epoch = c1.welcome["epoch"]
            await c1.subscribe("all", table=f"public.{a}")
            await asyncio.to_thread(write_tx, [(a, 2, "x"), (b, 1, "x")])
            change, _ = await c1.events("all", 2)
        c2, pushed, ack = await resume("s", f"public.{a}", epoch, change["seq"], filter=flt)
        try:
            assert pushed == [], pushed
        finally:
            await c2.close()
    run(body())


def test_resume_under_row_level_security_gets_the_marker_it_is_owed(res):  # noqa: F811
    r = res.role()
    a = res.table(COLUMNS, prefix="rcr")
    b = res.table(COLUMNS, prefix="rcs")
    sql(f"ALTER TABLE public.{a} ENABLE ROW LEVEL SECURITY")
    sql(f"CREATE POLICY own ON public.{a} FOR SELECT USING (owner = {CLAIMS_SUB})")
    sql(f'GRANT SELECT ON public.{a} TO "{r}"')
    table = f"public.{a}"

    async def body():
        async with authed(token(r, sub="alice"), keep_commits=True) as alice:
            epoch = alice.welcome["epoch"]
            await alice.subscribe("s", table=table)
            xid = await asyncio.to_thread(write_tx, [(a, 1, "alice"), (b, 1, "x")])
            change, commit = await alice.events("s", 2)
            assert change["change"]["new"]["owner"] == "alice" and commit["xid"] == xid

        async def resumed(who):
            """Resume `who`'s subscription from the change's seq; then a row of its own
            in a new transaction: whatever the replay sends comes before that row."""
            async with authed(token(r, sub=who), keep_commits=True) as c:
                pushed, ack = await c.request_all(
                    {"type": "subscribe", "id": "s", "table": table,
                     "since": since(epoch, change["seq"])})
                assert ack["resumed"] is True, ack
                xid2 = await asyncio.to_thread(write_tx, [(a, 5, who)])
                got = list(pushed)
                while not (got and got[-1]["type"] == "commit" and got[-1]["xid"] == xid2):
                    got.append(await c.next_event("s"))
                return got, xid2

        got, xid2 = await resumed("alice")
        assert got[0] == marker("s", commit["seq"], epoch, xid), got
        assert [m["type"] for m in got[1:]] == ["change", "commit"], got

        # bob could not see the change: no marker for him
        got, xid2 = await resumed("bob")
        assert [m["type"] for m in got] == ["change", "commit"], got
        assert got[0]["change"]["new"]["owner"] == "bob"
    run(body())
