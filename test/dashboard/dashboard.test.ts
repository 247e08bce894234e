// The dashboard in a real headless browser (Debian's chromium driven by playwright-core) against a
// real database holding real tiny runs made by the four services: every page's numbers equal the
// SQL views' (to the four significant digits shown), run -> epoch -> trajectory by clicks, a live
// run's page updating itself, images decoded back to the rewards they were scored with, and bad
// input (unknown ids, malformed parameters, path traversal, a token, a database that goes away).
// DASHBOARD_SCREENSHOTS=docs/dashboard writes each page's screenshot there (the README's).
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, rmSync, symlinkSync } from "node:fs";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import sharp from "sharp";
import { startDashboard } from "../../services/dashboard/server.ts";
import { EmbeddedPostgresServer } from "../../services/lib/db/embedded.ts";
import {
  createRun,
  getLatentBlob,
  getRun,
  getTrajectory,
  listEpochs,
  listRewards,
  recordEvaluation,
  registerCheckpoint,
  rewardByEpoch,
  setRunBest,
} from "../../services/lib/db/queries.ts";
import { latentsFromBlob } from "../../services/lib/db/recorder.ts";
import type { Run, RunRewardByEpoch } from "../../services/lib/db/schema.ts";
import { CONTENT_ALIGNMENT, CONTENT_TOP1 } from "../../services/lib/ddpo/evaluation.ts";
import { DDPO_DEFAULTS } from "../../services/lib/ddpo/trainer.ts";
import { toUint8Images } from "../../services/lib/diffusion/sampler.ts";
import { rewardByName } from "../../services/lib/rewards/index.ts";
import { runSettingsJson } from "../../services/lib/runs/run-messages.ts";
import { readAnnouncement, waitFor } from "../services/cluster.ts";
import { startTinyCluster, TINY_RUN_REWARDS, type TinyCluster } from "./tiny-run.ts";

const ROOT = new URL("../../", import.meta.url).pathname;
const SCREENSHOTS = process.env.DASHBOARD_SCREENSHOTS;

let cluster: TinyCluster;
let dashboard: { url: string; proc: ReturnType<typeof Bun.spawn> };
let browser: Browser;
let page: Page;
let runA: Run;
let runB: Run;
/** Page errors, console errors and requests that left the dashboard's origin. */
const problems: string[] = [];

async function finish(runId: string): Promise<Run> {
  return waitFor(`run ${runId} to finish`, async () => {
    const run = await getRun(cluster.database.db, runId);
    if (run?.status === "failed") throw new Error(`run failed: ${run.error}`);
    return run?.status === "finished" ? run : undefined;
  });
}

async function spawnDashboard(env: Record<string, string>, args: string[]) {
  const proc = Bun.spawn(
    [process.execPath, "run", "services/dashboard/main.ts", "--address", "127.0.0.1:0", "--poll-ms", "200", ...args],
    {
      cwd: ROOT,
      env: { ...process.env, ...env },
      stdin: "ignore",
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const { address } = await readAnnouncement(proc, "dashboard", 30_000);
  return { url: `http://${address}`, proc };
}

/** Waits until every image the selector matches has loaded (at this natural width, when given). */
async function imagesDecoded(selector: string, width = 0): Promise<void> {
  await waitFor(
    `${selector} to decode`,
    async () => {
      const decoded = await page.locator(selector).evaluateAll(
        (els, w) =>
          els.every((e) => {
            const img = e as unknown as { complete: boolean; naturalWidth: number };
            return img.complete && (w ? img.naturalWidth === w : img.naturalWidth > 0);
          }),
        width,
      );
      return decoded ? true : undefined;
    },
    10_000,
  );
}

async function shot(name: string): Promise<void> {
  if (!SCREENSHOTS) return;
  mkdirSync(SCREENSHOTS, { recursive: true });
  await page.screenshot({ path: join(SCREENSHOTS, `${name}.png`), fullPage: true });
}

/** A number as the pages show it (four significant digits) equals the database's value. */
function expectShown(text: string | null, value: number | null): void {
  if (value === null) {
    expect(text).toBe("–");
    return;
  }
  const shown = Number(text);
  expect(Number.isFinite(shown)).toBe(true);
  expect(Math.abs(shown - value)).toBeLessThanOrEqual(Math.abs(value) * 5e-4 + 1e-300);
}

const cellText = (row: import("playwright-core").Locator, cls: string) => row.locator(`.${cls}`).textContent();

async function expectEpochTable(runId: string, rows: RunRewardByEpoch[]): Promise<void> {
  const shown = page.locator("#epochs tbody tr");
  await expect(shown.count()).resolves.toBe(rows.length);
  for (const [i, e] of rows.entries()) {
    const row = shown.nth(i);
    expect(await row.getAttribute("data-epoch")).toBe(String(e.epoch));
    expect(Number(await cellText(row, "trajectories"))).toBe(e.trajectories);
    for (const k of [
      "reward_mean",
      "reward_std",
      "reward_min",
      "reward_max",
      "loss",
      "approx_kl",
      "clip_fraction",
    ] as const) {
      expectShown(await cellText(row, k), e[k]);
    }
    for (const k of ["sampling_s", "reward_s", "training_s", "seconds"] as const) {
      expect(Math.abs(Number((await cellText(row, k))!.replace(" s", "")) - e[k]!)).toBeLessThanOrEqual(0.005 + 1e-9);
    }
  }
  expect(runId).toBeTruthy();
}

beforeAll(async () => {
  cluster = await startTinyCluster();
  // Two optimizer steps per epoch, so approx_kl and the clip fraction move (the first step's ratio is 1).
  runA = await finish(await cluster.startRun("dashboard a", 3, { gradientAccumulation: 1, lr: 3e-3 }));
  // Same config seed: run B draws the same prompts and seeds per epoch as run A; a larger learning
  // rate makes its policy, and so its samples from epoch 2 on, differ.
  runB = await finish(await cluster.startRun("dashboard b", 2, { gradientAccumulation: 1, lr: 3e-2 }));
  dashboard = await spawnDashboard({ DATABASE_URL: cluster.database.url }, [
    "--sampler",
    cluster.sampler.address,
    "--rewarder",
    cluster.rewarder.address,
    "--trainer",
    cluster.trainer.address,
  ]);
  browser = await chromium.launch({ executablePath: "/usr/bin/chromium", args: ["--no-sandbox"] });
  page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error") problems.push(`console: ${m.text()} at ${page.url()}`);
  });
  page.on("request", (r) => {
    if (!r.url().startsWith(dashboard.url) && !r.url().startsWith("data:")) problems.push(`request to ${r.url()}`);
  });
}, 180_000);

