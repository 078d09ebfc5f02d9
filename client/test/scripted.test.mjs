// PlankClient against a scripted WebSocket server (the ws package's, in this process):
// behaviours a real worker does not produce on demand — duplicate replays, a server that
// never says welcome, messages still on their way after an unsubscribe. No Plank needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { WebSocket, WebSocketServer } from "ws";
import { PlankClient } from "../src/index.js";

const EPOCH = "1000";

/** A server whose `onConnection(socket, n)` scripts each connection (n from 1). */
async function scriptedServer(onConnection) {
  const wss = new WebSocketServer({ host: "127.0.0.1", port: 0 });
  await new Promise((resolve) => wss.once("listening", resolve));
  let n = 0;
  const received = [];
  wss.on("connection", (socket) => {
    const conn = ++n;
    socket.on("message", (data) => received.push({ conn, msg: JSON.parse(String(data)) }));
    onConnection(socket, conn);
  });
  return {
    url: `ws://127.0.0.1:${wss.address().port}/ws`,
    received,
    sockets: () => [...wss.clients],
    close: () => new Promise((resolve) => {
      for (const c of wss.clients) c.terminate();
      wss.close(() => resolve());
    }),
  };
}

const send = (socket, msg) => socket.send(JSON.stringify(msg));

/** Resolves when `emitter` emits `event` with a payload passing `pred`; bounded. */
function next(emitter, event, pred = () => true, ms = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => { off(); reject(new Error(`no ${event} within ${ms} ms`)); }, ms);
    const off = emitter.on(event, (payload) => {
      if (pred(payload)) { clearTimeout(timer); off(); resolve(payload); }
    });
  });
}

