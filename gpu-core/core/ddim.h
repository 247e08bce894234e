/*
 * The DDIM step's scalar math (docs/DESIGN.md §3.2), shared by the front end and both backends:
 * core/ops.c validates the arguments and computes each sample's coefficients once, on the host in
 * double, and hands them to the backend; the per-element mean is the same inline function on the
 * CPU and on the GPU.
 */
#ifndef GPU_CORE_DDIM_H
#define GPU_CORE_DDIM_H

#include <math.h>
#include <stdint.h>

#ifndef GC_HD
#ifdef __CUDACC__
#define GC_HD __host__ __device__ __forceinline__
#else
#define GC_HD static inline
#endif
#endif

/* log(sqrt(2 pi)) */
#define GC_LOG_SQRT_2PI 0.91893853320467274178
/* Elements per partial sum of a log-prob: fixed, so the sum's rounding does not depend on the
 * thread count or the backend, and the sampling and given forms agree bit for bit. */
#define GC_DDIM_CHUNK 4096

/* One sample's step: x0 = (x_t - sqrt_1ma eps) / sqrt_a, mean = sqrt_ap x0 + dir eps,
 * x_prev ~ N(mean, sigma^2). */
typedef struct gc_ddim_coef {
  double sqrt_a, sqrt_1ma, sqrt_ap, dir, sigma;
  double log_norm; /* -log(sigma) - log(sqrt(2 pi)) */
} gc_ddim_coef;

/* The mean of one element; *inside says whether x0 lay in the clip range [-c, c] (always when
 * clip is 0), i.e. whether d mean / d eps keeps its x0 term. */
GC_HD double gc_ddim_mean(const gc_ddim_coef *k, double x_t, double e, int clip, double c,
                          int *inside) {
  double x0 = (x_t - k->sqrt_1ma * e) / k->sqrt_a;
  *inside = !clip || (x0 >= -c && x0 <= c);
  if (clip) x0 = fmin(fmax(x0, -c), c);
  return k->sqrt_ap * x0 + k->dir * e;
}

#endif
