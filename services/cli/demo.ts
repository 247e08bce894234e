// `npm run demo`: the whole system on the embedded defaults. Starts Postgres and the four
// services, fine-tunes the shipped base model on jpeg_compressibility for a few epochs through
// the Trainer, then prints where the images, the reward curve and the SQL history are.
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { Trainer } from "../gen/ddpo/v1/trainer_pb.ts";
import { openDatabase } from "../lib/db/database.ts";
import { rewardByEpoch } from "../lib/db/queries.ts";
import { DDPO_DEFAULTS } from "../lib/ddpo/trainer.ts";
import { createClient } from "../lib/grpc/index.ts";
import { lineChartPng } from "../lib/plots/line-chart.ts";
import { ddpoConfigMessage } from "../lib/runs/run-messages.ts";
import { startCluster } from "./cluster.ts";
import { followRun } from "./remote.ts";

const { values } = parseArgs({
  args: process.argv.slice(2),
  options: { out: { type: "string" }, epochs: { type: "string" }, "data-dir": { type: "string" } },
});
const out = resolve(values.out ?? "out/demo");
const dataDir = resolve(values["data-dir"] ?? join(out, "ddpo-data"));
mkdirSync(out, { recursive: true });
// 30: the base model draws crisp emoji, and a run of this recipe lifts its compressibility clearly
// only after ~15 epochs (bench/learning/guard-jpeg, beta 0), where the images start to pale.
const epochs = Number(values.epochs ?? 30);

console.log(`starting Postgres (data in ${join(dataDir, "postgres")}) and the four services ...`);
const cluster = await startCluster({ dataDir });
try {
  const a = cluster.addresses;
  console.log(`registry ${a.registry}  rewarder ${a.rewarder}  sampler ${a.sampler}  trainer ${a.trainer}`);
  console.log(`dashboard http://${a.dashboard}/ (the run's curves live while it trains)`);
  const trainer = createClient(Trainer, a.trainer);
  // A CPU-sized epoch: 32 samples x 10 DDIM steps without guidance, LoRA rank 4, two optimizer
  // steps per epoch, the final 2 steps not trained (skipFinalSteps), lr 3e-3: the recipe of the
  // learning test and of bench/learning/ (see the epoch count above).
  const config = {
    ...DDPO_DEFAULTS,
    steps: 10,
    sampleBatchSize: 16,
    sampleBatchesPerEpoch: 2,
    trainBatchSize: 16,
    gradientAccumulation: 1,
    timestepFraction: 0.5,
    skipFinalSteps: 2,
    lr: 3e-3,
    clipRange: 1e-3,
  };
  const { run } = await trainer.startRun(
    {
      name: "demo: jpeg compressibility",
      baseModelDir: resolve("models/emoji-base"),
      promptSet: "animals",
      epochs,
      rewards: [{ endpoint: "", rewardName: "jpeg_compressibility", weight: 1 }],
      config: ddpoConfigMessage(config),
    },
    { timeoutMs: 120_000 },
  );
  trainer.close();
  const runId = run!.id;
  console.log(`run ${runId}: ${epochs} epochs of DDPO on jpeg_compressibility`);
  const result = await followRun(a.trainer, runId);

  const database = openDatabase({ url: a.databaseUrl });
  const history = await rewardByEpoch(database.db, runId);
  await database.close();
  console.log(
    "\nselect epoch, trajectories, reward_mean, reward_std, approx_kl, checkpoint_id from run_reward_by_epoch:",
  );
  for (const h of history) {
    console.log(
      `  ${String(h.epoch).padStart(3)}  ${String(h.trajectories).padStart(3)}  ${(h.reward_mean ?? Number.NaN).toFixed(4)}` +
        `  ${(h.reward_std ?? Number.NaN).toFixed(4)}  ${(h.approx_kl ?? Number.NaN).toExponential(2)}  ${h.checkpoint_id}`,
    );
  }
  const curve = join(out, "reward-curve.png");
  await lineChartPng(
    curve,
    [{ name: "mean reward (-kB)", points: history.map((h) => [h.epoch, h.reward_mean ?? Number.NaN] as const) }],
    { title: "DDPO on jpeg_compressibility", xLabel: "epoch", yLabel: "reward" },
  );
  console.log(`
run ${runId} ended: ${result.message || "completed"}
  images        ${join(dataDir, "runs", runId, "samples")}/epoch-*.png
  checkpoints   ${join(dataDir, "runs", runId, "checkpoints")}/
  reward curve  ${curve}
  SQL history   in ${join(dataDir, "postgres")}: start it again on the same port with
                DDPO_DB_PORT=${new URL(a.databaseUrl).port} bun run services/cli/ddpo.ts up --data-dir ${dataDir}
                then psql '${a.databaseUrl}', e.g.
                select * from run_reward_by_epoch where run_id = '${runId}';
                select * from checkpoint_ancestry where checkpoint_id = '${runId}/epoch-${epochs}';
                select prompt, seed, reward, checkpoint_id from trajectory_provenance where run_id = '${runId}' limit 5;
  dashboard     the same 'up' serves it (its address is printed), or: bun run services/cli/ddpo.ts dashboard --data-dir ${dataDir}`);
} finally {
  await cluster.stop();
}
