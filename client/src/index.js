// plank-client: a WebSocket client for Plank (docs/PROTOCOL.md) for browsers and Node.
//
// - reconnects by itself, with exponential backoff and full or half jitter;
// - detects dead connections with an application-level heartbeat ({"type":"ping"});
// - resubscribes everything on every (re)connect with `since: {epoch, seq}`, so the
//   server replays what was missed, or says `resync_required` (and sends a fresh
//   snapshot when one was asked for);
// - groups a transaction's changes into one `commit` event;
// - never delivers a message twice: within one epoch a message whose seq is at or below
//   the last one delivered for that subscription is dropped.
//
// No dependencies. Browsers and Node >= 22 have a global WebSocket; on Node 20 pass one
// (for example the `ws` package's) as the `WebSocket` option.

/** Protocol version this client speaks. */
export const PROTOCOL_VERSION = 1;

const DEFAULTS = Object.freeze({
  backoff: Object.freeze({ initialMs: 250, maxMs: 10_000, jitter: "half", factor: 2 }),
  heartbeatMs: 15_000,
  heartbeatTimeoutMs: 10_000,
  connectTimeoutMs: 10_000,
});

const OPEN = 1; // WebSocket.OPEN, the same in every implementation

// ---------------------------------------------------------------------------------------
// Pure parts (unit-tested without a server)
// ---------------------------------------------------------------------------------------

/**
 * Delay in milliseconds before reconnect attempt `attempt` (0 for the first retry).
 * The ceiling is min(maxMs, initialMs * factor^attempt); "full" jitter picks uniformly in
 * [0, ceiling], "half" in [ceiling/2, ceiling], "none" returns the ceiling.
 * @param {number} attempt
 * @param {{initialMs?: number, maxMs?: number, jitter?: "full"|"half"|"none", factor?: number}} [options]
 * @param {() => number} [random] returns a number in [0, 1)
 * @returns {number}
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const { initialMs, maxMs, jitter, factor } = { ...DEFAULTS.backoff, ...options };
  const n = Math.max(0, Math.floor(attempt) || 0);
  // Math.min before the power would overflow into Infinity only for absurd attempts;
  // cap the exponent so the ceiling stays finite.
  const ceiling = Math.min(maxMs, initialMs * factor ** Math.min(n, 64));
  switch (jitter) {
    case "full":
      return Math.round(random() * ceiling);
    case "none":
      return Math.round(ceiling);
    case "half":
    default:
      return Math.round(ceiling / 2 + random() * (ceiling / 2));
  }
}

/**
 * The WebSocket URL for a Plank page address: http://host:port/ -> ws://host:port/ws,
 * https -> wss. A ws:// or wss:// URL is returned unchanged.
 * @param {string | URL} base
 * @param {string} [path]
 * @returns {string}
 */
export function toWebSocketUrl(base, path = "/ws") {
  const u = new URL(String(base));
  if (u.protocol === "ws:" || u.protocol === "wss:") return u.toString();
  if (u.protocol !== "http:" && u.protocol !== "https:") {
    throw new TypeError(`not an http(s) or ws(s) URL: ${base}`);
  }
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  u.pathname = path;
  u.search = "";
  u.hash = "";
  return u.toString();
}

/**
 * Per-subscription position and transaction state: dedupe, commit grouping, resync.
 * Feed it the server's messages for one subscription with `handle()`; it returns the
 * events to deliver, in order, as [name, payload] pairs. No I/O, no timers.
 */
export class SubscriptionState {
  constructor() {
    /** Epoch of `seq`, or null before the first acknowledgement. */
    this.epoch = null;
    /** Last seq delivered (or covered by a snapshot/ack) in `epoch`, or null. */
    this.seq = null;
    /** Seq of the last commit delivered in `epoch`, or null. */
    this.commitSeq = null;
    /** Change messages of the transaction in progress (delivered as `change`, awaiting `commit`). */
    this.pending = [];
    /** Per subscribe request: what happened before its ack. */
    this.cycle = null;
  }

  /**
   * Where to resume from: the last position seen, or, in the middle of a transaction,
   * just before its first change, so that the server replays the transaction's commit.
   * @returns {{epoch: string, seq: number} | null}
   */
  since() {
    if (this.epoch === null || this.seq === null) return null;
    let seq = this.seq;
    if (this.pending.length > 0) seq = Math.min(seq, this.pending[0].seq - 1);
    return { epoch: this.epoch, seq: Math.max(0, seq) };
  }

