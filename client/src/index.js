// @plank-db/client: a WebSocket client for Plank (docs/PROTOCOL.md) for browsers and Node.
//
// - reconnects by itself, with exponential backoff and full or half jitter;
// - detects dead connections with an application-level heartbeat ({"type":"ping"});
// - resubscribes everything on every (re)connect with `since: {epoch, seq}`, so the
//   server replays what was missed, or says `resync_required` (and sends a fresh
//   snapshot when one was asked for);
// - groups a transaction's changes into one `commit` event;
// - never delivers a message twice: within one epoch a message whose seq is at or below
//   the last one delivered for that subscription is dropped;
// - authenticates with a JWT (`token`, or `getToken` called on every connect) after the
//   welcome and before subscribing, refreshes the token on the open connection before it
//   expires, and does not hammer a server that refuses its token (close 4001);
// - stops for good when an administrator disconnects it (close 4003), a ban refuses it
//   (close 4004) or its role was dropped (close 4005).
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
  tokenRefresh: Object.freeze({ ratio: 0.8, minLeadMs: 1_000 }),
});

// setTimeout fires at once for delays beyond 2^31 - 1 ms (about 24.8 days).
const MAX_TIMER_MS = 2 ** 31 - 1;

const OPEN = 1; // WebSocket.OPEN, the same in every implementation

/**
 * Close codes after which the client does not reconnect (docs/PROTOCOL.md): 4003, closed
 * by plank.disconnect(); 4004, refused by a ban of plank.disconnect(); 4005, its role was
 * dropped or may no longer be used by clients.
 */
export const FINAL_CLOSE_CODES = Object.freeze(new Set([4003, 4004, 4005]));

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
 * Milliseconds from `now` until a token expiring at `expires` should be refreshed:
 * `ratio` of the remaining lifetime, but at least `minLeadMs` before the expiry (0 when
 * that moment has passed already).
 * @param {number} expires the token's expiry, in seconds since the Unix epoch (the `exp`
 *   claim, as the server's auth ack reports it)
 * @param {number} [now] milliseconds since the Unix epoch
 * @param {{ratio?: number, minLeadMs?: number}} [options] default {ratio: 0.8, minLeadMs: 1000}
 * @returns {number}
 */
