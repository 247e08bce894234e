// The table of gpu-core op cases, shared by the CPU op tests (ops.test.ts: against the float64
// reference and finite differences) and the CUDA tests (cuda.test.ts: CUDA against CPU). Every row
// builds fresh random inputs from the Rng it is given.
import type { Layout, Tensor } from "../../gpu-core/index.ts";
import { defineCase, type Input, numel, type OpCase, type Rng } from "./harness.ts";
import * as ref from "./reference.ts";

const f32 = Math.fround;

export interface Row {
  op: string;
  label: string;
  build(rng: Rng): OpCase<string, string>;
}

function tensorInput(role: Input["role"], shape: number[], rng: Rng, f?: () => number): Input {
  return { shape, data: rng.array(numel(shape), f), role };
}

/** Dims as text: [2,3,4]. */
function s(shape: readonly number[]): string {
  return `[${shape.join(",")}]`;
}

// ---- rows ----------------------------------------------------------------------------------

function conv2dRow(
  B: number,
  C: number,
  H: number,
  W: number,
  O: number,
  K: number,
  stride: number,
  pad: number,
  bias: boolean,
  layout: Layout = "nchw",
): Row {
  const nhwc = layout === "nhwc";
  const xShape = nhwc ? [B, H, W, C] : [B, C, H, W];
  return {
    op: "conv2d",
    label: `x${s(xShape)} w${s([O, C, K, K])} stride ${stride} pad ${pad}${bias ? " +bias" : ""}${nhwc ? " nhwc" : ""}`,
    build: (rng) => {
      const Ho = Math.floor((H + 2 * pad - K) / stride) + 1;
      const Wo = Math.floor((W + 2 * pad - K) / stride) + 1;
      const wScale = 1 / Math.sqrt(C * K * K);
      return defineCase({
        inputs: {
          x: tensorInput("act", xShape, rng),
          w: tensorInput("param", [O, C, K, K], rng, () => rng.normal() * wScale),
          b: bias ? tensorInput("param", [O], rng) : null,
        },
        outputs: { y: nhwc ? [B, Ho, Wo, O] : [B, O, Ho, Wo] },
        loss: ["y"],
        nullableGrads: ["x", "w", "b"],
        ref: (x) => {
          // channels-last: the channels-first reference between two permutations
          const xs = nhwc ? ref.permute(x.x!, B, H * W, C) : x.x!;
          const y = ref.conv2d(xs, x.w!, x.b, B, C, H, W, O, K, stride, pad).y;
          return { y: nhwc ? ref.permute(y, B, O, Ho * Wo) : y };
        },
        forward: (e, x, y) => e.conv2dForward(y.y!, x.x!, x.w!, x.b, stride, pad, layout),
        backward: (e, x, _y, p, _ph, g) => e.conv2dBackward(g.x, g.w, g.b, p.y!, x.x!, x.w!, stride, pad, layout),
      });
    },
  };
}

function linearRow(lead: number[], I: number, O: number, bias: boolean): Row {
  const N = numel(lead);
  return {
    op: "linear",
    label: `x${s([...lead, I])} w${s([O, I])}${bias ? " +bias" : ""}`,
    build: (rng) =>
      defineCase({
        inputs: {
          x: tensorInput("act", [...lead, I], rng),
          w: tensorInput("param", [O, I], rng, () => rng.normal() / Math.sqrt(I)),
          b: bias ? tensorInput("param", [O], rng) : null,
        },
        outputs: { y: [...lead, O] },
        loss: ["y"],
        nullableGrads: ["x", "w", "b"],
        ref: (x) => ({ y: ref.linear(x.x!, x.w!, x.b, N, I, O) }),
        forward: (e, x, y) => e.linearForward(y.y!, x.x!, x.w!, x.b),
        backward: (e, x, _y, p, _ph, g) => e.linearBackward(g.x, g.w, g.b, p.y!, x.x!, x.w!),
      }),
  };
}

/** linear with accumulate: y = y0 + x w^T (+ b) written onto a copy of y0, and dx added onto a
 * copy of x that is then subtracted again, so both beta = 1 paths are checked against the reference. */
function linearAccumulateRow(lead: number[], I: number, O: number, bias: boolean): Row {
  const N = numel(lead);
  return {
    op: "linear",
    label: `accumulate x${s([...lead, I])} w${s([O, I])}${bias ? " +bias" : ""}`,
    build: (rng) =>
      defineCase({
        inputs: {
          y0: tensorInput("act", [...lead, O], rng),
          x: tensorInput("act", [...lead, I], rng),
          w: tensorInput("param", [O, I], rng, () => rng.normal() / Math.sqrt(I)),
          b: bias ? tensorInput("param", [O], rng) : null,
        },
        outputs: { y: [...lead, O] },
        loss: ["y"],
        nullableGrads: ["y0", "x", "w", "b"],
        ref: (x) => ({ y: ref.linear(x.x!, x.w!, x.b, N, I, O).map((v, i) => v + x.y0![i]!) }),
        forward: (e, x, y) => {
          e.copy(y.y!, x.y0!);
          e.linearForward(y.y!, x.x!, x.w!, x.b, true);
        },
        backward: (e, x, _y, p, _ph, g) => {
          if (g.y0) e.copy(g.y0, p.y!);
          if (g.x) e.copy(g.x, x.x!);
          e.linearBackward(g.x, g.w, g.b, p.y!, x.x!, x.w!, true);
          if (g.x) e.axpby(g.x, -1, x.x!, 1);
        },
      }),
  };
}

