// Renames the wasm-bindgen glue's references after `wasm-opt --minify-imports-and-exports-and-modules`.
//
// wasm-bindgen names every import `__wbg_<name>_<16 hex digits>` and exports the Rust symbols by their full
// names; both are spelled out in the .wasm and again in the JS glue, and the hashes do not compress. wasm-opt
// renames them to one or two letters and prints the old → new mapping (JSON) on stdout; this script applies
// that mapping to the glue and checks the result against the minified module, so that a glue shape it does not
// understand fails the build instead of shipping a package that cannot instantiate.
//
// Usage: node scripts/minify-names.mjs <mapping.json> <module.wasm> <glue.js>   (rewrites glue.js in place)
import { readFileSync, writeFileSync } from 'node:fs';

const [mappingPath, wasmPath, gluePath] = process.argv.slice(2);
if (!gluePath) {
  console.error('usage: minify-names.mjs <mapping.json> <module.wasm> <glue.js>');
  process.exit(2);
}
const mapping = JSON.parse(readFileSync(mappingPath, 'utf8'));
const module = new WebAssembly.Module(readFileSync(wasmPath));
let glue = readFileSync(gluePath, 'utf8');

const fail = (message) => {
  console.error(`minify-names: ${message}`);
  process.exit(1);
};
const escape = (name) => name.replace(/[$]/g, '\\$');
const ident = '[\\w$]';

// Imports: the keys of the import object (`name: function (...) {...}`), and the module name keying it.
const modules = new Set(WebAssembly.Module.imports(module).map((i) => i.module));
if (modules.size !== 1) fail(`expected one import module, found ${[...modules].join(', ')}`);
const [newModule] = modules;
const quoted = (name) => escape(name).replace(/[./]/g, '\\$&');
// Functions of JS snippets (`#[wasm_bindgen(module = ...)]`) that need no adapter are imported straight from the
// snippet's namespace (`"./snippets/…/x.js": importN` in the import object); wasm-opt moved them into the one
// module, so the glue now provides them beside the others, under their new names.
const snippetImports = mapping.imports.filter(([oldModule]) => oldModule.startsWith('./snippets/'));
if (snippetImports.length) {
  const entries = snippetImports.map(([oldModule, oldName, newName]) => {
    const binding = glue.match(new RegExp(`(["'])${quoted(oldModule)}\\1\\s*:\\s*(${ident}+)`));
    if (!binding) fail(`import module ${oldModule} not found in the glue`);
    return `${newName}: ${binding[2]}.${oldName}`;
  });
  for (const oldModule of new Set(snippetImports.map(([oldModule]) => oldModule))) {
    glue = glue.replace(new RegExp(`\\s*(["'])${quoted(oldModule)}\\1\\s*:\\s*${ident}+,?`, 'g'), '');
  }
  const main = /(["'])\.\/presence_client_bg\.js\1\s*:\s*(import0),/;
  if (!main.test(glue)) fail('the import object of the module itself not found in the glue');
  glue = glue.replace(main, `$1./presence_client_bg.js$1: { ...$2, ${entries.join(', ')} },`);
}
const oldModules = new Set(mapping.imports.map(([oldModule]) => oldModule).filter((m) => !m.startsWith('./snippets/')));
for (const oldModule of oldModules) {
  const key = new RegExp(`(["'])${quoted(oldModule)}\\1(\\s*:)`, 'g');
  if (!key.test(glue)) fail(`import module ${oldModule} not found in the glue`);
  glue = glue.replace(key, `"${newModule}"$2`);
}
for (const [oldModule, oldName, newName] of mapping.imports) {
  if (oldModule.startsWith('./snippets/')) continue;
  const key = new RegExp(`(?<!${ident})${escape(oldName)}(?=\\s*:)`, 'g');
  if (!key.test(glue)) fail(`import ${oldName} not found in the glue`);
  glue = glue.replace(key, newName);
}

// Exports: every use is a property access on the instance's exports (`wasm.name`).
for (const [oldName, newName] of mapping.exports) {
  const access = new RegExp(`(?<=\\.)${escape(oldName)}(?!${ident})`, 'g');
  glue = glue.replace(access, newName);
}

// Nothing of the old names may remain, and every import of the module must be provided.
for (const [oldModule, oldName] of mapping.imports) {
  if (oldModule.startsWith('./snippets/')) continue;
  if (new RegExp(`(?<!${ident})${escape(oldName)}(?!${ident})`).test(glue)) fail(`import ${oldName} still in the glue`);
}
for (const [oldName] of mapping.exports) {
  if (new RegExp(`\\.${escape(oldName)}(?!${ident})`).test(glue)) fail(`export ${oldName} still in the glue`);
}
for (const { name } of WebAssembly.Module.imports(module)) {
  if (!new RegExp(`[{,]\\s*${escape(name)}\\s*:`).test(glue)) fail(`import ${name} missing from the glue`);
}
writeFileSync(gluePath, glue);
