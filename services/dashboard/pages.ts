// The dashboard's pages, rendered on the server from the database rows (numbers through num(),
// four significant digits); the browser bundle draws the charts from the same rows, embedded as
// JSON, and swaps in fresh table bodies that the live stream sends.

import type { RewardTermByEpoch, RunOverview, TrajectorySummary } from "../lib/db/queries.ts";
import type {
  Checkpoint,
  RewardRow,
  Run,
  RunEvaluationByEpoch,
  RunRewardByEpoch,
  Trajectory,
  TrajectoryProvenance,
} from "../lib/db/schema.ts";
import type { HeldOutEvaluation } from "../lib/ddpo/evaluation.ts";
import { Html, html, num, page, path, query, seconds, when } from "./html.ts";
import type { Preview } from "./previews.ts";

const LIVE: readonly string[] = ["pending", "running"];

function runTitle(run: Pick<Run, "id" | "name">): string {
  return run.name && run.name !== run.id ? run.name : run.id.slice(0, 8);
}

function budget(run: Run): number | null {
  const epochs = (run.config as { epochs?: unknown }).epochs;
  return typeof epochs === "number" ? epochs : null;
}

function status(run: Pick<Run, "status">, id?: string): Html {
  return html`<span class="status status-${run.status}" ${id ? new Html(`id="${id}"`) : ""}>${run.status}</span>`;
}

function rewardTerms(run: Run): string {
  return run.rewards
    .map((r) => `${r.weight === 1 ? "" : `${r.weight}*`}${r.name}${r.endpoint ? `@${r.endpoint}` : ""}`)
    .join(" + ");
}

function stepImage(t: Pick<Trajectory, "run_id" | "epoch" | "sample_index">, step: number | "last", alt: string): Html {
  const src = path("runs", t.run_id, "trajectories", t.epoch, t.sample_index, "steps", `${step}.png`);
  return html`<img class="sample" src="${src}" alt="${alt}" loading="lazy">`;
}

function trajectoryHref(t: Pick<Trajectory, "run_id" | "epoch" | "sample_index">): string {
  return path("runs", t.run_id, "trajectories", t.epoch, t.sample_index);
}

/** The card under each image: prompt, seed, reward (the numbers the tests read). */
function sampleCard(t: TrajectorySummary, extra: Html | string = ""): Html {
  return html`<figure class="card" data-epoch="${t.epoch}" data-sample="${t.sample_index}">
    <a href="${trajectoryHref(t)}">${stepImage(t, "last", t.prompt)}</a>
    <figcaption><span class="prompt">${t.prompt}</span>
      <span>seed <span class="seed">${t.seed}</span></span>
      <span>reward <span class="reward">${num(t.reward)}</span></span>${extra}</figcaption>
  </figure>`;
}

// ---- runs

export function runsPage(runs: RunOverview[]): string {
  const rows = runs.map(
    (r) => html`<tr data-run="${r.id}">
      <td><a href="${path("runs", r.id)}">${runTitle(r)}</a><div class="muted mono">${r.id}</div></td>
      <td>${status(r)}</td>
      <td class="epochs">${r.epochs_done}${budget(r) === null ? "" : ` / ${budget(r)}`}</td>
      <td class="reward">${num(r.last_reward_mean)}</td>
      <td>${when(r.created_at)}</td>
      <td>${r.prompt_set ?? "–"}</td>
      <td>${rewardTerms(r)}</td>
      <td><details><summary>config</summary><pre>${JSON.stringify(r.config, null, 2)}</pre></details></td>
    </tr>`,
  );
  // The two newest runs preselected.
  const options = (selected: number) =>
    runs.map(
      (r, i) =>
        html`<option value="${r.id}"${i === selected ? new Html(" selected") : ""}>${runTitle(r)} (${r.id.slice(0, 8)})</option>`,
    );
  return page(
    "runs",
    html`<h1>Runs</h1>
    ${runs.length === 0 ? html`<p class="empty">No runs recorded yet. Start one with <code>ddpo train</code>.</p>` : ""}
    <table id="runs"><thead><tr><th>run</th><th>status</th><th>epochs</th><th>reward (last epoch)</th><th>started (UTC)</th>
      <th>prompts</th><th>reward terms</th><th>config</th></tr></thead><tbody>${rows}</tbody></table>
    ${
      runs.length >= 2
        ? html`<form class="compare" action="/compare" method="get"><label>compare <select name="a">${options(1)}</select></label>
        <label>with <select name="b">${options(0)}</select></label> <button type="submit">compare</button></form>`
        : ""
    }`,
  );
}

