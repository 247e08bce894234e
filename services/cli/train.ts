// `ddpo train-local`: a whole DDPO run in this process, through the same epoch pipeline the
// Trainer runs across the services (lib/ddpo/pipeline.ts). Per epoch: a progress line with reward
// mean/std, loss, approx_kl, clip fraction and seconds; in the run folder (lib/runs/run-folder.ts)
// a checkpoint (policy, optimizer, advantage buffers, prompt position), a sample grid, the
// history and the reward curve PNG. `--resume` continues from the folder's last checkpoint.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromJson, type JsonValue, toJson } from "@bufbuild/protobuf";
import { Engine } from "../../gpu-core/index.ts";
import { type EpochReport, EpochReportSchema } from "../gen/ddpo/v1/run_pb.ts";
import {
  CONTENT_TOP1,
  type EvaluationScore,
  type GuardVerdict,
  type HeldOutEvaluation,
  summariseEvaluation,
} from "../lib/ddpo/evaluation.ts";
import { type LocalHooks, runLocalEpoch } from "../lib/ddpo/local-steps.ts";
import type { ProgressListener } from "../lib/ddpo/pipeline.ts";
import { promptSetByName } from "../lib/ddpo/prompts.ts";
import {
  DDPO_DEFAULTS,
  type DdpoConfig,
  type DdpoLoss,
  DdpoTrainer,
  optimizerStepsPerEpoch,
} from "../lib/ddpo/trainer.ts";
import { ClipModel } from "../lib/models/clip-model.ts";
import { TextToImageModel } from "../lib/models/text-to-image.ts";
import { lineChartPng } from "../lib/plots/line-chart.ts";
import { rewardByName } from "../lib/rewards/index.ts";
import { epochName, RunFolder } from "../lib/runs/run-folder.ts";
import { DEFAULT_CLIP } from "./clip.ts";
import { commandFlags, type FlagSpec, numberFlag } from "./flags.ts";
import { epochLine, evaluationLine, formatSeconds, ProgressBar } from "./progress.ts";

export const TRAIN_USAGE = `ddpo train --model DIR --out RUN_DIR [--reward jpeg_compressibility] [--prompts animals]
           [--epochs 10] [--loss ddpo_is|ddpo_sf|rwr|sparse_rwr] [--full] [--resume] [--key value ...]`;

/** The DdpoConfig keys holding a number. */
type NumberKey = { [K in keyof DdpoConfig]: DdpoConfig[K] extends number ? K : never }[keyof DdpoConfig];

/** What each number key given as a flag means (--help); the default comes from DDPO_DEFAULTS. */
const NUMBER_KEY_HELP: Record<NumberKey, string> = {
  seed: "seed of prompt draws, noise seeds and shuffles",
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
  klCoefficient: "beta of the KL penalty to the starting model (0: none)",
  rwrTemperature: "RWR weight temperature",
  sparseRwrPercentile: "sparse RWR keeps samples above this quantile",
};
const NUMBER_KEYS = Object.keys(NUMBER_KEY_HELP).filter((k): k is NumberKey => k in NUMBER_KEY_HELP);
const LOSSES: readonly DdpoLoss[] = ["ddpo_is", "ddpo_sf", "rwr", "sparse_rwr"];

/** The flags of the DDPO hyper-parameters, shared by `train` and `train-local`. */
export const DDPO_FLAGS = {
  loss: { type: "string", value: "NAME", help: LOSSES.join(" | "), default: DDPO_DEFAULTS.loss },
  ...Object.fromEntries(
    NUMBER_KEYS.map((k) => [
      k,
      { type: "string", value: "X", help: NUMBER_KEY_HELP[k], default: DDPO_DEFAULTS[k] } satisfies FlagSpec,
    ]),
  ),
  full: { type: "boolean", help: "fine-tune the whole UNet instead of LoRA adapters" },
  "lora-rank": { type: "string", value: "N", help: "LoRA rank", default: DDPO_DEFAULTS.lora!.rank },
  "lora-alpha": { type: "string", value: "X", help: "LoRA alpha (scale alpha / rank)", default: "the rank" },
  "stat-buffer": {
    type: "string",
    value: "N",
    help: "per-prompt reward statistics: the last N rewards kept per prompt",
    default: DDPO_DEFAULTS.statTracking!.bufferSize,
  },
  "stat-min-count": {
    type: "string",
    value: "N",
    help: "rewards a prompt needs before its own mean/std normalise it (else the epoch's)",
    default: DDPO_DEFAULTS.statTracking!.minCount,
  },
  "eval-prompts": { type: "string", value: "P1,P2", help: "held-out evaluation prompts (none in --prompts)" },
  "eval-seeds": { type: "string", value: "S1,S2", help: "held-out evaluation noise seeds", default: "1,2,3,4" },
  "eval-every": { type: "string", value: "N", help: "evaluate every N epochs (and before the first)", default: 1 },
  "stop-below": {
    type: "string",
    value: "METRIC:FRACTION",
    help: `stop when METRIC's mean falls below FRACTION x its start (e.g. ${CONTENT_TOP1}:0.5)`,
  },
  "best-by": { type: "string", value: "METRIC", help: "mark the best evaluated epoch by this metric's mean" },
} as const satisfies Record<string, FlagSpec>;

