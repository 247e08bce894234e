// One DDPO run driven across the services (DESIGN.md §2): per epoch the engine worker plans
// prompts and seeds, the Samplers stream trajectories under the current checkpoint, the Rewarders
// score each batch as it arrives, the recorder queues every trajectory and reward for Postgres,
// the worker computes advantages and updates the policy, and the new checkpoint is saved,
// registered with its parent (lineage) and handed to the Samplers next epoch.
//
// Crash safety: an epoch's rows are flushed before its checkpoint is registered, and a resumed run
// restarts from the last registered checkpoint with the same prompt RNG, stat-tracker buffers and
// seeds, so a redone epoch reproduces its rows and the idempotent writes keep one copy of each.
import { mkdirSync } from "node:fs";
import { join } from "node:path";
import type { Kysely } from "kysely";
import { CheckpointKind } from "../gen/ddpo/v1/common_pb.ts";
import { Registry } from "../gen/ddpo/v1/registry_pb.ts";
import { Rewarder } from "../gen/ddpo/v1/rewarder_pb.ts";
import { Sampler } from "../gen/ddpo/v1/sampler_pb.ts";
import { epochRows } from "../lib/db/epoch-rows.ts";
import { getCheckpoint, listCheckpoints, recordEpoch, setRunStatus } from "../lib/db/queries.ts";
import type { TrajectoryRecorder } from "../lib/db/recorder.ts";
import type { Database, RewardSpec, RunStatus } from "../lib/db/schema.ts";
import { type ClientOptions, Code, createClient, type ServiceClient, ServiceError } from "../lib/grpc/index.ts";
import { imageGridPng } from "../lib/plots/image-grid.ts";
import { databaseCall } from "../lib/runs/database-calls.ts";
import type { RunSettings } from "../lib/runs/run-messages.ts";
import { WorkerClient } from "../lib/workers/worker-rpc.ts";
import type { TrainerWorkerHandlers } from "./engine-worker.ts";

export interface RunEventPayload {
  kind: "epoch" | "status" | "progress";
  epoch?: EpochSummary;
  status?: { status: RunStatus; message: string };
  progress?: { epoch: number; phase: string; done: number; total: number };
}

export interface EpochSummary {
  epoch: number;
  rewardMean: number;
  rewardStd: number;
  rewardMeans: Record<string, number>;
  loss: number;
  approxKl: number;
  clipFraction: number;
  seconds: number;
  samplingS: number;
  rewardS: number;
  trainingS: number;
  checkpointId: string;
  samples: number;
  optimizerSteps: number;
}

export interface RunEnvironment {
  db: Kysely<Database>;
  recorder: TrajectoryRecorder;
  registryAddress: string;
  defaultRewarderAddress: string;
  /** Used when the run names no Samplers: the Trainer's current ones, looked up at every (re)start. */
  defaultSamplers: readonly string[];
  clientOptions: ClientOptions;
  /** How long a phase keeps retrying unreachable services before the run fails, ms. */
  retryForMs: number;
}

interface SampledEpoch {
  prompts: string[];
  seeds: number[];
  inputIds: number[][];
  timesteps: number[];
  latents: Float32Array[];
  logProbs: Float32Array[];
  images: Uint8Array[];
  imageSize: number;
}

const RETRYABLE = new Set([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.FAILED_PRECONDITION, Code.ABORTED]);

function mean(xs: readonly number[]): number {
  return xs.reduce((a, b) => a + b, 0) / xs.length;
}

function std(xs: readonly number[]): number {
  const m = mean(xs);
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length);
}

// Engine workers outlive their runs. Each new worker thread leaves some 10-15 MB of thread state
// (OpenMP team, BLAS buffers, its JS heap) in the process even after its engine is closed, so a
// finished run's worker frees its engine and waits, idle, for the next run.
const idleWorkers: WorkerClient<TrainerWorkerHandlers>[] = [];
const MAX_IDLE_WORKERS = 2;

function acquireWorker(): WorkerClient<TrainerWorkerHandlers> {
  return idleWorkers.pop() ?? new WorkerClient(new URL("./engine-worker.ts", import.meta.url));
}