/** Group norm, or with `silu` the fused silu(groupNorm(x)) (the reference applies the float64 SiLU
 * to the float64 norm). */
function groupNormRow(
  shape: number[],
  G: number,
  affine: boolean,
  eps: number,
  silu = false,
  layout: Layout = "nchw",
): Row {
  const nhwc = layout === "nhwc";
  const B = shape[0] ?? 1;
  const C = (nhwc ? shape[shape.length - 1] : shape[1]) ?? 1;
  const S = numel(nhwc ? shape.slice(1, -1) : shape.slice(2));
  const epsF = f32(eps);
  return {
    op: silu ? "group_norm+silu" : "group_norm",
    label: `x${s(shape)} groups ${G}${affine ? " affine" : ""} eps ${eps}${nhwc ? " nhwc" : ""}`,
    build: (rng) =>
      defineCase({
        inputs: {
          x: tensorInput("act", shape, rng, () => 2 * rng.normal() + 0.7),
          gamma: affine ? tensorInput("param", [C], rng, () => 1 + 0.5 * rng.normal()) : null,
          beta: affine ? tensorInput("param", [C], rng) : null,
        },
        outputs: { y: shape, mean: [B, G], rstd: [B, G] },
        loss: ["y"],
        nullableGrads: ["x", "gamma", "beta"],
        ref: (x) => {
          const xs = nhwc ? ref.permute(x.x!, B, S, C) : x.x!;
          const r = ref.groupNorm(xs, x.gamma, x.beta, B, C, S, G, epsF);
          const y = silu ? ref.activation("silu", r.y) : r.y;
          return { ...r, y: nhwc ? ref.permute(y, B, C, S) : y };
        },
        forward: (e, x, y) => e.groupNormForward(y.y!, y.mean!, y.rstd!, x.x!, x.gamma, x.beta, G, epsF, silu, layout),
        backward: (e, x, y, p, _ph, g) =>
          e.groupNormBackward(g.x, g.gamma, g.beta, p.y!, x.x!, y.mean!, y.rstd!, x.gamma, x.beta, G, silu, layout),
      }),
  };
}

function layerNormRow(shape: number[], affine: boolean, eps: number): Row {
  const D = shape[shape.length - 1] ?? 1;
  const lead = shape.length > 1 ? shape.slice(0, -1) : [1];
  const N = numel(lead);
  const epsF = f32(eps);
  return {
    op: "layer_norm",
    label: `x${s(shape)}${affine ? " affine" : ""} eps ${eps}`,
    build: (rng) =>
      defineCase({
        inputs: {
          x: tensorInput("act", shape, rng, () => 1.5 * rng.normal() - 0.4),
          gamma: affine ? tensorInput("param", [D], rng, () => 1 + 0.5 * rng.normal()) : null,
          beta: affine ? tensorInput("param", [D], rng) : null,
        },
        outputs: { y: shape, mean: lead, rstd: lead },
        loss: ["y"],
        nullableGrads: ["x", "gamma", "beta"],
        ref: (x) => ref.layerNorm(x.x!, x.gamma, x.beta, N, D, epsF),
        forward: (e, x, y) => e.layerNormForward(y.y!, y.mean!, y.rstd!, x.x!, x.gamma, x.beta, epsF),
        backward: (e, x, y, p, _ph, g) =>
          e.layerNormBackward(g.x, g.gamma, g.beta, p.y!, x.x!, y.mean!, y.rstd!, x.gamma),
      }),
  };
}

function activationRow(kind: ref.ActivationKind, shape: number[]): Row {
  return {
    op: `activation ${kind}`,
    label: `x${s(shape)}`,
    build: (rng) =>
      defineCase({
        // wide inputs: the tails (x ~ -10) are where erf/sigmoid implementations go wrong
        inputs: { x: tensorInput("act", shape, rng, () => 3.5 * rng.normal()) },
        outputs: { y: shape },
        loss: ["y"],
        ref: (x) => ({ y: ref.activation(kind, x.x!) }),
        forward: (e, x, y) => e.activationForward(kind, y.y!, x.x!),
        backward: (e, x, _y, p, _ph, g) => e.activationBackward(kind, g.x!, p.y!, x.x!),
      }),
  };
}

