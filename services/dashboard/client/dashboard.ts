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
  kl_to_reference: number | null;
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

interface EvaluationRow {
  epoch: number;
  metric: string;
  mean: number;
}

interface Snapshot {
  runId: string;
  status: string;
  error: string | null;
  epochs: EpochRow[];
  terms: TermRow[];
  epochsDone: number;
  evaluations: EvaluationRow[];
  guard: { best: { epoch: number } | null; stop: { epoch: number } | null };
}

/** The content check's metrics share a name prefix and one chart (both in [-1, 1]). */
const CONTENT_PREFIX = "content:";

type PageData =
  | { kind: "run"; live: boolean; snapshot: Snapshot }
  | { kind: "compare"; runs: Array<{ runId: string; name: string; epochs: EpochRow[] }> };

const COLORS = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2"];

interface Line {
  label: string;
  values: Array<number | null>;
  dash?: number[];
}

/** A vertical line at an epoch, labelled (the best evaluated epoch, the early stop). */
interface Mark {
  epoch: number;
  label: string;
  color: string;
}

const charts = new Map<string, uPlot>();

/** An axis label: `digits` significant digits, tiny ones (approx_kl ~1e-6) as 2.5e-6. */
function tick(v: number, digits = 3): string {
  if (v !== 0 && Math.abs(v) < 1e-3) return v.toExponential(digits - 2);
  return String(Number(v.toPrecision(digits)));
}

/** An axis's labels: 3 significant digits, more when that would print two ticks alike (-1.275, -1.28). */
function ticks(values: number[]): string[] {
  for (let digits = 3; digits < 8; digits++) {
    const labels = values.map((v) => tick(v, digits));
    if (new Set(labels).size === labels.length) return labels;
  }
  return values.map((v) => tick(v, 8));
}

/** uPlot's draw hook for the marks: a dashed vertical line and its label at the top of the plot area. */
function markLines(marks: Mark[]): uPlot.Plugin {
  return {
    hooks: {
      draw: (u) => {
        const { ctx, bbox } = u;
        ctx.save();
        ctx.setLineDash([6, 4]);
        ctx.lineWidth = 1.5 * devicePixelRatio;
        ctx.font = `${11 * devicePixelRatio}px system-ui, sans-serif`;
        for (const [i, m] of marks.entries()) {
          const x = u.valToPos(m.epoch, "x", true);
          ctx.strokeStyle = ctx.fillStyle = m.color;
          ctx.beginPath();
          ctx.moveTo(x, bbox.top);
          ctx.lineTo(x, bbox.top + bbox.height);
          ctx.stroke();
          // Right of the line, or left of it in the plot's right third (the last epoch's mark).
          const left = x > bbox.left + (bbox.width * 2) / 3;
          ctx.textAlign = left ? "right" : "left";
          ctx.fillText(m.label, x + (left ? -4 : 4) * devicePixelRatio, bbox.top + (12 + 12 * i) * devicePixelRatio);
        }
        ctx.restore();
      },
    },
  };
}

/** One uPlot line chart in the `.chart[data-chart=name]` element (replacing any drawn before). */
function draw(
  name: string,
  xs: number[],
  lines: Line[],
  extra: { band?: { upper: number; lower: number }; marks?: Mark[] } = {},
): void {
  const el = document.querySelector<HTMLElement>(`.chart[data-chart="${name}"]`);
  if (!el) return;
  charts.get(name)?.destroy();
  const { band, marks = [] } = extra;
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
      { size: 64, values: (_u, splits) => ticks(splits) },
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
    plugins: marks.length ? [markLines(marks)] : [],
  };
  const chart = new uPlot(options, [xs, ...lines.map((l) => l.values)] as uPlot.AlignedData, el);
  charts.set(name, chart);
  el.dataset.points = String(xs.length);
  el.dataset.lines = String(lines.length);
  el.dataset.marks = marks.map((m) => `${m.label}:${m.epoch}`).join(" ");
}

