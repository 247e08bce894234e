import { describe, expect, test } from "bun:test";
import {
  brightness,
  colorTarget,
  jpegCompressibility,
  jpegIncompressibility,
  listRewards,
  parseColour,
  redness,
  rewardByName,
  saturation,
  weightedSum,
} from "../../services/lib/rewards/index.ts";
import { Mulberry32 } from "../../services/lib/training/random.ts";

const SIZE = { height: 32, width: 32 };
const PIXELS = SIZE.height * SIZE.width;

/** A batch of flat images, one RGB colour each: (N, 32, 32, 3). */
function flatImages(colours: readonly (readonly [number, number, number])[]): Uint8Array {
  const out = new Uint8Array(colours.length * PIXELS * 3);
  colours.forEach((c, i) => {
    for (let p = 0; p < PIXELS; p++) out.set(c, (i * PIXELS + p) * 3);
  });
  return out;
}

/** [white, uniform noise]. */
function whiteAndNoise(): Uint8Array {
  const images = flatImages([
    [255, 255, 255],
    [0, 0, 0],
  ]);
  const rng = new Mulberry32(1);
  for (let i = PIXELS * 3; i < images.length; i++) images[i] = rng.int(256);
  return images;
}

const TWO = ["a", "b"];

describe("jpeg rewards", () => {
  test("a flat white image compresses better than noise, in plausible kB", async () => {
    const images = whiteAndNoise();
    const [white, noise] = await jpegCompressibility.score(images, SIZE, TWO);
    expect(white!).toBeGreaterThan(noise!);
    // A 32x32 JPEG is mostly headers (~0.6 kB with standard Huffman tables); noise adds ~1 kB.
    expect(-white!).toBeGreaterThan(0.3);
    expect(-white!).toBeLessThan(1);
    expect(-noise!).toBeGreaterThan(1);
    expect(-noise!).toBeLessThan(5);
  });

  test("incompressibility is minus compressibility", async () => {
    const images = whiteAndNoise();
    const c = await jpegCompressibility.score(images, SIZE, TWO);
    const i = await jpegIncompressibility.score(images, SIZE, TWO);
    expect([...i]).toEqual([...c].map((x) => -x));
  });

  test("scores are deterministic", async () => {
    const images = whiteAndNoise();
    expect([...(await jpegIncompressibility.score(images, SIZE, TWO))]).toEqual([
      ...(await jpegIncompressibility.score(images, SIZE, TWO)),
    ]);
  });

  test("bad input is refused with a clear message", async () => {
    const images = whiteAndNoise();
    await expect(jpegCompressibility.score(images, SIZE, ["one prompt"])).rejects.toThrow(
      /expected 1 x 32 x 32 x 3 = 3072/,
    );
    await expect(jpegCompressibility.score(images.subarray(1), SIZE, TWO)).rejects.toThrow(/bytes/);
    await expect(jpegCompressibility.score(images, { height: 0, width: 32 }, TWO)).rejects.toThrow(/positive/);
    await expect(jpegCompressibility.score(images, { height: 32.5, width: 32 }, TWO)).rejects.toThrow(/positive/);
    await expect(jpegCompressibility.score(new Float32Array(6144) as unknown as Uint8Array, SIZE, TWO)).rejects.toThrow(
      /Uint8Array/,
    );
  });

  test("an empty batch scores nothing", async () => {
    expect((await jpegCompressibility.score(new Uint8Array(0), SIZE, [])).length).toBe(0);
  });
});

