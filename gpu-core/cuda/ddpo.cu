/*
 * CUDA backend: the DDIM step with its Gaussian log-prob and the DDPO losses (mirrors
 * cpu/ddpo.c; docs/DESIGN.md §3.2-3.4). Per-sample coefficients come from core/ops.c (ddim.h),
 * validated, and are uploaded; the per-element mean is ddim.h's, the elementwise work double from
 * fp32 inputs. The log-prob's sum of squares runs over the CPU's fixed GC_DDIM_CHUNK-element
 * chunks, one block each, and the chunk sums are added in order, so the sampling form and the
 * given form of a step give the same log-prob bit for bit.
 */
#include "common.h"

#include <cmath>
#include <cstdlib>

/* Host coefficients -> device copy in scratch (after `reserve` bytes the caller keeps). */
static gc_status upload_coefs(be_ctx *bc, const gc_ddim_coef *host, int64_t B, size_t reserve,
                              gc_ddim_coef **dev) {
  char *base = (char *)scratch_get(bc, reserve + (size_t)B * sizeof(gc_ddim_coef));
  if (!base) return GC_ERR_OUT_OF_MEMORY;
  *dev = (gc_ddim_coef *)(base + reserve);
  /* pageable source: staged before return, so the caller may free it right after */
  return cuda_status(cudaMemcpyAsync(*dev, host, (size_t)B * sizeof(gc_ddim_coef),
                                     cudaMemcpyHostToDevice, bc->stream),
                     "ddim coefficients");
}

// One block per (chunk k, sample b): computes mean and (sampling form) x_prev, and the chunk's
// sum of (x_prev - mean)^2 into partial[b*nch + k]. Each element reads its inputs before any
// store, so x_prev or mean may alias x_t.
__global__ void k_ddim_step(float *x_prev, float *mean, double *partial, const float *x_t,
                            const float *eps, const float *noise, const gc_ddim_coef *coef,
                            int64_t M, int64_t nch, int clip, double c) {
  const int64_t b = blockIdx.y, k = blockIdx.x;
  const int64_t i0 = b * M + k * GC_DDIM_CHUNK;
  const int64_t i1 = b * M + (k * GC_DDIM_CHUNK + GC_DDIM_CHUNK < M ? k * GC_DDIM_CHUNK + GC_DDIM_CHUNK : M);
  const gc_ddim_coef kc = coef[b];
  double sq = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) {
    int inside;
    double mu = gc_ddim_mean(&kc, x_t[i], eps[i], clip, c, &inside);
    float xp;
    if (noise) {
      xp = (float)(mu + kc.sigma * (double)noise[i]);
      x_prev[i] = xp;
    } else {
      xp = x_prev[i];
    }
    if (mean) mean[i] = (float)mu;
    double d = (double)xp - mu; /* the density of the stored fp32 x_prev */
    sq += d * d;
  }
  sq = block_sum(sq);
  if (threadIdx.x == 0) partial[b * nch + k] = sq;
}

__global__ void k_ddim_log_prob(float *log_prob, const double *partial, const gc_ddim_coef *coef,
                                int64_t B, int64_t M, int64_t nch) {
  GRID_STRIDE(b, B) {
    double sq = 0.0;
    for (int64_t k = 0; k < nch; k++) sq += partial[b * nch + k];
    double s = coef[b].sigma;
    log_prob[b] = (float)(-sq / (2.0 * s * s * (double)M) + coef[b].log_norm);
  }
}

