// Request/response calls into a Bun Worker, so the engine's long synchronous calls (sampling,
// training steps) run off the gRPC event loop: health checks, cancellation and streams stay live.
// The worker side registers plain async handlers; errors cross back as a code and a message
// (WorkerError), never crash either side, and handlers on the calling side map the code, not the
// message. Large typed arrays can be transferred instead of copied.

declare const self: Worker;

export type WorkerHandlers = Record<string, (args: never) => unknown>;

interface CallMessage {
  id: number;
  method: string;
  args: unknown;
}

/**
 * Why a worker call failed, as the calling service maps it onto its own status codes:
 * not_found (a file or folder the call names is missing), invalid_argument (the call's input or a
 * file it names is unusable), failed_precondition (the worker is not in the state the call needs),
 * internal (anything else: a bug, a dead worker).
 */
export type WorkerErrorCode = "not_found" | "invalid_argument" | "failed_precondition" | "internal";

export class WorkerError extends Error {
  constructor(
    readonly code: WorkerErrorCode,
    message: string,
  ) {
    super(message);
    this.name = "WorkerError";
  }
}

/** The code an error thrown in a worker crosses with: its own, ENOENT as not_found, else internal. */
function workerErrorCode(e: unknown): WorkerErrorCode {
  if (e instanceof WorkerError) return e.code;
  if ((e as { code?: unknown } | null)?.code === "ENOENT") return "not_found";
  return "internal";
}

type ReplyMessage =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; code: WorkerErrorCode; error: string };

/** Typed handle on a worker that serves `H` (see serveWorkerHandlers). */
export class WorkerClient<H extends WorkerHandlers> {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { resolve: (v: unknown) => void; reject: (e: Error) => void }>();
  #nextId = 1;
  #dead: WorkerError | null = null;

  constructor(url: URL | string, options?: { env?: Record<string, string> }) {
    this.#worker = new Worker(url, { env: options?.env ?? (process.env as Record<string, string>) });
    this.#worker.addEventListener("message", (ev: MessageEvent<ReplyMessage>) => {
      const reply = ev.data;
      const waiter = this.#pending.get(reply.id);
      if (!waiter) return;
      this.#pending.delete(reply.id);
      if (reply.ok) waiter.resolve(reply.result);
      else waiter.reject(new WorkerError(reply.code, reply.error));
    });
    this.#worker.addEventListener("error", (ev: ErrorEvent) =>
      this.#fail(new WorkerError("internal", `worker failed: ${ev.message}`)),
    );
    this.#worker.addEventListener("close", () => this.#fail(new WorkerError("internal", "worker exited")));
  }

  #fail(error: WorkerError): void {
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
    this.#fail(new WorkerError("internal", "worker terminated"));
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
        if (!handler) throw new WorkerError("internal", `worker: no method '${method}'`);
        const out = await handler(args as never);
        if (out instanceof TransferableResult) self.postMessage({ id, ok: true, result: out.result }, out.transfer);
        else self.postMessage({ id, ok: true, result: out });
      } catch (e) {
        const error = e instanceof Error ? e.message : String(e);
        self.postMessage({ id, ok: false, code: workerErrorCode(e), error } satisfies ReplyMessage);
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
