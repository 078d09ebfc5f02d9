// plank-client against a real Plank worker.
//
//   PLANK_URL=http://127.0.0.1:8090/ \
//   PLANK_PSQL='psql -h 127.0.0.1 -p 5433 -U postgres -d plank_demo -v ON_ERROR_STOP=1 -qAt' \
//   node --test client/test/
//
// Needs public.items tracked (demo/items.sql). The tests run one after the other; the
// last one terminates the worker (pg_terminate_backend) and waits for its successor.
// Connection faults are made with a TCP proxy in this process (node:net) that can drop
// every connection, refuse new ones, or blackhole the ones it has.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import net from "node:net";
import { mintJwt as mintJwtWith, psqlWith } from "../fixtures/package.mjs";
import { PlankClient, toWebSocketUrl } from "../src/index.js";

const URL_ = process.env.PLANK_URL;
const PSQL = process.env.PLANK_PSQL;
const skip = !URL_ || !PSQL ? "set PLANK_URL and PLANK_PSQL to run the server tests" : false;
const WS_URL = URL_ ? toWebSocketUrl(URL_) : null;
const TARGET = URL_ ? new URL(URL_) : null;
const WAIT_MS = 10_000;

const WebSocketImpl = globalThis.WebSocket ?? (await import("ws")).WebSocket;

/** Run SQL with the PLANK_PSQL command prefix; returns its trimmed output. */
const psql = psqlWith(PSQL);

const q = (s) => `'${String(s).replaceAll("'", "''")}'`;
let tagCounter = 0;
const newTag = (what) => `client-${what}-${process.pid}-${Date.now()}-${++tagCounter}`;
const tags = [];
after(() => {
  if (!skip && tags.length) psql(`DELETE FROM public.items WHERE name IN (${tags.map(q).join(", ")})`);
});

// Channels: where the server has channel grants (plank.grant_channel), let every client
// subscribe to this file's channels for the duration of the tests.
const CHANNELS = "pclient_%";
let grantedChannels = false;
before(() => {
  if (skip) return;
  if (psql("SELECT to_regclass('plank.channel_grants') IS NOT NULL") !== "t") return;
  const had = psql(`SELECT count(*) FROM plank.channel_grants
                     WHERE channel = ${q(CHANNELS)} AND grantee = 'public'`);
  if (had === "0") {
    psql(`SELECT plank.grant_channel(${q(CHANNELS)}, 'public')`);
    grantedChannels = true;
  }
});
after(() => {
  if (grantedChannels) psql(`SELECT plank.revoke_channel(${q(CHANNELS)}, 'public')`);
});

/**
 * Records events of emitters (a client, subscriptions) in one ordered list and waits for
 * conditions on it, each wait bounded.
 */
class Recorder {
  constructor() {
    this.events = [];
    this.waiters = new Set();
  }

  watch(emitter, names, label = "") {
    for (const name of names) {
      emitter.on(name, (payload) => this.push(label ? `${label}:${name}` : name, payload));
    }
    return this;
  }

  push(name, payload) {
    this.events.push({ name, payload, at: Date.now() });
    for (const w of [...this.waiters]) w();
  }

  named(name) {
    return this.events.filter((e) => e.name === name).map((e) => e.payload);
  }

  /** Resolve with pred's truthy result once it holds; reject after ms. */
  until(pred, what, ms = WAIT_MS) {
    return new Promise((resolve, reject) => {
      const check = () => {
        let r;
        try {
          r = pred(this.events);
        } catch (e) {
          done();
          reject(e);
          return;
        }
        if (r) {
          done();
          resolve(r);
        }
      };
      const timer = setTimeout(() => {
        done();
        reject(new Error(`timed out after ${ms} ms waiting for ${what}; events: ${this.events.map((e) => e.name).join(", ")}`));
      }, ms);
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      this.waiters.add(check);
      check();
    });
  }

  /** Wait for the n-th (1-based, counted over all events so far) event called name. */
  nth(name, n, ms = WAIT_MS) {
    return this.until((evs) => evs.filter((e) => e.name === name)[n - 1]?.payload, `${n} x ${name}`, ms);
  }

  after(index, name, ms = WAIT_MS) {
    return this.until((evs) => evs.slice(index).find((e) => e.name === name)?.payload, `${name} after #${index}`, ms);
  }
}

/**
 * A TCP proxy to the Plank port: pass (forward), down (drop every connection and refuse
 * new ones), freeze (keep the connections but forward nothing: a blackhole).
 */
