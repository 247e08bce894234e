// The Trainer process's memory across sequential runs: each run's engine worker must free its
// native engine memory (model, adapters, optimizer moments, arenas) when the run ends. A
// terminated worker thread does not return malloc'd memory, and the process grew by the size of
// every run's engine until the Trainer was restarted. (bench/trainer-memory.ts: 10 runs.)
import { expect, test } from "bun:test";
import { residentMiB } from "../../services/cli/cluster.ts";
import { RunStatus } from "../../services/gen/ddpo/v1/common_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { BASE_MODEL_DIR, TINY_RUN_CONFIG as CONFIG, serviceTestEnvironment, spawnFourServices } from "./cluster.ts";

const svc = serviceTestEnvironment("ddpo-memory-");

test("sequential runs do not grow the Trainer process by a run's engine each", async () => {
  const { trainer: trainerProc } = await spawnFourServices((await svc.pg.freshDatabase()).url, svc.dataDir, svc.procs);
  const trainer = createClient(Trainer, trainerProc.address);
  // Full fine-tuning: each run's worker holds the whole UNet, its AdamW moments and gradients.
  const config = { ...CONFIG, finetune: { case: "full" as const, value: {} } };
  const oneRun = async (i: number) => {
    const { run } = await trainer.startRun(
      { name: `memory ${i}`, baseModelDir: BASE_MODEL_DIR, promptSet: "animals", epochs: 1, config },
      { timeoutMs: 60_000 },
    );
    let status: RunStatus | undefined;
    for await (const e of trainer.watchRun({ runId: run!.id }, { timeoutMs: 120_000 })) {
      if (e.event.case === "status") status = e.event.value.status;
    }
    expect(status).toBe(RunStatus.COMPLETED);
    // The worker is closed in the background once the run ends.
    await Bun.sleep(500);
  };
  await oneRun(0); // warm-up: allocator pools, the gRPC and svc.database clients
  const runs = 4;
  const before = residentMiB(trainerProc.proc.pid);
  for (let i = 1; i <= runs; i++) await oneRun(i);
  const perRun = (residentMiB(trainerProc.proc.pid) - before) / runs;
  console.error(`trainer RSS: ${before.toFixed(0)} MiB after the warm-up run, ${perRun.toFixed(1)} MiB per run after`);
  // Measured: ~118 MiB per run when each run's worker thread was terminated with its engine open,
  // ~5-15 MiB with the engine closed but a new thread per run, ~5 MiB with the workers reused.
  expect(perRun).toBeLessThan(30);
  trainer.close();
}, 300_000);
