// Types of plank-client (src/index.js). Messages follow docs/PROTOCOL.md.

export declare const PROTOCOL_VERSION: 1;
/** Close codes after which the client does not reconnect: 4003 (plank.disconnect()) and 4004 (a ban). */
export declare const FINAL_CLOSE_CODES: ReadonlySet<number>;

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

export interface TokenRefreshOptions {
  /** Refresh at this fraction of the token's remaining lifetime (default 0.8). */
  ratio?: number;
  /** ...but at least this long before it expires (default 1000). */
  minLeadMs?: number;
}

/** A JWT, or null/undefined for none (connect as the server's anonymous role, if any). */
export type TokenResult = string | null | undefined;

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
  /** A JWT sent in an `auth` message after every welcome, before the subscriptions. */
  token?: string;
  /**
   * Called for a token on every (re)connect and to refresh it before it expires; takes
   * precedence over `token`. With it, a refused token (close 4001) is retried with backoff
   * and an expired one (close 4002) replaced on the next connect.
   */
  getToken?: () => TokenResult | Promise<TokenResult>;
  /** When to refresh a token that expires (needs getToken). */
  tokenRefresh?: TokenRefreshOptions;
}

export interface Position {
  epoch: string;
  seq: number;
}

/** Members every change carries (docs/PROTOCOL.md, "Change payload"). */
interface ChangeHeader {
  schema: string;
  table: string;
  xid: number;
  /** Ordinal within the transaction (gaps where savepoints rolled back). */
  n: number;
  /** Internal: a stored payload the worker could not read. */
  overflow?: number;
}

/** An INSERT: the whole new row. */
export interface InsertChange<T = Row> extends ChangeHeader {
  op: "INSERT";
  new: T;
  truncated?: undefined;
}

/** An UPDATE the role may see: the new row, and the old row's key (replica identity). */
export interface UpdateChange<T = Row> extends ChangeHeader {
  op: "UPDATE";
  new: T;
  old?: Partial<T>;
  truncated?: undefined;
  visible?: undefined;
}

/**
 * An UPDATE that moved the row out of the role's view (row-level security): drop the row
 * with this key. `key` is `{}` for a table without a key.
 */
export interface HiddenUpdateChange<T = Row> extends ChangeHeader {
  op: "UPDATE";
  visible: false;
  key: Partial<T>;
  truncated?: undefined;
}

/** A DELETE: the old row's key (every column with REPLICA IDENTITY FULL). */
export interface DeleteChange<T = Row> extends ChangeHeader {
  op: "DELETE";
  old: Partial<T>;
  truncated?: undefined;
}

/**
 * A change whose row was too large to send (docs/PROTOCOL.md, "Rows of any size"): the
 * new row's key in `key` (INSERT, UPDATE), the old row's in `old` (UPDATE, DELETE); both
 * missing when even those did not fit.
 */
export interface TruncatedChange<T = Row> extends ChangeHeader {
  op: "INSERT" | "UPDATE" | "DELETE";
  truncated: true;
  key?: Partial<T>;
  old?: Partial<T>;
}

/** A TRUNCATE of the table (drop every row), or of one partition (`partition`: reload). */
export interface TruncateChange extends ChangeHeader {
  op: "TRUNCATE";
  partition?: { schema: string; table: string };
  truncated?: undefined;
}

export type ChangePayload<T = Row> =
  | InsertChange<T>
  | UpdateChange<T>
  | HiddenUpdateChange<T>
  | DeleteChange<T>
  | TruncatedChange<T>
  | TruncateChange;

export interface ChangeMessage<T = Row> {
  sub: string;
  type: "change";
  seq: number;
  epoch: string;
  change: ChangePayload<T>;
  /** The last change of its transaction for this subscription (stands for a commit marker). */
  commit?: true;
}

/** The server's end-of-transaction marker (when the last change did not carry `commit`). */
export interface CommitMessage {
  sub: string;
  type: "commit";
  seq: number;
  epoch: string;
  xid: number;
}

