// The Sampler's engine thread: holds the policy (base model + optional LoRA delta or full
// fine-tuned UNet) and samples DDIM trajectories with log-probs, one batch per call.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { ConfigError, loadIntoParameters } from "../lib/checkpoints/model-folder.ts";
import { sampleImages, toUint8Images } from "../lib/diffusion/sampler.ts";
import { LoraAdapterSet } from "../lib/models/lora.ts";
import { combineSources } from "../lib/models/parameters.ts";
import { TextToImageModel } from "../lib/models/text-to-image.ts";
import { serveWorkerHandlers, transferResult, WorkerError } from "../lib/workers/worker-rpc.ts";

export interface PolicyLocation {
  checkpointId: string;
  baseModelDir: string;
  /** peft folder of a LoRA delta on the base. */
  loraDir?: string;
  /** diffusers folder whose unet/ replaces the base UNet (full fine-tuning). */
  fullModelDir?: string;
}

export interface SampleBatchArgs {
  /**
   * Int32Array view over it: [0] becomes 1 when the call was cancelled (checked every step); the
   * worker adds 1 to [1] before each DDIM step, so the service thread sees the batch's progress.
   */
  cancel?: SharedArrayBuffer;
  prompts: string[];
  seeds: number[];
  steps: number;
  guidance: number;
  eta: number;
  includeLatents: boolean;
}

export interface SampledTrajectory {
  prompt: string;
  seed: number;
  inputIds: Int32Array; // [L]
  timesteps: number[]; // [T]
  latents: Float32Array | null; // [T+1, C, H, W]
  logProbs: Float32Array; // [T]
  image: Uint8Array; // [H, W, 3]
}

export interface SampleBatchResult {
  checkpointId: string;
  shape: { channels: number; size: number };
  trajectories: SampledTrajectory[];
}

/** Runs a checkpoint load: a missing file is not_found, any other failure an unusable checkpoint. */
function asLoadError<T>(load: () => T): T {
  try {
    return load();
  } catch (e) {
    if (e instanceof WorkerError) throw e;
    const message = e instanceof Error ? e.message : String(e);
    const missing = (e as { code?: unknown }).code === "ENOENT" || (e instanceof ConfigError && !existsSync(e.file));
    throw new WorkerError(missing ? "not_found" : "invalid_argument", message);
  }
}

let engine: Engine | null = null;
let model: TextToImageModel | null = null;
let lora: LoraAdapterSet | null = null;
let loaded: PolicyLocation | null = null;

function unload(): void {
  lora?.close();
  model?.close();
  lora = null;
  model = null;
  loaded = null;
}

const handlers = {
  load(args: PolicyLocation): {
    checkpointId: string;
    unetParameters: number;
    backend: string;
    channels: number;
    imageSize: number;
  } {
    engine ??= Engine.open();
    for (const dir of [args.baseModelDir, args.loraDir, args.fullModelDir]) {
      if (dir !== undefined && !existsSync(dir))
        throw new WorkerError("not_found", `checkpoint folder ${dir} does not exist`);
    }
    // Load into fresh objects first so a bad checkpoint leaves the current policy in place.
    const next = asLoadError(() => TextToImageModel.load(engine!, args.baseModelDir));
    let nextLora: LoraAdapterSet | null = null;
    try {
      asLoadError(() => {
        if (args.fullModelDir) {
          loadIntoParameters(next.unet, join(args.fullModelDir, "unet", "diffusion_pytorch_model.safetensors"));
        }
        if (args.loraDir) nextLora = LoraAdapterSet.load(engine!, next.unetShapes, args.loraDir);
      });
    } catch (e) {
      next.close();
      throw e;
    }
    unload();
    model = next;
    lora = nextLora;
    loaded = { ...args };
    return {
      checkpointId: args.checkpointId,
      unetParameters: next.unet.total,
      backend: engine.backend,
      channels: next.unetConfig.out_channels,
      imageSize: next.unetConfig.sample_size,
    };
  },

  sample(args: SampleBatchArgs): SampleBatchResult {
    if (!model || !loaded) throw new WorkerError("failed_precondition", "no checkpoint loaded");
    const source = lora
      ? combineSources(
          lora.source({ frozen: true }),
          model.unetSource({ frozen: true }),
          model.textSource({ frozen: true }),
        )
      : undefined;
    const flag = args.cancel ? new Int32Array(args.cancel) : null;
    const r = sampleImages(model, args.prompts, {
      steps: args.steps,
      guidance: args.guidance,
      eta: args.eta,
      seeds: args.seeds,
      keepTrajectory: true,
      source,
      lora,
      cancelled: flag
        ? () => {
            Atomics.add(flag, 1, 1);
            return Atomics.load(flag, 0) === 1;
          }
        : undefined,
    });
    const cfg = model.unetConfig;
    const n = r.prompts.length;
    const images = toUint8Images(r.images, n, cfg.out_channels, cfg.sample_size);
    const perImage = cfg.sample_size * cfg.sample_size * 3;
    const L = r.inputIds.length / n;
    const trajectories: SampledTrajectory[] = r.prompts.map((prompt, b) => {
      const logProbs = r.logProbs[b]!;
      if (!logProbs.every(Number.isFinite)) throw new Error(`sample ${b} ('${prompt}'): non-finite log-prob`);
      return {
        prompt,
        seed: r.seeds[b]!,
        inputIds: r.inputIds.slice(b * L, (b + 1) * L),
        timesteps: r.timesteps,
        latents: args.includeLatents ? r.latents[b]! : null,
        logProbs,
        image: images.slice(b * perImage, (b + 1) * perImage),
      };
    });
    const transfer = trajectories.flatMap((t) => [
      t.logProbs.buffer,
      t.image.buffer,
      ...(t.latents ? [t.latents.buffer] : []),
    ]);
    return transferResult(
      { checkpointId: loaded.checkpointId, shape: { channels: cfg.out_channels, size: cfg.sample_size }, trajectories },
      transfer as ArrayBuffer[],
    );
  },
};

export type SamplerWorkerHandlers = typeof handlers;

serveWorkerHandlers(handlers);
