"""Every committed change, exactly as committed (docs/PROTOCOL.md "Change payload" and
"Exact values", docs/RELIABILITY.md "Exact delivery").

PostgreSQL's json type accepts values that jsonb rejects: a string holding "\\u0000", a
number such as 1e1000000. A tracked row holding them, small or over NOTIFY's 8000 bytes
(plank.overflow), reaches plain, filtered, column-restricted and row-level-security
subscribers with the json value's text unchanged, and never stops the worker. Column
restriction cuts members out of the committed text: duplicate keys, key order, -0 and 1e2
of a json value arrive as written.

Messages are compared as raw text: the frames are kept as received and the members are
cut out of them with Python's JSON decoder keeping numbers as their text and objects as
lists of pairs, so that nothing a Python value would normalise can pass unnoticed."""

import asyncio
import json

import pytest

from conftest import client, connect, run, sql, tag, worker_pids
from helpers import authed, res, token  # noqa: F401

CLAIMS_SUB = "current_setting('request.jwt.claims', true)::jsonb ->> 'sub'"

# (json text as written, what it is) - every one accepted by json, most refused by jsonb
ODD_VALUES = [
    ('"\\u0000"', "a string holding U+0000"),
    ('1e1000000', "a number beyond numeric's range"),
    ('{"k": "a\\u0000b", "n": -1e-1000000}', "an object holding both"),
    ('{"a":1,"a":2,"b":-0,"c":1e2}', "duplicate keys, -0 and 1e2"),
]


def exact(raw):
    """Parse a frame keeping every number as its text and every object as its pairs."""
    return json.loads(raw, object_pairs_hook=list, parse_float=str, parse_int=str,
                      parse_constant=str)


def member(pairs, name):
    found = [v for k, v in pairs if k == name]
    assert len(found) == 1, f"{name!r} in {pairs!r}"
    return found[0]


class RawLog:
    """Every text frame a client receives, as received."""

    def __init__(self, c):
        self.frames = []
        recv = c.ws.recv

        async def keeping():
            raw = await recv()
            self.frames.append(raw)
            return raw
        c.ws.recv = keeping

    def change_frames(self, sub, label):
        out = []
        for raw in self.frames:
            m = exact(raw)
            if member(m, "type") != "change" or dict(m).get("sub") != sub:
                continue
            if label in raw:
                out.append(m)
        return out


def json_member_text(frame_pairs, row="new", column="doc"):
    """The raw JSON text of change.<row>.<column> in a frame as the server wrote it."""
    change = member(frame_pairs, "change")
    return member(member(change, row), column)


def raw_value_text(raw_frame, label):
    """The exact bytes of the "doc" member of the frame's row: located with the decoder
    (raw_decode reports where each value ends), compared as text."""
    dec = json.JSONDecoder()
    start = raw_frame.index('"doc":') + len('"doc":')
    while raw_frame[start] in " \t\r\n":
        start += 1
    _, end = dec.raw_decode(raw_frame, start)
    return raw_frame[start:end]


def doc_texts(frames, sub, label):
    out = []
    for raw in frames:
        if label not in raw or f'"sub":"{sub}"' not in raw or '"type":"change"' not in raw:
            continue
        out.append(raw_value_text(raw, label))
    return out


@pytest.fixture
def odd_table(res):
    t = res.table("id int PRIMARY KEY, label text NOT NULL, owner text NOT NULL DEFAULT 'alice', "
                  "doc json, secret text DEFAULT 'hidden', pad text")
    return t


def write_rows(t, label, big):
    """One INSERT per odd value (ids 1..n), then an UPDATE of each, in one transaction each."""
    pad = "repeat('x', 9000)" if big else "NULL"
    for i, (text, _) in enumerate(ODD_VALUES, start=1):
        sql(f"INSERT INTO public.{t} (id, label, doc, pad) VALUES (%s, %s, %s::json, {pad})",
            (i, label, text))
    for i, (text, _) in enumerate(ODD_VALUES, start=1):
        sql(f"UPDATE public.{t} SET label = label WHERE id = %s", (i,))


