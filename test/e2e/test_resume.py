"""Resume after a reconnect: a subscribe with "since" replays what the client missed from
the replay ring, with the original seqs and commit markers, then acks with
"resumed": true; when it cannot, the server sends resync_required (then the snapshot if
asked for) and acks with "resumed": false (docs/PROTOCOL.md, "resume after a reconnect",
"resync_required")."""

import asyncio

import pytest

from conftest import client, connect, run, set_setting, sql, tag

TABLE = "public.e2e_resume"


@pytest.fixture(scope="module", autouse=True)
def resume_table():
    sql("CREATE TABLE IF NOT EXISTS public.e2e_resume ("
        " id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,"
        " label text NOT NULL, grp int NOT NULL)")
    sql("SELECT plank.track('public.e2e_resume')")


def write_txs(label, txs, notify_after=None):
    """One transaction per entry of `txs`, each inserting one row per grp value listed;
    returns the xids. With notify_after=(i, channel), a pg_notify on that channel commits
    on its own after transaction i (it takes a seq of its own, a gap for the table's
    subscriptions, when the worker LISTENs on the channel)."""
    conn = connect(autocommit=False)
    xids = []
    try:
        with conn.cursor() as cur:
            for i, grps in enumerate(txs):
                for g in grps:
                    cur.execute("INSERT INTO e2e_resume (label, grp) VALUES (%s, %s)", (label, g))
                cur.execute("SELECT txid_current()")
                xids.append(cur.fetchone()[0])
                conn.commit()
                if notify_after and notify_after[0] == i:
                    cur.execute("SELECT pg_notify(%s, 'gap')", (notify_after[1],))
                    conn.commit()
        return xids
    finally:
        conn.close()


def since(epoch, seq):
    return {"epoch": epoch, "seq": seq}


def subscribe_msg(sub_id, **kw):
    return {"type": "subscribe", "id": sub_id, **kw}


def count_events(txs, grp=None):
    """Messages a subscription gets for these transactions: its changes and a commit for
    each transaction it got a change of."""
    n = 0
    for grps in txs:
        mine = [g for g in grps if grp is None or g == grp]
        n += len(mine) + (1 if mine else 0)
    return n


def check_stream(msgs, xids):
    """Changes then a commit per transaction, seqs increasing, no duplicate, each commit
    after its transaction's changes with the xid; returns the commits' xids."""
    seen = set()
    last = 0
    open_xid = None
    commits = []
    for m in msgs:
        if m["type"] == "change":
            assert m["seq"] > last and m["seq"] not in seen, f"duplicate or out of order: {m}"
            seen.add(m["seq"])
            last = m["seq"]
            assert open_xid in (None, m["change"]["xid"]), f"transactions mixed: {m}"
            open_xid = m["change"]["xid"]
        else:
            assert m["type"] == "commit", m
            assert open_xid == m["xid"] and m["seq"] >= last, f"misplaced commit: {m}"
            last = m["seq"]
            commits.append(m["xid"])
            open_xid = None
    assert open_xid is None, "the stream ends inside a transaction"
    assert commits == [x for x in xids if x in commits] and set(commits) <= set(xids)
    return commits