/** Applies `--key value` overrides onto the defaults (numbers checked here, ranges by the trainer). */
export function configFromFlags(flags: Record<string, string | string[] | boolean | undefined>): DdpoConfig {
  const c: DdpoConfig = { ...DDPO_DEFAULTS };
  for (const k of NUMBER_KEYS) {
    const v = flags[k];
    if (typeof v === "string") c[k] = numberFlag(v, c[k], k);
  }
  if (typeof flags.loss === "string") {
    const loss = LOSSES.find((l) => l === flags.loss);
    if (!loss) throw new Error(`--loss must be one of ${LOSSES.join(", ")}, got '${flags.loss}'`);
    c.loss = loss;
  }
  if (flags.full) c.lora = null;
  const buffer = flags["stat-buffer"];
  const minCount = flags["stat-min-count"];
  if (typeof buffer === "string" || typeof minCount === "string") {
    const base = DDPO_DEFAULTS.statTracking!;
    c.statTracking = {
      bufferSize: numberFlag(typeof buffer === "string" ? buffer : undefined, base.bufferSize, "stat-buffer", true),
      minCount: numberFlag(typeof minCount === "string" ? minCount : undefined, base.minCount, "stat-min-count", true),
    };
  }
  const rank = flags["lora-rank"];
  if (typeof rank === "string") {
    const alpha = flags["lora-alpha"];
    c.lora = {
      rank: numberFlag(rank, 0, "lora-rank", true),
      alpha: numberFlag(typeof alpha === "string" ? alpha : rank, 0, "lora-alpha"),
    };
  }
  return c;
}

export async function trainCommand(argv: string[]): Promise<void> {
  const parsed = commandFlags(TRAIN_USAGE.replace("ddpo train", "ddpo train-local"), argv, {
    model: { type: "string", value: "DIR", help: "base model folder (diffusers layout); required" },
    out: { type: "string", value: "RUN_DIR", help: "run folder (history, charts, samples, checkpoints); required" },
    reward: { type: "string", value: "NAME", help: "reward, or a weighted sum", default: "jpeg_compressibility" },
    prompts: { type: "string", value: "SET", help: "prompt set, or list:PROMPT,PROMPT,...", default: "animals" },
    epochs: { type: "string", value: "N", help: "epochs in all (a resumed run counts the done ones)", default: 10 },
    resume: { type: "boolean", help: "continue from the run folder's last checkpoint" },
    ...DDPO_FLAGS,
    clip: {
      type: "string",
      value: "DIR",
      help: "emoji CLIP folder of the content check",
      default: "models/emoji-clip",
    },
  });
  if (!parsed) return;
  const { values } = parsed;
  if (!values.model || !values.out) throw new Error(`train: --model and --out are required\n${TRAIN_USAGE}`);
  const config = { ...configFromFlags(values), evaluation: evaluationFromFlags(values) };
  const epochs = numberFlag(values.epochs, 10, "epochs", true);
  const reward = rewardByName(values.reward ?? "jpeg_compressibility");
  const engine = Engine.open();
  const model = TextToImageModel.load(engine, values.model);
  const promptSet = await promptSetByName(values.prompts ?? "animals");
  const trainer = new DdpoTrainer(engine, model, config, reward, promptSet);
  const folder = new RunFolder(values.out);
  const history: EpochReport[] = [];
  if (values.resume) {
    const last = folder.latestCheckpoint();
    if (!last) throw new Error(`train: --resume but ${folder.root} holds no checkpoint`);
    trainer.restoreCheckpoint(last.dir);
    if (existsSync(folder.history)) history.push(...readHistory(folder.history));
    console.error(`train: resumed ${folder.root} at epoch ${trainer.epoch}`);
  }
  console.error(
    `train: ${config.loss} on ${reward.name}, prompts ${promptSet.name} (${promptSet.prompts.length}), ` +
      `${config.sampleBatchSize * config.sampleBatchesPerEpoch} samples x ${config.steps} steps per epoch, ` +
      `${config.lora ? `LoRA r=${config.lora.rank}` : "full fine-tuning"}`,
  );
  const hooks: LocalHooks = {
    record: (epoch, sampled, scored) =>
      folder.writeSamples(epoch, sampled.images, sampled.imageSize, sampled.prompts, scored.rewards),
    checkpoint(epoch) {
      trainer.saveCheckpoint(folder.checkpoint(epoch));
      return epochName(epoch);
    },
    async report(report) {
      console.log(epochLine(report));
      history.push(report);
      const json = history.map((h) => toJson(EpochReportSchema, h));
      writeFileSync(folder.history, `${JSON.stringify(json, null, 1)}\n`);
      await rewardChart(folder.rewardChart, history, reward.name);
    },
  };
  const clip = config.evaluation ? ClipModel.load(engine, values.clip ?? DEFAULT_CLIP) : null;
  if (clip) {
    const evaluations: Record<string, EvaluationScore[]> = {};
    hooks.evaluation = {
      clip,
      sampling: { steps: config.steps, guidance: config.guidance, eta: config.eta, batch: 64 },
      record(epoch, scores) {
        evaluations[epochName(epoch)] = scores;
        mkdirSync(folder.root, { recursive: true });
        writeFileSync(join(folder.root, "evaluations.json"), `${JSON.stringify(evaluations, null, 1)}\n`);
        console.log(evaluationLine(epoch, summariseEvaluation(epoch, scores).means));
      },
    };
  }
  const progress = progressBar(config, epochs, trainer);
  let verdict: GuardVerdict | null = null;
  while (trainer.epoch < epochs) {
    const outcome = await runLocalEpoch(trainer, hooks, progress.listener);
    progress.last = outcome.report;
    verdict = outcome.verdict;
    if (verdict?.stop) {
      console.log(`train: stopped early: ${verdict.stop}`);
      break;
    }
  }
  if (verdict?.best) {
    const { epoch, metric, mean } = verdict.best;
    const which = epoch === 0 ? "the starting model" : `checkpoints/${epochName(epoch)}`;
    console.log(`train: best evaluated policy by ${metric}: epoch ${epoch} (${mean.toFixed(4)}), ${which}`);
  }
  console.log(`train: ${folder.root} holds history.json, reward.png, samples/ and checkpoints/`);
  clip?.close();
  trainer.close();
  model.close();
  engine.close();
}