// ---- one run

export function epochRowsHtml(run: Pick<Run, "id">, epochs: RunRewardByEpoch[]): Html {
  return html`${epochs.map(
    (e) => html`<tr data-epoch="${e.epoch}">
      <td><a href="${path("runs", run.id, "epochs", e.epoch)}">${e.epoch}</a></td>
      <td class="trajectories">${e.trajectories}</td>
      <td class="reward_mean">${num(e.reward_mean)}</td><td class="reward_std">${num(e.reward_std)}</td>
      <td class="reward_min">${num(e.reward_min)}</td><td class="reward_max">${num(e.reward_max)}</td>
      <td class="loss">${num(e.loss)}</td><td class="approx_kl">${num(e.approx_kl)}</td>
      <td class="clip_fraction">${num(e.clip_fraction)}</td><td class="kl_to_reference">${num(e.kl_to_reference)}</td>
      <td class="sampling_s">${seconds(e.sampling_s)}</td><td class="reward_s">${seconds(e.reward_s)}</td>
      <td class="training_s">${seconds(e.training_s)}</td><td class="seconds">${seconds(e.seconds)}</td>
    </tr>`,
  )}`;
}

export function termRowsHtml(terms: RewardTermByEpoch[]): Html {
  return html`${terms.map(
    (t) => html`<tr data-epoch="${t.epoch}" data-term="${t.reward_name}">
      <td>${t.epoch}</td><td>${t.reward_name}</td><td class="weight">${num(t.weight)}</td><td>${t.samples}</td>
      <td class="mean">${num(t.mean)}</td><td class="std">${num(t.std)}</td></tr>`,
  )}`;
}

/** The over-optimisation guard's settings and what it marked on a run (server.ts's guardMarks). */
export interface GuardMarks {
  /** The run's held-out evaluation; null: none. */
  settings: HeldOutEvaluation | null;
  /** The best evaluated policy (epoch 0: the starting model) by `metric`, its mean there. */
  best: { epoch: number; metric: string; checkpointId: string; mean: number | null } | null;
  /** The evaluated epoch after which the guard stopped the run, and its reason. */
  stop: { epoch: number; reason: string } | null;
}

/** What the live stream sends and the charts draw. */
export interface RunSnapshot {
  runId: string;
  name: string;
  status: string;
  error: string | null;
  epochs: RunRewardByEpoch[];
  terms: RewardTermByEpoch[];
  /** Epochs the Trainer finished (recorded its statistics); the view also lists one still sampling. */
  epochsDone: number;
  /** run_evaluation_by_epoch's rows, by epoch then metric. */
  evaluations: RunEvaluationByEpoch[];
  guard: GuardMarks;
}

/** The guard's settings and marks in words (the charts draw the marks as vertical lines). */
export function guardHtml(run: Pick<Run, "id">, guard: GuardMarks): Html {
  const e = guard.settings;
  const { best, stop } = guard;
  const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? "" : "s"}`;
  return html`${
    e
      ? html`<span id="guard-settings">${plural(e.prompts.length, "prompt")} x ${plural(e.seeds.length, "seed")},
      evaluated before training and every ${plural(e.every, "epoch")}${
        e.stopBelow
          ? `; stops when ${e.stopBelow.metric} falls below its start by more than ${Number((100 * (1 - e.stopBelow.fraction)).toPrecision(3))}% of the start's magnitude`
          : ""
      }${e.bestBy ? `; best by ${e.bestBy}` : ""}.</span>`
      : ""
  }
    ${
      best
        ? html`<span id="best-epoch" data-epoch="${best.epoch}" data-metric="${best.metric}">Best evaluated policy:
      ${best.epoch === 0 ? "the starting model (epoch 0)" : `epoch ${best.epoch}`} by ${best.metric}
      (mean ${num(best.mean)}), checkpoint <a class="mono" href="${path("runs", run.id, "lineage")}">${best.checkpointId}</a>.</span>`
        : ""
    }
    ${
      stop
        ? html`<span id="early-stop" data-epoch="${stop.epoch}">Stopped early after epoch ${stop.epoch}: ${stop.reason}.</span>`
        : ""
    }`;
}

