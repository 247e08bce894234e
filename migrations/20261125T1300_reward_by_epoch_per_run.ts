// run_reward_by_epoch, rewritten so that a filter on run_id reaches the tables' primary keys: the
// first version aggregated every run's trajectories before a full outer join could filter them.
// Same columns and numbers.

import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time, independent of the app's types
export async function up(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace view run_reward_by_epoch as
    select
      k.run_id, k.epoch,
      s.trajectories, s.rewarded, s.reward_mean, s.reward_std, s.reward_min, s.reward_max,
      e.reward_mean as epoch_reward_mean,
      e.reward_std as epoch_reward_std,
      e.loss, e.approx_kl, e.clip_fraction,
      e.sampling_s, e.reward_s, e.training_s, e.seconds,
      e.checkpoint_id, e.samples
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
    ) s
  `.execute(db);
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export async function down(db: Kysely<any>): Promise<void> {
  await sql`
    create or replace view run_reward_by_epoch as
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
}
