// One DDPO run driven across the services: the epoch pipeline (lib/ddpo/pipeline.ts) with its
// steps over gRPC and the engine worker. Per epoch the worker plans prompts and seeds, the
// Samplers stream trajectories under the current checkpoint, the Rewarders score them, the worker
// computes and keeps the advantages, the recorder queues every trajectory and reward for Postgres,
// the worker updates the policy and saves it, and the checkpoint is registered with the Registry
// (lineage) and handed to the Samplers next epoch (docs/DESIGN.md §2).
//
// Ownership (docs/DESIGN.md §7): the Trainer writes runs, epochs, trajectories and rewards; it
// reads checkpoints only through the Registry, which owns them. Samplers read checkpoint folders
// from the shared checkpoint store by the paths the Registry recorded.
//
// Crash safety: an epoch's rows are flushed before its checkpoint is registered, and a resumed run
// restarts from the last registered checkpoint with the same prompt RNG, stat-tracker buffers and
// seeds, so a redone epoch reproduces its rows and the idempotent writes keep one copy of each.
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fromJson, toJson } from "@bufbuild/protobuf";
import type { Kysely } from "kysely";
import { CheckpointKind } from "../gen/ddpo/v1/common_pb.ts";
import { type Checkpoint, Registry } from "../gen/ddpo/v1/registry_pb.ts";
import { Rewarder } from "../gen/ddpo/v1/rewarder_pb.ts";
import { type EpochReport, EpochReportSchema, type EvaluationReport } from "../gen/ddpo/v1/run_pb.ts";
import { Sampler } from "../gen/ddpo/v1/sampler_pb.ts";
import { writeFileAtomic } from "../lib/checkpoints/atomic-file.ts";
import { epochRows } from "../lib/db/epoch-rows.ts";
import {
  evaluationByEpoch,
  listEpochs,
  recordEpoch,
  recordEvaluation,
  setRunBest,
  setRunStatus,
} from "../lib/db/queries.ts";
import type { TrajectoryRecorder } from "../lib/db/recorder.ts";
import type { Database, RewardSpec, RunStatus } from "../lib/db/schema.ts";
import {
  type EvaluationSummary,
  evaluationDue,
  type GuardVerdict,
  guardVerdict,
  type HeldOutEvaluation,
  rewardRows,
} from "../lib/ddpo/evaluation.ts";
import {
  checkScores,
  combineTerms,
  type EpochSteps,
  type ProgressListener,
  runEpoch,
  type SampledEpoch,
  type ScoredEpoch,
} from "../lib/ddpo/pipeline.ts";
import type { SampleBatchPlan } from "../lib/ddpo/trainer.ts";
import {
  balancedTarget,
  type ClientOptions,
  type ClientTls,
  Code,
  createClient,
  type ServiceClient,
  ServiceError,
} from "../lib/grpc/index.ts";
import { databaseCall } from "../lib/runs/database-calls.ts";
import { RunFolder, runCheckpointId } from "../lib/runs/run-folder.ts";
import type { RunSettings } from "../lib/runs/run-messages.ts";
import { epochRow, evaluationMessages } from "../lib/runs/run-messages.ts";
import { WorkerClient } from "../lib/workers/worker-rpc.ts";
import type { TrainerWorkerHandlers } from "./engine-worker.ts";
import { drawChunks, planChunks, type SampleChunk, samplerClientOptions } from "./sampler-fleet.ts";

export interface RunEventPayload {
  kind: "epoch" | "status" | "progress" | "evaluation";
  epoch?: EpochReport;
  evaluation?: EvaluationReport;
  status?: { status: RunStatus; message: string };
  progress?: { epoch: number; phase: string; done: number; total: number };
}

export interface RunEnvironment {
  db: Kysely<Database>;
  recorder: TrajectoryRecorder;
  registryAddress: string;
  defaultRewarderAddress: string;
  /** Used when the run names no Samplers: the Trainer's current ones, looked up at every (re)start. */
  defaultSamplers: readonly string[];
  clientOptions: ClientOptions;
  /** TLS to the Samplers (their certificates' CA, the name in them); plaintext when absent. */
  samplerTls?: ClientTls;
  /** How long a phase keeps retrying unreachable services before the run fails, ms. */
  retryForMs: number;
}

/** The policy the Samplers sample with: a registered checkpoint and where its weights are. */
interface Policy {
  id: string;
  epoch: number;
  loraDir?: string;
  fullModelDir?: string;
}

