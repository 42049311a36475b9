// Types of the presence-client package: the presence subset of the `stream-chat` API, as a WebAssembly module.

/**
 * The client (`Client`, mirroring `stream-chat` for presence) and the presence store (`createPresenceStore`).
 * @module presence-client
 */

/**
 * Initializes the module. Optional: the module starts itself when imported (a browser or bundle fetches
 * `presence_client_bg.wasm` from beside it; Node reads the file). Call it to load the `.wasm` from elsewhere;
 * after a successful automatic start it resolves at once.
 */
export default function init(
  moduleOrPath?:
    | { module_or_path: InitInput | Promise<InitInput> }
    | InitInput
    | Promise<InitInput>,
): Promise<InitOutput>;

/** Initializes the module synchronously from bytes or a compiled module (optional, like `init`). */
export function initSync(module: { module: SyncInitInput } | SyncInitInput): InitOutput;

export type InitInput = RequestInfo | URL | Response | BufferSource | WebAssembly.Module;
export type SyncInitInput = BufferSource | WebAssembly.Module;
export interface InitOutput {
  readonly memory: WebAssembly.Memory;
}

// ---- JSON ------------------------------------------------------------------------------------------------------

export type JSONValue = string | number | boolean | null | JSONValue[] | { [key: string]: JSONValue };

// ---- users -----------------------------------------------------------------------------------------------------

/** A user as the server returns it. Custom fields (`status` among them) are flat beside the built-in ones. */
export interface UserResponse {
  id: string;
  name?: string;
  image?: string;
  role?: string;
  language?: string;
  teams?: string[];
  /** Whether the user is online right now (invisible users always look offline to others). */
  online?: boolean;
  /** The free-text status message. */
  status?: string;
  /** RFC 3339 time of the user's last activity; refreshed on connect and every 15 minutes while connected. */
  last_active?: string;
  created_at?: string;
  updated_at?: string;
  deactivated_at?: string;
  deleted_at?: string;
  banned?: boolean;
  shadow_banned?: boolean;
  blocked_user_ids?: string[];
  [custom: string]: JSONValue | PrivacySettings | undefined;
}

/**
 * Who may see a user's presence (`online`, `last_active`, presence and watching events):
 * - `'everyone'` (the default);
 * - `'nobody'`: everyone else reads the user as offline, exactly as if they had never connected since they chose it,
 *   and the choice lasts across sessions (unlike `invisible`, the profile, `status` among it, stays visible).
 */
export type PresenceVisibility = 'everyone' | 'nobody';

/** `privacy_settings`: Stream's `typing_indicators` and `read_receipts`, and who may see the user's presence. */
export interface PrivacySettings {
  typing_indicators?: { enabled?: boolean };
  read_receipts?: { enabled?: boolean };
  presence?: { visible_to?: PresenceVisibility };
  [setting: string]: JSONValue | undefined;
}

/** The connected user's own object: the public fields plus the own-only ones. */
export interface OwnUserResponse extends UserResponse {
  invisible?: boolean;
  /** Read back by the user alone: nobody else ever sees it. */
  privacy_settings?: PrivacySettings;
  devices?: JSONValue[];
  mutes?: JSONValue[];
  channel_mutes?: JSONValue[];
  unread_count?: number;
  total_unread_count?: number;
  unread_channels?: number;
  unread_threads?: number;
  roles?: string[];
}

/** What `connectUser` and `upsertUser` accept: an id plus settable fields. */
export interface UserInput {
  id: string;
  name?: string;
  image?: string;
  language?: string;
  /** Appear offline to everyone else; persists until set to `false`. */
  invisible?: boolean;
  status?: string;
  /** `{ presence: { visible_to: 'nobody' } }` hides the user's presence from everyone else, across sessions. */
  privacy_settings?: PrivacySettings;
  [custom: string]: JSONValue | PrivacySettings | undefined;
}

export interface PartialUserUpdate {
  id: string;
  set?: { [field: string]: JSONValue };
  unset?: string[];
}

/** A token string, or an async function returning one (called again when the token expires, code 40). */
export type TokenOrProvider = string | TokenProvider;
export type TokenProvider = () => Promise<string> | string;

// ---- filters and sort ------------------------------------------------------------------------------------------

export type FilterValue = string | number | boolean | null;

export interface FieldOperators {
  $eq?: FilterValue;
  $ne?: FilterValue;
  $gt?: string | number;
  $gte?: string | number;
  $lt?: string | number;
  $lte?: string | number;
  $in?: FilterValue[];
  $nin?: FilterValue[];
  $exists?: boolean;
  $autocomplete?: string;
  $q?: string;
  $contains?: FilterValue;
}