async def resume_scenario(extra_filter, before, missed, after, notify_channel=None):
    """Subscribe, receive the transactions `before`, disconnect, let `missed` commit,
    resume with since; returns what the test checks. An observer, subscribed the same
    way throughout, records what was sent live, for comparison."""
    label = tag()
    flt = {"label": label, **extra_filter}
    grp = extra_filter.get("grp")
    async with client(keep_commits=True) as observer:
        await observer.subscribe("obs", table=TABLE, filter=flt)
        if notify_channel:  # the worker LISTENs on it: its notifications take seqs
            await observer.subscribe("gap", channel=notify_channel)
        async with client(keep_commits=True) as c1:
            epoch = c1.welcome["epoch"]
            await c1.subscribe("r", table=TABLE, filter=flt)
            await asyncio.to_thread(write_txs, label, before)
            got = await c1.events("r", count_events(before, grp))
            last_seq = got[-1]["seq"]
        live_before = await observer.events("obs", count_events(before, grp))
        assert live_before == [dict(m, sub="obs") for m in got]

        xids = await asyncio.to_thread(
            write_txs, label, missed, (0, notify_channel) if notify_channel else None)
        live = await observer.events("obs", count_events(missed, grp))  # the worker has them

        async with client(keep_commits=True) as c2:
            pushed, ack = await c2.request_all(
                subscribe_msg("r", table=TABLE, filter=flt, since=since(epoch, last_seq)))
            assert ack["type"] == "ack" and ack["id"] == "r" and ack["resumed"] is True, \
                f"resume refused: {ack} after {pushed}"
            assert pushed == [dict(m, sub="r") for m in live], \
                "the replay is not exactly what was sent live while the client was away"
            check_stream(pushed, xids)
            assert all(m["seq"] <= ack["seq"] for m in pushed), (pushed, ack)

            # live delivery continues after the ack, without a gap or a duplicate
            later = await asyncio.to_thread(write_txs, label, after)
            fresh = await c2.events("r", count_events(after, grp))
            assert all(m["seq"] > ack["seq"] for m in fresh), (fresh, ack)
            check_stream(fresh, later)
            await c2.sync()
            assert c2.kept_events() == [], c2.kept_events()
            return pushed, xids, last_seq, ack


def test_resume_replays_missed_changes_with_original_seqs():
    async def body():
        missed = [[1], [1, 1], [1], [1, 1]]
        pushed, xids, last_seq, ack = await resume_scenario(
            {}, before=[[1], [1]], missed=missed, after=[[1], [1, 1]],
            notify_channel="e2e_resume_gap")
        assert [m["type"] for m in pushed] == \
            ["change", "commit", "change", "change", "commit",
             "change", "commit", "change", "change", "commit"], pushed
        assert [m["xid"] for m in pushed if m["type"] == "commit"] == xids
        seqs = [m["seq"] for m in pushed if m["type"] == "change"]
        assert seqs[0] > last_seq
        # the notify after the first missed transaction took a seq: a gap there only
        assert seqs == [seqs[0]] + list(range(seqs[0] + 2, seqs[0] + 7)), seqs
        assert [m["change"]["n"] for m in pushed if m["type"] == "change"] == [1, 1, 2, 1, 1, 2]
    run(body())


def test_resume_with_a_filter_replays_only_matching_changes():
    async def body():
        missed = [[2], [1, 2], [2, 1], [1], [2, 2]]
        pushed, xids, _, _ = await resume_scenario(
            {"grp": 1}, before=[[1], [2]], missed=missed, after=[[2, 1]])
        changes = [m for m in pushed if m["type"] == "change"]
        assert [m["change"]["new"]["grp"] for m in changes] == [1, 1, 1], pushed
        assert [m["type"] for m in pushed] == \
            ["change", "commit", "change", "commit", "change", "commit"], pushed
        # commits only for the transactions with a matching change
        assert [m["xid"] for m in pushed if m["type"] == "commit"] == xids[1:4]
    run(body())


def test_resume_with_nothing_missed():
    label = tag()

    async def body():
        async with client() as c1:
            epoch = c1.welcome["epoch"]
            ack1 = await c1.subscribe("r", table=TABLE, filter={"label": label})
        async with client() as c2:
            pushed, ack = await c2.request_all(
                subscribe_msg("r", table=TABLE, filter={"label": label},
                              since=since(epoch, ack1["seq"]), snapshot=True))
            assert pushed == [], "nothing was missed, nothing is sent (no snapshot either)"
            assert ack["type"] == "ack" and ack["resumed"] is True, ack
    run(body())


def test_resume_does_not_send_a_snapshot():
    """A client that resumes has its rows already: "snapshot": true is only honoured with
    a resync."""
    label = tag()

    async def body():
        async with client() as c1:
            epoch = c1.welcome["epoch"]
            ack1 = await c1.subscribe("r", table=TABLE, filter={"label": label})
        xids = await asyncio.to_thread(write_txs, label, [[1]])
        async with client(keep_commits=True) as c2:
            pushed, ack = await c2.request_all(
                subscribe_msg("r", table=TABLE, filter={"label": label},
                              since=since(epoch, ack1["seq"]), snapshot=True))
            assert ack["resumed"] is True, ack
            assert [m["type"] for m in pushed] == ["change", "commit"], pushed
            assert pushed[1]["xid"] == xids[0]
    run(body())


