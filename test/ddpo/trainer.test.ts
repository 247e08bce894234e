// DDPO invariants on a tiny model (DESIGN.md §3): the same seed gives the same trajectory; on the
// first inner step the recomputed log-probs equal the sampler's (ratio 1); the update does not
// depend on the minibatch split; a checkpoint resumes the run exactly; every loss trains.
import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Engine } from "../../gpu-core/index.ts";
import { collectEpoch, runLocalEpoch } from "../../services/lib/ddpo/local-steps.ts";
import { policyGradientStep } from "../../services/lib/ddpo/policy-gradient.ts";
import { promptSetFromList } from "../../services/lib/ddpo/prompts.ts";
import { DdpoTrainer } from "../../services/lib/ddpo/trainer.ts";
import { sampleImages } from "../../services/lib/diffusion/sampler.ts";
import { readTrajectories, writeTrajectories } from "../../services/lib/diffusion/trajectory-file.ts";
import { rewardByName } from "../../services/lib/rewards/index.ts";
import { relativeError, tinyModel } from "../models/tiny-model.ts";
import { tinyDdpoConfig } from "./tiny-config.ts";

const engine = Engine.open();
const dir = mkdtempSync(join(tmpdir(), "ddpo-trainer-test-"));
const model = tinyModel(engine, ["cat face", "red apple", "tiger", "frog"], 5);
afterAll(() => {
  model.close();
  engine.close();
  rmSync(dir, { recursive: true, force: true });
});
const prompts = promptSetFromList("test", "tiny", ["cat face", "red apple", "tiger", "frog"]);
const reward = rewardByName("jpeg_compressibility");

