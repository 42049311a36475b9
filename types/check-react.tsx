// Type-checked, never run (`npm run typecheck`): uses every export of presence-client/react as an app would. The
// `@ts-expect-error` lines must stay errors.

import { StrictMode, useState } from 'react';
import type { Client, ConnectionState, PresenceError, UserResponse } from './index.js';
import {
  PresenceProvider,
  useConnectionState,
  usePresenceClient,
  usePresenceEvent,
  usePresenceSnapshot,
  useUser,
  useUsers,
} from './react.js';

function Dot({ id }: { id: string }) {
  const user: UserResponse | undefined = useUser(id);
  return <span title={user?.last_active}>{user?.online ? 'online' : 'offline'}</span>;
}

function Team({ ids }: { ids: string[] }) {
  const team: readonly UserResponse[] = useUsers(ids);
  const state: ConnectionState = useConnectionState();
  const client: Client | null = usePresenceClient();
  const snapshot = usePresenceSnapshot();
  const [last, setLast] = useState('');
  usePresenceEvent('user.presence.changed', (event) => setLast(event.user.id));
  usePresenceEvent('connection.changed', (event) => setLast(String(event.online)));
  usePresenceEvent('all', (event) => setLast(event.type));
  return (
    <ul data-state={state} data-me={snapshot.me?.id} data-client={client?.userID} data-last={last}>
      {team.map((user) => (
        <li key={user.id}>
          {user.name ?? user.id}: {user.status} <Dot id={user.id} />
        </li>
      ))}
      <Dot id={useUser(undefined)?.id ?? 'nobody'} />
    </ul>
  );
}

export function App({ token, client }: { token: string; client: Client }) {
  return (
    <StrictMode>
      <PresenceProvider
        apiKey="KEY"
        baseURL="http://127.0.0.1:7070"
        options={{ timeout: 5_000 }}
        user={{ id: 'alice', name: 'Alice', invisible: false }}
        tokenOrProvider={token}
        onConnectError={(error: PresenceError) => console.log(error.code)}
      >
        <Team ids={['bob', 'carol']} />
      </PresenceProvider>
      <PresenceProvider apiKey="KEY" user={{ id: 'alice' }} tokenOrProvider={async () => token}>
        <Dot id="bob" />
      </PresenceProvider>
      <PresenceProvider client={client}>
        <Dot id="bob" />
      </PresenceProvider>
    </StrictMode>
  );
}

export function Misuse({ client }: { client: Client }) {
  // @ts-expect-error a provider needs a client or what connects one
  const missing = <PresenceProvider user={{ id: 'alice' }} />;
  // @ts-expect-error not both a client and a connection
  const both = <PresenceProvider client={client} apiKey="KEY" user={{ id: 'a' }} tokenOrProvider="t" />;
  // @ts-expect-error no such event
  usePresenceEvent('user.presence.change', () => {});
  // @ts-expect-error `useUsers` takes ids
  useUsers('bob');
  return (
    <>
      {missing}
      {both}
    </>
  );
}
