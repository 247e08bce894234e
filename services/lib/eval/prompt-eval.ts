// Does a text-to-image model draw what it is asked? Every prompt of a set is sampled with the
// same fixed seeds, and the emoji CLIP classifies each image zero-shot among all the set's
// prompts: top-1 is "the CLIP reads the prompt as the best match", top-5 "among the best five".
// `ddpo eval` prints it; training code can call it between checkpoints.

import { sampleImages } from "../diffusion/sampler.ts";
import { DEFAULT_GUIDANCE } from "../diffusion/sampling-limits.ts";
import type { ClipModel } from "../models/clip-model.ts";
import type { LoraAdapterSet } from "../models/lora.ts";
import { combineSources } from "../models/parameters.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";
import { topK, ZeroShotClassifier } from "./zero-shot.ts";

export interface PromptEvalOptions {
  /** Seeds 1..seeds, or the seeds themselves; the same for every prompt. */
  seeds: number | readonly number[];
  steps: number;
  guidance: number;
  eta: number;
  /** Samples per sampler call (memory bound). */
  batch: number;
  /** The zero-shot classifier's labels (default: the prompts); must include every prompt. */
  labels?: readonly string[];
  /** Adapters applied over the frozen model (a DDPO run's policy). */
  lora?: LoraAdapterSet | null;
  onProgress?: (done: number, total: number) => void;
}

export const PROMPT_EVAL_DEFAULTS: Omit<PromptEvalOptions, "lora" | "onProgress" | "seeds" | "labels"> & {
  seeds: number;
} = {
  seeds: 4,
  steps: 50,
  guidance: DEFAULT_GUIDANCE,
  eta: 1,
  batch: 64,
};

export interface PromptScore {
  prompt: string;
  /** Per seed: the rank of the prompt among all prompts (0 = best) and the CLIP's top choice. */
  ranks: number[];
  predictions: string[];
  top1: number;
  top5: number;
  /** Mean cosine of the prompt's images with the prompt under the CLIP (clip_alignment:raw). */
  alignment: number;
  /** Per seed: that image's cosine with the prompt. */
  alignments: number[];
}

export interface PromptEvalResult {
  prompts: PromptScore[];
  seeds: number[];
  top1: number;
  top5: number;
  alignment: number;
  /** Every image, prompt-major then seed, [N, C, S, S] in [-1, 1]. */
  images: Float32Array;
  seconds: number;
}

function mean(x: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i]!;
  return s / x.length;
}

export function evaluatePrompts(
  model: TextToImageModel,
  clip: ClipModel,
  prompts: readonly string[],
  o: PromptEvalOptions,
): PromptEvalResult {
  const seeds = typeof o.seeds === "number" ? Array.from({ length: o.seeds }, (_, k) => k + 1) : [...o.seeds];
  if (typeof o.seeds === "number" ? !Number.isInteger(o.seeds) || o.seeds < 1 : seeds.length === 0)
    throw new Error(`eval: seeds must be a positive integer or a non-empty list, got ${o.seeds}`);
  if (!Number.isInteger(o.batch) || o.batch < 1)
    throw new Error(`eval: batch must be a positive integer, got ${o.batch}`);
  const size = model.unetConfig.sample_size;
  if (model.unetConfig.out_channels !== 3 || size !== clip.imageSize) {
    throw new Error(
      `eval: the model draws ${model.unetConfig.out_channels}x${size}x${size} images, the CLIP reads 3x${clip.imageSize}x${clip.imageSize}`,
    );
  }
  const started = performance.now();
  const jobs = prompts.flatMap((prompt) => seeds.map((seed) => ({ prompt, seed })));
  const per = 3 * size * size;
  const images = new Float32Array(jobs.length * per);
  const source = o.lora
    ? combineSources(
        o.lora.source({ frozen: true }),
        model.unetSource({ frozen: true }),
        model.textSource({ frozen: true }),
      )
    : undefined;
  for (let start = 0; start < jobs.length; start += o.batch) {
    const chunk = jobs.slice(start, start + o.batch);
    const r = sampleImages(
      model,
      chunk.map((j) => j.prompt),
      {
        steps: o.steps,
        guidance: o.guidance,
        eta: o.eta,
        seeds: chunk.map((j) => j.seed),
        source,
        lora: o.lora ?? null,
      },
    );
    images.set(r.images, start * per);
    o.onProgress?.(start + chunk.length, jobs.length);
  }
  const classifier = new ZeroShotClassifier(clip, o.labels ?? prompts);
  const result = classifier.classify(
    images,
    jobs.map((j) => j.prompt),
  );
  const scores = prompts.map((prompt, p) => {
    const ranks = Array.from(result.ranks.subarray(p * seeds.length, (p + 1) * seeds.length));
    return {
      prompt,
      ranks,
      predictions: result.predictions.slice(p * seeds.length, (p + 1) * seeds.length),
      top1: topK(ranks, 1),
      top5: topK(ranks, 5),
      alignment: mean(result.alignment.subarray(p * seeds.length, (p + 1) * seeds.length)),
      alignments: Array.from(result.alignment.subarray(p * seeds.length, (p + 1) * seeds.length)),
    };
  });
  return {
    prompts: scores,
    seeds,
    top1: result.top1,
    top5: result.top5,
    alignment: mean(result.alignment),
    images,
    seconds: (performance.now() - started) / 1000,
  };
}
