// The shipped emoji CLIP (models/emoji-clip) as a scorer: on the real animal emoji of both image
// sets it ranks each image's own name first far above chance among the 123 animal names; and the
// `ddpo eval` command refuses bad arguments with a clear message before loading anything.
import { afterAll, describe, expect, test } from "bun:test";
import { spawnSync } from "node:child_process";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { loadEmojiDataset } from "../../services/lib/data/emoji.ts";
import { animalImages, topK, ZeroShotClassifier } from "../../services/lib/eval/zero-shot.ts";
import { ClipModel } from "../../services/lib/models/clip-model.ts";

const ROOT = join(import.meta.dir, "..", "..");
const engine = Engine.open();
afterAll(() => engine.close());

describe("zero-shot scoring with models/emoji-clip", () => {
  test("ranks real animal emoji by their names far above chance", async () => {
    const clip = ClipModel.load(engine, join(ROOT, "models", "emoji-clip"));
    const dataset = await loadEmojiDataset();
    const { pixels, truth, labels } = animalImages(dataset);
    expect(labels.length).toBe(123);
    expect(truth.length).toBeGreaterThan(200);
    const classifier = new ZeroShotClassifier(clip, labels);
    const r = classifier.classify(pixels, truth);
    console.log(
      `emoji-clip on ${truth.length} real animal emoji: top-1 ${(100 * r.top1).toFixed(1)}%, top-5 ${(100 * r.top5).toFixed(1)}% (chance 0.8% / 4.1%)`,
    );
    expect(r.top1).toBeGreaterThan(0.5);
    expect(r.top5).toBeGreaterThan(0.8);
    // The scorer's bookkeeping: ranks against an explicit recount for a few images.
    const sims = classifier.similarities(pixels.subarray(0, 3 * 3 * 32 * 32));
    for (let i = 0; i < 3; i++) {
      const row = sims.subarray(i * 123, (i + 1) * 123);
      const t = labels.indexOf(truth[i]!);
      expect(r.ranks[i]).toBe(row.filter((s) => s > row[t]!).length);
      expect(r.alignment[i]).toBeCloseTo(row[t]!, 6); // batch of 246 vs 3: fp32 kernels group differently
    }
    expect(topK([0, 3, 7, 0], 1)).toBe(0.5);
    expect(topK([0, 3, 7, 0], 5)).toBe(0.75);
    expect(() => classifier.classify(pixels.subarray(0, 3 * 32 * 32), ["not an animal"])).toThrow(
      /not among the labels/,
    );
    expect(() => new ZeroShotClassifier(clip, ["cat", "cat"])).toThrow(/distinct/);
    clip.close();
  });
});

describe("ddpo eval arguments", () => {
  const run = (...args: string[]) =>
    spawnSync(process.execPath, ["run", join(ROOT, "services", "cli", "ddpo.ts"), "eval", ...args], {
      cwd: ROOT,
      encoding: "utf8",
    });
  const model = join(ROOT, "models", "emoji-base");
  const cases: Array<[string[], RegExp]> = [
    [[], /--model DIR is required/],
    [["--model", model, "--prompts", "nope"], /unknown prompt set "nope"; known: animals/],
    [["--model", model, "--seeds", "four"], /--seeds must be an integer, got 'four'/],
    [["--model", model, "--seeds", "0"], /--seeds must be >= 1/],
    [["--model", model, "--steps", "2.5"], /--steps must be an integer/],
    [["--model", model, "--guidance", "0.5"], /--guidance must be >= 1/],
    [["--model", model, "--eta", "0"], /--eta must be > 0/],
    [["--model", model, "--bogus"], /Unknown option '--bogus'/],
    [["--model", model, "--clip", join(ROOT, "no-such-clip")], /no-such-clip.*no such CLIP model folder/],
    [["--model", join(ROOT, "no-such-model"), "--seeds", "1"], /pipeline folder does not exist/],
  ];
  for (const [args, message] of cases) {
    test(`${args.join(" ") || "(no arguments)"}`, () => {
      const r = run(...args);
      expect(r.status).toBe(1);
      expect(r.stderr).toMatch(message);
      expect(r.stderr).toStartWith("ddpo eval:");
    });
  }
});
