// Authentication in PlankClient, with an in-memory WebSocket and mocked timers (and Date):
// the auth exchange before the subscriptions, token refresh timing, closes 4001 and 4002,
// auth_required without a token, setToken(). No server needed.
import { test } from "node:test";
import assert from "node:assert/strict";
import { PlankClient, refreshDelay } from "../src/index.js";

const NOW = 1_800_000_000_000; // ms; the mocked clock's start
const EPOCH = "2000";

/** A WebSocket whose server side is driven by the test. */
function fakeSockets() {
  const sockets = [];
  class FakeSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 1; // OPEN at once: the client waits for the welcome anyway
      this.sent = [];
      this.onopen = this.onmessage = this.onclose = this.onerror = null;
      sockets.push(this);
    }
    send(data) { this.sent.push(JSON.parse(data)); }
    close() { this.readyState = 3; }
    // the server's side
    push(msg) { this.onmessage?.({ data: JSON.stringify(msg) }); }
    drop(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason, wasClean: true });
    }
    types() { return this.sent.map((m) => m.type); }
    last(type) { return this.sent.filter((m) => m.type === type).at(-1); }
  }
  return { FakeSocket, sockets };
}

const welcome = (extra = { auth: "required" }) => ({
  type: "welcome", protocol: 1, server: "fake", epoch: EPOCH, seq: 5, ...extra,
});
const authAck = (id, role, expires) => ({
  type: "ack", id, request: "auth", role, ...(expires ? { expires } : {}), seq: 5,
});
const nowSec = () => Math.floor(Date.now() / 1000);

// getToken's promise and the client's await on it settle in microtasks
const flush = async () => { for (let i = 0; i < 5; i++) await Promise.resolve(); };

const mocked = new WeakSet();
function setup(t, options = {}) {
  if (!mocked.has(t)) {
    t.mock.timers.enable({ apis: ["setTimeout", "setInterval", "Date"], now: NOW });
    mocked.add(t);
  }
  const { FakeSocket, sockets } = fakeSockets();
  const client = new PlankClient("ws://fake/ws", {
    WebSocket: FakeSocket, autoConnect: false, heartbeatMs: 0,
    backoff: { initialMs: 100, maxMs: 1600, jitter: "none" }, ...options,
  });
  const events = [];
  for (const name of ["connecting", "open", "auth", "closed", "reconnecting", "error"]) {
    client.on(name, (payload) => events.push([name, payload]));
  }
  t.after(() => client.close());
  return { client, sockets, events, named: (n) => events.filter(([e]) => e === n).map(([, p]) => p) };
}

test("refreshDelay: 80% of the remaining lifetime, at least 1 s before the expiry", () => {
  const now = 1_000_000_000_000;
  const exp = (s) => now / 1000 + s;
  assert.equal(refreshDelay(exp(60), now), 48_000);
  assert.equal(refreshDelay(exp(3600), now), 2_880_000);
  assert.equal(refreshDelay(exp(4), now), 3_000, "min(3.2 s, 4 s - 1 s)");
  assert.equal(refreshDelay(exp(3), now), 2_000);
  assert.equal(refreshDelay(exp(1), now), 0, "less than the lead left: now");
  assert.equal(refreshDelay(exp(-5), now), 0, "expired: now");
  assert.equal(refreshDelay(exp(100), now, { ratio: 0.5, minLeadMs: 60_000 }), 40_000);
  assert.equal(refreshDelay(exp(100), now, { ratio: 0.5 }), 50_000);
});

test("auth is sent after the welcome and acknowledged before any subscribe", async (t) => {
  const { client, sockets, named } = setup(t, { token: "T1" });
  client.subscribeTable("s", { table: "t" });
  client.connect();
  const ws = sockets[0];
  ws.push(welcome());
  await flush();
  assert.deepEqual(ws.sent, [{ type: "auth", id: ws.sent[0].id, token: "T1" }]);
  // subscriptions added meanwhile wait as well
  client.subscribeChannel("c", "chat");
  assert.deepEqual(ws.types(), ["auth"]);
  assert.equal(client.role, null);
  ws.push(authAck(ws.sent[0].id, "alice"));
  assert.deepEqual(ws.types(), ["auth", "subscribe", "subscribe"]);
  assert.equal(client.role, "alice");
  assert.equal(client.expires, null);
  assert.deepEqual(named("auth"), [{ role: "alice", expires: null, refreshed: false }]);
  assert.deepEqual(named("open")[0].auth, "required");
  // no expiry: nothing is refreshed
  t.mock.timers.tick(3_600_000);
  assert.deepEqual(ws.types(), ["auth", "subscribe", "subscribe"]);
});

