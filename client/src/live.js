// A live table: the rows of one table subscription kept in a keyed map, applied a whole
// transaction at a time (docs/PROTOCOL.md).
//
// TableRows is the pure part (no I/O): feed it a subscription's events (`snapshot`,
// `commit`, `resync`, `error`) and it keeps the rows by key:
//   - snapshot: the rows are replaced;
//   - commit: the transaction's changes are applied in order (INSERT and UPDATE upsert
//     the new row, an UPDATE that changed the key drops the old one, DELETE drops by the
//     key in `old`, `{"op":"UPDATE","visible":false,"key":...}` drops the row that left the
//     role's view, TRUNCATE clears; a TRUNCATE of one partition cannot be applied and
//     marks the rows stale);
//   - resync: the rows are kept until the snapshot that follows replaces them (without
//     one, they are marked stale);
//   - a change whose row was too large to send (`truncated`) keeps the row's other columns
//     as they were and marks it partial.
// Listeners are told after each snapshot, commit, resync and status change: never in the
// middle of a transaction.
//
// LiveTable wires TableRows to a PlankClient subscription; liveTable(client, id, spec)
// makes one. Its subscribe()/getSnapshot() pair fits React's useSyncExternalStore; the
// hooks in ./preact.js and ./react.js sit on top.

/**
 * A function that turns a row (or a key object: `old`, `key`) into the map key: one
 * column's value, or several columns' values, as a JSON string.
 * @param {string | string[] | ((row: object) => unknown)} key
 * @returns {(row: object) => string | null} null when the row lacks a key column
 */
export function keyFunction(key = "id") {
  if (typeof key === "function") {
    return (row) => {
      const k = key(row);
      return k === undefined || k === null ? null : typeof k === "string" ? k : JSON.stringify(k);
    };
  }
  const cols = Array.isArray(key) ? key : [key];
  if (cols.length === 0 || cols.some((c) => typeof c !== "string")) {
    throw new TypeError("key is a column name, an array of column names or a function");
  }
  if (cols.length === 1) {
    const col = cols[0];
    return (row) => (row && row[col] !== undefined ? JSON.stringify(row[col]) : null);
  }
  return (row) => (row && cols.every((c) => row[c] !== undefined) ? JSON.stringify(cols.map((c) => row[c])) : null);
}

const EMPTY_SET = Object.freeze(new Set());

/** The rows of one table subscription, by key; no I/O, no timers. */
export class TableRows {
  /**
   * @param {{key?: string | string[] | ((row: object) => unknown)}} [options] the
   *   columns that identify a row (default "id": the primary key, the replica identity
   *   that `old` and `key` carry)
   */
  constructor(options = {}) {
    this.keyOf = keyFunction(options.key ?? "id");
    this.keyByFunction = typeof options.key === "function";
    /** key -> row */
    this.map = new Map();
    /** keys of rows known only partly (a `truncated` change) */
    this.partial = new Set();
    /** "connecting" | "ready" | "resyncing" | "error" | "closed" */
    this.status = "connecting";
    /** false when the snapshot was cut at plank.snapshot_limit */
    this.complete = true;
    /** true when changes may be missing (a resync without a snapshot, a partition's TRUNCATE) */
    this.stale = false;
    /** The last error of the subscription, or null. */
    this.error = null;
    /** The reason of the last resync, or null. */
    this.resyncReason = null;
    this.epoch = null;
    this.seq = null;
    this.version = 0;
    this.listeners = new Set();
    this.cached = null;
  }

  /** Add a listener, called after every applied snapshot, commit or status change. */
  subscribe(fn) {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /**
   * The current state, as an object that stays the same until the next change (so it
   * can be compared by identity).
   */
  getSnapshot() {
    if (this.cached === null) {
      this.cached = Object.freeze({
        rows: Object.freeze([...this.map.values()]),
        byKey: this.map,
        partial: this.partial.size ? new Set(this.partial) : EMPTY_SET,
        status: this.status,
        complete: this.complete,
        stale: this.stale,
        error: this.error,
        resyncReason: this.resyncReason,
        epoch: this.epoch,
        seq: this.seq,
        version: this.version,
      });
    }
    return this.cached;
  }

  /**
   * The row with this key: the key column's value (`get(42)`), the key columns' values in
   * order (`get(["eu", 42])`), or an object holding the key columns (`get(change.old)`).
   */
  get(key) {
    if (key !== null && typeof key === "object" && !Array.isArray(key)) return this.map.get(this.keyOf(key));
    return this.map.get(this.keyByFunction && typeof key === "string" ? key : JSON.stringify(key));
  }

  #changed() {
    this.version++;
    this.cached = null;
    for (const fn of [...this.listeners]) fn();
  }

  /** A `snapshot` event: the rows as of its seq. */
  snapshot(msg) {
    // a new map: earlier getSnapshot() results keep the rows they had
    const map = new Map();
    for (const row of msg.rows ?? []) {
      const k = this.keyOf(row);
      if (k !== null) map.set(k, row);
    }
    this.map = map;
    this.partial = new Set();
    this.status = "ready";
    this.complete = msg.complete !== false;
    this.stale = false;
    this.error = null;
    this.epoch = msg.epoch ?? null;
    this.seq = msg.seq ?? null;
    this.#changed();
  }