export type FieldCondition = FilterValue | FieldOperators;

export interface LogicalOperators<F> {
  $and?: F[];
  $or?: F[];
  $nor?: F[];
}

export type UserFilters = LogicalOperators<UserFilters> & {
  [field: string]: FieldCondition | UserFilters[] | undefined;
};

export type ChannelFilters = LogicalOperators<ChannelFilters> & {
  [field: string]: FieldCondition | ChannelFilters[] | undefined;
};

export type AscDesc = 1 | -1;
/** `{ field: 'last_active', direction: -1 }`, or `{ last_active: -1 }` as in stream-chat. */
export type SortParam = { field: string; direction?: AscDesc } | { [field: string]: AscDesc };
export type Sort = SortParam | SortParam[];

// ---- options ---------------------------------------------------------------------------------------------------

export interface ClientOptions {
  /** REST base URL; the WebSocket URL is derived from it (http → ws). Default `https://chat.stream-io-api.com`. */
  baseURL?: string;
  /** WebSocket base URL, when not derived from `baseURL`. */
  wsBaseURL?: string;
  /** REST request timeout in ms (default 10000). */
  timeout?: number;
  /** How often `last_active` is refreshed while connected, in ms (default 900000: 15 minutes). */
  lastActiveRefreshInterval?: number;
  /** How long `connectUser` keeps trying before it rejects, in ms (default 15000). */
  connectTimeout?: number;
  /**
   * Share one WebSocket with the other tabs of this browser that connect the same user to the same server with the
   * same API key (default true; only `false` opts out). Without Web Locks or BroadcastChannel, or outside a page,
   * each client keeps its own socket.
   */
  shareConnection?: boolean;
  /**
   * The batching window asked of the server, in ms (default 10; 0: none; at most 50): events the server has for
   * this client within it arrive as one WebSocket message, and listeners still get each on its own, in order.
   */
  batchMs?: number;
}

export interface UserOptions {
  /** Subscribe this connection to the presence of the returned users (re-established after every reconnect). */
  presence?: boolean;
  limit?: number;
  offset?: number;
  include_deactivated_users?: boolean;
}

export interface PaginationOptions {
  limit?: number;
  offset?: number;
}

export interface ChannelQueryOptions {
  /** Subscribe to the presence of the channel's members (re-established after every reconnect). */
  presence?: boolean;
  state?: boolean;
  watch?: boolean;
  members?: PaginationOptions;
  watchers?: PaginationOptions;
}

export interface ChannelOptions {
  presence?: boolean;
  state?: boolean;
  watch?: boolean;
  limit?: number;
  offset?: number;
  member_limit?: number;
  message_limit?: number;
}

export interface ChannelData {
  members?: Array<string | { user_id: string; channel_role?: string }>;
  [custom: string]: JSONValue | undefined;
}

// ---- responses -------------------------------------------------------------------------------------------------

export interface APIResponse {
  duration: string;
}

export interface ConnectionOpen {
  type: 'health.check';
  connection_id: string;
  cid?: string;
  created_at?: string;
  me?: OwnUserResponse;
  received_at?: Date;
}

export interface UpdateUsersAPIResponse extends APIResponse {
  users: { [id: string]: UserResponse };
  membership_deletion_task_id?: string;
}

export interface QueryUsersAPIResponse extends APIResponse {
  users: UserResponse[];
}

export interface ChannelConfig {
  /** Whether watchers of channels of this type get presence events of members. */
  connect_events: boolean;
  name?: string;
  [key: string]: JSONValue | undefined;
}

export interface ChannelResponse {
  id: string;
  type: string;
  cid: string;
  created_at?: string;
  updated_at?: string;
  created_by?: UserResponse;
  frozen?: boolean;
  disabled?: boolean;
  member_count?: number;
  config?: ChannelConfig;
  own_capabilities?: string[];
  [custom: string]: JSONValue | UserResponse | ChannelConfig | undefined;
}

export interface ChannelMemberResponse {
  user_id?: string;
  user?: UserResponse;
  channel_role?: string;
  created_at?: string;
  updated_at?: string;
  banned?: boolean;
  shadow_banned?: boolean;
  notifications_muted?: boolean;
}

export interface ChannelAPIResponse extends APIResponse {
  channel: ChannelResponse;
  members: ChannelMemberResponse[];
  messages: JSONValue[];
  pinned_messages: JSONValue[];
  threads?: JSONValue[];
  read?: JSONValue[];
  watchers?: UserResponse[];
  watcher_count?: number;
  membership?: ChannelMemberResponse | null;
}

export interface ChannelState {
  /** Members by user id; `members[id].user` follows presence events. */
  members: { [userId: string]: ChannelMemberResponse };
  /** Watchers by user id. */
  watchers: { [userId: string]: UserResponse };
  watcher_count: number;
}

