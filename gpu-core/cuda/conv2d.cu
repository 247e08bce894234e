/*
 * 2-D convolution on the GPU through cuDNN's convolution API (cudnnConvolutionForward /
 * BackwardData / BackwardFilter; deprecated in cuDNN 9 in favour of the graph API but present
 * and supported in every 9.x, and far less code for three fixed fp32 operations).
 *
 * Per shape a plan is made once and cached (LRU, CONV_PLANS entries): descriptors plus one
 * algorithm per direction from cuDNN's heuristics (cudnnGet*Algorithm_v7, no benchmarking, so
 * the first call of a shape costs microseconds, not a search). An algorithm is taken only if it
 * is deterministic (the backward passes must give the same gradients on every run), needs at
 * most CONV_MAX_WORKSPACE bytes, and runs on FMA math unless the context allows TF32 (fp32
 * convolutions must match the CPU backend to fp32 rounding). Workspace is the context scratch.
 * Bias is added by our own kernel; the bias gradient is a per-channel sum in double.
 * Channels-last operands go through transposed NCHW copies (see be_conv2d_forward).
 */
#include "common.h"

#include <climits>
#include <cstdlib>
#include <cstring>

static const size_t CONV_MAX_WORKSPACE = (size_t)1 << 30; /* 1 GiB */

struct conv_plan {
  int64_t key[8]; /* B, C, H, W, O, K, stride, pad */
  uint64_t used;  /* LRU clock; 0 = empty slot */
  cudnnTensorDescriptor_t xd, yd;
  cudnnFilterDescriptor_t wd;
  cudnnConvolutionDescriptor_t cd;
  cudnnConvolutionFwdAlgo_t fwd;
  cudnnConvolutionBwdDataAlgo_t bwd_data;
  cudnnConvolutionBwdFilterAlgo_t bwd_filter;
  cudnnMathType_t fwd_math, data_math, filter_math;
  size_t fwd_ws, data_ws, filter_ws;
};

static void plan_release(conv_plan *p) {
  if (!p->used) return;
  if (p->xd) cudnnDestroyTensorDescriptor(p->xd);
  if (p->yd) cudnnDestroyTensorDescriptor(p->yd);
  if (p->wd) cudnnDestroyFilterDescriptor(p->wd);
  if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
  memset(p, 0, sizeof *p);
}

void conv_plans_destroy(be_ctx *bc) {
  if (!bc->plans) return;
  for (int i = 0; i < CONV_PLANS; i++) plan_release(&bc->plans[i]);
  free(bc->plans);
  bc->plans = NULL;
}

/* Whether an algorithm the heuristics list with math type m may run in this context. Without
 * TF32 the descriptor is always set to FMA math (run_math), which keeps a DEFAULT_MATH algorithm
 * on fp32 FMA kernels; tensor-op algorithms are skipped. */
static int math_ok(const be_ctx *bc, cudnnMathType_t m) {
  return bc->allow_tf32 || (m != CUDNN_TENSOR_OP_MATH && m != CUDNN_TENSOR_OP_MATH_ALLOW_CONVERSION);
}

static cudnnMathType_t run_math(const be_ctx *bc, cudnnMathType_t m) {
  return bc->allow_tf32 ? m : CUDNN_FMA_MATH;
}

#define DNN(expr, what) GC_CHECK(cudnn_status((expr), (what)))

