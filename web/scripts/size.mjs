// What a first visit downloads: index.html plus the scripts and stylesheets it references
// (and their static imports), gzip-compressed. Chunks loaded by dynamic import are listed apart.
// Fails above the budget.
import { readFileSync, readdirSync } from "node:fs";
import { join } from "node:path";
import { gzipSync } from "node:zlib";

const BUDGET = 150 * 1024;
const dist = new URL("../dist/", import.meta.url).pathname;
const gz = (file) => gzipSync(readFileSync(join(dist, file)), { level: 9 }).length;

const html = readFileSync(join(dist, "index.html"), "utf8");
const first = new Set();
const queue = [...html.matchAll(/(?:src|href)="\/?(assets\/[^"]+\.(?:js|css))"/g)].map((m) => m[1]);
while (queue.length > 0) {
  const file = queue.shift();
  if (first.has(file)) continue;
  first.add(file);
  if (!file.endsWith(".js")) continue;
  const code = readFileSync(join(dist, file), "utf8");
  // Static imports between chunks: `import ... from "./x.js"` or `import "./x.js"`.
  for (const m of code.matchAll(/(?:^|[;}\n])\s*import\s*(?:[^"'()]*?from\s*)?["']\.\/([^"']+\.js)["']/g)) {
    queue.push(`assets/${m[1]}`);
  }
}

let total = gz("index.html");
console.log(`first load (gzip):`);
console.log(`  ${"index.html".padEnd(40)} ${(gz("index.html") / 1024).toFixed(1)} KB`);
for (const file of first) {
  const size = gz(file);
  total += size;
  console.log(`  ${file.padEnd(40)} ${(size / 1024).toFixed(1)} KB`);
}
const lazy = readdirSync(join(dist, "assets")).filter((f) => !first.has(`assets/${f}`) && /\.(js|css)$/.test(f));
for (const file of lazy) console.log(`  on demand: ${`assets/${file}`.padEnd(29)} ${(gz(`assets/${file}`) / 1024).toFixed(1)} KB`);
console.log(`first load total: ${(total / 1024).toFixed(1)} KB gzip (budget ${BUDGET / 1024} KB)`);
if (total > BUDGET) {
  console.error("over the budget");
  process.exit(1);
}