export interface ClientState {
  /** Every user the client has seen, by id, replaced by each event about them. */
  users: { [userId: string]: UserResponse };
}

// ---- errors ----------------------------------------------------------------------------------------------------

/**
 * Codes of failures that did not come from a server answer (API codes, all below 100, come from the server).
 * 1000 invalid argument (e.g. a `baseURL` that is no http(s) URL) · 1001 not connected (call connectUser first) ·
 * 1002 the first connection could not be established (at once when nothing, or something other than a presence
 * server, answers at `baseURL`; the message names the URL and the cause) · 1003 connectUser cancelled by
 * disconnectUser · 1004 network error or timeout · 1005 the answer was not the expected JSON · 1006 the token
 * provider threw or rejected (its message included).
 */
export type ClientErrorCode = 1000 | 1001 | 1002 | 1003 | 1004 | 1005 | 1006;

/** Every rejection is a real `Error` carrying `code`, plus `StatusCode`/`status` when a server answered. */
export interface PresenceError extends Error {
  code: number;
  StatusCode?: number;
  status?: number;
}

// ---- events ----------------------------------------------------------------------------------------------------

interface EventBase {
  created_at?: string;
  /** Set by the client when the event arrived. */
  received_at?: Date;
}

export interface HealthCheckEvent extends EventBase {
  type: 'health.check';
  connection_id?: string;
  cid?: string;
  me?: OwnUserResponse;
}

export interface UserPresenceChangedEvent extends EventBase {
  type: 'user.presence.changed';
  user: UserResponse;
}

export interface UserUpdatedEvent extends EventBase {
  type: 'user.updated';
  user: UserResponse;
}

export interface UserWatchingStartEvent extends EventBase {
  type: 'user.watching.start';
  cid: string;
  channel_id?: string;
  channel_type?: string;
  user: UserResponse;
  watcher_count: number;
}

export interface UserWatchingStopEvent extends EventBase {
  type: 'user.watching.stop';
  cid: string;
  channel_id?: string;
  channel_type?: string;
  user: UserResponse;
  watcher_count: number;
}

/** Local: the client's own connection went up (at once) or down (5 s after the socket failed, if still down). */
export interface ConnectionChangedEvent {
  type: 'connection.changed';
  online: boolean;
}

/** Local: after a reconnect, every subscription was made again and changed users were reported. */
export interface ConnectionRecoveredEvent {
  type: 'connection.recovered';
}

export type PresenceEvent =
  | HealthCheckEvent
  | UserPresenceChangedEvent
  | UserUpdatedEvent
  | UserWatchingStartEvent
  | UserWatchingStopEvent
  | ConnectionChangedEvent
  | ConnectionRecoveredEvent;

export type EventType = PresenceEvent['type'];
export type EventOfType<T extends EventType> = Extract<PresenceEvent, { type: T }>;
export type EventHandler<E extends PresenceEvent = PresenceEvent> = (event: E) => void | Promise<void>;

export interface Unsubscribe {
  unsubscribe(): void;
}

declare global {
  interface SymbolConstructor {
    /**
     * Declared so that the classes' `[Symbol.dispose]` type-checks without the `esnext.disposable` lib; at run
     * time it exists where the engine has explicit resource management (`using`).
     */
    readonly dispose: unique symbol;
  }
}

// ---- classes ---------------------------------------------------------------------------------------------------

export class Client {
  constructor(apiKey: string, options?: ClientOptions);
  /** Releases the Rust side of the object (also done by the garbage collector). */
  free(): void;
  /** `free()`, for `using` declarations (where the runtime has `Symbol.dispose`). */
  [Symbol.dispose](): void;

  /** The connected user, kept current by events; `undefined` when disconnected. */
  readonly user: OwnUserResponse | undefined;
  readonly userID: string | undefined;
  readonly state: ClientState;
  /** The server's id of the open connection. */
  readonly connectionId: string | undefined;

  /** A development token (accepted only by servers with auth checks disabled). */
  devToken(userID: string): string;

  /** Connects the user; resolves to the first `health.check` (with `me`). */
  connectUser(user: UserInput, userTokenOrProvider: TokenOrProvider): Promise<ConnectionOpen>;
  /** Closes the connection (peers see the user offline at once) and forgets the user; nothing reconnects. */
  disconnectUser(timeout?: number): Promise<void>;

  upsertUser(userObject: UserInput): Promise<UpdateUsersAPIResponse>;
  upsertUsers(users: UserInput[]): Promise<UpdateUsersAPIResponse>;
  partialUpdateUser(partialUserObject: PartialUserUpdate): Promise<UpdateUsersAPIResponse>;
  partialUpdateUsers(users: PartialUserUpdate[]): Promise<UpdateUsersAPIResponse>;

