// Swapping rewards: a run names Rewarder endpoints with weights, and a reward server written
// independently of our code (test/services/independent-rewarder/server.mjs: the .proto loaded with
// @grpc/proto-loader, served by plain @grpc/grpc-js) scores it in place of the built-in Rewarder.
// Real processes over loopback (Sampler, built-in Rewarder, Registry, Trainer, the independent
// server) and a real Postgres. Checked in the database: every trajectory has a row per reward term
// with the endpoint that scored it; its combined reward is the weighted sum of those rows; the
// epochs' reward means agree with the rows; and the recorded values are what the independent
// server gives when the same trajectories are sampled again from the recorded checkpoints and
// seeds and sent to it directly.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Rewarder } from "../../services/gen/ddpo/v1/rewarder_pb.ts";
import type { RewardSourceSchema } from "../../services/gen/ddpo/v1/run_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { listEpochs } from "../../services/lib/db/queries.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { startTestPostgres, type TestDatabase, type TestPostgres } from "../db/postgres.ts";
import {
  BASE_MODEL_DIR,
  TINY_RUN_CONFIG as CONFIG,
  type ServiceProcess,
  spawnService,
  spawnTrainer,
} from "./cluster.ts";
import { type IndependentRewarder, spawnIndependentRewarder } from "./independent-rewarder/spawn.ts";

const EPOCHS = 2;
const PER_EPOCH = CONFIG.sampleBatchSize * CONFIG.sampleBatchesPerEpoch;

let pg: TestPostgres;
let database: TestDatabase;
let dataDir: string;
const procs: ServiceProcess[] = [];
let independent: IndependentRewarder | undefined;
let sampler: ServiceProcess;
let builtin: ServiceProcess;
let trainer: ServiceProcess;

beforeAll(async () => {
  pg = await startTestPostgres();
  database = await pg.freshDatabase();
  dataDir = mkdtempSync(join(tmpdir(), "ddpo-swap-"));
  const env = { DATABASE_URL: database.url };
  let registry: ServiceProcess;
  [sampler, builtin, registry, independent] = await Promise.all([
    spawnService("sampler", []),
    spawnService("rewarder", []),
    spawnService("registry", ["--data-dir", dataDir], env),
    spawnIndependentRewarder(),
  ]);
  procs.push(sampler, builtin, registry);
  trainer = await spawnTrainer(
    { registry: registry.address, rewarder: builtin.address, samplers: sampler.address },
    dataDir,
    env,
  );
  procs.push(trainer);
}, 180_000);

