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
#include "scratch.h"
#include "small_gemm.h"
#include "vmath.h"

#include <math.h>
#include <string.h>

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

/* Query rows per block: the block's scores [QB,Tkp] stay within ~128 KB of this core's cache
 * from the QK^T product through the softmax to the PV product, whatever the sequence length. */
static int64_t query_block(int64_t Tq, int64_t Tkp) {
  int64_t qb = 32768 / Tkp / MR * MR;
  if (qb < MR) qb = MR;
  return qb < Tq ? qb : Tq;
}

#if defined(__AVX512F__)
static inline float v_hmax(vec v) { return _mm512_reduce_max_ps((__m512)v); }
static inline float v_hsum(vec v) { return _mm512_reduce_add_ps((__m512)v); }
#else
static inline float v_hmax(vec v) {
  float m = v[0];
  for (int i = 1; i < VW; i++) m = v[i] > m ? v[i] : m;
  return m;
}
static inline float v_hsum(vec v) {
  float s = 0.0f;
  for (int i = 0; i < VW; i++) s += v[i];
  return s;
}
#endif

/* 2^x for x <= 0 (a softmax's scores less their row's max, in base-2 units): x = n + f with n an
 * integer and |f| <= 1/2, 2^f = e^r for r = f ln 2 by the Cephes polynomial of vm_expf (~2 ulp),
 * times 2^n by one scalef. A third fewer instructions than vm_expf on the natural-log scores
 * (no two-part ln 2 reduction, no integer clamp and exponent build): the exp was most of the
 * softmax, and the softmax ~45% of a 256x256 attention forward. -inf (the padding) and anything
 * under -126 give 2^-126, a normal float; a NaN stays NaN. */
