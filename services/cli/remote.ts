// The `ddpo` commands that talk to running services: `up` starts them, `train` starts a run on the
// Trainer and follows it, `watch` re-attaches to a run, `runs`, `lineage` and `pull` ask the Registry.
// Addresses come from flags or from <data-dir>/services.json, which `up` writes.
import { closeSync, existsSync, mkdirSync, openSync, readdirSync, readFileSync, writeSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { timestampDate } from "@bufbuild/protobuf/wkt";
import { CheckpointKind, RunStatus } from "../gen/ddpo/v1/common_pb.ts";
import { type CheckpointChunk, Registry } from "../gen/ddpo/v1/registry_pb.ts";
import type { EpochReport } from "../gen/ddpo/v1/run_pb.ts";
import { Trainer } from "../gen/ddpo/v1/trainer_pb.ts";
import { digestFolder } from "../lib/checkpoints/checkpoint-folder.ts";
import { createClient } from "../lib/grpc/index.ts";
import { ddpoConfigMessage, runStatusName } from "../lib/runs/run-messages.ts";
import { type ClusterAddresses, MAX_LOCAL_SAMPLERS, startCluster } from "./cluster.ts";
import { commandFlags, type FlagSpec, numberFlag } from "./flags.ts";
import { epochLine, evaluationLine } from "./progress.ts";
import { configFromFlags, DDPO_FLAGS, evaluationFromFlags } from "./train.ts";

const UP_USAGE = `up       [--data-dir .ddpo] [--model-root DIR ...] [--samplers 1] database + the four services + the dashboard;
           Ctrl-C stops them (the Registry serves checkpoints only from <data-dir>/runs and the model roots, default models/);
           --samplers N starts N Sampler processes, which the Trainer balances each epoch's chunks over`;
const TRAIN_REMOTE_USAGE = `train    [--trainer ADDR] [--model models/emoji-base] [--reward [W*]NAME[@HOST:PORT] ...] [--prompts animals]
           [--epochs 10] [--name TEXT] [--samplers TARGET ...] [--full] [--key value ...] [--detach]`;
const WATCH_USAGE = "watch    RUN_ID [--trainer ADDR]";
const RUNS_USAGE = "runs     [--registry ADDR]";
const LINEAGE_USAGE = "lineage  CHECKPOINT_ID | --run RUN_ID [--registry ADDR]";
const PULL_USAGE = "pull     CHECKPOINT_ID --out DIR [--registry ADDR]   copy a checkpoint out of the store";
export const REMOTE_USAGE = [UP_USAGE, TRAIN_REMOTE_USAGE, WATCH_USAGE, RUNS_USAGE, LINEAGE_USAGE, PULL_USAGE]
  .map((u) => `  ${u}`)
  .join("\n");

/** --SERVICE ADDR and --data-dir: where a command finds the service it talks to. */
function addressFlags<S extends "trainer" | "registry">(service: S) {
  return {
    [service]: { type: "string", value: "HOST:PORT", help: `the ${service}'s address`, default: "from services.json" },
    "data-dir": { type: "string", value: "DIR", help: "where `ddpo up` wrote services.json", default: ".ddpo" },
  } as Record<S | "data-dir", FlagSpec & { type: "string" }>;
}

const KIND_NAMES: Record<number, string> = {
  [CheckpointKind.BASE]: "base",
  [CheckpointKind.FULL]: "full",
  [CheckpointKind.LORA]: "lora",
};

function token(): string | undefined {
  return process.env.DDPO_TOKEN || undefined;
}

/** An address from the flag, else from services.json in the data folder. */
function addressOf(
  service: Exclude<keyof ClusterAddresses, "samplers">,
  flag: string | undefined,
  dataDir = ".ddpo",
): string {
  if (flag) return flag;
  const file = join(dataDir, "services.json");
  if (!existsSync(file)) throw new Error(`no --${service} address and no ${file} (start the services with 'ddpo up')`);
  return (JSON.parse(readFileSync(file, "utf8")) as ClusterAddresses)[service];
}

export async function upCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(`ddpo ${UP_USAGE}`, argv, {
    "data-dir": { type: "string", value: "DIR", help: "Postgres data, run folders, services.json", default: ".ddpo" },
    "model-root": {
      type: "string",
      multiple: true,
      value: "DIR",
      help: "folder the Registry serves checkpoints from",
      default: "models/",
    },
    samplers: {
      type: "string",
      value: "N",
      help: `Sampler processes to start (1..${MAX_LOCAL_SAMPLERS}); more than one: the Trainer's fleet, an ipv4: target over them all`,
      default: 1,
    },
  });
  if (!parsed) return;
  const { values } = parsed;
  const cluster = await startCluster({
    dataDir: values["data-dir"] ?? ".ddpo",
    modelRoots: values["model-root"],
    samplers: numberFlag(values.samplers, 1, "samplers", true),
  });
  const a = cluster.addresses;
  const samplerLines = a.samplers.length === 1 ? `sampler   ${a.sampler}` : `samplers  ${a.samplerTarget}`;
  console.log(`registry  ${a.registry}\nrewarder  ${a.rewarder}\n${samplerLines}\ntrainer   ${a.trainer}`);
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
      } else if (e.event.case === "evaluation") {
        if (tty) process.stderr.write("\r\x1b[K");
        const r = e.event.value;
        console.log(evaluationLine(r.epoch, Object.fromEntries(r.metrics.map((m) => [m.metric, m.mean]))));
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
  const parsed = commandFlags(`ddpo ${TRAIN_REMOTE_USAGE}`, argv, {
    ...addressFlags("trainer"),
    model: { type: "string", value: "DIR", help: "base model folder", default: "models/emoji-base" },
    reward: {
      type: "string",
      multiple: true,
      value: "[W*]NAME[@HOST:PORT]",
      help: "reward term (weight, name, Rewarder address)",
      default: "jpeg_compressibility",
    },
    prompts: { type: "string", value: "SET", help: "prompt set, or list:PROMPT,PROMPT,...", default: "animals" },
    epochs: { type: "string", value: "N", help: "epochs to run", default: 10 },
    name: { type: "string", value: "TEXT", help: "run name, for humans", default: "the run id" },
    samplers: {
      type: "string",
      multiple: true,
      value: "TARGET",
      help: "Samplers to sample on: HOST:PORT, or a fleet (ipv4:HOST:PORT,HOST:PORT or dns:///NAME:PORT)",
      default: "the Trainer's",
    },
    detach: { type: "boolean", help: "print the run id and return instead of following the run" },
    ...DDPO_FLAGS,
  });
  if (!parsed) return;
  const { values } = parsed;
  const address = addressOf("trainer", values.trainer, values["data-dir"]);
  const { reward: _rewards, samplers: _samplers, ...flags } = values;
  const config = { ...configFromFlags(flags), evaluation: evaluationFromFlags(flags) };
  const client = createClient(Trainer, address, { token: token() });
  const { run, workSplit } = await client.startRun(
    {
      name: values.name ?? "",
      samplerEndpoints: values.samplers ?? [],
      baseModelDir: resolve(values.model ?? "models/emoji-base"),
      promptSet: values.prompts ?? "animals",
      epochs: Number(values.epochs ?? 10),
      rewards: (values.reward ?? ["jpeg_compressibility"]).map(parseRewardSpec),
      config: ddpoConfigMessage(config),
    },
    { timeoutMs: 60_000 },
  );
  client.close();
  console.log(`run ${run!.id} started (${run!.epochs} epochs; ${workSplit})`);
  if (values.detach) return;
  const result = await followRun(address, run!.id);
  console.log(`run ${run!.id}: ${runStatusName(result.status)}${result.message ? ` (${result.message})` : ""}`);
  if (result.status !== RunStatus.COMPLETED) process.exitCode = 1;
}

