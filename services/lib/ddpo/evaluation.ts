// Held-out evaluation, the over-optimisation guard's measurement (issue 15): a run names fixed
// evaluation prompts (disjoint from its training prompts) and seeds, and a period. Every period the
// policy samples each prompt x seed with that fixed noise; every image is scored by each configured
// reward and by the content check, the emoji CLIP's zero-shot reading of the image among the
// evaluation and training prompts (top-1 hit 0/1, and the cosine with its own prompt). One score
// per (prompt, seed, metric): the rows of `evaluation_scores` (migrations/20261201T1410_...).

import { toUint8Images } from "../diffusion/sampler.ts";
import { evaluatePrompts } from "../eval/prompt-eval.ts";
import type { ClipModel } from "../models/clip-model.ts";
import type { LoraAdapterSet } from "../models/lora.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";
import type { RewardFunction } from "../rewards/index.ts";

export interface HeldOutEvaluation {
  prompts: string[];
  seeds: number[];
  /** Evaluated before training (epoch 0) and after every `every` completed epochs. */
  every: number;
  /**
   * Early stopping: the run stops when `metric`'s mean falls below `fraction` x its mean at
   * epoch 0 (e.g. the content check below half its start); for a negative start, when it falls
   * by more than (1 - fraction) x its magnitude. null: never.
   */
  stopBelow: { metric: string; fraction: number } | null;
  /** The metric whose highest mean marks the best evaluated policy; null: none. */
  bestBy: string | null;
}

/** One evaluation's mean per metric. */
export interface EvaluationSummary {
  epoch: number;
  means: Record<string, number>;
}

/** What the evaluations so far say: the best evaluated epoch, and why to stop (null: go on). */
export interface GuardVerdict {
  best: { epoch: number; metric: string; mean: number } | null;
  stop: string | null;
}

/** The content check: 1 when the CLIP reads the image as its own prompt first, else 0. */
export const CONTENT_TOP1 = "content:zero_shot_top1";
/** Cosine of the image with its prompt under the emoji CLIP. */
export const CONTENT_ALIGNMENT = "content:clip_alignment";

export interface EvaluationScore {
  prompt: string;
  seed: number;
  metric: string;
  value: number;
}

/** Everything wrong with a held-out evaluation's settings for a run training on `trainingPrompts`. */
export function evaluationProblems(e: HeldOutEvaluation, trainingPrompts: readonly string[]): string[] {
  const problems: string[] = [];
  if (e.prompts.length === 0) problems.push("evaluation needs at least one prompt");
  if (new Set(e.prompts).size !== e.prompts.length) problems.push("evaluation prompts must be distinct");
  const training = new Set(trainingPrompts);
  const shared = [...new Set(e.prompts.filter((p) => training.has(p)))];
  if (shared.length) problems.push(`evaluation prompts must be held out of training; shared: ${shared.join(", ")}`);
  if (e.seeds.length === 0) problems.push("evaluation needs at least one seed");
  if (!e.seeds.every((s) => Number.isSafeInteger(s) && s >= 0 && s < 2 ** 52))
    problems.push("evaluation seeds must be integers in [0, 2^52)");
  if (new Set(e.seeds).size !== e.seeds.length) problems.push("evaluation seeds must be distinct");
  if (!(Number.isInteger(e.every) && e.every >= 1))
    problems.push(`evaluation every must be a positive integer, got ${e.every}`);
  if (e.stopBelow) {
    if (!e.stopBelow.metric) problems.push("evaluation stopBelow needs a metric");
    if (!(e.stopBelow.fraction > 0 && e.stopBelow.fraction < 1))
      problems.push(`evaluation stopBelow fraction must be in (0, 1), got ${e.stopBelow.fraction}`);
  }
  if (e.bestBy === "") problems.push("evaluation bestBy must name a metric");
  return problems;
}

/** Mean per metric of one evaluation's scores. */
export function summariseEvaluation(epoch: number, scores: readonly EvaluationScore[]): EvaluationSummary {
  const sums = new Map<string, [number, number]>();
  for (const s of scores) {
    const [sum, n] = sums.get(s.metric) ?? [0, 0];
    sums.set(s.metric, [sum + s.value, n + 1]);
  }
  return { epoch, means: Object.fromEntries([...sums].map(([m, [sum, n]]) => [m, sum / n])) };
}

/**
 * The guard's verdict over the evaluations so far (epoch order, the first at epoch 0): the best
 * epoch by `bestBy` (the earliest among ties), and a stop when the latest `stopBelow.metric` mean
 * is below the fraction of its epoch-0 mean. A metric the evaluations lack is an error (a typo
 * would otherwise disable the guard silently).
 */
