// Line charts (loss curves, reward per epoch) drawn on our own raster: axes with "nice" ticks
// (1, 2, 5 x 10^k, or decades on a log axis), grid, legend, title and labels in the bitmap font.

import { LINE_HEIGHT, textWidth } from "./font.ts";
import {
  type ClipBox,
  createImage,
  drawLine,
  drawText,
  fillRect,
  type Rgb,
  type RgbImage,
  strokeRect,
  writePng,
} from "./raster.ts";

export interface LineSeries {
  name: string;
  /** [x, y] pairs in drawing order; non-finite values (and y <= 0 on a log axis) break the line. */
  points: readonly (readonly [number, number])[];
}

export interface LineChartOptions {
  title?: string;
  xLabel?: string;
  yLabel?: string;
  width?: number;
  height?: number;
  logY?: boolean;
  /** Glyph scale for all text; default from the image size (2 for 800x500). */
  textScale?: number;
}

/** matplotlib's "tab10" colours. */
export const SERIES_COLORS: readonly Rgb[] = [
  [31, 119, 180],
  [255, 127, 14],
  [44, 160, 44],
  [214, 39, 40],
  [148, 103, 189],
  [140, 86, 75],
  [227, 119, 194],
  [127, 127, 127],
  [188, 189, 34],
  [23, 190, 207],
];

const BLACK: Rgb = [0, 0, 0];
const GRID: Rgb = [225, 225, 225];
const LEGEND_BORDER: Rgb = [180, 180, 180];

interface Axis {
  /** Range in axis units (log10 of the value on a log axis). */
  lo: number;
  hi: number;
  /** Tick positions in axis units, with their labels. */
  ticks: { at: number; label: string }[];
}

/** A tick spacing of 1, 2 or 5 x 10^k close to span / target. */
export function niceStep(span: number, target: number): number {
  const raw = span / target;
  const base = 10 ** Math.floor(Math.log10(raw));
  const m = raw / base;
  return (m < 1.5 ? 1 : m < 3 ? 2 : m < 7 ? 5 : 10) * base;
}

/** A short label for a tick value: "0", "0.25", "1200", "1e-4", "2.5e6". */
export function formatTick(v: number, decimals?: number): string {
  if (v === 0) return "0";
  const mag = Math.abs(v);
  if (mag >= 1e5 || mag < 1e-3) {
    return v
      .toExponential(2)
      .replace(/\.?0+e/, "e")
      .replace("e+", "e"); // "2.50e+6" -> "2.5e6"
  }
  if (decimals !== undefined) return v.toFixed(decimals);
  return String(Number(v.toPrecision(4)));
}

function linearAxis(min: number, max: number, target: number, pad: boolean): Axis {
  if (min === max) {
    const d = min === 0 ? 1 : Math.abs(min) * 0.1;
    min -= d;
    max += d;
  }
  const step = niceStep(max - min, target);
  const decimals = Math.max(0, -Math.floor(Math.log10(step) + 1e-9));
  // Values axes snap outwards to whole steps; the x axis keeps the data's extent.
  const lo = pad ? Math.floor(min / step + 1e-9) * step : min;
  const hi = pad ? Math.ceil(max / step - 1e-9) * step : max;
  const ticks: Axis["ticks"] = [];
  for (let k = Math.ceil(lo / step - 1e-9); k * step <= hi + step * 1e-9; k++) {
    const at = k * step;
    ticks.push({ at, label: formatTick(Math.abs(at) < step * 1e-9 ? 0 : at, decimals) });
  }
  return { lo, hi, ticks };
}

function logAxis(min: number, max: number): Axis {
  const lo = Math.floor(Math.log10(min) + 1e-9);
  let hi = Math.ceil(Math.log10(max) - 1e-9);
  if (hi === lo) hi = lo + 1;
  // Few decades: also tick 2 and 5 within each; many: thin the decades.
  const mantissas = hi - lo <= 2 ? [1, 2, 5] : [1];
  const every = Math.max(1, Math.ceil((hi - lo) / 8));
  const ticks: Axis["ticks"] = [];
  for (let e = lo; e <= hi; e++) {
    if ((e - lo) % every !== 0) continue;
    for (const m of mantissas) {
      const at = e + Math.log10(m);
      if (at <= hi + 1e-9) ticks.push({ at, label: formatTick(Number((m * 10 ** e).toPrecision(3))) });
    }
  }
  return { lo, hi, ticks };
}