def test_channel_resume_replays_notifications():
    channel = "e2e_" + tag()
    sentinel = "e2e_" + tag()

    async def body():
        async with client() as obs:
            await obs.subscribe("s", channel=sentinel)
            async with client() as c1:
                epoch = c1.welcome["epoch"]
                await c1.subscribe("c", channel=channel)
                await asyncio.to_thread(sql, "SELECT pg_notify(%s, 'before')", (channel,))
                first = await c1.next_push("c")
                assert first["payload"] == "before"
            # the last subscriber left: the worker keeps LISTENing on the channel
            await asyncio.to_thread(sql, "SELECT pg_notify(%s, 'one')", (channel,))
            await asyncio.to_thread(sql, "SELECT pg_notify(%s, 'two')", (channel,))
            await asyncio.to_thread(sql, "SELECT pg_notify(%s, 'processed')", (sentinel,))
            await obs.next_push("s")  # the worker has read both notifications
            async with client() as c2:
                pushed, ack = await c2.request_all(
                    subscribe_msg("c", channel=channel, since=since(epoch, first["seq"])))
                assert ack["type"] == "ack" and ack["resumed"] is True, (ack, pushed)
                assert [(m["type"], m["sub"], m["channel"], m["payload"]) for m in pushed] == \
                    [("notify", "c", channel, "one"), ("notify", "c", channel, "two")], pushed
                assert first["seq"] < pushed[0]["seq"] < pushed[1]["seq"] <= ack["seq"]
                assert all(m["epoch"] == epoch for m in pushed)
                # and live after the ack
                await asyncio.to_thread(sql, "SELECT pg_notify(%s, 'three')", (channel,))
                m = await c2.next_push("c")
                assert m["payload"] == "three" and m["seq"] > ack["seq"]
    run(body())


# --------------------------------------------------------------------------- resync


def test_wrong_epoch_requires_resync():
    async def body():
        async with client() as c:
            epoch = c.welcome["epoch"]
            pushed, ack = await c.request_all(
                subscribe_msg("r", table=TABLE, since=since("1", c.welcome["seq"])))
            assert len(pushed) == 1, pushed
            rs = pushed[0]
            assert {k: rs.get(k) for k in ("sub", "type", "reason", "epoch")} == \
                {"sub": "r", "type": "resync_required", "reason": "epoch_changed",
                 "epoch": epoch}, rs
            assert isinstance(rs["seq"], int) and rs["seq"] <= ack["seq"], (rs, ack)
            assert ack["type"] == "ack" and ack["resumed"] is False, ack
    run(body())


def test_wrong_epoch_with_snapshot_sends_resync_then_snapshot_then_ack():
    label = tag()

    async def body():
        await asyncio.to_thread(write_txs, label, [[1, 2]])
        async with client(keep_commits=True) as c:
            pushed, ack = await c.request_all(
                subscribe_msg("r", table=TABLE, filter={"label": label}, snapshot=True,
                              since=since("0", 0)))
            assert [m["type"] for m in pushed] == ["resync_required", "snapshot"], pushed
            assert pushed[0]["reason"] == "epoch_changed"
            snap = pushed[1]
            assert snap["sub"] == "r" and snap["seq"] == ack["seq"] and snap["complete"] is True
            assert sorted(r["grp"] for r in snap["rows"]) == [1, 2], snap
            assert ack["resumed"] is False
            # live after the ack
            xids = await asyncio.to_thread(write_txs, label, [[3]])
            change, commit = await c.events("r", 2)
            assert change["seq"] > ack["seq"] and change["change"]["new"]["grp"] == 3
            assert commit["xid"] == xids[0]
    run(body())


def test_since_in_the_future_is_out_of_range():
    async def body():
        async with client() as c:
            epoch, seq = c.welcome["epoch"], c.welcome["seq"]
            pushed, ack = await c.request_all(
                subscribe_msg("r", table=TABLE, since=since(epoch, seq + 1000)))
            assert [(m["type"], m["reason"]) for m in pushed] == \
                [("resync_required", "out_of_range")], pushed
            assert pushed[0]["epoch"] == epoch
            assert ack["resumed"] is False
            pushed, ack = await c.request_all(
                subscribe_msg("c", channel="e2e_future", since=since(epoch, seq + 1000)))
            assert [(m["type"], m["reason"]) for m in pushed] == \
                [("resync_required", "out_of_range")], pushed
            assert ack["resumed"] is False
    run(body())


