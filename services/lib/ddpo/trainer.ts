// The policy being trained and its update (DESIGN.md §3): LoRA adapters or the full UNet, AdamW
// moments, the per-prompt stat tracker and the prompt RNG. It plans each epoch's prompts and
// seeds, samples in this process, turns rewards into advantages, and runs the policy-gradient
// (DDPO_IS / DDPO_SF) or reward-weighted-regression update over (sample, timestep) pairs. The
// epoch's order of steps is pipeline.ts's; this class is the policy side of it, in `train-local`
// (local-steps.ts) and in the Trainer's engine worker.

import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../../../gpu-core/index.ts";
import type { FlatParameters } from "../../../gpu-core/parameters.ts";
import { writeFileAtomic } from "../checkpoints/atomic-file.ts";
import { loadIntoParameters } from "../checkpoints/model-folder.ts";
import { readSafetensors, writeSafetensors } from "../checkpoints/safetensors.ts";
import { sampleImages, toUint8Images } from "../diffusion/sampler.ts";
import { DEFAULT_GUIDANCE, SAMPLING_LIMITS, samplingProblems } from "../diffusion/sampling-limits.ts";
import type { ParameterSource } from "../models/graph.ts";
import { LoraAdapterSet } from "../models/lora.ts";
import { allocateParameters, combineSources, parameterSource } from "../models/parameters.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";
import type { RewardFunction } from "../rewards/index.ts";
import { denoisingLossAndGrad } from "../training/denoising.ts";
import { JointAdamW } from "../training/optimizer.ts";
import { Mulberry32 } from "../training/random.ts";
import { type EvaluationSummary, evaluationProblems, type HeldOutEvaluation } from "./evaluation.ts";
import type { ProgressListener, SampledEpoch } from "./pipeline.ts";
import { type PolicyGradientSettings, policyGradientStep } from "./policy-gradient.ts";
import type { PromptSet } from "./prompts.ts";
import { PerPromptStatTracker } from "./stat-tracker.ts";
import { meanStd } from "./statistics.ts";

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
  /**
   * beta of the KL penalty to the run's starting model per trained step (DESIGN.md §3.6); 0 is the
   * paper's objective and skips the reference forward. With full fine-tuning, > 0 keeps a frozen
   * copy of the UNet's weights.
   */
  klCoefficient: number;
  /** null: full fine-tuning of the UNet. */
  lora: { rank: number; alpha: number } | null;
  /** null: advantages from the whole batch's mean and std. */
  statTracking: { bufferSize: number; minCount: number } | null;
  rwrTemperature: number;
  sparseRwrPercentile: number;
  /** Held-out evaluation (evaluation.ts); null: none. */
  evaluation: HeldOutEvaluation | null;
}

export const DDPO_DEFAULTS: DdpoConfig = {
  seed: 42,
  loss: "ddpo_is",
  sampleBatchSize: 8,
  sampleBatchesPerEpoch: 2,
  steps: 20,
  eta: 1.0,
  guidance: DEFAULT_GUIDANCE,
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
  klCoefficient: 0,
  lora: { rank: 4, alpha: 4 },
  statTracking: { bufferSize: 16, minCount: 16 },
  rwrTemperature: 1.0,
  sparseRwrPercentile: 0.9,
  evaluation: null,
};

/** Statistics of one epoch's update. */
export interface UpdateStats {
  samples: number;
  pairs: number;
  loss: number;
  approxKl: number;
  clipFraction: number;
  /** Mean KL(pi_theta || pi_ref) per pixel over the trained pairs; null when not measured. */
  klToReference: number | null;
  /** max |logp_new - logp_old| over the pairs trained before the first optimizer step. */
  onPolicyMaxLogProbDiff: number;
  optimizerSteps: number;
}

/** What the update reads from an epoch's trajectories, [N] per field unless said. */
export interface TrainingBatch {
  prompts: readonly string[];
  /** [T] */
  timesteps: readonly number[];
  /** Per sample [T+1, C, H, W]. */
  latents: readonly Float32Array[];
  /** Per sample [T]. */
  logProbs: readonly Float32Array[];
  advantages: ArrayLike<number>;
  /** The combined rewards (RWR weights them). */
  rewards: ArrayLike<number>;
}

/** One sample batch of an epoch: the prompts and the per-sample noise seeds. */
export interface SampleBatchPlan {
  prompts: string[];
  seeds: number[];
}

interface TrainerState {
  epoch: number;
  rng: number;
  statTracker: unknown;
  config: DdpoConfig;
}

/** Running sums of an update's per-call statistics. */
class UpdateTotals {
  loss = 0;
  approxKl = 0;
  clipFraction = 0;
  klToReference = 0;
  klCalls = 0;
  calls = 0;
  pairs = 0;
  onPolicy = 0;
  optimizerSteps = 0;

  stats(samples: number): UpdateStats {
    return {
      samples,
      pairs: this.pairs,
      loss: this.loss / this.calls,
      approxKl: this.approxKl / this.calls,
      clipFraction: this.clipFraction / this.calls,
      klToReference: this.klCalls ? this.klToReference / this.klCalls : null,
      onPolicyMaxLogProbDiff: this.onPolicy,
      optimizerSteps: this.optimizerSteps,
    };
  }
}

