// One DDPO run in one process (DESIGN.md §2-§3): each epoch samples trajectories with log-probs
// under the current policy, scores the images, turns rewards into per-prompt advantages, and
// runs the policy-gradient (DDPO_IS / DDPO_SF) or reward-weighted-regression update over
// (sample, timestep) pairs, with LoRA adapters or full fine-tuning of the UNet.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../../../gpu-core/index.ts";
import type { FlatParameters } from "../../../gpu-core/parameters.ts";
import { writeFileAtomic } from "../checkpoints/atomic-file.ts";
import { loadIntoParameters } from "../checkpoints/model-folder.ts";
import { readSafetensors, writeSafetensors } from "../checkpoints/safetensors.ts";
import { type SampleResult, sampleImages, toUint8Images } from "../diffusion/sampler.ts";
import { SAMPLING_LIMITS, samplingProblems } from "../diffusion/sampling-limits.ts";
import type { ParameterSource } from "../models/graph.ts";
import { LoraAdapterSet } from "../models/lora.ts";
import { combineSources } from "../models/parameters.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";
import type { RewardFunction } from "../rewards/index.ts";
import { denoisingLossAndGrad } from "../training/denoising.ts";
import { JointAdamW } from "../training/optimizer.ts";
import { Mulberry32 } from "../training/random.ts";
import { type PolicyGradientSettings, policyGradientStep } from "./policy-gradient.ts";
import type { PromptSet } from "./prompts.ts";
import { PerPromptStatTracker } from "./stat-tracker.ts";

export type DdpoLoss = "ddpo_is" | "ddpo_sf" | "rwr" | "sparse_rwr";

export interface DdpoConfig {
  seed: number;
  loss: DdpoLoss;
  /** Samples per epoch = sampleBatchSize x sampleBatchesPerEpoch. */
  sampleBatchSize: number;
  sampleBatchesPerEpoch: number;
  steps: number;
  eta: number;
  guidance: number;
  /** Samples per training minibatch, and minibatches accumulated per optimizer step. */
  trainBatchSize: number;
  gradientAccumulation: number;
  innerEpochs: number;
  timestepFraction: number;
  /**
   * The last K DDIM steps are sampled but not trained on (0: every step, the paper's setting).
   * In pixel space the final steps have sigma ~ 0.01, so their log-prob gradients are ~25x those
   * of the other steps and, under a reward that reacts to pixel noise (JPEG size), almost pure
   * noise; they drown the signal of the earlier steps (bench/RESULTS.md, "DDPO learning").
   */
  skipFinalSteps: number;
  clipRange: number;
  advClipMax: number;
  lr: number;
  weightDecay: number;
  maxGradNorm: number;
  /** null: full fine-tuning of the UNet. */
  lora: { rank: number; alpha: number } | null;
  /** null: advantages from the whole batch's mean and std. */
  statTracking: { bufferSize: number; minCount: number } | null;
  rwrTemperature: number;
  sparseRwrPercentile: number;
}

export const DDPO_DEFAULTS: DdpoConfig = {
  seed: 42,
  loss: "ddpo_is",
  sampleBatchSize: 8,
  sampleBatchesPerEpoch: 2,
  steps: 20,
  eta: 1.0,
  guidance: 3.0,
  trainBatchSize: 4,
  gradientAccumulation: 4,
  innerEpochs: 1,
  timestepFraction: 1.0,
  skipFinalSteps: 0,
  clipRange: 1e-4,
  advClipMax: 5,
  lr: 3e-4,
  weightDecay: 1e-4,
  maxGradNorm: 1.0,
  lora: { rank: 4, alpha: 4 },
  statTracking: { bufferSize: 16, minCount: 16 },
  rwrTemperature: 1.0,
  sparseRwrPercentile: 0.9,
};

/** Statistics of one epoch's update. */
export interface UpdateStats {
  samples: number;
  pairs: number;
  loss: number;
  approxKl: number;
  clipFraction: number;
  /** max |logp_new - logp_old| over the pairs trained before the first optimizer step. */
  onPolicyMaxLogProbDiff: number;
  optimizerSteps: number;
}

