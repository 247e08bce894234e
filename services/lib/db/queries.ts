// Data access as plain functions: each takes a Kysely<Database> (or a transaction) first.

import { type Kysely, sql } from "kysely";
import type {
  Checkpoint,
  CheckpointKind,
  Database,
  Epoch,
  LatentBlob,
  NewCheckpoint,
  NewEpoch,
  NewEvaluationScore,
  RewardRow,
  RewardSpec,
  Run,
  RunEvaluationByEpoch,
  RunRewardByEpoch,
  RunStatus,
  Trajectory,
  TrajectoryProvenance,
} from "./schema.ts";
import { CHECKPOINT_KINDS, RUN_STATUSES } from "./schema.ts";

type Db = Kysely<Database>;

/** The natural key of a trajectory (and, with a reward name, of a reward). */
export interface TrajectoryKey {
  runId: string;
  epoch: number;
  sampleIndex: number;
}

// ---- runs

export interface NewRun {
  id: string;
  name: string;
  config?: Record<string, unknown>;
  status?: RunStatus;
  code_version?: string | null;
  base_checkpoint_id?: string | null;
  prompt_set?: string | null;
  rewards?: RewardSpec[];
}

/**
 * Insert a run. Idempotent: repeating it with the same id, name and config returns the stored run;
 * the same id with another name or config is an error.
 */
export async function createRun(db: Db, run: NewRun): Promise<Run> {
  if (run.status && !RUN_STATUSES.includes(run.status)) throw new Error(`unknown run status "${run.status}"`);
  const config = JSON.stringify(run.config ?? {});
  const inserted = await db
    .insertInto("runs")
    .values({
      id: run.id,
      name: run.name,
      config,
      status: run.status,
      code_version: run.code_version ?? null,
      base_checkpoint_id: run.base_checkpoint_id ?? null,
      prompt_set: run.prompt_set ?? null,
      rewards: JSON.stringify(run.rewards ?? []),
    })
    .onConflict((oc) => oc.column("id").doNothing())
    .returningAll()
    .executeTakeFirst();
  if (inserted) return inserted;
  // jsonb equality ignores key order and whitespace.
  const same = await db
    .selectFrom("runs")
    .selectAll()
    .where("id", "=", run.id)
    .where("name", "=", run.name)
    .where(sql<boolean>`config = ${config}::jsonb`)
    .executeTakeFirst();
  if (!same) throw new Error(`run "${run.id}" already exists with another name or config`);
  return same;
}

export async function getRun(db: Db, id: string): Promise<Run | undefined> {
  return db.selectFrom("runs").selectAll().where("id", "=", id).executeTakeFirst();
}

/** Newest first. */
export async function listRuns(db: Db, filter: { status?: RunStatus; limit?: number } = {}): Promise<Run[]> {
  let query = db.selectFrom("runs").selectAll().orderBy("created_at", "desc").orderBy("id");
  if (filter.status) query = query.where("status", "=", filter.status);
  if (filter.limit !== undefined) query = query.limit(filter.limit);
  return query.execute();
}

/** Set a run's status (and its error message, cleared unless given); throws for an unknown run. */
export async function setRunStatus(db: Db, id: string, status: RunStatus, error: string | null = null): Promise<Run> {
  if (!RUN_STATUSES.includes(status)) throw new Error(`unknown run status "${status}"`);
  const run = await db
    .updateTable("runs")
    .set({ status, error, updated_at: sql<Date>`now()` })
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
  if (!run) throw new Error(`no run "${id}"`);
  return run;
}

/**
 * Marks a stopped, failed or completed run as pending again for a resume, with a new epoch
 * budget and a new fleet (its Samplers' addresses) in its config when given (so a crash after the
 * resume keeps them); undefined when there is no such run.
 */
export async function reopenRun(
  db: Db,
  id: string,
  epochs?: number,
  samplerEndpoints?: readonly string[],
): Promise<Run | undefined> {
  let config = sql<string>`config`;
  if (epochs !== undefined) config = sql<string>`jsonb_set(${config}, '{epochs}', to_jsonb(${epochs}::integer))`;
  if (samplerEndpoints !== undefined) {
    config = sql<string>`jsonb_set(${config}, '{samplerEndpoints}', ${JSON.stringify(samplerEndpoints)}::jsonb)`;
  }
  return db
    .updateTable("runs")
    .set({ status: "pending", error: null, updated_at: sql<Date>`now()`, config })
    .where("id", "=", id)
    .returningAll()
    .executeTakeFirst();
}

// ---- epochs

