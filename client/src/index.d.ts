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

export type ErrorCode =
  // from the server (docs/PROTOCOL.md)
  | "malformed_json" | "invalid_message" | "unknown_type" | "unknown_table" | "untracked_table"
  | "bad_filter" | "bad_channel" | "duplicate_subscription" | "unknown_subscription"
  | "too_many_subscriptions" | "unauthenticated" | "permission_denied" | "invalid_token"
  | "token_expired" | "token_not_yet_valid" | "unknown_role" | "role_mismatch" | "internal_error"
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

export interface SubscriptionEvents {
  ack: AckEvent;
  change: ChangeMessage;
  commit: CommitEvent;
  notify: NotifyMessage;
  snapshot: SnapshotMessage;
  resync: ResyncEvent;
  renamed: RenamedEvent;
  error: ServerError;
}

export type SubscriptionHandlers = {
  [K in keyof SubscriptionEvents]?: (event: SubscriptionEvents[K]) => void;
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
  subscribeTable(id: string, spec: TableSpec, handlers?: SubscriptionHandlers): Subscription;
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
/** Milliseconds from `now` until a token expiring at `expires` (seconds) should be refreshed. */
export declare function refreshDelay(expires: number, now?: number, options?: TokenRefreshOptions): number;
export declare function toWebSocketUrl(base: string | URL, path?: string): string;

export default PlankClient;
