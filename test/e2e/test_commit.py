"""Commit markers and transactions (docs/PROTOCOL.md, "commit"): the changes of one
transaction are delivered contiguously, in the order they were made, and closed for each
subscription by one commit: `"commit": true` on the transaction's last change when the
subscription receives it, else a `commit` message with the transaction's xid and the seq
of its last change. The test client (conftest.Client) turns the first form into the
second; test_commit_wire_form checks the frames themselves."""

import asyncio
import json
import threading

import websockets

import pytest

from conftest import WS_URL, client, connect, run, sql, tag, write_transaction


@pytest.fixture(scope="module", autouse=True)
def accounts():
    sql("CREATE TABLE IF NOT EXISTS public.e2e_accounts "
        "(id int PRIMARY KEY, owner text NOT NULL, balance numeric NOT NULL)")
    sql("SELECT plank.track('public.e2e_accounts')")


def new_accounts(owner, n=2, balance=100):
    """Insert n accounts of `owner`; return their ids."""
    base = sql("SELECT coalesce(max(id), 0) FROM e2e_accounts")[0][0]
    ids = list(range(base + 1, base + n + 1))
    for i in ids:
        sql("INSERT INTO e2e_accounts VALUES (%s, %s, %s)", (i, owner, balance))
    return ids


def transfer(src, dst, amount):
    """A debit and a credit in one transaction; returns its xid."""
    return write_transaction([
        ("UPDATE e2e_accounts SET balance = balance - %s WHERE id = %s", (amount, src)),
        ("UPDATE e2e_accounts SET balance = balance + %s WHERE id = %s", (amount, dst))])


def item_and_account_tx(name, account, balance):
    """One transaction: INSERT an item named `name`, then set the balance of `account`;
    returns its xid."""
    return write_transaction([
        ("INSERT INTO items (name) VALUES (%s)", (name,)),
        ("UPDATE e2e_accounts SET balance = %s WHERE id = %s", (balance, account))])


def split_transactions(msgs):
    """Split a subscription's stream into transactions: [(changes, commit)], checking that
    each commit closes the changes before it."""
    out, changes = [], []
    for m in msgs:
        if m["type"] == "change":
            changes.append(m)
        else:
            assert m["type"] == "commit", m
            assert changes, f"a commit without changes before it: {m}"
            out.append((changes, m))
            changes = []
    assert not changes, f"changes without a commit after them: {changes}"
    return out


def test_single_change_then_commit(db):
    name = tag()

    async def body():
        async with client(keep_commits=True) as c:
            epoch = c.welcome["epoch"]
            ack = await c.subscribe("items", table="public.items", filter={"name": name})
            xid = (await asyncio.to_thread(
                db.query, "INSERT INTO items (name) VALUES (%s) RETURNING txid_current()",
                (name,)))[0][0]
            change, commit = await c.events("items", 2)
            assert change["type"] == "change" and change["change"]["xid"] == xid, change
            assert change["seq"] > ack["seq"]
            assert commit == {"sub": "items", "type": "commit", "seq": change["seq"],
                              "epoch": epoch, "xid": xid}, commit
            await c.sync()
            assert c.kept_events() == [], "one commit per transaction"
            assert c.folded == 1, "the change did not carry \"commit\": true"
    run(body())


def test_debit_and_credit_arrive_together_before_one_commit():
    owner = tag()
    a, b = new_accounts(owner)

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("acc", table="public.e2e_accounts", filter={"owner": owner})
            await c.subscribe("debit", table="public.e2e_accounts", filter={"id": a})
            xid = await asyncio.to_thread(transfer, a, b, 30)
            debit, credit, commit = await c.events("acc", 3)
            for m in (debit, credit):
                assert m["type"] == "change" and m["change"]["op"] == "UPDATE", m
                assert m["change"]["xid"] == xid, m
            assert (debit["change"]["new"]["id"], debit["change"]["new"]["balance"]) == (a, 70)
            assert (credit["change"]["new"]["id"], credit["change"]["new"]["balance"]) == (b, 130)
            assert [debit["change"]["n"], credit["change"]["n"]] == [1, 2]
            assert credit["seq"] == debit["seq"] + 1, "the transaction is not contiguous"
            assert commit["type"] == "commit" and commit["xid"] == xid \
                and commit["seq"] == credit["seq"], commit
            # a subscription that only sees the debit: its commit still carries the seq of
            # the transaction's last change, the credit it did not receive
            only, only_commit = await c.events("debit", 2)
            assert only["seq"] == debit["seq"] and only["change"] == debit["change"]
            assert only_commit == dict(commit, sub="debit"), only_commit
            await c.sync()
            assert c.kept_events() == []
            # "acc" got the credit with "commit": true, "debit" a commit message
            assert c.folded == 1, c.folded
    run(body())