describe("ddpo", () => {
  test("the same seed gives the same trajectory; the file round-trips", () => {
    const o = { steps: 4, guidance: 3, eta: 1, seeds: [11, 12], keepTrajectory: true };
    const a = sampleImages(model, ["cat face", "tiger"], o);
    const b = sampleImages(model, ["cat face", "tiger"], o);
    expect(a.latents).toEqual(b.latents);
    expect(a.logProbs).toEqual(b.logProbs);
    // A sample's trajectory does not depend on its batch mates, up to fp32 rounding (the kernels
    // group images differently for another batch size; latents are O(1)).
    const alone = sampleImages(model, ["tiger"], { ...o, seeds: [12] });
    const diff = Math.max(...alone.latents[0]!.map((v, i) => Math.abs(v - a.latents[1]![i]!)));
    console.log(`trajectory alone vs in a batch: max abs diff ${diff.toExponential(2)}`);
    expect(diff).toBeLessThan(1e-4);
    const path = join(dir, "traj.safetensors");
    writeTrajectories(path, a, { channels: 3, size: 16 }, { guidance: 3, eta: 1, checkpoint: "test" });
    const back = readTrajectories(path);
    expect(back.prompts).toEqual(a.prompts);
    expect(back.latents).toEqual(a.latents);
    expect(back.logProbs).toEqual(a.logProbs);
    expect(back.timesteps).toEqual(a.timesteps);
    expect(Array.from(back.uncondIds)).toEqual(Array.from(a.uncondIds));
    expect(back.meta.guidance).toBe(3);
  });

  test("on-policy: the first inner step reproduces the sampler's log-probs (ratio 1)", async () => {
    const trainer = new DdpoTrainer(
      engine,
      model,
      tinyDdpoConfig({ lora: { rank: 4, alpha: 4 }, lr: 1e-2 }),
      reward,
      prompts,
    );
    // Two epochs: the second samples with adapters the first epoch has moved, so the sampler
    // and the update must both see the current policy.
    for (let epoch = 1; epoch <= 2; epoch++) {
      const { report, stats } = await runLocalEpoch(trainer);
      console.log(
        `epoch ${epoch}: on-policy max |logp_new - logp_old| = ${stats.onPolicyMaxLogProbDiff.toExponential(2)}`,
      );
      // The sampler runs the adapters folded into its weights (W + scale B A) at the sampling
      // batch, the update runs them as a branch at the minibatch size: the same policy, rounded
      // differently, and any input change redraws the network's rounding, so this measures the
      // engine's rounding level: 2.2e-6 with F(2x2, 3x3) Winograd convolutions, 4.5-5.5e-6 with
      // F(4x4, 3x3) (AVX-512 and AVX2 builds; up to 1.0e-5 with its first interpolation points).
      // Sampling with stale adapters (the bug this guards against) gives 0.26 here.
      expect(stats.onPolicyMaxLogProbDiff).toBeLessThan(5e-5);
      expect(stats.pairs).toBe(4 * 4);
      expect(Number.isFinite(report.loss) && Number.isFinite(report.approxKl)).toBe(true);
    }
    expect(trainer.lora!.params.values.read().some((v, i) => i > 0 && v !== 0)).toBe(true);
    trainer.close();
  });

  test("the gradient does not depend on the minibatch split", async () => {
    const trainer = new DdpoTrainer(engine, model, tinyDdpoConfig({ lora: { rank: 4, alpha: 4 } }), reward, prompts);
    // Give the adapters non-zero B so every LoRA matrix receives gradient.
    engine.randn(trainer.lora!.params.values, 3, 0);
    engine.axpby(trainer.lora!.params.values, 0.01, trainer.lora!.params.values, 0);
    const tr = await collectEpoch(trainer);
    const source = trainer.source(true);
    const per = 3 * 16 * 16;
    const settings = {
      loss: "ddpo_is" as const,
      guidance: 3,
      eta: 1,
      steps: 4,
      clipRange: 0.2,
      advClipMax: 5,
      klCoefficient: 0,
    };
    const arena = engine.arena();
    const gradientFor = (split: number[][]): Float32Array => {
      trainer.lora!.params.zeroGrad();
      const pairs = 4 * 4;
      for (const mb of split) {
        for (let k = 0; k < 4; k++) {
          const xT = new Float32Array(mb.length * per);
          const xPrev = new Float32Array(mb.length * per);
          mb.forEach((s, i) => {
            xT.set(tr.latents[s]!.subarray(k * per, (k + 1) * per), i * per);
            xPrev.set(tr.latents[s]!.subarray((k + 1) * per, (k + 2) * per), i * per);
          });
          policyGradientStep(
            model,
            source,
            trainer.lora,
            arena,
            {
              prompts: mb.map((s) => tr.prompts[s]!),
              xT,
              xPrev,
              timesteps: mb.map(() => tr.timesteps[k]!),
              oldLogProbs: Float32Array.from(mb.map((s) => tr.logProbs[s]![k]! - 0.01 * s)),
              advantages: Float32Array.from(mb.map((s) => tr.advantages[s]!)),
            },
            settings,
            mb.length / pairs,
          );
          arena.reset();
        }
      }
      return trainer.lora!.params.grads.read();
    };
    const whole = gradientFor([[0, 1, 2, 3]]);
    const halves = gradientFor([
      [3, 1],
      [0, 2],
    ]);
    const singles = gradientFor([[2], [0], [3], [1]]);
    const rel = relativeError;
    console.log(
      `minibatch split: rel diff halves ${rel(halves, whole).toExponential(2)}, singles ${rel(singles, whole).toExponential(2)}`,
    );
    expect(whole.some((v) => v !== 0)).toBe(true);
    // fp32 rounding: per-pair log-prob gradients scale with 1/sigma^2 of late steps, and the
    // UNet's sums run in another order for another batch size; observed ~1e-4. A wrong
    // minibatch weighting shows up as O(1).
    expect(rel(halves, whole)).toBeLessThan(1e-3);
    expect(rel(singles, whole)).toBeLessThan(1e-3);
    arena.close();
    trainer.close();
  });

  test("a checkpoint resumes the run exactly (policy, optimizer, advantage buffers, prompt position)", async () => {
    const cfg = tinyDdpoConfig({ lora: { rank: 2, alpha: 2 }, statTracking: { bufferSize: 4, minCount: 2 } });
    const a = new DdpoTrainer(engine, model, cfg, reward, prompts);
    await runLocalEpoch(a);
    a.saveCheckpoint(join(dir, "ckpt"));
    const { report: next } = await runLocalEpoch(a);
    const b = new DdpoTrainer(engine, model, cfg, reward, prompts);
    b.restoreCheckpoint(join(dir, "ckpt"));
    expect(b.epoch).toBe(1);
    const { report: resumed } = await runLocalEpoch(b);
    expect(resumed.rewardMean).toBe(next.rewardMean);
    expect(resumed.loss).toBe(next.loss);
    expect(
      Buffer.from(b.lora!.params.values.read().buffer).equals(Buffer.from(a.lora!.params.values.read().buffer)),
    ).toBe(true);
    a.close();
    b.close();
  });

  test("skipFinalSteps trains exactly the earlier steps: the same update as on trajectories cut after them", async () => {
    const cfg = (skip: number) => tinyDdpoConfig({ lora: { rank: 2, alpha: 2 }, lr: 1e-2, skipFinalSteps: skip });
    const skipping = new DdpoTrainer(engine, model, cfg(2), reward, prompts);
    const tr = await collectEpoch(skipping);
    const cut = new DdpoTrainer(engine, model, cfg(0), reward, prompts);
    cut.planEpoch(); // the same prompt RNG position as `skipping` after its collectEpoch()
    const per = tr.latents[0]!.length / (tr.timesteps.length + 1);
    const report = skipping.train(tr);
    const reportCut = cut.train({
      ...tr,
      timesteps: tr.timesteps.slice(0, 2),
      latents: tr.latents.map((l) => l.subarray(0, 3 * per)),
      logProbs: tr.logProbs.map((l) => l.subarray(0, 2)),
    });
    expect(report.pairs).toBe(4 * 2);
    expect(reportCut.pairs).toBe(4 * 2);
    expect(report.loss).toBe(reportCut.loss);
    const a = skipping.lora!.params.values.read();
    const b = cut.lora!.params.values.read();
    expect(a.some((v) => v !== 0 && v !== a[0])).toBe(true);
    expect(Buffer.from(a.buffer).equals(Buffer.from(b.buffer))).toBe(true);
    expect(() => new DdpoTrainer(engine, model, cfg(4), reward, prompts)).toThrow(
      "skipFinalSteps must be an integer in [0, steps)",
    );
    skipping.close();
    cut.close();
  });

  for (const loss of ["ddpo_sf", "rwr", "sparse_rwr"] as const) {
    test(`${loss} trains: finite loss, the policy moves`, async () => {
      const trainer = new DdpoTrainer(
        engine,
        model,
        tinyDdpoConfig({ loss, full: undefined, sparseRwrPercentile: 0.5 } as never),
        reward,
        prompts,
      );
      const before = trainer.lora!.params.values.read();
      const { report } = await runLocalEpoch(trainer);
      expect(Number.isFinite(report.loss)).toBe(true);
      expect(report.optimizerSteps).toBeGreaterThan(0);
      const after = trainer.lora!.params.values.read();
      expect(after.some((v, i) => v !== before[i])).toBe(true);
      trainer.close();
    });
  }
});

