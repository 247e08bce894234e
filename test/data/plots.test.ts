import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import sharp from "sharp";
import { imageGridPng, layoutImageGrid, type RgbImage, wrapCaption } from "../../services/lib/plots/image-grid.ts";
import {
  formatTick,
  lineChartPng,
  lineChartSvg,
  niceStep,
  SERIES_COLORS,
} from "../../services/lib/plots/line-chart.ts";

const dir = mkdtempSync(join(tmpdir(), "plots-"));
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
});

async function decode(path: string): Promise<RgbImage> {
  const { data, info } = await sharp(path).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data) };
}

function countColor(img: RgbImage, [r, g, b]: readonly [number, number, number], tolerance = 10): number {
  let n = 0;
  for (let i = 0; i < img.data.length; i += 3) {
    const d = Math.abs(img.data[i]! - r) + Math.abs(img.data[i + 1]! - g) + Math.abs(img.data[i + 2]! - b);
    if (d <= tolerance) n++;
  }
  return n;
}

const loss = Array.from({ length: 200 }, (_, i) => [i, 1 / (1 + i / 20) + 0.01 * Math.sin(i)] as [number, number]);

describe("line charts", () => {
  test("writes a decodable PNG of the requested size with lines, text and legend", async () => {
    const path = join(dir, "nested", "chart.png");
    await lineChartPng(
      path,
      [
        { name: "train", points: loss },
        { name: "eval", points: loss.filter((_, i) => i % 20 === 0).map(([x, y]) => [x, y * 1.1]) },
      ],
      { title: "Loss", xLabel: "step", yLabel: "mse", width: 640, height: 400 },
    );
    const img = await decode(path);
    expect([img.width, img.height]).toEqual([640, 400]);
    // Both series colours are drawn with a visible number of pixels.
    expect(countColor(img, SERIES_COLORS[0]!)).toBeGreaterThan(300);
    expect(countColor(img, SERIES_COLORS[1]!)).toBeGreaterThan(100);
    // Text and axes are black; most of the canvas stays background.
    expect(countColor(img, [0, 0, 0], 240)).toBeGreaterThan(300);
    expect(countColor(img, [255, 255, 255], 0) / (640 * 400)).toBeGreaterThan(0.5);
  });

  test("log axis, gaps and degenerate data: broken lines, dots, empty frames", () => {
    const withGaps: [number, number][] = [
      [0, 1],
      [1, Number.NaN],
      [2, 0],
      [3, -1],
      [4, 1e-3],
      [5, 1e-2],
    ];
    // On a log axis NaN, 0 and -1 are unusable: [0, 1] is a lone point, [4, 1e-3]..[5, 1e-2] a line.
    const log = lineChartSvg([{ name: "g", points: withGaps }], { logY: true, width: 300, height: 200 });
    expect(log.match(/<polyline /g)?.length).toBe(1);
    expect(log.match(/<circle /g)?.length).toBe(1);
    expect(log).toContain(">0.001<");
    const flat = lineChartSvg([{ name: "flat", points: [[3, 2]] }], { width: 300, height: 200 });
    expect(flat.match(/<circle /g)?.length).toBe(1);
    const empty = lineChartSvg([], { title: "empty <&>", width: 300, height: 200 });
    expect(empty).toContain("empty &#60;&#38;&#62;");
    expect(empty).not.toContain("<polyline");
    expect(() => lineChartSvg([], { width: 30, height: 20 })).toThrow(/too small/);
  });

  test("nice ticks and labels", () => {
    expect(niceStep(1, 5)).toBeCloseTo(0.2);
    expect(niceStep(1000, 4)).toBe(200);
    expect(niceStep(9, 10)).toBeCloseTo(1);
    expect(formatTick(0)).toBe("0");
    expect(formatTick(0.25, 2)).toBe("0.25");
    expect(formatTick(1e-4)).toBe("1e-4");
    expect(formatTick(2.5e6)).toBe("2.5e6");
    expect(formatTick(1200)).toBe("1200");
  });
});

describe("image grids", () => {
  // Ten 32x32 images, image n filled with grey level 20n and a red pixel at (1, 0).
  const images = new Uint8Array(10 * 32 * 32 * 3);
  for (let n = 0; n < 10; n++) {
    images.fill(20 * n, n * 3072, (n + 1) * 3072);
    images.set([255, 0, 0], n * 3072 + 3);
  }

  test("tiles are upscaled nearest-neighbour with captions below", async () => {
    const path = join(dir, "grid.png");
    const captions = Array.from({ length: 10 }, (_, n) => `image number ${n} with a long caption`);
    await imageGridPng(path, images, { cols: 4, scale: 2, captions });
    const img = await decode(path);
    const gap = 2;
    const cellW = 64 + gap;
    const cellH = 64 + (2 * 11 + 2) + gap;
    expect([img.width, img.height]).toEqual([4 * cellW + gap, 3 * cellH + gap]);
    const at = (x: number, y: number) => [...img.data.subarray((y * img.width + x) * 3, (y * img.width + x) * 3 + 3)];
    for (let n = 0; n < 10; n++) {
      const x0 = gap + (n % 4) * cellW;
      const y0 = gap + Math.floor(n / 4) * cellH;
      // Source pixel (1, 0) becomes the 2x2 block at (2..3, 0..1).
      for (const [dx, dy] of [
        [2, 0],
        [3, 0],
        [2, 1],
        [3, 1],
      ] as const) {
        expect(at(x0 + dx, y0 + dy)).toEqual([255, 0, 0]);
      }
      expect(at(x0 + 40, y0 + 40)).toEqual([20 * n, 20 * n, 20 * n]);
      // The caption strip holds dark text on white.
      let ink = 0;
      for (let y = y0 + 64; y < y0 + 64 + 24; y++) {
        for (let x = x0; x < x0 + 64; x++) if (at(x, y)[0]! < 100) ink++;
      }
      expect(ink).toBeGreaterThan(30);
    }
  });

  test("without captions the grid is just tiles and gaps", () => {
    const { image, captionSvg } = layoutImageGrid(images, { cols: 5, scale: 1, gap: 0 });
    expect([image.width, image.height]).toEqual([160, 64]);
    expect(captionSvg).toBeNull();
    expect(() => layoutImageGrid(images.subarray(1))).toThrow(/multiple/);
    expect(() => layoutImageGrid(images, { captions: ["one"] })).toThrow(/captions/);
  });

  test("captions wrap by words and are cut with ..", () => {
    expect(wrapCaption("cat face", 10, 2)).toEqual(["cat face"]);
    expect(wrapCaption("smiling cat face with heart eyes", 10, 2)).toEqual(["smiling", "cat face.."]);
    expect(wrapCaption("supercalifragilistic", 8, 3)).toEqual(["supercal", "ifragili", "stic"]);
    expect(wrapCaption("Côte d’Ivoire", 20, 1)).toEqual(["Côte d’Ivoire"]);
  });
});
