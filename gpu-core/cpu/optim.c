/*
 * CPU backend: AdamW, the pieces of gradient-norm clipping, and Philox normal noise.
 * Each works on one flat buffer (all parameters, all gradients, all moments), so one call covers
 * the whole model. Reductions add fixed-size chunks in a fixed order: the same buffer gives the
 * same norm whatever the thread count.
 */
#include <math.h>
#include <stdlib.h>

#include "../core/backend.h"
#include "../core/philox.h"

/* Below this many elements a loop runs on one thread. */
#define PAR_MIN 32768
/* Elements per partial sum of a reduction. */
#define SUM_CHUNK 65536

// params, grads, m, v are (n). PyTorch AdamW (decoupled weight decay), step >= 1:
//   p *= 1 - lr wd; m = b1 m + (1 - b1) g; v = b2 v + (1 - b2) g^2;
//   p -= (lr / (1 - b1^step)) m / (sqrt(v) / sqrt(1 - b2^step) + eps)
gc_status be_adamw_step(be_ctx *bc, float *params, const float *grads, float *m, float *v,
                        int64_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t step) {
  (void)bc;
  if (step < 1)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "step must be >= 1 (got %lld)",
                        (long long)step);
  if (!(lr >= 0.0f) || !isfinite(lr) || !(eps >= 0.0f) || !isfinite(eps) ||
      !(weight_decay >= 0.0f) || !isfinite(weight_decay))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "lr, eps and weight_decay must be finite and >= 0 "
                        "(got lr %g, eps %g, weight_decay %g)",
                        (double)lr, (double)eps, (double)weight_decay);
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "betas must lie in [0, 1) (got %g, %g)", (double)beta1,
                        (double)beta2);
  /* per-call scalars in double, rounded once, as PyTorch computes them on the host */
  float decay = (float)(1.0 - (double)lr * (double)weight_decay);
  float step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)step)));
  float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, (double)step));
  float b1 = beta1, b2 = beta2, c1 = 1.0f - beta1, c2 = 1.0f - beta2;
#pragma omp parallel for if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) {
    float g = grads[i];
    float mi = b1 * m[i] + c1 * g;
    float vi = b2 * v[i] + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = params[i] * decay;
    params[i] = p - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
  }
  return GC_OK;
}

// x is (n); *out = sum of x^2, accumulated in double.
gc_status be_sum_squares(be_ctx *bc, const float *x, int64_t n, double *out) {
  (void)bc;
  int64_t nch = (n + SUM_CHUNK - 1) / SUM_CHUNK;
  if (nch <= 1) {
    double s = 0.0;
    for (int64_t i = 0; i < n; i++) s += (double)x[i] * x[i];
    *out = s;
    return GC_OK;
  }
  double *partial = malloc((size_t)nch * sizeof(double));
  if (!partial)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "sum of squares scratch for %lld chunks",
                        (long long)nch);
#pragma omp parallel for schedule(static)
  for (int64_t k = 0; k < nch; k++) {
    int64_t i0 = k * SUM_CHUNK, i1 = i0 + SUM_CHUNK < n ? i0 + SUM_CHUNK : n;
    /* four independent accumulators break the add latency chain; order stays fixed */
    double s[4] = {0.0, 0.0, 0.0, 0.0};
    int64_t i = i0;
    for (; i + 4 <= i1; i += 4)
      for (int j = 0; j < 4; j++) s[j] += (double)x[i + j] * x[i + j];
    for (; i < i1; i++) s[0] += (double)x[i] * x[i];
    partial[k] = (s[0] + s[1]) + (s[2] + s[3]);
  }
  double s = 0.0;
  for (int64_t k = 0; k < nch; k++) s += partial[k];
  free(partial);
  *out = s;
  return GC_OK;
}

// x is (n); x *= factor.
gc_status be_scale(be_ctx *bc, float *x, int64_t n, float factor) {
  (void)bc;
#pragma omp parallel for if (n > PAR_MIN)
  for (int64_t i = 0; i < n; i++) x[i] *= factor;
  return GC_OK;
}

// y is (n); y[i] = normal number (offset + i) of the Philox stream keyed by seed (philox.h).
gc_status be_randn(be_ctx *bc, float *y, int64_t n, uint64_t seed, uint64_t offset) {
  (void)bc;
#pragma omp parallel for if (n > 4096)
  for (int64_t i = 0; i < n; i++) y[i] = (float)gc_philox_normal(seed, offset + (uint64_t)i);
  return GC_OK;
}