  /** A subscribe request is being sent (with `since` or not). */
  begin(since) {
    this.cycle = { since, resync: false, snapshot: false };
  }

  /** true when `msg` was already delivered (same epoch, seq at or below the last one). */
  isDuplicate(msg) {
    return msg.epoch === this.epoch && this.seq !== null &&
      typeof msg.seq === "number" && msg.seq <= this.seq;
  }

  #reset(epoch) {
    this.epoch = epoch ?? null;
    this.seq = null;
    this.commitSeq = null;
    this.pending = [];
  }

  // The transaction in progress ended without a commit marker (a server that sends none,
  // or a change of another transaction arrived): deliver what we have as a commit.
  #flush(out) {
    if (this.pending.length === 0) return;
    const last = this.pending[this.pending.length - 1];
    out.push(["commit", {
      sub: last.sub, type: "commit", seq: last.seq, epoch: last.epoch,
      xid: last.change?.xid ?? null, changes: this.pending, synthetic: true,
    }]);
    this.commitSeq = last.seq;
    this.pending = [];
  }

  /**
   * Process one message addressed to this subscription.
   * @param {any} msg a parsed server message (`change`, `commit`, `notify`, `snapshot`,
   *   `resync_required`, or an `ack` of a subscribe)
   * @param {string | null} [connectionEpoch] the epoch from this connection's welcome
   * @returns {Array<[string, any]>} events to deliver
   */
  handle(msg, connectionEpoch = null) {
    const out = [];
    switch (msg.type) {
      case "change": {
        if (this.isDuplicate(msg)) return out;
        if (msg.epoch !== this.epoch) this.#reset(msg.epoch);
        const xid = msg.change?.xid;
        if (this.pending.length > 0 && this.pending[0].change?.xid !== xid) this.#flush(out);
        this.seq = msg.seq;
        this.pending.push(msg);
        out.push(["change", msg]);
        return out;
      }
      case "commit": {
        if (msg.epoch !== this.epoch) {
          this.#reset(msg.epoch);
          this.commitSeq = msg.seq;
          return out; // a commit of a transaction we saw nothing of
        }
        if (this.commitSeq !== null && msg.seq <= this.commitSeq) return out;
        if (this.pending.length > 0 && this.pending[0].change?.xid !== msg.xid) this.#flush(out);
        this.commitSeq = msg.seq;
        if (this.seq === null || msg.seq > this.seq) this.seq = msg.seq;
        if (this.pending.length === 0) return out;
        const changes = this.pending;
        this.pending = [];
        out.push(["commit", { ...msg, changes }]);
        return out;
      }
      case "notify": {
        if (this.isDuplicate(msg)) return out;
        if (msg.epoch !== this.epoch) this.#reset(msg.epoch);
        this.seq = msg.seq;
        out.push(["notify", msg]);
        return out;
      }
      case "snapshot": {
        // The snapshot replaces whatever the application had: it contains every change up
        // to its seq, and changes after it follow.
        this.#reset(msg.epoch);
        this.seq = msg.seq;
        this.commitSeq = msg.seq;
        if (this.cycle) this.cycle.snapshot = true;
        out.push(["snapshot", msg]);
        return out;
      }
      case "resync_required": {
        this.#reset(msg.epoch);
        if (this.cycle) this.cycle.resync = true;
        out.push(["resync", {
          sub: msg.sub, reason: msg.reason, epoch: msg.epoch, seq: msg.seq,
          snapshot: false, // filled in by the client: whether a snapshot follows
        }]);
        return out;
      }
      case "ack": {
        const cycle = this.cycle;
        this.cycle = null;
        const epoch = connectionEpoch ?? this.epoch;
        // A since the server did not honour without saying resync_required (a server
        // older than resume): the application may have missed events.
        if (cycle?.since && msg.resumed !== true && !cycle.resync && !cycle.snapshot) {
          this.#reset(epoch);
          out.push(["resync", {
            sub: msg.id, reason: "not_resumed", epoch, seq: msg.seq, snapshot: false,
          }]);
        }
        if (epoch !== this.epoch) this.#reset(epoch);
        if (typeof msg.seq === "number" && (this.seq === null || msg.seq > this.seq)) {
          this.seq = msg.seq;
        }
        out.push(["ack", {
          sub: msg.id, seq: msg.seq, epoch, resumed: msg.resumed === true,
          since: cycle?.since ?? null,
        }]);
        return out;
      }
      default:
        return out;
    }
  }
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

