// The TypeScript face of gpu-core: an Engine (one backend context) that owns Tensors and Arenas,
// and one method per op and direction. C errors surface as GpuCoreError with the C message.
// Works in the main thread and in Bun Workers (each thread has its own last-error slot).
import { dlopen, FFIType } from "bun:ffi";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { type ContextCalls, type GpuCoreLibrary, openLibrary } from "./ffi.ts";

export type Backend = "cpu" | "cuda";
export type DType = "f32" | "i32";
export type Activation = "silu" | "gelu" | "gelu_tanh" | "quick_gelu";
/** Where an image tensor keeps its channels: [B,C,H,W] (PyTorch's default) or [B,H,W,C]. */
export type Layout = "nchw" | "nhwc";

const STATUS_CODES = ["OK", "INVALID_ARGUMENT", "SHAPE", "HANDLE", "OUT_OF_MEMORY", "UNSUPPORTED", "BACKEND"] as const;
export type StatusCode = (typeof STATUS_CODES)[number];

const ACTIVATIONS: Record<Activation, number> = { silu: 0, gelu: 1, gelu_tanh: 2, quick_gelu: 3 };
const DTYPES: Record<DType, number> = { f32: 0, i32: 1 };
const MAX_DIMS = 6;

export class GpuCoreError extends Error {
  constructor(
    readonly code: StatusCode,
    message: string,
  ) {
    super(message);
    this.name = "GpuCoreError";
  }
}

/** Where the backend libraries live: GPU_CORE_LIB_DIR, else gpu-core/build beside this file. */
export function libraryPath(backend: Backend): string {
  const dir = process.env.GPU_CORE_LIB_DIR ?? join(import.meta.dir, "build");
  return join(dir, `libgpucore_${backend}.so`);
}

export function backendAvailable(backend: Backend): boolean {
  return existsSync(libraryPath(backend));
}

// One dlopen per backend per thread; the library itself is shared by the process.
const libraries = new Map<Backend, GpuCoreLibrary>();

function loadLibrary(backend: Backend): GpuCoreLibrary {
  let lib = libraries.get(backend);
  if (!lib) {
    const path = libraryPath(backend);
    if (!existsSync(path)) {
      throw new GpuCoreError(
        "UNSUPPORTED",
        `gpu-core ${backend} backend is not built (${path} is missing): run \`npm run build\``,
      );
    }
    preferShortSpinOpenMP();
    lib = openLibrary(path).lib;
    libraries.set(backend, lib);
  }
  return lib;
}

/**
 * How OpenMP's idle threads wait between parallel regions. An engine step is hundreds of short
 * regions with a little JavaScript between them: threads that go to sleep at once (PASSIVE) are
 * woken by a futex for every region, which cost a batch-8 training step 1.4x its time on 2 cores
 * (bench/RESULTS.md). Threads that spin forever (ACTIVE) starve everything else when a machine runs
 * several engine processes (Sampler and Trainer side by side). So: spin for GOMP_SPINCOUNT
 * iterations (30000, ~0.3 ms), then sleep. libgomp reads both variables from the C environment
 * when it loads, and Bun's process.env does not reach that environment, so they are set with
 * libc's setenv before the engine library is opened; a user's own OMP_WAIT_POLICY or
 * GOMP_SPINCOUNT is left as it is.
 */
