// The reward library (DESIGN.md §6): built-in rewards by name, and weighted sums of rewards.
// The Rewarder gRPC service serves these; the Trainer may also call them in-process.

import { CLIP_REWARD_PATTERNS, clipRewardByName } from "./clip.ts";
import { brightness, colorTarget, redness, saturation } from "./colour.ts";
import { jpegCompressibility, jpegIncompressibility } from "./jpeg.ts";
import { type ImageSize, type RewardFunction, validateBatch, validateScores } from "./reward-function.ts";

export { AESTHETIC_LAYERS, AestheticHead } from "./aesthetic.ts";
export { aesthetic, clipAlignment, EMOJI_CLIP_DIR, sharedClip } from "./clip.ts";
export { brightness, colorTarget, NAMED_COLOURS, parseColour, redness, saturation } from "./colour.ts";
export { encodeJpeg, JPEG_QUALITY, jpegCompressibility, jpegIncompressibility, jpegSizesKb } from "./jpeg.ts";
export { type ImageSize, type RewardFunction, validateBatch, validateScores } from "./reward-function.ts";

const BUILT_IN: readonly RewardFunction[] = [
  jpegCompressibility,
  jpegIncompressibility,
  brightness,
  saturation,
  redness,
];

const COLOR_TARGET_PREFIX = "color_target:";

/** The built-in rewards a name can select; parametric families are listed with their pattern. */
export function listRewards(): { name: string; description: string }[] {
  return [
    ...BUILT_IN.map(({ name, description }) => ({ name, description })),
    {
      name: `${COLOR_TARGET_PREFIX}<colour>`,
      description: "closeness of the mean colour to <colour> (a name, #rrggbb or r,g,b) in [0, 1]",
    },
    ...CLIP_REWARD_PATTERNS,
  ];
}

export interface WeightedTerm {
  fn: RewardFunction;
  weight: number;
}

export interface WeightedReward extends RewardFunction {
  readonly terms: readonly WeightedTerm[];
}

/**
 * sum_k weight_k * fn_k(images), the terms scored concurrently. Its name ("0.5*brightness+1*redness")
 * is accepted by rewardByName, so a run that records it can rebuild the same reward.
 */
export function weightedSum(terms: readonly WeightedTerm[]): WeightedReward {
  if (terms.length === 0) throw new Error("weightedSum needs at least one term");
  for (const t of terms) {
    if (!Number.isFinite(t.weight)) throw new Error(`weightedSum: weight of ${t.fn.name} is ${t.weight}`);
  }
  const frozen = terms.map((t) => ({ fn: t.fn, weight: t.weight }));
  const name = frozen.map((t) => `${t.weight}*${t.fn.name}`).join("+");
  return {
    name,
    description: frozen.map((t) => `${t.weight} x (${t.fn.description})`).join(" + "),
    terms: frozen,
    async score(images: Uint8Array, size: ImageSize, prompts: readonly string[]): Promise<Float64Array> {
      const n = validateBatch(name, images, size, prompts);
      const parts = await Promise.all(frozen.map((t) => t.fn.score(images, size, prompts)));
      const out = new Float64Array(n);
      parts.forEach((scores, k) => {
        validateScores(frozen[k]!.fn.name, scores, n);
        const w = frozen[k]!.weight;
        for (let i = 0; i < n; i++) out[i]! += w * scores[i]!;
      });
      return out;
    },
  };
}

function singleRewardByName(name: string): RewardFunction {
  const found = BUILT_IN.find((r) => r.name === name);
  if (found) return found;
  if (name.startsWith(COLOR_TARGET_PREFIX)) return colorTarget(name.slice(COLOR_TARGET_PREFIX.length));
  const clip = clipRewardByName(name);
  if (clip) return clip;
  throw new Error(
    `unknown reward "${name}"; known: ${listRewards()
      .map((r) => r.name)
      .join(", ")}`,
  );
}

/**
 * A reward by name: a built-in ("jpeg_compressibility"), a parametric one ("color_target:red"),
 * or a weighted sum of those ("jpeg_compressibility+0.5*brightness"; a bare term has weight 1).
 */
export function rewardByName(name: string): RewardFunction {
  const spec = name.trim();
  if (!spec.includes("+") && !spec.includes("*")) return singleRewardByName(spec);
  const terms = spec.split("+").map((term) => {
    const star = term.indexOf("*");
    if (star < 0) return { fn: singleRewardByName(term.trim()), weight: 1 };
    const weightText = term.slice(0, star).trim();
    const weight = Number(weightText);
    if (weightText === "" || !Number.isFinite(weight)) {
      throw new Error(`reward "${name}": weight "${weightText}" in "${term.trim()}" is not a number`);
    }
    return { fn: singleRewardByName(term.slice(star + 1).trim()), weight };
  });
  return weightedSum(terms);
}
