// Pure parts of plank-client: backoff bounds, URL mapping, dedupe, commit grouping,
// resume positions and resync. No server needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { backoffDelay, SubscriptionState, toWebSocketUrl, PlankClient } from "../src/index.js";

const E1 = "1763718000123456";
const E2 = "1763718999000000";

const change = (seq, xid, op = "INSERT", id = seq, epoch = E1) => ({
  sub: "s", type: "change", seq, epoch,
  change: { schema: "public", table: "items", op, xid, n: 1, new: { id } },
});
const commit = (seq, xid, epoch = E1) => ({ sub: "s", type: "commit", seq, epoch, xid });
const names = (events) => events.map(([name]) => name);

test("backoff: the ceiling doubles from initialMs and stops at maxMs", () => {
  const opts = { initialMs: 100, maxMs: 1000, jitter: "none" };
  assert.deepEqual([0, 1, 2, 3, 4, 5, 50, 5000].map((a) => backoffDelay(a, opts)),
    [100, 200, 400, 800, 1000, 1000, 1000, 1000]);
});

test("backoff: full jitter stays in [0, ceiling], half jitter in [ceiling/2, ceiling]", () => {
  const opts = { initialMs: 100, maxMs: 3000 };
  for (let attempt = 0; attempt < 12; attempt++) {
    const ceiling = Math.min(3000, 100 * 2 ** attempt);
    for (const r of [0, 0.25, 0.5, 0.999999]) {
      const full = backoffDelay(attempt, { ...opts, jitter: "full" }, () => r);
      assert.ok(full >= 0 && full <= ceiling, `full ${full} of ${ceiling}`);
      const half = backoffDelay(attempt, { ...opts, jitter: "half" }, () => r);
      assert.ok(half >= ceiling / 2 && half <= ceiling, `half ${half} of ${ceiling}`);
    }
    assert.equal(backoffDelay(attempt, { ...opts, jitter: "full" }, () => 0), 0);
    assert.equal(backoffDelay(attempt, { ...opts, jitter: "half" }, () => 0), Math.round(ceiling / 2));
  }
  // with Math.random: many draws, all within bounds and not all equal
  const draws = Array.from({ length: 500 }, () => backoffDelay(3, { initialMs: 100, maxMs: 5000, jitter: "full" }));
  assert.ok(draws.every((d) => d >= 0 && d <= 800));
  assert.ok(new Set(draws).size > 10, "jitter spreads the delays");
  // the default is half jitter
  assert.ok(backoffDelay(0, { initialMs: 1000, maxMs: 1000 }, () => 0) === 500);
});

test("URLs: a page address maps to its /ws WebSocket", () => {
  assert.equal(toWebSocketUrl("http://127.0.0.1:18099/"), "ws://127.0.0.1:18099/ws");
  assert.equal(toWebSocketUrl("https://example.test/app/?x=1"), "wss://example.test/ws");
  assert.equal(toWebSocketUrl("ws://h:1/other"), "ws://h:1/other");
  assert.throws(() => toWebSocketUrl("ftp://h/"), TypeError);
  const c = new PlankClient("http://127.0.0.1:1/", { WebSocket: class {}, autoConnect: false });
  assert.equal(c.url, "ws://127.0.0.1:1/ws");
});

test("dedupe: a seq at or below the last delivered one in the same epoch is dropped", () => {
  const s = new SubscriptionState();
  s.begin(null);
  assert.deepEqual(names(s.handle({ type: "ack", id: "s", request: "subscribe", seq: 10 }, E1)), ["ack"]);
  assert.deepEqual(names(s.handle(change(11, 1))), ["change"]);
  assert.deepEqual(names(s.handle(commit(11, 1))), ["commit"]);
  assert.deepEqual(names(s.handle(change(11, 1))), [], "replayed change");
  assert.deepEqual(names(s.handle(commit(11, 1))), [], "replayed commit");
  assert.deepEqual(names(s.handle(change(9, 7))), [], "older than the ack");
  assert.deepEqual(names(s.handle(change(13, 2))), ["change"]);
  assert.deepEqual(names(s.handle(change(12, 2))), [], "out of order is older");
  // the same seq in another epoch is new
  assert.deepEqual(names(s.handle(change(5, 3, "INSERT", 5, E2))), ["change"],
    "new epoch: the change is delivered (and the old epoch's open transaction dropped)");
  assert.deepEqual(s.pending.map((m) => m.seq), [5]);
  assert.equal(s.epoch, E2);
  assert.equal(s.seq, 5);
  const notes = new SubscriptionState();
  const note = (seq, epoch = E1) => ({ sub: "c", type: "notify", seq, epoch, channel: "x", payload: "p", pid: 1 });
  assert.deepEqual(names(notes.handle(note(3))), ["notify"]);
  assert.deepEqual(names(notes.handle(note(3))), []);
  assert.deepEqual(names(notes.handle(note(2))), []);
  assert.deepEqual(names(notes.handle(note(4))), ["notify"]);
  assert.deepEqual(names(notes.handle(note(1, E2))), ["notify"]);
});

test("commit groups the changes of one transaction", () => {
  const s = new SubscriptionState();
  s.begin(null);
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 0 }, E1);
  const out = [
    ...s.handle(change(1, 100, "INSERT", 1)),
    ...s.handle(change(2, 100, "UPDATE", 2)),
    ...s.handle(commit(2, 100)),
    ...s.handle(change(4, 101, "DELETE", 3)),
    ...s.handle(commit(4, 101)),
  ];
  assert.deepEqual(names(out), ["change", "change", "commit", "change", "commit"]);
  const [, first] = out[2];
  assert.equal(first.xid, 100);
  assert.equal(first.seq, 2);
  assert.deepEqual(first.changes.map((m) => m.seq), [1, 2]);
  assert.deepEqual(out[4][1].changes.map((m) => m.change.op), ["DELETE"]);
  assert.equal(first.synthetic, undefined);
  // a commit with nothing pending delivers nothing
  assert.deepEqual(names(s.handle(commit(6, 102))), []);
});