@pytest.mark.parametrize("big", [False, True], ids=["small", "overflow"])
def test_json_values_jsonb_refuses_reach_every_kind_of_subscriber(res, odd_table, big):
    t = odd_table
    label = tag()
    r_cols = res.role()
    sql(f'GRANT SELECT (id, label, owner, doc, pad) ON public.{t} TO "{r_cols}"')
    r_rls = res.role()
    sql(f"ALTER TABLE public.{t} ENABLE ROW LEVEL SECURITY")
    # the policy reads the json column too: the check sees it as committed
    sql(f"CREATE POLICY own ON public.{t} FOR SELECT USING "
        f"(owner = {CLAIMS_SUB} AND doc::text IS NOT NULL)")
    sql(f'GRANT SELECT ON public.{t} TO "{r_rls}"')
    pids = worker_pids()
    n = len(ODD_VALUES)

    async def body():
        async with client() as plain, authed(token(r_cols, sub="alice")) as cols, \
                authed(token(r_rls, sub="alice")) as rls, authed(token(r_rls, sub="bob")) as bob:
            logs = {name: RawLog(c) for name, c in
                    (("plain", plain), ("cols", cols), ("rls", rls), ("bob", bob))}
            await plain.subscribe("all", table=f"public.{t}")
            await plain.subscribe("filtered", table=f"public.{t}", filter={"label": label})
            await plain.subscribe("other", table=f"public.{t}", filter={"label": "no-" + label})
            # filters on the json column itself: equal to no odd value but never an error
            await plain.subscribe("ondoc", table=f"public.{t}", filter={"doc": "\u0001"})
            await cols.subscribe("cols", table=f"public.{t}")
            await cols.subscribe("colsf", table=f"public.{t}", filter={"label": label})
            await rls.subscribe("rls", table=f"public.{t}")
            await rls.subscribe("rlsf", table=f"public.{t}", filter={"label": label})
            await bob.subscribe("bob", table=f"public.{t}")
            await asyncio.to_thread(write_rows, t, label, big)
            for c, subs in ((plain, ("all", "filtered")), (cols, ("cols", "colsf")),
                            (rls, ("rls", "rlsf"))):
                for s in subs:
                    got = await c.pushes(s, 2 * n, timeout=20)
                    ops = [m["change"]["op"] for m in got]
                    assert ops == ["INSERT"] * n + ["UPDATE"] * n, (s, got)
            await plain.sync()
            await bob.sync()
            assert not plain.kept_pushes("other"), plain.kept_pushes("other")
            assert not plain.kept_pushes("ondoc"), plain.kept_pushes("ondoc")
            assert not bob.kept_pushes("bob"), "bob sees alice's rows"
            assert not [m for c in (plain, cols, rls) for m in c.inbox
                        if m["type"] == "resync_required"]
            expected = [text for text, _ in ODD_VALUES] * 2
            for name, sub in (("plain", "all"), ("plain", "filtered"), ("cols", "cols"),
                              ("cols", "colsf"), ("rls", "rls"), ("rls", "rlsf")):
                got = doc_texts(logs[name].frames, sub, label)
                assert got == expected, (sub, got)
            # column restriction: the secret is cut out, the rest is the committed text
            for raw in logs["cols"].frames:
                assert "hidden" not in raw, raw[:300]
    run(body())
    assert worker_pids() == pids, "the worker restarted"



def test_filtered_snapshot_of_rows_holding_json_values_jsonb_refuses(odd_table):
    """A snapshot with a filter reads rows whose other columns hold json values jsonb
    refuses, and sends them as committed, as the changes are."""
    t = odd_table
    label = tag()
    write_rows(t, label, False)

    async def body():
        async with client() as c:
            log = RawLog(c)
            await c.subscribe("s", table=f"public.{t}", filter={"label": label}, snapshot=True)
            snap = [r for r in log.frames if '"type":"snapshot"' in r]
            assert len(snap) == 1, log.frames[:3]
            rows = member(exact(snap[0]), "rows")
            assert len(rows) == len(ODD_VALUES), rows
            dec = json.JSONDecoder()
            texts = []
            pos = snap[0].index('"rows":[') + len('"rows":[')
            for _ in ODD_VALUES:
                _, end = dec.raw_decode(snap[0], pos)
                texts.append(raw_value_text(snap[0][pos:end], label))
                pos = end + 1
            assert sorted(texts) == sorted(text for text, _ in ODD_VALUES), texts
    run(body())

