/*
 * Multi-head scaled dot-product attention on the GPU (mirrors cpu/attention.c).
 *
 * Heads are interleaved in the last dim (q[B,T,H*Dh]), so head (b,h) is not at a fixed stride
 * from head (b,h+1) and (b+1,h) at once. The heads are first split into a head-major copy
 * qh[B*H,T,Dh] (one pass over q, k, v), which makes every per-head product one
 * cublasSgemmStridedBatched call over B*H; the scores go straight into probs[B,H,Tq,Tk], where
 * softmax runs in place. Column-major notes as in linear.cu: a row-major [R,C] matrix is the
 * column-major [C,R] one.
 */
#include "common.h"

#include <climits>

/* dir 0: xh[B*H,T,Dh] from x[B,T,H*Dh]; dir 1: x from xh. One thread per element. */
__global__ void k_heads(float *xh, float *x, int64_t B, int64_t T, int64_t H, int64_t Dh,
                        int merge) {
  GRID_STRIDE(i, B * T * H * Dh) {
    const int64_t d = i % Dh, t = (i / Dh) % T, bh = i / (Dh * T), b = bh / H, h = bh % H;
    const int64_t j = (b * T + t) * H * Dh + h * Dh + d;
    if (merge) x[j] = xh[i];
    else xh[i] = x[j];
  }
}

static gc_status heads(be_ctx *bc, float *xh, const float *x, int64_t B, int64_t T, int64_t H,
                       int64_t Dh, int merge) {
  const int64_t n = B * T * H * Dh;
  if (n <= 0) return GC_OK;
  k_heads<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(xh, (float *)x, B, T, H, Dh, merge);
  return launch_status(merge ? "attention merge heads" : "attention split heads");
}

/* Row softmax of s[R,Tk] in place, one warp per row: max subtracted, masked keys exactly 0.
 * causal: row r is query i = r % Tq, which sees keys 0..i. */
__global__ void k_softmax_rows(float *s, int64_t R, int64_t Tq, int64_t Tk, int causal) {
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
  const int lane = threadIdx.x & 31;
  for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < R;
       r += warps) {
    float *row = s + r * Tk;
    const int64_t n = causal ? r % Tq + 1 : Tk;
    float mx = -INFINITY;
    for (int64_t j = lane; j < n; j += 32) mx = fmaxf(mx, row[j]);
    for (int o = 16; o > 0; o >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o));
    double sum = 0.0;
    for (int64_t j = lane; j < n; j += 32) {
      const float e = expf(row[j] - mx);
      row[j] = e;
      sum += e;
    }
    for (int o = 16; o > 0; o >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, o);
    const float inv = (float)(1.0 / sum);
    for (int64_t j = lane; j < Tk; j += 32) row[j] = j < n ? row[j] * inv : 0.0f;
  }
}

/* dS = scale P (dP - <dP, P>) per row, in place over g[R,Tk]; one warp per row. */
__global__ void k_softmax_backward_rows(float *g, const float *p, int64_t R, int64_t Tk,
                                        float scale) {
  const int64_t warps = (int64_t)gridDim.x * (blockDim.x >> 5);
  const int lane = threadIdx.x & 31;
  for (int64_t r = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5); r < R;
       r += warps) {
    float *gr = g + r * Tk;
    const float *pr = p + r * Tk;
    double dot = 0.0;
    for (int64_t j = lane; j < Tk; j += 32) dot += (double)gr[j] * pr[j];
    for (int o = 16; o > 0; o >>= 1) dot += __shfl_xor_sync(0xffffffffu, dot, o);
    const float d = (float)dot;
    for (int64_t j = lane; j < Tk; j += 32) gr[j] = scale * pr[j] * (gr[j] - d);
  }
}

static unsigned row_blocks(const be_ctx *bc, int64_t R) {
  return grid_for(bc, R * 32, THREADS); /* one warp per row */
}

static gc_status check_sizes(int64_t B, int64_t Tq, int64_t Tk, int64_t H, int64_t Dh) {
  if (B * H > INT_MAX || Tq > INT_MAX || Tk > INT_MAX || Dh > INT_MAX)
    return gc_set_error(GC_ERR_UNSUPPORTED, "attention sizes exceed the cuBLAS int range");
  return GC_OK;
}