  queryUsers(filterConditions: UserFilters, sort?: Sort, options?: UserOptions): Promise<QueryUsersAPIResponse>;
  queryChannels(filterConditions: ChannelFilters, sort?: Sort, options?: ChannelOptions): Promise<Channel[]>;

  channel(channelType: string, channelID: string | null | undefined, custom?: ChannelData): Channel;
  channel(channelType: string, custom?: ChannelData): Channel;

  on<T extends EventType>(eventType: T, callback: EventHandler<EventOfType<T>>): EventSubscription;
  on(eventType: 'all', callback: EventHandler): EventSubscription;
  on(callback: EventHandler): EventSubscription;
  off<T extends EventType>(eventType: T, callback: EventHandler<EventOfType<T>>): void;
  off(eventType: 'all', callback: EventHandler): void;
  off(callback: EventHandler): void;

  /**
   * `listener()` runs after anything `state.users`, `user`, `userID` or `connectionId` shows may have changed
   * (possibly several times in one task, possibly when nothing did). Low level: `createPresenceStore` builds
   * comparable snapshots on it.
   */
  onStateChange(listener: () => void): EventSubscription;
}

export type ChannelEvent = UserWatchingStartEvent | UserWatchingStopEvent;

export class Channel {
  private constructor();
  free(): void;
  [Symbol.dispose](): void;

  readonly type: string;
  readonly id: string | undefined;
  readonly cid: string | undefined;
  /** The channel object of the last answer (before any: the data given to `client.channel()`). */
  readonly data: ChannelResponse | ChannelData;
  readonly state: ChannelState;

  /** Gets or creates the channel and watches it; `{ presence: true }` subscribes to its members' presence. */
  watch(options?: ChannelQueryOptions): Promise<ChannelAPIResponse>;
  /** Gets or creates the channel; watches only with `{ watch: true }`. */
  query(options?: ChannelQueryOptions): Promise<ChannelAPIResponse>;
  stopWatching(): Promise<APIResponse>;

  /** Listeners of this channel's events (those carrying its `cid`). */
  on<T extends ChannelEvent['type']>(eventType: T, callback: EventHandler<EventOfType<T>>): EventSubscription;
  on(eventType: 'all', callback: EventHandler<ChannelEvent>): EventSubscription;
  on(callback: EventHandler<ChannelEvent>): EventSubscription;
  off<T extends ChannelEvent['type']>(eventType: T, callback: EventHandler<EventOfType<T>>): void;
  off(eventType: 'all', callback: EventHandler<ChannelEvent>): void;
  off(callback: EventHandler<ChannelEvent>): void;
}

/** What `on()` returns. */
export class EventSubscription implements Unsubscribe {
  private constructor();
  free(): void;
  [Symbol.dispose](): void;
  unsubscribe(): void;
}

// ---- the presence store ----------------------------------------------------------------------------------------

/**
 * The client's connection: `connecting` until the first connection opens, `reconnecting` while a connection that
 * was open is being made again (from the moment the socket is lost), `disconnected` with no user.
 */
export type ConnectionState = 'disconnected' | 'connecting' | 'connected' | 'reconnecting';

/** What a client knows, immutable: a new snapshot only when something in it changed. */
export interface PresenceSnapshot {
  readonly connection: ConnectionState;
  /** The connected user's own object; `null` when disconnected. */
  readonly me: OwnUserResponse | null;
  /**
   * Every user the client knows (`client.state.users`), by id. A user whose fields did not change keeps its object
   * from one snapshot to the next.
   */
  readonly users: ReadonlyMap<string, UserResponse>;
}

export interface PresenceStoreOptions {
  /**
   * The shortest time between two notifications, in ms (default 16). The first change after a quiet interval is
   * told at the end of its task; the changes during an interval, once at its end. 0: after every task that changed
   * something.
   */
  interval?: number;
}

/** React's `useSyncExternalStore` contract; Vue's `shallowRef` and Svelte's stores can follow it too. */
export interface PresenceStore {
  /** Calls `listener` (with no argument) after the snapshot changed; returns the function that unsubscribes. */
  subscribe(listener: () => void): () => void;
  /** The current snapshot: the same object until something in it changed. */
  getSnapshot(): PresenceSnapshot;
  /** For server rendering: disconnected, no user, no users. */
  getServerSnapshot(): PresenceSnapshot;
}

/** A store of `client`'s presence state; it listens to the client while it has listeners. */
export function createPresenceStore(client: Client, options?: PresenceStoreOptions): PresenceStore;