  /** A `commit` event: apply the transaction's changes, then tell the listeners once. */
  commit(tx) {
    const map = new Map(this.map);
    for (const m of tx.changes ?? []) this.#apply(map, m.change ?? {});
    this.map = map;
    this.epoch = tx.epoch ?? this.epoch;
    this.seq = tx.seq ?? this.seq;
    this.#changed();
  }

  #apply(map, c) {
    if (c.op === "TRUNCATE") {
      if (c.partition) this.stale = true; // which rows were in it is not known here
      else {
        map.clear();
        this.partial.clear();
      }
      return;
    }
    if (c.visible === false) {
      // an UPDATE that moved the row out of the role's view (row-level security)
      const k = this.keyOf(c.key);
      if (k !== null) {
        map.delete(k);
        this.partial.delete(k);
      }
      return;
    }
    if (c.op === "DELETE") {
      const k = this.keyOf(c.old);
      if (k !== null) {
        map.delete(k);
        this.partial.delete(k);
      }
      return;
    }
    if (c.op !== "INSERT" && c.op !== "UPDATE") return;
    const image = c.truncated ? c.key : c.new;
    const k = this.keyOf(image);
    const oldKey = c.old ? this.keyOf(c.old) : null;
    const prev = map.get(oldKey ?? k) ?? (k !== null ? map.get(k) : undefined);
    if (oldKey !== null && oldKey !== k) {
      map.delete(oldKey);
      this.partial.delete(oldKey);
    }
    if (k === null) return;
    if (c.truncated) {
      // the row was too large to send: only its key is known
      map.set(k, { ...(prev ?? {}), ...image });
      this.partial.add(k);
    } else {
      map.set(k, image);
      this.partial.delete(k);
    }
  }

  /** A `resync` event: the missed changes cannot be replayed. */
  resync(ev) {
    this.resyncReason = ev.reason ?? null;
    if (ev.snapshot) this.status = "resyncing"; // the snapshot that follows replaces the rows
    else this.stale = true;
    this.#changed();
  }

  /** An `ack` event: subscribed (or resubscribed after a reconnect). */
  ack(ev) {
    this.epoch = ev.epoch ?? this.epoch;
    if (this.status !== "ready") {
      this.status = "ready";
      this.#changed();
    }
  }

  /** An `error` event: the subscribe was refused, or the server ended the subscription. */
  fail(err) {
    this.error = err;
    this.status = "error";
    this.#changed();
  }

  /** The connection is down (the rows are kept; a resume or a resync follows). */
  disconnected() {
    if (this.status === "ready" || this.status === "resyncing") {
      this.status = "connecting";
      this.#changed();
    }
  }

  /** No more updates. */
  closed() {
    this.status = "closed";
    this.#changed();
  }
}

/**
 * A table subscription of a PlankClient whose rows are kept in a TableRows.
 * Subscribes with `snapshot: true` unless told otherwise.
 */
export class LiveTable extends TableRows {
  /**
   * @param {import("./index.js").PlankClient} client
   * @param {string} id the subscription id
   * @param {{table: string, ops?: string[], filter?: object, snapshot?: boolean,
   *   key?: string | string[] | ((row: object) => unknown), on?: object}} spec `on`: more
   *   handlers of the subscription's events ({change, commit, ack, resync, ...}), called
   *   after the store applied the event
   */
  constructor(client, id, spec) {
    const { key, on, ...request } = spec;
    super({ key });
    this.client = client;
    this.id = id;
    this.request = { snapshot: true, ...request };
    /** More handlers of the subscription's events, called after the store applied them. */
    this.handlers = on ?? {};
    this.subscription = null;
    this.offClient = client.on("closed", () => this.disconnected());
    this.#subscribe();
  }

  #subscribe() {
    this.subscription = this.client.subscribeTable(this.id, this.request, {
      snapshot: (msg) => this.snapshot(msg),
      commit: (tx) => this.commit(tx),
      resync: (ev) => this.resync(ev),
      ack: (ev) => this.ack(ev),
      error: (err) => this.fail(err),
    });
    for (const [name, fn] of Object.entries(this.handlers)) {
      if (typeof fn === "function") this.subscription.on(name, fn);
    }
  }

  commit(tx) {
    super.commit(tx);
    // a partition's TRUNCATE: only a fresh snapshot says which rows are left
    if (this.stale && this.request.snapshot) this.reload();
  }

  /** Subscribe again, with a fresh snapshot that replaces the rows. */
  reload() {
    this.client.unsubscribe(this.id);
    this.request = { ...this.request, snapshot: true };
    this.status = "resyncing";
    this.#subscribe();
  }

  /** Unsubscribe; the rows stay as they are. */
  close() {
    this.offClient();
    this.client.unsubscribe(this.id);
    this.closed();
  }
}

/**
 * Subscribe to a table and keep its rows: `liveTable(client, "items", {table:
 * "public.items", key: "id"})`. See LiveTable.
 */
export function liveTable(client, id, spec) {
  return new LiveTable(client, id, spec);
}
