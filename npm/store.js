// createPresenceStore(client): what the client knows (the connection, the connected user, every user seen) as
// immutable snapshots behind `subscribe` / `getSnapshot` / `getServerSnapshot`, the contract of React's
// useSyncExternalStore that Vue's shallowRef and Svelte's stores can follow as well.
//
// - A snapshot is replaced only when something in it changed; users whose fields did not change keep their object
//   (structurally equal objects from the server are not new), so memoized rows keep rendering nothing.
// - The client says that something may have changed (`client.onStateChange`); the store compares at most once per
//   task, and tells its listeners at most once per `interval` ms (default 16, one frame): at once for the first
//   change after a quiet interval, then once at the end of the interval for everything that came during it. A burst
//   of presence events is a handful of notifications, not one each.
// - It listens to the client only while it has listeners; read without any, it compares on each getSnapshot().

const CONNECTION = {
  none: 'disconnected',
  first: 'connecting',
  open: 'connected',
  again: 'reconnecting',
};

/** Structural equality of JSON values (what user objects hold). */
function same(a, b) {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a === null || b === null) return false;
  if (Array.isArray(a)) {
    if (!Array.isArray(b) || a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (!same(a[i], b[i])) return false;
    return true;
  }
  if (Array.isArray(b)) return false;
  const keys = Object.keys(a);
  if (keys.length !== Object.keys(b).length) return false;
  for (const key of keys) if (!Object.hasOwn(b, key) || !same(a[key], b[key])) return false;
  return true;
}

function snapshotOf(connection, me, users) {
  return Object.freeze({ connection, me, users });
}

/**
 * A store of `client`'s presence state. `options.interval`: the shortest time between two notifications, in ms
 * (default 16; 0 notifies after every task that changed something).
 */
export function createPresenceStore(client, options) {
  if (client === null || typeof client !== 'object' || typeof client.onStateChange !== 'function') {
    throw Object.assign(new TypeError('createPresenceStore() needs a Client'), { code: 1000 });
  }
  const interval = Math.max(0, Number(options?.interval ?? 16)) || 0;
  const serverSnapshot = snapshotOf(CONNECTION.none, null, new Map());
  let snapshot = serverSnapshot;
  // The objects last seen in client.state.users, by id: an entry compares again only when its object changed.
  const seen = new Map();
  // Whether the connected user (`session`) has been connected since connectUser: reconnecting, not connecting.
  let session;
  let wasOpen = false;
  let dirty = true;
  const listeners = new Set();
  let subscription = null;
  let notified = snapshot;
  let scheduled = false;
  let lastNotice = -Infinity;

  function connectionNow() {
    const userID = client.userID;
    if (userID !== session) {
      session = userID;
      wasOpen = false;
    }
    if (userID === undefined) return CONNECTION.none;
    if (client.connectionId !== undefined) {
      wasOpen = true;
      return CONNECTION.open;
    }
    return wasOpen ? CONNECTION.again : CONNECTION.first;
  }

  function usersNow(previous) {
    const users = client.state.users;
    let changes = null;
    let count = 0;
    for (const id in users) {
      count++;
      const next = users[id];
      if (seen.get(id) === next) continue;
      seen.set(id, next);
      const kept = previous.get(id);
      if (kept === undefined || !same(kept, next)) (changes ??= new Set()).add(id);
    }
    const removed = count < seen.size;
    if (changes === null && !removed) return previous;
    const result = new Map();
    for (const [id, object] of seen) {
      if (!Object.hasOwn(users, id)) {
        seen.delete(id);
        continue;
      }
      const kept = previous.get(id);
      result.set(id, kept !== undefined && !changes?.has(id) ? kept : object);
    }
    return result;
  }

  function refresh() {
    dirty = false;
    const connection = connectionNow();
    const user = client.user ?? null;
    const me = user !== null && snapshot.me !== null && same(snapshot.me, user) ? snapshot.me : user;
    const users = usersNow(snapshot.users);
    if (connection !== snapshot.connection || me !== snapshot.me || users !== snapshot.users) {
      snapshot = snapshotOf(connection, me, users);
    }
  }

  function notify() {
    scheduled = false;
    lastNotice = Date.now();
    if (dirty) refresh();
    if (snapshot === notified) return;
    notified = snapshot;
    for (const listener of [...listeners]) {
      try {
        listener();
      } catch (error) {
        console.error('presence-client: a store listener threw', error);
      }
    }
  }

  function changed() {
    dirty = true;
    if (scheduled) return;
    scheduled = true;
    const wait = lastNotice + interval - Date.now();
    if (wait > 0) setTimeout(notify, wait);
    else queueMicrotask(notify);
  }

  return {
    subscribe(listener) {
      if (typeof listener !== 'function') {
        throw Object.assign(new TypeError('subscribe() needs a listener function'), { code: 1000 });
      }
      listeners.add(listener);
      if (subscription === null) {
        subscription = client.onStateChange(changed);
        refresh();
        notified = snapshot;
      }
      return () => {
        listeners.delete(listener);
        if (listeners.size === 0 && subscription !== null) {
          subscription.unsubscribe();
          subscription.free();
          subscription = null;
        }
      };
    },
    getSnapshot() {
      if (dirty || subscription === null) refresh();
      return snapshot;
    },
    getServerSnapshot() {
      return serverSnapshot;
    },
  };
}
