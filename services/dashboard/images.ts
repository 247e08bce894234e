// Images the dashboard serves: one step of a recorded trajectory (x_T .. x_0 from its latent blob)
// as a PNG, and the PNG files the Trainer keeps in a run's folder, by name only.
import { existsSync, realpathSync } from "node:fs";
import { join, sep } from "node:path";
import sharp from "sharp";
import { latentsFromBlob } from "../lib/db/recorder.ts";
import { toUint8Images } from "../lib/diffusion/sampler.ts";

export interface LatentLayout {
  /** Rows in the blob: T + 1 (x_T first, x_0 last). */
  rows: number;
  channels: number;
  size: number;
}

/**
 * The blob's layout: [T+1, C, H, W] as stored by the schema's convention, or [T+1, C*H*W] as the
 * Trainer records it; then the model is pixel-space and square, so C*H*W = 3*S*S (RGB) or S*S.
 */
export function latentLayout(shape: readonly number[]): LatentLayout {
  const rows = shape[0] ?? 0;
  if (shape.length === 4 && shape[2] === shape[3]) return { rows, channels: shape[1]!, size: shape[2]! };
  if (shape.length === 2) {
    const n = shape[1]!;
    for (const channels of [3, 1]) {
      const size = Math.round(Math.sqrt(n / channels));
      if (size * size * channels === n) return { rows, channels, size };
    }
  }
  throw new Error(`latents of shape [${shape.join(", ")}] are not square images`);
}

/** Bytes of one row (one step) of the blob: float32 [C, H, W]. */
export function latentRowBytes(layout: LatentLayout): number {
  return layout.channels * layout.size * layout.size * 4;
}

/** One row of a trajectory's latents (float32 little-endian [C, H, W]) as an RGB PNG at the model's size. */
export async function latentRowPng(layout: LatentLayout, row: Uint8Array): Promise<Buffer> {
  const { channels, size } = layout;
  if (row.length !== latentRowBytes(layout)) {
    throw new Error(`a latent row of ${row.length} bytes, expected ${latentRowBytes(layout)}`);
  }
  const rgb = toUint8Images(latentsFromBlob({ bytes: row }), 1, channels, size);
  return sharp(rgb, { raw: { width: size, height: size, channels: 3 } })
    .png()
    .toBuffer();
}

/** Names the dashboard serves from a run folder: the Trainer's per-epoch sample grids. */
const RUN_FOLDER_PNG = /^epoch-\d{1,6}\.png$/;

/**
 * The path of samples/<name> inside a run folder, or null: the name must be an epoch grid's
 * (no separators, no dots but the extension) and the real path must stay inside the folder.
 */
export function runFolderSample(runDir: string, name: string): string | null {
  if (!RUN_FOLDER_PNG.test(name)) return null;
  const candidate = join(runDir, "samples", name);
  if (!existsSync(candidate)) return null;
  const root = realpathSync(join(runDir, "samples"));
  const real = realpathSync(candidate);
  return real.startsWith(root + sep) ? real : null;
}
