// Engine benchmark: the machine's own sgemm rate (one large linearForward, a single oneDNN f32
// matmul on the CPU backend, bench/sgemm.ts) and, in the same run, the GEMM-heavy ops at the
// shapes of a small 32x32 UNet with batch 32, forward and backward, as GFLOP/s and as a ratio to
// sgemm; convolutions in the models' channels-last layout, and one NCHW shape for comparison.
//
// The machine may be shared, so its speed drifts: the run alternates rounds of sgemm samples
// with rounds of op samples, and each op's ratio is taken against the sgemm samples of its own
// rounds. Times are medians after warm-up.
//
//   npm run bench -- engine [--json] [--rounds N] [--samples N] [--backend cpu|cuda]
import { type Backend, Engine, type Layout, type Tensor } from "../gpu-core/index.ts";
import { median } from "./sgemm.ts";

interface OpCase {
  op: string;
  dir: "forward" | "backward";
  shape: string;
  flops: number;
  run: () => void;
}

interface OpResult {
  op: string;
  dir: string;
  shape: string;
  ms: number;
  gflops: number;
  sgemm_gflops: number;
  ratio_to_sgemm: number;
}

interface Options {
  json: boolean;
  rounds: number;
  samples: number;
  backend: Backend;
}

function parseArgs(args: string[]): Options {
  const opts: Options = { json: false, rounds: 3, samples: 4, backend: "cpu" };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    const next = (): string => {
      const v = args[++i];
      if (v === undefined) throw new Error(`bench engine: ${a} needs a value`);
      return v;
    };
    if (a === "--json") opts.json = true;
    else if (a === "--rounds") opts.rounds = positiveInt(next(), a);
    else if (a === "--samples") opts.samples = positiveInt(next(), a);
    else if (a === "--backend") {
      const b = next();
      if (b !== "cpu" && b !== "cuda") throw new Error(`bench engine: unknown backend ${b}`);
      opts.backend = b;
    } else throw new Error(`bench engine: unknown argument ${a}`);
  }
  return opts;
}

function positiveInt(s: string, name: string): number {
  const n = Number(s);
  if (!Number.isInteger(n) || n < 1) throw new Error(`bench engine: ${name} must be a positive integer`);
  return n;
}

/** Seconds of one call, the engine synchronised after it. */
function timeOnce(engine: Engine, fn: () => void): number {
  const t0 = performance.now();
  fn();
  engine.synchronize();
  return (performance.now() - t0) / 1000;
}

class Workspace {
  readonly tensors: Tensor[] = [];
  #seed = 1;

  constructor(readonly engine: Engine) {}

