// Image grids (dataset previews, samples per prompt): tiles upscaled nearest-neighbour so each
// source pixel stays a crisp square, with optional captions wrapped under each tile (an SVG
// overlay, rasterised by sharp).

import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import sharp from "sharp";
import { CHAR_WIDTH, escapeXml, FONT_FAMILY } from "./svg.ts";

type Rgb = readonly [number, number, number];

/** An RGB image, row-major, 3 bytes a pixel. */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

export interface ImageGridOptions {
  /** Tiles per row (default: a near-square grid). */
  cols?: number;
  /** Integer upscaling factor per source pixel. */
  scale?: number;
  /** Source image height and width in pixels (default 32 x 32). */
  height?: number;
  width?: number;
  /** One caption per image, drawn under its tile. */
  captions?: readonly string[];
  /** Caption lines per tile before the text is cut with "..". */
  captionLines?: number;
  /** Pixels between tiles and around the grid. */
  gap?: number;
}

const BACKGROUND: Rgb = [210, 210, 210];
/** Caption font size and line height in pixels. */
const CAPTION_FONT = 9;
const CAPTION_LINE = 11;

/** Greedy word wrap into at most maxLines lines of maxChars; the last line ends in ".." if cut. */
export function wrapCaption(text: string, maxChars: number, maxLines: number): string[] {
  const lines: string[] = [];
  let line = "";
  const words = text.split(/\s+/).filter(Boolean);
  for (let word of words) {
    if (word.length > maxChars) {
      // A word longer than a line gets lines of its own, cut into pieces.
      if (line) lines.push(line);
      for (; word.length > maxChars; word = word.slice(maxChars)) lines.push(word.slice(0, maxChars));
      line = "";
    }
    if (!line) line = word;
    else if (line.length + 1 + word.length <= maxChars) line += ` ${word}`;
    else {
      lines.push(line);
      line = word;
    }
  }
  if (line) lines.push(line);
  if (lines.length <= maxLines) return lines;
  const kept = lines.slice(0, maxLines);
  const last = kept[maxLines - 1]!;
  kept[maxLines - 1] = `${last.slice(0, Math.max(0, maxChars - 2))}..`;
  return kept;
}

/** A grid laid out: its tiles (captions not drawn yet) and the captions as an SVG overlay. */
export interface ImageGrid {
  image: RgbImage;
  captionSvg: string | null;
}

/** Lay out images (N, height, width, 3) uint8 in a grid. */
export function layoutImageGrid(images: Uint8Array, options: ImageGridOptions = {}): ImageGrid {
  const h = options.height ?? 32;
  const w = options.width ?? h;
  const scale = options.scale ?? 1;
  const gap = options.gap ?? 2;
  const count = images.length / (h * w * 3);
  if (!Number.isInteger(count) || count < 1) {
    throw new Error(`images length ${images.length} is not a positive multiple of ${h}x${w}x3`);
  }
  if (!Number.isInteger(scale) || scale < 1) throw new Error(`scale must be a positive integer, got ${scale}`);
  const captions = options.captions;
  if (captions && captions.length !== count) throw new Error(`${captions.length} captions for ${count} images`);
  const cols = Math.min(count, options.cols ?? Math.ceil(Math.sqrt(count)));
  const rows = Math.ceil(count / cols);
  const tileW = w * scale;
  const tileH = h * scale;
  const maxChars = Math.max(1, Math.floor(tileW / (CHAR_WIDTH * CAPTION_FONT)));
  const captionLines = options.captionLines ?? 2;
  const captionH = captions ? captionLines * CAPTION_LINE + 2 : 0;
  const cellW = tileW + gap;
  const cellH = tileH + captionH + gap;
  const width = cols * cellW + gap;
  const height = rows * cellH + gap;
  const data = new Uint8Array(width * height * 3);
  for (let i = 0; i < data.length; i += 3) data.set(BACKGROUND, i);
  const svg: string[] = [];

  for (let n = 0; n < count; n++) {
    const x0 = gap + (n % cols) * cellW;
    const y0 = gap + Math.floor(n / cols) * cellH;
    const src = n * h * w * 3;
    for (let y = 0; y < tileH; y++) {
      const sy = Math.floor(y / scale);
      const rowStart = ((y0 + y) * width + x0) * 3;
      for (let x = 0; x < tileW; x++) {
        const s = src + (sy * w + Math.floor(x / scale)) * 3;
        data[rowStart + x * 3] = images[s]!;
        data[rowStart + x * 3 + 1] = images[s + 1]!;
        data[rowStart + x * 3 + 2] = images[s + 2]!;
      }
    }
    if (captions) {
      svg.push(`<rect x="${x0}" y="${y0 + tileH}" width="${tileW}" height="${captionH}" fill="white"/>`);
      wrapCaption(captions[n]!, maxChars, captionLines).forEach((line, k) => {
        const y = y0 + tileH + 1 + (k + 1) * CAPTION_LINE - 2;
        svg.push(`<text x="${x0 + tileW / 2}" y="${y}" text-anchor="middle">${escapeXml(line)}</text>`);
      });
    }
  }
  const captionSvg = captions
    ? `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="${FONT_FAMILY}" font-size="${CAPTION_FONT}" fill="rgb(20,20,20)">${svg.join("")}</svg>`
    : null;
  return { image: { width, height, data }, captionSvg };
}

/** Render an image grid and write it as a PNG. */
export async function imageGridPng(path: string, images: Uint8Array, options: ImageGridOptions = {}): Promise<void> {
  const { image, captionSvg } = layoutImageGrid(images, options);
  let png = sharp(Buffer.from(image.data), { raw: { width: image.width, height: image.height, channels: 3 } });
  if (captionSvg) png = png.composite([{ input: Buffer.from(captionSvg), top: 0, left: 0 }]);
  mkdirSync(dirname(path), { recursive: true });
  await Bun.write(path, await png.removeAlpha().png().toBuffer());
}
