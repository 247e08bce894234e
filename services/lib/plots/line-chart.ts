// Line charts (loss curves, reward per epoch) as SVG: axes with "nice" ticks (1, 2, 5 x 10^k, or
// decades on a log axis), grid, legend, title and labels; written as PNG through sharp.

import { escapeXml, FONT_FAMILY, textWidth, writeSvgPng } from "./svg.ts";

type Rgb = readonly [number, number, number];

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
  /** Font size in pixels of all text; default from the image size (14 for 800x500). */
  fontSize?: number;
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

const rgb = ([r, g, b]: Rgb) => `rgb(${r},${g},${b})`;

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

/** A line chart as an SVG document. */
export function lineChartSvg(series: readonly LineSeries[], options: LineChartOptions = {}): string {
  const width = options.width ?? 800;
  const height = options.height ?? 500;
  const fs = options.fontSize ?? Math.max(10, Math.round(Math.min(width, height) / 36));
  const pad = Math.round(fs / 2);

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
  const yTickWidth = Math.max(...yAxis.ticks.map((t) => textWidth(t.label, fs)));
  const left = pad + (options.yLabel ? fs + pad : 0) + yTickWidth + pad;
  const top = (options.title ? fs + pad : 0) + pad;
  const bottom = pad + fs + (options.xLabel ? fs + pad : 0) + pad;
  const right = pad + Math.ceil(textWidth(formatTick(xAxis.ticks.at(-1)?.at ?? 0), fs) / 2);
  const plot = { x0: left, y0: top, x1: width - right, y1: height - bottom };
  if (plot.x1 - plot.x0 < 20 || plot.y1 - plot.y0 < 20) throw new Error(`chart ${width}x${height} is too small`);
  const px = (x: number) => plot.x0 + ((x - xAxis.lo) / (xAxis.hi - xAxis.lo)) * (plot.x1 - plot.x0);
  const py = (y: number) => plot.y1 - ((y - yAxis.lo) / (yAxis.hi - yAxis.lo)) * (plot.y1 - plot.y0);
  const f = (v: number) => v.toFixed(1);
  const text = (x: number, y: number, s: string, anchor: "start" | "middle" | "end", extra = "") =>
    `<text x="${f(x)}" y="${f(y)}" text-anchor="${anchor}"${extra}>${escapeXml(s)}</text>`;

  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="${FONT_FAMILY}" font-size="${fs}">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
  ];
  // Grid and ticks.
  for (const t of yAxis.ticks) {
    const y = py(t.at);
    out.push(`<line x1="${f(plot.x0)}" y1="${f(y)}" x2="${f(plot.x1)}" y2="${f(y)}" stroke="rgb(225,225,225)"/>`);
    out.push(`<line x1="${f(plot.x0 - pad)}" y1="${f(y)}" x2="${f(plot.x0)}" y2="${f(y)}" stroke="black"/>`);
    out.push(text(plot.x0 - pad - 2, y + fs * 0.35, t.label, "end"));
  }
  for (const t of xAxis.ticks) {
    const x = px(t.at);
    out.push(`<line x1="${f(x)}" y1="${f(plot.y0)}" x2="${f(x)}" y2="${f(plot.y1)}" stroke="rgb(225,225,225)"/>`);
    out.push(`<line x1="${f(x)}" y1="${f(plot.y1)}" x2="${f(x)}" y2="${f(plot.y1 + pad)}" stroke="black"/>`);
    out.push(text(x, plot.y1 + pad + fs, t.label, "middle"));
  }
  out.push(
    `<rect x="${plot.x0}" y="${plot.y0}" width="${plot.x1 - plot.x0}" height="${plot.y1 - plot.y0}" fill="none" stroke="black"/>`,
  );

  // Series, clipped to the plot area: runs of usable points become polylines, a lone point a dot.
  out.push(
    `<clipPath id="plot"><rect x="${plot.x0}" y="${plot.y0}" width="${plot.x1 - plot.x0}" height="${plot.y1 - plot.y0}"/></clipPath>`,
    `<g clip-path="url(#plot)" fill="none" stroke-width="${f(fs / 7)}" stroke-linejoin="round">`,
  );
  series.forEach(({ points }, i) => {
    const color = rgb(SERIES_COLORS[i % SERIES_COLORS.length]!);
    let run: string[] = [];
    const flush = () => {
      if (run.length === 1) {
        const [x, y] = run[0]!.split(",");
        out.push(`<circle cx="${x}" cy="${y}" r="${f(fs / 5)}" fill="${color}"/>`);
      } else if (run.length > 1) out.push(`<polyline points="${run.join(" ")}" stroke="${color}"/>`);
      run = [];
    };
    for (const [x, y] of points) {
      if (usable(x, y)) run.push(`${f(px(x))},${f(py(logY ? Math.log10(y) : y))}`);
      else flush();
    }
    flush();
  });
  out.push("</g>");

  // Labels.
  if (options.title) out.push(text(width / 2, pad + fs * 0.85, options.title, "middle", ' font-weight="bold"'));
  if (options.xLabel) out.push(text((plot.x0 + plot.x1) / 2, height - pad, options.xLabel, "middle"));
  if (options.yLabel) {
    const cy = (plot.y0 + plot.y1) / 2;
    out.push(
      text(pad + fs * 0.85, cy, options.yLabel, "middle", ` transform="rotate(-90 ${f(pad + fs * 0.85)} ${f(cy)})"`),
    );
  }

  // Legend in the top-right corner of the plot.
  if (series.length > 0) {
    const sample = 2 * fs;
    const lineH = Math.round(fs * 1.3);
    const boxW = pad + sample + pad + Math.max(...series.map((ser) => textWidth(ser.name, fs))) + pad;
    const boxH = series.length * lineH + pad;
    const bx = plot.x1 - boxW - pad;
    const by = plot.y0 + pad;
    out.push(`<rect x="${bx}" y="${by}" width="${boxW}" height="${boxH}" fill="white" stroke="rgb(180,180,180)"/>`);
    series.forEach((ser, i) => {
      const y = by + pad / 2 + i * lineH + lineH / 2;
      const color = rgb(SERIES_COLORS[i % SERIES_COLORS.length]!);
      out.push(
        `<line x1="${bx + pad}" y1="${f(y)}" x2="${bx + pad + sample}" y2="${f(y)}" stroke="${color}" stroke-width="${f(fs / 7)}"/>`,
      );
      out.push(text(bx + 2 * pad + sample, y + fs * 0.35, ser.name, "start"));
    });
  }
  out.push("</svg>");
  return out.join("\n");
}

/** Render a line chart and write it as a PNG. */
export async function lineChartPng(
  path: string,
  series: readonly LineSeries[],
  options: LineChartOptions = {},
): Promise<void> {
  await writeSvgPng(path, lineChartSvg(series, options));
}
