// Pretraining a base text-to-image model on the captioned emoji images: the denoising loss with
// min-SNR-gamma weighting and 10% empty-prompt dropout (for classifier-free guidance), AdamW with
// warm-up and cosine decay, an exponential moving average of the weights (what the model folder
// holds), periodic checkpoints (EMA model folder + raw weights, moments, RNG in the state folder),
// exact resume, a loss curve PNG.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../../../gpu-core/index.ts";
import { writeFileAtomic } from "../checkpoints/atomic-file.ts";
import { readSafetensors, writeSafetensors } from "../checkpoints/safetensors.ts";
import { type EmojiDataset, isAnimal, styledCaption, toFloatNCHW } from "../data/emoji.ts";
import { WordTokenizer } from "../data/tokenizer.ts";
import { combineSources } from "../models/parameters.ts";
import { EMOJI_SCHEDULER, emojiTextEncoderConfig, emojiUNetConfig } from "../models/presets.ts";
import { TextToImageModel } from "../models/text-to-image.ts";
import { lineChartPng } from "../plots/line-chart.ts";
import { denoisingLossAndGrad } from "./denoising.ts";
import { JointAdamW } from "./optimizer.ts";
import { Mulberry32 } from "./random.ts";

export interface PretrainOptions {
  /** Where the model folder is written (unet/, text_encoder/, tokenizer/, scheduler/). */
  out: string;
  /** Where optimizer state and the loss history live (resume). */
  stateDir: string;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps: number;
  seed: number;
  checkpointEvery: number;
  /** Probability of training on the empty prompt (classifier-free guidance). */
  condDropout: number;
  /** Probability of appending the source's style tag to the caption ("cat face, noto"). */
  styleTagProbability: number;
  blockOutChannels: number[];
  textHidden: number;
  maxGradNorm: number;
  /**
   * Min-SNR-gamma loss weighting (Hang et al. 2023) for eps-prediction: w_t = min(SNR_t, gamma) / SNR_t
   * with SNR_t = alphaBar_t / (1 - alphaBar_t); 0 trains every timestep with weight 1.
   */
  minSnrGamma: number;
  /**
   * EMA decay of the weights; the model folder holds the EMA weights. The decay ramps up as
   * min(emaDecay, (1 + step) / (10 + step)) so early averages do not remember the initialisation.
   * 0 turns the average off (the folder holds the raw weights).
   */
  emaDecay: number;
  /** Which images to train on: every emoji, or only the animals (the prompt sets' subject). */
  subset: "all" | "animals";
  resume: boolean;
}

export const PRETRAIN_DEFAULTS: Omit<PretrainOptions, "out" | "stateDir"> = {
  steps: 6000,
  batchSize: 32,
  lr: 1e-3,
  warmupSteps: 200,
  seed: 20261125,
  checkpointEvery: 250,
  condDropout: 0.1,
  styleTagProbability: 0.5,
  blockOutChannels: [32, 64, 64],
  textHidden: 64,
  maxGradNorm: 1.0,
  minSnrGamma: 5,
  emaDecay: 0.999,
  subset: "animals",
  resume: true,
};

export interface PretrainProgress {
  step: number;
  steps: number;
  loss: number;
  lossEma: number;
  imagesPerSecond: number;
  lr: number;
}

interface TrainingState {
  step: number;
  rng: number;
  losses: number[];
  options: Omit<PretrainOptions, "resume">;
}

/** Per-sample loss weight of min-SNR-gamma for eps-prediction: min(SNR, gamma) / SNR. */
export function minSnrWeight(alphaBar: number, gamma: number): number {
  if (gamma <= 0) return 1;
  const snr = alphaBar / (1 - alphaBar);
  return Math.min(snr, gamma) / snr;
}

/** EMA decay at an optimizer step (1-based), ramped up from 0.1 at the first step. */
export function emaDecayAt(step: number, decay: number): number {
  return Math.min(decay, (1 + step) / (10 + step));
}

/** Indices of the records a subset trains on. */
export function subsetIndices(dataset: EmojiDataset, subset: PretrainOptions["subset"]): number[] {
  const all = dataset.records.map((_, i) => i);
  if (subset === "all") return all;
  const animals = all.filter((i) => isAnimal(dataset.records[i]!));
  if (animals.length === 0) throw new Error("the dataset holds no animal emoji");
  return animals;
}

