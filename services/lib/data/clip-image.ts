// CLIP's image preprocessing as transformers' CLIPImageProcessor (the PIL path) does it, from a
// folder's preprocessor_config.json: RGB uint8 (H,W,3) -> resize so the shortest side is
// size.shortest_edge (the long side int(edge * long / short)) with PIL's bicubic filter ->
// centre crop crop_size (top = (H - h) // 2, left = (W - w) // 2) -> x * rescale_factor ->
// (x - image_mean) / image_std per channel -> pixel_values (3, h, w).
//
// The resampler is PIL's ImagingResample: separable, horizontal pass then vertical, each output
// pixel i sampling around centre (i + 0.5) * in/out with the cubic kernel a = -0.5, stretched by
// in/out when shrinking (so it averages, like PIL's antialiasing), weights normalised to sum 1;
// each pass rounds and clamps to 0..255 as PIL does for 8-bit images.

import { readJsonConfig } from "../checkpoints/model-folder.ts";

/** openai CLIP's normalisation (every openai/clip-vit-* preprocessor_config.json). */
export const OPENAI_CLIP_MEAN: readonly number[] = [0.48145466, 0.4578275, 0.40821073];
export const OPENAI_CLIP_STD: readonly number[] = [0.26862954, 0.26130258, 0.27577711];

export interface ClipImageProcessing {
  /** Resize target of the shortest side (0: no resize). */
  shortestEdge: number;
  /** Centre-crop size (0: no crop). */
  cropHeight: number;
  cropWidth: number;
  rescaleFactor: number;
  mean: readonly number[];
  std: readonly number[];
}

/** The settings of a CLIPImageProcessor config (only what it does with bicubic resampling). */
export function parseClipImageProcessor(
  raw: Record<string, unknown>,
  where = "preprocessor_config.json",
): ClipImageProcessing {
  const problems: string[] = [];
  const positive = (v: unknown) => typeof v === "number" && Number.isInteger(v) && v > 0;
  let shortestEdge = 0;
  if (raw.do_resize !== false) {
    const size = raw.size;
    const edge = typeof size === "number" ? size : (size as { shortest_edge?: unknown } | undefined)?.shortest_edge;
    if (!positive(edge)) problems.push("size.shortest_edge must be a positive integer");
    else shortestEdge = edge as number;
    if (raw.resample !== undefined && raw.resample !== 3) problems.push(`resample ${raw.resample} (only 3, bicubic)`);
  }
  let cropHeight = 0;
  let cropWidth = 0;
  if (raw.do_center_crop !== false) {
    const crop = raw.crop_size;
    const h = typeof crop === "number" ? crop : (crop as { height?: unknown } | undefined)?.height;
    const w = typeof crop === "number" ? crop : (crop as { width?: unknown } | undefined)?.width;
    if (!positive(h) || !positive(w)) problems.push("crop_size must give positive integer height and width");
    else [cropHeight, cropWidth] = [h as number, w as number];
    if (shortestEdge > 0 && Math.min(cropHeight, cropWidth) > shortestEdge) {
      problems.push(`crop_size ${cropHeight}x${cropWidth} is larger than shortest_edge ${shortestEdge}`);
    }
  }
  const rescaleFactor = raw.do_rescale === false ? 1 : ((raw.rescale_factor as number | undefined) ?? 1 / 255);
  if (!(Number.isFinite(rescaleFactor) && rescaleFactor > 0)) problems.push("rescale_factor must be > 0");
  const triple = (v: unknown, fallback: readonly number[]) => {
    if (v === undefined) return fallback;
    if (!Array.isArray(v) || v.length !== 3 || !v.every((x) => typeof x === "number" && Number.isFinite(x)))
      return null;
    return v as number[];
  };
  let mean: readonly number[] = [0, 0, 0];
  let std: readonly number[] = [1, 1, 1];
  if (raw.do_normalize !== false) {
    const m = triple(raw.image_mean, OPENAI_CLIP_MEAN);
    const s = triple(raw.image_std, OPENAI_CLIP_STD);
    if (!m) problems.push("image_mean must be three numbers");
    else mean = m;
    if (!s || s.some((x) => !(x > 0))) problems.push("image_std must be three positive numbers");
    else std = s;
  }
  if (problems.length) throw new Error(`${where}: ${problems.join("; ")}`);
  return { shortestEdge, cropHeight, cropWidth, rescaleFactor, mean, std };
}

export function readClipImageProcessor(path: string): ClipImageProcessing {
  return parseClipImageProcessor(readJsonConfig(path), path);
}

/** (height, width) after resizing the shortest side to `edge`, as transformers computes it. */
export function shortestEdgeSize(height: number, width: number, edge: number): [number, number] {
  if (height <= width) return [edge, Math.trunc((edge * width) / height)];
  return [Math.trunc((edge * height) / width), edge];
}

