// Contrastive training of the emoji CLIP on the captioned emoji images: each step draws a batch
// of images (without replacement within an epoch), augments them (augment.ts), pairs them with
// their distinct captions, and takes an AdamW step on CLIP's symmetric cross-entropy (warm-up,
// cosine decay, logit_scale clamped at ln 100 as CLIP does). Checkpoints (model folder,
// optimizer moments, RNG, data order, history) make it resumable; a zero-shot evaluation on the
// animal names runs at each checkpoint.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../../../gpu-core/index.ts";
import { writeFileAtomic } from "../checkpoints/atomic-file.ts";
import { readSafetensors, writeSafetensors } from "../checkpoints/safetensors.ts";
import { augmentImages, CLIP_AUGMENT } from "../data/augment.ts";
import { type EmojiDataset, type EmojiSource, emojiRecords, toFloatNCHW } from "../data/emoji.ts";
import { WordTokenizer } from "../data/tokenizer.ts";
import { animalImages, ZeroShotClassifier } from "../eval/zero-shot.ts";
import {
  ClipModel,
  clipImageFeatures,
  clipLogitScale,
  clipLogits,
  clipLogitsBackward,
  contrastiveLoss,
} from "../models/clip-model.ts";
import { Graph } from "../models/graph.ts";
import { EMOJI_CLIP_SIZES, type EmojiClipSizes, emojiClipConfig } from "../models/presets.ts";
import { lineChartPng } from "../plots/line-chart.ts";
import { JointAdamW } from "./optimizer.ts";
import { learningRateScale, lossCurve } from "./pretrain.ts";
import { Mulberry32 } from "./random.ts";

export interface ClipTrainOptions {
  /** The model folder (config.json, model.safetensors, tokenizer/). */
  out: string;
  /** Optimizer moments, RNG, data order and history (resume). */
  stateDir: string;
  steps: number;
  batchSize: number;
  lr: number;
  warmupSteps: number;
  weightDecay: number;
  maxGradNorm: number;
  seed: number;
  checkpointEvery: number;
  /** Image sets trained on. */
  sources: EmojiSource[];
  augment: boolean;
  sizes: EmojiClipSizes;
  resume: boolean;
}

export const CLIP_TRAIN_DEFAULTS: Omit<ClipTrainOptions, "out" | "stateDir"> = {
  steps: 1500,
  batchSize: 64,
  lr: 1e-3,
  warmupSteps: 100,
  weightDecay: 0.05,
  maxGradNorm: 1.0,
  seed: 20261201,
  checkpointEvery: 100,
  sources: ["google", "twitter"],
  augment: true,
  sizes: EMOJI_CLIP_SIZES,
  resume: true,
};

/** CLIP clamps its temperature: exp(logit_scale) <= 100. */
const MAX_LOGIT_SCALE = Math.log(100);

export interface ClipEvaluation {
  step: number;
  /** Zero-shot top-1 / top-5 among the animal names, per image set. */
  [source: string]: number | { top1: number; top5: number };
}

export interface ClipProgress {
  step: number;
  steps: number;
  loss: number;
  lossEma: number;
  /** image->text top-1 within the batch. */
  batchAccuracy: number;
  imagesPerSecond: number;
  lr: number;
  logitScale: number;
}

export interface ClipTrainingState {
  step: number;
  rng: number;
  /** The current epoch's image order and how far into it the run is. */
  order: number[];
  cursor: number;
  losses: number[];
  evaluations: ClipEvaluation[];
  seconds: number;
  options: Omit<ClipTrainOptions, "resume">;
}

/** The CLIP's vocabulary: every word of every emoji caption, <eos> last (see tokenizer.ts). */
export function clipTokenizer(): WordTokenizer {
  return WordTokenizer.fromCaptions(
    emojiRecords().map((r) => r.caption),
    { maxLength: 16, eosLast: true },
  );
}