/** Frees the worker's engine (after the call it is busy with, if any), then keeps it for reuse. */
async function releaseWorker(worker: WorkerClient<TrainerWorkerHandlers>): Promise<void> {
  try {
    await worker.call("close", undefined as never);
  } catch {
    worker.terminate(); // it died; nothing of it to reuse
    return;
  }
  if (idleWorkers.length < MAX_IDLE_WORKERS) idleWorkers.push(worker);
  else worker.terminate();
}

/** Ends the idle workers (when the Trainer shuts down). */
export function closeIdleWorkers(): void {
  for (const worker of idleWorkers.splice(0)) worker.terminate();
}

export class RunController {
  readonly #listeners = new Set<(e: RunEventPayload) => void>();
  readonly #worker: WorkerClient<TrainerWorkerHandlers>;
  readonly #samplerAddresses: readonly string[];
  readonly #samplers: ServiceClient<typeof Sampler.method>[];
  readonly #rewarders = new Map<string, ServiceClient<typeof Rewarder.method>>();
  readonly #registry: ServiceClient<typeof Registry.method>;
  #stopRequested = false;
  #status: RunStatus = "pending";
  #done: Promise<void> | null = null;
  readonly #abort = new AbortController();

  constructor(
    readonly runId: string,
    readonly settings: RunSettings,
    readonly rewards: readonly RewardSpec[],
    readonly promptSet: string,
    readonly baseCheckpointId: string,
    readonly env: RunEnvironment,
  ) {
    this.#worker = acquireWorker();
    this.#samplerAddresses = settings.samplerEndpoints.length ? settings.samplerEndpoints : env.defaultSamplers;
    this.#samplers = this.#samplerAddresses.map((a) => createClient(Sampler, a, env.clientOptions));
    this.#registry = createClient(Registry, env.registryAddress, env.clientOptions);
    for (const r of rewards) {
      const address = r.endpoint || env.defaultRewarderAddress;
      if (!this.#rewarders.has(address))
        this.#rewarders.set(address, createClient(Rewarder, address, env.clientOptions));
    }
  }

  get status(): RunStatus {
    return this.#status;
  }

  subscribe(listener: (e: RunEventPayload) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  #emit(e: RunEventPayload): void {
    for (const l of this.#listeners) l(e);
  }

  async #setStatus(status: RunStatus, message = ""): Promise<void> {
    this.#status = status;
    await this.#recording("recording the run's status", () =>
      setRunStatus(this.env.db, this.runId, status, status === "failed" ? message : null),
    ).catch(() => undefined);
    this.#emit({ kind: "status", status: { status, message } });
  }

  /** Starts (or resumes) the loop in the background; `finished` resolves when it ends. */
  start(): void {
    this.#done ??= this.#run();
  }

  get finished(): Promise<void> {
    return this.#done ?? Promise.resolve();
  }

  /** Graceful: after the current epoch's checkpoint. Immediate: now (the epoch is redone on resume). */
  async stop(immediate: boolean): Promise<void> {
    this.#stopRequested = true;
    if (immediate) {
      this.#abort.abort(new ServiceError(Code.CANCELLED, "run stopped"));
      // The run loop sees its worker call rejected now; the worker is released (its engine
      // freed) once the call it is busy with ends.
      this.#worker.abandonCalls(new Error("run stopped"));
    }
    await this.finished.catch(() => undefined);
  }

  async #run(): Promise<void> {
    try {
      await this.#setStatus("running");
      if (this.#samplers.length === 0) throw new Error("no Sampler endpoints in the run or configured in the Trainer");
      const start = await this.#startingPolicy();
      await this.#engine("init", {
        baseModelDir: this.settings.baseModelDir,
        config: this.settings.ddpo,
        promptSet: this.promptSet,
        start,
      });
      let policy = await this.#restoreLatest(start);
      let epoch = policy.epoch;
      while (epoch < this.settings.epochs && !this.#stopRequested) {
        policy = await this.#epoch(epoch + 1, policy);
        epoch = policy.epoch;
      }
      await this.#setStatus(this.#stopRequested && epoch < this.settings.epochs ? "stopped" : "finished");
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (this.#stopRequested) await this.#setStatus("stopped", message);
      else await this.#setStatus("failed", message);
    } finally {
      void releaseWorker(this.#worker);
      for (const c of [...this.#samplers, ...this.#rewarders.values(), this.#registry]) c.close();
    }
  }

  /**
   * Where the policy's weights are in the checkpoint the run starts from: none for a base model,
   * the folder's lora/ or model/ when it continues an earlier run's policy.
   */
  async #startingPolicy(): Promise<{ loraDir?: string; fullModelDir?: string }> {
    const base = await this.#recording("reading the base checkpoint", () =>
      getCheckpoint(this.env.db, this.baseCheckpointId),
    );
    if (!base) throw new Error(`base checkpoint ${this.baseCheckpointId} is not registered`);
    if (base.kind === "lora") return { loraDir: join(base.location, "lora") };
    if (base.kind === "full") return { fullModelDir: join(base.location, "model") };
    return {};
  }

