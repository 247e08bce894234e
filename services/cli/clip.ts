// `ddpo train-clip`: contrastive training of the emoji CLIP (resumable from its state folder),
// one progress line per 25 steps and one zero-shot evaluation line per checkpoint.
// `ddpo eval`: samples every prompt of a set with fixed seeds and reports how often the emoji
// CLIP reads each image as its prompt (top-1 / top-5 among the set), with a grid.
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { EMOJI_SOURCES, type EmojiSource, loadEmojiDataset } from "../lib/data/emoji.ts";
import { promptSetByName } from "../lib/ddpo/prompts.ts";
import { toUint8Images } from "../lib/diffusion/sampler.ts";
import { evaluatePrompts, PROMPT_EVAL_DEFAULTS } from "../lib/eval/prompt-eval.ts";
import { ClipModel } from "../lib/models/clip-model.ts";
import { LoraAdapterSet } from "../lib/models/lora.ts";
import { TextToImageModel } from "../lib/models/text-to-image.ts";
import { imageGridPng } from "../lib/plots/image-grid.ts";
import { CLIP_TRAIN_DEFAULTS, type ClipEvaluation, trainClip } from "../lib/training/clip.ts";
import { commandFlags, numberFlag, trainingFlags } from "./flags.ts";
import { formatSeconds, ProgressBar } from "./progress.ts";

export const TRAIN_CLIP_USAGE = `train-clip --out DIR [--state-dir DIR] [--steps N] [--batch N] [--lr X] [--seed N]
           [--sources google,twitter] [--no-augment] [--width 64] [--vision-layers 4] [--text-layers 2]
           [--patch 4] [--checkpoint-every N] [--fresh]`;

export function parseSources(v: string | undefined): EmojiSource[] {
  if (v === undefined) return [...EMOJI_SOURCES];
  const out = v.split(",").map((s) => s.trim());
  for (const s of out) {
    if (!EMOJI_SOURCES.includes(s as EmojiSource)) {
      throw new Error(`--sources: unknown image set '${s}' (use ${EMOJI_SOURCES.join(", ")})`);
    }
  }
  return out as EmojiSource[];
}

function evaluationLine(e: ClipEvaluation): string {
  const parts = Object.entries(e)
    .filter(([k]) => k !== "step")
    .map(([k, v]) => {
      const r = v as { top1: number; top5: number };
      return `${k} top-1 ${(100 * r.top1).toFixed(1)}% top-5 ${(100 * r.top5).toFixed(1)}%`;
    });
  return `eval step ${e.step}: zero-shot among the animal names: ${parts.join(", ")}`;
}

