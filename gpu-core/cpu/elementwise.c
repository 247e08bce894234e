/*
 * CPU backend: elementwise ops, data movement and activations.
 * Plain loops, one per op and direction; large loops are split across OpenMP threads, small
 * ones stay serial (thread start-up costs more than the work). Transcendentals are evaluated in
 * float with the vectorisable exp/erfc of vmath.h (about two fp32 ulp; see there): the double
 * versions cost 2x more per element for accuracy the fp32 results cannot hold.
 */
#include <math.h>
#include <string.h>

#include "../core/backend.h"
#include "scratch.h"
#include "vmath.h"

/* Below this many elements a loop runs on one thread. */
#define PAR_MIN 32768

/* ---- fill, copy, axpby ---- */

// y is (n)
gc_status be_fill(be_ctx *bc, float *y, int64_t n, float value) {
  (void)bc;
#pragma omp parallel for if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) y[i] = value;
  return GC_OK;
}

// y, x are (n). Views of one storage may overlap: then one memmove; else threads copy chunks.
gc_status be_copy(be_ctx *bc, float *y, const float *x, int64_t n) {
  (void)bc;
  if (y == x || n <= 0) return GC_OK;
  uintptr_t yb = (uintptr_t)y, xb = (uintptr_t)x, bytes = (uintptr_t)n * sizeof(float);
  if (n <= PAR_MIN || (yb < xb + bytes && xb < yb + bytes)) {
    memmove(y, x, (size_t)bytes);
    return GC_OK;
  }
  const int64_t chunk = 16384;
#pragma omp parallel for
  for (int64_t i = 0; i < n; i += chunk)
    memcpy(y + i, x + i, (size_t)(n - i < chunk ? n - i : chunk) * sizeof(float));
  return GC_OK;
}

// y, x are (n). beta == 0 does not read y, so y may hold uninitialised memory (NaN) then.
// The sum is formed in double (memory-bound anyway), so cancellation costs one rounding only.
gc_status be_axpby(be_ctx *bc, float *y, float alpha, const float *x, float beta, int64_t n) {
  (void)bc;
  double a = alpha, b = beta;
  if (beta == 0.0f) {
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = (float)(a * x[i]);
  } else {
#pragma omp parallel for if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = (float)(a * x[i] + b * y[i]);
  }
  return GC_OK;
}

/* ---- broadcast add ---- */

// y, a are (R, S, C); b is (R, C), broadcast over S (S == 1: same-shape add). y may alias a.
gc_status be_add_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t R,
                         int64_t S, int64_t C) {
  (void)bc;
  if (S == 1) { /* same shapes: one flat loop (the row loop below would run one element per row) */
    const int64_t n = R * C;
#pragma omp parallel for simd if (n > PAR_MIN)
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i];
    return GC_OK;
  }
  if (C == 1) { /* b[R] over rows of S: a [B,C] bias onto [B,C,H,W] */
#pragma omp parallel for if (R * S > PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
      const float br = b[r];
      const float *ar = a + r * S;
      float *yr = y + r * S;
#pragma omp simd
      for (int64_t s = 0; s < S; s++) yr[s] = ar[s] + br;
    }
    return GC_OK;
  }
  /* b[R,C] onto each of S rows of C: a [B,C] bias onto channels-last [B,H,W,C] */
#pragma omp parallel for collapse(2) if (R * S * C > PAR_MIN)
  for (int64_t r = 0; r < R; r++)
    for (int64_t s = 0; s < S; s++) {
      const float *br = b + r * C, *ar = a + (r * S + s) * C;
      float *yr = y + (r * S + s) * C;
#pragma omp simd
      for (int64_t c = 0; c < C; c++) yr[c] = ar[c] + br[c];
    }
  return GC_OK;
}

// dy, da are (R, S, C); db is (R, C). da = dy, db = sum over S (both written, both optional).
gc_status be_add_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t R, int64_t S,
                          int64_t C) {
  (void)bc;
  if (da) be_copy(bc, da, dy, R * S * C);
  if (!db) return GC_OK;
  if (C == 1) {
#pragma omp parallel for if (R * S > PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
      const float *dyr = dy + r * S;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t s = 0; s < S; s++) sum += dyr[s];
      db[r] = (float)sum;
    }
    return GC_OK;
  }
  /* channels-last: each (r, c) sums a strided column; rows are walked in order into a block of
   * CB double accumulators (one L1-resident row segment) */
  enum { CB = 256 };
#pragma omp parallel for collapse(2) if (R * S * C > PAR_MIN)
  for (int64_t r = 0; r < R; r++)
    for (int64_t c0 = 0; c0 < C; c0 += CB) {
      const int64_t n = C - c0 < CB ? C - c0 : CB;
      double acc[CB];
      for (int64_t c = 0; c < n; c++) acc[c] = 0.0;
      for (int64_t s = 0; s < S; s++) {
        const float *dyr = dy + (r * S + s) * C + c0;
#pragma omp simd
        for (int64_t c = 0; c < n; c++) acc[c] += dyr[c];
      }
      for (int64_t c = 0; c < n; c++) db[r * C + c0 + c] = (float)acc[c];
    }
  return GC_OK;
}