// x_t, eps, noise, x_prev, mean are (B, M); log_prob is (B); coef is host (B)
gc_status be_ddim_step(be_ctx *bc, float *x_prev, float *log_prob, float *mean, const float *x_t,
                       const float *eps, const float *noise, const gc_ddim_coef *host_coef,
                       float clip_x0, int64_t B, int64_t M) {
  GC_CHECK(ctx_enter(bc));
  if (!x_prev) return gc_set_error(GC_ERR_INVALID_ARGUMENT, "x_prev is required in both forms");
  const int64_t nch = (M + GC_DDIM_CHUNK - 1) / GC_DDIM_CHUNK;
  if (nch > 0x7fffffff || B > 65535)
    return gc_set_error(GC_ERR_UNSUPPORTED, "DDIM step of %lld samples x %lld elements",
                        (long long)B, (long long)M);
  const size_t partial_bytes = (size_t)(B * nch) * sizeof(double);
  gc_ddim_coef *coef = NULL;
  GC_CHECK(upload_coefs(bc, host_coef, B, partial_bytes, &coef));
  double *partial = (double *)bc->scratch;
  k_ddim_step<<<dim3((unsigned)nch, (unsigned)B), THREADS, 0, bc->stream>>>(
      x_prev, mean, partial, x_t, eps, noise, coef, M, nch, clip_x0 > 0.0f, (double)clip_x0);
  GC_CHECK(launch_status("ddim_step"));
  if (log_prob) {
    k_ddim_log_prob<<<grid_for(bc, B, 64), 64, 0, bc->stream>>>(log_prob, partial, coef, B, M, nch);
    GC_CHECK(launch_status("ddim_step log_prob"));
  }
  return GC_OK;
}

// deps (=) from dlog_prob (B); the gradient flows through the mean only (x_prev is data);
// clipped x0 drops its term (torch.clamp passes the gradient on the closed interval)
__global__ void k_ddim_backward(float *deps, const float *dlog_prob, const float *x_prev,
                                const float *x_t, const float *eps, const gc_ddim_coef *coef,
                                int64_t B, int64_t M, int clip, double c) {
  GRID_STRIDE(i, B * M) {
    const gc_ddim_coef kc = coef[i / M];
    double g = (double)dlog_prob[i / M] / (kc.sigma * kc.sigma * (double)M);
    double dmu_x0 = -kc.sqrt_ap * kc.sqrt_1ma / kc.sqrt_a;
    int inside;
    double mu = gc_ddim_mean(&kc, x_t[i], eps[i], clip, c, &inside);
    double dmu = kc.dir + (inside ? dmu_x0 : 0.0);
    deps[i] = (float)(g * ((double)x_prev[i] - mu) * dmu);
  }
}

gc_status be_ddim_step_log_prob_backward(be_ctx *bc, float *deps, const float *dlog_prob,
                                         const float *x_prev, const float *x_t, const float *eps,
                                         const gc_ddim_coef *host_coef, float clip_x0, int64_t B,
                                         int64_t M) {
  GC_CHECK(ctx_enter(bc));
  gc_ddim_coef *coef = NULL;
  GC_CHECK(upload_coefs(bc, host_coef, B, 0, &coef));
  k_ddim_backward<<<grid_for(bc, B * M), THREADS, 0, bc->stream>>>(
      deps, dlog_prob, x_prev, x_t, eps, coef, B, M, clip_x0 > 0.0f, (double)clip_x0);
  return launch_status("ddim_step_log_prob_backward");
}

/* ---- DDPO losses ---- */

__device__ __forceinline__ double clip_adv(float adv, float adv_clip_max) {
  double m = adv_clip_max;
  return fmin(fmax((double)adv, -m), m);
}

enum { LOSS_THREADS = 1024 };

// One block: loss = mean(max(-A r, -A clip(r))), stats = [mean((lp - old)^2) / 2, mean(|r-1| > c)]
__global__ void k_ddpo_is(float *loss, float *stats, const float *log_prob,
                          const float *old_log_prob, const float *advantages, int64_t N,
                          float clip_range, float adv_clip_max) {
  const double lo = 1.0 - (double)clip_range, hi = 1.0 + (double)clip_range;
  double sum = 0.0, kl = 0.0, clipped = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x) {
    double A = clip_adv(advantages[i], adv_clip_max);
    double dlp = (double)log_prob[i] - (double)old_log_prob[i];
    double r = exp(dlp);
    sum += fmax(-A * r, -A * fmin(fmax(r, lo), hi));
    kl += dlp * dlp;
    clipped += fabs(r - 1.0) > (double)clip_range;
  }
  sum = block_sum(sum);
  kl = block_sum(kl);
  clipped = block_sum(clipped);
  if (threadIdx.x == 0) {
    loss[0] = (float)(sum / (double)N);
    if (stats) {
      stats[0] = (float)(0.5 * kl / (double)N);
      stats[1] = (float)(clipped / (double)N);
    }
  }
}