function preferShortSpinOpenMP(): void {
  if (process.env.OMP_WAIT_POLICY !== undefined || process.env.GOMP_SPINCOUNT !== undefined) return;
  try {
    const libc = dlopen("libc.so.6", {
      setenv: { args: [FFIType.ptr, FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    });
    libc.symbols.setenv(cString("OMP_WAIT_POLICY"), cString("PASSIVE"), 0);
    libc.symbols.setenv(cString("GOMP_SPINCOUNT"), cString(String(OPENMP_SPIN_COUNT)), 0);
    libc.close();
  } catch {
    // Not glibc: OpenMP keeps its default wait policy.
  }
}

/** Busy-wait iterations before an idle OpenMP thread sleeps (libgomp: ~100000 per ms). */
const OPENMP_SPIN_COUNT = 30000;

function cString(s: string): Buffer {
  return Buffer.from(`${s}\0`, "utf8");
}

type Optional<T> = T | null | undefined;

/** GPU_CORE_BACKEND: cpu, cuda or auto (the default). */
function backendFromEnv(): Backend | "auto" {
  const v = process.env.GPU_CORE_BACKEND ?? "auto";
  if (v === "cpu" || v === "cuda" || v === "auto") return v;
  throw new GpuCoreError("INVALID_ARGUMENT", `GPU_CORE_BACKEND must be cpu, cuda or auto, got '${v}'`);
}

// Whether a CUDA context opened in this thread (null: not tried yet), so auto probes once.
let cudaUsable: boolean | null = null;

// Tensors dropped without close() are freed by the GC as a safety net; close() is the contract.
const leakedTensors = new FinalizationRegistry<{ lib: GpuCoreLibrary; handle: number }>(({ lib, handle }) => {
  lib.gc_tensor_free(handle);
});

export class Tensor<D extends DType = DType> {
  #handle: number;
  readonly numel: number;

  constructor(
    readonly engine: Engine,
    handle: number,
    readonly shape: readonly number[],
    readonly dtype: D,
    readonly arena: Arena | null,
  ) {
    this.#handle = handle;
    this.numel = shape.reduce((a, b) => a * b, 1);
    if (!arena) leakedTensors.register(this, { lib: engine.lib, handle }, this);
  }

  get closed(): boolean {
    return this.#handle === 0;
  }

  /** The C handle; throws when the tensor is closed (or its arena was reset). */
  get handle(): number {
    if (this.#handle === 0) {
      throw new GpuCoreError("HANDLE", `tensor [${this.shape.join(",")}] is closed`);
    }
    return this.#handle;
  }

  /** Copies the tensor (or `count` elements from `offset`) to a new host array. */
  read(offset = 0, count = this.numel - offset): D extends "i32" ? Int32Array : Float32Array {
    const out = this.dtype === "i32" ? new Int32Array(count) : new Float32Array(count);
    this.engine.check(this.engine.lib.gc_tensor_read(this.handle, offset, out, out.byteLength));
    return out as D extends "i32" ? Int32Array : Float32Array;
  }

  write(data: ArrayLike<number>, offset = 0): this {
    const typed =
      this.dtype === "i32"
        ? data instanceof Int32Array
          ? data
          : Int32Array.from(data)
        : data instanceof Float32Array
          ? data
          : Float32Array.from(data);
    if (typed.length === 0) return this;
    this.engine.check(this.engine.lib.gc_tensor_write(this.handle, offset, typed, typed.byteLength));
    return this;
  }

  /** A view of `numel(shape)` elements starting at `offset`, sharing storage. */
  view(offset: number, shape: readonly number[]): Tensor<D> {
    const dims = dimsArray(shape);
    const out = new BigInt64Array(1);
    this.engine.check(this.engine.lib.gc_tensor_view(this.handle, offset, shape.length, dims, out));
    const t = new Tensor(this.engine, Number(out[0]), [...shape], this.dtype, this.arena);
    this.arena?.track(t);
    return t;
  }

  /** The same elements under another shape (a view). */
  reshape(shape: readonly number[]): Tensor<D> {
    return this.view(0, shape);
  }

  close(): void {
    if (this.#handle === 0) return;
    const handle = this.#handle;
    this.#handle = 0;
    if (this.arena) {
      this.arena.forget(this);
    } else {
      leakedTensors.unregister(this);
    }
    // A handle already released by an arena reset or by Engine.close() is not an error here.
    this.engine.lib.gc_tensor_free(handle);
  }

  /** Marks the tensor closed without freeing (its memory was released natively). */
  invalidate(): void {
    this.#handle = 0;
  }
}

function dimsArray(shape: readonly number[]): BigInt64Array {
  if (shape.length < 1 || shape.length > MAX_DIMS) {
    throw new GpuCoreError("SHAPE", `shape must have 1..${MAX_DIMS} dims, got [${shape.join(",")}]`);
  }
  const dims = new BigInt64Array(shape.length);
  shape.forEach((d, i) => {
    if (!Number.isSafeInteger(d)) throw new GpuCoreError("SHAPE", `dimension ${i} is not an integer: ${d}`);
    dims[i] = BigInt(d);
  });
  return dims;
}

/** Activation memory: tensors carved from it die together at reset(). */
export class Arena {
  #handle: number;
  readonly #tensors = new Set<Tensor>();

  constructor(
    readonly engine: Engine,
    handle: number,
  ) {
    this.#handle = handle;
  }

  get handle(): number {
    if (this.#handle === 0) throw new GpuCoreError("HANDLE", "arena is closed");
    return this.#handle;
  }

  track(t: Tensor): void {
    this.#tensors.add(t);
  }

  forget(t: Tensor): void {
    this.#tensors.delete(t);
  }

  get liveTensors(): number {
    return this.#tensors.size;
  }

  reset(): void {
    this.engine.check(this.engine.lib.gc_arena_reset(this.handle));
    for (const t of this.#tensors) t.invalidate();
    this.#tensors.clear();
  }

  close(): void {
    if (this.#handle === 0) return;
    const h = this.#handle;
    this.#handle = 0;
    for (const t of this.#tensors) t.invalidate();
    this.#tensors.clear();
    this.engine.lib.gc_arena_destroy(h);
  }
}

export interface TimestepEmbeddingOptions {
  flipSinToCos: boolean;
  freqShift: number;
  maxPeriod?: number;
}

export interface AdamWOptions {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  step: number;
}

type Alphas = Float64Array | readonly number[];

function toF64(a: Alphas): Float64Array {
  return a instanceof Float64Array ? a : Float64Array.from(a);
}

/** One backend context. Create with Engine.open(); close() frees everything it owns. */
export class Engine {
  #handle: number;
  readonly backend: Backend;

  private constructor(
    readonly lib: GpuCoreLibrary,
    handle: number,
    backend: Backend,
  ) {
    this.#handle = handle;
    this.backend = backend;
  }

  /**
   * Opens a context on `backend`, else GPU_CORE_BACKEND (cpu | cuda | auto), else auto: the CUDA
   * library when it is built and a context opens on it (a GPU is there), the CPU one otherwise.
   * `engine.backend` says which one runs.
   */
  static open(opts: { backend?: Backend | "auto"; options?: string } = {}): Engine {
    const choice = opts.backend ?? backendFromEnv();
    if (choice === "auto") {
      if (cudaUsable !== false && backendAvailable("cuda")) {
        try {
          const engine = Engine.#openOn("cuda", opts.options);
          cudaUsable = true;
          return engine;
        } catch (err) {
          if (cudaUsable === true) throw err; // a GPU that worked before: a real error
          cudaUsable = false; // no GPU or no driver here: CPU from now on
        }
      }
      return Engine.#openOn("cpu", opts.options);
    }
    return Engine.#openOn(choice, opts.options);
  }

  static #openOn(backend: Backend, options: string | undefined): Engine {
    const lib = loadLibrary(backend);
    const out = new BigInt64Array(1);
    const status = lib.gc_ctx_create(cString(options ?? ""), out);
    if (status !== 0) {
      throw new GpuCoreError(STATUS_CODES[status] ?? "BACKEND", String(lib.gc_last_error()));
    }
    return new Engine(lib, Number(out[0]), backend);
  }

  get handle(): number {
    if (this.#handle === 0) throw new GpuCoreError("HANDLE", "engine is closed");
    return this.#handle;
  }

  get closed(): boolean {
    return this.#handle === 0;
  }

  /** Throws the C error for a non-zero status. */
  check(status: number): void {
    if (status === 0) return;
    const code = STATUS_CODES[status] ?? "BACKEND";
    throw new GpuCoreError(code, String(this.lib.gc_last_error()) || `gpu-core status ${code}`);
  }

  close(): void {
    if (this.#handle === 0) return;
    const h0 = this.#handle;
    this.#handle = 0;
    this.lib.gc_ctx_destroy(h0);
  }

  synchronize(): void {
    this.#call("gc_ctx_synchronize");
  }

  memory(): { inUse: number; peak: number } {
    const inUse = new BigInt64Array(1);
    const peak = new BigInt64Array(1);
    this.#call("gc_ctx_memory", inUse, peak);
    return { inUse: Number(inUse[0]), peak: Number(peak[0]) };
  }

  arena(initialBytes = 0): Arena {
    const out = new BigInt64Array(1);
    this.#call("gc_arena_create", initialBytes, out);
    return new Arena(this, Number(out[0]));
  }

  /** A new tensor with undefined contents (from `arena` when given). */
  tensor<D extends DType = "f32">(shape: readonly number[], opts: { dtype?: D; arena?: Arena } = {}): Tensor<D> {
    const dtype = (opts.dtype ?? "f32") as D;
    const dims = dimsArray(shape);
    const out = new BigInt64Array(1);
    const arena = opts.arena ?? null;
    this.check(this.lib.gc_tensor_new(this.handle, arena ? arena.handle : 0, DTYPES[dtype], shape.length, dims, out));
    const t = new Tensor(this, Number(out[0]), [...shape], dtype, arena);
    arena?.track(t);
    return t;
  }

  zeros(shape: readonly number[], opts: { arena?: Arena } = {}): Tensor<"f32"> {
    const t = this.tensor(shape, opts);
    this.fill(t, 0);
    return t;
  }

  fromArray(data: ArrayLike<number>, shape: readonly number[], opts: { arena?: Arena } = {}): Tensor<"f32"> {
    return this.tensor(shape, opts).write(data);
  }

  fromInt32(data: ArrayLike<number>, shape: readonly number[], opts: { arena?: Arena } = {}): Tensor<"i32"> {
    return this.tensor(shape, { ...opts, dtype: "i32" }).write(data);
  }

  // ---- elementwise and data movement -------------------------------------------------------

  fill(y: Tensor, value: number): void {
    this.#call("gc_fill", y, value);
  }
  copy(y: Tensor, x: Tensor): void {
    this.#call("gc_copy", y, x);
  }
  /** y = alpha * x + beta * y */
  axpby(y: Tensor, alpha: number, x: Tensor, beta: number): void {
    this.#call("gc_axpby", y, alpha, x, beta);
  }
  addForward(y: Tensor, a: Tensor, b: Tensor): void {
    this.#call("gc_add_forward", y, a, b);
  }
  addBackward(da: Optional<Tensor>, db: Optional<Tensor>, dy: Tensor): void {
    this.#call("gc_add_backward", da, db, dy);
  }
  transposeForward(y: Tensor, x: Tensor): void {
    this.#call("gc_transpose_forward", y, x);
  }
  transposeBackward(dx: Tensor, dy: Tensor): void {
    this.#call("gc_transpose_backward", dx, dy);
  }
  concatForward(y: Tensor, a: Tensor, b: Tensor): void {
    this.#call("gc_concat_forward", y, a, b);
  }
  concatBackward(da: Tensor, db: Tensor, dy: Tensor): void {
    this.#call("gc_concat_backward", da, db, dy);
  }
  upsample2xForward(y: Tensor, x: Tensor, layout: Layout = "nchw"): void {
    this.#call("gc_upsample2x_forward", y, x, layoutCode(layout));
  }
  upsample2xBackward(dx: Tensor, dy: Tensor, layout: Layout = "nchw"): void {
    this.#call("gc_upsample2x_backward", dx, dy, layoutCode(layout));
  }

  // ---- layers ----------------------------------------------------------------------------

  /** w is [O,C,K,K] in either layout; "nhwc" takes x [B,H,W,C] and writes y [B,Ho,Wo,O]. */
  conv2dForward(
    y: Tensor,
    x: Tensor,
    w: Tensor,
    b: Optional<Tensor>,
    stride: number,
    pad: number,
    layout: Layout = "nchw",
  ): void {
    this.#call("gc_conv2d_forward", y, x, w, b, stride, pad, layoutCode(layout));
  }
  conv2dBackward(
    dx: Optional<Tensor>,
    dw: Optional<Tensor>,
    db: Optional<Tensor>,
    dy: Tensor,
    x: Tensor,
    w: Tensor,
    stride: number,
    pad: number,
    layout: Layout = "nchw",
  ): void {
    this.#call("gc_conv2d_backward", dx, dw, db, dy, x, w, stride, pad, layoutCode(layout));
  }
  /** y = x w^T + b; with `accumulate`, y += x w^T + b (one GEMM with beta = 1). */
  linearForward(y: Tensor, x: Tensor, w: Tensor, b: Optional<Tensor>, accumulate = false): void {
    this.#call("gc_linear_forward", y, x, w, b, accumulate ? 1 : 0);
  }
  /** dx = dy w (dx += dy w with `accumulate`), dw += dy^T x, db += column sums of dy. */
  linearBackward(
    dx: Optional<Tensor>,
    dw: Optional<Tensor>,
    db: Optional<Tensor>,
    dy: Tensor,
    x: Tensor,
    w: Tensor,
    accumulate = false,
  ): void {
    this.#call("gc_linear_backward", dx, dw, db, dy, x, w, accumulate ? 1 : 0);
  }
  /** y = norm(x) (silu(norm(x)) with `silu`: the pair fused, nothing stored in between). */
  groupNormForward(
    y: Tensor,
    mean: Tensor,
    rstd: Tensor,
    x: Tensor,
    gamma: Optional<Tensor>,
    beta: Optional<Tensor>,
    groups: number,
    eps: number,
    silu = false,
    layout: Layout = "nchw",
  ): void {
    this.#call("gc_group_norm_forward", y, mean, rstd, x, gamma, beta, groups, eps, silu ? 1 : 0, layoutCode(layout));
  }
  /** beta is read only with `silu` (the norm's output is recomputed to take SiLU's derivative). */
  groupNormBackward(
    dx: Optional<Tensor>,
    dgamma: Optional<Tensor>,
    dbeta: Optional<Tensor>,
    dy: Tensor,
    x: Tensor,
    mean: Tensor,
    rstd: Tensor,
    gamma: Optional<Tensor>,
    beta: Optional<Tensor>,
    groups: number,
    silu = false,
    layout: Layout = "nchw",
  ): void {
    this.#call(
      "gc_group_norm_backward",
      dx,
      dgamma,
      dbeta,
      dy,
      x,
      mean,
      rstd,
      gamma,
      beta,
      groups,
      silu ? 1 : 0,
      layoutCode(layout),
    );
  }
  layerNormForward(
    y: Tensor,
    mean: Tensor,
    rstd: Tensor,
    x: Tensor,
    gamma: Optional<Tensor>,
    beta: Optional<Tensor>,
    eps: number,
  ): void {
    this.#call("gc_layer_norm_forward", y, mean, rstd, x, gamma, beta, eps);
  }
  layerNormBackward(
    dx: Optional<Tensor>,
    dgamma: Optional<Tensor>,
    dbeta: Optional<Tensor>,
    dy: Tensor,
    x: Tensor,
    mean: Tensor,
    rstd: Tensor,
    gamma: Optional<Tensor>,
  ): void {
    this.#call("gc_layer_norm_backward", dx, dgamma, dbeta, dy, x, mean, rstd, gamma);
  }
  activationForward(kind: Activation, y: Tensor, x: Tensor): void {
    this.#call("gc_activation_forward", activationCode(kind), y, x);
  }
  activationBackward(kind: Activation, dx: Tensor, dy: Tensor, x: Tensor): void {
    this.#call("gc_activation_backward", activationCode(kind), dx, dy, x);
  }
  gegluForward(y: Tensor, x: Tensor): void {
    this.#call("gc_geglu_forward", y, x);
  }
  gegluBackward(dx: Tensor, dy: Tensor, x: Tensor): void {
    this.#call("gc_geglu_backward", dx, dy, x);
  }
  /** y = geglu(x w1^T + b1) w2^T + b2 in one call: the CPU runs row blocks through all three
   * steps while they are in cache. w1 [2F,I], w2 [O,F]; h [..,2F] and g [..,F] receive the
   * intermediates when given (a backward needs them), inference passes neither. */
  gegluFeedForward(
    y: Tensor,
    x: Tensor,
    w1: Tensor,
    b1: Optional<Tensor>,
    w2: Tensor,
    b2: Optional<Tensor>,
    h: Optional<Tensor> = null,
    g: Optional<Tensor> = null,
  ): void {
    this.#call("gc_geglu_feedforward_forward", y, x, w1, b1, w2, b2, h, g);
  }
  /** scale 0 means 1/sqrt(head size); probs [B,H,Tq,Tk] keeps the softmax for attentionBackward,
   * null when no backward follows. */
  attentionForward(
    out: Tensor,
    probs: Optional<Tensor>,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: number,
    causal: boolean,
    scale = 0,
  ): void {
    this.#call("gc_attention_forward", out, probs, q, k, v, heads, causal ? 1 : 0, scale);
  }
  attentionBackward(
    dq: Optional<Tensor>,
    dk: Optional<Tensor>,
    dv: Optional<Tensor>,
    dout: Tensor,
    q: Tensor,
    k: Tensor,
    v: Tensor,
    probs: Tensor,
    heads: number,
    scale = 0,
  ): void {
    this.#call("gc_attention_backward", dq, dk, dv, dout, q, k, v, probs, heads, scale);
  }
  embeddingForward(y: Tensor, ids: Tensor<"i32">, tok: Tensor, pos: Optional<Tensor>): void {
    this.#call("gc_embedding_forward", y, ids, tok, pos);
  }
  embeddingBackward(dtok: Optional<Tensor>, dpos: Optional<Tensor>, dy: Tensor, ids: Tensor<"i32">): void {
    this.#call("gc_embedding_backward", dtok, dpos, dy, ids);
  }
  timestepEmbeddingForward(y: Tensor, t: Tensor, o: TimestepEmbeddingOptions): void {
    this.#call("gc_timestep_embedding_forward", y, t, o.flipSinToCos ? 1 : 0, o.freqShift, o.maxPeriod ?? 10000);
  }
  timestepEmbeddingBackward(dt: Tensor, dy: Tensor, t: Tensor, o: TimestepEmbeddingOptions): void {
    this.#call("gc_timestep_embedding_backward", dt, dy, t, o.flipSinToCos ? 1 : 0, o.freqShift, o.maxPeriod ?? 10000);
  }
  mseForward(loss: Tensor, a: Tensor, b: Tensor, weights: Optional<Tensor> = null): void {
    this.#call("gc_mse_forward", loss, a, b, weights);
  }
  mseBackward(
    da: Optional<Tensor>,
    db: Optional<Tensor>,
    dloss: number,
    a: Tensor,
    b: Tensor,
    weights: Optional<Tensor> = null,
  ): void {
    this.#call("gc_mse_backward", da, db, dloss, a, b, weights);
  }

  // ---- diffusion and DDPO ----------------------------------------------------------------

  /** x_prev = mean + sigma * noise; alphas are per sample ([B], host). */
  ddimStepSample(
    xPrev: Tensor,
    logProb: Optional<Tensor>,
    mean: Optional<Tensor>,
    xT: Tensor,
    eps: Tensor,
    noise: Tensor,
    alphaT: Alphas,
    alphaPrev: Alphas,
    eta: number,
    clipX0 = 0,
  ): void {
    const [a, ap] = this.#alphas(xT, alphaT, alphaPrev);
    this.#call("gc_ddim_step_sample", xPrev, logProb, mean, xT, eps, noise, a, ap, eta, clipX0);
  }
  ddimStepLogProb(
    logProb: Tensor,
    mean: Optional<Tensor>,
    xPrev: Tensor,
    xT: Tensor,
    eps: Tensor,
    alphaT: Alphas,
    alphaPrev: Alphas,
    eta: number,
    clipX0 = 0,
  ): void {
    const [a, ap] = this.#alphas(xT, alphaT, alphaPrev);
    this.#call("gc_ddim_step_log_prob", logProb, mean, xPrev, xT, eps, a, ap, eta, clipX0);
  }
  ddimStepLogProbBackward(
    deps: Tensor,
    dLogProb: Tensor,
    xPrev: Tensor,
    xT: Tensor,
    eps: Tensor,
    alphaT: Alphas,
    alphaPrev: Alphas,
    eta: number,
    clipX0 = 0,
  ): void {
    const [a, ap] = this.#alphas(xT, alphaT, alphaPrev);
    this.#call("gc_ddim_step_log_prob_backward", deps, dLogProb, xPrev, xT, eps, a, ap, eta, clipX0);
  }
  #alphas(xT: Tensor, alphaT: Alphas, alphaPrev: Alphas): [Float64Array, Float64Array] {
    const batch = xT.shape[0] ?? 0;
    if (alphaT.length !== batch || alphaPrev.length !== batch) {
      throw new GpuCoreError(
        "SHAPE",
        `ddim step: alphaT and alphaPrev need one value per sample (${batch}), got ${alphaT.length} and ${alphaPrev.length}`,
      );
    }
    return [toF64(alphaT), toF64(alphaPrev)];
  }
  ddpoIsForward(
    loss: Tensor,
    stats: Optional<Tensor>,
    logProb: Tensor,
    oldLogProb: Tensor,
    advantages: Tensor,
    clipRange: number,
    advClipMax: number,
  ): void {
    this.#call("gc_ddpo_is_forward", loss, stats, logProb, oldLogProb, advantages, clipRange, advClipMax);
  }
  ddpoIsBackward(
    dLogProb: Tensor,
    dloss: number,
    logProb: Tensor,
    oldLogProb: Tensor,
    advantages: Tensor,
    clipRange: number,
    advClipMax: number,
  ): void {
    this.#call("gc_ddpo_is_backward", dLogProb, dloss, logProb, oldLogProb, advantages, clipRange, advClipMax);
  }
  ddpoSfForward(loss: Tensor, logProb: Tensor, advantages: Tensor, advClipMax: number): void {
    this.#call("gc_ddpo_sf_forward", loss, logProb, advantages, advClipMax);
  }
  ddpoSfBackward(dLogProb: Tensor, dloss: number, advantages: Tensor, advClipMax: number): void {
    this.#call("gc_ddpo_sf_backward", dLogProb, dloss, advantages, advClipMax);
  }

  // ---- optimisation and randomness ---------------------------------------------------------

  adamwStep(params: Tensor, grads: Tensor, m: Tensor, v: Tensor, o: AdamWOptions): void {
    const [beta1, beta2, eps, weightDecay] = [o.beta1 ?? 0.9, o.beta2 ?? 0.999, o.eps ?? 1e-8, o.weightDecay ?? 1e-4];
    this.#call("gc_adamw_step", params, grads, m, v, o.lr, beta1, beta2, eps, weightDecay, o.step);
  }
  /** Returns the gradient norm before clipping; clips when maxNorm > 0. */
  clipGradNorm(grads: Tensor, maxNorm: number): number {
    const out = new Float64Array(1);
    this.#call("gc_clip_grad_norm", grads, maxNorm, out);
    return out[0] ?? Number.NaN;
  }
  /** Philox normals: element i is normal number (offset + i) of the stream `seed`. */
  randn(y: Tensor, seed: number | bigint, offset: number | bigint = 0): void {
    this.#call("gc_randn", y, BigInt.asUintN(64, BigInt(seed)), BigInt(offset));
  }

  /**
   * gc_<op>(ctx, ...args), each tensor passed as its handle and a missing optional one as 0, and
   * the C error thrown. The parameter names and types come from include/gc_api.def (ffi.ts).
   */
  #call<K extends keyof Calls>(fn: K, ...args: Calls[K]): void {
    const call = this.lib[fn] as (ctx: number, ...rest: unknown[]) => number;
    this.check(call(this.handle, ...args.map(handleOf)));
  }
}

/** The parameters after ctx of every context call, a tensor or none for each gc_handle. */
type Calls = ContextCalls<Optional<Tensor>>;

function handleOf(arg: Calls[keyof Calls][number]): unknown {
  return arg instanceof Tensor ? arg.handle : (arg ?? 0);
}

function layoutCode(layout: Layout): number {
  if (layout !== "nchw" && layout !== "nhwc") throw new GpuCoreError("INVALID_ARGUMENT", `unknown layout '${layout}'`);
  return layout === "nhwc" ? 1 : 0;
}

function activationCode(kind: Activation): number {
  const code = ACTIVATIONS[kind];
  if (code === undefined) throw new GpuCoreError("INVALID_ARGUMENT", `unknown activation '${kind}'`);
  return code;
}