afterAll(async () => {
  await browser?.close();
  dashboard?.proc.kill("SIGKILL");
  await cluster?.stop();
});

describe("pages against a finished run", () => {
  test("runs: status, epochs, last reward, started, config", async () => {
    await page.goto(dashboard.url);
    for (const run of [runA, runB]) {
      const row = page.locator(`#runs tr[data-run="${run.id}"]`);
      const epochs = await rewardByEpoch(cluster.database.db, run.id);
      expect(await row.locator(".status").textContent()).toBe("finished");
      expect(await cellText(row, "epochs")).toBe(`${epochs.length} / ${epochs.length}`);
      expectShown(await cellText(row, "reward"), epochs.at(-1)!.epoch_reward_mean);
      expect(await row.locator("pre").textContent()).toContain('"samplerEndpoints"');
    }
    await shot("runs");
  });

  test("a run: the epochs table equals run_reward_by_epoch, terms equal the rewards rows, six charts drawn", async () => {
    await page.goto(`${dashboard.url}/runs/${runA.id}`);
    const rows = await rewardByEpoch(cluster.database.db, runA.id);
    await expectEpochTable(runA.id, rows);
    // Per reward term, computed here from the raw rows.
    const { rows: raw } = await cluster.database.pool.query(
      "select epoch, reward_name, value, weight from rewards where run_id = $1",
      [runA.id],
    );
    const shownTerms = page.locator("#terms tbody tr");
    expect(await shownTerms.count()).toBe(rows.length * TINY_RUN_REWARDS.length);
    for (const e of rows) {
      for (const term of TINY_RUN_REWARDS) {
        const values = raw
          .filter((r) => r.epoch === e.epoch && r.reward_name === term.rewardName)
          .map((r) => r.value as number);
        const mean = values.reduce((a, b) => a + b, 0) / values.length;
        const std = Math.sqrt(values.reduce((a, b) => a + (b - mean) ** 2, 0) / values.length);
        const row = page.locator(`#terms tr[data-epoch="${e.epoch}"][data-term="${term.rewardName}"]`);
        expectShown(await cellText(row, "mean"), mean);
        expectShown(await cellText(row, "std"), std);
        expectShown(await cellText(row, "weight"), term.weight);
      }
    }
    await page.waitForSelector("body[data-ready=true]");
    expect(await page.locator(".chart canvas").count()).toBe(6);
    for (const chart of await page.locator(".chart:not([hidden])").all())
      expect(await chart.getAttribute("data-points")).toBe(String(rows.length));
    // No KL penalty, no held-out evaluation: neither is shown.
    expect(await page.locator('.chart[data-chart="kl_to_reference"]').isHidden()).toBe(true);
    expect(await page.locator("#evaluation").isHidden()).toBe(true);
    await shot("run");
  });

  test("click through run -> epoch -> trajectory; the x_0 PNG scores back to the recorded rewards", async () => {
    await page.goto(dashboard.url);
    await page.click(`#runs tr[data-run="${runA.id}"] a`);
    await page.click('#epochs tr[data-epoch="2"] a');
    expect(new URL(page.url()).pathname).toBe(`/runs/${runA.id}/epochs/2`);
    const { rows: samples } = await cluster.database.pool.query(
      "select sample_index, prompt, seed, reward, advantage from trajectories where run_id = $1 and epoch = 2 order by sample_index",
      [runA.id],
    );
    const cards = page.locator("#samples .card");
    expect(await cards.count()).toBe(samples.length);
    for (const [i, s] of samples.entries()) {
      const card = cards.nth(i);
      expect(await card.locator(".prompt").textContent()).toBe(s.prompt);
      expect(Number(await card.locator(".seed").textContent())).toBe(Number(s.seed));
      expectShown(await card.locator(".reward").textContent(), s.reward);
    }
    await imagesDecoded("img");
    await shot("epoch");

    await cards.nth(1).locator("a").first().click();
    expect(new URL(page.url()).pathname).toBe(`/runs/${runA.id}/trajectories/2/1`);
    const s = samples[1]!;
    expect(await page.locator("#trajectory .prompt").textContent()).toBe(s.prompt);
    expect(Number(await page.locator("#trajectory .seed").textContent())).toBe(Number(s.seed));
    expectShown(await page.locator("#trajectory .reward").textContent(), s.reward);
    expectShown(await page.locator("#trajectory .advantage").textContent(), s.advantage);
    const terms = await listRewards(cluster.database.db, { runId: runA.id, epoch: 2, sampleIndex: 1 });
    for (const t of terms)
      expectShown(await page.locator(`#reward-terms tr[data-term="${t.reward_name}"] .value`).textContent(), t.value);
    // x_T, then one image per DDIM step (TINY_RUN_CONFIG: 3 steps), all decoded.
    const strip = page.locator("#strip img");
    expect(await strip.count()).toBe(4);
    await imagesDecoded("#strip img", 32);
    await shot("trajectory");

    // Each served step is that row of the whole recorded blob, converted as the Sampler converts x_0.
    const trajectory = await getTrajectory(cluster.database.db, { runId: runA.id, epoch: 2, sampleIndex: 1 });
    const blob = await getLatentBlob(cluster.database.db, trajectory!.latents_sha256!);
    const latents = latentsFromBlob(blob!);
    const per = 3 * 32 * 32;
    for (let step = 0; step < 4; step++) {
      const served = await fetch(`${dashboard.url}/runs/${runA.id}/trajectories/2/1/steps/${step}.png`);
      const rgb = await sharp(Buffer.from(await served.arrayBuffer()))
        .removeAlpha()
        .raw()
        .toBuffer();
      expect([...rgb]).toEqual([...toUint8Images(latents.subarray(step * per, (step + 1) * per), 1, 3, 32)]);
    }

    // The served x_0, scored again here, gives the values the Rewarder recorded for this sample.
    const png = await fetch(`${dashboard.url}/runs/${runA.id}/trajectories/2/1/steps/last.png`);
    expect(png.headers.get("content-type")).toBe("image/png");
    const { data, info } = await sharp(Buffer.from(await png.arrayBuffer()))
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([32, 32, 3]);
    for (const t of terms) {
      const [score] = await rewardByName(t.reward_name).score(new Uint8Array(data), { width: 32, height: 32 }, [
        s.prompt,
      ]);
      expect(Math.abs(score! - t.value)).toBeLessThan(1e-9);
    }
  });

  test("trajectory browser: filter by prompt, sort by reward or advantage", async () => {
    const { rows: prompts } = await cluster.database.pool.query(
      "select prompt, count(*)::int as n from trajectories where run_id = $1 group by prompt order by n desc, prompt limit 1",
      [runA.id],
    );
    const { prompt, n } = prompts[0]!;
    await page.goto(`${dashboard.url}/runs/${runA.id}/trajectories`);
    await page.selectOption('select[name="prompt"]', prompt);
    await page.selectOption('select[name="sort"]', "reward");
    await page.selectOption('select[name="order"]', "desc");
    await Promise.all([page.waitForURL(/prompt=/), page.click("#filters button")]);
    const rewards = async () =>
      Promise.all(
        (await page.locator("#trajectories tbody tr").all()).map(async (r) => Number(await cellText(r, "reward"))),
      );
    expect(await page.locator("#trajectories tbody tr").count()).toBe(n);
    for (const p of await page.locator("#trajectories .prompt").allTextContents()) expect(p).toBe(prompt);
    expect(await rewards()).toEqual([...(await rewards())].sort((a, b) => b - a));
    // Back to every prompt (the form keeps the sort): all 12, by reward, highest first.
    await page.selectOption('select[name="prompt"]', "");
    await Promise.all([page.waitForURL(/prompt=&/), page.click("#filters button")]);
    const byReward = await rewards();
    expect(byReward.length).toBe(12);
    expect(byReward).toEqual([...byReward].sort((a, b) => b - a));
    expect(new Set(await page.locator("#trajectories .prompt").allTextContents()).size).toBeGreaterThan(1);
    await shot("trajectories");

    await page.goto(`${dashboard.url}/runs/${runA.id}/trajectories?sort=advantage&order=asc`);
    const advantages = await Promise.all(
      (await page.locator("#trajectories tbody tr").all()).map(async (r) => Number(await cellText(r, "advantage"))),
    );
    expect(advantages.length).toBe(12);
    expect(advantages).toEqual([...advantages].sort((a, b) => a - b));
    // Open one from the browser.
    await page.locator("#trajectories tbody tr").first().locator("a").first().click();
    await expect(page.locator("#strip img").count()).resolves.toBe(4);
  });

  test("lineage: the chain of checkpoint_ancestry from the run's last checkpoint to the base", async () => {
    await page.goto(`${dashboard.url}/runs/${runA.id}/lineage`);
    const { rows } = await cluster.database.pool.query(
      "select ancestor_id, ancestor_kind from checkpoint_ancestry where checkpoint_id = $1 order by depth",
      [`${runA.id}/epoch-3`],
    );
    const nodes = page.locator("#lineage .node");
    expect(await nodes.evaluateAll((els) => els.map((e) => e.getAttribute("data-checkpoint")))).toEqual(
      rows.map((r) => r.ancestor_id),
    );
    expect(rows.at(-1)!.ancestor_kind).toBe("base");
    expect(rows.length).toBe(4);
    await shot("lineage");
  });

  test("compare two runs' curves; the same prompt and seed side by side across runs", async () => {
    await page.goto(dashboard.url);
    await page.selectOption('form.compare select[name="a"]', runA.id);
    await page.selectOption('form.compare select[name="b"]', runB.id);
    await Promise.all([page.waitForURL(/compare\?/), page.click("form.compare button")]);
    const [a, b] = await Promise.all([
      rewardByEpoch(cluster.database.db, runA.id),
      rewardByEpoch(cluster.database.db, runB.id),
    ]);
    const rows = page.locator("#compare tbody tr");
    expect(await rows.count()).toBe(3);
    for (const [i, e] of a.entries()) {
      expectShown(await cellText(rows.nth(i), "a"), e.reward_mean);
      expectShown(await cellText(rows.nth(i), "b"), b[i]?.reward_mean ?? null);
    }
    await page.waitForSelector("body[data-ready=true]");
    expect(await page.locator(".chart canvas").count()).toBe(4);
    await shot("compare");

    // Epoch 1 of both runs: same prompts and seeds, both sampled by the base model.
    const { rows: first } = await cluster.database.pool.query(
      "select prompt, seed, reward from trajectories where run_id = $1 and epoch = 1 and sample_index = 0",
      [runA.id],
    );
    const { prompt, seed, reward } = first[0]!;
    await page.goto(
      `${dashboard.url}/series?run=${runA.id}&run=${runB.id}&prompt=${encodeURIComponent(prompt)}&seed=${seed}`,
    );
    for (const run of [runA, runB]) {
      const cards = page.locator(`.series-row[data-run="${run.id}"] .card`);
      expect(await cards.count()).toBeGreaterThanOrEqual(1);
      const first = cards.first();
      expect(await first.getAttribute("data-epoch")).toBe("1");
      expect(Number(await first.locator(".seed").textContent())).toBe(Number(seed));
      expectShown(await first.locator(".reward").textContent(), reward);
    }
    await imagesDecoded("img");
    await shot("series");
    // One prompt across a run's epochs: every recorded sample of it.
    await page.goto(`${dashboard.url}/runs/${runA.id}/epochs/1`);
    await page.locator("#samples .card").first().locator("a.series").click();
    const { rows: all } = await cluster.database.pool.query(
      "select count(*)::int as n from trajectories where run_id = $1 and prompt = $2",
      [runA.id, prompt],
    );
    expect(await page.locator(`.series-row .card`).count()).toBe(all[0]!.n);
  });
});

