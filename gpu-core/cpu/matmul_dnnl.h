/* oneDNN matrix products for the CPU backend's linear layer (matmul_dnnl.c); linear.c decides. */
#ifndef GPU_CORE_CPU_MATMUL_DNNL_H
#define GPU_CORE_CPU_MATMUL_DNNL_H

#include "../core/backend.h"

#ifdef GC_NO_DNNL
/* built without oneDNN (make DNNL=0): every product stays on OpenBLAS */
static inline gc_status dnnl_linear_forward(float *y, const float *x, const float *w,
                                            const float *b, int64_t M, int64_t K, int64_t N,
                                            int accumulate) {
  return gc_set_error(GC_ERR_UNSUPPORTED, "gpu-core was built without oneDNN");
}
static inline gc_status dnnl_linear_backward_data(float *dx, const float *dy, const float *w,
                                                  int64_t M, int64_t K, int64_t N, int accumulate) {
  return gc_set_error(GC_ERR_UNSUPPORTED, "gpu-core was built without oneDNN");
}
static inline gc_status dnnl_linear_backward_weights(float *dw, const float *dy, const float *x,
                                                     int64_t M, int64_t K, int64_t N) {
  return gc_set_error(GC_ERR_UNSUPPORTED, "gpu-core was built without oneDNN");
}
#else
/* y[M,N] (= or += with accumulate) x[M,K] w[N,K]^T (+ b[N], optional) */
gc_status dnnl_linear_forward(float *y, const float *x, const float *w, const float *b, int64_t M,
                              int64_t K, int64_t N, int accumulate);
/* dx[M,K] (= or += with accumulate) dy[M,N] w[N,K] */
gc_status dnnl_linear_backward_data(float *dx, const float *dy, const float *w, int64_t M,
                                    int64_t K, int64_t N, int accumulate);
/* dw[N,K] += dy[M,N]^T x[M,K] */
gc_status dnnl_linear_backward_weights(float *dw, const float *dy, const float *x, int64_t M,
                                       int64_t K, int64_t N);
#endif

#endif
