// Model benchmark: UNet forward and forward+backward images/s at batch 32 for the shipped base
// architecture, the achieved GFLOP/s of their matrix products against the machine's sgemm rate
// measured in the same run, and peak memory (engine bytes and process RSS).
//
//   npm run bench -- model [--json] [--batch 32] [--samples 3] [--profile] [--profile-steps 3]
//
// --profile adds a per-op-kind table (bench/profile.ts) of a forward and of a training step, each
// the mean of --profile-steps repetitions (one step's per-op times vary by 10-30% on a shared
// machine).
import { Engine } from "../gpu-core/index.ts";
import { WordTokenizer } from "../services/lib/data/tokenizer.ts";
import { FlopCounter } from "../services/lib/models/flops.ts";
import { Graph } from "../services/lib/models/graph.ts";
import { combineSources } from "../services/lib/models/parameters.ts";
import { EMOJI_SCHEDULER, emojiTextEncoderConfig, emojiUNetConfig } from "../services/lib/models/presets.ts";
import { TextToImageModel } from "../services/lib/models/text-to-image.ts";
import { PRETRAIN_DEFAULTS } from "../services/lib/training/pretrain.ts";
import { flagValue } from "./flags.ts";
import { perRepetition, profileEngine, profileTable } from "./profile.ts";
import { sgemmGflops, timeIt } from "./sgemm.ts";

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const flag = (name: string, fallback: number) => Number(flagValue(args, name, String(fallback)));
  const B = flag("--batch", 32);
  const samples = flag("--samples", 3);
  const profileSteps = flag("--profile-steps", 3);
  const engine = Engine.open();
  const tokenizer = WordTokenizer.fromCaptions(["cat face"]);
  const unet = emojiUNetConfig(PRETRAIN_DEFAULTS.blockOutChannels, PRETRAIN_DEFAULTS.textHidden);
  const model = TextToImageModel.create(
    engine,
    { unet, textEncoder: emojiTextEncoderConfig(64, PRETRAIN_DEFAULTS.textHidden), scheduler: EMOJI_SCHEDULER },
    tokenizer,
    1,
  );
  const size = model.unetConfig.sample_size;
  const counter = new FlopCounter();
  model.predictNoise(counter, counter.input([B, 3, size, size]), counter.input([B]), counter.input([B, 16, 64]));
  const forwardFlops = counter.forward;

  // The forward row is inference (PyTorch's no_grad): frozen parameters, so no tape and no saved
  // softmax; the training row records everything.
  const sources = {
    forward: combineSources(model.unetSource({ frozen: true }), model.textSource({ frozen: true })),
    train: combineSources(model.unetSource(), model.textSource()),
  };
  const arena = engine.arena(256 << 20);
  const context = engine.tensor([B, tokenizer.maxLength, PRETRAIN_DEFAULTS.textHidden]);
  const x = engine.tensor([B, 3, size, size]);
  const t = engine.fromArray(
    Array.from({ length: B }, (_, i) => (i * 31) % 1000),
    [B],
  );
  const seed = engine.tensor([B, 3, size, size]);
  for (const [k, tensor] of [context, x, seed].entries()) engine.randn(tensor, k + 1, 0);
  const step = (withBackward: boolean) => {
    const g = new Graph(engine, withBackward ? sources.train : sources.forward, arena);
    const eps = model.predictNoise(g, x, t, context);
    if (withBackward) g.backward(eps, seed);
    g.dispose();
    arena.reset();
  };

  const sgemmBefore = sgemmGflops(engine);
  const fwdSeconds = timeIt(engine, () => step(false), samples);
  const trainSeconds = timeIt(engine, () => step(true), samples);
  const sgemmAfter = sgemmGflops(engine);
  const sgemm = (sgemmBefore + sgemmAfter) / 2;
  const fwdGflops = forwardFlops / fwdSeconds / 1e9;
  const trainGflops = (3 * forwardFlops) / trainSeconds / 1e9;
  const result = {
    machine: `${navigator.hardwareConcurrency} threads, ${engine.backend} backend`,
    batch: B,
    unet_parameters: model.parameterCount.unet,
    forward_gflop_per_image: forwardFlops / B / 1e9,
    sgemm_gflops: sgemm,
    unet_forward_img_s: B / fwdSeconds,
    unet_train_img_s: B / trainSeconds,
    unet_forward_gflops: fwdGflops,
    unet_train_gflops: trainGflops,
    unet_forward_ratio_to_sgemm: fwdGflops / sgemm,
    unet_train_ratio_to_sgemm: trainGflops / sgemm,
    peak_engine_mb: engine.memory().peak / 2 ** 20,
    peak_rss_mb: process.resourceUsage().maxRSS / 1024,
  };
  if (args.includes("--profile")) {
    for (const [title, withBackward] of [
      [`forward, batch ${B}`, false],
      [`training step (forward + backward), batch ${B}`, true],
    ] as const) {
      const stop = profileEngine(engine);
      const t0 = performance.now();
      for (let i = 0; i < profileSteps; i++) step(withBackward);
      const wall = (performance.now() - t0) / profileSteps;
      const rows = perRepetition(stop(), profileSteps);
      console.log(`\n${profileTable(`${title}, mean of ${profileSteps}`, rows)}\n(wall ${wall.toFixed(1)} ms)\n`);
    }
  }
  for (const [k, v] of Object.entries(result)) {
    console.log(`${k.padEnd(28)} ${typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(3)) : v}`);
  }
  if (json) console.log(JSON.stringify(result));
  for (const tensor of [context, x, t, seed]) tensor.close();
  arena.close();
  model.close();
  engine.close();
}

if (import.meta.main) await main(process.argv.slice(2));