async function startProxy() {
  const conns = new Set();
  let refusing = false;
  let accepted = 0;
  const server = net.createServer((client) => {
    if (refusing) {
      client.destroy();
      return;
    }
    accepted++;
    const upstream = net.connect(Number(TARGET.port), TARGET.hostname);
    const c = { client, upstream, frozen: false };
    conns.add(c);
    client.on("data", (d) => { if (!c.frozen) upstream.write(d); });
    upstream.on("data", (d) => { if (!c.frozen) client.write(d); });
    const end = () => {
      conns.delete(c);
      client.destroy();
      upstream.destroy();
    };
    for (const s of [client, upstream]) {
      s.on("error", end);
      s.on("close", end);
    }
  });
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", resolve);
  });
  const port = server.address().port;
  return {
    url: `ws://127.0.0.1:${port}/ws`,
    get accepted() { return accepted; },
    get open() { return conns.size; },
    freeze() { for (const c of conns) c.frozen = true; },
    kill() { for (const c of [...conns]) { c.client.destroy(); c.upstream.destroy(); conns.delete(c); } },
    down() { refusing = true; this.kill(); },
    up() { refusing = false; },
    close() {
      this.kill();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

function newClient(url, opts = {}) {
  return new PlankClient(url, {
    WebSocket: WebSocketImpl,
    backoff: { initialMs: 50, maxMs: 300, jitter: "full" },
    heartbeatMs: 5_000,
    heartbeatTimeoutMs: 5_000,
    ...opts,
  });
}

const CLIENT_EVENTS = ["connecting", "open", "closed", "reconnecting", "error"];
const SUB_EVENTS = ["ack", "change", "commit", "notify", "snapshot", "resync", "error"];

test("subscribe, then receive a change and its commit", { skip, timeout: 30_000 }, async (t) => {
  const tag = newTag("basic");
  tags.push(tag);
  const client = newClient(WS_URL);
  t.after(() => client.close());
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("basic", { table: "public.items", filter: { name: tag } });
  rec.watch(sub, SUB_EVENTS);

  const ack = await rec.nth("ack", 1);
  assert.equal(ack.resumed, false, "first subscribe: not resumed");
  assert.equal(ack.since, null);
  assert.equal(typeof ack.seq, "number");
  assert.equal(ack.epoch, client.epoch);
  assert.deepEqual(rec.events.slice(0, 2).map((e) => e.name), ["connecting", "open"]);

  const id = psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 1) RETURNING id`);
  const ch = await rec.nth("change", 1);
  assert.equal(ch.change.op, "INSERT");
  assert.equal(String(ch.change.new.id), id);
  assert.equal(ch.change.new.name, tag);
  assert.ok(ch.seq > ack.seq, "a change after the ack has a larger seq");
  const commit = await rec.nth("commit", 1);
  assert.equal(commit.xid, ch.change.xid);
  assert.equal(commit.seq, ch.seq);
  assert.notEqual(commit.synthetic, true, "the server sent the commit marker");
  assert.deepEqual(commit.changes.map((m) => m.seq), [ch.seq]);
  assert.equal(sub.seq, ch.seq);
  assert.equal(sub.epoch, client.epoch);

  // unsubscribe: nothing more for it
  assert.equal(client.unsubscribe("basic"), true);
  assert.equal(client.unsubscribe("basic"), false);
  const marker = client.subscribeChannel("marker", `pclient_marker_${process.pid}`);
  rec.watch(marker, ["ack", "notify"], "marker");
  await rec.nth("marker:ack", 1);
  psql(`UPDATE public.items SET value = 2 WHERE id = ${id}`);
  psql(`NOTIFY pclient_marker_${process.pid}, 'after'`);
  await rec.nth("marker:notify", 1);
  assert.equal(rec.named("change").length, 1, "no change after unsubscribe");
});

test("a transaction's changes come as one commit", { skip, timeout: 30_000 }, async (t) => {
  const tag = newTag("tx");
  tags.push(tag);
  const client = newClient(WS_URL);
  t.after(() => client.close());
  const rec = new Recorder();
  const sub = client.subscribeTable("tx", { table: "public.items", filter: { name: tag } });
  rec.watch(sub, SUB_EVENTS);
  await rec.nth("ack", 1);

  psql(`BEGIN; INSERT INTO public.items (name, value) VALUES (${q(tag)}, 1);
        INSERT INTO public.items (name, value) VALUES (${q(tag)}, 2); COMMIT`);
  psql(`UPDATE public.items SET value = value + 10 WHERE name = ${q(tag)}`); // one tx, two rows
  const [first, second] = await rec.until((evs) => {
    const commits = evs.filter((e) => e.name === "commit").map((e) => e.payload);
    return commits.length >= 2 && commits;
  }, "two commits");
  assert.equal(first.changes.length, 2, "one commit with both inserts");
  assert.deepEqual(first.changes.map((m) => m.change.op), ["INSERT", "INSERT"]);
  assert.deepEqual(first.changes.map((m) => Number(m.change.new.value)), [1, 2]);
  assert.equal(new Set(first.changes.map((m) => m.change.xid)).size, 1);
  assert.equal(first.changes[0].change.xid, first.xid);
  assert.equal(first.seq, first.changes[1].seq);
  assert.ok(first.changes[0].seq < first.changes[1].seq);
  assert.deepEqual(first.changes.map((m) => m.change.n), [1, 2]);
  assert.equal(second.changes.length, 2);
  assert.deepEqual(second.changes.map((m) => m.change.op), ["UPDATE", "UPDATE"]);
  assert.notEqual(second.xid, first.xid);
  // every change came once, before its commit
  const order = rec.events.filter((e) => e.name === "change" || e.name === "commit").map((e) => e.name);
  assert.deepEqual(order, ["change", "change", "commit", "change", "change", "commit"]);

  // a transaction whose last change the filter leaves out: the commit carries that
  // change's seq (docs/PROTOCOL.md, "commit"), and the position moves on to it
  tags.push(`${tag}-other`);
  psql(`BEGIN; INSERT INTO public.items (name, value) VALUES (${q(tag)}, 3);
        INSERT INTO public.items (name, value) VALUES (${q(`${tag}-other`)}, 4); COMMIT`);
  const third = await rec.nth("commit", 3);
  assert.equal(third.changes.length, 1);
  assert.equal(Number(third.changes[0].change.new.value), 3);
  assert.equal(third.seq, third.changes[0].seq + 1, "the seq of the unseen last change");
  assert.equal(sub.seq, third.seq);
});

test("channel subscription: notify", { skip, timeout: 30_000 }, async (t) => {
  const channel = `pclient_chan_${process.pid}`;
  const client = newClient(WS_URL);
  t.after(() => client.close());
  const rec = new Recorder();
  rec.watch(client.subscribeChannel("chan", channel), SUB_EVENTS);
  await rec.nth("ack", 1);
  psql(`SELECT pg_notify(${q(channel)}, 'hello')`);
  const n = await rec.nth("notify", 1);
  assert.equal(n.channel, channel);
  assert.equal(n.payload, "hello");
  assert.equal(typeof n.pid, "number");
});

test("heartbeat: a blackholed connection is noticed within heartbeatTimeoutMs and replaced", { skip, timeout: 30_000 }, async (t) => {
  const proxy = await startProxy();
  t.after(() => proxy.close());
  const heartbeatMs = 300;
  const heartbeatTimeoutMs = 700;
  const client = newClient(proxy.url, { heartbeatMs, heartbeatTimeoutMs });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("hb", { table: "public.items", filter: { name: newTag("hb") } });
  rec.watch(sub, SUB_EVENTS);
  await rec.nth("ack", 1);
  // a few heartbeats pass on a healthy connection without a reconnect
  let pongs = 0;
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error("no pongs")), WAIT_MS);
    const off = client.on("message", (m) => {
      if (m.type === "pong" && ++pongs === 3) { clearTimeout(timer); off(); resolve(); }
    });
  });
  assert.equal(rec.named("closed").length, 0, "healthy connection kept");

  const frozenAt = Date.now();
  const mark = rec.events.length;
  proxy.freeze();
  const closed = await rec.after(mark, "closed", heartbeatMs + heartbeatTimeoutMs + 5_000);
  const noticedIn = Date.now() - frozenAt;
  t.diagnostic(`dead connection noticed after ${noticedIn} ms`);
  assert.equal(closed.code, 4000);
  assert.match(closed.reason, /ping/);
  assert.equal(closed.willReconnect, true);
  // the next ping is due within heartbeatMs, its deadline heartbeatTimeoutMs after that
  assert.ok(noticedIn <= heartbeatMs + heartbeatTimeoutMs + 500, `noticed in ${noticedIn} ms`);
  assert.ok(noticedIn >= heartbeatTimeoutMs - heartbeatMs - 50, `not before the timeout (${noticedIn} ms)`);
  const reconnecting = await rec.after(mark, "reconnecting");
  assert.ok(reconnecting.delay >= 0 && reconnecting.delay <= 300);
  await rec.after(mark, "open");
  const ack = await rec.nth("ack", 2);
  assert.equal(proxy.accepted, 2, "a second connection through the proxy");
  assert.deepEqual(ack.since, { epoch: client.epoch, seq: rec.named("ack")[0].seq },
    "resubscribed from where it was");
  assert.equal(ack.resumed, true);
});

test("resume: rows inserted while disconnected arrive in order, once", { skip, timeout: 60_000 }, async (t) => {
  const tag = newTag("resume");
  tags.push(tag);
  const proxy = await startProxy();
  t.after(() => proxy.close());
  const client = newClient(proxy.url);
  t.after(() => client.close());
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("resume", { table: "public.items", filter: { name: tag } });
  rec.watch(sub, SUB_EVENTS);
  const insert = (value) => psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, ${value})`);

  await rec.nth("ack", 1);
  insert(1);
  const live = await rec.nth("commit", 1);
  const epochBefore = client.epoch;

  // drop the connection and refuse new ones while rows are written
  const mark = rec.events.length;
  proxy.down();
  await rec.after(mark, "closed");
  insert(2);
  psql(`BEGIN; INSERT INTO public.items (name, value) VALUES (${q(tag)}, 3);
        INSERT INTO public.items (name, value) VALUES (${q(tag)}, 4); COMMIT`);
  insert(5);
  // other subscribers' events in between: the resumed subscription must skip them
  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag + "-other")}, 0)`);
  tags.push(tag + "-other");
  assert.equal(rec.named("change").length, 1, "nothing arrives while disconnected");
  // it keeps trying while the proxy refuses
  await rec.until((evs) => evs.slice(mark).filter((e) => e.name === "closed").length >= 2, "a refused retry");
  proxy.up();

  const ack = await rec.nth("ack", 2);
  assert.equal(client.epoch, epochBefore, "same worker run");
  assert.deepEqual(ack.since, { epoch: epochBefore, seq: live.seq }, "since: the last seq seen");
  assert.equal(ack.resumed, true, "the server honoured since");
  assert.equal(rec.named("resync").length, 0, "no resync");

  const changes = rec.named("change");
  assert.deepEqual(changes.map((m) => Number(m.change.new.value)), [1, 2, 3, 4, 5],
    "every missed row, in order, before the ack");
  const seqs = changes.map((m) => m.seq);
  assert.deepEqual([...seqs].sort((a, b) => a - b), seqs, "increasing seqs");
  assert.equal(new Set(seqs).size, seqs.length, "no duplicate");
  const ackIndex = rec.events.findIndex((e) => e.name === "ack" && e.payload === ack);
  assert.ok(rec.events.slice(ackIndex).every((e) => e.name !== "change"), "replay came before the ack");
  const commits = rec.named("commit");
  assert.deepEqual(commits.map((c) => c.changes.length), [1, 1, 2, 1], "transactions kept whole in the replay");
  assert.ok(commits.every((c) => c.synthetic !== true));

  // live again after the resume
  insert(6);
  const six = await rec.nth("change", 6);
  assert.equal(Number(six.change.new.value), 6);
  assert.ok(six.seq > ack.seq);
});

test("resume: a connection lost before a commit marker gets the whole transaction", { skip, timeout: 60_000 }, async (t) => {
  // The client resumes from just before an unfinished transaction, so the replay brings
  // its commit; the changes it already delivered are not delivered again.
  const tag = newTag("midtx");
  tags.push(tag);
  const proxy = await startProxy();
  t.after(() => proxy.close());
  // A WebSocket that loses everything after the second of the transaction's three
  // changes (as if the connection broke right there) and drops the connection; the third
  // one would have closed the transaction ("commit": true).
  let dropped = false;
  class Lossy extends WebSocketImpl {
    get onmessage() { return super.onmessage; }
    set onmessage(fn) {
      super.onmessage = fn && ((ev) => {
        if (this.lost) return;
        fn(ev);
        const m = JSON.parse(String(ev.data));
        if (!dropped && m.type === "change" && m.change.n === 2) {
          dropped = true;
          this.lost = true;
          proxy.kill();
        }
      });
    }
  }
  const client = newClient(proxy.url, { WebSocket: Lossy });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("midtx", { table: "public.items", filter: { name: tag } });
  rec.watch(sub, SUB_EVENTS);
  await rec.nth("ack", 1);
  psql(`BEGIN; INSERT INTO public.items (name, value) VALUES (${q(tag)}, 1);
        INSERT INTO public.items (name, value) VALUES (${q(tag)}, 2);
        INSERT INTO public.items (name, value) VALUES (${q(tag)}, 3); COMMIT`);
  const ack = await rec.nth("ack", 2);
  const commit = await rec.nth("commit", 1);
  assert.ok(dropped);
  assert.equal(ack.resumed, true);
  assert.equal(ack.since.seq, commit.changes[0].seq - 1, "resumed from before the transaction");
  assert.deepEqual(commit.changes.map((m) => Number(m.change.new.value)), [1, 2, 3]);
  assert.equal(rec.named("change").length, 3, "each change delivered once");
  assert.equal(rec.named("commit").length, 1);
});

test("resync out_of_range: a since the server cannot serve brings a fresh snapshot", { skip, timeout: 60_000 }, async (t) => {
  const tag = newTag("range");
  tags.push(tag);
  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 7)`);
  const proxy = await startProxy();
  t.after(() => proxy.close());
  const client = newClient(proxy.url);
  t.after(() => client.close());
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("range", { table: "public.items", filter: { name: tag }, snapshot: true });
  rec.watch(sub, SUB_EVENTS);
  const snap1 = await rec.nth("snapshot", 1);
  assert.deepEqual(snap1.rows.map((r) => Number(r.value)), [7]);
  await rec.nth("ack", 1);
  // pretend to have seen a seq from the future: the server must refuse to resume
  sub._state.seq += 1_000_000;
  proxy.kill();
  const resync = await rec.nth("resync", 1);
  assert.equal(resync.reason, "out_of_range");
  assert.equal(resync.snapshot, true, "a snapshot follows");
  assert.equal(resync.epoch, client.epoch);
  const snap2 = await rec.nth("snapshot", 2);
  assert.deepEqual(snap2.rows.map((r) => Number(r.value)), [7]);
  const ack = await rec.nth("ack", 2);
  assert.equal(ack.resumed, false);
  const order = rec.events.filter((e) => ["resync", "snapshot", "ack"].includes(e.name)).map((e) => e.name);
  assert.deepEqual(order.slice(2), ["resync", "snapshot", "ack"]);
  // and changes flow again
  psql(`UPDATE public.items SET value = 8 WHERE name = ${q(tag)}`);
  const ch = await rec.nth("change", 1);
  assert.equal(Number(ch.change.new.value), 8);
});

