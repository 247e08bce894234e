// Request/response calls into a Bun Worker, so the engine's long synchronous calls (sampling,
// training steps) run off the gRPC event loop: health checks, cancellation and streams stay live.
// The worker side registers plain async handlers; errors cross back as messages, never crash
// either side. Large typed arrays can be transferred instead of copied.

declare const self: Worker;

export type WorkerHandlers = Record<string, (args: never) => unknown>;

interface CallMessage {
  id: number;
  method: string;
  args: unknown;
}

type ReplyMessage = { id: number; ok: true; result: unknown } | { id: number; ok: false; error: string };

/** Typed handle on a worker that serves `H` (see serveWorkerHandlers). */
export class WorkerClient<H extends WorkerHandlers> {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #dead: Error | null = null;

  constructor(url: URL | string, options?: { env?: Record<string, string> }) {
    this.#worker = new Worker(url, { env: options?.env ?? (process.env as Record<string, string>) });
    this.#worker.addEventListener("message", (ev: MessageEvent<ReplyMessage>) => {
      const reply = ev.data;
      const waiter = this.#pending.get(reply.id);
      if (!waiter) return;
      this.#pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new Error(reply.error));
    });
    this.#worker.addEventListener("error", (ev: ErrorEvent) => this.#fail(new Error(`worker failed: ${ev.message}`)));
    this.#worker.addEventListener("close", () => this.#fail(new Error("worker exited")));
  }

  #fail(error: Error): void {
    this.#dead ??= error;
    for (const w of this.#pending.values()) w.reject(error);
    this.#pending.clear();
  }

  /** Calls `method` in the worker; `transfer` lists buffers to move rather than copy. */
  call<K extends keyof H & string>(
    method: K,
    args: Parameters<H[K]>[0],
    transfer: Bun.Transferable[] = [],
  ): Promise<Awaited<ReturnType<H[K]>>> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve: resolve as (v: unknown) => void, reject });
      this.#worker.postMessage({ id, method, args } satisfies CallMessage, transfer);
    });
  }

  /**
   * Rejects the calls in flight now, leaving the worker alive: it finishes the call it is busy
   * with (its reply is dropped) and then serves later calls.
   */
  abandonCalls(reason: Error): void {
    for (const w of this.#pending.values()) w.reject(reason);
    this.#pending.clear();
  }

  /** Lets the process exit while the worker idles (for helpers a command may or may not use). */
  unref(): void {
    this.#worker.unref();
  }

  /**
   * Busy calls are rejected and the thread stops. Native memory it allocated (an engine's) is not
   * freed by that: close the engine with a call first.
   */
  terminate(): void {
    this.#fail(new Error("worker terminated"));
    this.#worker.terminate();
  }
}

/**
 * Worker side: answers calls one at a time in arrival order (the engine is not re-entrant).
 * A handler may return `{ result, transfer }` through `transferResult` to move its buffers.
 */
export function serveWorkerHandlers(handlers: WorkerHandlers): void {
  let queue: Promise<void> = Promise.resolve();
  self.addEventListener("message", (ev: MessageEvent<CallMessage>) => {
    const { id, method, args } = ev.data;
    queue = queue.then(async () => {
      const handler = handlers[method];
      try {
        if (!handler) throw new Error(`worker: no method '${method}'`);
        const out = await handler(args as never);
        if (out instanceof TransferableResult) self.postMessage({ id, ok: true, result: out.result }, out.transfer);
        else self.postMessage({ id, ok: true, result: out });
      } catch (e) {
        self.postMessage({ id, ok: false, error: e instanceof Error ? e.message : String(e) });
      }
    });
  });
}

class TransferableResult {
  constructor(
    readonly result: unknown,
    readonly transfer: Bun.Transferable[],
  ) {}
}

/** Wraps a handler's result so its buffers move to the caller instead of being copied. */
export function transferResult<T>(result: T, transfer: Bun.Transferable[]): T {
  return new TransferableResult(result, transfer) as unknown as T;
}