/* out[B,Tq,H*Dh] (=), probs[B,H,Tq,Tk] (=, optional); q[B,Tq,H*Dh], k,v[B,Tk,H*Dh] */
gc_status be_attention_forward(be_ctx *bc, float *out, float *probs, const float *q,
                               const float *k, const float *v, int64_t B, int64_t Tq, int64_t Tk,
                               int64_t H, int64_t Dh, int causal, float scale) {
  GC_CHECK(ctx_enter(bc));
  GC_CHECK(check_sizes(B, Tq, Tk, H, Dh));
  const int64_t BH = B * H;
  if (BH * Tq <= 0) return GC_OK;
  /* scratch: qh[BH,Tq,Dh], kh, vh[BH,Tk,Dh], oh[BH,Tq,Dh], and the scores [BH,Tq,Tk] when the
   * caller keeps no probs */
  const int64_t nq = BH * Tq * Dh, nk = BH * Tk * Dh, ns = probs ? 0 : BH * Tq * Tk;
  float *qh = (float *)scratch_get(bc, (size_t)(2 * nq + 2 * nk + ns) * sizeof(float));
  if (!qh) return GC_ERR_OUT_OF_MEMORY;
  float *kh = qh + nq, *vh = kh + nk, *oh = vh + nk;
  if (!probs) probs = oh + nq;
  GC_CHECK(heads(bc, qh, q, B, Tq, H, Dh, 0));
  GC_CHECK(heads(bc, kh, k, B, Tk, H, Dh, 0));
  GC_CHECK(heads(bc, vh, v, B, Tk, H, Dh, 0));
  const float zero = 0.0f, one = 1.0f;
  /* S[Tq,Tk] = scale qh kh^T: column-major S^T[Tk,Tq] = (kh_cm[Dh,Tk])^T qh_cm[Dh,Tq] */
  GC_CHECK(cublas_status(
      cublasSgemmStridedBatched(bc->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)Tk, (int)Tq, (int)Dh,
                                &scale, kh, (int)Dh, Tk * Dh, qh, (int)Dh, Tq * Dh, &zero, probs,
                                (int)Tk, Tq * Tk, (int)BH),
      "attention_forward scores"));
  k_softmax_rows<<<row_blocks(bc, BH * Tq), THREADS, 0, bc->stream>>>(probs, BH * Tq, Tq, Tk,
                                                                       causal);
  GC_CHECK(launch_status("attention_forward softmax"));
  /* oh[Tq,Dh] = P[Tq,Tk] vh[Tk,Dh]: column-major oh^T[Dh,Tq] = vh_cm[Dh,Tk] P_cm[Tk,Tq] */
  GC_CHECK(cublas_status(
      cublasSgemmStridedBatched(bc->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)Dh, (int)Tq, (int)Tk,
                                &one, vh, (int)Dh, Tk * Dh, probs, (int)Tk, Tq * Tk, &zero, oh,
                                (int)Dh, Tq * Dh, (int)BH),
      "attention_forward output"));
  return heads(bc, oh, out, B, Tq, H, Dh, 1);
}

/* dq[B,Tq,H*Dh], dk,dv[B,Tk,H*Dh] (=, each optional); with P = probs:
 * dv = P^T dout, dP = dout v^T, dS = scale P (dP - rowsum(dP P)), dq = dS k, dk = dS^T q. */
