// The services stay responsive while their engines compute, and runs can be stopped and resumed:
// - Sampler: during a long Sample stream, grpc.health.v1 and GetStatus answer before the stream
//   ends; cancelling the stream stops the work (no call active, the next Sample is served).
// - Trainer: during a run, health answers; StopRun (immediate: the epoch in flight is abandoned)
//   leaves the run STOPPED at a checkpoint; ResumeRun with a larger budget completes it, and every
//   trajectory and reward is recorded exactly once, with lineage back to the base model.
import { describe, expect, test } from "bun:test";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Sampler } from "../../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { checkpointLineage, countRewards, countTrajectories, listEpochs } from "../../services/lib/db/queries.ts";
import { Code, createClient, type ServiceError } from "../../services/lib/grpc/index.ts";
import { healthCheck } from "../grpc/health.ts";
import {
  BASE_MODEL_DIR,
  TINY_RUN_CONFIG as CONFIG,
  serviceTestEnvironment,
  spawnFourServices,
  spawnService,
  waitFor,
} from "./cluster.ts";

const svc = serviceTestEnvironment("ddpo-control-");

describe("Sampler", () => {
  test("health and GetStatus answer during a long Sample stream; cancelling it stops the work", async () => {
    const proc = await spawnService("sampler", []);
    svc.procs.push(proc);
    const sampler = createClient(Sampler, proc.address);
    await sampler.loadCheckpoint({ checkpointId: "base", baseModelDir: BASE_MODEL_DIR }, { timeoutMs: 60_000 });
    // 8 prompts one per engine batch, 30 guided steps each: several seconds of engine work.
    const n = 8;
    const request = {
      prompts: Array.from({ length: n }, (_, i) => (i % 2 ? "tiger" : "cat face")),
      seeds: Array.from({ length: n }, (_, i) => BigInt(100 + i)),
      steps: 30,
      guidance: 3,
      checkpointId: "base",
      batchSize: 1,
    };
    const abort = new AbortController();
    let received = 0;
    let streamEnded = false;
    const stream = (async () => {
      try {
        for await (const _ of sampler.sample(request, { signal: abort.signal, timeoutMs: 300_000 })) received += 1;
      } catch {
        // cancelled
      }
      streamEnded = true;
    })();
    await waitFor("the first trajectory", async () => (received >= 1 ? true : undefined));
    expect(await healthCheck(proc.address, "")).toBe("SERVING");
    expect(await healthCheck(proc.address, "ddpo.v1.Sampler")).toBe("SERVING");
    const busy = await sampler.getStatus({});
    expect(busy.checkpointId).toBe("base");
    expect(busy.activeSamples).toBeGreaterThan(0);
    expect(streamEnded).toBe(false); // they answered while the engine was still sampling
    abort.abort();
    await stream;
    expect(received).toBeLessThan(n);
    // The handler sees the cancel at its next batch boundary and stops.
    await waitFor("the cancelled call to end", async () =>
      (await sampler.getStatus({})).activeSamples === 0 ? true : undefined,
    );
    const again = [];
    for await (const t of sampler.sample({ ...request, prompts: ["frog"], seeds: [7n] }, { timeoutMs: 60_000 }))
      again.push(t);
    expect(again.length).toBe(1);
    expect(proc.proc.exitCode).toBeNull();
    sampler.close();
  }, 300_000);
});

