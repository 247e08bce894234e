// A short DDPO run across real processes (Sampler, Rewarder, Registry, Trainer) over loopback with
// a real Postgres: every trajectory, reward and checkpoint is recorded with correct lineage; the
// Trainer and the Sampler are killed with SIGKILL mid-run and the run still completes with each
// trajectory recorded exactly once.
import { describe, expect, test } from "bun:test";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { checkpointLineage, countRewards, countTrajectories, listEpochs } from "../../services/lib/db/queries.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import {
  BASE_MODEL_DIR,
  serviceTestEnvironment,
  spawnService,
  spawnTrainer,
  stopService,
  TINY_RUN_CONFIG,
  waitFor,
} from "./cluster.ts";

const svc = serviceTestEnvironment("ddpo-run-");

// The tiny run with its own seed (the figures this test was written against).
const CONFIG = { ...TINY_RUN_CONFIG, seed: 7 };

async function startTrainer(env: Record<string, string>, sampler: string, rewarder: string, registry: string) {
  const trainer = await spawnTrainer({ registry, rewarder, samplers: sampler }, svc.dataDir, env);
  svc.procs.push(trainer);
  return trainer;
}

describe("a DDPO run across the four services", () => {
  test("records every trajectory, reward and checkpoint with lineage, surviving kill -9 of Sampler and Trainer", async () => {
    const env = { DATABASE_URL: svc.database.url };
    const [sampler, rewarder, registry] = await Promise.all([
      spawnService("sampler", []),
      spawnService("rewarder", []),
      spawnService("registry", ["--data-dir", svc.dataDir], env),
    ]);
    svc.procs.push(sampler, rewarder, registry);
    let trainer = await startTrainer(env, sampler.address, rewarder.address, registry.address);
    let client = createClient(Trainer, trainer.address);
    const epochs = 6;
    const { run } = await client.startRun(
      { name: "integration", baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs, config: CONFIG },
      { timeoutMs: 60_000 },
    );
    const runId = run!.id;

    // Kill the Sampler once the first epoch is recorded; start a new one on the same address.
    await waitFor("epoch 1", async () => ((await listEpochs(svc.database.db, runId)).length >= 1 ? true : undefined));
    await stopService(sampler, "SIGKILL");
    const [host, port] = [
      sampler.address.slice(0, sampler.address.lastIndexOf(":")),
      sampler.address.split(":").at(-1),
    ];
    svc.procs.push(await spawnService("sampler", ["--address", `${host}:${port}`]));

    // Kill the Trainer once epoch 2 is recorded; a new Trainer resumes the run by itself.
    await waitFor("epoch 2", async () => ((await listEpochs(svc.database.db, runId)).length >= 2 ? true : undefined));
    await stopService(trainer, "SIGKILL");
    client.close();
    trainer = await startTrainer(env, sampler.address, rewarder.address, registry.address);
    client = createClient(Trainer, trainer.address);

    const events = [];
    for await (const e of client.watchRun({ runId }, { timeoutMs: 300_000 })) events.push(e);
    const last = events.at(-1)!;
    expect(last.event.case).toBe("status");
    if (last.event.case === "status") {
      expect(last.event.value.message).toBe("");
      expect(last.event.value.status).toBe(RunStatus.COMPLETED);
    }

    // Every trajectory and reward once; every epoch with its checkpoint; lineage back to the base.
    const perEpoch = CONFIG.sampleBatchSize * CONFIG.sampleBatchesPerEpoch;
    expect(await countTrajectories(svc.database.db, runId)).toBe(epochs * perEpoch);
    expect(await countRewards(svc.database.db, runId)).toBe(epochs * perEpoch);
    const recorded = await listEpochs(svc.database.db, runId);
    expect(recorded.map((e) => e.epoch)).toEqual([1, 2, 3, 4, 5, 6]);
    const lineage = await checkpointLineage(svc.database.db, recorded.at(-1)!.checkpoint_id!);
    expect(lineage.map((c) => c.epoch)).toEqual([6, 5, 4, 3, 2, 1, null]);
    expect(lineage.at(-1)!.kind).toBe("base");
    // Epoch e's trajectories were sampled by checkpoint e-1.
    const { rows } = await svc.database.pool.query(
      "select epoch, checkpoint_epoch from trajectory_provenance where run_id = $1 order by epoch",
      [runId],
    );
    for (const r of rows) expect(r.checkpoint_epoch).toBe(r.epoch === 1 ? null : r.epoch - 1);

    const registryClient = createClient(Registry, registry.address);
    const ancestry = await registryClient.getLineage({ checkpointId: recorded.at(-1)!.checkpoint_id! });
    expect(ancestry.ancestry.length).toBe(7);
    registryClient.close();
    client.close();
  }, 600_000);
});
