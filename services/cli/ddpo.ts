// The `ddpo` command: `bun run services/cli/ddpo.ts <command> [--flag value ...]`.
//   pretrain   train a base model on the emoji images (resumable)
//   sample     draw images for prompts from a model folder into a PNG grid
//   train-clip train the emoji CLIP; eval: how often it reads a model's drawings as their prompts (clip.ts)
//   up, train, watch, runs, lineage, pull: the services (remote.ts); train-local: one process (train.ts)
//   dashboard  the web pages over the runs in Postgres (services/dashboard)
import { Engine } from "../../gpu-core/index.ts";
import { DASHBOARD_USAGE, dashboardCommand } from "../dashboard/main.ts";
import { loadEmojiDataset } from "../lib/data/emoji.ts";
import { sampleImages, toUint8Images } from "../lib/diffusion/sampler.ts";
import { DEFAULT_GUIDANCE } from "../lib/diffusion/sampling-limits.ts";
import { writeTrajectories } from "../lib/diffusion/trajectory-file.ts";
import { LoraAdapterSet } from "../lib/models/lora.ts";
import { combineSources } from "../lib/models/parameters.ts";
import { TextToImageModel } from "../lib/models/text-to-image.ts";
import { imageGridPng } from "../lib/plots/image-grid.ts";
import { rewardByName } from "../lib/rewards/index.ts";
import { PRETRAIN_DEFAULTS, pretrain } from "../lib/training/pretrain.ts";
import { EVAL_USAGE, evalCommand, TRAIN_CLIP_USAGE, trainClipCommand } from "./clip.ts";
import { commandFlags, numberFlag, trainingFlags } from "./flags.ts";
import { formatSeconds, ProgressBar } from "./progress.ts";
import {
  lineageCommand,
  pullCommand,
  REMOTE_USAGE,
  runsCommand,
  trainCommand,
  upCommand,
  watchCommand,
} from "./remote.ts";
import { TRAIN_USAGE, trainCommand as trainLocalCommand } from "./train.ts";

/** The default prompts of `ddpo sample` (animals: what the shipped base model was trained on). */
export const SHOWCASE_PROMPTS = [
  "cat face",
  "tiger",
  "dog face",
  "fox face",
  "lion face",
  "panda face",
  "penguin",
  "frog face",
  "monkey face",
  "pig face",
  "cow face",
  "unicorn face",
  "octopus",
  "turtle",
  "owl",
  "rabbit face",
];

const PRETRAIN_USAGE = `pretrain --out DIR [--state-dir DIR] [--steps N] [--batch N] [--lr X] [--seed N] [--channels 32,64,64] [--fresh]
           [--min-snr-gamma 5] [--ema 0.999] [--subset animals|all] [--warmup 200] [--checkpoint-every 250]`;
const SAMPLE_USAGE = `sample   --model DIR [--prompt TEXT ...] [--out grid.png] [--steps 50] [--guidance ${DEFAULT_GUIDANCE}] [--eta 1] [--seed N]
           [--trajectories FILE.safetensors] [--lora RUN/checkpoints/epoch-NNNN/lora] [--reward NAME]`;

const USAGE = `usage: ddpo <command> [options]   (ddpo <command> --help lists a command's flags and defaults)
  ${PRETRAIN_USAGE}
  ${SAMPLE_USAGE}
  ${TRAIN_CLIP_USAGE}
  ${EVAL_USAGE}
${REMOTE_USAGE}
${DASHBOARD_USAGE}
  ${TRAIN_USAGE.replace("ddpo train", "train-local")}`;

function pretrainSubset(v: string): "all" | "animals" {
  if (v !== "all" && v !== "animals") throw new Error(`--subset must be 'animals' or 'all', got '${v}'`);
  return v;
}

