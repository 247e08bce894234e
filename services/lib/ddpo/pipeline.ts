// One DDPO epoch, the same for every way of running it (docs/DESIGN.md §2):
//   plan -> sample -> score -> advantages -> record -> update -> checkpoint -> report
// Each step is pluggable: `train-local` and the benches run them in this process
// (local-steps.ts); the Trainer runs them across the services (services/trainer/run-controller.ts:
// Samplers over gRPC, Rewarders over gRPC, the policy in its engine worker, rows through the
// recorder, checkpoints through the Registry). The epoch's report is the proto's EpochReport.
import { create } from "@bufbuild/protobuf";
import { type EpochReport, EpochReportSchema } from "../../gen/ddpo/v1/run_pb.ts";
import type { RewardTerm } from "../db/epoch-rows.ts";
import type { GuardVerdict } from "./evaluation.ts";
import { mean, meanStd } from "./statistics.ts";
import type { SampleBatchPlan, UpdateStats } from "./trainer.ts";

/** One epoch's trajectories, sampled under the policy of the epoch's start. */
export interface SampledEpoch {
  prompts: string[];
  seeds: number[];
  /** Token ids per sample, [L] each. */
  inputIds: number[][];
  /** [T], most noisy first. */
  timesteps: number[];
  /** Per sample x_T..x_0, [T+1, C, H, W]. */
  latents: Float32Array[];
  /** Per sample log pi(x_{k+1} | x_k), [T]. */
  logProbs: Float32Array[];
  /** The images, [N, size, size, 3] uint8 RGB. */
  images: Uint8Array;
  imageSize: number;
}

/** The epoch's rewards: each term's scores and their weighted sum, [N] each. */
export interface ScoredEpoch {
  rewards: Float64Array;
  terms: RewardTerm[];
}

export type EpochPhase = "sampling" | "rewarding" | "training" | "checkpointing";

/** Units of `phase` done out of total (trajectories when sampling, optimizer steps when training). */
export type ProgressListener = (phase: EpochPhase, done: number, total: number) => void;

export interface EpochSteps {
  /** The epoch's prompts and seeds per sample batch (advances the prompt RNG: once per epoch). */
  plan(epoch: number): Promise<SampleBatchPlan[]>;
  sample(epoch: number, plan: SampleBatchPlan[], progress: ProgressListener): Promise<SampledEpoch>;
  score(epoch: number, sampled: SampledEpoch): Promise<ScoredEpoch>;
  /**
   * Per-sample advantages from the combined rewards, computed where the policy lives, which keeps
   * them (and the rewards) for its update: they travel out once, to be recorded.
   */
  advantages(epoch: number, prompts: string[], rewards: Float64Array): Promise<Float64Array>;
  /** Keeps the epoch's trajectories, rewards and advantages (rows, sample grid). */
  record(epoch: number, sampled: SampledEpoch, scored: ScoredEpoch, advantages: Float64Array): Promise<void>;
  /** The policy update on the sampled trajectories with the advantages kept by `advantages`. */
  update(epoch: number, sampled: SampledEpoch, progress: ProgressListener): Promise<UpdateStats>;
  /**
   * Saves (and registers) the policy after the update; its checkpoint id ("" when not kept).
   * `report` is the epoch's report as it will be recorded, but for its checkpoint id and total time.
   */
  checkpoint(epoch: number, report: EpochReport): Promise<string>;
  /** The finished epoch's report (history, the epochs table, watchers). */
  report(report: EpochReport): Promise<void>;
  /**
   * The held-out evaluation of the policy after `epoch` completed epochs (0: the starting model)
   * when one is due, kept by the steps; the guard's verdict over the evaluations so far, or null
   * when the run has none (evaluation.ts).
   */
  evaluate?(epoch: number): Promise<GuardVerdict | null>;
}

export interface EpochOutcome {
  report: EpochReport;
  /** The update's statistics, some of which the report leaves out (pairs, on-policy check). */
  stats: UpdateStats;
  /** The guard's verdict after this epoch (null: no held-out evaluation); stop when it says so. */
  verdict: GuardVerdict | null;
}

/** Runs epoch `epoch` (1-based) through the steps. */
export async function runEpoch(
  steps: EpochSteps,
  epoch: number,
  progress: ProgressListener = () => undefined,
): Promise<EpochOutcome> {
  const started = performance.now();
  const seconds = (from: number) => (performance.now() - from) / 1000;
  // The starting model's evaluation is the guard's baseline (redone, identically, on a retry).
  if (epoch === 1) await steps.evaluate?.(0);
  const plan = await steps.plan(epoch);
  const sampled = await steps.sample(epoch, plan, progress);
  const samplingS = seconds(started);

  const n = sampled.prompts.length;
  progress("rewarding", 0, n);
  const rewardStart = performance.now();
  const scored = await steps.score(epoch, sampled);
  const rewardS = seconds(rewardStart);

  const trainingStart = performance.now();
  const advantages = await steps.advantages(epoch, sampled.prompts, scored.rewards);
  await steps.record(epoch, sampled, scored, advantages);
  progress("training", 0, n);
  const stats = await steps.update(epoch, sampled, progress);
  const trainingS = seconds(trainingStart);

  const { mean: rewardMean, std: rewardStd } = meanStd(scored.rewards);
  const report = create(EpochReportSchema, {
    epoch,
    rewardMean,
    rewardStd,
    rewardMeans: Object.fromEntries(scored.terms.map((t) => [t.name, mean(t.scores)])),
    loss: stats.loss,
    approxKl: stats.approxKl,
    clipFraction: stats.clipFraction,
    klToReference: stats.klToReference ?? undefined,
    seconds: seconds(started),
    samplingS,
    rewardS,
    trainingS,
    samples: n,
    optimizerSteps: stats.optimizerSteps,
  });
  progress("checkpointing", 0, 1);
  report.checkpointId = await steps.checkpoint(epoch, report);
  report.seconds = seconds(started);
  await steps.report(report);
  const verdict = (await steps.evaluate?.(epoch)) ?? null;
  return { report, stats, verdict };
}

/** Checks a scorer's answer: one finite score per sample. */
export function checkScores(scores: ArrayLike<number>, n: number, what: string): void {
  let finite = true;
  for (let i = 0; i < scores.length; i++) finite &&= Number.isFinite(scores[i]!);
  if (scores.length !== n || !finite) {
    throw new Error(`${what}: ${scores.length} scores for ${n} images (all must be finite)`);
  }
}

/** The weighted sum of the reward terms, [N]. */
export function combineTerms(terms: readonly RewardTerm[], n: number): Float64Array {
  const combined = new Float64Array(n);
  for (const t of terms) for (let i = 0; i < n; i++) combined[i]! += t.weight * t.scores[i]!;
  return combined;
}
