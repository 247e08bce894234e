// Naive float64 reference implementations of gpu-core's forward ops, written from the math in
// gpu-core/include/gpu_core.h (and DESIGN.md §3), independent of the engine: plain loops over
// Float64Array, no tricks. The op tests compare the engine with these and take finite differences
// of them to check the engine's backward passes. Shapes are given per function; all arrays are
// dense row-major, images NCHW.

/** Element i of a Float64Array (noUncheckedIndexedAccess: reads are always in range here). */
function at(a: Float64Array, i: number): number {
  return a[i] as number;
}

// ---- special functions --------------------------------------------------------------------

const TWO_OVER_SQRT_PI = 1.1283791670955126; // 2 / sqrt(pi)
const ERF_SERIES_MAX = 2.5; // series below, continued fraction above

/** erfc(x) for x >= ERF_SERIES_MAX by its continued fraction (evaluated bottom-up):
 * erfc(x) = exp(-x^2)/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + 2/(x + ...))))). */
function erfcContinuedFraction(x: number): number {
  let f = x;
  for (let n = 400; n >= 1; n--) f = x + n / 2 / f;
  return Math.exp(-x * x) / Math.sqrt(Math.PI) / f;
}

/** erf(x) for |x| < ERF_SERIES_MAX: erf(x) = 2/sqrt(pi) exp(-x^2) sum_n 2^n x^(2n+1) / (2n+1)!!.
 * Every term has the sign of x, so nothing cancels (relative error ~1e-16). */
function erfSeries(x: number): number {
  const x2 = x * x;
  let term = x;
  let sum = x;
  for (let n = 1; n < 500; n++) {
    term *= (2 * x2) / (2 * n + 1);
    sum += term;
    if (Math.abs(term) <= 1e-18 * Math.abs(sum)) break;
  }
  return TWO_OVER_SQRT_PI * Math.exp(-x2) * sum;
}

/** Error function to ~1e-15 relative (Abramowitz-Stegun 7.1.26 is only ~1e-7). */
export function erf(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  const ax = Math.abs(x);
  if (ax < ERF_SERIES_MAX) return erfSeries(x);
  const c = erfcContinuedFraction(ax);
  return x > 0 ? 1 - c : c - 1;
}

/** Complementary error function, accurate in the tails (no 1 - erf cancellation for large x). */
export function erfc(x: number): number {
  if (Number.isNaN(x)) return Number.NaN;
  if (x >= ERF_SERIES_MAX) return erfcContinuedFraction(x);
  return 1 - erf(x); // x < 2.5: erfc >= 4e-4, so 1 - erf keeps ~13 digits (and none lost for x < 0)
}

function sigmoid(x: number): number {
  return 1 / (1 + Math.exp(-x));
}

/** GELU, erf form: 0.5 x (1 + erf(x / sqrt 2)) = x Phi(x), written with erfc for negative x. */
export function geluErf(x: number): number {
  return 0.5 * x * erfc(-x / Math.SQRT2);
}

export type ActivationKind = "silu" | "gelu" | "gelu_tanh" | "quick_gelu";

export function activationScalar(kind: ActivationKind, x: number): number {
  switch (kind) {
    case "silu":
      return x * sigmoid(x);
    case "gelu":
      return geluErf(x);
    case "gelu_tanh": {
      const u = Math.sqrt(2 / Math.PI) * (x + 0.044715 * x * x * x);
      return 0.5 * x * (1 + Math.tanh(u));
    }
    case "quick_gelu":
      return x * sigmoid(1.702 * x);
  }
}

// ---- elementwise and data movement -----------------------------------------------------------

/** y = act(x), any shape. */
export function activation(kind: ActivationKind, x: Float64Array): Float64Array {
  return x.map((v) => activationScalar(kind, v));
}

/** y[R,S,C] = a[R,S,C] + b[R,C] broadcast over S (S = 1: same shape; C = 1: b[R] over rows). */
export function add(a: Float64Array, b: Float64Array, R: number, S: number, C = 1): Float64Array {
  const y = new Float64Array(R * S * C);
  for (let r = 0; r < R; r++)
    for (let s = 0; s < S; s++)
      for (let c = 0; c < C; c++) y[(r * S + s) * C + c] = at(a, (r * S + s) * C + c) + at(b, r * C + c);
  return y;
}