/* ---- transpose of the last two dims ---- */

#define TILE 32

// x is (B, M, N); y is (B, N, M). Tiled so both sides are read/written a cache line at a time.
gc_status be_transpose(be_ctx *bc, float *y, const float *x, int64_t B, int64_t M, int64_t N) {
  (void)bc;
#pragma omp parallel for collapse(3) if (B * M * N > PAR_MIN)
  for (int64_t b = 0; b < B; b++) {
    for (int64_t m0 = 0; m0 < M; m0 += TILE) {
      for (int64_t n0 = 0; n0 < N; n0 += TILE) {
        const float *xb = x + b * M * N;
        float *yb = y + b * M * N;
        int64_t m1 = m0 + TILE < M ? m0 + TILE : M;
        int64_t n1 = n0 + TILE < N ? n0 + TILE : N;
        for (int64_t m = m0; m < m1; m++)
          for (int64_t n = n0; n < n1; n++) yb[n * M + m] = xb[m * N + n];
      }
    }
  }
  return GC_OK;
}

/* ---- channel concat ---- */

// a is (B, Ca, S), b is (B, Cb, S), y is (B, Ca+Cb, S): each y[b] is a[b] then b[b], two
// contiguous copies (a channels-last concat comes as [B*H*W, C, 1]: rows of Ca and Cb floats).
gc_status be_concat_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t B,
                            int64_t Ca, int64_t Cb, int64_t S) {
  (void)bc;
  const int64_t na = Ca * S, nb = Cb * S;
#pragma omp parallel for if (B * (na + nb) > PAR_MIN)
  for (int64_t i = 0; i < B; i++) {
    memcpy(y + i * (na + nb), a + i * na, (size_t)na * sizeof(float));
    memcpy(y + i * (na + nb) + na, b + i * nb, (size_t)nb * sizeof(float));
  }
  return GC_OK;
}

// dy is (B, Ca+Cb, S); da (B, Ca, S) and db (B, Cb, S) written, each optional.
gc_status be_concat_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t B,
                             int64_t Ca, int64_t Cb, int64_t S) {
  (void)bc;
  const int64_t na = Ca * S, nb = Cb * S;
#pragma omp parallel for if (B * (na + nb) > PAR_MIN)
  for (int64_t i = 0; i < B; i++) {
    if (da) memcpy(da + i * na, dy + i * (na + nb), (size_t)na * sizeof(float));
    if (db) memcpy(db + i * nb, dy + i * (na + nb) + na, (size_t)nb * sizeof(float));
  }
  return GC_OK;
}

/* ---- nearest-neighbour 2x upsample ---- */

// x is (P, H, W, C), y is (P, 2H, 2W, C): NCHW as P = B*C, C = 1; NHWC as P = B. Each input
// row fills two output rows, each pixel's C values two adjacent pixels of each.
gc_status be_upsample2x_forward(be_ctx *bc, float *y, const float *x, int64_t P, int64_t H,
                                int64_t W, int64_t C) {
  (void)bc;
  const int64_t row = W * C; /* floats in one input row */
#pragma omp parallel for if (P * H * row * 4 > PAR_MIN)
  for (int64_t ph = 0; ph < P * H; ph++) {
    const float *xr = x + ph * row;
    float *y0 = y + ph * 4 * row; // rows 2h and 2h+1 of plane p are adjacent: (p*2H + 2h) * 2W*C
    float *y1 = y0 + 2 * row;
    for (int64_t w = 0; w < W; w++)
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const float v = xr[w * C + c];
        y0[2 * w * C + c] = v;
        y0[(2 * w + 1) * C + c] = v;
      }
    memcpy(y1, y0, (size_t)(2 * row) * sizeof(float));
  }
  return GC_OK;
}

// dy is (P, 2H, 2W, C), dx is (P, H, W, C): each input pixel collects its 2x2 block.
gc_status be_upsample2x_backward(be_ctx *bc, float *dx, const float *dy, int64_t P, int64_t H,
                                 int64_t W, int64_t C) {
  (void)bc;
  const int64_t row = W * C;
#pragma omp parallel for if (P * H * row * 4 > PAR_MIN)
  for (int64_t ph = 0; ph < P * H; ph++) {
    const float *d0 = dy + ph * 4 * row;
    const float *d1 = d0 + 2 * row;
    float *dxr = dx + ph * row;
    for (int64_t w = 0; w < W; w++)
#pragma omp simd
      for (int64_t c = 0; c < C; c++) {
        const int64_t i = 2 * w * C + c, j = i + C;
        const double s = (double)d0[i] + d0[j] + d1[i] + d1[j];
        dxr[w * C + c] = (float)s;
      }
  }
  return GC_OK;
}

