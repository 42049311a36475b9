// The React test app, built with `vite build` against the package in pkg/ (as `presence-client` and
// `presence-client/react` resolve in an app that installed it) and React from the workspace.
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vite';

const pkg = (file) => fileURLToPath(new URL(`../../pkg/${file}`, import.meta.url));

export default defineConfig({
  root: fileURLToPath(new URL('.', import.meta.url)),
  logLevel: 'warn',
  resolve: {
    alias: [
      { find: /^presence-client\/react$/, replacement: pkg('react.js') },
      { find: /^presence-client$/, replacement: pkg('presence_client.js') },
    ],
  },
  build: { emptyOutDir: true, target: 'es2022' },
});