#if defined(__AVX512F__)
static inline vec v_exp2(vec x) {
  const __m512 v = _mm512_max_ps(_mm512_set1_ps(-126.0f), (__m512)x); /* NaN: the second operand */
  const __m512 n = _mm512_roundscale_ps(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 r = _mm512_mul_ps(_mm512_sub_ps(v, n), _mm512_set1_ps(0.693147180559945f));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
  return (vec)_mm512_scalef_ps(p, n);
}
#else
static inline vec v_exp2(vec x) {
  vec e;
  for (int l = 0; l < VW; l++) e[l] = vm_expf(x[l] * 0.693147180559945f);
  return e;
}
#endif

/* x[0..n) = softmax(x[0..n) ln 2) (scores given in base-2 units) in place, x[n..nw) used as
 * padding (nw = n rounded up to VW, within the row's allocation): -inf there gives ~1e-38 after
 * the exp, so every loop runs on whole vectors (a scalar tail cost the UNet's 16-key
 * cross-attention as much as its vector part), and the max and the sum each take one
 * shuffle-tree horizontal step (GCC's `omp simd` reductions went through the stack, 16
 * dependent scalar steps per row: self-attention 256x256 ran 4.4-4.9 ms per call with them,
 * 4.1-4.3 without). The sum runs in float lanes: every term is in (0, 1] and one of them is 1,
 * so its relative error stays ~1e-7 at these lengths. */
static void softmax_row(float *x, int64_t n, int64_t nw) {
  for (int64_t j = n; j < nw; j++) x[j] = -INFINITY;
  vec m = v_load(x);
  for (int64_t j = VW; j < nw; j += VW) m = v_max(m, v_load(x + j));
  const float mx = v_hmax(m);
  const vec vmx = v_splat(mx);
  vec acc = {0};
  for (int64_t j = 0; j < nw; j += VW) {
    const vec e = v_exp2(v_load(x + j) - vmx); /* <= 0 after the max: e in (0, 1] */
    v_store(x + j, e);
    acc += e;
  }
  const vec inv = v_splat(1.0f / v_hsum(acc));
  for (int64_t j = 0; j < nw; j += VW) v_store(x + j, v_load(x + j) * inv);
}

/* dst[n] = src[n] for a saved probability row: written now, read by the backward much later, so
 * with non-temporal stores where the row allows (64-byte aligned, whole vectors), which skip
 * reading the destination's lines into the cache first. */
static void store_row(float *dst, const float *src, int64_t n) {
#if defined(__AVX512F__)
  if (((uintptr_t)dst & 63) == 0 && n % 16 == 0) {
    for (int64_t j = 0; j < n; j += 16) _mm512_stream_ps(dst + j, _mm512_loadu_ps(src + j));
    return;
  }
#endif
  memcpy(dst, src, (size_t)n * sizeof(float));
}

/* One (batch, head): out rows of head h, probabilities to ph[Tq,Tk] when saved (else NULL).
 * Scratch kt[Dh,Tkp] (k_h^T, zero-padded), s[QB,Tkp] (a block's scores), tl (gemm's). */
static void forward_head(float *out, float *ph, const float *q, const float *kh, const float *vh,
                         int64_t b, int64_t Tq, int64_t Tk, int64_t D, int64_t Dh, int causal,
                         float scale, int64_t QB, float *kt, float *s, float *tl) {
  const int64_t Tkp = round_up(Tk, NR);
  transpose_pad(kt, Tkp, kh, D, Tk, Dh);
  for (int64_t i0 = 0; i0 < Tq; i0 += QB) {
    const int64_t rows = Tq - i0 < QB ? Tq - i0 : QB;
    const int64_t qo = b * Tq * D + i0 * D;
    /* s[rows,Tkp] = scale log2(e) q_rows k_h^T (base-2 units for softmax_row), through kt so
     * the kernel streams contiguous rows */
    gemm(rows, Tkp, Dh, scale * 1.4426950408889634f, q + qo, D, 1, kt, Tkp, s, Tkp, tl, 0);
    for (int64_t r = 0; r < rows; r++) { /* masked keys get exactly 0 */
      float *row = s + r * Tkp;
      const int64_t n = causal ? i0 + r + 1 : Tk; /* keys 0..i are visible to query i */
      const int64_t nw = round_up(n, VW) < Tkp ? round_up(n, VW) : Tkp;
      softmax_row(row, n, nw);
      for (int64_t j = n; j < Tk; j++) row[j] = 0.0f;
      if (ph) store_row(ph + (i0 + r) * Tk, row, Tk);
    }
    gemm(rows, Dh, Tk, 1.0f, s, Tkp, 1, vh, D, out + qo, D, tl, 0); /* p[rows,Tk] v_h[Tk,Dh] */
  }
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
  const size_t need = (size_t)(Dh * Tkp + QB * Tkp + tmp); /* per thread: kt, s, tl */
  int oom = 0;

#pragma omp parallel for schedule(dynamic) if (BH > 1 && BH * Tq * Tk * Dh > 65536)
  for (int64_t bh = 0; bh < BH; bh++) {
    float *w = cpu_scratch(need * sizeof(float));
    if (!w) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    const int64_t b = bh / H, h = bh % H;
    const float *kh = k + b * Tk * D + h * Dh, *vh = v + b * Tk * D + h * Dh;
    forward_head(out + h * Dh, probs ? probs + bh * Tq * Tk : NULL, q + h * Dh, kh, vh, b, Tq, Tk,
                 D, Dh, causal, scale, QB, w, w + Dh * Tkp, w + Dh * Tkp + QB * Tkp);
  }
#if defined(__AVX512F__)
  if (probs) _mm_sfence(); /* the streamed rows are visible before the backward reads them */
#endif
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "attention scratch of %zu floats per thread", need);
  return GC_OK;
}

/* ---- backward ---------------------------------------------------------------------------- */

/* <a, b> over n floats, in VW float lanes, then one horizontal step: the softmax backward's
 * per-row dot, whose terms p dP are bounded by max |dP|, so fp32 lanes lose ~1e-7 of it. */
static float dot_row(const float *a, const float *b, int64_t n) {
  const int64_t nv = n / VW * VW;
  vec acc = {0};
  for (int64_t j = 0; j < nv; j += VW) acc = v_fma(v_load(a + j), v_load(b + j), acc);
  float sum = v_hsum(acc);
  for (int64_t j = nv; j < n; j++) sum += a[j] * b[j];
  return sum;
}

