// CUDA backend benchmark: the device's own ceilings measured in this run (cuBLAS sgemm through a
// bias-free linearForward, and device-to-device copy bandwidth through engine.copy, counting bytes
// read plus bytes written), then per op either achieved TFLOP/s against sgemm (GEMM-bound ops:
// conv2d, linear, attention) or achieved GB/s against copy (memory-bound ops: the minimum bytes
// an op must move, each input read once and each output written once), at the shapes of the
// shipped 32x32 UNet; then UNet forward and forward+backward images/s at batch 32 and 256.
// Times are host-clock medians over rounds of back-to-back launches ended by a synchronise, so
// launch gaps count (what the engine delivers, not a kernel-only time).
//
//   npm run bench -- cuda [--json] [--rounds N]
import { Engine, type Tensor } from "../gpu-core/index.ts";
import { WordTokenizer } from "../services/lib/data/tokenizer.ts";
import { FlopCounter } from "../services/lib/models/flops.ts";
import { Graph } from "../services/lib/models/graph.ts";
import { combineSources } from "../services/lib/models/parameters.ts";
import { EMOJI_SCHEDULER, emojiTextEncoderConfig, emojiUNetConfig } from "../services/lib/models/presets.ts";
import { TextToImageModel } from "../services/lib/models/text-to-image.ts";
import { PRETRAIN_DEFAULTS } from "../services/lib/training/pretrain.ts";
import { median } from "./sgemm.ts";

interface Case {
  op: string;
  shape: string;
  /** FLOPs (GEMM-bound) or bytes (memory-bound) of one run. */
  work: number;
  bound: "flops" | "bytes";
  run: () => void;
}

const F = 4; // bytes per fp32

/** Median seconds per run of fn: `rounds` rounds of `reps` launches, each round synchronised. */
function secondsPerRun(engine: Engine, fn: () => void, rounds: number, reps: number): number {
  fn();
  engine.synchronize();
  const samples: number[] = [];
  for (let r = 0; r < rounds; r++) {
    const t0 = performance.now();
    for (let i = 0; i < reps; i++) fn();
    engine.synchronize();
    samples.push((performance.now() - t0) / 1000 / reps);
  }
  return median(samples);
}

/** Launches per round so one round lasts about 20 ms (at least 1, at most 200). */
function repsFor(engine: Engine, fn: () => void): number {
  fn();
  engine.synchronize();
  const t0 = performance.now();
  fn();
  engine.synchronize();
  const ms = performance.now() - t0;
  return Math.max(1, Math.min(200, Math.round(20 / Math.max(ms, 1e-3))));
}

