// The live-table store: TableRows fed with the messages the server sends (no server), and
// liveTable() against a real worker (PLANK_URL, PLANK_PSQL as in server.test.mjs),
// including a row-level security table whose UPDATE hides a row (visible: false).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { createRlsTable, mintJwt, psqlWith } from "../fixtures/package.mjs";
import { PlankClient, SubscriptionState, TableRows, keyFunction, liveTable, toWebSocketUrl } from "../src/index.js";

// --- TableRows, fed through SubscriptionState (what the client does per subscription) ---

const EPOCH = "1";
let seq = 100;
const change = (op, c, extra = {}) => ({
  sub: "t", type: "change", seq: ++seq, epoch: EPOCH,
  change: { schema: "public", table: "t", op, xid: 7, n: seq, ...c }, ...extra,
});

/** Feed server messages through SubscriptionState into a TableRows, as the client does. */
function feeder(store) {
  const state = new SubscriptionState();
  return (msg) => {
    for (const [name, payload] of state.handle(msg, EPOCH)) {
      if (name === "snapshot") store.snapshot(payload);
      else if (name === "commit") store.commit(payload);
      else if (name === "resync") store.resync({ ...payload, snapshot: true });
    }
  };
}

test("TableRows: snapshot, then a transaction applied whole with one notification", () => {
  const store = new TableRows({ key: "id" });
  const feed = feeder(store);
  let calls = 0;
  store.subscribe(() => calls++);
  feed({ sub: "t", type: "snapshot", seq: 100, epoch: EPOCH, complete: true,
    rows: [{ id: 1, name: "a" }, { id: 2, name: "b" }, { id: 3, name: "c" }] });
  assert.equal(calls, 1);
  const before = store.getSnapshot();
  assert.equal(before.status, "ready");
  assert.deepEqual(before.rows.map((r) => r.id), [1, 2, 3]);

  feed(change("INSERT", { new: { id: 4, name: "d" } }));
  feed(change("UPDATE", { new: { id: 1, name: "A" }, old: { id: 1 } }));
  feed(change("DELETE", { old: { id: 2 } }));
  assert.equal(calls, 1, "nothing is applied before the commit");
  assert.equal(store.getSnapshot(), before, "the state object is unchanged until the commit");
  feed(change("UPDATE", { visible: false, key: { id: 3 } }, { commit: true }));
  assert.equal(calls, 2, "one notification for the transaction");
  const after = store.getSnapshot();
  assert.notEqual(after, before);
  assert.deepEqual(after.rows, [{ id: 1, name: "A" }, { id: 4, name: "d" }]);
  assert.deepEqual(before.rows.map((r) => r.id), [1, 2, 3], "an earlier state keeps its rows");
  assert.equal(store.get(4).name, "d");
  assert.equal(store.get({ id: 1 }).name, "A");
});

test("TableRows: a hidden UPDATE (visible: false) drops the row and leaves no ghost", () => {
  const store = new TableRows();
  const feed = feeder(store);
  feed({ sub: "t", type: "snapshot", seq: 200, epoch: EPOCH, complete: true, rows: [{ id: 9, v: 1 }] });
  seq = 200;
  feed(change("UPDATE", { visible: false, key: { id: 9 } }, { commit: true }));
  const s = store.getSnapshot();
  assert.equal(s.rows.length, 0);
  assert.equal(s.byKey.size, 0);
});

test("TableRows: a key change, a composite key, truncated rows and TRUNCATE", () => {
  const store = new TableRows({ key: ["region", "id"] });
  store.snapshot({ rows: [{ region: "eu", id: 1, v: "x", big: "..." }], seq: 1, epoch: EPOCH });
  const tx = (...changes) => store.commit({ seq: 2, epoch: EPOCH, changes: changes.map((c) => ({ change: c })) });
  tx({ op: "UPDATE", new: { region: "us", id: 1, v: "y", big: "..." }, old: { region: "eu", id: 1 } });
  assert.deepEqual(store.getSnapshot().rows.map((r) => [r.region, r.id]), [["us", 1]]);
  assert.equal(store.get(["us", 1]).v, "y");
  // a row too large to send: the key only; the other columns stay as they were
  tx({ op: "UPDATE", truncated: true, key: { region: "us", id: 1 }, old: { region: "us", id: 1 } });
  const s = store.getSnapshot();
  assert.deepEqual(s.rows, [{ region: "us", id: 1, v: "y", big: "..." }]);
  assert.ok(s.partial.has(keyFunction(["region", "id"])({ region: "us", id: 1 })));
  tx({ op: "TRUNCATE", partition: { schema: "public", table: "t_2026" } });
  assert.equal(store.getSnapshot().stale, true, "a partition's TRUNCATE cannot be applied by key");
  tx({ op: "TRUNCATE" });
  assert.equal(store.getSnapshot().rows.length, 0);
});

