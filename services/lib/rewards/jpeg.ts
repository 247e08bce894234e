// JPEG (in)compressibility, the paper's first two rewards (DESIGN.md §6). The reference encodes
// with PIL, `image.save(buf, format="JPEG", quality=95)`, and scores len(buf) / 1000, so a
// "kB" here is 1000 bytes. The sharp options below reproduce PIL's defaults rather than sharp's:
// - quality 95 (sharp's default is 80);
// - chroma subsampling 4:2:0 (the default of both: PIL's subsampling=-1 means libjpeg's 2x2);
// - standard Huffman tables: sharp defaults to optimiseCoding=true, PIL to optimize=False,
//   and optimised tables shave a few hundred bytes, a large share of a 32x32 image's file;
// - baseline (not progressive), no trellis quantisation, no metadata: the defaults of both.
// Both then use libjpeg's standard (Annex K) quantisation tables scaled for quality 95, so sizes
// should agree with the reference up to header details (not checked byte for byte: no Python here).

import sharp from "sharp";
import { type ImageSize, type RewardFunction, validateBatch } from "./reward-function.ts";

export const JPEG_QUALITY = 95;

const JPEG_OPTIONS = {
  quality: JPEG_QUALITY,
  chromaSubsampling: "4:2:0",
  optimiseCoding: false,
  progressive: false,
  mozjpeg: false,
} as const;

/** Encodes one (H, W, 3) RGB image as the reference does; returns the JPEG file. */
export async function encodeJpeg(pixels: Uint8Array, size: ImageSize): Promise<Uint8Array> {
  return sharp(pixels, { raw: { width: size.width, height: size.height, channels: 3 } })
    .jpeg(JPEG_OPTIONS)
    .toBuffer();
}

/** JPEG sizes in kB (1000 bytes) of (N, H, W, 3) RGB images, quality 95. */
export async function jpegSizesKb(images: Uint8Array, size: ImageSize, n: number): Promise<Float64Array> {
  const stride = size.height * size.width * 3;
  const files = await Promise.all(
    Array.from({ length: n }, (_, i) => encodeJpeg(images.subarray(i * stride, (i + 1) * stride), size)),
  );
  return Float64Array.from(files, (f) => f.length / 1000);
}

export const jpegIncompressibility: RewardFunction = {
  name: "jpeg_incompressibility",
  description: "JPEG size in kB (1000 bytes) at quality 95, 4:2:0; higher = more detail",
  async score(images, size, prompts) {
    const n = validateBatch("jpeg_incompressibility", images, size, prompts);
    return jpegSizesKb(images, size, n);
  },
};

export const jpegCompressibility: RewardFunction = {
  name: "jpeg_compressibility",
  description: "minus the JPEG size in kB (1000 bytes) at quality 95, 4:2:0; higher = simpler image",
  async score(images, size, prompts) {
    const n = validateBatch("jpeg_compressibility", images, size, prompts);
    return (await jpegSizesKb(images, size, n)).map((kb) => -kb);
  },
};