/** PIL's bicubic kernel (a = -0.5). */
export function bicubicKernel(x: number): number {
  const a = -0.5;
  const t = Math.abs(x);
  if (t < 1) return ((a + 2) * t - (a + 3)) * t * t + 1;
  if (t < 2) return (((t - 5) * t + 8) * t - 4) * a;
  return 0;
}

/** Per output index: the first input index and the normalised weights (PIL's precompute_coeffs). */
export function bicubicWeights(inSize: number, outSize: number): { first: Int32Array; weights: Float64Array[] } {
  const scale = inSize / outSize;
  const filterScale = Math.max(scale, 1);
  const support = 2 * filterScale;
  const first = new Int32Array(outSize);
  const weights: Float64Array[] = [];
  for (let i = 0; i < outSize; i++) {
    const centre = (i + 0.5) * scale;
    const lo = Math.max(Math.trunc(centre - support + 0.5), 0);
    const hi = Math.min(Math.trunc(centre + support + 0.5), inSize);
    const w = new Float64Array(hi - lo);
    let sum = 0;
    for (let x = lo; x < hi; x++) {
      w[x - lo] = bicubicKernel((x - centre + 0.5) / filterScale);
      sum += w[x - lo]!;
    }
    if (sum !== 0) for (let k = 0; k < w.length; k++) w[k]! /= sum;
    first[i] = lo;
    weights.push(w);
  }
  return { first, weights };
}

/** One resampling pass along an axis of an (H, W, 3) uint8-valued image, rounded and clamped to 0..255. */
function resamplePass(src: Float64Array, h: number, w: number, out: number, alongWidth: boolean): Float64Array {
  const inSize = alongWidth ? w : h;
  const { first, weights } = bicubicWeights(inSize, out);
  const [oh, ow] = alongWidth ? [h, out] : [out, w];
  const dst = new Float64Array(oh * ow * 3);
  for (let y = 0; y < oh; y++)
    for (let x = 0; x < ow; x++) {
      const i = alongWidth ? x : y;
      const wt = weights[i]!;
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let k = 0; k < wt.length; k++) {
          const j = first[i]! + k;
          s += wt[k]! * src[(alongWidth ? y * w + j : j * w + x) * 3 + c]!;
        }
        dst[(y * ow + x) * 3 + c] = Math.min(255, Math.max(0, Math.round(s)));
      }
    }
  return dst;
}

/** PIL's bicubic resize of one (H, W, 3) image to (outH, outW, 3); values stay 0..255. */
export function resizeBicubic(rgb: ArrayLike<number>, h: number, w: number, outH: number, outW: number): Float64Array {
  let img: Float64Array = Float64Array.from(rgb);
  if (outW !== w) img = resamplePass(img, h, w, outW, true);
  if (outH !== h) img = resamplePass(img, h, outW, outH, false);
  return img;
}

/**
 * pixel_values (N, 3, cropH, cropW) of RGB uint8 images (N, H, W, 3), row-major. Every image
 * must be at least the crop size after the resize (always so when crop <= shortest_edge).
 */
export function clipPixelValues(
  images: Uint8Array,
  size: { height: number; width: number },
  p: ClipImageProcessing,
): { pixels: Float32Array; height: number; width: number } {
  const { height: h, width: w } = size;
  const per = h * w * 3;
  const n = images.length / per;
  if (!Number.isInteger(n)) throw new Error(`CLIP preprocessing: ${images.length} bytes is not N x ${h} x ${w} x 3`);
  const [rh, rw] = p.shortestEdge > 0 ? shortestEdgeSize(h, w, p.shortestEdge) : [h, w];
  const [ch, cw] = p.cropHeight > 0 ? [p.cropHeight, p.cropWidth] : [rh, rw];
  if (ch > rh || cw > rw) throw new Error(`CLIP preprocessing: ${rh}x${rw} image is smaller than the ${ch}x${cw} crop`);
  const top = Math.floor((rh - ch) / 2);
  const left = Math.floor((rw - cw) / 2);
  const out = new Float32Array(n * 3 * ch * cw);
  for (let b = 0; b < n; b++) {
    const img = resizeBicubic(images.subarray(b * per, (b + 1) * per), h, w, rh, rw);
    for (let c = 0; c < 3; c++) {
      const m = p.mean[c]!;
      const s = p.std[c]!;
      for (let y = 0; y < ch; y++)
        for (let x = 0; x < cw; x++) {
          const v = img[((y + top) * rw + x + left) * 3 + c]!;
          out[((b * 3 + c) * ch + y) * cw + x] = (v * p.rescaleFactor - m) / s;
        }
    }
  }
  return { pixels: out, height: ch, width: cw };
}
