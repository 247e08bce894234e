// The Trainer's engine thread: owns the policy being trained (DdpoTrainer: LoRA adapters or the
// full UNet, AdamW moments, per-prompt stat tracker, prompt RNG): the plan, advantages, update
// and checkpoint steps of the epoch pipeline (lib/ddpo/pipeline.ts). The gRPC thread asks it for
// an epoch's plan, gives it the rewards (it keeps them and their advantages for the update), sends
// the sampled trajectories for the update, and has it save checkpoints; samples and rewards
// themselves come from the Sampler and Rewarder services.
import { existsSync } from "node:fs";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { loadIntoParameters } from "../lib/checkpoints/model-folder.ts";
import { type HeldOutSamples, sampleHeldOut } from "../lib/ddpo/evaluation.ts";
import { promptSetByName } from "../lib/ddpo/prompts.ts";
import { type DdpoConfig, DdpoTrainer, type SampleBatchPlan, type UpdateStats } from "../lib/ddpo/trainer.ts";
import { ClipModel } from "../lib/models/clip-model.ts";
import { LoraAdapterSet } from "../lib/models/lora.ts";
import { TextToImageModel } from "../lib/models/text-to-image.ts";
import { EMOJI_CLIP_DIR } from "../lib/rewards/clip.ts";
import { serveWorkerHandlers, WorkerError } from "../lib/workers/worker-rpc.ts";

export interface TrainerInit {
  baseModelDir: string;
  config: DdpoConfig;
  promptSet: string;
  /** The policy to start from instead of the base model: an earlier run's LoRA or full checkpoint. */
  start?: { loraDir?: string; fullModelDir?: string };
}

/** The sampled trajectories of the epoch whose rewards `advantages` was given, in its order. */
export interface EpochUpdateArgs {
  timesteps: number[];
  latents: Float32Array[]; // per sample [T+1, C, H, W]
  logProbs: Float32Array[]; // per sample [T]
}

export interface EpochUpdateResult {
  epoch: number;
  stats: UpdateStats;
}

let trainer: DdpoTrainer | null = null;
let engine: Engine | null = null;
/** The content check's emoji CLIP, loaded at the run's first held-out evaluation. */
let clip: ClipModel | null = null;
/** This epoch's rewards and advantages, from `advantages` to `update`. */
let kept: { prompts: string[]; rewards: Float64Array; advantages: Float64Array } | null = null;

function active(): DdpoTrainer {
  if (!trainer) throw new WorkerError("failed_precondition", "trainer worker: init() first");
  return trainer;
}

const handlers = {
  async init(args: TrainerInit): Promise<{ epoch: number; backend: string; lora: boolean }> {
    if (trainer) throw new WorkerError("failed_precondition", "trainer worker: already initialised");
    engine = Engine.open();
    const model = TextToImageModel.load(engine, args.baseModelDir);
    const prompts = await promptSetByName(args.promptSet);
    trainer = new DdpoTrainer(engine, model, args.config, null, prompts);
    if (args.start?.loraDir) {
      if (!trainer.lora) {
        throw new WorkerError(
          "invalid_argument",
          "a LoRA checkpoint to start from, but the run fine-tunes the whole UNet",
        );
      }
      const loaded = LoraAdapterSet.load(engine, model.unetShapes, args.start.loraDir);
      try {
        const [want, got] = [trainer.lora.settings, loaded.settings];
        if (want.rank !== got.rank || loaded.params.total !== trainer.lora.params.total) {
          throw new WorkerError(
            "invalid_argument",
            `${args.start.loraDir}: LoRA rank ${got.rank}, but the run's config has rank ${want.rank}`,
          );
        }
        trainer.lora.params.values.write(loaded.params.values.read());
      } finally {
        loaded.close();
      }
    } else if (args.start?.fullModelDir) {
      if (trainer.lora) {
        throw new WorkerError(
          "invalid_argument",
          "a full fine-tuned checkpoint to start from, but the run trains LoRA adapters",
        );
      }
      loadIntoParameters(model.unet, join(args.start.fullModelDir, "unet", "diffusion_pytorch_model.safetensors"));
      trainer.takeReference(); // the KL penalty's reference is the run's starting model
    }
    return { epoch: 0, backend: engine.backend, lora: trainer.lora !== null };
  },

  plan(): { epoch: number; batches: SampleBatchPlan[] } {
    const t = active();
    return { epoch: t.epoch, batches: t.planEpoch() };
  },

  /**
   * Per-prompt advantages of this epoch's rewards (updates the stat tracker's buffers); kept with
   * the rewards for this epoch's update, and returned to be recorded.
   */
  advantages(args: { prompts: string[]; rewards: Float64Array }): Float64Array {
    const advantages = active().computeAdvantages(args.prompts, args.rewards);
    kept = { prompts: args.prompts, rewards: args.rewards, advantages };
    return advantages;
  },

  /** The policy-gradient update on this epoch's trajectories with the kept advantages. */
  update(args: EpochUpdateArgs): EpochUpdateResult {
    const t = active();
    if (!kept) throw new WorkerError("failed_precondition", "update: no advantages for this epoch");
    const n = kept.prompts.length;
    if (args.latents.length !== n || args.logProbs.length !== n) {
      throw new WorkerError(
        "invalid_argument",
        `update: ${args.latents.length} latents and ${args.logProbs.length} log-prob rows for ${n} samples`,
      );
    }
    const stats = t.train({ ...args, ...kept });
    kept = null;
    return { epoch: t.endEpoch(), stats };
  },

  /** The current policy's held-out images and their content check (evaluation.ts). */
  evaluate(): HeldOutSamples {
    const t = active();
    const c = t.config;
    if (!c.evaluation) throw new WorkerError("failed_precondition", "evaluate: the run has no held-out evaluation");
    clip ??= ClipModel.load(t.engine, EMOJI_CLIP_DIR);
    const sampling = { steps: c.steps, guidance: c.guidance, eta: c.eta, batch: 64 };
    return sampleHeldOut(t.model, t.lora, clip, c.evaluation, t.prompts.prompts, sampling);
  },

  /** Writes the checkpoint folder; returns where the policy's weights are inside it. */
  save(args: { dir: string }): { dir: string; loraDir?: string; fullModelDir?: string } {
    const t = active();
    t.saveCheckpoint(args.dir);
    return t.lora
      ? { dir: args.dir, loraDir: join(args.dir, "lora") }
      : { dir: args.dir, fullModelDir: join(args.dir, "model") };
  },

  /**
   * Frees the engine (the model, adapters, optimizer moments, arenas): native memory that a
   * terminated worker thread would otherwise leave behind in the Trainer process.
   */
  close(): void {
    trainer?.close();
    trainer?.model.close();
    clip?.close();
    clip = null;
    engine?.close();
    trainer = null;
    engine = null;
    kept = null;
  },

  restore(args: { dir: string }): { epoch: number } {
    const t = active();
    if (!existsSync(args.dir)) throw new WorkerError("not_found", `checkpoint folder ${args.dir} does not exist`);
    t.restoreCheckpoint(args.dir);
    return { epoch: t.epoch };
  },
};

export type TrainerWorkerHandlers = typeof handlers;

serveWorkerHandlers(handlers);
