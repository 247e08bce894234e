// Runs, epochs, checkpoints with lineage, trajectories with their rewards and latents, and the views
// that answer the common questions. Frozen in time: takes Kysely<any>, never the app's types.

import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time, independent of the app's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("checkpoints")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("parent_id", "text", (c) => c.references("checkpoints.id"))
    // Its foreign key to runs is added below, once runs exists (a run names its base checkpoint).
    .addColumn("run_id", "text")
    .addColumn("epoch", "integer")
    .addColumn("kind", "text", (c) => c.notNull().check(sql`kind in ('base', 'full', 'lora')`))
    .addColumn("sha256", "text", (c) => c.notNull().check(sql`sha256 ~ '^[0-9a-f]{64}$'`))
    .addColumn("size_bytes", "bigint", (c) => c.notNull().check(sql`size_bytes >= 0`))
    // Folder holding the .safetensors and config.json.
    .addColumn("location", "text", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addCheckConstraint("checkpoints_not_own_parent", sql`parent_id is distinct from id`)
    .execute();
  await db.schema.createIndex("checkpoints_parent_idx").on("checkpoints").column("parent_id").execute();
  await db.schema.createIndex("checkpoints_run_epoch_idx").on("checkpoints").columns(["run_id", "epoch"]).execute();

  await db.schema
    .createTable("runs")
    .addColumn("id", "text", (c) => c.primaryKey())
    .addColumn("name", "text", (c) => c.notNull())
    .addColumn("config", "jsonb", (c) => c.notNull().defaultTo(sql`'{}'::jsonb`))
    .addColumn("status", "text", (c) =>
      c.notNull().defaultTo("pending").check(sql`status in ('pending', 'running', 'stopped', 'finished', 'failed')`),
    )
    .addColumn("code_version", "text")
    .addColumn("base_checkpoint_id", "text", (c) => c.references("checkpoints.id"))
    .addColumn("prompt_set", "text")
    // [{ endpoint, name, weight }]: the reward services summed into the combined reward.
    .addColumn("rewards", "jsonb", (c) => c.notNull().defaultTo(sql`'[]'::jsonb`))
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("updated_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addColumn("error", "text")
    .execute();
  await db.schema.createIndex("runs_created_at_idx").on("runs").column("created_at").execute();
  await db.schema.createIndex("runs_status_idx").on("runs").column("status").execute();

  await db.schema
    .alterTable("checkpoints")
    .addForeignKeyConstraint("checkpoints_run_fk", ["run_id"], "runs", ["id"])
    .execute();

  await db.schema
    .createTable("epochs")
    .addColumn("run_id", "text", (c) => c.notNull().references("runs.id").onDelete("cascade"))
    .addColumn("epoch", "integer", (c) => c.notNull().check(sql`epoch >= 0`))
    .addColumn("reward_mean", "double precision")
    .addColumn("reward_std", "double precision")
    .addColumn("loss", "double precision")
    .addColumn("approx_kl", "double precision")
    .addColumn("clip_fraction", "double precision")
    // Phase wall times in seconds; `seconds` is the whole epoch.
    .addColumn("sampling_s", "double precision")
    .addColumn("reward_s", "double precision")
    .addColumn("training_s", "double precision")
    .addColumn("seconds", "double precision")
    // The checkpoint this epoch's update produced.
    .addColumn("checkpoint_id", "text", (c) => c.references("checkpoints.id"))
    .addColumn("samples", "integer", (c) => c.notNull().defaultTo(0))
    .addColumn("recorded_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("epochs_pk", ["run_id", "epoch"])
    .execute();

  // Content-addressed latents: x_T..x_0 of one trajectory, [T+1, C, H, W] float32 little-endian.
  await db.schema
    .createTable("latent_blobs")
    .addColumn("sha256", "text", (c) => c.primaryKey().check(sql`sha256 ~ '^[0-9a-f]{64}$'`))
    .addColumn("shape", sql`integer[]`, (c) => c.notNull())
    .addColumn("bytes", "bytea", (c) => c.notNull())
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .execute();

  await db.schema
    .createTable("trajectories")
    .addColumn("run_id", "text", (c) => c.notNull().references("runs.id").onDelete("cascade"))
    .addColumn("epoch", "integer", (c) => c.notNull())
    .addColumn("sample_index", "integer", (c) => c.notNull())
    .addColumn("prompt", "text", (c) => c.notNull())
    .addColumn("input_ids", sql`integer[]`)
    .addColumn("seed", "bigint", (c) => c.notNull())
    .addColumn("timesteps", sql`integer[]`, (c) => c.notNull())
    .addColumn("log_probs", sql`real[]`, (c) => c.notNull())
    // The weighted sum of the per-reward values in `rewards`.
    .addColumn("reward", "double precision")
    .addColumn("advantage", "real")
    // The policy that sampled it.
    .addColumn("checkpoint_id", "text", (c) => c.notNull().references("checkpoints.id"))
    .addColumn("latents_sha256", "text", (c) => c.references("latent_blobs.sha256"))
    .addColumn("image_png", "bytea")
    .addColumn("created_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("trajectories_pk", ["run_id", "epoch", "sample_index"])
    .addCheckConstraint("trajectories_one_log_prob_per_step", sql`cardinality(log_probs) = cardinality(timesteps)`)
    .execute();
  await db.schema.createIndex("trajectories_checkpoint_idx").on("trajectories").column("checkpoint_id").execute();
  await db.schema.createIndex("trajectories_latents_idx").on("trajectories").column("latents_sha256").execute();

  // One row per reward service per trajectory. No foreign key to trajectories: rewards are computed
  // concurrently with sampling and may reach the recorder before their trajectory.
  await db.schema
    .createTable("rewards")
    .addColumn("run_id", "text", (c) => c.notNull().references("runs.id").onDelete("cascade"))
    .addColumn("epoch", "integer", (c) => c.notNull())
    .addColumn("sample_index", "integer", (c) => c.notNull())
    .addColumn("reward_name", "text", (c) => c.notNull())
    .addColumn("value", "double precision", (c) => c.notNull())
    .addColumn("source", "text")
    .addColumn("weight", "double precision", (c) => c.notNull().defaultTo(1))
    .addPrimaryKeyConstraint("rewards_pk", ["run_id", "epoch", "sample_index", "reward_name"])
    .execute();

  // Per run and epoch: statistics of the recorded trajectory rewards (population std, as the
  // trainer logs it) beside what the trainer recorded for the epoch. Either side may be missing.
  await sql`
    create view run_reward_by_epoch as
    with t as (
      select run_id, epoch,
        count(*)::integer as trajectories,
        count(reward)::integer as rewarded,
        avg(reward) as reward_mean,
        stddev_pop(reward) as reward_std,
        min(reward) as reward_min,
        max(reward) as reward_max
      from trajectories
      group by run_id, epoch
    )
    select
      coalesce(t.run_id, e.run_id) as run_id,
      coalesce(t.epoch, e.epoch) as epoch,
      coalesce(t.trajectories, 0) as trajectories,
      coalesce(t.rewarded, 0) as rewarded,
      t.reward_mean, t.reward_std, t.reward_min, t.reward_max,
      e.reward_mean as epoch_reward_mean,
      e.reward_std as epoch_reward_std,
      e.loss, e.approx_kl, e.clip_fraction,
      e.sampling_s, e.reward_s, e.training_s, e.seconds,
      e.checkpoint_id, e.samples
    from t full outer join epochs e on e.run_id = t.run_id and e.epoch = t.epoch
  `.execute(db);

  // Every checkpoint paired with itself (depth 0), its parent (depth 1), and so on to its root.
  await sql`
    create view checkpoint_ancestry as
    with recursive chain(checkpoint_id, ancestor_id, depth) as (
      select id, id, 0 from checkpoints
      union all
      select chain.checkpoint_id, c.parent_id, chain.depth + 1
      from chain join checkpoints c on c.id = chain.ancestor_id
      where c.parent_id is not null
    )
    select chain.checkpoint_id, chain.ancestor_id, chain.depth,
      a.kind as ancestor_kind, a.run_id as ancestor_run_id, a.epoch as ancestor_epoch,
      a.sha256 as ancestor_sha256, a.location as ancestor_location
    from chain join checkpoints a on a.id = chain.ancestor_id
  `.execute(db);

  await sql`
    create view trajectory_provenance as
    select t.run_id, t.epoch, t.sample_index, t.prompt, t.seed, t.reward, t.advantage,
      t.checkpoint_id, c.kind as checkpoint_kind, c.parent_id as checkpoint_parent_id,
      c.run_id as checkpoint_run_id, c.epoch as checkpoint_epoch, c.sha256 as checkpoint_sha256
    from trajectories t join checkpoints c on c.id = t.checkpoint_id
  `.execute(db);
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop view if exists trajectory_provenance`.execute(db);
  await sql`drop view if exists checkpoint_ancestry`.execute(db);
  await sql`drop view if exists run_reward_by_epoch`.execute(db);
  await db.schema.dropTable("rewards").ifExists().execute();
  await db.schema.dropTable("trajectories").ifExists().execute();
  await db.schema.dropTable("latent_blobs").ifExists().execute();
  await db.schema.dropTable("epochs").ifExists().execute();
  await db.schema.alterTable("checkpoints").dropConstraint("checkpoints_run_fk").execute();
  await db.schema.dropTable("runs").ifExists().execute();
  await db.schema.dropTable("checkpoints").ifExists().execute();
}