/* dq[B,Tq,H*Dh], dk,dv[B,Tk,H*Dh] (=, each optional); dout[B,Tq,H*Dh]; q, k, v, probs as
 * forward. With P = probs:
 *   dv = P^T dout, dP = dout v^T, dS = scale P (dP - rowsum(dP P)), dq = dS k, dk = dS^T q.
 * Per (batch, head) in blocks of query rows, as the forward: a block's rows of P are read once
 * from memory, in order (the softmax backward), and its dv and dk shares (P_blk^T dout_blk,
 * dS_blk^T q_blk) are summed into dv and dk while they are in cache. Reading P column-wise
 * for a whole-head dv = P^T dout instead cost as much as the rest of the backward (the
 * probabilities come from memory: 33.5 MB per 256x256 call at batch 32). */
gc_status be_attention_backward(be_ctx *bc, float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v,
                                const float *probs, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                int64_t Dh, float scale) {
  (void)bc;
  if (!dq && !dk && !dv) return GC_OK;
  const int64_t D = H * Dh, BH = B * H, Tkp = round_up(Tk, NR);
  if (Tq == 0 || Tk == 0) { /* no rows to sum: zero gradients */
    if (dk) memset(dk, 0, (size_t)(B * Tk * D) * sizeof(float));
    if (dv) memset(dv, 0, (size_t)(B * Tk * D) * sizeof(float));
    if (dq) memset(dq, 0, (size_t)(B * Tq * D) * sizeof(float));
    return GC_OK;
  }
  const int64_t QB = query_block(Tq, Tkp);
  const int64_t tmp = gemm_tmp_floats(QB > Tk ? QB : Tk, max3(QB, Tk, Dh));
  /* per thread: vt[Dh,Tkp] (v^T padded), g[QB,Tkp] (a block's dP, then dS), gemm tmp */
  const size_t need = (size_t)(Dh * Tkp + QB * Tkp + tmp);
  int oom = 0;

#pragma omp parallel for schedule(dynamic) if (BH > 1 && BH * Tq * Tk * Dh > 65536)
  for (int64_t bh = 0; bh < BH; bh++) {
    float *vt = cpu_scratch(need * sizeof(float));
    if (!vt) {
#pragma omp atomic write
      oom = 1;
      continue;
    }
    float *g = vt + Dh * Tkp, *tl = g + QB * Tkp;
    const int64_t b = bh / H, h = bh % H;
    const int64_t qo = b * Tq * D + h * Dh, ko = b * Tk * D + h * Dh; /* head offsets */
    const float *ph = probs + bh * Tq * Tk;
    if (dq || dk) transpose_pad(vt, Tkp, v + ko, D, Tk, Dh);

    for (int64_t i0 = 0; i0 < Tq; i0 += QB) {
      const int64_t rows = Tq - i0 < QB ? Tq - i0 : QB, qi = qo + i0 * D;
      const float *pb = ph + i0 * Tk;
      const int acc = i0 > 0; /* the first block writes dv and dk, the rest add */
      if (dq || dk) {
        /* g[rows,Tkp] = dout_blk v_h^T, then the softmax backward per row, the scale folded in:
         * dS = scale p (dP - <dP, p>) */
        gemm(rows, Tkp, Dh, 1.0f, dout + qi, D, 1, vt, Tkp, g, Tkp, tl, 0);
        for (int64_t i = 0; i < rows; i++) {
          float *gr = g + i * Tkp;
          const float *pr = pb + i * Tk;
          const float d = dot_row(gr, pr, Tk);
#pragma omp simd
          for (int64_t j = 0; j < Tk; j++) gr[j] = scale * pr[j] * (gr[j] - d);
        }
      }
      /* dv_h[Tk,Dh] (+)= p_blk^T dout_blk: A(j,i) = p[i,j], the block's rows now in cache */
      if (dv) gemm(Tk, Dh, rows, 1.0f, pb, 1, Tk, dout + qi, D, dv + ko, D, tl, acc);
      /* dq_blk[rows,Dh] = dS k_h; dk_h[Tk,Dh] (+)= dS^T q_blk: A(j,i) = dS[i,j] */
      if (dq) gemm(rows, Dh, Tk, 1.0f, g, Tkp, 1, k + ko, D, dq + qi, D, tl, 0);
      if (dk) gemm(Tk, Dh, rows, 1.0f, g, 1, Tkp, q + qi, D, dk + ko, D, tl, acc);
    }
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "attention scratch of %zu floats per thread", need);
  return GC_OK;
}
