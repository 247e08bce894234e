// The DDPO update over (sample, timestep) pairs (DESIGN.md §3): recompute eps with the guidance
// used in sampling, the DDIM log-prob of the recorded x_{t'} under the current policy, and the
// DDPO_IS (clipped) or DDPO_SF loss; gradients flow back through the log-prob into eps and the
// UNet. Gradients accumulate; the caller steps the optimizer.

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
}

export interface PairStats {
  loss: number;
  approxKl: number;
  clipFraction: number;
  /** log-probs recomputed under the current parameters. */
  logProbs: Float32Array;
}

/**
 * Forward and backward of the policy loss on one minibatch; parameter gradients accumulate
 * scaled by `weight` (the minibatch's share of the pairs in the accumulation group).
 */
export function policyGradientStep(
  model: TextToImageModel,
  source: ParameterSource,
  lora: LoraAdapters | null,
  arena: Arena,
  batch: PairBatch,
  s: PolicyGradientSettings,
  weight: number,
): PairStats {
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
  try {
    const xT = engine.fromArray(batch.xT, shape, a);
    const xPrev = engine.fromArray(batch.xPrev, shape, a);
    const t = engine.fromArray(batch.timesteps, [b], a);
    const context = encodeContexts(model, g, batch.prompts, s.guidance !== 1);
    const eps = guidedNoise(model, g, xT, t, context, s.guidance);
    const logProb = engine.tensor([b], a);
    engine.ddimStepLogProb(logProb, null, xPrev, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
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
    const dEps = engine.tensor(shape, a);
    engine.ddimStepLogProbBackward(dEps, dLogProb, xPrev, xT, eps, alphaT, alphaPrev, s.eta, clipX0);
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
    return { loss: loss.read()[0]!, approxKl: st[0]!, clipFraction: st[1]!, logProbs };
  } finally {
    g.dispose();
  }
}