  /** Standard normal tensor (values do not change GEMM speed; they keep softmax sane). */
  randn(shape: readonly number[]): Tensor {
    const t = this.engine.tensor(shape);
    this.engine.randn(t, this.#seed++);
    this.tensors.push(t);
    return t;
  }

  zeros(shape: readonly number[]): Tensor {
    const t = this.engine.zeros(shape);
    this.tensors.push(t);
    return t;
  }

  close(): void {
    for (const t of this.tensors) t.close();
    this.tensors.length = 0;
  }
}

/** Channels-last ("nhwc") is the models' layout; "nchw" rows keep the history comparable. */
function convCases(ws: Workspace, B: number, C: number, HW: number, K: number, layout: Layout): OpCase[] {
  const e = ws.engine;
  const pad = (K - 1) >> 1;
  const image = layout === "nhwc" ? [B, HW, HW, C] : [B, C, HW, HW];
  const x = ws.randn(image);
  const w = ws.randn([C, C, K, K]);
  const b = ws.randn([C]);
  const y = ws.zeros(image);
  const dy = ws.randn(image);
  const dx = ws.zeros(image);
  const dw = ws.zeros([C, C, K, K]);
  const db = ws.zeros([C]);
  const op = `conv2d_${K}x${K}`;
  const shape = `B${B} ${C}->${C}ch ${HW}x${HW}${layout === "nhwc" ? " nhwc" : ""}`;
  const gemm = 2 * B * C * HW * HW * C * K * K; // one of: y, dx (via dcol), dw
  return [
    { op, dir: "forward", shape, flops: gemm, run: () => e.conv2dForward(y, x, w, b, 1, pad, layout) },
    {
      op,
      dir: "backward",
      shape,
      flops: 2 * gemm,
      run: () => e.conv2dBackward(dx, dw, db, dy, x, w, 1, pad, layout),
    },
  ];
}

function linearCases(ws: Workspace, N: number, I: number, O: number): OpCase[] {
  const e = ws.engine;
  const x = ws.randn([N, I]);
  const w = ws.randn([O, I]);
  const b = ws.randn([O]);
  const y = ws.zeros([N, O]);
  const dy = ws.randn([N, O]);
  const dx = ws.zeros([N, I]);
  const dw = ws.zeros([O, I]);
  const db = ws.zeros([O]);
  const shape = `N${N} ${I}->${O}`;
  const gemm = 2 * N * I * O;
  return [
    { op: "linear", dir: "forward", shape, flops: gemm, run: () => e.linearForward(y, x, w, b) },
    { op: "linear", dir: "backward", shape, flops: 2 * gemm, run: () => e.linearBackward(dx, dw, db, dy, x, w) },
  ];
}

function attentionCases(ws: Workspace, B: number, T: number, C: number, heads: number): OpCase[] {
  const e = ws.engine;
  const Dh = C / heads;
  const q = ws.randn([B, T, C]);
  const k = ws.randn([B, T, C]);
  const v = ws.randn([B, T, C]);
  const out = ws.zeros([B, T, C]);
  const probs = ws.zeros([B, heads, T, T]);
  const dout = ws.randn([B, T, C]);
  const dq = ws.zeros([B, T, C]);
  const dk = ws.zeros([B, T, C]);
  const dv = ws.zeros([B, T, C]);
  const shape = `B${B} T${T} ${heads}x${Dh}`;
  const gemm = 2 * B * heads * T * T * Dh; // one of: q k^T, p v, dv, dp, dq, dk
  e.attentionForward(out, probs, q, k, v, heads, false); // probs for the backward
  return [
    {
      op: "attention",
      dir: "forward",
      shape,
      flops: 2 * gemm,
      run: () => e.attentionForward(out, probs, q, k, v, heads, false),
    },
    {
      op: "attention",
      dir: "backward",
      shape,
      flops: 4 * gemm,
      run: () => e.attentionBackward(dq, dk, dv, dout, q, k, v, probs, heads),
    },
  ];
}

function cell(s: string, n: number, right = false): string {
  return right ? s.padStart(n) : s.padEnd(n);
}

export async function main(args: string[]): Promise<void> {
  const opts = parseArgs(args);
  const engine = Engine.open({ backend: opts.backend });
  const ws = new Workspace(engine);
  try {
    // sgemm reference: y[n,n] = x[n,n] w[n,n]^T without bias is exactly one sgemm.
    const n = 1536;
    const sx = ws.randn([n, n]);
    const sw = ws.randn([n, n]);
    const sy = ws.zeros([n, n]);
    const sgemmFlops = 2 * n * n * n;
    const sgemm = (): number => sgemmFlops / timeOnce(engine, () => engine.linearForward(sy, sx, sw, null)) / 1e9;
    for (let i = 0; i < 3; i++) sgemm(); // warm-up: thread pool, page faults

    const B = 32;
    const cases: OpCase[] = [
      ...convCases(ws, B, 64, 32, 3, "nhwc"),
      ...convCases(ws, B, 128, 16, 3, "nhwc"),
      ...convCases(ws, B, 64, 32, 1, "nhwc"),
      ...convCases(ws, B, 128, 16, 1, "nhwc"),
      ...convCases(ws, B, 64, 32, 3, "nchw"),
      ...linearCases(ws, B * 32 * 32, 64, 64),
      ...linearCases(ws, B * 16 * 16, 128, 128),
      ...attentionCases(ws, B, 8 * 8, 128, 4),
      ...attentionCases(ws, B, 16 * 16, 64, 2),
    ];

    const allSgemm: number[] = [];
    const results: OpResult[] = [];
    for (const c of cases) {
      const opSamples: number[] = [];
      const refSamples: number[] = [];
      for (let r = 0; r < opts.rounds; r++) {
        for (let i = 0; i < 2; i++) refSamples.push(sgemm());
        c.run(); // warm-up after the sgemm round (scratch buffers, caches, thread hand-over)
        for (let i = 0; i < opts.samples; i++) opSamples.push(timeOnce(engine, c.run));
      }
      allSgemm.push(...refSamples);
      const sec = median(opSamples);
      const gflops = c.flops / sec / 1e9;
      const ref = median(refSamples);
      results.push({
        op: c.op,
        dir: c.dir,
        shape: c.shape,
        ms: sec * 1e3,
        gflops,
        sgemm_gflops: ref,
        ratio_to_sgemm: gflops / ref,
      });
    }
    const sgemmGflops = median(allSgemm);

    console.log(
      `gpu-core ${engine.backend}: sgemm ${n}^3 via linearForward: ${sgemmGflops.toFixed(1)} GFLOP/s (median)`,
    );
    console.log(
      `${cell("op", 11)} ${cell("dir", 9)} ${cell("shape", 26)} ${cell("ms", 9, true)} ${cell("GFLOP/s", 8, true)} ${cell("ratio", 6, true)}`,
    );
    for (const r of results) {
      console.log(
        `${cell(r.op, 11)} ${cell(r.dir, 9)} ${cell(r.shape, 26)} ${cell(r.ms.toFixed(3), 9, true)} ${cell(r.gflops.toFixed(1), 8, true)} ${cell(r.ratio_to_sgemm.toFixed(2), 6, true)}`,
      );
    }
    console.log("ratio: op GFLOP/s over the median sgemm GFLOP/s measured in the op's own rounds");
    if (opts.json) {
      const round = (x: number): number => Math.round(x * 1000) / 1000;
      console.log(
        JSON.stringify({
          sgemm_gflops: round(sgemmGflops),
          ops: results.map((r) => ({
            op: r.op,
            dir: r.dir,
            shape: r.shape,
            ms: round(r.ms),
            gflops: round(r.gflops),
            ratio_to_sgemm: round(r.ratio_to_sgemm),
          })),
        }),
      );
    }
  } finally {
    ws.close();
    engine.close();
  }
}

if (import.meta.main) await main(process.argv.slice(2));
