// The dashboard's HTTP server (Bun.serve): server-rendered pages over the kysely queries in
// services/lib/db, PNGs from recorded latents and run folders, a server-sent-event stream per run
// that polls the database while the run is live, and the browser bundle built at start-up by
// Bun.build (uPlot from npm; nothing is fetched from elsewhere). With a token, every route but
// /health needs it: as `authorization: Bearer` or the cookie that opening `/?token=...` sets.
import { readFileSync } from "node:fs";
import type { Kysely } from "kysely";
import { Trainer } from "../gen/ddpo/v1/trainer_pb.ts";
import {
  checkpointLineage,
  evaluationByEpoch,
  getCheckpoint,
  getLatentBytes,
  getLatentShape,
  getRun,
  getTrajectory,
  listCheckpoints,
  listRewards,
  listRunOverviews,
  listRunPrompts,
  listRuns,
  rewardByEpoch,
  rewardTermsByEpoch,
  searchTrajectories,
  trajectoryProvenance,
  trajectorySeries,
} from "../lib/db/queries.ts";
import { isUnreachable } from "../lib/db/recorder.ts";
import type { Database, Run, RunEvaluationByEpoch, RunRewardByEpoch } from "../lib/db/schema.ts";
import { type EvaluationSummary, guardVerdict, type HeldOutEvaluation } from "../lib/ddpo/evaluation.ts";
import { bearerHeader, matchesBearer } from "../lib/grpc/bearer-token.ts";
import { type ClientOptions, createClient } from "../lib/grpc/index.ts";
import { runSettingsFromJson } from "../lib/runs/run-messages.ts";
import { path as urlPath } from "./html.ts";
import { latentLayout, latentRowBytes, latentRowPng, runFolderSample } from "./images.ts";
import {
  type BrowserQuery,
  comparePage,
  epochPage,
  epochRowsHtml,
  errorPage,
  evaluationTableHtml,
  type FixedSeedCell,
  fixedSeedPage,
  type GuardMarks,
  guardHtml,
  lineagePage,
  type RunSnapshot,
  runPage,
  runsPage,
  seriesPage,
  termRowsHtml,
  trajectoriesPage,
  trajectoryPage,
} from "./pages.ts";
import { CheckpointPreviews, type PreviewServices } from "./previews.ts";

export interface DashboardOptions {
  db: Kysely<Database>;
  /** host:port; default 127.0.0.1:0 (loopback, a free port). */
  address?: string;
  /** The services' shared token (DDPO_TOKEN); unset: no authentication. */
  token?: string;
  tls?: { cert: string | Buffer; key: string | Buffer };
  /** How often a live run's stream polls the database, ms. */
  pollMs?: number;
  /** A Sampler and Rewarder to draw one prompt and seed under each checkpoint; the page is off without. */
  previews?: PreviewServices;
  /** The Trainer: its WatchRun feeds a live page the progress inside an epoch and wakes the poll. */
  trainer?: { address: string; clientOptions?: ClientOptions };
  log?: (line: string) => void;
}

export interface RunningDashboard {
  /** host:port as bound. */
  address: string;
  url: string;
  stop(): Promise<void>;
}

const TOKEN_COOKIE = "ddpo_token";
const MAX_PAGE = 500;
const MAX_SERIES_RUNS = 8;
/** Checkpoints a fixed-seed page draws at most: evenly spaced, the base and the newest always. */
const MAX_FIXED_SEED_COLUMNS = 13;

export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly title: string,
    message: string,
  ) {
    super(message);
  }
}

const notFound = (message: string) => new HttpError(404, "Not found", message);
const badRequest = (message: string) => new HttpError(400, "Bad request", message);

/** An integer from a path segment or query parameter, or a 400 naming it; undefined when absent. */
export function integer(raw: string | null | undefined, name: string, min = 0, max = 2 ** 52): number | undefined {
  if (raw === null || raw === undefined || raw === "") return undefined;
  const v = /^-?\d{1,16}$/.test(raw) ? Number(raw) : Number.NaN;
  if (!Number.isSafeInteger(v) || v < min || v > max) {
    throw badRequest(`'${name}' must be an integer from ${min} to ${max}, got '${raw.slice(0, 40)}'`);
  }
  return v;
}

