// Zero-shot classification with the emoji CLIP: each image is ranked against every label of a
// set (e.g. the 123 animal names) by the cosine similarity of their embeddings, as CLIP's
// zero-shot evaluation does. The scorer of `ddpo eval`, of the CLIP's own training-time
// evaluation and of any later held-out check.

import { animalNames, type EmojiDataset, type EmojiSource, emojiRecords, toFloatNCHW } from "../data/emoji.ts";
import type { ClipModel } from "../models/clip-model.ts";

export interface ZeroShotResult {
  /** Per image: how many labels score strictly higher than its true label (0 = top-1). */
  ranks: Int32Array;
  /** Per image: the best-scoring label. */
  predictions: string[];
  /** Per image: cosine similarity with its true label (clip_alignment:raw of the image and prompt). */
  alignment: Float64Array;
  /** Fraction of images whose true label is first, or among the first five. */
  top1: number;
  top5: number;
}

/** Fraction of ranks below k (top-k accuracy). */
export function topK(ranks: ArrayLike<number>, k: number): number {
  if (ranks.length === 0) return Number.NaN;
  let hits = 0;
  for (let i = 0; i < ranks.length; i++) if (ranks[i]! < k) hits++;
  return hits / ranks.length;
}

export class ZeroShotClassifier {
  readonly #textEmbeds: Float64Array;
  readonly #dim: number;

  constructor(
    readonly clip: ClipModel,
    readonly labels: readonly string[],
  ) {
    if (labels.length === 0) throw new Error("zero-shot classification needs at least one label");
    if (new Set(labels).size !== labels.length) throw new Error("zero-shot labels must be distinct");
    this.#dim = clip.config.projection_dim;
    this.#textEmbeds = clip.embedTexts(labels);
  }

  /** Cosine similarity [n, labels] of images (n, 3, S, S) in [-1, 1] with every label. */
  similarities(pixels: Float32Array): Float64Array {
    const img = this.clip.embedImages(pixels);
    const d = this.#dim;
    const n = img.length / d;
    const m = this.labels.length;
    const out = new Float64Array(n * m);
    for (let i = 0; i < n; i++)
      for (let j = 0; j < m; j++) {
        let s = 0;
        for (let k = 0; k < d; k++) s += img[i * d + k]! * this.#textEmbeds[j * d + k]!;
        out[i * m + j] = s;
      }
    return out;
  }

  /** Ranks of each image's true label (an index into labels, or the label itself). */
  classify(pixels: Float32Array, truth: ReadonlyArray<number | string>): ZeroShotResult {
    const sims = this.similarities(pixels);
    const m = this.labels.length;
    const n = sims.length / m;
    if (truth.length !== n) throw new Error(`${truth.length} true labels for ${n} images`);
    const ranks = new Int32Array(n);
    const alignment = new Float64Array(n);
    const predictions: string[] = [];
    for (let i = 0; i < n; i++) {
      const t = typeof truth[i] === "number" ? (truth[i] as number) : this.labels.indexOf(truth[i] as string);
      if (t < 0 || t >= m) throw new Error(`true label ${JSON.stringify(truth[i])} is not among the labels`);
      const row = sims.subarray(i * m, (i + 1) * m);
      let rank = 0;
      let best = 0;
      for (let j = 0; j < m; j++) {
        if (row[j]! > row[t]!) rank++;
        if (row[j]! > row[best]!) best = j;
      }
      ranks[i] = rank;
      alignment[i] = row[t]!;
      predictions.push(this.labels[best]!);
    }
    return { ranks, predictions, alignment, top1: topK(ranks, 1), top5: topK(ranks, 5) };
  }
}

/**
 * The animal emoji images of the dataset (optionally of one source), with the labels of the
 * `animals` prompt set: every animal name of both image sets.
 */
export function animalImages(
  dataset: EmojiDataset,
  source?: EmojiSource,
): { pixels: Float32Array; truth: string[]; labels: string[] } {
  const labels = animalNames(emojiRecords());
  const names = new Set(labels);
  const indices: number[] = [];
  dataset.records.forEach((r, i) => {
    if (names.has(r.caption) && (source === undefined || r.source === source)) indices.push(i);
  });
  return {
    pixels: toFloatNCHW(dataset.images, indices, dataset.size),
    truth: indices.map((i) => dataset.records[i]!.caption),
    labels,
  };
}