test("getToken is called on every connect; an anonymous welcome is upgraded by the token", async (t) => {
  let calls = 0;
  const { client, sockets, named } = setup(t, { getToken: async () => `T${++calls}` });
  client.subscribeTable("s", { table: "t" });
  client.connect();
  sockets[0].push(welcome({ role: "anon" }));
  assert.equal(client.role, "anon", "the welcome's role");
  await flush();
  assert.equal(sockets[0].last("auth").token, "T1");
  assert.equal(sockets[0].last("subscribe"), undefined, "no subscribe before the ack");
  sockets[0].push(authAck(sockets[0].last("auth").id, "bob"));
  assert.equal(client.role, "bob");
  assert.ok(sockets[0].last("subscribe"));
  sockets[0].drop(1006);
  assert.equal(client.role, null);
  t.mock.timers.tick(100);
  assert.equal(sockets.length, 2);
  sockets[1].push(welcome());
  await flush();
  assert.deepEqual(sockets[1].types(), ["auth"]);
  assert.equal(sockets[1].last("auth").token, "T2");
  assert.equal(calls, 2);
  sockets[1].push(authAck(sockets[1].last("auth").id, "bob"));
  assert.deepEqual(sockets[1].types(), ["auth", "subscribe"]);
  assert.equal(named("auth").length, 2);
});

test("without a token, a welcome with auth required gives auth_required and no subscribe; setToken goes on", async (t) => {
  const { client, sockets, named } = setup(t);
  client.subscribeTable("s", { table: "t" });
  client.connect();
  sockets[0].push(welcome());
  await flush();
  assert.deepEqual(named("error").map((e) => e.code), ["auth_required"]);
  assert.deepEqual(sockets[0].sent, []);
  client.setToken("LATE");
  assert.deepEqual(sockets[0].sent.map((m) => [m.type, m.token]), [["auth", "LATE"]]);
  sockets[0].push(authAck(sockets[0].sent[0].id, "carol"));
  assert.deepEqual(sockets[0].types(), ["auth", "subscribe"]);
  // and without a token on an anonymous server, subscriptions go out at once
  const other = setup(t);
  other.client.subscribeTable("s", { table: "t" });
  other.client.connect();
  other.sockets[0].push(welcome({ role: "anon" }));
  assert.deepEqual(other.sockets[0].types(), ["subscribe"]);
  assert.equal(other.client.role, "anon");
  assert.deepEqual(other.named("auth"), []);
});

test("refresh: getToken at 80% of the lifetime, a fresh auth on the open connection", async (t) => {
  let calls = 0;
  const { client, sockets, named } = setup(t, { getToken: () => `T${++calls}` });
  client.subscribeTable("s", { table: "t" });
  client.connect();
  const ws = sockets[0];
  ws.push(welcome());
  await flush();
  ws.push(authAck(ws.last("auth").id, "alice", nowSec() + 100));
  assert.equal(client.expires, nowSec() + 100);
  t.mock.timers.tick(79_999);
  await flush();
  assert.equal(calls, 1, "not before 80 s");
  t.mock.timers.tick(1);
  await flush();
  assert.equal(calls, 2);
  const fresh = ws.last("auth");
  assert.equal(fresh.token, "T2");
  assert.deepEqual(ws.types(), ["auth", "subscribe", "auth"], "same connection, no resubscribe");
  // the server moves the expiry: the next refresh is planned from the new one
  ws.push(authAck(fresh.id, "alice", nowSec() + 10));
  assert.deepEqual(named("auth").map((a) => a.refreshed), [false, true]);
  t.mock.timers.tick(7_999);
  await flush();
  assert.equal(calls, 2);
  t.mock.timers.tick(1);
  await flush();
  assert.equal(calls, 3);
  // a short lifetime: at least 1 s before the expiry (3 s left: after 2 s, not 2.4 s)
  ws.push(authAck(ws.last("auth").id, "alice", nowSec() + 3));
  t.mock.timers.tick(1_999);
  await flush();
  assert.equal(calls, 3);
  t.mock.timers.tick(1);
  await flush();
  assert.equal(calls, 4);
  assert.equal(sockets.length, 1);
  assert.deepEqual(named("closed"), []);
});

