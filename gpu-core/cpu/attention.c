/*
 * Multi-head scaled dot-product attention on the CPU.
 *
 * Heads are interleaved in the last dim (q[B,T,H*Dh]): head h of batch b is a [T,Dh] matrix at
 * q + b*T*H*Dh + h*Dh with row stride H*Dh. The per-head products are small (64x64x32 in a
 * 32x32 UNet), where a BLAS call costs more in overhead than in arithmetic and only runs on
 * one core, so each (batch, head) pair is done start to finish by one OpenMP thread with a
 * register-blocked kernel (gemm_panel), its scores staying in that thread's cache.
 */
#include "../core/backend.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__AVX__) && defined(__FMA__)
#include <immintrin.h>
#endif

/* ---- small GEMM kernel ------------------------------------------------------------------ */

typedef float v8 __attribute__((vector_size(32)));
typedef float v8u __attribute__((vector_size(32), aligned(4), may_alias)); /* unaligned access */

static inline v8 v8_load(const float *p) { return *(const v8u *)p; }
static inline void v8_store(float *p, v8 v) { *(v8u *)p = v; }
static inline v8 v8_splat(float a) { return (v8){a, a, a, a, a, a, a, a}; }
static inline v8 v8_fma(v8 a, v8 b, v8 c) {
#if defined(__AVX__) && defined(__FMA__)
  return (v8)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}

enum { NR = 16, MR = 6 }; /* a 6x16 block of C lives in 12 vector registers */

/* C[M,16] = alpha A B for one 16-column panel. A(m,k) = A[m*sam + k*sak] (strides let the same
 * kernel read A or A^T); B[K,16] rows at stride ldb; C rows at stride ldc. */
static void gemm_panel(int64_t M, int64_t K, float alpha, const float *A, int64_t sam,
                       int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc) {
  const v8 va = v8_splat(alpha);
  int64_t m = 0;
  for (; m + MR <= M; m += MR) {
    const float *a0 = A + m * sam;
    v8 c00 = {0}, c01 = {0}, c10 = {0}, c11 = {0}, c20 = {0}, c21 = {0};
    v8 c30 = {0}, c31 = {0}, c40 = {0}, c41 = {0}, c50 = {0}, c51 = {0};
    for (int64_t k = 0; k < K; k++) {
      const v8 b0 = v8_load(B + k * ldb), b1 = v8_load(B + k * ldb + 8);
      const float *a = a0 + k * sak;
      v8 x = v8_splat(a[0]);
      c00 = v8_fma(x, b0, c00);
      c01 = v8_fma(x, b1, c01);
      x = v8_splat(a[sam]);
      c10 = v8_fma(x, b0, c10);
      c11 = v8_fma(x, b1, c11);
      x = v8_splat(a[2 * sam]);
      c20 = v8_fma(x, b0, c20);
      c21 = v8_fma(x, b1, c21);
      x = v8_splat(a[3 * sam]);
      c30 = v8_fma(x, b0, c30);
      c31 = v8_fma(x, b1, c31);
      x = v8_splat(a[4 * sam]);
      c40 = v8_fma(x, b0, c40);
      c41 = v8_fma(x, b1, c41);
      x = v8_splat(a[5 * sam]);
      c50 = v8_fma(x, b0, c50);
      c51 = v8_fma(x, b1, c51);
    }
    float *c = C + m * ldc;
    v8_store(c, va * c00), v8_store(c + 8, va * c01), c += ldc;
    v8_store(c, va * c10), v8_store(c + 8, va * c11), c += ldc;
    v8_store(c, va * c20), v8_store(c + 8, va * c21), c += ldc;
    v8_store(c, va * c30), v8_store(c + 8, va * c31), c += ldc;
    v8_store(c, va * c40), v8_store(c + 8, va * c41), c += ldc;
    v8_store(c, va * c50), v8_store(c + 8, va * c51);
  }
  for (; m < M; m++) {
    const float *a = A + m * sam;
    v8 c0 = {0}, c1 = {0};
    for (int64_t k = 0; k < K; k++) {
      const v8 x = v8_splat(a[k * sak]);
      c0 = v8_fma(x, v8_load(B + k * ldb), c0);
      c1 = v8_fma(x, v8_load(B + k * ldb + 8), c1);
    }
    v8_store(C + m * ldc, va * c0);
    v8_store(C + m * ldc + 8, va * c1);
  }
}

/* C[M,N] = alpha A B (written), A as in gemm_panel, B[K,N] rows at stride ldb. The last N % 16
 * columns go through a zero-padded copy in tail[K*16 + M*16] so every panel is a full one. */
