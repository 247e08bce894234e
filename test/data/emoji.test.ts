// The emoji dataset: built once into a temporary cache (a few seconds), then checked for counts,
// image content, captions, the animal prompt set, and a cache round trip.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import {
  animalNames,
  buildEmojiDataset,
  type EmojiDataset,
  emojiCachePaths,
  emojiCaption,
  emojiRecords,
  flattenAndResize,
  loadEmojiDataset,
  STYLE_TAGS,
  styledCaption,
  toFloatNCHW,
} from "../../services/lib/data/emoji.ts";

const S = 32;
const PIXELS = S * S * 3;
let cacheDir: string;
let dataset: EmojiDataset;

beforeAll(async () => {
  cacheDir = mkdtempSync(join(tmpdir(), "emoji-cache-"));
  dataset = await loadEmojiDataset({ cacheDir });
}, 120_000);

afterAll(() => {
  rmSync(cacheDir, { recursive: true, force: true });
});

function isWhite(images: Uint8Array, n: number, x: number, y: number): boolean {
  const i = n * PIXELS + (y * S + x) * 3;
  return images[i]! >= 250 && images[i + 1]! >= 250 && images[i + 2]! >= 250;
}

describe("emoji dataset", () => {
  test("has more than 1000 images per source, each 32x32 RGB", () => {
    const { images, records, size } = dataset;
    expect(size).toBe(S);
    expect(images.length).toBe(records.length * PIXELS);
    for (const source of ["google", "twitter"] as const) {
      expect(records.filter((r) => r.source === source).length).toBeGreaterThan(1000);
    }
  });

  test("images are composited on white: most corners white, every image has content", () => {
    const { images, records } = dataset;
    let whiteCorners = 0;
    let blank = 0;
    for (let n = 0; n < records.length; n++) {
      if (isWhite(images, n, 0, 0) && isWhite(images, n, S - 1, 0) && isWhite(images, n, 0, S - 1)) {
        if (isWhite(images, n, S - 1, S - 1)) whiteCorners++;
      }
      // Light emojis (white heart, fog) still differ from the background somewhere.
      let drawn = 0;
      for (let i = n * PIXELS; i < (n + 1) * PIXELS; i++) if (images[i]! < 245) drawn++;
      if (drawn < 100) blank++;
    }
    expect(whiteCorners / records.length).toBeGreaterThan(0.85);
    expect(blank).toBe(0);
  });

  test("captions are lower-case names with a style tag per source", () => {
    const { records } = dataset;
    for (const r of records) {
      expect(r.caption).toBe(r.caption.toLowerCase());
      expect(r.caption.length).toBeGreaterThan(0);
      expect(r.style).toBe(STYLE_TAGS[r.source]);
      expect(r.category).not.toBe("Component"); // skin-tone swatches are not emojis to draw
    }
    const cat = records.filter((r) => r.caption === "cat face");
    expect(cat.map((r) => r.source).sort()).toEqual(["google", "twitter"]);
    expect(cat[0]!.unified).toBe("1F431");
    expect(cat[0]!.subcategory).toBe("animal-mammal");
    expect(styledCaption(cat.find((r) => r.source === "twitter")!)).toBe("cat face, twemoji");
    expect(emojiCaption({ name: "CAT FACE", short_name: "cat" })).toBe("cat face");
    expect(emojiCaption({ name: null, short_name: "smiling_cat" })).toBe("smiling cat");
  });

  test("animal names are the distinct animals, not their parts", () => {
    const names = animalNames(dataset.records);
    for (const name of ["tiger", "cat face", "dog", "penguin", "octopus", "frog face"]) expect(names).toContain(name);
    expect(names).not.toContain("paw prints");
    expect(names).not.toContain("feather");
    expect(new Set(names).size).toBe(names.length);
    expect(names.length).toBeGreaterThan(100);
    for (const name of names) expect(name).toBe(name.toLowerCase());
  });

  test("records without images match the dataset's records", () => {
    expect(emojiRecords()).toEqual(dataset.records);
  });

  test("the cache round trip is exact", async () => {
    const paths = emojiCachePaths({ cacheDir });
    expect(existsSync(paths.bin)).toBe(true);
    expect(existsSync(paths.index)).toBe(true);
    const t0 = performance.now();
    const again = await loadEmojiDataset({ cacheDir });
    expect(performance.now() - t0).toBeLessThan(2000); // read, not rebuilt
    expect(Buffer.compare(again.images, dataset.images)).toBe(0);
    expect(again.records).toEqual(dataset.records);
  });

  test("a corrupted cache is rebuilt, and a subset matches the full build", async () => {
    const options = { cacheDir, sources: ["twitter"] as const, limit: 12 };
    const first = await loadEmojiDataset(options);
    const { bin } = emojiCachePaths(options);
    const bytes = readFileSync(bin);
    bytes[100] = bytes[100]! ^ 0xff;
    writeFileSync(bin, bytes);
    const rebuilt = await loadEmojiDataset(options);
    expect(Buffer.compare(rebuilt.images, first.images)).toBe(0);
    // The same emojis as the first twitter entries of the full dataset, pixel for pixel.
    const start = dataset.records.findIndex((r) => r.source === "twitter");
    expect(rebuilt.records).toEqual(dataset.records.slice(start, start + 12));
    expect(Buffer.compare(rebuilt.images, dataset.images.subarray(start * PIXELS, (start + 12) * PIXELS))).toBe(0);
  });

  test("toFloatNCHW gathers images as channels-first floats in [-1, 1]", () => {
    const { images } = dataset;
    const x = toFloatNCHW(images, [7, 3]);
    expect(x.length).toBe(2 * 3 * S * S);
    for (const [b, n] of [
      [0, 7],
      [1, 3],
    ] as const) {
      for (const p of [0, 100, S * S - 1]) {
        for (let c = 0; c < 3; c++) {
          expect(x[b * 3 * S * S + c * S * S + p]).toBeCloseTo(images[n * PIXELS + p * 3 + c]! / 127.5 - 1, 6);
        }
      }
    }
    let lo = Infinity;
    let hi = -Infinity;
    for (const v of x) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    expect(lo).toBeGreaterThanOrEqual(-1);
    expect(hi).toBe(1); // white background
    expect(() => toFloatNCHW(images, [dataset.records.length])).toThrow(/out of range/);
  });
});