function gegluRow(lead: number[], D: number): Row {
  const N = numel(lead);
  return {
    op: "geglu",
    label: `x${s([...lead, 2 * D])}`,
    build: (rng) =>
      defineCase({
        inputs: { x: tensorInput("act", [...lead, 2 * D], rng, () => 2 * rng.normal()) },
        outputs: { y: [...lead, D] },
        loss: ["y"],
        ref: (x) => ({ y: ref.geglu(x.x!, N, D) }),
        forward: (e, x, y) => e.gegluForward(y.y!, x.x!),
        backward: (e, x, _y, p, _ph, g) => e.gegluBackward(g.x!, p.y!, x.x!),
      }),
  };
}

/** The fused feed-forward, geglu(x w1^T + b1) w2^T + b2, and its saved intermediates h and g,
 * against the three reference steps composed in float64 (forward only: a graph's backward runs
 * the three ops' backwards, which have their own rows). */
function gegluFeedForwardRow(lead: number[], I: number, F: number, O: number, bias: boolean): Row {
  const N = numel(lead);
  return {
    op: "geglu_feedforward",
    label: `x${s([...lead, I])} w1${s([2 * F, I])} w2${s([O, F])}${bias ? " +bias" : ""}`,
    build: (rng) =>
      defineCase({
        inputs: {
          x: tensorInput("act", [...lead, I], rng, () => 2 * rng.normal()),
          w1: tensorInput("param", [2 * F, I], rng, () => rng.normal() / Math.sqrt(I)),
          b1: bias ? tensorInput("param", [2 * F], rng) : null,
          w2: tensorInput("param", [O, F], rng, () => rng.normal() / Math.sqrt(F)),
          b2: bias ? tensorInput("param", [O], rng) : null,
        },
        outputs: { y: [...lead, O], h: [...lead, 2 * F], g: [...lead, F] },
        loss: ["y"],
        optionalOutputs: ["h", "g"],
        ref: (x) => {
          const h = ref.linear(x.x!, x.w1!, x.b1, N, I, 2 * F);
          const g = ref.geglu(h, N, F);
          return { y: ref.linear(g, x.w2!, x.b2, N, F, O), h, g };
        },
        forward: (e, x, y) => e.gegluFeedForward(y.y!, x.x!, x.w1!, x.b1, x.w2!, x.b2, y.h, y.g),
      }),
  };
}

function attentionRow(B: number, Tq: number, Tk: number, H: number, Dh: number, causal: boolean, scale: number): Row {
  const W = H * Dh;
  // The engine takes scale as fp32 and uses (float)(1/sqrt(Dh)) for scale <= 0.
  const scaleF = scale > 0 ? f32(scale) : f32(1 / Math.sqrt(Dh));
  const kind = causal ? "causal" : Tq === Tk ? "self" : "cross";
  return {
    op: "attention",
    label: `${kind} B ${B} Tq ${Tq} Tk ${Tk} heads ${H} Dh ${Dh} scale ${scale > 0 ? scale : "default"}`,
    build: (rng) =>
      defineCase({
        inputs: {
          q: tensorInput("act", [B, Tq, W], rng, () => 1.2 * rng.normal()),
          k: tensorInput("act", [B, Tk, W], rng, () => 1.2 * rng.normal()),
          v: tensorInput("act", [B, Tk, W], rng),
        },
        outputs: { out: [B, Tq, W], probs: [B, H, Tq, Tk] },
        loss: ["out"],
        optionalOutputs: ["probs"],
        nullableGrads: ["q", "k", "v"],
        ref: (x) => ref.attention(x.q!, x.k!, x.v!, B, Tq, Tk, H, Dh, causal, scaleF),
        forward: (e, x, y) => e.attentionForward(y.out!, y.probs, x.q!, x.k!, x.v!, H, causal, scale),
        backward: (e, x, y, p, _ph, g) =>
          e.attentionBackward(g.q, g.k, g.v, p.out!, x.q!, x.k!, x.v!, y.probs!, H, scale),
      }),
  };
}

/** shape is [B,C,H,W], or [B,H,W,C] with "nhwc". */
function upsampleRow(shape: [number, number, number, number], layout: Layout = "nchw"): Row {
  const nhwc = layout === "nhwc";
  const [B, C, H, W] = nhwc ? [shape[0], shape[3], shape[1], shape[2]] : shape;
  return {
    op: "upsample2x",
    label: `x${s(shape)}${nhwc ? " nhwc" : ""}`,
    build: (rng) =>
      defineCase({
        inputs: { x: tensorInput("act", shape, rng) },
        outputs: { y: nhwc ? [B, 2 * H, 2 * W, C] : [B, C, 2 * H, 2 * W] },
        loss: ["y"],
        ref: (x) => {
          const y = ref.upsample2x(nhwc ? ref.permute(x.x!, B, H * W, C) : x.x!, B * C, H, W);
          return { y: nhwc ? ref.permute(y, B, C, 4 * H * W) : y };
        },
        forward: (e, x, y) => e.upsample2xForward(y.y!, x.x!, layout),
        backward: (e, _x, _y, p, _ph, g) => e.upsample2xBackward(g.x!, p.y!, layout),
      }),
  };
}

