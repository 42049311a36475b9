// Checks the shape of the Rust sources: no file outside tests over 700 lines, no import cycle between modules
// (a module is one file; `use` of `crate::`, `self::` and `super::` paths are its edges, `mod` declarations are
// not), no loop between the top-level folders (a folder is every module under it: `hub/` importing `cluster/`
// while anything in `cluster/` imports `hub/` is a loop), and no IO or clock in the server's presence engine.
// Usage: node scripts/check-layout.mjs [src-dir ...]   (default: server/src src)
import { readFileSync, readdirSync, statSync, existsSync } from 'node:fs';
import { join, relative, dirname, basename } from 'node:path';

const MAX_LINES = 700;
const roots = process.argv.length > 2 ? process.argv.slice(2) : ['server/src', 'src'];
const ENGINE = 'server/src/presence';
const ENGINE_FORBIDDEN = [/\btokio\b/, /\baxum\b/, /\brusqlite\b/, /Utc::now/, /SystemTime/, /\bInstant\b/];

let failures = 0;
const fail = (msg) => {
  failures += 1;
  console.error(`check-layout: ${msg}`);
};

function files(dir) {
  const out = [];
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) out.push(...files(path));
    else if (name.endsWith('.rs')) out.push(path);
  }
  return out;
}

/** The module path of a file under `root`: `a/b.rs` and `a/b/mod.rs` are both `a::b`; lib.rs and main.rs are the root. */
function moduleOf(root, file) {
  const rel = relative(root, file).replace(/\.rs$/, '');
  const parts = rel.split('/');
  const last = parts[parts.length - 1];
  if (last === 'mod' || ((last === 'lib' || last === 'main') && parts.length === 1)) parts.pop();
  return parts;
}

/** Whether a file is test-only code: a `tests.rs` module or a file under a `tests` folder. */
const isTest = (file) => basename(file) === 'tests.rs' || basename(file).endsWith('_tests.rs') || file.split('/').includes('tests');

/** Source without comments and string literals (a rough lexer, enough for `use` paths). */
function stripped(text) {
  return text
    .replace(/\/\*[\s\S]*?\*\//g, '')
    .replace(/\/\/.*$/gm, '')
    .replace(/"(?:[^"\\]|\\.)*"/g, '""');
}

/** Expand `a::{b, c::d}` into `a::b`, `a::c::d` (nested braces too). */
function expand(path) {
  const open = path.indexOf('{');
  if (open < 0) return [path];
  const head = path.slice(0, open);
  let depth = 0;
  let close = -1;
  for (let i = open; i < path.length; i++) {
    if (path[i] === '{') depth++;
    if (path[i] === '}' && --depth === 0) {
      close = i;
      break;
    }
  }
  const inner = path.slice(open + 1, close);
  const items = [];
  let cur = '';
  depth = 0;
  for (const ch of inner) {
    if (ch === '{') depth++;
    if (ch === '}') depth--;
    if (ch === ',' && depth === 0) {
      items.push(cur);
      cur = '';
    } else cur += ch;
  }
  items.push(cur);
  return items.map((s) => s.trim()).filter(Boolean).flatMap((s) => expand(head + s));
}

