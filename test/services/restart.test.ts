// `ddpo up` restarted (new ports for every service) between StopRun and ResumeRun: the run
// recorded no Sampler address of its own, so the resumed run finds the new default Sampler and
// completes with every trajectory once. (The issue: runs recorded the old, ephemeral port and
// the resume failed after two minutes of retries.)
import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { chmod } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Cluster, startCluster } from "../../services/cli/cluster.ts";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { openDatabase } from "../../services/lib/db/database.ts";
import { countTrajectories, listEpochs } from "../../services/lib/db/queries.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { BASE_MODEL_DIR, TINY_RUN_CONFIG as CONFIG, waitFor } from "./cluster.ts";

const dataDir = mkdtempSync(join(tmpdir(), "ddpo-restart-"));
let cluster: Cluster | null = null;

afterAll(async () => {
  await cluster?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

test("a run stopped before `ddpo up` restarts resumes on the new Sampler and completes, every row once", async () => {
  // Postgres, running unprivileged when we are root, must be able to enter the folder.
  await chmod(dataDir, 0o755);
  const quiet = () => undefined;
  cluster = await startCluster({ dataDir, log: quiet });
  const before = cluster.addresses;
  let trainer = createClient(Trainer, before.trainer);
  const registry = createClient(Registry, before.registry);
  const epochs = 3;
  const { run } = await trainer.startRun(
    { name: "across restarts", baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs, config: CONFIG },
    { timeoutMs: 60_000 },
  );
  const runId = run!.id;
  expect(run!.samplerEndpoints).toEqual([]);
  await waitFor("epoch 1", async () => ((await registry.getRun({ runId })).run!.epochsDone >= 1 ? true : undefined));
  expect((await trainer.stopRun({ runId, immediate: true }, { timeoutMs: 60_000 })).run!.status).toBe(
    RunStatus.STOPPED,
  );
  trainer.close();
  registry.close();
  await cluster.stop();

  cluster = await startCluster({ dataDir, log: quiet });
  const after = cluster.addresses;
  expect(after.sampler).not.toBe(before.sampler);
  trainer = createClient(Trainer, after.trainer);
  await trainer.resumeRun({ runId }, { timeoutMs: 30_000 });
  const events = [];
  for await (const e of trainer.watchRun({ runId }, { timeoutMs: 120_000 })) events.push(e);
  const last = events.at(-1)!;
  expect(last.event.case === "status" && last.event.value).toMatchObject({ status: RunStatus.COMPLETED });
  const db = openDatabase({ url: after.databaseUrl });
  try {
    expect((await listEpochs(db.db, runId)).map((e) => e.epoch)).toEqual([1, 2, 3]);
    expect(await countTrajectories(db.db, runId)).toBe(epochs * CONFIG.sampleBatchSize * CONFIG.sampleBatchesPerEpoch);
  } finally {
    await db.close();
    trainer.close();
  }
}, 300_000);

test("a Trainer that stopped between registering a checkpoint and recording its epoch records it on resume", async () => {
  // The gap, made by hand on the finished run above: epoch 3's checkpoint is registered, its row gone.
  const c = cluster!;
  const db = openDatabase({ url: c.addresses.databaseUrl });
  const trainer = createClient(Trainer, c.addresses.trainer);
  try {
    const runs = await db.db.selectFrom("runs").select("id").where("name", "=", "across restarts").execute();
    const runId = runs[0]!.id;
    const before = await listEpochs(db.db, runId);
    await db.db.deleteFrom("epochs").where("run_id", "=", runId).where("epoch", "=", 3).execute();
    expect((await listEpochs(db.db, runId)).map((e) => e.epoch)).toEqual([1, 2]);
    await trainer.resumeRun({ runId, epochs: 4 }, { timeoutMs: 30_000 });
    const events = [];
    for await (const e of trainer.watchRun({ runId }, { timeoutMs: 120_000 })) events.push(e);
    const last = events.at(-1)!;
    expect(last.event.case === "status" && last.event.value).toMatchObject({ status: RunStatus.COMPLETED });
    const after = await listEpochs(db.db, runId);
    expect(after.map((e) => e.epoch)).toEqual([1, 2, 3, 4]);
    // Epoch 3 is the recorded one, not a redo: the same rewards and checkpoint.
    for (const k of ["reward_mean", "reward_std", "loss", "checkpoint_id"] as const)
      expect(after[2]![k]).toEqual(before[2]![k]);
  } finally {
    await db.close();
    trainer.close();
  }
}, 300_000);
