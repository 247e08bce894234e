/*
 * CPU backend: the DDIM step with its Gaussian log-prob (docs/DESIGN.md §3.2) and the DDPO losses
 * (§3.4). The per-sample coefficients come from core/ops.c (ddim.h), validated; the elementwise work
 * is done in double from fp32 inputs and rounded at the store. Log-prob sums run over fixed
 * chunks whose partial sums are added in a fixed order, so a result does not depend on the
 * thread count, and the sampling form and the given form of one step give bit-identical log-probs
 * (the DDPO ratio is exactly 1 on the first inner step).
 */
#include <math.h>
#include <stdlib.h>

#include "../core/backend.h"

/* Below this many elements a loop runs on one thread. */
#define PAR_MIN 32768

/* ---- DDIM step ---- */

// x_t, eps, noise, x_prev, mean are (B, M); log_prob is (B); alpha_t, alpha_prev are host (B).
// Sampling form (noise != NULL): x_prev = mean + sigma * noise is written. Given form: x_prev is
// read. log_prob and mean are optional. Each element reads its inputs before any store, so x_prev
// or mean may alias x_t (an in-place sampling loop).
gc_status be_ddim_step(be_ctx *bc, float *x_prev, float *log_prob, float *mean, const float *x_t,
                       const float *eps, const float *noise, const gc_ddim_coef *coef,
                       float clip_x0, int64_t B, int64_t M) {
  (void)bc;
  if (!x_prev)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "x_prev is required in both forms");
  int64_t nch = (M + GC_DDIM_CHUNK - 1) / GC_DDIM_CHUNK;
  double *partial = malloc((size_t)(B * nch) * sizeof(double));
  if (!partial)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "DDIM step scratch for %lld samples", (long long)B);

  int clip = clip_x0 > 0.0f;
  double c = clip_x0;
#pragma omp parallel for schedule(static) if (B * M > PAR_MIN)
  for (int64_t task = 0; task < B * nch; task++) {
    int64_t b = task / nch, i0 = (task % nch) * GC_DDIM_CHUNK;
    int64_t i1 = i0 + GC_DDIM_CHUNK < M ? i0 + GC_DDIM_CHUNK : M;
    const gc_ddim_coef *k = &coef[b];
    double sq = 0.0; /* sum of (x_prev - mean)^2 over the chunk */
    for (int64_t i = b * M + i0; i < b * M + i1; i++) {
      int inside;
      double mu = gc_ddim_mean(k, x_t[i], eps[i], clip, c, &inside);
      if (noise) x_prev[i] = (float)(mu + k->sigma * (double)noise[i]);
      if (mean) mean[i] = (float)mu;
      /* the density of the stored fp32 x_prev, the same value the given form will read */
      double d = (double)x_prev[i] - mu;
      sq += d * d;
    }
    partial[task] = sq;
  }
  if (log_prob) {
    for (int64_t b = 0; b < B; b++) {
      double sq = 0.0;
      for (int64_t k = 0; k < nch; k++) sq += partial[b * nch + k];
      double s = coef[b].sigma;
      log_prob[b] = (float)(-sq / (2.0 * s * s * (double)M) + coef[b].log_norm);
    }
  }
  free(partial);
  return GC_OK;
}

// deps, x_prev, x_t, eps are (B, M); dlog_prob is (B). deps is written; x_prev is data, so the
// gradient flows through the mean only: d log_prob[b] / d mean = (x_prev - mean) / (sigma^2 M),
// d mean / d eps = dir - sqrt_ap sqrt_1ma / sqrt_a (x0 term dropped where x0 was clipped, as in
// torch.clamp, whose gradient passes on the closed interval). deps may alias eps.
gc_status be_ddim_step_log_prob_backward(be_ctx *bc, float *deps, const float *dlog_prob,
                                         const float *x_prev, const float *x_t, const float *eps,
                                         const gc_ddim_coef *coef, float clip_x0, int64_t B,
                                         int64_t M) {
  (void)bc;
  int clip = clip_x0 > 0.0f;
  double c = clip_x0;
  for (int64_t b = 0; b < B; b++) {
    const gc_ddim_coef *k = &coef[b];
    double g = (double)dlog_prob[b] / (k->sigma * k->sigma * (double)M);
    double dmu_x0 = -k->sqrt_ap * k->sqrt_1ma / k->sqrt_a; /* d mean / d eps through x0 */
#pragma omp parallel for schedule(static) if (M > PAR_MIN)
    for (int64_t i = b * M; i < (b + 1) * M; i++) {
      int inside;
      double mu = gc_ddim_mean(k, x_t[i], eps[i], clip, c, &inside);
      double dmu = k->dir + (inside ? dmu_x0 : 0.0);
      deps[i] = (float)(g * ((double)x_prev[i] - mu) * dmu);
    }
  }
  return GC_OK;
}