/** Render a line chart to an RGB image. */
export function renderLineChart(series: readonly LineSeries[], options: LineChartOptions = {}): RgbImage {
  const width = options.width ?? 800;
  const height = options.height ?? 500;
  const s = options.textScale ?? Math.max(1, Math.round(Math.min(width, height) / 250));
  const img = createImage(width, height);
  const lineH = LINE_HEIGHT * s;

  // Data extent, in axis units.
  const logY = options.logY ?? false;
  const usable = (x: number, y: number) => Number.isFinite(x) && Number.isFinite(y) && (!logY || y > 0);
  let xMin = Infinity;
  let xMax = -Infinity;
  let yMin = Infinity;
  let yMax = -Infinity;
  for (const { points } of series) {
    for (const [x, y] of points) {
      if (!usable(x, y)) continue;
      xMin = Math.min(xMin, x);
      xMax = Math.max(xMax, x);
      yMin = Math.min(yMin, y);
      yMax = Math.max(yMax, y);
    }
  }
  if (xMin > xMax) {
    // Nothing to draw: an empty frame still tells the reader the chart exists.
    xMin = 0;
    xMax = 1;
    yMin = logY ? 1 : 0;
    yMax = logY ? 10 : 1;
  }

  // Layout: title on top, y label and tick labels on the left, x tick labels and label below.
  const yAxis = logY ? logAxis(yMin, yMax) : linearAxis(yMin, yMax, Math.max(3, Math.floor(height / 80)), true);
  const xAxis = linearAxis(xMin, xMax, Math.max(3, Math.floor(width / 110)), false);
  const yTickWidth = Math.max(...yAxis.ticks.map((t) => textWidth(t.label, s)));
  const left = 8 * s + (options.yLabel ? lineH : 0) + yTickWidth + 6 * s;
  const top = (options.title ? lineH + 8 * s : 0) + 8 * s;
  const bottom = 6 * s + lineH + (options.xLabel ? lineH + 2 * s : 0) + 4 * s;
  const right = 12 * s + Math.ceil(textWidth(formatTick(xAxis.ticks.at(-1)?.at ?? 0), s) / 2);
  const plot: ClipBox = { x0: left, y0: top, x1: width - right, y1: height - bottom };
  if (plot.x1 - plot.x0 < 20 || plot.y1 - plot.y0 < 20) throw new Error(`chart ${width}x${height} is too small`);
  const px = (x: number) => plot.x0 + ((x - xAxis.lo) / (xAxis.hi - xAxis.lo)) * (plot.x1 - plot.x0 - 1);
  const py = (y: number) => plot.y1 - 1 - ((y - yAxis.lo) / (yAxis.hi - yAxis.lo)) * (plot.y1 - plot.y0 - 1);

  // Grid and ticks.
  for (const t of yAxis.ticks) {
    const y = Math.round(py(t.at));
    fillRect(img, plot.x0, y, plot.x1 - plot.x0, 1, GRID);
    fillRect(img, plot.x0 - 4 * s, y, 4 * s, 1, BLACK);
    drawText(img, plot.x0 - 6 * s - textWidth(t.label, s), y - 3 * s, t.label, BLACK, { scale: s });
  }
  for (const t of xAxis.ticks) {
    const x = Math.round(px(t.at));
    fillRect(img, x, plot.y0, 1, plot.y1 - plot.y0, GRID);
    fillRect(img, x, plot.y1, 1, 4 * s, BLACK);
    drawText(img, x - Math.floor(textWidth(t.label, s) / 2), plot.y1 + 6 * s, t.label, BLACK, { scale: s });
  }
  strokeRect(img, plot.x0 - 1, plot.y0 - 1, plot.x1 - plot.x0 + 2, plot.y1 - plot.y0 + 2, BLACK);

  // Series, clipped to the plot area: runs of usable points become polylines, a lone point a dot.
  series.forEach(({ points }, i) => {
    const color = SERIES_COLORS[i % SERIES_COLORS.length]!;
    let run: [number, number][] = [];
    const flush = () => {
      if (run.length === 1) drawLine(img, run[0]![0], run[0]![1], run[0]![0], run[0]![1], color, 3 * s, plot);
      for (let k = 1; k < run.length; k++) {
        drawLine(img, run[k - 1]![0], run[k - 1]![1], run[k]![0], run[k]![1], color, 1.5 * s, plot);
      }
      run = [];
    };
    for (const [x, y] of points) {
      if (usable(x, y)) run.push([px(x) + 0.5, py(logY ? Math.log10(y) : y) + 0.5]);
      else flush();
    }
    flush();
  });

  // Labels.
  if (options.title) {
    drawText(img, Math.round((width - textWidth(options.title, s)) / 2), 6 * s, options.title, BLACK, { scale: s });
  }
  if (options.xLabel) {
    const x = Math.round((plot.x0 + plot.x1 - textWidth(options.xLabel, s)) / 2);
    drawText(img, x, height - 4 * s - lineH + 2 * s, options.xLabel, BLACK, { scale: s });
  }
  if (options.yLabel) {
    const y = Math.round((plot.y0 + plot.y1 - textWidth(options.yLabel, s)) / 2);
    drawText(img, 6 * s, y, options.yLabel, BLACK, { scale: s, vertical: true });
  }

  // Legend in the top-right corner of the plot.
  if (series.length > 0) {
    const sample = 18 * s;
    const boxW = 4 * s + sample + 4 * s + Math.max(...series.map((ser) => textWidth(ser.name, s))) + 4 * s;
    const boxH = series.length * lineH + 4 * s;
    const bx = plot.x1 - boxW - 6 * s;
    const by = plot.y0 + 6 * s;
    fillRect(img, bx, by, boxW, boxH, [255, 255, 255]);
    strokeRect(img, bx, by, boxW, boxH, LEGEND_BORDER);
    series.forEach((ser, i) => {
      const y = by + 3 * s + i * lineH;
      const color = SERIES_COLORS[i % SERIES_COLORS.length]!;
      drawLine(img, bx + 4 * s, y + 3.5 * s, bx + 4 * s + sample, y + 3.5 * s, color, 1.5 * s);
      drawText(img, bx + 8 * s + sample, y, ser.name, BLACK, { scale: s });
    });
  }
  return img;
}

/** Render a line chart and write it as a PNG. */
export async function lineChartPng(
  path: string,
  series: readonly LineSeries[],
  options: LineChartOptions = {},
): Promise<void> {
  await writePng(path, renderLineChart(series, options));
}