/** What every (sample, timestep) step of one policy-gradient update shares. */
interface PairUpdate {
  tr: TrainingBatch;
  source: ParameterSource;
  settings: PolicyGradientSettings;
  reference: ParameterSource | null;
  totals: UpdateTotals;
}

/** The minibatches (sample indices) accumulated into one optimizer step. */
type StepGroup = number[][];

export class DdpoTrainer {
  readonly lora: LoraAdapterSet | null;
  readonly trainable: FlatParameters;
  readonly optimizer: JointAdamW;
  readonly statTracker: PerPromptStatTracker | null;
  /**
   * The held-out evaluations of this process's epochs, for the guard's verdict (local steps; the
   * Trainer reads them from Postgres). Not in checkpoints: a resumed local run starts anew.
   */
  readonly evaluations: EvaluationSummary[] = [];
  /** The starting UNet's weights for the KL penalty with full fine-tuning (null otherwise). */
  readonly #referenceUnet: FlatParameters | null;
  #rng: Mulberry32;
  #epoch = 0;
  readonly #arena;

  constructor(
    readonly engine: Engine,
    readonly model: TextToImageModel,
    readonly config: DdpoConfig,
    /** null when rewards come from elsewhere (the Rewarder services); local steps need one. */
    readonly reward: RewardFunction | null,
    readonly prompts: PromptSet,
  ) {
    validateConfig(config);
    if (config.evaluation) {
      const problems = evaluationProblems(config.evaluation, prompts.prompts);
      if (problems.length) throw new Error(`DDPO config: ${problems.join("; ")}`);
    }
    this.lora = config.lora ? LoraAdapterSet.create(engine, model.unetShapes, config.lora, config.seed) : null;
    this.trainable = this.lora ? this.lora.params : model.unet;
    this.optimizer = new JointAdamW([this.trainable]);
    this.#referenceUnet = !this.lora && config.klCoefficient > 0 ? allocateParameters(engine, model.unetShapes) : null;
    this.takeReference();
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
   * With full fine-tuning and a KL penalty, copies the UNet's current weights as the reference:
   * done when the trainer is made, and again by whoever then loads the run's starting checkpoint
   * into the model (never after restoring a checkpoint of the run itself).
   */
  takeReference(): void {
    this.#referenceUnet?.values.write(this.model.unet.values.read());
  }

  /** The reference policy's parameters (the run's starting model), or null when klCoefficient is 0. */
  referenceSource(): ParameterSource | null {
    if (!(this.config.klCoefficient > 0)) return null;
    const unet = this.#referenceUnet ?? this.model.unet; // LoRA: the base UNet, adapters off
    return combineSources(parameterSource(unet, { frozen: true }), this.model.textSource({ frozen: true }));
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
    if (this.statTracker) return this.statTracker.update(prompts, rewards);
    const { mean, std } = meanStd(rewards);
    return Float64Array.from(rewards, (r) => (r - mean) / (std + 1e-6));
  }

  /** Marks the epoch done (after its update); returns the number of completed epochs. */
  endEpoch(): number {
    this.#epoch += 1;
    return this.#epoch;
  }

  /** The planned trajectories sampled in this process under the current policy. */
  sampleEpoch(plan: readonly SampleBatchPlan[], progress?: ProgressListener): SampledEpoch {
    const c = this.config;
    const { out_channels: channels, sample_size: size } = this.model.unetConfig;
    const total = plan.reduce((a, b) => a + b.prompts.length, 0);
    const out: SampledEpoch = {
      prompts: [],
      seeds: [],
      inputIds: [],
      timesteps: [],
      latents: [],
      logProbs: [],
      images: new Uint8Array(total * size * size * 3),
      imageSize: size,
    };
    for (const { prompts, seeds } of plan) {
      const r = sampleImages(this.model, prompts, {
        steps: c.steps,
        guidance: c.guidance,
        eta: c.eta,
        seeds,
        keepTrajectory: true,
        source: this.source(false),
        lora: this.lora,
      });
      const L = r.inputIds.length / r.prompts.length;
      out.images.set(toUint8Images(r.images, r.prompts.length, channels, size), out.prompts.length * size * size * 3);
      for (let b = 0; b < r.prompts.length; b++) out.inputIds.push(Array.from(r.inputIds.subarray(b * L, (b + 1) * L)));
      out.prompts.push(...r.prompts);
      out.seeds.push(...r.seeds);
      out.latents.push(...r.latents);
      out.logProbs.push(...r.logProbs);
      out.timesteps = r.timesteps;
      progress?.("sampling", out.prompts.length, total);
    }
    return out;
  }

  /**
   * The update on one epoch's trajectories; returns loss statistics. `onStep` is told after each
   * optimizer step (done, total).
   */
  train(tr: TrainingBatch, onStep?: (done: number, total: number) => void): UpdateStats {
    const c = this.config;
    if (c.loss === "rwr" || c.loss === "sparse_rwr") return this.#trainRwr(tr);
    const n = tr.prompts.length;
    const T = tr.timesteps.length;
    // Steps eligible for training: the first T - skipFinalSteps (most noisy first).
    const eligible = T - c.skipFinalSteps;
    if (eligible < 1) throw new Error(`skipFinalSteps ${c.skipFinalSteps} leaves none of the ${T} steps to train`);
    const pairsPerSample = Math.max(1, Math.floor(eligible * c.timestepFraction));
    const update: PairUpdate = {
      tr,
      source: this.source(true),
      settings: {
        loss: c.loss,
        guidance: c.guidance,
        eta: c.eta,
        steps: c.steps,
        clipRange: c.clipRange,
        advClipMax: c.advClipMax,
        klCoefficient: c.klCoefficient,
      },
      reference: this.referenceSource(),
      totals: new UpdateTotals(),
    };
    const totals = update.totals;
    const totalSteps = optimizerStepsPerEpoch(c, n);
    for (let inner = 0; inner < c.innerEpochs; inner++) {
      const { groups, timestepOrder } = this.#shuffle(n, eligible);
      for (const group of groups) {
        // The on-policy check: before the first optimizer step the policy is the sampler's.
        const onPolicy = totals.optimizerSteps === 0 && inner === 0;
        const pairs = group.reduce((a, mb) => a + mb.length, 0) * pairsPerSample;
        this.optimizer.zeroGrad();
        for (const mb of group) {
          for (let j = 0; j < pairsPerSample; j++) {
            const ks = mb.map((s) => timestepOrder[s]![j]!);
            this.#pairStep(update, mb, ks, mb.length / pairs, onPolicy);
          }
        }
        this.optimizer.step({ lr: c.lr, weightDecay: c.weightDecay, maxGradNorm: c.maxGradNorm });
        totals.optimizerSteps += 1;
        onStep?.(totals.optimizerSteps, totalSteps);
      }
    }
    return totals.stats(n);
  }

  /**
   * One inner epoch's order: the samples shuffled into minibatches of trainBatchSize, grouped by
   * gradientAccumulation per optimizer step, and each sample's eligible timesteps shuffled.
   */
  #shuffle(n: number, eligible: number): { groups: StepGroup[]; timestepOrder: number[][] } {
    const c = this.config;
    const order = this.#rng.permutation(n);
    const timestepOrder = Array.from({ length: n }, () => this.#rng.permutation(eligible));
    const minibatches: number[][] = [];
    for (let i = 0; i < n; i += c.trainBatchSize) minibatches.push(order.slice(i, i + c.trainBatchSize));
    const groups: StepGroup[] = [];
    for (let g = 0; g < minibatches.length; g += c.gradientAccumulation) {
      groups.push(minibatches.slice(g, g + c.gradientAccumulation));
    }
    return { groups, timestepOrder };
  }

  /**
   * The policy-gradient loss and its gradient (accumulated, scaled by `scale`) on minibatch `mb`
   * at timestep index ks[i] of sample mb[i]: x_t = latents[k], x_{t-1} = latents[k + 1].
   */
  #pairStep(update: PairUpdate, mb: readonly number[], ks: readonly number[], scale: number, onPolicy: boolean): void {
    const { tr, source, settings, reference, totals } = update;
    const per = tr.latents[0]!.length / (tr.timesteps.length + 1);
    const xT = new Float32Array(mb.length * per);
    const xPrev = new Float32Array(mb.length * per);
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
      scale,
      reference,
    );
    this.#arena.reset();
    if (onPolicy) {
      mb.forEach((s, i) => {
        totals.onPolicy = Math.max(totals.onPolicy, Math.abs(stats.logProbs[i]! - tr.logProbs[s]![ks[i]!]!));
      });
    }
    totals.loss += stats.loss;
    totals.approxKl += stats.approxKl;
    totals.clipFraction += stats.clipFraction;
    if (stats.klToReference !== null) {
      totals.klToReference += stats.klToReference;
      totals.klCalls += 1;
    }
    totals.calls += 1;
    totals.pairs += mb.length;
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
      const max = Math.max(...Array.from(tr.rewards));
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
      klToReference: null,
      onPolicyMaxLogProbDiff: 0,
      optimizerSteps,
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
    this.#referenceUnet?.close();
  }
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
  if (!(Number.isFinite(c.klCoefficient) && c.klCoefficient >= 0))
    problems.push(`klCoefficient must be a finite number >= 0, got ${c.klCoefficient}`);
  if (c.klCoefficient > 0 && (c.loss === "rwr" || c.loss === "sparse_rwr"))
    problems.push("klCoefficient applies to the policy-gradient losses (ddpo_is, ddpo_sf), not to RWR");
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
  // Held out of the training prompts: checked where the prompt set is known (the constructor).
  if (c.evaluation) problems.push(...evaluationProblems(c.evaluation, []));
  if (problems.length) throw new Error(`DDPO config: ${problems.join("; ")}`);
}
