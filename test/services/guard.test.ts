// The over-optimisation guard across real processes (Sampler, Rewarder, Registry, Trainer) over
// loopback with a real Postgres: a run with a KL penalty and a held-out evaluation records
// kl_to_reference per epoch, evaluates the starting model and each epoch's policy (rewards from the
// Rewarder, the content check in the Trainer), streams the evaluations in WatchRun and serves them
// through the Registry's GetRun; a stop rule that the first evaluation breaks stops the run early.
import { describe, expect, test } from "bun:test";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Registry } from "../../services/gen/ddpo/v1/registry_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { getRun, listEpochs } from "../../services/lib/db/queries.ts";
import { CONTENT_ALIGNMENT, CONTENT_TOP1 } from "../../services/lib/ddpo/evaluation.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { BASE_MODEL_DIR, serviceTestEnvironment, spawnFourServices, TINY_RUN_CONFIG } from "./cluster.ts";

const svc = serviceTestEnvironment("ddpo-guard-");

describe("the over-optimisation guard across the services", () => {
  test("KL to the reference and held-out evaluations recorded, streamed and served; an early stop", async () => {
    const { registry, trainer: trainerProc } = await spawnFourServices(svc.database.url, svc.dataDir, svc.procs);
    const client = createClient(Trainer, trainerProc.address);
    const registryClient = createClient(Registry, registry.address);
    const evaluation = {
      prompts: ["tea cup", "red apple"],
      seeds: [5n, 6n],
      every: 1,
      bestMetric: "jpeg_compressibility",
    };
    const start = async (name: string, config: object, epochs = 2) =>
      (
        await client.startRun(
          { name, baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs, config },
          { timeoutMs: 60_000 },
        )
      ).run!.id;
    const watch = async (runId: string) => {
      const events = [];
      for await (const e of client.watchRun({ runId }, { timeoutMs: 300_000 })) events.push(e);
      return events;
    };

    const runId = await start("guarded", { ...TINY_RUN_CONFIG, klCoefficient: 0.1, evaluation });
    const events = await watch(runId);
    const last = events.at(-1)!;
    expect(last.event.case === "status" && last.event.value.status).toBe(RunStatus.COMPLETED);
    // Evaluated before epoch 1 and after each epoch, each streamed before the epoch's end is told.
    const evaluated = events.flatMap((e) => (e.event.case === "evaluation" ? [e.event.value] : []));
    expect(evaluated.map((r) => r.epoch)).toEqual([0, 1, 2]);
    const metrics = [CONTENT_ALIGNMENT, CONTENT_TOP1, "jpeg_compressibility"];
    for (const r of evaluated) {
      expect(r.metrics.map((m) => [m.metric, m.images])).toEqual(metrics.map((m) => [m, 4]));
      const top1 = r.metrics.find((m) => m.metric === CONTENT_TOP1)!;
      expect(top1.mean >= 0 && top1.mean <= 1).toBe(true);
    }
    const { epochs, evaluations } = await registryClient.getRun({ runId });
    // The same rows aggregated again (Postgres's avg may differ in the last bit between queries).
    expect(evaluations.map((r) => [r.epoch, r.metrics.map((m) => [m.metric, m.images, m.min, m.max])])).toEqual(
      evaluated.map((r) => [r.epoch, r.metrics.map((m) => [m.metric, m.images, m.min, m.max])]),
    );
    evaluations.forEach((r, i) => {
      r.metrics.forEach((m, j) => {
        expect(m.mean).toBeCloseTo(evaluated[i]!.metrics[j]!.mean, 12);
      });
    });
    // KL to the reference: 0 before the first step, measured each epoch, in Postgres too.
    expect(epochs.map((e) => e.klToReference !== undefined && e.klToReference >= 0)).toEqual([true, true]);
    expect((await listEpochs(svc.database.db, runId)).map((e) => e.kl_to_reference)).toEqual(
      epochs.map((e) => e.klToReference!),
    );

    // The best evaluated policy by jpeg_compressibility (the earliest among ties), marked in the
    // run and, when the run made it, in the lineage.
    const jpegMeans = evaluated.map((r) => r.metrics.find((m) => m.metric === "jpeg_compressibility")!.mean);
    const bestEpoch = jpegMeans.indexOf(Math.max(...jpegMeans));
    const { run } = await registryClient.getRun({ runId });
    const bestId = bestEpoch === 0 ? run!.baseCheckpointId : epochs[bestEpoch - 1]!.checkpointId;
    console.log(`jpeg by evaluation: ${jpegMeans.join(", ")}; best epoch ${bestEpoch}`);
    expect([run!.bestCheckpointId, run!.bestMetric]).toEqual([bestId, "jpeg_compressibility"]);
    const { ancestry } = await registryClient.getLineage({ checkpointId: epochs.at(-1)!.checkpointId });
    expect(ancestry.filter((c) => c.bestOfRunBy === "jpeg_compressibility").map((c) => c.id)).toEqual(
      bestEpoch === 0 ? [] : [bestId],
    );

    // A stop rule the first trained epoch breaks (the run is deterministic: the same seeds give
    // the same figures): the content check's alignment may not fall by 1% of its start.
    const alignment = evaluated.map((r) => r.metrics.find((m) => m.metric === CONTENT_ALIGNMENT)!.mean);
    console.log(`alignment by evaluation: ${alignment.map((a) => a.toFixed(5)).join(", ")}`);
    const stopped = await start(
      "stopped early",
      {
        ...TINY_RUN_CONFIG,
        lr: 3e-2, // moves the policy far in one step
        evaluation: { ...evaluation, stopMetric: CONTENT_ALIGNMENT, stopFraction: 0.99 },
      },
      5,
    );
    const stopEvents = await watch(stopped);
    const end = stopEvents.at(-1)!;
    expect(end.event.case).toBe("status");
    let stopEpoch = 0;
    if (end.event.case === "status") {
      console.log(`early stop: ${end.event.value.message}`);
      expect(end.event.value.status).toBe(RunStatus.STOPPED);
      const m = end.event.value.message.match(
        /^stopped early: content:clip_alignment fell to (\S+) at epoch (\d+), below 0.99 x its start (\S+)/,
      );
      expect(m).not.toBeNull();
      // The figure that broke the rule fell by more than 1% of the start's magnitude.
      const [fell, start0] = [Number(m![1]), Number(m![3])];
      expect(fell).toBeLessThan(start0 - 0.01 * Math.abs(start0));
      stopEpoch = Number(m![2]);
    }
    // The run stopped at that epoch, before its budget of five.
    expect(stopEpoch).toBeGreaterThanOrEqual(1);
    expect(stopEpoch).toBeLessThan(5);
    expect((await listEpochs(svc.database.db, stopped)).map((e) => e.epoch)).toEqual(
      Array.from({ length: stopEpoch }, (_, i) => i + 1),
    );
    expect((await getRun(svc.database.db, stopped))!.error).toMatch(/^stopped early/);
    client.close();
    registryClient.close();
  }, 600_000);
});
