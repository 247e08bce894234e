// Per-prompt advantage normalisation (DESIGN.md §3), as ddpo-pytorch's PerPromptStatTracker:
// each prompt keeps a rolling buffer of its last `bufferSize` rewards, this batch's included.
// A prompt whose buffer holds fewer than `minCount` rewards is normalised with the whole batch's
// mean and std instead, so early epochs (few samples per prompt) do not divide by a noisy std.
// A = (r - mean) / (std + 1e-6), std the population std (numpy's np.std, ddof = 0).
// Advantages are not clipped here: the loss clips them to [-adv_clip_max, adv_clip_max].

import { meanStd } from "./statistics.ts";

const STD_EPS = 1e-6;

/** Summary of one prompt's buffer, for logging. */
export interface PromptRewardStats {
  mean: number;
  std: number;
  count: number;
}

/** The tracker's whole state, as saved with a checkpoint (JSON numbers round-trip float64 exactly). */
export interface PerPromptStatTrackerState {
  bufferSize: number;
  minCount: number;
  /** [prompt, its buffered rewards, oldest first], in first-seen order. */
  buffers: [string, number[]][];
}

function checkSettings(bufferSize: number, minCount: number): void {
  if (!Number.isInteger(bufferSize) || bufferSize < 1) {
    throw new RangeError(`stat tracker bufferSize must be a positive integer, got ${bufferSize}`);
  }
  // minCount > bufferSize is allowed (as in the reference): buffers never fill, batch stats always.
  if (!Number.isInteger(minCount) || minCount < 0) {
    throw new RangeError(`stat tracker minCount must be a non-negative integer, got ${minCount}`);
  }
}

export class PerPromptStatTracker {
  readonly bufferSize: number;
  readonly minCount: number;
  #buffers = new Map<string, number[]>();

  constructor(bufferSize = 16, minCount = 16) {
    checkSettings(bufferSize, minCount);
    this.bufferSize = bufferSize;
    this.minCount = minCount;
  }

  /**
   * Pushes this batch's rewards into their prompts' buffers, then returns the advantages.
   * prompts and rewards are (N,), one entry per sample; returns (N,).
   */
  update(prompts: readonly string[], rewards: ArrayLike<number>): Float64Array {
    const n = prompts.length;
    if (rewards.length !== n) throw new Error(`stat tracker: ${n} prompts but ${rewards.length} rewards`);
    for (let i = 0; i < n; i++) {
      if (typeof prompts[i] !== "string") throw new TypeError(`stat tracker: prompt ${i} is not a string`);
      if (!Number.isFinite(rewards[i]!)) throw new Error(`stat tracker: reward ${i} is ${rewards[i]} (not finite)`);
    }
    const advantages = new Float64Array(n);
    if (n === 0) return advantages;
    const batch = meanStd(Float64Array.from(rewards));

    // Group sample indices by prompt, in batch order (the reference's rewards[prompts == prompt]).
    const groups = new Map<string, number[]>();
    for (let i = 0; i < n; i++) {
      const group = groups.get(prompts[i]!);
      if (group) group.push(i);
      else groups.set(prompts[i]!, [i]);
    }
    for (const [prompt, indices] of groups) {
      let buffer = this.#buffers.get(prompt);
      if (!buffer) {
        buffer = [];
        this.#buffers.set(prompt, buffer);
      }
      for (const i of indices) buffer.push(rewards[i]!);
      if (buffer.length > this.bufferSize) buffer.splice(0, buffer.length - this.bufferSize);

      const { mean, std } = buffer.length < this.minCount ? batch : meanStd(buffer);
      for (const i of indices) advantages[i] = (rewards[i]! - mean) / (std + STD_EPS);
    }
    return advantages;
  }

  /** Mean, std and count of each prompt's buffer, for logging. */
  stats(): Map<string, PromptRewardStats> {
    const out = new Map<string, PromptRewardStats>();
    for (const [prompt, buffer] of this.#buffers) out.set(prompt, { ...meanStd(buffer), count: buffer.length });
    return out;
  }

  /** Number of prompts seen so far. */
  get promptCount(): number {
    return this.#buffers.size;
  }

  toJSON(): PerPromptStatTrackerState {
    return {
      bufferSize: this.bufferSize,
      minCount: this.minCount,
      buffers: [...this.#buffers].map(([prompt, buffer]) => [prompt, [...buffer]]),
    };
  }

  /**
   * Replaces this tracker's buffers with a saved state. The settings must match this tracker's:
   * a resumed run with another buffer size or min count would not continue the saved one.
   */
  fromJSON(state: PerPromptStatTrackerState): void {
    if (!state || !Array.isArray(state.buffers)) throw new Error("stat tracker state: missing buffers");
    if (state.bufferSize !== this.bufferSize || state.minCount !== this.minCount) {
      throw new Error(
        `stat tracker state has bufferSize ${state.bufferSize}, minCount ${state.minCount};` +
          ` this tracker has ${this.bufferSize}, ${this.minCount}`,
      );
    }
    const buffers = new Map<string, number[]>();
    for (const entry of state.buffers) {
      const [prompt, rewards] = Array.isArray(entry) ? entry : [];
      if (typeof prompt !== "string" || !Array.isArray(rewards) || buffers.has(prompt)) {
        throw new Error("stat tracker state: each buffer must be a distinct [prompt, rewards[]] pair");
      }
      if (rewards.length > this.bufferSize || !rewards.every((r) => typeof r === "number" && Number.isFinite(r))) {
        throw new Error(
          `stat tracker state: buffer of "${prompt}" must hold at most ${this.bufferSize} finite numbers`,
        );
      }
      buffers.set(prompt, [...rewards]);
    }
    this.#buffers = buffers;
  }

  /** A new tracker holding a saved state (settings taken from the state). */
  static fromState(state: PerPromptStatTrackerState): PerPromptStatTracker {
    const tracker = new PerPromptStatTracker(state.bufferSize, state.minCount);
    tracker.fromJSON(state);
    return tracker;
  }
}
