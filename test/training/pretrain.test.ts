// Pretraining: min-SNR weights and EMA decay worked by hand, and a run stopped and resumed
// lands on exactly the weights (EMA and raw) of the same run done in one go.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { readSafetensors } from "../../services/lib/checkpoints/safetensors.ts";
import { loadEmojiDataset } from "../../services/lib/data/emoji.ts";
import {
  emaDecayAt,
  minSnrWeight,
  PRETRAIN_DEFAULTS,
  type PretrainOptions,
  pretrain,
  subsetIndices,
} from "../../services/lib/training/pretrain.ts";

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "ddpo-pretrain-test-"));
afterAll(() => {
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});

describe("pretraining recipe", () => {
  test("min-SNR-5 weight: 1 where SNR <= 5, 5/SNR above", () => {
    // alphaBar 0.5 -> SNR 1; alphaBar 0.9 -> SNR 9 -> 5/9; alphaBar 5/6 -> SNR 5 exactly.
    expect(minSnrWeight(0.5, 5)).toBe(1);
    expect(minSnrWeight(0.9, 5)).toBeCloseTo(5 / 9, 12);
    expect(minSnrWeight(5 / 6, 5)).toBeCloseTo(1, 12);
    expect(minSnrWeight(0.9, 0)).toBe(1);
  });

  test("EMA decay ramps 0.2, 0.25, ... up to its cap", () => {
    expect(emaDecayAt(1, 0.999)).toBeCloseTo(2 / 11, 12);
    expect(emaDecayAt(2, 0.999)).toBeCloseTo(3 / 12, 12);
    expect(emaDecayAt(100_000, 0.999)).toBe(0.999);
  });

  test("the animal subset holds only animals, of both styles", async () => {
    const dataset = await loadEmojiDataset();
    const animals = subsetIndices(dataset, "animals").map((i) => dataset.records[i]!);
    expect(animals.length).toBeGreaterThan(200);
    expect(animals.length).toBeLessThan(dataset.records.length / 5);
    expect(new Set(animals.map((r) => r.source)).size).toBe(2);
    expect(animals.some((r) => r.caption === "cat face")).toBe(true);
    expect(animals.some((r) => r.caption === "red apple")).toBe(false);
  });

  test("stop and resume gives the same EMA and raw weights as one run", { timeout: 120_000 }, async () => {
    const dataset = await loadEmojiDataset({ limit: 40 });
    const base: Omit<PretrainOptions, "out" | "stateDir" | "steps"> = {
      ...PRETRAIN_DEFAULTS,
      batchSize: 4,
      warmupSteps: 2,
      checkpointEvery: 2,
      blockOutChannels: [16, 16, 16],
      textHidden: 16,
      subset: "all",
      emaDecay: 0.9,
    };
    const run = async (name: string, steps: number, resume: boolean) => {
      const out = join(dir, name);
      const { model } = await pretrain(engine, dataset, { ...base, out, stateDir: `${out}.training`, steps, resume });
      model.close();
      return out;
    };
    const once = await run("once", 4, false);
    await run("twice", 2, false);
    const twice = await run("twice", 4, true);
    const weights = (out: string) => readSafetensors(join(out, "unet", "diffusion_pytorch_model.safetensors")).tensors;
    const raw = (out: string) => readSafetensors(join(`${out}.training`, "weights.safetensors")).tensors;
    for (const [a, b] of [
      [weights(once), weights(twice)],
      [raw(once), raw(twice)],
    ] as const) {
      expect([...a.keys()]).toEqual([...b.keys()]);
      for (const [k, t] of a) expect(Buffer.from(b.get(k)!.data.buffer)).toEqual(Buffer.from(t.data.buffer));
    }
    // The folder holds the EMA, which differs from the raw weights after 4 steps.
    const ema = weights(once).get("conv_in.weight")!.data;
    const rawConv = raw(once).get("unet.values")!.data.subarray(0, ema.length);
    expect(Buffer.from(ema.buffer, ema.byteOffset, ema.byteLength)).not.toEqual(
      Buffer.from(rawConv.buffer, rawConv.byteOffset, rawConv.byteLength),
    );
    expect(JSON.parse(readFileSync(join(`${once}.training`, "state.json"), "utf8")).step).toBe(4);
  });
});