test("a change of another transaction closes one that got no commit marker", () => {
  const s = new SubscriptionState();
  const out = [...s.handle(change(1, 100)), ...s.handle(change(2, 100)), ...s.handle(change(3, 101))];
  assert.deepEqual(names(out), ["change", "change", "commit", "change"]);
  assert.equal(out[2][1].synthetic, true);
  assert.deepEqual(out[2][1].changes.map((m) => m.seq), [1, 2]);
  assert.deepEqual(s.pending.map((m) => m.seq), [3]);
});

test("since: the last position, or just before an unfinished transaction", () => {
  const s = new SubscriptionState();
  assert.equal(s.since(), null, "nothing seen yet");
  s.begin(null);
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 41 }, E1);
  assert.deepEqual(s.since(), { epoch: E1, seq: 41 });
  s.handle(change(44, 9));
  s.handle(change(45, 9));
  // connection lost before the commit: resume from 43 so the commit is replayed
  assert.deepEqual(s.since(), { epoch: E1, seq: 43 });
  s.begin(s.since());
  // the replay: the two changes again (dropped), then the commit (delivered whole)
  const out = [...s.handle(change(44, 9)), ...s.handle(change(45, 9)), ...s.handle(commit(45, 9))];
  assert.deepEqual(names(out), ["commit"]);
  assert.deepEqual(out[0][1].changes.map((m) => m.seq), [44, 45]);
  assert.deepEqual(names(s.handle({ type: "ack", id: "s", request: "subscribe", seq: 45, resumed: true }, E1)), ["ack"]);
  assert.deepEqual(s.since(), { epoch: E1, seq: 45 });
});

test("resync: resets the position; the snapshot and the ack set it again", () => {
  const s = new SubscriptionState();
  s.begin(null);
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 5 }, E1);
  s.handle(change(6, 1));
  s.begin(s.since());
  const out = [
    ...s.handle({ sub: "s", type: "resync_required", reason: "epoch_changed", epoch: E2, seq: 3 }),
    ...s.handle({ sub: "s", type: "snapshot", seq: 3, epoch: E2, complete: true, rows: [{ id: 1 }] }),
    ...s.handle({ type: "ack", id: "s", request: "subscribe", seq: 3, resumed: false }, E2),
  ];
  assert.deepEqual(names(out), ["resync", "snapshot", "ack"]);
  assert.equal(out[0][1].reason, "epoch_changed");
  assert.equal(out[2][1].resumed, false);
  assert.deepEqual(s.pending, [], "the unfinished transaction of the old epoch is dropped");
  assert.deepEqual(s.since(), { epoch: E2, seq: 3 });
  // live changes after the snapshot's seq are delivered, older ones are not
  assert.deepEqual(names(s.handle(change(3, 2, "INSERT", 3, E2))), []);
  assert.deepEqual(names(s.handle(change(4, 2, "INSERT", 4, E2))), ["change"]);
});

test("resync out_of_range with a since in the future does not swallow later events", () => {
  const s = new SubscriptionState();
  s.begin(null);
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 500 }, E1);
  s.begin(s.since());
  s.handle({ sub: "s", type: "resync_required", reason: "out_of_range", epoch: E1, seq: 20 });
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 20, resumed: false }, E1);
  assert.deepEqual(names(s.handle(change(21, 3))), ["change"]);
});

test("a since the server ignored (no resumed, no resync_required) is reported as a resync", () => {
  const s = new SubscriptionState();
  s.begin(null);
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 5 }, E1);
  s.begin(s.since());
  const out = s.handle({ type: "ack", id: "s", request: "subscribe", seq: 9 }, E1);
  assert.deepEqual(names(out), ["resync", "ack"]);
  assert.equal(out[0][1].reason, "not_resumed");
  // but not when a snapshot reloaded the state
  s.begin(s.since());
  s.handle({ sub: "s", type: "snapshot", seq: 12, epoch: E1, complete: true, rows: [] });
  assert.deepEqual(names(s.handle({ type: "ack", id: "s", request: "subscribe", seq: 12 }, E1)), ["ack"]);
});

test("commit grouping: a change with \"commit\": true closes its transaction itself", () => {
  const s = new SubscriptionState();
  s.begin(null);
  s.handle({ type: "ack", id: "s", request: "subscribe", seq: 10 }, E1);
  const single = s.handle({ ...change(11, 1), commit: true });
  assert.deepEqual(names(single), ["change", "commit"]);
  assert.equal(single[1][1].seq, 11);
  assert.equal(single[1][1].xid, 1);
  assert.deepEqual(single[1][1].changes.map((c) => c.seq), [11]);
  // two changes, the last one folded; then a replay of the folded one is dropped
  assert.deepEqual(names(s.handle(change(12, 2))), ["change"]);
  const last = s.handle({ ...change(13, 2), commit: true });
  assert.deepEqual(names(last), ["change", "commit"]);
  assert.deepEqual(last[1][1].changes.map((c) => c.seq), [12, 13]);
  assert.deepEqual(names(s.handle({ ...change(13, 2), commit: true })), [], "replayed");
  assert.deepEqual(s.since(), { epoch: E1, seq: 13 });
});
