// The contract every reward follows (DESIGN.md §6): a batch of RGB images and their prompts in,
// one score per image out. The Rewarder gRPC service wraps these; the Trainer calls them directly.

/** Image side lengths in pixels. */
export interface ImageSize {
  height: number;
  width: number;
}

export interface RewardFunction {
  /** Registry name ("jpeg_compressibility", "color_target:red", "0.5*brightness+1*saturation"). */
  readonly name: string;
  /** One line for humans: what is scored and in which units. */
  readonly description: string;
  /**
   * images is (N, H, W, 3) RGB uint8, row-major, N = prompts.length; returns (N,) scores, higher
   * is better. Prompts are passed for scorers that use them (alignment); most ignore them.
   */
  score(images: Uint8Array, size: ImageSize, prompts: readonly string[]): Promise<Float64Array>;
}

/**
 * Checks a batch against the contract and returns N. Every reward calls it first, so a wrong
 * buffer fails with a message that names the reward instead of scoring garbage.
 */
export function validateBatch(reward: string, images: Uint8Array, size: ImageSize, prompts: readonly string[]): number {
  if (!(images instanceof Uint8Array)) throw new TypeError(`${reward}: images must be a Uint8Array (N, H, W, 3) RGB`);
  const { height, width } = size ?? {};
  if (!Number.isInteger(height) || !Number.isInteger(width) || height < 1 || width < 1) {
    throw new RangeError(`${reward}: image size must be positive integers, got ${height}x${width}`);
  }
  if (!Array.isArray(prompts)) throw new TypeError(`${reward}: prompts must be an array of strings`);
  const n = prompts.length;
  const expected = n * height * width * 3;
  if (images.length !== expected) {
    throw new RangeError(
      `${reward}: images has ${images.length} bytes, expected ${n} x ${height} x ${width} x 3 = ${expected}` +
        ` (one RGB image per prompt)`,
    );
  }
  return n;
}

/** Checks what a reward returned: N finite scores. */
export function validateScores(reward: string, scores: Float64Array, n: number): Float64Array {
  if (!(scores instanceof Float64Array) || scores.length !== n) {
    throw new Error(`${reward}: returned ${scores?.length} scores for ${n} images`);
  }
  for (let i = 0; i < n; i++) {
    if (!Number.isFinite(scores[i]!)) throw new Error(`${reward}: score ${i} is ${scores[i]} (not finite)`);
  }
  return scores;
}