async function pretrainCommand(argv: string[]): Promise<void> {
  const d = PRETRAIN_DEFAULTS;
  const parsed = commandFlags(`ddpo ${PRETRAIN_USAGE}`, argv, {
    ...trainingFlags("model folder written (diffusers layout)", d),
    channels: { type: "string", value: "LIST", help: "UNet block widths", default: d.blockOutChannels.join(",") },
    "min-snr-gamma": { type: "string", value: "X", help: "min-SNR loss weighting gamma", default: d.minSnrGamma },
    ema: { type: "string", value: "X", help: "EMA decay of the saved weights", default: d.emaDecay },
    subset: { type: "string", value: "animals|all", help: "images trained on", default: d.subset },
    warmup: { type: "string", value: "N", help: "learning-rate warm-up steps", default: d.warmupSteps },
    samples: { type: "string", value: "FILE.png", help: "a sample grid of the trained model" },
  });
  if (!parsed) return;
  const { values } = parsed;
  if (!values.out) throw new Error("pretrain: --out DIR is required");
  const options = {
    ...d,
    out: values.out,
    stateDir: values["state-dir"] ?? `${values.out}.training`,
    steps: numberFlag(values.steps, d.steps, "steps"),
    batchSize: numberFlag(values.batch, d.batchSize, "batch"),
    lr: numberFlag(values.lr, d.lr, "lr"),
    seed: numberFlag(values.seed, d.seed, "seed"),
    checkpointEvery: numberFlag(values["checkpoint-every"], d.checkpointEvery, "checkpoint-every"),
    warmupSteps: numberFlag(values.warmup, d.warmupSteps, "warmup"),
    minSnrGamma: numberFlag(values["min-snr-gamma"], d.minSnrGamma, "min-snr-gamma"),
    emaDecay: numberFlag(values.ema, d.emaDecay, "ema"),
    subset: pretrainSubset(values.subset ?? d.subset),
    blockOutChannels: values.channels
      ? values.channels.split(",").map((c) => numberFlag(c, 0, "channels"))
      : d.blockOutChannels,
    resume: !values.fresh,
  };
  const dataset = await loadEmojiDataset();
  console.error(
    `pretrain: ${dataset.records.length} captioned emoji images (training on ${options.subset}), ${options.steps} steps of ${options.batchSize}`,
  );
  const engine = Engine.open();
  const bar = new ProgressBar(options.steps);
  const { model, losses } = await pretrain(engine, dataset, options, (p) => {
    const eta = ((p.steps - p.step) * options.batchSize) / p.imagesPerSecond;
    bar.update(
      p.step,
      `loss ${p.loss.toFixed(4)} (ema ${p.lossEma.toFixed(4)}) ${p.imagesPerSecond.toFixed(1)} img/s lr ${p.lr.toExponential(1)} eta ${formatSeconds(eta)}`,
    );
  });
  const tail = losses.slice(-100);
  console.log(
    `pretrain: done, ${losses.length} steps, mean loss of the last ${tail.length}: ${(tail.reduce((a, b) => a + b, 0) / tail.length).toFixed(4)}; ` +
      `model in ${options.out} (${model.parameterCount.unet} UNet + ${model.parameterCount.textEncoder} text-encoder parameters)`,
  );
  if (values.samples)
    await writeSampleGrid(model, SHOWCASE_PROMPTS, values.samples, {
      steps: 50,
      guidance: DEFAULT_GUIDANCE,
      eta: 1,
      seed: 1,
    });
  model.close();
  engine.close();
}

