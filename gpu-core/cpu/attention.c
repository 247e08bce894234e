/*
 * Multi-head scaled dot-product attention on the CPU.
 *
 * Heads are interleaved in the last dim (q[B,T,H*Dh]): head h of batch b is a [T,Dh] matrix at
 * q + b*T*H*Dh + h*Dh with row stride H*Dh. The per-head products are small (256x256x16 and
 * 64x64x16 in the shipped 32x32 UNet), where a BLAS call costs more in overhead than in arithmetic
 * and only runs on one core, so each (batch, head) pair is done start to finish by one OpenMP
 * thread with a register-blocked kernel (gemm_panel), its queries in blocks whose scores stay in
 * that thread's cache.
 */
#include "../core/backend.h"
#include "vmath.h"

#include <stdlib.h>
#include <string.h>
#if defined(__AVX__)
#include <immintrin.h>
#endif

/* ---- small GEMM kernel ------------------------------------------------------------------ */

/* One vector of VW floats; a row of the C block is NR = 16 floats (NV vectors). AVX-512 holds a
 * 12x16 block in 12 registers (the per-head products have N = 16 = Dh or N = Tk, so 16 columns
 * waste nothing); AVX2 a 6x16 block in 12. */
#if defined(__AVX512F__)
typedef float vec __attribute__((vector_size(64)));
typedef float vecu __attribute__((vector_size(64), aligned(4), may_alias)); /* unaligned access */
enum { VW = 16, MR = 12 };
static inline vec v_fma(vec a, vec b, vec c) { return (vec)_mm512_fmadd_ps((__m512)a, (__m512)b, (__m512)c); }
static inline vec v_splat(float a) { return (vec)_mm512_set1_ps(a); }
static inline vec v_max(vec a, vec b) { return (vec)_mm512_max_ps((__m512)a, (__m512)b); }
#else
typedef float vec __attribute__((vector_size(32)));
typedef float vecu __attribute__((vector_size(32), aligned(4), may_alias));
enum { VW = 8, MR = 6 };
static inline vec v_fma(vec a, vec b, vec c) {
#if defined(__AVX__) && defined(__FMA__)
  return (vec)_mm256_fmadd_ps((__m256)a, (__m256)b, (__m256)c);
#else
  return a * b + c;
#endif
}
static inline vec v_splat(float a) { return (vec){a, a, a, a, a, a, a, a}; }
#if defined(__AVX__)
static inline vec v_max(vec a, vec b) { return (vec)_mm256_max_ps((__m256)a, (__m256)b); }
#else
static inline vec v_max(vec a, vec b) {
  for (int i = 0; i < VW; i++) a[i] = a[i] > b[i] ? a[i] : b[i];
  return a;
}
#endif
#endif
enum { NR = 16, NV = NR / VW };

static inline vec v_load(const float *p) { return *(const vecu *)p; }
static inline void v_store(float *p, vec v) { *(vecu *)p = v; }

/* C[M,16] = alpha A B for one 16-column panel, M a multiple of MR. A(m,k) = A[m*sam + k*sak]
 * (strides let the same kernel read A or A^T); B[K,16] rows at stride ldb; C rows at ldc. */