/** The held-out evaluations as a table, one row per evaluated epoch, one column per metric's mean. */
export function evaluationTableHtml(evaluations: RunEvaluationByEpoch[], guard: GuardMarks): Html {
  const metrics = [...new Set(evaluations.map((r) => r.metric))].sort();
  const byEpoch = Map.groupBy(evaluations, (r) => r.epoch);
  const note = (epoch: number) =>
    [guard.best?.epoch === epoch ? "best" : "", guard.stop?.epoch === epoch ? "stopped early" : ""]
      .filter(Boolean)
      .join(", ");
  return html`<thead><tr><th>epoch</th>${metrics.map((m) => html`<th>${m}</th>`)}<th>images</th><th></th></tr></thead>
    <tbody>${[...byEpoch].map(
      ([epoch, rows]) =>
        html`<tr data-epoch="${epoch}"${note(epoch) ? new Html(` class="marked"`) : ""}><td>${epoch}</td>${metrics.map(
          (m) => {
            const r = rows.find((x) => x.metric === m);
            return html`<td class="mean" data-metric="${m}">${num(r?.mean)}</td>`;
          },
        )}<td class="images">${Math.max(0, ...rows.map((r) => r.images))}</td><td class="note">${note(epoch)}</td></tr>`,
    )}</tbody>`;
}

export function runPage(run: Run, snapshot: RunSnapshot, lastCheckpoint: Checkpoint | undefined): string {
  const live = LIVE.includes(run.status);
  const total = budget(run);
  const done = snapshot.epochsDone;
  return page(
    runTitle(run),
    html`<h1>${runTitle(run)} ${status(run, "run-status")}</h1>
    <p class="muted mono">${run.id}</p>
    <p id="run-error" class="error-text">${run.error ?? ""}</p>
    <dl class="facts">
      <dt>started</dt><dd>${when(run.created_at)}</dd>
      <dt>epochs</dt><dd><span id="epochs-done">${done}</span>${total === null ? "" : ` / ${total}`}</dd>
      <dt>prompts</dt><dd>${run.prompt_set ?? "–"}</dd>
      <dt>reward</dt><dd>${rewardTerms(run)}</dd>
      <dt>code</dt><dd>${run.code_version ?? "–"}</dd>
    </dl>
    <p class="links"><a href="${path("runs", run.id, "trajectories")}">trajectories</a>
      <a href="${path("runs", run.id, "lineage")}">lineage${lastCheckpoint ? "" : html`<span id="lineage-note"> (no checkpoint yet)</span>`}</a>
      <a href="/compare${query({ a: run.id })}">compare with…</a>
      ${live ? html`<span class="live" id="live-indicator">live <span id="progress" class="muted"></span></span>` : ""}</p>
    <section class="charts">
      <div class="chart" data-chart="reward" data-title="reward (mean ± std per epoch)"></div>
      <div class="chart" data-chart="terms" data-title="reward terms (mean per epoch, unweighted)"></div>
      <div class="chart" data-chart="loss" data-title="loss"></div>
      <div class="chart" data-chart="approx_kl" data-title="approx_kl"></div>
      <div class="chart" data-chart="clip_fraction" data-title="clip fraction"></div>
      <div class="chart" data-chart="kl_to_reference" data-title="KL to the reference policy (mean per pixel and trained step)"
        ${snapshot.epochs.some((e) => e.kl_to_reference !== null) ? "" : new Html("hidden")}></div>
      <div class="chart" data-chart="time" data-title="seconds per epoch: sampling, reward, training"></div>
    </section>
    <section id="evaluation"${snapshot.evaluations.length ? "" : new Html(" hidden")}>
      <h2>Held-out evaluation</h2>
      <p id="guard">${guardHtml(run, snapshot.guard)}</p>
      <div class="charts" id="evaluation-charts"></div>
      <table id="evaluations">${evaluationTableHtml(snapshot.evaluations, snapshot.guard)}</table>
    </section>
    <h2>Epochs</h2>
    <table id="epochs"><thead><tr><th>epoch</th><th>samples</th><th>reward mean</th><th>reward std</th><th>min</th><th>max</th>
      <th>loss</th><th>approx_kl</th><th>clip fraction</th><th>KL to reference</th><th>sampling</th><th>reward</th><th>training</th><th>total</th></tr></thead>
      <tbody>${epochRowsHtml(run, snapshot.epochs)}</tbody></table>
    <h2>Reward terms</h2>
    <table id="terms"><thead><tr><th>epoch</th><th>term</th><th>weight</th><th>samples</th><th>mean</th><th>std</th></tr></thead>
      <tbody>${termRowsHtml(snapshot.terms)}</tbody></table>
    <details><summary>config</summary><pre>${JSON.stringify(run.config, null, 2)}</pre></details>`,
    { data: { kind: "run", live, snapshot } },
  );
}