async function writeSampleGrid(
  model: TextToImageModel,
  prompts: readonly string[],
  out: string,
  o: {
    steps: number;
    guidance: number;
    eta: number;
    seed: number;
    trajectories?: string;
    checkpoint?: string;
    /** peft LoRA folder applied over the model (a DDPO run's checkpoints/epoch-NNNN/lora). */
    lora?: string;
    /** Score each image with this reward: captions show it, the mean is printed. */
    reward?: string;
  },
): Promise<void> {
  const started = performance.now();
  const lora = o.lora ? LoraAdapterSet.load(model.engine, model.unetShapes, o.lora) : null;
  const result = sampleImages(model, prompts, {
    ...o,
    seeds: prompts.map((_, i) => o.seed + i),
    keepTrajectory: o.trajectories !== undefined,
    source: lora
      ? combineSources(
          lora.source({ frozen: true }),
          model.unetSource({ frozen: true }),
          model.textSource({ frozen: true }),
        )
      : undefined,
    lora,
  });
  lora?.close();
  if (o.trajectories) {
    writeTrajectories(
      o.trajectories,
      result,
      { channels: model.unetConfig.out_channels, size: model.unetConfig.sample_size },
      { guidance: o.guidance, eta: o.eta, checkpoint: o.checkpoint ?? "" },
    );
    console.log(`sample: trajectories -> ${o.trajectories}`);
  }
  const size = model.unetConfig.sample_size;
  const images = toUint8Images(result.images, prompts.length, model.unetConfig.out_channels, size);
  let captions = [...prompts];
  if (o.reward) {
    const reward = rewardByName(o.reward);
    const scores = await reward.score(images, { height: size, width: size }, prompts);
    captions = prompts.map((p, i) => `${p} ${scores[i]!.toFixed(2)}`);
    const m = scores.reduce((a, b) => a + b, 0) / scores.length;
    console.log(`sample: ${reward.name} mean ${m.toFixed(4)} over ${scores.length} images`);
  }
  await imageGridPng(out, images, {
    cols: Math.min(8, prompts.length),
    scale: 3,
    height: size,
    width: size,
    captions,
  });
  console.log(`sample: ${prompts.length} images in ${((performance.now() - started) / 1000).toFixed(1)} s -> ${out}`);
}

async function sampleCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(`ddpo ${SAMPLE_USAGE}`, argv, {
    model: { type: "string", value: "DIR", help: "model folder (diffusers layout); required" },
    prompt: { type: "string", multiple: true, value: "TEXT", help: "prompt to draw", default: "16 showcase prompts" },
    out: { type: "string", value: "FILE.png", help: "the image grid", default: "samples.png" },
    steps: { type: "string", value: "N", help: "DDIM steps", default: 50 },
    guidance: { type: "string", value: "X", help: "classifier-free guidance scale", default: DEFAULT_GUIDANCE },
    eta: { type: "string", value: "X", help: "DDIM eta", default: 1 },
    seed: { type: "string", value: "N", help: "seed of the first image (the i-th gets seed + i)", default: 1 },
    trajectories: { type: "string", value: "FILE", help: "also write the trajectories (safetensors)" },
    lora: { type: "string", value: "DIR", help: "peft LoRA folder applied over the model" },
    reward: { type: "string", value: "NAME", help: "score each image with this reward" },
  });
  if (!parsed) return;
  const { values } = parsed;
  if (!values.model) throw new Error("sample: --model DIR is required");
  const engine = Engine.open();
  const model = TextToImageModel.load(engine, values.model);
  await writeSampleGrid(model, values.prompt?.length ? values.prompt : SHOWCASE_PROMPTS, values.out ?? "samples.png", {
    steps: numberFlag(values.steps, 50, "steps"),
    guidance: numberFlag(values.guidance, DEFAULT_GUIDANCE, "guidance"),
    eta: numberFlag(values.eta, 1, "eta"),
    seed: numberFlag(values.seed, 1, "seed"),
    trajectories: values.trajectories,
    checkpoint: values.lora ? `${values.model}+${values.lora}` : values.model,
    lora: values.lora,
    reward: values.reward,
  });
  model.close();
  engine.close();
}

export const commands: Record<string, (argv: string[]) => Promise<void>> = {
  pretrain: pretrainCommand,
  sample: sampleCommand,
  up: upCommand,
  train: trainCommand,
  watch: watchCommand,
  runs: runsCommand,
  lineage: lineageCommand,
  pull: pullCommand,
  "train-local": trainLocalCommand,
  "train-clip": trainClipCommand,
  eval: evalCommand,
  dashboard: (argv) => dashboardCommand(argv),
};

if (import.meta.main) {
  const [name, ...rest] = process.argv.slice(2);
  const command = name ? commands[name] : undefined;
  if (name === "--help" || name === "-h" || name === "help") {
    console.log(USAGE);
    process.exit(0);
  }
  if (!command) {
    console.error(USAGE);
    process.exit(2);
  }
  try {
    await command(rest);
  } catch (err) {
    console.error(`ddpo ${name}: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
