// services/gen is committed; regenerating it from proto/ must change nothing (DESIGN.md §1). buf
// runs offline here: the plugin is the local protoc-gen-es and the well-known types are built in.

import { expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, relative, resolve } from "node:path";

const ROOT = resolve(import.meta.dir, "../..");
const GENERATED = "services/gen";

/** Relative path -> contents of every generated .ts file under dir. */
function generatedFiles(dir: string): Map<string, string> {
  const files = new Map<string, string>();
  const walk = (at: string) => {
    for (const entry of readdirSync(at, { withFileTypes: true })) {
      const path = join(at, entry.name);
      if (entry.isDirectory()) walk(path);
      else if (entry.name.endsWith(".ts")) files.set(relative(dir, path), readFileSync(path, "utf8"));
    }
  };
  walk(dir);
  return files;
}

test("regenerating services/gen from proto/ changes nothing", () => {
  const out = mkdtempSync(join(tmpdir(), "ddpo-buf-generate-"));
  try {
    // protoc-gen-es is a `#!/usr/bin/env node` script; where node is missing, bun stands in for it.
    const path = [process.env.PATH ?? ""];
    if (!Bun.which("node")) {
      symlinkSync(process.execPath, join(out, "node"));
      path.unshift(out);
    }
    const generated = spawnSync(join(ROOT, "node_modules/.bin/buf"), ["generate", "--output", out], {
      cwd: ROOT,
      encoding: "utf8",
      env: { ...process.env, PATH: path.join(":") },
    });
    expect(generated.status, generated.stderr).toBe(0);

    const fresh = generatedFiles(join(out, GENERATED));
    const committed = generatedFiles(join(ROOT, GENERATED));
    expect(fresh.size).toBeGreaterThan(0);
    expect([...committed.keys()].sort()).toEqual([...fresh.keys()].sort());
    for (const [file, text] of fresh) {
      expect(committed.get(file), `${GENERATED}/${file} is stale: run \`bun run generate\``).toBe(text);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
});

test("the contracts pass buf lint", () => {
  const linted = spawnSync(join(ROOT, "node_modules/.bin/buf"), ["lint"], { cwd: ROOT, encoding: "utf8" });
  expect(linted.status, linted.stdout + linted.stderr).toBe(0);
});
