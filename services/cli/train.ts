// `ddpo train`: a whole DDPO run in this process (the services distribute the same loop).
// Per epoch: a progress line with reward mean/std, loss, approx_kl, clip fraction and seconds;
// a checkpoint (policy, optimizer, advantage buffers, prompt position), a sample grid, and the
// reward curve PNG. `--resume` continues from the last checkpoint of the run folder.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { promptSetByName } from "../lib/ddpo/prompts.ts";
import {
  DDPO_DEFAULTS,
  type DdpoConfig,
  DdpoTrainer,
  type EpochReport,
  optimizerStepsPerEpoch,
} from "../lib/ddpo/trainer.ts";
import { TextToImageModel } from "../lib/models/text-to-image.ts";
import { imageGridPng } from "../lib/plots/image-grid.ts";
import { lineChartPng } from "../lib/plots/line-chart.ts";
import { rewardByName } from "../lib/rewards/index.ts";
import { commandFlags, type FlagSpec } from "./flags.ts";
import { formatSeconds, ProgressBar } from "./progress.ts";

export const TRAIN_USAGE = `ddpo train --model DIR --out RUN_DIR [--reward jpeg_compressibility] [--prompts animals]
           [--epochs 10] [--loss ddpo_is|ddpo_sf|rwr|sparse_rwr] [--full] [--resume] [--key value ...]`;

function epochLine(r: EpochReport): string {
  return (
    `epoch ${String(r.epoch).padStart(3)}  reward ${r.rewardMean.toFixed(3)} ± ${r.rewardStd.toFixed(3)}  ` +
    `loss ${r.loss.toExponential(2)}  approx_kl ${r.approxKl.toExponential(2)}  clipfrac ${r.clipFraction.toFixed(3)}  ` +
    `${r.seconds.toFixed(1)} s (sample ${r.samplingSeconds.toFixed(1)}, reward ${r.rewardSeconds.toFixed(1)}, train ${r.trainingSeconds.toFixed(1)})`
  );
}

/** What each DdpoConfig key given as a flag means (--help); the default comes from DDPO_DEFAULTS. */
const DDPO_KEY_HELP: Record<Exclude<keyof DdpoConfig, "lora" | "statTracking">, string> = {
  seed: "seed of prompt draws, noise seeds and shuffles",
  loss: "ddpo_is | ddpo_sf | rwr | sparse_rwr",
  sampleBatchSize: "samples per sampling batch",
  sampleBatchesPerEpoch: "sampling batches per epoch",
  steps: "DDIM steps",
  eta: "DDIM eta",
  guidance: "classifier-free guidance scale",
  trainBatchSize: "samples per training minibatch",
  gradientAccumulation: "minibatches per optimizer step",
  innerEpochs: "passes over each epoch's samples",
  timestepFraction: "fraction of each trajectory's steps trained on",
  skipFinalSteps: "last DDIM steps sampled but not trained on",
  clipRange: "PPO ratio clip epsilon",
  advClipMax: "advantages clipped to +-this",
  lr: "AdamW learning rate",
  weightDecay: "AdamW decoupled weight decay",
  maxGradNorm: "gradient L2 norm clip",
  rwrTemperature: "RWR weight temperature",
  sparseRwrPercentile: "sparse RWR keeps samples above this quantile",
};

/** The flags of the DDPO hyper-parameters, shared by `train` and `train-local`. */
export const DDPO_FLAGS = {
  ...Object.fromEntries(
    Object.entries(DDPO_KEY_HELP).map(([k, help]) => [
      k,
      { type: "string", value: "X", help, default: DDPO_DEFAULTS[k as keyof typeof DDPO_KEY_HELP] } satisfies FlagSpec,
    ]),
  ),
  full: { type: "boolean", help: "fine-tune the whole UNet instead of LoRA adapters" },
  "lora-rank": { type: "string", value: "N", help: "LoRA rank", default: DDPO_DEFAULTS.lora!.rank },
  "lora-alpha": { type: "string", value: "X", help: "LoRA alpha (scale alpha / rank)", default: "the rank" },
} as const satisfies Record<string, FlagSpec>;

/** Applies `--key value` overrides onto the defaults, with types taken from the defaults. */
export function configFromFlags(flags: Record<string, string | boolean | undefined>): DdpoConfig {
  const c: Record<string, unknown> = { ...DDPO_DEFAULTS };
  for (const [k, v] of Object.entries(flags)) {
    if (!(k in DDPO_DEFAULTS) || v === undefined) continue;
    const d = (DDPO_DEFAULTS as unknown as Record<string, unknown>)[k];
    if (typeof d === "number") {
      const n = Number(v);
      if (!Number.isFinite(n)) throw new Error(`--${k} must be a number, got '${v}'`);
      c[k] = n;
    } else if (typeof d === "string") c[k] = String(v);
  }
  if (flags.full) c.lora = null;
  if (flags["lora-rank"] !== undefined)
    c.lora = { rank: Number(flags["lora-rank"]), alpha: Number(flags["lora-alpha"] ?? flags["lora-rank"]) };
  return c as unknown as DdpoConfig;
}

