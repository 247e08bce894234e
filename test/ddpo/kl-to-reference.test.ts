// The KL penalty to the reference policy (DESIGN.md §3.6): KL = ||mu_theta - mu_ref||^2 / (2 sigma^2 M)
// from the DDIM log-prob kernel evaluated at x_prev := mu_ref, checked on a case worked by hand; in
// the policy-gradient step it is 0 for the starting model, its gradient matches central finite
// differences, and a larger beta keeps a trained policy closer to its start.
import { afterAll, describe, expect, test } from "bun:test";
import { Engine } from "../../gpu-core/index.ts";
import { collectEpoch, runLocalEpoch } from "../../services/lib/ddpo/local-steps.ts";
import { type PairBatch, policyGradientStep } from "../../services/lib/ddpo/policy-gradient.ts";
import { promptSetFromList } from "../../services/lib/ddpo/prompts.ts";
import { DdpoTrainer } from "../../services/lib/ddpo/trainer.ts";
import { rewardByName } from "../../services/lib/rewards/index.ts";
import { tinyModel } from "../models/tiny-model.ts";
import { tinyDdpoConfig } from "./tiny-config.ts";

const engine = Engine.open();
const captions = ["cat face", "red apple", "tiger", "frog"];
const model = tinyModel(engine, captions, 5);
afterAll(() => {
  model.close();
  engine.close();
});
const prompts = promptSetFromList("test", "tiny", captions);
const reward = rewardByName("jpeg_compressibility");

