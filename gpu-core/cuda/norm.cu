/*
 * CUDA backend: group norm and layer norm (mirrors cpu/norm.c: biased variance, two-pass
 * statistics in double, saved fp32 mean/rstd used by backward). One block per group or row;
 * the group norm takes channels-first x[B,C,S] or channels-last x[B,S,C] (cl), same groups.
 * Parameter gradients are reduced in two passes (per-sample partials, then a fixed-order sum),
 * never with atomics. The group norm's fused SiLU rounds the norm's output to float first, as
 * the CPU does (and as the two ops one after the other do).
 */
#include "activation.h"
#include "common.h"

enum { NORM_THREADS = 256, LN_ROWS_PER_CHUNK = 256 };

/* ---- group norm ---- */

// Element i in [0, Cg*S) of group (b, g), whose channels start at c0: channels-first (x[B,C,S])
// walks the group's contiguous Cg*S block, channels-last (x[B,S,C]) its S rows of Cg
// consecutive channels; either way adjacent threads read adjacent floats. Returns the offset
// into x and sets *c to the element's channel.
__device__ __forceinline__ int64_t gn_at(int64_t i, int64_t b, int64_t g, int64_t C, int64_t S,
                                         int64_t G, int cl, int64_t *c) {
  const int64_t Cg = C / G, c0 = g * Cg;
  if (cl) {
    const int64_t s = i / Cg, j = i - s * Cg;
    *c = c0 + j;
    return (b * S + s) * C + c0 + j;
  }
  *c = c0 + i / S;
  return (b * G + g) * Cg * S + i;
}

// x, y are (B, C, S), or (B, S, C) with cl; group g of sample b is channels [g*C/G, (g+1)*C/G)
__global__ void k_group_norm(float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int64_t C, int64_t S,
                             int64_t G, float eps, int silu, int cl) {
  const int64_t bg = blockIdx.x, b = bg / G, g = bg % G, n = C / G * S;
  int64_t c;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) sum += x[gn_at(i, b, g, C, S, G, cl, &c)];
  const double m = block_sum(sum) / (double)n;
  double sq = 0.0;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    double d = x[gn_at(i, b, g, C, S, G, cl, &c)] - m;
    sq += d * d;
  }
  const double var = block_sum(sq) / (double)n;
  const double r = 1.0 / sqrt(var + (double)eps);
  if (threadIdx.x == 0) {
    if (mean) mean[bg] = (float)m;
    if (rstd) rstd[bg] = (float)r;
  }
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const int64_t k = gn_at(i, b, g, C, S, G, cl, &c);
    double gm = gamma ? gamma[c] : 1.0, bt = beta ? beta[c] : 0.0;
    const float z = (float)((x[k] - m) * r * gm + bt);
    y[k] = silu ? (float)act_value(GC_ACT_SILU, z) : z;
  }
}

gc_status be_group_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int64_t B, int64_t C,
                                int64_t S, int64_t G, float eps, int silu, int cl) {
  GC_CHECK(ctx_enter(bc));
  if (G <= 0 || C % G != 0)
    return gc_set_error(GC_ERR_SHAPE, "group_norm: %lld channels do not split into %lld groups",
                        (long long)C, (long long)G);
  if (B * G <= 0) return GC_OK;
  if (B * G > 0x7fffffff) return gc_set_error(GC_ERR_UNSUPPORTED, "group_norm: too many groups");
  k_group_norm<<<(unsigned)(B * G), NORM_THREADS, 0, bc->stream>>>(y, mean, rstd, x, gamma, beta,
                                                                   C, S, G, eps, silu, cl);
  return launch_status("group_norm_forward");
}

// The norm's upstream gradient at element i: dy, or with the fused SiLU dy silu'(z), z the
// norm's float output recomputed from x, mean, rstd, gamma, beta.
__device__ __forceinline__ double norm_grad_in(const float *dy, const float *x, int64_t i, double m,
                                               double r, double gm, double bt, int silu) {
  if (!silu) return dy[i];
  const float z = (float)((x[i] - m) * r * gm + bt);
  return (double)(float)((double)dy[i] * act_grad(GC_ACT_SILU, z));
}

