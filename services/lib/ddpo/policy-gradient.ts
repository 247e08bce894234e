// The DDPO update over (sample, timestep) pairs (DESIGN.md §3): recompute eps with the guidance
// used in sampling, the DDIM log-prob of the recorded x_{t'} under the current policy, and the
// DDPO_IS (clipped) or DDPO_SF loss; gradients flow back through the log-prob into eps and the
// UNet. Gradients accumulate; the caller steps the optimizer.
//
// The KL penalty to the reference policy (DESIGN.md §3.6): both transitions are Gaussians with the
// same sigma, so KL(pi_theta || pi_ref) = ||mu_theta - mu_ref||^2 / (2 sigma^2 M) (mean over the M
// pixels, like the log-prob). The DDIM log-prob kernel of a given x_prev computes
// -||x_prev - mu_theta||^2 / (2 sigma^2 M) + log_norm; with x_prev := mu_ref it is log_norm - KL,
// and its backward into eps is the KL's gradient negated, so the penalty needs no kernel of its own.

import type { Arena, Tensor } from "../../../gpu-core/index.ts";
import { encodeContexts, guidedNoise } from "../diffusion/sampler.ts";
import { Graph, type LoraAdapters, type ParameterSource } from "../models/graph.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";

export type PolicyLoss = "ddpo_is" | "ddpo_sf";

/** One training minibatch at one position of each sample's timestep permutation. */
export interface PairBatch {
  prompts: readonly string[];
  /** x_t and the recorded x_{t'} per sample, [b, C, H, W] each. */
  xT: Float32Array;
  xPrev: Float32Array;
  timesteps: readonly number[];
  /** Sampler's log-probs of the x_{t'} (the behaviour policy). */
  oldLogProbs: Float32Array;
  advantages: Float32Array;
}

export interface PolicyGradientSettings {
  loss: PolicyLoss;
  guidance: number;
  eta: number;
  steps: number; // DDIM steps the trajectories were sampled with
  clipRange: number;
  advClipMax: number;
  /** beta of loss += beta * KL(pi_theta || pi_ref); 0 is the paper's objective. */
  klCoefficient: number;
}

export interface PairStats {
  /** The policy loss plus beta * KL, mean over the minibatch. */
  loss: number;
  approxKl: number;
  clipFraction: number;
  /** Mean KL(pi_theta || pi_ref) per pixel over the minibatch; null without a reference. */
  klToReference: number | null;
  /** log-probs recomputed under the current parameters. */
  logProbs: Float32Array;
}

/**
 * Forward and backward of the policy loss on one minibatch; parameter gradients accumulate
 * scaled by `weight` (the minibatch's share of the pairs in the accumulation group). `reference`
 * is the starting model's parameters (frozen; for LoRA the base UNet with no adapters): given, the
 * KL to it is measured and, when klCoefficient > 0, penalised.
 */
