/*
 * Multi-head scaled dot-product attention on the CPU.
 *
 * Heads are interleaved in the last dim (q[B,T,H*Dh]), so head h of batch b is a [T,Dh] matrix
 * at q + b*T*H*Dh + h*Dh with leading dimension H*Dh, which cblas takes as is: no reshuffle.
 * Each pass is split in phases so that BLAS (threaded by OpenBLAS) and the OpenMP loops never
 * nest: all score GEMMs of a chunk of (b,h) pairs, then one OpenMP softmax over all their rows,
 * then all value GEMMs.
 */
#include "../core/backend.h"

#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <stdlib.h>

/* Floats of dP scratch one backward call may hold; (b,h) pairs are processed in chunks. */
#define ATTN_SCRATCH_CAP ((size_t)8 << 20)

static _Thread_local float *g_scratch;
static _Thread_local size_t g_scratch_floats;

static float *scratch_get(size_t floats) {
  if (floats <= g_scratch_floats) return g_scratch;
  free(g_scratch);
  size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
  g_scratch = aligned_alloc(64, bytes);
  g_scratch_floats = g_scratch ? floats : 0;
  return g_scratch;
}

static gc_status check_blas_sizes(int64_t Tq, int64_t Tk, int64_t H, int64_t Dh) {
  if (Tq > INT_MAX || Tk > INT_MAX || H * Dh > INT_MAX)
    return gc_set_error(GC_ERR_UNSUPPORTED, "attention sizes exceed the BLAS int range");
  return GC_OK;
}

/* out[B,Tq,H*Dh] (=), probs[B,H,Tq,Tk] (=); q[B,Tq,H*Dh], k,v[B,Tk,H*Dh].
 * causal masks key j > query i (the front end checks Tq == Tk). */
gc_status be_attention_forward(be_ctx *bc, float *out, float *probs, const float *q,
                               const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t H, int64_t Dh, int causal, float scale) {
  (void)bc;
  gc_status st = check_blas_sizes(Tq, Tk, H, Dh);
  if (st != GC_OK) return st;
  const int64_t D = H * Dh, BH = B * H;

  /* scores: probs[b,h] = scale * q[b,:,h] k[b,:,h]^T, written where the softmax will live */
  for (int64_t bh = 0; bh < BH; bh++) {
    const int64_t b = bh / H, h = bh % H;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Tq, (int)Tk, (int)Dh, scale,
                q + b * Tq * D + h * Dh, (int)D, k + b * Tk * D + h * Dh, (int)D, 0.0f,
                probs + bh * Tq * Tk, (int)Tk);
  }

  /* row softmax with the max subtracted; masked keys get exactly 0 */
#pragma omp parallel for schedule(static) if (BH * Tq * Tk > 16384)
  for (int64_t r = 0; r < BH * Tq; r++) {
    float *row = probs + r * Tk;
    const int64_t n = causal ? (r % Tq) + 1 : Tk; /* keys 0..i are visible to query i */
    float mx = row[0];
    for (int64_t j = 1; j < n; j++) mx = row[j] > mx ? row[j] : mx;
    double sum = 0.0;
    for (int64_t j = 0; j < n; j++) {
      float e = expf(row[j] - mx);
      row[j] = e;
      sum += e;
    }
    const float inv = (float)(1.0 / sum);
    for (int64_t j = 0; j < n; j++) row[j] *= inv;
    for (int64_t j = n; j < Tk; j++) row[j] = 0.0f;
  }

  /* out[b,:,h] = probs[b,h] v[b,:,h] */
  for (int64_t bh = 0; bh < BH; bh++) {
    const int64_t b = bh / H, h = bh % H;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Tq, (int)Dh, (int)Tk, 1.0f,
                probs + bh * Tq * Tk, (int)Tk, v + b * Tk * D + h * Dh, (int)D, 0.0f,
                out + b * Tq * D + h * Dh, (int)D);
  }
  return GC_OK;
}

/* dq[B,Tq,H*Dh], dk,dv[B,Tk,H*Dh] (=, each optional); dout[B,Tq,H*Dh]; q, k, v, probs as
 * forward. With P = probs and S the scaled scores:
 *   dv = P^T dout, dP = dout v^T, dS = P * (dP - rowsum(dP * P)), dq = scale dS k,
 *   dk = scale dS^T q. */
gc_status be_attention_backward(be_ctx *bc, float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v,
                                const float *probs, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                int64_t Dh, float scale) {
  (void)bc;
  gc_status st = check_blas_sizes(Tq, Tk, H, Dh);
  if (st != GC_OK) return st;
  const int64_t D = H * Dh, BH = B * H, TT = Tq * Tk;

  if (dv) {
    /* dv[b,:,h] = probs[b,h]^T dout[b,:,h] */
    for (int64_t bh = 0; bh < BH; bh++) {
      const int64_t b = bh / H, h = bh % H;
      cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Tk, (int)Dh, (int)Tq, 1.0f,
                  probs + bh * TT, (int)Tk, dout + b * Tq * D + h * Dh, (int)D, 0.0f,
                  dv + b * Tk * D + h * Dh, (int)D);
    }
  }
  if (!dq && !dk) return GC_OK;

  int64_t chunk = (int64_t)(ATTN_SCRATCH_CAP / (size_t)TT);
  if (chunk < 1) chunk = 1;
  if (chunk > BH) chunk = BH;
  float *ds = scratch_get((size_t)chunk * (size_t)TT); /* dP, then dS in place: [chunk,Tq,Tk] */
  if (!ds)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "attention scratch of %lld floats",
                        (long long)(chunk * TT));

  for (int64_t c0 = 0; c0 < BH; c0 += chunk) {
    const int64_t n = BH - c0 < chunk ? BH - c0 : chunk;
    /* dP[b,h] = dout[b,:,h] v[b,:,h]^T */
    for (int64_t i = 0; i < n; i++) {
      const int64_t b = (c0 + i) / H, h = (c0 + i) % H;
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Tq, (int)Tk, (int)Dh, 1.0f,
                  dout + b * Tq * D + h * Dh, (int)D, v + b * Tk * D + h * Dh, (int)D, 0.0f,
                  ds + i * TT, (int)Tk);
    }
    /* softmax backward per row, the scale folded in: dS = scale * P * (dP - <dP, P>) */
#pragma omp parallel for schedule(static) if (n * TT > 16384)
    for (int64_t r = 0; r < n * Tq; r++) {
      float *g = ds + r * Tk;
      const float *p = probs + c0 * TT + r * Tk;
      double dot = 0.0;
      for (int64_t j = 0; j < Tk; j++) dot += (double)g[j] * p[j];
      const float d = (float)dot;
      for (int64_t j = 0; j < Tk; j++) g[j] = scale * p[j] * (g[j] - d);
    }
    for (int64_t i = 0; i < n; i++) {
      const int64_t b = (c0 + i) / H, h = (c0 + i) % H;
      if (dq) /* dq[b,:,h] = dS k[b,:,h] */
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Tq, (int)Dh, (int)Tk, 1.0f,
                    ds + i * TT, (int)Tk, k + b * Tk * D + h * Dh, (int)D, 0.0f,
                    dq + b * Tq * D + h * Dh, (int)D);
      if (dk) /* dk[b,:,h] = dS^T q[b,:,h] */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Tk, (int)Dh, (int)Tq, 1.0f,
                    ds + i * TT, (int)Tk, q + b * Tq * D + h * Dh, (int)D, 0.0f,
                    dk + b * Tk * D + h * Dh, (int)D);
    }
  }
  return GC_OK;
}
