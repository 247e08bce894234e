// Several Samplers as one fleet, across real processes over loopback with a real Postgres: a
// Sampler SIGKILLed while it draws a chunk costs only that chunk (another Sampler redraws it) and
// the run's rows are exactly those of an undisturbed one-Sampler run; a Sampler started mid-run on
// an address of the fleet takes work (its GetStatus counts what it drew); a run that failed when
// its only Sampler died resumes on a new fleet named in ResumeRun.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { findFreePort } from "../../services/lib/db/embedded.ts";
import { createClient, type ServiceClient } from "../../services/lib/grpc/index.ts";
import { startTestPostgres, type TestDatabase, type TestPostgres } from "../db/postgres.ts";
import {
  BASE_MODEL_DIR,
  type ServiceProcess,
  spawnService,
  spawnTrainer,
  stopService,
  TINY_RUN_CONFIG,
  waitFor,
} from "./cluster.ts";

// Three chunks (sample batches of 2) per epoch, so each of three Samplers has one to draw.
const CONFIG = { ...TINY_RUN_CONFIG, seed: 5, sampleBatchesPerEpoch: 3, steps: 4 };
const EPOCHS = 2;

let pg: TestPostgres;
let database: TestDatabase;
let dataDir: string;
const procs: ServiceProcess[] = [];
let trainer: ServiceClient<typeof Trainer.method>;

beforeAll(async () => {
  pg = await startTestPostgres();
  database = await pg.freshDatabase();
  dataDir = mkdtempSync(join(tmpdir(), "ddpo-fleet-"));
  const env = { DATABASE_URL: database.url };
  const started = await Promise.all([
    // The first Sampler closes its connections every ~1 s (what lets a dns: fleet's clients
    // re-resolve): every run below on it must still give the same rows.
    spawnService("sampler", ["--max-connection-age-s", "1"]),
    spawnService("sampler", []),
    spawnService("sampler", []),
    spawnService("rewarder", []),
    spawnService("registry", ["--data-dir", dataDir], env),
  ]);
  procs.push(...started);
  const [s0, , , rewarder, registry] = started;
  const t = await spawnTrainer(
    { registry: registry!.address, rewarder: rewarder!.address, samplers: s0!.address },
    dataDir,
    env,
    ["--retry-for-s", "3"],
  );
  procs.push(t);
  trainer = createClient(Trainer, t.address);
}, 120_000);