describe("one prompt and seed under every checkpoint", () => {
  test("drawn by the Sampler: the base's image is the recorded epoch-1 sample, every reward re-scores", async () => {
    await page.goto(`${dashboard.url}/runs/${runA.id}/epochs/1`);
    await page.locator("#samples .card").first().locator("a.fixed").click();
    const { rows } = await cluster.database.pool.query(
      "select prompt, seed, reward from trajectories where run_id = $1 and epoch = 1 and sample_index = 0",
      [runA.id],
    );
    const recorded = rows[0]!;
    const cards = page.locator("#fixed .card");
    // The base (epoch 0) and the three epochs' checkpoints.
    expect(await cards.evaluateAll((els) => els.map((e) => e.getAttribute("data-epoch")))).toEqual([
      "0",
      "1",
      "2",
      "3",
    ]);
    await imagesDecoded("#fixed img", 32);
    await shot("fixed-seed");
    const pixels = async (url: string) => {
      const png = Buffer.from(await (await fetch(url)).arrayBuffer());
      return new Uint8Array(await sharp(png).removeAlpha().raw().toBuffer());
    };
    const srcs = await page.locator("#fixed img").evaluateAll((els) => els.map((e) => e.getAttribute("src")!));
    // Epoch 1 was sampled by the base with this prompt and seed: the same image (the Sampler batches
    // differently now, so allow a rounding step per pixel).
    const drawn = await pixels(`${dashboard.url}${srcs[0]}`);
    const stored = await pixels(`${dashboard.url}/runs/${runA.id}/trajectories/1/0/steps/last.png`);
    expect(drawn.length).toBe(stored.length);
    expect(drawn.every((v, i) => Math.abs(v - stored[i]!) <= 1)).toBe(true);
    expectShown(await cards.first().locator(".reward").textContent(), recorded.reward);
    for (const [i, src] of srcs.entries()) {
      const image = await pixels(`${dashboard.url}${src}`);
      let reward = 0;
      for (const term of TINY_RUN_REWARDS) {
        const [score] = await rewardByName(term.rewardName).score(image, { width: 32, height: 32 }, [recorded.prompt]);
        reward += term.weight * score!;
      }
      expectShown(await cards.nth(i).locator(".reward").textContent(), reward);
    }
  });
});

