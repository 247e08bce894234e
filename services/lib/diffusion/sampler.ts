// DDIM sampling with eta > 0 and classifier-free guidance (DESIGN.md §3), keeping what DDPO
// needs: every latent x_T..x_0 and the log-prob of each step under the policy.
// Noise is per sample: x_T is Philox stream `seed_b` from 0, step k's noise continues that stream
// at (k+1)·numel, so a sample's trajectory depends only on its seed, prompt and the weights.

import type { Arena, Engine, Tensor } from "../../../gpu-core/index.ts";
import { Graph, type LoraAdapters, type ParameterSource } from "../models/graph.ts";
import { mergedLoraSource } from "../models/lora.ts";
import { combineSources } from "../models/parameters.ts";
import type { TextToImageModel } from "../models/text-to-image.ts";

export interface SampleOptions {
  steps: number;
  /** Classifier-free guidance scale w; 1 disables guidance (no unconditional pass). */
  guidance: number;
  eta: number;
  /** One seed per prompt (trajectory identity). */
  seeds: readonly number[];
  /** Keep x_T..x_0 and the per-step log-probs (DDPO). */
  keepTrajectory?: boolean;
  /** Parameters to sample with (e.g. LoRA over a frozen base); the model's own by default. */
  source?: ParameterSource;
  /** LoRA adapters applied on top of `source` (the policy being trained). */
  lora?: LoraAdapters | null;
  /** Asked before each denoising step; true abandons the batch with SamplingCancelled. */
  cancelled?: () => boolean;
}

/** Thrown by sampleImages when its `cancelled` hook says so. */
export class SamplingCancelled extends Error {
  override name = "SamplingCancelled";
}

export interface SampleResult {
  prompts: string[];
  seeds: number[];
  inputIds: Int32Array; // [B, L]
  uncondIds: Int32Array; // [L]
  timesteps: number[]; // [T], most noisy first
  /** x_0 in [-1, 1], [B, C, H, W]. */
  images: Float32Array;
  /** latents[b] = x_T..x_0 for sample b, [T+1, C, H, W] (with keepTrajectory). */
  latents: Float32Array[];
  /** logProbs[b][k] = log pi(x_{k+1} | x_k) (with keepTrajectory). */
  logProbs: Float32Array[];
}

/** Text contexts for guidance: [uncond x B ; cond x B] when guided, else cond only. */
export function encodeContexts(model: TextToImageModel, g: Graph, prompts: readonly string[], guided: boolean): Tensor {
  const texts = guided ? [...prompts.map(() => ""), ...prompts] : [...prompts];
  return model.encodePrompts(g, texts).context;
}

/**
 * eps with guidance: eps_u + w (eps_c - eps_u), computed as one UNet pass over the doubled batch
 * (the Graph records it, so training backpropagates through exactly what sampling computed).
 */
export function guidedNoise(
  model: TextToImageModel,
  g: Graph,
  x: Tensor,
  timesteps: Tensor,
  context: Tensor,
  guidance: number,
): Tensor {
  const B = x.shape[0]!;
  if (guidance === 1) return model.predictNoise(g, x, timesteps, context);
  const xx = g.batchConcat(x, x);
  const tt = g.batchConcat(timesteps, timesteps);
  const eps = model.predictNoise(g, xx, tt, context);
  const [epsU, epsC] = g.batchSplit(eps, B);
  return g.combine(epsU, 1 - guidance, epsC, guidance);
}

