/*
 * Activation formulas on the device, in double (as cpu/elementwise.c, whose float versions they
 * are compared against): the activation ops (elementwise.cu) and the group norm's fused SiLU
 * (norm.cu) share them.
 */
#ifndef GPU_CORE_CUDA_ACTIVATION_H
#define GPU_CORE_CUDA_ACTIVATION_H

#include "common.h"

#define SQRT1_2 0.70710678118654752440
#define INV_SQRT_2PI 0.39894228040143267794
#define SQRT_2_OVER_PI 0.79788456080286535588
#define GELU_TANH_C 0.044715
#define QUICK_GELU_C 1.702

__device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
__device__ __forceinline__ double gelu_erf(double x) { return 0.5 * x * erfc(-x * SQRT1_2); }
__device__ __forceinline__ double gelu_erf_grad(double x) {
  return 0.5 * erfc(-x * SQRT1_2) + x * INV_SQRT_2PI * exp(-0.5 * x * x);
}

__device__ __forceinline__ double act_value(int kind, double x) {
  switch (kind) {
  case GC_ACT_SILU: return x * sigmoid(x);
  case GC_ACT_GELU: return gelu_erf(x);
  case GC_ACT_GELU_TANH: {
    double t = tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x));
    return 0.5 * x * (1.0 + t);
  }
  case GC_ACT_QUICK_GELU: return x * sigmoid(QUICK_GELU_C * x);
  }
  return 0.0;
}

__device__ __forceinline__ double act_grad(int kind, double x) {
  switch (kind) {
  case GC_ACT_SILU: {
    double s = sigmoid(x);
    return s * (1.0 + x * (1.0 - s));
  }
  case GC_ACT_GELU: return gelu_erf_grad(x);
  case GC_ACT_GELU_TANH: {
    double t = tanh(SQRT_2_OVER_PI * (x + GELU_TANH_C * x * x * x));
    double dinner = SQRT_2_OVER_PI * (1.0 + 3.0 * GELU_TANH_C * x * x);
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * dinner;
  }
  case GC_ACT_QUICK_GELU: {
    double s = sigmoid(QUICK_GELU_C * x);
    return s * (1.0 + QUICK_GELU_C * x * (1.0 - s));
  }
  }
  return 0.0;
}

#endif