export function policyGradientStep(
  model: TextToImageModel,
  source: ParameterSource,
  lora: LoraAdapters | null,
  arena: Arena,
  batch: PairBatch,
  s: PolicyGradientSettings,
  weight: number,
  reference: ParameterSource | null = null,
): PairStats {
  if (s.klCoefficient > 0 && !reference) throw new Error("klCoefficient > 0 needs the reference policy's parameters");
  const engine = model.engine;
  const cfg = model.unetConfig;
  const b = batch.prompts.length;
  const shape = [b, cfg.in_channels, cfg.sample_size, cfg.sample_size];
  const a = { arena };
  const schedule = model.schedule;
  const alphaT = batch.timesteps.map((t) => schedule.alphaBar(t));
  const alphaPrev = batch.timesteps.map((t) => schedule.alphaBarPrev(t, s.steps));
  const clipX0 = schedule.config.clip_sample ? schedule.config.clip_sample_range : 0;

  const g = new Graph(engine, source, arena, lora);
  const ref = reference ? new Graph(engine, reference, arena, null) : null;
  try {
    const xT = engine.fromArray(batch.xT, shape, a);
    const xPrev = engine.fromArray(batch.xPrev, shape, a);
    const t = engine.fromArray(batch.timesteps, [b], a);
    // mu_ref: the reference's DDIM mean with the policy's guidance (its log-prob is not needed).
    let meanRef: Tensor | null = null;
    if (ref) {
      const epsRef = guidedNoise(
        model,
        ref,
        xT,
        t,
        encodeContexts(model, ref, batch.prompts, s.guidance !== 1),
        s.guidance,
      );
      meanRef = engine.tensor(shape, a);
      engine.ddimStepLogProb(engine.tensor([b], a), meanRef, xPrev, xT, epsRef, alphaT, alphaPrev, s.eta, clipX0);
    }
    const context = encodeContexts(model, g, batch.prompts, s.guidance !== 1);
    const eps = guidedNoise(model, g, xT, t, context, s.guidance);
    const logProb = engine.tensor([b], a);
    const meanTheta = meanRef ? engine.tensor(shape, a) : null;
    engine.ddimStepLogProb(logProb, meanTheta, xPrev, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
    const old = engine.fromArray(batch.oldLogProbs, [b], a);
    const adv = engine.fromArray(batch.advantages, [b], a);
    const loss = engine.tensor([1], a);
    const dLogProb = engine.tensor([b], a);
    let stats: Tensor | null = null;
    if (s.loss === "ddpo_is") {
      stats = engine.tensor([2], a);
      engine.ddpoIsForward(loss, stats, logProb, old, adv, s.clipRange, s.advClipMax);
      engine.ddpoIsBackward(dLogProb, weight, logProb, old, adv, s.clipRange, s.advClipMax);
    } else {
      engine.ddpoSfForward(loss, logProb, adv, s.advClipMax);
      engine.ddpoSfBackward(dLogProb, weight, adv, s.advClipMax);
    }
    let dEps = engine.tensor(shape, a);
    engine.ddimStepLogProbBackward(dEps, dLogProb, xPrev, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
    let klToReference: number | null = null;
    let lossValue = loss.read()[0]!;
    if (meanRef && meanTheta) {
      // KL_b = log_norm_b - log_prob_b(mu_ref); log_norm_b is the log-prob of mu_theta itself.
      const lpRef = engine.tensor([b], a);
      const logNorm = engine.tensor([b], a);
      engine.ddimStepLogProb(lpRef, null, meanRef, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
      engine.ddimStepLogProb(logNorm, null, meanTheta, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
      const [lp, ln] = [lpRef.read(), logNorm.read()];
      let kl = 0;
      for (let i = 0; i < b; i++) kl += (ln[i]! - lp[i]!) / b;
      klToReference = Math.max(0, kl);
      if (s.klCoefficient > 0) {
        lossValue += s.klCoefficient * klToReference;
        // d(beta mean_b KL_b) / d log_prob_b(mu_ref) = -beta / b, scaled like the policy loss.
        const dKl = engine.fromArray(new Float32Array(b).fill((-s.klCoefficient * weight) / b), [b], a);
        const dEpsKl = engine.tensor(shape, a);
        engine.ddimStepLogProbBackward(dEpsKl, dKl, meanRef, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
        const sum = engine.tensor(shape, a);
        engine.addForward(sum, dEps, dEpsKl);
        dEps = sum;
      }
    }
    g.backward(eps, dEps);
    const logProbs = logProb.read() as Float32Array;
    // DDPO_IS computes its statistics in the kernel; for DDPO_SF they are logged the same way.
    let st = stats?.read();
    if (!st) {
      let approxKl = 0;
      let clipped = 0;
      for (let i = 0; i < b; i++) {
        const d = logProbs[i]! - batch.oldLogProbs[i]!;
        approxKl += (d * d) / 2 / b;
        if (Math.abs(Math.exp(d) - 1) > s.clipRange) clipped += 1 / b;
      }
      st = Float32Array.of(approxKl, clipped);
    }
    return { loss: lossValue, approxKl: st[0]!, clipFraction: st[1]!, klToReference, logProbs };
  } finally {
    ref?.dispose();
    g.dispose();
  }
}
