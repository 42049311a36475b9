// The package's entry point: the wasm-bindgen glue, initialised when the module is imported, so `new Client(...)`
// works without an `await init()` first. In a browser (or any bundle) the module fetches presence_client_bg.wasm
// from beside itself; where it is loaded from a file and Node's `fs` is at hand (Node 20+, SSR, test runners) it
// reads the file. `init()` and `initSync()` stay for apps that load the wasm from elsewhere: called after the
// automatic start they return the module already running; when the automatic start failed, they load it then.
import init, { initSync } from '../pkg/presence_client.js';

export { Channel, Client, EventSubscription } from '../pkg/presence_client.js';
export { createPresenceStore } from './store.js';
export { init as default, initSync };

const wasmURL = new URL('presence_client_bg.wasm', import.meta.url);
const fs = wasmURL.protocol === 'file:' ? globalThis.process?.getBuiltinModule?.('node:fs') : undefined;
try {
  if (fs) initSync({ module: fs.readFileSync(wasmURL) });
  else await init({ module_or_path: wasmURL });
} catch (cause) {
  console.warn(
    `presence-client: could not load ${wasmURL} (${cause}); call init({ module_or_path: URL }) with where it is`,
  );
}
