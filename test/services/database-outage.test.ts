// Postgres goes away under a running Registry process and comes back on the same port: calls
// that need the database answer UNAVAILABLE with a message saying so (the process stays up and
// grpc.health.v1 says NOT_SERVING until the database is back), and once the server returns the same calls succeed without restarting the service;
// a write refused during the outage is retried and lands exactly once. (Row-level buffering of
// the trajectory recorder across an outage is test/db/recorder-outage.test.ts.)
import { afterAll, beforeAll, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { CheckpointKind } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { EmbeddedPostgresServer } from "../../services/lib/db/embedded.ts";
import { Code, createClient, type ServiceClient, ServiceError } from "../../services/lib/grpc/index.ts";
import { tempDataDir } from "../db/postgres.ts";
import { healthCheck } from "../grpc/health.ts";
import { BASE_MODEL_DIR, type ServiceProcess, spawnService, stopService, waitFor } from "./cluster.ts";

// This test stops and restarts the server, so it always runs its own, even when DATABASE_URL is set.
let folder: string;
let server: EmbeddedPostgresServer;
let registryProcess: ServiceProcess;
let registry: ServiceClient<(typeof Registry)["method"]>;

beforeAll(async () => {
  folder = await tempDataDir();
  server = await EmbeddedPostgresServer.start({ dataDir: join(folder, "db"), fast: true });
  await server.ensureDatabase("ddpo");
  registryProcess = await spawnService("registry", [], { DATABASE_URL: server.url("ddpo") });
  registry = createClient(Registry, registryProcess.address);
});

afterAll(async () => {
  registry?.close();
  if (registryProcess) await stopService(registryProcess);
  await server?.stop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

async function failure(p: Promise<unknown>): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ServiceError) return e;
    throw e;
  }
  throw new Error("the call succeeded; expected it to fail");
}

const base = { id: "outage-base", kind: CheckpointKind.BASE, location: BASE_MODEL_DIR };

test("Postgres stopped: UNAVAILABLE with a clear message; back on the same port: the same calls succeed", async () => {
  expect((await registry.listRuns({}, { timeoutMs: 10_000 })).runs).toEqual([]);
  const port = server.port;
  await server.stop();

  const list = await failure(registry.listRuns({}, { timeoutMs: 20_000 }));
  expect(list.code).toBe(Code.UNAVAILABLE);
  expect(list.message).toContain("the database is unreachable");
  expect(list.message).toContain("retry when it is back");
  const write = await failure(registry.registerCheckpoint({ checkpoint: base }, { timeoutMs: 20_000 }));
  expect(write.code).toBe(Code.UNAVAILABLE);
  const lineage = await failure(registry.getLineage({ checkpointId: "outage-base" }, { timeoutMs: 20_000 }));
  expect(lineage.code).toBe(Code.UNAVAILABLE);
  // The process is still there, tells health checkers it cannot serve, and answers what does not
  // need the database.
  expect(registryProcess.proc.exitCode).toBeNull();
  for (const service of ["", "ddpo.v1.Registry"]) {
    await waitFor(
      `NOT_SERVING for '${service}'`,
      async () => ((await healthCheck(registryProcess.address, service)) === "NOT_SERVING" ? true : undefined),
      10_000,
    );
  }
  const invalid = await failure(registry.getCheckpoint({}, { timeoutMs: 5_000 }));
  expect(invalid.code).toBe(Code.INVALID_ARGUMENT);

  server = await EmbeddedPostgresServer.start({ dataDir: join(folder, "db"), port, fast: true });
  // The client retries the refused write, as UNAVAILABLE tells it to; it lands once.
  let created: boolean | undefined;
  for (let attempt = 0; attempt < 50 && created === undefined; attempt++) {
    try {
      created = (await registry.registerCheckpoint({ checkpoint: base }, { timeoutMs: 10_000 })).created;
    } catch (e) {
      if (!(e instanceof ServiceError) || e.code !== Code.UNAVAILABLE) throw e;
      await Bun.sleep(200);
    }
  }
  expect(created).toBe(true);
  await waitFor(
    "SERVING again",
    async () => ((await healthCheck(registryProcess.address, "ddpo.v1.Registry")) === "SERVING" ? true : undefined),
    10_000,
  );
  expect((await registry.registerCheckpoint({ checkpoint: base })).created).toBe(false);
  const got = await registry.getCheckpoint({ id: "outage-base" });
  expect(got.checkpoint?.location).toBe(BASE_MODEL_DIR);
  expect(got.checkpoint?.sha256).toMatch(/^[0-9a-f]{64}$/);
  expect((await registry.getLineage({ checkpointId: "outage-base" })).ancestry.map((c) => c.id)).toEqual([
    "outage-base",
  ]);
  expect(registryProcess.proc.exitCode).toBeNull();
}, 120_000);