def test_commit_closes_every_subscription_that_got_part_of_the_transaction():
    """A transaction over two tables: a subscription to each gets its own part, and a
    commit with the seq of the transaction's last change (which one of them did not
    receive; docs/PROTOCOL.md, "commit")."""
    owner = tag()
    a, b = new_accounts(owner)
    name = tag()

    def tx():
        return item_and_account_tx(name, a, 0)

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("items", table="public.items", filter={"name": name})
            await c.subscribe("acc", table="public.e2e_accounts", filter={"owner": owner})
            await c.subscribe("none", table="public.e2e_accounts", filter={"owner": tag()})
            xid = await asyncio.to_thread(tx)
            item, item_commit = await c.events("items", 2)
            acc, acc_commit = await c.events("acc", 2)
            assert item["change"]["new"]["name"] == name and acc["change"]["new"]["id"] == a
            assert acc["seq"] == item["seq"] + 1
            for commit in (item_commit, acc_commit):
                assert commit["type"] == "commit" and commit["xid"] == xid, commit
                assert commit["seq"] == acc["seq"], \
                    f"the commit does not carry the seq of the transaction's last change: {commit}"
            # the commit of items comes after the last change of the transaction
            await c.sync()
            assert c.kept_events() == [], "a subscription with no change got a commit"
            assert c.folded == 1, c.folded
    run(body())
    sql("DELETE FROM items WHERE name = %s", (name,))


def test_interleaved_writers_keep_each_transaction_contiguous():
    """Two connections write transactions of several rows at the same time, their
    statements interleaved: every transaction still arrives whole, in order, and its
    commit comes right after its last change."""
    owner = tag()
    accounts = {w: new_accounts(owner + w, n=3) for w in "ab"}
    rounds = 15
    start = threading.Barrier(2)

    def writer(w):
        conn = connect(autocommit=False)
        xids = []
        try:
            start.wait(10)
            with conn.cursor() as cur:
                for r in range(rounds):
                    for i in accounts[w]:
                        cur.execute("UPDATE e2e_accounts SET balance = %s WHERE id = %s",
                                    (r, i))
                    cur.execute("SELECT txid_current()")
                    xids.append(cur.fetchone()[0])
                    conn.commit()
            return xids
        finally:
            conn.close()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("acc", table="public.e2e_accounts", filter={"owner": owner + "a"})
            await c.subscribe("accb", table="public.e2e_accounts", filter={"owner": owner + "b"})
            await c.subscribe("all", table="public.e2e_accounts")
            xa, xb = await asyncio.gather(asyncio.to_thread(writer, "a"),
                                          asyncio.to_thread(writer, "b"))
            every = await c.events("all", 2 * rounds * 4, timeout=20)
            txs = split_transactions(every)
            assert sorted(commit["xid"] for _, commit in txs) == sorted(xa + xb)
            for changes, commit in txs:
                assert len(changes) == 3, changes
                assert {m["change"]["xid"] for m in changes} == {commit["xid"]}, \
                    f"changes of another transaction inside transaction {commit['xid']}"
                assert [m["change"]["n"] for m in changes] == [1, 2, 3]
                seqs = [m["seq"] for m in changes]
                assert seqs == list(range(seqs[0], seqs[0] + 3)), "not contiguous"
                assert commit["seq"] == seqs[-1], commit
            # each writer's own subscription sees its transactions in its commit order
            for sub, xids in (("acc", xa), ("accb", xb)):
                mine = split_transactions(await c.events(sub, rounds * 4, timeout=20))
                assert [commit["xid"] for _, commit in mine] == xids
    run(body(), timeout=60)