/** y[B,N,M] = x[B,M,N] in float64: a channels-last image [B,S,C] to [B,C,S] and back. */
export const permute = (x: Float64Array, B: number, M: number, N: number): Float64Array => transpose(x, B, M, N);

/** y[B,N,M] = x[B,M,N] transposed over the last two dims. */
export function transpose(x: Float64Array, B: number, M: number, N: number): Float64Array {
  const y = new Float64Array(B * M * N);
  for (let b = 0; b < B; b++)
    for (let m = 0; m < M; m++) for (let n = 0; n < N; n++) y[(b * N + n) * M + m] = at(x, (b * M + m) * N + n);
  return y;
}

/** y[B,Ca+Cb,S] = concat(a[B,Ca,S], b[B,Cb,S]) along dim 1. */
export function concat(a: Float64Array, b: Float64Array, B: number, Ca: number, Cb: number, S: number): Float64Array {
  const C = Ca + Cb;
  const y = new Float64Array(B * C * S);
  for (let n = 0; n < B; n++) {
    for (let c = 0; c < Ca; c++) for (let s = 0; s < S; s++) y[(n * C + c) * S + s] = at(a, (n * Ca + c) * S + s);
    for (let c = 0; c < Cb; c++) for (let s = 0; s < S; s++) y[(n * C + Ca + c) * S + s] = at(b, (n * Cb + c) * S + s);
  }
  return y;
}

/** y[P,2H,2W] = nearest-neighbour 2x upsample of x[P,H,W] (P = B*C). */
export function upsample2x(x: Float64Array, P: number, H: number, W: number): Float64Array {
  const y = new Float64Array(P * 4 * H * W);
  for (let p = 0; p < P; p++)
    for (let i = 0; i < 2 * H; i++)
      for (let j = 0; j < 2 * W; j++)
        y[(p * 2 * H + i) * 2 * W + j] = at(x, (p * H + Math.floor(i / 2)) * W + Math.floor(j / 2));
  return y;
}

// ---- layers --------------------------------------------------------------------------------

/** y[B,O,Ho,Wo] = conv(x[B,C,H,W], w[O,C,K,K]) + b[O] (b optional), zero padding. */
export function conv2d(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  B: number,
  C: number,
  H: number,
  W: number,
  O: number,
  K: number,
  stride: number,
  pad: number,
): { y: Float64Array; Ho: number; Wo: number } {
  const Ho = Math.floor((H + 2 * pad - K) / stride) + 1;
  const Wo = Math.floor((W + 2 * pad - K) / stride) + 1;
  const y = new Float64Array(B * O * Ho * Wo);
  for (let n = 0; n < B; n++)
    for (let o = 0; o < O; o++)
      for (let i = 0; i < Ho; i++)
        for (let j = 0; j < Wo; j++) {
          let acc = bias ? at(bias, o) : 0;
          for (let c = 0; c < C; c++)
            for (let ki = 0; ki < K; ki++) {
              const hi = i * stride - pad + ki;
              if (hi < 0 || hi >= H) continue;
              for (let kj = 0; kj < K; kj++) {
                const wj = j * stride - pad + kj;
                if (wj < 0 || wj >= W) continue;
                acc += at(x, ((n * C + c) * H + hi) * W + wj) * at(w, ((o * C + c) * K + ki) * K + kj);
              }
            }
          y[((n * O + o) * Ho + i) * Wo + j] = acc;
        }
  return { y, Ho, Wo };
}

/** y[N,O] = x[N,I] w[O,I]^T + b[O] (b optional). */
export function linear(
  x: Float64Array,
  w: Float64Array,
  bias: Float64Array | null,
  N: number,
  I: number,
  O: number,
): Float64Array {
  const y = new Float64Array(N * O);
  for (let n = 0; n < N; n++)
    for (let o = 0; o < O; o++) {
      let acc = bias ? at(bias, o) : 0;
      for (let i = 0; i < I; i++) acc += at(x, n * I + i) * at(w, o * I + i);
      y[n * O + o] = acc;
    }
  return y;
}

export interface NormResult {
  y: Float64Array;
  mean: Float64Array;
  rstd: Float64Array;
}

