// Type-checked, never run (`npm run typecheck`, part of scripts/test.sh): uses every export, method, property and
// event of the package as an app would, so that types/index.d.ts cannot lose or mistype any of them. The
// `@ts-expect-error` lines must stay errors: if the types loosen, tsc reports the directive as unused.

import init, {
  initSync,
  Channel,
  Client,
  EventSubscription,
  createPresenceStore,
  type ChannelAPIResponse,
  type ConnectionState,
  type PresenceSnapshot,
  type PresenceStore,
  type ConnectionOpen,
  type EventHandler,
  type OwnUserResponse,
  type PresenceError,
  type PresenceEvent,
  type QueryUsersAPIResponse,
  type UpdateUsersAPIResponse,
  type UserResponse,
} from './index.js';

declare const wasmBytes: ArrayBuffer;

function show(...values: unknown[]): void {
  console.log(...values);
}

function showUser(user: UserResponse): void {
  const online: boolean | undefined = user.online;
  const status: string | undefined = user.status;
  const lastActive: string | undefined = user.last_active;
  const name: string | undefined = user.name;
  show(user.id, online, status, lastActive, name, user['favorite_color']);
}

export async function app(): Promise<void> {
  const output = await init({ module_or_path: '/presence_client_bg.wasm' });
  show(output.memory.buffer.byteLength);
  await init();
  await init(new URL('https://example.com/presence_client_bg.wasm'));
  initSync({ module: wasmBytes });

  const client = new Client('API_KEY', {
    baseURL: 'http://127.0.0.1:7070',
    wsBaseURL: 'ws://127.0.0.1:7070',
    timeout: 10_000,
    lastActiveRefreshInterval: 900_000,
    connectTimeout: 15_000,
    shareConnection: true,
    batchMs: 10,
  });
  new Client('API_KEY').free();
  new Client('API_KEY', { shareConnection: false }).free();

  // ---- connecting -----------------------------------------------------------------------------------------
  const token: string = client.devToken('john');
  const open: ConnectionOpen = await client.connectUser(
    { id: 'john', name: 'John', image: 'https://example.com/john.png', language: 'en', invisible: false,
      status: 'Eating a veggie burger...', privacy_settings: { typing_indicators: { enabled: false } },
      favorite_color: 'green' },
    token,
  );
  show(open.type, open.connection_id, open.cid, open.created_at, open.received_at?.getTime());
  if (open.me) {
    const me: OwnUserResponse = open.me;
    show(me.invisible, me.roles, me.unread_count, me.mutes?.length);
  }
  const other = new Client('API_KEY', { baseURL: 'http://127.0.0.1:7070' });
  await other.connectUser({ id: 'jack' }, async () => {
    const response = await fetch('/token?user=jack');
    return response.text();
  });
  await other.connectUser({ id: 'jack' }, () => 'token-from-memory');

  const user: OwnUserResponse | undefined = client.user;
  const userID: string | undefined = client.userID;
  const connectionId: string | undefined = client.connectionId;
  show(user?.invisible, userID, connectionId);
  for (const [id, cached] of Object.entries(client.state.users)) {
    show(id);
    showUser(cached);
  }

  // ---- users ----------------------------------------------------------------------------------------------
  const upserted: UpdateUsersAPIResponse = await client.upsertUser({ id: 'john', status: 'Back at work' });
  show(upserted.duration, upserted.membership_deletion_task_id);
  Object.values(upserted.users).forEach(showUser);
  await client.upsertUsers([{ id: 'jack', name: 'Jack' }, { id: 'jill', invisible: true }]);
  await client.partialUpdateUser({ id: 'john', set: { invisible: true, status: 'Away' }, unset: ['image'] });
  await client.upsertUser({ id: 'john', privacy_settings: { presence: { visible_to: 'nobody' } } });
  // @ts-expect-error: who may see presence is 'everyone' or 'nobody'
  await client.upsertUser({ id: 'john', privacy_settings: { presence: { visible_to: 'friends' } } });
  await client.partialUpdateUsers([{ id: 'jack', set: { name: 'Jack B.' } }, { id: 'jill', unset: ['status'] }]);

  const found: QueryUsersAPIResponse = await client.queryUsers(
    { id: { $in: ['jack', 'jill'] }, $or: [{ online: true }, { last_active: { $gte: '2026-01-01T00:00:00Z' } }] },
    [{ field: 'last_active', direction: -1 }],
    { presence: true, limit: 10, offset: 0, include_deactivated_users: false },
  );
  found.users.forEach(showUser);
  await client.queryUsers({ name: { $autocomplete: 'ja' } }, { last_active: -1 });
  await client.queryUsers({ id: 'jack' });

  // ---- channels -------------------------------------------------------------------------------------------
  const channel: Channel = client.channel('messaging', 'general', { members: ['john', 'jack'], name: 'General' });
  const distinct: Channel = client.channel('messaging', { members: ['john', { user_id: 'jill' }] });
  client.channel('messaging', null, { members: ['john', 'jack'] });
  client.channel('livestream', 'launch');
  const channelType: string = channel.type;
  const channelId: string | undefined = channel.id;
  const cid: string | undefined = distinct.cid;
  show(channelType, channelId, cid, channel.data);

  const watched: ChannelAPIResponse = await channel.watch({
    presence: true, state: true, watch: true, members: { limit: 100, offset: 0 }, watchers: { limit: 10 },
  });
  show(watched.duration, watched.channel.cid, watched.channel.config?.connect_events, watched.watcher_count);
  watched.members.forEach((member) => show(member.user_id, member.channel_role, member.user?.online));
  watched.watchers?.forEach(showUser);
  await distinct.query();
  await distinct.query({ watch: true, presence: true });
  await channel.watch();
  show(channel.state.watcher_count, Object.keys(channel.state.watchers));
  for (const member of Object.values(channel.state.members)) {
    if (member.user) showUser(member.user);
  }
  const stopped = await channel.stopWatching();
  show(stopped.duration);

  const channels: Channel[] = await client.queryChannels(
    { type: 'messaging', members: { $in: ['john'] } },
    [{ last_message_at: -1 }],
    { presence: true, state: true, watch: true, limit: 10, offset: 0, member_limit: 50, message_limit: 0 },
  );
  channels.forEach((c) => show(c.cid));
  await client.queryChannels({ cid: { $in: ['messaging:general'] } });

  // ---- events ---------------------------------------------------------------------------------------------
  const subscriptions: EventSubscription[] = [
    client.on('health.check', (event) => {
      show(event.type, event.connection_id, event.cid, event.me?.invisible, event.created_at, event.received_at);
    }),
    client.on('user.presence.changed', (event) => {
      showUser(event.user);
      show(event.type, event.created_at, event.received_at?.toISOString());
    }),
    client.on('user.updated', async (event) => {
      showUser(event.user);
      await Promise.resolve(event.created_at);
    }),
    client.on('user.watching.start', (event) => {
      show(event.cid, event.channel_id, event.channel_type, event.watcher_count);
      showUser(event.user);
    }),
    client.on('user.watching.stop', (event) => {
      show(event.cid, event.channel_id, event.channel_type, event.watcher_count);
      showUser(event.user);
    }),
    client.on('connection.changed', (event) => {
      const online: boolean = event.online;
      show(event.type, online);
    }),
    client.on('connection.recovered', (event) => show(event.type)),
    client.on('all', (event) => show(event.type)),
    client.on(describe),
    channel.on('user.watching.start', (event) => show(event.user.id, event.watcher_count)),
    channel.on('user.watching.stop', (event) => show(event.user.id, event.watcher_count)),
    channel.on('all', (event) => show(event.cid)),
    channel.on((event) => show(event.type, event.cid)),
  ];
  subscriptions[0]?.unsubscribe();
  subscriptions[1]?.free();
  subscriptions[2]?.[Symbol.dispose]();

  const onPresence: EventHandler<Extract<PresenceEvent, { type: 'user.presence.changed' }>> = (event) =>
    show(event.user.online);
  client.on('user.presence.changed', onPresence);
  client.off('user.presence.changed', onPresence);
  client.off('all', describe);
  client.off(describe);
  const onWatch = (event: { cid: string }) => show(event.cid);
  channel.on('user.watching.start', onWatch);
  channel.off('user.watching.start', onWatch);
  channel.off('all', onWatch);
  channel.off(onWatch);

  // ---- errors and teardown --------------------------------------------------------------------------------
  try {
    await client.queryUsers({ id: 'nobody' });
  } catch (thrown) {
    const error = thrown as PresenceError;
    show(error.code, error.StatusCode, error.status, error.message, error instanceof Error);
  }

  await client.disconnectUser();
  await other.disconnectUser(500);
  channel.free();
  distinct[Symbol.dispose]();
  client.free();
  other[Symbol.dispose]();
}

