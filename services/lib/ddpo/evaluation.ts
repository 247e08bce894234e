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
  return problems;
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

/**
 * Samples every evaluation prompt x seed under the policy (the model, with `lora` over it when
 * given) and scores each image: every reward, then the content check. Prompt-major, then seed.
 */
export async function evaluatePolicy(
  model: TextToImageModel,
  lora: LoraAdapterSet | null,
  clip: ClipModel,
  rewards: readonly RewardFunction[],
  e: HeldOutEvaluation,
  trainingPrompts: readonly string[],
  sampling: EvaluationSampling,
): Promise<EvaluationScore[]> {
  const problems = evaluationProblems(e, trainingPrompts);
  if (problems.length) throw new Error(`held-out evaluation: ${problems.join("; ")}`);
  const r = evaluatePrompts(model, clip, e.prompts, {
    ...sampling,
    seeds: e.seeds,
    lora,
    labels: [...e.prompts, ...trainingPrompts],
  });
  const jobs = e.prompts.flatMap((prompt) => e.seeds.map((seed) => ({ prompt, seed })));
  const size = model.unetConfig.sample_size;
  const pixels = toUint8Images(r.images, jobs.length, model.unetConfig.out_channels, size);
  const scores: EvaluationScore[] = [];
  for (const reward of rewards) {
    const values = await reward.score(
      pixels,
      { height: size, width: size },
      jobs.map((j) => j.prompt),
    );
    jobs.forEach((j, i) => {
      scores.push({ ...j, metric: reward.name, value: values[i]! });
    });
  }
  for (const p of r.prompts) {
    e.seeds.forEach((seed, si) => {
      scores.push({ prompt: p.prompt, seed, metric: CONTENT_TOP1, value: p.ranks[si] === 0 ? 1 : 0 });
      scores.push({ prompt: p.prompt, seed, metric: CONTENT_ALIGNMENT, value: p.alignments[si]! });
    });
  }
  return scores;
}