describe("Sampler inside one engine batch", () => {
  test("a deadline stops the batch within a step; GetStatus answers meanwhile; LoadCheckpoint is idempotent", async () => {
    const proc = await spawnService("sampler", []);
    svc.procs.push(proc);
    const sampler = createClient(Sampler, proc.address);
    await sampler.loadCheckpoint({ checkpointId: "base", baseModelDir: BASE_MODEL_DIR }, { timeoutMs: 60_000 });
    const again = await sampler.loadCheckpoint({ checkpointId: "base", baseModelDir: BASE_MODEL_DIR });
    expect(again.loadSeconds).toBe(0);
    // One engine batch of 1000 guided steps: minutes of work the old Sampler only checked for
    // cancellation after the whole batch.
    const request = { prompts: ["cat face", "tiger"], seeds: [1n, 2n], steps: 1000, guidance: 3, checkpointId: "base" };
    const started = performance.now();
    const call = (async () => {
      try {
        for await (const _ of sampler.sample(request, { timeoutMs: 1500 }));
      } catch (e) {
        return e as ServiceError;
      }
      return null;
    })();
    await waitFor("the batch to start", async () =>
      (await sampler.getStatus({})).activeSamples > 0 ? true : undefined,
    );
    const asked = performance.now();
    const status = await sampler.getStatus({}, { timeoutMs: 2_000 });
    expect(performance.now() - asked).toBeLessThan(1_000);
    expect([status.checkpointId, status.channels, status.imageSize]).toEqual(["base", 3, 32]);
    expect((await call)?.code).toBe(Code.DEADLINE_EXCEEDED);
    await waitFor("the worker to give up the batch", async () =>
      (await sampler.getStatus({})).activeSamples === 0 ? true : undefined,
    );
    const seconds = (performance.now() - started) / 1000;
    console.error(`1000-step batch with a 1.5 s deadline: idle again after ${seconds.toFixed(1)} s`);
    expect(seconds).toBeLessThan(6);
    // The engine is free for the next call.
    const next = [];
    for await (const t of sampler.sample({ ...request, steps: 2 }, { timeoutMs: 30_000 })) next.push(t);
    expect(next).toHaveLength(2);
    sampler.close();
  }, 120_000);
});

describe("Trainer", () => {
  test("StopRun (immediate) mid-run, then ResumeRun with a larger budget: completed, every row once", async () => {
    const { registry, trainer: trainerProc } = await spawnFourServices(svc.database.url, svc.dataDir, svc.procs);
    const trainer = createClient(Trainer, trainerProc.address);
    const registryClient = createClient(Registry, registry.address);
    const { run } = await trainer.startRun(
      { name: "stop and resume", baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs: 20, config: CONFIG },
      { timeoutMs: 60_000 },
    );
    const runId = run!.id;
    await waitFor("epoch 1", async () => ((await listEpochs(svc.database.db, runId)).length >= 1 ? true : undefined));
    expect(await healthCheck(trainerProc.address, "ddpo.v1.Trainer")).toBe("SERVING");

    const stopped = await trainer.stopRun({ runId, immediate: true }, { timeoutMs: 120_000 });
    expect(stopped.run?.status).toBe(RunStatus.STOPPED);
    const done = (await listEpochs(svc.database.db, runId)).length;
    expect(done).toBeGreaterThanOrEqual(1);
    expect(done).toBeLessThan(20);
    // Nothing moves while it is stopped.
    await Bun.sleep(1500);
    expect((await listEpochs(svc.database.db, runId)).length).toBe(done);
    expect((await registryClient.getRun({ runId })).run?.status).toBe(RunStatus.STOPPED);

    const total = done + 2;
    const resumed = await trainer.resumeRun({ runId, epochs: total }, { timeoutMs: 60_000 });
    // The response already shows the resumed run and its new budget (persisted for a restart).
    expect([RunStatus.PENDING, RunStatus.RUNNING]).toContain(resumed.run!.status);
    expect(resumed.run!.epochs).toBe(total);
    const events = [];
    for await (const e of trainer.watchRun({ runId }, { timeoutMs: 300_000 })) events.push(e);
    const last = events.at(-1)!;
    expect(last.event.case === "status" && last.event.value.status).toBe(RunStatus.COMPLETED);

    const perEpoch = CONFIG.sampleBatchSize * CONFIG.sampleBatchesPerEpoch;
    const recorded = await listEpochs(svc.database.db, runId);
    expect(recorded.map((e) => e.epoch)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect(await countTrajectories(svc.database.db, runId)).toBe(total * perEpoch);
    expect(await countRewards(svc.database.db, runId)).toBe(total * perEpoch);
    const lineage = await checkpointLineage(svc.database.db, recorded.at(-1)!.checkpoint_id!);
    expect(lineage.map((c) => c.epoch)).toEqual([...Array.from({ length: total }, (_, i) => total - i), null]);
    expect(lineage.at(-1)!.kind).toBe("base");
    expect(lineage[0]!.kind).toBe("lora");
    trainer.close();
    registryClient.close();
  }, 600_000);
});
