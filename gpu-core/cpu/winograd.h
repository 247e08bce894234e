/* Winograd F(4x4,3x3) convolutions for the CPU backend (winograd.c); conv2d.c decides which calls
 * go here. */
#ifndef GPU_CORE_CPU_WINOGRAD_H
#define GPU_CORE_CPU_WINOGRAD_H

#include "../core/backend.h"

/* Fewer channels than this on either side stay on oneDNN (conv_in's 3 and conv_out's 3: a
 * product of depth 3, or 3 of a 16-column panel, wastes most of the kernel). */
enum { WINO_MIN_CHANNELS = 16 };

/* 1 for a channels-last 3x3 convolution with stride 1 and padding 1 (output size = input size)
 * and at least WINO_MIN_CHANNELS channels on both sides. */
int wino_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                  int64_t pad, int64_t Ho, int64_t Wo, int cl);

/* y[B,H,W,Co] (=) = the convolution of x[B,H,W,Ci] (+ bias[Co], optional). dgrad = 0: w is the
 * forward's [Co,Ci,3,3]. dgrad = 1: the backward's dx, x = dy [B,H,W,Ci] (Ci = the forward's O),
 * y = dx (Co = the forward's C), w the forward's [Ci,Co,3,3], flipped and transposed here. */
gc_status wino_conv3x3(float *y, const float *x, const float *w, const float *bias, int64_t B,
                       int64_t Ci, int64_t Co, int64_t H, int64_t W, int dgrad);

/* dw[Co,Ci,3,3] (+=) and db[Co] (+=), each optional, of the same convolution from x[B,H,W,Ci] and
 * dy[B,H,W,Co], by the transpose of the forward's identity. */
gc_status wino_conv3x3_dw(float *dw, float *db, const float *dy, const float *x, int64_t B,
                          int64_t Ci, int64_t Co, int64_t H, int64_t W);

#endif
