// Services benchmark: the same DDPO epochs run in this process and across the four services, both
// with recording on, on the shipped base model (prompts "animals", reward jpeg_compressibility,
// guidance 3, LoRA r=4, timestepFraction 0.5, seed 42; by default 16 samples x 10 DDIM steps, 2 epochs).
//
// Both sides write into the same Postgres (the cluster's: embedded in a temporary folder, or
// DATABASE_URL) and do the same per-epoch work:
//   in process  the epoch pipeline (lib/ddpo/pipeline.ts) with its in-process steps; the epoch's rows
//               (latent blobs, trajectories, rewards, built by epochRows as the Trainer does) queued on
//               a TrajectoryRecorder; the sample grid PNG; the checkpoint saved, the recorder flushed
//               and the checkpoint row registered; the epoch row recorded.
//   services    startCluster, then Trainer.StartRun with the same config: the same pipeline with the
//               Trainer's steps; the Sampler samples, the Rewarder scores, the Trainer's recorder
//               queues the same rows, its engine worker updates and saves, then it flushes and
//               registers via the Registry.
// Figures:
//   in_process_epoch_s, services_epoch_s  the `seconds` of each epoch's report: the pipeline's plan
//                       through checkpoint registration, measured the same way on both sides.
//   epoch_ratio         services_epoch_s / in_process_epoch_s, per epoch index.
//   overhead_ratio      sum of services epoch seconds / sum of in-process epoch seconds over the epochs
//                       after the first (overhead_epochs; epoch 1 when --epochs 1): the first epoch of the
//                       services run includes the Sampler's model load and its engine's warm-up.
//                       Target <= 1.05.
//   rows_per_s          rows the in-process TrajectoryRecorder committed per second of its write time
//                       (counters.written / counters.writeSeconds: time inside committed transactions);
//                       it is the recorder class the Trainer runs, writing the same rows to the same server.
//   rows_in_process, rows_services  trajectories + rewards + latent blobs each run has in Postgres
//                       after it ended (counted there; both should be epochs x samples x 3).
//   *_wall_s            in process: model load through the last epoch; services: StartRun through the
//                       run's terminal status (includes the Trainer worker's and Sampler's model loads).
//   *_sampling_s, *_training_s, *_other_s  the split of the overhead epochs, summed (other: reward,
//                       recording, checkpoint, RPC hops: the epoch seconds minus sampling and training).
//
//   npm run bench -- services [--json] [--samples 16] [--steps 10] [--epochs 2] [--model models/emoji-base]
import { realpath } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { Kysely } from "kysely";
import { Engine } from "../gpu-core/index.ts";
import type { Cluster } from "../services/cli/cluster.ts";
import { followRun } from "../services/cli/remote.ts";
import { RunStatus } from "../services/gen/ddpo/v1/common_pb.ts";
import type { EpochReport as EpochEvent } from "../services/gen/ddpo/v1/run_pb.ts";
import { Trainer } from "../services/gen/ddpo/v1/trainer_pb.ts";
import { digestFolder } from "../services/lib/checkpoints/checkpoint-folder.ts";
import { openDatabase } from "../services/lib/db/database.ts";
import { epochRows } from "../services/lib/db/epoch-rows.ts";
import { createRun, recordEpoch, registerCheckpoint } from "../services/lib/db/queries.ts";
import { TrajectoryRecorder } from "../services/lib/db/recorder.ts";
import type { Database } from "../services/lib/db/schema.ts";
import { type LocalHooks, runLocalEpoch } from "../services/lib/ddpo/local-steps.ts";
import { promptSetByName } from "../services/lib/ddpo/prompts.ts";
import { DDPO_DEFAULTS, type DdpoConfig, DdpoTrainer } from "../services/lib/ddpo/trainer.ts";
import { createClient } from "../services/lib/grpc/index.ts";
import { TextToImageModel } from "../services/lib/models/text-to-image.ts";
import { rewardByName } from "../services/lib/rewards/index.ts";
import { RunFolder, runCheckpointId } from "../services/lib/runs/run-folder.ts";
import { ddpoConfigMessage, epochRow, runSettingsJson } from "../services/lib/runs/run-messages.ts";
import { flagValue } from "./flags.ts";
import { printReport, withTemporaryCluster } from "./harness.ts";

const REWARD = "jpeg_compressibility";
const PROMPTS = "animals";

