// Where the DDPO gradient's signal is: per DDIM step, the norm of the policy gradient and the
// cosine between the gradients of two disjoint halves of one epoch's samples (two splits: first
// half vs second, even vs odd). Two independent estimates of the same expected gradient agree
// (cosine > 0) only where it carries signal; where the cosine is ~0 the step adds noise, and a
// step whose norm dwarfs the others drowns the rest (the reason for `skipFinalSteps`).
//
//   npm run bench -- gradient-snr [--json] [--samples 64] [--steps 5] [--guidance 1] [--full]
//                                 [--reward jpeg_compressibility] [--model models/emoji-base]
import { join } from "node:path";
import { Engine } from "../gpu-core/index.ts";
import { collectEpoch } from "../services/lib/ddpo/local-steps.ts";
import { promptSetFromList } from "../services/lib/ddpo/prompts.ts";
import { DDPO_DEFAULTS, type DdpoConfig, DdpoTrainer, type TrainingBatch } from "../services/lib/ddpo/trainer.ts";
import { TextToImageModel } from "../services/lib/models/text-to-image.ts";
import { rewardByName } from "../services/lib/rewards/index.ts";
import { flagValue } from "./flags.ts";

const PROMPTS = ["cat face", "tiger", "frog", "red apple"];

function dot(a: Float32Array, b: Float32Array): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i]! * b[i]!;
  return s;
}

const cosine = (a: Float32Array, b: Float32Array) => dot(a, b) / Math.sqrt(dot(a, a) * dot(b, b));

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const flag = (name: string, fallback: string) => flagValue(args, name, fallback);
  const samples = Number(flag("--samples", "64"));
  if (!(samples >= 4 && samples % 2 === 0)) throw new Error("--samples must be an even number >= 4");
  const config: DdpoConfig = {
    ...DDPO_DEFAULTS,
    steps: Number(flag("--steps", "5")),
    guidance: Number(flag("--guidance", "1")),
    sampleBatchSize: samples / 2,
    sampleBatchesPerEpoch: 2,
    trainBatchSize: samples / 2,
    gradientAccumulation: 1,
    // One optimizer step per half at a negligible rate: train() then leaves that half's gradient
    // in the buffer; no clipping, so norms are the raw ones.
    lr: 1e-30,
    maxGradNorm: 1e30,
    lora: args.includes("--full") ? null : DDPO_DEFAULTS.lora,
    statTracking: { bufferSize: samples, minCount: 8 },
  };
  const engine = Engine.open();
  const model = TextToImageModel.load(engine, flag("--model", join(import.meta.dir, "..", "models", "emoji-base")));
  const reward = rewardByName(flag("--reward", "jpeg_compressibility"));
  const trainer = new DdpoTrainer(engine, model, config, reward, promptSetFromList("snr", "bench", PROMPTS));
  if (trainer.lora) {
    // LoRA's B starts at 0, where A gets no gradient; give B a small value so both do.
    engine.randn(trainer.lora.params.values, 5, 0);
    engine.axpby(trainer.lora.params.values, 1e-3, trainer.lora.params.values, 0);
  }
  const t = await collectEpoch(trainer);
  const T = t.timesteps.length;
  const per = t.latents[0]!.length / (T + 1);
  const half = samples / 2;
  const splits = {
    halves: [Array.from({ length: half }, (_, i) => i), Array.from({ length: half }, (_, i) => i + half)],
    even_odd: [Array.from({ length: half }, (_, i) => 2 * i), Array.from({ length: half }, (_, i) => 2 * i + 1)],
  };
  /** The gradient of the samples `idx` trained on DDIM step k alone. */
  const gradient = (idx: number[], k: number): Float32Array => {
    const batch: TrainingBatch = {
      prompts: idx.map((i) => t.prompts[i]!),
      timesteps: [t.timesteps[k]!],
      latents: idx.map((i) => t.latents[i]!.slice(k * per, (k + 2) * per)),
      logProbs: idx.map((i) => Float32Array.of(t.logProbs[i]![k]!)),
      advantages: Float64Array.from(idx, (i) => t.advantages[i]!),
      rewards: Float64Array.from(idx, (i) => t.rewards[i]!),
    };
    trainer.train(batch);
    return trainer.trainable.grads.read() as Float32Array;
  };
  const schedule = model.schedule;
  const rows = [];
  for (let k = 0; k < T; k++) {
    const [a, b] = splits.halves.map((idx) => gradient(idx, k)) as [Float32Array, Float32Array];
    const [e, o] = splits.even_odd.map((idx) => gradient(idx, k)) as [Float32Array, Float32Array];
    const at = schedule.alphaBar(t.timesteps[k]!);
    const ap = schedule.alphaBarPrev(t.timesteps[k]!, config.steps);
    const sigma = config.eta * Math.sqrt((1 - ap) / (1 - at)) * Math.sqrt(1 - at / ap);
    rows.push({
      step: k + 1,
      timestep: t.timesteps[k]!,
      sigma,
      grad_norm: Math.sqrt(dot(a, a)),
      cos_halves: cosine(a, b),
      cos_even_odd: cosine(e, o),
    });
  }
  console.log(
    `${samples} samples x ${T} steps, guidance ${config.guidance}, ${config.lora ? "LoRA" : "full"}, ${reward.name}`,
  );
  console.log("step  t     sigma    |grad|    cos(halves)  cos(even,odd)");
  for (const r of rows) {
    console.log(
      `${String(r.step).padStart(4)}  ${String(r.timestep).padStart(4)}  ${r.sigma.toFixed(4)}  ` +
        `${r.grad_norm.toExponential(2)}  ${r.cos_halves.toFixed(3).padStart(11)}  ${r.cos_even_odd.toFixed(3).padStart(13)}`,
    );
  }
  if (json) console.log(JSON.stringify({ samples, steps: T, guidance: config.guidance, rows }));
  trainer.close();
  model.close();
  engine.close();
}

if (import.meta.main) await main(process.argv.slice(2));