def test_notify_inside_a_transaction_does_not_split_it(db):
    """A pg_notify between two changes of one transaction: the table subscription still
    gets both changes and one commit; the channel subscription gets the notify."""
    owner = tag()
    a, b = new_accounts(owner)
    channel = "e2e_" + tag()

    def tx():
        conn = connect(autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute("UPDATE e2e_accounts SET balance = 1 WHERE id = %s", (a,))
                cur.execute("SELECT pg_notify(%s, 'between')", (channel,))
                cur.execute("UPDATE e2e_accounts SET balance = 2 WHERE id = %s", (b,))
                cur.execute("SELECT txid_current()")
                xid = cur.fetchone()[0]
            conn.commit()
            return xid
        finally:
            conn.close()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("acc", table="public.e2e_accounts", filter={"owner": owner})
            await c.subscribe("chan", channel=channel)
            xid = await asyncio.to_thread(tx)
            first, second, commit = await c.events("acc", 3)
            note = await c.next_event("chan")
            assert [first["type"], second["type"], commit["type"]] == \
                ["change", "change", "commit"], (first, second, commit)
            assert commit["xid"] == xid and commit["seq"] == second["seq"]
            assert note["type"] == "notify" and note["payload"] == "between"
            assert first["seq"] < note["seq"] < second["seq"], (first, note, second)
    run(body())


def test_statements_interleaved_across_two_open_transactions():
    """Two transactions open at once, their statements alternating (A1 B1 A2 B2 A3 B3),
    committed B first then A: B arrives whole and committed, then A whole."""
    owner = tag()
    ids_a, ids_b = new_accounts(owner, n=3), new_accounts(owner, n=3)

    def interleave():
        ca, cb = connect(autocommit=False), connect(autocommit=False)
        try:
            with ca.cursor() as a, cb.cursor() as b:
                for i, j in zip(ids_a, ids_b):
                    a.execute("UPDATE e2e_accounts SET balance = -1 WHERE id = %s", (i,))
                    b.execute("UPDATE e2e_accounts SET balance = -2 WHERE id = %s", (j,))
                a.execute("SELECT txid_current()")
                b.execute("SELECT txid_current()")
                xa, xb = a.fetchone()[0], b.fetchone()[0]
            cb.commit()
            ca.commit()
            return xa, xb
        finally:
            ca.close()
            cb.close()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("acc", table="public.e2e_accounts", filter={"owner": owner})
            xa, xb = await asyncio.to_thread(interleave)
            txs = split_transactions(await c.events("acc", 8))
            assert [commit["xid"] for _, commit in txs] == [xb, xa], "not in commit order"
            (changes_b, _), (changes_a, _) = txs
            assert [m["change"]["new"]["id"] for m in changes_b] == ids_b
            assert [m["change"]["new"]["id"] for m in changes_a] == ids_a
            seqs = [m["seq"] for m in changes_b + changes_a]
            assert seqs == list(range(seqs[0], seqs[0] + 6)), seqs
    run(body())


def test_commit_wire_form():
    """The frames as sent: a single-change transaction is one message carrying
    "commit": true; in a transaction over two tables the subscription that gets the last
    change gets it with "commit": true and the other one a separate commit message."""
    owner = tag()
    a, _ = new_accounts(owner)
    name = tag()

    def tx():
        return item_and_account_tx(name, a, 1)

    async def frames(ws, n):
        return [json.loads(await asyncio.wait_for(ws.recv(), 10)) for _ in range(n)]

    async def body():
        async with websockets.connect(WS_URL, ping_interval=None) as ws:
            await frames(ws, 1)   # welcome
            for sub, table, flt in (("items", "public.items", {"name": name}),
                                    ("acc", "public.e2e_accounts", {"owner": owner})):
                await ws.send(json.dumps({"type": "subscribe", "id": sub, "table": table,
                                          "filter": flt}))
                (ack,) = await frames(ws, 1)
                assert ack["type"] == "ack", ack
            await asyncio.to_thread(sql, "INSERT INTO items (name) VALUES (%s)", (name + "-1",))
            await asyncio.to_thread(sql, "UPDATE e2e_accounts SET balance = 2 WHERE id = %s", (a,))
            (single,) = await frames(ws, 1)
            assert single["type"] == "change" and single["sub"] == "acc", single
            assert single["commit"] is True, single
            xid = await asyncio.to_thread(tx)
            item, acc, item_commit = await frames(ws, 3)
            assert item["type"] == "change" and item["sub"] == "items" and "commit" not in item
            assert item_commit == {"sub": "items", "type": "commit", "seq": acc["seq"],
                                   "epoch": acc["epoch"], "xid": xid}, item_commit
            assert acc["type"] == "change" and acc["sub"] == "acc" and acc["commit"] is True
            assert acc["seq"] == item["seq"] + 1
    run(body())
    sql("DELETE FROM items WHERE name LIKE %s", (name + "%",))


def test_n_is_ordinal_with_gaps_after_rollback_to_savepoint():
    """`n` increases with every change the transaction makes, from 1; a change undone by
    ROLLBACK TO SAVEPOINT is not sent but keeps its number (docs/PROTOCOL.md, "Change
    payload")."""
    owner = tag()

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("a", table="public.e2e_accounts", filter={"owner": owner})
            base = sql("SELECT coalesce(max(id), 0) FROM e2e_accounts")[0][0]
            ins = "INSERT INTO e2e_accounts VALUES (%s, %s, 1)"
            xid = await asyncio.to_thread(write_transaction, [
                (ins, (base + 1, owner)),
                ("SAVEPOINT s", None),
                (ins, (base + 2, owner)),
                (ins, (base + 3, owner)),
                ("ROLLBACK TO SAVEPOINT s", None),
                (ins, (base + 4, owner))])
            got = await c.events("a", 3)
            assert [m["type"] for m in got] == ["change", "change", "commit"], got
            assert [m["change"]["new"]["id"] for m in got[:2]] == [base + 1, base + 4]
            assert [m["change"]["n"] for m in got[:2]] == [1, 4], got
            assert got[2]["xid"] == xid and got[1]["seq"] == got[0]["seq"] + 1
    run(body())


def test_prepare_transaction_after_writing_a_tracked_table_is_refused():
    """Two-phase commit (docs/RELIABILITY.md, "Capture"): the capture's NOTIFY makes
    PostgreSQL refuse PREPARE TRANSACTION (0A000) and roll the transaction back, so
    nothing is half-delivered; a prepared transaction that writes no tracked table
    commits, and the tracked write made after COMMIT PREPARED is delivered."""
    import psycopg2

    assert int(sql("SHOW max_prepared_transactions")[0][0]) > 0, \
        "the test cluster needs max_prepared_transactions (scripts/test.sh sets it)"
    owner = tag()
    gid = f"e2e_{owner}"
    base = sql("SELECT coalesce(max(id), 0) FROM e2e_accounts")[0][0]
    sql(f"CREATE TABLE public.e2e_untracked_{owner} (id int)")

    async def body():
        async with client(keep_commits=True) as c:
            await c.subscribe("a", table="public.e2e_accounts", filter={"owner": owner})
            conn = connect(autocommit=False)
            try:
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO e2e_accounts VALUES (%s, %s, 1)", (base + 1, owner))
                    with pytest.raises(psycopg2.Error) as err:
                        cur.execute(f"PREPARE TRANSACTION '{gid}'")
                assert err.value.pgcode == "0A000", err.value
                assert "cannot PREPARE a transaction that has executed LISTEN, UNLISTEN, " \
                    "or NOTIFY" in str(err.value), err.value
                conn.rollback()
            finally:
                conn.close()
            assert sql("SELECT count(*) FROM e2e_accounts WHERE owner = %s", (owner,))[0][0] == 0
            assert sql("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (gid,))[0][0] == 0

            # the workaround: the prepared transaction writes no tracked table; the tracked
            # write follows COMMIT PREPARED in a transaction of its own
            conn = connect(autocommit=False)
            try:
                with conn.cursor() as cur:
                    cur.execute(f"INSERT INTO public.e2e_untracked_{owner} VALUES (1)")
                    cur.execute(f"PREPARE TRANSACTION '{gid}'")
            finally:
                conn.close()
            await asyncio.to_thread(sql, f"COMMIT PREPARED '{gid}'")
            await asyncio.to_thread(
                sql, "INSERT INTO e2e_accounts VALUES (%s, %s, 1)", (base + 2, owner))
            change, commit = await c.events("a", 2)
            assert change["change"]["new"]["id"] == base + 2 and commit["type"] == "commit"
            await c.sync()
            assert c.kept_events() == [], "the refused transaction sent nothing"
    try:
        run(body())
    finally:
        if sql("SELECT count(*) FROM pg_prepared_xacts WHERE gid = %s", (gid,))[0][0]:
            sql(f"ROLLBACK PREPARED '{gid}'")
        sql(f"DROP TABLE IF EXISTS public.e2e_untracked_{owner}")
