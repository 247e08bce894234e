// Image augmentation for training the emoji CLIP, so that it also reads imperfect generated
// images: a small random scale and shift (white fill, as the emoji are composited on white),
// colour jitter (brightness, contrast, saturation; no hue shift: colour names an emoji, "green
// apple"), an occasional Gaussian blur and Gaussian pixel noise. Works on (N, 3, S, S) floats in
// [-1, 1] (toFloatNCHW's layout) and draws every random number from one seedable Mulberry32.

import type { Mulberry32 } from "../training/random.ts";

export interface AugmentOptions {
  /** Largest shift in pixels along each axis. */
  maxShift: number;
  /** Scale factor range about the image centre. */
  scale: readonly [number, number];
  /** Largest brightness offset (in [-1, 1] units, i.e. 0.1 is 5% of the range). */
  brightness: number;
  /** Contrast factor range about the image mean. */
  contrast: readonly [number, number];
  /** Saturation factor range (0 is grey, 1 unchanged). */
  saturation: readonly [number, number];
  blurProbability: number;
  /** Gaussian blur sigma range in pixels. */
  blurSigma: readonly [number, number];
  noiseProbability: number;
  /** Largest noise standard deviation (in [-1, 1] units). */
  maxNoise: number;
}

export const CLIP_AUGMENT: AugmentOptions = {
  maxShift: 3,
  scale: [0.85, 1.15],
  brightness: 0.15,
  contrast: [0.75, 1.25],
  saturation: [0.6, 1.4],
  blurProbability: 0.3,
  blurSigma: [0.4, 1.2],
  noiseProbability: 0.5,
  maxNoise: 0.15,
};

function uniform(rng: Mulberry32, [lo, hi]: readonly [number, number]): number {
  return lo + (hi - lo) * rng.next();
}

/** A standard normal from two uniforms (Box-Muller). */
function normal(rng: Mulberry32): number {
  const u = 1 - rng.next(); // (0, 1]
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rng.next());
}

/** Bilinear resample of one channel plane under scale s and shift (dx, dy); outside is `fill`. */
function affinePlane(src: Float32Array, dst: Float32Array, size: number, s: number, dx: number, dy: number, fill = 1) {
  const c = size / 2;
  for (let y = 0; y < size; y++) {
    const sy = (y + 0.5 - c - dy) / s + c - 0.5;
    const y0 = Math.floor(sy);
    const fy = sy - y0;
    for (let x = 0; x < size; x++) {
      const sx = (x + 0.5 - c - dx) / s + c - 0.5;
      const x0 = Math.floor(sx);
      const fx = sx - x0;
      const at = (yy: number, xx: number) =>
        yy < 0 || yy >= size || xx < 0 || xx >= size ? fill : src[yy * size + xx]!;
      dst[y * size + x] =
        (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x0 + 1)) +
        fy * ((1 - fx) * at(y0 + 1, x0) + fx * at(y0 + 1, x0 + 1));
    }
  }
}

/** Separable Gaussian blur of one plane in place (edges clamped). */
function blurPlane(plane: Float32Array, size: number, sigma: number, tmp: Float32Array) {
  const r = Math.ceil(2 * sigma);
  const w = Array.from({ length: 2 * r + 1 }, (_, i) => Math.exp(-((i - r) ** 2) / (2 * sigma * sigma)));
  const z = w.reduce((a, b) => a + b, 0);
  const clamp = (v: number) => Math.min(size - 1, Math.max(0, v));
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      let s = 0;
      for (let k = -r; k <= r; k++) s += w[k + r]! * plane[y * size + clamp(x + k)]!;
      tmp[y * size + x] = s / z;
    }
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      let s = 0;
      for (let k = -r; k <= r; k++) s += w[k + r]! * tmp[clamp(y + k) * size + x]!;
      plane[y * size + x] = s / z;
    }
}

/** Augmented copies of images (N, 3, size, size) in [-1, 1]; the result stays in [-1, 1]. */
export function augmentImages(
  images: Float32Array,
  size: number,
  rng: Mulberry32,
  o: AugmentOptions = CLIP_AUGMENT,
): Float32Array {
  const hw = size * size;
  const n = images.length / (3 * hw);
  if (!Number.isInteger(n)) throw new Error(`augmentImages: ${images.length} values are not N x 3 x ${size} x ${size}`);
  const out = new Float32Array(images.length);
  const tmp = new Float32Array(hw);
  for (let b = 0; b < n; b++) {
    const img = out.subarray(b * 3 * hw, (b + 1) * 3 * hw);
    const s = uniform(rng, o.scale);
    const dx = (2 * rng.next() - 1) * o.maxShift;
    const dy = (2 * rng.next() - 1) * o.maxShift;
    for (let c = 0; c < 3; c++) {
      affinePlane(
        images.subarray((b * 3 + c) * hw, (b * 3 + c + 1) * hw),
        img.subarray(c * hw, (c + 1) * hw),
        size,
        s,
        dx,
        dy,
      );
    }
    // Colour jitter on [0, 1] intensities.
    const brightness = (2 * rng.next() - 1) * o.brightness * 0.5;
    const contrast = uniform(rng, o.contrast);
    const saturation = uniform(rng, o.saturation);
    let mean = 0;
    for (let i = 0; i < img.length; i++) mean += (img[i]! + 1) / 2;
    mean /= img.length;
    for (let p = 0; p < hw; p++) {
      const r = (img[p]! + 1) / 2;
      const g = (img[hw + p]! + 1) / 2;
      const bl = (img[2 * hw + p]! + 1) / 2;
      const grey = 0.299 * r + 0.587 * g + 0.114 * bl;
      for (const [c, v] of [
        [0, r],
        [1, g],
        [2, bl],
      ] as const) {
        const sat = grey + saturation * (v - grey);
        const con = mean + contrast * (sat - mean);
        img[c * hw + p] = 2 * (con + brightness) - 1;
      }
    }
    if (rng.next() < o.blurProbability) {
      const sigma = uniform(rng, o.blurSigma);
      for (let c = 0; c < 3; c++) blurPlane(img.subarray(c * hw, (c + 1) * hw), size, sigma, tmp);
    }
    const noise = rng.next() < o.noiseProbability ? rng.next() * o.maxNoise : 0;
    for (let i = 0; i < img.length; i++) {
      const v = img[i]! + (noise > 0 ? noise * normal(rng) : 0);
      img[i] = Math.min(1, Math.max(-1, v));
    }
  }
  return out;
}
