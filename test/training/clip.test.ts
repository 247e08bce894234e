// Contrastive training of a tiny CLIP on real emoji images: the loss falls, and a run stopped
// after a checkpoint and resumed ends bit-identical to an uninterrupted one (weights, moments,
// RNG and data order restored).
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { loadEmojiDataset } from "../../services/lib/data/emoji.ts";
import { EMOJI_CLIP_SIZES } from "../../services/lib/models/presets.ts";
import { CLIP_TRAIN_DEFAULTS, type ClipTrainOptions, trainClip } from "../../services/lib/training/clip.ts";

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "train-clip-"));
afterAll(() => {
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});

const options = (name: string): ClipTrainOptions => ({
  ...CLIP_TRAIN_DEFAULTS,
  out: join(dir, name),
  stateDir: join(dir, `${name}.training`),
  steps: 40,
  augment: false, // the augmented run is the shipped model's; here the loss must fall within seconds
  batchSize: 16,
  lr: 3e-3,
  warmupSteps: 3,
  checkpointEvery: 12,
  sizes: { ...EMOJI_CLIP_SIZES, width: 16, visionLayers: 1, textLayers: 1, patchSize: 8, projectionDim: 16 },
});

test("the loss falls; stop after a checkpoint + resume equals an uninterrupted run", async () => {
  const dataset = await loadEmojiDataset({ limit: 12 }); // 24 images, 12 captions
  const straight = await trainClip(engine, dataset, options("straight"));
  const losses = straight.state.losses;
  const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`tiny CLIP: loss ${mean(losses.slice(0, 5)).toFixed(3)} -> ${mean(losses.slice(-5)).toFixed(3)}`);
  expect(mean(losses.slice(-5))).toBeLessThan(0.7 * mean(losses.slice(0, 5)));

  const o = options("resumed");
  await expect(
    trainClip(engine, dataset, o, (p) => {
      if (p.step === 13) throw new Error("stopped");
    }),
  ).rejects.toThrow("stopped");
  const resumed = await trainClip(engine, dataset, o);
  expect(resumed.state.step).toBe(40);
  expect(resumed.state.losses).toEqual(losses);
  const a = Buffer.from(straight.model.params.values.read().buffer);
  const b = Buffer.from(resumed.model.params.values.read().buffer);
  expect(b.equals(a)).toBe(true);
  expect(resumed.model.params.readOptimizerState().m).toEqual(straight.model.params.readOptimizerState().m);
  // A second fresh run into a folder that holds a model without state is refused.
  rmSync(o.stateDir, { recursive: true });
  await expect(trainClip(engine, dataset, o)).rejects.toThrow(/--fresh/);
  straight.model.close();
  resumed.model.close();
});