export function sampleImages(model: TextToImageModel, prompts: readonly string[], o: SampleOptions): SampleResult {
  const engine: Engine = model.engine;
  const B = prompts.length;
  if (B === 0) throw new Error("sample: no prompts");
  if (o.seeds.length !== B) throw new Error(`sample: ${o.seeds.length} seeds for ${B} prompts`);
  if (!(o.eta > 0)) throw new Error("sample: eta must be > 0 (the policy needs a log-prob)");
  if (!Number.isFinite(o.guidance) || o.guidance < 1) throw new Error("sample: guidance must be >= 1");
  const cfg = model.unetConfig;
  const shape = [B, cfg.in_channels, cfg.sample_size, cfg.sample_size];
  const per = cfg.in_channels * cfg.sample_size * cfg.sample_size;
  const schedule = model.schedule;
  const timesteps = schedule.ddimTimesteps(o.steps);
  const clipX0 = schedule.config.clip_sample ? schedule.config.clip_sample_range : 0;
  const given = o.source ?? combineSources(model.unetSource({ frozen: true }), model.textSource({ frozen: true }));
  const guided = o.guidance !== 1;
  // No gradient flows here, so LoRA adapters are folded into their weights once per batch.
  const merged = o.lora ? mergedLoraSource(engine, given, o.lora) : null;
  const source = merged?.source ?? given;

  const textArena = engine.arena(1 << 20);
  const stepArena: Arena = engine.arena(1 << 24);
  const x = engine.tensor(shape);
  const xPrev = engine.tensor(shape);
  const noise = engine.tensor(shape);
  const logProb = engine.tensor([B]);
  const latents = o.keepTrajectory ? prompts.map(() => new Float32Array((timesteps.length + 1) * per)) : [];
  const logProbs = o.keepTrajectory ? prompts.map(() => new Float32Array(timesteps.length)) : [];
  const record = (k: number) => {
    if (!o.keepTrajectory) return;
    const host = x.read();
    for (let b = 0; b < B; b++) latents[b]!.set(host.subarray(b * per, (b + 1) * per), k * per);
  };
  try {
    const textGraph = new Graph(engine, source, textArena);
    const context = encodeContexts(model, textGraph, prompts, guided);
    fillPerSampleNoise(engine, x, o.seeds, 0);
    record(0);
    timesteps.forEach((t, k) => {
      if (o.cancelled?.())
        throw new SamplingCancelled(`sampling cancelled before step ${k + 1} of ${timesteps.length}`);
      const g = new Graph(engine, source, stepArena);
      const tt = engine.fromArray(new Array(B).fill(t), [B], { arena: stepArena });
      const eps = guidedNoise(model, g, x, tt, context, o.guidance);
      fillPerSampleNoise(engine, noise, o.seeds, (k + 1) * per);
      const a = new Array(B).fill(schedule.alphaBar(t));
      const ap = new Array(B).fill(schedule.alphaBarPrev(t, o.steps));
      engine.ddimStepSample(xPrev, logProb, null, x, eps, noise, a, ap, o.eta, clipX0);
      engine.copy(x, xPrev);
      if (o.keepTrajectory) {
        const lp = logProb.read();
        for (let b = 0; b < B; b++) logProbs[b]![k] = lp[b]!;
      }
      record(k + 1);
      g.dispose();
      stepArena.reset();
    });
    textGraph.dispose();
    return {
      prompts: [...prompts],
      seeds: [...o.seeds],
      inputIds: model.tokenizer.encodeBatch(prompts),
      uncondIds: model.tokenizer.encode(""),
      timesteps,
      images: x.read(),
      latents,
      logProbs,
    };
  } finally {
    for (const t of [x, xPrev, noise, logProb]) t.close();
    merged?.close();
    stepArena.close();
    textArena.close();
  }
}

/** Fills row b of y [B, ...] with Philox stream seeds[b] starting at `offset`. */
export function fillPerSampleNoise(engine: Engine, y: Tensor, seeds: readonly number[], offset: number): void {
  const per = y.numel / y.shape[0]!;
  seeds.forEach((seed, b) => {
    const row = y.view(b * per, [per]);
    engine.randn(row, seed, offset);
    row.close();
  });
}

/** [-1, 1] NCHW floats -> [N, H, W, 3] uint8 (as the images are judged and encoded). */
export function toUint8Images(x: Float32Array, n: number, channels: number, size: number): Uint8Array {
  const hw = size * size;
  const out = new Uint8Array(n * hw * 3);
  for (let b = 0; b < n; b++) {
    for (let p = 0; p < hw; p++) {
      for (let c = 0; c < 3; c++) {
        const v = x[(b * channels + Math.min(c, channels - 1)) * hw + p]!;
        out[(b * hw + p) * 3 + c] = Math.max(0, Math.min(255, Math.round((v + 1) * 127.5)));
      }
    }
  }
  return out;
}