export interface EpochReport extends UpdateStats {
  epoch: number;
  rewardMean: number;
  rewardStd: number;
  samplingSeconds: number;
  rewardSeconds: number;
  trainingSeconds: number;
  seconds: number;
}

/** What the update reads from an epoch's trajectories (latents [T+1, C, H, W] per sample). */
export type TrainingBatch = Pick<
  EpochTrajectories,
  "prompts" | "timesteps" | "latents" | "logProbs" | "advantages" | "rewards"
>;

/** One sample batch of an epoch: the prompts and the per-sample noise seeds. */
export interface SampleBatchPlan {
  prompts: string[];
  seeds: number[];
}

/** What one epoch sampled and scored (the Registry records it). */
export interface EpochTrajectories extends SampleResult {
  rewards: Float64Array;
  advantages: Float64Array;
  imagesU8: Uint8Array;
}

interface TrainerState {
  epoch: number;
  rng: number;
  statTracker: unknown;
  config: DdpoConfig;
}

function mean(xs: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += xs[i]!;
  return xs.length ? s / xs.length : Number.NaN;
}

function std(xs: ArrayLike<number>): number {
  const m = mean(xs);
  let s = 0;
  for (let i = 0; i < xs.length; i++) s += (xs[i]! - m) ** 2;
  return Math.sqrt(s / Math.max(1, xs.length));
}

export class DdpoTrainer {
  readonly lora: LoraAdapterSet | null;
  readonly trainable: FlatParameters;
  readonly optimizer: JointAdamW;
  readonly statTracker: PerPromptStatTracker | null;
  /** Called after each sample batch and each optimizer step of an epoch (progress bars). */
  onProgress: ((phase: "sampling" | "training", done: number, total: number) => void) | null = null;
  #rng: Mulberry32;
  #epoch = 0;
  readonly #arena;

  constructor(
    readonly engine: Engine,
    readonly model: TextToImageModel,
    readonly config: DdpoConfig,
    /** null when rewards come from elsewhere (the Rewarder services); collect() needs one. */
    readonly reward: RewardFunction | null,
    readonly prompts: PromptSet,
  ) {
    validateConfig(config);
    this.lora = config.lora ? LoraAdapterSet.create(engine, model.unetShapes, config.lora, config.seed) : null;
    this.trainable = this.lora ? this.lora.params : model.unet;
    this.optimizer = new JointAdamW([this.trainable]);
    this.statTracker = config.statTracking
      ? new PerPromptStatTracker(config.statTracking.bufferSize, config.statTracking.minCount)
      : null;
    this.#rng = new Mulberry32(config.seed);
    this.#arena = engine.arena(64 << 20);
  }

  get epoch(): number {
    return this.#epoch;
  }

  /** Parameters as the policy sees them; `trainable` ones carry gradient slots. */
  source(trainable: boolean): ParameterSource {
    const text = this.model.textSource({ frozen: true });
    if (this.lora) {
      return combineSources(this.lora.source({ frozen: !trainable }), this.model.unetSource({ frozen: true }), text);
    }
    return combineSources(this.model.unetSource({ frozen: !trainable }), text);
  }

