// Trainer memory across runs: `ddpo up` in a temporary folder, then --runs sequential one-epoch
// runs of the same small config (4 samples x 3 DDIM steps, full fine-tuning of the shipped model,
// so each run's engine holds the whole UNet with its AdamW moments and gradients). After each run
// ends, the Trainer process's resident set size (VmRSS).
// Figures:
//   rss_mib            the Trainer's RSS after each run, MiB (run 1 includes first-use allocations).
//   growth_mib_per_run (RSS after the last run - RSS after the first) / (runs - 1): what each run
//                      leaves behind. A run's engine is ~100 MiB here; growth near 0 means it is freed.
//
//   npm run bench -- trainer-memory [--json] [--runs 10]
import { chmodSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Cluster, residentMiB, startCluster } from "../services/cli/cluster.ts";
import { RunStatus } from "../services/gen/ddpo/v1/common_pb.ts";
import { DdpoLoss } from "../services/gen/ddpo/v1/run_pb.ts";
import { Trainer } from "../services/gen/ddpo/v1/trainer_pb.ts";
import { createClient } from "../services/lib/grpc/index.ts";
import { flagValue } from "./flags.ts";

const CONFIG = {
  seed: 5,
  loss: DdpoLoss.IS,
  sampleBatchSize: 2,
  sampleBatchesPerEpoch: 2,
  steps: 3,
  guidance: 1,
  trainBatchSize: 2,
  gradientAccumulation: 2,
  lr: 1e-5,
  finetune: { case: "full" as const, value: {} },
  advantages: { case: "batchStatistics" as const, value: {} },
};

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const runs = Number(flagValue(args, "--runs", "10"));
  if (!(Number.isInteger(runs) && runs >= 2)) throw new Error("--runs must be an integer >= 2");
  const tmp = mkdtempSync(join(tmpdir(), "ddpo-bench-memory-"));
  chmodSync(tmp, 0o755); // postgres, unprivileged when we are root, must enter it
  let cluster: Cluster | null = null;
  try {
    console.error(`[trainer-memory] starting Postgres and the four services in ${tmp} ...`);
    cluster = await startCluster({ dataDir: join(tmp, "data"), log: () => undefined });
    const trainer = createClient(Trainer, cluster.addresses.trainer);
    const rss: number[] = [];
    for (let i = 1; i <= runs; i++) {
      const { run } = await trainer.startRun(
        {
          name: `memory ${i}`,
          baseModelDir: join(import.meta.dir, "..", "models", "emoji-base"),
          promptSet: "animals",
          epochs: 1,
          config: CONFIG,
        },
        { timeoutMs: 60_000 },
      );
      let status: RunStatus | undefined;
      for await (const e of trainer.watchRun({ runId: run!.id }, { timeoutMs: 300_000 })) {
        if (e.event.case === "status") status = e.event.value.status;
      }
      if (status !== RunStatus.COMPLETED) throw new Error(`run ${i} ended ${RunStatus[status ?? 0]}`);
      await Bun.sleep(500); // the engine worker is released in the background
      rss.push(residentMiB(cluster.pid("trainer")!));
      console.error(`[trainer-memory] run ${i}: Trainer RSS ${rss.at(-1)!.toFixed(1)} MiB`);
    }
    trainer.close();
    const result = { runs, rss_mib: rss, growth_mib_per_run: (rss.at(-1)! - rss[0]!) / (runs - 1) };
    console.log(`rss_mib             ${rss.map((r) => r.toFixed(1)).join(", ")}`);
    console.log(`growth_mib_per_run  ${result.growth_mib_per_run.toFixed(2)}`);
    if (json) console.log(JSON.stringify(result));
  } finally {
    await cluster?.stop();
    rmSync(tmp, { recursive: true, force: true });
  }
}