static gc_status plan_build(be_ctx *bc, conv_plan *p) {
  const int B = (int)p->key[0], C = (int)p->key[1], H = (int)p->key[2], W = (int)p->key[3];
  const int O = (int)p->key[4], K = (int)p->key[5], stride = (int)p->key[6], pad = (int)p->key[7];
  DNN(cudnnCreateTensorDescriptor(&p->xd), "conv2d descriptor");
  DNN(cudnnCreateTensorDescriptor(&p->yd), "conv2d descriptor");
  DNN(cudnnCreateFilterDescriptor(&p->wd), "conv2d descriptor");
  DNN(cudnnCreateConvolutionDescriptor(&p->cd), "conv2d descriptor");
  DNN(cudnnSetTensor4dDescriptor(p->xd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, B, C, H, W),
      "conv2d x descriptor");
  DNN(cudnnSetFilter4dDescriptor(p->wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, O, C, K, K),
      "conv2d w descriptor");
  /* PyTorch's conv2d is a cross-correlation (no kernel flip), as the CPU's im2col */
  DNN(cudnnSetConvolution2dDescriptor(p->cd, pad, pad, stride, stride, 1, 1,
                                      CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT),
      "conv2d descriptor");
  DNN(cudnnSetConvolutionMathType(p->cd, bc->allow_tf32 ? CUDNN_TENSOR_OP_MATH : CUDNN_FMA_MATH),
      "conv2d math type");
  int n = 0, c = 0, h = 0, w = 0;
  DNN(cudnnGetConvolution2dForwardOutputDim(p->cd, p->xd, p->wd, &n, &c, &h, &w),
      "conv2d output size");
  DNN(cudnnSetTensor4dDescriptor(p->yd, CUDNN_TENSOR_NCHW, CUDNN_DATA_FLOAT, n, c, h, w),
      "conv2d y descriptor");
  cudnnHandle_t dnn = bc->cudnn;

  /* Forward: the heuristics' order, first that fits; implicit GEMM (no workspace) otherwise. */
  cudnnConvolutionFwdAlgoPerf_t fp[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
  int got = 0;
  DNN(cudnnGetConvolutionForwardAlgorithm_v7(dnn, p->xd, p->wd, p->cd, p->yd,
                                             CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &got, fp),
      "conv2d forward heuristics");
  p->fwd = CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
  p->fwd_math = CUDNN_FMA_MATH;
  for (int i = 0; i < got; i++) {
    if (fp[i].status == CUDNN_STATUS_SUCCESS && fp[i].memory <= CONV_MAX_WORKSPACE &&
        fp[i].determinism == CUDNN_DETERMINISTIC && math_ok(bc, fp[i].mathType)) {
      p->fwd = fp[i].algo;
      p->fwd_math = run_math(bc, fp[i].mathType);
      break;
    }
  }
  DNN(cudnnSetConvolutionMathType(p->cd, p->fwd_math), "conv2d math type");
  DNN(cudnnGetConvolutionForwardWorkspaceSize(dnn, p->xd, p->wd, p->cd, p->yd, p->fwd, &p->fwd_ws),
      "conv2d forward workspace");

  cudnnConvolutionBwdDataAlgoPerf_t dp[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
  DNN(cudnnGetConvolutionBackwardDataAlgorithm_v7(dnn, p->wd, p->yd, p->cd, p->xd,
                                                  CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &got, dp),
      "conv2d backward-data heuristics");
  p->bwd_data = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
  p->data_math = CUDNN_FMA_MATH;
  for (int i = 0; i < got; i++) {
    if (dp[i].status == CUDNN_STATUS_SUCCESS && dp[i].memory <= CONV_MAX_WORKSPACE &&
        dp[i].determinism == CUDNN_DETERMINISTIC && math_ok(bc, dp[i].mathType)) {
      p->bwd_data = dp[i].algo;
      p->data_math = run_math(bc, dp[i].mathType);
      break;
    }
  }
  DNN(cudnnSetConvolutionMathType(p->cd, p->data_math), "conv2d math type");
  DNN(cudnnGetConvolutionBackwardDataWorkspaceSize(dnn, p->wd, p->yd, p->cd, p->xd, p->bwd_data,
                                                   &p->data_ws),
      "conv2d backward-data workspace");

  cudnnConvolutionBwdFilterAlgoPerf_t wp[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
  DNN(cudnnGetConvolutionBackwardFilterAlgorithm_v7(dnn, p->xd, p->yd, p->cd, p->wd,
                                                    CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &got,
                                                    wp),
      "conv2d backward-filter heuristics");
  p->bwd_filter = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
  p->filter_math = CUDNN_FMA_MATH;
  for (int i = 0; i < got; i++) {
    if (wp[i].status == CUDNN_STATUS_SUCCESS && wp[i].memory <= CONV_MAX_WORKSPACE &&
        wp[i].determinism == CUDNN_DETERMINISTIC && math_ok(bc, wp[i].mathType)) {
      p->bwd_filter = wp[i].algo;
      p->filter_math = run_math(bc, wp[i].mathType);
      break;
    }
  }
  DNN(cudnnSetConvolutionMathType(p->cd, p->filter_math), "conv2d math type");
  DNN(cudnnGetConvolutionBackwardFilterWorkspaceSize(dnn, p->xd, p->yd, p->cd, p->wd,
                                                     p->bwd_filter, &p->filter_ws),
      "conv2d backward-filter workspace");
  return GC_OK;
}

/* The cached plan of a shape, built on first use (the least recently used slot is replaced). */
static gc_status plan_get(be_ctx *bc, const int64_t key[8], conv_plan **out) {
  for (int i = 0; i < 8; i++)
    if (key[i] > INT_MAX)
      return gc_set_error(GC_ERR_UNSUPPORTED, "conv2d sizes exceed cuDNN's int range");
  if (key[0] * key[1] * key[2] * key[3] > INT_MAX)
    return gc_set_error(GC_ERR_UNSUPPORTED, "conv2d input exceeds 2^31 elements");
  if (!bc->plans) {
    bc->plans = (conv_plan *)calloc(CONV_PLANS, sizeof(conv_plan));
    if (!bc->plans) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d plan cache");
  }
  conv_plan *victim = &bc->plans[0];
  for (int i = 0; i < CONV_PLANS; i++) {
    conv_plan *p = &bc->plans[i];
    if (p->used && memcmp(p->key, key, sizeof p->key) == 0) {
      p->used = ++bc->plan_clock;
      *out = p;
      return GC_OK;
    }
    if (p->used < victim->used) victim = p;
  }
  plan_release(victim);
  memcpy(victim->key, key, sizeof victim->key);
  victim->used = ++bc->plan_clock;
  gc_status s = plan_build(bc, victim);
  if (s != GC_OK) {
    plan_release(victim);
    return s;
  }
  *out = victim;
  return GC_OK;
}

// y (B, O, P) += b[o]
__global__ void k_add_channel_bias(float *y, const float *b, int64_t O, int64_t P, int64_t n) {
  GRID_STRIDE(i, n) y[i] += b[(i / P) % O];
}

/* Channels-last (cl) runs the NCHW plan on transposed copies: x[B,H,W,C] -> [B,C,H,W], the
 * NCHW convolution, results transposed back. Correct by construction, at the cost of the
 * transposes. Not cuDNN's NHWC tensor descriptors with our OIHW filter: we could not confirm
 * from cuDNN's documentation that fp32 NHWC x/y with an NCHW (KCRS) filter is supported for
 * all three directions (only the dwDesc-NHWC constraints turned up). The copies and cuDNN's
 * workspace share one scratch allocation, carved up front, since growing scratch moves it. */
static size_t carve(size_t bytes) { return (bytes + 255) & ~(size_t)255; }

/* y[B,O,Ho,Wo] (=), x[B,C,H,W], w[O,C,K,K], b[O] optional; cl: y[B,Ho,Wo,O], x[B,H,W,C] */
gc_status be_conv2d_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                            int64_t stride, int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  GC_CHECK(ctx_enter(bc));
  const int64_t key[8] = {B, C, H, W, O, K, stride, pad};
  conv_plan *p = NULL;
  GC_CHECK(plan_get(bc, key, &p));
  const int64_t nx = B * C * H * W, ny = B * O * Ho * Wo;
  const size_t xt_bytes = cl ? carve((size_t)nx * sizeof(float)) : 0;
  const size_t yt_bytes = cl ? carve((size_t)ny * sizeof(float)) : 0;
  const size_t total = xt_bytes + yt_bytes + p->fwd_ws;
  char *base = total ? (char *)scratch_get(bc, total) : NULL;
  if (total && !base) return GC_ERR_OUT_OF_MEMORY;
  const float *xn = x; /* NCHW views */
  float *yn = y;
  if (cl) {
    float *xt = (float *)base;
    GC_CHECK(be_transpose(bc, xt, x, B, H * W, C));
    xn = xt;
    yn = (float *)(base + xt_bytes);
  }
  void *ws = p->fwd_ws ? base + xt_bytes + yt_bytes : NULL;
  const float one = 1.0f, zero = 0.0f;
  DNN(cudnnSetConvolutionMathType(p->cd, p->fwd_math), "conv2d math type");
  DNN(cudnnConvolutionForward(bc->cudnn, &one, p->xd, xn, p->wd, w, p->cd, p->fwd, ws, p->fwd_ws,
                              &zero, p->yd, yn),
      "conv2d_forward");
  if (b) {
    k_add_channel_bias<<<grid_for(bc, ny), THREADS, 0, bc->stream>>>(yn, b, O, Ho * Wo, ny);
    GC_CHECK(launch_status("conv2d_forward bias"));
  }
  if (cl) GC_CHECK(be_transpose(bc, y, yn, B, O, Ho * Wo));
  return GC_OK;
}

/* dx[B,C,H,W] (=), dw[O,C,K,K] (+=), db[O] (+=), each optional; dy[B,O,Ho,Wo]; cl: dx, x
 * [B,H,W,C], dy [B,Ho,Wo,O] */
gc_status be_conv2d_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t B, int64_t C, int64_t H,
                             int64_t W, int64_t O, int64_t K, int64_t stride, int64_t pad,
                             int64_t Ho, int64_t Wo, int cl) {
  GC_CHECK(ctx_enter(bc));
  if (!dx && !dw && !db) return GC_OK;
  const int64_t key[8] = {B, C, H, W, O, K, stride, pad};
  conv_plan *p = NULL;
  GC_CHECK(plan_get(bc, key, &p));
  /* scratch: [x^T (cl, dw)] [dy^T (cl)] [dx^T (cl, dx)] [bias sums (db)] [cuDNN workspace] */
  const int64_t nx = B * C * H * W, ny = B * O * Ho * Wo;
  const size_t xt_bytes = cl && dw ? carve((size_t)nx * sizeof(float)) : 0;
  const size_t dyt_bytes = cl ? carve((size_t)ny * sizeof(float)) : 0;
  const size_t dxt_bytes = cl && dx ? carve((size_t)nx * sizeof(float)) : 0;
  const size_t sums_bytes = db ? carve((size_t)(B * O) * sizeof(double)) : 0;
  size_t ws_bytes = dx ? p->data_ws : 0;
  if (dw && p->filter_ws > ws_bytes) ws_bytes = p->filter_ws;
  const size_t head = xt_bytes + dyt_bytes + dxt_bytes + sums_bytes, total = head + ws_bytes;
  char *base = total ? (char *)scratch_get(bc, total) : NULL;
  if (total && !base) return GC_ERR_OUT_OF_MEMORY;
  const float *xn = x, *dyn = dy; /* NCHW views */
  float *dxn = dx;
  if (cl) {
    if (dw) {
      float *xt = (float *)base;
      GC_CHECK(be_transpose(bc, xt, x, B, H * W, C));
      xn = xt;
    }
    float *dyt = (float *)(base + xt_bytes);
    GC_CHECK(be_transpose(bc, dyt, dy, B, Ho * Wo, O));
    dyn = dyt;
    if (dx) dxn = (float *)(base + xt_bytes + dyt_bytes);
  }
  void *ws = ws_bytes ? base + head : NULL;
  const float one = 1.0f, zero = 0.0f;
  if (dx) {
    DNN(cudnnSetConvolutionMathType(p->cd, p->data_math), "conv2d math type");
    DNN(cudnnConvolutionBackwardData(bc->cudnn, &one, p->wd, w, p->yd, dyn, p->cd, p->bwd_data,
                                     p->data_ws ? ws : NULL, p->data_ws, &zero, p->xd, dxn),
        "conv2d_backward data");
    if (cl) GC_CHECK(be_transpose(bc, dx, dxn, B, C, H * W));
  }
  if (dw) { /* beta = 1: cuDNN adds onto the gradient already there (+=) */
    DNN(cudnnSetConvolutionMathType(p->cd, p->filter_math), "conv2d math type");
    DNN(cudnnConvolutionBackwardFilter(bc->cudnn, &one, p->xd, xn, p->yd, dyn, p->cd,
                                       p->bwd_filter, p->filter_ws ? ws : NULL, p->filter_ws, &one,
                                       p->wd, dw),
        "conv2d_backward filter");
  }
  if (db) { /* per (b, o) sums over pixels of the NCHW dy, then over the batch in order */
    double *sums = (double *)(base + xt_bytes + dyt_bytes + dxt_bytes);
    GC_CHECK(row_sums(bc, sums, dyn, B * O, Ho * Wo));
    GC_CHECK(col_finish(bc, db, sums, B, O, 1));
  }
  return GC_OK;
}