  /**
   * This epoch's prompts and seeds, one entry per sample batch; advances the prompt RNG, so call
   * it once per epoch. Seeds depend only on (config seed, epoch, position): a resumed or retried
   * epoch samples the same trajectories.
   */
  planEpoch(): SampleBatchPlan[] {
    const c = this.config;
    const plan: SampleBatchPlan[] = [];
    for (let k = 0; k < c.sampleBatchesPerEpoch; k++) {
      const prompts = this.prompts.sample(this.#rng, c.sampleBatchSize);
      const seeds = prompts.map(
        (_, i) => (c.seed * 1_000_003 + this.#epoch * 10_007 + k * c.sampleBatchSize + i) % 2 ** 52,
      );
      plan.push({ prompts, seeds });
    }
    return plan;
  }

  /** Per-prompt (or whole-batch) normalised advantages; updates the stat tracker's buffers. */
  computeAdvantages(prompts: readonly string[], rewards: Float64Array): Float64Array {
    if (rewards.length !== prompts.length || !rewards.every(Number.isFinite)) {
      throw new Error(`rewards: got ${rewards.length} values for ${prompts.length} samples (all must be finite)`);
    }
    return this.statTracker
      ? this.statTracker.update(prompts, rewards)
      : Float64Array.from(rewards, (r) => (r - mean(rewards)) / (std(rewards) + 1e-6));
  }

  /** Marks the epoch done (after its update); returns the number of completed epochs. */
  endEpoch(): number {
    this.#epoch += 1;
    return this.#epoch;
  }

  /** Samples this epoch's trajectories in this process and scores them. */
  async collect(): Promise<{ trajectories: EpochTrajectories; samplingSeconds: number; rewardSeconds: number }> {
    const c = this.config;
    const t0 = performance.now();
    const plan = this.planEpoch();
    const results = plan.map(({ prompts, seeds }, k) => {
      const result = sampleImages(this.model, prompts, {
        steps: c.steps,
        guidance: c.guidance,
        eta: c.eta,
        seeds,
        keepTrajectory: true,
        source: this.source(false),
        lora: this.lora,
      });
      this.onProgress?.("sampling", k + 1, plan.length);
      return result;
    });
    const merged = mergeSamples(results);
    const t1 = performance.now();
    const size = this.model.unetConfig.sample_size;
    const n = merged.prompts.length;
    const imagesU8 = toUint8Images(merged.images, n, this.model.unetConfig.out_channels, size);
    if (!this.reward) throw new Error("collect: this trainer has no reward function (rewards come from Rewarders)");
    const rewards = await this.reward.score(imagesU8, { height: size, width: size }, merged.prompts);
    if (rewards.length !== n || !rewards.every(Number.isFinite)) {
      throw new Error(`reward ${this.reward.name} returned ${rewards.length} values (need ${n} finite ones)`);
    }
    const advantages = this.computeAdvantages(merged.prompts, rewards);
    const t2 = performance.now();
    return {
      trajectories: { ...merged, rewards, advantages, imagesU8 },
      samplingSeconds: (t1 - t0) / 1000,
      rewardSeconds: (t2 - t1) / 1000,
    };
  }

  /** The update on one epoch's trajectories; returns loss statistics. */
  train(tr: TrainingBatch): UpdateStats {
    const c = this.config;
    if (c.loss === "rwr" || c.loss === "sparse_rwr") return this.#trainRwr(tr);
    const n = tr.prompts.length;
    const T = tr.timesteps.length;
    // Steps eligible for training: the first T - skipFinalSteps (most noisy first).
    const eligible = T - c.skipFinalSteps;
    if (eligible < 1) throw new Error(`skipFinalSteps ${c.skipFinalSteps} leaves none of the ${T} steps to train`);
    const pairsPerSample = Math.max(1, Math.floor(eligible * c.timestepFraction));
    const per = tr.latents[0]!.length / (T + 1);
    const settings: PolicyGradientSettings = {
      loss: c.loss,
      guidance: c.guidance,
      eta: c.eta,
      steps: c.steps,
      clipRange: c.clipRange,
      advClipMax: c.advClipMax,
    };
    const source = this.source(true);
    let lossSum = 0;
    let klSum = 0;
    let clipSum = 0;
    let calls = 0;
    let trainedPairs = 0;
    let onPolicy = 0;
    let optimizerSteps = 0;
    const totalSteps = optimizerStepsPerEpoch(c, n);
    for (let inner = 0; inner < c.innerEpochs; inner++) {
      const order = this.#rng.permutation(n);
      const timestepOrder = Array.from({ length: n }, () => this.#rng.permutation(eligible));
      const minibatches: number[][] = [];
      for (let i = 0; i < n; i += c.trainBatchSize) minibatches.push(order.slice(i, i + c.trainBatchSize));
      for (let g0 = 0; g0 < minibatches.length; g0 += c.gradientAccumulation) {
        const group = minibatches.slice(g0, g0 + c.gradientAccumulation);
        const pairs = group.reduce((a, mb) => a + mb.length, 0) * pairsPerSample;
        const beforeFirstStep = optimizerSteps === 0 && inner === 0;
        this.optimizer.zeroGrad();
        for (const mb of group) {
          for (let j = 0; j < pairsPerSample; j++) {
            const xT = new Float32Array(mb.length * per);
            const xPrev = new Float32Array(mb.length * per);
            const ks = mb.map((s) => timestepOrder[s]![j]!);
            mb.forEach((s, i) => {
              const k = ks[i]!;
              xT.set(tr.latents[s]!.subarray(k * per, (k + 1) * per), i * per);
              xPrev.set(tr.latents[s]!.subarray((k + 1) * per, (k + 2) * per), i * per);
            });
            const stats = policyGradientStep(
              this.model,
              source,
              this.lora,
              this.#arena,
              {
                prompts: mb.map((s) => tr.prompts[s]!),
                xT,
                xPrev,
                timesteps: ks.map((k) => tr.timesteps[k]!),
                oldLogProbs: Float32Array.from(mb.map((s, i) => tr.logProbs[s]![ks[i]!]!)),
                advantages: Float32Array.from(mb.map((s) => tr.advantages[s]!)),
              },
              settings,
              mb.length / pairs,
            );
            this.#arena.reset();
            if (beforeFirstStep) {
              mb.forEach((s, i) => {
                const d = Math.abs(stats.logProbs[i]! - tr.logProbs[s]![ks[i]!]!);
                onPolicy = Math.max(onPolicy, d);
              });
            }
            lossSum += stats.loss;
            klSum += stats.approxKl;
            clipSum += stats.clipFraction;
            calls += 1;
            trainedPairs += mb.length;
          }
        }
        this.optimizer.step({ lr: c.lr, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm });
        optimizerSteps += 1;
        this.onProgress?.("training", optimizerSteps, totalSteps);
      }
    }
    return {
      samples: n,
      pairs: trainedPairs,
      loss: lossSum / calls,
      approxKl: klSum / calls,
      clipFraction: clipSum / calls,
      onPolicyMaxLogProbDiff: onPolicy,
      optimizerSteps,
    };
  }

  /** RWR: the denoising loss on the sampled x0 weighted by exp(r / T) (normalised to mean 1);
   * sparse RWR: weight 1 above the reward percentile, 0 below. */
  #trainRwr(tr: TrainingBatch): UpdateStats {
    const c = this.config;
    const n = tr.prompts.length;
    const T = tr.timesteps.length;
    const per = tr.latents[0]!.length / (T + 1);
    let weights: number[];
    if (c.loss === "rwr") {
      const max = Math.max(...tr.rewards);
      const e = Array.from(tr.rewards, (r) => Math.exp((r - max) / c.rwrTemperature));
      const z = e.reduce((a, b) => a + b, 0);
      weights = e.map((v) => (v * n) / z);
    } else {
      const sorted = Array.from(tr.rewards).sort((a, b) => a - b);
      const threshold = sorted[Math.min(n - 1, Math.floor(c.sparseRwrPercentile * n))]!;
      weights = Array.from(tr.rewards, (r) => (r >= threshold ? 1 : 0));
    }
    const source = this.source(true);
    let lossSum = 0;
    let calls = 0;
    let optimizerSteps = 0;
    for (let inner = 0; inner < c.innerEpochs; inner++) {
      const order = this.#rng.permutation(n).filter((s) => weights[s]! > 0);
      for (let i = 0; i < order.length; i += c.trainBatchSize * c.gradientAccumulation) {
        const group = order.slice(i, i + c.trainBatchSize * c.gradientAccumulation);
        this.optimizer.zeroGrad();
        for (let j = 0; j < group.length; j += c.trainBatchSize) {
          const mb = group.slice(j, j + c.trainBatchSize);
          const x0 = new Float32Array(mb.length * per);
          mb.forEach((s, k) => {
            x0.set(tr.latents[s]!.subarray(T * per, (T + 1) * per), k * per);
          });
          const loss = denoisingLossAndGrad(
            this.model,
            source,
            this.#arena,
            {
              x0,
              prompts: mb.map((s) => tr.prompts[s]!),
              timesteps: mb.map(() => this.#rng.int(this.model.schedule.trainTimesteps)),
              noiseSeed: c.seed + 7919,
              noiseOffset: (this.#epoch * n + i + j) * per,
              weights: mb.map((s) => weights[s]! * (mb.length / group.length)),
            },
            this.lora,
          );
          this.#arena.reset();
          lossSum += loss;
          calls += 1;
        }
        this.optimizer.step({ lr: c.lr, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm });
        optimizerSteps += 1;
      }
    }
    return {
      samples: n,
      pairs: calls,
      loss: calls ? lossSum / calls : 0,
      approxKl: 0,
      clipFraction: 0,
      onPolicyMaxLogProbDiff: 0,
      optimizerSteps,
    };
  }

  /** One whole epoch: collect, score, update. */
  async runEpoch(onTrajectories?: (t: EpochTrajectories) => void | Promise<void>): Promise<EpochReport> {
    const started = performance.now();
    const { trajectories, samplingSeconds, rewardSeconds } = await this.collect();
    await onTrajectories?.(trajectories);
    const t0 = performance.now();
    const stats = this.train(trajectories);
    const trainingSeconds = (performance.now() - t0) / 1000;
    const epoch = this.endEpoch();
    return {
      epoch,
      rewardMean: mean(trajectories.rewards),
      rewardStd: std(trajectories.rewards),
      ...stats,
      samplingSeconds,
      rewardSeconds,
      trainingSeconds,
      seconds: (performance.now() - started) / 1000,
    };
  }

  /**
   * Saves the policy (LoRA adapters, or the UNet weights), optimizer moments, the stat tracker's
   * buffers and the prompt RNG position, so a resumed run continues exactly.
   */
  saveCheckpoint(dir: string): void {
    mkdirSync(dir, { recursive: true });
    if (this.lora) this.lora.save(join(dir, "lora"), { epoch: String(this.#epoch) });
    else this.model.save(join(dir, "model"), { epoch: String(this.#epoch) });
    const s = this.trainable.readOptimizerState();
    writeSafetensors(join(dir, "optimizer.safetensors"), {
      m: { shape: [s.m.length], data: s.m },
      v: { shape: [s.v.length], data: s.v },
    });
    const state: TrainerState & { optimizerStep: number } = {
      epoch: this.#epoch,
      rng: this.#rng.state,
      statTracker: this.statTracker?.toJSON() ?? null,
      config: this.config,
      optimizerStep: s.step,
    };
    writeFileAtomic(join(dir, "trainer_state.json"), [Buffer.from(JSON.stringify(state))]);
  }

  /** Restores a checkpoint written by saveCheckpoint (same base model and config). */
  restoreCheckpoint(dir: string): void {
    const path = join(dir, "trainer_state.json");
    if (!existsSync(path)) throw new Error(`${dir}: no trainer_state.json (not a DDPO checkpoint)`);
    const state = JSON.parse(readFileSync(path, "utf8")) as TrainerState & { optimizerStep: number };
    if (this.lora) {
      const loaded = LoraAdapterSet.load(this.engine, this.model.unetShapes, join(dir, "lora"));
      this.lora.params.values.write(loaded.params.values.read());
      loaded.close();
    } else {
      loadIntoParameters(this.model.unet, join(dir, "model", "unet", "diffusion_pytorch_model.safetensors"));
    }
    const moments = readSafetensors(join(dir, "optimizer.safetensors")).tensors;
    this.trainable.writeOptimizerState({
      m: moments.get("m")!.data,
      v: moments.get("v")!.data,
      step: state.optimizerStep,
    });
    this.#epoch = state.epoch;
    this.#rng = new Mulberry32(state.rng);
    if (this.statTracker && state.statTracker) this.statTracker.fromJSON(state.statTracker as never);
  }

  close(): void {
    this.#arena.close();
    this.lora?.close();
  }
}

export function mergeSamples(results: SampleResult[]): SampleResult {
  const first = results[0]!;
  const images = new Float32Array(results.reduce((a, r) => a + r.images.length, 0));
  let offset = 0;
  for (const r of results) {
    images.set(r.images, offset);
    offset += r.images.length;
  }
  const ids = new Int32Array(results.reduce((a, r) => a + r.inputIds.length, 0));
  offset = 0;
  for (const r of results) {
    ids.set(r.inputIds, offset);
    offset += r.inputIds.length;
  }
  return {
    prompts: results.flatMap((r) => r.prompts),
    seeds: results.flatMap((r) => r.seeds),
    inputIds: ids,
    uncondIds: first.uncondIds,
    timesteps: first.timesteps,
    images,
    latents: results.flatMap((r) => r.latents),
    logProbs: results.flatMap((r) => r.logProbs),
  };
}

/** Optimizer steps of the DDPO update over n samples: per inner epoch, one per group of
 * gradientAccumulation minibatches of trainBatchSize samples. */
export function optimizerStepsPerEpoch(c: DdpoConfig, n = c.sampleBatchSize * c.sampleBatchesPerEpoch): number {
  return c.innerEpochs * Math.ceil(Math.ceil(n / c.trainBatchSize) / c.gradientAccumulation);
}

/** Largest LoRA rank accepted (the shipped UNet's widest layer is far narrower). */
const MAX_LORA_RANK = 256;

export function validateConfig(c: DdpoConfig): void {
  const problems: string[] = [];
  const posInt = (k: keyof DdpoConfig, max = Number.MAX_SAFE_INTEGER) => {
    const v = c[k];
    if (typeof v !== "number" || !Number.isInteger(v) || v < 1 || v > max)
      problems.push(`${k} must be a positive integer${max < Number.MAX_SAFE_INTEGER ? ` at most ${max}` : ""}`);
  };
  posInt("sampleBatchesPerEpoch");
  posInt("trainBatchSize", SAMPLING_LIMITS.maxBatchSize);
  posInt("gradientAccumulation", SAMPLING_LIMITS.maxSamples);
  posInt("innerEpochs", 100);
  // An epoch is one Sample call per Sampler: the Sampler's own limits apply.
  problems.push(
    ...samplingProblems(
      {
        samples: c.sampleBatchSize * c.sampleBatchesPerEpoch,
        steps: c.steps,
        guidance: c.guidance,
        eta: c.eta,
        batchSize: c.sampleBatchSize,
      },
      {
        samples: "samples per epoch (sampleBatchSize x sampleBatchesPerEpoch)",
        steps: "steps",
        guidance: "guidance",
        eta: "eta",
        batchSize: "sampleBatchSize",
      },
    ),
  );
  if (!["ddpo_is", "ddpo_sf", "rwr", "sparse_rwr"].includes(c.loss)) problems.push(`unknown loss ${c.loss}`);
  if (!(c.timestepFraction > 0 && c.timestepFraction <= 1)) problems.push("timestepFraction must be in (0, 1]");
  if (!(Number.isInteger(c.skipFinalSteps) && c.skipFinalSteps >= 0 && c.skipFinalSteps < c.steps))
    problems.push("skipFinalSteps must be an integer in [0, steps)");
  if (!(c.clipRange >= 0)) problems.push("clipRange must be >= 0");
  if (!(c.advClipMax > 0)) problems.push("advClipMax must be > 0");
  if (!(c.lr > 0)) problems.push("lr must be > 0");
  if (!(c.rwrTemperature > 0)) problems.push("rwrTemperature must be > 0");
  if (!(c.sparseRwrPercentile >= 0 && c.sparseRwrPercentile < 1))
    problems.push("sparseRwrPercentile must be in [0, 1)");
  if (c.lora) {
    if (!(Number.isInteger(c.lora.rank) && c.lora.rank >= 1 && c.lora.rank <= MAX_LORA_RANK))
      problems.push(`lora.rank must be an integer in 1..${MAX_LORA_RANK}, got ${c.lora.rank}`);
    if (!(Number.isFinite(c.lora.alpha) && c.lora.alpha > 0))
      problems.push(`lora.alpha must be a finite number > 0, got ${c.lora.alpha}`);
  }
  if (c.statTracking) {
    for (const k of ["bufferSize", "minCount"] as const) {
      const v = c.statTracking[k];
      if (!(Number.isInteger(v) && v >= 1 && v <= 1_000_000))
        problems.push(`statTracking.${k} must be an integer in 1..1000000, got ${v}`);
    }
  }
  if (problems.length) throw new Error(`DDPO config: ${problems.join("; ")}`);
}
