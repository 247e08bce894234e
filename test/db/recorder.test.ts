import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  countRewards,
  countTrajectories,
  createRun,
  getLatentBlob,
  getTrajectory,
  listRewards,
  registerCheckpoint,
} from "../../services/lib/db/queries.ts";
import { latentBlob, latentsFromBlob, TrajectoryRecorder } from "../../services/lib/db/recorder.ts";
import { makeReward, makeTrajectory, startTestPostgres, type TestDatabase, type TestPostgres } from "./postgres.ts";

let server: TestPostgres;
let d: TestDatabase;
beforeAll(async () => {
  server = await startTestPostgres();
  d = await server.freshDatabase();
  await registerCheckpoint(d.db, { id: "base", kind: "base", sha256: "a".repeat(64), size_bytes: 1, location: "/m" });
  for (const id of ["idem", "batch", "blobs", "fk", "bulk"]) await createRun(d.db, { id, name: id });
});
afterAll(async () => {
  await server?.stop();
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("TrajectoryRecorder", () => {
  test("the same rows added twice (and twice within one add) are stored once", async () => {
    const recorder = new TrajectoryRecorder(d.db, { flushIntervalMs: 5 });
    const trajectories = Array.from({ length: 20 }, (_, i) => makeTrajectory("idem", 0, i, "base"));
    const rewards = trajectories.map((_, i) => makeReward("idem", 0, i));
    recorder.add({ trajectories, rewards });
    await recorder.flush();
    recorder.add({ trajectories: [...trajectories, ...trajectories.slice(0, 5)], rewards });
    await recorder.close();
    expect(await countTrajectories(d.db, "idem")).toBe(20);
    expect(await countRewards(d.db, "idem")).toBe(20);
    expect(recorder.counters).toMatchObject({ added: 85, written: 85, inserted: 40 });
    expect(recorder.state.pending.total).toBe(0);
    expect(() => recorder.add({ trajectories })).toThrow("TrajectoryRecorder is closed");

    const stored = await getTrajectory(d.db, { runId: "idem", epoch: 0, sampleIndex: 7 });
    expect(stored).toMatchObject({
      prompt: "prompt 1",
      input_ids: [49406, 107, 49407],
      seed: 2 ** 40 + 7,
      timesteps: [750, 500, 250, 0],
      log_probs: [-1.5, -1.25, -1, -0.5],
      reward: 7,
      checkpoint_id: "base",
    });
    expect(await listRewards(d.db, { runId: "idem", epoch: 0, sampleIndex: 7 })).toMatchObject([
      { reward_name: "jpeg_compressibility", value: -7, weight: 1, source: "127.0.0.1:50052" },
    ]);
  });

  test("add() returns at once; rows go out in batches of batchRows, the remainder after the interval", async () => {
    const recorder = new TrajectoryRecorder(d.db, { batchRows: 10, flushIntervalMs: 60_000 });
    const t0 = performance.now();
    for (let i = 0; i < 25; i++) recorder.add({ trajectories: [makeTrajectory("batch", 0, i, "base")] });
    expect(performance.now() - t0).toBeLessThan(50);
    expect(recorder.counters.written).toBe(0);
    for (let i = 0; i < 100 && recorder.counters.written < 20; i++) await sleep(10);
    await sleep(50);
    // Two full batches are written; five rows wait for the (long) interval or a flush.
    expect(recorder.counters).toMatchObject({ written: 20, batches: 2 });
    expect(recorder.state.pending).toEqual({ trajectories: 5, rewards: 0, latents: 0, total: 5 });
    expect(await countTrajectories(d.db, "batch")).toBe(20);
    await recorder.flush();
    expect(recorder.counters).toMatchObject({ written: 25, batches: 3 });
    expect(await countTrajectories(d.db, "batch")).toBe(25);
    expect(recorder.counters.rowsPerSecond).toBeGreaterThan(0);
    await recorder.close();
  });

  test("without batchRows reached, the interval timer writes pending rows", async () => {
    const recorder = new TrajectoryRecorder(d.db, { batchRows: 1000, flushIntervalMs: 20 });
    recorder.add({ trajectories: [makeTrajectory("batch", 1, 0, "base")] });
    for (let i = 0; i < 100 && recorder.counters.written < 1; i++) await sleep(10);
    expect(await countTrajectories(d.db, "batch", 1)).toBe(1);
    await recorder.close();
  });

  test("latents are content-addressed: shared blobs stored once, bytes round-trip as float32", async () => {
    const recorder = new TrajectoryRecorder(d.db);
    const shape = [5, 3, 4, 4]; // [T+1, C, H, W]
    const latents = Float32Array.from({ length: 5 * 3 * 4 * 4 }, (_, i) => Math.sin(i) * 1e3);
    const blob = latentBlob(latents, shape);
    const twin = latentBlob(latents.slice(), shape);
    expect(twin.sha256).toBe(blob.sha256);
    // Later mutation of the caller's array does not change what is recorded.
    latents[0] = 42;
    const png = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0, 255]);
    const trajectories = [0, 1].map((i) => ({
      ...makeTrajectory("blobs", 0, i, "base"),
      latents_sha256: blob.sha256,
      image_png: png,
    }));
    recorder.add({ latents: [blob, twin], trajectories });
    recorder.add({ latents: [blob] });
    await recorder.close();
    const stored = await getLatentBlob(d.db, blob.sha256);
    expect(stored?.shape).toEqual(shape);
    const back = latentsFromBlob(stored!);
    expect(back[0]).toBe(0);
    expect(Array.from(back.subarray(1))).toEqual(Array.from(Float32Array.from(latents.subarray(1))));
    const count = await d.db
      .selectFrom("latent_blobs")
      .select((eb) => eb.fn.countAll<number>().as("n"))
      .executeTakeFirstOrThrow();
    expect(count.n).toBe(1);
    const stored1 = await getTrajectory(d.db, { runId: "blobs", epoch: 0, sampleIndex: 1 });
    expect(stored1?.latents_sha256).toBe(blob.sha256);
    expect(Buffer.compare(stored1!.image_png!, png)).toBe(0);
    expect(() => latentBlob(latents, [2, 2])).toThrow("latents hold 240 values, shape [2, 2] needs 4");
  });

  test("a row the database refuses is kept and retried, not dropped: it lands once its checkpoint exists", async () => {
    const recorder = new TrajectoryRecorder(d.db, { flushIntervalMs: 1, retryInitialMs: 10, retryMaxMs: 20 });
    recorder.add({ trajectories: [makeTrajectory("fk", 0, 0, "not-yet-registered")] });
    for (let i = 0; i < 200 && recorder.counters.failures < 2; i++) await sleep(5);
    expect(recorder.state.lastError).toMatch(/foreign key/);
    expect(recorder.state.unavailable).toBe(false);
    expect(recorder.state.pending.total).toBe(1);
    await expect(recorder.flush(30)).rejects.toThrow(/flush timed out after 30 ms with 1 rows pending/);
    await registerCheckpoint(d.db, {
      id: "not-yet-registered",
      kind: "base",
      sha256: "b".repeat(64),
      size_bytes: 1,
      location: "/m",
    });
    await recorder.close(5_000);
    expect(recorder.state.lastError).toBeNull();
    expect(await countTrajectories(d.db, "fk")).toBe(1);
  });

  test("throughput: 5000 trajectories with rewards, counted exactly", async () => {
    const recorder = new TrajectoryRecorder(d.db, { batchRows: 500 });
    const t0 = performance.now();
    for (let i = 0; i < 5000; i += 50) {
      const idx = Array.from({ length: 50 }, (_, k) => i + k);
      recorder.add({
        trajectories: idx.map((j) => makeTrajectory("bulk", 0, j, "base")),
        rewards: idx.map((j) => makeReward("bulk", 0, j)),
      });
    }
    const addMs = performance.now() - t0;
    await recorder.close();
    const totalS = (performance.now() - t0) / 1000;
    expect(await countTrajectories(d.db, "bulk")).toBe(5000);
    expect(await countRewards(d.db, "bulk")).toBe(5000);
    const c = recorder.counters;
    expect(c.inserted).toBe(10_000);
    console.log(
      `recorder: 10000 rows in ${totalS.toFixed(2)} s (${(10_000 / totalS).toFixed(0)} rows/s overall, ` +
        `${c.rowsPerSecond.toFixed(0)} rows/s while writing, ${c.batches} batches); add() total ${addMs.toFixed(1)} ms`,
    );
  });
});