function describe(event: PresenceEvent): void {
  switch (event.type) {
    case 'health.check':
      show(event.connection_id);
      break;
    case 'user.presence.changed':
    case 'user.updated':
      showUser(event.user);
      break;
    case 'user.watching.start':
    case 'user.watching.stop':
      show(event.cid, event.watcher_count);
      break;
    case 'connection.changed':
      show(event.online);
      break;
    case 'connection.recovered':
      break;
    default: {
      const unknown: never = event;
      show(unknown);
    }
  }
}

// ---- the presence store ------------------------------------------------------------------------------------

export function storeUse(client: Client): () => void {
  const store: PresenceStore = createPresenceStore(client);
  createPresenceStore(client, { interval: 0 });
  const render = (snapshot: PresenceSnapshot): void => {
    const connection: ConnectionState = snapshot.connection;
    const me: OwnUserResponse | null = snapshot.me;
    const bob: UserResponse | undefined = snapshot.users.get('bob');
    show(connection, me?.invisible, bob?.online, snapshot.users.size);
    for (const [id, user] of snapshot.users) show(id, user.status, user.last_active);
  };
  render(store.getServerSnapshot());
  const subscription: EventSubscription = client.onStateChange(() => render(store.getSnapshot()));
  subscription.unsubscribe();
  return store.subscribe(() => render(store.getSnapshot()));
}

