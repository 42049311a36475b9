// Types of presence-client/react: a provider that owns or is given a client, and hooks over the presence store.

/**
 * React bindings: `PresenceProvider` and hooks over the presence store (React 18 or 19).
 * @module presence-client/react
 */

import type { ReactNode } from 'react';
import type {
  Client,
  ClientOptions,
  ConnectionState,
  EventOfType,
  EventType,
  PresenceError,
  PresenceEvent,
  PresenceSnapshot,
  TokenOrProvider,
  UserInput,
  UserResponse,
} from './index.js';

/** A provider that connects: one connection per (apiKey, baseURL, user id, token string), StrictMode-safe. */
export interface OwnedConnectionProps {
  apiKey: string;
  baseURL?: string;
  /** The other options of `new Client` (`baseURL` above takes precedence). */
  options?: ClientOptions;
  /** Connected as given; only its `id` chooses the connection. */
  user: UserInput;
  /** A token, or a provider of tokens: the latest provider given is called, and changing it does not reconnect. */
  tokenOrProvider: TokenOrProvider;
  /** Called when `connectUser` fails (by default the failure is logged with `console.error`). */
  onConnectError?: (error: PresenceError) => void;
  client?: undefined;
  children?: ReactNode;
}

/** A provider of an app's client, used as it is: the app connects and disconnects it. */
export interface GivenClientProps {
  client: Client;
  children?: ReactNode;
}

export type PresenceProviderProps = OwnedConnectionProps | GivenClientProps;

export function PresenceProvider(props: PresenceProviderProps): ReactNode;

/** The provider's client; `null` until a provider that connects has mounted (and on the server). */
export function usePresenceClient(): Client | null;

/** The snapshot's connection. */
export function useConnectionState(): ConnectionState;

/** The whole snapshot (re-renders on every change: prefer the narrower hooks). */
export function usePresenceSnapshot(): PresenceSnapshot;

/** User `id` as last known, live (`undefined` while unknown); follows their presence. */
export function useUser(id: string | undefined): UserResponse | undefined;

/** The known users among `ids`, in that order, live; the same array while none of them changed. */
export function useUsers(ids: readonly string[]): readonly UserResponse[];

/** Calls `handler` with each event of `type` (`'all'`: every event); the latest handler given is called. */
export function usePresenceEvent<T extends EventType>(type: T, handler: (event: EventOfType<T>) => void): void;
export function usePresenceEvent(type: 'all', handler: (event: PresenceEvent) => void): void;