describe("KL to the reference policy", () => {
  test("a case worked by hand: KL = log_norm - log_prob(mu_ref), gradient from the log-prob backward", () => {
    // alpha_t = 0.5, alpha_prev = 0.8, eta = 1: sigma^2 = (0.2 / 0.5)(1 - 0.5 / 0.8) = 0.15, the
    // direction coefficient sqrt(1 - 0.8 - 0.15) = sqrt(0.05), so d mu / d eps = -sqrt(0.8) sqrt(0.5 / 0.5)
    // + sqrt(0.05) = -sqrt(0.45). With eps_theta - eps_ref = (0.1, -0.2) (M = 2):
    // ||mu_theta - mu_ref||^2 = 0.45 * 0.05 = 0.0225, KL = 0.0225 / (2 * 0.15 * 2) = 0.0375, and
    // dKL / d eps_theta = (mu_theta - mu_ref) / (sigma^2 M) * d mu / d eps = 0.45 / 0.3 * (0.1, -0.2).
    const xT = engine.fromArray([0.3, -0.7], [1, 1, 1, 2]);
    const epsTheta = engine.fromArray([0.5, 0.1], [1, 1, 1, 2]);
    const epsRef = engine.fromArray([0.4, 0.3], [1, 1, 1, 2]);
    const [aT, aP] = [[0.5], [0.8]];
    const meanRef = engine.tensor([1, 1, 1, 2]);
    const meanTheta = engine.tensor([1, 1, 1, 2]);
    const scratch = engine.tensor([1]);
    engine.ddimStepLogProb(scratch, meanRef, xT, xT, epsRef, aT, aP, 1);
    engine.ddimStepLogProb(scratch, meanTheta, xT, xT, epsTheta, aT, aP, 1);
    const lpRef = engine.tensor([1]);
    const logNorm = engine.tensor([1]);
    engine.ddimStepLogProb(lpRef, null, meanRef, xT, epsTheta, aT, aP, 1);
    engine.ddimStepLogProb(logNorm, null, meanTheta, xT, epsTheta, aT, aP, 1);
    const kl = logNorm.read()[0]! - lpRef.read()[0]!;
    expect(logNorm.read()[0]!).toBeCloseTo(-0.5 * Math.log(2 * Math.PI * 0.15), 6);
    expect(Math.abs(kl - 0.0375)).toBeLessThan(1e-6);
    const dEps = engine.tensor([1, 1, 1, 2]);
    engine.ddimStepLogProbBackward(dEps, engine.fromArray([-1], [1]), meanRef, xT, epsTheta, aT, aP, 1);
    const g = dEps.read();
    expect(Math.abs(g[0]! - 0.15)).toBeLessThan(1e-6);
    expect(Math.abs(g[1]! + 0.3)).toBeLessThan(1e-6);
    for (const t of [xT, epsTheta, epsRef, meanRef, meanTheta, scratch, lpRef, logNorm, dEps]) t.close();
  });

  test("policy step: 0 for the starting model; the penalty's gradient matches finite differences", async () => {
    const trainer = new DdpoTrainer(engine, model, tinyDdpoConfig({ klCoefficient: 1 }), reward, prompts);
    const tr = await collectEpoch(trainer);
    const per = 3 * 16 * 16;
    const k = 1;
    const batch: PairBatch = {
      prompts: tr.prompts.slice(0, 2),
      xT: Float32Array.from([0, 1].flatMap((s) => Array.from(tr.latents[s]!.subarray(k * per, (k + 1) * per)))),
      xPrev: Float32Array.from(
        [0, 1].flatMap((s) => Array.from(tr.latents[s]!.subarray((k + 1) * per, (k + 2) * per))),
      ),
      timesteps: [tr.timesteps[k]!, tr.timesteps[k]!],
      oldLogProbs: Float32Array.from([0, 1].map((s) => tr.logProbs[s]![k]!)),
      // Zero advantages: the loss is beta * KL alone.
      advantages: new Float32Array(2),
    };
    const settings = { loss: "ddpo_is" as const, guidance: 3, eta: 1, steps: 4, clipRange: 0.2, advClipMax: 5 };
    const arena = engine.arena();
    const params = trainer.lora!.params;
    const step = (beta: number) => {
      const r = policyGradientStep(
        model,
        trainer.source(true),
        trainer.lora,
        arena,
        batch,
        { ...settings, klCoefficient: beta },
        1,
        trainer.referenceSource(),
      );
      arena.reset();
      return r;
    };
    // LoRA starts with B = 0: the policy is the reference.
    params.zeroGrad();
    const start = step(1);
    console.log(`KL at the start: ${start.klToReference}`);
    expect(Math.abs(start.klToReference!)).toBeLessThan(1e-6);

    engine.randn(params.values, 3, 0);
    // Adapters of this size move the policy measurably (KL ~1e-3) while the KL stays close to
    // quadratic over the difference step; the KL's fp32 resolution is ~1e-7 (log_norm ~ 3).
    engine.axpby(params.values, 0.1, params.values, 0);
    const theta = params.values.read();
    params.zeroGrad();
    const at = step(1);
    expect(at.loss).toBeCloseTo(at.klToReference!, 6);
    const grad = params.grads.read();
    const probe = engine.tensor([theta.length]);
    engine.randn(probe, 17, 0);
    const dir = probe.read();
    probe.close();
    let analytic = 0;
    for (let i = 0; i < dir.length; i++) analytic += grad[i]! * dir[i]!;
    const klAt = (h: number) => {
      params.values.write(Float32Array.from(theta, (v, i) => v + h * dir[i]!));
      params.zeroGrad();
      return step(0).klToReference!;
    };
    const h = 3e-3;
    const fd = (klAt(h) - klAt(-h)) / (2 * h);
    params.values.write(theta);
    console.log(
      `KL ${at.klToReference!.toExponential(3)}; directional derivative ${analytic.toExponential(4)} vs central difference ${fd.toExponential(4)}`,
    );
    expect(at.klToReference!).toBeGreaterThan(1e-4);
    expect(Math.abs(fd - analytic)).toBeLessThan(2e-2 * Math.abs(analytic));
    arena.close();
    trainer.close();
  });

  test("a larger beta keeps the trained policy closer to its start", async () => {
    const klAfter = async (beta: number): Promise<number> => {
      const trainer = new DdpoTrainer(
        engine,
        model,
        tinyDdpoConfig({ klCoefficient: beta, lr: 3e-2 }),
        reward,
        prompts,
      );
      let last = 0;
      for (let e = 0; e < 3; e++) last = (await runLocalEpoch(trainer)).report.klToReference!;
      trainer.close();
      return last;
    };
    const [weak, strong] = [await klAfter(1e-9), await klAfter(100)];
    console.log(
      `kl_to_reference after 3 epochs: beta 1e-9 ${weak.toExponential(3)}, beta 100 ${strong.toExponential(3)}`,
    );
    expect(weak).toBeGreaterThan(0);
    expect(strong).toBeLessThan(0.5 * weak);
  });

  test("full fine-tuning: the reference is a frozen copy of the starting UNet", async () => {
    const own = tinyModel(engine, captions, 5);
    const trainer = new DdpoTrainer(
      engine,
      own,
      tinyDdpoConfig({ lora: null, klCoefficient: 1, lr: 1e-3 }),
      reward,
      prompts,
    );
    const first = (await runLocalEpoch(trainer)).report.klToReference!;
    const second = (await runLocalEpoch(trainer)).report.klToReference!;
    console.log(
      `full fine-tuning kl_to_reference: epoch 1 ${first.toExponential(3)}, epoch 2 ${second.toExponential(3)}`,
    );
    // The UNet itself moved, the reference did not: the KL grows from ~0.
    expect(second).toBeGreaterThan(first);
    expect(second).toBeGreaterThan(1e-6);
    trainer.close();
    own.close();
  });
});
