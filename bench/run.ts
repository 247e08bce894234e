// `npm run bench -- <suite> [--json]`: dispatches to bench/<suite>.ts, whose main(args) prints a
// table and, with --json, one JSON object on its last line.
import { existsSync } from "node:fs";
import { join } from "node:path";

const [suite, ...args] = process.argv.slice(2);
const known = ["engine", "model", "ddpo", "gradient-snr", "services", "fleet", "trainer-memory", "cuda"];
if (!suite || !known.includes(suite)) {
  console.error(`usage: npm run bench -- <suite> [--json]   (suites: ${known.join(", ")})`);
  process.exit(2);
}
const file = join(import.meta.dir, `${suite}.ts`);
if (!existsSync(file)) {
  console.error(`bench: ${file} is missing`);
  process.exit(2);
}
const mod = (await import(file)) as { main: (args: string[]) => Promise<void> };
await mod.main(args);
