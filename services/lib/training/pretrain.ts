// Pretraining a base text-to-image model on the captioned emoji images: the denoising loss with
// 10% empty-prompt dropout (for classifier-free guidance), AdamW with warm-up and cosine decay,
// periodic checkpoints (model folder + optimizer state), exact resume, a loss curve PNG.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../../../gpu-core/index.ts";
import { writeFileAtomic } from "../checkpoints/atomic-file.ts";
import { readSafetensors, writeSafetensors } from "../checkpoints/safetensors.ts";
import { type EmojiDataset, styledCaption, toFloatNCHW } from "../data/emoji.ts";
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
  resume: boolean;
}

export const PRETRAIN_DEFAULTS: Omit<PretrainOptions, "out" | "stateDir"> = {
  steps: 4000,
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
  const optimizer = new JointAdamW([model.unet, model.textEncoder]);
  const arena = engine.arena(64 << 20);
  const rng = new Mulberry32(state.rng);
  const n = dataset.records.length;
  const per = 3 * dataset.size * dataset.size;
  let ema = state.losses.length ? state.losses[state.losses.length - 1]! : Number.NaN;
  const started = performance.now();
  const firstStep = state.step;

  const checkpoint = async () => {
    model.save(o.out, { step: String(state.step), seed: String(o.seed) });
    const moments = new Map<string, { shape: number[]; data: Float32Array }>();
    for (const [name, set] of [
      ["unet", model.unet],
      ["text_encoder", model.textEncoder],
    ] as const) {
      const s = set.readOptimizerState();
      moments.set(`${name}.m`, { shape: [s.m.length], data: s.m });
      moments.set(`${name}.v`, { shape: [s.v.length], data: s.v });
    }
    writeSafetensors(momentsPath, moments);
    state.rng = rng.state;
    writeFileAtomic(statePath, [Buffer.from(JSON.stringify(state))]);
    await lossCurve(join(o.out, "loss.png"), state.losses);
  };

  try {
    while (state.step < o.steps) {
      const indices = Array.from({ length: o.batchSize }, () => rng.int(n));
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
      });
      arena.reset();
      const lrScale = learningRateScale(state.step, o.steps, o.warmupSteps);
      optimizer.step({ lr: o.lr, maxGradNorm: o.maxGradNorm, weightDecay: 1e-4 }, lrScale);
      state.step += 1;
      state.losses.push(loss);
      ema = Number.isNaN(ema) ? loss : 0.98 * ema + 0.02 * loss;
      const seconds = (performance.now() - started) / 1000;
      onProgress({
        step: state.step,
        steps: o.steps,
        loss,
        lossEma: ema,
        imagesPerSecond: ((state.step - firstStep) * o.batchSize) / seconds,
        lr: o.lr * lrScale,
      });
      if (state.step % o.checkpointEvery === 0 || state.step === o.steps) await checkpoint();
    }
  } finally {
    arena.close();
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
