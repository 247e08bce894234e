/*
 * CPU backend: the DDIM step with its Gaussian log-prob (DESIGN.md §3) and the DDPO losses.
 * Per-sample scalars (alphas, sigma, coefficients) are computed in double; the elementwise work
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
/* Elements per partial sum of a log-prob (a unit of parallel work). */
#define DDIM_CHUNK 4096
/* log(sqrt(2 pi)) */
#define LOG_SQRT_2PI 0.91893853320467274178

/* ---- DDIM step ---- */

/* Coefficients of one sample's step, x0 = (x_t - sqrt_1ma eps) / sqrt_a,
 * mean = sqrt_ap x0 + dir eps, x_prev ~ N(mean, sigma^2). */
typedef struct ddim_coef {
  double sqrt_a, sqrt_1ma, sqrt_ap, dir, sigma;
  double log_norm; /* -log(sigma) - log(sqrt(2 pi)) */
} ddim_coef;

static gc_status ddim_coefs(ddim_coef *c, const double *alpha_t, const double *alpha_prev,
                            float eta, int64_t B) {
  if (!(eta > 0.0f) || !isfinite(eta))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "eta must be finite and > 0 (got %g): the log-prob needs "
                        "sigma > 0", (double)eta);
  for (int64_t b = 0; b < B; b++) {
    double a = alpha_t[b], ap = alpha_prev[b];
    if (!(a > 0.0 && a < 1.0) || !(ap > 0.0 && ap <= 1.0))
      return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                          "sample %lld: need 0 < alpha_t < 1 and 0 < alpha_prev <= 1 "
                          "(got alpha_t %.17g, alpha_prev %.17g)", (long long)b, a, ap);
    double sigma = (double)eta * sqrt((1.0 - ap) / (1.0 - a)) * sqrt(1.0 - a / ap);
    if (!(sigma > 0.0) || !isfinite(sigma))
      return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                          "sample %lld: sigma = %g is not > 0 (alpha_t %.17g, "
                          "alpha_prev %.17g, eta %g); a step needs alpha_t < alpha_prev < 1",
                          (long long)b, sigma, a, ap, (double)eta);
    /* 1 - a' - sigma^2 >= 0 holds for eta <= 1; a larger eta can push it below zero. */
    double dir2 = 1.0 - ap - sigma * sigma;
    if (dir2 < -1e-12)
      return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                          "sample %lld: 1 - alpha_prev - sigma^2 = %g < 0 (eta %g "
                          "too large for alpha_t %.17g, alpha_prev %.17g)",
                          (long long)b, dir2, (double)eta, a, ap);
    c[b].sqrt_a = sqrt(a);
    c[b].sqrt_1ma = sqrt(1.0 - a);
    c[b].sqrt_ap = sqrt(ap);
    c[b].dir = sqrt(fmax(dir2, 0.0));
    c[b].sigma = sigma;
    c[b].log_norm = -log(sigma) - LOG_SQRT_2PI;
  }
  return GC_OK;
}

static gc_status check_clip(float clip_x0) {
  if (isnan(clip_x0))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "clip_x0 is NaN");
  return GC_OK;
}

// x_t, eps, noise, x_prev, mean are (B, M); log_prob is (B); alpha_t, alpha_prev are host (B).
// Sampling form (noise != NULL): x_prev = mean + sigma * noise is written. Given form: x_prev is
// read. log_prob and mean are optional. Each element reads its inputs before any store, so x_prev
// or mean may alias x_t (an in-place sampling loop).
gc_status be_ddim_step(be_ctx *bc, float *x_prev, float *log_prob, float *mean, const float *x_t,
                       const float *eps, const float *noise, const double *alpha_t,
                       const double *alpha_prev, float eta, float clip_x0, int64_t B, int64_t M) {
  (void)bc;
  if (!x_prev)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "x_prev is required in both forms");
  gc_status st = check_clip(clip_x0);
  if (st != GC_OK) return st;
  if (B <= 0) return GC_OK;
  if (M <= 0) return gc_set_error(GC_ERR_SHAPE, "samples have no elements");

  int64_t nch = (M + DDIM_CHUNK - 1) / DDIM_CHUNK;
  ddim_coef *coef = malloc((size_t)B * sizeof(ddim_coef));
  double *partial = malloc((size_t)(B * nch) * sizeof(double));
  if (!coef || !partial) {
    free(coef); free(partial);
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "DDIM step scratch for %lld samples", (long long)B);
  }
  st = ddim_coefs(coef, alpha_t, alpha_prev, eta, B);
  if (st != GC_OK) { free(coef); free(partial); return st; }

  int clip = clip_x0 > 0.0f;
  double c = clip_x0;
