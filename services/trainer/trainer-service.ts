// Trainer handlers: start, watch, stop and resume DDPO runs. Each run is a RunController whose
// engine work happens in its own worker; this thread validates requests, records runs in
// Postgres and streams epoch events to watchers.
import { existsSync } from "node:fs";
import { readFile, realpath } from "node:fs/promises";
import { join, resolve } from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampNow } from "@bufbuild/protobuf/wkt";
import type { Kysely } from "kysely";
import { CheckpointKind } from "../gen/ddpo/v1/common_pb.ts";
import { Registry } from "../gen/ddpo/v1/registry_pb.ts";
import { Rewarder } from "../gen/ddpo/v1/rewarder_pb.ts";
import { Sampler } from "../gen/ddpo/v1/sampler_pb.ts";
import { type RunEventSchema, type StartRunRequest, Trainer } from "../gen/ddpo/v1/trainer_pb.ts";
import { digestFolder } from "../lib/checkpoints/checkpoint-folder.ts";
import { createRun, getRun, listEpochs, listRuns, reopenRun } from "../lib/db/queries.ts";
import type { TrajectoryRecorder } from "../lib/db/recorder.ts";
import type { Database, RewardSpec, RunStatus } from "../lib/db/schema.ts";
import { evaluationProblems } from "../lib/ddpo/evaluation.ts";
import { promptSetByName } from "../lib/ddpo/prompts.ts";
import type { DdpoConfig } from "../lib/ddpo/trainer.ts";
import {
  bindService,
  type ClientOptions,
  type ClientTls,
  Code,
  checkedEndpoint,
  checkedTarget,
  checkedText,
  createClient,
  echoed,
  MAX_PATH_CHARS,
  type ServiceClient,
  ServiceError,
} from "../lib/grpc/index.ts";
import { databaseCall } from "../lib/runs/database-calls.ts";
import { RunFolder } from "../lib/runs/run-folder.ts";
import {
  ddpoConfigFromMessage,
  epochMessage,
  type RunSettings,
  runMessage,
  runSettingsFromJson,
  runSettingsJson,
  runStatusMessage,
} from "../lib/runs/run-messages.ts";
import { closeIdleWorkers, RunController, type RunEventPayload } from "./run-controller.ts";
import { describeSplit, samplerClientOptions } from "./sampler-fleet.ts";

export interface TrainerServiceOptions {
  db: Kysely<Database>;
  recorder: TrajectoryRecorder;
  registryAddress: string;
  defaultRewarderAddress: string;
  defaultSamplers: string[];
  /** Runs write their checkpoints under <dataDir>/runs/<run id>/. */
  dataDir: string;
  clientOptions: ClientOptions;
  /** TLS to the Samplers (their certificates' CA, the name in them); plaintext when absent. */
  samplerTls?: ClientTls;
  retryForMs?: number;
}

const TERMINAL: ReadonlySet<RunStatus> = new Set(["stopped", "finished", "failed"]);

/** How long StartRun waits for a Rewarder or Sampler to answer, ms. */
const REACHABLE_TIMEOUT_MS = 10_000;

/** The most epochs a run may ask for. */
const MAX_EPOCHS = 100_000;

