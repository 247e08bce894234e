// Charts and captions are SVG, rasterised to PNG by sharp (librsvg): text comes from the system's
// fonts (DejaVu Sans, which scripts/setup.sh installs when missing).
import { mkdirSync } from "node:fs";
import { dirname } from "node:path";
import sharp from "sharp";

export const FONT_FAMILY = "DejaVu Sans, sans-serif";

/** Average advance of a DejaVu Sans character, in units of the font size (layout estimates). */
export const CHAR_WIDTH = 0.6;

/** Text as SVG character data. */
export function escapeXml(text: string): string {
  return text.replace(/[<>&"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Estimated width in pixels of a line of text at a font size. */
export function textWidth(text: string, fontSize: number): number {
  return Math.ceil(text.length * CHAR_WIDTH * fontSize);
}

/** Writes an SVG document as an RGB PNG (the folder is created). */
export async function writeSvgPng(path: string, svg: string): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  await Bun.write(path, await sharp(Buffer.from(svg)).removeAlpha().png().toBuffer());
}