/** Resolves with the first message from the client with this type; bounded. */
function request(socket, type, ms = 5_000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no ${type} request within ${ms} ms`)), ms);
    const onMessage = (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === type) { clearTimeout(timer); socket.off("message", onMessage); resolve(msg); }
    };
    socket.on("message", onMessage);
  });
}

const change = (seq, xid, value) => ({
  sub: "s", type: "change", seq, epoch: EPOCH,
  change: { schema: "public", table: "t", op: "INSERT", xid, n: 1, new: { id: seq, value } },
});

test("replayed duplicates are dropped; the resubscribe carries since", { timeout: 20_000 }, async (t) => {
  const server = await scriptedServer(async (socket, conn) => {
    send(socket, { type: "welcome", protocol: 1, server: "scripted", epoch: EPOCH, seq: 10 });
    const sub = await request(socket, "subscribe");
    if (conn === 1) {
      send(socket, { type: "ack", id: sub.id, request: "subscribe", seq: 10, resumed: false });
      send(socket, change(11, 1, "a"));
      send(socket, { sub: "s", type: "commit", seq: 11, epoch: EPOCH, xid: 1 });
      socket.terminate(); // the connection breaks
    } else {
      // a sloppy replay: everything since 5, including what was delivered already
      send(socket, change(11, 1, "a"));
      send(socket, { sub: "s", type: "commit", seq: 11, epoch: EPOCH, xid: 1 });
      send(socket, change(12, 2, "b"));
      send(socket, { sub: "s", type: "commit", seq: 12, epoch: EPOCH, xid: 2 });
      send(socket, { type: "ack", id: sub.id, request: "subscribe", seq: 12, resumed: true });
      send(socket, change(12, 2, "b")); // and once more
      send(socket, change(13, 3, "c"));
      send(socket, { sub: "s", type: "commit", seq: 13, epoch: EPOCH, xid: 3 });
    }
  });
  t.after(() => server.close());
  const client = new PlankClient(server.url, { WebSocket, backoff: { initialMs: 20, maxMs: 50 } });
  t.after(() => client.close());
  const changes = [];
  const commits = [];
  const sub = client.subscribeTable("s", { table: "t" }, {
    change: (m) => changes.push(m.change.new.value),
    commit: (c) => commits.push(c.changes.map((m) => m.change.new.value).join("")),
  });
  await Promise.all([next(sub, "ack", (a) => a.resumed), next(sub, "commit", (c) => c.seq === 13)]);
  assert.deepEqual(changes, ["a", "b", "c"]);
  assert.deepEqual(commits, ["a", "b", "c"]);
  const subscribes = server.received.filter((r) => r.msg.type === "subscribe");
  assert.equal(subscribes.length, 2);
  assert.equal(subscribes[0].msg.since, undefined);
  assert.deepEqual(subscribes[1].msg.since, { epoch: EPOCH, seq: 11 });
});

test("no welcome within connectTimeoutMs: the attempt is dropped and retried", { timeout: 20_000 }, async (t) => {
  const server = await scriptedServer((socket, conn) => {
    if (conn >= 2) send(socket, { type: "welcome", protocol: 1, server: "scripted", epoch: EPOCH, seq: 0 });
  });
  t.after(() => server.close());
  const client = new PlankClient(server.url, {
    WebSocket, connectTimeoutMs: 300, backoff: { initialMs: 10, maxMs: 10 },
  });
  t.after(() => client.close());
  const started = Date.now();
  const closed = await next(client, "closed");
  assert.equal(closed.code, 4000);
  assert.match(closed.reason, /welcome/);
  assert.ok(Date.now() - started >= 250);
  const open = await next(client, "open");
  assert.equal(open.epoch, EPOCH);
  assert.equal(client.attempt, 0, "the attempt counter is reset by the welcome");
});

test("reconnect delays grow with backoff while the server is away", { timeout: 20_000 }, async (t) => {
  // a port with nothing listening: every attempt fails
  const server = await scriptedServer(() => {});
  const url = server.url;
  await server.close();
  const client = new PlankClient(url, {
    WebSocket, backoff: { initialMs: 10, maxMs: 80, jitter: "none" },
  });
  t.after(() => client.close());
  const delays = [];
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`only ${delays.length} retries`)), 10_000);
    client.on("reconnecting", ({ delay, attempt }) => {
      delays.push(delay);
      assert.equal(attempt, delays.length);
      if (delays.length === 5) { clearTimeout(timer); resolve(); }
    });
  });
  assert.deepEqual(delays, [10, 20, 40, 80, 80]);
  client.close();
  assert.equal(client.state, "closed");
});

test("after unsubscribe, messages still on their way for that id are dropped", { timeout: 20_000 }, async (t) => {
  let serverSocket;
  const server = await scriptedServer(async (socket) => {
    serverSocket = socket;
    send(socket, { type: "welcome", protocol: 1, server: "scripted", epoch: EPOCH, seq: 0 });
    const sub = await request(socket, "subscribe");
    send(socket, { type: "ack", id: sub.id, request: "subscribe", seq: 0, resumed: false });
  });
  t.after(() => server.close());
  const client = new PlankClient(server.url, { WebSocket });
  t.after(() => client.close());
  const seen = [];
  const first = client.subscribeTable("s", { table: "t" }, { change: (m) => seen.push(["old", m.seq]) });
  await next(first, "ack");
  const unsub = request(serverSocket, "unsubscribe");
  client.unsubscribe("s");
  await unsub;
  // the same id again, at once; the server still sends the old subscription's change
  const second = client.subscribeTable("s", { table: "t" }, { change: (m) => seen.push(["new", m.seq]) });
  const resub = request(serverSocket, "subscribe");
  send(serverSocket, change(1, 1, "late"));
  send(serverSocket, { type: "ack", id: "s", request: "unsubscribe", seq: 1 });
  await resub;
  send(serverSocket, { type: "ack", id: "s", request: "subscribe", seq: 1, resumed: false });
  send(serverSocket, change(2, 2, "fresh"));
  await next(second, "change");
  assert.deepEqual(seen, [["new", 2]]);
});

test("a handler that throws is reported and does not stop delivery", { timeout: 20_000 }, async (t) => {
  const server = await scriptedServer(async (socket) => {
    send(socket, { type: "welcome", protocol: 1, server: "scripted", epoch: EPOCH, seq: 0 });
    const sub = await request(socket, "subscribe");
    send(socket, { type: "ack", id: sub.id, request: "subscribe", seq: 0, resumed: false });
    send(socket, change(1, 1, "x"));
    send(socket, change(2, 2, "y"));
  });
  t.after(() => server.close());
  const client = new PlankClient(server.url, { WebSocket });
  t.after(() => client.close());
  const errors = [];
  client.on("error", (e) => errors.push(e.code));
  const seen = [];
  const sub = client.subscribeTable("s", { table: "t" }, {
    change: (m) => { seen.push(m.seq); if (m.seq === 1) throw new Error("app bug"); },
  });
  await next(sub, "change", (m) => m.seq === 2);
  assert.deepEqual(seen, [1, 2]);
  assert.deepEqual(errors, ["handler_error"]);
  assert.equal(client.state, "open");
});

// --- authentication ------------------------------------------------------------------

/** A scripted server that checks tokens: "good*" is accepted (expiring in `life` s). */
function authServer({ life = 0, role = "alice", onAuth } = {}) {
  return scriptedServer((socket, conn) => {
    send(socket, { type: "welcome", protocol: 1, server: "scripted", epoch: EPOCH, seq: 0, auth: "required" });
    socket.on("message", (data) => {
      const msg = JSON.parse(String(data));
      if (msg.type === "auth") {
        onAuth?.(msg, conn);
        if (!msg.token.startsWith("good")) {
          send(socket, { type: "error", id: msg.id, code: "invalid_token", message: "token signature does not verify" });
          socket.close(4001, "authentication failed");
          return;
        }
        const expires = life ? Math.floor(Date.now() / 1000) + life : undefined;
        send(socket, { type: "ack", id: msg.id, request: "auth", role, expires, seq: 0 });
      } else if (msg.type === "subscribe") {
        send(socket, { type: "ack", id: msg.id, request: "subscribe", seq: 0, resumed: false });
      }
    });
  });
}

test("auth: the token goes first, the subscriptions after its ack, on every connection", { timeout: 20_000 }, async (t) => {
  const server = await authServer();
  t.after(() => server.close());
  let calls = 0;
  const client = new PlankClient(server.url, {
    WebSocket, getToken: async () => `good-${++calls}`, backoff: { initialMs: 20, maxMs: 50 },
  });
  t.after(() => client.close());
  const sub = client.subscribeTable("s", { table: "t" });
  client.subscribeChannel("c", "chat");
  const auth = await next(client, "auth");
  assert.deepEqual(auth, { role: "alice", expires: null, refreshed: false });
  await next(sub, "ack");
  assert.equal(client.role, "alice");
  // break the connection: the same order again, with a new token
  const again = Promise.all([next(sub, "ack"), next(client, "auth")]);
  for (const c of server.sockets()) c.terminate();
  await again;
  const byConn = (conn) => server.received.filter((r) => r.conn === conn).map((r) => r.msg.type);
  assert.deepEqual(byConn(1), ["auth", "subscribe", "subscribe"]);
  assert.deepEqual(byConn(2).slice(0, 3), ["auth", "subscribe", "subscribe"]);
  assert.deepEqual(server.received.filter((r) => r.msg.type === "auth").map((r) => r.msg.token), ["good-1", "good-2"]);
});

test("auth: a refused token (error, then close 4001) stops a client with a fixed token", { timeout: 20_000 }, async (t) => {
  const server = await authServer();
  t.after(() => server.close());
  const client = new PlankClient(server.url, { WebSocket, token: "forged", backoff: { initialMs: 10, maxMs: 20 } });
  t.after(() => client.close());
  let connects = 0;
  client.on("connecting", () => connects++);
  const errors = [];
  client.on("error", (e) => errors.push(e));
  const sub = client.subscribeTable("s", { table: "t" });
  const closed = await next(client, "closed");
  assert.equal(closed.code, 4001);
  assert.equal(closed.willReconnect, false);
  await new Promise((resolve) => setTimeout(resolve, 2_000));
  assert.equal(connects, 1, "no reconnect storm");
  assert.deepEqual(errors.map((e) => [e.code, e.message]), [["invalid_token", "token signature does not verify"]]);
  assert.equal(client.state, "closed");
  assert.equal(sub.state, "pending");
  assert.deepEqual(server.received.map((r) => r.msg.type), ["auth"], "never subscribed");
});

test("auth: with getToken, a refused token is retried with backoff until a good one comes", { timeout: 20_000 }, async (t) => {
  const server = await authServer();
  t.after(() => server.close());
  let calls = 0;
  const client = new PlankClient(server.url, {
    WebSocket, getToken: () => (++calls < 4 ? "forged" : "good"),
    backoff: { initialMs: 100, maxMs: 1000, jitter: "none" },
  });
  t.after(() => client.close());
  const delays = [];
  client.on("reconnecting", ({ delay }) => delays.push(delay));
  const errors = [];
  client.on("error", (e) => errors.push(e.code));
  const sub = client.subscribeTable("s", { table: "t" });
  await next(sub, "ack");
  assert.deepEqual(delays, [100, 200, 400], "backoff grows: welcomes do not reset it");
  assert.deepEqual(errors, ["invalid_token", "invalid_token", "invalid_token"]);
  assert.equal(client.attempt, 0);
});

test("auth: a short-lived token is refreshed on the open connection before it expires", { timeout: 20_000 }, async (t) => {
  const auths = [];
  const server = await authServer({ life: 3, onAuth: (msg, conn) => auths.push({ conn, at: Date.now(), token: msg.token }) });
  t.after(() => server.close());
  let calls = 0;
  const client = new PlankClient(server.url, { WebSocket, getToken: () => `good-${++calls}` });
  t.after(() => client.close());
  const first = await next(client, "auth");
  const refreshed = await next(client, "auth", (a) => a.refreshed, 5_000);
  const lead = first.expires * 1000 - auths[1].at;
  t.diagnostic(`refreshed ${auths[1].at - auths[0].at} ms after the first auth, ${lead} ms before the expiry`);
  // refreshed at max(80% of 2..3 s, 1 s before the expiry): 1 s before, less timer latency
  assert.ok(lead >= 500 && lead <= 1_200, `about 1 s before the expiry (${lead} ms)`);
  assert.ok(refreshed.expires >= first.expires);
  assert.deepEqual(auths.map((a) => [a.conn, a.token]), [[1, "good-1"], [1, "good-2"]]);
  assert.equal(client.state, "open");
});

test("table_renamed: a renamed event, and reconnects subscribe under the new name", { timeout: 20_000 }, async (t) => {
  const server = await scriptedServer(async (socket, conn) => {
    send(socket, { type: "welcome", protocol: 1, server: "scripted", epoch: EPOCH, seq: 10 });
    const sub = await request(socket, "subscribe");
    if (conn === 1) {
      send(socket, { type: "ack", id: sub.id, request: "subscribe", seq: 10, resumed: false });
      send(socket, { sub: "s", type: "table_renamed", schema: "Shop", table: "t2" });
      send(socket, { ...change(11, 1, "a"), commit: true });
      setTimeout(() => socket.terminate(), 50);
    } else {
      send(socket, { type: "ack", id: sub.id, request: "subscribe", seq: 11, resumed: true });
    }
  });
  t.after(() => server.close());
  const client = new PlankClient(server.url, { WebSocket, backoff: { initialMs: 20, maxMs: 50 } });
  t.after(() => client.close());
  const renamed = [];
  const sub = client.subscribeTable("s", { table: "public.t" }, { renamed: (r) => renamed.push(r) });
  await next(sub, "ack", (a) => a.resumed);
  assert.deepEqual(renamed, [{ sub: "s", schema: "Shop", table: "t2" }]);
  const subscribes = server.received.filter((r) => r.msg.type === "subscribe");
  assert.equal(subscribes.length, 2);
  assert.equal(subscribes[0].msg.table, "public.t");
  assert.equal(subscribes[1].msg.table, '"Shop".t2');
  assert.deepEqual(subscribes[1].msg.since, { epoch: EPOCH, seq: 11 });
});
