// The Trainer's Samplers as one fleet for an epoch's sampling: the epoch is cut into chunks, each
// live Sampler takes the next chunk when it is free, and a chunk whose Sampler fails (UNAVAILABLE,
// a deadline, a restart) goes back for another Sampler. Finished chunks are kept, each sample
// slot filled once, so a Sampler lost mid-epoch costs only the chunk it held.
//
// A chunk is one of the plan's sample batches. The Sampler computes a chunk as one batch, and a
// batch's composition fixes the numerics (a sample drawn alone differs from the same sample drawn
// in a batch by ~5e-6 in the latents on the CPU backend: BLAS takes other paths), so batch-sized
// chunks keep every trajectory identical to a one-Sampler run's, whichever Sampler drew it.
import type { SampleBatchPlan } from "../lib/ddpo/trainer.ts";
import { balancedTarget, type ClientOptions, type ClientTls } from "../lib/grpc/index.ts";

/** A share of an epoch's samples: prompts, seeds and their positions in the epoch. */
export interface SampleChunk {
  prompts: string[];
  seeds: number[];
  at: number[];
}

/** The plan's sample batches as chunks, in plan order. */
export function planChunks(plan: readonly SampleBatchPlan[]): SampleChunk[] {
  let position = 0;
  return plan.map((batch) => ({
    prompts: [...batch.prompts],
    seeds: [...batch.seeds],
    at: batch.prompts.map(() => position++),
  }));
}

/**
 * How an epoch's chunks spread over the run's Sampler targets, for StartRun to say: a host:port
 * is one Sampler drawing a chunk at a time; a balanced target (`ipv4:`/`dns:`) spreads them over
 * however many Samplers it has.
 */
export function describeSplit(chunks: number, chunkSamples: number, targets: readonly string[]): string {
  const plural = (n: number, what: string) => `${n} ${what}${n === 1 ? "" : "s"}`;
  const split = `${plural(chunks, "chunk")} of ${chunkSamples} samples per epoch`;
  const balanced = targets.filter(balancedTarget);
  const single = targets.length - balanced.length;
  if (balanced.length) {
    return `${split}, spread by round_robin over ${[...balanced, ...(single ? [plural(single, "Sampler")] : [])].join(" and ")}`;
  }
  if (chunks < single) {
    return `${split} over ${plural(single, "Sampler")}: ${plural(single - chunks, "Sampler")} will get no work (raise sample_batches_per_epoch to use them; they still stand in when one fails)`;
  }
  return `${split} over ${plural(single, "Sampler")}`;
}

export interface FleetDraw {
  /** Fleet members (Samplers), 0..members-1. */
  members: number;
  /** Draws one chunk on one member; rejects when the member failed it. */
  draw(member: number, chunk: SampleChunk): Promise<void>;
  /** Whether a member's failure is worth handing its chunk to another member (the member may recover). */
  retryable(e: unknown): boolean;
  /** The fleet gives up when no chunk finished for this long and none is being drawn, ms. */
  retryForMs: number;
  signal: AbortSignal;
  /** A member failed a chunk that goes back to the queue. */
  onRetry?(member: number, e: unknown): void;
}

/**
 * Draws every chunk once on some member. Each member loops: take the next queued chunk, draw it;
 * on a retryable failure the chunk goes back to the front of the queue and the member backs off
 * (250 ms doubling to 4 s) before taking another, so live members take it meanwhile.
 */
export async function drawChunks(chunks: readonly SampleChunk[], o: FleetDraw): Promise<void> {
  const queue = [...chunks];
  let pending = chunks.length;
  let drawing = 0;
  let lastProgress = Date.now();
  let failure: { error: unknown } | null = null;
  // Wakes members waiting for a chunk to come back (or for the end).
  let wake: () => void = () => {};
  let changed = new Promise<void>((r) => (wake = r));
  const notify = () => {
    const w = wake;
    changed = new Promise<void>((r) => (wake = r));
    w();
  };
  const fail = (error: unknown) => {
    failure ??= { error };
    notify();
  };
  const abortable = (ms: number) =>
    new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, ms);
      changed.then(() => {
        if (failure || o.signal.aborted) {
          clearTimeout(timer);
          resolve();
        }
      });
    });

  const member = async (m: number) => {
    let delay = 250;
    while (pending > 0 && !failure && !o.signal.aborted) {
      const chunk = queue.shift();
      if (!chunk) {
        await changed;
        continue;
      }
      drawing += 1;
      let error: { e: unknown } | null = null;
      try {
        await o.draw(m, chunk);
        pending -= 1;
        lastProgress = Date.now();
        delay = 250;
      } catch (e) {
        queue.unshift(chunk);
        error = { e };
      } finally {
        drawing -= 1;
        notify();
      }
      if (!error) continue;
      if (o.signal.aborted || !o.retryable(error.e)) {
        fail(o.signal.aborted ? (o.signal.reason ?? error.e) : error.e);
      } else if (drawing === 0 && Date.now() - lastProgress > o.retryForMs) {
        fail(error.e);
      } else {
        o.onRetry?.(m, error.e);
        await abortable(delay);
        delay = Math.min(delay * 2, 4000);
      }
    }
  };
  const aborted = () => fail(o.signal.reason);
  o.signal.addEventListener("abort", aborted, { once: true });
  try {
    await Promise.all(Array.from({ length: o.members }, (_, m) => member(m)));
  } finally {
    o.signal.removeEventListener("abort", aborted);
  }
  if (failure) throw (failure as { error: unknown }).error;
  if (pending > 0) throw new Error(`sampling: ${pending} chunks left undrawn`);
}

/** Longest wait between a balanced fleet's attempts to reach a Sampler that is down, ms. */
const FLEET_MAX_RECONNECT_BACKOFF_MS = 2000;

/**
 * A Sampler target's channel: client-side round_robin over a balanced target's addresses (gRPC's
 * own load balancing: a Sampler whose connection fails drops out of the picks, and a `dns:` name
 * is re-resolved so new Samplers join), the default pick_first for one host:port. round_robin
 * keeps trying every address of the fleet; the backoff between tries is capped at 2 s (grpc-js's
 * default grows to 120 s), so a Sampler that starts or restarts on a listed address takes work
 * within seconds, mid-run, without restarting the run. `tls`: the Trainer's TLS settings for
 * Samplers (the same for every Sampler of every run).
 */
export function samplerClientOptions(target: string, options: ClientOptions, tls?: ClientTls): ClientOptions {
  const secured = tls ? { ...options, tls } : options;
  if (!balancedTarget(target)) return secured;
  return {
    ...secured,
    channelOptions: {
      ...options.channelOptions,
      "grpc.service_config": JSON.stringify({ loadBalancingConfig: [{ round_robin: {} }] }),
      "grpc.initial_reconnect_backoff_ms": 250,
      "grpc.max_reconnect_backoff_ms": FLEET_MAX_RECONNECT_BACKOFF_MS,
    },
  };
}
