// Records trajectories, their rewards and their latents without slowing the training loop:
// add() only queues; a single writer sends batches in transactions, idempotently (ON CONFLICT DO
// NOTHING on the natural keys, latents by sha256). When Postgres cannot be reached the rows stay in
// memory and the writer retries with exponential backoff; nothing is dropped.

import { createHash } from "node:crypto";
import { endianness } from "node:os";
import type { Kysely } from "kysely";
import type { Database, NewLatentBlob, NewReward, NewTrajectory } from "./schema.ts";

export interface RecordBatch {
  trajectories?: NewTrajectory[];
  rewards?: NewReward[];
  /** Latents the trajectories reference by sha256; see latentBlob(). */
  latents?: NewLatentBlob[];
}

export interface RecorderOptions {
  /** Write as soon as this many rows are pending. */
  batchRows?: number;
  /** Cap on the latent and image bytes of one transaction. */
  batchBytes?: number;
  /** Write whatever is pending once the oldest row has waited this long, ms. */
  flushIntervalMs?: number;
  /** First retry delay after a failed write, ms; doubles per failure up to retryMaxMs. */
  retryInitialMs?: number;
  retryMaxMs?: number;
}

export interface RecorderState {
  /** Rows queued and not yet committed, by table and in total. */
  pending: { trajectories: number; rewards: number; latents: number; total: number };
  /** The last write failed because the server could not be reached; rows are held and retried. */
  unavailable: boolean;
  /** The last write error (null after a successful write). */
  lastError: string | null;
  closed: boolean;
}

export interface RecorderCounters {
  /** Rows handed to add(). */
  added: number;
  /** Rows in committed transactions, duplicates included. */
  written: number;
  /** Rows that were new to the database (written minus those already there). */
  inserted: number;
  /** Committed transactions. */
  batches: number;
  /** Failed write attempts (each retried). */
  failures: number;
  /** Time spent in successful write transactions, seconds. */
  writeSeconds: number;
  /** written / writeSeconds: the writer's throughput while it writes. */
  rowsPerSecond: number;
}

type Item =
  | { table: "latent_blobs"; seq: number; bytes: number; row: NewLatentBlob }
  | { table: "trajectories"; seq: number; bytes: number; row: NewTrajectory }
  | { table: "rewards"; seq: number; bytes: number; row: NewReward };

interface FlushWaiter {
  seq: number;
  resolve: () => void;
}

/** Nominal size of a row without large payloads, bytes (only for the batchBytes cap). */
const ROW_BYTES = 256;
/** Bind parameters per INSERT stay well below Postgres's 65535. */
const MAX_PARAMS = 30_000;

export class TrajectoryRecorder {
  readonly #db: Kysely<Database>;
  readonly #batchRows: number;
  readonly #batchBytes: number;
  readonly #flushIntervalMs: number;
  readonly #retryInitialMs: number;
  readonly #retryMaxMs: number;

  /** FIFO of uncommitted rows; the writer removes a prefix only after its transaction commits. */
  #queue: Item[] = [];
  #seq = 0;
  /** Rows with seq <= dueSeq must be written now, even as a partial batch. */
  #dueSeq = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #writing = false;
  #retryDelayMs = 0;
  #unavailable = false;
  #lastError: string | null = null;
  #closed = false;
  #waiters: FlushWaiter[] = [];
  #counters = { added: 0, written: 0, inserted: 0, batches: 0, failures: 0, writeSeconds: 0 };

  constructor(db: Kysely<Database>, options: RecorderOptions = {}) {
    this.#db = db;
    this.#batchRows = options.batchRows ?? 256;
    this.#batchBytes = options.batchBytes ?? 32 * 2 ** 20;
    this.#flushIntervalMs = options.flushIntervalMs ?? 100;
    this.#retryInitialMs = options.retryInitialMs ?? 100;
    this.#retryMaxMs = options.retryMaxMs ?? 5_000;
  }

