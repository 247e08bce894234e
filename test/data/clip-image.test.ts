// CLIP's image preprocessing against numbers worked by hand from PIL's bicubic resampling
// (kernel a = -0.5, centres at (i + 0.5) * in/out, the kernel stretched by in/out when shrinking,
// weights normalised, each pass rounded to 0..255) and CLIPImageProcessor's steps.
import { describe, expect, test } from "bun:test";
import {
  bicubicKernel,
  bicubicWeights,
  clipPixelValues,
  parseClipImageProcessor,
  resizeBicubic,
  shortestEdgeSize,
} from "../../services/lib/data/clip-image.ts";

/** An (h, w, 3) image whose three channels all hold `grey` (row-major values). */
function greyImage(grey: number[]): number[] {
  return grey.flatMap((v) => [v, v, v]);
}

describe("bicubic resampling (PIL's)", () => {
  test("the kernel: ((a+2)t - (a+3))t^2 + 1 below 1, ((t-5)t+8)t-4)a below 2, a = -0.5", () => {
    // t = 0.25: (1.5*0.25 - 2.5) * 0.0625 + 1 = 1 - 2.125/16
    expect(bicubicKernel(0.25)).toBe(0.8671875);
    expect(bicubicKernel(-0.25)).toBe(0.8671875);
    // t = 0.75: (1.125 - 2.5) * 0.5625 + 1
    expect(bicubicKernel(0.75)).toBe(0.2265625);
    // t = 1.25: ((-3.75 * 1.25 + 8) * 1.25 - 4) * -0.5 = (4.140625 - 4) * -0.5
    expect(bicubicKernel(1.25)).toBe(-0.0703125);
    expect(bicubicKernel(1.5)).toBe(-0.0625);
    expect(bicubicKernel(0)).toBe(1);
    expect(bicubicKernel(1) === 0).toBe(true);
    expect(bicubicKernel(2)).toBe(0);
  });

  test("shrinking 4 -> 2: support 4, kernel at (x - centre + 0.5) / 2", () => {
    const { first, weights } = bicubicWeights(4, 2);
    const sum = 0.8671875 * 2 + 0.2265625 - 0.0703125; // 1.890625
    expect(Array.from(first)).toEqual([0, 0]);
    // output 0: centre 1, taps at (x - 0.5) / 2 = -0.25, 0.25, 0.75, 1.25
    expect(Array.from(weights[0]!)).toEqual([0.8671875, 0.8671875, 0.2265625, -0.0703125].map((w) => w / sum));
    // output 1: centre 3, taps at -1.25, -0.75, -0.25, 0.25
    expect(Array.from(weights[1]!)).toEqual([-0.0703125, 0.2265625, 0.8671875, 0.8671875].map((w) => w / sum));
  });

  test("a row 0, 100, 200, 255 shrunk to 2 pixels", () => {
    // (100*0.8671875 + 200*0.2265625 - 255*0.0703125) / 1.890625 = 114.1015625 / 1.890625 = 60.35
    // (-0*0.0703125 + 100*0.2265625 + (200 + 255)*0.8671875) / 1.890625 = 417.2265625 / 1.890625 = 220.68
    expect(Array.from(resizeBicubic(greyImage([0, 100, 200, 255]), 1, 4, 1, 2))).toEqual(greyImage([60, 221]));
  });

  test("a 2x2 image grown to 4x4: both passes, overshoot rounded", () => {
    // Growing 2 -> 4, output i has centre (i + 0.5) / 2; taps at (x - centre + 0.5):
    // i = 0: x = 0 at 0.25 (0.8671875), x = 1 at 1.25 (-0.0703125), sum 0.796875;
    //   100, 200 -> (86.71875 - 14.0625) / 0.796875 = 91.18 -> 91
    // i = 1: centre 0.75, x = 0 at -0.25 (0.8671875), x = 1 at 0.75 (0.2265625), sum 1.09375;
    //   (86.71875 + 45.3125) / 1.09375 = 120.71 -> 121; i = 2 mirrors it: 196.09375 / 1.09375 = 179.29 -> 179
    // i = 3 mirrors i = 0: (173.4375 - 7.03125) / 0.796875 = 208.82 -> 209
    const rows = resizeBicubic(greyImage([100, 200, 100, 200]), 2, 2, 4, 4);
    expect(Array.from(rows)).toEqual(greyImage(Array(4).fill([91, 121, 179, 209]).flat()));
    // The same along columns, 0 over 255: 255 * -0.0703125 / 0.796875 = -22.5 -> 0,
    // 255 * 0.2265625 / 1.09375 = 52.82 -> 53, 255 * 0.8671875 / 1.09375 = 202.18 -> 202,
    // 255 * 0.8671875 / 0.796875 = 277.5 -> 255: the overshoot clamps.
    const cols = resizeBicubic(greyImage([0, 0, 255, 255]), 2, 2, 4, 4);
    const col = [0, 53, 202, 255];
    expect(Array.from(cols)).toEqual(greyImage(col.flatMap((v) => [v, v, v, v])));
  });

  test("same size is the identity", () => {
    const img = Array.from({ length: 5 * 3 * 3 }, (_, i) => (i * 37) % 256);
    expect(Array.from(resizeBicubic(img, 5, 3, 5, 3))).toEqual(img);
  });
});

