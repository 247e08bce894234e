/*
 * Branch-free single-precision exp and erfc that GCC vectorises inside `omp simd` loops, 16 lanes
 * with AVX-512 (libm's expf/erfcf are scalar calls and cost more than the memory traffic of the
 * activation ops they serve). Accuracy for the fp32 activations built on them:
 *   vm_expf:  Cody-Waite reduction to |r| <= ln2/2 (ln 2 split in two) and Cephes' degree-6 expf
 *             polynomial: relative error < 2e-7 (about 2 ulp) on [-87, 88]; inputs are clamped to
 *             that range (e^-87 ~ 1.6e-38 is still a normal float; the sigmoid and gelu limits
 *             come out as 0 and 1 as in libm). The clamp is an integer min on the bits: written as
 *             a float select, GCC evaluates the activations' whole expression for the clamped
 *             value in every lane (x / (1 + e^88)), whose denormal results cost microcode assists:
 *             silu's forward ran 10x slower. A NaN input clamps to a number here; every activation
 *             multiplies by x, so its NaN still comes out.
 *   vm_erfcf: erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), the Chebyshev fit of P given in
 *             Numerical Recipes (2nd ed., sec. 6.2): fractional error < 1.2e-7 for every z >= 0
 *             in exact arithmetic, plus the float rounding of -z^2 + P(t) (~6e-8 z^2 relative,
 *             1e-6 at z = 4 where erfc is 1.5e-8); z < 0 through erfc(z) = 2 - erfc(-z). Horner's
 *             steps and -z^2 + P(t) are FMAs (half the instructions of GEGLU's polynomial, one
 *             rounding each: the fused feed-forward 4.3 -> 3.5-3.8 ms per 16x16 call).
 * test/gpu-core (op table, FWD_TOL 1e-5 normalised against float64 references, with inputs out to
 * the tails) checks both through the activations.
 */
#ifndef GPU_CORE_CPU_VMATH_H
#define GPU_CORE_CPU_VMATH_H

#include <stdint.h>
#include <string.h>

/* a * b + c, fused where the ISA has FMA (one rounding, one instruction; ISO C mode keeps GCC
 * from contracting on its own), else as written. */
#if defined(__FMA__)
#define VM_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define VM_FMA(a, b, c) ((a) * (b) + (c))
#endif

static inline float vm_expf(float x) {
  uint32_t ix;
  memcpy(&ix, &x, sizeof ix);
  ix = ix > 0xC2AE0000u ? 0xC2AE0000u : ix; /* unsigned min: x < -87 (and -NaN) -> -87 */
  int32_t sx = (int32_t)ix;
  sx = sx > 0x42B00000 ? 0x42B00000 : sx; /* signed min: x > 88 (and +NaN) -> 88 */
  memcpy(&x, &sx, sizeof x);
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round(x / ln 2) */
  float r = x - n * 0.693359375f; /* ln 2 = 0.693359375 - 2.12194440e-4, the first part exact in n */
  r = r + n * 2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = VM_FMA(p, r, 1.3981999507e-3f);
  p = VM_FMA(p, r, 8.3334519073e-3f);
  p = VM_FMA(p, r, 4.1665795894e-2f);
  p = VM_FMA(p, r, 1.6666665459e-1f);
  p = VM_FMA(p, r, 5.0000001201e-1f);
  p = VM_FMA(p, r * r, r + 1.0f);
  const int32_t bits = ((int32_t)n + 127) << 23; /* 2^n, n in [-126, 127] after the clamp */
  float scale;
  memcpy(&scale, &bits, sizeof scale);
  return p * scale;
}

static inline float vm_erfcf(float z) {
  const float a = __builtin_fabsf(z);
  const float t = 1.0f / VM_FMA(0.5f, a, 1.0f);
  float p = 0.17087277f;
  p = VM_FMA(p, t, -0.82215223f);
  p = VM_FMA(p, t, 1.48851587f);
  p = VM_FMA(p, t, -1.13520398f);
  p = VM_FMA(p, t, 0.27886807f);
  p = VM_FMA(p, t, -0.18628806f);
  p = VM_FMA(p, t, 0.09678418f);
  p = VM_FMA(p, t, 0.37409196f);
  p = VM_FMA(p, t, 1.00002368f);
  p = VM_FMA(p, t, -1.26551223f);
  const float e = t * vm_expf(VM_FMA(-a, a, p));
  return z < 0.0f ? 2.0f - e : e;
}

static inline float vm_sigmoidf(float x) { return 1.0f / (1.0f + vm_expf(-x)); }

/* SiLU x sigmoid(x) and its derivative, shared by the activation op and the fused group norm. */
static inline float vm_siluf(float x) { return x / (1.0f + vm_expf(-x)); }
static inline float vm_silu_gradf(float x) {
  const float s = vm_sigmoidf(x);
  return s * (1.0f + x * (1.0f - s));
}

#endif