  /** Queue rows for writing and return at once. Latents are queued first, as trajectories refer to them. */
  add(batch: RecordBatch): void {
    if (this.#closed) throw new Error("TrajectoryRecorder is closed");
    for (const row of batch.latents ?? []) {
      this.#queue.push({ table: "latent_blobs", seq: ++this.#seq, bytes: row.bytes.length + ROW_BYTES, row });
    }
    for (const row of batch.trajectories ?? []) {
      const bytes = (row.image_png?.length ?? 0) + ROW_BYTES;
      this.#queue.push({ table: "trajectories", seq: ++this.#seq, bytes, row });
    }
    for (const row of batch.rewards ?? []) {
      this.#queue.push({ table: "rewards", seq: ++this.#seq, bytes: ROW_BYTES, row });
    }
    this.#counters.added +=
      (batch.latents?.length ?? 0) + (batch.trajectories?.length ?? 0) + (batch.rewards?.length ?? 0);
    if (this.#queue.length >= this.#batchRows) this.#kick();
    else this.#schedule(this.#flushIntervalMs, true);
  }

  /**
   * Resolves once every row added before this call is committed. While the server is unreachable it
   * keeps waiting (the writer keeps retrying); with timeoutMs it rejects after that long instead.
   */
  flush(timeoutMs?: number): Promise<void> {
    const target = this.#seq;
    if (this.#writtenThrough(target)) return Promise.resolve();
    return new Promise<void>((resolve, reject) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const waiter: FlushWaiter = {
        seq: target,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
      };
      this.#waiters.push(waiter);
      this.#dueSeq = Math.max(this.#dueSeq, target);
      if (timeoutMs !== undefined) {
        timer = setTimeout(() => {
          this.#waiters = this.#waiters.filter((w) => w !== waiter);
          const why = this.#lastError ? ` (last error: ${this.#lastError})` : "";
          reject(
            new Error(`recorder flush timed out after ${timeoutMs} ms with ${this.#queue.length} rows pending${why}`),
          );
        }, timeoutMs);
      }
      this.#kick();
    });
  }

  /** Flush, then refuse further rows. The database handle stays open (its owner closes it). */
  async close(timeoutMs?: number): Promise<void> {
    this.#closed = true;
    await this.flush(timeoutMs);
  }

  get state(): RecorderState {
    const pending = { trajectories: 0, rewards: 0, latents: 0, total: this.#queue.length };
    for (const item of this.#queue) {
      if (item.table === "trajectories") pending.trajectories++;
      else if (item.table === "rewards") pending.rewards++;
      else pending.latents++;
    }
    return { pending, unavailable: this.#unavailable, lastError: this.#lastError, closed: this.#closed };
  }

  get counters(): RecorderCounters {
    const c = this.#counters;
    return { ...c, rowsPerSecond: c.writeSeconds > 0 ? c.written / c.writeSeconds : 0 };
  }

  #writtenThrough(seq: number): boolean {
    const head = this.#queue[0];
    return head === undefined || head.seq > seq;
  }

  /** Write now unless a write is running or we are backing off after a failure. */
  #kick(): void {
    if (this.#writing || this.#retryDelayMs > 0) return;
    if (this.#timer) clearTimeout(this.#timer);
    this.#timer = null;
    this.#schedule(0, false);
  }

  /** Start the writer after delayMs; `due` makes every row queued by then due (interval, retry). */
  #schedule(delayMs: number, due: boolean): void {
    if (this.#writing || this.#timer) return;
    this.#timer = setTimeout(() => {
      this.#timer = null;
      if (due) this.#dueSeq = this.#seq;
      void this.#drain();
    }, delayMs);
  }

  async #drain(): Promise<void> {
    this.#writing = true;
    let failed = false;
    try {
      // Full batches go out at once; a partial one only when due (interval elapsed, flush, retry).
      while (this.#queue.length >= this.#batchRows || !this.#writtenThrough(this.#dueSeq)) {
        const chunk = this.#takeChunk();
        try {
          await this.#write(chunk);
        } catch (err) {
          this.#onFailure(err);
          failed = true;
          return;
        }
        this.#queue.splice(0, chunk.length);
        this.#retryDelayMs = 0;
        this.#unavailable = false;
        this.#lastError = null;
        this.#resolveWaiters();
      }
    } finally {
      this.#writing = false;
      if (failed) this.#schedule(this.#retryDelayMs, true);
      else if (this.#queue.length > 0) this.#schedule(this.#flushIntervalMs, true);
    }
  }

  /** The longest queue prefix within batchRows and batchBytes (at least one row). */
  #takeChunk(): Item[] {
    let bytes = 0;
    let n = 0;
    for (const item of this.#queue) {
      if (n >= this.#batchRows || (n > 0 && bytes + item.bytes > this.#batchBytes)) break;
      bytes += item.bytes;
      n++;
    }
    return this.#queue.slice(0, n);
  }

  async #write(chunk: Item[]): Promise<void> {
    const latents = new Map<string, NewLatentBlob>();
    const trajectories: NewTrajectory[] = [];
    const rewards: NewReward[] = [];
    for (const item of chunk) {
      if (item.table === "latent_blobs") latents.set(item.row.sha256, item.row);
      else if (item.table === "trajectories") trajectories.push(item.row);
      else rewards.push(item.row);
    }
    const start = performance.now();
    let inserted = 0;
    await this.#db.transaction().execute(async (trx) => {
      for (const rows of chunkRows([...latents.values()])) {
        const r = await trx
          .insertInto("latent_blobs")
          .values(rows)
          .onConflict((oc) => oc.column("sha256").doNothing())
          .executeTakeFirst();
        inserted += Number(r.numInsertedOrUpdatedRows ?? 0n);
      }
      for (const rows of chunkRows(trajectories)) {
        const r = await trx
          .insertInto("trajectories")
          .values(rows)
          .onConflict((oc) => oc.columns(["run_id", "epoch", "sample_index"]).doNothing())
          .executeTakeFirst();
        inserted += Number(r.numInsertedOrUpdatedRows ?? 0n);
      }
      for (const rows of chunkRows(rewards)) {
        const r = await trx
          .insertInto("rewards")
          .values(rows)
          .onConflict((oc) => oc.columns(["run_id", "epoch", "sample_index", "reward_name"]).doNothing())
          .executeTakeFirst();
        inserted += Number(r.numInsertedOrUpdatedRows ?? 0n);
      }
    });
    const c = this.#counters;
    c.writeSeconds += (performance.now() - start) / 1000;
    c.batches++;
    c.written += chunk.length;
    // Latents repeated within the chunk count as duplicates.
    c.inserted += inserted;
  }

  #onFailure(err: unknown): void {
    this.#counters.failures++;
    this.#unavailable = isUnreachable(err);
    this.#lastError = err instanceof Error ? err.message : String(err);
    this.#retryDelayMs =
      this.#retryDelayMs === 0 ? this.#retryInitialMs : Math.min(this.#retryMaxMs, this.#retryDelayMs * 2);
  }

  #resolveWaiters(): void {
    const ready = this.#waiters.filter((w) => this.#writtenThrough(w.seq));
    if (ready.length === 0) return;
    this.#waiters = this.#waiters.filter((w) => !ready.includes(w));
    for (const w of ready) w.resolve();
  }
}