export async function watchCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(`ddpo ${WATCH_USAGE}`, argv, addressFlags("trainer"), { positionals: true });
  if (!parsed) return;
  const { values, positionals } = parsed;
  if (!positionals[0]) throw new Error("watch: RUN_ID is required");
  const result = await followRun(addressOf("trainer", values.trainer, values["data-dir"]), positionals[0]);
  console.log(`run ${positionals[0]}: ${runStatusName(result.status)}${result.message ? ` (${result.message})` : ""}`);
}

export async function runsCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(`ddpo ${RUNS_USAGE}`, argv, addressFlags("registry"));
  if (!parsed) return;
  const { values } = parsed;
  const client = createClient(Registry, addressOf("registry", values.registry, values["data-dir"]), { token: token() });
  try {
    const { runs } = await client.listRuns({ pageSize: 100 });
    console.log(`${"run".padEnd(36)}  ${"name".padEnd(16)}  ${"status".padEnd(9)}  epochs  latest checkpoint`);
    for (const r of runs) {
      console.log(
        `${r.id.padEnd(36)}  ${r.name.slice(0, 16).padEnd(16)}  ${runStatusName(r.status).padEnd(9)}  ` +
          `${`${r.epochsDone}/${r.epochs}`.padEnd(6)}  ${r.latestCheckpointId}`,
      );
    }
  } finally {
    client.close();
  }
}