// --- authentication --------------------------------------------------------------------
// Tokens are HS256 JWTs signed with the server's plank.jwt_secret (PLANK_JWT_SECRET, or
// read from the server: scripts/test.sh sets 'plank-test-secret-0123456789abcdef').

const JWT_SECRET = skip ? "" : (process.env.PLANK_JWT_SECRET ??
  psql("SELECT coalesce(current_setting('plank.jwt_secret', true), '')"));
const authSkip = skip || (JWT_SECRET ? false : "the server has no plank.jwt_secret");

/** A compact HS256 JWT with these claims, signed with the server's secret by default. */
const mintJwt = (claims, secret = JWT_SECRET) => mintJwtWith(claims, secret);
const unixNow = () => Math.floor(Date.now() / 1000);

test("auth: a JWT is acknowledged with its role before the subscription, which then works", { skip: authSkip, timeout: 30_000 }, async (t) => {
  const tag = newTag("auth");
  tags.push(tag);
  const exp = unixNow() + 60;
  const client = newClient(WS_URL, { token: mintJwt({ role: "postgres", exp }) });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, [...CLIENT_EVENTS, "auth"]);
  const order = [];
  client.on("message", (m) => order.push(m.type === "ack" ? `ack:${m.request}` : m.type));
  const sub = client.subscribeTable("auth", { table: "public.items", filter: { name: tag } });
  rec.watch(sub, SUB_EVENTS);
  const auth = await rec.nth("auth", 1);
  assert.deepEqual(auth, { role: "postgres", expires: exp, refreshed: false });
  assert.equal(client.role, "postgres");
  assert.equal(client.expires, exp);
  await rec.nth("ack", 1);
  assert.deepEqual(order.slice(0, 3), ["welcome", "ack:auth", "ack:subscribe"]);
  assert.deepEqual(rec.events.map((e) => e.name).slice(0, 4), ["connecting", "open", "auth", "ack"]);
  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 1)`);
  const ch = await rec.nth("change", 1);
  assert.equal(ch.change.new.name, tag);
  assert.equal(rec.named("error").length, 0);
});

test("auth: a token with a bad signature gives invalid_token, close 4001 and no reconnect storm", { skip: authSkip, timeout: 30_000 }, async (t) => {
  const forged = mintJwt({ role: "postgres", exp: unixNow() + 60 }, "not-the-server-secret-0123456789ab");
  const client = newClient(WS_URL, { token: forged, backoff: { initialMs: 10, maxMs: 50, jitter: "full" } });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, [...CLIENT_EVENTS, "auth"]);
  const sub = client.subscribeTable("forged", { table: "public.items", filter: { name: newTag("forged") } });
  rec.watch(sub, SUB_EVENTS);
  const err = await rec.nth("error", 1);
  assert.equal(err.code, "invalid_token");
  assert.equal(typeof err.message, "string");
  const closed = await rec.nth("closed", 1);
  assert.equal(closed.code, 4001);
  assert.equal(closed.willReconnect, false);
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  assert.equal(rec.named("connecting").length, 1, "one connect in 2 s");
  assert.equal(rec.named("error").length, 1);
  assert.equal(rec.named("auth").length, 0);
  assert.equal(rec.named("ack").length, 0, "never subscribed");
  assert.equal(client.state, "closed");
  assert.equal(client.role, null);
});

test("auth: getToken refreshes a short-lived token on the open connection, past its expiry", { skip: authSkip, timeout: 30_000 }, async (t) => {
  const tag = newTag("refresh");
  tags.push(tag);
  const tokens = [];
  const client = newClient(WS_URL, {
    getToken: async () => {
      const token = mintJwt({ role: "postgres", exp: unixNow() + 3 });
      tokens.push(token);
      return token;
    },
  });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, [...CLIENT_EVENTS, "auth"]);
  const sub = client.subscribeTable("refresh", { table: "public.items", filter: { name: tag } });
  rec.watch(sub, SUB_EVENTS);
  const first = await rec.nth("auth", 1);
  await rec.nth("ack", 1);
  // wait until well after the first token's expiry: the server would close with 4002
  const refreshed = await rec.nth("auth", 2, 5_000);
  assert.equal(refreshed.refreshed, true);
  assert.equal(refreshed.role, "postgres");
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, first.expires * 1000 + 1_500 - Date.now())));
  assert.deepEqual(rec.named("closed"), [], "the connection outlived the first token");
  assert.equal(rec.named("connecting").length, 1);
  assert.ok(tokens.length >= 2);
  assert.ok(client.expires > first.expires);
  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 1)`);
  const ch = await rec.nth("change", 1);
  assert.equal(ch.change.new.name, tag);
  assert.equal(rec.named("error").length, 0);
});

