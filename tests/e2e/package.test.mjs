// End-to-end: the npm package as a user gets it. `npm pack ./pkg` makes the tarball, a fresh Vite app installs it
// from the file, `tsc` checks the app against the package's exports map and types, `vite build` bundles it, and the
// built app runs in headless Chromium against the real server without calling init(): it connects with a dev
// token, sees itself online, and shows the package's classes under their own names. Node imports the installed
// package and uses it without init() too.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, readdirSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, API_KEY, closePage, launchBrowser, openPage, startServer, tempDir } from './harness.mjs';

const run = (cmd, args, cwd) => execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

let tmp;
let browser;
let server;
before(async () => {
  tmp = tempDir();
});
after(async () => {
  await browser?.close();
  await server?.stop();
  tmp?.cleanup();
});

const MAIN_JS = `
import { Client, Channel, EventSubscription } from 'presence-client';
import manifest from 'presence-client/package.json';

// No init(): the module starts itself when imported.
const out = { version: manifest.version };
try {
  const client = new Client(${JSON.stringify(API_KEY)}, { baseURL: location.origin });
  const me = await client.connectUser({ id: 'vite-user', name: 'Vite' }, client.devToken('vite-user'));
  const sub = client.on('health.check', () => {});
  const channel = client.channel('messaging', 'vite-room', { members: ['vite-user'] });
  const state = await channel.watch({ presence: true });
  out.me = me.me.id;
  out.online = me.me.online;
  out.members = state.members.map((m) => m.user.id);
  out.names = [Client.name, Channel.name, EventSubscription.name, client.constructor.name, sub.constructor.name];
  sub.unsubscribe();
  await client.disconnectUser();
} catch (e) {
  out.error = String(e && e.stack || e);
}
window.result = out;
`;

const MAIN_TS = `
import init, { Client, type UserResponse } from 'presence-client';
export async function start(): Promise<UserResponse | undefined> {
  await init();
  const client = new Client('key', { baseURL: 'http://127.0.0.1:1' });
  const open = await client.connectUser({ id: 'a' }, client.devToken('a'));
  return open.me;
}
`;

test('the packed tarball installs into a fresh Vite app, type-checks, builds and connects in Chromium', async () => {
  const pkgDir = join(ROOT, 'pkg');
  assert.ok(existsSync(join(pkgDir, 'package.json')), 'pkg/ holds the package (npm run build)');

  // The tarball holds the package's files only, with its own README and the license.
  const [packed] = JSON.parse(run('npm', ['pack', pkgDir, '--pack-destination', tmp.dir, '--json'], ROOT));
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, [
    'LICENSE', 'README.md', 'index.d.ts', 'package.json', 'presence_client.js', 'presence_client.js.map',
    'presence_client_bg.wasm', 'react.d.ts', 'react.js',
  ]);
  const tarball = join(tmp.dir, packed.filename);
  const readme = readFileSync(join(ROOT, 'npm', 'README.md'), 'utf8');
  assert.match(readme, /npm pack \.\/pkg/, 'the package README says how to get the package');
  assert.ok(readme.length < 8000, 'the package README is for users, not the repository README');

  // A fresh app: installs the tarball from the file, no registry involved (the package has no dependencies).
  const app = join(tmp.dir, 'app');
  mkdirSync(join(app, 'src'), { recursive: true });
  writeFileSync(join(app, 'package.json'), JSON.stringify({ name: 'app', private: true, type: 'module' }));
  writeFileSync(join(app, 'index.html'), '<!doctype html><title>app</title><link rel="icon" href="data:,"><script type="module" src="/src/main.js"></script>');
  writeFileSync(join(app, 'src', 'main.js'), MAIN_JS);
  writeFileSync(join(app, 'src', 'check.ts'), MAIN_TS);
  writeFileSync(join(app, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, target: 'es2022', module: 'esnext', moduleResolution: 'bundler',
      lib: ['es2022', 'dom'], types: [],
    },
    files: ['src/check.ts'],
  }));
  run('npm', ['install', tarball, '--no-audit', '--no-fund', '--offline'], app);
  const installed = JSON.parse(readFileSync(join(app, 'node_modules', 'presence-client', 'package.json'), 'utf8'));
  assert.equal(installed.exports['.'].types, './index.d.ts');
  // The React bindings are an entry of their own; React is an optional peer, so the install brought none.
  const reactEntry = run('node', ['--input-type=module', '-e',
    "console.log(import.meta.resolve('presence-client/react'))"], app).trim();
  assert.ok(reactEntry.endsWith('/node_modules/presence-client/react.js'), reactEntry);
  assert.ok(!existsSync(join(app, 'node_modules', 'react')), 'react is not installed by the package');

  // Node (SSR, tests): the module reads its wasm from disk when imported.
  const inNode = run('node', ['--input-type=module', '-e', `
    import { Client } from 'presence-client';
    const client = new Client('key', { baseURL: 'http://127.0.0.1:1' });
    console.log(JSON.stringify({ name: client.constructor.name, token: client.devToken('n').split('.').length }));
  `], app);
  assert.deepEqual(JSON.parse(inNode), { name: 'Client', token: 3 });

  // Types resolve through the exports map; a wrong use is caught (so the check can fail).
  run(join(ROOT, 'node_modules', '.bin', 'tsc'), ['--project', 'tsconfig.json'], app);
  writeFileSync(join(app, 'src', 'check.ts'), `${MAIN_TS}\nnew Client(42);\n`);
  assert.throws(() => run(join(ROOT, 'node_modules', '.bin', 'tsc'), ['--project', 'tsconfig.json'], app),
    (e) => /TS2345/.test(e.stdout));
  writeFileSync(join(app, 'src', 'check.ts'), MAIN_TS);

  // Vite bundles the module and emits the wasm next to it. Unminified, as in development: an app's own production
  // minifier renames the package's classes like everything else.
  run('node', [join(ROOT, 'node_modules', 'vite', 'bin', 'vite.js'), 'build', '--minify', 'false', '--logLevel', 'warn'],
    app);
  const assets = readdirSync(join(app, 'dist', 'assets'));
  assert.ok(assets.some((f) => f.endsWith('.wasm')), `a .wasm asset in ${assets}`);
  assert.ok(assets.some((f) => f.endsWith('.js')), `a .js asset in ${assets}`);

  // The built app, served by the server, connects in Chromium.
  server = await startServer({ db: join(tmp.dir, 'p.db'), staticDir: join(app, 'dist') });
  browser = await launchBrowser();
  const page = await openPage(browser, `${server.url}/index.html`);
  await page.waitForFunction(() => window.result, null, { timeout: 20_000 });
  const result = await page.evaluate(() => window.result);
  assert.equal(result.error, undefined, result.error);
  assert.equal(result.version, installed.version);
  assert.equal(result.me, 'vite-user');
  assert.equal(result.online, true);
  assert.deepEqual(result.members, ['vite-user']);
  assert.deepEqual(result.names, ['Client', 'Channel', 'EventSubscription', 'Client', 'EventSubscription']);
  assert.deepEqual(page.problems, []);
  await closePage(page);
});
