// A minimal RGB raster for plots: rectangles, antialiased lines, bitmap text, PNG output via sharp.
// Coordinates are pixels, x to the right, y down; drawing outside the image (or the clip box) is
// silently dropped.

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import sharp from "sharp";
import { CHAR_ADVANCE, GLYPH_HEIGHT, GLYPH_WIDTH, glyph, textWidth, toFontText } from "./font.ts";

export type Rgb = readonly [number, number, number];

export interface RgbImage {
  width: number;
  height: number;
  /** data is (height, width, 3) uint8. */
  data: Uint8Array;
}

export interface ClipBox {
  x0: number;
  y0: number;
  x1: number; // exclusive
  y1: number; // exclusive
}

export function createImage(width: number, height: number, background: Rgb = [255, 255, 255]): RgbImage {
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 1 || height < 1) {
    throw new Error(`image size must be positive integers, got ${width}x${height}`);
  }
  const data = new Uint8Array(width * height * 3);
  for (let p = 0; p < width * height; p++) data.set(background, p * 3);
  return { width, height, data };
}

/** Mix color into pixel (x, y) with coverage alpha in [0, 1]. */
export function blendPixel(img: RgbImage, x: number, y: number, color: Rgb, alpha: number, clip?: ClipBox): void {
  if (x < 0 || y < 0 || x >= img.width || y >= img.height || alpha <= 0) return;
  if (clip && (x < clip.x0 || y < clip.y0 || x >= clip.x1 || y >= clip.y1)) return;
  const i = (y * img.width + x) * 3;
  const a = Math.min(1, alpha);
  for (let c = 0; c < 3; c++) img.data[i + c] = Math.round(img.data[i + c]! * (1 - a) + color[c]! * a);
}

export function fillRect(img: RgbImage, x: number, y: number, w: number, h: number, color: Rgb): void {
  const x0 = Math.max(0, Math.round(x));
  const y0 = Math.max(0, Math.round(y));
  const x1 = Math.min(img.width, Math.round(x + w));
  const y1 = Math.min(img.height, Math.round(y + h));
  for (let yy = y0; yy < y1; yy++) {
    for (let xx = x0; xx < x1; xx++) img.data.set(color, (yy * img.width + xx) * 3);
  }
}

/** One-pixel outline of the rectangle [x, x+w) x [y, y+h). */
export function strokeRect(img: RgbImage, x: number, y: number, w: number, h: number, color: Rgb): void {
  fillRect(img, x, y, w, 1, color);
  fillRect(img, x, y + h - 1, w, 1, color);
  fillRect(img, x, y, 1, h, color);
  fillRect(img, x + w - 1, y, 1, h, color);
}

/**
 * Antialiased line of the given width between points in continuous coordinates (pixel (i, j)
 * covers [i, i+1) x [j, j+1)): each pixel near the segment takes coverage from its centre's
 * distance to the segment, so lines at any angle look equally thick.
 */
export function drawLine(
  img: RgbImage,
  x0: number,
  y0: number,
  x1: number,
  y1: number,
  color: Rgb,
  width = 1,
  clip?: ClipBox,
): void {
  const half = width / 2;
  const dx = x1 - x0;
  const dy = y1 - y0;
  const len2 = dx * dx + dy * dy;
  const minX = Math.floor(Math.min(x0, x1) - half - 1);
  const maxX = Math.ceil(Math.max(x0, x1) + half + 1);
  const minY = Math.floor(Math.min(y0, y1) - half - 1);
  const maxY = Math.ceil(Math.max(y0, y1) + half + 1);
  for (let y = Math.max(0, minY); y <= Math.min(img.height - 1, maxY); y++) {
    for (let x = Math.max(0, minX); x <= Math.min(img.width - 1, maxX); x++) {
      const px = x + 0.5 - x0;
      const py = y + 0.5 - y0;
      const t = len2 === 0 ? 0 : Math.max(0, Math.min(1, (px * dx + py * dy) / len2));
      const ex = px - t * dx;
      const ey = py - t * dy;
      const coverage = half + 0.5 - Math.sqrt(ex * ex + ey * ey);
      if (coverage > 0) blendPixel(img, x, y, color, coverage, clip);
    }
  }
}

/**
 * Draw text with its top-left corner at (x, y), glyphs scaled by an integer factor. With
 * vertical, the text is turned 90 degrees counter-clockwise (reads bottom to top) and (x, y) is
 * the top-left of the turned box.
 */
export function drawText(
  img: RgbImage,
  x: number,
  y: number,
  text: string,
  color: Rgb,
  options: { scale?: number; vertical?: boolean } = {},
): void {
  const scale = options.scale ?? 1;
  const chars = [...toFontText(text)];
  const runLength = textWidth(chars.join(""), scale);
  chars.forEach((char, n) => {
    const rows = glyph(char);
    for (let gy = 0; gy < GLYPH_HEIGHT; gy++) {
      for (let gx = 0; gx < GLYPH_WIDTH; gx++) {
        if (!((rows[gy]! >> (GLYPH_WIDTH - 1 - gx)) & 1)) continue;
        const u = (n * CHAR_ADVANCE + gx) * scale; // along the text
        const v = gy * scale; // across it, downwards
        if (options.vertical) fillRect(img, x + v, y + runLength - u - scale, scale, scale, color);
        else fillRect(img, x + u, y + v, scale, scale, color);
      }
    }
  });
}

export async function encodePng(img: RgbImage): Promise<Buffer> {
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } })
    .png({ compressionLevel: 9 })
    .toBuffer();
}

/** Write img as a PNG at path (creating its folder). */
export async function writePng(path: string, img: RgbImage): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  await Bun.write(path, await encodePng(img));
}
