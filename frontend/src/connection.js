// The page's connection to the Plank worker, through @plank-db/client (client/). The
// client reconnects with backoff and jitter, pings to notice dead connections, and on
// every reconnect resumes where the page left off (the worker replays what was missed)
// or, when that is impossible (the worker restarted), reports a resync and reloads the
// snapshot. The rows themselves are kept by useLiveTable (App.jsx); this file feeds the
// connection status and the event log.
import { batch } from "@preact/signals";
import { useEffect, useState } from "preact/hooks";
import { PlankClient } from "../../client/src/index.js";
import { makeUseLiveTable } from "../../client/src/hooks.js";
import { connState, lastError, logCommit, logNote, noteSeq, retryInMs, welcome } from "./store.js";

// what @plank-db/client/preact exports, made from this app's own Preact
export const useLiveTable = makeUseLiveTable({ useState, useEffect });

export const TABLE = "public.items";
export const SUB_ID = "items";

export function socketUrl(loc = window.location) {
  return `${loc.protocol === "https:" ? "wss" : "ws"}://${loc.host}/ws`;
}

/** The client, and the spec of the items subscription (for useLiveTable). */
export function connect({ url = socketUrl() } = {}) {
  const client = new PlankClient(url, {
    backoff: { initialMs: 250, maxMs: 5000, jitter: "half" },
    heartbeatMs: 15_000,
    heartbeatTimeoutMs: 10_000,
  });
  let countdownTimer = null;
  let wasOpen = false; // the subscription was acknowledged on the connection that closed
  let replayed = 0; // changes delivered before this connection's ack: a resume's replay

  const stopCountdown = () => {
    clearInterval(countdownTimer);
    countdownTimer = null;
  };

  client.on("connecting", () => {
    stopCountdown();
    batch(() => {
      retryInMs.value = null;
      connState.value = "connecting";
    });
    replayed = 0;
  });
  client.on("open", (w) => welcome(w));
  client.on("message", (msg) => {
    // every seq the worker reports, in the current epoch (changes carry their own)
    if (msg.type === "pong" || msg.type === "ack") noteSeq(msg.seq);
  });
  client.on("closed", (info) => {
    stopCountdown();
    batch(() => {
      connState.value = "closed";
      if (info.code && info.code !== 1000 && info.code !== 1006) {
        lastError.value = `connection closed (code ${info.code}${info.reason ? `: ${info.reason}` : ""})`;
      }
      if (wasOpen) logNote("CLOSED", null, info.reason || `code ${info.code}`);
    });
    wasOpen = false;
  });
  client.on("reconnecting", ({ delay }) => {
    const due = Date.now() + delay;
    retryInMs.value = delay;
    countdownTimer = setInterval(() => { retryInMs.value = Math.max(0, due - Date.now()); }, 250);
  });
  client.on("error", (err) => {
    lastError.value = err.code ? `${err.code}: ${err.message}` : String(err.message);
  });

  const spec = {
    table: TABLE,
    key: "id",
    on: {
      change: (msg) => {
        noteSeq(msg.seq);
        if (client.subscriptions.get(SUB_ID)?.state === "pending") replayed++;
      },
      // the live table applied a transaction whole: log its changes
      commit: (c) => logCommit(c.changes),
      resync: (r) => logNote("RESYNC", r.seq, r.reason),
      ack: (ack) => {
        batch(() => {
          noteSeq(ack.seq);
          if (ack.resumed) {
            logNote("RESUMED", ack.seq, `${replayed} missed ${replayed === 1 ? "change" : "changes"}`);
          }
          lastError.value = null;
          connState.value = "open";
        });
        wasOpen = true;
      },
      error: (err) => batch(() => {
        lastError.value = `${err.code}: ${err.message}`;
        connState.value = "error";
      }),
    },
  };

  return {
    client,
    spec,
    close() {
      stopCountdown();
      client.close();
    },
  };
}