gc_status be_ddpo_is_forward(be_ctx *bc, float *loss, float *stats, const float *log_prob,
                             const float *old_log_prob, const float *advantages, int64_t N,
                             float clip_range, float adv_clip_max) {
  GC_CHECK(ctx_enter(bc));
  k_ddpo_is<<<1, LOSS_THREADS, 0, bc->stream>>>(loss, stats, log_prob, old_log_prob, advantages,
                                                N, clip_range, adv_clip_max);
  return launch_status("ddpo_is_forward");
}

// dlog_prob = dloss/N * (-A r) where the unclipped branch wins or ties, else 0
__global__ void k_ddpo_is_backward(float *dlog_prob, double scale, const float *log_prob,
                                   const float *old_log_prob, const float *advantages, int64_t N,
                                   float clip_range, float adv_clip_max) {
  const double lo = 1.0 - (double)clip_range, hi = 1.0 + (double)clip_range;
  GRID_STRIDE(i, N) {
    double A = clip_adv(advantages[i], adv_clip_max);
    double r = exp((double)log_prob[i] - (double)old_log_prob[i]);
    double unclipped = -A * r, clipped = -A * fmin(fmax(r, lo), hi);
    dlog_prob[i] = (float)(unclipped >= clipped ? scale * unclipped : 0.0);
  }
}

gc_status be_ddpo_is_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *log_prob,
                              const float *old_log_prob, const float *advantages, int64_t N,
                              float clip_range, float adv_clip_max) {
  GC_CHECK(ctx_enter(bc));
  k_ddpo_is_backward<<<grid_for(bc, N), THREADS, 0, bc->stream>>>(
      dlog_prob, (double)dloss / (double)N, log_prob, old_log_prob, advantages, N, clip_range,
      adv_clip_max);
  return launch_status("ddpo_is_backward");
}

// One block: loss = mean(-A lp)
__global__ void k_ddpo_sf(float *loss, const float *log_prob, const float *advantages, int64_t N,
                          float adv_clip_max) {
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < N; i += blockDim.x)
    sum += -clip_adv(advantages[i], adv_clip_max) * log_prob[i];
  sum = block_sum(sum);
  if (threadIdx.x == 0) loss[0] = (float)(sum / (double)N);
}

gc_status be_ddpo_sf_forward(be_ctx *bc, float *loss, const float *log_prob,
                             const float *advantages, int64_t N, float adv_clip_max) {
  GC_CHECK(ctx_enter(bc));
  k_ddpo_sf<<<1, LOSS_THREADS, 0, bc->stream>>>(loss, log_prob, advantages, N, adv_clip_max);
  return launch_status("ddpo_sf_forward");
}

__global__ void k_ddpo_sf_backward(float *dlog_prob, double scale, const float *advantages,
                                   int64_t N, float adv_clip_max) {
  GRID_STRIDE(i, N) dlog_prob[i] = (float)(-clip_adv(advantages[i], adv_clip_max) * scale);
}

gc_status be_ddpo_sf_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *advantages,
                              int64_t N, float adv_clip_max) {
  GC_CHECK(ctx_enter(bc));
  k_ddpo_sf_backward<<<grid_for(bc, N), THREADS, 0, bc->stream>>>(
      dlog_prob, (double)dloss / (double)N, advantages, N, adv_clip_max);
  return launch_status("ddpo_sf_backward");
}