def test_channel_never_listened_is_out_of_range():
    """The worker was not LISTENing on the channel since `since`: the ring cannot hold its
    notifications, so the client must resync."""
    channel = "e2e_" + tag()

    async def body():
        async with client() as c:
            epoch, seq = c.welcome["epoch"], c.welcome["seq"]
            pushed, ack = await c.request_all(
                subscribe_msg("c", channel=channel, since=since(epoch, seq)))
            assert [(m["type"], m["reason"]) for m in pushed] == \
                [("resync_required", "out_of_range")], pushed
            assert ack["resumed"] is False
            await asyncio.to_thread(sql, "SELECT pg_notify(%s, 'live')", (channel,))
            assert (await c.next_push("c"))["payload"] == "live"
    run(body())


def test_events_evicted_from_a_small_ring_are_out_of_range():
    label = tag()

    async def resume_from(seq_before, epoch):
        async with client() as c:
            return await c.request_all(
                subscribe_msg("r", table=TABLE, filter={"label": label}, snapshot=True,
                              since=since(epoch, seq_before)))

    async def live():
        async with client() as c1:
            ack1 = await c1.subscribe("r", table=TABLE, filter={"label": label})
            await asyncio.to_thread(write_txs, label, [[1]] * 10)
            await c1.pushes("r", 10)  # the worker has them all
            return c1.welcome["epoch"], ack1["seq"]

    async def resume(epoch, seq):
        pushed, ack = await resume_from(seq, epoch)
        assert [m["type"] for m in pushed] == ["resync_required", "snapshot"], pushed
        assert pushed[0]["reason"] == "out_of_range" and pushed[0]["epoch"] == epoch
        assert len(pushed[1]["rows"]) == 10 and pushed[1]["seq"] == ack["seq"]
        assert ack["resumed"] is False

    epoch, seq = run(live())
    set_setting("plank.replay_buffer", "1kB")
    try:
        # the ring is cut to its new size when the next event comes
        write_txs(tag(), [[1]])
        run(resume(epoch, seq))
    finally:
        set_setting("plank.replay_buffer", None)

    # with the default ring again, a resume over the same number of events works
    async def again():
        async with client() as c1:
            epoch = c1.welcome["epoch"]
            ack1 = await c1.subscribe("r", table=TABLE, filter={"label": label})
        await asyncio.to_thread(write_txs, label, [[1]] * 10)
        async with client() as c2:
            await c2.subscribe("all", table=TABLE, filter={"label": label})
            pushed, ack = await c2.request_all(
                subscribe_msg("r", table=TABLE, filter={"label": label},
                              since=since(epoch, ack1["seq"])))
            assert ack["resumed"] is True, (ack, pushed[:3])
            assert [m["type"] for m in pushed].count("change") == 10
    run(again())


@pytest.mark.parametrize("bad", [
    "yesterday", 5, [], {"epoch": "1"}, {"seq": 1}, {"epoch": 1, "seq": 1},
    {"epoch": "1", "seq": "1"}, {"epoch": "1", "seq": -1}, {"epoch": "1", "seq": 2.5},
    {"epoch": "1", "seq": 0.5}, {"epoch": "1", "seq": 2 ** 63},
    {"epoch": "1", "seq": 2 ** 64 + 1}, {"epoch": "1", "seq": 1e30},
], ids=["string", "number", "array", "no-seq", "no-epoch", "epoch-number", "seq-string",
        "seq-negative", "seq-fraction", "seq-below-one", "seq-beyond-int64",
        "seq-beyond-uint64", "seq-exponent"])
def test_malformed_since_is_invalid_message(bad):
    async def body():
        async with client() as c:
            r = await c.request(subscribe_msg("r", table=TABLE, since=bad))
            assert r["type"] == "error" and r["code"] == "invalid_message" and r["id"] == "r", r
            if isinstance(bad, dict) and "epoch" in bad and "seq" in bad:
                assert "seq" in r["message"], r
            await c.sync()
            assert c.kept_events() == []
    run(body())