describe("a live run", () => {
  test("the run page updates itself epoch by epoch until the run finishes", async () => {
    const runId = await cluster.startRun("dashboard live", 3);
    await page.goto(`${dashboard.url}/runs/${runId}`);
    await page.evaluate("window.notReloaded = true");
    const initial = await page.locator("#epochs tbody tr").count();
    expect(initial).toBeLessThan(3);
    const noteAtStart = await page.locator("#lineage-note").count();
    console.log(`live page opened after ${initial} epochs, lineage note shown: ${noteAtStart}`);
    if (initial === 0) expect(noteAtStart).toBe(1);
    await page.locator("#epochs tbody tr").first().waitFor({ timeout: 60_000 });
    await shot("run-live");
    await page.locator("#run-status", { hasText: /^finished$/ }).waitFor({ timeout: 60_000 });
    expect(await page.evaluate("window.notReloaded")).toBe(true);
    expect(Number(await page.locator("body").getAttribute("data-live-updates"))).toBeGreaterThanOrEqual(2);
    // The Trainer's WatchRun progress (per sample while sampling) reached the page too.
    expect(Number(await page.locator("body").getAttribute("data-progress-events"))).toBeGreaterThan(0);
    await expectEpochTable(runId, await rewardByEpoch(cluster.database.db, runId));
    expect(await page.locator("#live-indicator").count()).toBe(0);
    expect(await page.locator("#epochs-done").textContent()).toBe("3");
    // The lineage link no longer says the run has no checkpoint (it had none when opened, if no
    // epoch had ended yet).
    expect(await page.locator("a", { hasText: /^lineage/ }).textContent()).toBe("lineage");
  }, 90_000);
});