test("refresh: role_mismatch is reported and the connection stays", async (t) => {
  const { client, sockets, named } = setup(t, { getToken: () => "T" });
  client.connect();
  const ws = sockets[0];
  ws.push(welcome());
  await flush();
  ws.push(authAck(ws.last("auth").id, "alice", nowSec() + 10));
  t.mock.timers.tick(8_000);
  await flush();
  const fresh = ws.last("auth");
  ws.push({ type: "error", id: fresh.id, code: "role_mismatch", message: "a fresh token must name the connection's role \"alice\"" });
  assert.deepEqual(named("error").map((e) => [e.code, e.request]), [["role_mismatch", "auth"]]);
  assert.equal(client.role, "alice");
  assert.equal(client.state, "open");
});

test("refresh: a far-away expiry does not overflow setTimeout", async (t) => {
  let calls = 0;
  const { client, sockets } = setup(t, { getToken: () => `T${++calls}` });
  client.connect();
  sockets[0].push(welcome());
  await flush();
  sockets[0].push(authAck(sockets[0].last("auth").id, "alice", nowSec() + 10 * 365 * 86_400));
  t.mock.timers.tick(1);
  await flush();
  t.mock.timers.tick(2 ** 31);
  await flush();
  assert.equal(calls, 1, "no refresh years ahead of the expiry");
});

test("refresh: a failing getToken is reported and retried while time is left", async (t) => {
  let calls = 0;
  const { client, sockets, named } = setup(t, {
    getToken: () => { if (++calls > 1) throw new Error("offline"); return "T1"; },
  });
  client.connect();
  sockets[0].push(welcome());
  await flush();
  sockets[0].push(authAck(sockets[0].last("auth").id, "alice", nowSec() + 100));
  t.mock.timers.tick(80_000); // 20 s left
  await flush();
  assert.equal(calls, 2);
  assert.deepEqual(named("error").map((e) => e.code), ["token_unavailable"]);
  t.mock.timers.tick(16_000); // 80% of 20 s: 4 s left
  await flush();
  assert.equal(calls, 3);
  t.mock.timers.tick(3_000); // min(3.2 s, 4 s - 1 s): 1 s left
  await flush();
  assert.equal(calls, 4);
  t.mock.timers.tick(60_000); // no more tries within the last second
  await flush();
  assert.equal(calls, 4);
  assert.equal(client.state, "open");
});

test("close 4001 with a fixed token: the server's error is reported and the client stops", async (t) => {
  const { client, sockets, named } = setup(t, { token: "BAD" });
  client.connect();
  sockets[0].push(welcome());
  await flush();
  const id = sockets[0].last("auth").id;
  sockets[0].push({ type: "error", id, code: "invalid_token", message: "token signature does not verify" });
  sockets[0].drop(4001, "authentication failed");
  assert.deepEqual(named("error").map((e) => [e.code, e.message]),
    [["invalid_token", "token signature does not verify"]], "reported once, with the server's code");
  assert.deepEqual(named("closed").map((c) => [c.code, c.willReconnect]), [[4001, false]]);
  t.mock.timers.tick(60_000);
  assert.equal(sockets.length, 1, "no reconnect");
  assert.equal(client.state, "closed");
  // a new token and connect() start it again
  client.setToken("GOOD");
  client.connect();
  assert.equal(sockets.length, 2);
  sockets[1].push(welcome());
  await flush();
  assert.equal(sockets[1].last("auth").token, "GOOD");
});

for (const [code, name] of [[4003, "disconnected"], [4004, "banned"]]) {
  test(`close ${code} is final: reported as ${name}, no reconnect even with getToken, connect() starts again`, async (t) => {
    const { client, sockets, named } = setup(t, { getToken: () => "GOOD" });
    client.connect();
    sockets[0].push(welcome());
    await flush();
    sockets[0].push(authAck(sockets[0].last("auth").id, "alice"));
    sockets[0].drop(code, "by an administrator");
    assert.deepEqual(named("error").map((e) => [e.code, e.closeCode]), [[name, code]]);
    assert.deepEqual(named("closed").map((c) => [c.code, c.willReconnect]), [[code, false]]);
    assert.deepEqual(named("reconnecting"), []);
    t.mock.timers.tick(60_000);
    assert.equal(sockets.length, 1, "no reconnect");
    assert.equal(client.state, "closed");
    client.connect();
    assert.equal(sockets.length, 2, "connect() opens a new connection");
  });
}

test("a close with another code (1001, going away) still reconnects", async (t) => {
  const { client, sockets, named } = setup(t, { getToken: () => "GOOD" });
  client.connect();
  sockets[0].push(welcome());
  await flush();
  sockets[0].drop(1001, "server shutting down");
  assert.deepEqual(named("closed").map((c) => [c.code, c.willReconnect]), [[1001, true]]);
  t.mock.timers.tick(60_000);
  assert.equal(sockets.length, 2, "reconnected");
});

