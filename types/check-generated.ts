// Type-checked, never run, after a wasm build: the hand-written types/index.d.ts must declare exactly the exports
// and class members that wasm-bindgen generated from the Rust API (pkg/presence_client.d.ts, typed `any`
// there). A member added to or removed from a `#[wasm_bindgen]` surface fails here, naming it, until
// index.d.ts follows; check.ts then pins its argument and result types.

import type * as Generated from '../pkg/presence_client.js';
import type * as Typed from './index.js';

/** [names only the first has, names only the second has]: both `never` when the two agree. */
type Difference<A, B> = [Exclude<keyof A, keyof B>, Exclude<keyof B, keyof A>];
type Agree<D extends [never, never]> = D;

// createPresenceStore is written in JS (npm/store.js), not generated: check.ts pins its types.
export type ModuleExports = Agree<Difference<Omit<typeof Typed, 'createPresenceStore'>, typeof Generated>>;
export type ClientMembers = Agree<Difference<Typed.Client, Generated.Client>>;
export type ChannelMembers = Agree<Difference<Typed.Channel, Generated.Channel>>;
export type EventSubscriptionMembers = Agree<Difference<Typed.EventSubscription, Generated.EventSubscription>>;

// The comparison can fail: two different classes do not agree.
// @ts-expect-error Client and Channel have different members
export type ClientIsNotChannel = Agree<Difference<Typed.Client, Generated.Channel>>;
