// Page state: the rows of public.items as far as this page knows them, the connection's
// state and a short log of change events. Everything is a signal, so components that read
// a value re-render when it changes.
import { signal, computed, batch } from "@preact/signals";

export const MAX_EVENTS = 50;

/** "connecting" | "open" | "closed" | "error" ("open" only once the subscription is acked) */
export const connState = signal("connecting");
/** Milliseconds until the next reconnect attempt while closed, else null. */
export const retryInMs = signal(null);
/** The worker run's epoch (string) from the last welcome, and the last seq seen in it. */
export const epoch = signal(null);
export const lastSeq = signal(null);
/** The last error message the server sent (or a client-side problem), else null. */
export const lastError = signal(null);
/** true once the page may have missed changes (it reconnected after being subscribed). */
export const mayHaveGaps = signal(false);
/** Where the rows came from: "changes" (since page load) or "snapshot". */
export const rowSource = signal("changes");

/** key (string) -> { key, row, version, partial } */
const rowMap = signal(new Map());
/** Newest first: { n, time, seq, op, id, detail } (op is a change's, or RESUMED, RESYNC, CLOSED) */
export const events = signal([]);

let eventCounter = 0;
// Changes with a seq at or below this (in epoch snapshotEpoch) are already in a snapshot.
let snapshotSeq = -1;
let snapshotEpoch = null;

function compareKeys(a, b) {
  const x = a.row.id;
  const y = b.row.id;
  if (typeof x === "number" && typeof y === "number") return x - y;
  return String(x).localeCompare(String(y), undefined, { numeric: true });
}

export const rows = computed(() => [...rowMap.value.values()].sort(compareKeys));
export const rowCount = computed(() => rowMap.value.size);

const keyOf = (id) => (id === undefined || id === null ? null : String(id));

export function noteSeq(seq) {
  if (typeof seq === "number" && (lastSeq.value === null || seq > lastSeq.value)) lastSeq.value = seq;
}

/** A welcome ({epoch, seq}): a new epoch means seq numbers restart and any snapshot seq is void. */
export function welcome(msg) {
  batch(() => {
    if (epoch.value !== msg.epoch) lastSeq.value = null;
    epoch.value = msg.epoch;
    noteSeq(msg.seq);
  });
}

/**
 * Replace all rows with the snapshot a subscribe with "snapshot": true sends, taken at
 * `seq` of `epochId`: changes with seq <= that are then skipped as already included.
 */
export function applySnapshot(list, seq = -1, epochId = epoch.value) {
  const next = new Map();
  for (const row of list) {
    const key = keyOf(row.id);
    if (key !== null) next.set(key, { key, row, version: 0, partial: false });
  }
  snapshotSeq = seq;
  snapshotEpoch = epochId;
  batch(() => {
    rowMap.value = next;
    rowSource.value = "snapshot";
    mayHaveGaps.value = false;
  });
}

function logEvent(seq, op, id, detail = null) {
  const entry = { n: ++eventCounter, time: new Date(), seq, op, id, detail };
  events.value = [entry, ...events.value].slice(0, MAX_EVENTS);
}

/** A connection event in the log: RESUMED (missed changes replayed), RESYNC (reason), CLOSED. */
export function logNote(kind, seq, detail) {
  logEvent(seq ?? "", kind, null, detail ?? null);
}

/** Apply a transaction's changes (a commit event's `changes`) in one go. */
export function applyCommit(changes) {
  batch(() => {
    for (const msg of changes) applyChange(msg);
  });
}

/** Apply one "change" message (see docs/PROTOCOL.md, "Change payload"). */
export function applyChange(msg) {
  const c = msg.change || {};
  const seq = msg.seq;
  if (msg.epoch === snapshotEpoch && typeof seq === "number" && seq <= snapshotSeq) return;

  // With "truncated" the new row is left out and "key" holds its identity.
  const newRow = c.truncated ? c.key : c.new;
  const partial = Boolean(c.truncated);
  const oldKey = keyOf(c.old?.id);
  const newKey = keyOf(newRow?.id);

  batch(() => {
    noteSeq(seq);
    const map = new Map(rowMap.value);
    const bump = (key, row, prev) =>
      map.set(key, {
        key,
        // A partial image only knows the key: keep what we had for the other columns.
        row: partial ? { ...(prev?.row || {}), ...row } : row,
        version: (prev?.version || 0) + 1,
        partial,
      });

    switch (c.op) {
      case "INSERT":
        if (newKey !== null) bump(newKey, newRow, map.get(newKey));
        break;
      case "UPDATE": {
        const key = oldKey ?? newKey;
        const prev = key !== null ? map.get(key) : undefined;
        if (key !== null) map.delete(key);
        if (newKey !== null) bump(newKey, newRow, prev);
        break;
      }
      case "DELETE":
        if (oldKey !== null) map.delete(oldKey);
        break;
      case "TRUNCATE":
        map.clear();
        break;
      default:
        return;
    }
    rowMap.value = map;
    logEvent(seq, c.op, c.op === "TRUNCATE" ? null : (c.old?.id ?? newRow?.id ?? null));
  });
}
