// epochs.kl_to_reference: the mean KL(pi_theta || pi_ref) per pixel to the run's starting model over
// an epoch's trained pairs (docs/DESIGN.md §3.6); null when not measured (kl_coefficient 0) and for
// epochs recorded before. run_reward_by_epoch gains it as its last column (same rows otherwise).

import { type Kysely, sql } from "kysely";

const VIEW_BODY = sql`
    select
      k.run_id, k.epoch,
      s.trajectories, s.rewarded, s.reward_mean, s.reward_std, s.reward_min, s.reward_max,
      e.reward_mean as epoch_reward_mean,
      e.reward_std as epoch_reward_std,
      e.loss, e.approx_kl, e.clip_fraction,
      e.sampling_s, e.reward_s, e.training_s, e.seconds,
      e.checkpoint_id, e.samples`;

const VIEW_FROM = sql`
    from (
      select run_id, epoch from epochs
      union
      select run_id, epoch from trajectories
    ) k
    left join epochs e on e.run_id = k.run_id and e.epoch = k.epoch
    cross join lateral (
      select
        count(*)::integer as trajectories,
        count(t.reward)::integer as rewarded,
        avg(t.reward) as reward_mean,
        stddev_pop(t.reward) as reward_std,
        min(t.reward) as reward_min,
        max(t.reward) as reward_max
      from trajectories t
      where t.run_id = k.run_id and t.epoch = k.epoch
    ) s`;

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time, independent of the app's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("epochs").addColumn("kl_to_reference", "double precision").execute();
  await sql`create or replace view run_reward_by_epoch as ${VIEW_BODY}, e.kl_to_reference ${VIEW_FROM}`.execute(db);
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export async function down(db: Kysely<any>): Promise<void> {
  // A view cannot drop a column by replacement: recreate it as it was.
  await sql`drop view run_reward_by_epoch`.execute(db);
  await sql`create view run_reward_by_epoch as ${VIEW_BODY} ${VIEW_FROM}`.execute(db);
  await db.schema.alterTable("epochs").dropColumn("kl_to_reference").execute();
}