export async function trainClipCommand(argv: string[]): Promise<void> {
  const d = CLIP_TRAIN_DEFAULTS;
  const parsed = commandFlags(`ddpo ${TRAIN_CLIP_USAGE}`, argv, {
    ...trainingFlags("model folder written (transformers CLIPModel layout)", d),
    sources: { type: "string", value: "LIST", help: "image sets, comma-separated", default: d.sources.join(",") },
    "no-augment": { type: "boolean", help: "no random crops and flips" },
    width: { type: "string", value: "N", help: "embedding width", default: d.sizes.width },
    "vision-layers": { type: "string", value: "N", help: "vision transformer layers", default: d.sizes.visionLayers },
    "text-layers": { type: "string", value: "N", help: "text transformer layers", default: d.sizes.textLayers },
    patch: { type: "string", value: "N", help: "vision patch size in pixels", default: d.sizes.patchSize },
  });
  if (!parsed) return;
  const { values } = parsed;
  if (!values.out) throw new Error("train-clip: --out DIR is required");
  const options = {
    ...d,
    out: values.out,
    stateDir: values["state-dir"] ?? `${values.out}.training`,
    steps: numberFlag(values.steps, d.steps, "steps", true),
    batchSize: numberFlag(values.batch, d.batchSize, "batch", true),
    lr: numberFlag(values.lr, d.lr, "lr"),
    seed: numberFlag(values.seed, d.seed, "seed", true),
    checkpointEvery: numberFlag(values["checkpoint-every"], d.checkpointEvery, "checkpoint-every", true),
    sources: parseSources(values.sources),
    augment: !values["no-augment"],
    sizes: {
      ...d.sizes,
      width: numberFlag(values.width, d.sizes.width, "width", true),
      visionLayers: numberFlag(values["vision-layers"], d.sizes.visionLayers, "vision-layers", true),
      textLayers: numberFlag(values["text-layers"], d.sizes.textLayers, "text-layers", true),
      patchSize: numberFlag(values.patch, d.sizes.patchSize, "patch", true),
    },
    resume: !values.fresh,
  };
  if (options.steps < 1 || options.batchSize < 2 || options.checkpointEvery < 1) {
    throw new Error("train-clip: --steps and --checkpoint-every must be >= 1, --batch >= 2");
  }
  const dataset = await loadEmojiDataset({ size: options.sizes.imageSize });
  const train = dataset.records.filter((r) => options.sources.includes(r.source)).length;
  console.error(
    `train-clip: ${train} images of ${options.sources.join("+")}, ${options.steps} steps of ${options.batchSize}, ` +
      `state in ${options.stateDir}`,
  );
  const engine = Engine.open();
  const bar = new ProgressBar(options.steps);
  const { model, state } = await trainClip(
    engine,
    dataset,
    options,
    (p) => {
      const eta = ((p.steps - p.step) * options.batchSize) / p.imagesPerSecond;
      bar.update(
        p.step,
        `loss ${p.loss.toFixed(3)} (ema ${p.lossEma.toFixed(3)}) batch top-1 ${(100 * p.batchAccuracy).toFixed(0)}% ` +
          `scale ${p.logitScale.toFixed(1)} ${p.imagesPerSecond.toFixed(0)} img/s lr ${p.lr.toExponential(1)} eta ${formatSeconds(eta)}`,
      );
    },
    (e) => console.error(evaluationLine(e)),
  );
  console.log(
    `train-clip: done, ${state.step} steps in ${formatSeconds(state.seconds)} of training; model in ${options.out} ` +
      `(${model.params.total} parameters)`,
  );
  model.close();
  engine.close();
}

export const EVAL_USAGE = `eval     --model DIR [--lora DIR] [--prompts animals] [--seeds 4] [--steps 50] [--guidance ${PROMPT_EVAL_DEFAULTS.guidance}] [--eta 1]
           [--clip models/emoji-clip] [--batch 64] [--json] [--out grid.png]`;

/** The shipped emoji CLIP, relative to the repository. */
export const DEFAULT_CLIP = join(import.meta.dir, "..", "..", "models", "emoji-clip");

