import type { LiveTableSpec, LiveTableState, PlankClient, Row } from "./index.js";
// React flavour: import { useLiveTable } from "@plank-db/client/react".

/**
 * Subscribe to a table while the component is mounted; re-renders on every snapshot,
 * transaction and status change. `spec` is read when the component mounts (and when
 * `client` or `id` change).
 */
export declare function useLiveTable<T extends object = Row>(client: PlankClient, id: string, spec: LiveTableSpec<T>): LiveTableState<T>;