test("auth: a fixed token that expires: close 4002, token_expired, no reconnect", { skip: authSkip, timeout: 30_000 }, async (t) => {
  const client = newClient(WS_URL, { token: mintJwt({ role: "postgres", exp: unixNow() + 2 }) });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, [...CLIENT_EVENTS, "auth"]);
  await rec.nth("auth", 1);
  const closed = await rec.nth("closed", 1, 5_000);
  assert.equal(closed.code, 4002);
  assert.equal(closed.willReconnect, false);
  const err = await rec.nth("error", 1);
  assert.equal(err.code, "token_expired");
  await new Promise((resolve) => setTimeout(resolve, 500));
  assert.equal(rec.named("connecting").length, 1);
});

test("auth: a fresh token naming another role is refused with role_mismatch; the connection stays", { skip: authSkip, timeout: 30_000 }, async (t) => {
  const other = `pclient_other_${process.pid}`;
  psql(`CREATE ROLE ${other}`);
  psql(`GRANT ${other} TO plank_authenticator`);
  let calls = 0;
  const client = newClient(WS_URL, {
    // the first token lives 3 s: the refresh comes after about 2 s
    getToken: () => mintJwt(++calls === 1
      ? { role: "postgres", exp: unixNow() + 3 }
      : { role: other, exp: unixNow() + 60 }),
  });
  t.after(() => {
    client.close();
    psql(`DROP ROLE IF EXISTS ${other}`);
  });
  const rec = new Recorder().watch(client, [...CLIENT_EVENTS, "auth"]);
  await rec.nth("auth", 1);
  const err = await rec.nth("error", 1, 5_000);
  assert.equal(err.code, "role_mismatch");
  assert.equal(err.request, "auth");
  assert.equal(client.role, "postgres");
  assert.equal(client.state, "open");
  assert.equal(rec.named("closed").length, 0);
});