export async function evalCommand(argv: string[]): Promise<void> {
  const d = PROMPT_EVAL_DEFAULTS;
  const parsed = commandFlags(`ddpo ${EVAL_USAGE}`, argv, {
    model: { type: "string", value: "DIR", help: "base model folder (diffusers layout); required" },
    lora: { type: "string", value: "DIR", help: "peft LoRA folder applied over the model" },
    prompts: { type: "string", value: "SET", help: "prompt set, or list:PROMPT,PROMPT,...", default: "animals" },
    seeds: { type: "string", value: "N", help: "images per prompt (seeds 1..N)", default: d.seeds },
    steps: { type: "string", value: "N", help: "DDIM steps", default: d.steps },
    guidance: { type: "string", value: "X", help: "classifier-free guidance scale", default: d.guidance },
    eta: { type: "string", value: "X", help: "DDIM eta", default: d.eta },
    clip: { type: "string", value: "DIR", help: "emoji CLIP folder", default: "models/emoji-clip" },
    batch: { type: "string", value: "N", help: "images per sampling batch", default: d.batch },
    json: { type: "boolean", help: "print the whole report as JSON" },
    out: { type: "string", value: "FILE.png", help: "grid of the images captioned with their ranks" },
  });
  if (!parsed) return;
  const { values } = parsed;
  // Every argument is checked before anything heavy loads.
  if (!values.model) throw new Error("eval: --model DIR is required");
  const options = {
    seeds: numberFlag(values.seeds, d.seeds, "seeds", true),
    steps: numberFlag(values.steps, d.steps, "steps", true),
    guidance: numberFlag(values.guidance, d.guidance, "guidance"),
    eta: numberFlag(values.eta, d.eta, "eta"),
    batch: numberFlag(values.batch, d.batch, "batch", true),
  };
  if (options.seeds < 1) throw new Error(`--seeds must be >= 1, got ${options.seeds}`);
  if (options.steps < 1) throw new Error(`--steps must be >= 1, got ${options.steps}`);
  if (options.batch < 1) throw new Error(`--batch must be >= 1, got ${options.batch}`);
  if (options.guidance < 1) throw new Error(`--guidance must be >= 1, got ${options.guidance}`);
  if (!(options.eta > 0)) throw new Error(`--eta must be > 0, got ${options.eta}`);
  const set = promptSetByName(values.prompts ?? "animals");
  const clipDir = values.clip ?? DEFAULT_CLIP;

  const engine = Engine.open();
  try {
    const model = TextToImageModel.load(engine, values.model);
    const clip = ClipModel.load(engine, clipDir);
    const lora = values.lora ? LoraAdapterSet.load(engine, model.unetShapes, values.lora) : null;
    const bar = values.json ? null : new ProgressBar(set.prompts.length * options.seeds, 1);
    const r = evaluatePrompts(model, clip, set.prompts, {
      ...options,
      lora,
      onProgress: (done, total) => bar?.update(done, `images sampled of ${total}`),
    });
    const size = model.unetConfig.sample_size;
    if (values.out) {
      await imageGridPng(values.out, toUint8Images(r.images, r.images.length / (3 * size * size), 3, size), {
        cols: Math.min(16, 4 * options.seeds),
        scale: 2,
        height: size,
        width: size,
        captions: r.prompts.flatMap((p) => p.ranks.map((rank) => `${p.prompt} #${rank + 1}`)),
        captionLines: 2,
      });
    }
    if (values.json) {
      const { images: _images, ...rest } = r;
      const report = {
        model: values.model,
        lora: values.lora ?? null,
        clip: clipDir,
        prompt_set: set.name,
        ...options,
        ...rest,
        grid: values.out ?? null,
      };
      console.log(JSON.stringify(report, null, 1));
    } else {
      const width = Math.max(...r.prompts.map((p) => p.prompt.length));
      for (const p of r.prompts) {
        const hits = (k: number) => p.ranks.filter((x) => x < k).length;
        console.log(
          `${p.prompt.padEnd(width)}  top-1 ${hits(1)}/${p.ranks.length}  top-5 ${hits(5)}/${p.ranks.length}  ` +
            `(CLIP reads: ${p.predictions.join("; ")})`,
        );
      }
      console.log(
        `eval: ${set.name}, ${set.prompts.length} prompts x ${options.seeds} seeds, ${options.steps} steps, guidance ${options.guidance}: ` +
          `top-1 ${(100 * r.top1).toFixed(1)}%, top-5 ${(100 * r.top5).toFixed(1)}%, alignment (mean cosine) ${r.alignment.toFixed(4)} ` +
          `(chance ${(100 / set.prompts.length).toFixed(1)}% / ${((100 * Math.min(5, set.prompts.length)) / set.prompts.length).toFixed(1)}%) ` +
          `in ${formatSeconds(r.seconds)}${values.out ? `; grid -> ${values.out}` : ""}`,
      );
    }
    lora?.close();
    model.close();
    clip.close();
  } finally {
    engine.close();
  }
}
