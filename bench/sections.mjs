// In-place update of an existing BENCHMARKS.md (`npm run bench -- --only NAME`): the sections re-measured replace
// their namesakes (a `## N. Title` section, or a `### Title` block inside one), each stamped with its own commit,
// date, mode and machine load; the rest of the file, other sections' commits included, stays as it was.

/** Splits markdown into blocks, each starting at a heading of exactly `level` (`##` or `###`); text before the first is kept. */
function split(text, level) {
  const marker = `${level} `;
  const blocks = [];
  let current = { head: null, lines: [] };
  for (const line of text.split('\n')) {
    if (line.startsWith(marker)) {
      blocks.push(current);
      current = { head: line, lines: [line] };
    } else {
      current.lines.push(line);
    }
  }
  blocks.push(current);
  return blocks;
}

const join = (blocks) => blocks.map((b) => b.lines.join('\n')).join('\n');
const number = (head) => parseInt(head.slice(3), 10);

/** Puts `stamp` under the first heading of `block` (a section or a sub-block). */
function stamped(block, stamp) {
  const lines = block.split('\n');
  return [lines[0], '', stamp, ...lines.slice(1)].join('\n');
}

/** Replaces (or inserts, in number order) the `## N.` sections of `doc`; `subs` maps a section number to the
 *  `### ` blocks that replace their namesakes within it, leaving its other blocks alone. */
export function updateSections(doc, { sections, subs = new Map(), stamp, goals, headerNote }) {
  const top = split(doc, '##');
  const byNumber = (n) => top.findIndex((b) => b.head && number(b.head) === n);
  const place = (text) => {
    const n = number(text);
    const block = { head: text.split('\n')[0], lines: [...text.split('\n'), ''] };
    const at = byNumber(n);
    if (at >= 0) {
      top[at] = block;
      return;
    }
    const after = top.findIndex((b) => b.head && !Number.isNaN(number(b.head)) && number(b.head) > n);
    top.splice(after >= 0 ? after : top.length, 0, block);
  };
  for (const text of sections) place(stamped(text, stamp));
  for (const [n, { section, blocks }] of subs) {
    const at = byNumber(n);
    if (at < 0) {
      place(stamped(section, stamp));
      continue;
    }
    const inner = split(top[at].lines.join('\n'), '###');
    for (const text of blocks) {
      const head = text.split('\n')[0];
      const i = inner.findIndex((b) => b.head === head);
      const block = { head, lines: [...stamped(text, stamp).split('\n'), ''] };
      if (i >= 0) inner[i] = block;
      else inner.push(block);
    }
    const merged = join(inner).replace(/\n+$/, '\n');
    top[at] = { head: top[at].head, lines: merged.split('\n') };
  }
  // Goals: a re-measured goal replaces the line that names the same goal (the text before its first colon).
  const goalsAt = top.findIndex((b) => b.head === '## Goals');
  if (goalsAt >= 0) {
    const lines = top[goalsAt].lines;
    for (const goal of goals) {
      const key = `- ${goal.slice(0, goal.indexOf(':'))}:`;
      const i = lines.findIndex((l) => l.startsWith(key));
      const line = `- ${goal} (re-measured ${stamp.match(/\d{4}-\d\d-\d\dT[\d:]+Z/)?.[0] ?? ''})`;
      if (i >= 0) lines[i] = line;
      else {
        let last = lines.length - 1;
        while (last > 0 && !lines[last].startsWith('- ')) last--;
        lines.splice(last + 1, 0, line);
      }
    }
  }
  // The header says once that sections can differ in commit.
  const head = top[0].lines;
  if (!head.some((l) => l.startsWith(headerNote.slice(0, 40)))) {
    let last = head.length - 1;
    while (last > 0 && !head[last].startsWith('- ') && !head[last].startsWith('  ')) last--;
    head.splice(last + 1, 0, headerNote);
  }
  return join(top).replace(/\n*$/, '\n');
}