/** One trajectory as a Sampler streamed it. */
interface StreamedTrajectory {
  prompt: string;
  seed: number;
  inputIds: number[];
  timesteps: number[];
  latents: Float32Array;
  logProbs: Float32Array;
  image: Uint8Array;
  imageSize: number;
}

const RETRYABLE = new Set([Code.UNAVAILABLE, Code.DEADLINE_EXCEEDED, Code.FAILED_PRECONDITION, Code.ABORTED]);

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
  readonly #samplers: ServiceClient<typeof Sampler.method>[] = [];
  /** A Sampler target the Trainer's settings cannot call (TLS to an IP address without a name). */
  #samplerProblem: string | null = null;
  readonly #rewarders = new Map<string, ServiceClient<typeof Rewarder.method>>();
  readonly #registry: ServiceClient<typeof Registry.method>;
  readonly #folder: RunFolder;
  #stopRequested = false;
  #status: RunStatus = "pending";
  #done: Promise<void> | null = null;
  readonly #abort = new AbortController();
  /** The policy the next epoch samples with. */
  #policy: Policy | null = null;
  /** Stopped by the guard (its reason is kept as the run's error). */
  #stoppedEarly = false;

  constructor(
    readonly runId: string,
    readonly settings: RunSettings,
    readonly rewards: readonly RewardSpec[],
    readonly promptSet: string,
    readonly baseCheckpointId: string,
    readonly env: RunEnvironment,
  ) {
    this.#worker = acquireWorker();
    this.#folder = new RunFolder(settings.runDir);
    this.#samplerAddresses = settings.samplerEndpoints.length ? settings.samplerEndpoints : env.defaultSamplers;
    for (const a of this.#samplerAddresses) {
      try {
        this.#samplers.push(createClient(Sampler, a, samplerClientOptions(a, env.clientOptions, env.samplerTls)));
      } catch (e) {
        // The run fails with it (below) rather than the Trainer, e.g. a run resumed at start-up.
        this.#samplerProblem ??= `the Sampler at ${a}: ${(e as Error).message}`;
      }
    }
    this.#registry = createClient(Registry, env.registryAddress, env.clientOptions);
    for (const r of rewards) {
      const address = this.#rewarderAddress(r);
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
      setRunStatus(this.env.db, this.runId, status, status === "failed" || this.#stoppedEarly ? message : null),
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
      if (this.#samplerProblem) throw new Error(this.#samplerProblem);
      if (this.#samplers.length === 0) throw new Error("no Sampler endpoints in the run or configured in the Trainer");
      const start = await this.#startingPolicy();
      await this.#engine("init", {
        baseModelDir: this.settings.baseModelDir,
        config: this.settings.ddpo,
        promptSet: this.promptSet,
        start,
      });
      this.#policy = await this.#restoreLatest(start);
      const steps = this.#steps();
      const progress: ProgressListener = (phase, done, total) =>
        this.#emit({ kind: "progress", progress: { epoch: this.#policy!.epoch + 1, phase, done, total } });
      while (this.#policy.epoch < this.settings.epochs && !this.#stopRequested) {
        const { verdict } = await runEpoch(steps, this.#policy.epoch + 1, progress);
        if (verdict?.stop) {
          this.#stoppedEarly = true;
          await this.#setStatus("stopped", `stopped early: ${verdict.stop}`);
          return;
        }
      }
      const unfinished = this.#policy.epoch < this.settings.epochs;
      await this.#setStatus(this.#stopRequested && unfinished ? "stopped" : "finished");
    } catch (e) {
      const message = e instanceof Error ? e.message : String(e);
      if (this.#stopRequested) await this.#setStatus("stopped", message);
      else await this.#setStatus("failed", message);
    } finally {
      void releaseWorker(this.#worker);
      for (const c of [...this.#samplers, ...this.#rewarders.values(), this.#registry]) c.close();
    }
  }

  /** The pipeline's steps across the services. */
  #steps(): EpochSteps {
    const heldOut = this.settings.ddpo.evaluation;
    return {
      ...(heldOut ? { evaluate: (epoch: number) => this.#evaluate(epoch, heldOut) } : {}),
      plan: async () => (await this.#engine("plan", undefined as never)).batches,
      sample: (_epoch, plan, progress) => this.#sample(plan, progress),
      score: (_epoch, sampled) => this.#score(sampled),
      advantages: (_epoch, prompts, rewards) => this.#engine("advantages", { prompts, rewards }),
      record: async (epoch, sampled, scored, advantages) => this.#record(epoch, sampled, scored, advantages),
      update: async (epoch, sampled) => {
        const { timesteps, latents, logProbs } = sampled;
        const update = await this.#engine("update", { timesteps, latents, logProbs });
        if (update.epoch !== epoch) throw new Error(`trainer worker is at epoch ${update.epoch}, expected ${epoch}`);
        return update.stats;
      },
      checkpoint: (epoch, report) => this.#checkpoint(epoch, report),
      report: async (report) => {
        await this.#recording("recording the epoch", () => recordEpoch(this.env.db, epochRow(this.runId, report)));
        this.#emit({ kind: "epoch", epoch: report });
      },
    };
  }

  /**
   * The held-out evaluation after `epoch` epochs when due: images and content check from the
   * worker, rewards from the run's Rewarders, rows to Postgres, an evaluation event; then the
   * guard's verdict over every evaluation recorded for the run up to `epoch`.
   */
  async #evaluate(epoch: number, e: HeldOutEvaluation): Promise<GuardVerdict> {
    const read = () => this.#recording("reading the evaluations", () => evaluationByEpoch(this.env.db, this.runId));
    if (evaluationDue(e, epoch)) {
      const h = await this.#engine("evaluate", undefined as never);
      const scored = await this.#score({ prompts: h.prompts, images: h.pixels, imageSize: h.imageSize });
      const rows = [...scored.terms.flatMap((t) => rewardRows(h, t.name, t.scores)), ...h.content];
      await this.#recording("recording the evaluation", () => recordEvaluation(this.env.db, this.runId, epoch, rows));
      const report = evaluationMessages((await read()).filter((r) => r.epoch === epoch))[0];
      if (report) this.#emit({ kind: "evaluation", evaluation: report });
    }
    const history = new Map<number, EvaluationSummary>();
    for (const r of await read()) {
      if (r.epoch > epoch) continue; // rows of epochs a resumed run has yet to redo
      const h = history.get(r.epoch) ?? { epoch: r.epoch, means: {} };
      h.means[r.metric] = r.mean;
      history.set(r.epoch, h);
    }
    const verdict = guardVerdict(e, [...history.values()]);
    if (verdict.best) {
      const best = verdict.best;
      const id =
        best.epoch === 0
          ? this.baseCheckpointId
          : (await this.#recording("reading the run's epochs", () => listEpochs(this.env.db, this.runId))).find(
              (r) => r.epoch === best.epoch,
            )?.checkpoint_id;
      if (id)
        await this.#recording("marking the best checkpoint", () =>
          setRunBest(this.env.db, this.runId, id, best.metric),
        );
    }
    return verdict;
  }

  /** A registered checkpoint as the Registry has it; null when it is not registered. */
  async #registered(id: string): Promise<Checkpoint | null> {
    try {
      const { checkpoint } = await this.#retrying(`reading checkpoint ${id} from the Registry`, () =>
        this.#registry.getCheckpoint({ id }, { waitForReady: true, timeoutMs: 30_000 }),
      );
      return checkpoint ?? null;
    } catch (e) {
      if (e instanceof RetryError && e.code === Code.NOT_FOUND) return null;
      throw e;
    }
  }

  /**
   * Where the policy's weights are in the checkpoint the run starts from: none for a base model,
   * the folder's lora/ or model/ when it continues an earlier run's policy.
   */
  async #startingPolicy(): Promise<{ loraDir?: string; fullModelDir?: string }> {
    const base = await this.#registered(this.baseCheckpointId);
    if (!base) throw new Error(`base checkpoint ${this.baseCheckpointId} is not registered`);
    return policyDirs(base);
  }

  /**
   * The run's newest registered checkpoint, restored into the worker; the starting policy when
   * none. That is the last recorded epoch's, or the next epoch's when the Trainer stopped between
   * registering it and recording the epoch.
   */
  async #restoreLatest(start: { loraDir?: string; fullModelDir?: string }): Promise<Policy> {
    const recorded = await this.#recording("reading the run's epochs", () => listEpochs(this.env.db, this.runId));
    const done = recorded.at(-1)?.epoch ?? 0;
    let latest: Checkpoint | null = null;
    for (const epoch of [done + 1, done]) {
      if (epoch >= 1) latest ??= await this.#registered(runCheckpointId(this.runId, epoch));
    }
    if (!latest) return { id: this.baseCheckpointId, epoch: 0, ...start };
    const { epoch } = await this.#engine("restore", { dir: latest.location });
    const reportPath = this.#folder.report(epoch);
    if (epoch === done + 1 && existsSync(reportPath)) {
      // Stopped between registering the checkpoint and recording its epoch: record it now.
      const report = fromJson(EpochReportSchema, JSON.parse(readFileSync(reportPath, "utf8")));
      await this.#recording("recording the epoch", () => recordEpoch(this.env.db, epochRow(this.runId, report)));
    }
    return { id: latest.id, epoch, ...policyDirs(latest) };
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
          throw new RetryError(code, `${phase}: ${(e as Error).message}`);
        }
        await Bun.sleep(delay);
        delay = Math.min(delay * 2, 4000);
      }
    }
  }

  #rewarderAddress(r: RewardSpec): string {
    return r.endpoint || this.env.defaultRewarderAddress;
  }

  /**
   * The epoch's chunks (sampler-fleet.ts) drawn over the run's Samplers: each free Sampler takes
   * the next chunk, a failed chunk goes to another, and each trajectory is kept once.
   */
  async #sample(plan: SampleBatchPlan[], progress: ProgressListener): Promise<SampledEpoch> {
    const chunks = planChunks(plan);
    const total = plan.reduce((a, b) => a + b.prompts.length, 0);
    const slots = new Array<StreamedTrajectory | null>(total).fill(null);
    let done = 0;
    // A host:port is one Sampler: one chunk at a time. A balanced target is a fleet whose channel
    // spreads calls over its live Samplers: every chunk at once, each Sampler queueing its share.
    const lanes = this.#samplerAddresses.flatMap((a, s) =>
      new Array<number>(balancedTarget(a) ? chunks.length : 1).fill(s),
    );
    await drawChunks(chunks, {
      members: lanes.length,
      draw: (lane, chunk) =>
        this.#sampleOn(lanes[lane]!, chunk, (at, t) => {
          if (slots[at]) return; // a redrawn chunk's copy of a trajectory already kept
          slots[at] = t;
          done += 1;
          progress("sampling", done, total);
        }),
      retryable: (e) => e instanceof ServiceError && RETRYABLE.has(e.code),
      retryForMs: this.env.retryForMs,
      signal: this.#abort.signal,
    }).catch((e) => {
      throw new RetryError(e instanceof ServiceError ? e.code : null, `sampling: ${(e as Error).message}`);
    });
    return gatherSamples(slots);
  }

  /** One chunk on Sampler `s`: loads the current policy there, then streams its trajectories. */
  async #sampleOn(s: number, chunk: SampleChunk, onTrajectory: (at: number, t: StreamedTrajectory) => void) {
    const c = this.settings.ddpo;
    const policy = this.#policy!;
    const sampler = this.#samplers[s]!;
    const address = this.#samplerAddresses[s]!;
    let i = 0;
    const stream = sampler.sample(
      {
        prompts: chunk.prompts,
        seeds: chunk.seeds.map(BigInt),
        steps: c.steps,
        guidance: c.guidance,
        eta: c.eta,
        checkpointId: policy.id,
        includeLatents: true,
        batchSize: c.sampleBatchSize,
        // The policy travels with the call, so whichever Sampler of a fleet takes it can load it.
        policy: {
          checkpointId: policy.id,
          baseModelDir: this.settings.baseModelDir,
          loraDir: policy.loraDir,
          fullModelDir: policy.fullModelDir,
        },
      },
      // Not waitForReady: an unreachable Sampler fails at once, so its chunk goes to a live one.
      { signal: this.#abort.signal },
    );
    for await (const t of stream) {
      if (!t.latents || !t.image)
        throw new ServiceError(Code.INTERNAL, `${address}: trajectory without latents or image`);
      if (i >= chunk.prompts.length || Number(t.seed) !== chunk.seeds[i]) {
        throw new ServiceError(Code.INTERNAL, `${address}: trajectory ${i} is not the one asked for (seed ${t.seed})`);
      }
      const bytes = t.latents.data;
      onTrajectory(chunk.at[i++]!, {
        prompt: t.prompt,
        seed: Number(t.seed),
        inputIds: t.inputIds,
        timesteps: t.timesteps,
        latents: new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)),
        logProbs: Float32Array.from(t.logProbs),
        image: t.image.rgb,
        imageSize: t.image.width,
      });
    }
    if (i !== chunk.prompts.length) {
      throw new ServiceError(Code.ABORTED, `${address} sent ${i} of ${chunk.prompts.length} trajectories`);
    }
  }

  /** Each reward source's scores for all samples, and the weighted sum. */
  async #score(sampled: Pick<SampledEpoch, "prompts" | "images" | "imageSize">): Promise<ScoredEpoch> {
    const n = sampled.prompts.length;
    const size = sampled.imageSize;
    const perImage = size * size * 3;
    const terms = await Promise.all(
      this.rewards.map((r) => {
        const address = this.#rewarderAddress(r);
        return this.#retrying(`reward ${r.name} at ${address}`, async () => {
          const response = await this.#rewarders.get(address)!.score(
            {
              rewardName: r.name,
              images: sampled.prompts.map((prompt, i) => ({
                prompt,
                image: { width: size, height: size, rgb: sampled.images.subarray(i * perImage, (i + 1) * perImage) },
              })),
            },
            { signal: this.#abort.signal, timeoutMs: 120_000, waitForReady: true },
          );
          checkScores(response.scores, n, `reward ${r.name} at ${address}`);
          return { name: r.name, source: address, weight: r.weight, scores: response.scores };
        });
      }),
    );
    return { rewards: combineTerms(terms, n), terms };
  }

  /** Queues the epoch's rows for Postgres and writes its sample grid next to the checkpoints. */
  #record(epoch: number, s: SampledEpoch, scored: ScoredEpoch, advantages: Float64Array): void {
    const policy = this.#policy!.id;
    this.env.recorder.add(
      epochRows(this.runId, epoch, policy, { ...s, rewards: scored.rewards, advantages }, scored.terms),
    );
    // For people; a failed PNG does not fail the run.
    this.#folder.writeSamples(epoch, s.images, s.imageSize, s.prompts, scored.rewards).catch(() => undefined);
  }

  /**
   * Saves the policy, flushes the epoch's rows, keeps the epoch's report beside the checkpoints,
   * registers the checkpoint; the next epoch's policy.
   */
  async #checkpoint(epoch: number, report: EpochReport): Promise<string> {
    const dir = this.#folder.checkpoint(epoch);
    const saved = await this.#engine("save", { dir });
    // Rows first: a registered checkpoint means its epoch's trajectories are in the database.
    await this.env.recorder.flush();
    const id = runCheckpointId(this.runId, epoch);
    // The epoch's row needs the registered checkpoint (a foreign key), so it is written after;
    // the report on disk lets a Trainer that stops in between write it when the run resumes.
    const reportPath = this.#folder.report(epoch);
    mkdirSync(dirname(reportPath), { recursive: true });
    writeFileAtomic(reportPath, [
      Buffer.from(JSON.stringify(toJson(EpochReportSchema, { ...report, checkpointId: id }))),
    ]);
    await this.#retrying("registering the checkpoint", () =>
      this.#registry.registerCheckpoint(
        {
          checkpoint: {
            id,
            parentId: this.#policy!.id,
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
    this.#policy = { id, epoch, loraDir: saved.loraDir, fullModelDir: saved.fullModelDir };
    return id;
  }
}

