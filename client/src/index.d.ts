// Types of plank-client (src/index.js). Messages follow docs/PROTOCOL.md.

export declare const PROTOCOL_VERSION: 1;

export type Op = "INSERT" | "UPDATE" | "DELETE" | "TRUNCATE";
export type Scalar = string | number | boolean | null;
export type Row = Record<string, unknown>;

export interface BackoffOptions {
  /** Ceiling of the first retry's delay (default 250). */
  initialMs?: number;
  /** Largest ceiling (default 10000). */
  maxMs?: number;
  /** "full": uniform in [0, ceiling]; "half" (default): in [ceiling/2, ceiling]; "none". */
  jitter?: "full" | "half" | "none";
  /** Growth per attempt (default 2). */
  factor?: number;
}

export interface WebSocketLike {
  readonly readyState: number;
  binaryType?: string;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  terminate?(): void;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onclose: ((ev: { code: number; reason: string; wasClean: boolean }) => void) | null;
  onerror: ((ev: any) => void) | null;
}

export interface PlankClientOptions {
  /** WebSocket constructor; default globalThis.WebSocket (required on Node 20: pass `ws`). */
  WebSocket?: new (url: string) => WebSocketLike;
  backoff?: BackoffOptions;
  /** Ping interval in ms, 0 disables the heartbeat (default 15000). */
  heartbeatMs?: number;
  /** A ping unanswered for this long closes the connection and reconnects (default 10000). */
  heartbeatTimeoutMs?: number;
  /** From opening the socket to the server's welcome (default 10000). */
  connectTimeoutMs?: number;
  /** Connect right away, in a microtask (default true). */
  autoConnect?: boolean;
  /** Random source in [0, 1) for the jitter. */
  random?: () => number;
}

export interface Position {
  epoch: string;
  seq: number;
}

export interface ChangePayload {
  schema: string;
  table: string;
  op: Op;
  xid: number;
  n: number;
  new?: Row;
  old?: Row;
  key?: Row;
  truncated?: true;
}

export interface ChangeMessage {
  sub: string;
  type: "change";
  seq: number;
  epoch: string;
  change: ChangePayload;
}

export interface CommitEvent {
  sub: string;
  type: "commit";
  seq: number;
  epoch: string;
  xid: number | null;
  /** The transaction's changes that this subscription received, in order. */
  changes: ChangeMessage[];
  /** true when the server sent no commit marker and the client closed the group itself. */
  synthetic?: boolean;
}

export interface NotifyMessage {
  sub: string;
  type: "notify";
  seq: number;
  epoch: string;
  channel: string;
  payload: string;
  pid: number;
}

export interface SnapshotMessage {
  sub: string;
  type: "snapshot";
  seq: number;
  epoch: string;
  complete: boolean;
  rows: Row[];
}

export interface ResyncEvent {
  sub: string;
  /** "epoch_changed", "out_of_range", or "not_resumed" (the server ignored `since`). */
  reason: "epoch_changed" | "out_of_range" | "not_resumed" | string;
  epoch: string | null;
  seq: number;
  /** Whether a snapshot follows (it was asked for with `snapshot: true`). */
  snapshot: boolean;
}

export interface AckEvent {
  sub: string;
  seq: number;
  epoch: string | null;
  /** true when `since` was honoured: the missed events were replayed before this ack. */
  resumed: boolean;
  since: Position | null;
}

export interface ServerError {
  code: string;
  message: string;
  id?: string;
  error?: unknown;
}

export interface SubscriptionEvents {
  ack: AckEvent;
  change: ChangeMessage;
  commit: CommitEvent;
  notify: NotifyMessage;
  snapshot: SnapshotMessage;
  resync: ResyncEvent;
  error: ServerError;
}

export type SubscriptionHandlers = {
  [K in keyof SubscriptionEvents]?: (event: SubscriptionEvents[K]) => void;
};

export interface ClientEvents {
  connecting: { url: string; attempt: number };
  open: { epoch: string; seq: number; protocol: number; server: string };
  closed: { code: number; reason: string; wasClean: boolean; willReconnect: boolean };
  reconnecting: { delay: number; attempt: number };
  message: any;
  error: ServerError;
}

declare class Emitter<Events> {
  on<K extends keyof Events>(event: K, fn: (payload: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, fn: (payload: Events[K]) => void): void;
  once<K extends keyof Events>(event: K, fn: (payload: Events[K]) => void): () => void;
  listenerCount(event: keyof Events): number;
}

export interface TableSpec {
  /** `name` or `schema.name` */
  table: string;
  ops?: Op[];
  filter?: Record<string, Scalar>;
  /** Current rows first, and again after every resync. */
  snapshot?: boolean;
}

export declare class Subscription extends Emitter<SubscriptionEvents> {
  readonly client: PlankClient;
  readonly id: string;
  readonly kind: "table" | "channel";
  readonly request: Record<string, unknown>;
  state: "pending" | "active" | "error" | "closed";
  readonly epoch: string | null;
  readonly seq: number | null;
  unsubscribe(): boolean;
}

export declare class PlankClient extends Emitter<ClientEvents> {
  constructor(url: string | URL, options?: PlankClientOptions);
  readonly url: string;
  state: "idle" | "connecting" | "open" | "closed" | "reconnecting";
  epoch: string | null;
  seq: number | null;
  attempt: number;
  readonly subscriptions: Map<string, Subscription>;
  connect(): void;
  close(code?: number, reason?: string): void;
  subscribeTable(id: string, spec: TableSpec, handlers?: SubscriptionHandlers): Subscription;
  subscribeChannel(id: string, channel: string, handlers?: SubscriptionHandlers): Subscription;
  unsubscribe(id: string): boolean;
  ping(): boolean;
}

export declare class SubscriptionState {
  epoch: string | null;
  seq: number | null;
  commitSeq: number | null;
  pending: ChangeMessage[];
  since(): Position | null;
  begin(since: Position | null): void;
  isDuplicate(msg: { epoch?: string; seq?: number }): boolean;
  handle(msg: any, connectionEpoch?: string | null): Array<[keyof SubscriptionEvents, any]>;
}

export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
export declare function toWebSocketUrl(base: string | URL, path?: string): string;

export default PlankClient;
