// Real service processes over loopback for the integration tests: each service is spawned with
// `bun run services/<name>/main.ts`, announces its address as a JSON line, and is killed
// (gracefully or with SIGKILL) by the test.
import { afterAll, beforeAll } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Subprocess } from "bun";
import { DdpoLoss } from "../../services/gen/ddpo/v1/run_pb.ts";
import { startTestPostgres, type TestDatabase, type TestPostgres } from "../db/postgres.ts";

export interface ServiceProcess {
  name: string;
  address: string;
  proc: Subprocess<"ignore", "pipe", "pipe">;
  /** Everything it wrote to stderr so far (for failure messages). */
  stderr(): string;
}

const ROOT = new URL("../../", import.meta.url).pathname;

/** The shipped base model every run test starts from. */
export const BASE_MODEL_DIR = new URL("../../models/emoji-base", import.meta.url).pathname;

/** A DdpoConfig message small enough for CI: 4 samples x 3 DDIM steps per epoch, no guidance. */
export const TINY_RUN_CONFIG = {
  seed: 11,
  loss: DdpoLoss.IS,
  sampleBatchSize: 2,
  sampleBatchesPerEpoch: 2,
  steps: 3,
  guidance: 1,
  trainBatchSize: 2,
  gradientAccumulation: 2,
  lr: 1e-4,
  finetune: { case: "lora" as const, value: { rank: 2, alpha: 2 } },
  advantages: { case: "batchStatistics" as const, value: {} },
};

/** Polls fn every 100 ms until it returns a value; throws naming `what` after timeoutMs. */
export async function waitFor<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 120_000): Promise<T> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    const v = await fn();
    if (v !== undefined) return v;
    await Bun.sleep(100);
  }
  throw new Error(`timed out waiting for ${what}`);
}

export async function spawnService(
  name: "sampler" | "rewarder" | "registry" | "trainer",
  args: string[],
  env: Record<string, string> = {},
  timeoutMs = 60_000,
): Promise<ServiceProcess> {
  const proc = Bun.spawn([process.execPath, "run", `services/${name}/main.ts`, ...args], {
    cwd: ROOT,
    env: { ...process.env, ...env },
    stdin: "ignore",
    stdout: "pipe",
    stderr: "pipe",
  });
  const announced = await readAnnouncement(proc, name, timeoutMs);
  return { name, address: announced.address, proc, stderr: announced.stderr };
}

/**
 * The four services as separate processes over one database (one Sampler, one Rewarder), the
 * Trainer's run folders in `dataDir`, which the Registry also serves; every process is pushed
 * onto `procs` as soon as it runs, so the caller's clean-up kills it.
 */
export async function spawnFourServices(databaseUrl: string, dataDir: string, procs: ServiceProcess[]) {
  const env = { DATABASE_URL: databaseUrl };
  const [sampler, rewarder, registry] = await Promise.all([
    spawnService("sampler", []),
    spawnService("rewarder", []),
    spawnService("registry", ["--data-dir", dataDir], env),
  ]);
  procs.push(sampler, rewarder, registry);
  const trainer = await spawnTrainer(
    { registry: registry.address, rewarder: rewarder.address, samplers: sampler.address },
    dataDir,
    env,
  );
  procs.push(trainer);
  return { sampler, rewarder, registry, trainer };
}

/**
 * A Trainer calling the given Registry, Rewarder and (when named) Sampler target, its run folders
 * in `dataDir`; `extra` flags go last.
 */
export function spawnTrainer(
  to: { registry: string; rewarder: string; samplers?: string },
  dataDir: string,
  env: Record<string, string>,
  extra: string[] = [],
): Promise<ServiceProcess> {
  const samplers = to.samplers === undefined ? [] : ["--samplers", to.samplers];
  return spawnService(
    "trainer",
    ["--registry", to.registry, "--rewarder", to.rewarder, ...samplers, "--data-dir", dataDir, ...extra],
    env,
  );
}

export interface ServiceTestEnvironment {
  readonly pg: TestPostgres;
  readonly database: TestDatabase;
  readonly dataDir: string;
  /** Every process the file spawns goes here, so the clean-up kills it. */
  readonly procs: ServiceProcess[];
}

/**
 * What a services test file shares: before its tests the test Postgres with a fresh database and a
 * temporary data folder (`prefix` names it); after them every process in `procs` SIGKILLed,
 * Postgres stopped and the folder removed. Read the fields inside tests and hooks.
 */
export function serviceTestEnvironment(prefix: string): ServiceTestEnvironment {
  let pg: TestPostgres | undefined;
  let database: TestDatabase | undefined;
  let dataDir: string | undefined;
  const procs: ServiceProcess[] = [];
  const ready = <T>(v: T | undefined, what: string): T => {
    if (v === undefined) throw new Error(`serviceTestEnvironment: ${what} is read before beforeAll ran`);
    return v;
  };
  beforeAll(async () => {
    pg = await startTestPostgres();
    database = await pg.freshDatabase();
    dataDir = mkdtempSync(join(tmpdir(), prefix));
  });
  afterAll(async () => {
    for (const p of procs) p.proc.kill("SIGKILL");
    await pg?.stop();
    if (dataDir) rmSync(dataDir, { recursive: true, force: true });
  });
  return {
    get pg() {
      return ready(pg, "pg");
    },
    get database() {
      return ready(database, "database");
    },
    get dataDir() {
      return ready(dataDir, "dataDir");
    },
    procs,
  };
}

/**
 * Collects a child's stderr and waits for the JSON line `{"address": ...}` it prints on stdout
 * once listening; kills it (SIGKILL) and throws with its stderr when none comes in time.
 */
export async function readAnnouncement(
  proc: Subprocess<"ignore", "pipe", "pipe">,
  what: string,
  timeoutMs: number,
): Promise<{ address: string; stderr: () => string }> {
  let err = "";
  (async () => {
    const decoder = new TextDecoder();
    for await (const chunk of proc.stderr) err += decoder.decode(chunk);
  })();
  const reader = proc.stdout.getReader();
  const decoder = new TextDecoder();
  let buffered = "";
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const { value, done } = await Promise.race([
      reader.read(),
      Bun.sleep(deadline - Date.now()).then(() => ({ value: undefined, done: true })),
    ]);
    if (done) break;
    buffered += decoder.decode(value);
    const line = buffered.split("\n").find((l) => l.startsWith("{"));
    if (line) {
      reader.releaseLock();
      return { address: (JSON.parse(line) as { address: string }).address, stderr: () => err };
    }
  }
  proc.kill("SIGKILL");
  throw new Error(`${what} did not announce its address: ${err}`);
}

export async function stopService(s: ServiceProcess, signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
  s.proc.kill(signal);
  await s.proc.exited;
}
