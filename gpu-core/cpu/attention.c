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
#include "vmath.h"

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

/* C[M,16] = alpha A B for one 16-column panel, M a multiple of 6. A(m,k) = A[m*sam + k*sak]
 * (strides let the same kernel read A or A^T); B[K,16] rows at stride ldb; C rows at ldc. */
static void gemm_panel(int64_t M, int64_t K, float alpha, const float *A, int64_t sam,
                       int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc) {
  const v8 va = v8_splat(alpha);
  for (int64_t m = 0; m + MR <= M; m += MR) {
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
}

/* Floats of `tmp` that gemm needs for sizes up to M, K. */
static int64_t gemm_tmp_floats(int64_t M, int64_t K) { return K * (NR + MR) + (M + MR) * NR; }

/* C[M,N] = alpha A B (written), A as in gemm_panel, B[K,N] rows at stride ldb. Ragged edges
 * (the last M % 6 rows, the last N % 16 columns) run through zero-padded copies in tmp, so the
 * kernel only ever sees full blocks. */
static void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t sam,
                 int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc, float *tmp) {
  const int64_t M6 = M / MR * MR, mt = M - M6;
  float *bt = tmp;           /* [K,16]: a ragged column panel of B */
  float *at = bt + K * NR;   /* [K,6]: the ragged rows of A, at(m,k) = at[k*6 + m] */
  float *ct = at + K * MR;   /* [M6,16]: C of a ragged column panel */
  float *c6 = ct + M6 * NR;  /* [6,16]: C of the ragged rows */
  if (mt) {
    for (int64_t k = 0; k < K; k++)
      for (int64_t m = 0; m < MR; m++) at[k * MR + m] = m < mt ? A[(M6 + m) * sam + k * sak] : 0.0f;
  }
  for (int64_t n = 0; n < N; n += NR) {
    const int64_t w = N - n < NR ? N - n : NR;
    const float *bp = B + n;
    int64_t lb = ldb;
    if (w < NR) {
      for (int64_t k = 0; k < K; k++)
        for (int64_t j = 0; j < NR; j++) bt[k * NR + j] = j < w ? B[k * ldb + n + j] : 0.0f;
      bp = bt;
      lb = NR;
    }
    if (w == NR) {
      gemm_panel(M6, K, alpha, A, sam, sak, bp, lb, C + n, ldc);
    } else {
      gemm_panel(M6, K, alpha, A, sam, sak, bp, lb, ct, NR);
      for (int64_t m = 0; m < M6; m++) memcpy(C + m * ldc + n, ct + m * NR, (size_t)w * sizeof(float));
    }
    if (mt) {
      gemm_panel(MR, K, alpha, at, 1, MR, bp, lb, c6, NR);
      for (int64_t m = 0; m < mt; m++)
        memcpy(C + (M6 + m) * ldc + n, c6 + m * NR, (size_t)w * sizeof(float));
    }
  }
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
  const int64_t tmp = gemm_tmp_floats(Tq > Tk ? Tq : Tk, max3(Tq, Tk, Dh));
  /* per thread: kt[Dh,Tkp] (K^T padded), s[Tq,Tkp] (scores, then exponentials), gemm tmp */
  const size_t need = (size_t)(Dh * Tkp + Tq * Tkp + tmp);
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
        const float e = vm_expf(row[j] - mx); /* <= 0 after the max: e in (0, 1] */
        row[j] = e;
        sum += e;
      }
      const float inv = (float)(1.0 / sum);
      for (int64_t j = 0; j < n; j++) prow[j] = row[j] * inv;
      for (int64_t j = n; j < Tk; j++) prow[j] = 0.0f;
    }

    /* out_h[Tq,Dh] = p[Tq,Tk] v_h[Tk,Dh] */
    gemm(Tq, Dh, Tk, 1.0f, ph, Tk, 1, vh, D, out + b * Tq * D + h * Dh, D, tl);
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
  const int64_t tmp = gemm_tmp_floats(Tq > Tk ? Tq : Tk, max3(Tq, Tk, Dh));
  /* per thread: vt[Dh,Tkp] (v^T padded), g[Tq,Tkp] (dP, then dS), gemm tmp */
  const size_t need = (size_t)(Dh * Tkp + Tq * Tkp + tmp);
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
