// Postgres stops in the middle of recording and comes back: the recorder holds the rows, reports
// the outage, retries, and once the server returns every row is there exactly once.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { rm } from "node:fs/promises";
import { join } from "node:path";
import { type DatabaseHandle, migrate, openDatabase } from "../../services/lib/db/database.ts";
import { EmbeddedPostgresServer } from "../../services/lib/db/embedded.ts";
import { countRewards, countTrajectories, createRun, registerCheckpoint } from "../../services/lib/db/queries.ts";
import { TrajectoryRecorder } from "../../services/lib/db/recorder.ts";
import { makeReward, makeTrajectory, tempDataDir } from "./postgres.ts";

// This test stops and restarts the server, so it always runs its own, even when DATABASE_URL is set.
let folder: string;
let server: EmbeddedPostgresServer;
let handle: DatabaseHandle;
beforeAll(async () => {
  folder = await tempDataDir();
  server = await EmbeddedPostgresServer.start({ dataDir: join(folder, "db"), fast: true });
  await server.ensureDatabase("ddpo");
  handle = openDatabase({ url: server.url("ddpo"), connectionTimeoutMs: 1_000 });
  await migrate(handle.db);
  await registerCheckpoint(handle.db, {
    id: "base",
    kind: "base",
    sha256: "a".repeat(64),
    size_bytes: 1,
    location: "/m",
  });
  await createRun(handle.db, { id: "outage", name: "outage" });
});
afterAll(async () => {
  await handle?.close();
  await server?.stop();
  if (folder) await rm(folder, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

test("server stopped mid-recording: rows buffered, server restarted, all rows present once", async () => {
  const recorder = new TrajectoryRecorder(handle.db, {
    batchRows: 40,
    flushIntervalMs: 5,
    retryInitialMs: 20,
    retryMaxMs: 200,
  });
  const STEPS = 40;
  const PER_STEP = 15;
  let stopping: Promise<void> | null = null;
  for (let step = 0; step < STEPS; step++) {
    const idx = Array.from({ length: PER_STEP }, (_, k) => step * PER_STEP + k);
    recorder.add({
      trajectories: idx.map((i) => makeTrajectory("outage", 0, i, "base")),
      rewards: idx.map((i) => makeReward("outage", 0, i)),
    });
    // Stop the server while rows are still arriving and batches are in flight.
    if (step === 10) stopping = server.stop();
    await sleep(5);
  }
  await stopping;
  for (let i = 0; i < 200 && !recorder.state.unavailable; i++) await sleep(10);

  const during = recorder.state;
  expect(during.unavailable).toBe(true);
  expect(during.lastError).toBeTruthy();
  expect(during.pending.trajectories).toBeGreaterThan(0);
  expect(during.pending.rewards).toBeGreaterThan(0);
  const failuresBefore = recorder.counters.failures;
  await sleep(300);
  expect(recorder.counters.failures).toBeGreaterThan(failuresBefore);
  await expect(recorder.flush(50)).rejects.toThrow(/flush timed out after 50 ms with \d+ rows pending \(last error: /);

  // Same folder, same port: the pool reconnects on its own.
  server = await EmbeddedPostgresServer.start({ dataDir: server.dataDir, port: server.port, fast: true });
  expect(server.initialised).toBe(false);
  await recorder.close(30_000);

  expect(recorder.state).toMatchObject({ unavailable: false, lastError: null });
  expect(recorder.state.pending.total).toBe(0);
  expect(await countTrajectories(handle.db, "outage")).toBe(STEPS * PER_STEP);
  expect(await countRewards(handle.db, "outage")).toBe(STEPS * PER_STEP);
  expect(recorder.counters.added).toBe(2 * STEPS * PER_STEP);
  console.log(
    `outage: ${during.pending.total} rows held while down, ${recorder.counters.failures} failed attempts, ` +
      `last error "${during.lastError}"`,
  );

  // Re-sending everything after the outage changes nothing.
  const again = new TrajectoryRecorder(handle.db);
  const all = Array.from({ length: STEPS * PER_STEP }, (_, i) => i);
  again.add({
    trajectories: all.map((i) => makeTrajectory("outage", 0, i, "base")),
    rewards: all.map((i) => makeReward("outage", 0, i)),
  });
  await again.close();
  expect(again.counters.inserted).toBe(0);
  expect(await countTrajectories(handle.db, "outage")).toBe(STEPS * PER_STEP);
});