/* ---- activations ---- */

#define SQRT1_2 0.70710678f        /* 1/sqrt(2) */
#define INV_SQRT_2PI 0.39894228f   /* 1/sqrt(2 pi) */
#define SQRT_2_OVER_PI 0.79788456f /* sqrt(2/pi) */
#define GELU_TANH_C 0.044715f
#define QUICK_GELU_C 1.702f

/* Phi(x) = 0.5 (1 + erf(x/sqrt 2)) written as 0.5 erfc(-x/sqrt 2): the same function without the
 * cancellation of 1 + erf for negative x, so gelu keeps its relative accuracy in the left tail. */
static inline float gelu_erf(float x) { return 0.5f * x * vm_erfcf(-x * SQRT1_2); }

static inline float gelu_erf_grad(float x) {
  return 0.5f * vm_erfcf(-x * SQRT1_2) + x * INV_SQRT_2PI * vm_expf(-0.5f * x * x);
}

static inline float silu_value(float x) { return vm_siluf(x); }
static inline float silu_grad(float x) { return vm_silu_gradf(x); }
// 0.5 (1 + tanh(u)) = sigmoid(2u), and 1 - tanh(u)^2 = 4 s (1 - s): no cancellation of 1 + tanh
// in the left tail, where the tanh form loses every digit.
static inline float gelu_tanh_value(float x) {
  const float u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
  return x * vm_sigmoidf(2.0f * u);
}
static inline float gelu_tanh_grad(float x) {
  const float u = SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x);
  const float e = vm_expf(-2.0f * u);
  const float s = 1.0f / (1.0f + e), one_minus_s = e * s;
  const float dinner = SQRT_2_OVER_PI * (1.0f + 3.0f * GELU_TANH_C * x * x);
  return s + 2.0f * x * s * one_minus_s * dinner;
}
static inline float quick_gelu_value(float x) { return x * vm_sigmoidf(QUICK_GELU_C * x); }
static inline float quick_gelu_grad(float x) {
  const float s = vm_sigmoidf(QUICK_GELU_C * x);
  return s * (1.0f + QUICK_GELU_C * x * (1.0f - s));
}

/* One vectorised loop per kind (a switch inside the loop would keep it scalar). */
#define ACT_LOOP(n, stmt)                                                                         \
  _Pragma("omp parallel for simd if (n > PAR_MIN / 8)") for (int64_t i = 0; i < n; i++) stmt

#define ACT_DISPATCH(kind, n, value_fn_stmt)                                                      \
  switch (kind) {                                                                               \
  case GC_ACT_SILU: { ACT_LOOP(n, value_fn_stmt(silu)); } break;                                \
  case GC_ACT_GELU: { ACT_LOOP(n, value_fn_stmt(gelu)); } break;                                \
  case GC_ACT_GELU_TANH: { ACT_LOOP(n, value_fn_stmt(gelu_tanh)); } break;                      \
  case GC_ACT_QUICK_GELU: { ACT_LOOP(n, value_fn_stmt(quick_gelu)); } break;                    \
  }

static inline float gelu_value(float x) { return gelu_erf(x); }
static inline float gelu_grad(float x) { return gelu_erf_grad(x); }

static gc_status check_activation(gc_activation kind) {
  if (kind == GC_ACT_SILU || kind == GC_ACT_GELU || kind == GC_ACT_GELU_TANH ||
      kind == GC_ACT_QUICK_GELU)
    return GC_OK;
  return gc_set_error(GC_ERR_INVALID_ARGUMENT, "activation: unknown kind %d", (int)kind);
}

// y, x are (n); y may alias x
gc_status be_activation_forward(be_ctx *bc, gc_activation kind, float *y, const float *x,
                                int64_t n) {
  (void)bc;
  gc_status st = check_activation(kind);
  if (st != GC_OK) return st;
#define FORWARD(name) y[i] = name##_value(x[i])
  ACT_DISPATCH(kind, n, FORWARD)
#undef FORWARD
  return GC_OK;
}

// dx, dy, x are (n); dx may alias dy
gc_status be_activation_backward(be_ctx *bc, gc_activation kind, float *dx, const float *dy,
                                 const float *x, int64_t n) {
  (void)bc;
  gc_status st = check_activation(kind);
  if (st != GC_OK) return st;
#define BACKWARD(name) dx[i] = dy[i] * name##_grad(x[i])
  ACT_DISPATCH(kind, n, BACKWARD)
#undef BACKWARD
  return GC_OK;
}

/* ---- GEGLU (diffusers): x = [h | g] along the last dim, y = h * gelu(g), erf form ---- */