static void gemm_panel(int64_t M, int64_t K, float alpha, const float *A, int64_t sam,
                       int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc) {
  const vec va = v_splat(alpha);
  for (int64_t m = 0; m + MR <= M; m += MR) {
    const float *a0 = A + m * sam;
    vec c[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
      for (int j = 0; j < NV; j++) c[i][j] = (vec){0};
    for (int64_t k = 0; k < K; k++) {
      vec b[NV];
#pragma GCC unroll 2
      for (int j = 0; j < NV; j++) b[j] = v_load(B + k * ldb + j * VW);
      const float *a = a0 + k * sak;
#pragma GCC unroll 16
      for (int i = 0; i < MR; i++) {
        const vec x = v_splat(a[i * sam]);
#pragma GCC unroll 2
        for (int j = 0; j < NV; j++) c[i][j] = v_fma(x, b[j], c[i][j]);
      }
    }
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 2
      for (int j = 0; j < NV; j++) v_store(C + (m + i) * ldc + j * VW, va * c[i][j]);
  }
}

/* Floats of `tmp` that gemm needs for sizes up to M, K. */
static int64_t gemm_tmp_floats(int64_t M, int64_t K) { return K * (NR + MR) + (M + MR) * NR; }

/* C[M,N] = alpha A B (written), A as in gemm_panel, B[K,N] rows at stride ldb. Ragged edges
 * (the last M % MR rows, the last N % 16 columns) run through zero-padded copies in tmp, so the
 * kernel only ever sees full blocks. */
static void gemm(int64_t M, int64_t N, int64_t K, float alpha, const float *A, int64_t sam,
                 int64_t sak, const float *B, int64_t ldb, float *C, int64_t ldc, float *tmp) {
  const int64_t M6 = M / MR * MR, mt = M - M6;
  float *bt = tmp;           /* [K,16]: a ragged column panel of B */
  float *at = bt + K * NR;   /* [K,MR]: the ragged rows of A, at(m,k) = at[k*MR + m] */
  float *ct = at + K * MR;   /* [M6,16]: C of a ragged column panel */
  float *c6 = ct + M6 * NR;  /* [MR,16]: C of the ragged rows */
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

/* x[n] = softmax(x[n]) in place, n >= 1. The max is taken over whole vectors in registers
 * (GCC's `omp simd` max reduction went through the stack, a store-forwarding stall per row that
 * cost a third of the kernel); the sum runs in float lanes: every term is in (0, 1] and one of
 * them is 1, so its relative error stays ~1e-7 at these lengths. */
__attribute__((target("prefer-vector-width=512"))) static void softmax_row(float *x, int64_t n) {
  const int64_t nv = n / VW * VW;
  float mx = x[0];
  if (nv) {
    vec m = v_load(x);
    for (int64_t j = VW; j < nv; j += VW) m = v_max(m, v_load(x + j));
    for (int i = 0; i < VW; i++) mx = m[i] > mx ? m[i] : mx;
  }
  for (int64_t j = nv; j < n; j++) mx = x[j] > mx ? x[j] : mx;
  float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
  for (int64_t j = 0; j < n; j++) {
    const float e = vm_expf(x[j] - mx); /* <= 0 after the max: e in (0, 1] */
    x[j] = e;
    sum += e;
  }
  const float inv = 1.0f / sum;
#pragma omp simd
  for (int64_t j = 0; j < n; j++) x[j] *= inv;
}

/* <a, b> over n floats, in VW float lanes (then double across the lanes): the softmax backward's
 * per-row dot, whose terms p dP are bounded by max |dP|, so fp32 lanes lose ~1e-7 of it. */
static float dot_row(const float *a, const float *b, int64_t n) {
  const int64_t nv = n / VW * VW;
  vec acc = {0};
  for (int64_t j = 0; j < nv; j += VW) acc = v_fma(v_load(a + j), v_load(b + j), acc);
  double sum = 0.0;
  for (int i = 0; i < VW; i++) sum += acc[i];
  for (int64_t j = nv; j < n; j++) sum += (double)a[j] * b[j];
  return (float)sum;
}

/* Query rows per block: the block's scores [QB,Tkp] stay within ~128 KB of this core's cache
 * from the QK^T product through the softmax to the PV product, whatever the sequence length. */
static int64_t query_block(int64_t Tq, int64_t Tkp) {
  int64_t qb = 32768 / Tkp / MR * MR;
  if (qb < MR) qb = MR;
  return qb < Tq ? qb : Tq;
}

/* out[B,Tq,H*Dh] (=), probs[B,H,Tq,Tk] (=, optional: only the backward reads them);
 * q[B,Tq,H*Dh], k,v[B,Tk,H*Dh]. causal masks key j > query i (the front end checks Tq == Tk). */
gc_status be_attention_forward(be_ctx *bc, float *out, float *probs, const float *q,
                               const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t H, int64_t Dh, int causal, float scale) {
  (void)bc;
  const int64_t D = H * Dh, BH = B * H, Tkp = round_up(Tk, NR);
  if (Tk == 0) { /* no keys: an empty softmax, defined here as attending to nothing */
    memset(out, 0, (size_t)(B * Tq * D) * sizeof(float));
    return GC_OK;
  }
  const int64_t QB = query_block(Tq, Tkp);
  const int64_t tmp = gemm_tmp_floats(QB > Tk ? QB : Tk, max3(QB, Tk, Dh));
  /* per thread: kt[Dh,Tkp] (K^T padded), s[QB,Tkp] (one block's scores, then probabilities) */
  const size_t need = (size_t)(Dh * Tkp + QB * Tkp + tmp);
  int oom = 0;

#pragma omp parallel for schedule(dynamic) if (BH > 1 && BH * Tq * Tk * Dh > 65536)
  for (int64_t bh = 0; bh < BH; bh++) {
    float *kt = scratch_get(need);
    if (!kt) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    float *s = kt + Dh * Tkp, *tl = s + QB * Tkp;
    const int64_t b = bh / H, h = bh % H;
    const float *kh = k + b * Tk * D + h * Dh, *vh = v + b * Tk * D + h * Dh;
    transpose_pad(kt, Tkp, kh, D, Tk, Dh);

    for (int64_t i0 = 0; i0 < Tq; i0 += QB) {
      const int64_t rows = Tq - i0 < QB ? Tq - i0 : QB;
      const int64_t qo = b * Tq * D + i0 * D + h * Dh;
      /* s[rows,Tkp] = scale q_rows k_h^T, through kt so the kernel streams contiguous rows */
      gemm(rows, Tkp, Dh, scale, q + qo, D, 1, kt, Tkp, s, Tkp, tl);

      /* row softmax with the max subtracted; masked keys get exactly 0 */
      for (int64_t r = 0; r < rows; r++) {
        float *row = s + r * Tkp;
        const int64_t n = causal ? i0 + r + 1 : Tk; /* keys 0..i are visible to query i */
        softmax_row(row, n);
        for (int64_t j = n; j < Tk; j++) row[j] = 0.0f;
        if (probs) memcpy(probs + (bh * Tq + i0 + r) * Tk, row, (size_t)Tk * sizeof(float));
      }

      /* out_rows[rows,Dh] = p[rows,Tk] v_h[Tk,Dh] */
      gemm(rows, Dh, Tk, 1.0f, s, Tkp, 1, vh, D, out + qo, D, tl);
    }
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
      const float d = dot_row(gr, pr, Tk);
#pragma omp simd
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
