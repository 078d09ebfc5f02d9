// useLiveTable for Preact and React: the hook is made here from the framework's own
// useState and useEffect (./preact.js and ./react.js pass them), so this package depends
// on neither framework.
import { liveTable } from "./live.js";

/**
 * Make a useLiveTable hook from a framework's hooks.
 * @param {{useState: Function, useEffect: Function}} hooks
 */
export function makeUseLiveTable({ useState, useEffect }) {
  /**
   * Subscribe to a table while the component is mounted and re-render on every applied
   * snapshot, transaction and status change. Returns the table's state ({rows, byKey,
   * status, ...}: see LiveTableState in index.d.ts).
   * @param {import("./index.js").PlankClient} client
   * @param {string} id the subscription id
   * @param {object} spec {table, ops, filter, snapshot, key}: read when the component
   *   mounts, and again when `id` or the client changes
   */
  return function useLiveTable(client, id, spec) {
    const [state, setState] = useState(null);
    useEffect(() => {
      const t = liveTable(client, id, spec);
      setState(t.getSnapshot());
      const off = t.subscribe(() => setState(t.getSnapshot()));
      return () => {
        off();
        t.close();
      };
      // eslint-disable-next-line react-hooks/exhaustive-deps
    }, [client, id]);
    return state ?? INITIAL;
  };
}

const INITIAL = Object.freeze({
  rows: Object.freeze([]),
  byKey: new Map(),
  partial: new Set(),
  status: "connecting",
  complete: true,
  stale: false,
  error: null,
  resyncReason: null,
  epoch: null,
  seq: null,
  version: 0,
});