// One block per (b, g): per-channel sums of dy xhat and dy go to sums [2][B,C] (for dgamma and
// dbeta), and dx is written from the group's sums of dxhat and dxhat xhat. Channels-first sums
// one channel's contiguous S floats at a time; channels-last gives each thread one channel and
// a subset of the rows (a channel's floats are C apart), then adds the lanes of a channel in
// shared memory, in a fixed order.
__global__ void k_group_norm_backward(float *dx, double *sum_dy_xhat, double *sum_dy,
                                      const float *dy, const float *x, const float *mean,
                                      const float *rstd, const float *gamma, const float *beta,
                                      int64_t C, int64_t S, int64_t G, int silu, int cl) {
  __shared__ double lane_dx[NORM_THREADS], lane_d[NORM_THREADS];
  const int64_t bg = blockIdx.x, Cg = C / G, n = Cg * S, b = bg / G, g = bg % G, c0 = g * Cg;
  const double m = mean[bg], r = rstd[bg];
  double g_dxhat = 0.0, g_dxhat_xhat = 0.0;
  if (!cl) {
    for (int64_t c = 0; c < Cg; c++) {
      const float *xc = x + bg * n + c * S, *dyc = dy + bg * n + c * S;
      const double gz = gamma ? gamma[c0 + c] : 1.0, bz = beta ? beta[c0 + c] : 0.0;
      double sdx = 0.0, sd = 0.0;
      for (int64_t s = threadIdx.x; s < S; s += blockDim.x) {
        const double d = norm_grad_in(dyc, xc, s, m, r, gz, bz, silu);
        sdx += d * (xc[s] - m);
        sd += d;
      }
      sdx = block_sum(sdx) * r;
      sd = block_sum(sd);
      if (threadIdx.x == 0) {
        sum_dy_xhat[b * C + c0 + c] = sdx;
        sum_dy[b * C + c0 + c] = sd;
      }
      double gm = gamma ? gamma[c0 + c] : 1.0;
      g_dxhat += gm * sd;
      g_dxhat_xhat += gm * sdx;
    }
  } else {
    // Channels [cb, cb + width) at a time: thread t takes channel cb + t % width and rows
    // t / width, t / width + lanes, ...; thread j < width then adds its channel's lanes.
    for (int64_t cb = 0; cb < Cg; cb += blockDim.x) {
      const int64_t width = Cg - cb < (int64_t)blockDim.x ? Cg - cb : (int64_t)blockDim.x;
      const int64_t lanes = blockDim.x / width, lane = threadIdx.x / width;
      const int64_t c = c0 + cb + threadIdx.x % width;
      double sdx = 0.0, sd = 0.0;
      if (lane < lanes) {
        const double gz = gamma ? gamma[c] : 1.0, bz = beta ? beta[c] : 0.0;
        for (int64_t s = lane; s < S; s += lanes) {
          const int64_t k = (b * S + s) * C + c;
          const double d = norm_grad_in(dy, x, k, m, r, gz, bz, silu);
          sdx += d * (x[k] - m);
          sd += d;
        }
      }
      lane_dx[threadIdx.x] = sdx;
      lane_d[threadIdx.x] = sd;
      __syncthreads();
      if (threadIdx.x < width) {
        double tdx = 0.0, td = 0.0;
        for (int64_t l = 0; l < lanes; l++) {
          tdx += lane_dx[l * width + threadIdx.x];
          td += lane_d[l * width + threadIdx.x];
        }
        tdx *= r;
        sum_dy_xhat[b * C + c] = tdx;
        sum_dy[b * C + c] = td;
        const double gm = gamma ? gamma[c] : 1.0;
        g_dxhat += gm * td; /* this thread's channels; totalled over the block below */
        g_dxhat_xhat += gm * tdx;
      }
      __syncthreads(); /* the lane sums are rewritten by the next chunk */
    }
    g_dxhat = block_sum(g_dxhat);
    g_dxhat_xhat = block_sum(g_dxhat_xhat);
  }
  if (!dx) return;
  const double mean_dxhat = g_dxhat / (double)n, mean_dxhat_xhat = g_dxhat_xhat / (double)n;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    int64_t c;
    const int64_t k = gn_at(i, b, g, C, S, G, cl, &c);
    const double gm = gamma ? gamma[c] : 1.0, bt = beta ? beta[c] : 0.0;
    const double xhat = (x[k] - m) * r;
    const double d = norm_grad_in(dy, x, k, m, r, gm, bt, silu);
    dx[k] = (float)(r * (d * gm - mean_dxhat - xhat * mean_dxhat_xhat));
  }
}

