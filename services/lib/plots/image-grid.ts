// Image grids (dataset previews, samples per prompt): tiles upscaled nearest-neighbour so each
// source pixel stays a crisp square, with optional captions wrapped under each tile.

import { CHAR_ADVANCE, LINE_HEIGHT, textWidth, toFontText } from "./font.ts";
import { createImage, drawText, fillRect, type Rgb, type RgbImage, writePng } from "./raster.ts";

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
const CAPTION_BACKGROUND: Rgb = [255, 255, 255];
const CAPTION_COLOR: Rgb = [20, 20, 20];

/** Greedy word wrap into at most maxLines lines of maxChars; the last line ends in ".." if cut. */
export function wrapCaption(text: string, maxChars: number, maxLines: number): string[] {
  const lines: string[] = [];
  let line = "";
  const words = toFontText(text).split(/\s+/).filter(Boolean);
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

/** Lay out images (N, height, width, 3) uint8 in a grid. */
export function renderImageGrid(images: Uint8Array, options: ImageGridOptions = {}): RgbImage {
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
  const maxChars = Math.max(1, Math.floor((tileW + 1) / CHAR_ADVANCE));
  const captionLines = options.captionLines ?? 2;
  const captionH = captions ? captionLines * LINE_HEIGHT + 2 : 0;
  const cellW = tileW + gap;
  const cellH = tileH + captionH + gap;
  const img = createImage(cols * cellW + gap, rows * cellH + gap, BACKGROUND);

  for (let n = 0; n < count; n++) {
    const x0 = gap + (n % cols) * cellW;
    const y0 = gap + Math.floor(n / cols) * cellH;
    const src = n * h * w * 3;
    for (let y = 0; y < tileH; y++) {
      const sy = Math.floor(y / scale);
      const rowStart = ((y0 + y) * img.width + x0) * 3;
      for (let x = 0; x < tileW; x++) {
        const s = src + (sy * w + Math.floor(x / scale)) * 3;
        img.data[rowStart + x * 3] = images[s]!;
        img.data[rowStart + x * 3 + 1] = images[s + 1]!;
        img.data[rowStart + x * 3 + 2] = images[s + 2]!;
      }
    }
    if (captions) {
      fillRect(img, x0, y0 + tileH, tileW, captionH, CAPTION_BACKGROUND);
      wrapCaption(captions[n]!, maxChars, captionLines).forEach((line, k) => {
        const x = x0 + Math.max(0, Math.floor((tileW - textWidth(line)) / 2));
        drawText(img, x, y0 + tileH + 2 + k * LINE_HEIGHT, line, CAPTION_COLOR);
      });
    }
  }
  return img;
}

/** Render an image grid and write it as a PNG. */
export async function imageGridPng(path: string, images: Uint8Array, options: ImageGridOptions = {}): Promise<void> {
  await writePng(path, renderImageGrid(images, options));
}
