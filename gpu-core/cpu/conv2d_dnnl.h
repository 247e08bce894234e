/* oneDNN convolutions for the CPU backend (conv2d_dnnl.c); conv2d.c decides which calls go here. */
#ifndef GPU_CORE_CPU_CONV2D_DNNL_H
#define GPU_CORE_CPU_CONV2D_DNNL_H

#include "../core/backend.h"

#ifdef GC_NO_DNNL
/* built without oneDNN (make DNNL=0): every convolution stays on conv2d.c's own paths */
static inline int dnnl_conv_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                                     int64_t stride, int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  return 0;
}
static inline gc_status dnnl_conv2d_forward(float *y, const float *x, const float *w,
                                            const float *b, int64_t B, int64_t C, int64_t H,
                                            int64_t W, int64_t O, int64_t K, int64_t stride,
                                            int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  return gc_set_error(GC_ERR_UNSUPPORTED, "gpu-core was built without oneDNN");
}
static inline gc_status dnnl_conv2d_backward(float *dx, float *dw, float *db, const float *dy,
                                             const float *x, const float *w, int64_t B, int64_t C,
                                             int64_t H, int64_t W, int64_t O, int64_t K,
                                             int64_t stride, int64_t pad, int64_t Ho, int64_t Wo,
                                             int cl) {
  return gc_set_error(GC_ERR_UNSUPPORTED, "gpu-core was built without oneDNN");
}
#else
/* 1 when oneDNN takes this convolution: the right padding is not negative, and channels-last
 * (oneDNN's nhwc kernels, no reorder of the activations: every kernel size and channel count),
 * or channels-first with K == 3 and both channel counts filling a 16-float block (see conv2d.c's
 * header for the measurements). */
int dnnl_conv_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                       int64_t pad, int64_t Ho, int64_t Wo, int cl);

/* Same contracts as be_conv2d_forward / be_conv2d_backward (cl: NHWC activations): y (=); dx (=),
 * dw (+=), db (+=). */
gc_status dnnl_conv2d_forward(float *y, const float *x, const float *w, const float *b, int64_t B,
                              int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                              int64_t pad, int64_t Ho, int64_t Wo, int cl);
gc_status dnnl_conv2d_backward(float *dx, float *dw, float *db, const float *dy, const float *x,
                               const float *w, int64_t B, int64_t C, int64_t H, int64_t W,
                               int64_t O, int64_t K, int64_t stride, int64_t pad, int64_t Ho,
                               int64_t Wo, int cl);
#endif

#endif