gc_status be_group_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, const float *beta,
                                 int64_t B, int64_t C, int64_t S, int64_t G, int silu, int cl) {
  GC_CHECK(ctx_enter(bc));
  if (G <= 0 || C % G != 0)
    return gc_set_error(GC_ERR_SHAPE, "group_norm: %lld channels do not split into %lld groups",
                        (long long)C, (long long)G);
  if (B * G <= 0) return GC_OK;
  if (B * G > 0x7fffffff) return gc_set_error(GC_ERR_UNSUPPORTED, "group_norm: too many groups");
  double *sums = (double *)scratch_get(bc, (size_t)(2 * B * C) * sizeof(double)); // [2][B,C]
  if (!sums) return GC_ERR_OUT_OF_MEMORY;
  k_group_norm_backward<<<(unsigned)(B * G), NORM_THREADS, 0, bc->stream>>>(
      dx, sums, sums + B * C, dy, x, mean, rstd, gamma, beta, C, S, G, silu, cl);
  GC_CHECK(launch_status("group_norm_backward"));
  if (dgamma) GC_CHECK(col_finish(bc, dgamma, sums, B, C, 1));
  if (dbeta) GC_CHECK(col_finish(bc, dbeta, sums + B * C, B, C, 1));
  return GC_OK;
}

/* ---- layer norm over the last dim ---- */

// x, y are (N, D); one block per row
__global__ void k_layer_norm(float *y, float *mean, float *rstd, const float *x,
                             const float *gamma, const float *beta, int64_t D, float eps) {
  const int64_t row = blockIdx.x;
  const float *xr = x + row * D;
  float *yr = y + row * D;
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) sum += xr[i];
  const double m = block_sum(sum) / (double)D;
  double sq = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    double d = xr[i] - m;
    sq += d * d;
  }
  const double r = 1.0 / sqrt(block_sum(sq) / (double)D + (double)eps);
  if (threadIdx.x == 0) {
    if (mean) mean[row] = (float)m;
    if (rstd) rstd[row] = (float)r;
  }
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    double v = (xr[i] - m) * r;
    if (gamma) v *= gamma[i];
    if (beta) v += beta[i];
    yr[i] = (float)v;
  }
}

/* Threads for a row of D: enough to cover it, a multiple of 32, at most 256. */
static int row_threads(int64_t D) {
  int64_t t = (D + 31) / 32 * 32;
  return (int)(t < 32 ? 32 : t > 256 ? 256 : t);
}

gc_status be_layer_norm_forward(be_ctx *bc, float *y, float *mean, float *rstd, const float *x,
                                const float *gamma, const float *beta, int64_t N, int64_t D,
                                float eps) {
  GC_CHECK(ctx_enter(bc));
  if (N <= 0 || D <= 0) return GC_OK;
  if (N > 0x7fffffff) return gc_set_error(GC_ERR_UNSUPPORTED, "layer_norm: too many rows");
  k_layer_norm<<<(unsigned)N, row_threads(D), 0, bc->stream>>>(y, mean, rstd, x, gamma, beta, D,
                                                               eps);
  return launch_status("layer_norm_forward");
}

