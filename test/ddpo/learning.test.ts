// DDPO learns (issue 4's proof): from the shipped base model, a short run on jpeg_compressibility
// raises the reward clearly beyond its epoch-to-epoch noise, and a run on jpeg_incompressibility
// moves the JPEG size the other way; a run on clip_alignment (the emoji CLIP's CLIPScore) raises
// it on prompts the model draws poorly at this step count, and the CLIP's zero-shot top-1 among
// the 123 animal names rises with it (issue 14).
//
// Measured with common random numbers, so the policy is the only thing that differs:
// - eval: 64 fixed (prompt, seed) pairs (128 for clip_alignment, whose per-image spread is
//   wider) sampled by the base model and by the trained policy; gain = mean paired difference of
//   the run's reward, with its standard error.
// - per epoch: the base model samples the epoch's own prompts and seeds (the control), so
//   epoch mean (trained) - epoch mean (control) is the learning so far, free of the draw.
// - epoch-to-epoch noise: the standard deviation over the epochs of the control's epoch means,
//   i.e. how much an epoch's mean reward moves when the policy does not change.
//
// CPU-sized recipe: 4 prompts, 64 samples x 5 DDIM steps per epoch without guidance, LoRA r=4,
// lr 3e-3, the final 2 steps not trained (skipFinalSteps; see trainer.ts), 4 epochs (the
// clip_alignment run: lr 6e-3, 5 epochs; at 3e-3 x 4 its gain was 2.7 standard errors).
import { afterAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { runLocalEpoch } from "../../services/lib/ddpo/local-steps.ts";
import { promptSetByName, promptSetFromList } from "../../services/lib/ddpo/prompts.ts";
import { DDPO_DEFAULTS, type DdpoConfig, DdpoTrainer } from "../../services/lib/ddpo/trainer.ts";
import { sampleImages, toUint8Images } from "../../services/lib/diffusion/sampler.ts";
import { ZeroShotClassifier } from "../../services/lib/eval/zero-shot.ts";
import { ClipModel } from "../../services/lib/models/clip-model.ts";
import { TextToImageModel } from "../../services/lib/models/text-to-image.ts";
import { type RewardFunction, rewardByName } from "../../services/lib/rewards/index.ts";

const MODEL = join(import.meta.dir, "..", "..", "models", "emoji-base");
const CLIP = join(import.meta.dir, "..", "..", "models", "emoji-clip");
const PROMPTS = ["cat face", "tiger", "frog", "red apple"];
// Animals the base model draws worst in 5 unguided steps (emoji-CLIP CLIPScore 59-67, never
// named first among the 123 animals with seeds 1-2): room for the alignment reward to act on.
const ALIGNMENT_PROMPTS = ["goat", "cow", "bug", "rooster"];
const EPOCHS = 4;
const CONFIG: DdpoConfig = {
  ...DDPO_DEFAULTS,
  seed: 2026,
  steps: 5,
  guidance: 1,
  sampleBatchSize: 32,
  sampleBatchesPerEpoch: 2,
  trainBatchSize: 16,
  gradientAccumulation: 2,
  timestepFraction: 1,
  skipFinalSteps: 2,
  clipRange: 1e-3,
  lr: 3e-3,
  lora: { rank: 4, alpha: 4 },
  statTracking: { bufferSize: 64, minCount: 8 },
};
/** n fixed (prompt, seed) pairs cycling through the run's prompts. */
const evalPairs = (prompts: readonly string[], n: number) => ({
  prompts: Array.from({ length: n }, (_, i) => prompts[i % prompts.length]!),
  seeds: Array.from({ length: n }, (_, i) => 900_000 + i),
});

const engine = Engine.open();
const model = TextToImageModel.load(engine, MODEL);
let classifier: ZeroShotClassifier | null = null;
/** The emoji CLIP's zero-shot reader over the 123 animal names (loaded on first use). */
function animalClassifier(): ZeroShotClassifier {
  classifier ??= new ZeroShotClassifier(ClipModel.load(engine, CLIP), promptSetByName("animals").prompts);
  return classifier;
}
afterAll(() => {
  classifier?.clip.close();
  model.close();
  engine.close();
});

const mean = (xs: ArrayLike<number>) => Array.from(xs).reduce((a, b) => a + b, 0) / xs.length;
const sd = (xs: ArrayLike<number>) => {
  const m = mean(xs);
  return Math.sqrt(Array.from(xs).reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, xs.length - 1));
};

/** Images ([n,3,S,S] in [-1, 1]) sampled for (prompts, seeds) by the trainer's policy, or the base model. */
function imagesOf(prompts: readonly string[], seeds: readonly number[], trainer: DdpoTrainer | null): Float32Array {
  return sampleImages(model, prompts, {
    steps: CONFIG.steps,
    guidance: CONFIG.guidance,
    eta: CONFIG.eta,
    seeds,
    source: trainer?.source(false),
    lora: trainer?.lora ?? null,
  }).images;
}

async function score(reward: RewardFunction, images: Float32Array, prompts: readonly string[]): Promise<Float64Array> {
  const size = model.unetConfig.sample_size;
  const pixels = toUint8Images(images, prompts.length, model.unetConfig.out_channels, size);
  return reward.score(pixels, { height: size, width: size }, prompts);
}

/** Rewards of images sampled for (prompts, seeds) by the trainer's policy, or the base model. */
async function rewardsOf(
  reward: RewardFunction,
  prompts: readonly string[],
  seeds: readonly number[],
  trainer: DdpoTrainer | null,
): Promise<Float64Array> {
  return score(reward, imagesOf(prompts, seeds, trainer), prompts);
}

