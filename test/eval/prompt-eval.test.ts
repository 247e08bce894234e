// evaluatePrompts (what `ddpo eval` runs): fixed seeds give the same images and scores twice, the
// per-prompt figures are the classifier's ranks of those images, and a model whose images the CLIP
// cannot read is refused.
import { afterAll, expect, test } from "bun:test";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { evaluatePrompts } from "../../services/lib/eval/prompt-eval.ts";
import { topK, ZeroShotClassifier } from "../../services/lib/eval/zero-shot.ts";
import { ClipModel } from "../../services/lib/models/clip-model.ts";
import { TextToImageModel } from "../../services/lib/models/text-to-image.ts";
import { tinyModel } from "../models/tiny-model.ts";

const ROOT = join(import.meta.dir, "..", "..");
const engine = Engine.open();
const clip = ClipModel.load(engine, join(ROOT, "models", "emoji-clip"));
const model = TextToImageModel.load(engine, join(ROOT, "models", "emoji-base"));
afterAll(() => {
  clip.close();
  model.close();
  engine.close();
});

test("fixed seeds, per-prompt ranks from the CLIP, overall = mean over images", () => {
  const prompts = ["cat face", "tiger", "frog"];
  const o = { seeds: 2, steps: 2, guidance: 3, eta: 1, batch: 4 };
  const a = evaluatePrompts(model, clip, prompts, o);
  const b = evaluatePrompts(model, clip, prompts, o);
  expect(a.seeds).toEqual([1, 2]);
  expect(a.images.length).toBe(6 * 3 * 32 * 32);
  expect([...b.images]).toEqual([...a.images]);
  expect(b.prompts).toEqual(a.prompts);
  const again = new ZeroShotClassifier(clip, prompts).classify(a.images, [
    "cat face",
    "cat face",
    "tiger",
    "tiger",
    "frog",
    "frog",
  ]);
  expect(a.prompts.flatMap((p) => p.ranks)).toEqual([...again.ranks]);
  for (const p of a.prompts) {
    expect(p.ranks.every((r) => r >= 0 && r < 3)).toBe(true);
    expect(p.top1).toBe(topK(p.ranks, 1));
  }
  expect(a.top1).toBeCloseTo(topK(again.ranks, 1), 12);
  expect(a.top5).toBe(1); // 3 prompts: every rank is within the first five
});

test("a model drawing images of another size is refused", () => {
  const tiny = tinyModel(engine, ["cat face"], 1); // 16x16
  expect(() =>
    evaluatePrompts(tiny, clip, ["cat face"], { seeds: 1, steps: 1, guidance: 1, eta: 1, batch: 1 }),
  ).toThrow(/draws 3x16x16 images, the CLIP reads 3x32x32/);
  tiny.close();
});
