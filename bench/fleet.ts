// Fleet benchmark: the sampling throughput of one Sampler and of two, measured in one run of this
// script on one cluster (`startCluster` with two Sampler processes, as `ddpo up --samplers 2`):
// the same DDPO run (shipped base model, prompts "animals", reward jpeg_compressibility, guidance 3,
// LoRA r=4, seed 42; by default 16 samples per epoch in chunks of 4, 10 DDIM steps, 3 epochs) first
// on the first Sampler alone, then on the ipv4: fleet of both. Both Samplers load the base model
// and warm up before either run.
// Figures:
//   samples_per_s_1_sampler, samples_per_s_2_samplers  samples drawn per second of the epochs'
//                       `sampling_s` (the Trainer's sampling phase: every chunk's Sample stream,
//                       policy loads included), over epochs 2..E (epoch 1: E = 1).
//   throughput_ratio_2_vs_1  samples_per_s_2_samplers / samples_per_s_1_sampler. On a machine
//                       whose cores both Samplers share, no speed-up is expected: the figure shows
//                       that nothing is lost or serialised by the fleet; several machines or GPUs
//                       are where it helps.
//   sampling_s_1_sampler, sampling_s_2_samplers  those epochs' sampling seconds, per epoch.
//   samples_drawn_per_sampler  what each Sampler's GetStatus counted during the two-Sampler run.
//   same_rewards        whether both runs' per-epoch reward means are identical (a fleet reproduces
//                       a one-Sampler run).
//
//   npm run bench -- fleet [--json] [--samples 16] [--chunk 4] [--steps 10] [--epochs 3] [--model models/emoji-base]
import { join, resolve } from "node:path";
import type { Cluster } from "../services/cli/cluster.ts";
import { followRun } from "../services/cli/remote.ts";
import { RunStatus } from "../services/gen/ddpo/v1/common_pb.ts";
import type { EpochReport } from "../services/gen/ddpo/v1/run_pb.ts";
import { Sampler } from "../services/gen/ddpo/v1/sampler_pb.ts";
import { Trainer } from "../services/gen/ddpo/v1/trainer_pb.ts";
import { DDPO_DEFAULTS, type DdpoConfig } from "../services/lib/ddpo/trainer.ts";
import { createClient } from "../services/lib/grpc/index.ts";
import { ddpoConfigMessage } from "../services/lib/runs/run-messages.ts";
import { flagValue } from "./flags.ts";
import { printReport, withTemporaryCluster } from "./harness.ts";

const REWARD = "jpeg_compressibility";
const PROMPTS = "animals";

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** Each Sampler's samples_streamed counter. */
async function streamed(addresses: readonly string[]): Promise<number[]> {
  return Promise.all(
    addresses.map(async (address) => {
      const c = createClient(Sampler, address);
      try {
        return Number((await c.getStatus({}, { timeoutMs: 10_000 })).samplesStreamed);
      } finally {
        c.close();
      }
    }),
  );
}

/** Loads the base model on a Sampler and draws one small batch, so no run pays the first load. */
async function warm(address: string, modelDir: string, config: DdpoConfig): Promise<void> {
  const c = createClient(Sampler, address);
  try {
    const policy = { checkpointId: "bench-fleet-warm-up", baseModelDir: modelDir };
    for await (const _ of c.sample(
      {
        prompts: ["cat face", "dog face"],
        seeds: [1n, 2n],
        steps: 2,
        guidance: config.guidance,
        checkpointId: policy.checkpointId,
        batchSize: 2,
        policy,
      },
      { timeoutMs: 600_000 },
    ));
  } finally {
    c.close();
  }
}

async function run(
  cluster: Cluster,
  label: string,
  samplers: string,
  config: DdpoConfig,
  modelDir: string,
  epochs: number,
) {
  const client = createClient(Trainer, cluster.addresses.trainer);
  let runId: string;
  try {
    const { run, workSplit } = await client.startRun(
      {
        name: `bench fleet: ${label}`,
        baseModelDir: modelDir,
        promptSet: PROMPTS,
        epochs,
        rewards: [{ endpoint: "", rewardName: REWARD, weight: 1 }],
        config: ddpoConfigMessage(config),
        samplerEndpoints: [samplers],
      },
      { timeoutMs: 120_000 },
    );
    runId = run!.id;
    console.error(`[${label}] ${workSplit}`);
  } finally {
    client.close();
  }
  const result = await followRun(cluster.addresses.trainer, runId, (e) =>
    console.error(
      `[${label}] epoch ${e.epoch}: ${e.seconds.toFixed(1)} s (sample ${e.samplingS.toFixed(1)}), reward ${e.rewardMean.toFixed(4)}`,
    ),
  );
  if (result.status !== RunStatus.COMPLETED || result.epochs.length !== epochs) {
    throw new Error(`run ${runId} (${label}) ended with status ${result.status} (${result.message || "no message"})`);
  }
  return [...result.epochs].sort((a, b) => a.epoch - b.epoch) as EpochReport[];
}

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const flag = (name: string, fallback: string) => flagValue(args, name, fallback);
  const samples = Number(flag("--samples", "16"));
  const chunk = Number(flag("--chunk", "4"));
  const steps = Number(flag("--steps", "10"));
  const epochs = Number(flag("--epochs", "3"));
  if (![samples, chunk, steps, epochs].every((v) => Number.isInteger(v) && v >= 1) || samples % chunk !== 0) {
    throw new Error(
      "fleet bench: --samples, --chunk, --steps and --epochs are positive integers, --chunk divides --samples",
    );
  }
  const modelDir = resolve(flag("--model", join(import.meta.dir, "..", "models", "emoji-base")));
  const config: DdpoConfig = {
    ...DDPO_DEFAULTS,
    seed: 42,
    sampleBatchSize: chunk,
    sampleBatchesPerEpoch: samples / chunk,
    steps,
    guidance: 3,
    lora: { rank: 4, alpha: 4 },
    timestepFraction: 0.5,
  };

  await withTemporaryCluster("fleet", { samplers: 2, log: (l) => console.error(l) }, async (cluster) => {
    const { samplers, samplerTarget } = cluster.addresses;
    await Promise.all(samplers.map((a) => warm(a, modelDir, config)));

    const one = await run(cluster, "1 Sampler", samplers[0]!, config, modelDir, epochs);
    const before = await streamed(samplers);
    const two = await run(cluster, "2 Samplers", samplerTarget, config, modelDir, epochs);
    const after = await streamed(samplers);

    const from = epochs >= 2 ? 1 : 0;
    const samplingS = (events: readonly EpochReport[]) => events.slice(from).map((e) => e.samplingS);
    const rate = (events: readonly EpochReport[]) => (samples * samplingS(events).length) / sum(samplingS(events));
    const result = {
      machine: `${navigator.hardwareConcurrency} threads`,
      samples_per_epoch: samples,
      chunk_samples: chunk,
      steps,
      epochs,
      measured_epochs: from === 1 ? `2-${epochs}` : "1",
      sampling_s_1_sampler: samplingS(one),
      sampling_s_2_samplers: samplingS(two),
      samples_per_s_1_sampler: rate(one),
      samples_per_s_2_samplers: rate(two),
      throughput_ratio_2_vs_1: rate(two) / rate(one),
      samples_drawn_per_sampler: after.map((n, i) => n - before[i]!),
      same_rewards: one.every((e, i) => e.rewardMean === two[i]!.rewardMean),
    };
    printReport(result, json);
  });
}

if (import.meta.main) await main(process.argv.slice(2));