function concatRow(B: number, Ca: number, Cb: number, rest: number[]): Row {
  const S = numel(rest);
  return {
    op: "concat",
    label: `a${s([B, Ca, ...rest])} b${s([B, Cb, ...rest])}`,
    build: (rng) =>
      defineCase({
        inputs: { a: tensorInput("act", [B, Ca, ...rest], rng), b: tensorInput("act", [B, Cb, ...rest], rng) },
        outputs: { y: [B, Ca + Cb, ...rest] },
        loss: ["y"],
        ref: (x) => ({ y: ref.concat(x.a!, x.b!, B, Ca, Cb, S) }),
        forward: (e, x, y) => e.concatForward(y.y!, x.a!, x.b!),
        backward: (e, _x, _y, p, _ph, g) => e.concatBackward(g.a!, g.b!, p.y!),
      }),
  };
}

/** b is a's shape, a leading prefix of it, or a's dims with one run of 1s (split a[R,S,C], b[R,C]). */
function addRow(aShape: number[], bShape: number[]): Row {
  let lead = 0;
  while (lead < bShape.length && aShape[lead] === bShape[lead]) lead++;
  let tail = lead;
  if (bShape.length === aShape.length) while (tail < bShape.length && bShape[tail] === 1) tail++;
  const R = numel(aShape.slice(0, lead));
  const C = bShape.length === aShape.length ? numel(aShape.slice(tail)) : 1;
  const S = numel(aShape) / (R * C);
  return {
    op: "add",
    label: `a${s(aShape)} b${s(bShape)}${S > 1 ? " broadcast" : ""}`,
    build: (rng) =>
      defineCase({
        // db is an activation gradient (written): backend.h documents db[R] = sum_s dy[r,s]
        inputs: { a: tensorInput("act", aShape, rng), b: tensorInput("act", bShape, rng) },
        outputs: { y: aShape },
        loss: ["y"],
        nullableGrads: ["a", "b"],
        ref: (x) => ({ y: ref.add(x.a!, x.b!, R, S, C) }),
        forward: (e, x, y) => e.addForward(y.y!, x.a!, x.b!),
        backward: (e, _x, _y, p, _ph, g) => e.addBackward(g.a, g.b, p.y!),
      }),
  };
}

function transposeRow(shape: number[]): Row {
  const M = shape[shape.length - 2] ?? 1;
  const N = shape[shape.length - 1] ?? 1;
  const B = numel(shape) / (M * N);
  const yShape = [...shape.slice(0, -2), N, M];
  return {
    op: "transpose",
    label: `x${s(shape)}`,
    build: (rng) =>
      defineCase({
        inputs: { x: tensorInput("act", shape, rng) },
        outputs: { y: yShape },
        loss: ["y"],
        ref: (x) => ({ y: ref.transpose(x.x!, B, M, N) }),
        forward: (e, x, y) => e.transposeForward(y.y!, x.x!),
        backward: (e, _x, _y, p, _ph, g) => e.transposeBackward(g.x!, p.y!),
      }),
  };
}

function embeddingRow(B: number, L: number, V: number, D: number, P: number | null): Row {
  return {
    op: "embedding",
    label: `ids${s([B, L])} tok${s([V, D])}${P ? ` pos${s([P, D])}` : ""}`,
    build: (rng) =>
      defineCase({
        inputs: {
          // V < B*L: ids repeat, so the token gradient must accumulate across positions
          ids: { shape: [B, L], data: rng.array(B * L, () => rng.int(V)), role: "const", dtype: "i32" },
          tok: tensorInput("param", [V, D], rng),
          pos: P ? tensorInput("param", [P, D], rng) : null,
        },
        outputs: { y: [B, L, D] },
        loss: ["y"],
        nullableGrads: ["tok", "pos"],
        ref: (x) => ({ y: ref.embedding(Int32Array.from(x.ids!), x.tok!, x.pos, B, L, D) }),
        forward: (e, x, y) => e.embeddingForward(y.y!, x.ids as Tensor<"i32">, x.tok!, x.pos),
        backward: (e, x, _y, p, _ph, g) => e.embeddingBackward(g.tok, g.pos, p.y!, x.ids as Tensor<"i32">),
      }),
  };
}

function timestepRow(
  B: number,
  D: number,
  flipSinToCos: boolean,
  freqShift: number,
  maxPeriod: number,
  tMax: number,
): Row {
  const o = { flipSinToCos, freqShift, maxPeriod };
  return {
    op: "timestep_embedding",
    label: `t${s([B])} D ${D} flip ${flipSinToCos} shift ${freqShift} max_period ${maxPeriod} t < ${tMax}`,
    build: (rng) =>
      defineCase({
        inputs: { t: tensorInput("act", [B], rng, () => rng.range(0, tMax)) },
        outputs: { y: [B, D] },
        loss: ["y"],
        // forward: PyTorch's fp32 rounding of the frequencies and arguments; finite differences: smooth
        ref: (x, fd) => ({
          y: ref.timestepEmbedding(x.t!, B, D, flipSinToCos, f32(freqShift), f32(maxPeriod), fd ? "exact" : "pytorch"),
        }),
        forward: (e, x, y) => e.timestepEmbeddingForward(y.y!, x.t!, o),
        backward: (e, x, _y, p, _ph, g) => e.timestepEmbeddingBackward(g.t!, p.y!, x.t!, o),
      }),
  };
}