class Emitter {
  #listeners = new Map();

  /** Add a listener; returns a function that removes it. */
  on(event, fn) {
    if (typeof fn !== "function") throw new TypeError("listener must be a function");
    let set = this.#listeners.get(event);
    if (!set) this.#listeners.set(event, (set = new Set()));
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  /** Like on(), for the next event only. */
  once(event, fn) {
    const off = this.on(event, (payload) => { off(); fn(payload); });
    return off;
  }

  listenerCount(event) {
    return this.#listeners.get(event)?.size ?? 0;
  }

  /** Call the listeners; returns the errors they threw. */
  _emit(event, payload) {
    const set = this.#listeners.get(event);
    if (!set || set.size === 0) return [];
    const errors = [];
    for (const fn of [...set]) {
      try {
        fn(payload);
      } catch (error) {
        errors.push(error);
      }
    }
    return errors;
  }
}

const SUB_EVENTS = ["ack", "change", "commit", "notify", "snapshot", "resync", "error"];

/** One table or channel subscription of a PlankClient. */
export class Subscription extends Emitter {
  /** @internal */
  constructor(client, id, request, handlers) {
    super();
    this.client = client;
    this.id = id;
    /** "table" or "channel" */
    this.kind = request.table !== undefined ? "table" : "channel";
    /** The subscribe request sent on every (re)connect, without `since`. */
    this.request = request;
    /** "pending" (not acknowledged on the current connection), "active", "error" or "closed" */
    this.state = "pending";
    /** @internal */
    this._state = new SubscriptionState();
    for (const name of SUB_EVENTS) {
      if (handlers && typeof handlers[name] === "function") this.on(name, handlers[name]);
    }
  }

  /** The epoch of the last position delivered, or null. */
  get epoch() { return this._state.epoch; }

  /** The last seq delivered (or covered by a snapshot or an ack) in `epoch`, or null. */
  get seq() { return this._state.seq; }

  unsubscribe() {
    return this.client.unsubscribe(this.id);
  }
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

function decode(data) {
  if (typeof data === "string") return data;
  if (data instanceof ArrayBuffer || ArrayBuffer.isView(data)) return new TextDecoder().decode(data);
  return String(data);
}

function validId(id) {
  if (typeof id !== "string" || id.length === 0 || new TextEncoder().encode(id).length > 64) {
    throw new TypeError("a subscription id is a string of 1 to 64 bytes");
  }
}

/**
 * A connection to a Plank server that survives disconnects.
 *
 * Client events: `connecting` ({url, attempt}), `open` (the welcome: {epoch, seq,
 * protocol, server}), `closed` ({code, reason, wasClean, willReconnect}), `reconnecting`
 * ({delay, attempt}), `message` (every parsed message), `error` ({code, message, ...}).
 */
export class PlankClient extends Emitter {
  /**
   * @param {string | URL} url ws://host:port/ws (an http(s) page address is turned into
   *   its /ws WebSocket URL)
   * @param {object} [options]
   * @param {any} [options.WebSocket] WebSocket constructor (default: the global one)
   * @param {{initialMs?: number, maxMs?: number, jitter?: "full"|"half"|"none", factor?: number}} [options.backoff]
   * @param {number} [options.heartbeatMs] ping interval, 0 to disable (default 15000)
   * @param {number} [options.heartbeatTimeoutMs] a ping unanswered this long means a
   *   dead connection (default 10000)
   * @param {number} [options.connectTimeoutMs] from opening the socket to the server's
   *   welcome (default 10000)
   * @param {boolean} [options.autoConnect] connect right away (in a microtask, so that
   *   listeners added just after construction see every event; default true)
   * @param {() => number} [options.random] random source for jitter (tests)
   */
  constructor(url, options = {}) {
    super();
    const u = String(url);
    this.url = /^https?:/i.test(u) ? toWebSocketUrl(u) : u;
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== "function") {
      throw new TypeError("no WebSocket implementation: pass one as the WebSocket option");
    }
    this.backoff = { ...DEFAULTS.backoff, ...(options.backoff || {}) };
    this.heartbeatMs = options.heartbeatMs ?? DEFAULTS.heartbeatMs;
    this.heartbeatTimeoutMs = options.heartbeatTimeoutMs ?? DEFAULTS.heartbeatTimeoutMs;
    this.connectTimeoutMs = options.connectTimeoutMs ?? DEFAULTS.connectTimeoutMs;
    this.random = options.random ?? Math.random;