afterAll(async () => {
  trainer?.close();
  for (const p of procs) p.proc.kill("SIGKILL");
  await pg?.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

async function startRun(name: string, samplers: string[], split: string, epochs = EPOCHS): Promise<string> {
  const { run, workSplit } = await trainer.startRun(
    { name, baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs, config: CONFIG, samplerEndpoints: samplers },
    { timeoutMs: 60_000 },
  );
  // The run records the fleet as named, not the addresses behind it.
  expect(run!.samplerEndpoints).toEqual(samplers);
  expect(workSplit).toBe(split);
  return run!.id;
}

/** The run's last status event. */
async function finish(runId: string): Promise<{ status: RunStatus; message: string }> {
  let last = { status: RunStatus.UNSPECIFIED, message: "" };
  for await (const e of trainer.watchRun({ runId }, { timeoutMs: 300_000 })) {
    if (e.event.case === "status") last = { status: e.event.value.status, message: e.event.value.message };
  }
  return last;
}

/** Everything a run recorded that must not depend on which Samplers drew it, in order. */
async function rows(runId: string) {
  const trajectories = await database.pool.query(
    `select epoch, sample_index, prompt, seed, timesteps, log_probs, reward, advantage, latents_sha256
       from trajectories where run_id = $1 order by epoch, sample_index`,
    [runId],
  );
  const rewards = await database.pool.query(
    "select epoch, sample_index, reward_name, value from rewards where run_id = $1 order by epoch, sample_index, reward_name",
    [runId],
  );
  const checkpoints = await database.pool.query(
    "select epoch, sha256 from checkpoints where run_id = $1 order by epoch",
    [runId],
  );
  return { trajectories: trajectories.rows, rewards: rewards.rows, checkpoints: checkpoints.rows };
}

/**
 * Once the run's epoch 1 is recorded, SIGKILLs the first Sampler of `fleet` seen drawing epoch 2
 * (GetStatus answers while its engine computes); its index.
 */
async function killDrawingSampler(runId: string, fleet: ServiceProcess[]): Promise<number> {
  await waitFor("epoch 1", async () => {
    const { rows } = await database.pool.query("select 1 from epochs where run_id = $1", [runId]);
    return rows.length >= 1 ? true : undefined;
  });
  const clients = fleet.map((s) => createClient(Sampler, s.address));
  try {
    const victim = await waitFor(
      "a Sampler drawing epoch 2",
      async () => {
        for (const [i, c] of clients.entries()) {
          const asked = performance.now();
          const status = await c.getStatus({}, { timeoutMs: 1000 }).catch(() => null);
          if (status && status.activeSamples > 0) {
            // The Sampler's service thread answers while its engine thread computes.
            const ms = performance.now() - asked;
            expect(ms).toBeLessThan(500);
            console.log(`GetStatus of a drawing Sampler answered in ${ms.toFixed(1)} ms`);
            return i;
          }
        }
        return undefined;
      },
      60_000,
    );
    await stopService(fleet[victim]!, "SIGKILL");
    return victim;
  } finally {
    for (const c of clients) c.close();
  }
}

/** GetStatus of one Sampler. */
async function statusOf(s: ServiceProcess) {
  const c = createClient(Sampler, s.address);
  try {
    return await c.getStatus({}, { timeoutMs: 5000 });
  } finally {
    c.close();
  }
}

/** The checkpoint each live Sampler of `fleet` holds. */
async function heldCheckpoints(fleet: ServiceProcess[]): Promise<string[]> {
  return Promise.all(fleet.map(async (s) => (await statusOf(s)).checkpointId));
}

describe("Samplers as a fleet", () => {
  let reference: Awaited<ReturnType<typeof rows>>;

  test("a run on one Sampler (the reference)", async () => {
    const runId = await startRun("one sampler", [procs[0]!.address], "3 chunks of 2 samples per epoch over 1 Sampler");
    expect(await finish(runId)).toEqual({ status: RunStatus.COMPLETED, message: "" });
    reference = await rows(runId);
    expect(reference.trajectories.length).toBe(EPOCHS * 6);
    expect(reference.rewards.length).toBe(EPOCHS * 6);
    expect(reference.checkpoints.length).toBe(EPOCHS);
  }, 300_000);

  test("three Samplers, one SIGKILLed while drawing a chunk: the same rows as the one-Sampler run", async () => {
    const fleet = procs.slice(0, 3);
    const runId = await startRun(
      "three samplers",
      fleet.map((s) => s.address),
      "3 chunks of 2 samples per epoch over 3 Samplers",
    );
    const victim = await killDrawingSampler(runId, fleet);
    expect(await finish(runId)).toEqual({ status: RunStatus.COMPLETED, message: "" });
    expect(await rows(runId)).toEqual(reference);
    // Revive a Sampler in the killed one's place for the test below.
    procs[victim] = await spawnService("sampler", []);
  }, 300_000);

  test("one balanced target (round_robin over ipv4:a,b,c): work spreads, a killed Sampler drops out, the same rows", async () => {
    const fleet = procs.slice(0, 3);
    const target = `ipv4:${fleet.map((s) => s.address).join(",")}`;
    const runId = await startRun(
      "balanced target",
      [target],
      `3 chunks of 2 samples per epoch, spread by round_robin over ${target}`,
    );
    const victim = await killDrawingSampler(runId, fleet);
    expect(await finish(runId)).toEqual({ status: RunStatus.COMPLETED, message: "" });
    expect(await rows(runId)).toEqual(reference);
    // Both survivors drew epoch 2 (they hold epoch 1's policy).
    const survivors = fleet.filter((_, i) => i !== victim);
    expect(await heldCheckpoints(survivors)).toEqual(survivors.map(() => `${runId}/epoch-1`));
    procs[victim] = await spawnService("sampler", []);
  }, 300_000);

  test("a Sampler started mid-run on an address of the fleet takes work: the same rows as one Sampler's", async () => {
    // Enough epochs that the late Sampler has several to join (grpc-js retries its address every
    // 2 s at most), and their own one-Sampler reference.
    const epochs = 5;
    const first = procs[0]!;
    const alone = await startRun(
      "joined: the reference",
      [first.address],
      "3 chunks of 2 samples per epoch over 1 Sampler",
      epochs,
    );
    expect((await finish(alone)).status).toBe(RunStatus.COMPLETED);
    const expected = await rows(alone);
    expect(expected.trajectories.length).toBe(epochs * 6);

    const late = `127.0.0.1:${await findFreePort()}`;
    const target = `ipv4:${first.address},${late}`;
    const before = Number((await statusOf(first)).samplesStreamed);
    const runId = await startRun(
      "joined mid-run",
      [target],
      `3 chunks of 2 samples per epoch, spread by round_robin over ${target}`,
      epochs,
    );
    // The run has begun on the one Sampler there is: epoch 1 is drawn and recorded.
    await waitFor("epoch 1", async () => {
      const { rows } = await database.pool.query("select 1 from epochs where run_id = $1", [runId]);
      return rows.length >= 1 ? true : undefined;
    });
    const joined = await spawnService("sampler", ["--address", late]);
    procs.push(joined);
    expect(await finish(runId)).toEqual({ status: RunStatus.COMPLETED, message: "" });
    expect(await rows(runId)).toEqual(expected);
    // Every trajectory came from one of the two; the late one drew at least one chunk (2 samples),
    // under a policy of epoch 1 or later.
    const drawnFirst = Number((await statusOf(first)).samplesStreamed) - before;
    const lateStatus = await statusOf(joined);
    console.log(`samples drawn: first Sampler ${drawnFirst}, late Sampler ${lateStatus.samplesStreamed}`);
    expect(Number(lateStatus.samplesStreamed)).toBeGreaterThanOrEqual(2);
    expect(drawnFirst + Number(lateStatus.samplesStreamed)).toBe(epochs * 6);
    expect(lateStatus.checkpointId).toMatch(new RegExp(`^${runId}/epoch-[1-${epochs - 1}]$`));
  }, 300_000);

  test("GetStatus answers while a batch computes, with its DDIM steps done", async () => {
    const sampler = createClient(Sampler, procs[0]!.address);
    try {
      const policy = { checkpointId: "status-probe", baseModelDir: BASE_MODEL_DIR };
      const stream = (async () => {
        let n = 0;
        for await (const _ of sampler.sample({
          prompts: ["a cat", "a dog"],
          seeds: [1n, 2n],
          steps: 40,
          guidance: 1,
          checkpointId: policy.checkpointId,
          batchSize: 2,
          policy,
        }))
          n += 1;
        return n;
      })();
      let finished = false;
      stream.finally(() => (finished = true)).catch(() => undefined);
      const seen: { done: number; steps: number; active: number; ms: number }[] = [];
      while (!finished) {
        const asked = performance.now();
        const s = await sampler.getStatus({}, { timeoutMs: 1000 });
        seen.push({
          done: s.batchStepsDone,
          steps: s.batchSteps,
          active: s.activeSamples,
          ms: performance.now() - asked,
        });
        await Bun.sleep(10);
      }
      expect(await stream).toBe(2);
      const midway = seen.filter((s) => s.steps === 40 && s.done > 0 && s.done < 40);
      expect(midway.length).toBeGreaterThan(0);
      expect(midway.every((s) => s.active === 2)).toBe(true);
      // Steps only go forward within the batch.
      expect(midway.map((s) => s.done)).toEqual(midway.map((s) => s.done).sort((a, b) => a - b));
      const slowest = Math.max(...seen.map((s) => s.ms));
      console.log(`GetStatus during a 40-step batch: ${seen.length} answers, slowest ${slowest.toFixed(1)} ms`);
      expect(slowest).toBeLessThan(500);
      const idle = await sampler.getStatus({});
      expect([idle.activeSamples, idle.batchSteps, idle.batchStepsDone]).toEqual([0, 0, 0]);
    } finally {
      sampler.close();
    }
  }, 120_000);

  test("a run that failed with its only Sampler resumes on a new fleet", async () => {
    const lonely = await spawnService("sampler", []);
    procs.push(lonely);
    const runId = await startRun(
      "resumed on a new fleet",
      [lonely.address],
      "3 chunks of 2 samples per epoch over 1 Sampler",
    );
    await stopService(lonely, "SIGKILL");
    const failed = await finish(runId);
    expect(failed.status).toBe(RunStatus.FAILED);
    expect(failed.message).toContain("sampling");

    // One Sampler by a DNS name (grpc-js resolves it and balances over what it resolves to).
    const [first, ...others] = procs.slice(0, 3).map((s) => s.address);
    const live = [`dns:///localhost:${first!.split(":").at(-1)}`, ...others];
    const { run } = await trainer.resumeRun({ runId, samplerEndpoints: live }, { timeoutMs: 30_000 });
    expect(run!.samplerEndpoints).toEqual(live);
    expect(await finish(runId)).toEqual({ status: RunStatus.COMPLETED, message: "" });
    expect(await rows(runId)).toEqual(reference);
  }, 300_000);
});