test("close 4001 without a server error (auth timeout) is reported as auth_failed", async (t) => {
  const { client, sockets, named } = setup(t);
  client.connect();
  sockets[0].push(welcome());
  sockets[0].drop(4001, "authentication timeout");
  assert.deepEqual(named("error").map((e) => e.code), ["auth_required", "auth_failed"]);
  assert.match(named("error")[1].message, /authentication timeout/);
  t.mock.timers.tick(60_000);
  assert.equal(sockets.length, 1);
});

test("close 4001 with getToken: retried with growing backoff, never reset by the welcome", async (t) => {
  const { client, sockets, named } = setup(t, { getToken: () => "BAD" });
  client.connect();
  for (let i = 0; i < 6; i++) {
    const ws = sockets[i];
    ws.push(welcome());
    await flush();
    ws.push({ type: "error", id: ws.last("auth").id, code: "invalid_token", message: "bad signature" });
    ws.drop(4001, "authentication failed");
    const { delay } = named("reconnecting").at(-1);
    t.mock.timers.tick(delay);
  }
  assert.deepEqual(named("reconnecting").map((r) => r.delay), [100, 200, 400, 800, 1600, 1600]);
  assert.ok(named("closed").every((c) => c.code === 4001 && c.willReconnect));
  assert.equal(named("error").length, 6);
  // a good token at last: the counter goes back to 0
  const ws = sockets[6];
  ws.push(welcome());
  await flush();
  ws.push(authAck(ws.last("auth").id, "alice"));
  assert.equal(client.attempt, 0);
});

test("close 4002: with getToken, reconnect with a fresh token; without, report and stop", async (t) => {
  let calls = 0;
  const a = setup(t, { getToken: () => `T${++calls}` });
  a.client.subscribeTable("s", { table: "t" });
  a.client.connect();
  a.sockets[0].push(welcome());
  await flush();
  a.sockets[0].push(authAck(a.sockets[0].last("auth").id, "alice", nowSec() + 60));
  a.sockets[0].push({ type: "ack", id: "s", request: "subscribe", seq: 5, resumed: false });
  a.sockets[0].drop(4002, "token expired");
  assert.deepEqual(a.named("error"), []);
  assert.equal(a.named("closed")[0].willReconnect, true);
  t.mock.timers.tick(a.named("reconnecting")[0].delay);
  a.sockets[1].push(welcome());
  await flush();
  assert.equal(a.sockets[1].last("auth").token, "T2");
  a.sockets[1].push(authAck(a.sockets[1].last("auth").id, "alice", nowSec() + 60));
  assert.deepEqual(a.sockets[1].types(), ["auth", "subscribe"]);
  assert.deepEqual(a.sockets[1].last("subscribe").since, { epoch: EPOCH, seq: 5 }, "resumes where it was");

  const b = setup(t, { token: "T" });
  b.client.connect();
  b.sockets[0].push(welcome());
  await flush();
  b.sockets[0].push(authAck(b.sockets[0].last("auth").id, "alice", nowSec() + 60));
  b.sockets[0].drop(4002, "token expired");
  assert.deepEqual(b.named("error").map((e) => [e.code, e.closeCode]), [["token_expired", 4002]]);
  assert.equal(b.named("closed")[0].willReconnect, false);
  t.mock.timers.tick(60_000);
  assert.equal(b.sockets.length, 1);
});

test("a getToken that fails on connect drops the attempt and retries with backoff", async (t) => {
  let calls = 0;
  const { client, sockets, named } = setup(t, {
    getToken: async () => { if (++calls === 1) throw new Error("auth provider down"); return "T"; },
  });
  client.connect();
  sockets[0].push(welcome());
  await flush();
  assert.deepEqual(named("error").map((e) => e.code), ["token_unavailable"]);
  assert.deepEqual(sockets[0].sent, []);
  assert.equal(named("closed")[0].willReconnect, true);
  t.mock.timers.tick(named("reconnecting")[0].delay);
  sockets[1].push(welcome());
  await flush();
  assert.equal(sockets[1].last("auth").token, "T");
});

test("no auth ack within connectTimeoutMs: the attempt is dropped", async (t) => {
  const { client, sockets, named } = setup(t, { token: "T", connectTimeoutMs: 1_000 });
  client.connect();
  t.mock.timers.tick(900);
  sockets[0].push(welcome());
  await flush();
  t.mock.timers.tick(999);
  assert.deepEqual(named("closed"), []);
  t.mock.timers.tick(1);
  assert.equal(named("closed")[0].code, 4000);
  assert.match(named("closed")[0].reason, /auth ack/);
});