/** The held-out evaluation of the --eval-* flags; null without --eval-prompts. */
export function evaluationFromFlags(
  flags: Record<string, string | string[] | boolean | undefined>,
): HeldOutEvaluation | null {
  const text = (k: string) => (typeof flags[k] === "string" ? (flags[k] as string) : undefined);
  const list = (k: string) =>
    (text(k) ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
  const prompts = list("eval-prompts");
  const others = ["stop-below", "best-by"].filter((k) => text(k) !== undefined);
  if (prompts.length === 0) {
    if (others.length) throw new Error(`--${others[0]} needs --eval-prompts`);
    return null;
  }
  let stopBelow: HeldOutEvaluation["stopBelow"] = null;
  const stop = text("stop-below");
  if (stop !== undefined) {
    const at = stop.lastIndexOf(":");
    if (at <= 0) throw new Error(`--stop-below must be METRIC:FRACTION, got '${stop}'`);
    stopBelow = { metric: stop.slice(0, at), fraction: numberFlag(stop.slice(at + 1), 0, "stop-below fraction") };
  }
  return {
    prompts,
    seeds:
      text("eval-seeds") === undefined ? [1, 2, 3, 4] : list("eval-seeds").map((s) => numberFlag(s, 0, "eval-seeds")),
    every: numberFlag(text("eval-every"), 1, "eval-every", true),
    stopBelow,
    bestBy: text("best-by") ?? null,
  };
}

/** A run folder's history.json: the epochs' reports as protobuf JSON. */
function readHistory(path: string): EpochReport[] {
  const json = JSON.parse(readFileSync(path, "utf8")) as JsonValue[];
  return json.map((e) => fromJson(EpochReportSchema, e, { ignoreUnknownFields: true }));
}

function rewardChart(path: string, history: readonly EpochReport[], rewardName: string): Promise<void> {
  const points = (f: (h: EpochReport) => number) => history.map((h) => [h.epoch, f(h)] as [number, number]);
  return lineChartPng(
    path,
    [
      { name: "reward mean", points: points((h) => h.rewardMean) },
      { name: "mean - std", points: points((h) => h.rewardMean - h.rewardStd) },
      { name: "mean + std", points: points((h) => h.rewardMean + h.rewardStd) },
    ],
    { title: `${rewardName} by epoch`, xLabel: "epoch", yLabel: "reward" },
  );
}

/** One bar over the run, advanced by each sampled trajectory and optimizer step of every epoch. */
function progressBar(config: DdpoConfig, epochs: number, trainer: DdpoTrainer) {
  const samples = config.sampleBatchSize * config.sampleBatchesPerEpoch;
  const perEpoch = samples + optimizerStepsPerEpoch(config);
  const bar = new ProgressBar((epochs - trainer.epoch) * perEpoch, 1);
  const firstEpoch = trainer.epoch;
  const started = performance.now();
  const state: { last: EpochReport | null; listener: ProgressListener } = {
    last: null,
    listener: (phase, done) => {
      if (phase !== "sampling" && phase !== "training") return;
      const ticks = (trainer.epoch - firstEpoch) * perEpoch + (phase === "sampling" ? done : samples + done);
      const elapsed = (performance.now() - started) / 1000;
      const last = state.last;
      bar.update(
        ticks,
        `epoch ${trainer.epoch + 1}/${epochs} ${phase}  last reward ${last ? last.rewardMean.toFixed(3) : "-"}` +
          `  approx_kl ${last ? last.approxKl.toExponential(1) : "-"}  ${formatSeconds(elapsed)}` +
          ` (eta ${formatSeconds((elapsed / ticks) * (bar.total - ticks))})`,
      );
    },
  };
  return state;
}