function required(raw: string | null | undefined, name: string, min = 0, max = 2 ** 52): number {
  const v = integer(raw, name, min, max);
  if (v === undefined) throw badRequest(`'${name}' is required`);
  return v;
}

function oneOf<T extends string>(raw: string | null, name: string, allowed: readonly T[], fallback: T): T {
  if (raw === null || raw === "") return fallback;
  if (!allowed.includes(raw as T))
    throw badRequest(`'${name}' must be one of ${allowed.join(", ")}, got '${raw.slice(0, 40)}'`);
  return raw as T;
}

function parseAddress(address: string): { hostname: string; port: number } {
  const at = address.lastIndexOf(":");
  const hostname = address.slice(0, at).replace(/^\[(.*)\]$/, "$1");
  const port = Number(address.slice(at + 1));
  if (at <= 0 || !Number.isInteger(port) || port < 0 || port > 65535) {
    throw new Error(`--address must be HOST:PORT, got '${address}'`);
  }
  return { hostname, port };
}

export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "::1" || /^127\.\d+\.\d+\.\d+$/.test(hostname);
}

/** The browser bundle (client/dashboard.ts with uPlot) and the stylesheet, built once. */
async function buildAssets(): Promise<{ js: string; css: string }> {
  const result = await Bun.build({
    entrypoints: [new URL("./client/dashboard.ts", import.meta.url).pathname],
    target: "browser",
    minify: true,
  });
  if (!result.success || !result.outputs[0]) {
    throw new Error(`building the dashboard bundle failed: ${result.logs.map(String).join("\n")}`);
  }
  const js = await result.outputs[0].text();
  const uplotCss = readFileSync(Bun.resolveSync("uplot/dist/uPlot.min.css", import.meta.dir), "utf8");
  const css = `${uplotCss}\n${readFileSync(new URL("./client/style.css", import.meta.url), "utf8")}`;
  return { js, css };
}

const SECURITY_HEADERS = {
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  // Everything comes from this server; inline styles are uPlot's.
  "content-security-policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:",
};

function htmlResponse(body: string, status = 200): Response {
  return new Response(body, { status, headers: { "content-type": "text/html; charset=utf-8", ...SECURITY_HEADERS } });
}

function cookie(req: Request, name: string): string | undefined {
  for (const part of (req.headers.get("cookie") ?? "").split(";")) {
    const eq = part.indexOf("=");
    if (eq > 0 && part.slice(0, eq).trim() === name) return decodeURIComponent(part.slice(eq + 1).trim());
  }
  return undefined;
}

/** undefined when the request may go on; else the answer (a redirect that sets the cookie, or 401). */
function authenticate(req: Request, url: URL, token: string): Response | undefined {
  if (matchesBearer(req.headers.get("authorization") ?? undefined, token)) return undefined;
  const fromCookie = cookie(req, TOKEN_COOKIE);
  if (fromCookie !== undefined && matchesBearer(bearerHeader(fromCookie), token)) return undefined;
  const fromQuery = url.searchParams.get("token");
  if (fromQuery !== null && matchesBearer(bearerHeader(fromQuery), token)) {
    url.searchParams.delete("token");
    return new Response(null, {
      status: 303,
      headers: {
        location: url.pathname + url.search,
        "set-cookie": `${TOKEN_COOKIE}=${encodeURIComponent(fromQuery)}; HttpOnly; SameSite=Strict; Path=/`,
      },
    });
  }
  return htmlResponse(
    errorPage(
      401,
      "Token required",
      "This dashboard runs with the services' token (DDPO_TOKEN). Open it once as /?token=YOUR_TOKEN, or send authorization: Bearer YOUR_TOKEN.",
    ),
    401,
  );
}

async function runOr404(db: Kysely<Database>, id: string): Promise<Run> {
  const run = await getRun(db, id);
  if (!run) throw notFound(`There is no run '${id.slice(0, 80)}'.`);
  return run;
}

async function snapshotOf(db: Kysely<Database>, run: Run): Promise<RunSnapshot> {
  const [epochs, terms, evaluations] = await Promise.all([
    rewardByEpoch(db, run.id),
    rewardTermsByEpoch(db, run.id),
    evaluationByEpoch(db, run.id),
  ]);
  const epochsDone = epochs.filter((e) => e.seconds !== null).length;
  const guard = guardMarks(run, epochs, evaluations);
  return {
    runId: run.id,
    name: run.name,
    status: run.status,
    error: run.error,
    epochs,
    terms,
    epochsDone,
    evaluations,
    guard,
  };
}