// ---- one epoch's samples

export function epochPage(
  run: Run,
  epoch: number,
  stats: RunRewardByEpoch | undefined,
  samples: TrajectorySummary[],
  epochs: number[],
  folderGrid: string | null,
): string {
  const at = epochs.indexOf(epoch);
  const prev = at > 0 ? epochs[at - 1] : undefined;
  const next = at >= 0 && at < epochs.length - 1 ? epochs[at + 1] : undefined;
  const cards = samples.map((t) =>
    sampleCard(
      t,
      html` <a class="fixed" href="${path("runs", run.id, "fixed")}${query({ prompt: t.prompt, seed: t.seed })}">this seed under every checkpoint</a>
      <a class="series" href="/series${query({ run: [run.id], prompt: t.prompt })}">this prompt across epochs</a>`,
    ),
  );
  return page(
    `${runTitle(run)} epoch ${epoch}`,
    html`<h1><a href="${path("runs", run.id)}">${runTitle(run)}</a> · epoch ${epoch}</h1>
    <p class="links">${prev === undefined ? "" : html`<a rel="prev" href="${path("runs", run.id, "epochs", prev)}">← epoch ${prev}</a>`}
      ${next === undefined ? "" : html`<a rel="next" href="${path("runs", run.id, "epochs", next)}">epoch ${next} →</a>`}
      <a href="${path("runs", run.id, "trajectories")}${query({ epoch })}">these trajectories by reward</a></p>
    ${
      stats
        ? html`<p class="facts-line">reward <span id="epoch-reward-mean">${num(stats.reward_mean)}</span> ± <span id="epoch-reward-std">${num(stats.reward_std)}</span>
      over ${stats.trajectories} samples; loss ${num(stats.loss)}, approx_kl ${num(stats.approx_kl)}, clip fraction ${num(stats.clip_fraction)}</p>`
        : ""
    }
    ${samples.length === 0 ? html`<p class="empty">No trajectories recorded for this epoch.</p>` : ""}
    <section class="grid" id="samples">${cards}</section>
    ${
      folderGrid
        ? html`<h2>The Trainer's grid for this epoch (run folder)</h2><img class="folder-grid" src="${folderGrid}" alt="sample grid of epoch ${epoch}">`
        : ""
    }`,
  );
}

// ---- one trajectory

export function trajectoryPage(
  t: Omit<Trajectory, "image_png">,
  provenance: TrajectoryProvenance | undefined,
  rewards: RewardRow[],
  rows: number,
): string {
  const steps = Array.from({ length: rows }, (_, k) => k);
  const label = (k: number) =>
    k === rows - 1 ? "x_0" : k === 0 ? `x_T (t=${t.timesteps[0] ?? "?"})` : `t=${t.timesteps[k] ?? "?"}`;
  return page(
    `${t.prompt} · epoch ${t.epoch}`,
    html`<h1><a href="${path("runs", t.run_id)}">run</a> · <a href="${path("runs", t.run_id, "epochs", t.epoch)}">epoch ${t.epoch}</a>
      · sample ${t.sample_index}</h1>
    <dl class="facts" id="trajectory">
      <dt>prompt</dt><dd class="prompt">${t.prompt}</dd>
      <dt>seed</dt><dd class="seed">${t.seed}</dd>
      <dt>reward</dt><dd class="reward">${num(t.reward)}</dd>
      <dt>advantage</dt><dd class="advantage">${num(t.advantage)}</dd>
      <dt>sampled by</dt><dd><span class="mono">${t.checkpoint_id}</span>
        ${provenance ? ` (${provenance.checkpoint_kind}${provenance.checkpoint_epoch === null ? "" : `, epoch ${provenance.checkpoint_epoch}`})` : ""}</dd>
      <dt>same prompt and seed</dt><dd><a href="${path("runs", t.run_id, "fixed")}${query({ prompt: t.prompt, seed: t.seed })}">drawn under every checkpoint</a></dd>
    </dl>
    <table id="reward-terms"><thead><tr><th>term</th><th>value</th><th>weight</th><th>source</th></tr></thead><tbody>
      ${rewards.map((r) => html`<tr data-term="${r.reward_name}"><td>${r.reward_name}</td><td class="value">${num(r.value)}</td><td>${num(r.weight)}</td><td class="mono">${r.source ?? "–"}</td></tr>`)}
    </tbody></table>
    <h2>x_T → x_0</h2>
    ${
      rows === 0
        ? html`<p class="empty">No latents were recorded for this trajectory.</p>`
        : html`<div class="strip" id="strip">${steps.map(
            (k) =>
              html`<figure>${stepImage(t, k, label(k))}<figcaption>${label(k)}${
                k > 0 ? html`<br><span class="muted">log p ${num(t.log_probs[k - 1])}</span>` : ""
              }</figcaption></figure>`,
          )}</div>`
    }`,
  );
}

// ---- trajectory browser

export interface BrowserQuery {
  prompt?: string;
  epoch?: number;
  sort: "sample" | "reward" | "advantage";
  descending: boolean;
  limit: number;
  offset: number;
}

export function trajectoriesPage(
  run: Run,
  prompts: Array<{ prompt: string; trajectories: number }>,
  q: BrowserQuery,
  results: TrajectorySummary[],
): string {
  const base = { prompt: q.prompt, epoch: q.epoch, sort: q.sort, order: q.descending ? "desc" : "asc", limit: q.limit };
  const option = (value: string, label: string, selected: boolean) =>
    html`<option value="${value}"${selected ? new Html(" selected") : ""}>${label}</option>`;
  return page(
    `${runTitle(run)} trajectories`,
    html`<h1><a href="${path("runs", run.id)}">${runTitle(run)}</a> · trajectories</h1>
    <form class="filters" method="get" id="filters">
      <label>prompt <select name="prompt"><option value="">all</option>${prompts.map((p) =>
        option(p.prompt, `${p.prompt} (${p.trajectories})`, p.prompt === q.prompt),
      )}</select></label>
      <label>epoch <input name="epoch" inputmode="numeric" size="4" value="${q.epoch ?? ""}"></label>
      <label>sort by <select name="sort">${option("sample", "epoch, sample", q.sort === "sample")}${option("reward", "reward", q.sort === "reward")}${option("advantage", "advantage", q.sort === "advantage")}</select></label>
      <label>order <select name="order">${option("desc", "descending", q.descending)}${option("asc", "ascending", !q.descending)}</select></label>
      <input type="hidden" name="limit" value="${q.limit}">
      <button type="submit">show</button>
    </form>
    ${results.length === 0 ? html`<p class="empty">No trajectories match.</p>` : ""}
    <table id="trajectories"><thead><tr><th>x_0</th><th>epoch</th><th>sample</th><th>prompt</th><th>seed</th><th>reward</th><th>advantage</th></tr></thead><tbody>
    ${results.map(
      (t) => html`<tr data-epoch="${t.epoch}" data-sample="${t.sample_index}">
        <td><a href="${trajectoryHref(t)}">${stepImage(t, "last", t.prompt)}</a></td><td>${t.epoch}</td>
        <td><a href="${trajectoryHref(t)}">${t.sample_index}</a></td><td class="prompt">${t.prompt}</td><td class="seed">${t.seed}</td>
        <td class="reward">${num(t.reward)}</td><td class="advantage">${num(t.advantage)}</td></tr>`,
    )}</tbody></table>
    <p class="links">${q.offset > 0 ? html`<a rel="prev" href="${query({ ...base, offset: Math.max(0, q.offset - q.limit) })}">← previous ${q.limit}</a>` : ""}
    ${results.length === q.limit ? html`<a rel="next" href="${query({ ...base, offset: q.offset + q.limit })}">next ${q.limit} →</a>` : ""}</p>`,
  );
}

// ---- lineage

export function lineagePage(
  run: Run,
  chain: Array<Checkpoint & { depth: number; best_of_run_by: string | null }>,
): string {
  // The guard's best: this run's (its starting checkpoint may be it), or another run's in the chain.
  const bestBy = (c: (typeof chain)[number]) =>
    c.id === run.best_checkpoint_id ? (run.best_metric ?? "") : c.best_of_run_by;
  const nodes = chain.map(
    (c, i) => html`${i > 0 ? html`<div class="edge">↑ parent of the one above</div>` : ""}
    <div class="node node-${c.kind}${bestBy(c) === null ? "" : " node-best"}" data-checkpoint="${c.id}" data-depth="${c.depth}">
      <div><strong>${c.kind}</strong>${c.epoch === null ? "" : ` · epoch ${c.epoch}`}${
        c.run_id && c.run_id !== run.id
          ? html` · run <a href="${path("runs", c.run_id)}">${c.run_id.slice(0, 8)}</a>`
          : ""
      }${
        bestBy(c) === null
          ? ""
          : html` <span class="best" data-metric="${bestBy(c)}">best evaluated${c.id === run.best_checkpoint_id ? " of this run" : " of its run"} by ${bestBy(c)}</span>`
      }</div>
      <div class="mono">${c.id}</div>
      <div class="muted mono">sha256 ${c.sha256.slice(0, 16)}… · ${num(c.size_bytes / 2 ** 20)} MiB · ${when(c.created_at)}</div>
      <div class="muted mono">${c.location}</div>
    </div>`,
  );
  return page(
    `${runTitle(run)} lineage`,
    html`<h1><a href="${path("runs", run.id)}">${runTitle(run)}</a> · lineage</h1>
    <p>From the run's newest checkpoint back to the base model (${chain.length} checkpoints).</p>
    ${chain.length === 0 ? html`<p class="empty">This run has no checkpoint yet.</p>` : ""}
    <div class="lineage" id="lineage">${nodes}</div>`,
  );
}

// ---- compare, series

export function comparePage(runs: Run[], chosen: Array<{ run: Run; epochs: RunRewardByEpoch[] }>): string {
  const options = (selected: string | undefined) =>
    runs.map(
      (r) =>
        html`<option value="${r.id}"${r.id === selected ? new Html(" selected") : ""}>${runTitle(r)} (${r.id.slice(0, 8)})</option>`,
    );
  const [a, b] = chosen;
  const epochs = [...new Set(chosen.flatMap((c) => c.epochs.map((e) => e.epoch)))].sort((x, y) => x - y);
  const at = (c: { epochs: RunRewardByEpoch[] } | undefined, epoch: number) => c?.epochs.find((e) => e.epoch === epoch);
  return page(
    "compare",
    html`<h1>Compare runs</h1>
    <form class="compare" method="get"><label>run <select name="a">${options(a?.run.id)}</select></label>
      <label>with <select name="b">${options(b?.run.id)}</select></label> <button type="submit">compare</button></form>
    ${
      a && b
        ? html`<section class="charts">
        <div class="chart" data-chart="compare-reward" data-title="reward mean per epoch"></div>
        <div class="chart" data-chart="compare-approx_kl" data-title="approx_kl"></div>
        <div class="chart" data-chart="compare-loss" data-title="loss"></div>
        <div class="chart" data-chart="compare-seconds" data-title="seconds per epoch"></div></section>
      <table id="compare"><thead><tr><th>epoch</th><th>${runTitle(a.run)} reward</th><th>${runTitle(b.run)} reward</th><th>difference</th></tr></thead><tbody>
      ${epochs.map((e) => {
        const x = at(a, e)?.reward_mean ?? null;
        const y = at(b, e)?.reward_mean ?? null;
        return html`<tr data-epoch="${e}"><td>${e}</td><td class="a">${num(x)}</td><td class="b">${num(y)}</td><td class="diff">${num(x !== null && y !== null ? y - x : null)}</td></tr>`;
      })}</tbody></table>`
        : html`<p class="empty">Choose two runs.</p>`
    }`,
    {
      data: {
        kind: "compare",
        runs: chosen.map((c) => ({ runId: c.run.id, name: runTitle(c.run), epochs: c.epochs })),
      },
    },
  );
}

export function seriesPage(runs: Run[], prompt: string, seed: number | undefined, found: TrajectorySummary[]): string {
  const byRun = Map.groupBy(found, (t) => t.run_id);
  return page(
    `${prompt} across epochs`,
    html`<h1>“${prompt}”${seed === undefined ? "" : html` · seed ${seed}`} across epochs</h1>
    <p class="muted">Every recorded trajectory of this prompt${seed === undefined ? "" : " and seed"}, one row per run, epochs left to right.
    A run draws new seeds every epoch; runs with the same config seed draw the same prompts and seeds, so compare two such runs to see one prompt and seed side by side.</p>
    ${found.length === 0 ? html`<p class="empty">No trajectory matches.</p>` : ""}
    ${runs.map(
      (r) => html`<h2><a href="${path("runs", r.id)}">${runTitle(r)}</a></h2>
      <div class="series-row" data-run="${r.id}">${(byRun.get(r.id) ?? []).map((t) =>
        sampleCard(t, html` <span class="muted">epoch ${t.epoch}</span>`),
      )}</div>`,
    )}`,
  );
}

export interface FixedSeedCell {
  epoch: number;
  checkpoint: Checkpoint;
  preview?: Preview;
  error?: string;
}

export function fixedSeedPage(run: Run, prompt: string, seed: number, cells: FixedSeedCell[]): string {
  return page(
    `${prompt} · seed ${seed} under each checkpoint`,
    html`<h1><a href="${path("runs", run.id)}">${runTitle(run)}</a> · “${prompt}”, seed ${seed}, under each checkpoint</h1>
    <p class="muted">Drawn again now by the Sampler with the run's steps, guidance and eta, one column per checkpoint
    (epoch 0 is the base model; the checkpoint of epoch N samples epoch N+1), and scored by the run's reward terms.</p>
    <section class="grid" id="fixed">${cells.map(
      (c) => html`<figure class="card" data-epoch="${c.epoch}" data-checkpoint="${c.checkpoint.id}">
        ${
          c.preview
            ? html`<img class="sample" src="${path("runs", run.id, "fixed", `${c.epoch}.png`)}${query({ prompt, seed })}" alt="${prompt}, epoch ${c.epoch}">`
            : html`<p class="error-text">${c.error ?? ""}</p>`
        }
        <figcaption><span>${c.epoch === 0 ? "base" : `after epoch ${c.epoch}`}</span>
          <span class="prompt">${prompt}</span><span>seed <span class="seed">${seed}</span></span>
          <span>reward <span class="reward">${num(c.preview?.reward)}</span></span>
          ${(c.preview?.terms ?? []).map((t) => html`<span class="muted" data-term="${t.name}">${t.name} <span class="value">${num(t.value)}</span></span>`)}
        </figcaption></figure>`,
    )}</section>`,
  );
}

export function errorPage(statusCode: number, title: string, message: string): string {
  return page(
    title,
    html`<div class="error-page" data-status="${statusCode}"><h1>${title}</h1><p id="error-message">${message}</p>
    <p><a href="/">back to the runs</a></p></div>`,
  );
}