def test_column_restriction_keeps_the_committed_text(res):
    """A role restricted to some columns gets the other members exactly as the unrestricted
    subscriber gets them: same text for every kept member, in the same order."""
    t = res.table("id int PRIMARY KEY, doc json, f float8, secret text")
    r = res.role()
    sql(f'GRANT SELECT (id, doc, f) ON public.{t} TO "{r}"')

    async def body():
        async with client() as plain, authed(token(r)) as cols:
            lp, lc = RawLog(plain), RawLog(cols)
            await plain.subscribe("p", table=f"public.{t}")
            await cols.subscribe("c", table=f"public.{t}")
            sql(f"""INSERT INTO public.{t} VALUES (1, '{{"a":1,"a":2,"b":-0,"c":1e2}}', -0.0, 's')""")
            await plain.next_push("p")
            await cols.next_push("c")
            full = [exact(r) for r in lp.frames if '"type":"change"' in r][0]
            cut = [exact(r) for r in lc.frames if '"type":"change"' in r][0]
            new_full = member(member(full, "change"), "new")
            new_cut = member(member(cut, "change"), "new")
            assert [k for k, _ in new_cut] == ["id", "doc", "f"], new_cut
            assert new_cut == [(k, v) for k, v in new_full if k != "secret"], (new_full, new_cut)
            assert member(new_cut, "doc") == [("a", "1"), ("a", "2"), ("b", "-0"), ("c", "1e2")]
            raw = [r for r in lc.frames if '"type":"change"' in r][0]
            assert '{"a":1,"a":2,"b":-0,"c":1e2}' in raw, raw
    run(body())


def test_metrics_list_undeliverable_changes():
    """The counter of changes a subscription could not be sent exactly is exported."""
    import urllib.request
    from conftest import PORT
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    lines = [ln for ln in text.splitlines() if ln.startswith("plank_undeliverable_changes_total")]
    assert lines and float(lines[0].split()[-1]) >= 0, lines


# --------------------------------------------------------------------------- output settings


def raw_object_after(raw, marker):
    """The raw text of the JSON value that follows `marker` in a frame."""
    start = raw.index(marker) + len(marker)
    _, end = json.JSONDecoder().raw_decode(raw, start)
    return raw[start:end]


WRITER_SETTINGS = [
    "SET extra_float_digits = 0",
    "SET DateStyle = 'SQL, DMY'",
    "SET IntervalStyle = 'sql_standard'",
    "SET bytea_output = 'escape'",
    "SET TimeZone = 'America/New_York'",
]


def test_change_and_snapshot_of_a_row_are_byte_identical_whatever_the_writer_settings(res):
    """The capture renders rows with fixed output settings (docs/PROTOCOL.md "Exact values"),
    the snapshot with the same: every setting that changes a value's text is changed in the
    writer's session, and the change's "new" is compared with the snapshot's row as text."""
    t = res.table("id int PRIMARY KEY, f float8, r real, ts timestamptz, tl timestamp, "
                  "d date, iv interval, b bytea, n numeric, doc json, arr float8[]")
    label = tag()

    def write():
        conn = connect()
        try:
            with conn.cursor() as cur:
                for s in WRITER_SETTINGS:
                    cur.execute(s)
                cur.execute(f"INSERT INTO public.{t} VALUES (1, 0.1::float8 + 0.2::float8, "
                            "0.1::real, '2024-03-05 06:07:08.123456+02', '2024-03-05 06:07:08', "
                            "'2024-03-05', '1 year 2 mons 3 days 04:05:06.5', '\\x00ff41'::bytea, "
                            f"1.50, %s::json, ARRAY[0.1::float8 + 0.2::float8])", (f'"{label}"',))
        finally:
            conn.close()

    async def body():
        async with client() as c:
            log = RawLog(c)
            await c.subscribe("live", table=f"public.{t}")
            await asyncio.to_thread(write)
            await c.next_push("live")
            change_raw = [r for r in log.frames if '"type":"change"' in r][0]
            await c.subscribe("snap", table=f"public.{t}", snapshot=True)
            snap_raw = [r for r in log.frames if '"type":"snapshot"' in r][0]
            new_text = raw_object_after(change_raw, '"new":')
            row_text = raw_object_after(snap_raw, '"rows":[')
            assert new_text == row_text, (new_text, row_text)
            # and the values are the fixed settings' texts, not the writer's
            assert '"f":0.30000000000000004' in new_text, new_text
            assert '"arr":[0.30000000000000004]' in new_text, new_text
            assert '"r":0.1' in new_text, new_text
            assert '"ts":"2024-03-05T04:07:08.123456+00:00"' in new_text, new_text
            assert '"iv":"1 year 2 mons 3 days 04:05:06.5"' in new_text, new_text
            assert '"b":"\\\\x00ff41"' in new_text, new_text
            assert '"d":"2024-03-05"' in new_text, new_text
    run(body())


