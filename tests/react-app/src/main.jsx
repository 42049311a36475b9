// A roster of online dots, status and last-active, written with presence-client/react as an app would, under
// StrictMode. The page reads who it is from its URL (?key=…&user=…&token=…&watch=bob,carol&crowd=…) and shows what it counts
// for the test on `window.app`: committed renders per component (React's Profiler), effect mounts, presence events,
// the clients the provider gave, the WebSockets opened, and unhandled rejections.
import { Profiler, StrictMode, memo, useEffect, useState } from 'react';
import { createRoot } from 'react-dom/client';
import {
  PresenceProvider,
  useConnectionState,
  usePresenceClient,
  usePresenceEvent,
  useUser,
  useUsers,
} from 'presence-client/react';

const params = new URLSearchParams(location.search);
const me = params.get('user');
const watched = (params.get('watch') ?? '').split(',').filter(Boolean);
const crowdIds = (params.get('crowd') ?? '').split(',').filter(Boolean);

const app = { renders: {}, mounts: 0, presenceEvents: 0, rejections: [], client: null, clients: new Set(), sockets: 0 };
window.app = app;
// Every WebSocket the page opens.
window.WebSocket = class extends window.WebSocket {
  constructor(...args) {
    super(...args);
    app.sockets++;
  }
};
addEventListener('unhandledrejection', (event) => app.rejections.push(String(event.reason?.stack ?? event.reason)));

const count = (id) => {
  app.renders[id] = (app.renders[id] ?? 0) + 1;
};

const Row = memo(function Row({ user }) {
  const online = user.online === true;
  return (
    <li data-testid="row" data-user={user.id} data-online={String(online)} data-status={user.status ?? ''}
      data-last-active={user.last_active ?? ''}>
      <span className={online ? 'dot online' : 'dot'} /> {user.name ?? user.id}
      {user.status ? ` · ${user.status}` : ''}
      {user.last_active ? ` · last active ${new Date(user.last_active).toLocaleTimeString()}` : ''}
    </li>
  );
});

function Roster() {
  const users = useUsers(watched);
  return (
    <ul data-testid="roster">
      {users.map((user) => (
        <Row key={user.id} user={user} />
      ))}
    </ul>
  );
}

function Watcher({ id }) {
  const user = useUser(id);
  return (
    <p data-testid={`watch-${id}`} data-online={String(user?.online === true)}>
      {id}: {user?.online ? 'online' : 'offline'}
    </p>
  );
}

/** How many of the crowd are online. */
function Crowd() {
  const crowd = useUsers(crowdIds);
  return <p data-testid="crowd" data-online={crowd.filter((user) => user.online === true).length} />;
}

function Connection() {
  const state = useConnectionState();
  return <p data-testid="connection" data-state={state}>{state}</p>;
}

function Probe() {
  const client = usePresenceClient();
  useEffect(() => {
    app.client = client;
    if (client !== null) app.clients.add(client);
  }, [client]);
  usePresenceEvent('user.presence.changed', () => {
    app.presenceEvents++;
    app.lastEventAt = Date.now();
  });
  return null;
}

function App() {
  // app.remount(): the provider is unmounted and a new one mounted in the same commit (a new key).
  const [generation, setGeneration] = useState(0);
  useEffect(() => {
    app.mounts++;
    app.remount = () => setGeneration((g) => g + 1);
  }, []);
  return (
    <PresenceProvider key={generation} apiKey={params.get('key')} baseURL={location.origin} user={{ id: me, name: me.toUpperCase() }}
      tokenOrProvider={params.get('token')}>
      <Connection />
      <Probe />
      <Profiler id="roster" onRender={() => count('roster')}>
        <Roster />
      </Profiler>
      <Profiler id="crowd" onRender={() => count('crowd')}>
        <Crowd />
      </Profiler>
      {watched.slice(0, 1).map((id) => (
        <Profiler key={id} id={`watch-${id}`} onRender={() => count(`watch-${id}`)}>
          <Watcher id={id} />
        </Profiler>
      ))}
    </PresenceProvider>
  );
}

createRoot(document.getElementById('root')).render(
  <StrictMode>
    <App />
  </StrictMode>,
);