  /** The run's newest registered checkpoint, restored into the worker; the starting policy when none. */
  async #restoreLatest(start: { loraDir?: string; fullModelDir?: string }): Promise<Policy> {
    const all = await this.#recording("reading the run's checkpoints", () =>
      listCheckpoints(this.env.db, { runId: this.runId }),
    );
    const mine = all.filter((c) => c.kind !== "base");
    const latest = mine.sort((a, b) => (a.epoch ?? 0) - (b.epoch ?? 0)).at(-1);
    if (!latest) return { id: this.baseCheckpointId, epoch: 0, ...start };
    const { epoch } = await this.#engine("restore", { dir: latest.location });
    const lora = this.settings.ddpo.lora !== null;
    return {
      id: latest.id,
      epoch,
      loraDir: lora ? join(latest.location, "lora") : undefined,
      fullModelDir: lora ? undefined : join(latest.location, "model"),
    };
  }

  /** A call into the engine worker; refused once the run was stopped immediately. */
  #engine<K extends keyof TrainerWorkerHandlers & string>(
    method: K,
    args: Parameters<TrainerWorkerHandlers[K]>[0],
  ): Promise<Awaited<ReturnType<TrainerWorkerHandlers[K]>>> {
    if (this.#abort.signal.aborted) return Promise.reject(this.#abort.signal.reason);
    return this.#worker.call(method, args);
  }

  /** A database call, retried (like a service call) while Postgres is unreachable or restarting. */
  #recording<T>(phase: string, fn: () => Promise<T>): Promise<T> {
    return this.#retrying(phase, () => databaseCall(phase, fn));
  }

  /** Retries `fn` while the services it calls are unreachable or restarting. */
  async #retrying<T>(phase: string, fn: () => Promise<T>): Promise<T> {
    const until = Date.now() + this.env.retryForMs;
    let delay = 250;
    for (;;) {
      try {
        return await fn();
      } catch (e) {
        const code = e instanceof ServiceError ? e.code : null;
        if (this.#abort.signal.aborted || code === null || !RETRYABLE.has(code) || Date.now() > until) {
          throw new Error(`${phase}: ${(e as Error).message}`);
        }
        await Bun.sleep(delay);
        delay = Math.min(delay * 2, 4000);
      }
    }
  }

  async #sample(epoch: number, policy: Policy, plan: { prompts: string[]; seeds: number[] }[]): Promise<SampledEpoch> {
    const c = this.settings.ddpo;
    const total = plan.reduce((a, b) => a + b.prompts.length, 0);
    const out: SampledEpoch = {
      prompts: [],
      seeds: [],
      inputIds: [],
      timesteps: [],
      latents: [],
      logProbs: [],
      images: [],
      imageSize: 0,
    };
    // Batches go round-robin to the Samplers; each Sampler gets the policy before sampling.
    const parts = this.#samplers.map(() => ({ prompts: [] as string[], seeds: [] as number[], at: [] as number[] }));
    let position = 0;
    plan.forEach((batch, k) => {
      const part = parts[k % parts.length]!;
      batch.prompts.forEach((p, i) => {
        part.prompts.push(p);
        part.seeds.push(batch.seeds[i]!);
        part.at.push(position++);
      });
    });
    const slots = new Array<SampledEpoch | null>(total).fill(null);
    let done = 0;
    await Promise.all(
      parts.map((part, s) =>
        part.prompts.length === 0
          ? Promise.resolve()
          : this.#retrying(`sampling on ${this.#samplerAddresses[s]}`, async () => {
              const sampler = this.#samplers[s]!;
              const options = { signal: this.#abort.signal, waitForReady: true, timeoutMs: 30_000 };
              await sampler.loadCheckpoint(
                {
                  checkpointId: policy.id,
                  baseModelDir: this.settings.baseModelDir,
                  loraDir: policy.loraDir,
                  fullModelDir: policy.fullModelDir,
                },
                options,
              );
              let i = 0;
              for await (const t of sampler.sample(
                {
                  prompts: part.prompts,
                  seeds: part.seeds.map(BigInt),
                  steps: c.steps,
                  guidance: c.guidance,
                  eta: c.eta,
                  checkpointId: policy.id,
                  includeLatents: true,
                  batchSize: c.sampleBatchSize,
                },
                { signal: this.#abort.signal },
              )) {
                if (!t.latents || !t.image)
                  throw new ServiceError(Code.INTERNAL, "trajectory without latents or image");
                const bytes = t.latents.data;
                const latents = new Float32Array(
                  bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength),
                );
                const slot = part.at[i++]!;
                if (!slots[slot]) done += 1;
                slots[slot] = {
                  prompts: [t.prompt],
                  seeds: [Number(t.seed)],
                  inputIds: [t.inputIds],
                  timesteps: t.timesteps,
                  latents: [latents],
                  logProbs: [Float32Array.from(t.logProbs)],
                  images: [t.image.rgb],
                  imageSize: t.image.width,
                };
                this.#emit({ kind: "progress", progress: { epoch, phase: "sampling", done, total } });
              }
              if (i !== part.prompts.length)
                throw new ServiceError(Code.ABORTED, `sampler sent ${i} of ${part.prompts.length}`);
            }),
      ),
    );
    for (const s of slots) {
      if (!s) throw new Error("sampling: a trajectory is missing");
      out.prompts.push(s.prompts[0]!);
      out.seeds.push(s.seeds[0]!);
      out.inputIds.push(s.inputIds[0]!);
      out.latents.push(s.latents[0]!);
      out.logProbs.push(s.logProbs[0]!);
      out.images.push(s.images[0]!);
      out.timesteps = s.timesteps;
      out.imageSize = s.imageSize;
    }
    return out;
  }

  /** Each reward source's scores for all samples, and the weighted sum. */
  async #score(sampled: SampledEpoch): Promise<{ combined: Float64Array; perReward: Map<RewardSpec, number[]> }> {
    const n = sampled.prompts.length;
    const perReward = new Map<RewardSpec, number[]>();
    await Promise.all(
      this.rewards.map((r) => {
        const address = r.endpoint || this.env.defaultRewarderAddress;
        return this.#retrying(`reward ${r.name} at ${address}`, async () => {
          const response = await this.#rewarders.get(address)!.score(
            {
              rewardName: r.name,
              images: sampled.prompts.map((prompt, i) => ({
                prompt,
                image: { width: sampled.imageSize, height: sampled.imageSize, rgb: sampled.images[i]! },
              })),
            },
            { signal: this.#abort.signal, timeoutMs: 120_000, waitForReady: true },
          );
          if (response.scores.length !== n || !response.scores.every(Number.isFinite)) {
            throw new Error(
              `reward ${r.name} at ${address}: ${response.scores.length} scores for ${n} images (all must be finite)`,
            );
          }
          perReward.set(r, response.scores);
        });
      }),
    );
    const combined = new Float64Array(n);
    for (const [r, scores] of perReward) {
      for (let i = 0; i < n; i++) combined[i]! += r.weight * scores[i]!;
    }
    return { combined, perReward };
  }

  async #epoch(epoch: number, policy: Policy): Promise<Policy> {
    const started = performance.now();
    const { batches } = await this.#engine("plan", undefined as never);
    const sampled = await this.#sample(epoch, policy, batches);
    const t1 = performance.now();
    this.#emit({ kind: "progress", progress: { epoch, phase: "rewards", done: 0, total: sampled.prompts.length } });
    const { combined, perReward } = await this.#score(sampled);
    const t2 = performance.now();
    const advantages = await this.#engine("advantages", { prompts: sampled.prompts, rewards: combined });
    this.#record(epoch, policy.id, sampled, combined, advantages, perReward);
    this.#emit({ kind: "progress", progress: { epoch, phase: "training", done: 0, total: sampled.prompts.length } });
    const update = await this.#engine("update", {
      prompts: sampled.prompts,
      timesteps: sampled.timesteps,
      latents: sampled.latents,
      logProbs: sampled.logProbs,
      rewards: combined,
      advantages,
    });
    const t3 = performance.now();
    if (update.epoch !== epoch) throw new Error(`trainer worker is at epoch ${update.epoch}, expected ${epoch}`);
    const next = await this.#saveCheckpoint(epoch, policy);
    const rewardMeans = Object.fromEntries([...perReward].map(([r, s]) => [r.name, mean(s)]));
    const summary: EpochSummary = {
      epoch,
      rewardMean: mean([...combined]),
      rewardStd: std([...combined]),
      rewardMeans,
      loss: update.stats.loss,
      approxKl: update.stats.approxKl,
      clipFraction: update.stats.clipFraction,
      seconds: (performance.now() - started) / 1000,
      samplingS: (t1 - started) / 1000,
      rewardS: (t2 - t1) / 1000,
      trainingS: (t3 - t2) / 1000,
      checkpointId: next.id,
      samples: sampled.prompts.length,
      optimizerSteps: update.stats.optimizerSteps,
    };
    await this.#recording("recording the epoch", () =>
      recordEpoch(this.env.db, {
        run_id: this.runId,
        epoch,
        reward_mean: summary.rewardMean,
        reward_std: summary.rewardStd,
        loss: summary.loss,
        approx_kl: summary.approxKl,
        clip_fraction: summary.clipFraction,
        sampling_s: summary.samplingS,
        reward_s: summary.rewardS,
        training_s: summary.trainingS,
        seconds: summary.seconds,
        checkpoint_id: next.id,
        samples: summary.samples,
      }),
    );
    this.#emit({ kind: "epoch", epoch: summary });
    return next;
  }

  #record(
    epoch: number,
    checkpointId: string,
    s: SampledEpoch,
    combined: Float64Array,
    advantages: Float64Array,
    perReward: Map<RewardSpec, number[]>,
  ): void {
    const terms = [...perReward].map(([r, scores]) => ({
      name: r.name,
      source: r.endpoint || this.env.defaultRewarderAddress,
      weight: r.weight,
      scores,
    }));
    this.env.recorder.add(epochRows(this.runId, epoch, checkpointId, { ...s, rewards: combined, advantages }, terms));
    // A grid of this epoch's images next to the checkpoints, for people.
    const size = s.imageSize;
    const rgb = new Uint8Array(s.images.length * size * size * 3);
    for (const [i, img] of s.images.entries()) rgb.set(img, i * size * size * 3);
    mkdirSync(join(this.settings.runDir, "samples"), { recursive: true });
    imageGridPng(join(this.settings.runDir, "samples", `epoch-${String(epoch).padStart(4, "0")}.png`), rgb, {
      cols: 8,
      scale: 3,
      height: size,
      width: size,
      captions: s.prompts.map((p, i) => `${p} ${combined[i]!.toFixed(2)}`),
    }).catch(() => undefined);
  }

  async #saveCheckpoint(epoch: number, parent: Policy): Promise<Policy> {
    const dir = join(this.settings.runDir, "checkpoints", `epoch-${String(epoch).padStart(4, "0")}`);
    const saved = await this.#engine("save", { dir });
    // Rows first: a registered checkpoint means its epoch's trajectories are in the database.
    await this.env.recorder.flush();
    const id = `${this.runId}/epoch-${epoch}`;
    await this.#retrying("registering the checkpoint", () =>
      this.#registry.registerCheckpoint(
        {
          checkpoint: {
            id,
            parentId: parent.id,
            runId: this.runId,
            epoch,
            kind: saved.loraDir ? CheckpointKind.LORA : CheckpointKind.FULL,
            // sha256 and size_bytes left unset: the Registry hashes the folder it will serve.
            location: dir,
          },
        },
        { waitForReady: true, timeoutMs: 30_000 },
      ),
    );
    return { id, epoch, loraDir: saved.loraDir, fullModelDir: saved.fullModelDir };
  }
}

interface Policy {
  id: string;
  epoch: number;
  loraDir?: string;
  fullModelDir?: string;
}
