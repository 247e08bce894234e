/*
 * CUDA backend: AdamW, the pieces of gradient-norm clipping, and Philox normal noise (mirrors
 * cpu/optim.c). AdamW's per-element arithmetic is the CPU's fp32 expression (built without FMA
 * contraction, IEEE division and sqrt), so both backends take bit-identical steps; the normals are
 * philox.h's mapping, so a seed gives the same noise on CPU and GPU.
 */
#include "common.h"

#include <cmath>

#include "../core/philox.h"

#define SUM_CHUNK 65536 /* elements per partial sum, as on the CPU */

__global__ void k_adamw(float *params, const float *grads, float *m, float *v, int64_t n,
                        float decay, float step_size, float bc2_sqrt, float b1, float b2, float c1,
                        float c2, float eps) {
  GRID_STRIDE(i, n) {
    float g = grads[i];
    float mi = b1 * m[i] + c1 * g;
    float vi = b2 * v[i] + c2 * g * g;
    m[i] = mi;
    v[i] = vi;
    float p = params[i] * decay;
    params[i] = p - step_size * (mi / (sqrtf(vi) / bc2_sqrt + eps));
  }
}

// params, grads, m, v are (n); PyTorch AdamW (decoupled weight decay), step >= 1
gc_status be_adamw_step(be_ctx *bc, float *params, const float *grads, float *m, float *v,
                        int64_t n, float lr, float beta1, float beta2, float eps,
                        float weight_decay, int64_t step) {
  GC_CHECK(ctx_enter(bc));
  if (step < 1)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "step must be >= 1 (got %lld)", (long long)step);
  if (!(lr >= 0.0f) || !std::isfinite(lr) || !(eps >= 0.0f) || !std::isfinite(eps) ||
      !(weight_decay >= 0.0f) || !std::isfinite(weight_decay))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "lr, eps and weight_decay must be finite and >= 0 "
                        "(got lr %g, eps %g, weight_decay %g)",
                        (double)lr, (double)eps, (double)weight_decay);
  if (!(beta1 >= 0.0f && beta1 < 1.0f) || !(beta2 >= 0.0f && beta2 < 1.0f))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "betas must lie in [0, 1) (got %g, %g)",
                        (double)beta1, (double)beta2);
  if (n <= 0) return GC_OK;
  /* per-call scalars in double on the host, rounded once, as the CPU backend does */
  float decay = (float)(1.0 - (double)lr * (double)weight_decay);
  float step_size = (float)((double)lr / (1.0 - pow((double)beta1, (double)step)));
  float bc2_sqrt = (float)sqrt(1.0 - pow((double)beta2, (double)step));
  k_adamw<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(params, grads, m, v, n, decay, step_size,
                                                        bc2_sqrt, beta1, beta2, 1.0f - beta1,
                                                        1.0f - beta2, eps);
  return launch_status("adamw_step");
}

// partial[k] = sum of x^2 over chunk k (SUM_CHUNK elements), one block per chunk
__global__ void k_sum_squares(double *partial, const float *x, int64_t n) {
  const int64_t i0 = (int64_t)blockIdx.x * SUM_CHUNK;
  const int64_t i1 = i0 + SUM_CHUNK < n ? i0 + SUM_CHUNK : n;
  double s = 0.0;
  for (int64_t i = i0 + threadIdx.x; i < i1; i += blockDim.x) s += (double)x[i] * x[i];
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ void k_sum_in_order(double *out, const double *partial, int64_t n) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = 0.0;
  for (int64_t k = 0; k < n; k++) s += partial[k];
  *out = s;
}

// x is (n); *out (host) = sum of x^2 in double. Synchronises (the host needs the value).
gc_status be_sum_squares(be_ctx *bc, const float *x, int64_t n, double *out) {
  GC_CHECK(ctx_enter(bc));
  if (n <= 0) {
    *out = 0.0;
    return GC_OK;
  }
  const int64_t nch = (n + SUM_CHUNK - 1) / SUM_CHUNK;
  if (nch > 0x7fffffff) return gc_set_error(GC_ERR_UNSUPPORTED, "sum of squares over %lld chunks", (long long)nch);
  double *partial = (double *)scratch_get(bc, (size_t)(nch + 1) * sizeof(double));
  if (!partial) return GC_ERR_OUT_OF_MEMORY;
  k_sum_squares<<<(unsigned)nch, THREADS, 0, bc->stream>>>(partial, x, n);
  GC_CHECK(launch_status("sum_squares"));
  k_sum_in_order<<<1, 32, 0, bc->stream>>>(partial + nch, partial, nch);
  GC_CHECK(launch_status("sum_squares"));
  CU_CHECK(cudaMemcpyAsync(out, partial + nch, sizeof(double), cudaMemcpyDeviceToHost, bc->stream),
           "sum_squares");
  return cuda_status(cudaStreamSynchronize(bc->stream), "sum_squares");
}

__global__ void k_scale(float *x, int64_t n, float factor) {
  GRID_STRIDE(i, n) x[i] *= factor;
}

// x is (n); x *= factor
gc_status be_scale(be_ctx *bc, float *x, int64_t n, float factor) {
  GC_CHECK(ctx_enter(bc));
  if (n <= 0) return GC_OK;
  k_scale<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(x, n, factor);
  return launch_status("scale");
}

__global__ void k_randn(float *y, int64_t n, uint64_t seed, uint64_t offset) {
  GRID_STRIDE(i, n) y[i] = (float)gc_philox_normal(seed, offset + (uint64_t)i);
}

// y is (n); y[i] = normal number (offset + i) of the Philox stream keyed by seed (philox.h)
gc_status be_randn(be_ctx *bc, float *y, int64_t n, uint64_t seed, uint64_t offset) {
  GC_CHECK(ctx_enter(bc));
  if (n <= 0) return GC_OK;
  k_randn<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, n, seed, offset);
  return launch_status("randn");
}