/** The `.chart[data-chart=name]` element in `parent`, made (hidden until drawn) when missing. */
function chartElement(parent: HTMLElement, name: string, title: string): HTMLElement {
  const found = parent.querySelector<HTMLElement>(`.chart[data-chart="${CSS.escape(name)}"]`);
  if (found) return found;
  const el = document.createElement("div");
  el.className = "chart";
  el.dataset.chart = name;
  el.dataset.title = title;
  parent.append(el);
  return el;
}

/**
 * The held-out evaluation means per evaluated epoch: the content check's metrics in one chart,
 * each reward in its own (their scales differ by orders of magnitude); the best evaluated epoch
 * and the early stop as vertical lines.
 */
function evaluationCharts(s: Snapshot): void {
  const section = document.getElementById("evaluation");
  const parent = document.getElementById("evaluation-charts");
  if (!section || !parent) return;
  section.hidden = s.evaluations.length === 0;
  if (section.hidden) return;
  const xs = [...new Set(s.evaluations.map((r) => r.epoch))].sort((a, b) => a - b);
  const metrics = [...new Set(s.evaluations.map((r) => r.metric))].sort();
  const line = (metric: string): Line => ({
    label: metric,
    values: xs.map((x) => s.evaluations.find((r) => r.epoch === x && r.metric === metric)?.mean ?? null),
  });
  const marks: Mark[] = [];
  if (s.guard.best) marks.push({ epoch: s.guard.best.epoch, label: "best", color: "#16a34a" });
  if (s.guard.stop) marks.push({ epoch: s.guard.stop.epoch, label: "early stop", color: "#dc2626" });
  const content = metrics.filter((m) => m.startsWith(CONTENT_PREFIX));
  const groups: Array<[string, string, string[]]> = [
    ...(content.length
      ? [["evaluation:content", "held-out content check (mean per evaluation)", content] as [string, string, string[]]]
      : []),
    ...metrics
      .filter((m) => !m.startsWith(CONTENT_PREFIX))
      .map((m) => [`evaluation:${m}`, `held-out ${m} (mean per evaluation)`, [m]] as [string, string, string[]]),
  ];
  for (const [name, title, members] of groups) {
    chartElement(parent, name, title);
    draw(name, xs, members.map(line), { marks });
  }
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
    { band: { upper: 2, lower: 3 } },
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
  // Measured only under a KL penalty (klCoefficient > 0): the chart shows once a value is in.
  const kl = document.querySelector<HTMLElement>('.chart[data-chart="kl_to_reference"]');
  if (kl) kl.hidden = s.epochs.every((e) => e.kl_to_reference === null);
  if (kl && !kl.hidden) draw("kl_to_reference", xs, [{ label: "KL to reference", values: col("kl_to_reference") }]);
  draw("time", xs, [
    { label: "sampling", values: col("sampling_s") },
    { label: "reward", values: col("reward_s") },
    { label: "training", values: col("training_s") },
  ]);
  evaluationCharts(s);
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
    const { snapshot, epochRows, termRows, guard, evaluations } = JSON.parse((event as MessageEvent).data) as {
      snapshot: Snapshot;
      epochRows: string;
      termRows: string;
      guard: string;
      evaluations: string;
    };
    banner.remove();
    const epochs = document.querySelector("#epochs tbody");
    const terms = document.querySelector("#terms tbody");
    if (epochs) epochs.innerHTML = epochRows;
    if (terms) terms.innerHTML = termRows;
    const guardText = document.getElementById("guard");
    if (guardText) guardText.innerHTML = guard;
    const evaluationTable = document.getElementById("evaluations");
    if (evaluationTable) evaluationTable.innerHTML = evaluations;
    const status = document.getElementById("run-status");
    if (status) {
      status.textContent = snapshot.status;
      status.className = `status status-${snapshot.status}`;
    }
    const done = document.getElementById("epochs-done");
    if (done) done.textContent = String(snapshot.epochsDone);
    // Every recorded epoch ends in a checkpoint: the lineage link's "no checkpoint yet" is stale.
    if (snapshot.epochsDone > 0) document.getElementById("lineage-note")?.remove();
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