/** A failure after retries, with the status code of the last attempt (null: not a service error). */
class RetryError extends Error {
  constructor(
    readonly code: Code | null,
    message: string,
  ) {
    super(message);
  }
}

/** Where a checkpoint's policy weights are: its lora/ or model/ folder (a base model: none). */
function policyDirs(c: Checkpoint): { loraDir?: string; fullModelDir?: string } {
  if (c.kind === CheckpointKind.LORA) return { loraDir: join(c.location, "lora") };
  if (c.kind === CheckpointKind.FULL) return { fullModelDir: join(c.location, "model") };
  return {};
}

/** The streamed trajectories in plan order as one epoch. */
function gatherSamples(slots: readonly (StreamedTrajectory | null)[]): SampledEpoch {
  const first = slots[0];
  if (!first) throw new Error("sampling: a trajectory is missing");
  const size = first.imageSize;
  const out: SampledEpoch = {
    prompts: [],
    seeds: [],
    inputIds: [],
    timesteps: first.timesteps,
    latents: [],
    logProbs: [],
    images: new Uint8Array(slots.length * size * size * 3),
    imageSize: size,
  };
  for (const [i, t] of slots.entries()) {
    if (!t) throw new Error("sampling: a trajectory is missing");
    out.prompts.push(t.prompt);
    out.seeds.push(t.seed);
    out.inputIds.push(t.inputIds);
    out.latents.push(t.latents);
    out.logProbs.push(t.logProbs);
    out.images.set(t.image, i * size * size * 3);
  }
  return out;
}