interface LearningResult {
  gain: number;
  gainSe: number;
  epochNoise: number;
  /** Per epoch: trained mean - control mean on the epoch's own prompts and seeds. */
  overControl: number[];
  /** Compressibility of the eval set, before and after (for the direction check). */
  compressibilityBefore: number;
  compressibilityAfter: number;
  /** The emoji CLIP's zero-shot top-1 among the 123 animal names on the eval set (with `zeroShot`). */
  top1Before: number;
  top1After: number;
}

interface LearningRun {
  prompts?: readonly string[];
  /** Also read the eval images with the emoji CLIP (zero-shot top-1 among the animals). */
  zeroShot?: boolean;
  lr?: number;
  epochs?: number;
  /** Fixed (prompt, seed) pairs of the paired eval (default 64). */
  evalPairs?: number;
}

async function learn(rewardName: string, run: LearningRun = {}): Promise<LearningResult> {
  const { prompts = PROMPTS, zeroShot = false, lr = CONFIG.lr, epochs = EPOCHS } = run;
  const { prompts: EVAL_PROMPTS, seeds: EVAL_SEEDS } = evalPairs(prompts, run.evalPairs ?? 64);
  const reward = rewardByName(rewardName);
  const compressibility = rewardByName("jpeg_compressibility");
  const config = { ...CONFIG, lr };
  const trainer = new DdpoTrainer(engine, model, config, reward, promptSetFromList("learning", "test", prompts));
  const top1 = (images: Float32Array) =>
    zeroShot ? animalClassifier().classify(images, EVAL_PROMPTS).top1 : Number.NaN;
  try {
    const imagesBefore = imagesOf(EVAL_PROMPTS, EVAL_SEEDS, null);
    const before = await score(reward, imagesBefore, EVAL_PROMPTS);
    const controlMeans: number[] = [];
    const overControl: number[] = [];
    for (let e = 1; e <= epochs; e++) {
      let control = 0;
      const { report } = await runLocalEpoch(trainer, {
        record: async (_epoch, t) => {
          control = mean(await rewardsOf(reward, t.prompts, t.seeds, null));
        },
      });
      controlMeans.push(control);
      overControl.push(report.rewardMean - control);
      console.log(
        `${rewardName} epoch ${e}: reward ${report.rewardMean.toFixed(4)} (control ${control.toFixed(4)}, ` +
          `+${(report.rewardMean - control).toFixed(4)}) approx_kl ${report.approxKl.toExponential(2)} ` +
          `clipfrac ${report.clipFraction.toFixed(2)} ${report.seconds.toFixed(1)} s`,
      );
    }
    const imagesAfter = imagesOf(EVAL_PROMPTS, EVAL_SEEDS, trainer);
    const after = await score(reward, imagesAfter, EVAL_PROMPTS);
    const diffs = after.map((v, i) => v - before[i]!);
    const result: LearningResult = {
      gain: mean(diffs),
      gainSe: sd(diffs) / Math.sqrt(diffs.length),
      epochNoise: sd(controlMeans),
      overControl,
      compressibilityBefore:
        reward.name === compressibility.name
          ? mean(before)
          : mean(await rewardsOf(compressibility, EVAL_PROMPTS, EVAL_SEEDS, null)),
      compressibilityAfter:
        reward.name === compressibility.name
          ? mean(after)
          : mean(await rewardsOf(compressibility, EVAL_PROMPTS, EVAL_SEEDS, trainer)),
      top1Before: top1(imagesBefore),
      top1After: top1(imagesAfter),
    };
    console.log(
      `${rewardName}: eval ${mean(before).toFixed(4)} -> ${mean(after).toFixed(4)}, gain ${result.gain.toFixed(4)} ` +
        `± ${result.gainSe.toFixed(4)} (se), epoch-to-epoch noise ${result.epochNoise.toFixed(4)}; ` +
        `jpeg_compressibility ${result.compressibilityBefore.toFixed(4)} -> ${result.compressibilityAfter.toFixed(4)}` +
        (zeroShot ? `; zero-shot top-1 ${result.top1Before.toFixed(3)} -> ${result.top1After.toFixed(3)}` : ""),
    );
    return result;
  } finally {
    trainer.close();
  }
}

/** Clearly beyond noise: several standard errors of the paired eval and of an epoch's mean. */
function expectClearGain(r: LearningResult): void {
  expect(r.epochNoise).toBeGreaterThan(0);
  expect(r.gain).toBeGreaterThan(5 * r.gainSe);
  expect(r.gain).toBeGreaterThan(3 * r.epochNoise);
  // The epoch means themselves climb above the control's beyond the noise by the last epoch.
  expect(r.overControl.at(-1)!).toBeGreaterThan(3 * r.epochNoise);
}

describe("DDPO learns from the shipped base model", () => {
  test("jpeg_compressibility: the reward rises clearly beyond its epoch-to-epoch noise", async () => {
    const r = await learn("jpeg_compressibility");
    expectClearGain(r);
    expect(r.compressibilityAfter).toBeGreaterThan(r.compressibilityBefore);
  }, 600_000);

  test("jpeg_incompressibility: the JPEG size moves the other way", async () => {
    const r = await learn("jpeg_incompressibility");
    expectClearGain(r);
    expect(r.compressibilityAfter).toBeLessThan(r.compressibilityBefore);
  }, 600_000);

  test("clip_alignment: the CLIPScore rises beyond its noise, and the CLIP names the animals more often", async () => {
    const r = await learn("clip_alignment", {
      prompts: ALIGNMENT_PROMPTS,
      zeroShot: true,
      lr: 6e-3,
      epochs: 5,
      evalPairs: 128,
    });
    expectClearGain(r);
    expect(r.top1After).toBeGreaterThan(r.top1Before);
  }, 600_000);
});
