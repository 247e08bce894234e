// Augmentation: deterministic per seed, values stay in [-1, 1], each transform does what it says
// (a pure shift moves the content, blur spreads a point, no-op settings return the image).
import { describe, expect, test } from "bun:test";
import { type AugmentOptions, augmentImages, CLIP_AUGMENT } from "../../services/lib/data/augment.ts";
import { Mulberry32 } from "../../services/lib/training/random.ts";

const S = 8;
const NONE: AugmentOptions = {
  maxShift: 0,
  scale: [1, 1],
  brightness: 0,
  contrast: [1, 1],
  saturation: [1, 1],
  blurProbability: 0,
  blurSigma: [1, 1],
  noiseProbability: 0,
  maxNoise: 0,
};

/** One white image with a single black pixel at (y, x) in every channel. */
function dot(y: number, x: number): Float32Array {
  const img = new Float32Array(3 * S * S).fill(1);
  for (let c = 0; c < 3; c++) img[c * S * S + y * S + x] = -1;
  return img;
}

describe("augmentImages", () => {
  test("no-op settings return the image", () => {
    const img = Float32Array.from({ length: 3 * S * S }, (_, i) => Math.sin(i) * 0.9);
    const out = augmentImages(img, S, new Mulberry32(1), NONE);
    for (let i = 0; i < img.length; i++) expect(out[i]!).toBeCloseTo(img[i]!, 5);
  });

  test("a shift moves the content by the drawn offset and fills with white", () => {
    // Replay the draws to know the offset used.
    const rng = new Mulberry32(7);
    const out = augmentImages(dot(4, 4), S, rng, { ...NONE, maxShift: 2 });
    const replay = new Mulberry32(7);
    replay.next(); // scale draw
    const dx = (2 * replay.next() - 1) * 2;
    const dy = (2 * replay.next() - 1) * 2;
    // Bilinear: the dark mass is centred at (4 + dy, 4 + dx).
    let my = 0;
    let mx = 0;
    let mass = 0;
    for (let y = 0; y < S; y++)
      for (let x = 0; x < S; x++) {
        const m = 1 - out[y * S + x]!;
        my += m * y;
        mx += m * x;
        mass += m;
      }
    expect(mass).toBeGreaterThan(1.9);
    expect(my / mass).toBeCloseTo(4 + dy, 4);
    expect(mx / mass).toBeCloseTo(4 + dx, 4);
    expect(out[0]).toBe(1);
  });

  test("blur spreads a point and keeps its mass", () => {
    const out = augmentImages(dot(4, 4), S, new Mulberry32(3), { ...NONE, blurProbability: 1, blurSigma: [1, 1] });
    const mass = out.subarray(0, S * S).reduce((a, v) => a + (1 - v), 0);
    expect(mass).toBeCloseTo(2, 4);
    expect(out[4 * S + 4]!).toBeGreaterThan(-1 + 0.5);
    expect(out[4 * S + 5]!).toBeLessThan(1);
  });

  test("the training settings: deterministic per seed, different across seeds, within [-1, 1]", () => {
    const img = Float32Array.from({ length: 2 * 3 * S * S }, (_, i) => Math.cos(i * 0.7));
    const a = augmentImages(img, S, new Mulberry32(11), CLIP_AUGMENT);
    const b = augmentImages(img, S, new Mulberry32(11), CLIP_AUGMENT);
    const c = augmentImages(img, S, new Mulberry32(12), CLIP_AUGMENT);
    expect([...a]).toEqual([...b]);
    expect([...a]).not.toEqual([...c]);
    expect(a.every((v) => v >= -1 && v <= 1)).toBe(true);
    expect(() => augmentImages(new Float32Array(5), S, new Mulberry32(1))).toThrow(/not N x 3/);
  });
});
