// DDPO benchmark: one epoch of the in-process trainer on the shipped base model, its time split
// into sampling, reward and training, samples/s and trained (sample, timestep) pairs/s, and the
// achieved GFLOP/s of the UNet's matrix products against the sgemm rate measured in the same run.
//
//   npm run bench -- ddpo [--json] [--samples 16] [--steps 20] [--kl BETA] [--model models/emoji-base]
//                         [--profile]
//
// The settings are pinned (guidance 3, whatever DDPO_DEFAULTS says) so the row stays comparable
// across sessions. --kl adds the KL penalty to the reference policy (issue 15): one more UNet
// forward per trained pair, with the LoRA adapters off, counted in the achieved FLOPs. --profile
// prints the epoch's per-op-kind table (bench/profile.ts; its timing adds a little to the epoch).
import { join } from "node:path";
import { Engine } from "../gpu-core/index.ts";
import { runLocalEpoch } from "../services/lib/ddpo/local-steps.ts";
import { promptSetByName } from "../services/lib/ddpo/prompts.ts";
import { DDPO_DEFAULTS, DdpoTrainer } from "../services/lib/ddpo/trainer.ts";
import { FlopCounter } from "../services/lib/models/flops.ts";
import { TextToImageModel } from "../services/lib/models/text-to-image.ts";
import { rewardByName } from "../services/lib/rewards/index.ts";
import { flagValue } from "./flags.ts";
import { profileEngine, profileTable } from "./profile.ts";
import { sgemmGflops } from "./sgemm.ts";

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const flag = (name: string, fallback: string) => flagValue(args, name, fallback);
  const samples = Number(flag("--samples", "16"));
  const steps = Number(flag("--steps", "20"));
  const klCoefficient = Number(flag("--kl", "0"));
  const engine = Engine.open();
  const model = TextToImageModel.load(engine, flag("--model", join(import.meta.dir, "..", "models", "emoji-base")));
  const config = {
    ...DDPO_DEFAULTS,
    sampleBatchSize: samples,
    sampleBatchesPerEpoch: 1,
    steps,
    guidance: 3,
    klCoefficient,
    trainBatchSize: 4,
    gradientAccumulation: 4,
  };
  const trainer = new DdpoTrainer(
    engine,
    model,
    config,
    rewardByName("jpeg_compressibility"),
    await promptSetByName("animals"),
  );

  // FLOPs of one UNet pass per image (conv, linear, attention products), LoRA adapters aside.
  const size = model.unetConfig.sample_size;
  const counter = new FlopCounter();
  model.predictNoise(
    counter,
    counter.input([1, 3, size, size]),
    counter.input([1]),
    counter.input([1, model.tokenizer.maxLength, model.textConfig.hidden_size]),
  );
  const perImage = counter.forward;
  const cfgPasses = config.guidance === 1 ? 1 : 2;

  const sgemmBefore = sgemmGflops(engine);
  const stopProfile = args.includes("--profile") ? profileEngine(engine) : null;
  const { report, stats } = await runLocalEpoch(trainer);
  if (stopProfile) console.log(`\n${profileTable("one DDPO epoch (sampling and training)", stopProfile())}\n`);
  const sgemm = (sgemmBefore + sgemmGflops(engine)) / 2;
  const samplingFlops = samples * steps * cfgPasses * perImage;
  // forward + backward (2x), and the reference policy's forward when the KL term is on
  const trainingFlops = stats.pairs * cfgPasses * (klCoefficient > 0 ? 4 : 3) * perImage;
  const achieved = (samplingFlops + trainingFlops) / (report.samplingS + report.trainingS) / 1e9;
  const result = {
    machine: `${navigator.hardwareConcurrency} threads, ${engine.backend} backend`,
    samples,
    steps,
    kl_coefficient: klCoefficient,
    pairs: stats.pairs,
    epoch_s: report.seconds,
    sampling_s: report.samplingS,
    reward_s: report.rewardS,
    training_s: report.trainingS,
    samples_per_s: samples / report.samplingS,
    pairs_per_s: stats.pairs / report.trainingS,
    sgemm_gflops: sgemm,
    achieved_gflops: achieved,
    ratio_to_sgemm: achieved / sgemm,
    peak_engine_mb: engine.memory().peak / 2 ** 20,
  };
  for (const [k, v] of Object.entries(result))
    console.log(`${k.padEnd(16)} ${typeof v === "number" ? (Number.isInteger(v) ? v : v.toFixed(3)) : v}`);
  if (json) console.log(JSON.stringify(result));
  trainer.close();
  model.close();
  engine.close();
}

if (import.meta.main) await main(process.argv.slice(2));
