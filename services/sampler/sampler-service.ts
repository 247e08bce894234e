// Sampler handlers: load a policy checkpoint, stream DDIM trajectories with log-probs. The engine
// runs in a worker (engine-worker.ts); this thread validates, batches and streams, so health
// checks and cancellation answer while a batch computes.
import { create } from "@bufbuild/protobuf";
import { type LoadCheckpointRequest, Sampler, type Trajectory, TrajectorySchema } from "../gen/ddpo/v1/sampler_pb.ts";
import { DEFAULT_GUIDANCE, SAMPLING_LIMITS, samplingProblems } from "../lib/diffusion/sampling-limits.ts";
import { bindService, Code, checkedText, MAX_PATH_CHARS, ServiceError } from "../lib/grpc/index.ts";
import type { WorkerClient } from "../lib/workers/worker-rpc.ts";
import { workerStatus } from "../lib/workers/worker-status.ts";
import type { SamplerWorkerHandlers } from "./engine-worker.ts";

const DEFAULTS = { steps: 20, guidance: DEFAULT_GUIDANCE, eta: 1, batchSize: 8 };

function invalid(message: string): never {
  throw new ServiceError(Code.INVALID_ARGUMENT, message);
}

/** What the worker holds, kept on this thread so GetStatus answers while the worker computes. */
interface LoadedPolicy {
  request: { checkpointId: string; baseModelDir: string; loraDir?: string; fullModelDir?: string };
  backend: string;
  channels: number;
  imageSize: number;
}