/* ---- DDPO losses ---- */

static inline double clip_adv(float adv, float adv_clip_max) {
  double m = adv_clip_max;
  return fmin(fmax((double)adv, -m), m);
}

// log_prob, old_log_prob, advantages are (N); loss is (1); stats is (2), optional:
// stats[0] = approx_kl = mean((lp - old)^2) / 2, stats[1] = clip_fraction = mean(|r - 1| > c).
gc_status be_ddpo_is_forward(be_ctx *bc, float *loss, float *stats, const float *log_prob,
                             const float *old_log_prob, const float *advantages, int64_t N,
                             float clip_range, float adv_clip_max) {
  (void)bc;
  double lo = 1.0 - (double)clip_range, hi = 1.0 + (double)clip_range;
  double sum = 0.0, kl = 0.0, clipped = 0.0;
  for (int64_t i = 0; i < N; i++) { /* N = minibatch x timesteps: small, and keeps order fixed */
    double A = clip_adv(advantages[i], adv_clip_max);
    double dlp = (double)log_prob[i] - (double)old_log_prob[i];
    double r = exp(dlp);
    sum += fmax(-A * r, -A * fmin(fmax(r, lo), hi));
    kl += dlp * dlp;
    clipped += fabs(r - 1.0) > (double)clip_range;
  }
  loss[0] = (float)(sum / (double)N);
  if (stats) {
    stats[0] = (float)(0.5 * kl / (double)N);
    stats[1] = (float)(clipped / (double)N);
  }
  return GC_OK;
}

// dlog_prob, log_prob, old_log_prob, advantages are (N); dlog_prob is written.
// d/dlp max(-A r, -A clip(r)) is -A r where the unclipped branch wins or ties (at a tie r lies
// in the clip range, and PyTorch's maximum splits the gradient half and half between branches
// whose gradients are both -A r), and 0 where the clipped branch wins (r outside the range).
gc_status be_ddpo_is_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *log_prob,
                              const float *old_log_prob, const float *advantages, int64_t N,
                              float clip_range, float adv_clip_max) {
  (void)bc;
  double lo = 1.0 - (double)clip_range, hi = 1.0 + (double)clip_range;
  double scale = (double)dloss / (double)N;
#pragma omp parallel for if (N > PAR_MIN)
  for (int64_t i = 0; i < N; i++) {
    double A = clip_adv(advantages[i], adv_clip_max);
    double r = exp((double)log_prob[i] - (double)old_log_prob[i]);
    double unclipped = -A * r, clipped = -A * fmin(fmax(r, lo), hi);
    dlog_prob[i] = (float)(unclipped >= clipped ? scale * unclipped : 0.0);
  }
  return GC_OK;
}

// log_prob, advantages are (N); loss is (1) = mean(-A lp).
gc_status be_ddpo_sf_forward(be_ctx *bc, float *loss, const float *log_prob,
                             const float *advantages, int64_t N, float adv_clip_max) {
  (void)bc;
  double sum = 0.0;
  for (int64_t i = 0; i < N; i++) sum += -clip_adv(advantages[i], adv_clip_max) * log_prob[i];
  loss[0] = (float)(sum / (double)N);
  return GC_OK;
}

// dlog_prob, advantages are (N); dlog_prob = -A dloss / N (written).
gc_status be_ddpo_sf_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *advantages,
                              int64_t N, float adv_clip_max) {
  (void)bc;
  double scale = (double)dloss / (double)N;
#pragma omp parallel for if (N > PAR_MIN)
  for (int64_t i = 0; i < N; i++)
    dlog_prob[i] = (float)(-clip_adv(advantages[i], adv_clip_max) * scale);
  return GC_OK;
}
