// The `ddpo` commands that talk to running services: `up` starts them, `train` starts a run on the
// Trainer and follows it, `watch` re-attaches to a run, `runs` and `lineage` ask the Registry.
// Addresses come from flags or from <data-dir>/services.json, which `up` writes.
import { existsSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { parseArgs } from "node:util";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { CheckpointKind, RunStatus } from "../gen/ddpo/v1/common_pb.ts";
import { Registry } from "../gen/ddpo/v1/registry_pb.ts";
import type { EpochReport } from "../gen/ddpo/v1/run_pb.ts";
import { Trainer } from "../gen/ddpo/v1/trainer_pb.ts";
import { DDPO_DEFAULTS } from "../lib/ddpo/trainer.ts";
import { createClient } from "../lib/grpc/index.ts";
import { ddpoConfigMessage } from "../lib/runs/run-messages.ts";
import { type ClusterAddresses, startCluster } from "./cluster.ts";
import { formatSeconds } from "./progress.ts";
import { configFromFlags } from "./train.ts";

export const REMOTE_USAGE = `  up       [--data-dir .ddpo] [--model-root DIR ...] database + the four services + the dashboard; Ctrl-C
           stops them (the Registry serves checkpoints only from <data-dir>/runs and the model roots, default models/)
  train    [--trainer ADDR] [--model models/emoji-base] [--reward [W*]NAME[@HOST:PORT] ...] [--prompts animals]
           [--epochs 10] [--name TEXT] [--full] [--key value ...] [--detach]
  watch    RUN_ID [--trainer ADDR]
  runs     [--registry ADDR]
  lineage  CHECKPOINT_ID | --run RUN_ID [--registry ADDR]`;

const STATUS_NAMES: Record<number, string> = {
  [RunStatus.PENDING]: "pending",
  [RunStatus.RUNNING]: "running",
  [RunStatus.STOPPED]: "stopped",
  [RunStatus.COMPLETED]: "completed",
  [RunStatus.FAILED]: "failed",
};

const KIND_NAMES: Record<number, string> = {
  [CheckpointKind.BASE]: "base",
  [CheckpointKind.FULL]: "full",
  [CheckpointKind.LORA]: "lora",
};

function token(): string | undefined {
  return process.env.DDPO_TOKEN || undefined;
}

/** An address from the flag, else from services.json in the data folder. */
function addressOf(service: keyof ClusterAddresses, flag: string | undefined, dataDir = ".ddpo"): string {
  if (flag) return flag;
  const file = join(dataDir, "services.json");
  if (!existsSync(file)) throw new Error(`no --${service} address and no ${file} (start the services with 'ddpo up')`);
  return (JSON.parse(readFileSync(file, "utf8")) as ClusterAddresses)[service];
}

export async function upCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { "data-dir": { type: "string" }, "model-root": { type: "string", multiple: true } },
  });
  const cluster = await startCluster({ dataDir: values["data-dir"] ?? ".ddpo", modelRoots: values["model-root"] });
  const a = cluster.addresses;
  console.log(`registry  ${a.registry}\nrewarder  ${a.rewarder}\nsampler   ${a.sampler}\ntrainer   ${a.trainer}`);
  console.log(`dashboard http://${a.dashboard}/`);
  console.log(`database  ${a.databaseUrl}\n(addresses in ${join(cluster.dataDir, "services.json")}; Ctrl-C stops)`);
  await new Promise<void>((done) => {
    const stop = () => cluster.stop().then(done);
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
}

/** "[W*]NAME[@HOST:PORT]" -> a RewardSource. */
export function parseRewardSpec(spec: string): { endpoint: string; rewardName: string; weight: number } {
  const at = spec.lastIndexOf("@");
  const endpoint = at >= 0 ? spec.slice(at + 1) : "";
  let rest = at >= 0 ? spec.slice(0, at) : spec;
  let weight = 1;
  const star = rest.indexOf("*");
  if (star >= 0) {
    weight = Number(rest.slice(0, star));
    if (!Number.isFinite(weight)) throw new Error(`--reward ${spec}: weight '${rest.slice(0, star)}' is not a number`);
    rest = rest.slice(star + 1);
  }
  if (!rest) throw new Error(`--reward ${spec}: no reward name`);
  return { endpoint, rewardName: rest, weight };
}

export function epochLine(e: EpochReport): string {
  return (
    `epoch ${String(e.epoch).padStart(3)}  reward ${e.rewardMean.toFixed(3)} ± ${e.rewardStd.toFixed(3)}  ` +
    `approx_kl ${e.approxKl.toExponential(2)}  clipfrac ${e.clipFraction.toFixed(3)}  ${formatSeconds(e.seconds)} ` +
    `(sample ${e.samplingS.toFixed(1)} s, reward ${e.rewardS.toFixed(1)} s, train ${e.trainingS.toFixed(1)} s)`
  );
}

/** Follows a run's events until it ends; returns its final status and the epochs seen. */
export async function followRun(
  trainerAddress: string,
  runId: string,
  onEpoch: (e: EpochReport) => void = (e) => console.log(epochLine(e)),
): Promise<{ status: RunStatus; message: string; epochs: EpochReport[] }> {
  const client = createClient(Trainer, trainerAddress, { token: token() });
  const epochs: EpochReport[] = [];
  const tty = Boolean(process.stderr.isTTY);
  try {
    for await (const e of client.watchRun({ runId })) {
      if (e.event.case === "epoch") {
        if (tty) process.stderr.write("\r\x1b[K");
        epochs.push(e.event.value);
        onEpoch(e.event.value);
      } else if (e.event.case === "progress" && tty) {
        const p = e.event.value;
        process.stderr.write(`\repoch ${p.epoch} ${p.phase} ${p.done}/${p.total}\x1b[K`);
      } else if (e.event.case === "status") {
        const s = e.event.value;
        if (s.status !== RunStatus.RUNNING) return { status: s.status, message: s.message, epochs };
      }
    }
    return { status: RunStatus.UNSPECIFIED, message: "the Trainer ended the stream", epochs };
  } finally {
    client.close();
  }
}

export async function trainCommand(argv: string[]): Promise<void> {
  const keyOptions = Object.fromEntries(Object.keys(DDPO_DEFAULTS).map((k) => [k, { type: "string" as const }]));
  const { values } = parseArgs({
    args: argv,
    options: {
      trainer: { type: "string" },
      "data-dir": { type: "string" },
      model: { type: "string" },
      reward: { type: "string", multiple: true },
      prompts: { type: "string" },
      epochs: { type: "string" },
      name: { type: "string" },
      full: { type: "boolean" },
      detach: { type: "boolean" },
      "lora-rank": { type: "string" },
      "lora-alpha": { type: "string" },
      ...keyOptions,
    },
  });
  const address = addressOf("trainer", values.trainer, values["data-dir"]);
  const { reward: _rewards, ...flags } = values;
  const config = configFromFlags(flags);
  const client = createClient(Trainer, address, { token: token() });
  const { run } = await client.startRun(
    {
      name: values.name ?? "",
      baseModelDir: resolve(values.model ?? "models/emoji-base"),
      promptSet: values.prompts ?? "animals",
      epochs: Number(values.epochs ?? 10),
      rewards: (values.reward ?? ["jpeg_compressibility"]).map(parseRewardSpec),
      config: ddpoConfigMessage(config),
    },
    { timeoutMs: 60_000 },
  );
  client.close();
  console.log(`run ${run!.id} started (${run!.epochs} epochs)`);
  if (values.detach) return;
  const result = await followRun(address, run!.id);
  console.log(`run ${run!.id}: ${STATUS_NAMES[result.status] ?? "?"}${result.message ? ` (${result.message})` : ""}`);
  if (result.status !== RunStatus.COMPLETED) process.exitCode = 1;
}

export async function watchCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { trainer: { type: "string" }, "data-dir": { type: "string" } },
  });
  if (!positionals[0]) throw new Error("watch: RUN_ID is required");
  const result = await followRun(addressOf("trainer", values.trainer, values["data-dir"]), positionals[0]);
  console.log(
    `run ${positionals[0]}: ${STATUS_NAMES[result.status] ?? "?"}${result.message ? ` (${result.message})` : ""}`,
  );
}