describe("the over-optimisation guard on a live run's page", () => {
  test("KL to the reference and the held-out evaluations: charts, marks and table equal the database's", async () => {
    // A KL penalty, an evaluation of two held-out prompts x one seed before training and after
    // every epoch, the best policy by jpeg_compressibility, and a stop rule that large steps break:
    // the content check's alignment may not fall by 10% of its start's magnitude.
    const stopFraction = 0.9;
    const runId = await cluster.startRun("dashboard guard", 5, {
      gradientAccumulation: 1,
      lr: 3e-2,
      klCoefficient: 0.1,
      evaluation: {
        prompts: ["tea cup", "red apple"],
        seeds: [5n],
        every: 1,
        bestMetric: "jpeg_compressibility",
        stopMetric: CONTENT_ALIGNMENT,
        stopFraction,
      },
    });
    await page.goto(`${dashboard.url}/runs/${runId}`);
    await page.evaluate("window.notReloaded = true");
    // Opened before the first evaluations are in: the rest arrive through the page's stream.
    expect(await page.locator("#evaluations tbody tr").count()).toBeLessThan(3);
    await page.locator("#run-status", { hasText: /^(finished|stopped|failed)$/ }).waitFor({ timeout: 90_000 });
    expect(await page.evaluate("window.notReloaded")).toBe(true);
    expect(Number(await page.locator("body").getAttribute("data-live-updates"))).toBeGreaterThanOrEqual(2);
    expect(await page.locator("#live-indicator").count()).toBe(0);
    const db = cluster.database.db;
    const run = (await getRun(db, runId))!;
    const epochs = await listEpochs(db, runId);

    // The expected marks, from the raw scores: per evaluated epoch and metric the mean.
    const { rows: scores } = await cluster.database.pool.query(
      "select epoch, metric, value from evaluation_scores where run_id = $1",
      [runId],
    );
    const evaluated = [...new Set(scores.map((r) => r.epoch as number))].sort((a, b) => a - b);
    const metrics = [...new Set(scores.map((r) => r.metric as string))].sort();
    expect(metrics).toEqual(["brightness", CONTENT_ALIGNMENT, CONTENT_TOP1, "jpeg_compressibility"]);
    const mean = (epoch: number, metric: string) => {
      const v = scores.filter((r) => r.epoch === epoch && r.metric === metric).map((r) => r.value as number);
      expect(v.length).toBe(2);
      return v.reduce((a, b) => a + b, 0) / v.length;
    };
    const start = mean(0, CONTENT_ALIGNMENT);
    const stopEpoch = evaluated.find(
      (e) => e > 0 && mean(e, CONTENT_ALIGNMENT) < start - (1 - stopFraction) * Math.abs(start),
    );
    const jpeg = evaluated.map((e) => mean(e, "jpeg_compressibility"));
    const bestEpoch = evaluated[jpeg.indexOf(Math.max(...jpeg))]!;
    console.log(
      `guard run: ${run.status}; alignment ${evaluated.map((e) => mean(e, CONTENT_ALIGNMENT).toFixed(5)).join(", ")}; ` +
        `jpeg ${jpeg.map((j) => j.toFixed(4)).join(", ")}; kl ${epochs.map((e) => e.kl_to_reference).join(", ")}`,
    );
    // The same seeds give the same figures every time: this rule stops the run before its budget
    // (after epoch 2 here: alignment -0.1127, -0.1183, -0.1768 against a threshold of -0.124).
    expect(stopEpoch).toBeDefined();
    expect(run.status).toBe("stopped");
    expect(evaluated).toEqual(Array.from({ length: stopEpoch! + 1 }, (_, i) => i));
    expect(epochs.map((e) => e.epoch)).toEqual(evaluated.slice(1));

    // Stated next to the charts, and drawn on them.
    expect(await page.locator("#early-stop").getAttribute("data-epoch")).toBe(String(stopEpoch));
    expect(await page.locator("#early-stop").textContent()).toContain(run.error!.replace(/^stopped early: /, ""));
    expect(await page.locator("#best-epoch").getAttribute("data-epoch")).toBe(String(bestEpoch));
    expect(await page.locator("#best-epoch").textContent()).toContain(run.best_checkpoint_id!);
    expect(await page.locator("#guard-settings").textContent()).toContain("2 prompts x 1 seed");

    // KL to the reference: one point per trained epoch, each measured; the column equals the rows.
    expect(epochs.every((e) => e.kl_to_reference !== null && e.kl_to_reference >= 0)).toBe(true);
    const klChart = page.locator('.chart[data-chart="kl_to_reference"]');
    expect(await klChart.isVisible()).toBe(true);
    expect(await klChart.getAttribute("data-points")).toBe(String(epochs.length));
    expect(await klChart.locator("canvas").count()).toBe(1);
    for (const e of epochs)
      expectShown(
        await page.locator(`#epochs tr[data-epoch="${e.epoch}"] .kl_to_reference`).textContent(),
        e.kl_to_reference,
      );

    // The evaluation charts: the content check's two metrics together, each reward alone; one
    // point per evaluated epoch, the best and the stop marked.
    const charts = page.locator("#evaluation-charts .chart");
    expect(await charts.evaluateAll((els) => els.map((e) => e.getAttribute("data-chart")))).toEqual([
      "evaluation:content",
      "evaluation:brightness",
      "evaluation:jpeg_compressibility",
    ]);
    expect(await charts.evaluateAll((els) => els.map((e) => e.getAttribute("data-lines")))).toEqual(["2", "1", "1"]);
    for (const chart of await charts.all()) {
      expect(await chart.getAttribute("data-points")).toBe(String(evaluated.length));
      expect(await chart.getAttribute("data-marks")).toBe(`best:${bestEpoch} early stop:${stopEpoch}`);
      expect(await chart.locator("canvas").count()).toBe(1);
    }

    // The table: one row per evaluated epoch, one mean per metric, as the raw scores give them.
    const rows = page.locator("#evaluations tbody tr");
    expect(await rows.evaluateAll((els) => els.map((e) => Number(e.getAttribute("data-epoch"))))).toEqual(evaluated);
    expect(await page.locator("#evaluations thead th").allTextContents()).toEqual(["epoch", ...metrics, "images", ""]);
    for (const e of evaluated) {
      const row = page.locator(`#evaluations tr[data-epoch="${e}"]`);
      for (const m of metrics) expectShown(await row.locator(`td[data-metric="${m}"]`).textContent(), mean(e, m));
      expect(await row.locator(".images").textContent()).toBe("2");
      const note = [e === bestEpoch ? "best" : "", e === stopEpoch ? "stopped early" : ""].filter(Boolean).join(", ");
      expect(await row.locator(".note").textContent()).toBe(note);
    }
    await shot("run-guard");

    // The page as served afresh (not through the stream) shows the same.
    await page.reload();
    await page.waitForSelector("body[data-ready=true]");
    expect(await page.locator("#evaluations tbody tr").count()).toBe(evaluated.length);
    expect(await page.locator("#evaluation-charts .chart canvas").count()).toBe(3);
    expect(await page.locator(".chart canvas").count()).toBe(10);

    // The lineage marks the best checkpoint, and only it.
    await page.goto(`${dashboard.url}/runs/${runId}/lineage`);
    expect(
      await page.locator("#lineage .node-best").evaluateAll((els) => els.map((e) => e.getAttribute("data-checkpoint"))),
    ).toEqual([run.best_checkpoint_id]);
    expect(await page.locator("#lineage .node-best .best").getAttribute("data-metric")).toBe("jpeg_compressibility");
  }, 120_000);

  test("the starting model as the best and a stop two evaluations later, from rows written as the Trainer writes them", async () => {
    // No training: a run record whose settings carry the rule, its evaluations chosen so that the
    // content check falls below half its start (0.5) only at epoch 2 (0.45, then 0.2) and the
    // reward is highest at the start (best: epoch 0, the starting checkpoint).
    const db = cluster.database.db;
    const base = await registerCheckpoint(db, {
      id: "guard-fixture/base",
      kind: "base",
      sha256: "0".repeat(64),
      size_bytes: 1,
      location: "/nowhere",
    });
    const evaluation = {
      prompts: ["tea cup", "red apple"],
      seeds: [7],
      every: 1,
      stopBelow: { metric: CONTENT_ALIGNMENT, fraction: 0.5 },
      bestBy: "jpeg_compressibility",
    };
    const config = runSettingsJson({
      ddpo: { ...DDPO_DEFAULTS, evaluation },
      baseModelDir: "/nowhere",
      epochs: 5,
      samplerEndpoints: [],
      runDir: "",
    });
    const runId = "guard-fixture";
    await createRun(db, { id: runId, name: runId, config, base_checkpoint_id: base.id, status: "stopped" });
    const alignment = [
      [0.6, 0.4],
      [0.5, 0.4],
      [0.3, 0.1],
    ];
    const jpeg = [
      [-1, -1.2],
      [-1.3, -1.1],
      [-1.6, -1.4],
    ];
    for (let epoch = 0; epoch < 3; epoch++) {
      await recordEvaluation(
        db,
        runId,
        epoch,
        evaluation.prompts.flatMap((prompt, i) => [
          { prompt, seed: 7, metric: CONTENT_ALIGNMENT, value: alignment[epoch]![i]! },
          { prompt, seed: 7, metric: "jpeg_compressibility", value: jpeg[epoch]![i]! },
        ]),
      );
    }
    await setRunBest(db, runId, base.id, "jpeg_compressibility");
    await page.goto(`${dashboard.url}/runs/${runId}`);
    await page.waitForSelector("body[data-ready=true]");
    expect(await page.locator("#best-epoch").getAttribute("data-epoch")).toBe("0");
    expect(await page.locator("#best-epoch").textContent()).toContain("the starting model");
    expect(await page.locator("#guard-settings").textContent()).toContain(
      "stops when content:clip_alignment falls below its start by more than 50% of the start's magnitude; best by jpeg_compressibility",
    );
    expect(await page.locator("#early-stop").getAttribute("data-epoch")).toBe("2");
    expect(await page.locator("#early-stop").textContent()).toContain(
      "content:clip_alignment fell to 0.200 at epoch 2, below 0.5 x its start 0.500",
    );
    expect(await page.locator('.chart[data-chart="kl_to_reference"]').isHidden()).toBe(true);
    const charts = page.locator("#evaluation-charts .chart");
    expect(await charts.evaluateAll((els) => els.map((e) => e.getAttribute("data-chart")))).toEqual([
      "evaluation:content",
      "evaluation:jpeg_compressibility",
    ]);
    for (const chart of await charts.all()) {
      expect(await chart.getAttribute("data-points")).toBe("3");
      expect(await chart.getAttribute("data-marks")).toBe("best:0 early stop:2");
    }
    expect(await page.locator("#evaluations tbody .note").allTextContents()).toEqual(["best", "", "stopped early"]);
    for (const [epoch, values] of jpeg.entries())
      expectShown(
        await page
          .locator(`#evaluations tr[data-epoch="${epoch}"] td[data-metric="jpeg_compressibility"]`)
          .textContent(),
        (values[0]! + values[1]!) / 2,
      );
    // The lineage (the run made no checkpoint: its start alone) marks the start as the best.
    await page.goto(`${dashboard.url}/runs/${runId}/lineage`);
    expect(
      await page.locator("#lineage .node-best").evaluateAll((els) => els.map((e) => e.getAttribute("data-checkpoint"))),
    ).toEqual([base.id]);
  });
});