/** Group norm of x[B,C,S] over G groups (biased variance, PyTorch): mean, rstd [B,G];
 * gamma, beta [C] optional. */
export function groupNorm(
  x: Float64Array,
  gamma: Float64Array | null,
  beta: Float64Array | null,
  B: number,
  C: number,
  S: number,
  G: number,
  eps: number,
): NormResult {
  const y = new Float64Array(B * C * S);
  const mean = new Float64Array(B * G);
  const rstd = new Float64Array(B * G);
  const Cg = C / G;
  for (let n = 0; n < B; n++)
    for (let g = 0; g < G; g++) {
      const base = (n * C + g * Cg) * S;
      const count = Cg * S;
      let sum = 0;
      for (let i = 0; i < count; i++) sum += at(x, base + i);
      const mu = sum / count;
      let sq = 0;
      for (let i = 0; i < count; i++) sq += (at(x, base + i) - mu) ** 2;
      const r = 1 / Math.sqrt(sq / count + eps);
      mean[n * G + g] = mu;
      rstd[n * G + g] = r;
      for (let c = g * Cg; c < (g + 1) * Cg; c++)
        for (let s = 0; s < S; s++) {
          const idx = (n * C + c) * S + s;
          const xhat = (at(x, idx) - mu) * r;
          y[idx] = xhat * (gamma ? at(gamma, c) : 1) + (beta ? at(beta, c) : 0);
        }
    }
  return { y, mean, rstd };
}

/** Layer norm of x[N,D] over D: mean, rstd [N]; gamma, beta [D] optional. */
export function layerNorm(
  x: Float64Array,
  gamma: Float64Array | null,
  beta: Float64Array | null,
  N: number,
  D: number,
  eps: number,
): NormResult {
  // A layer norm is a group norm with one group per row and the row's D elements as one channel
  // each; written out separately anyway to keep the reference obvious.
  const y = new Float64Array(N * D);
  const mean = new Float64Array(N);
  const rstd = new Float64Array(N);
  for (let n = 0; n < N; n++) {
    let sum = 0;
    for (let d = 0; d < D; d++) sum += at(x, n * D + d);
    const mu = sum / D;
    let sq = 0;
    for (let d = 0; d < D; d++) sq += (at(x, n * D + d) - mu) ** 2;
    const r = 1 / Math.sqrt(sq / D + eps);
    mean[n] = mu;
    rstd[n] = r;
    for (let d = 0; d < D; d++)
      y[n * D + d] = (at(x, n * D + d) - mu) * r * (gamma ? at(gamma, d) : 1) + (beta ? at(beta, d) : 0);
  }
  return { y, mean, rstd };
}

/** GEGLU (diffusers): x[N,2D] = [h | g], y[N,D] = h * gelu_erf(g). */
export function geglu(x: Float64Array, N: number, D: number): Float64Array {
  const y = new Float64Array(N * D);
  for (let n = 0; n < N; n++)
    for (let d = 0; d < D; d++) y[n * D + d] = at(x, n * 2 * D + d) * geluErf(at(x, n * 2 * D + D + d));
  return y;
}

/** Multi-head attention, heads interleaved in the last dim (head h owns columns h*Dh..h*Dh+Dh-1):
 * q[B,Tq,H*Dh], k, v[B,Tk,H*Dh] -> out[B,Tq,H*Dh], probs[B,H,Tq,Tk]. causal masks key j > query i. */
