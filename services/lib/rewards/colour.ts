// Cheap programmatic rewards for tests and demos: each is a plain statistic of the pixels, fast
// enough to score a batch in microseconds and obvious enough that a short DDPO run visibly
// moves it (images get brighter, more saturated, redder, closer to a colour).

import { type ImageSize, type RewardFunction, validateBatch } from "./reward-function.ts";

/**
 * A reward whose score is a mean over the pixels of one image.
 * pixel(r, g, b) takes channel values in [0, 1] and returns that pixel's contribution.
 */
function perPixelMeanReward(
  name: string,
  description: string,
  pixel: (r: number, g: number, b: number) => number,
): RewardFunction {
  return {
    name,
    description,
    async score(images: Uint8Array, size: ImageSize, prompts: readonly string[]): Promise<Float64Array> {
      const n = validateBatch(name, images, size, prompts);
      const hw = size.height * size.width;
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let sum = 0;
        for (let p = i * hw * 3, end = (i + 1) * hw * 3; p < end; p += 3) {
          sum += pixel(images[p]! / 255, images[p + 1]! / 255, images[p + 2]! / 255);
        }
        out[i] = sum / hw;
      }
      return out;
    },
  };
}

export const brightness = perPixelMeanReward(
  "brightness",
  "mean channel value in [0, 1] (0 black, 1 white)",
  (r, g, b) => (r + g + b) / 3,
);

export const saturation = perPixelMeanReward(
  "saturation",
  "mean HSV saturation (max - min) / max in [0, 1] (0 grey, 1 pure hues)",
  (r, g, b) => {
    const max = Math.max(r, g, b);
    return max === 0 ? 0 : (max - Math.min(r, g, b)) / max;
  },
);

export const redness = perPixelMeanReward(
  "redness",
  "mean of red - (green + blue) / 2 in [-1, 1] (1 pure red, -1 cyan)",
  (r, g, b) => r - (g + b) / 2,
);

/** Named colours accepted by color_target, as RGB in [0, 255]. */
export const NAMED_COLOURS: Readonly<Record<string, readonly [number, number, number]>> = {
  black: [0, 0, 0],
  white: [255, 255, 255],
  gray: [128, 128, 128],
  grey: [128, 128, 128],
  red: [255, 0, 0],
  green: [0, 128, 0],
  lime: [0, 255, 0],
  blue: [0, 0, 255],
  yellow: [255, 255, 0],
  cyan: [0, 255, 255],
  magenta: [255, 0, 255],
  orange: [255, 165, 0],
  purple: [128, 0, 128],
  pink: [255, 192, 203],
  brown: [165, 42, 42],
};

/** Parses "red", "#f80", "#ff8800" or "255,136,0" into RGB in [0, 255]. */
export function parseColour(spec: string): [number, number, number] {
  const s = spec.trim().toLowerCase();
  const named = NAMED_COLOURS[s];
  if (named) return [...named];
  const hex = /^#([0-9a-f]{3}|[0-9a-f]{6})$/.exec(s)?.[1];
  if (hex) {
    const full = hex.length === 3 ? [...hex].map((c) => c + c).join("") : hex;
    return [0, 2, 4].map((k) => Number.parseInt(full.slice(k, k + 2), 16)) as [number, number, number];
  }
  const parts = s.split(",").map((p) => p.trim());
  if (parts.length === 3 && parts.every((p) => /^\d{1,3}$/.test(p) && Number(p) <= 255)) {
    return parts.map(Number) as [number, number, number];
  }
  throw new Error(
    `unknown colour "${spec}": use a name (${Object.keys(NAMED_COLOURS).join(", ")}), #rgb, #rrggbb or r,g,b (0-255)`,
  );
}

/**
 * Closeness of each image's mean colour to a target: 1 - |mean - target| / sqrt(3), with colours
 * in [0, 1]^3, so 1 is an exact match and 0 the opposite corner of the RGB cube. The mean colour
 * (not a per-pixel distance) lets an image reach the target with a mix of pixels.
 */
export function colorTarget(spec: string): RewardFunction {
  const rgb = parseColour(spec);
  const [tr, tg, tb] = rgb.map((c) => c / 255) as [number, number, number];
  const name = `color_target:${spec.trim().toLowerCase()}`;
  return {
    name,
    description: `closeness of the mean colour to rgb(${rgb.join(", ")}) in [0, 1]`,
    async score(images, size, prompts) {
      const n = validateBatch(name, images, size, prompts);
      const hw = size.height * size.width;
      const out = new Float64Array(n);
      for (let i = 0; i < n; i++) {
        let r = 0;
        let g = 0;
        let b = 0;
        for (let p = i * hw * 3, end = (i + 1) * hw * 3; p < end; p += 3) {
          r += images[p]!;
          g += images[p + 1]!;
          b += images[p + 2]!;
        }
        const s = 255 * hw;
        out[i] = 1 - Math.hypot(r / s - tr, g / s - tg, b / s - tb) / Math.sqrt(3);
      }
      return out;
    },
  };
}
