// The epoch pipeline's steps in this process (`train-local`, the benches, the tests): sampling
// and the update on the DdpoTrainer's engine, the reward function called directly. What is kept
// of an epoch (rows, sample grids, checkpoints, reports) is up to the caller's hooks.
import type { EpochReport } from "../../gen/ddpo/v1/run_pb.ts";
import type { ClipModel } from "../models/clip-model.ts";
import {
  type EvaluationSampling,
  type EvaluationScore,
  evaluatePolicy,
  evaluationDue,
  guardVerdict,
  summariseEvaluation,
} from "./evaluation.ts";
import {
  checkScores,
  combineTerms,
  type EpochOutcome,
  type EpochSteps,
  type ProgressListener,
  runEpoch,
  type SampledEpoch,
  type ScoredEpoch,
} from "./pipeline.ts";
import type { DdpoTrainer, TrainingBatch } from "./trainer.ts";

export interface LocalHooks {
  /** Held-out evaluation (needed when the trainer's config names one): the content check's CLIP. */
  evaluation?: {
    clip: ClipModel;
    sampling: EvaluationSampling;
    record?(epoch: number, scores: EvaluationScore[]): Promise<void> | void;
  };
  record?(epoch: number, sampled: SampledEpoch, scored: ScoredEpoch, advantages: Float64Array): Promise<void> | void;
  /** Saves the policy after the epoch; returns its checkpoint id. Default: not kept (""). */
  checkpoint?(epoch: number): Promise<string> | string;
  report?(report: EpochReport): Promise<void> | void;
}

/** The steps over `trainer`, scoring with its reward function. */
export function localSteps(trainer: DdpoTrainer, hooks: LocalHooks = {}): EpochSteps {
  const reward = trainer.reward;
  if (!reward) throw new Error("local steps: the trainer has no reward function (rewards come from Rewarders)");
  const heldOut = trainer.config.evaluation;
  if (heldOut && !hooks.evaluation) throw new Error("local steps: the config names a held-out evaluation but no CLIP");
  // The epoch's rewards and advantages, from `advantages` to `update`.
  let kept: { rewards: Float64Array; advantages: Float64Array } | null = null;
  return {
    plan: async () => trainer.planEpoch(),
    sample: async (_epoch, plan, progress) => trainer.sampleEpoch(plan, progress),
    async score(_epoch, s) {
      const n = s.prompts.length;
      const scores = await reward.score(s.images, { height: s.imageSize, width: s.imageSize }, s.prompts);
      checkScores(scores, n, `reward ${reward.name}`);
      const terms = [{ name: reward.name, source: "in-process", weight: 1, scores }];
      return { rewards: combineTerms(terms, n), terms };
    },
    async advantages(_epoch, prompts, rewards) {
      const advantages = trainer.computeAdvantages(prompts, rewards);
      kept = { rewards, advantages };
      return advantages;
    },
    record: async (epoch, sampled, scored, advantages) => hooks.record?.(epoch, sampled, scored, advantages),
    async update(_epoch, sampled, progress: ProgressListener) {
      if (!kept) throw new Error("update before advantages");
      const stats = trainer.train({ ...sampled, ...kept }, (done, total) => progress("training", done, total));
      kept = null;
      trainer.endEpoch();
      return stats;
    },
    checkpoint: async (epoch) => (await hooks.checkpoint?.(epoch)) ?? "",
    report: async (report) => hooks.report?.(report),
    async evaluate(epoch) {
      if (!heldOut || !hooks.evaluation) return null;
      if (evaluationDue(heldOut, epoch)) {
        const { clip, sampling, record } = hooks.evaluation;
        const scores = await evaluatePolicy(
          trainer.model,
          trainer.lora,
          clip,
          [reward],
          heldOut,
          trainer.prompts.prompts,
          sampling,
        );
        trainer.evaluations.push(summariseEvaluation(epoch, scores));
        await record?.(epoch, scores);
      }
      return guardVerdict(heldOut, trainer.evaluations);
    },
  };
}

/** The trainer's next epoch in this process. */
export function runLocalEpoch(
  trainer: DdpoTrainer,
  hooks: LocalHooks = {},
  progress?: ProgressListener,
): Promise<EpochOutcome> {
  return runEpoch(localSteps(trainer, hooks), trainer.epoch + 1, progress);
}

/**
 * Plans, samples, scores and computes the advantages of the trainer's next epoch without updating
 * (tests and the gradient-SNR bench train on it themselves).
 */
export async function collectEpoch(trainer: DdpoTrainer): Promise<SampledEpoch & TrainingBatch> {
  const steps = localSteps(trainer);
  const epoch = trainer.epoch + 1;
  const sampled = await steps.sample(epoch, await steps.plan(epoch), () => undefined);
  const { rewards } = await steps.score(epoch, sampled);
  return { ...sampled, rewards, advantages: await steps.advantages(epoch, sampled.prompts, rewards) };
}