/** The run's held-out evaluation settings; null when it has none (or its config is not a RunSettings). */
function heldOutOf(run: Run): HeldOutEvaluation | null {
  try {
    return runSettingsFromJson(run.config).ddpo.evaluation;
  } catch {
    return null;
  }
}

/**
 * The guard's marks on a run: its best evaluated epoch as the Trainer recorded it (runs.best_checkpoint_id:
 * the starting checkpoint is epoch 0, else the epoch whose update made it), and the early stop: the
 * first evaluated epoch at which the guard's verdict under the run's stop rule, over the
 * evaluations up to it, says stop (what stopped the run there).
 */
function guardMarks(run: Run, epochs: RunRewardByEpoch[], evaluations: RunEvaluationByEpoch[]): GuardMarks {
  const heldOut = heldOutOf(run);
  const marks: GuardMarks = { settings: heldOut, best: null, stop: null };
  const bestId = run.best_checkpoint_id;
  const bestEpoch =
    bestId === null
      ? undefined
      : bestId === run.base_checkpoint_id
        ? 0
        : epochs.find((e) => e.checkpoint_id === bestId)?.epoch;
  if (bestId !== null && bestEpoch !== undefined && run.best_metric !== null) {
    const mean = evaluations.find((r) => r.epoch === bestEpoch && r.metric === run.best_metric)?.mean ?? null;
    marks.best = { epoch: bestEpoch, metric: run.best_metric, checkpointId: bestId, mean };
  }
  if (heldOut?.stopBelow) {
    const history: EvaluationSummary[] = [];
    // evaluationByEpoch's rows come in epoch order.
    for (const [epoch, rows] of Map.groupBy(evaluations, (r) => r.epoch)) {
      history.push({ epoch, means: Object.fromEntries(rows.map((r) => [r.metric, r.mean])) });
      let stop: string | null;
      try {
        stop = guardVerdict({ ...heldOut, bestBy: null }, history).stop;
      } catch {
        break; // the rule's metric is not among the evaluations: it never fired
      }
      if (stop) {
        marks.stop = { epoch, reason: stop };
        break;
      }
    }
  }
  return marks;
}

/** The run's newest registered checkpoint (its latest epoch's), if any. */
async function latestCheckpoint(db: Kysely<Database>, run: Run) {
  const mine = await listCheckpoints(db, { runId: run.id });
  return mine
    .filter((c) => c.kind !== "base")
    .sort((a, b) => (a.epoch ?? 0) - (b.epoch ?? 0))
    .at(-1);
}

/** The run's checkpoints by epoch, epoch 0 its base; at most `max`, evenly spaced, first and last kept. */
async function checkpointsByEpoch(db: Kysely<Database>, run: Run, max: number) {
  const base = run.base_checkpoint_id ? await getCheckpoint(db, run.base_checkpoint_id) : undefined;
  const mine = (await listCheckpoints(db, { runId: run.id }))
    .filter((c) => c.kind !== "base" && c.epoch !== null)
    .sort((a, b) => a.epoch! - b.epoch!);
  const all = [
    ...(base ? [{ epoch: 0, checkpoint: base }] : []),
    ...mine.map((c) => ({ epoch: c.epoch!, checkpoint: c })),
  ];
  if (all.length <= max) return all;
  const picked = new Set(Array.from({ length: max }, (_, i) => Math.round((i * (all.length - 1)) / (max - 1))));
  return all.filter((_, i) => picked.has(i));
}

function runDirOf(run: Run): string | null {
  const dir = (run.config as { runDir?: unknown }).runDir;
  return typeof dir === "string" && dir ? dir : null;
}

function epochGridName(epoch: number): string {
  return `epoch-${String(epoch).padStart(4, "0")}.png`;
}