function mseRow(shape: number[], weighted: boolean): Row {
  const B = shape[0] ?? 1;
  const M = numel(shape) / B;
  return {
    op: "mse",
    label: `a${s(shape)}${weighted ? " weighted" : ""}`,
    build: (rng) =>
      defineCase({
        inputs: {
          a: tensorInput("act", shape, rng),
          b: tensorInput("act", shape, rng),
          w: weighted ? tensorInput("const", [B], rng, () => rng.range(0.2, 2)) : null,
        },
        outputs: { loss: [1] },
        loss: ["loss"],
        nullableGrads: ["a", "b"],
        ref: (x) => ({ loss: Float64Array.of(ref.mse(x.a!, x.b!, x.w, B, M)) }),
        forward: (e, x, y) => e.mseForward(y.loss!, x.a!, x.b!, x.w),
        backward: (e, x, _y, _p, ph, g) => e.mseBackward(g.a, g.b, ph.loss![0]!, x.a!, x.b!, x.w),
      }),
  };
}

/** Per-sample alphas of a DDIM step: alpha_prev > alpha_t (a step towards less noise). */
function ddimAlphas(rng: Rng, B: number): { at: Float64Array; ap: Float64Array } {
  const at = new Float64Array(B);
  const ap = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    at[b] = rng.range(0.02, 0.95);
    ap[b] = (at[b] as number) + rng.range(0.05, 0.5) * (1 - (at[b] as number));
  }
  return { at, ap };
}

function ddimLogProbRow(shape: number[], eta: number, clipX0: number): Row {
  const B = shape[0] ?? 1;
  const M = numel(shape) / B;
  const etaF = f32(eta);
  const clipF = f32(clipX0);
  return {
    op: "ddim_step_log_prob",
    label: `x${s(shape)} eta ${eta} clip_x0 ${clipX0}`,
    build: (rng) => {
      const { at, ap } = ddimAlphas(rng, B);
      const xT = rng.array(B * M);
      const eps = rng.array(B * M);
      // x_prev near the step's mean, as the sampler draws it (a far-off x_prev is a flat test)
      const step = ref.ddimStep({ noise: rng.array(B * M) }, xT, eps, at, ap, etaF, clipF, B, M);
      const xPrev = step.xPrev.map(f32);
      return defineCase({
        inputs: {
          x_t: { shape, data: xT, role: "const" },
          eps: { shape, data: eps, role: "act" },
          x_prev: { shape, data: xPrev, role: "const" },
        },
        outputs: { log_prob: [B], mean: shape },
        loss: ["log_prob"],
        optionalOutputs: ["mean"],
        ref: (x) => {
          const r = ref.ddimStep({ xPrev: x.x_prev! }, x.x_t!, x.eps!, at, ap, etaF, clipF, B, M);
          return { log_prob: r.logProb, mean: r.mean };
        },
        forward: (e, x, y) => e.ddimStepLogProb(y.log_prob!, y.mean, x.x_prev!, x.x_t!, x.eps!, at, ap, eta, clipX0),
        backward: (e, x, _y, p, _ph, g) =>
          e.ddimStepLogProbBackward(g.eps!, p.log_prob!, x.x_prev!, x.x_t!, x.eps!, at, ap, eta, clipX0),
      });
    },
  };
}

function ddimSampleRow(shape: number[], eta: number, clipX0: number): Row {
  const B = shape[0] ?? 1;
  const M = numel(shape) / B;
  const etaF = f32(eta);
  const clipF = f32(clipX0);
  return {
    op: "ddim_step_sample",
    label: `x${s(shape)} eta ${eta} clip_x0 ${clipX0}`,
    build: (rng) => {
      const { at, ap } = ddimAlphas(rng, B);
      return defineCase({
        inputs: {
          x_t: tensorInput("const", shape, rng),
          eps: tensorInput("const", shape, rng),
          noise: tensorInput("const", shape, rng),
        },
        outputs: { x_prev: shape, log_prob: [B], mean: shape },
        loss: [],
        optionalOutputs: ["log_prob", "mean"],
        ref: (x) => {
          const r = ref.ddimStep({ noise: x.noise! }, x.x_t!, x.eps!, at, ap, etaF, clipF, B, M);
          return { x_prev: r.xPrev, log_prob: r.logProb, mean: r.mean };
        },
        forward: (e, x, y) =>
          e.ddimStepSample(y.x_prev!, y.log_prob, y.mean, x.x_t!, x.eps!, x.noise!, at, ap, eta, clipX0),
      });
    },
  };
}