describe("colour rewards", () => {
  const images = flatImages([
    [255, 255, 255],
    [0, 0, 0],
    [255, 0, 0],
    [0, 255, 255],
    [128, 128, 128],
  ]);
  const prompts = ["w", "k", "r", "c", "g"];

  test("brightness, saturation, redness", async () => {
    const b = [...(await brightness.score(images, SIZE, prompts))];
    expect(b[0]).toBeCloseTo(1, 12);
    expect(b[1]).toBe(0);
    expect(b[2]).toBeCloseTo(1 / 3, 12);
    expect(b[4]).toBeCloseTo(128 / 255, 12);
    expect([...(await saturation.score(images, SIZE, prompts))]).toEqual([0, 0, 1, 1, 0]);
    const r = [...(await redness.score(images, SIZE, prompts))];
    expect(r[2]).toBeCloseTo(1, 12);
    expect(r[3]).toBeCloseTo(-1, 12);
    expect(r[4]).toBeCloseTo(0, 12);
  });

  test("color_target scores 1 at the target and 0 at the opposite corner", async () => {
    const s = await colorTarget("red").score(images, SIZE, prompts);
    expect(s[2]).toBeCloseTo(1, 12);
    expect(s[3]).toBeCloseTo(0, 12);
    expect(s[0]!).toBeGreaterThan(0);
    expect(s[0]!).toBeLessThan(1);
    // the mean colour counts: half red, half cyan averages to grey
    const half = flatImages([[255, 0, 0]]);
    for (let p = PIXELS / 2; p < PIXELS; p++) half.set([0, 255, 255], p * 3);
    const [toGrey] = await colorTarget("128,128,128").score(half, SIZE, ["x"]);
    expect(toGrey!).toBeGreaterThan(0.99);
  });

  test("colours parse from names, hex and r,g,b", () => {
    expect(parseColour("Red")).toEqual([255, 0, 0]);
    expect(parseColour("#f80")).toEqual([255, 136, 0]);
    expect(parseColour("#FF8800")).toEqual([255, 136, 0]);
    expect(parseColour(" 1, 2 ,3")).toEqual([1, 2, 3]);
    expect(() => parseColour("mauve-ish")).toThrow(/unknown colour/);
    expect(() => parseColour("256,0,0")).toThrow(/unknown colour/);
  });
});

describe("registry and weighted sums", () => {
  test("every listed built-in is found by name", () => {
    const names = listRewards().map((r) => r.name);
    expect(names).toContain("jpeg_compressibility");
    expect(names).toContain("jpeg_incompressibility");
    for (const name of names.filter((n) => !n.includes("<"))) expect(rewardByName(name).name).toBe(name);
    expect(rewardByName("color_target:#00ff00").name).toBe("color_target:#00ff00");
    expect(() => rewardByName("pickscore")).toThrow(/unknown reward "pickscore"; known: jpeg_compressibility/);
  });

  test("weightedSum adds weighted scores and its name rebuilds it", async () => {
    const images = flatImages([
      [255, 0, 0],
      [128, 128, 128],
    ]);
    const sum = weightedSum([
      { fn: brightness, weight: 2 },
      { fn: saturation, weight: -0.5 },
    ]);
    const b = await brightness.score(images, SIZE, TWO);
    const s = await saturation.score(images, SIZE, TWO);
    const expected = [0, 1].map((i) => 2 * b[i]! - 0.5 * s[i]!);
    expect([...(await sum.score(images, SIZE, TWO))]).toEqual(expected);
    expect(sum.name).toBe("2*brightness+-0.5*saturation");
    const rebuilt = rewardByName(sum.name);
    expect([...(await rebuilt.score(images, SIZE, TWO))]).toEqual(expected);
    expect(rewardByName("jpeg_compressibility + 0.1*color_target:red").name).toBe(
      "1*jpeg_compressibility+0.1*color_target:red",
    );
    expect(() => weightedSum([])).toThrow(/at least one/);
    expect(() => weightedSum([{ fn: brightness, weight: Number.NaN }])).toThrow(/weight/);
    expect(() => rewardByName("x*brightness")).toThrow(/not a number/);
  });

  test("a term returning the wrong number of scores is caught", async () => {
    const broken = { name: "broken", description: "", score: async () => new Float64Array(1) };
    const sum = weightedSum([{ fn: broken, weight: 1 }]);
    await expect(
      sum.score(
        flatImages([
          [0, 0, 0],
          [0, 0, 0],
        ]),
        SIZE,
        TWO,
      ),
    ).rejects.toThrow(/broken: returned 1 scores/);
  });
});
