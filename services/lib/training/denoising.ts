// The epsilon-prediction denoising objective (DDPM): x_t = sqrt(ab_t) x0 + sqrt(1 - ab_t) noise,
// loss = mean over the batch of w_b * mean((eps_theta(x_t, t, c) - noise)^2). Used by pretraining
// (w = 1) and by RWR (w = reward weights). Computes the loss and accumulates parameter gradients.

import type { Arena, Tensor } from "../../../gpu-core/index.ts";
import { Graph, type LoraAdapters, type ParameterSource } from "../models/graph.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";

export interface DenoisingBatch {
  /** Clean images in [-1, 1], [B, C, H, W]. */
  x0: Float32Array;
  prompts: readonly string[];
  /** Integer training timesteps, one per sample. */
  timesteps: readonly number[];
  /** Philox stream and offset of this batch's noise. */
  noiseSeed: number;
  noiseOffset: number;
  /** Per-sample loss weights (RWR); all 1 when absent. */
  weights?: readonly number[];
}

/** Forward + backward of the denoising loss; returns the loss. Gradients accumulate (+=). */
export function denoisingLossAndGrad(
  model: TextToImageModel,
  source: ParameterSource,
  arena: Arena,
  batch: DenoisingBatch,
  lora: LoraAdapters | null = null,
): number {
  const engine = model.engine;
  const cfg = model.unetConfig;
  const B = batch.prompts.length;
  const per = cfg.in_channels * cfg.sample_size * cfg.sample_size;
  if (batch.x0.length !== B * per)
    throw new Error(`denoising batch: x0 has ${batch.x0.length} values, expected ${B * per}`);
  if (batch.timesteps.length !== B) throw new Error("denoising batch: one timestep per prompt");
  const shape = [B, cfg.in_channels, cfg.sample_size, cfg.sample_size];
  const a = { arena };

  const noise = engine.tensor(shape, a);
  engine.randn(noise, batch.noiseSeed, batch.noiseOffset);
  // x_t on the host: B scalars per sample, cheap next to the network.
  const eps0 = noise.read();
  const xt = new Float32Array(B * per);
  for (let b = 0; b < B; b++) {
    const ab = model.schedule.alphaBar(batch.timesteps[b]!);
    const s1 = Math.sqrt(ab);
    const s2 = Math.sqrt(1 - ab);
    for (let i = b * per; i < (b + 1) * per; i++) xt[i] = s1 * batch.x0[i]! + s2 * eps0[i]!;
  }
  const x = engine.fromArray(xt, shape, a);
  const t = engine.fromArray(batch.timesteps, [B], a);
  const weights: Tensor | null = batch.weights ? engine.fromArray(batch.weights, [B], a) : null;

  const g = new Graph(engine, source, arena, lora);
  try {
    const { context } = model.encodePrompts(g, batch.prompts);
    const eps = model.predictNoise(g, x, t, context);
    const loss = engine.tensor([1], a);
    engine.mseForward(loss, eps, noise, weights);
    const dEps = engine.tensor(shape, a);
    engine.mseBackward(dEps, null, 1, eps, noise, weights);
    g.backward(eps, dEps);
    return loss.read()[0]!;
  } finally {
    g.dispose();
  }
}
