// The WebSocket to the Plank worker: subscribe to public.items, feed the store, and
// reconnect with exponential backoff and jitter when the connection drops.
import { batch } from "@preact/signals";
import {
  applyChange, applySnapshot, connState, lastError, noteSeq, retryInMs, welcome,
} from "./store.js";

export const TABLE = "public.items";
const SUB_ID = "items";
const BACKOFF_BASE_MS = 250;
const BACKOFF_CAP_MS = 5000;
const KEEPALIVE_MS = 30000;

/** Delay before reconnect attempt number `attempt` (0, 1, ...): between half and all of
 *  min(cap, base * 2^attempt), so clients that lost the worker together spread out. */
export function backoffDelay(attempt, random = Math.random) {
  const ceiling = Math.min(BACKOFF_CAP_MS, BACKOFF_BASE_MS * 2 ** attempt);
  return Math.round(ceiling / 2 + random() * (ceiling / 2));
}

export function socketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

export function connect({ url = socketUrl() } = {}) {
  let ws = null;
  let attempt = 0;
  let retryTimer = null;
  let countdownTimer = null;
  let keepaliveTimer = null;

  const send = (msg) => ws && ws.readyState === WebSocket.OPEN && ws.send(JSON.stringify(msg));

  function scheduleReconnect() {
    const delay = backoffDelay(attempt++);
    const due = Date.now() + delay;
    retryInMs.value = delay;
    countdownTimer = setInterval(() => { retryInMs.value = Math.max(0, due - Date.now()); }, 250);
    retryTimer = setTimeout(() => {
      clearInterval(countdownTimer);
      retryInMs.value = null;
      open();
    }, delay);
  }

  function onMessage(event) {
    let msg;
    try {
      msg = JSON.parse(event.data);
    } catch {
      lastError.value = "the server sent a message that is not JSON";
      return;
    }
    switch (msg.type) {
      case "welcome":
        welcome(msg);
        break;
      case "ack":
        noteSeq(msg.seq);
        if (msg.id === SUB_ID && msg.request === "subscribe") {
          batch(() => {
            attempt = 0;
            lastError.value = null;
            connState.value = "open";
          });
        }
        break;
      case "snapshot":
        if (msg.sub === SUB_ID) applySnapshot(msg.rows, msg.seq, msg.epoch);
        break;
      case "change":
        if (msg.sub === SUB_ID) applyChange(msg);
        break;
      case "pong":
        noteSeq(msg.seq);
        break;
      case "error":
        batch(() => {
          lastError.value = `${msg.code}: ${msg.message}`;
          if (msg.id === SUB_ID) connState.value = "error";
        });
        break;
      default:
        break; // unknown pushes are ignored, as a newer server may send more
    }
  }

  function onClose(event) {
    clearInterval(keepaliveTimer);
    ws = null;
    batch(() => {
      connState.value = "closed";
      if (event && event.code && event.code !== 1000 && event.code !== 1006) {
        lastError.value = `connection closed (code ${event.code}${event.reason ? `: ${event.reason}` : ""})`;
      }
    });
    scheduleReconnect();
  }

  function open() {
    connState.value = "connecting";
    let sock;
    try {
      sock = new WebSocket(url);
    } catch (e) {
      lastError.value = `cannot open ${url}: ${e.message}`;
      onClose(null);
      return;
    }
    ws = sock;
    sock.onmessage = onMessage;
    sock.onclose = onClose;
    sock.onopen = () => {
      // snapshot: the table's current rows arrive first, then changes after them
      send({ type: "subscribe", id: SUB_ID, table: TABLE, snapshot: true });
      keepaliveTimer = setInterval(() => send({ type: "ping", id: "keepalive" }), KEEPALIVE_MS);
    };
  }

  open();
  return {
    close() {
      clearTimeout(retryTimer);
      clearInterval(countdownTimer);
      clearInterval(keepaliveTimer);
      if (ws) { ws.onclose = null; ws.close(1000); }
    },
  };
}