describe("flattenAndResize", () => {
  test("transparent becomes white, opaque keeps its colour", () => {
    const clear = new Uint8Array(64 * 64 * 4); // all alpha 0
    expect(flattenAndResize(clear, 64, 64, 32).every((v) => v === 255)).toBe(true);
    const red = new Uint8Array(64 * 64 * 4);
    for (let p = 0; p < 64 * 64; p++) red.set([200, 10, 30, 255], p * 4);
    const out = flattenAndResize(red, 64, 64, 32);
    for (let p = 0; p < 32 * 32; p++) expect([out[p * 3], out[p * 3 + 1], out[p * 3 + 2]]).toEqual([200, 10, 30]);
  });

  test("half-transparent black is mid grey; a fine checkerboard antialiases to grey", () => {
    const half = new Uint8Array(8 * 8 * 4);
    for (let p = 0; p < 64; p++) half.set([0, 0, 0, 128], p * 4);
    expect(flattenAndResize(half, 8, 8, 4)[0]).toBe(127);
    const checker = new Uint8Array(64 * 64 * 4);
    for (let y = 0; y < 64; y++) {
      for (let x = 0; x < 64; x++) {
        const v = (x + y) % 2 ? 255 : 0;
        checker.set([v, v, v, 255], (y * 64 + x) * 4);
      }
    }
    const out = flattenAndResize(checker, 64, 64, 32);
    // Away from the edges every output pixel averages the pattern (no aliasing to black or white).
    for (let y = 4; y < 28; y++) {
      for (let x = 4; x < 28; x++) expect(Math.abs(out[(y * 32 + x) * 3]! - 127.5)).toBeLessThan(3);
    }
  });
});

test("buildEmojiDataset validates the size", async () => {
  await expect(buildEmojiDataset({ size: 0, limit: 1 })).rejects.toThrow(/size/);
});