export function refreshDelay(expires, now = Date.now(), options = {}) {
  const { ratio, minLeadMs } = { ...DEFAULTS.tokenRefresh, ...options };
  const remaining = expires * 1000 - now;
  if (!(remaining > 0)) return 0;
  return Math.max(0, Math.round(Math.min(remaining * ratio, remaining - minLeadMs)));
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
        // the last change of a transaction closes it itself: "commit": true stands for a
        // commit marker with the same seq (docs/PROTOCOL.md, "commit")
        if (msg.commit === true) {
          const commit = { sub: msg.sub, type: "commit", seq: msg.seq, epoch: msg.epoch, xid: xid ?? null };
          out.push(...this.handle(commit, connectionEpoch));
        }
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

const SUB_EVENTS = ["ack", "change", "commit", "notify", "snapshot", "resync", "renamed", "error"];

// A name as a part of a qualified name the server reads with PostgreSQL's rules:
// quoted unless it is a lower-case identifier.
function quoteIdent(name) {
  return /^[a-z_][a-z0-9_$]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

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
 * protocol, server, role, auth}), `auth` ({role, expires, refreshed}), `closed` ({code,
 * reason, wasClean, willReconnect}), `reconnecting` ({delay, attempt}), `message` (every
 * parsed message), `error` ({code, message, ...}).
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
   * @param {string} [options.token] a JWT sent in an `auth` message after every welcome
   * @param {() => (string | null | undefined | Promise<string | null | undefined>)} [options.getToken]
   *   called for a token on every (re)connect and to refresh it before it expires (takes
   *   precedence over `token`); null or undefined: connect without a token
   * @param {{ratio?: number, minLeadMs?: number}} [options.tokenRefresh] when to refresh
   *   (default: at 80% of the remaining lifetime, at least 1000 ms before the expiry)
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
    if (options.token != null && typeof options.token !== "string") {
      throw new TypeError("the token option must be a string");
    }
    if (options.getToken != null && typeof options.getToken !== "function") {
      throw new TypeError("the getToken option must be a function");
    }
    /** The token sent on connect when there is no getToken (see setToken()). */
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.tokenRefresh = { ...DEFAULTS.tokenRefresh, ...(options.tokenRefresh || {}) };

    /** "idle" | "connecting" | "open" | "closed" | "reconnecting" */
    this.state = "idle";
    /** The current connection's epoch and the last seq the server reported, or null. */
    this.epoch = null;
    this.seq = null;
    /** The role the current connection acts as (from the welcome or the auth ack), or null. */
    this.role = null;
    /** The current token's expiry (seconds since the Unix epoch, from the auth ack), or null. */
    this.expires = null;
    /** Number of failed attempts since the last connection that became ready. */
    this.attempt = 0;

    /** @type {Map<string, Subscription>} */
    this.subscriptions = new Map();
    this._ws = null;
    this._welcomed = false;
    this._ready = false; // welcomed and authenticated (or no token needed): subscriptions go out
    this._authRequired = false; // the welcome said "auth": "required"
    this._waitingForToken = false; // auth required but no token: waiting for setToken()
    this._authPending = new Map(); // auth request id -> {initial}
    this._authCounter = 0;
    this._authError = null; // an auth error reported on the current connection
    this._unsubPending = new Map(); // id -> number of unsubscribe acks awaited
    this._timers = {
      retry: null, connect: null, heartbeat: null, heartbeatDeadline: null, refresh: null,
    };
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
   * @param {object} [handlers] {ack, change, commit, snapshot, resync, renamed, error}
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

  /**
   * Replace the token (null: none). It is used on the next connects when there is no
   * getToken, and sent at once on an open connection: as a fresh token on an
   * authenticated one, or as the first on one that waits for a token (auth_required).
   * After a refused token stopped the client, call connect() as well.
   * @param {string | null} token
   */
  setToken(token) {
    if (token != null && typeof token !== "string") throw new TypeError("a token is a string");
    this.token = token ?? null;
    if (!token || !this.#isOpen() || !this._welcomed) return;
    if (this._waitingForToken) {
      this._waitingForToken = false;
      this.#armTimer("connect", this._ws, "no auth ack within connectTimeoutMs");
      this.#authenticate(this._ws, true, token);
    } else if (this._ready) {
      this.#authenticate(this._ws, false, token);
    }
  }

  // --- internals -------------------------------------------------------------------------

  #add(sub) {
    if (this.subscriptions.has(sub.id)) throw new Error(`subscription "${sub.id}" exists`);
    this.subscriptions.set(sub.id, sub);
    sub._sent = false;
    if (this.#isOpen() && this._ready) this.#sendSubscribe(sub);
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
      if (errors.length) console.error("@plank-db/client: error handler threw", errors[0]);
    } else if (typeof console !== "undefined") {
      console.error("@plank-db/client:", err.message, err.error ?? "");
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
    this._authError = null;
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
    this.#armTimer("connect", ws, "no welcome within connectTimeoutMs");
  }

  // The connect timer: the welcome, then the auth ack, must come within connectTimeoutMs.
  #armTimer(name, ws, reason) {
    this.#clearTimer(name);
    this._timers[name] = setTimeout(() => {
      this._timers[name] = null;
      if (this._ws === ws && !this._ready) this.#dead(ws, reason);
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
    this._ready = false;
    this._authRequired = false;
    this._waitingForToken = false;
    this._authPending.clear();
    this.role = null;
    this.expires = null;
    this.#clearTimer("connect");
    this.#clearTimer("heartbeat");
    this.#clearTimer("heartbeatDeadline");
    this.#clearTimer("refresh");
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
    if (!this._stopped && (info.code === 4001 || info.code === 4002)) this.#authClosed(info);
    if (!this._stopped && FINAL_CLOSE_CODES.has(info.code)) this.#finalClosed(info);
    this._authError = null;
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

  // Closed with 4001 (authentication failed) or 4002 (token expired). Reconnecting makes
  // sense only with getToken (it may give a token that works); with a fixed token the
  // next connection would be refused the same way, so the client stops (setToken() and
  // connect() start it again).
  #authClosed(info) {
    const reason = info.reason ? `: ${info.reason}` : "";
    if (info.code === 4001) {
      // the server's error (invalid_token, ...) was reported when it came; a close without
      // one is the auth timeout (no token sent)
      if (!this._authError) {
        this.#report({ code: "auth_failed", message: `authentication failed (close 4001${reason})`, closeCode: 4001 });
      }
      if (!this.getToken) this._stopped = true;
    } else if (!this.getToken) {
      this.#report({
        code: "token_expired",
        message: `the token expired (close 4002${reason}); pass getToken, or call setToken() and connect()`,
        closeCode: 4002,
      });
      this._stopped = true;
    }
  }

  // Closed with 4003 (plank.disconnect()), 4004 (a ban is in force) or 4005 (its role was
  // dropped): the server's administrator wants this client gone, so it reports and stops
  // until connect().
  #finalClosed(info) {
    const reason = info.reason ? `: ${info.reason}` : "";
    const what = { 4003: "disconnected by an administrator", 4004: "banned by an administrator",
      4005: "its role may no longer be used" }[info.code];
    this.#report({
      code: { 4003: "disconnected", 4004: "banned", 4005: "unknown_role" }[info.code],
      message: `${what} (close ${info.code}${reason}); call connect() to try again`,
      closeCode: info.code,
    });
    this._stopped = true;
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
      case "table_renamed":
        this.#onRenamed(msg);
        return;
      default:
        return; // a newer server may send more
    }
  }

  #onWelcome(msg) {
    if (this._welcomed) return;
    const ws = this._ws;
    this._welcomed = true;
    this.#clearTimer("connect");
    this.epoch = msg.epoch ?? null;
    this.seq = typeof msg.seq === "number" ? msg.seq : null;
    this.role = typeof msg.role === "string" ? msg.role : null;
    this._authRequired = msg.auth === "required";
    if (msg.protocol !== undefined && msg.protocol !== PROTOCOL_VERSION) {
      this.#report({ code: "protocol_version", message: `server speaks protocol ${msg.protocol}, this client ${PROTOCOL_VERSION}` });
    }
    const withToken = this.getToken !== null || this.token !== null;
    // The attempt counter goes back to 0 once a connection is usable: at once without a
    // token; with one, only after the server accepted it (a refused token keeps backing off).
    if (!withToken && !this._authRequired) this.attempt = 0;
    // The auth ack must come within connectTimeoutMs as well.
    if (withToken) this.#armTimer("connect", ws, "no auth ack within connectTimeoutMs");
    this.#setState("open", {
      epoch: msg.epoch, seq: msg.seq, protocol: msg.protocol, server: msg.server,
      role: this.role, auth: msg.auth ?? null,
    });
    if (this._ws !== ws || !this.#isOpen()) return; // an open handler closed us
    if (withToken) this.#authenticate(ws, true);
    else this.#noToken(ws);
  }

  // The connection has no token to send: usable as the anonymous role, or, when the
  // server requires one, not at all (subscriptions wait for setToken()).
  #noToken(ws) {
    if (!this._authRequired) {
      this.#ready(ws);
      return;
    }
    this.#clearTimer("connect"); // the server closes it (4001) after plank.auth_timeout
    this._waitingForToken = true;
    this.#report({
      code: "auth_required",
      message: "the server requires a token: pass the token or getToken option, or call setToken()",
    });
  }

  // Welcomed and, when there was a token, authenticated: subscribe everything.
  #ready(ws) {
    if (this._ws !== ws || !this.#isOpen() || this._ready) return;
    this._ready = true;
    this._waitingForToken = false;
    this.#clearTimer("connect");
    this.attempt = 0;
    if (this.heartbeatMs > 0) {
      this._timers.heartbeat = setInterval(() => this.#ping(), this.heartbeatMs);
    }
    for (const sub of this.subscriptions.values()) {
      if (this._ws !== ws) return; // a handler closed us
      this.#sendSubscribe(sub);
    }
  }

  // Send an `auth` with `token`, or one from getToken / the token option. `initial`: the
  // first of this connection (subscriptions wait for its ack); else a refresh.
  async #authenticate(ws, initial, token) {
    if (token === undefined) {
      try {
        token = this.getToken ? await this.getToken() : this.token;
      } catch (error) {
        if (this._ws !== ws) return;
        this.#report({ code: "token_unavailable", message: `getToken failed: ${error?.message ?? error}`, error });
        if (initial) this.#dead(ws, "getToken failed"); // retry with backoff
        else this.#scheduleRefresh(ws, true);
        return;
      }
      if (this._ws !== ws || !this.#isOpen()) return; // closed while getToken ran
      if (token != null && typeof token !== "string") {
        this.#report({ code: "token_unavailable", message: `getToken returned a ${typeof token}, not a string` });
        if (initial) this.#dead(ws, "getToken returned no string");
        return;
      }
    }
    if (!token) {
      if (initial) this.#noToken(ws);
      return; // a refresh without a token: the server closes with 4002 at the expiry
    }
    const id = `auth-${++this._authCounter}`;
    this._authPending.set(id, { initial });
    if (!this.#send({ type: "auth", id, token })) this._authPending.delete(id);
  }

  #onAuthAck(msg) {
    const pending = this._authPending.get(msg.id);
    if (!pending) return;
    this._authPending.delete(msg.id);
    const ws = this._ws;
    this._authError = null;
    this.role = typeof msg.role === "string" ? msg.role : null;
    this.expires = typeof msg.expires === "number" ? msg.expires : null;
    this.#scheduleRefresh(ws);
    this.#emit("auth", { role: this.role, expires: this.expires, refreshed: !pending.initial });
    if (pending.initial) this.#ready(ws);
  }

  // With getToken and a token that expires: fetch a fresh one and send it on this
  // connection before the expiry. `retry`: the last attempt failed; try again only while
  // there is time left (each retry comes later, so this ends).
  #scheduleRefresh(ws, retry = false) {
    this.#clearTimer("refresh");
    if (this.expires === null || !this.getToken || this._ws !== ws) return;
    const expiresMs = this.expires * 1000;
    if (retry && expiresMs - Date.now() <= this.tokenRefresh.minLeadMs) return;
    const delay = refreshDelay(this.expires, Date.now(), this.tokenRefresh);
    this._timers.refresh = setTimeout(() => {
      this._timers.refresh = null;
      if (this._ws !== ws || !this.#isOpen()) return;
      if (delay > MAX_TIMER_MS) this.#scheduleRefresh(ws); // far away: wait again
      else this.#authenticate(ws, false);
    }, Math.min(delay, MAX_TIMER_MS));
  }

  #onAck(msg) {
    if (msg.request === "auth") {
      this.#onAuthAck(msg);
      return;
    }
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
    if (typeof msg.id === "string" && this._authPending.has(msg.id)) {
      // a refused token (the server closes with 4001 next), or a fresh token naming
      // another role (role_mismatch: the connection keeps the old one until it expires)
      this._authPending.delete(msg.id);
      const err = { code: msg.code, message: msg.message, id: msg.id, request: "auth" };
      this._authError = err;
      this.#report(err);
      return;
    }
    if (msg.id === undefined && typeof msg.sub === "string") {
      // The server ended a live subscription (a privilege was revoked, its table dropped:
      // docs/PROTOCOL.md, "error"): it is gone, and is not subscribed again on reconnect.
      const ended = this.subscriptions.get(msg.sub);
      const err = { code: msg.code, message: msg.message, sub: msg.sub };
      if (ended) {
        this.subscriptions.delete(msg.sub);
        ended.state = "closed";
        ended._sent = false;
        ended._state.cycle = null;
        if (ended.listenerCount("error") > 0) {
          this.#emit("error", err, ended);
          return;
        }
      }
      this.#report(err);
      return;
    }
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

  // The subscription's table was renamed (docs/PROTOCOL.md, "table_renamed"): later
  // (re)subscribes name it by its new name.
  #onRenamed(msg) {
    const sub = this.#target(msg.sub);
    if (!sub || sub.kind !== "table" || typeof msg.schema !== "string" || typeof msg.table !== "string") return;
    sub.request.table = `${quoteIdent(msg.schema)}.${quoteIdent(msg.table)}`;
    this.#emit("renamed", { sub: sub.id, schema: msg.schema, table: msg.table }, sub);
  }

  #deliver(sub, events) {
    for (const [name, payload] of events) {
      if (this.subscriptions.get(sub.id) !== sub) return; // unsubscribed by a handler
      this.#emit(name, payload, sub);
    }
  }
}

export { LiveTable, TableRows, keyFunction, liveTable } from "./live.js";

export default PlankClient;