gc_status be_attention_backward(be_ctx *bc, float *dq, float *dk, float *dv, const float *dout,
                                const float *q, const float *k, const float *v,
                                const float *probs, int64_t B, int64_t Tq, int64_t Tk, int64_t H,
                                int64_t Dh, float scale) {
  GC_CHECK(ctx_enter(bc));
  if (!dq && !dk && !dv) return GC_OK;
  GC_CHECK(check_sizes(B, Tq, Tk, H, Dh));
  const int64_t BH = B * H;
  if (BH * Tq <= 0) return GC_OK;
  /* scratch: douth, qh, dqh [BH,Tq,Dh]; kh, vh, dkh, dvh [BH,Tk,Dh]; g [BH,Tq,Tk] */
  const int64_t nq = BH * Tq * Dh, nk = BH * Tk * Dh, ns = BH * Tq * Tk;
  float *douth = (float *)scratch_get(bc, (size_t)(3 * nq + 4 * nk + ns) * sizeof(float));
  if (!douth) return GC_ERR_OUT_OF_MEMORY;
  float *qh = douth + nq, *dqh = qh + nq, *kh = dqh + nq, *vh = kh + nk, *dkh = vh + nk;
  float *dvh = dkh + nk, *g = dvh + nk;
  const float zero = 0.0f, one = 1.0f;
  GC_CHECK(heads(bc, douth, dout, B, Tq, H, Dh, 0));
  if (dv) {
    /* dvh[Tk,Dh] = P^T[Tk,Tq] douth[Tq,Dh]: column-major dvh^T[Dh,Tk] = douth_cm[Dh,Tq] (P_cm)^T */
    GC_CHECK(cublas_status(
        cublasSgemmStridedBatched(bc->cublas, CUBLAS_OP_N, CUBLAS_OP_T, (int)Dh, (int)Tk, (int)Tq,
                                  &one, douth, (int)Dh, Tq * Dh, probs, (int)Tk, Tq * Tk, &zero,
                                  dvh, (int)Dh, Tk * Dh, (int)BH),
        "attention_backward dv"));
    GC_CHECK(heads(bc, dvh, dv, B, Tk, H, Dh, 1));
  }
  if (!dq && !dk) return GC_OK;
  GC_CHECK(heads(bc, vh, v, B, Tk, H, Dh, 0));
  /* dP[Tq,Tk] = douth vh^T: column-major dP^T[Tk,Tq] = (vh_cm[Dh,Tk])^T douth_cm[Dh,Tq] */
  GC_CHECK(cublas_status(
      cublasSgemmStridedBatched(bc->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)Tk, (int)Tq, (int)Dh,
                                &one, vh, (int)Dh, Tk * Dh, douth, (int)Dh, Tq * Dh, &zero, g,
                                (int)Tk, Tq * Tk, (int)BH),
      "attention_backward dP"));
  k_softmax_backward_rows<<<row_blocks(bc, BH * Tq), THREADS, 0, bc->stream>>>(g, probs, BH * Tq,
                                                                                Tk, scale);
  GC_CHECK(launch_status("attention_backward softmax"));
  if (dq) {
    GC_CHECK(heads(bc, kh, k, B, Tk, H, Dh, 0));
    /* dqh[Tq,Dh] = dS[Tq,Tk] kh[Tk,Dh]: column-major dqh^T[Dh,Tq] = kh_cm[Dh,Tk] dS_cm[Tk,Tq] */
    GC_CHECK(cublas_status(
        cublasSgemmStridedBatched(bc->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)Dh, (int)Tq, (int)Tk,
                                  &one, kh, (int)Dh, Tk * Dh, g, (int)Tk, Tq * Tk, &zero, dqh,
                                  (int)Dh, Tq * Dh, (int)BH),
        "attention_backward dq"));
    GC_CHECK(heads(bc, dqh, dq, B, Tq, H, Dh, 1));
  }
  if (dk) {
    GC_CHECK(heads(bc, qh, q, B, Tq, H, Dh, 0));
    /* dkh[Tk,Dh] = dS^T[Tk,Tq] qh[Tq,Dh]: column-major dkh^T[Dh,Tk] = qh_cm[Dh,Tq] (dS_cm)^T */
    GC_CHECK(cublas_status(
        cublasSgemmStridedBatched(bc->cublas, CUBLAS_OP_N, CUBLAS_OP_T, (int)Dh, (int)Tk, (int)Tq,
                                  &one, qh, (int)Dh, Tq * Dh, g, (int)Tk, Tq * Tk, &zero, dkh,
                                  (int)Dh, Tk * Dh, (int)BH),
        "attention_backward dk"));
    GC_CHECK(heads(bc, dkh, dk, B, Tk, H, Dh, 1));
  }
  return GC_OK;
}
