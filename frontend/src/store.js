// Page state besides the rows (which useLiveTable keeps: see App.jsx): the connection's
// state and a short log of change events. Everything is a signal, so components that read
// a value re-render when it changes.
import { signal, batch } from "@preact/signals";

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

/** Newest first: { n, time, seq, op, id, detail } (op is a change's, or RESUMED, RESYNC, CLOSED) */
export const events = signal([]);

let eventCounter = 0;

export function noteSeq(seq) {
  if (typeof seq === "number" && (lastSeq.value === null || seq > lastSeq.value)) lastSeq.value = seq;
}

/** A welcome ({epoch, seq}): a new epoch means seq numbers restart. */
export function welcome(msg) {
  batch(() => {
    if (epoch.value !== msg.epoch) lastSeq.value = null;
    epoch.value = msg.epoch;
    noteSeq(msg.seq);
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

/** The changes of a transaction the live table applied (a commit event's `changes`). */
export function logCommit(changes) {
  batch(() => {
    for (const { seq, change: c } of changes) {
      noteSeq(seq);
      const row = c.visible === false ? c.key : c.truncated ? (c.key ?? c.old) : (c.new ?? c.old);
      const op = c.visible === false ? "HIDDEN" : c.op;
      logEvent(seq, op, c.op === "TRUNCATE" ? null : (row?.id ?? null));
    }
  });
}