afterAll(async () => {
  for (const p of procs) p.proc.kill("SIGKILL");
  await independent?.stop();
  await pg?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

/** Starts a run with these reward terms and waits for its end; returns its id. */
async function runToCompletion(name: string, rewards: MessageInitShape<typeof RewardSourceSchema>[]) {
  const client = createClient(Trainer, trainer.address);
  try {
    const { run } = await client.startRun(
      { name, baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs: EPOCHS, rewards, config: CONFIG },
      { timeoutMs: 60_000 },
    );
    const runId = run!.id;
    const liveMeans = new Map<number, Record<string, number>>();
    let last: { status: RunStatus; message: string } | undefined;
    for await (const e of client.watchRun({ runId, fromEpoch: 0 }, { timeoutMs: 300_000 })) {
      if (e.event.case === "epoch" && Object.keys(e.event.value.rewardMeans).length > 0) {
        liveMeans.set(e.event.value.epoch, e.event.value.rewardMeans);
      }
      if (e.event.case === "status") last = e.event.value;
    }
    expect({ status: last?.status, message: last?.message }).toEqual({ status: RunStatus.COMPLETED, message: "" });
    return { runId, liveMeans };
  } finally {
    client.close();
  }
}

interface RewardRowView {
  epoch: number;
  sample_index: number;
  reward_name: string;
  value: number;
  source: string | null;
  weight: number;
}

async function rowsOf(runId: string) {
  const trajectories = (
    await database.pool.query(
      `select epoch, sample_index, prompt, seed, reward, checkpoint_id from trajectories
       where run_id = $1 order by epoch, sample_index`,
      [runId],
    )
  ).rows as {
    epoch: number;
    sample_index: number;
    prompt: string;
    seed: number;
    reward: number;
    checkpoint_id: string;
  }[];
  const rewards = (
    await database.pool.query(
      `select epoch, sample_index, reward_name, value, source, weight from rewards
       where run_id = $1 order by epoch, sample_index, reward_name`,
      [runId],
    )
  ).rows as RewardRowView[];
  return { trajectories, rewards };
}

/** Checks shared by both runs: rows per term, weighted sums, epoch means. */
async function expectConsistentRows(
  runId: string,
  terms: { name: string; source: string; weight: number }[],
  liveMeans: Map<number, Record<string, number>>,
) {
  const { trajectories, rewards } = await rowsOf(runId);
  expect(trajectories.length).toBe(EPOCHS * PER_EPOCH);
  expect(rewards.length).toBe(EPOCHS * PER_EPOCH * terms.length);
  const byKey = Map.groupBy(rewards, (r) => `${r.epoch}/${r.sample_index}`);
  for (const t of trajectories) {
    const rows = byKey.get(`${t.epoch}/${t.sample_index}`) ?? [];
    expect(rows.map((r) => ({ name: r.reward_name, source: r.source, weight: r.weight }))).toEqual(
      [...terms].sort((a, b) => a.name.localeCompare(b.name)),
    );
    // The combined reward is the weighted sum of the recorded terms.
    expect(t.reward).toBeCloseTo(
      rows.reduce((s, r) => s + r.weight * r.value, 0),
      9,
    );
  }
  // The independent scorer's scores lie in [0, 1].
  for (const r of rewards.filter((r) => r.source === independent!.address)) {
    expect(r.value).toBeGreaterThanOrEqual(0);
    expect(r.value).toBeLessThanOrEqual(1);
  }
  // Per-epoch means: the `epochs` table's combined mean against the rows, and the live events'
  // per-reward means (unweighted) against the rows.
  const epochs = await listEpochs(database.db, runId);
  expect(epochs.map((e) => e.epoch)).toEqual([1, 2]);
  for (const e of epochs) {
    const mine = trajectories.filter((t) => t.epoch === e.epoch);
    expect(e.samples).toBe(PER_EPOCH);
    expect(e.reward_mean!).toBeCloseTo(mine.reduce((s, t) => s + t.reward, 0) / mine.length, 9);
    const live = liveMeans.get(e.epoch);
    if (live) {
      for (const term of terms) {
        const values = rewards.filter((r) => r.epoch === e.epoch && r.reward_name === term.name).map((r) => r.value);
        expect(live[term.name]!).toBeCloseTo(values.reduce((a, b) => a + b, 0) / values.length, 9);
      }
    }
  }
  const view = await database.pool.query(
    "select epoch, reward_mean, epoch_reward_mean from run_reward_by_epoch where run_id = $1 order by epoch",
    [runId],
  );
  for (const v of view.rows) expect(v.reward_mean).toBeCloseTo(v.epoch_reward_mean, 9);
  return { trajectories, rewards };
}

/**
 * Samples the run's trajectories again from their recorded checkpoints, prompts and seeds, and
 * scores the images with the independent server directly: the recorded values must be its scores.
 */
async function expectScoresReproduce(runId: string, rewardName: string, recorded: RewardRowView[]) {
  const { trajectories } = await rowsOf(runId);
  const samplerClient = createClient(Sampler, sampler.address);
  const scorer = createClient(Rewarder, independent!.address);
  try {
    for (let epoch = 1; epoch <= EPOCHS; epoch++) {
      const mine = trajectories.filter((t) => t.epoch === epoch);
      const checkpointId = mine[0]!.checkpoint_id;
      const checkpoint = (
        await database.pool.query("select kind, location from checkpoints where id = $1", [checkpointId])
      ).rows[0] as { kind: string; location: string };
      await samplerClient.loadCheckpoint(
        {
          checkpointId,
          baseModelDir: BASE_MODEL_DIR,
          loraDir: checkpoint.kind === "lora" ? join(checkpoint.location, "lora") : undefined,
        },
        { timeoutMs: 60_000 },
      );
      const images = [];
      for await (const t of samplerClient.sample(
        {
          prompts: mine.map((t) => t.prompt),
          seeds: mine.map((t) => BigInt(t.seed)),
          steps: CONFIG.steps,
          guidance: CONFIG.guidance,
          checkpointId,
          batchSize: CONFIG.sampleBatchSize,
        },
        { timeoutMs: 120_000 },
      )) {
        images.push({ prompt: t.prompt, image: t.image });
      }
      const { scores } = await scorer.score({ rewardName, images }, { timeoutMs: 60_000 });
      const values = recorded.filter((r) => r.epoch === epoch && r.reward_name === rewardName).map((r) => r.value);
      expect(scores.length).toBe(values.length);
      for (const [i, s] of scores.entries()) expect(values[i]!).toBeCloseTo(s, 6);
    }
  } finally {
    samplerClient.close();
    scorer.close();
  }
}

describe("swapping the Rewarder for an independently written reward server", () => {
  test("the independent server lists its rewards over the contract", async () => {
    const client = createClient(Rewarder, independent!.address);
    const { rewards } = await client.listRewards({});
    client.close();
    expect(rewards.map((r) => r.name).sort()).toEqual(["edge_density", "mean_blue"]);
  });

  test("a run rewarded only by the independent server (weight 2) records its scores with its endpoint", async () => {
    const terms = [{ name: "mean_blue", source: independent!.address, weight: 2 }];
    const { runId, liveMeans } = await runToCompletion(
      "swapped",
      terms.map((t) => ({ endpoint: t.source, rewardName: t.name, weight: t.weight })),
    );
    const { rewards } = await expectConsistentRows(runId, terms, liveMeans);
    // Nothing came from the built-in Rewarder.
    expect(rewards.some((r) => r.source === builtin.address)).toBe(false);
    await expectScoresReproduce(runId, "mean_blue", rewards);
  }, 600_000);

  test("a run mixing an independent term and a built-in term sums them with their weights", async () => {
    const terms = [
      { name: "edge_density", source: independent!.address, weight: 2 },
      // endpoint "" is the Trainer's default (built-in) Rewarder, recorded under its address.
      { name: "jpeg_compressibility", source: builtin.address, weight: 0.5 },
    ];
    const { runId, liveMeans } = await runToCompletion(
      "mixed",
      terms.map((t) => ({
        endpoint: t.source === builtin.address ? "" : t.source,
        rewardName: t.name,
        weight: t.weight,
      })),
    );
    const { rewards } = await expectConsistentRows(runId, terms, liveMeans);
    await expectScoresReproduce(runId, "edge_density", rewards);
  }, 600_000);
});