/** log_prob / old_log_prob pairs whose ratio stays clear of the clip edges |r - 1| = c, where the
 * loss has a kink that central differences cannot straddle. */
function ddpoLogProbs(rng: Rng, N: number, clipRange: number): { lp: Float64Array; old: Float64Array } {
  const c = f32(clipRange);
  const lp = new Float64Array(N);
  const old = new Float64Array(N);
  for (let i = 0; i < N; i++) {
    for (;;) {
      const o = f32(rng.normal() * 0.5 - 1);
      const l = f32(o + rng.range(-2.5, 2.5) * c);
      const r = Math.exp(l - o);
      if (Math.abs(Math.abs(r - 1) - c) < 0.2 * c) continue;
      lp[i] = l;
      old[i] = o;
      break;
    }
  }
  return { lp, old };
}

function ddpoIsRow(N: number, clipRange: number, advClipMax: number): Row {
  const cF = f32(clipRange);
  const aF = f32(advClipMax);
  return {
    op: "ddpo_is",
    label: `N ${N} clip_range ${clipRange} adv_clip_max ${advClipMax}`,
    build: (rng) => {
      const { lp, old } = ddpoLogProbs(rng, N, clipRange);
      return defineCase({
        inputs: {
          lp: { shape: [N], data: lp, role: "act" },
          old: { shape: [N], data: old, role: "const" },
          adv: tensorInput("const", [N], rng, () => 3 * rng.normal()),
        },
        outputs: { loss: [1], stats: [2] },
        loss: ["loss"],
        optionalOutputs: ["stats"],
        // stats = [approx_kl, clip_fraction] element by element: the tiny approx_kl of a 1e-4 clip
        // range would hide behind the clip fraction in a norm
        perElement: ["stats"],
        ref: (x) => {
          const r = ref.ddpoIs(x.lp!, x.old!, x.adv!, cF, aF);
          return { loss: Float64Array.of(r.loss), stats: Float64Array.of(r.approxKl, r.clipFraction) };
        },
        forward: (e, x, y) => e.ddpoIsForward(y.loss!, y.stats, x.lp!, x.old!, x.adv!, clipRange, advClipMax),
        backward: (e, x, _y, _p, ph, g) =>
          e.ddpoIsBackward(g.lp!, ph.loss![0]!, x.lp!, x.old!, x.adv!, clipRange, advClipMax),
      });
    },
  };
}

function ddpoSfRow(N: number, advClipMax: number): Row {
  const aF = f32(advClipMax);
  return {
    op: "ddpo_sf",
    label: `N ${N} adv_clip_max ${advClipMax}`,
    build: (rng) =>
      defineCase({
        inputs: {
          lp: tensorInput("act", [N], rng, () => rng.normal() - 1),
          adv: tensorInput("const", [N], rng, () => 3 * rng.normal()),
        },
        outputs: { loss: [1] },
        loss: ["loss"],
        ref: (x) => ({ loss: Float64Array.of(ref.ddpoSf(x.lp!, x.adv!, aF)) }),
        forward: (e, x, y) => e.ddpoSfForward(y.loss!, x.lp!, x.adv!, advClipMax),
        backward: (e, x, _y, _p, ph, g) => e.ddpoSfBackward(g.lp!, ph.loss![0]!, x.adv!, advClipMax),
      }),
  };
}