#pragma omp parallel for schedule(static) if (B * M > PAR_MIN)
  for (int64_t task = 0; task < B * nch; task++) {
    int64_t b = task / nch, i0 = (task % nch) * DDIM_CHUNK;
    int64_t i1 = i0 + DDIM_CHUNK < M ? i0 + DDIM_CHUNK : M;
    const ddim_coef *k = &coef[b];
    double sq = 0.0; /* sum of (x_prev - mean)^2 over the chunk */
    for (int64_t i = b * M + i0; i < b * M + i1; i++) {
      double e = eps[i];
      double x0 = ((double)x_t[i] - k->sqrt_1ma * e) / k->sqrt_a;
      if (clip) x0 = fmin(fmax(x0, -c), c);
      double mu = k->sqrt_ap * x0 + k->dir * e;
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
  free(coef);
  free(partial);
  return GC_OK;
}

// deps, x_prev, x_t, eps are (B, M); dlog_prob is (B). deps is written; x_prev is data, so the
// gradient flows through the mean only: d log_prob[b] / d mean = (x_prev - mean) / (sigma^2 M),
// d mean / d eps = dir - sqrt_ap sqrt_1ma / sqrt_a (x0 term dropped where x0 was clipped, as in
// torch.clamp, whose gradient passes on the closed interval). deps may alias eps.
gc_status be_ddim_step_log_prob_backward(be_ctx *bc, float *deps, const float *dlog_prob,
                                         const float *x_prev, const float *x_t, const float *eps,
                                         const double *alpha_t, const double *alpha_prev,
                                         float eta, float clip_x0, int64_t B, int64_t M) {
  (void)bc;
  gc_status st = check_clip(clip_x0);
  if (st != GC_OK) return st;
  if (B <= 0 || M <= 0) return GC_OK;
  ddim_coef *coef = malloc((size_t)B * sizeof(ddim_coef));
  if (!coef)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "DDIM backward scratch");
  st = ddim_coefs(coef, alpha_t, alpha_prev, eta, B);
  if (st != GC_OK) { free(coef); return st; }

  int clip = clip_x0 > 0.0f;
  double c = clip_x0;
  for (int64_t b = 0; b < B; b++) {
    const ddim_coef *k = &coef[b];
    double g = (double)dlog_prob[b] / (k->sigma * k->sigma * (double)M);
    double dmu_x0 = -k->sqrt_ap * k->sqrt_1ma / k->sqrt_a; /* d mean / d eps through x0 */
#pragma omp parallel for schedule(static) if (M > PAR_MIN)
    for (int64_t i = b * M; i < (b + 1) * M; i++) {
      double e = eps[i];
      double x0 = ((double)x_t[i] - k->sqrt_1ma * e) / k->sqrt_a;
      int inside = !clip || (x0 >= -c && x0 <= c);
      if (clip) x0 = fmin(fmax(x0, -c), c);
      double mu = k->sqrt_ap * x0 + k->dir * e;
      double dmu = k->dir + (inside ? dmu_x0 : 0.0);
      deps[i] = (float)(g * ((double)x_prev[i] - mu) * dmu);
    }
  }
  free(coef);
  return GC_OK;
}

/* ---- DDPO losses ---- */

static gc_status check_loss_args(int64_t N, float clip_range, float adv_clip_max) {
  if (N <= 0) return gc_set_error(GC_ERR_SHAPE, "needs at least one log-prob");
  if (!(clip_range >= 0.0f))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "clip_range must be >= 0 (got %g)",
                        (double)clip_range);
  if (!(adv_clip_max >= 0.0f))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "adv_clip_max must be >= 0 (got %g)",
                        (double)adv_clip_max);
  return GC_OK;
}

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
  gc_status st = check_loss_args(N, clip_range, adv_clip_max);
  if (st != GC_OK) return st;
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
  gc_status st = check_loss_args(N, clip_range, adv_clip_max);
  if (st != GC_OK) return st;
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
  gc_status st = check_loss_args(N, 0.0f, adv_clip_max);
  if (st != GC_OK) return st;
  double sum = 0.0;
  for (int64_t i = 0; i < N; i++) sum += -clip_adv(advantages[i], adv_clip_max) * log_prob[i];
  loss[0] = (float)(sum / (double)N);
  return GC_OK;
}

// dlog_prob, advantages are (N); dlog_prob = -A dloss / N (written).
gc_status be_ddpo_sf_backward(be_ctx *bc, float *dlog_prob, float dloss, const float *advantages,
                              int64_t N, float adv_clip_max) {
  (void)bc;
  gc_status st = check_loss_args(N, 0.0f, adv_clip_max);
  if (st != GC_OK) return st;
  double scale = (double)dloss / (double)N;
#pragma omp parallel for if (N > PAR_MIN)
  for (int64_t i = 0; i < N; i++)
    dlog_prob[i] = (float)(-clip_adv(advantages[i], adv_clip_max) * scale);
  return GC_OK;
}