export async function startDashboard(o: DashboardOptions): Promise<RunningDashboard> {
  const { db, token } = o;
  const log = o.log ?? ((line: string) => console.error(line));
  const pollMs = o.pollMs ?? 1000;
  const { hostname, port } = parseAddress(o.address ?? "127.0.0.1:0");
  if (!isLoopback(hostname))
    log(`[dashboard] serving beyond loopback on ${hostname}${token ? "" : " without a token"}`);
  const assets = await buildAssets();
  const streams = new Set<() => void>();
  const previews = o.previews ? new CheckpointPreviews(o.previews) : null;
  const trainer = o.trainer ? createClient(Trainer, o.trainer.address, o.trainer.clientOptions) : null;

  /** Server-sent events: a `run` event with the snapshot and the fresh table bodies whenever it changes. */
  function runEvents(run: Run, req: Request): Response {
    const encoder = new TextEncoder();
    let closed = false;
    let wake: (() => void) | null = null;
    const watch = new AbortController();
    const close = () => {
      closed = true;
      watch.abort();
      wake?.();
    };
    req.signal.addEventListener("abort", close);
    streams.add(close);
    const stream = new ReadableStream<Uint8Array>({
      async start(controller) {
        const send = (text: string) => {
          if (!closed) controller.enqueue(encoder.encode(text));
        };
        // Best effort: without a Trainer (or when it is down) the page still follows the database.
        if (trainer) {
          (async () => {
            for await (const e of trainer.watchRun({ runId: run.id }, { signal: watch.signal })) {
              if (e.event.case === "progress") {
                const { epoch, phase, done, total } = e.event.value;
                send(`event: progress\ndata: ${JSON.stringify({ epoch, phase, done, total })}\n\n`);
              } else {
                wake?.(); // an epoch or a status change: read the database now
              }
            }
          })().catch(() => undefined);
        }
        let last = "";
        let quiet = 0;
        send(`retry: ${Math.max(1000, pollMs)}\n\n`);
        while (!closed) {
          let ended = false;
          try {
            const now = await runOr404(db, run.id);
            const snapshot = await snapshotOf(db, now);
            const payload = JSON.stringify({
              snapshot,
              epochRows: epochRowsHtml(now, snapshot.epochs).text,
              termRows: termRowsHtml(snapshot.terms).text,
              guard: guardHtml(now, snapshot.guard).text,
              evaluations: evaluationTableHtml(snapshot.evaluations, snapshot.guard).text,
            });
            if (payload !== last) {
              send(`event: run\ndata: ${payload}\n\n`);
              last = payload;
              quiet = 0;
            } else {
              // A comment now and then keeps proxies and the idle timeout from closing a quiet stream.
              quiet += pollMs;
              if (quiet >= 5000) {
                send(": still watching\n\n");
                quiet = 0;
              }
            }
            ended = now.status !== "pending" && now.status !== "running";
          } catch (e) {
            const message = isUnreachable(e) ? "The database cannot be reached; retrying." : (e as Error).message;
            send(`event: unavailable\ndata: ${JSON.stringify({ message })}\n\n`);
            last = "";
          }
          if (ended) {
            send("event: end\ndata: {}\n\n");
            break;
          }
          await new Promise<void>((resolve) => {
            wake = resolve;
            setTimeout(resolve, pollMs);
          });
        }
        streams.delete(close);
        watch.abort();
        const cancelled = closed;
        closed = true;
        // A stream the client cancelled is closed already.
        if (!cancelled) controller.close();
      },
      cancel: close,
    });
    return new Response(stream, {
      headers: { "content-type": "text/event-stream", "cache-control": "no-store", ...SECURITY_HEADERS },
    });
  }

  async function route(req: Request, url: URL): Promise<Response> {
    let segments: string[];
    try {
      segments = url.pathname.split("/").filter(Boolean).map(decodeURIComponent);
    } catch {
      throw badRequest("The path is not valid percent-encoding.");
    }
    const q = url.searchParams;
    const [head, id, sub, ...rest] = segments;

    if (segments.length === 0) return htmlResponse(runsPage(await listRunOverviews(db, { limit: MAX_PAGE })));
    if (head === "assets" && segments.length === 2) {
      if (id === "dashboard.js")
        return new Response(assets.js, {
          headers: { "content-type": "text/javascript; charset=utf-8", ...SECURITY_HEADERS },
        });
      if (id === "dashboard.css")
        return new Response(assets.css, {
          headers: { "content-type": "text/css; charset=utf-8", ...SECURITY_HEADERS },
        });
    }
    if (head === "compare" && segments.length === 1) {
      const ids = [q.get("a"), q.get("b")].filter((x): x is string => Boolean(x));
      const chosen = [];
      for (const runId of ids) {
        const run = await runOr404(db, runId);
        chosen.push({ run, epochs: await rewardByEpoch(db, run.id) });
      }
      return htmlResponse(comparePage(await listRuns(db, { limit: MAX_PAGE }), chosen));
    }
    if (head === "series" && segments.length === 1) {
      const runIds = q.getAll("run");
      if (runIds.length === 0 || runIds.length > MAX_SERIES_RUNS)
        throw badRequest(`give 1 to ${MAX_SERIES_RUNS} 'run' parameters`);
      const prompt = q.get("prompt");
      if (!prompt) throw badRequest("'prompt' is required");
      const seed = integer(q.get("seed"), "seed");
      const runs = [];
      for (const runId of runIds) runs.push(await runOr404(db, runId));
      return htmlResponse(seriesPage(runs, prompt, seed, await trajectorySeries(db, { runIds, prompt, seed })));
    }
    if (head !== "runs" || id === undefined) throw notFound(`Nothing is served at ${url.pathname.slice(0, 200)}.`);

    const run = await runOr404(db, id);
    if (sub === undefined) {
      return htmlResponse(runPage(run, await snapshotOf(db, run), await latestCheckpoint(db, run)));
    }
    if (sub === "events" && rest.length === 0) return runEvents(run, req);
    if (sub === "epochs" && rest.length === 1) {
      const epoch = required(rest[0], "epoch");
      const [stats, samples] = await Promise.all([
        rewardByEpoch(db, run.id),
        searchTrajectories(db, { runId: run.id, epoch }),
      ]);
      const row = stats.find((e) => e.epoch === epoch);
      if (!row && samples.length === 0) throw notFound(`Run '${run.id}' has no epoch ${epoch}.`);
      const dir = runDirOf(run);
      const grid =
        dir && runFolderSample(dir, epochGridName(epoch))
          ? urlPath("runs", run.id, "files", "samples", epochGridName(epoch))
          : null;
      return htmlResponse(
        epochPage(
          run,
          epoch,
          row,
          samples,
          stats.map((e) => e.epoch),
          grid,
        ),
      );
    }
    if (sub === "trajectories" && rest.length === 0) {
      const browse: BrowserQuery = {
        prompt: q.get("prompt") || undefined,
        epoch: integer(q.get("epoch"), "epoch"),
        sort: oneOf(q.get("sort"), "sort", ["sample", "reward", "advantage"] as const, "reward"),
        descending: oneOf(q.get("order"), "order", ["desc", "asc"] as const, "desc") === "desc",
        limit: integer(q.get("limit"), "limit", 1, MAX_PAGE) ?? 100,
        offset: integer(q.get("offset"), "offset", 0) ?? 0,
      };
      const [prompts, results] = await Promise.all([
        listRunPrompts(db, run.id),
        searchTrajectories(db, { runId: run.id, ...browse }),
      ]);
      return htmlResponse(trajectoriesPage(run, prompts, browse, results));
    }
    if (sub === "trajectories" && (rest.length === 2 || rest.length === 4)) {
      const key = { runId: run.id, epoch: required(rest[0], "epoch"), sampleIndex: required(rest[1], "sample") };
      const t = await getTrajectory(db, key);
      if (!t) throw notFound(`Run '${run.id}' has no trajectory ${key.epoch}/${key.sampleIndex}.`);
      const shape = t.latents_sha256 ? await getLatentShape(db, t.latents_sha256) : undefined;
      const layout = shape ? latentLayout(shape) : undefined;
      if (rest.length === 2) {
        const [provenance, rewards] = await Promise.all([trajectoryProvenance(db, key), listRewards(db, key)]);
        return htmlResponse(trajectoryPage(t, provenance, rewards, layout?.rows ?? 0));
      }
      const match = rest[2] === "steps" ? /^(last|\d{1,6})\.png$/.exec(rest[3]!) : null;
      if (!match) throw notFound(`Nothing is served at ${url.pathname.slice(0, 200)}.`);
      if (!layout || !t.latents_sha256) throw notFound("No latents were recorded for this trajectory.");
      const step = match[1] === "last" ? layout.rows - 1 : Number(match[1]);
      if (step >= layout.rows) throw notFound(`This trajectory has steps 0 to ${layout.rows - 1}.`);
      // Only this step's bytes leave the database (a 50-step blob holds 51 of them).
      const per = latentRowBytes(layout);
      const row = await getLatentBytes(db, t.latents_sha256, step * per, per);
      if (!row) throw notFound("No latents were recorded for this trajectory.");
      return new Response(await latentRowPng(layout, row), {
        headers: { "content-type": "image/png", "cache-control": "max-age=3600", ...SECURITY_HEADERS },
      });
    }
    if (sub === "fixed" && rest.length <= 1) {
      const prompt = q.get("prompt");
      if (!prompt) throw badRequest("'prompt' is required");
      const seed = required(q.get("seed"), "seed");
      if (!previews) {
        throw new HttpError(
          503,
          "No Sampler",
          "Drawing a prompt and seed under each checkpoint needs a Sampler and a Rewarder: start the dashboard through 'ddpo up', or with --sampler and --rewarder.",
        );
      }
      const columns = await checkpointsByEpoch(db, run, MAX_FIXED_SEED_COLUMNS);
      if (rest.length === 1) {
        const epoch = Number(/^(\d{1,6})\.png$/.exec(rest[0]!)?.[1] ?? Number.NaN);
        const column = columns.find((c) => c.epoch === epoch);
        if (!column) throw notFound(`Run '${run.id}' has no checkpoint drawn for epoch ${rest[0]}.`);
        const { png } = await previews.preview(run, column.checkpoint, prompt, seed);
        return new Response(png, {
          headers: { "content-type": "image/png", "cache-control": "max-age=3600", ...SECURITY_HEADERS },
        });
      }
      const cells: FixedSeedCell[] = [];
      for (const c of columns) {
        try {
          cells.push({ ...c, preview: await previews.preview(run, c.checkpoint, prompt, seed) });
        } catch (e) {
          cells.push({ ...c, error: (e as Error).message });
        }
      }
      return htmlResponse(fixedSeedPage(run, prompt, seed, cells));
    }
    if (sub === "lineage" && rest.length === 0) {
      const from = (await latestCheckpoint(db, run))?.id ?? run.base_checkpoint_id;
      return htmlResponse(lineagePage(run, from ? await checkpointLineage(db, from) : []));
    }
    if (sub === "files" && rest.length === 2 && rest[0] === "samples") {
      const dir = runDirOf(run);
      const file = dir ? runFolderSample(dir, rest[1]!) : null;
      if (!file) throw notFound("No such file in the run's folder.");
      return new Response(Bun.file(file), { headers: { "content-type": "image/png", ...SECURITY_HEADERS } });
    }
    throw notFound(`Nothing is served at ${url.pathname.slice(0, 200)}.`);
  }

  async function handle(req: Request): Promise<Response> {
    const url = new URL(req.url);
    if (url.pathname === "/health") return new Response("ok\n");
    if (req.method !== "GET" && req.method !== "HEAD") {
      return htmlResponse(
        errorPage(405, "Method not allowed", `The dashboard only reads; ${req.method} is not served.`),
        405,
      );
    }
    if (token) {
      const denied = authenticate(req, url, token);
      if (denied) return denied;
    }
    try {
      return await route(req, url);
    } catch (e) {
      if (e instanceof HttpError) return htmlResponse(errorPage(e.status, e.title, e.message), e.status);
      if (isUnreachable(e)) {
        return htmlResponse(
          errorPage(
            503,
            "Database unavailable",
            `The database cannot be reached (${(e as Error).message}). The dashboard keeps running; reload once Postgres is back.`,
          ),
          503,
        );
      }
      log(`[dashboard] ${req.method} ${url.pathname}: ${(e as Error).stack ?? e}`);
      return htmlResponse(errorPage(500, "Internal error", (e as Error).message), 500);
    }
  }

  const server = Bun.serve({
    hostname,
    port,
    idleTimeout: 30,
    tls: o.tls,
    fetch: handle,
    error: (e) => htmlResponse(errorPage(500, "Internal error", e.message), 500),
  });
  const boundHost = server.hostname?.includes(":") ? `[${server.hostname}]` : server.hostname;
  const address = `${boundHost}:${server.port}`;
  return {
    address,
    url: `${o.tls ? "https" : "http"}://${address}`,
    async stop() {
      for (const close of [...streams]) close();
      previews?.close();
      trainer?.close();
      await server.stop(true);
    },
  };
}