/** Trajectories + rewards + the latent blobs its trajectories reference, for one run. */
async function rowsInDatabase(db: Kysely<Database>, runId: string): Promise<number> {
  const count = async (table: "trajectories" | "rewards") =>
    (
      await db
        .selectFrom(table)
        .select((eb) => eb.fn.countAll<number>().as("n"))
        .where("run_id", "=", runId)
        .executeTakeFirstOrThrow()
    ).n;
  const blobs = await db
    .selectFrom("latent_blobs")
    .select((eb) => eb.fn.countAll<number>().as("n"))
    .where("sha256", "in", db.selectFrom("trajectories").select("latents_sha256").where("run_id", "=", runId))
    .executeTakeFirstOrThrow();
  return (await count("trajectories")) + (await count("rewards")) + blobs.n;
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

interface InProcessResult {
  runId: string;
  machine: string;
  epochS: number[];
  samplingS: number[];
  trainingS: number[];
  rewardMeans: number[];
  wallS: number;
}

async function runInProcess(
  config: DdpoConfig,
  modelDir: string,
  epochs: number,
  baseId: string,
  dir: string,
  db: Kysely<Database>,
  recorder: TrajectoryRecorder,
): Promise<InProcessResult> {
  const runId = `bench-in-process-${crypto.randomUUID()}`;
  await createRun(db, {
    id: runId,
    name: "bench services: in process",
    config: runSettingsJson({ ddpo: config, baseModelDir: modelDir, epochs, samplerEndpoints: [], runDir: dir }),
    status: "running",
    base_checkpoint_id: baseId,
    prompt_set: PROMPTS,
    rewards: [{ endpoint: "", name: REWARD, weight: 1 }],
  });
  const started = performance.now();
  const engine = Engine.open();
  const model = TextToImageModel.load(engine, modelDir);
  const trainer = new DdpoTrainer(engine, model, config, rewardByName(REWARD), await promptSetByName(PROMPTS));
  const machine = `${navigator.hardwareConcurrency} threads, ${engine.backend} backend`;
  const out: InProcessResult = {
    runId,
    machine,
    epochS: [],
    samplingS: [],
    trainingS: [],
    rewardMeans: [],
    wallS: 0,
  };
  const folder = new RunFolder(dir);
  let parent = baseId;
  // The pipeline's in-process steps, recording what the Trainer's steps record, in the same way.
  const hooks: LocalHooks = {
    record(epoch, sampled, scored, advantages) {
      recorder.add(epochRows(runId, epoch, parent, { ...sampled, rewards: scored.rewards, advantages }, scored.terms));
      return folder.writeSamples(epoch, sampled.images, sampled.imageSize, sampled.prompts, scored.rewards);
    },
    async checkpoint(epoch) {
      const location = folder.checkpoint(epoch);
      trainer.saveCheckpoint(location);
      const { sha256, sizeBytes } = await digestFolder(location);
      await recorder.flush();
      const id = runCheckpointId(runId, epoch);
      await registerCheckpoint(db, {
        id,
        parent_id: parent,
        run_id: runId,
        epoch,
        kind: "lora",
        sha256,
        size_bytes: sizeBytes,
        location,
      });
      parent = id;
      return id;
    },
    report: async (report) => void (await recordEpoch(db, epochRow(runId, report))),
  };
  try {
    for (let e = 1; e <= epochs; e++) {
      const { report } = await runLocalEpoch(trainer, hooks);
      out.epochS.push(report.seconds);
      out.samplingS.push(report.samplingS);
      out.trainingS.push(report.trainingS);
      out.rewardMeans.push(report.rewardMean);
      console.error(
        `[in process] epoch ${e}: ${report.seconds.toFixed(1)} s (sample ${report.samplingS.toFixed(1)}, ` +
          `train ${report.trainingS.toFixed(1)}), reward ${report.rewardMean.toFixed(3)}`,
      );
    }
    out.wallS = (performance.now() - started) / 1000;
  } finally {
    trainer.close();
    model.close();
    engine.close();
  }
  return out;
}

async function runServices(
  cluster: Cluster,
  config: DdpoConfig,
  modelDir: string,
  epochs: number,
): Promise<{ runId: string; events: EpochEvent[]; wallS: number }> {
  const started = performance.now();
  const client = createClient(Trainer, cluster.addresses.trainer);
  let runId: string;
  try {
    const { run } = await client.startRun(
      {
        name: "bench services: across the services",
        baseModelDir: modelDir,
        promptSet: PROMPTS,
        epochs,
        rewards: [{ endpoint: "", rewardName: REWARD, weight: 1 }],
        config: ddpoConfigMessage(config),
      },
      { timeoutMs: 120_000 },
    );
    runId = run!.id;
  } finally {
    client.close();
  }
  const result = await followRun(cluster.addresses.trainer, runId, (e) =>
    console.error(
      `[services] epoch ${e.epoch}: ${e.seconds.toFixed(1)} s (sample ${e.samplingS.toFixed(1)}, ` +
        `reward ${e.rewardS.toFixed(1)}, train ${e.trainingS.toFixed(1)}), reward ${e.rewardMean.toFixed(3)}`,
    ),
  );
  const wallS = (performance.now() - started) / 1000;
  if (result.status !== RunStatus.COMPLETED || result.epochs.length !== epochs) {
    throw new Error(`services run ${runId} ended with status ${result.status} (${result.message || "no message"})`);
  }
  return { runId, events: [...result.epochs].sort((a, b) => a.epoch - b.epoch), wallS };
}

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const flag = (name: string, fallback: string) => flagValue(args, name, fallback);
  const samples = Number(flag("--samples", "16"));
  const steps = Number(flag("--steps", "10"));
  const epochs = Number(flag("--epochs", "2"));
  if (![samples, steps, epochs].every((v) => Number.isInteger(v) && v >= 1)) {
    throw new Error("services bench: --samples, --steps and --epochs must be positive integers");
  }
  const modelDir = resolve(flag("--model", join(import.meta.dir, "..", "models", "emoji-base")));
  const config: DdpoConfig = {
    ...DDPO_DEFAULTS,
    sampleBatchSize: samples,
    sampleBatchesPerEpoch: 1,
    steps,
    guidance: 3,
    lora: { rank: 4, alpha: 4 },
    timestepFraction: 0.5,
  };

  await withTemporaryCluster("services", {}, async (cluster, tmp) => {
    const handle = openDatabase({ url: cluster.addresses.databaseUrl });
    try {
      const db = handle.db;

      // The base model is the root checkpoint of both runs, registered as the Trainer would.
      const base = await digestFolder(modelDir);
      const baseId = `base-${base.sha256.slice(0, 16)}`;
      await registerCheckpoint(db, {
        id: baseId,
        kind: "base",
        sha256: base.sha256,
        size_bytes: base.sizeBytes,
        location: await realpath(modelDir),
      });

      const recorder = new TrajectoryRecorder(db);
      const local = await runInProcess(config, modelDir, epochs, baseId, join(tmp, "in-process"), db, recorder);
      await recorder.close();
      const remote = await runServices(cluster, config, modelDir, epochs);

      const servicesS = remote.events.map((e) => e.seconds);
      const from = epochs >= 2 ? 1 : 0; // overhead epochs: 2..E, or epoch 1 alone
      const pick = (xs: readonly number[]) => xs.slice(from);
      const inProcessSum = sum(pick(local.epochS));
      const servicesSum = sum(pick(servicesS));
      const counters = recorder.counters;
      const result = {
        machine: local.machine,
        samples,
        steps,
        epochs,
        in_process_epoch_s: local.epochS,
        services_epoch_s: servicesS,
        epoch_ratio: servicesS.map((s, i) => s / local.epochS[i]!),
        overhead_epochs: from === 1 ? `2-${epochs}` : "1",
        overhead_ratio: servicesSum / inProcessSum,
        in_process_sampling_s: sum(pick(local.samplingS)),
        services_sampling_s: sum(pick(remote.events.map((e) => e.samplingS))),
        in_process_training_s: sum(pick(local.trainingS)),
        services_training_s: sum(pick(remote.events.map((e) => e.trainingS))),
        in_process_other_s: inProcessSum - sum(pick(local.samplingS)) - sum(pick(local.trainingS)),
        services_other_s:
          servicesSum -
          sum(pick(remote.events.map((e) => e.samplingS))) -
          sum(pick(remote.events.map((e) => e.trainingS))),
        in_process_wall_s: local.wallS,
        services_wall_s: remote.wallS,
        in_process_reward_mean: local.rewardMeans,
        services_reward_mean: remote.events.map((e) => e.rewardMean),
        rows_in_process: await rowsInDatabase(db, local.runId),
        rows_services: await rowsInDatabase(db, remote.runId),
        rows_written: counters.written,
        record_batches: counters.batches,
        record_write_s: counters.writeSeconds,
        rows_per_s: counters.rowsPerSecond,
      };
      printReport(result, json);
    } finally {
      await handle.close().catch(() => undefined);
    }
  });
}

if (import.meta.main) await main(process.argv.slice(2));
