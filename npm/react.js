// presence-client/react: a provider that connects once, and hooks that read the presence store
// (createPresenceStore) through React's useSyncExternalStore.
//
// - <PresenceProvider apiKey baseURL user tokenOrProvider> owns a connection per (apiKey, baseURL, user id, token
//   string): it is opened after the first mount and closed after the last unmount, one task later, so that React
//   StrictMode's mount, unmount and mount again reuse it (one connectUser, one socket, nothing rejected or logged).
//   A token provider function is not part of that key: the latest one given is called.
// - <PresenceProvider client={client}> uses an app's client as it is (the app connects and disconnects it).
// - useUser / useUsers follow the presence of the users they name: the ids named in one commit go out as one
//   queryUsers({ id: { $in } }, ..., { presence: true }) per 100 ids, once connected; followed ids cost nothing
//   again (the client renews the follow after every reconnect). An id the server does not know is not followed:
//   the next hook that names it (a mount, a changed id list) asks again.
// - Until the provider has mounted (and on the server) the hooks read an empty, disconnected snapshot: nothing is
//   created, nothing touches WebSocket.

import {
  createContext,
  createElement,
  useContext,
  useEffect,
  useMemo,
  useRef,
  useState,
  useSyncExternalStore,
} from 'react';
import { Client, createPresenceStore } from './presence_client.js';

/** The server's largest queryUsers page and so the most ids followed by one request. */
const FOLLOW_CHUNK = 100;

const Context = createContext(null);

const EMPTY_USERS = new Map();
const IDLE_SNAPSHOT = Object.freeze({ connection: 'disconnected', me: null, users: EMPTY_USERS });
const IDLE = {
  client: null,
  store: {
    subscribe: () => () => {},
    getSnapshot: () => IDLE_SNAPSHOT,
    getServerSnapshot: () => IDLE_SNAPSHOT,
  },
  follow: () => {},
};

/**
 * What follows users' presence for one client: ids gathered during a task go out together once the client is
 * connected. A failed request is logged and its ids can be asked for again.
 */
function follower(client, store) {
  const followed = new Set();
  let waiting = new Set();
  let queued = false;
  let unsubscribe = null;

  function send() {
    queued = false;
    if (waiting.size === 0) return;
    if (store.getSnapshot().connection !== 'connected') {
      // Sent once connected; the subscription holds the store's attention until then.
      unsubscribe ??= store.subscribe(() => {
        if (store.getSnapshot().connection === 'connected') send();
      });
      return;
    }
    unsubscribe?.();
    unsubscribe = null;
    const ids = [...waiting];
    waiting = new Set();
    for (let at = 0; at < ids.length; at += FOLLOW_CHUNK) {
      const chunk = ids.slice(at, at + FOLLOW_CHUNK);
      client
        .queryUsers({ id: { $in: chunk } }, [{ field: 'id', direction: 1 }], { presence: true, limit: chunk.length })
        .then(({ users }) => {
          // The server follows the users it has; an unknown id is asked for again by the next hook that names it.
          const found = new Set(users.map((user) => user.id));
          for (const id of chunk) if (!found.has(id)) followed.delete(id);
        })
        .catch((error) => {
          for (const id of chunk) followed.delete(id);
          // Disconnected meanwhile (1001, 1003) is no failure: a new connection follows them again.
          if (error?.code !== 1001 && error?.code !== 1003 && client.userID !== undefined) {
            console.error('presence-client/react: could not follow the presence of', chunk, error);
          }
        });
    }
  }

  return {
    follow(ids) {
      for (const id of ids) {
        if (typeof id !== 'string' || id === '' || followed.has(id)) continue;
        followed.add(id);
        waiting.add(id);
      }
      if (waiting.size > 0 && !queued) {
        queued = true;
        queueMicrotask(send);
      }
    },
    reset() {
      unsubscribe?.();
      unsubscribe = null;
      followed.clear();
      waiting.clear();
    },
  };
}

// ---- connections owned by providers ----------------------------------------------------------------------------

const connections = new Map();

function connectionKey(apiKey, baseURL, user, tokenOrProvider) {
  const token = typeof tokenOrProvider === 'string' ? tokenOrProvider : null;
  return JSON.stringify([apiKey, baseURL ?? null, user?.id ?? null, token]);
}

function retain(key, props) {
  let entry = connections.get(key);
  if (entry !== undefined) {
    clearTimeout(entry.closing);
    entry.refs++;
    entry.props = props;
    return entry;
  }
  const options = props.baseURL === undefined ? props.options : { ...props.options, baseURL: props.baseURL };
  const client = new Client(props.apiKey, options);
  const store = createPresenceStore(client);
  entry = { key, client, store, refs: 1, props, closed: false, closing: undefined };
  entry.follower = follower(client, store);
  entry.value = { key, client, store, follow: entry.follower.follow };
  connections.set(key, entry);
  const token = props.tokenOrProvider;
  const tokenArgument = typeof token === 'function' ? () => entry.props.tokenOrProvider() : token;
  client.connectUser(props.user, tokenArgument).catch((error) => {
    if (entry.closed) return;
    if (entry.props.onConnectError) entry.props.onConnectError(error);
    else console.error('presence-client/react: connectUser failed', error);
  });
  return entry;
}

