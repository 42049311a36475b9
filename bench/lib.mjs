// Shared pieces of the benchmarks: paths, the server as a child process, headless Chromium, statistics, and the
// wire helpers (dev tokens, connect URLs) a raw WebSocket client needs to speak to presence-server.
import { spawn, spawnSync, execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const SERVER_BIN = process.env.PRESENCE_SERVER_BIN || join(ROOT, 'target', 'release', 'presence-server');
export const CHROMIUM = process.env.CHROMIUM_BIN || '/usr/bin/chromium';
// Without the background-networking flags Chromium floods a closed network with requests of its own.
export const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

/** True when the module at `url` is the script node was started with. */
export const isMain = (url) => process.argv[1] && url === pathToFileURL(resolve(process.argv[1])).href;

/** `--name value` / `--flag` arguments into an object; numbers are converted. */
export function parseArgs(argv = process.argv.slice(2)) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    if (!arg.startsWith('--')) continue;
    const name = arg.slice(2).replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) {
      out[name] = true;
    } else {
      out[name] = /^-?\d+(\.\d+)?$/.test(next) ? Number(next) : next;
      i++;
    }
  }
  return out;
}

// ---- statistics ----------------------------------------------------------------------------------------------

/** The q-quantile (0..1) of numbers, nearest-rank. */
export function quantile(values, q) {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil(q * sorted.length) - 1));
  return sorted[rank];
}
export const median = (values) => {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};