/** Record an epoch's statistics; recording the same (run, epoch) again replaces them. */
export async function recordEpoch(db: Db, epoch: NewEpoch): Promise<Epoch> {
  const { run_id: _run, epoch: _epoch, ...stats } = epoch;
  return db
    .insertInto("epochs")
    .values(epoch)
    .onConflict((oc) => oc.columns(["run_id", "epoch"]).doUpdateSet({ ...stats, recorded_at: sql<Date>`now()` }))
    .returningAll()
    .executeTakeFirstOrThrow();
}

/** Marks the run's best evaluated checkpoint and the metric it is best by. */
export async function setRunBest(db: Db, runId: string, checkpointId: string, metric: string): Promise<void> {
  await db
    .updateTable("runs")
    .set({ best_checkpoint_id: checkpointId, best_metric: metric })
    .where("id", "=", runId)
    .execute();
}

/** In epoch order. */
export async function listEpochs(db: Db, runId: string): Promise<Epoch[]> {
  return db.selectFrom("epochs").selectAll().where("run_id", "=", runId).orderBy("epoch").execute();
}

/**
 * The held-out scores of one evaluation (run, epoch): replaces any recorded before for that epoch
 * (a retried evaluation), in one transaction.
 */
export async function recordEvaluation(
  db: Db,
  runId: string,
  epoch: number,
  scores: ReadonlyArray<Omit<NewEvaluationScore, "run_id" | "epoch">>,
): Promise<void> {
  await db.transaction().execute(async (tx) => {
    await tx.deleteFrom("evaluation_scores").where("run_id", "=", runId).where("epoch", "=", epoch).execute();
    if (scores.length) {
      await tx
        .insertInto("evaluation_scores")
        .values(scores.map((r) => ({ ...r, run_id: runId, epoch })))
        .execute();
    }
  });
}

/** Per epoch and metric, in that order: the held-out scores' count, mean, std, min and max. */
export async function evaluationByEpoch(db: Db, runId: string): Promise<RunEvaluationByEpoch[]> {
  return db
    .selectFrom("run_evaluation_by_epoch")
    .selectAll()
    .where("run_id", "=", runId)
    .orderBy("epoch")
    .orderBy("metric")
    .execute();
}

// ---- checkpoints

export class CheckpointConflictError extends Error {
  override name = "CheckpointConflictError";
}

/**
 * Register a checkpoint. Idempotent on id: registering the same checkpoint again returns the stored
 * row; the same id with another sha256, kind, parent, run or epoch throws CheckpointConflictError.
 */
export async function registerCheckpoint(db: Db, checkpoint: NewCheckpoint): Promise<Checkpoint> {
  if (!CHECKPOINT_KINDS.includes(checkpoint.kind)) throw new Error(`unknown checkpoint kind "${checkpoint.kind}"`);
  const inserted = await db
    .insertInto("checkpoints")
    .values(checkpoint)
    .onConflict((oc) => oc.column("id").doNothing())
    .returningAll()
    .executeTakeFirst();
  if (inserted) return inserted;
  const stored = await getCheckpoint(db, checkpoint.id);
  if (!stored) throw new Error(`checkpoint "${checkpoint.id}" vanished during registration`);
  const differs = (["sha256", "kind", "parent_id", "run_id", "epoch"] as const).filter(
    (k) => (checkpoint[k] ?? null) !== stored[k],
  );
  if (differs.length > 0) {
    const detail = differs.map((k) => `${k} ${JSON.stringify(stored[k])} != ${JSON.stringify(checkpoint[k] ?? null)}`);
    throw new CheckpointConflictError(
      `checkpoint "${checkpoint.id}" is already registered with other contents: ${detail.join(", ")}`,
    );
  }
  return stored;
}

export async function getCheckpoint(db: Db, id: string): Promise<Checkpoint | undefined> {
  return db.selectFrom("checkpoints").selectAll().where("id", "=", id).executeTakeFirst();
}

/** Oldest first. */
export async function listCheckpoints(
  db: Db,
  filter: { runId?: string; kind?: CheckpointKind } = {},
): Promise<Checkpoint[]> {
  let query = db.selectFrom("checkpoints").selectAll().orderBy("created_at").orderBy("id");
  if (filter.runId !== undefined) query = query.where("run_id", "=", filter.runId);
  if (filter.kind !== undefined) query = query.where("kind", "=", filter.kind);
  return query.execute();
}

/** The checkpoint itself (depth 0), its parent (depth 1), ... up to its root; empty when unknown. */
/** A checkpoint and its ancestors, nearest first; best_of_run_by: the metric by which it is its run's best. */
export async function checkpointLineage(
  db: Db,
  id: string,
): Promise<Array<Checkpoint & { depth: number; best_of_run_by: string | null }>> {
  const { rows } = await sql<Checkpoint & { depth: number; best_of_run_by: string | null }>`
    with recursive chain as (
      select c.*, 0 as depth from checkpoints c where c.id = ${id}
      union all
      select p.*, chain.depth + 1 from checkpoints p join chain on p.id = chain.parent_id
    )
    select chain.*,
      (select r.best_metric from runs r where r.id = chain.run_id and r.best_checkpoint_id = chain.id)
        as best_of_run_by
    from chain order by depth
  `.execute(db);
  return rows;
}