static void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t sam,
                 int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc, float *tail) {
  int64_t n = 0;
  for (; n + NR <= N; n += NR) gemm_panel(M, K, alpha, A, sam, sak, B + n, ldb, C + n, ldc);
  if (n == N) return;
  const int64_t w = N - n;
  float *bt = tail, *ct = tail + K * NR;
  for (int64_t k = 0; k < K; k++) {
    for (int64_t j = 0; j < w; j++) bt[k * NR + j] = B[k * ldb + n + j];
    for (int64_t j = w; j < NR; j++) bt[k * NR + j] = 0.0f;
  }
  gemm_panel(M, K, alpha, A, sam, sak, bt, NR, ct, NR);
  for (int64_t m = 0; m < M; m++) memcpy(C + m * ldc + n, ct + m * NR, (size_t)w * sizeof(float));
}

/* ---- per-thread scratch ------------------------------------------------------------------ */

static _Thread_local float *g_scratch;
static _Thread_local size_t g_scratch_floats;

/* Grow-on-demand buffer of this thread (OpenMP threads persist, so it is reused across calls). */
static float *scratch_get(size_t floats) {
  if (floats <= g_scratch_floats) return g_scratch;
  free(g_scratch);
  size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
  g_scratch = aligned_alloc(64, bytes);
  g_scratch_floats = g_scratch ? floats : 0;
  return g_scratch;
}

static int64_t max3(int64_t a, int64_t b, int64_t c) {
  const int64_t m = a > b ? a : b;
  return m > c ? m : c;
}

static int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

/* dst[cols, ldd] = src[rows, cols]^T (src rows at stride lds), columns rows..ldd-1 zeroed. */
static void transpose_pad(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows,
                          int64_t cols) {
  for (int64_t c = 0; c < cols; c++) {
    float *d = dst + c * ldd;
    for (int64_t r = 0; r < rows; r++) d[r] = src[r * lds + c];
    for (int64_t r = rows; r < ldd; r++) d[r] = 0.0f;
  }
}

/* e^x for x <= 0 (softmax after max subtraction), ~1e-7 relative error: Cephes' expf polynomial
 * in branch-free form so the softmax loops vectorize (libm's expf is a call per element). */