export async function runsCommand(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    options: { registry: { type: "string" }, "data-dir": { type: "string" } },
  });
  const client = createClient(Registry, addressOf("registry", values.registry, values["data-dir"]), { token: token() });
  try {
    const { runs } = await client.listRuns({ pageSize: 100 });
    console.log(`${"run".padEnd(36)}  ${"name".padEnd(16)}  ${"status".padEnd(9)}  epochs  latest checkpoint`);
    for (const r of runs) {
      console.log(
        `${r.id.padEnd(36)}  ${r.name.slice(0, 16).padEnd(16)}  ${(STATUS_NAMES[r.status] ?? "?").padEnd(9)}  ` +
          `${`${r.epochsDone}/${r.epochs}`.padEnd(6)}  ${r.latestCheckpointId}`,
      );
    }
  } finally {
    client.close();
  }
}

export async function lineageCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { registry: { type: "string" }, run: { type: "string" }, "data-dir": { type: "string" } },
  });
  const client = createClient(Registry, addressOf("registry", values.registry, values["data-dir"]), { token: token() });
  try {
    let id = positionals[0];
    if (!id && values.run) id = (await client.getRun({ runId: values.run })).run?.latestCheckpointId;
    if (!id) throw new Error("lineage: give a CHECKPOINT_ID or --run RUN_ID");
    const { ancestry } = await client.getLineage({ checkpointId: id });
    for (const [depth, c] of ancestry.entries()) {
      const when = c.createdAt ? timestampDate(c.createdAt).toISOString() : "";
      console.log(
        `${"  ".repeat(depth)}${c.id}  [${KIND_NAMES[c.kind] ?? "?"}${c.epoch !== undefined ? `, epoch ${c.epoch}` : ""}]  ` +
          `sha256 ${c.sha256.slice(0, 12)}  ${when}  ${c.location}`,
      );
    }
  } finally {
    client.close();
  }
}