// Last: terminates the worker.
test("resync after a worker restart: epoch_changed, then the snapshot", { skip, timeout: 90_000 }, async (t) => {
  const tag = newTag("restart");
  tags.push(tag);
  const client = newClient(WS_URL, { backoff: { initialMs: 100, maxMs: 500, jitter: "half" } });
  t.after(() => client.close());
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("restart", { table: "public.items", filter: { name: tag }, snapshot: true });
  rec.watch(sub, SUB_EVENTS);
  await rec.nth("ack", 1);
  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 1)`);
  await rec.nth("commit", 1);
  const epoch1 = client.epoch;

  const mark = rec.events.length;
  const killed = psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE backend_type = 'plank'");
  assert.match(killed, /^t$/m, "the worker was terminated");
  const closed = await rec.after(mark, "closed");
  t.diagnostic(`closed with ${closed.code}`);
  // written while no worker runs (or before the new one subscribed us)
  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 2)`);

  const resync = await rec.nth("resync", 1, 30_000);
  assert.equal(resync.reason, "epoch_changed");
  assert.equal(resync.snapshot, true);
  assert.notEqual(resync.epoch, epoch1);
  assert.equal(client.epoch, resync.epoch);
  const snap = await rec.nth("snapshot", 2);
  const ack = await rec.nth("ack", 2);
  // Row 2 was written right after the close; the new worker starts a second later, so it
  // is in the snapshot (were the client faster than psql, it would follow as a change).
  const inSnapshot = snap.rows.map((r) => Number(r.value)).sort();
  if (inSnapshot.length === 1) {
    t.diagnostic("row 2 was written after the resubscribe");
    const two = await rec.until((evs) => evs.slice(mark).find((e) => e.name === "change")?.payload, "row 2");
    assert.equal(Number(two.change.new.value), 2);
  }
  assert.deepEqual(inSnapshot.length === 1 ? [...inSnapshot, 2] : inSnapshot, [1, 2], "rows 1 and 2");
  assert.equal(ack.resumed, false);
  assert.deepEqual(ack.since?.epoch, epoch1, "it asked to resume the old epoch");
  const tail = rec.events.slice(mark).filter((e) => ["resync", "snapshot", "ack"].includes(e.name));
  assert.deepEqual(tail.map((e) => e.name), ["resync", "snapshot", "ack"]);
  assert.ok(rec.events.slice(mark).some((e) => e.name === "reconnecting"));

  psql(`INSERT INTO public.items (name, value) VALUES (${q(tag)}, 3)`);
  const ch = await rec.until((evs) => evs.slice(mark).map((e) => e.name === "change" && e.payload)
    .find((m) => m && Number(m.change.new.value) === 3), "a live change");
  assert.equal(Number(ch.change.new.value), 3);
  assert.equal(ch.epoch, resync.epoch);
});

test("a subscription the server ends (its table dropped) is reported and not subscribed again", { skip, timeout: 30_000 }, async (t) => {
  const table = `pclient_drop_${process.pid}`;
  psql(`CREATE TABLE public.${table} (id int PRIMARY KEY)`);
  psql(`SELECT plank.track('public.${table}')`);
  const client = newClient(WS_URL);
  t.after(() => {
    client.close();
    psql(`DROP TABLE IF EXISTS public.${table}`);
  });
  const rec = new Recorder().watch(client, CLIENT_EVENTS);
  const sub = client.subscribeTable("gone", { table: `public.${table}` });
  rec.watch(sub, SUB_EVENTS);
  await rec.nth("ack", 1);
  psql(`DROP TABLE public.${table}`);
  const err = await rec.nth("error", 1);
  assert.equal(err.code, "unknown_table");
  assert.equal(err.sub, "gone");
  assert.equal(client.subscriptions.has("gone"), false);
  assert.equal(sub.state, "closed");
});
