// Curves of several train-local runs side by side, for the write-ups in bench/learning/: the
// training reward per epoch, kl_to_reference per epoch (runs with a KL term), and each held-out
// evaluation metric per evaluated epoch (evaluations.json), one line per run; plus a markdown
// table of the held-out means at every evaluated epoch.
//
//   bun run bench/learning/compare-runs.ts --out DIR RUN_DIR=label [RUN_DIR=label ...]
import { existsSync, mkdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { type LineSeries, lineChartPng } from "../../services/lib/plots/line-chart.ts";

interface EpochEntry {
  epoch: number;
  rewardMean: number;
  klToReference?: number;
}

interface ScoreRow {
  prompt: string;
  seed: number;
  metric: string;
  value: number;
}

interface Run {
  label: string;
  history: EpochEntry[];
  /** metric -> [epoch, mean] in epoch order */
  heldOut: Map<string, Array<[number, number]>>;
}

function loadRun(dir: string, label: string): Run {
  const history = JSON.parse(readFileSync(join(dir, "history.json"), "utf8")) as EpochEntry[];
  const heldOut = new Map<string, Array<[number, number]>>();
  const evalPath = join(dir, "evaluations.json");
  if (existsSync(evalPath)) {
    const byEpoch = JSON.parse(readFileSync(evalPath, "utf8")) as Record<string, ScoreRow[]>;
    for (const [name, rows] of Object.entries(byEpoch)) {
      const epoch = Number(name.replace(/^epoch-/, ""));
      const sums = new Map<string, { sum: number; n: number }>();
      for (const r of rows) {
        const s = sums.get(r.metric) ?? { sum: 0, n: 0 };
        s.sum += r.value;
        s.n += 1;
        sums.set(r.metric, s);
      }
      for (const [metric, s] of sums) {
        const line = heldOut.get(metric) ?? [];
        line.push([epoch, s.sum / s.n]);
        heldOut.set(metric, line);
      }
    }
    for (const line of heldOut.values()) line.sort((a, b) => a[0] - b[0]);
  }
  return { label, history, heldOut };
}

async function main(args: string[]): Promise<void> {
  const outAt = args.indexOf("--out");
  if (outAt < 0 || !args[outAt + 1]) throw new Error("usage: compare-runs.ts --out DIR RUN_DIR=label ...");
  const out = args[outAt + 1]!;
  const specs = args.filter((_, i) => i !== outAt && i !== outAt + 1);
  if (specs.length === 0) throw new Error("compare-runs: name at least one RUN_DIR=label");
  const runs = specs.map((spec) => {
    const eq = spec.lastIndexOf("=");
    return eq > 0 ? loadRun(spec.slice(0, eq), spec.slice(eq + 1)) : loadRun(spec, spec);
  });
  mkdirSync(out, { recursive: true });

  await lineChartPng(
    join(out, "reward.png"),
    runs.map((r) => ({ name: r.label, points: r.history.map((e) => [e.epoch, e.rewardMean] as const) })),
    { title: "training reward (epoch mean)", xLabel: "epoch", yLabel: "reward" },
  );
  // Every chart lists every run, in the same order, so a run keeps its colour; a run without the
  // quantity has only non-finite points (a legend entry, no line).
  const kl: LineSeries[] = runs.map((r) => ({
    name: r.label,
    points: r.history.map((e) => [e.epoch, e.klToReference ?? Number.NaN] as const),
  }));
  if (runs.some((r) => r.history.some((e) => typeof e.klToReference === "number"))) {
    await lineChartPng(join(out, "kl-to-reference.png"), kl, {
      title: "KL to the reference policy (per trained step, mean over pixels)",
      xLabel: "epoch",
      yLabel: "kl_to_reference",
    });
  }
  const metrics = [...new Set(runs.flatMap((r) => [...r.heldOut.keys()]))].sort();
  for (const metric of metrics) {
    await lineChartPng(
      join(out, `heldout-${metric.replace(/[^a-z0-9_]+/gi, "_")}.png`),
      runs.map((r) => ({ name: r.label, points: r.heldOut.get(metric) ?? [] })),
      { title: `held-out ${metric} (mean over prompts x seeds)`, xLabel: "epoch", yLabel: metric },
    );
  }

  // The held-out table: one row per (run, evaluated epoch).
  console.log(`| run | epoch | ${metrics.join(" | ")} |`);
  console.log(`|---|---|${metrics.map(() => "---").join("|")}|`);
  for (const r of runs) {
    const epochs = [...new Set([...r.heldOut.values()].flatMap((line) => line.map(([e]) => e)))].sort((a, b) => a - b);
    for (const e of epochs) {
      const cells = metrics.map(
        (m) =>
          r.heldOut
            .get(m)
            ?.find(([x]) => x === e)?.[1]
            .toFixed(4) ?? "",
      );
      console.log(`| ${r.label} | ${e} | ${cells.join(" | ")} |`);
    }
  }
}

if (import.meta.main) await main(process.argv.slice(2));