function release(entry) {
  entry.refs--;
  if (entry.refs > 0) return;
  // One task later: StrictMode mounts again at once, and a provider moved in the tree mounts in the same commit.
  entry.closing = setTimeout(() => {
    if (entry.refs > 0) return;
    entry.closed = true;
    connections.delete(entry.key);
    entry.follower.reset();
    const free = () => entry.client.free();
    entry.client.disconnectUser().then(free, free);
  }, 0);
}

// ---- components and hooks --------------------------------------------------------------------------------------

/**
 * Gives its children a client: `client={client}` (used as it is), or `apiKey`, `baseURL`, `user`,
 * `tokenOrProvider` (and `options`, `onConnectError`): a connection opened after mounting and closed after
 * unmounting.
 */
export function PresenceProvider(props) {
  const { client, children } = props;
  const key = client
    ? null
    : connectionKey(props.apiKey, props.baseURL ?? props.options?.baseURL, props.user, props.tokenOrProvider);
  const given = useMemo(() => {
    if (!client) return null;
    const store = createPresenceStore(client);
    return { client, store, follow: follower(client, store).follow };
  }, [client]);
  const [owned, setOwned] = useState(null);
  const latest = useRef(props);
  latest.current = props;
  useEffect(() => {
    if (key === null) return undefined;
    const entry = retain(key, latest.current);
    setOwned(entry.value);
    return () => release(entry);
  }, [key]);
  useEffect(() => {
    const entry = key === null ? undefined : connections.get(key);
    if (entry !== undefined) entry.props = props;
  });
  const value = given ?? (owned !== null && owned.key === key ? owned : IDLE);
  return createElement(Context.Provider, { value }, children);
}

function usePresence() {
  const value = useContext(Context);
  if (value === null) throw new Error('presence-client/react: a presence hook is used outside <PresenceProvider>');
  return value;
}

/** The provider's client (`null` until an owned connection's provider has mounted). */
export function usePresenceClient() {
  return usePresence().client;
}

function useSnapshotPart(store, select, serverSelect) {
  return useSyncExternalStore(
    store.subscribe,
    () => select(store.getSnapshot()),
    () => serverSelect(store.getServerSnapshot()),
  );
}

/** The connection: 'disconnected' | 'connecting' | 'connected' | 'reconnecting'. */
export function useConnectionState() {
  const { store } = usePresence();
  const connection = (snapshot) => snapshot.connection;
  return useSnapshotPart(store, connection, connection);
}

/** The whole snapshot: `{ connection, me, users }`. */
export function usePresenceSnapshot() {
  const { store } = usePresence();
  return useSyncExternalStore(store.subscribe, store.getSnapshot, store.getServerSnapshot);
}

/** User `id` as last known (`undefined` while unknown), live; follows their presence. */
export function useUser(id) {
  const { store, follow } = usePresence();
  useEffect(() => {
    if (typeof id === 'string') follow([id]);
  }, [follow, id]);
  return useSnapshotPart(
    store,
    (snapshot) => (typeof id === 'string' ? snapshot.users.get(id) : undefined),
    () => undefined,
  );
}

const NO_USERS = Object.freeze([]);

/** The known users among `ids`, in that order, live; the same array while none of them changed. */
export function useUsers(ids) {
  const { store, follow } = usePresence();
  const key = JSON.stringify(ids);
  const list = useMemo(() => ids.filter((id) => typeof id === 'string'), [key]);
  useEffect(() => follow(list), [follow, list]);
  const memo = useRef(NO_USERS);
  const select = (snapshot) => {
    const users = [];
    for (const id of list) {
      const user = snapshot.users.get(id);
      if (user !== undefined) users.push(user);
    }
    const previous = memo.current;
    if (previous.length === users.length && users.every((user, i) => user === previous[i])) return previous;
    memo.current = users;
    return users;
  };
  return useSnapshotPart(store, select, () => NO_USERS);
}

/** Calls `handler` with each event of `type` (or of every type: 'all'); the latest handler given is called. */
export function usePresenceEvent(type, handler) {
  const { client } = usePresence();
  const latest = useRef(handler);
  useEffect(() => {
    latest.current = handler;
  });
  useEffect(() => {
    if (client === null) return undefined;
    const subscription = client.on(type, (event) => latest.current(event));
    return () => {
      subscription.unsubscribe();
      subscription.free();
    };
  }, [client, type]);
}