/* One row: yr[D] = h[D] * gelu(g[D]), x = [h | g]. */
static inline void geglu_row(float *yr, const float *x, int64_t D) {
  const float *h = x, *g = x + D;
#pragma omp simd
  for (int64_t i = 0; i < D; i++) yr[i] = h[i] * gelu_erf(g[i]);
}

// x is (N, 2D), y is (N, D)
gc_status be_geglu_forward(be_ctx *bc, float *y, const float *x, int64_t N, int64_t D) {
  (void)bc;
#pragma omp parallel for if (N * D > PAR_MIN / 8)
  for (int64_t r = 0; r < N; r++) geglu_row(y + r * D, x + r * 2 * D, D);
  return GC_OK;
}

// dy is (N, D), x and dx are (N, 2D): dh = dy gelu(g), dg = dy h gelu'(g)
gc_status be_geglu_backward(be_ctx *bc, float *dx, const float *dy, const float *x, int64_t N,
                            int64_t D) {
  (void)bc;
#pragma omp parallel for if (N * D > PAR_MIN / 8)
  for (int64_t r = 0; r < N; r++) {
    const float *h = x + r * 2 * D;
    const float *g = h + D;
    const float *dyr = dy + r * D;
    float *dh = dx + r * 2 * D;
    float *dg = dh + D;
#pragma omp simd
    for (int64_t i = 0; i < D; i++) {
      const float gi = g[i], d = dyr[i];
      dh[i] = d * gelu_erf(gi);
      dg[i] = d * h[i] * gelu_erf_grad(gi);
    }
  }
  return GC_OK;
}

/* ---- the GEGLU feed-forward, fused ------------------------------------------------------- */

/* Floats of a row block's two intermediates, [R,2F] and [R,F], kept within this core's L2. */
enum { FF_BLOCK_FLOATS = 1 << 17, FF_MIN_ROWS = 16, FF_MAX_ROWS = 1024 };

/* y[N,O] = geglu(x[N,I] w1[2F,I]^T + b1) w2[O,F]^T + b2. Each thread takes blocks of R rows
 * through the first product, GEGLU and the second product while the block's intermediates are
 * in its cache; as three ops, the [N,2F] product went out to memory and came back for GEGLU,
 * whose output went out and came back again (in the UNet's 16x16 transformers 24 MB per call,
 * the first product's output alone costing it 2.85 instead of 1.65 ms). With h and g given
 * (training) the block's intermediates are written there instead of to scratch: still read back
 * while in cache, written once. The products are the linear layer's (be_linear_forward), called
 * inside this team, so each runs on its thread. */
gc_status be_geglu_feedforward_forward(be_ctx *bc, float *y, const float *x, const float *w1,
                                       const float *b1, const float *w2, const float *b2, float *h,
                                       float *g, int64_t N, int64_t I, int64_t F, int64_t O) {
  if (N == 0) return GC_OK;
  int64_t R = FF_BLOCK_FLOATS / (3 * (F > 0 ? F : 1)) / FF_MIN_ROWS * FF_MIN_ROWS;
  R = R < FF_MIN_ROWS ? FF_MIN_ROWS : R > FF_MAX_ROWS ? FF_MAX_ROWS : R;
  const int64_t nblocks = (N + R - 1) / R;
  /* per thread, for what is not given: hb [R,2F], gb [R,F] */
  const size_t need = (size_t)((h ? 0 : 2 * F * R) + (g ? 0 : F * R)) * sizeof(float);
  gc_status failed = GC_OK;

#pragma omp parallel for schedule(static) if (nblocks > 1)
  for (int64_t blk = 0; blk < nblocks; blk++) {
    float *scratch = need ? cpu_scratch(need) : NULL;
    gc_status st = need && !scratch ? GC_ERR_OUT_OF_MEMORY : GC_OK;
    const int64_t r0 = blk * R, rows = N - r0 < R ? N - r0 : R;
    float *hb = h ? h + r0 * 2 * F : scratch;
    float *gb = g ? g + r0 * F : scratch ? scratch + (h ? 0 : 2 * F * R) : NULL;
    if (st == GC_OK) st = be_linear_forward(bc, hb, x + r0 * I, w1, b1, rows, I, 2 * F, 0);
    if (st == GC_OK) {
      for (int64_t r = 0; r < rows; r++) geglu_row(gb + r * F, hb + r * 2 * F, F);
      st = be_linear_forward(bc, y + r0 * O, gb, w2, b2, rows, F, O, 0);
    }
    if (st != GC_OK) {
#pragma omp atomic write
      failed = st;
    }
  }
  if (failed != GC_OK)
    return gc_set_error(failed, "geglu feed-forward: a block of %lld rows failed (scratch of %zu bytes per thread)",
                        (long long)R, need);
  return GC_OK;
}