/** Formats a number with `digits` decimals and thousands separators. */
export function fmt(value, digits = 0) {
  if (value === undefined || value === null || Number.isNaN(value)) return '–';
  return value.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

// ---- the machine and the commit --------------------------------------------------------------------------------

export function commitInfo() {
  const git = (...args) => execFileSync('git', args, { cwd: ROOT, encoding: 'utf8' }).trim();
  const commit = git('rev-parse', 'HEAD');
  const dirty = git('status', '--porcelain', '--untracked-files=no', '--', '.', ':!BENCHMARKS.md') !== '';
  return { commit, short: commit.slice(0, 10), subject: git('log', '-1', '--format=%s'), dirty };
}

export function machineInfo() {
  const cpu = cpus();
  const chromium = spawnSync(CHROMIUM, ['--version'], { encoding: 'utf8' }).stdout?.trim() || 'unknown';
  return {
    cpu: `${cpu.length} × ${cpu[0]?.model?.trim() || 'unknown'}`,
    load: loadavg().map((l) => l.toFixed(2)).join(' / '),
    node: process.version,
    chromium,
  };
}

// ---- builds ----------------------------------------------------------------------------------------------------

function run(cmd, args) {
  const result = spawnSync(cmd, args, { cwd: ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  if (result.status !== 0) throw new Error(`${cmd} ${args.join(' ')} failed (${result.status ?? result.signal})`);
}

/** Builds the release server (cargo skips the work when it is current). */
export function buildServer() {
  if (process.env.PRESENCE_SERVER_BIN) return;
  run('cargo', ['build', '--release', '-p', 'presence-server']);
}

/** Builds both in one cargo run: built apart, each would get other dependency features and rebuild the other's. */
export function buildServerAndLoadgen() {
  const packages = [
    ...(process.env.PRESENCE_SERVER_BIN ? [] : ['-p', 'presence-server']),
    ...(process.env.PRESENCE_LOADGEN_BIN ? [] : ['-p', 'presence-loadgen']),
  ];
  if (packages.length) run('cargo', ['build', '--release', ...packages]);
}

/** Builds the cluster ceiling benchmark (server/examples/ceiling); apart from the server, as examples add the
 *  dev-dependencies' features. */
export function buildCeiling() {
  if (process.env.PRESENCE_CEILING_BIN) return;
  run('cargo', ['build', '--release', '-p', 'presence-server', '--example', 'ceiling']);
}

/** Builds the wasm package into pkg/ (scripts/build-wasm.sh, which also prints its size). */
export function buildWasm() {
  run('bash', ['scripts/build-wasm.sh']);
}

// ---- presence-server as a child process ----------------------------------------------------------------------

export const API_KEY = 'bench-key';
export const API_SECRET = 'bench-secret-0123456789';

/** Every child process started here, killed hard if the process leaves without stopping them. */
const children = new Set();
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.once(signal, () => {
    for (const child of children) child.kill('SIGKILL');
    process.exit(128 + (signal === 'SIGINT' ? 2 : 15));
  });
}

/**
 * Starts presence-server on a free loopback port with an in-memory database and dev tokens (`extraArgs` may name
 * another `--db` or an `--admin-addr`); resolves once it prints `listening on URL` (and, with an admin address,
 * `admin listening on URL`). Returns { url, wsUrl, adminUrl, pid, stop() }.
 */
export async function startServer(extraArgs = [], bin = SERVER_BIN) {
  if (!existsSync(bin)) throw new Error(`no server binary at ${bin} (cargo build --release -p presence-server)`);
  // The load generator's clients write faster than the per-user write pace allows: the benchmarks measure the
  // fan-out, not the limiter. Its connections answer pings but send no health.check of their own, which the
  // client silence rule would close after 150 s.
  const defaults = [['--db', ':memory:'], ['--admin-addr', 'off'], ['--user-writes-per-minute', '0'],
    ['--client-silence-ms', '0']]
    .filter(([flag]) => !extraArgs.includes(flag));
  const admin = extraArgs.includes('--admin-addr') && extraArgs[extraArgs.indexOf('--admin-addr') + 1] !== 'off';
  const args = ['--addr', '127.0.0.1:0', '--api-key', API_KEY, '--api-secret', API_SECRET, '--dev-tokens',
    ...defaults.flat(), ...extraArgs];
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, RUST_LOG: 'warn' } });
  children.add(child);
  let output = '';
  const keep = (chunk) => { output = (output + chunk).slice(-8000); };
  child.stderr.on('data', keep);
  const exited = new Promise((done) => child.once('exit', (code, signal) => {
    children.delete(child);
    done({ code, signal });
  }));
  const { url, adminUrl } = await new Promise((done, fail) => {
    const timer = setTimeout(() => fail(new Error(`server did not start within 15 s:\n${output}`)), 15_000);
    child.stdout.on('data', (chunk) => {
      keep(chunk);
      const match = /^listening on (http:\/\/\S+)/m.exec(output);
      const adminMatch = /^admin listening on (http:\/\/\S+)/m.exec(output);
      if (match && (!admin || adminMatch)) {
        clearTimeout(timer);
        done({ url: match[1], adminUrl: adminMatch?.[1] });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      fail(new Error(`server exited (${code ?? signal}) before listening:\n${output}`));
    });
  });
  return {
    url,
    wsUrl: url.replace(/^http/, 'ws'),
    adminUrl,
    pid: child.pid,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5_000);
      const result = await exited;
      clearTimeout(timer);
      return result;
    },
  };
}

/** A server token (`{"server": true}`) minted by the server binary itself. */
export function serverToken(bin = SERVER_BIN) {
  return execFileSync(bin, ['token', '--server', '--api-secret', API_SECRET], { encoding: 'utf8' }).trim();
}

// ---- wire helpers --------------------------------------------------------------------------------------------

/** A development token as `client.devToken(id)` makes it (standard base64 payload, signature `devtoken`). */
export const devToken = (id) =>
  `eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.${Buffer.from(JSON.stringify({ user_id: id })).toString('base64')}.devtoken`;

/** The `/connect` URL a client of user `id` opens against `wsBase`. */
export function connectUrl(wsBase, id, details = {}) {
  const json = encodeURIComponent(JSON.stringify({ user_id: id, user_details: { id, ...details } }));
  return `${wsBase}/connect?json=${json}&api_key=${API_KEY}&authorization=${devToken(id)}&stream-auth-type=jwt`;
}

/** Resolves after `ms` milliseconds. */
export const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** Reads package.json's pinned version of an npm package. */
export function pinnedVersion(name) {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'node_modules', name, 'package.json'), 'utf8'));
  return pkg.version;
}