/** The run id a client's request_id maps to: a UUID (version 8) from its SHA-256. */
function runIdForRequest(requestId: string): string {
  const h = new Bun.CryptoHasher("sha256").update(`ddpo.v1.Trainer/StartRun ${requestId}`).digest("hex");
  const variant = ((Number.parseInt(h[16]!, 16) & 0x3) | 0x8).toString(16);
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-8${h.slice(13, 16)}-${variant}${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

function invalid(message: string): never {
  throw new ServiceError(Code.INVALID_ARGUMENT, message);
}

type RunEventInit = MessageInitShape<typeof RunEventSchema>;

function eventMessage(runId: string, e: RunEventPayload): RunEventInit {
  const base = { runId, time: timestampNow() };
  if (e.kind === "epoch") return { ...base, event: { case: "epoch", value: e.epoch! } };
  if (e.kind === "progress") return { ...base, event: { case: "progress", value: e.progress! } };
  if (e.kind === "evaluation") return { ...base, event: { case: "evaluation", value: e.evaluation! } };
  return {
    ...base,
    event: { case: "status", value: { status: runStatusMessage(e.status!.status), message: e.status!.message } },
  };
}

/** NOT_FOUND unless the reward source's Rewarder (or the default one) lists its reward name. */
async function assertRewardServed(r: RewardSpec, i: number, o: TrainerServiceOptions): Promise<void> {
  const address = r.endpoint || o.defaultRewarderAddress;
  const rewarder = createClient(Rewarder, address, o.clientOptions);
  try {
    // No waitForReady: an address nothing listens on is UNAVAILABLE now, not DEADLINE_EXCEEDED later.
    const { rewards } = await rewarder.listRewards({}, { timeoutMs: REACHABLE_TIMEOUT_MS });
    if (!rewards.some((known) => known.name === r.name)) {
      const names = rewards.map((known) => known.name).join(", ");
      throw new ServiceError(
        Code.NOT_FOUND,
        `rewards[${i}]: the Rewarder at ${address} has no reward '${r.name}'; it has: ${echoed(names)}`,
      );
    }
  } catch (e) {
    if (e instanceof ServiceError && e.code !== Code.NOT_FOUND) {
      throw new ServiceError(e.code, `rewards[${i}]: the Rewarder at ${address}: ${e.message}`);
    }
    throw e;
  } finally {
    rewarder.close();
  }
}

/**
 * A registered checkpoint a new run may start from: NOT_FOUND when it is not registered; its
 * lineage (asked of the Registry, which owns checkpoints) must end at the base model in
 * `baseModelDir`, and a LoRA checkpoint needs a LoRA run of the same rank (a full one a full run),
 * since the run continues that policy.
 */
async function assertContinuable(
  registry: ServiceClient<typeof Registry.method>,
  id: string,
  baseModelDir: string,
  config: DdpoConfig,
) {
  const chain = await registry
    .getLineage({ checkpointId: id }, { timeoutMs: 30_000, waitForReady: true })
    .then((r) => r.ancestry)
    .catch((e: unknown) => {
      if (e instanceof ServiceError && e.code === Code.NOT_FOUND) return [];
      throw e;
    });
  const start = chain[0];
  const root = chain.at(-1);
  if (!start || !root) throw new ServiceError(Code.NOT_FOUND, `base_checkpoint_id ${id} is not registered`);
  const [rootDir, givenDir] = await Promise.all([
    realpath(root.location).catch(() => root.location),
    realpath(baseModelDir),
  ]);
  if (root.kind !== CheckpointKind.BASE || rootDir !== givenDir) {
    invalid(
      `base_checkpoint_id ${id} descends from ${root.id} at ${root.location}, not from base_model_dir ${baseModelDir}`,
    );
  }
  if (start.kind === CheckpointKind.FULL && config.lora) {
    invalid(`base_checkpoint_id ${id} is a full fine-tune; set config.full`);
  }
  if (start.kind === CheckpointKind.LORA) {
    if (!config.lora) invalid(`base_checkpoint_id ${id} is a LoRA checkpoint; config must fine-tune LoRA`);
    const adapter = await readFile(join(start.location, "lora", "adapter_config.json"), "utf8")
      .then((text) => JSON.parse(text) as { r?: unknown })
      .catch(() => null);
    if (adapter?.r !== config.lora.rank) {
      invalid(
        `base_checkpoint_id ${id} has LoRA rank ${adapter?.r ?? "unknown"}; config.lora.rank is ${config.lora.rank}`,
      );
    }
  }
}

/** UNAVAILABLE unless a Sampler answers GetStatus at `address`. */
async function assertSamplerReachable(address: string, o: TrainerServiceOptions): Promise<void> {
  let sampler: ServiceClient<typeof Sampler.method>;
  try {
    sampler = createClient(Sampler, address, samplerClientOptions(address, o.clientOptions, o.samplerTls));
  } catch (e) {
    // A target the Trainer's Sampler settings cannot reach (TLS to a bare IP address, say).
    throw new ServiceError(Code.INVALID_ARGUMENT, `the Sampler at ${address}: ${(e as Error).message}`);
  }
  try {
    await sampler.getStatus({}, { timeoutMs: REACHABLE_TIMEOUT_MS });
  } catch (e) {
    if (!(e instanceof ServiceError)) throw e;
    throw new ServiceError(e.code, `the Sampler at ${address}: ${e.message}`);
  } finally {
    sampler.close();
  }
}

/** A StartRun request checked field by field, defaults filled in: nothing probed or written yet. */
interface RunRequest {
  name: string;
  requestId: string;
  baseModelDir: string;
  baseCheckpointId: string;
  promptSet: string;
  epochs: number;
  config: DdpoConfig;
  rewards: RewardSpec[];
  /** As given: empty means the Trainer's default Samplers at each (re)start. */
  samplers: string[];
}

/** INVALID_ARGUMENT (or NOT_FOUND for a base model folder that is not one) naming the field. */
function checkedStartRun(request: StartRunRequest): RunRequest {
  if (!request.baseModelDir) invalid("base_model_dir is required");
  checkedText(request.name, "name");
  checkedText(request.requestId, "request_id");
  checkedText(request.baseModelDir, "base_model_dir", MAX_PATH_CHARS);
  if (request.baseCheckpointId !== undefined) checkedText(request.baseCheckpointId, "base_checkpoint_id");
  checkedText(request.promptSet, "prompt_set");
  request.rewards.forEach((r, i) => {
    checkedText(r.rewardName, `rewards[${i}].reward_name`);
    if (r.endpoint) checkedEndpoint(r.endpoint, `rewards[${i}].endpoint`);
  });
  request.samplerEndpoints.forEach((e, i) => {
    checkedTarget(e, `sampler_endpoints[${i}]`);
  });
  const baseModelDir = resolve(request.baseModelDir);
  const weights = join(baseModelDir, "unet", "diffusion_pytorch_model.safetensors");
  if (!existsSync(weights))
    throw new ServiceError(Code.NOT_FOUND, `${baseModelDir}: no unet weights (not a model folder)`);
  const promptSet = request.promptSet || "animals";
  let prompts: readonly string[] = [];
  try {
    prompts = promptSetByName(promptSet).prompts;
  } catch (e) {
    invalid(`prompt_set: ${(e as Error).message}`);
  }
  if (!(request.epochs >= 1 && request.epochs <= MAX_EPOCHS)) invalid(`epochs must be in 1..${MAX_EPOCHS}`);
  const config = checkedConfig(request.config);
  if (config.evaluation) {
    const problems = evaluationProblems(config.evaluation, prompts);
    if (problems.length) invalid(`config.evaluation: ${problems.join("; ")}`);
  }
  return {
    name: request.name,
    requestId: request.requestId,
    baseModelDir,
    baseCheckpointId: request.baseCheckpointId ?? "",
    promptSet,
    epochs: request.epochs,
    config,
    rewards: checkedRewards(request.rewards),
    samplers: [...request.samplerEndpoints],
  };
}

/** The DdpoConfig message over the defaults, every value finite and in range. */
function checkedConfig(message: StartRunRequest["config"]): DdpoConfig {
  let config: DdpoConfig;
  try {
    config = ddpoConfigFromMessage(message);
  } catch (e) {
    invalid((e as Error).message);
  }
  // validateConfig checks ranges only: Infinity passes "> 0" and would diverge mid-run.
  for (const [field, value] of [
    ...Object.entries(config),
    ...Object.entries(config.lora ?? {}).map(([k, v]) => [`lora.${k}`, v]),
  ]) {
    if (typeof value === "number" && !Number.isFinite(value)) invalid(`config.${field} must be finite, got ${value}`);
  }
  return config;
}

/** The run's reward terms; none given: jpeg_compressibility from the default Rewarder. */
function checkedRewards(sources: StartRunRequest["rewards"]): RewardSpec[] {
  if (sources.length === 0) return [{ endpoint: "", name: "jpeg_compressibility", weight: 1 }];
  return sources.map((r, i) => {
    if (!r.rewardName) invalid(`rewards[${i}].reward_name is required`);
    const weight = r.weight ?? 1;
    if (!Number.isFinite(weight)) invalid(`rewards[${i}].weight must be finite`);
    return { endpoint: r.endpoint, name: r.rewardName, weight };
  });
}

/** The run's Samplers (or the Trainer's defaults) all answer; FAILED_PRECONDITION when there are none. */
async function assertSamplersReachable(samplers: readonly string[], o: TrainerServiceOptions): Promise<void> {
  const reachable = samplers.length ? samplers : o.defaultSamplers;
  if (reachable.length === 0)
    throw new ServiceError(Code.FAILED_PRECONDITION, "no Sampler endpoints given or configured");
  await Promise.all(reachable.map((address) => assertSamplerReachable(address, o)));
}

export function trainerService(o: TrainerServiceOptions) {
  const controllers = new Map<string, RunController>();
  const registry = createClient(Registry, o.registryAddress, o.clientOptions);

  const launch = (runId: string, settings: RunSettings, rewards: RewardSpec[], promptSet: string, base: string) => {
    const controller = new RunController(runId, settings, rewards, promptSet, base, {
      db: o.db,
      recorder: o.recorder,
      registryAddress: o.registryAddress,
      defaultRewarderAddress: o.defaultRewarderAddress,
      defaultSamplers: o.defaultSamplers,
      clientOptions: o.clientOptions,
      samplerTls: o.samplerTls,
      retryForMs: o.retryForMs ?? 120_000,
    });
    controllers.set(runId, controller);
    controller.start();
    controller.finished.finally(() => {
      if (controllers.get(runId) === controller) controllers.delete(runId);
    });
    return controller;
  };

  // StartRun (one request_id) and ResumeRun (one run) one at a time per id, so two calls cannot
  // both find nothing running and start two controllers.
  const busy = new Map<string, Promise<unknown>>();
  const oneAtATime = <T>(key: string, fn: () => Promise<T>): Promise<T> => {
    const next = (busy.get(key) ?? Promise.resolve()).catch(() => undefined).then(fn);
    busy.set(key, next);
    next
      .finally(() => {
        if (busy.get(key) === next) busy.delete(key);
      })
      .catch(() => undefined);
    return next;
  };

  /** Starts the controller of a recorded run from its last checkpoint. */
  const resume = async (runId: string, epochs?: number, samplers?: readonly string[]): Promise<void> => {
    const active = controllers.get(runId);
    if (active) {
      if (epochs !== undefined && epochs !== active.settings.epochs) {
        throw new ServiceError(
          Code.FAILED_PRECONDITION,
          `run ${runId} is ${active.status} with a budget of ${active.settings.epochs} epochs; StopRun it before changing the budget`,
        );
      }
      if (samplers !== undefined && samplers.join(",") !== active.settings.samplerEndpoints.join(",")) {
        throw new ServiceError(
          Code.FAILED_PRECONDITION,
          `run ${runId} is ${active.status}; StopRun it before giving it other Samplers`,
        );
      }
      return;
    }
    if (epochs !== undefined) {
      const done = (await databaseCall("ResumeRun", () => listEpochs(o.db, runId))).length;
      if (epochs < done) invalid(`epochs ${epochs} is below the ${done} epochs run ${runId} has done`);
    }
    if (samplers !== undefined) await assertSamplersReachable(samplers, o);
    // Pending (and the new budget) before the controller starts, so the response and a Trainer
    // restarted after a crash both see the resumed run.
    const run = await databaseCall("ResumeRun", () => reopenRun(o.db, runId, epochs, samplers));
    if (!run) throw new ServiceError(Code.NOT_FOUND, `run ${runId} does not exist`);
    let settings: RunSettings;
    try {
      settings = runSettingsFromJson(run.config);
    } catch (e) {
      throw new ServiceError(Code.FAILED_PRECONDITION, `run ${runId}: its recorded settings: ${(e as Error).message}`);
    }
    launch(runId, settings, run.rewards, run.prompt_set ?? "animals", run.base_checkpoint_id ?? "");
  };

  const runResponse = async (runId: string) => {
    const run = await databaseCall("GetRun", () => getRun(o.db, runId));
    if (!run) throw new ServiceError(Code.NOT_FOUND, `run ${runId} does not exist`);
    return { run: runMessage(run, await databaseCall("GetRun", () => listEpochs(o.db, runId))) };
  };

  /** The checkpoint a new run starts from: the one it names, or its base model, registered. */
  const startingCheckpoint = async (run: RunRequest): Promise<string> => {
    if (run.baseCheckpointId) {
      await assertContinuable(registry, run.baseCheckpointId, run.baseModelDir, run.config);
      return run.baseCheckpointId;
    }
    // The base model is a checkpoint too: the root of the run's lineage, named by the digest
    // of its folder as the Registry computes it (so an edited folder is another checkpoint).
    const id = `base-${(await digestFolder(run.baseModelDir)).sha256.slice(0, 16)}`;
    await registry.registerCheckpoint(
      { checkpoint: { id, kind: CheckpointKind.BASE, location: run.baseModelDir } },
      { timeoutMs: 30_000, waitForReady: true },
    );
    return id;
  };

  /**
   * Records the run as pending; false when this request_id already created it (the same
   * settings), ALREADY_EXISTS when it created one with other settings.
   */
  const recordNewRun = async (id: string, run: RunRequest, settings: RunSettings, baseId: string) => {
    const existed = await databaseCall("StartRun", () => getRun(o.db, id));
    try {
      await databaseCall("StartRun", () =>
        createRun(o.db, {
          id,
          name: run.name || id,
          config: runSettingsJson(settings),
          status: "pending",
          code_version: process.env.DDPO_CODE_VERSION ?? null,
          base_checkpoint_id: baseId,
          prompt_set: run.promptSet,
          rewards: run.rewards,
        }),
      );
    } catch (e) {
      if (!existed || e instanceof ServiceError) throw e;
      throw new ServiceError(
        Code.ALREADY_EXISTS,
        `request_id ${run.requestId} already started run ${id} with other settings`,
      );
    }
    return !existed;
  };

  const service = bindService(Trainer, {
    async startRun(request, context) {
      const run = checkedStartRun(request);
      // An unknown reward name would only fail the run after its first epoch's sampling.
      await Promise.all(run.rewards.map((r, i) => assertRewardServed(r, i, o)));
      await assertSamplersReachable(run.samplers, o);
      const baseId = await startingCheckpoint(run);
      const id = request.requestId ? runIdForRequest(request.requestId) : crypto.randomUUID();
      const settings: RunSettings = {
        ddpo: run.config,
        baseModelDir: run.baseModelDir,
        epochs: run.epochs,
        samplerEndpoints: run.samplers,
        runDir: RunFolder.forRun(o.dataDir, id).root,
      };
      return oneAtATime(`run:${id}`, async () => {
        // A client that gave up (deadline, cancel) gets no run: it would retry and make another.
        if (context.signal.aborted) throw context.signal.reason;
        const created = await recordNewRun(id, run, settings, baseId);
        // A retry of a started run answers with it as it is now; it is not started twice.
        if (created) launch(id, settings, run.rewards, run.promptSet, baseId);
        const samplers = settings.samplerEndpoints.length ? settings.samplerEndpoints : o.defaultSamplers;
        const { sampleBatchesPerEpoch, sampleBatchSize } = settings.ddpo;
        return {
          ...(await runResponse(id)),
          workSplit: describeSplit(sampleBatchesPerEpoch, sampleBatchSize, samplers),
        };
      });
    },

    async *watchRun({ runId, fromEpoch }, context) {
      if (!runId) invalid("run_id is required");
      checkedText(runId, "run_id");
      const run = await databaseCall("WatchRun", () => getRun(o.db, runId));
      if (!run) throw new ServiceError(Code.NOT_FOUND, `run ${runId} does not exist`);
      // Subscribe before reading history so no epoch falls between the two.
      const queue: RunEventPayload[] = [];
      let wake: (() => void) | null = null;
      const controller = controllers.get(runId);
      const unsubscribe = controller?.subscribe((e) => {
        queue.push(e);
        wake?.();
      });
      try {
        const seen = new Set<number>();
        for (const e of await databaseCall("WatchRun", () => listEpochs(o.db, runId))) {
          if (fromEpoch !== undefined && e.epoch < fromEpoch) continue;
          seen.add(e.epoch);
          yield { runId, time: timestampNow(), event: { case: "epoch", value: epochMessage(e) } };
        }
        if (!controller) {
          const current = await databaseCall("WatchRun", () => getRun(o.db, runId));
          yield eventMessage(runId, {
            kind: "status",
            status: { status: current!.status, message: current!.error ?? "" },
          });
          return;
        }
        for (;;) {
          while (queue.length) {
            const e = queue.shift()!;
            if (e.kind === "epoch" && seen.has(e.epoch!.epoch)) continue;
            yield eventMessage(runId, e);
            if (e.kind === "status" && TERMINAL.has(e.status!.status)) return;
          }
          if (context.signal.aborted) return;
          await new Promise<void>((r) => {
            wake = r;
            context.signal.addEventListener("abort", () => r(), { once: true });
          });
          wake = null;
        }
      } finally {
        unsubscribe?.();
      }
    },

    async stopRun({ runId, immediate }) {
      if (!runId) invalid("run_id is required");
      checkedText(runId, "run_id");
      const controller = controllers.get(runId);
      if (controller) await controller.stop(immediate);
      return runResponse(runId);
    },

    async resumeRun({ runId, epochs, samplerEndpoints }) {
      if (!runId) invalid("run_id is required");
      checkedText(runId, "run_id");
      if (epochs !== undefined && !(epochs >= 1 && epochs <= MAX_EPOCHS)) invalid(`epochs must be in 1..${MAX_EPOCHS}`);
      samplerEndpoints.forEach((e, i) => {
        checkedTarget(e, `sampler_endpoints[${i}]`);
      });
      const samplers = samplerEndpoints.length ? [...samplerEndpoints] : undefined;
      await oneAtATime(`run:${runId}`, () => resume(runId, epochs, samplers));
      return runResponse(runId);
    },
  });

  /** Runs left `running` by a Trainer that died: resume them (called once at start-up). */
  const resumeInterrupted = async (): Promise<string[]> => {
    const running = await listRuns(o.db, { status: "running" });
    for (const run of running) await oneAtATime(`run:${run.id}`, () => resume(run.id));
    return running.map((r) => r.id);
  };

  const close = async () => {
    await Promise.all([...controllers.values()].map((c) => c.stop(false)));
    closeIdleWorkers();
    registry.close();
  };

  return { service, resumeInterrupted, close, controllers };
}
