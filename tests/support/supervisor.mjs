// Runs presence-server for the browser tests and lets them restart it, since a browser cannot start processes.
//
//   node tests/support/supervisor.mjs --server target/debug/presence-server --db FILE --api-key K --api-secret S \
//        [--offline-grace-ms N] [--dev-tokens]
//
// Prints one line once ready: `supervisor http://127.0.0.1:CONTROL_PORT server http://127.0.0.1:SERVER_PORT`.
// Control endpoints (CORS-enabled, on loopback only):
//   POST /restart              kill the server and start it again on the same port with the same database file
//   POST /stop?for_ms=N        kill the server; it starts again on the same port after N ms (at most 30 s)
//   POST /start                start it now if it is stopped
//   GET  /token?user_id=ID     a JWT for ID signed with the app secret (&secret=S signs with another secret)
//   GET  /token?server=1       the server-side token (`{"server": true}`), signed with the app secret
// The server is stopped when this process ends (SIGTERM or SIGINT).
import { spawn, execFile } from 'node:child_process';
import { createServer } from 'node:http';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : fallback;
};
const bin = opt('server', 'target/debug/presence-server');
const db = opt('db', ':memory:');
const apiKey = opt('api-key', 'test-key');
const apiSecret = opt('api-secret', 'test-secret-0123456789');
const grace = opt('offline-grace-ms', '300');
const devTokens = args.includes('--dev-tokens');

let child = null;
let serverPort = 0;

function startServer() {
  return new Promise((resolve, reject) => {
    const serverArgs = ['--addr', `127.0.0.1:${serverPort}`, '--db', db, '--api-key', apiKey, '--api-secret', apiSecret,
      '--offline-grace-ms', grace, '--admin-addr', 'off'];
    if (devTokens) serverArgs.push('--dev-tokens');
    const proc = spawn(bin, serverArgs, { stdio: ['ignore', 'pipe', 'inherit'] });
    child = proc;
    let out = '';
    const timer = setTimeout(() => reject(new Error('the server did not start within 20 s')), 20_000);
    proc.stdout.on('data', (chunk) => {
      out += chunk;
      const m = out.match(/listening on http:\/\/[\d.]+:(\d+)/);
      if (m && timer) {
        clearTimeout(timer);
        serverPort = Number(m[1]);
        resolve();
      }
    });
    proc.on('exit', (code) => {
      clearTimeout(timer);
      if (child === proc) child = null;
      reject(new Error(`the server exited with ${code}: ${out}`));
    });
  });
}

function stopServer() {
  return new Promise((resolve) => {
    const proc = child;
    if (!proc) return resolve();
    child = null;
    proc.once('exit', () => resolve());
    proc.kill('SIGKILL');
  });
}

let restartTimer = null;

async function restart() {
  await stopServer();
  await start();
}

let starting = null;

// Starts the server unless it runs; concurrent calls share one start.
function start() {
  clearTimeout(restartTimer);
  restartTimer = null;
  if (!starting) starting = startUntilListening().finally(() => { starting = null; });
  return starting;
}

async function startUntilListening() {
  if (child) return;
  // The port may take a moment to be free again.
  for (let attempt = 0; ; attempt++) {
    try {
      await startServer();
      return;
    } catch (err) {
      if (attempt >= 20) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}

function token(userId, secret) {
  const args = userId === null ? ['token', '--server'] : ['token', userId];
  return new Promise((resolve, reject) => {
    execFile(bin, [...args, '--api-secret', secret], (err, stdout) => (err ? reject(err) : resolve(stdout.trim())));
  });
}

const headers = {
  'Access-Control-Allow-Origin': '*',
  'Access-Control-Allow-Methods': 'GET, POST, OPTIONS',
  'Access-Control-Allow-Headers': '*',
  'Cross-Origin-Resource-Policy': 'cross-origin',
  'Content-Type': 'text/plain',
};

const control = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  try {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, headers).end();
    } else if (req.method === 'POST' && url.pathname === '/restart') {
      await restart();
      res.writeHead(200, headers).end('restarted');
    } else if (req.method === 'POST' && url.pathname === '/stop') {
      // A test that fails while the server is down must not leave it down for the tests after it.
      const ms = Math.min(Number(url.searchParams.get('for_ms')) || 0, 30_000);
      await stopServer();
      clearTimeout(restartTimer);
      restartTimer = setTimeout(() => start().catch((err) => console.error(`restart failed: ${err}`)), ms);
      res.writeHead(200, headers).end('stopped');
    } else if (req.method === 'POST' && url.pathname === '/start') {
      await start();
      res.writeHead(200, headers).end('started');
    } else if (req.method === 'GET' && url.pathname === '/token') {
      const server = url.searchParams.has('server');
      const userId = server ? null : url.searchParams.get('user_id');
      if (!server && !userId) return res.writeHead(400, headers).end('user_id is required');
      res.writeHead(200, headers).end(await token(userId, url.searchParams.get('secret') || apiSecret));
    } else {
      res.writeHead(404, headers).end('not found');
    }
  } catch (err) {
    res.writeHead(500, headers).end(String(err));
  }
});

async function shutdown() {
  await stopServer();
  control.close();
  process.exit(0);
}
process.on('SIGTERM', shutdown);
process.on('SIGINT', shutdown);

await startServer();
control.listen(0, '127.0.0.1', () => {
  console.log(`supervisor http://127.0.0.1:${control.address().port} server http://127.0.0.1:${serverPort}`);
});
