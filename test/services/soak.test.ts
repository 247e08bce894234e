// Soak, CI size: a 6-epoch run under `ddpo up` (startCluster: embedded Postgres and the four
// services, each supervised) while every service and Postgres itself are killed with SIGKILL at
// random moments (a seeded order and spacing, so a failure reproduces). The run must complete with
// every epoch, trajectory and reward recorded exactly once and its lineage intact.
import { afterAll, expect, test } from "bun:test";
import { readFileSync, rmSync } from "node:fs";
import { chmod, mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Cluster, type ServiceName, startCluster } from "../../services/cli/cluster.ts";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { openDatabase } from "../../services/lib/db/database.ts";
import { checkpointLineage, countRewards, countTrajectories, listEpochs } from "../../services/lib/db/queries.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { Mulberry32 } from "../../services/lib/training/random.ts";
import { BASE_MODEL_DIR, TINY_RUN_CONFIG as CONFIG, waitFor } from "./cluster.ts";

let dataDir = "";
let cluster: Cluster | null = null;

afterAll(async () => {
  await cluster?.stop();
  if (dataDir) rmSync(dataDir, { recursive: true, force: true });
});

test("a run survives SIGKILL of every service and of Postgres: completed, every row once", async () => {
  dataDir = await mkdtemp(join(tmpdir(), "ddpo-soak-"));
  await chmod(dataDir, 0o755); // postgres, unprivileged when we are root, must enter it
  const log: string[] = [];
  cluster = await startCluster({ dataDir, log: (line) => log.push(line) });
  const c = cluster;
  const trainer = createClient(Trainer, c.addresses.trainer);
  const registry = createClient(Registry, c.addresses.registry);
  const epochs = 6;
  const { run } = await trainer.startRun(
    { name: "soak", baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs, config: CONFIG },
    { timeoutMs: 60_000 },
  );
  const runId = run!.id;
  const current = async () => {
    try {
      return (await registry.getRun({ runId }, { timeoutMs: 5_000, waitForReady: true })).run;
    } catch {
      return undefined; // the Trainer or Postgres is down right now
    }
  };

  const random = new Mulberry32(20261201);
  const targets: (ServiceName | "postgres")[] = ["sampler", "rewarder", "registry", "trainer", "postgres"];
  for (let i = targets.length - 1; i > 0; i--) {
    const j = Math.floor(random.next() * (i + 1));
    [targets[i], targets[j]] = [targets[j]!, targets[i]!];
  }
  // One kill per epoch boundary, at a random moment inside the epoch that follows it.
  const killed: string[] = [];
  for (const [i, target] of targets.entries()) {
    const done = await waitFor(`epoch ${i}`, async () => {
      const r = await current();
      return r && r.epochsDone >= i ? r.epochsDone : undefined;
    });
    expect(done).toBeLessThan(epochs);
    await Bun.sleep(random.next() * 800);
    const pid =
      target === "postgres"
        ? Number(readFileSync(join(dataDir, "postgres", "postmaster.pid"), "utf8").split("\n")[0])
        : c.pid(target);
    if (!pid) continue;
    process.kill(pid, "SIGKILL");
    killed.push(target);
  }
  expect(killed.sort()).toEqual(["postgres", "registry", "rewarder", "sampler", "trainer"]);

  const final = await waitFor(
    "the run to end",
    async () => {
      const s = (await current())?.status;
      return s === RunStatus.COMPLETED || s === RunStatus.FAILED || s === RunStatus.STOPPED ? s : undefined;
    },
    240_000,
  );
  const got = (await registry.getRun({ runId })).run!;
  expect([final, got.error]).toEqual([RunStatus.COMPLETED, ""]);
  const db = openDatabase({ url: c.addresses.databaseUrl });
  try {
    const perEpoch = CONFIG.sampleBatchSize * CONFIG.sampleBatchesPerEpoch;
    const recorded = await listEpochs(db.db, runId);
    expect(recorded.map((e) => e.epoch)).toEqual([1, 2, 3, 4, 5, 6]);
    expect(await countTrajectories(db.db, runId)).toBe(epochs * perEpoch);
    expect(await countRewards(db.db, runId)).toBe(epochs * perEpoch);
    const lineage = await checkpointLineage(db.db, recorded.at(-1)!.checkpoint_id!);
    expect(lineage.map((l) => l.epoch)).toEqual([6, 5, 4, 3, 2, 1, null]);
  } finally {
    await db.close();
    trainer.close();
    registry.close();
  }
  expect(log.filter((l) => l.includes("restarting")).length).toBeGreaterThanOrEqual(5);
}, 300_000);
