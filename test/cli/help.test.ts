// `ddpo --help` and `ddpo <command> --help`: exit 0 and list the command's flags with their
// defaults, read from the same declarations the commands parse.
import { describe, expect, test } from "bun:test";
import { join } from "node:path";
import { commands } from "../../services/cli/ddpo.ts";
import { PRETRAIN_DEFAULTS } from "../../services/lib/training/pretrain.ts";

const DDPO = join(import.meta.dir, "..", "..", "services", "cli", "ddpo.ts");

function ddpo(...args: string[]): { code: number; out: string; err: string } {
  const r = Bun.spawnSync([process.execPath, "run", DDPO, ...args], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
}

describe("ddpo --help", () => {
  test("the overview names every command", () => {
    const r = ddpo("--help");
    expect(r.code).toBe(0);
    for (const name of Object.keys(commands)) expect(r.out).toContain(`\n  ${name.padEnd(8)}`);
  });

  for (const name of Object.keys(commands)) {
    test(`${name} --help lists its flags and exits 0`, () => {
      const r = ddpo(name, "--help");
      expect(r.err).toBe("");
      expect(r.code).toBe(0);
      expect(r.out.startsWith(`usage: ddpo ${name} `)).toBe(true);
      expect(r.out).toMatch(/\n {2}--help, -h +this text\n$/);
      // Every flag line: --name [VALUE] then its description.
      const flags = r.out
        .split("\nflags:\n")[1]!
        .split("\n")
        .filter((l) => /^ {2}--/.test(l));
      expect(flags.length).toBeGreaterThan(1);
    });
  }

  test("defaults are the ones the commands apply", () => {
    expect(ddpo("sample", "--help").out).toMatch(/--steps N +DDIM steps \(default: 50\)/);
    expect(ddpo("train-local", "--help").out).toMatch(/--lr X +AdamW learning rate \(default: 0\.0003\)/);
    expect(ddpo("train", "--help").out).toMatch(/--epochs N +epochs to run \(default: 10\)/);
    expect(ddpo("up", "--help").out).toMatch(/--samplers N +Sampler processes to start .*\(default: 1\)/);
    expect(ddpo("pretrain", "--help").out).toMatch(
      new RegExp(`--steps N +optimizer steps \\(default: ${PRETRAIN_DEFAULTS.steps}\\)`),
    );
  });
});
