// The guard's best evaluated policy of a run (HeldOutEvaluation.best_metric): runs.best_checkpoint_id
// (the starting checkpoint when the start evaluated best) and the metric it is best by. The
// lineage marks a checkpoint as its own run's best through these columns.

import type { Kysely } from "kysely";

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time, independent of the app's types
export async function up(db: Kysely<any>): Promise<void> {
  await db.schema
    .alterTable("runs")
    .addColumn("best_checkpoint_id", "text", (c) => c.references("checkpoints.id"))
    .addColumn("best_metric", "text")
    .execute();
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export async function down(db: Kysely<any>): Promise<void> {
  await db.schema.alterTable("runs").dropColumn("best_checkpoint_id").dropColumn("best_metric").execute();
}
