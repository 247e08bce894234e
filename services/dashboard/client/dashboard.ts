// The dashboard's browser code, bundled by Bun.build with uPlot: charts from the rows the server
// embedded as JSON (#page-data), and, on a live run's page, a server-sent-event stream whose
// snapshots replace the tables' bodies and redraw the charts.
import uPlot from "uplot";

interface EpochRow {
  epoch: number;
  reward_mean: number | null;
  reward_std: number | null;
  loss: number | null;
  approx_kl: number | null;
  clip_fraction: number | null;
  sampling_s: number | null;
  reward_s: number | null;
  training_s: number | null;
  seconds: number | null;
}

interface TermRow {
  epoch: number;
  reward_name: string;
  mean: number;
}

interface Snapshot {
  runId: string;
  status: string;
  error: string | null;
  epochs: EpochRow[];
  terms: TermRow[];
  epochsDone: number;
}

type PageData =
  | { kind: "run"; live: boolean; snapshot: Snapshot }
  | { kind: "compare"; runs: Array<{ runId: string; name: string; epochs: EpochRow[] }> };

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

interface Line {
  label: string;
  values: Array<number | null>;
  dash?: number[];
}

const charts = new Map<string, uPlot>();

/** An axis label: 3 significant digits, tiny ones (approx_kl ~1e-6) as 2.5e-6. */
function tick(v: number): string {
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(1);
  return String(Number(v.toPrecision(3)));
}

/** One uPlot line chart in the `.chart[data-chart=name]` element (replacing any drawn before). */
function draw(name: string, xs: number[], lines: Line[], band?: { upper: number; lower: number }): void {
  const el = document.querySelector<HTMLElement>(`.chart[data-chart="${name}"]`);
  if (!el) return;
  charts.get(name)?.destroy();
  const options: uPlot.Options = {
    title: el.dataset.title,
    width: Math.max(280, el.clientWidth || 420),
    height: 220,
    scales: {
      x: { time: false },
      // A flat series (approx_kl of 0 early on) gets a small band around its value, not 0..100.
      y: {
        range: (_u, min, max) =>
          min === max
            ? [min - (Math.abs(min) || 1) * 0.1, max + (Math.abs(max) || 1) * 0.1]
            : uPlot.rangeNum(min, max, 0.1, true),
      },
    },
    // Whole epochs on x; y ticks in 3 significant digits (approx_kl and loss can be ~1e-8).
    axes: [
      { label: "epoch", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000] },
      { size: 64, values: (_u, ticks) => ticks.map(tick) },
    ],
    series: [
      { label: "epoch" },
      ...lines.map((l, i) => ({
        label: l.label,
        stroke: COLORS[(l.dash ? 0 : i) % COLORS.length],
        width: l.dash ? 1 : 2,
        dash: l.dash,
        points: { show: xs.length < 40 },
      })),
    ],
    bands: band ? [{ series: [band.upper, band.lower], fill: "rgba(37, 99, 235, 0.12)" }] : undefined,
  };
  const chart = new uPlot(options, [xs, ...lines.map((l) => l.values)] as uPlot.AlignedData, el);
  charts.set(name, chart);
  el.dataset.points = String(xs.length);
}

function runCharts(s: Snapshot): void {
  const xs = s.epochs.map((e) => e.epoch);
  const col = (k: keyof EpochRow) => s.epochs.map((e) => e[k]);
  const mean = col("reward_mean");
  const std = col("reward_std");
  const shifted = (sign: number) => mean.map((m, i) => (m === null || std[i] === null ? null : m + sign * std[i]!));
  draw(
    "reward",
    xs,
    [
      { label: "mean", values: mean },
      { label: "+std", values: shifted(1), dash: [4, 4] },
      { label: "-std", values: shifted(-1), dash: [4, 4] },
    ],
    { upper: 2, lower: 3 },
  );
  const names = [...new Set(s.terms.map((t) => t.reward_name))];
  draw(
    "terms",
    xs,
    names.map((n) => ({
      label: n,
      values: xs.map((x) => s.terms.find((t) => t.epoch === x && t.reward_name === n)?.mean ?? null),
    })),
  );
  draw("loss", xs, [{ label: "loss", values: col("loss") }]);
  draw("approx_kl", xs, [{ label: "approx_kl", values: col("approx_kl") }]);
  draw("clip_fraction", xs, [{ label: "clip fraction", values: col("clip_fraction") }]);
  draw("time", xs, [
    { label: "sampling", values: col("sampling_s") },
    { label: "reward", values: col("reward_s") },
    { label: "training", values: col("training_s") },
  ]);
}

function compareCharts(runs: Array<{ name: string; epochs: EpochRow[] }>): void {
  if (runs.length < 2) return;
  const xs = [...new Set(runs.flatMap((r) => r.epochs.map((e) => e.epoch)))].sort((a, b) => a - b);
  const line = (k: keyof EpochRow) =>
    runs.map((r) => ({ label: r.name, values: xs.map((x) => r.epochs.find((e) => e.epoch === x)?.[k] ?? null) }));
  draw("compare-reward", xs, line("reward_mean"));
  draw("compare-approx_kl", xs, line("approx_kl"));
  draw("compare-loss", xs, line("loss"));
  draw("compare-seconds", xs, line("seconds"));
}

/** Follows a live run: each `run` event carries the snapshot and the server-rendered table bodies. */
function follow(runId: string): void {
  const source = new EventSource(`/runs/${encodeURIComponent(runId)}/events`);
  let updates = 0;
  const banner = document.createElement("p");
  banner.className = "banner";
  banner.id = "stream-banner";
  source.addEventListener("run", (event) => {
    const { snapshot, epochRows, termRows } = JSON.parse((event as MessageEvent).data) as {
      snapshot: Snapshot;
      epochRows: string;
      termRows: string;
    };
    banner.remove();
    const epochs = document.querySelector("#epochs tbody");
    const terms = document.querySelector("#terms tbody");
    if (epochs) epochs.innerHTML = epochRows;
    if (terms) terms.innerHTML = termRows;
    const status = document.getElementById("run-status");
    if (status) {
      status.textContent = snapshot.status;
      status.className = `status status-${snapshot.status}`;
    }
    const done = document.getElementById("epochs-done");
    if (done) done.textContent = String(snapshot.epochsDone);
    const error = document.getElementById("run-error");
    if (error) error.textContent = snapshot.error ?? "";
    runCharts(snapshot);
    document.body.dataset.liveUpdates = String(++updates);
  });
  let progressEvents = 0;
  source.addEventListener("progress", (event) => {
    const p = JSON.parse((event as MessageEvent).data) as { epoch: number; phase: string; done: number; total: number };
    const el = document.getElementById("progress");
    if (el) el.textContent = `epoch ${p.epoch}: ${p.phase} ${p.done}/${p.total}`;
    document.body.dataset.progressEvents = String(++progressEvents);
  });
  source.addEventListener("unavailable", (event) => {
    banner.textContent = (JSON.parse((event as MessageEvent).data) as { message: string }).message;
    document.querySelector("main")?.prepend(banner);
  });
  source.addEventListener("end", () => {
    source.close();
    document.getElementById("live-indicator")?.remove();
  });
}

function main(): void {
  const text = document.getElementById("page-data")?.textContent;
  if (!text) return;
  const data = JSON.parse(text) as PageData;
  if (data.kind === "run") {
    runCharts(data.snapshot);
    if (data.live) follow(data.snapshot.runId);
  } else if (data.kind === "compare") {
    compareCharts(data.runs);
  }
  document.body.dataset.ready = "true";
}

main();