/** lr multiplier: linear warm-up, then cosine decay to 10% at the last step. */
export function learningRateScale(step: number, steps: number, warmup: number): number {
  if (step < warmup) return (step + 1) / warmup;
  const progress = (step - warmup) / Math.max(1, steps - warmup);
  return 0.1 + 0.9 * 0.5 * (1 + Math.cos(Math.PI * Math.min(1, progress)));
}

export function buildTokenizer(dataset: EmojiDataset): WordTokenizer {
  const captions = dataset.records.flatMap((r) => [r.caption, styledCaption(r)]);
  return WordTokenizer.fromCaptions(captions, { maxLength: 16 });
}

export async function pretrain(
  engine: Engine,
  dataset: EmojiDataset,
  o: PretrainOptions,
  onProgress: (p: PretrainProgress) => void = () => {},
): Promise<{ model: TextToImageModel; losses: number[] }> {
  mkdirSync(o.stateDir, { recursive: true });
  const statePath = join(o.stateDir, "state.json");
  const momentsPath = join(o.stateDir, "optimizer.safetensors");
  // The raw (not averaged) weights: the model folder holds the EMA when emaDecay > 0.
  const weightsPath = join(o.stateDir, "weights.safetensors");
  const resuming = o.resume && existsSync(statePath) && existsSync(join(o.out, "model_index.json"));
  if (o.resume && !resuming && existsSync(join(o.out, "model_index.json"))) {
    // Never train a fresh model over an existing one by accident (e.g. the shipped base model on
    // a machine that lacks its training state).
    throw new Error(
      `${o.out} already holds a model but ${statePath} has no training state to resume: ` +
        "pass --fresh to start over in that folder, or choose another --out",
    );
  }
  let model: TextToImageModel;
  let state: TrainingState;
  let rawWeights: ReturnType<typeof readSafetensors>["tensors"] | null = null;
  const { resume: _resume, ...recorded } = o;
  if (resuming) {
    state = JSON.parse(readFileSync(statePath, "utf8")) as TrainingState;
    model = TextToImageModel.load(engine, o.out);
    const moments = readSafetensors(momentsPath).tensors;
    for (const [name, set] of [
      ["unet", model.unet],
      ["text_encoder", model.textEncoder],
    ] as const) {
      set.writeOptimizerState({
        m: moments.get(`${name}.m`)!.data,
        v: moments.get(`${name}.v`)!.data,
        step: state.step,
      });
    }
    if (existsSync(weightsPath)) rawWeights = readSafetensors(weightsPath).tensors;
  } else {
    const tokenizer = buildTokenizer(dataset);
    model = TextToImageModel.create(
      engine,
      {
        unet: emojiUNetConfig(o.blockOutChannels, o.textHidden),
        textEncoder: emojiTextEncoderConfig(tokenizer.vocabSize, o.textHidden, tokenizer.maxLength),
        scheduler: EMOJI_SCHEDULER,
      },
      tokenizer,
      o.seed,
    );
    state = { step: 0, rng: o.seed >>> 0, losses: [], options: recorded };
  }

  const source = combineSources(model.unetSource(), model.textSource());
  const sets = [
    ["unet", model.unet],
    ["text_encoder", model.textEncoder],
  ] as const;
  const optimizer = new JointAdamW(sets.map(([, set]) => set));
  // EMA shadows start from what the folder holds (the EMA when resuming); the live weights then
  // come from the state folder's raw copy.
  const ema =
    o.emaDecay > 0
      ? sets.map(([, set]) => {
          const shadow = engine.zeros([set.total]);
          engine.copy(shadow, set.values);
          return shadow;
        })
      : null;
  for (const [name, set] of sets) {
    const raw = rawWeights?.get(`${name}.values`);
    if (raw) set.values.write(raw.data);
  }
  const useEma = () => {
    if (ema) for (const [i, [, set]] of sets.entries()) engine.copy(set.values, ema[i]!);
  };
  const pool = subsetIndices(dataset, o.subset);
  const arena = engine.arena(64 << 20);
  const rng = new Mulberry32(state.rng);
  const per = 3 * dataset.size * dataset.size;
  let lossEma = state.losses.length ? state.losses[state.losses.length - 1]! : Number.NaN;
  const started = performance.now();
  const firstStep = state.step;

  const checkpoint = async () => {
    const moments = new Map<string, { shape: number[]; data: Float32Array }>();
    const raw = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, set] of sets) {
      const s = set.readOptimizerState();
      moments.set(`${name}.m`, { shape: [s.m.length], data: s.m });
      moments.set(`${name}.v`, { shape: [s.v.length], data: s.v });
      raw.set(`${name}.values`, { shape: [set.total], data: set.values.read() });
    }
    // The folder gets the EMA: swap it in for the save, then restore the raw weights.
    useEma();
    model.save(o.out, {
      step: String(state.step),
      seed: String(o.seed),
      weights: ema ? `ema ${o.emaDecay}` : "raw",
    });
    for (const [name, set] of sets) set.values.write(raw.get(`${name}.values`)!.data);
    writeSafetensors(momentsPath, moments);
    writeSafetensors(weightsPath, raw);
    state.rng = rng.state;
    writeFileAtomic(statePath, [Buffer.from(JSON.stringify(state))]);
    await lossCurve(join(o.out, "loss.png"), state.losses);
  };

  try {
    while (state.step < o.steps) {
      const indices = Array.from({ length: o.batchSize }, () => pool[rng.int(pool.length)]!);
      const prompts = indices.map((i) => {
        if (rng.next() < o.condDropout) return "";
        const r = dataset.records[i]!;
        return rng.next() < o.styleTagProbability ? styledCaption(r) : r.caption;
      });
      const timesteps = indices.map(() => rng.int(model.schedule.trainTimesteps));
      optimizer.zeroGrad();
      const loss = denoisingLossAndGrad(model, source, arena, {
        x0: toFloatNCHW(dataset.images, indices, dataset.size),
        prompts,
        timesteps,
        noiseSeed: o.seed,
        noiseOffset: state.step * o.batchSize * per,
        weights:
          o.minSnrGamma > 0 ? timesteps.map((t) => minSnrWeight(model.schedule.alphaBar(t), o.minSnrGamma)) : undefined,
      });
      arena.reset();
      const lrScale = learningRateScale(state.step, o.steps, o.warmupSteps);
      optimizer.step({ lr: o.lr, maxGradNorm: o.maxGradNorm, weightDecay: 1e-4 }, lrScale);
      state.step += 1;
      if (ema) {
        const d = emaDecayAt(state.step, o.emaDecay);
        for (const [i, [, set]] of sets.entries()) engine.axpby(ema[i]!, 1 - d, set.values, d);
      }
      state.losses.push(loss);
      lossEma = Number.isNaN(lossEma) ? loss : 0.98 * lossEma + 0.02 * loss;
      const seconds = (performance.now() - started) / 1000;
      onProgress({
        step: state.step,
        steps: o.steps,
        loss,
        lossEma,
        imagesPerSecond: ((state.step - firstStep) * o.batchSize) / seconds,
        lr: o.lr * lrScale,
      });
      if (state.step % o.checkpointEvery === 0 || state.step === o.steps) await checkpoint();
    }
    // The returned model holds what the folder holds.
    useEma();
  } finally {
    arena.close();
    for (const t of ema ?? []) t.close();
  }
  return { model, losses: state.losses };
}

/** Loss per step and its 50-step running mean, log scale. */
export async function lossCurve(
  path: string,
  losses: readonly number[],
  title = "denoising loss",
  yLabel = "mse",
): Promise<void> {
  const window = 50;
  const smooth: Array<[number, number]> = [];
  let sum = 0;
  losses.forEach((l, i) => {
    sum += l;
    if (i >= window) sum -= losses[i - window]!;
    if (i >= window - 1) smooth.push([i + 1, sum / window]);
  });
  await lineChartPng(
    path,
    [
      { name: "loss", points: losses.map((l, i) => [i + 1, l] as [number, number]) },
      { name: `mean of ${window}`, points: smooth },
    ],
    { title, xLabel: "step", yLabel, logY: true },
  );
}