    /** "idle" | "connecting" | "open" | "closed" | "reconnecting" */
    this.state = "idle";
    /** The current connection's epoch and the last seq the server reported, or null. */
    this.epoch = null;
    this.seq = null;
    /** Number of failed attempts since the last welcome. */
    this.attempt = 0;

    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this._ws = null;
    this._welcomed = false;
    this._unsubPending = new Map(); // id -> number of unsubscribe acks awaited
    this._timers = { retry: null, connect: null, heartbeat: null, heartbeatDeadline: null };
    this._pingCounter = 0;
    this._stopped = false;

    if (options.autoConnect !== false) queueMicrotask(() => { if (this.state === "idle") this.connect(); });
  }

  // --- public API ------------------------------------------------------------------------

  /** Connect now (when idle, or cancel a pending retry and connect at once). */
  connect() {
    this._stopped = false;
    if (this._ws) return;
    this.#clearTimer("retry");
    this.#open();
  }

  /** Close the connection for good: no reconnect until connect() is called again. */
  close(code = 1000, reason = "client closed") {
    this._stopped = true;
    this.#clearTimer("retry");
    const ws = this._ws;
    if (ws) {
      this.#teardown(ws);
      try { ws.close(code, reason); } catch { /* already closing */ }
      this.#closed({ code, reason, wasClean: true });
    } else if (this.state !== "closed" && this.state !== "idle") {
      this.#closed({ code, reason, wasClean: true }); // a retry was pending
    }
  }

  /**
   * Subscribe to a table's changes.
   * @param {string} id the subscription's name (1 to 64 bytes, unique in this client)
   * @param {{table: string, ops?: string[], filter?: object, snapshot?: boolean}} spec
   * @param {object} [handlers] {ack, change, commit, snapshot, resync, error}
   * @returns {Subscription}
   */
  subscribeTable(id, spec, handlers = {}) {
    validId(id);
    if (!spec || typeof spec.table !== "string") throw new TypeError("spec.table is required");
    const request = { type: "subscribe", id, table: spec.table };
    if (spec.ops !== undefined) request.ops = spec.ops;
    if (spec.filter !== undefined) request.filter = spec.filter;
    if (spec.snapshot !== undefined) request.snapshot = Boolean(spec.snapshot);
    return this.#add(new Subscription(this, id, request, handlers));
  }

  /**
   * Subscribe to a NOTIFY channel.
   * @param {string} id
   * @param {string} channel
   * @param {object} [handlers] {ack, notify, resync, error}
   * @returns {Subscription}
   */
  subscribeChannel(id, channel, handlers = {}) {
    validId(id);
    if (typeof channel !== "string") throw new TypeError("channel must be a string");
    return this.#add(new Subscription(this, id, { type: "subscribe", id, channel }, handlers));
  }

  /** Drop a subscription; returns false when there was none with this id. */
  unsubscribe(id) {
    const sub = this.subscriptions.get(id);
    if (!sub) return false;
    this.subscriptions.delete(id);
    sub.state = "closed";
    if (sub._sent && this.#isOpen()) {
      // Messages for this id that are still on their way are dropped until the ack.
      this._unsubPending.set(id, (this._unsubPending.get(id) || 0) + 1);
      this.#send({ type: "unsubscribe", id });
    }
    sub._sent = false;
    return true;
  }

  /** Send a ping now (the heartbeat does this by itself). */
  ping() {
    return this.#ping();
  }

  // --- internals -------------------------------------------------------------------------

  #add(sub) {
    if (this.subscriptions.has(sub.id)) throw new Error(`subscription "${sub.id}" exists`);
    this.subscriptions.set(sub.id, sub);
    sub._sent = false;
    if (this.#isOpen() && this._welcomed) this.#sendSubscribe(sub);
    return sub;
  }

  #isOpen() {
    return this._ws !== null && this._ws.readyState === OPEN;
  }

