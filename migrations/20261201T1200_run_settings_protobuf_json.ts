// runs.config becomes the protobuf JSON of ddpo.v1.RunSettings (services/lib/runs/run-messages.ts):
// the keys stay (ddpo, baseModelDir, epochs, samplerEndpoints, runDir), but inside ddpo the loss is
// the enum's name ("DDPO_LOSS_IS", was "ddpo_is"), and full fine-tuning and batch-statistics
// advantages are the oneof cases {"full": {}} and {"batchStatistics": {}} (were lora: null and
// statTracking: null). Rows already in the new form (or with no ddpo) are left as they are.

import { type Kysely, sql } from "kysely";

const LOSSES = [
  ["ddpo_is", "DDPO_LOSS_IS"],
  ["ddpo_sf", "DDPO_LOSS_SF"],
  ["rwr", "DDPO_LOSS_RWR"],
  ["sparse_rwr", "DDPO_LOSS_SPARSE_RWR"],
] as const;

// biome-ignore lint/suspicious/noExplicitAny: a migration is frozen in time, independent of the app's types
export async function up(db: Kysely<any>): Promise<void> {
  for (const [old, name] of LOSSES) {
    await sql`
      update runs set config = jsonb_set(config, '{ddpo}',
        ((config->'ddpo') - 'lora' - 'statTracking')
        || jsonb_build_object('loss', ${name}::text)
        || case when jsonb_typeof(config->'ddpo'->'lora') = 'object'
             then jsonb_build_object('lora', config->'ddpo'->'lora') else '{"full": {}}'::jsonb end
        || case when jsonb_typeof(config->'ddpo'->'statTracking') = 'object'
             then jsonb_build_object('statTracking', config->'ddpo'->'statTracking')
             else '{"batchStatistics": {}}'::jsonb end)
      where config->'ddpo'->>'loss' = ${old}
    `.execute(db);
  }
}

// biome-ignore lint/suspicious/noExplicitAny: as above
export async function down(db: Kysely<any>): Promise<void> {
  for (const [old, name] of LOSSES) {
    await sql`
      update runs set config = jsonb_set(config, '{ddpo}',
        ((config->'ddpo') - 'full' - 'batchStatistics' - 'lora' - 'statTracking')
        || jsonb_build_object('loss', ${old}::text)
        || jsonb_build_object('lora', coalesce(config->'ddpo'->'lora', 'null'::jsonb))
        || jsonb_build_object('statTracking', coalesce(config->'ddpo'->'statTracking', 'null'::jsonb)))
      where config->'ddpo'->>'loss' = ${name}
    `.execute(db);
  }
}
