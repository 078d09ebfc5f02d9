import { useRef } from "preact/hooks";
import { connState, epoch, events, lastError, lastSeq, retryInMs, MAX_EVENTS } from "./store.js";
import { SUB_ID, TABLE, useLiveTable } from "./connection.js";

const pad = (n) => String(n).padStart(2, "0");

/** "2026-11-21T09:05:00.123+00:00" -> "2026-11-21 10:05:00" in the viewer's time zone. */
function formatTimestamp(value) {
  if (value === undefined) return "…";
  if (value === null) return "";
  const d = new Date(value);
  if (Number.isNaN(d.getTime())) return String(value);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
    `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

const formatTime = (d) => `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;

function formatValue(value) {
  if (value === undefined) return "…";
  if (value === null) return "";
  return typeof value === "object" ? JSON.stringify(value) : String(value);
}

function Status() {
  const state = connState.value;
  return (
    <dl class="status">
      <div>
        <dt>connection</dt>
        <dd>
          <span class={`badge badge-${state}`} data-testid="conn-state"
            title="open once the subscription is acknowledged">{state}</span>
          {state === "closed" && retryInMs.value !== null && (
            <span class="muted"> retry in {(retryInMs.value / 1000).toFixed(1)} s</span>
          )}
        </dd>
      </div>
      <div>
        <dt>epoch</dt>
        <dd data-testid="epoch">{epoch.value ?? "–"}</dd>
      </div>
      <div>
        <dt>last seq</dt>
        <dd data-testid="last-seq">{lastSeq.value ?? "–"}</dd>
      </div>
    </dl>
  );
}

function Row({ row, version, partial }) {
  // Alternating between two identical animations restarts the flash on every change.
  const flash = version > 0 ? (version % 2 ? "flash-a" : "flash-b") : "";
  return (
    <tr data-testid={`row-${row.id}`} class={`${flash}${partial ? " partial" : ""}`}
      title={partial ? "row too large for a notification: only its key is known" : undefined}>
      <td class="num" data-testid="id">{formatValue(row.id)}</td>
      <td data-testid="name">{formatValue(row.name)}</td>
      <td class="num" data-testid="value">{formatValue(row.value)}</td>
      <td class="time" data-testid="created_at">{formatTimestamp(row.created_at)}</td>
      <td class="time" data-testid="updated_at">{formatTimestamp(row.updated_at)}</td>
    </tr>
  );
}

function compareIds(a, b) {
  const x = a.row.id;
  const y = b.row.id;
  if (typeof x === "number" && typeof y === "number") return x - y;
  return String(x).localeCompare(String(y), undefined, { numeric: true });
}

/**
 * Each row with a version that goes up whenever the live table hands over a new object
 * for it (a change), so the row flashes; rows of a snapshot start at 0, rows that appear
 * later at 1.
 */
function useVersions(state) {
  const seen = useRef({ rows: new Map(), ready: false });
  const next = new Map();
  for (const [key, row] of state.byKey) {
    const prev = seen.current.rows.get(key);
    const version = prev === undefined ? (seen.current.ready ? 1 : 0) : prev.row === row ? prev.version : prev.version + 1;
    next.set(key, { key, row, version, partial: state.partial.has(key) });
  }
  seen.current = { rows: next, ready: seen.current.ready || state.status === "ready" };
  return [...next.values()].sort(compareIds);
}

function ItemsTable({ client, spec }) {
  const state = useLiveTable(client, SUB_ID, spec);
  const list = useVersions(state);
  return (
    <section class="card">
      <h2>
        {TABLE} <span class="muted">({list.length} {list.length === 1 ? "row" : "rows"})</span>
      </h2>
      <p class="notice" data-testid="row-source">
        {state.status === "resyncing" ? "Reloading the rows (resync)." : "Showing a snapshot, kept live."}
        {state.stale && " Changes may be missing: reload the page."}
        {!state.complete && " The snapshot was cut at plank.snapshot_limit."}
      </p>
      <table class="items">
        <thead>
          <tr><th class="num">id</th><th>name</th><th class="num">value</th><th>created</th><th>updated</th></tr>
        </thead>
        <tbody data-testid="rows">
          {list.map((e) => <Row key={e.key} row={e.row} version={e.version} partial={e.partial} />)}
        </tbody>
      </table>
      {list.length === 0 && (
        <p class="empty">No rows yet. Insert, update or delete rows of {TABLE} (for example with psql) and they show up here.</p>
      )}
    </section>
  );
}

function EventLog() {
  const list = events.value;
  return (
    <section class="card">
      <h2>Events <span class="muted">(latest {MAX_EVENTS})</span></h2>
      <table class="log">
        <thead>
          <tr><th>time</th><th class="num">seq</th><th>op</th><th class="num">id</th></tr>
        </thead>
        <tbody data-testid="event-log">
          {list.map((e) => (
            <tr key={e.n} data-op={e.op}>
              <td class="time">{formatTime(e.time)}</td>
              <td class="num">{e.seq}</td>
              <td>
                <span class={`op op-${e.op.toLowerCase()}`}>{e.op}</span>
                {e.detail && <span class="muted detail" data-testid="event-detail"> {e.detail}</span>}
              </td>
              <td class="num">{e.id ?? ""}</td>
            </tr>
          ))}
        </tbody>
      </table>
      {list.length === 0 && <p class="empty">No changes yet.</p>}
    </section>
  );
}

export function App({ client, spec }) {
  return (
    <main>
      <header>
        <h1>Plank <span class="muted">live items</span></h1>
        <Status />
      </header>
      {lastError.value && <p class="error" data-testid="error" role="alert">{lastError.value}</p>}
      <div class="layout">
        <ItemsTable client={client} spec={spec} />
        <EventLog />
      </div>
    </main>
  );
}