export const TABLE: Row[] = [
  conv2dRow(2, 3, 6, 5, 4, 3, 1, 1, true), // K=3 pad 1 (the UNet's conv)
  conv2dRow(2, 16, 5, 7, 6, 3, 1, 1, true), // K=3 pad 1, >= 16 channels: the shifted-GEMM path
  conv2dRow(3, 17, 4, 3, 5, 3, 1, 1, false), // the same path, odd sizes, no bias
  conv2dRow(2, 16, 5, 7, 17, 3, 1, 1, true), // >= 16 channels in and out: oneDNN (padded 16-blocks)
  conv2dRow(3, 16, 7, 9, 16, 3, 2, 1, false), // oneDNN, stride 2 (downsample), odd sizes, no bias
  conv2dRow(2, 20, 6, 5, 32, 3, 1, 1, true), // oneDNN, input channels padded to two 16-blocks
  conv2dRow(1, 2, 7, 9, 3, 3, 2, 1, true), // stride 2, odd sizes (downsample)
  conv2dRow(2, 5, 3, 4, 6, 1, 1, 0, true), // 1x1 (skip projection)
  conv2dRow(1, 4, 5, 3, 2, 1, 1, 0, false), // 1x1, no bias
  conv2dRow(1, 3, 7, 7, 2, 3, 3, 0, false), // stride 3 > ... leaves input pixels no output reads
  conv2dRow(1, 2, 6, 5, 3, 5, 1, 2, true), // K=5 pad 2
  conv2dRow(2, 3, 5, 6, 2, 2, 2, 0, true), // K=2 stride 2, even kernel
  conv2dRow(2, 16, 5, 7, 17, 3, 1, 1, true, "nhwc"), // channels-last 3x3: Winograd, sizes not a multiple of its 4x4 tiles, 17 of 32 columns
  conv2dRow(2, 32, 6, 6, 16, 3, 1, 1, false, "nhwc"), // Winograd, depth 32 (a constant-depth kernel)
  conv2dRow(1, 20, 4, 5, 24, 3, 1, 1, true, "nhwc"), // Winograd, depth 20 (vector tails)
  conv2dRow(2, 16, 6, 7, 40, 3, 1, 1, true, "nhwc"), // Winograd, 48 padded outputs: a wide panel and a 16-column one
  conv2dRow(2, 8, 5, 6, 16, 3, 1, 1, true, "nhwc"), // under 16 input channels: oneDNN's nhwc kernels
  conv2dRow(2, 3, 6, 5, 4, 3, 1, 1, true, "nhwc"), // nhwc, 3 input channels (conv_in)
  conv2dRow(2, 8, 5, 4, 3, 3, 1, 1, false, "nhwc"), // nhwc, 3 output channels (conv_out)
  conv2dRow(3, 16, 7, 9, 16, 3, 2, 1, false, "nhwc"), // nhwc, stride 2 (downsample), odd sizes
  conv2dRow(2, 5, 3, 4, 6, 1, 1, 0, true, "nhwc"), // nhwc 1x1 (skip projection, proj_in/out)
  conv2dRow(1, 3, 7, 7, 2, 3, 3, 0, false, "nhwc"), // nhwc, negative right padding: via NCHW
  linearRow([5], 7, 3, true),
  linearRow([2, 3], 4, 6, false),
  linearRow([1], 1, 1, true),
  linearRow([3, 2, 2], 9, 5, true),
  linearAccumulateRow([5], 7, 3, true),
  linearAccumulateRow([2, 3], 4, 6, false),
  groupNormRow([2, 6, 3, 5], 3, true, 1e-5), // groups > 1
  groupNormRow([2, 8, 4, 4], 4, false, 1e-6),
  groupNormRow([1, 4, 7], 1, true, 1e-5), // one group, 3-D input
  groupNormRow([3, 6, 1, 1], 2, true, 1e-5), // S = 1
  groupNormRow([2, 6, 3, 5], 3, true, 1e-5, true), // fused SiLU
  groupNormRow([2, 8, 4, 4], 4, false, 1e-6, true), // fused SiLU, no affine
  groupNormRow([2, 3, 5, 6], 3, true, 1e-5, false, "nhwc"), // channels last
  groupNormRow([1, 7, 4], 1, true, 1e-5, false, "nhwc"), // one group, 3-D input
  groupNormRow([2, 4, 4, 8], 4, false, 1e-6, true, "nhwc"), // fused SiLU, no affine
  groupNormRow([3, 1, 1, 6], 2, true, 1e-5, true, "nhwc"), // S = 1, fused SiLU
  layerNormRow([6, 7], true, 1e-5),
  layerNormRow([2, 3, 16], false, 1e-5),
  layerNormRow([5, 1, 9], true, 1e-6),
  activationRow("silu", [2, 3, 7]),
  activationRow("silu", [61]),
  activationRow("gelu", [2, 3, 7]),
  activationRow("gelu", [61]),
  activationRow("gelu_tanh", [2, 3, 7]),
  activationRow("gelu_tanh", [61]),
  activationRow("quick_gelu", [2, 3, 7]),
  activationRow("quick_gelu", [61]),
  gegluRow([3], 5),
  gegluFeedForwardRow([2, 3], 8, 5, 6, true),
  gegluFeedForwardRow([4], 6, 3, 7, false), // no biases
  gegluRow([2, 3], 8),
  attentionRow(2, 5, 5, 2, 3, false, 0), // self
  attentionRow(1, 6, 6, 3, 4, true, 0), // causal
  attentionRow(2, 4, 7, 2, 5, false, 0), // cross, Tq < Tk
  attentionRow(1, 7, 3, 1, 4, false, 0.3), // cross, Tq > Tk, one head, explicit scale
  attentionRow(2, 5, 5, 4, 2, true, 0.8), // causal, 4 heads, explicit scale
  upsampleRow([2, 3, 3, 5]),
  upsampleRow([1, 1, 1, 1]),
  upsampleRow([2, 3, 5, 4], "nhwc"),
  concatRow(2, 3, 2, [4, 5]),
  concatRow(1, 1, 4, [3]),
  concatRow(6, 3, 2, []), // channels-last images as [B*H*W, C] rows
  addRow([2, 3, 4], [2, 3, 4]),
  addRow([2, 3, 4, 5], [2, 3]), // time-embedding bias onto an image
  addRow([3, 4], [3]),
  addRow([2, 3, 4, 5], [2, 1, 1, 5]), // a [B,C] bias onto channels-last [B,H,W,C]
  addRow([3, 4], [1, 4]), // a trailing broadcast
  transposeRow([2, 3, 5]),
  transposeRow([4, 7]),
  transposeRow([2, 2, 3, 5]),
  embeddingRow(2, 5, 7, 6, 8),
  embeddingRow(3, 4, 3, 5, null),
  embeddingRow(1, 6, 10, 4, 6),
  timestepRow(4, 8, true, 0, 10000, 1000), // SD's UNet: flip_sin_to_cos, shift 0
  timestepRow(3, 7, false, 1, 10000, 1000), // odd D, shift 1 (DDPM)
  timestepRow(5, 32, true, 1, 10000, 1000),
  timestepRow(2, 6, false, 0, 100, 50),
  mseRow([3, 2, 4], false),
  mseRow([4, 5], true),
  mseRow([1, 1], true),
  ddimLogProbRow([2, 3, 4, 5], 1, 0),
  ddimLogProbRow([3, 5, 7], 0.5, 0),
  ddimLogProbRow([2, 2, 3, 3], 1, 1), // clip_x0: x0 is clipped for many elements
  ddimSampleRow([2, 3, 4, 5], 1, 0),
  ddimSampleRow([3, 5, 7], 0.5, 1),
  ddpoIsRow(16, 1e-4, 5), // the DDPO default clip range
  ddpoIsRow(23, 0.2, 5),
  ddpoIsRow(9, 0.05, 2),
  ddpoSfRow(16, 5),
  ddpoSfRow(7, 1.5),

  // Larger shapes past the kernels' OpenMP thresholds (32768 to 65536 elements of work), so the
  // parallel code paths run too (the directional check covers every element of the gradients).
  conv2dRow(2, 8, 48, 48, 16, 3, 1, 1, true),
  conv2dRow(1, 16, 33, 31, 8, 3, 2, 1, true),
  conv2dRow(2, 8, 48, 48, 16, 3, 1, 1, true, "nhwc"),
  conv2dRow(2, 16, 20, 18, 17, 3, 1, 1, true, "nhwc"), // Winograd: 5 blocks of 12 tiles, the last ragged; inner and border tiles
  conv2dRow(2, 12, 40, 40, 16, 3, 3, 0, true, "nhwc"), // negative right padding: via NCHW, in parallel
  linearRow([256], 64, 300, true),
  linearAccumulateRow([256], 64, 300, true),
  groupNormRow([2, 32, 24, 24], 8, true, 1e-5),
  groupNormRow([2, 32, 24, 24], 8, true, 1e-5, true),
  groupNormRow([2, 24, 24, 32], 8, true, 1e-5, false, "nhwc"),
  groupNormRow([2, 24, 24, 32], 8, true, 1e-5, true, "nhwc"),
  layerNormRow([512, 72], true, 1e-5),
  activationRow("silu", [40000]),
  activationRow("gelu", [5, 8000]),
  activationRow("gelu_tanh", [40000]),
  activationRow("quick_gelu", [40000]),
  gegluRow([64], 80),
  gegluFeedForwardRow([700], 24, 40, 20, true), // one row block of 700, products in parallel
  gegluFeedForwardRow([500], 16, 200, 12, true), // three row blocks (the last ragged), one per thread
  attentionRow(2, 48, 48, 4, 8, false, 0),
  attentionRow(2, 48, 48, 4, 8, true, 0),
  attentionRow(2, 40, 77, 4, 8, false, 0),
  // Long enough that the CPU kernel splits the queries into blocks (~32768 / Tk rows each), forward
  // and backward (whose later blocks add into dk and dv).
  attentionRow(1, 230, 300, 2, 4, false, 0),
  attentionRow(1, 230, 230, 2, 4, true, 0),
  // Row strides the small GEMM has as constants: heads 64 wide in all (q, dout), 16 and 256
  // padded keys (scores, dS).
  attentionRow(2, 16, 16, 2, 32, false, 0),
  attentionRow(1, 12, 250, 2, 32, false, 0),
  upsampleRow([2, 8, 24, 24]),
  upsampleRow([2, 24, 24, 8], "nhwc"),
  concatRow(2, 16, 8, [32, 32]),
  concatRow(2048, 16, 8, []),
  addRow([40000], [40000]),
  addRow([4, 32, 16, 17], [4, 32]),
  addRow([4, 16, 17, 32], [4, 1, 1, 32]),
  transposeRow([4, 96, 100]),
  embeddingRow(4, 77, 50, 128, 77),
  timestepRow(64, 128, true, 0, 10000, 1000),
  mseRow([4, 9000], true),
  ddimLogProbRow([2, 4, 64, 70], 1, 0),
  ddimSampleRow([2, 4, 64, 70], 1, 0),
  ddpoIsRow(40000, 1e-4, 5),
  ddpoSfRow(40000, 5),
];