/** Split rows so that one INSERT binds at most MAX_PARAMS values. */
function chunkRows<T extends object>(rows: T[]): T[][] {
  if (rows.length === 0) return [];
  const columns = Math.max(1, Object.keys(rows[0]!).length);
  const size = Math.max(1, Math.floor(MAX_PARAMS / columns));
  const out: T[][] = [];
  for (let i = 0; i < rows.length; i += size) out.push(rows.slice(i, i + size));
  return out;
}

/** Errors that mean "the server is not there right now" rather than "this data is wrong". */
export function isUnreachable(err: unknown): boolean {
  const e = err as { code?: unknown; message?: unknown } | null;
  const code = typeof e?.code === "string" ? e.code : "";
  if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "EHOSTUNREACH", "ENOTFOUND", "EAI_AGAIN"].includes(code)) {
    return true;
  }
  // SQLSTATE 08: connection exception; 57P01-57P03: admin or crash shutdown, cannot connect now.
  if (/^08/.test(code) || ["57P01", "57P02", "57P03", "53300"].includes(code)) return true;
  const message = typeof e?.message === "string" ? e.message : "";
  return /connection terminated|timeout exceeded when trying to connect|connect ECONNREFUSED|not queryable/i.test(
    message,
  );
}

/** A content-addressed latent record: a copy of the float32 data as little-endian bytes and its sha256. */
export function latentBlob(latents: Float32Array, shape: number[]): NewLatentBlob {
  const count = shape.reduce((a, b) => a * b, 1);
  if (count !== latents.length) {
    throw new Error(`latents hold ${latents.length} values, shape [${shape.join(", ")}] needs ${count}`);
  }
  const bytes = Buffer.alloc(latents.byteLength);
  if (endianness() === "LE") bytes.set(new Uint8Array(latents.buffer, latents.byteOffset, latents.byteLength));
  else for (let i = 0; i < latents.length; i++) bytes.writeFloatLE(latents[i]!, i * 4);
  return { sha256: createHash("sha256").update(bytes).digest("hex"), shape: [...shape], bytes };
}

/** The float32 latents of a stored blob. */
export function latentsFromBlob(blob: { bytes: Uint8Array }): Float32Array {
  const out = new Float32Array(blob.bytes.length / 4);
  const view = new DataView(blob.bytes.buffer, blob.bytes.byteOffset, blob.bytes.byteLength);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}