describe("ddpo update direction", () => {
  test("a small step along the DDPO_SF gradient raises sum(A * log pi) on the same trajectories", async () => {
    const cfg = tinyDdpoConfig({ loss: "ddpo_sf", lora: null, trainBatchSize: 4, gradientAccumulation: 1 });
    const trainer = new DdpoTrainer(engine, model, cfg, reward, prompts);
    const tr = await collectEpoch(trainer);
    const per = 3 * 16 * 16;
    const arena = engine.arena();
    const source = trainer.source(true);
    const surrogate = (): number => {
      model.unet.zeroGrad();
      let total = 0;
      for (let k = 0; k < 4; k++) {
        const xT = new Float32Array(4 * per);
        const xPrev = new Float32Array(4 * per);
        for (let s = 0; s < 4; s++) {
          xT.set(tr.latents[s]!.subarray(k * per, (k + 1) * per), s * per);
          xPrev.set(tr.latents[s]!.subarray((k + 1) * per, (k + 2) * per), s * per);
        }
        const stats = policyGradientStep(
          model,
          source,
          null,
          arena,
          {
            prompts: tr.prompts,
            xT,
            xPrev,
            timesteps: [0, 1, 2, 3].map(() => tr.timesteps[k]!),
            oldLogProbs: Float32Array.from([0, 1, 2, 3].map((s) => tr.logProbs[s]![k]!)),
            advantages: Float32Array.from(tr.advantages),
          },
          { loss: "ddpo_sf", guidance: 3, eta: 1, steps: 4, clipRange: 1e-4, advClipMax: 5, klCoefficient: 0 },
          1 / 4,
        );
        arena.reset();
        stats.logProbs.forEach((lp, s) => {
          total += tr.advantages[s]! * lp;
        });
      }
      return total;
    };
    const before = surrogate(); // also leaves d(loss)/d(params) in the gradient buffer
    const saved = model.unet.values.read();
    const grad = model.unet.grads.read();
    const norm = Math.hypot(...grad);
    // Plain gradient descent on the loss (= ascent on sum A log pi). log pi is sharp in the
    // weights (1/sigma^2 at the late steps), so the step is 1e-6 of the weights' norm.
    const step = (1e-6 * Math.hypot(...saved)) / norm;
    model.unet.values.write(saved.map((w, i) => w - step * grad[i]!));
    const after = surrogate();
    model.unet.values.write(saved);
    console.log(`surrogate sum(A log pi): ${before.toFixed(6)} -> ${after.toFixed(6)}`);
    expect(after).toBeGreaterThan(before);
    arena.close();
    trainer.close();
  });
});
