// One epoch's rows for the recorder (DESIGN.md §7): a latent blob per sample (content-addressed,
// [T+1, C*H*W] float32), a trajectory row per sample referencing it, and one reward row per
// sample and reward term. Shared by the Trainer's run controller and the services benchmark.
import { latentBlob, type RecordBatch } from "./recorder.ts";

export interface EpochSamples {
  prompts: readonly string[];
  seeds: readonly number[];
  /** Token ids per sample. */
  inputIds: readonly (readonly number[])[];
  timesteps: readonly number[];
  /** Per sample [T+1, C, H, W] flattened. */
  latents: readonly Float32Array[];
  /** Per sample [T]. */
  logProbs: readonly Float32Array[];
  /** The reward the advantages were computed from (the weighted sum of the terms). */
  rewards: ArrayLike<number>;
  advantages: ArrayLike<number>;
}

export interface RewardTerm {
  name: string;
  /** Where the term was computed (a Rewarder address, or "in-process"). */
  source: string;
  weight: number;
  scores: ArrayLike<number>;
}

export function epochRows(
  runId: string,
  epoch: number,
  checkpointId: string,
  s: EpochSamples,
  terms: readonly RewardTerm[],
): RecordBatch {
  const T = s.timesteps.length;
  const blobs = s.latents.map((l) => latentBlob(l, [T + 1, l.length / (T + 1)]));
  return {
    latents: blobs,
    trajectories: s.prompts.map((prompt, i) => ({
      run_id: runId,
      epoch,
      sample_index: i,
      prompt,
      input_ids: [...s.inputIds[i]!],
      seed: s.seeds[i]!,
      timesteps: [...s.timesteps],
      log_probs: Array.from(s.logProbs[i]!),
      reward: s.rewards[i]!,
      advantage: s.advantages[i]!,
      checkpoint_id: checkpointId,
      latents_sha256: blobs[i]!.sha256,
    })),
    rewards: terms.flatMap((term) =>
      Array.from(term.scores, (value, i) => ({
        run_id: runId,
        epoch,
        sample_index: i,
        reward_name: term.name,
        value,
        source: term.source,
        weight: term.weight,
      })),
    ),
  };
}
