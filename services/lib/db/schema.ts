// The database's table and view types, in one place. Column names are the SQL names (snake_case).
// Conventions of the connection (database.ts): bigint arrives as number (seeds stay below 2^52),
// bytea as Buffer, timestamptz as Date, jsonb parsed; jsonb is written as a JSON string.

import type { ColumnType, Generated, Insertable, Selectable } from "kysely";

export type RunStatus = "pending" | "running" | "stopped" | "finished" | "failed";
export const RUN_STATUSES: readonly RunStatus[] = ["pending", "running", "stopped", "finished", "failed"];

export type CheckpointKind = "base" | "full" | "lora";
export const CHECKPOINT_KINDS: readonly CheckpointKind[] = ["base", "full", "lora"];

/** One reward service a run sums into its combined reward. */
export interface RewardSpec {
  endpoint: string;
  name: string;
  weight: number;
}

/** jsonb: selected as T, written as its JSON text. */
type Json<T> = ColumnType<T, string | undefined, string>;
type CreatedAt = ColumnType<Date, Date | string | undefined, never>;
type UpdatedAt = ColumnType<Date, Date | string | undefined, Date | string>;

export interface RunsTable {
  id: string;
  name: string;
  config: Json<Record<string, unknown>>;
  status: ColumnType<RunStatus, RunStatus | undefined, RunStatus>;
  code_version: string | null;
  base_checkpoint_id: string | null;
  prompt_set: string | null;
  rewards: Json<RewardSpec[]>;
  created_at: CreatedAt;
  updated_at: UpdatedAt;
  error: string | null;
  /** The best evaluated policy by best_metric (HeldOutEvaluation); null: none marked. */
  best_checkpoint_id: string | null;
  best_metric: string | null;
}

export interface EpochsTable {
  run_id: string;
  epoch: number;
  reward_mean: number | null;
  reward_std: number | null;
  loss: number | null;
  approx_kl: number | null;
  clip_fraction: number | null;
  /** Mean KL to the run's starting model per pixel (DESIGN.md §3.6); null when not measured. */
  kl_to_reference: number | null;
  /** Wall time of each phase and of the whole epoch, seconds. */
  sampling_s: number | null;
  reward_s: number | null;
  training_s: number | null;
  seconds: number | null;
  /** The checkpoint this epoch's update produced. */
  checkpoint_id: string | null;
  samples: Generated<number>;
  recorded_at: UpdatedAt;
}

export interface CheckpointsTable {
  id: string;
  parent_id: string | null;
  run_id: string | null;
  epoch: number | null;
  kind: CheckpointKind;
  /** Hex digest of the weights file. */
  sha256: string;
  size_bytes: number;
  /** Folder holding the .safetensors and config.json. */
  location: string;
  created_at: CreatedAt;
}

/** Latents x_T..x_0 of one trajectory, [T+1, C, H, W] float32 little-endian, keyed by their sha256. */
export interface LatentBlobsTable {
  sha256: string;
  shape: number[];
  bytes: Buffer;
  created_at: CreatedAt;
}

export interface TrajectoriesTable {
  run_id: string;
  epoch: number;
  sample_index: number;
  prompt: string;
  input_ids: number[] | null;
  seed: number;
  /** N timesteps, one per DDIM step, in sampling order. */
  timesteps: number[];
  /** N per-step log-probs (float32). */
  log_probs: number[];
  /** The combined (weighted) reward. */
  reward: number | null;
  advantage: number | null;
  /** The policy checkpoint that sampled it. */
  checkpoint_id: string;
  latents_sha256: string | null;
  image_png: Buffer | null;
  created_at: CreatedAt;
}

export interface RewardsTable {
  run_id: string;
  epoch: number;
  sample_index: number;
  reward_name: string;
  value: number;
  /** The endpoint of the reward service that scored it. */
  source: string | null;
  weight: ColumnType<number, number | undefined, number>;
}

export interface RunRewardByEpochView {
  run_id: string;
  epoch: number;
  trajectories: number;
  rewarded: number;
  reward_mean: number | null;
  reward_std: number | null;
  reward_min: number | null;
  reward_max: number | null;
  epoch_reward_mean: number | null;
  epoch_reward_std: number | null;
  loss: number | null;
  approx_kl: number | null;
  clip_fraction: number | null;
  sampling_s: number | null;
  reward_s: number | null;
  training_s: number | null;
  seconds: number | null;
  checkpoint_id: string | null;
  samples: number | null;
  kl_to_reference: number | null;
}

/** One held-out image's score under one metric (a reward's name, or the content check's). */
export interface EvaluationScoresTable {
  run_id: string;
  /** Completed training epochs when evaluated (0: the starting model). */
  epoch: number;
  prompt: string;
  seed: number;
  metric: string;
  value: number;
  recorded_at: UpdatedAt;
}

export interface RunEvaluationByEpochView {
  run_id: string;
  epoch: number;
  metric: string;
  images: number;
  mean: number;
  std: number;
  min: number;
  max: number;
}

export interface CheckpointAncestryView {
  checkpoint_id: string;
  ancestor_id: string;
  /** 0 for the checkpoint itself, 1 for its parent, ... */
  depth: number;
  ancestor_kind: CheckpointKind;
  ancestor_run_id: string | null;
  ancestor_epoch: number | null;
  ancestor_sha256: string;
  ancestor_location: string;
}

export interface TrajectoryProvenanceView {
  run_id: string;
  epoch: number;
  sample_index: number;
  prompt: string;
  seed: number;
  reward: number | null;
  advantage: number | null;
  checkpoint_id: string;
  checkpoint_kind: CheckpointKind;
  checkpoint_parent_id: string | null;
  checkpoint_run_id: string | null;
  checkpoint_epoch: number | null;
  checkpoint_sha256: string;
}

export interface Database {
  runs: RunsTable;
  epochs: EpochsTable;
  checkpoints: CheckpointsTable;
  latent_blobs: LatentBlobsTable;
  trajectories: TrajectoriesTable;
  rewards: RewardsTable;
  run_reward_by_epoch: RunRewardByEpochView;
  evaluation_scores: EvaluationScoresTable;
  run_evaluation_by_epoch: RunEvaluationByEpochView;
  checkpoint_ancestry: CheckpointAncestryView;
  trajectory_provenance: TrajectoryProvenanceView;
}

export type Run = Selectable<RunsTable>;
export type Epoch = Selectable<EpochsTable>;
export type NewEpoch = Insertable<EpochsTable>;
export type Checkpoint = Selectable<CheckpointsTable>;
export type NewCheckpoint = Insertable<CheckpointsTable>;
export type LatentBlob = Selectable<LatentBlobsTable>;
export type NewLatentBlob = Insertable<LatentBlobsTable>;
export type Trajectory = Selectable<TrajectoriesTable>;
export type NewTrajectory = Insertable<TrajectoriesTable>;
export type RewardRow = Selectable<RewardsTable>;
export type NewReward = Insertable<RewardsTable>;
export type RunRewardByEpoch = Selectable<RunRewardByEpochView>;
export type NewEvaluationScore = Insertable<EvaluationScoresTable>;
export type RunEvaluationByEpoch = Selectable<RunEvaluationByEpochView>;
export type CheckpointAncestry = Selectable<CheckpointAncestryView>;
export type TrajectoryProvenance = Selectable<TrajectoryProvenanceView>;