/** A transaction's changes, whole: the subscription's `commit` event. */
export interface CommitEvent<T = Row> {
  sub: string;
  type: "commit";
  seq: number;
  epoch: string;
  xid: number | null;
  /** The transaction's changes that this subscription received, in order. */
  changes: ChangeMessage<T>[];
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

export interface SnapshotMessage<T = Row> {
  sub: string;
  type: "snapshot";
  seq: number;
  epoch: string;
  complete: boolean;
  rows: T[];
}

export type ResyncReason = "epoch_changed" | "out_of_range" | "check_backlog" | "undeliverable_change";

export interface ResyncRequiredMessage {
  sub: string;
  type: "resync_required";
  reason: ResyncReason | string;
  epoch: string;
  seq: number;
}

export interface TableRenamedMessage {
  sub: string;
  type: "table_renamed";
  schema: string;
  table: string;
}

export interface WelcomeMessage {
  type: "welcome";
  protocol: number;
  server: string;
  epoch: string;
  /** Only for a connection that already has a role. */
  seq?: number;
  role?: string;
  auth?: "required";
}

export interface AckMessage {
  type: "ack";
  id?: string;
  request: "subscribe" | "unsubscribe" | "auth";
  seq?: number;
  epoch?: string;
  /** subscribe: whether `since` was honoured. */
  resumed?: boolean;
  /** auth: the role and the token's expiry (seconds since the Unix epoch). */
  role?: string;
  expires?: number;
}

export interface PongMessage {
  type: "pong";
  id?: string;
  seq: number;
}

export interface ErrorMessage {
  type: "error";
  code: ErrorCode | string;
  message: string;
  /** The request's id, when it had one. */
  id?: string;
  /** A live subscription the server ended (no `id`). */
  sub?: string;
}

/** Every message the server sends (docs/PROTOCOL.md). */
export type ServerMessage<T = Row> =
  | WelcomeMessage
  | AckMessage
  | PongMessage
  | ErrorMessage
  | ChangeMessage<T>
  | CommitMessage
  | SnapshotMessage<T>
  | NotifyMessage
  | ResyncRequiredMessage
  | TableRenamedMessage;

export interface ResyncEvent {
  sub: string;
  /** The server's reason, or "not_resumed" (the server ignored `since`). */
  reason: ResyncReason | "not_resumed" | string;
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

export type ErrorCode =
  // from the server (docs/PROTOCOL.md)
  | "malformed_json" | "invalid_message" | "unknown_type" | "unknown_table" | "untracked_table"
  | "bad_filter" | "bad_channel" | "duplicate_subscription" | "unknown_subscription"
  | "too_many_subscriptions" | "limit_exceeded" | "unauthenticated" | "permission_denied"
  | "invalid_token" | "token_expired" | "token_not_yet_valid" | "unknown_role" | "role_mismatch"
  | "snapshot_failed" | "snapshot_timeout" | "internal_error"
  // from the client
  | "auth_required" | "auth_failed" | "disconnected" | "banned" | "token_unavailable"
  | "handler_error" | "send_failed"
  | "connect_failed" | "malformed_message" | "protocol_version";

export interface ServerError {
  code: ErrorCode | string;
  message: string;
  id?: string;
  /**
   * The subscription the server ended (a privilege was revoked, its table dropped); it is
   * removed from `subscriptions` and not subscribed again.
   */
  sub?: string;
  /** "auth" for a refused token (`invalid_token`, ..., `role_mismatch`). */
  request?: "auth";
  /** 4001 to 4005 for errors reported when the server closed the connection. */
  closeCode?: number;
  error?: unknown;
}

export interface AuthEvent {
  /** The role the connection now acts as. */
  role: string;
  /** The token's expiry, in seconds since the Unix epoch, or null when it has none. */
  expires: number | null;
  /** false for a connection's first token, true for a fresh one on the same connection. */
  refreshed: boolean;
}

/** The subscription's table was renamed; later subscribes name it `schema.table`. */
export interface RenamedEvent {
  sub: string;
  schema: string;
  table: string;
}

export interface SubscriptionEvents<T = Row> {
  ack: AckEvent;
  change: ChangeMessage<T>;
  commit: CommitEvent<T>;
  notify: NotifyMessage;
  snapshot: SnapshotMessage<T>;
  resync: ResyncEvent;
  renamed: RenamedEvent;
  error: ServerError;
}

export type SubscriptionHandlers<T = Row> = {
  [K in keyof SubscriptionEvents<T>]?: (event: SubscriptionEvents<T>[K]) => void;
};

export interface ClientEvents {
  connecting: { url: string; attempt: number };
  /** The welcome. `role`: set when the server knows it already (anonymous role);
   *  `auth: "required"`: the server needs a token. */
  open: { epoch: string; seq: number; protocol: number; server: string; role: string | null; auth: "required" | null };
  /** The server accepted a token (subscriptions are sent right after the first). */
  auth: AuthEvent;
  closed: { code: number; reason: string; wasClean: boolean; willReconnect: boolean };
  reconnecting: { delay: number; attempt: number };
  /** Every parsed server message, before it is dispatched. */
  message: ServerMessage;
  error: ServerError;
}

declare class Emitter<Events> {
  on<K extends keyof Events>(event: K, fn: (payload: Events[K]) => void): () => void;
  off<K extends keyof Events>(event: K, fn: (payload: Events[K]) => void): void;
  once<K extends keyof Events>(event: K, fn: (payload: Events[K]) => void): () => void;
  listenerCount(event: keyof Events): number;
}

export interface TableSpec<T = Row> {
  /** `name` or `schema.name` */
  table: string;
  ops?: Op[];
  filter?: { [K in keyof T]?: Scalar };
  /** Current rows first, and again after every resync. */
  snapshot?: boolean;
}

export declare class Subscription<T = Row> extends Emitter<SubscriptionEvents<T>> {
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
  /** The role the current connection acts as (welcome or auth ack), or null. */
  role: string | null;
  /** The current token's expiry in seconds since the Unix epoch, or null. */
  expires: number | null;
  /** The token used on connect when there is no getToken. */
  token: string | null;
  readonly getToken: (() => TokenResult | Promise<TokenResult>) | null;
  attempt: number;
  readonly subscriptions: Map<string, Subscription>;
  connect(): void;
  close(code?: number, reason?: string): void;
  /** `subscribeTable<Todo>(...)` types rows, snapshots and changes as `Todo`. */
  subscribeTable<T extends object = Row>(id: string, spec: TableSpec<T>, handlers?: SubscriptionHandlers<T>): Subscription<T>;
  subscribeChannel(id: string, channel: string, handlers?: SubscriptionHandlers): Subscription;
  unsubscribe(id: string): boolean;
  ping(): boolean;
  /**
   * Replace the token: used on the next connects when there is no getToken, and sent at
   * once on an open connection (a fresh token, or the first one when the server is
   * waiting for it). After a refused token stopped the client, call connect() too.
   */
  setToken(token: string | null): void;
}

export declare class SubscriptionState<T = Row> {
  epoch: string | null;
  seq: number | null;
  commitSeq: number | null;
  pending: ChangeMessage<T>[];
  since(): Position | null;
  begin(since: Position | null): void;
  isDuplicate(msg: { epoch?: string; seq?: number }): boolean;
  handle(msg: any, connectionEpoch?: string | null): Array<[keyof SubscriptionEvents, any]>;
}

export declare function backoffDelay(attempt: number, options?: BackoffOptions, random?: () => number): number;
/** Milliseconds from `now` until a token expiring at `expires` (seconds) should be refreshed. */
export declare function refreshDelay(expires: number, now?: number, options?: TokenRefreshOptions): number;
export declare function toWebSocketUrl(base: string | URL, path?: string): string;

/** The columns that identify a row: one, several (in order), or a function of the row. */
export type KeySpec<T = Row> = (keyof T & string) | (keyof T & string)[] | ((row: Partial<T>) => unknown);

/** A live table's state; the same object until the next change (compare by identity). */
export interface LiveTableState<T = Row> {
  /** The rows, in the order they were first seen. */
  readonly rows: readonly T[];
  /** The rows by key (JSON of the key column's value, or of the key columns' values; a key function's string as it is). */
  readonly byKey: ReadonlyMap<string, T>;
  /** Keys of rows known only partly: a change too large to send carried just the key. */
  readonly partial: ReadonlySet<string>;
  /**
   * "connecting": not subscribed yet, or the connection is down (rows kept; a resume or
   * a resync follows); "ready"; "resyncing": a snapshot that replaces the rows follows;
   * "error": the subscription was refused or ended (see `error`); "closed".
   */
  readonly status: "connecting" | "ready" | "resyncing" | "error" | "closed";
  /** false when the snapshot was cut at plank.snapshot_limit. */
  readonly complete: boolean;
  /** true when changes may be missing (a resync without a snapshot, a partition's TRUNCATE without one). */
  readonly stale: boolean;
  readonly error: ServerError | null;
  readonly resyncReason: ResyncEvent["reason"] | null;
  readonly epoch: string | null;
  readonly seq: number | null;
  /** Increases with every change of this state. */
  readonly version: number;
}

export interface LiveTableSpec<T = Row> extends TableSpec<T> {
  /** The key columns (default "id"): the primary key, which `old` and `key` carry. */
  key?: KeySpec<T>;
  /** More handlers of the subscription's events, called after the store applied them. */
  on?: SubscriptionHandlers<T>;
}

/**
 * The rows of one table subscription by key (no I/O): feed it the subscription's events;
 * listeners are called after each snapshot, transaction and status change.
 */
export declare class TableRows<T = Row> {
  constructor(options?: { key?: KeySpec<T> });
  /** Add a listener; returns a function that removes it. */
  subscribe(listener: () => void): () => void;
  getSnapshot(): LiveTableState<T>;
  /** By the key column's value, the key columns' values, or an object with the key columns. */
  get(key: unknown): T | undefined;
  snapshot(msg: SnapshotMessage<T>): void;
  commit(tx: CommitEvent<T>): void;
  resync(ev: ResyncEvent): void;
  ack(ev: AckEvent): void;
  fail(err: ServerError): void;
  disconnected(): void;
  closed(): void;
}

/** A table subscription whose rows are kept by key (subscribes with `snapshot: true` by default). */
export declare class LiveTable<T = Row> extends TableRows<T> {
  constructor(client: PlankClient, id: string, spec: LiveTableSpec<T>);
  readonly client: PlankClient;
  readonly id: string;
  readonly subscription: Subscription<T>;
  /** Subscribe again with a fresh snapshot that replaces the rows. */
  reload(): void;
  /** Unsubscribe (the rows stay). */
  close(): void;
}

export declare function liveTable<T extends object = Row>(client: PlankClient, id: string, spec: LiveTableSpec<T>): LiveTable<T>;
export declare function keyFunction<T = Row>(key?: KeySpec<T>): (row: Partial<T>) => string | null;

export default PlankClient;