export function samplerService(worker: WorkerClient<SamplerWorkerHandlers>) {
  let policy: LoadedPolicy | null = null;
  let active = 0;
  // Trajectories streamed back since the process started (GetStatus's samples_streamed).
  let streamed = 0n;
  // The Sample calls in progress, oldest first, with their current batch's step counter: the one
  // with a step started is the batch the worker is computing.
  const batches: { progress: Int32Array; steps: number }[] = [];
  // The load in progress, so concurrent calls naming one policy load it once.
  let loading: { key: string; done: Promise<number> } | null = null;

  /** Loads the requested policy unless it is the one held; the seconds it took (0: held). */
  const load = async (request: LoadCheckpointRequest): Promise<number> => {
    if (!request.checkpointId) invalid("checkpoint_id is required");
    if (!request.baseModelDir) invalid("base_model_dir is required");
    if (request.loraDir && request.fullModelDir) invalid("give lora_dir or full_model_dir, not both");
    checkedText(request.checkpointId, "checkpoint_id");
    checkedText(request.baseModelDir, "base_model_dir", MAX_PATH_CHARS);
    checkedText(request.loraDir ?? "", "lora_dir", MAX_PATH_CHARS);
    checkedText(request.fullModelDir ?? "", "full_model_dir", MAX_PATH_CHARS);
    const wanted = {
      checkpointId: request.checkpointId,
      baseModelDir: request.baseModelDir,
      loraDir: request.loraDir,
      fullModelDir: request.fullModelDir,
    };
    const key = JSON.stringify(wanted);
    if (policy && JSON.stringify(policy.request) === key) return 0;
    if (loading?.key === key) return loading.done;
    const started = performance.now();
    const done = (async () => {
      await loading?.done.catch(() => undefined); // one load at a time
      try {
        const loaded = await worker.call("load", wanted);
        policy = { request: wanted, backend: loaded.backend, channels: loaded.channels, imageSize: loaded.imageSize };
      } catch (e) {
        throw workerStatus(e, `checkpoint ${request.checkpointId}: `);
      }
      return (performance.now() - started) / 1000;
    })();
    const mine = { key, done };
    loading = mine;
    try {
      return await done;
    } finally {
      if (loading === mine) loading = null;
    }
  };

  return bindService(Sampler, {
    async loadCheckpoint(request) {
      const loadSeconds = await load(request);
      return { checkpointId: request.checkpointId, loadSeconds };
    },

    getStatus() {
      const computing = batches.find((b) => Atomics.load(b.progress, 1) > 0);
      return {
        batchStepsDone: computing ? Math.min(computing.steps, Atomics.load(computing.progress, 1) - 1) : 0,
        batchSteps: computing?.steps ?? 0,
        checkpointId: policy?.request.checkpointId ?? "",
        backend: policy?.backend ?? "",
        activeSamples: active,
        channels: policy?.channels ?? 0,
        imageSize: policy?.imageSize ?? 0,
        samplesStreamed: streamed,
      };
    },

    async *sample(request, context) {
      const n = request.prompts.length;
      if (n === 0) invalid("prompts is empty");
      checkedText(request.checkpointId, "checkpoint_id");
      if (request.seeds.length !== n) invalid(`${request.seeds.length} seeds for ${n} prompts (one seed per prompt)`);
      const long = request.prompts.findIndex((p) => p.length > SAMPLING_LIMITS.maxPromptChars);
      if (long >= 0) invalid(`prompts[${long}] is longer than ${SAMPLING_LIMITS.maxPromptChars} characters`);
      const seeds = request.seeds.map((s, i) => {
        if (s >= 2n ** 52n) invalid(`seeds[${i}] = ${s} is not below 2^52`);
        return Number(s);
      });
      const steps = request.steps ?? DEFAULTS.steps;
      const guidance = request.guidance ?? DEFAULTS.guidance;
      const eta = request.eta ?? DEFAULTS.eta;
      const batchSize = request.batchSize || DEFAULTS.batchSize;
      const problems = samplingProblems(
        { samples: n, steps, guidance, eta, batchSize },
        { samples: "the number of prompts", steps: "steps", guidance: "guidance", eta: "eta", batchSize: "batch_size" },
      );
      if (problems.length) invalid(problems.join("; "));
      if (request.policy) {
        if (request.policy.checkpointId !== request.checkpointId) {
          invalid(
            `policy.checkpoint_id '${request.policy.checkpointId}' is not checkpoint_id '${request.checkpointId}'`,
          );
        }
        await load(request.policy);
      }
      if (!policy) throw new ServiceError(Code.FAILED_PRECONDITION, "no checkpoint loaded; call LoadCheckpoint first");
      const loaded = policy.request.checkpointId;
      if (request.checkpointId !== loaded) {
        throw new ServiceError(
          Code.FAILED_PRECONDITION,
          `checkpoint '${request.checkpointId}' requested but ${loaded} is loaded; name the loaded one or call LoadCheckpoint`,
        );
      }
      // [0]: set when the call is cancelled or its deadline passes; the worker checks it every step.
      // [1]: DDIM steps the worker started on this call's current batch (GetStatus reads it).
      const cancel = new SharedArrayBuffer(8);
      const onAbort = () => Atomics.store(new Int32Array(cancel), 0, 1);
      const progress = { progress: new Int32Array(cancel), steps };
      batches.push(progress);
      context.signal.addEventListener("abort", onAbort, { once: true });
      active += n;
      let remaining = n;
      try {
        for (let start = 0; start < n; start += batchSize) {
          if (context.signal.aborted) return;
          const end = Math.min(n, start + batchSize);
          Atomics.store(progress.progress, 1, 0);
          const batch = await worker
            .call("sample", {
              cancel,
              prompts: request.prompts.slice(start, end),
              seeds: seeds.slice(start, end),
              steps,
              guidance,
              eta,
              includeLatents: request.includeLatents,
            })
            .catch((e) => {
              throw workerStatus(e, "sampling: ");
            });
          if (batch.checkpointId !== loaded) {
            throw new ServiceError(Code.ABORTED, `checkpoint changed to ${batch.checkpointId} during the call`);
          }
          const { channels, size } = batch.shape;
          for (const [i, t] of batch.trajectories.entries()) {
            const out: Trajectory = create(TrajectorySchema, {
              index: start + i,
              prompt: t.prompt,
              inputIds: Array.from(t.inputIds),
              seed: BigInt(t.seed),
              timesteps: t.timesteps,
              logProbs: Array.from(t.logProbs),
              image: { width: size, height: size, rgb: t.image },
              checkpointId: batch.checkpointId,
            });
            if (t.latents) {
              out.latents = {
                $typeName: "ddpo.v1.TensorF32",
                shape: [t.timesteps.length + 1, channels, size, size],
                data: new Uint8Array(t.latents.buffer, t.latents.byteOffset, t.latents.byteLength),
              };
            }
            yield out;
            streamed += 1n;
          }
          active -= end - start;
          remaining -= end - start;
        }
      } catch (e) {
        if (context.signal.aborted) return; // the worker gave up mid-batch because we asked it to
        throw e;
      } finally {
        context.signal.removeEventListener("abort", onAbort);
        batches.splice(batches.indexOf(progress), 1);
        active -= remaining;
      }
    },
  });
}