describe("bad input", () => {
  const get = (p: string, init?: RequestInit) => fetch(`${dashboard.url}${p}`, { redirect: "manual", ...init });

  test("unknown ids and malformed parameters answer 404 / 400 pages naming the problem", async () => {
    const cases: Array<[string, number, string]> = [
      ["/runs/no-such-run", 404, "no run 'no-such-run'"],
      ["/runs/no-such-run/epochs/1", 404, "no run"],
      [`/runs/${runA.id}/epochs/abc`, 400, "'epoch' must be an integer"],
      [`/runs/${runA.id}/epochs/99`, 404, "has no epoch 99"],
      [`/runs/${runA.id}/epochs/-1`, 400, "'epoch'"],
      [`/runs/${runA.id}/trajectories?sort=bogus`, 400, "'sort' must be one of"],
      [`/runs/${runA.id}/trajectories?limit=-1`, 400, "'limit'"],
      [`/runs/${runA.id}/trajectories?epoch=1e3`, 400, "'epoch'"],
      [`/runs/${runA.id}/trajectories?offset=99999999999999999999`, 400, "'offset'"],
      [`/runs/${runA.id}/trajectories/1/999`, 404, "no trajectory 1/999"],
      [`/runs/${runA.id}/trajectories/1/0/steps/9.png`, 404, "steps 0 to 3"],
      [`/runs/${runA.id}/trajectories/1/0/steps/x.png`, 404, "Nothing is served"],
      ["/series?run=nope&prompt=x", 404, "no run"],
      [`/series?run=${runA.id}`, 400, "'prompt' is required"],
      [`/series?run=${runA.id}&prompt=x&seed=abc`, 400, "'seed'"],
      [`/compare?a=${runA.id}&b=nope`, 404, "no run 'nope'"],
      ["/runs/%E0%A4%A", 400, "percent-encoding"],
      ["/nothing/here", 404, "Nothing is served"],
      [`/runs/${runA.id}/fixed?prompt=cat`, 400, "'seed' is required"],
      [`/runs/${runA.id}/fixed?seed=1`, 400, "'prompt' is required"],
      [`/runs/${runA.id}/fixed/7.png?prompt=cat&seed=1`, 404, "no checkpoint drawn for epoch 7.png"],
    ];
    for (const [p, status, text] of cases) {
      const r = await get(p);
      const body = await r.text();
      expect({ p, status: r.status }).toEqual({ p, status });
      expect(body).toContain(text.replace(/'/g, "&#39;"));
    }
    expect((await get("/", { method: "POST" })).status).toBe(405);
    await page.goto(`${dashboard.url}/runs/no-such-run`);
    expect(await page.locator("#error-message").textContent()).toContain("There is no run 'no-such-run'.");
    await shot("not-found");
  });

  test("user text (a run's name, a prompt) is shown as text, never run as markup", async () => {
    const name = '<img src=x onerror="window.pwned=1"><script>window.pwned=2</script>';
    await createRun(cluster.database.db, { id: "xss", name });
    await page.goto(dashboard.url);
    expect(await page.locator('#runs tr[data-run="xss"] a').first().textContent()).toBe(name);
    await page.goto(`${dashboard.url}/series?run=xss&prompt=${encodeURIComponent("</script><b>x</b>")}`);
    expect(await page.locator("h1").textContent()).toContain("</script><b>x</b>");
    expect(await page.evaluate("window.pwned")).toBeUndefined();
  });

  test("no path traversal through the image routes", async () => {
    const runDir = (runA.config as { runDir: string }).runDir;
    const ok = await get(`/runs/${runA.id}/files/samples/epoch-0001.png`);
    expect(ok.status).toBe(200);
    expect(ok.headers.get("content-type")).toBe("image/png");
    // A link planted in the samples folder that points out of it is not followed.
    symlinkSync("/etc/passwd", join(runDir, "samples", "epoch-9999.png"));
    const attempts = [
      `/runs/${runA.id}/files/samples/..%2F..%2F..%2F..%2Fetc%2Fpasswd`,
      `/runs/${runA.id}/files/samples/%2Fetc%2Fpasswd`,
      `/runs/${runA.id}/files/samples/epoch-0001.png%00.txt`,
      `/runs/${runA.id}/files/samples/..%2Fcheckpoints%2Fepoch-0001%2Flora%2Fadapter_config.json`,
      `/runs/${runA.id}/files/..%2Fcheckpoints/epoch-0001`,
      `/runs/${runA.id}/files/samples/epoch-9999.png`,
      `/runs/..%2F..%2F..%2Fetc%2Fpasswd`,
      `/runs/${runA.id}/trajectories/..%2F..%2F/1/steps/last.png`,
      `/runs/${runA.id}/trajectories/1/0/steps/..%2F..%2F..%2Fpackage.json`,
      "/assets/..%2Fserver.ts",
      "/assets/%2E%2E/server.ts",
    ];
    for (const p of attempts) {
      const r = await get(p);
      const body = await r.text();
      expect({ p, status: r.status }).toEqual({ p, status: r.status >= 400 && r.status < 500 ? r.status : -1 });
      expect(body).not.toContain("root:");
      expect(body).not.toContain("startDashboard");
      expect(r.headers.get("content-type")).toStartWith("text/html");
    }
    rmSync(join(runDir, "samples", "epoch-9999.png"));
    expect((await get("/health")).status).toBe(200);
  });

  test("with the services' token: 401 without it, the header or the cookie set by ?token= let in", async () => {
    const guarded = await startDashboard({ db: cluster.database.db, token: "s3cret" });
    try {
      expect((await fetch(`${guarded.url}/runs/${runA.id}`)).status).toBe(401);
      expect((await fetch(`${guarded.url}/?token=wrong`)).status).toBe(401);
      expect((await fetch(`${guarded.url}/`, { headers: { authorization: "Bearer s3cret" } })).status).toBe(200);
      expect((await fetch(`${guarded.url}/health`)).status).toBe(200);
      const context = await browser.newContext();
      const p = await context.newPage();
      await p.goto(`${guarded.url}/runs/${runA.id}?token=s3cret`);
      expect(new URL(p.url()).search).toBe("");
      expect(await p.locator("#epochs tbody tr").count()).toBe(3);
      await p.goto(`${guarded.url}/runs/${runA.id}/epochs/1`);
      expect(await p.locator("#samples .card").count()).toBe(4);
      await context.close();
    } finally {
      await guarded.stop();
    }
  });

  test("the database goes away: a clear 503 page, the server stays up, and answers again once it is back", async () => {
    // A run left "running" (as after a Trainer crash): its page keeps a live stream open.
    await createRun(cluster.database.db, { id: "orphan", name: "orphan", status: "running" });
    const live = await browser.newPage();
    await live.goto(`${dashboard.url}/runs/orphan`);
    await live.locator("body[data-live-updates]").waitFor();
    const pg = cluster.pg.embedded!;
    await pg.stop();
    let restarted: EmbeddedPostgresServer | null = null;
    try {
      // The open page says so, and keeps its tables.
      await live.locator("#stream-banner", { hasText: "The database cannot be reached" }).waitFor({ timeout: 10_000 });
      expect(await live.locator("#run-status").textContent()).toBe("running");
      const r = await page.goto(`${dashboard.url}/runs/${runA.id}`);
      expect(r?.status()).toBe(503);
      expect(await page.locator("h1").textContent()).toBe("Database unavailable");
      expect(await page.locator("#error-message").textContent()).toContain("The dashboard keeps running");
      await shot("database-unavailable");
      expect((await get("/")).status).toBe(503);
      expect((await get(`/runs/${runA.id}/trajectories/1/0/steps/last.png`)).status).toBe(503);
      expect((await get("/health")).status).toBe(200);
      expect(dashboard.proc.exitCode).toBeNull();
      restarted = await EmbeddedPostgresServer.start({ dataDir: pg.dataDir, port: pg.port, fast: true });
      const back = await waitFor(
        "the dashboard to reach Postgres again",
        async () => {
          const r = await get(`/runs/${runA.id}`);
          return r.status === 200 ? r : undefined;
        },
        30_000,
      );
      expect(await back.text()).toContain(runA.id);
      // The stream resumes: the banner goes once a snapshot arrives again.
      await live.locator("#stream-banner").waitFor({ state: "detached", timeout: 10_000 });
    } finally {
      await live.close();
      await restarted?.stop();
    }
  }, 60_000);

  test("no page error, console error or request beyond the dashboard", () => {
    // The 404/503 pages above log their status to the console by design; nothing else may.
    expect(problems.filter((p) => !/status of (404|503)/.test(p))).toEqual([]);
  });
});