export function guardVerdict(e: HeldOutEvaluation, history: readonly EvaluationSummary[]): GuardVerdict {
  const verdict: GuardVerdict = { best: null, stop: null };
  if (history.length === 0) return verdict;
  const meanOf = (h: EvaluationSummary, metric: string): number => {
    const m = h.means[metric];
    if (m === undefined)
      throw new Error(`held-out evaluation: no metric '${metric}' (have ${Object.keys(h.means).join(", ")})`);
    return m;
  };
  if (e.bestBy) {
    for (const h of history) {
      const mean = meanOf(h, e.bestBy);
      if (!verdict.best || mean > verdict.best.mean) verdict.best = { epoch: h.epoch, metric: e.bestBy, mean };
    }
  }
  if (e.stopBelow) {
    const { metric, fraction } = e.stopBelow;
    const start = meanOf(history[0]!, metric);
    const latest = history[history.length - 1]!;
    const now = meanOf(latest, metric);
    // start - (1 - fraction)|start|: fraction x start for a positive start; for a negative one
    // (an alignment, a JPEG size in -kB) the same fall measured on its magnitude.
    if (latest.epoch > 0 && now < start - (1 - fraction) * Math.abs(start)) {
      verdict.stop =
        `${metric} fell to ${now.toPrecision(3)} at epoch ${latest.epoch}, below ${fraction} x its ` +
        `start ${start.toPrecision(3)}`;
    }
  }
  return verdict;
}

/** Whether the policy after `epoch` completed epochs is evaluated (epoch 0 always is). */
export function evaluationDue(e: HeldOutEvaluation, epoch: number): boolean {
  return epoch % e.every === 0;
}

export interface EvaluationSampling {
  steps: number;
  guidance: number;
  eta: number;
  /** Images per sampler call. */
  batch: number;
}

/** The held-out images of one evaluation and their content-check scores. */
export interface HeldOutSamples {
  /** Per image (prompt-major, then seed). */
  prompts: string[];
  seeds: number[];
  /** [N, size, size, 3] uint8 RGB, what rewards score. */
  pixels: Uint8Array;
  imageSize: number;
  content: EvaluationScore[];
}

/**
 * Samples every evaluation prompt x seed under the policy (the model, with `lora` over it when
 * given) and applies the content check; the rewards are the caller's (in-process or Rewarders).
 */
export function sampleHeldOut(
  model: TextToImageModel,
  lora: LoraAdapterSet | null,
  clip: ClipModel,
  e: HeldOutEvaluation,
  trainingPrompts: readonly string[],
  sampling: EvaluationSampling,
): HeldOutSamples {
  const problems = evaluationProblems(e, trainingPrompts);
  if (problems.length) throw new Error(`held-out evaluation: ${problems.join("; ")}`);
  const r = evaluatePrompts(model, clip, e.prompts, {
    ...sampling,
    seeds: e.seeds,
    lora,
    labels: [...e.prompts, ...trainingPrompts],
  });
  const n = e.prompts.length * e.seeds.length;
  const size = model.unetConfig.sample_size;
  const content: EvaluationScore[] = [];
  for (const p of r.prompts) {
    e.seeds.forEach((seed, si) => {
      content.push({ prompt: p.prompt, seed, metric: CONTENT_TOP1, value: p.ranks[si] === 0 ? 1 : 0 });
      content.push({ prompt: p.prompt, seed, metric: CONTENT_ALIGNMENT, value: p.alignments[si]! });
    });
  }
  return {
    prompts: e.prompts.flatMap((p) => e.seeds.map(() => p)),
    seeds: e.prompts.flatMap(() => e.seeds),
    pixels: toUint8Images(r.images, n, model.unetConfig.out_channels, size),
    imageSize: size,
    content,
  };
}

/** One reward's scores of the held-out images as rows. */
export function rewardRows(samples: HeldOutSamples, metric: string, scores: ArrayLike<number>): EvaluationScore[] {
  return samples.prompts.map((prompt, i) => ({ prompt, seed: samples.seeds[i]!, metric, value: scores[i]! }));
}

/** sampleHeldOut scored by in-process rewards: each reward's rows, then the content check's. */
export async function evaluatePolicy(
  model: TextToImageModel,
  lora: LoraAdapterSet | null,
  clip: ClipModel,
  rewards: readonly RewardFunction[],
  e: HeldOutEvaluation,
  trainingPrompts: readonly string[],
  sampling: EvaluationSampling,
): Promise<EvaluationScore[]> {
  const h = sampleHeldOut(model, lora, clip, e, trainingPrompts, sampling);
  const scores: EvaluationScore[] = [];
  for (const reward of rewards) {
    const values = await reward.score(h.pixels, { height: h.imageSize, width: h.imageSize }, h.prompts);
    scores.push(...rewardRows(h, reward.name, values));
  }
  return [...scores, ...h.content];
}