// ---- what must not type-check ---------------------------------------------------------------------------------

export function misuse(client: Client, channel: Channel): void {
  // @ts-expect-error no such event
  client.on('user.presence.change', () => {});
  // @ts-expect-error a channel only emits its own events
  channel.on('user.presence.changed', () => {});
  // @ts-expect-error `connection.changed` carries `online`, not `user`
  client.on('connection.changed', (event) => show(event.user));
  // @ts-expect-error `user.presence.changed` events carry the user object, not an id
  client.on('user.presence.changed', (event) => event.user.toUpperCase());
  // @ts-expect-error the API key is a string
  new Client(42);
  // @ts-expect-error shareConnection is a boolean
  new Client('API_KEY', { shareConnection: 'no' });
  // @ts-expect-error connectUser needs a token or a token provider
  void client.connectUser({ id: 'john' });
  // @ts-expect-error a user needs an id
  void client.upsertUser({ name: 'John' });
  // @ts-expect-error sort directions are 1 or -1
  void client.queryUsers({}, { last_active: 'desc' });
  // @ts-expect-error `presence` is a boolean
  void channel.watch({ presence: 'yes' });
  // @ts-expect-error `unset` lists field names
  void client.partialUpdateUser({ id: 'john', unset: 'status' });
  // @ts-expect-error the user is read-only
  client.user = undefined;
  // @ts-expect-error channels come from client.channel()
  new Channel();
  const snapshot = createPresenceStore(client).getSnapshot();
  // @ts-expect-error snapshots are immutable
  snapshot.users.set('bob', { id: 'bob' });
  // @ts-expect-error no such connection state
  const state: ConnectionState = 'online';
  show(state);
  // @ts-expect-error the store takes a Client
  createPresenceStore({});
}