test("TableRows: a resync keeps the rows until the snapshot that follows replaces them", () => {
  const store = new TableRows();
  store.snapshot({ rows: [{ id: 1 }, { id: 2 }], seq: 5, epoch: "a" });
  store.resync({ reason: "epoch_changed", snapshot: true, epoch: "b", seq: 0 });
  let s = store.getSnapshot();
  assert.equal(s.status, "resyncing");
  assert.equal(s.rows.length, 2);
  assert.equal(s.resyncReason, "epoch_changed");
  store.snapshot({ rows: [{ id: 2 }], seq: 0, epoch: "b" });
  s = store.getSnapshot();
  assert.equal(s.status, "ready");
  assert.deepEqual(s.rows, [{ id: 2 }]);
  store.resync({ reason: "out_of_range", snapshot: false, epoch: "b", seq: 9 });
  assert.equal(store.getSnapshot().stale, true);
});

// --- liveTable against a real worker --------------------------------------------------

const URL_ = process.env.PLANK_URL;
const PSQL = process.env.PLANK_PSQL;
const skip = !URL_ || !PSQL ? "set PLANK_URL and PLANK_PSQL to run the server tests" : false;
const WebSocketImpl = globalThis.WebSocket ?? (await import("ws")).WebSocket;

const psql = psqlWith(PSQL);

/** Resolve once pred(store state) holds; listeners fire once per transaction. */
function until(store, pred, what, ms = 10_000) {
  return new Promise((resolve, reject) => {
    const check = () => {
      const s = store.getSnapshot();
      if (pred(s)) {
        off();
        clearTimeout(timer);
        resolve(s);
      }
    };
    const off = store.subscribe(check);
    const timer = setTimeout(() => {
      off();
      reject(new Error(`timed out waiting for ${what}: ${JSON.stringify(store.getSnapshot().rows)}`));
    }, ms);
    check();
  });
}

const TABLE = "public.client_live";
const ROLE = "client_live_reader";
if (!skip) {
  createRlsTable(psql, TABLE, ROLE, "(1, 'one', true), (2, 'two', true), (3, 'hidden', false)");
  after(() => psql(`SET client_min_messages = warning; DROP TABLE IF EXISTS ${TABLE}`));
}

test("liveTable: snapshot, a two-row transaction, a delete, under a superuser", { skip, timeout: 30_000 }, async (t) => {
  const client = new PlankClient(toWebSocketUrl(URL_), { WebSocket: WebSocketImpl, heartbeatMs: 0 });
  t.after(() => client.close());
  const items = liveTable(client, "live", { table: TABLE, key: "id" });
  let s = await until(items, (x) => x.status === "ready" && x.rows.length === 3, "the snapshot");
  assert.deepEqual(s.rows.map((r) => r.id).sort(), [1, 2, 3]);
  const versions = [];
  items.subscribe(() => versions.push(items.getSnapshot().rows.length));
  psql(`BEGIN; INSERT INTO ${TABLE} VALUES (10, 'ten'); INSERT INTO ${TABLE} VALUES (11, 'eleven'); COMMIT`);
  s = await until(items, (x) => x.byKey.size === 5, "two inserts");
  assert.deepEqual(versions, [5], "one notification for the transaction, none between its rows");
  psql(`DELETE FROM ${TABLE} WHERE id = 10`);
  s = await until(items, (x) => !items.get(10), "the delete");
  assert.equal(items.get(11).name, "eleven");
  psql(`DELETE FROM ${TABLE} WHERE id = 11`);
  await until(items, (x) => x.rows.length === 3, "the second delete");
});

test("liveTable: an UPDATE that hides a row under row-level security removes it (visible: false)", { skip, timeout: 30_000 }, async (t) => {
  const secret = process.env.PLANK_JWT_SECRET ?? psql("SELECT coalesce(current_setting('plank.jwt_secret', true), '')");
  if (!secret) return t.skip("the server has no plank.jwt_secret");
  const client = new PlankClient(toWebSocketUrl(URL_), {
    WebSocket: WebSocketImpl,
    heartbeatMs: 0,
    getToken: () => mintJwt({ role: ROLE, exp: Math.floor(Date.now() / 1000) + 600 }, secret),
  });
  t.after(() => client.close());
  const markers = [];
  client.on("message", (m) => { if (m.type === "change" && m.change.visible === false) markers.push(m.change); });
  const items = liveTable(client, "rls", { table: TABLE, key: "id" });
  let s = await until(items, (x) => x.status === "ready", "the snapshot");
  assert.deepEqual(s.rows.map((r) => r.id).sort(), [1, 2], "the hidden row is not in the snapshot");
  psql(`UPDATE ${TABLE} SET shown = false WHERE id = 2`);
  s = await until(items, (x) => !x.byKey.has("2"), "row 2 to leave");
  assert.deepEqual(s.rows.map((r) => r.id), [1]);
  assert.equal(markers.length, 1);
  assert.deepEqual(markers[0].key, { id: 2 });
  assert.equal(markers[0].new, undefined);
  psql(`UPDATE ${TABLE} SET shown = true WHERE id = 3`);
  s = await until(items, (x) => x.byKey.has("3"), "row 3 to appear");
  assert.equal(items.get(3).name, "hidden");
});