/** Zero-shot top-1/top-5 of the animal images of each source among the animal names. */
export function evaluateAnimals(
  clip: ClipModel,
  dataset: EmojiDataset,
): Record<string, { top1: number; top5: number }> {
  const out: Record<string, { top1: number; top5: number }> = {};
  let classifier: ZeroShotClassifier | undefined;
  for (const source of new Set(dataset.records.map((r) => r.source))) {
    const { pixels, truth, labels } = animalImages(dataset, source);
    if (truth.length === 0) continue; // a partial dataset (tests) may hold no animal
    classifier ??= new ZeroShotClassifier(clip, labels);
    const r = classifier.classify(pixels, truth);
    out[source] = { top1: r.top1, top5: r.top5 };
  }
  return out;
}

export async function trainClip(
  engine: Engine,
  dataset: EmojiDataset,
  o: ClipTrainOptions,
  onProgress: (p: ClipProgress) => void = () => {},
  onEvaluation: (e: ClipEvaluation) => void = () => {},
): Promise<{ model: ClipModel; state: ClipTrainingState }> {
  mkdirSync(o.stateDir, { recursive: true });
  const statePath = join(o.stateDir, "state.json");
  const momentsPath = join(o.stateDir, "optimizer.safetensors");
  const configPath = join(o.out, "config.json");
  const resuming = o.resume && existsSync(statePath) && existsSync(configPath);
  if (o.resume && !resuming && existsSync(configPath)) {
    throw new Error(
      `${o.out} already holds a model but ${statePath} has no training state to resume: ` +
        "pass --fresh to start over in that folder, or choose another --out",
    );
  }
  const train = dataset.records.flatMap((r, i) => (o.sources.includes(r.source) ? [i] : []));
  if (train.length < 2) throw new Error(`no training images for sources ${o.sources.join(", ")}`);
  const { resume: _resume, ...recorded } = o;
  let model: ClipModel;
  let state: ClipTrainingState;
  if (resuming) {
    state = JSON.parse(readFileSync(statePath, "utf8")) as ClipTrainingState;
    model = ClipModel.load(engine, o.out);
    const moments = readSafetensors(momentsPath).tensors;
    model.params.writeOptimizerState({ m: moments.get("m")!.data, v: moments.get("v")!.data, step: state.step });
  } else {
    const tokenizer = clipTokenizer();
    model = ClipModel.create(engine, emojiClipConfig(tokenizer, o.sizes), tokenizer, o.seed);
    state = {
      step: 0,
      rng: o.seed >>> 0,
      order: [],
      cursor: 0,
      losses: [],
      evaluations: [],
      seconds: 0,
      options: recorded,
    };
  }

  const rng = new Mulberry32(state.rng);
  const optimizer = new JointAdamW([model.params]);
  const logitScale = model.params.value("logit_scale");
  const arena = engine.arena(64 << 20);
  let ema = state.losses.length ? state.losses[state.losses.length - 1]! : Number.NaN;
  const started = performance.now();
  const firstStep = state.step;
  const secondsBefore = state.seconds;

  const nextBatch = (): number[] => {
    const batch: number[] = [];
    while (batch.length < o.batchSize) {
      if (state.cursor >= state.order.length) {
        state.order = rng.permutation(train.length).map((k) => train[k]!);
        state.cursor = 0;
      }
      batch.push(state.order[state.cursor++]!);
    }
    return batch;
  };

  const checkpoint = async () => {
    state.seconds = secondsBefore + (performance.now() - started) / 1000;
    const evaluation: ClipEvaluation = { step: state.step, ...evaluateAnimals(model, dataset) };
    state.evaluations.push(evaluation);
    onEvaluation(evaluation);
    model.save(o.out, { step: String(state.step), seed: String(o.seed) });
    const s = model.params.readOptimizerState();
    writeSafetensors(
      momentsPath,
      new Map([
        ["m", { shape: [s.m.length], data: s.m }],
        ["v", { shape: [s.v.length], data: s.v }],
      ]),
    );
    state.rng = rng.state;
    writeFileAtomic(statePath, [Buffer.from(JSON.stringify(state))]);
    await clipTrainingCurves(o.out, state);
  };

  try {
    while (state.step < o.steps) {
      const indices = nextBatch();
      const captions = indices.map((i) => dataset.records[i]!.caption);
      const texts = [...new Set(captions)];
      const labels = captions.map((c) => texts.indexOf(c));
      let pixels = toFloatNCHW(dataset.images, indices, dataset.size);
      if (o.augment) pixels = augmentImages(pixels, dataset.size, rng, CLIP_AUGMENT);

      optimizer.zeroGrad();
      const g = new Graph(engine, model.source(), arena);
      const x = engine.fromArray(pixels, [indices.length, 3, dataset.size, dataset.size], { arena });
      const imageFeatures = clipImageFeatures(g, model.config, x);
      const textFeatures = model.textFeatures(g, texts);
      const scale = clipLogitScale(g, model.config);
      const head = clipLogits(imageFeatures.read(), textFeatures.read(), model.config.projection_dim, scale.read()[0]!);
      const { loss, dLogits, accuracy } = contrastiveLoss(head.logitsPerImage, head.imageRows, head.textRows, labels);
      const d = clipLogitsBackward(head, { logitsPerImage: dLogits });
      g.backwardFrom([
        [imageFeatures, engine.fromArray(d.imageFeatures, imageFeatures.shape, { arena })],
        [textFeatures, engine.fromArray(d.textFeatures, textFeatures.shape, { arena })],
        [scale, engine.fromArray([d.logitScale], [1], { arena })],
      ]);
      g.dispose();
      arena.reset();
      const lrScale = learningRateScale(state.step, o.steps, o.warmupSteps);
      optimizer.step({ lr: o.lr, maxGradNorm: o.maxGradNorm, weightDecay: o.weightDecay }, lrScale);
      const ls = logitScale.read()[0]!;
      if (ls > MAX_LOGIT_SCALE) logitScale.write([MAX_LOGIT_SCALE]);

      state.step += 1;
      state.losses.push(loss);
      ema = Number.isNaN(ema) ? loss : 0.98 * ema + 0.02 * loss;
      const seconds = (performance.now() - started) / 1000;
      onProgress({
        step: state.step,
        steps: o.steps,
        loss,
        lossEma: ema,
        batchAccuracy: accuracy,
        imagesPerSecond: ((state.step - firstStep) * o.batchSize) / seconds,
        lr: o.lr * lrScale,
        logitScale: Math.exp(Math.min(ls, MAX_LOGIT_SCALE)),
      });
      if (state.step % o.checkpointEvery === 0 || state.step === o.steps) await checkpoint();
    }
  } finally {
    arena.close();
  }
  return { model, state };
}

/** loss.png (contrastive loss per step) and zero-shot.png (top-1/top-5 per image set) in `dir`. */
export async function clipTrainingCurves(dir: string, state: ClipTrainingState): Promise<void> {
  await lossCurve(join(dir, "loss.png"), state.losses, "contrastive loss", "cross-entropy");
  const sources = [...new Set(state.evaluations.flatMap((e) => Object.keys(e).filter((k) => k !== "step")))];
  const series = sources.flatMap((source) =>
    (["top1", "top5"] as const).map((k) => ({
      name: `${source} ${k === "top1" ? "top-1" : "top-5"}`,
      points: state.evaluations.flatMap((e) => {
        const r = e[source] as { top1: number; top5: number } | undefined;
        return r ? [[e.step, 100 * r[k]] as [number, number]] : [];
      }),
    })),
  );
  if (series.length === 0) return;
  await lineChartPng(join(dir, "zero-shot.png"), series, {
    title: "zero-shot among the 123 animal names",
    xLabel: "step",
    yLabel: "% of animal images",
  });
}