// ---- trajectories, rewards, latents

export async function countTrajectories(db: Db, runId: string, epoch?: number): Promise<number> {
  let query = db
    .selectFrom("trajectories")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("run_id", "=", runId);
  if (epoch !== undefined) query = query.where("epoch", "=", epoch);
  return (await query.executeTakeFirstOrThrow()).n;
}

export async function countRewards(db: Db, runId: string, epoch?: number): Promise<number> {
  let query = db
    .selectFrom("rewards")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("run_id", "=", runId);
  if (epoch !== undefined) query = query.where("epoch", "=", epoch);
  return (await query.executeTakeFirstOrThrow()).n;
}

export async function getTrajectory(db: Db, key: TrajectoryKey): Promise<Trajectory | undefined> {
  return db
    .selectFrom("trajectories")
    .selectAll()
    .where("run_id", "=", key.runId)
    .where("epoch", "=", key.epoch)
    .where("sample_index", "=", key.sampleIndex)
    .executeTakeFirst();
}

/** An epoch's trajectories in sample order, without their images. */
export async function listTrajectories(
  db: Db,
  runId: string,
  epoch: number,
): Promise<Array<Omit<Trajectory, "image_png">>> {
  return db
    .selectFrom("trajectories")
    .select([
      "run_id",
      "epoch",
      "sample_index",
      "prompt",
      "input_ids",
      "seed",
      "timesteps",
      "log_probs",
      "reward",
      "advantage",
      "checkpoint_id",
      "latents_sha256",
      "created_at",
    ])
    .where("run_id", "=", runId)
    .where("epoch", "=", epoch)
    .orderBy("sample_index")
    .execute();
}

/** One trajectory's per-service rewards, by name. */
export async function listRewards(db: Db, key: TrajectoryKey): Promise<RewardRow[]> {
  return db
    .selectFrom("rewards")
    .selectAll()
    .where("run_id", "=", key.runId)
    .where("epoch", "=", key.epoch)
    .where("sample_index", "=", key.sampleIndex)
    .orderBy("reward_name")
    .execute();
}

export async function getLatentBlob(db: Db, sha256: string): Promise<LatentBlob | undefined> {
  return db.selectFrom("latent_blobs").selectAll().where("sha256", "=", sha256).executeTakeFirst();
}

/** A latent blob's shape, without reading its bytes. */
export async function getLatentShape(db: Db, sha256: string): Promise<number[] | undefined> {
  const row = await db.selectFrom("latent_blobs").select("shape").where("sha256", "=", sha256).executeTakeFirst();
  return row?.shape;
}

/** Bytes [offset, offset + length) of a latent blob (one step of x_T..x_0 without the others). */
export async function getLatentBytes(
  db: Db,
  sha256: string,
  offset: number,
  length: number,
): Promise<Buffer | undefined> {
  const row = await db
    .selectFrom("latent_blobs")
    .select(sql<Buffer>`substring(bytes from ${offset + 1} for ${length})`.as("bytes"))
    .where("sha256", "=", sha256)
    .executeTakeFirst();
  return row?.bytes;
}

// ---- views

/** Reward statistics per epoch of a run (view run_reward_by_epoch), in epoch order. */
export async function rewardByEpoch(db: Db, runId: string): Promise<RunRewardByEpoch[]> {
  return db.selectFrom("run_reward_by_epoch").selectAll().where("run_id", "=", runId).orderBy("epoch").execute();
}

/** Which checkpoint sampled a trajectory, with that checkpoint's kind, parent, run and epoch. */
export async function trajectoryProvenance(db: Db, key: TrajectoryKey): Promise<TrajectoryProvenance | undefined> {
  return db
    .selectFrom("trajectory_provenance")
    .selectAll()
    .where("run_id", "=", key.runId)
    .where("epoch", "=", key.epoch)
    .where("sample_index", "=", key.sampleIndex)
    .executeTakeFirst();
}

// ---- overviews (the dashboard)

export interface RunOverview extends Run {
  /** Epochs the trainer recorded. */
  epochs_done: number;
  /** The last recorded epoch's number and reward mean (null before the first epoch). */
  last_epoch: number | null;
  last_reward_mean: number | null;
}