static inline float exp_nonpositive(float x) {
  uint32_t ix;
  memcpy(&ix, &x, sizeof ix);
  ix = ix > 0xC2AE0000u ? 0xC2AE0000u : ix; /* x < -87 -> -87 (e^-87 ~ 1.6e-38, still normal) */
  memcpy(&x, &ix, sizeof ix);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
  float r = x - n * 0.693359375f; /* x - n ln2, ln2 split in two for precision */
  r = r - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * (r * r) + r + 1.0f;
  const uint32_t bits = (uint32_t)((int32_t)n + 127) << 23; /* 2^n */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

/* ---- forward ----------------------------------------------------------------------------- */

/* out[B,Tq,H*Dh] (=), probs[B,H,Tq,Tk] (=); q[B,Tq,H*Dh], k,v[B,Tk,H*Dh].
 * causal masks key j > query i (the front end checks Tq == Tk). */
gc_status be_attention_forward(be_ctx *bc, float *out, float *probs, const float *q,
                               const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t H, int64_t Dh, int causal, float scale) {
  (void)bc;
  const int64_t D = H * Dh, BH = B * H, Tkp = round_up(Tk, NR);
  if (Tk == 0) { /* no keys: an empty softmax, defined here as attending to nothing */
    memset(out, 0, (size_t)(B * Tq * D) * sizeof(float));
    return GC_OK;
  }
  const int64_t tail = 2 * NR * max3(Tq, Tk, Dh);
  /* per thread: kt[Dh,Tkp] (K^T padded), s[Tq,Tkp] (scores, then probabilities), tail */
  const size_t need = (size_t)(Dh * Tkp + Tq * Tkp + tail);
  int oom = 0;

#pragma omp parallel for schedule(dynamic) if (BH > 1 && BH * Tq * Tk * Dh > 65536)
  for (int64_t bh = 0; bh < BH; bh++) {
    float *kt = scratch_get(need);
    if (!kt) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    float *s = kt + Dh * Tkp, *tl = s + Tq * Tkp;
    const int64_t b = bh / H, h = bh % H;
    const float *qh = q + b * Tq * D + h * Dh, *kh = k + b * Tk * D + h * Dh;
    const float *vh = v + b * Tk * D + h * Dh;
    float *ph = probs + bh * Tq * Tk;

    /* s[Tq,Tkp] = scale q_h k_h^T, through kt so the kernel streams contiguous rows */
    transpose_pad(kt, Tkp, kh, D, Tk, Dh);
    gemm(Tq, Tkp, Dh, scale, qh, D, 1, kt, Tkp, s, Tkp, tl);

    /* row softmax with the max subtracted; masked keys get exactly 0 */
    for (int64_t i = 0; i < Tq; i++) {
      float *row = s + i * Tkp, *prow = ph + i * Tk;
      const int64_t n = causal ? i + 1 : Tk; /* keys 0..i are visible to query i */
      float mx = row[0];
#pragma omp simd reduction(max : mx)
      for (int64_t j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
      double sum = 0.0;
#pragma omp simd reduction(+ : sum)
      for (int64_t j = 0; j < n; j++) {
        const float e = exp_nonpositive(row[j] - mx);
        row[j] = e;
        sum += e;
      }
      const float inv = (float)(1.0 / sum);
      for (int64_t j = 0; j < n; j++) row[j] *= inv;
      for (int64_t j = n; j < Tk; j++) row[j] = 0.0f;
      memcpy(prow, row, (size_t)Tk * sizeof(float));
    }

    /* out_h[Tq,Dh] = p[Tq,Tk] v_h[Tk,Dh] */
    gemm(Tq, Dh, Tk, 1.0f, s, Tkp, 1, vh, D, out + b * Tq * D + h * Dh, D, tl);
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "attention scratch of %zu floats per thread", need);
  return GC_OK;
}

/* ---- backward ---------------------------------------------------------------------------- */

/* dq[B,Tq,H*Dh], dk,dv[B,Tk,H*Dh] (=, each optional); dout[B,Tq,H*Dh]; q, k, v, probs as
 * forward. With P = probs:
 *   dv = P^T dout, dP = dout v^T, dS = scale P (dP - rowsum(dP P)), dq = dS k, dk = dS^T q. */
gc_status be_attention_backward(be_ctx *bc, float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v,
                                const float *probs, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                int64_t Dh, float scale) {
  (void)bc;
  if (!dq && !dk && !dv) return GC_OK;
  const int64_t D = H * Dh, BH = B * H, Tkp = round_up(Tk, NR);
  const int64_t tail = 2 * NR * max3(Tq, Tk, Dh);
  /* per thread: vt[Dh,Tkp] (v^T padded), g[Tq,Tkp] (dP, then dS), tail */
  const size_t need = (size_t)(Dh * Tkp + Tq * Tkp + tail);
  int oom = 0;

#pragma omp parallel for schedule(dynamic) if (BH > 1 && BH * Tq * Tk * Dh > 65536)
  for (int64_t bh = 0; bh < BH; bh++) {
    float *vt = scratch_get(need);
    if (!vt) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    float *g = vt + Dh * Tkp, *tl = g + Tq * Tkp;
    const int64_t b = bh / H, h = bh % H;
    const int64_t qo = b * Tq * D + h * Dh, ko = b * Tk * D + h * Dh; /* head offsets */
    const float *ph = probs + bh * Tq * Tk;

    /* dv_h[Tk,Dh] = p^T dout_h: A(j,i) = p[i,j] */
    if (dv) gemm(Tk, Dh, Tq, 1.0f, ph, 1, Tk, dout + qo, D, dv + ko, D, tl);
    if (!dq && !dk) continue;

    /* g[Tq,Tkp] = dout_h v_h^T */
    transpose_pad(vt, Tkp, v + ko, D, Tk, Dh);
    gemm(Tq, Tkp, Dh, 1.0f, dout + qo, D, 1, vt, Tkp, g, Tkp, tl);

    /* softmax backward per row, the scale folded in: dS = scale p (dP - <dP, p>) */
    for (int64_t i = 0; i < Tq; i++) {
      float *gr = g + i * Tkp;
      const float *pr = ph + i * Tk;
      double dot = 0.0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < Tk; j++) dot += (double)gr[j] * pr[j];
      const float d = (float)dot;
      for (int64_t j = 0; j < Tk; j++) gr[j] = scale * pr[j] * (gr[j] - d);
    }

    /* dq_h[Tq,Dh] = dS k_h; dk_h[Tk,Dh] = dS^T q_h: A(j,i) = dS[i,j] */
    if (dq) gemm(Tq, Dh, Tk, 1.0f, g, Tkp, 1, k + ko, D, dq + qo, D, tl);
    if (dk) gemm(Tk, Dh, Tq, 1.0f, g, 1, Tkp, q + qo, D, dk + ko, D, tl);
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "attention scratch of %zu floats per thread", need);
  return GC_OK;
}