export function attention(
  q: Float64Array,
  k: Float64Array,
  v: Float64Array,
  B: number,
  Tq: number,
  Tk: number,
  H: number,
  Dh: number,
  causal: boolean,
  scale: number,
): { out: Float64Array; probs: Float64Array } {
  const W = H * Dh;
  const out = new Float64Array(B * Tq * W);
  const probs = new Float64Array(B * H * Tq * Tk);
  const s = new Float64Array(Tk);
  for (let b = 0; b < B; b++)
    for (let h = 0; h < H; h++)
      for (let i = 0; i < Tq; i++) {
        const jEnd = causal ? i + 1 : Tk;
        let max = Number.NEGATIVE_INFINITY;
        for (let j = 0; j < jEnd; j++) {
          let dot = 0;
          for (let d = 0; d < Dh; d++)
            dot += at(q, (b * Tq + i) * W + h * Dh + d) * at(k, (b * Tk + j) * W + h * Dh + d);
          s[j] = dot * scale;
          max = Math.max(max, at(s, j));
        }
        let z = 0;
        for (let j = 0; j < jEnd; j++) z += Math.exp(at(s, j) - max);
        const prow = ((b * H + h) * Tq + i) * Tk;
        for (let j = 0; j < Tk; j++) probs[prow + j] = j < jEnd ? Math.exp(at(s, j) - max) / z : 0;
        for (let d = 0; d < Dh; d++) {
          let acc = 0;
          for (let j = 0; j < jEnd; j++) acc += at(probs, prow + j) * at(v, (b * Tk + j) * W + h * Dh + d);
          out[(b * Tq + i) * W + h * Dh + d] = acc;
        }
      }
  return { out, probs };
}

/** y[B,L,D] = tok[ids[b,l]] + pos[l] (pos[P,D] optional, P >= L); tok[V,D]. */
export function embedding(
  ids: Int32Array,
  tok: Float64Array,
  pos: Float64Array | null,
  B: number,
  L: number,
  D: number,
): Float64Array {
  const y = new Float64Array(B * L * D);
  for (let b = 0; b < B; b++)
    for (let l = 0; l < L; l++) {
      const id = ids[b * L + l] as number;
      for (let d = 0; d < D; d++) y[(b * L + l) * D + d] = at(tok, id * D + d) + (pos ? at(pos, l * D + d) : 0);
    }
  return y;
}

/** Sinusoidal timestep embedding, diffusers get_timestep_embedding (scale 1): t[B] -> y[B,D].
 * half = D/2, f_j = exp(-ln(max_period) j / (half - freq_shift)), y = [sin(t f) | cos(t f)],
 * [cos | sin] when flipSinToCos, odd D gets a zero last column.
 * rounding "pytorch": f_j and the argument t f_j are rounded to fp32 where PyTorch rounds them (it
 * builds the embedding in fp32; one ulp of t f at t ~ 1000 is ~6e-5, visible in a 1e-5 comparison);
 * sin and cos are then exact. rounding "exact": all in float64 (smooth, for finite differences). */
export function timestepEmbedding(
  t: Float64Array,
  B: number,
  D: number,
  flipSinToCos: boolean,
  freqShift: number,
  maxPeriod: number,
  rounding: "pytorch" | "exact",
): Float64Array {
  const f32 = rounding === "pytorch" ? Math.fround : (v: number) => v;
  const half = Math.floor(D / 2);
  const y = new Float64Array(B * D);
  for (let b = 0; b < B; b++)
    for (let j = 0; j < half; j++) {
      // PyTorch: exponent = (-ln(max_period) * arange(half)) / (half - shift), all fp32 tensors.
      const exponent = f32(f32(f32(-Math.log(maxPeriod)) * j) / f32(half - freqShift));
      const freq = f32(Math.exp(exponent));
      const arg = f32(at(t, b) * freq);
      const sinCol = flipSinToCos ? half + j : j;
      const cosCol = flipSinToCos ? j : half + j;
      y[b * D + sinCol] = Math.sin(arg);
      y[b * D + cosCol] = Math.cos(arg);
    }
  // odd D: the last column of every row stays 0
  return y;
}

/** loss = (1/B) sum_b w[b] mean_i (a[b,i] - b[b,i])^2; a, b [B,M]; weights [B] optional. */
export function mse(a: Float64Array, b: Float64Array, weights: Float64Array | null, B: number, M: number): number {
  let loss = 0;
  for (let n = 0; n < B; n++) {
    let sq = 0;
    for (let i = 0; i < M; i++) sq += (at(a, n * M + i) - at(b, n * M + i)) ** 2;
    loss += (weights ? at(weights, n) : 1) * (sq / M);
  }
  return loss / B;
}

// ---- diffusion and DDPO -----------------------------------------------------------------

export interface DdimResult {
  xPrev: Float64Array; // [B,M]: the given x_prev, or mean + sigma * noise in the sampling form
  mean: Float64Array; // [B,M]
  logProb: Float64Array; // [B]
  sigma: Float64Array; // [B]
}