describe("CLIPImageProcessor steps", () => {
  test("shortest side to the edge, the other int(edge * long / short)", () => {
    expect(shortestEdgeSize(3, 5, 2)).toEqual([2, 3]); // 2 * 5 / 3 = 3.33
    expect(shortestEdgeSize(5, 3, 2)).toEqual([3, 2]);
    expect(shortestEdgeSize(480, 640, 224)).toEqual([224, 298]); // 298.67
    expect(shortestEdgeSize(64, 64, 224)).toEqual([224, 224]);
  });

  test("centre crop (left = (W - w) // 2), rescale, normalise, channels first", () => {
    const p = parseClipImageProcessor({
      size: { shortest_edge: 2 },
      crop_size: { height: 2, width: 2 },
      image_mean: [0.5, 0.5, 0.5],
      image_std: [0.25, 0.5, 1],
    });
    // A 2x3 image (already at the edge: no resampling); the crop keeps columns 0 and 1.
    // red = 51 (0.2), green = 204 (0.8), blue = column index * 51.
    const rgb = new Uint8Array(2 * 3 * 3);
    for (let y = 0; y < 2; y++) for (let x = 0; x < 3; x++) rgb.set([51, 204, x * 51], (y * 3 + x) * 3);
    const { pixels, height, width } = clipPixelValues(rgb, { height: 2, width: 3 }, p);
    expect([height, width]).toEqual([2, 2]);
    const r = (0.2 - 0.5) / 0.25; // -1.2
    const g = (0.8 - 0.5) / 0.5; // 0.6
    const b = [(0 - 0.5) / 1, (0.2 - 0.5) / 1]; // columns 0 and 1
    const expected = [r, r, r, r, g, g, g, g, b[0], b[1], b[0], b[1]];
    expected.forEach((v, i) => {
      expect(pixels[i]!).toBeCloseTo(v!, 6);
    });
  });

  test("a 4-wide image cropped to 2 takes the middle: left = (4 - 2) // 2 = 1", () => {
    const p = parseClipImageProcessor({ do_resize: false, crop_size: 2, image_mean: [0, 0, 0], image_std: [1, 1, 1] });
    const rgb = Uint8Array.from(greyImage([0, 255, 255, 0, 0, 255, 255, 0]));
    const { pixels } = clipPixelValues(rgb, { height: 2, width: 4 }, p);
    expect(Array.from(pixels.subarray(0, 4))).toEqual([1, 1, 1, 1]);
  });

  test("defaults and bad settings", () => {
    const p = parseClipImageProcessor({ size: { shortest_edge: 224 }, crop_size: { height: 224, width: 224 } });
    expect(p.mean).toEqual([0.48145466, 0.4578275, 0.40821073]);
    expect(p.rescaleFactor).toBe(1 / 255);
    expect(() => parseClipImageProcessor({ size: { shortest_edge: 0 }, crop_size: 2 }, "x.json")).toThrow(
      /x\.json: size\.shortest_edge must be a positive integer/,
    );
    expect(() => parseClipImageProcessor({ size: 4, crop_size: 2, resample: 2 })).toThrow(/only 3, bicubic/);
    expect(() => parseClipImageProcessor({ size: 4, crop_size: 8 })).toThrow(/larger than shortest_edge/);
    expect(() => parseClipImageProcessor({ size: 4, crop_size: 2, image_std: [1, 0, 1] })).toThrow(/image_std/);
  });
});