export async function trainCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(TRAIN_USAGE.replace("ddpo train", "ddpo train-local"), argv, {
    model: { type: "string", value: "DIR", help: "base model folder (diffusers layout); required" },
    out: { type: "string", value: "RUN_DIR", help: "run folder (history, charts, samples, checkpoints); required" },
    reward: { type: "string", value: "NAME", help: "reward, or a weighted sum", default: "jpeg_compressibility" },
    prompts: { type: "string", value: "SET", help: "prompt set", default: "animals" },
    epochs: { type: "string", value: "N", help: "epochs in all (a resumed run counts the done ones)", default: 10 },
    resume: { type: "boolean", help: "continue from the run folder's last checkpoint" },
    ...DDPO_FLAGS,
  });
  if (!parsed) return;
  const { values } = parsed;
  if (!values.model || !values.out) throw new Error(`train: --model and --out are required\n${TRAIN_USAGE}`);
  const config = configFromFlags(values);
  const epochs = Number(values.epochs ?? 10);
  const reward = rewardByName(values.reward ?? "jpeg_compressibility");
  const engine = Engine.open();
  const model = TextToImageModel.load(engine, values.model);
  const promptSet = await promptSetByName(values.prompts ?? "animals");
  const trainer = new DdpoTrainer(engine, model, config, reward, promptSet);
  const out = values.out;
  const checkpoints = join(out, "checkpoints");
  mkdirSync(checkpoints, { recursive: true });
  const history: EpochReport[] = [];
  if (values.resume) {
    const last = readdirSync(checkpoints)
      .filter((d) => /^epoch-\d+$/.test(d))
      .sort((a, b) => Number(a.slice(6)) - Number(b.slice(6)))
      .at(-1);
    if (!last) throw new Error(`train: --resume but ${checkpoints} holds no checkpoint`);
    trainer.restoreCheckpoint(join(checkpoints, last));
    if (existsSync(join(out, "history.json"))) history.push(...(await Bun.file(join(out, "history.json")).json()));
    console.error(`train: resumed ${out} at epoch ${trainer.epoch}`);
  }
  console.error(
    `train: ${config.loss} on ${reward.name}, prompts ${promptSet.name} (${promptSet.prompts.length}), ` +
      `${config.sampleBatchSize * config.sampleBatchesPerEpoch} samples x ${config.steps} steps per epoch, ` +
      `${config.lora ? `LoRA r=${config.lora.rank}` : "full fine-tuning"}`,
  );
  const size = model.unetConfig.sample_size;
  // One bar over the run, advanced by each sample batch and optimizer step of every epoch.
  const perEpoch = config.sampleBatchesPerEpoch + optimizerStepsPerEpoch(config);
  const bar = new ProgressBar((epochs - trainer.epoch) * perEpoch, 1);
  const firstEpoch = trainer.epoch;
  const started = performance.now();
  const last = { reward: Number.NaN, kl: Number.NaN };
  trainer.onProgress = (phase, done) => {
    const e = trainer.epoch - firstEpoch;
    const ticks = e * perEpoch + (phase === "sampling" ? done : config.sampleBatchesPerEpoch + done);
    const elapsed = (performance.now() - started) / 1000;
    bar.update(
      ticks,
      `epoch ${trainer.epoch + 1}/${epochs} ${phase}  last reward ${Number.isNaN(last.reward) ? "-" : last.reward.toFixed(3)}` +
        `  approx_kl ${Number.isNaN(last.kl) ? "-" : last.kl.toExponential(1)}  ${formatSeconds(elapsed)}` +
        ` (eta ${formatSeconds((elapsed / ticks) * (bar.total - ticks))})`,
    );
  };
  while (trainer.epoch < epochs) {
    const report = await trainer.runEpoch(async (t) => {
      const n = Math.min(16, t.prompts.length);
      await imageGridPng(
        join(out, `samples-epoch-${String(trainer.epoch).padStart(3, "0")}.png`),
        t.imagesU8.subarray(0, n * size * size * 3),
        {
          cols: 8,
          scale: 3,
          height: size,
          width: size,
          captions: t.prompts.slice(0, n).map((p, i) => `${p} ${t.rewards[i]!.toFixed(2)}`),
        },
      );
    });
    last.reward = report.rewardMean;
    last.kl = report.approxKl;
    console.log(epochLine(report));
    history.push(report);
    trainer.saveCheckpoint(join(checkpoints, `epoch-${report.epoch}`));
    writeFileSync(join(out, "history.json"), `${JSON.stringify(history, null, 1)}\n`);
    await lineChartPng(
      join(out, "reward.png"),
      [
        { name: "reward mean", points: history.map((h) => [h.epoch, h.rewardMean] as [number, number]) },
        { name: "mean - std", points: history.map((h) => [h.epoch, h.rewardMean - h.rewardStd] as [number, number]) },
        { name: "mean + std", points: history.map((h) => [h.epoch, h.rewardMean + h.rewardStd] as [number, number]) },
      ],
      { title: `${reward.name} by epoch`, xLabel: "epoch", yLabel: "reward" },
    );
  }
  console.log(`train: ${out} holds history.json, reward.png, samples-epoch-*.png and checkpoints/`);
  trainer.close();
  model.close();
  engine.close();
}
