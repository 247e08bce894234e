// Held-out evaluation (the over-optimisation guard): every evaluation period the policy samples the
// run's fixed evaluation prompts x seeds, and each image's score under every metric (each configured
// reward by name, and the emoji CLIP's zero-shot top-1 as the content check) is one row.
// run_evaluation_by_epoch: per run, epoch and metric, the count, mean, population std, min and max,
// summed in a fixed order so that every read gives the same bits (the guard compares means).

import { type Kysely, sql } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time, independent of the app's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .createTable("evaluation_scores")
    .addColumn("run_id", "text", (c) => c.notNull().references("runs.id").onDelete("cascade"))
    // Completed training epochs when the policy was evaluated (0: the starting model).
    .addColumn("epoch", "integer", (c) => c.notNull().check(sql`epoch >= 0`))
    .addColumn("prompt", "text", (c) => c.notNull())
    .addColumn("seed", "bigint", (c) => c.notNull().check(sql`seed >= 0`))
    .addColumn("metric", "text", (c) => c.notNull().check(sql`length(metric) > 0`))
    .addColumn("value", "double precision", (c) => c.notNull())
    .addColumn("recorded_at", "timestamptz", (c) => c.notNull().defaultTo(sql`now()`))
    .addPrimaryKeyConstraint("evaluation_scores_pk", ["run_id", "epoch", "metric", "prompt", "seed"])
    .execute();
  await sql`
    create view run_evaluation_by_epoch as
    select run_id, epoch, metric,
      count(*)::integer as images,
      avg(value order by prompt, seed) as mean,
      stddev_pop(value order by prompt, seed) as std,
      min(value) as min,
      max(value) as max
    from evaluation_scores
    group by run_id, epoch, metric
  `.execute(db);
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export async function down(db: Kysely<any>): Promise<void> {
  await sql`drop view if exists run_evaluation_by_epoch`.execute(db);
  await db.schema.dropTable("evaluation_scores").execute();
}