export async function lineageCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(
    `ddpo ${LINEAGE_USAGE}`,
    argv,
    { ...addressFlags("registry"), run: { type: "string", value: "RUN_ID", help: "the run's latest checkpoint" } },
    { positionals: true },
  );
  if (!parsed) return;
  const { values, positionals } = parsed;
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

/**
 * `ddpo pull`: a registered checkpoint's files copied out of the checkpoint store through the
 * Registry's StreamCheckpoint, for machines that do not mount the store (docs/DESIGN.md §7); the
 * copy is checked against the sha256 the Registry recorded (the same digest over the same files).
 */
export async function pullCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(
    `ddpo ${PULL_USAGE}`,
    argv,
    {
      ...addressFlags("registry"),
      out: { type: "string", value: "DIR", help: "a new or empty folder for the files; required" },
    },
    { positionals: true },
  );
  if (!parsed) return;
  const { values, positionals } = parsed;
  const id = positionals[0];
  if (!id || !values.out) throw new Error(`CHECKPOINT_ID and --out DIR are required\n  ${PULL_USAGE}`);
  const out = resolve(values.out);
  if (existsSync(out) && readdirSync(out).length > 0) throw new Error(`${out} is not empty`);
  mkdirSync(out, { recursive: true });
  const client = createClient(Registry, addressOf("registry", values.registry, values["data-dir"]), { token: token() });
  try {
    const { checkpoint } = await client.getCheckpoint({ id }, { timeoutMs: 30_000 });
    await writeStream(out, client.streamCheckpoint({ id }));
    const { sha256, sizeBytes } = await digestFolder(out);
    if (sha256 !== checkpoint!.sha256) {
      throw new Error(`the copy in ${out} has sha256 ${sha256}; the Registry recorded ${checkpoint!.sha256}`);
    }
    console.log(`pull: ${id} -> ${out} (${sizeBytes} bytes, sha256 ${sha256.slice(0, 12)}, as registered)`);
  } finally {
    client.close();
  }
}

/** Writes streamed chunks (files in turn, each in offset order) under `out`. */
async function writeStream(out: string, chunks: AsyncIterable<CheckpointChunk>): Promise<void> {
  let current = "";
  let fd = -1;
  try {
    for await (const chunk of chunks) {
      if (fd < 0 || current !== chunk.path) {
        if (fd >= 0) closeSync(fd);
        fd = -1;
        const path = resolve(out, chunk.path);
        // The paths are the Registry's listing of the folder; none may land outside `out`.
        if (relative(out, path).startsWith("..")) throw new Error(`a path outside the folder: ${chunk.path}`);
        mkdirSync(dirname(path), { recursive: true });
        fd = openSync(path, "w");
        current = chunk.path;
      }
      writeSync(fd, chunk.data, 0, chunk.data.byteLength, Number(chunk.offset));
    }
  } finally {
    if (fd >= 0) closeSync(fd);
  }
}
