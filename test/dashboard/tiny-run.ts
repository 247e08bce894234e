// A real database holding real runs for the dashboard tests: embedded Postgres, the four services
// as processes over loopback, and runs of TINY_RUN_CONFIG (4 samples x 3 DDIM steps per epoch)
// with two reward terms, so each page has per-term curves, lineage and latents to show.

import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { DdpoConfig, DdpoConfigSchema } from "../../services/gen/ddpo/v1/run_pb.ts";
import { Trainer } from "../../services/gen/ddpo/v1/trainer_pb.ts";
import { createClient } from "../../services/lib/grpc/index.ts";
import { startTestPostgres, type TestDatabase, type TestPostgres } from "../db/postgres.ts";
import { BASE_MODEL_DIR, type ServiceProcess, spawnFourServices, TINY_RUN_CONFIG } from "../services/cluster.ts";

export const TINY_RUN_REWARDS = [
  { endpoint: "", rewardName: "jpeg_compressibility", weight: 1 },
  { endpoint: "", rewardName: "brightness", weight: 0.5 },
];

/** DdpoConfig fields over TINY_RUN_CONFIG's (klCoefficient, evaluation, ...). */
export type TinyRunOverrides = Omit<Exclude<MessageInitShape<typeof DdpoConfigSchema>, DdpoConfig>, "$typeName">;

export interface TinyCluster {
  pg: TestPostgres;
  database: TestDatabase;
  dataDir: string;
  sampler: ServiceProcess;
  rewarder: ServiceProcess;
  trainer: ServiceProcess;
  /** Starts a run of `epochs` tiny epochs on the Trainer (config keys overridden); returns its id at once. */
  startRun(name: string, epochs: number, config?: TinyRunOverrides): Promise<string>;
  stop(): Promise<void>;
}

export async function startTinyCluster(): Promise<TinyCluster> {
  const pg = await startTestPostgres();
  const database = await pg.freshDatabase();
  const dataDir = mkdtempSync(join(tmpdir(), "ddpo-dashboard-"));
  const procs: ServiceProcess[] = [];
  const stop = async () => {
    for (const p of procs) p.proc.kill("SIGKILL");
    await Promise.all(procs.map((p) => p.proc.exited));
    await pg.stop();
    rmSync(dataDir, { recursive: true, force: true });
  };
  try {
    const { sampler, rewarder, trainer } = await spawnFourServices(database.url, dataDir, procs);
    const startRun = async (name: string, epochs: number, config: TinyRunOverrides = {}) => {
      const client = createClient(Trainer, trainer.address);
      try {
        const { run } = await client.startRun(
          {
            name,
            baseModelDir: BASE_MODEL_DIR,
            promptSet: "animals",
            epochs,
            rewards: TINY_RUN_REWARDS,
            config: { ...TINY_RUN_CONFIG, ...config },
          },
          { timeoutMs: 60_000 },
        );
        return run!.id;
      } finally {
        client.close();
      }
    };
    return { pg, database, dataDir, sampler, rewarder, trainer, startRun, stop };
  } catch (e) {
    await stop();
    throw e;
  }
}