/** One DDIM step with eta (DESIGN.md §3) on x_t, eps [B,M], per-sample alphas [B]:
 * x0 = (x_t - sqrt(1-a) eps) / sqrt(a), clipped to +-clipX0 when clipX0 > 0;
 * sigma = eta sqrt((1-a')/(1-a)) sqrt(1 - a/a'); mean = sqrt(a') x0 + sqrt(1-a'-sigma^2) eps;
 * log_prob[b] = mean_i of -(x_prev - mean)^2/(2 sigma^2) - log sigma - log sqrt(2 pi).
 * Given form: xPrev given (noise null). Sampling form: x_prev = mean + sigma * noise. */
export function ddimStep(
  given: { xPrev: Float64Array } | { noise: Float64Array },
  xT: Float64Array,
  eps: Float64Array,
  alphaT: ArrayLike<number>,
  alphaPrev: ArrayLike<number>,
  eta: number,
  clipX0: number,
  B: number,
  M: number,
): DdimResult {
  const xPrev = "xPrev" in given ? given.xPrev : new Float64Array(B * M);
  const mean = new Float64Array(B * M);
  const logProb = new Float64Array(B);
  const sigmas = new Float64Array(B);
  for (let b = 0; b < B; b++) {
    const a = alphaT[b] as number;
    const ap = alphaPrev[b] as number;
    const sigma = eta * Math.sqrt((1 - ap) / (1 - a)) * Math.sqrt(1 - a / ap);
    const dirCoef = Math.sqrt(1 - ap - sigma * sigma);
    sigmas[b] = sigma;
    let lp = 0;
    for (let i = 0; i < M; i++) {
      const idx = b * M + i;
      let x0 = (at(xT, idx) - Math.sqrt(1 - a) * at(eps, idx)) / Math.sqrt(a);
      if (clipX0 > 0) x0 = Math.min(clipX0, Math.max(-clipX0, x0));
      const mu = Math.sqrt(ap) * x0 + dirCoef * at(eps, idx);
      mean[idx] = mu;
      if ("noise" in given) xPrev[idx] = mu + sigma * at(given.noise, idx);
      const r = at(xPrev, idx) - mu;
      lp += -(r * r) / (2 * sigma * sigma) - Math.log(sigma) - Math.log(Math.sqrt(2 * Math.PI));
    }
    logProb[b] = lp / M;
  }
  return { xPrev, mean, logProb, sigma: sigmas };
}

function clampAdvantage(a: number, advClipMax: number): number {
  return Math.min(advClipMax, Math.max(-advClipMax, a));
}

/** DDPO_IS (PPO clip) over N pairs: A = clip(adv, +-advClipMax), r = exp(lp - old),
 * loss = mean(max(-A r, -A clip(r, 1-c, 1+c))); approx_kl = mean((lp-old)^2)/2;
 * clip_fraction = mean(|r - 1| > c). */
export function ddpoIs(
  logProb: Float64Array,
  oldLogProb: Float64Array,
  advantages: Float64Array,
  clipRange: number,
  advClipMax: number,
): { loss: number; approxKl: number; clipFraction: number } {
  const N = logProb.length;
  let loss = 0;
  let kl = 0;
  let clipped = 0;
  for (let i = 0; i < N; i++) {
    const A = clampAdvantage(at(advantages, i), advClipMax);
    const d = at(logProb, i) - at(oldLogProb, i);
    const r = Math.exp(d);
    const rc = Math.min(1 + clipRange, Math.max(1 - clipRange, r));
    loss += Math.max(-A * r, -A * rc);
    kl += d * d;
    if (Math.abs(r - 1) > clipRange) clipped++;
  }
  return { loss: loss / N, approxKl: kl / N / 2, clipFraction: clipped / N };
}

/** DDPO_SF (score function): loss = mean(-A lp), A = clip(adv, +-advClipMax). */
export function ddpoSf(logProb: Float64Array, advantages: Float64Array, advClipMax: number): number {
  let loss = 0;
  for (let i = 0; i < logProb.length; i++) loss += -clampAdvantage(at(advantages, i), advClipMax) * at(logProb, i);
  return loss / logProb.length;
}