__global__ void k_layer_norm_backward_dx(float *dx, const float *dy, const float *x,
                                         const float *mean, const float *rstd, const float *gamma,
                                         int64_t D) {
  const int64_t row = blockIdx.x;
  const float *xr = x + row * D, *dyr = dy + row * D;
  const double m = mean[row], r = rstd[row];
  double s_dxhat = 0.0, s_dxhat_xhat = 0.0;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    double dxhat = gamma ? (double)dyr[i] * gamma[i] : (double)dyr[i];
    s_dxhat += dxhat;
    s_dxhat_xhat += dxhat * (xr[i] - m) * r;
  }
  const double mean_dxhat = block_sum(s_dxhat) / (double)D;
  const double mean_dxhat_xhat = block_sum(s_dxhat_xhat) / (double)D;
  for (int64_t i = threadIdx.x; i < D; i += blockDim.x) {
    double dxhat = gamma ? (double)dyr[i] * gamma[i] : (double)dyr[i];
    double xhat = (xr[i] - m) * r;
    dx[row * D + i] = (float)(r * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat));
  }
}

// Partial column sums of dy xhat (into pg) and dy (into pb) over chunks of rows, [nchunks, D]
// each; block (32, 8) as in reduce.cu.
__global__ void k_layer_norm_param_partials(double *pg, double *pb, const float *dy,
                                            const float *x, const float *mean, const float *rstd,
                                            int64_t N, int64_t D, int64_t rows_per) {
  __shared__ double ag[8][33], ab[8][33];
  const int64_t d = (int64_t)blockIdx.x * 32 + threadIdx.x, chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per, r1 = r0 + rows_per < N ? r0 + rows_per : N;
  double sg = 0.0, sb = 0.0;
  if (d < D) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) {
      const double g = dy[r * D + d];
      sg += g * (x[r * D + d] - (double)mean[r]) * (double)rstd[r];
      sb += g;
    }
  }
  ag[threadIdx.y][threadIdx.x] = sg;
  ab[threadIdx.y][threadIdx.x] = sb;
  __syncthreads();
  if (threadIdx.y == 0 && d < D) {
    double tg = 0.0, tb = 0.0;
    for (int k = 0; k < 8; k++) {
      tg += ag[k][threadIdx.x];
      tb += ab[k][threadIdx.x];
    }
    pg[chunk * D + d] = tg;
    pb[chunk * D + d] = tb;
  }
}

// dy, x, dx are (N, D); dx written (optional); dgamma, dbeta (D) accumulate (+=), each optional
gc_status be_layer_norm_backward(be_ctx *bc, float *dx, float *dgamma, float *dbeta,
                                 const float *dy, const float *x, const float *mean,
                                 const float *rstd, const float *gamma, int64_t N, int64_t D) {
  GC_CHECK(ctx_enter(bc));
  if (N <= 0 || D <= 0) return GC_OK;
  if (N > 0x7fffffff) return gc_set_error(GC_ERR_UNSUPPORTED, "layer_norm: too many rows");
  if (dx) {
    k_layer_norm_backward_dx<<<(unsigned)N, row_threads(D), 0, bc->stream>>>(dx, dy, x, mean,
                                                                             rstd, gamma, D);
    GC_CHECK(launch_status("layer_norm_backward"));
  }
  if (dgamma || dbeta) {
    int64_t rows_per = LN_ROWS_PER_CHUNK;
    while ((N + rows_per - 1) / rows_per > 65535) rows_per *= 2;
    const int64_t nchunks = (N + rows_per - 1) / rows_per;
    double *p = (double *)scratch_get(bc, (size_t)(2 * nchunks * D) * sizeof(double));
    if (!p) return GC_ERR_OUT_OF_MEMORY;
    dim3 grid((unsigned)((D + 31) / 32), (unsigned)nchunks);
    k_layer_norm_param_partials<<<grid, dim3(32, 8), 0, bc->stream>>>(p, p + nchunks * D, dy, x,
                                                                      mean, rstd, N, D, rows_per);
    GC_CHECK(launch_status("layer_norm_backward"));
    if (dgamma) GC_CHECK(col_finish(bc, dgamma, p, nchunks, D, 1));
    if (dbeta) GC_CHECK(col_finish(bc, dbeta, p + nchunks * D, nchunks, D, 1));
  }
  return GC_OK;
}