  #send(msg) {
    if (!this.#isOpen()) return false;
    try {
      this._ws.send(JSON.stringify(msg));
      return true;
    } catch (error) {
      this.#report({ code: "send_failed", message: String(error?.message ?? error), error });
      return false;
    }
  }

  #sendSubscribe(sub) {
    const since = sub._state.since();
    const msg = since ? { ...sub.request, since } : { ...sub.request };
    sub._state.begin(since);
    sub.state = "pending";
    sub._sent = this.#send(msg);
  }

  #setState(state, payload) {
    this.state = state;
    this.#emit(state, payload);
  }

  #emit(event, payload, target = this) {
    const errors = target._emit(event, payload);
    for (const error of errors) this.#report({ code: "handler_error", message: `${event} handler threw: ${error?.message ?? error}`, error });
  }

  #report(err) {
    if (this.listenerCount("error") > 0) {
      const errors = this._emit("error", err);
      if (errors.length) console.error("plank-client: error handler threw", errors[0]);
    } else if (typeof console !== "undefined") {
      console.error("plank-client:", err.message, err.error ?? "");
    }
  }

  #clearTimer(name) {
    const t = this._timers[name];
    if (t !== null) {
      clearTimeout(t);
      clearInterval(t);
      this._timers[name] = null;
    }
  }

  #open() {
    this.#setState("connecting", { url: this.url, attempt: this.attempt });
    let ws;
    try {
      ws = new this.WebSocket(this.url);
    } catch (error) {
      this.#report({ code: "connect_failed", message: `cannot open ${this.url}: ${error?.message ?? error}`, error });
      this.#closed({ code: 1006, reason: String(error?.message ?? error), wasClean: false });
      return;
    }
    this._ws = ws;
    this._welcomed = false;
    if ("binaryType" in ws) ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => { if (this._ws === ws) this.#onMessage(event); };
    ws.onclose = (event) => {
      if (this._ws !== ws) return;
      this.#teardown(ws);
      this.#closed({ code: event?.code ?? 1006, reason: event?.reason ?? "", wasClean: Boolean(event?.wasClean) });
    };
    ws.onerror = () => {
      // A close event follows an error; nothing to do until then.
    };
    this._timers.connect = setTimeout(() => {
      if (this._ws === ws && !this._welcomed) this.#dead(ws, "no welcome within connectTimeoutMs");
    }, this.connectTimeoutMs);
  }

  // Stop listening to `ws` and clear its timers; the socket itself is closed by the caller.
  #teardown(ws) {
    ws.onmessage = null;
    ws.onclose = null;
    // not null: the ws package throws an 'error' event nobody listens to (for example
    // when a socket still connecting is closed)
    ws.onerror = () => {};
    ws.onopen = null;
    if (this._ws === ws) this._ws = null;
    this._welcomed = false;
    this.#clearTimer("connect");
    this.#clearTimer("heartbeat");
    this.#clearTimer("heartbeatDeadline");
    this._unsubPending.clear();
    for (const sub of this.subscriptions.values()) {
      sub._sent = false;
      if (sub.state === "active") sub.state = "pending";
      sub._state.cycle = null;
    }
  }

  // The connection is unusable (no pong, no welcome): drop it at once without waiting for
  // a closing handshake that may never come, then reconnect.
  #dead(ws, reason) {
    this.#teardown(ws);
    try {
      if (typeof ws.terminate === "function") ws.terminate(); // the ws package
      else ws.close(4000, reason.slice(0, 120));
    } catch { /* ignore */ }
    this.#closed({ code: 4000, reason, wasClean: false });
  }

  #closed(info) {
    this.#setState("closed", { ...info, willReconnect: !this._stopped });
    if (this._stopped || this._ws) return; // close() or connect() called by a handler
    const delay = backoffDelay(this.attempt, this.backoff, this.random);
    const attempt = ++this.attempt;
    this.#setState("reconnecting", { delay, attempt });
    this._timers.retry = setTimeout(() => {
      this._timers.retry = null;
      if (!this._stopped && !this._ws) this.#open();
    }, delay);
  }

  #ping() {
    if (!this.#isOpen()) return false;
    const id = `ping-${++this._pingCounter}`;
    if (!this.#send({ type: "ping", id })) return false;
    if (this._timers.heartbeatDeadline === null && this.heartbeatTimeoutMs > 0) {
      const ws = this._ws;
      this._timers.heartbeatDeadline = setTimeout(() => {
        this._timers.heartbeatDeadline = null;
        if (this._ws === ws) this.#dead(ws, `no reply to ping within ${this.heartbeatTimeoutMs} ms`);
      }, this.heartbeatTimeoutMs);
    }
    return true;
  }

  #onMessage(event) {
    // Anything from the server proves the connection alive.
    this.#clearTimer("heartbeatDeadline");
    let msg;
    try {
      msg = JSON.parse(decode(event.data));
    } catch {
      this.#report({ code: "malformed_message", message: "the server sent a message that is not JSON" });
      return;
    }
    if (!msg || typeof msg !== "object") return;
    this.#emit("message", msg);
    if (this._welcomed && typeof msg.seq === "number" && (msg.epoch === undefined || msg.epoch === this.epoch)) {
      // the last seq the server reported in this connection's epoch (pongs, acks, pushes)
      if (this.seq === null || msg.seq > this.seq) this.seq = msg.seq;
    }

    switch (msg.type) {
      case "welcome":
        this.#onWelcome(msg);
        return;
      case "pong":
        return;
      case "ack":
        this.#onAck(msg);
        return;
      case "error":
        this.#onError(msg);
        return;
      case "change":
      case "commit":
      case "notify":
      case "snapshot":
      case "resync_required":
        this.#onPush(msg);
        return;
      default:
        return; // a newer server may send more
    }
  }

  #onWelcome(msg) {
    this._welcomed = true;
    this.#clearTimer("connect");
    this.attempt = 0;
    this.epoch = msg.epoch ?? null;
    this.seq = typeof msg.seq === "number" ? msg.seq : null;
    if (msg.protocol !== undefined && msg.protocol !== PROTOCOL_VERSION) {
      this.#report({ code: "protocol_version", message: `server speaks protocol ${msg.protocol}, this client ${PROTOCOL_VERSION}` });
    }
    if (this.heartbeatMs > 0) {
      this._timers.heartbeat = setInterval(() => this.#ping(), this.heartbeatMs);
    }
    this.#setState("open", { epoch: msg.epoch, seq: msg.seq, protocol: msg.protocol, server: msg.server });
    if (!this.#isOpen()) return; // an open handler closed us
    for (const sub of this.subscriptions.values()) this.#sendSubscribe(sub);
  }

  #onAck(msg) {
    if (msg.request === "unsubscribe") {
      const n = this._unsubPending.get(msg.id);
      if (n !== undefined) {
        if (n <= 1) this._unsubPending.delete(msg.id);
        else this._unsubPending.set(msg.id, n - 1);
      }
      return;
    }
    if (msg.request !== "subscribe") return;
    const sub = this.#target(msg.id);
    if (!sub) return;
    sub.state = "active";
    this.#deliver(sub, sub._state.handle(msg, this.epoch));
  }

  #onError(msg) {
    const sub = msg.id !== undefined ? this.#target(msg.id) : undefined;
    const err = { code: msg.code, message: msg.message, id: msg.id };
    if (sub && sub._state.cycle) {
      // the subscribe request failed
      sub.state = "error";
      sub._state.cycle = null;
      sub._sent = false;
      if (sub.listenerCount("error") > 0) this.#emit("error", err, sub);
      else this.#report(err);
      return;
    }
    if (sub && sub.listenerCount("error") > 0) this.#emit("error", err, sub);
    else this.#report(err);
  }

  #target(id) {
    if (typeof id !== "string" || this._unsubPending.has(id)) return undefined;
    const sub = this.subscriptions.get(id);
    return sub && sub._sent ? sub : undefined;
  }

  #onPush(msg) {
    const sub = this.#target(msg.sub);
    if (!sub) return;
    const events = sub._state.handle(msg, this.epoch);
    if (msg.type === "resync_required") {
      for (const [, payload] of events) payload.snapshot = sub.request.snapshot === true;
    }
    this.#deliver(sub, events);
  }

  #deliver(sub, events) {
    for (const [name, payload] of events) {
      if (this.subscriptions.get(sub.id) !== sub) return; // unsubscribed by a handler
      this.#emit(name, payload, sub);
    }
  }
}

export default PlankClient;