class Workspace {
  readonly tensors: Tensor[] = [];
  #seed = 1;
  constructor(readonly engine: Engine) {}
  randn(shape: readonly number[], scale = 1): Tensor {
    const t = this.engine.tensor(shape);
    this.engine.randn(t, this.#seed++);
    if (scale !== 1) this.engine.axpby(t, scale, t, 0);
    this.tensors.push(t);
    return t;
  }
  close(): void {
    for (const t of this.tensors) t.close();
  }
}

function opCases(ws: Workspace, B: number): Case[] {
  const e = ws.engine;
  const cases: Case[] = [];
  const n = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
  for (const [C, HW, K] of [
    [64, 32, 3],
    [128, 16, 3],
    [64, 32, 1],
  ] as const) {
    const pad = (K - 1) >> 1;
    const x = ws.randn([B, C, HW, HW]);
    const w = ws.randn([C, C, K, K], 1 / Math.sqrt(C * K * K));
    const b = ws.randn([C]);
    const y = ws.randn([B, C, HW, HW]);
    const [dx, dw, db] = [ws.randn(x.shape), ws.randn(w.shape), ws.randn([C])];
    const flops = 2 * B * C * HW * HW * C * K * K;
    const shape = `${B}x${C}x${HW}x${HW} k${K}`;
    cases.push({
      op: "conv2d fwd",
      shape,
      work: flops,
      bound: "flops",
      run: () => e.conv2dForward(y, x, w, b, 1, pad),
    });
    cases.push({
      op: "conv2d bwd",
      shape,
      work: 2 * flops,
      bound: "flops",
      run: () => e.conv2dBackward(dx, dw, db, y, x, w, 1, pad),
    });
  }
  for (const [N, I, O] of [
    [B * 32 * 32, 64, 64],
    [B * 16 * 16, 128, 512],
  ] as const) {
    const x = ws.randn([N, I]);
    const w = ws.randn([O, I], 1 / Math.sqrt(I));
    const y = ws.randn([N, O]);
    const [dx, dw] = [ws.randn([N, I]), ws.randn([O, I])];
    const shape = `${N}x${I}->${O}`;
    cases.push({
      op: "linear fwd",
      shape,
      work: 2 * N * I * O,
      bound: "flops",
      run: () => e.linearForward(y, x, w, null),
    });
    cases.push({
      op: "linear bwd",
      shape,
      work: 4 * N * I * O,
      bound: "flops",
      run: () => e.linearBackward(dx, dw, null, y, x, w),
    });
  }
  for (const [T, Tk, W, H] of [
    [16 * 16, 16 * 16, 64, 2],
    [8 * 8, 8 * 8, 128, 4],
    [16 * 16, 16, 64, 2],
  ] as const) {
    const q = ws.randn([B, T, W]);
    const k = ws.randn([B, Tk, W]);
    const v = ws.randn([B, Tk, W]);
    const out = ws.randn([B, T, W]);
    const probs = ws.randn([B, H, T, Tk]);
    const [dq, dk, dv] = [ws.randn(q.shape), ws.randn(k.shape), ws.randn(v.shape)];
    const gemm = 2 * B * T * Tk * W;
    const shape = `B${B} T${T} Tk${Tk} W${W} h${H}`;
    cases.push({
      op: "attention fwd",
      shape,
      work: 2 * gemm,
      bound: "flops",
      run: () => e.attentionForward(out, probs, q, k, v, H, false),
    });
    cases.push({
      op: "attention bwd",
      shape,
      work: 4 * gemm,
      bound: "flops",
      run: () => e.attentionBackward(dq, dk, dv, out, q, k, v, probs, H),
    });
  }
  // Memory-bound ops at the 32x32x64 level of the UNet: bytes = inputs read + outputs written.
  const img = [B, 64, 32, 32];
  const N = n(img);
  const x = ws.randn(img);
  const y = ws.randn(img);
  const dy = ws.randn(img);
  const dx = ws.randn(img);
  const gamma = ws.randn([64]);
  const beta = ws.randn([64]);
  const mean = ws.randn([B, 32]);
  const rstd = ws.randn([B, 32]);
  const [dgamma, dbeta] = [ws.randn([64]), ws.randn([64])];
  const shape = `${img.join("x")}`;
  cases.push({ op: "copy", shape, work: 2 * N * F, bound: "bytes", run: () => e.copy(y, x) });
  cases.push({
    op: "group_norm fwd",
    shape,
    work: 2 * N * F,
    bound: "bytes",
    run: () => e.groupNormForward(y, mean, rstd, x, gamma, beta, 32, 1e-5),
  });
  cases.push({
    op: "group_norm bwd",
    shape,
    work: 3 * N * F,
    bound: "bytes",
    run: () => e.groupNormBackward(dx, dgamma, dbeta, dy, x, mean, rstd, gamma, beta, 32),
  });
  cases.push({ op: "silu fwd", shape, work: 2 * N * F, bound: "bytes", run: () => e.activationForward("silu", y, x) });
  cases.push({
    op: "silu bwd",
    shape,
    work: 3 * N * F,
    bound: "bytes",
    run: () => e.activationBackward("silu", dx, dy, x),
  });
  const half = ws.randn([B, 64, 16, 16]);
  cases.push({
    op: "upsample2x fwd",
    shape,
    work: 1.25 * N * F,
    bound: "bytes",
    run: () => e.upsample2xForward(y, half),
  });
  const cat = ws.randn([B, 128, 32, 32]);
  cases.push({
    op: "concat fwd",
    shape: `2x ${shape}`,
    work: 4 * N * F,
    bound: "bytes",
    run: () => e.concatForward(cat, x, y),
  });
  const bias = ws.randn([B, 64]);
  cases.push({ op: "add bcast fwd", shape, work: 2 * N * F, bound: "bytes", run: () => e.addForward(y, x, bias) });
  // NCHW -> NLC, the layout change around the UNet's attention blocks
  const flat = x.reshape([B, 64, 32 * 32]);
  ws.tensors.push(flat);
  const tr = ws.randn([B, 32 * 32, 64]);
  cases.push({ op: "transpose", shape, work: 2 * N * F, bound: "bytes", run: () => e.transposeForward(tr, flat) });
  const rows = ws.randn([B * 256, 128]);
  const rowsOut = ws.randn([B * 256, 128]);
  const [lm, lr] = [ws.randn([B * 256]), ws.randn([B * 256])];
  const [lg, lb] = [ws.randn([128]), ws.randn([128])];
  cases.push({
    op: "layer_norm fwd",
    shape: `${B * 256}x128`,
    work: 2 * B * 256 * 128 * F,
    bound: "bytes",
    run: () => e.layerNormForward(rowsOut, lm, lr, rows, lg, lb, 1e-5),
  });
  const gx = ws.randn([B * 256, 1024]);
  const gy = ws.randn([B * 256, 512]);
  cases.push({
    op: "geglu fwd",
    shape: `${B * 256}x1024`,
    work: 1.5 * B * 256 * 1024 * F,
    bound: "bytes",
    run: () => e.gegluForward(gy, gx),
  });
  const lat = [B, 3, 32, 32];
  const [xt, eps, noise, xp, lp] = [ws.randn(lat), ws.randn(lat), ws.randn(lat), ws.randn(lat), ws.randn([B])];
  const at = Array.from({ length: B }, () => 0.5);
  const ap = Array.from({ length: B }, () => 0.6);
  cases.push({
    op: "ddim_step",
    shape: lat.join("x"),
    work: 4 * n(lat) * F,
    bound: "bytes",
    run: () => e.ddimStepSample(xp, lp, null, xt, eps, noise, at, ap, 1),
  });
  const P = 1 << 24; // 16M parameters
  const [p, g, m, v2] = [ws.randn([P], 0.1), ws.randn([P], 1e-3), ws.randn([P], 0), ws.randn([P], 0)];
  e.fill(m, 0);
  e.fill(v2, 0);
  let step = 0;
  cases.push({
    op: "adamw",
    shape: `${P}`,
    work: 7 * P * F, // p, g, m, v read; p, m, v written
    bound: "bytes",
    run: () => e.adamwStep(p, g, m, v2, { lr: 1e-6, step: ++step }),
  });
  cases.push({ op: "randn", shape: `${P}`, work: P * F, bound: "bytes", run: () => e.randn(p, 7, 0) });
  return cases;
}

/** UNet forward and forward+backward images/s of the shipped architecture at batch B. */
function unetRates(engine: Engine, B: number, rounds: number): { fwd: number; train: number; gflopFwd: number } {
  const tokenizer = WordTokenizer.fromCaptions(["cat face"]);
  const unet = emojiUNetConfig(PRETRAIN_DEFAULTS.blockOutChannels, PRETRAIN_DEFAULTS.textHidden);
  const model = TextToImageModel.create(
    engine,
    { unet, textEncoder: emojiTextEncoderConfig(64, PRETRAIN_DEFAULTS.textHidden), scheduler: EMOJI_SCHEDULER },
    tokenizer,
    1,
  );
  const size = model.unetConfig.sample_size;
  const counter = new FlopCounter();
  model.predictNoise(
    counter,
    counter.input([B, 3, size, size]),
    counter.input([B]),
    counter.input([B, tokenizer.maxLength, PRETRAIN_DEFAULTS.textHidden]),
  );
  const source = combineSources(model.unetSource(), model.textSource());
  const arena = engine.arena(256 << 20);
  const context = engine.tensor([B, tokenizer.maxLength, PRETRAIN_DEFAULTS.textHidden]);
  const x = engine.tensor([B, 3, size, size]);
  const t = engine.fromArray(
    Array.from({ length: B }, (_, i) => (i * 31) % 1000),
    [B],
  );
  const seed = engine.tensor([B, 3, size, size]);
  for (const [k, tensor] of [context, x, seed].entries()) engine.randn(tensor, k + 1, 0);
  const step = (withBackward: boolean) => {
    const g = new Graph(engine, source, arena);
    const eps = model.predictNoise(g, x, t, context);
    if (withBackward) g.backward(eps, seed);
    g.dispose();
    arena.reset();
  };
  try {
    const fwd = secondsPerRun(engine, () => step(false), rounds, 3);
    const train = secondsPerRun(engine, () => step(true), rounds, 3);
    return { fwd: B / fwd, train: B / train, gflopFwd: counter.forward / 1e9 };
  } finally {
    for (const v of [context, x, t, seed]) v.close();
    arena.close();
    model.close();
  }
}

export async function main(args: string[]): Promise<void> {
  const json = args.includes("--json");
  const ri = args.indexOf("--rounds");
  const rounds = ri >= 0 ? Number(args[ri + 1]) : 5;
  let engine: Engine;
  try {
    engine = Engine.open({ backend: "cuda" });
  } catch (err) {
    throw new Error(
      `bench cuda: no CUDA backend here (${err instanceof Error ? err.message : err}). Build it with ` +
        "`make -C gpu-core cuda` on a machine with nvcc, cuBLAS and cuDNN, and run on a machine with a GPU.",
    );
  }
  const ws = new Workspace(engine);
  try {
    // Ceilings: a large sgemm (cuBLAS, fp32, no TF32) and a 1 GiB device-to-device copy.
    const n = 8192;
    const [sx, sw, sy] = [ws.randn([n, n]), ws.randn([n, n]), ws.randn([n, n])];
    const sgemmTflops =
      (2 * n ** 3) / secondsPerRun(engine, () => engine.linearForward(sy, sx, sw, null), rounds, 3) / 1e12;
    const big = 1 << 28;
    const [ca, cb] = [ws.randn([big]), ws.randn([big])];
    const copyGbs = (2 * big * F) / secondsPerRun(engine, () => engine.copy(cb, ca), rounds, 5) / 1e9;
    for (const t of [sx, sw, sy, ca, cb]) t.close();
    ws.tensors.length = 0;

    const rows: { op: string; shape: string; ms: number; rate: number; unit: string; ratio: number }[] = [];
    for (const c of opCases(ws, 32)) {
      const sec = secondsPerRun(engine, c.run, rounds, repsFor(engine, c.run));
      const rate = c.bound === "flops" ? c.work / sec / 1e12 : c.work / sec / 1e9;
      const ceiling = c.bound === "flops" ? sgemmTflops : copyGbs;
      rows.push({
        op: c.op,
        shape: c.shape,
        ms: sec * 1e3,
        rate,
        unit: c.bound === "flops" ? "TFLOP/s" : "GB/s",
        ratio: rate / ceiling,
      });
    }
    ws.close();
    const unet = [32, 256].map((B) => ({ batch: B, ...unetRates(engine, B, rounds) }));

    console.log(
      `gpu-core cuda: sgemm ${n}^3 ${sgemmTflops.toFixed(1)} TFLOP/s, device copy ${copyGbs.toFixed(0)} GB/s (read + write)`,
    );
    console.log(`${"op".padEnd(15)} ${"shape".padEnd(24)} ${"ms".padStart(9)} ${"rate".padStart(9)} unit     ratio`);
    for (const r of rows) {
      console.log(
        `${r.op.padEnd(15)} ${r.shape.padEnd(24)} ${r.ms.toFixed(4).padStart(9)} ${r.rate.toFixed(2).padStart(9)} ${r.unit.padEnd(8)} ${r.ratio.toFixed(2).padStart(5)}`,
      );
    }
    console.log("ratio: TFLOP/s over sgemm, GB/s over copy bandwidth, both measured above");
    for (const u of unet) {
      console.log(
        `UNet batch ${u.batch}: forward ${u.fwd.toFixed(0)} img/s, forward+backward ${u.train.toFixed(0)} img/s (${u.gflopFwd.toFixed(1)} GFLOP forward)`,
      );
    }
    if (json) {
      const r3 = (x: number) => Math.round(x * 1000) / 1000;
      console.log(
        JSON.stringify({
          sgemm_tflops: r3(sgemmTflops),
          copy_gbs: r3(copyGbs),
          ops: rows.map((r) => ({ ...r, ms: r3(r.ms), rate: r3(r.rate), ratio: r3(r.ratio) })),
          unet: unet.map((u) => ({ batch: u.batch, forward_img_s: r3(u.fwd), train_img_s: r3(u.train) })),
        }),
      );
    }
  } finally {
    ws.close();
    engine.close();
  }
}

if (import.meta.main) await main(process.argv.slice(2));