for (const root of roots) {
  if (!existsSync(root)) continue;
  const all = files(root);
  const modules = new Map(); // "a::b" -> file
  for (const f of all) modules.set(moduleOf(root, f).join('::'), f);

  const edges = new Map(); // module -> Set(module)
  for (const file of all) {
    const text = readFileSync(file, 'utf8');
    const lines = text.split('\n').length - (text.endsWith('\n') ? 1 : 0);
    if (!isTest(file) && lines > MAX_LINES) fail(`${file} has ${lines} lines (at most ${MAX_LINES} outside tests)`);
    if (isTest(file)) continue;
    const here = moduleOf(root, file);
    // The module `self::` refers to, and its parent for `super::`.
    const selfPath = here;
    const code = stripped(text).replace(/#\[cfg\(test\)\]\s*mod\s+\w+\s*\{[\s\S]*$/m, '');
    if (file.startsWith(ENGINE + '/') || file === ENGINE + '.rs') {
      for (const re of ENGINE_FORBIDDEN) if (re.test(code)) fail(`${file} uses ${re.source} (the engine has no IO and no clock)`);
    }
    const targets = new Set();
    const paths = [];
    for (const m of code.matchAll(/\buse\s+([^;]+);/g)) paths.push(...expand(m[1].replace(/\s+/g, '')));
    for (const m of code.matchAll(/(?<![\w:])((?:crate|self|super)(?:::\w+)+)/g)) paths.push(m[1]);
    // A child module named without `self::` (`mod timer;` ... `timer::run`).
    for (const m of code.matchAll(/\bmod\s+(\w+)\s*;/g)) {
      if (new RegExp(`(?<![\\w:])${m[1]}::\\w`).test(code.replace(/\bmod\s+\w+\s*;/g, ''))) paths.push(`self::${m[1]}`);
    }
    for (const p of paths) {
      let segs = p.split('::');
      let base;
      if (segs[0] === 'crate') base = [];
      else if (segs[0] === 'self') base = [...selfPath];
      else if (segs[0] === 'super') {
        base = [...selfPath];
        while (segs[0] === 'super') {
          base.pop();
          segs = segs.slice(1);
        }
        segs = ['super', ...segs];
      } else continue;
      const rest = segs.slice(1).filter((s) => s !== '*' && !/\bas\b/.test(s)).map((s) => s.replace(/as\w+$/, ''));
      // The deepest module the path names.
      let target = null;
      for (let n = rest.length; n >= 0; n--) {
        const key = [...base, ...rest.slice(0, n)].join('::');
        if (modules.has(key)) {
          target = key;
          break;
        }
      }
      const me = here.join('::');
      if (target !== null && target !== me) targets.add(target);
    }
    edges.set(here.join('::'), targets);
  }

  // Cycles: depth-first search, reporting each cycle once.
  const state = new Map();
  const stack = [];
  const reported = new Set();
  const visit = (m) => {
    state.set(m, 1);
    stack.push(m);
    for (const t of edges.get(m) ?? []) {
      if (!edges.has(t)) continue;
      if (state.get(t) === 1) {
        const cycle = stack.slice(stack.indexOf(t)).concat(t);
        const key = [...cycle].sort().join(' ');
        if (!reported.has(key)) {
          reported.add(key);
          fail(`import cycle in ${root}: ${cycle.map((c) => c || 'crate').join(' -> ')}`);
        }
      } else if (!state.has(t)) visit(t);
    }
    stack.pop();
    state.set(m, 2);
  };
  for (const m of edges.keys()) if (!state.has(m)) visit(m);

  // Folder loops: the same search on the graph of top-level folders.
  const folderOf = (m) => {
    const top = m.split('::')[0];
    return top && existsSync(join(root, top)) && statSync(join(root, top)).isDirectory() ? top : null;
  };
  const folderEdges = new Map();
  for (const [from, targets] of edges) {
    const a = folderOf(from);
    if (!a) continue;
    if (!folderEdges.has(a)) folderEdges.set(a, new Set());
    for (const t of targets) {
      const b = folderOf(t);
      if (b && b !== a) folderEdges.get(a).add(b);
    }
  }
  const folderState = new Map();
  const folderStack = [];
  const visitFolder = (f) => {
    folderState.set(f, 1);
    folderStack.push(f);
    for (const t of folderEdges.get(f) ?? []) {
      if (folderState.get(t) === 1) {
        const loop = folderStack.slice(folderStack.indexOf(t)).concat(t);
        const key = [...loop].sort().join(' ');
        if (!reported.has(key)) {
          reported.add(key);
          fail(`folder loop in ${root}: ${loop.map((f) => `${f}/`).join(' -> ')}`);
        }
      } else if (!folderState.has(t)) visitFolder(t);
    }
    folderStack.pop();
    folderState.set(f, 2);
  };
  for (const f of folderEdges.keys()) if (!folderState.has(f)) visitFolder(f);
  const folderLinks = [...folderEdges.values()].reduce((n, s) => n + s.size, 0);
  console.log(`check-layout: ${root}: ${all.length} files, ${[...edges.values()].reduce((n, s) => n + s.size, 0)} module edges, ${folderLinks} folder links`);
}

if (failures) {
  console.error(`check-layout: ${failures} problem(s)`);
  process.exit(1);
}
console.log('check-layout: ok');
