/*
 * Branch-free double-precision exp and erfc that GCC vectorises inside `omp simd` loops (libm's
 * exp/erfc are scalar calls and cost ~5 ns an element, more than the memory traffic of the
 * activation ops they serve). Accuracy for the fp32 activations built on them:
 *   vm_exp:  Cody-Waite reduction to |r| <= ln2/2 and a degree-11 Taylor polynomial: relative error
 *            < 1e-13 on [-708, 709]; inputs are clamped to that range (exp(-708) ~ 3e-308, so the
 *            sigmoid and gelu limits come out as in libm's double).
 *   vm_erfc: erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), the Chebyshev fit of P given in
 *            Numerical Recipes (2nd ed., sec. 6.2): fractional error < 1.2e-7 for every z >= 0,
 *            i.e. about one fp32 ulp; z < 0 through erfc(z) = 2 - erfc(-z).
 * test/gpu-core (op table, FWD_TOL 1e-5 normalised, with inputs out to the tails) checks both.
 */
#ifndef GPU_CORE_CPU_VMATH_H
#define GPU_CORE_CPU_VMATH_H

#include <stdint.h>
#include <string.h>

static inline double vm_exp(double x) {
  const double LOG2E = 1.4426950408889634074;
  const double LN2_HI = 6.93147180369123816490e-01; // ln 2 split so n * LN2_HI is exact
  const double LN2_LO = 1.90821492927058770002e-10;
  const double ROUND = 6755399441055744.0;           // 1.5 * 2^52: adding it rounds to an integer
  // Clamp as max/min by arithmetic: a select here makes GCC's vector loop ~4x slower, and the
  // rounding it adds (~1e-13 absolute on x) is ~1e-13 relative on exp(x). NaN stays NaN; +-inf
  // become NaN (inf - inf), which no activation's fp32 result would hide anyway.
  x = 0.5 * ((x - 708.0) + __builtin_fabs(x + 708.0)); // max(x, -708)
  x = 0.5 * ((x + 709.0) - __builtin_fabs(x - 709.0)); // min(x, 709)
  double n = (x * LOG2E + ROUND) - ROUND;
  double r = (x - n * LN2_HI) - n * LN2_LO;
  double p = 1.0 / 39916800.0;                       // 1/11!
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  p = p * r + 1.0;
  int64_t bits = ((int64_t)n + 1023) << 52; // 2^n, n in [-1022, 1023] after the clamp
  double scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline double vm_erfc(double z) {
  double a = __builtin_fabs(z);
  double t = 1.0 / (1.0 + 0.5 * a);
  double p = 0.17087277;
  p = p * t - 0.82215223;
  p = p * t + 1.48851587;
  p = p * t - 1.13520398;
  p = p * t + 0.27886807;
  p = p * t - 0.18628806;
  p = p * t + 0.09678418;
  p = p * t + 0.37409196;
  p = p * t + 1.00002368;
  p = p * t - 1.26551223;
  double e = t * vm_exp(-a * a + p);
  return z < 0.0 ? 2.0 - e : e;
}

static inline double vm_sigmoid(double x) { return 1.0 / (1.0 + vm_exp(-x)); }

#endif
