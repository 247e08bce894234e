// Sampled trajectories as one .safetensors file: latents [B, T+1, C, H, W], log_probs [B, T],
// timesteps [T] and input_ids [B, L] (int32), with metadata prompts (JSON list), guidance, eta,
// seed (JSON list of per-sample seeds), checkpoint and uncond_input_ids (JSON list).

import { readSafetensors, writeSafetensors } from "../checkpoints/safetensors.ts";
import type { SampleResult } from "./sampler.ts";

export interface TrajectoryMetadata {
  guidance: number;
  eta: number;
  checkpoint: string;
}

export function writeTrajectories(
  path: string,
  r: SampleResult,
  shape: { channels: number; size: number },
  meta: TrajectoryMetadata,
): string {
  const B = r.prompts.length;
  const T = r.timesteps.length;
  if (r.latents.length !== B || r.logProbs.length !== B) {
    throw new Error("writeTrajectories: the sample result holds no trajectories (sample with keepTrajectory)");
  }
  const per = shape.channels * shape.size * shape.size;
  const latents = new Float32Array(B * (T + 1) * per);
  const logProbs = new Float32Array(B * T);
  r.latents.forEach((l, b) => {
    latents.set(l, b * (T + 1) * per);
  });
  r.logProbs.forEach((l, b) => {
    logProbs.set(l, b * T);
  });
  const L = r.inputIds.length / B;
  return writeSafetensors(
    path,
    {
      latents: { shape: [B, T + 1, shape.channels, shape.size, shape.size], data: latents },
      log_probs: { shape: [B, T], data: logProbs },
      timesteps: { shape: [T], data: Int32Array.from(r.timesteps) },
      input_ids: { shape: [B, L], data: r.inputIds },
    },
    {
      prompts: JSON.stringify(r.prompts),
      guidance: String(meta.guidance),
      eta: String(meta.eta),
      seed: JSON.stringify(r.seeds),
      checkpoint: meta.checkpoint,
      uncond_input_ids: JSON.stringify(Array.from(r.uncondIds)),
    },
  );
}

export function readTrajectories(path: string): SampleResult & { meta: TrajectoryMetadata } {
  const { tensors, metadata } = readSafetensors(path);
  const need = (k: string) => {
    const t = tensors.get(k);
    if (!t) throw new Error(`${path}: trajectory file lacks '${k}'`);
    return t;
  };
  const latents = need("latents");
  const logProbs = need("log_probs");
  const [B, T1] = latents.shape as [number, number];
  const T = T1 - 1;
  const per = latents.data.length / (B * T1);
  const prompts = JSON.parse(metadata.prompts ?? "[]") as string[];
  if (prompts.length !== B) throw new Error(`${path}: ${prompts.length} prompts for ${B} trajectories`);
  return {
    prompts,
    seeds: JSON.parse(metadata.seed ?? "[]") as number[],
    inputIds: need("input_ids").data as Int32Array,
    uncondIds: Int32Array.from(JSON.parse(metadata.uncond_input_ids ?? "[]") as number[]),
    timesteps: Array.from(need("timesteps").data),
    images: Float32Array.from(
      { length: B * per },
      (_, i) => latents.data[(Math.floor(i / per) * T1 + T) * per + (i % per)]!,
    ),
    latents: Array.from({ length: B }, (_, b) => latents.data.slice(b * T1 * per, (b + 1) * T1 * per) as Float32Array),
    logProbs: Array.from({ length: B }, (_, b) => logProbs.data.slice(b * T, (b + 1) * T) as Float32Array),
    meta: { guidance: Number(metadata.guidance), eta: Number(metadata.eta), checkpoint: metadata.checkpoint ?? "" },
  };
}