def test_writer_settings_are_kept_after_the_capture():
    """The capture's settings end with it: the writer's session keeps its own."""
    conn = connect(autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SET extra_float_digits = 0")
            cur.execute("SET TimeZone = 'America/New_York'")
            cur.execute("INSERT INTO public.items (name) VALUES (%s)", (tag(),))
            cur.execute("SELECT current_setting('extra_float_digits'), current_setting('TimeZone'), "
                        "(0.1::float8 + 0.2::float8)::text")
            assert cur.fetchone() == ("0", "America/New_York", "0.3")
        conn.commit()
    finally:
        conn.close()


# --------------------------------------------------------------------------- resume


@pytest.mark.parametrize("big", [False, True], ids=["small", "overflow"])
def test_filtered_resume_replays_odd_values_and_leaves_nothing_linked(odd_table, big):
    """A filtered resume whose replay holds json values jsonb refuses replays them exactly
    (answered resumed: true); the subscription is then linked once: unsubscribing it and
    subscribing again with the same id works."""
    t = odd_table
    label = tag()
    n = len(ODD_VALUES)

    async def body():
        async with client() as first:
            ack = await first.subscribe("r", table=f"public.{t}", filter={"label": label})
            epoch, seq = first.welcome["epoch"], ack["seq"]
        await asyncio.to_thread(write_rows, t, label, big)
        async with client() as again:
            log = RawLog(again)
            pushed, reply = await again.request_all(
                {"type": "subscribe", "id": "r", "table": f"public.{t}", "filter": {"label": label},
                 "since": {"epoch": epoch, "seq": seq}})
            assert reply["type"] == "ack" and reply["resumed"] is True, reply
            changes = [m for m in pushed if m["type"] == "change"]
            got = changes + [await again.next_push("r") for _ in range(2 * n - len(changes))]
            assert [m["change"]["op"] for m in got] == ["INSERT"] * n + ["UPDATE"] * n, got
            assert doc_texts(log.frames, "r", label) == [text for text, _ in ODD_VALUES] * 2
            await again.unsubscribe("r")
            await again.subscribe("r", table=f"public.{t}", filter={"label": label})
    run(body())



# --------------------------------------------------------------------------- unreadable batch


def undeliverable_total():
    import urllib.request
    from conftest import PORT
    with urllib.request.urlopen(f"http://127.0.0.1:{PORT}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return float([ln for ln in text.splitlines()
                  if ln.startswith("plank_undeliverable_changes_total")][0].split()[-1])


def test_a_stored_batch_that_cannot_be_read_is_never_skipped_silently(res):
    """A statement's changes stored in plank.overflow that the worker cannot read (an
    administrator holds a lock on plank.overflow) cannot be sent: the worker does not wait
    for the lock (every client would stall), every table subscription is told
    resync_required undeliverable_change, the counter counts it, and later changes flow."""
    import threading
    t = res.table("id int PRIMARY KEY, body text")
    other = res.table("id int PRIMARY KEY")
    before = undeliverable_total()

    async def body():
        async with client() as c:
            await c.subscribe("big", table=f"public.{t}")
            await c.subscribe("other", table=f"public.{other}")
            writer = connect(autocommit=False)
            locker = connect(autocommit=False)
            try:
                with writer.cursor() as w, locker.cursor() as lk:
                    w.execute(f"INSERT INTO public.{t} SELECT g, repeat('x', 200) "
                              "FROM generate_series(1, 3000) g")
                    # queued behind the writer's ROW EXCLUSIVE: granted as it commits,
                    # before the worker reads the batch
                    th = threading.Thread(target=lk.execute,
                                          args=("LOCK TABLE plank.overflow IN SHARE MODE",))
                    th.start()
                    await asyncio.sleep(0.3)
                    writer.commit()
                    th.join(10)
                    assert not th.is_alive()
                    for sub in ("big", "other"):
                        m = await c.wait_for(lambda m, sub=sub: m["type"] == "resync_required"
                                             and m.get("sub") == sub, timeout=15,
                                             what=f"resync_required for {sub}")
                        assert m["reason"] == "undeliverable_change", m
                    locker.rollback()
            finally:
                writer.close()
                locker.close()
            assert not c.kept_pushes("big"), "changes of an unreadable batch were sent"
            sql(f"INSERT INTO public.{other} VALUES (1)")
            m = await c.next_push("other")
            assert m["change"]["new"] == {"id": 1}, m
    run(body(), timeout=60)
    assert undeliverable_total() >= before + 2
    sql("DELETE FROM plank.overflow")