/** Newest first, each run with its recorded epoch count and latest reward mean. */
export async function listRunOverviews(db: Db, filter: { limit?: number } = {}): Promise<RunOverview[]> {
  let query = db
    .selectFrom("runs as r")
    .selectAll("r")
    .select((eb) => [
      eb
        .selectFrom("epochs as e")
        .whereRef("e.run_id", "=", "r.id")
        .select((e) => e.fn.countAll<number>().as("n"))
        .as("epochs_done"),
      eb
        .selectFrom("epochs as e")
        .whereRef("e.run_id", "=", "r.id")
        .select("e.epoch")
        .orderBy("e.epoch", "desc")
        .limit(1)
        .as("last_epoch"),
      eb
        .selectFrom("epochs as e")
        .whereRef("e.run_id", "=", "r.id")
        .select("e.reward_mean")
        .orderBy("e.epoch", "desc")
        .limit(1)
        .as("last_reward_mean"),
    ])
    .orderBy("r.created_at", "desc")
    .orderBy("r.id");
  if (filter.limit !== undefined) query = query.limit(filter.limit);
  return (await query.execute()) as RunOverview[];
}

export interface RewardTermByEpoch {
  epoch: number;
  reward_name: string;
  weight: number;
  samples: number;
  /** Mean and population std of the term's unweighted values over the epoch's samples. */
  mean: number;
  std: number;
}

/** Per epoch and reward term of a run: the term's mean and std (its unweighted values), in epoch order. */
export async function rewardTermsByEpoch(db: Db, runId: string): Promise<RewardTermByEpoch[]> {
  return db
    .selectFrom("rewards")
    .select((eb) => [
      "epoch",
      "reward_name",
      eb.fn.max("weight").as("weight"),
      eb.fn.countAll<number>().as("samples"),
      eb.fn.avg<number>("value").as("mean"),
      sql<number>`stddev_pop(value)`.as("std"),
    ])
    .where("run_id", "=", runId)
    .groupBy(["epoch", "reward_name"])
    .orderBy("epoch")
    .orderBy("reward_name")
    .execute();
}

/** A run's prompts with how many trajectories each has, most sampled first. */
export async function listRunPrompts(db: Db, runId: string): Promise<Array<{ prompt: string; trajectories: number }>> {
  return db
    .selectFrom("trajectories")
    .select((eb) => ["prompt", eb.fn.countAll<number>().as("trajectories")])
    .where("run_id", "=", runId)
    .groupBy("prompt")
    .orderBy("trajectories", "desc")
    .orderBy("prompt")
    .execute();
}

export type TrajectorySummary = Pick<
  Trajectory,
  "run_id" | "epoch" | "sample_index" | "prompt" | "seed" | "reward" | "advantage" | "checkpoint_id"
>;

const SUMMARY_COLUMNS = [
  "run_id",
  "epoch",
  "sample_index",
  "prompt",
  "seed",
  "reward",
  "advantage",
  "checkpoint_id",
] as const;

export interface TrajectorySearch {
  runId: string;
  epoch?: number;
  prompt?: string;
  sort?: "sample" | "reward" | "advantage";
  descending?: boolean;
  limit?: number;
  offset?: number;
}

/** A run's trajectories (no latents, no image), filtered and sorted; nulls last; ties in sample order. */
export async function searchTrajectories(db: Db, s: TrajectorySearch): Promise<TrajectorySummary[]> {
  let query = db.selectFrom("trajectories").select(SUMMARY_COLUMNS).where("run_id", "=", s.runId);
  if (s.epoch !== undefined) query = query.where("epoch", "=", s.epoch);
  if (s.prompt !== undefined) query = query.where("prompt", "=", s.prompt);
  const direction = s.descending ? "desc" : "asc";
  if (s.sort === "reward" || s.sort === "advantage")
    query = query.orderBy(sql`${sql.ref(s.sort)} ${sql.raw(direction)} nulls last`);
  query = query
    .orderBy("epoch", s.sort === "sample" ? direction : "asc")
    .orderBy("sample_index", s.sort === "sample" ? direction : "asc");
  if (s.limit !== undefined) query = query.limit(s.limit);
  if (s.offset !== undefined) query = query.offset(s.offset);
  return query.execute();
}

/** Every recorded trajectory of a prompt (and seed, when given) in these runs, by run and epoch. */
export async function trajectorySeries(
  db: Db,
  s: { runIds: readonly string[]; prompt: string; seed?: number },
): Promise<TrajectorySummary[]> {
  if (s.runIds.length === 0) return [];
  let query = db
    .selectFrom("trajectories")
    .select(SUMMARY_COLUMNS)
    .where("run_id", "in", s.runIds)
    .where("prompt", "=", s.prompt);
  if (s.seed !== undefined) query = query.where("seed", "=", s.seed);
  return query.orderBy("run_id").orderBy("epoch").orderBy("sample_index").execute();
}
