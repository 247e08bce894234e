// The op-test harness of gpu-core (after ggml's test-backend-ops): one OpCase describes an op's
// inputs, outputs, float64 reference and engine calls; checkOpCase runs it through the engine,
// compares the forward with the reference by normalised error, checks the backward against
// central finite differences of the reference, and checks that optional outputs and gradients can
// be passed as null. Every number that crosses into the engine is fp32, so the reference is always
// evaluated on the fp32-rounded values the engine sees.
import { type Engine, GpuCoreError, type Tensor } from "../../gpu-core/index.ts";

// ---- random numbers ------------------------------------------------------------------------

/** Deterministic generator (mulberry32 + Box-Muller), seeded per test case. */
export class Rng {
  #state: number;
  #spare: number | null = null;

  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    this.#state = (this.#state + 0x6d2b79f5) >>> 0;
    let t = this.#state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }

  range(lo: number, hi: number): number {
    return lo + (hi - lo) * this.uniform();
  }

  int(n: number): number {
    return Math.floor(this.uniform() * n);
  }

  normal(): number {
    if (this.#spare !== null) {
      const s = this.#spare;
      this.#spare = null;
      return s;
    }
    const u = 1 - this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.#spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** n fp32-representable values from `f` (default N(0,1)). */
  array(n: number, f: () => number = () => this.normal()): Float64Array {
    const a = new Float64Array(n);
    for (let i = 0; i < n; i++) a[i] = Math.fround(f());
    return a;
  }

  /** k distinct indices of [0, n), sorted. */
  sample(n: number, k: number): number[] {
    const picked = new Set<number>();
    while (picked.size < Math.min(k, n)) picked.add(this.int(n));
    return [...picked].sort((a, b) => a - b);
  }
}

/** The run's base seed: GPU_CORE_TEST_SEED to reproduce a run, else fresh from crypto. */
export function baseSeed(): number {
  const env = process.env.GPU_CORE_TEST_SEED;
  if (env) return Number(env) >>> 0;
  return crypto.getRandomValues(new Uint32Array(1))[0] ?? Date.now() >>> 0;
}

/** A per-case seed derived from the base seed and the case's name (stable across table edits). */
export function caseSeed(base: number, name: string): number {
  let h = base ^ 0x9e3779b9;
  for (let i = 0; i < name.length; i++) h = Math.imul(h ^ name.charCodeAt(i), 0x01000193);
  return h >>> 0;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

// ---- error measures -------------------------------------------------------------------------

function norm(a: ArrayLike<number>): number {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += (a[i] as number) ** 2;
  return Math.sqrt(s);
}

/** ||got - want|| / ||want||; an absolute error where want is (almost) all zeros. */
export function relError(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < want.length; i++) d += ((got[i] as number) - (want[i] as number)) ** 2;
  const w = norm(want);
  return Math.sqrt(d) / (w > 1e-30 ? w : 1);
}

/** max that treats NaN as "nothing yet". */
function maxOf(acc: number, v: number): number {
  return Number.isNaN(acc) ? v : Math.max(acc, v);
}

/** Index of the first non-finite element, or -1. */
export function firstNonFinite(a: ArrayLike<number>): number {
  for (let i = 0; i < a.length; i++) if (!Number.isFinite(a[i] as number)) return i;
  return -1;
}

// ---- op cases --------------------------------------------------------------------------------

/** act: gradient written (=), poisoned with NaN first. param: gradient accumulates (+=), pre-filled
 * with a random value. const: no gradient (data, ids, advantages, ...). */
export type Role = "act" | "param" | "const";

export interface Input {
  shape: number[];
  data: Float64Array; // fp32-representable values (ids: integers)
  role: Role;
  dtype?: "i32";
}

export type Values<K extends string> = Record<K, Float64Array | null>;
export type Tensors<K extends string> = Record<K, Tensor | null>;

/** One op on one set of shapes. I: input names, O: output names. An input set to null is absent
 * (an optional argument passed as 0). Method syntax keeps cases of different I/O storable together. */
export interface OpCase<I extends string, O extends string> {
  inputs: Record<I, Input | null>;
  outputs: Record<O, number[]>;
  /** Outputs that enter L = sum_o sum(out_o * probe_o); the rest is saved state (mean, rstd, probs). */
  loss: NoInfer<O>[];
  /** Outputs the forward may be given as null. */
  optionalOutputs?: NoInfer<O>[];
  /** Gradients the backward may be given as null. */
  nullableGrads?: NoInfer<I>[];
  /** Float64 reference of the forward. `fd` is true when taking finite differences (smooth math). */
  ref(x: Values<I>, fd: boolean): Record<O, Float64Array>;
  forward(e: Engine, x: Tensors<I>, y: Tensors<O>): void;
  /** Backward with upstream `probe` (scalar outputs: the value probeHost[o][0] as dloss);
   * y holds the forward's outputs (saved state); g has a tensor or null per input. */
  backward?(e: Engine, x: Tensors<I>, y: Tensors<O>, probe: Tensors<O>, probeHost: Values<O>, g: Tensors<I>): void;
  /** Outputs compared element by element rather than by norm (small stats next to large ones). */
  perElement?: NoInfer<O>[];
}

/** Erases a case's key types for the table (method bivariance makes this assignment safe here). */
export function defineCase<I extends string, O extends string>(c: OpCase<I, O>): OpCase<string, string> {
  return c;
}

export interface CaseReport {
  fwdErr: number; // max over outputs of the normalised forward error
  bwdErr: number; // max over gradients of the finite-difference errors, sampled and directional (NaN: none)
  failures: string[];
}

export const FWD_TOL = 1e-5;
export const BWD_TOL = 1e-3;
const FD_SAMPLES = 16; // elements per tensor checked by finite differences ...
const FD_FULL = 96; // ... or all of them when the tensor has at most this many
const FD_STEP = 1e-6; // relative step of the central differences

/** Runs one case; returns its errors and the list of failed checks (empty when it passes). */
export function checkOpCase(e: Engine, c: OpCase<string, string>, rng: Rng, tag: string): CaseReport {
  const failures: string[] = [];
  const owned: Tensor[] = [];
  const report: CaseReport = { fwdErr: Number.NaN, bwdErr: Number.NaN, failures };
  const fail = (msg: string) => failures.push(`${tag}: ${msg}`);
  const track = <T extends Tensor>(t: T): T => {
    owned.push(t);
    return t;
  };
  const inputNames = Object.keys(c.inputs);
  const outputNames = Object.keys(c.outputs);
  const input = (name: string): Input | null => c.inputs[name] ?? null;
  const outShape = (name: string): number[] => c.outputs[name] ?? [];

  // A call that fails reports the gpu-core status (UNSUPPORTED is a failure, never a skip).
  const attempt = (what: string, f: () => void): boolean => {
    try {
      f();
      return true;
    } catch (err) {
      const code = err instanceof GpuCoreError ? err.code : "exception";
      fail(`${what} threw ${code}: ${err instanceof Error ? err.message : String(err)}`);
      return false;
    }
  };

  try {
    // Inputs, on the engine and as float64 values for the reference.
    const xs: Values<string> = {};
    const xt: Tensors<string> = {};
    for (const name of inputNames) {
      const inp = input(name);
      xs[name] = inp ? inp.data : null;
      xt[name] = !inp
        ? null
        : inp.dtype === "i32"
          ? track(e.fromInt32(Int32Array.from(inp.data), inp.shape))
          : track(e.fromArray(Float32Array.from(inp.data), inp.shape));
    }
    const want = c.ref(xs, false);

    // 1. Forward: poisoned outputs, every element finite, normalised error vs the reference.
    const newOutputs = (skip: string | null): Tensors<string> => {
      const ys: Tensors<string> = {};
      for (const name of outputNames) {
        if (name === skip) {
          ys[name] = null;
          continue;
        }
        const t = track(e.tensor(outShape(name)));
        e.fill(t, Number.NaN);
        ys[name] = t;
      }
      return ys;
    };
    const compareOutputs = (ys: Tensors<string>, label: string) => {
      for (const name of outputNames) {
        const t = ys[name];
        const ref = want[name];
        if (!t || !ref) continue;
        const got = t.read();
        const bad = firstNonFinite(got);
        if (bad >= 0) {
          fail(`${label}: output ${name}[${bad}] = ${got[bad]} (not finite; outputs were poisoned with NaN)`);
          continue;
        }
        const perElement = c.perElement?.includes(name) ?? false;
        const err = perElement
          ? Math.max(...Array.from(ref, (w, i) => relError([got[i] as number], [w])))
          : relError(got, ref);
        report.fwdErr = maxOf(report.fwdErr, err);
        if (!(err < FWD_TOL)) fail(`${label}: output ${name} relative error ${err.toExponential(2)} >= ${FWD_TOL}`);
      }
    };
    const ys = newOutputs(null);
    if (!attempt("forward", () => c.forward(e, xt, ys))) return report;
    compareOutputs(ys, "forward");
    for (const name of c.optionalOutputs ?? []) {
      const partial = newOutputs(name);
      if (attempt(`forward with ${name} = null`, () => c.forward(e, xt, partial)))
        compareOutputs(partial, `forward with ${name} = null`);
    }

    // 2. Backward vs central differences of the float64 reference of L = sum(out * probe).
    const backward = c.backward;
    if (!backward) return report;
    const probeHost: Values<string> = {};
    const probe: Tensors<string> = {};
    for (const name of outputNames) {
      if (!c.loss.includes(name)) {
        probeHost[name] = null;
        probe[name] = null;
        continue;
      }
      const p = rng.array(numel(outShape(name)), () => rng.range(0.5, 1.5) * (rng.uniform() < 0.5 ? -1 : 1));
      probeHost[name] = p;
      probe[name] = track(e.fromArray(Float32Array.from(p), outShape(name)));
    }
    const lossOf = (x: Values<string>): number => {
      const out = c.ref(x, true);
      let L = 0;
      for (const name of c.loss) {
        const o = out[name];
        const p = probeHost[name];
        if (!o || !p) throw new Error(`case has no output or probe '${name}'`);
        for (let i = 0; i < o.length; i++) L += (o[i] as number) * (p[i] as number);
      }
      return L;
    };
    const diffNames = inputNames.filter((n) => {
      const inp = input(n);
      return inp !== null && inp.role !== "const";
    });
    // Pre-fill: params get a random value (checked as prefill + gradient), activations NaN.
    const prefill = new Map<string, Float64Array>();
    for (const name of diffNames) {
      const inp = input(name) as Input;
      prefill.set(
        name,
        inp.role === "param" ? rng.array(inp.data.length) : new Float64Array(inp.data.length).fill(NaN),
      );
    }
    const newGrads = (only: string | null | "none"): Tensors<string> => {
      const g: Tensors<string> = {};
      for (const name of inputNames) {
        const pre = prefill.get(name);
        if (!pre || only === "none" || (only !== null && only !== name)) {
          g[name] = null;
          continue;
        }
        g[name] = track(e.fromArray(Float32Array.from(pre), (input(name) as Input).shape));
      }
      return g;
    };
    const grads = newGrads(null);
    if (!attempt("backward", () => backward.call(c, e, xt, ys, probe, probeHost, grads))) return report;
    const gradOf = new Map<string, Float32Array>();
    for (const name of diffNames) {
      const inp = input(name) as Input;
      const got = (grads[name] as Tensor).read() as Float32Array;
      gradOf.set(name, got);
      const kind = inp.role === "param" ? "(+=)" : "(=)";
      const bad = firstNonFinite(got);
      if (bad >= 0) {
        fail(`backward: d${name}${kind}[${bad}] = ${got[bad]} (not finite)`);
        continue;
      }
      const pre = prefill.get(name) as Float64Array;
      const n = inp.data.length;
      const idx = n <= FD_FULL ? [...Array(n).keys()] : rng.sample(n, FD_SAMPLES);
      const engineGrad: number[] = [];
      const fdGrad: number[] = [];
      const x = { ...xs };
      const perturbed = Float64Array.from(inp.data);
      x[name] = perturbed;
      for (const i of idx) {
        const v = inp.data[i] as number;
        const h = FD_STEP * Math.max(1, Math.abs(v));
        perturbed[i] = v + h;
        const lp = lossOf(x);
        perturbed[i] = v - h;
        const lm = lossOf(x);
        perturbed[i] = v;
        fdGrad.push((lp - lm) / (2 * h));
        engineGrad.push((got[i] as number) - (inp.role === "param" ? (pre[i] as number) : 0));
      }
      // Directional derivative along a random V over the whole tensor: <g, V> against
      // (L(x + hV) - L(x - hV)) / 2h covers every element at once (a missed or wrong block of a
      // parallel loop shows here even when the sampled elements miss it). |<g,V>| ~ ||g||.
      const dir = rng.array(n);
      let rms = 0;
      for (const v of inp.data) rms += v * v;
      const hd = FD_STEP * Math.max(1, Math.sqrt(rms / n));
      for (let i = 0; i < n; i++) perturbed[i] = (inp.data[i] as number) + hd * (dir[i] as number);
      const ldp = lossOf(x);
      for (let i = 0; i < n; i++) perturbed[i] = (inp.data[i] as number) - hd * (dir[i] as number);
      const ldm = lossOf(x);
      perturbed.set(inp.data);
      let dot = 0;
      let gNorm = 0;
      for (let i = 0; i < n; i++) {
        const gi = (got[i] as number) - (inp.role === "param" ? (pre[i] as number) : 0);
        dot += gi * (dir[i] as number);
        gNorm += gi * gi;
      }
      const fdDot = (ldp - ldm) / (2 * hd);
      const dirErr = Math.abs(dot - fdDot) / Math.max(Math.sqrt(gNorm), Math.abs(fdDot), 1e-30);
      report.bwdErr = maxOf(report.bwdErr, dirErr);
      if (!(dirErr < BWD_TOL))
        fail(
          `backward: d${name}${kind} along a random direction: engine ${dot.toPrecision(7)} vs fd ${fdDot.toPrecision(7)} (relative error ${dirErr.toExponential(2)} >= ${BWD_TOL})`,
        );

      const err = relError(engineGrad, fdGrad);
      report.bwdErr = maxOf(report.bwdErr, err);
      if (!(err < BWD_TOL)) {
        const worst = engineGrad
          .map((g, k) => ({ i: idx[k], g, fd: fdGrad[k] as number }))
          .sort((a, b) => Math.abs(b.g - b.fd) - Math.abs(a.g - a.fd))
          .slice(0, 3)
          .map((w) => `[${w.i}] engine ${w.g.toPrecision(6)} vs fd ${w.fd.toPrecision(6)}`)
          .join(", ");
        fail(
          `backward: d${name}${kind} relative error ${err.toExponential(2)} >= ${BWD_TOL} over ${idx.length} elements (worst: ${worst})`,
        );
      }
    }

    // 3. Optional gradients passed as null: each alone gives the same result; all null is fine.
    const nullable = c.nullableGrads ?? [];
    if (nullable.length > 0) {
      for (const name of nullable) {
        if (!prefill.has(name)) continue;
        const g = newGrads(name);
        if (!attempt(`backward with only d${name}`, () => backward.call(c, e, xt, ys, probe, probeHost, g))) continue;
        const alone = (g[name] as Tensor).read();
        const full = gradOf.get(name) as Float32Array;
        let scale = 1e-30;
        for (const v of full) scale = Math.max(scale, Math.abs(v));
        let diff = 0;
        for (let i = 0; i < full.length; i++)
          diff = Math.max(diff, Math.abs((alone[i] as number) - (full[i] as number)));
        if (!(diff <= 1e-6 * scale))
          fail(`backward with only d${name} (others null) differs from the full call by ${diff.toExponential(2)}`);
      }
      if (diffNames.every((n) => nullable.includes(n))) {
        const g = newGrads("none");
        attempt("backward with every gradient null", () => backward.call(c, e, xt, ys, probe, probeHost, g));
      }
    }
    return report;
  } finally {
    for (const t of owned) t.close();
  }
}

// ---- summary ---------------------------------------------------------------------------------

export interface SummaryRow {
  name: string;
  report: CaseReport;
}

function fmt(v: number): string {
  return Number.isNaN(v) ? "-" : v.toExponential(2);
}

/** A table of observed errors, one row per case. */
export function formatSummary(title: string, seed: number, rows: SummaryRow[]): string {
  const width = Math.max(...rows.map((r) => r.name.length), 4);
  const lines = [
    `${title} (seed ${seed}; GPU_CORE_TEST_SEED=${seed} reproduces)`,
    `${"case".padEnd(width)}  ${"fwd err".padStart(9)}  ${"bwd err".padStart(9)}  result`,
  ];
  for (const { name, report } of rows) {
    const result = report.failures.length === 0 ? "pass" : `FAIL (${report.failures.length})`;
    lines.push(
      `${name.padEnd(width)}  ${fmt(report.fwdErr).padStart(9)}  ${fmt(report.bwdErr).padStart(9)}  ${result}`,
    );
  }
  return lines.join("\n");
}
