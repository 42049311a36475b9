// Checks the output of `cargo test --workspace` against the tests the sources declare: every test target of every
// workspace package must have run, and reported at least as many tests as its files declare. A target that
// silently runs fewer tests (a file that no longer compiles its tests in, a module left out, a binary that exits
// early) fails the suite as surely as a failing test.
//
// Declared: the lines starting with `#[test]` or `#[tokio::test` in the target's root file and every module file
// it reaches through `mod name;` (name.rs or name/mod.rs beside it, or in the folder of a non-root file), so a
// helper module shared by several test files counts in each; `#[path = "..."]` is followed. A file whose first
// inner attribute is `#![cfg(target_arch = "wasm32")]`, or a `mod` under `#[cfg(target_arch = "wasm32")]`,
// declares nothing natively. Which target a test binary belongs to comes from cargo's own build messages. Reported: `running N tests` after the target's `Running` line (ignored tests included). Doc tests
// are not declared by attributes and are not checked.
//
// Usage: node scripts/test-counts.mjs CARGO_TEST_OUTPUT_FILE [CARGO_TEST_ARGS...]   (default: --workspace; the
// same package selection as the run, so that cargo names the same binaries)
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join, relative, basename } from 'node:path';

const [logFile, ...cargoArgs] = process.argv.slice(2);
if (!logFile) {
  console.error('usage: node scripts/test-counts.mjs CARGO_TEST_OUTPUT_FILE [CARGO_TEST_ARGS...]');
  process.exit(2);
}
if (cargoArgs.length === 0) cargoArgs.push('--workspace');

const meta = JSON.parse(
  execFileSync('cargo', ['metadata', '--no-deps', '--format-version', '1'], {
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  }),
);

const TEST_ATTR = /^\s*#\[(test|tokio::test)\b/;
const WASM_ONLY = /#!?\[cfg\(\s*target_arch\s*=\s*"wasm32"\s*\)\]/;

/** Tests declared in `file` and the module files it reaches. */
function declared(file, isRoot, seen = new Set()) {
  if (seen.has(file)) return 0;
  seen.add(file);
  const lines = readFileSync(file, 'utf8').split('\n');
  const firstInner = lines.find((l) => l.trim().startsWith('#!['));
  if (firstInner && WASM_ONLY.test(firstInner)) return 0;
  let count = 0;
  const folder = isRoot || basename(file) === 'mod.rs' ? dirname(file) : file.replace(/\.rs$/, '');
  lines.forEach((line, i) => {
    if (TEST_ATTR.test(line)) count += 1;
    const m = line.match(/^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+([A-Za-z0-9_]+)\s*;/);
    if (!m) return;
    // The attributes right above the declaration: a wasm-only module declares nothing here; `#[path]` names the
    // file, relative to this file's folder.
    const attrs = [];
    for (let j = i - 1; j >= 0 && lines[j].trim().startsWith('#['); j--) attrs.push(lines[j]);
    if (attrs.some((a) => WASM_ONLY.test(a))) return;
    const pathAttr = attrs.map((a) => a.match(/#\[path\s*=\s*"([^"]+)"\]/)).find(Boolean);
    const candidates = pathAttr
      ? [join(dirname(file), pathAttr[1])]
      : [join(folder, `${m[1]}.rs`), join(folder, m[1], 'mod.rs')];
    const found = candidates.find((c) => existsSync(c));
    if (!found) throw new Error(`${file}: cannot find the file of \`mod ${m[1]};\``);
    count += declared(found, false, seen);
  });
  return count;
}

// Every test target of the workspace, by package and target name.
const targets = new Map();
for (const pkg of meta.packages) {
  if (!meta.workspace_members.includes(pkg.id)) continue;
  for (const t of pkg.targets) {
    if (t.test === false) continue;
    if (!t.kind.some((k) => ['lib', 'rlib', 'cdylib', 'bin', 'test'].includes(k))) continue;
    const key = `${pkg.id} ${t.kind.join(',')} ${t.name}`;
    const where = `${pkg.name} ${relative(dirname(pkg.manifest_path), t.src_path)}`;
    targets.set(key, { pkg: pkg.id, where, declared: declared(t.src_path, true), reported: null });
  }
}

// Which target each test binary belongs to, from cargo itself (everything is built already: this only lists).
const binaries = new Map();
const selected = new Set();
const built = execFileSync('cargo', ['test', ...cargoArgs, '--no-run', '--message-format=json'], {
  encoding: 'utf8',
  maxBuffer: 256 << 20,
  stdio: ['ignore', 'pipe', 'ignore'],
});
for (const line of built.split('\n')) {
  if (!line.startsWith('{')) continue;
  const msg = JSON.parse(line);
  if (msg.reason !== 'compiler-artifact' || !msg.executable || !msg.profile?.test) continue;
  selected.add(msg.package_id);
  binaries.set(basename(msg.executable), `${msg.package_id} ${msg.target.kind.join(',')} ${msg.target.name}`);
}

// `     Running tests/access.rs (target/debug/deps/access-83fe7cb99ca90077)` or `Running unittests src/lib.rs (...)`,
// then `running N tests`.
const log = readFileSync(logFile, 'utf8').split('\n');
let current = null;
const unknown = [];
for (const line of log) {
  const run = line.match(/^\s+Running (?:unittests )?\S+ \((.+)\)\s*$/);
  if (run) {
    current = targets.get(binaries.get(basename(run[1]))) ?? null;
    if (!current) unknown.push(line.trim());
    continue;
  }
  const n = line.match(/^running (\d+) tests?$/);
  if (n && current) {
    current.reported = Number(n[1]);
    current = null;
  }
}

const problems = [];
for (const { pkg, where, declared, reported } of targets.values()) {
  if (!selected.has(pkg)) continue;
  if (reported === null) {
    if (declared > 0) problems.push(`${where}: declares ${declared} tests but never ran`);
  } else if (reported < declared) {
    problems.push(`${where}: declares ${declared} tests, ran ${reported}`);
  }
}
for (const line of unknown) problems.push(`a test binary of no known target ran: ${line}`);

const checked = [...targets.values()].filter((t) => selected.has(t.pkg));
const total = checked.reduce((sum, t) => sum + t.declared, 0);
if (checked.length === 0) problems.push(`cargo test ${cargoArgs.join(' ')} builds no test target`);
if (problems.length > 0) {
  for (const p of problems) console.error(`test-counts: ${p}`);
  process.exit(1);
}
console.log(`test-counts: ${checked.length} test targets ran at least the ${total} tests they declare`);
