/*
 * 2-D convolution on the CPU: im2col + one OpenBLAS sgemm per chunk of images.
 *
 * A chunk of nb images is unfolded into one wide matrix col[C*K*K, nb*Ho*Wo] (images side by
 * side), so each chunk costs one large GEMM instead of nb small ones; OpenBLAS threads the GEMM
 * itself, OpenMP threads the unfold/fold loops, and the two never nest. A 1x1 stride-1 unpadded
 * convolution needs no unfolding when a chunk is one image: col is the image itself.
 */
#include "../core/backend.h"

#include <cblas.h>
#include <stdlib.h>
#include <string.h>

/* Columns of a chunk's wide matrix we aim for: wide enough that the GEMM runs near peak, small
 * enough that col (C*K*K x this) stays near the last-level cache. */
static int64_t CONV_TARGET_COLS = 4096; /* TUNE */
#include <stdio.h>
__attribute__((constructor)) static void tune_init(void){ const char*e=getenv("CONV_COLS"); if(e) CONV_TARGET_COLS=atoll(e);} 
/* Upper bound on the scratch of one call (floats); a chunk never exceeds it unless one image
 * alone does. */
#define CONV_SCRATCH_CAP ((size_t)16 << 20)

/* Grow-on-demand scratch, one per thread, kept for the life of the thread. */
static _Thread_local float *g_scratch;
static _Thread_local size_t g_scratch_floats;

static float *scratch_get(size_t floats) {
  if (floats <= g_scratch_floats) return g_scratch;
  free(g_scratch);
  size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
  g_scratch = aligned_alloc(64, bytes);
  g_scratch_floats = g_scratch ? floats : 0;
  return g_scratch;
}

/* Images per chunk, given the floats one image needs in scratch. */
static int64_t chunk_images(int64_t B, int64_t cols_per_image, size_t floats_per_image) {
  int64_t nb = (CONV_TARGET_COLS + cols_per_image - 1) / cols_per_image;
  int64_t cap = (int64_t)(CONV_SCRATCH_CAP / (floats_per_image ? floats_per_image : 1));
  if (nb > cap) nb = cap;
  if (nb > B) nb = B;
  return nb < 1 ? 1 : nb;
}

/* Output columns ow in [lo, hi) read an input column inside [0, W) for kernel column kw. */
static void valid_range(int64_t W, int64_t Wo, int64_t kw, int64_t stride, int64_t pad,
                        int64_t *lo, int64_t *hi) {
  int64_t a = pad - kw; /* ow*stride >= a */
  int64_t l = a <= 0 ? 0 : (a + stride - 1) / stride;
  int64_t b = W - 1 + pad - kw; /* ow*stride <= b */
  int64_t h = b < 0 ? 0 : b / stride + 1;
  if (h > Wo) h = Wo;
  if (l > h) l = h;
  *lo = l;
  *hi = h;
}

/* col[C*K*K, ldc] (columns [0, Ho*Wo) of it) from one image x[C,H,W]. Row (c,kh,kw) of col
 * holds the input pixels that kernel tap (kh,kw) of channel c meets, zero outside the image. */
static void im2col_row(float *col_row, const float *xc, int64_t H, int64_t W, int64_t kh,
                       int64_t kw, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  int64_t lo, hi;
  valid_range(W, Wo, kw, stride, pad, &lo, &hi);
  for (int64_t oh = 0; oh < Ho; oh++) {
    float *dst = col_row + oh * Wo;
    int64_t ih = oh * stride - pad + kh;
    if (ih < 0 || ih >= H) {
      memset(dst, 0, (size_t)Wo * sizeof(float));
      continue;
    }
    const float *src = xc + ih * W - pad + kw; /* src[ow*stride] is pixel (ih, ow*stride-pad+kw) */
    for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
    if (stride == 1) {
      memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
    } else {
      for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * stride];
    }
    for (int64_t ow = hi; ow < Wo; ow++) dst[ow] = 0.0f;
  }
}

/* col[C*K*K, nb*Ho*Wo] from x[nb,C,H,W]: image i fills columns [i*Ho*Wo, (i+1)*Ho*Wo). */
static void im2col(float *col, const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
                   int64_t K, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  const int64_t rows = C * K * K, P = Ho * Wo, ld = nb * P;
#pragma omp parallel for collapse(2) schedule(static) if (nb * rows * P > 32768)
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t r = 0; r < rows; r++) {
      int64_t c = r / (K * K), kh = (r / K) % K, kw = r % K;
      im2col_row(col + r * ld + i * P, x + (i * C + c) * H * W, H, W, kh, kw, stride, pad, Ho,
                 Wo);
    }
  }
}

/* dx[nb,C,H,W] (=) from dcol[C*K*K, nb*Ho*Wo]: the adjoint of im2col. Each (image, channel)
 * plane is owned by one thread, so the scatter-add needs no atomics. */
static void col2im(float *dx, const float *dcol, int64_t nb, int64_t C, int64_t H, int64_t W,
                   int64_t K, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  const int64_t P = Ho * Wo, ld = nb * P;
#pragma omp parallel for collapse(2) schedule(static) if (nb * C * K * K * P > 32768)
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t c = 0; c < C; c++) {
      float *dxc = dx + (i * C + c) * H * W;
      memset(dxc, 0, (size_t)(H * W) * sizeof(float));
      for (int64_t kh = 0; kh < K; kh++) {
        for (int64_t kw = 0; kw < K; kw++) {
          const float *row = dcol + ((c * K + kh) * K + kw) * ld + i * P;
          int64_t lo, hi;
          valid_range(W, Wo, kw, stride, pad, &lo, &hi);
          for (int64_t oh = 0; oh < Ho; oh++) {
            int64_t ih = oh * stride - pad + kh;
            if (ih < 0 || ih >= H) continue;
            float *dst = dxc + ih * W - pad + kw;
            const float *src = row + oh * Wo;
            if (stride == 1) {
              for (int64_t ow = lo; ow < hi; ow++) dst[ow] += src[ow];
            } else {
              for (int64_t ow = lo; ow < hi; ow++) dst[ow * stride] += src[ow];
            }
          }
        }
      }
    }
  }
}

/* y[nb,O,P] (=) from the chunk result yw[O, nb*P] plus bias b[O] (optional). */
static void scatter_rows(float *y, const float *yw, const float *b, int64_t nb, int64_t O,
                         int64_t P) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * O * P > 65536)
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t o = 0; o < O; o++) {
      const float *src = yw + o * nb * P + i * P;
      float *dst = y + (i * O + o) * P;
      float bias = b ? b[o] : 0.0f;
      for (int64_t p = 0; p < P; p++) dst[p] = src[p] + bias;
    }
  }
}

/* dyw[O, nb*P] from dy[nb,O,P]: the chunk's output gradients side by side, as col is laid out. */
static void gather_rows(float *dyw, const float *dy, int64_t nb, int64_t O, int64_t P) {
#pragma omp parallel for collapse(2) schedule(static) if (nb * O * P > 65536)
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t o = 0; o < O; o++) {
      memcpy(dyw + o * nb * P + i * P, dy + (i * O + o) * P, (size_t)P * sizeof(float));
    }
  }
}

/* y[B,O,Ho,Wo] (=), x[B,C,H,W], w[O,C,K,K], b[O] optional */
gc_status be_conv2d_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                            int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  (void)bc;
  const int64_t P = Ho * Wo, CKK = C * K * K;
  const int direct = K == 1 && stride == 1 && pad == 0; /* col of one image is the image */
  int64_t nb = chunk_images(B, P, (size_t)(CKK + O) * (size_t)P);
  if (direct && P >= CONV_TARGET_COLS / 4) nb = 1;
  float *scratch = NULL;
  if (!(direct && nb == 1)) {
    scratch = scratch_get((size_t)(CKK + (nb > 1 ? O : 0)) * (size_t)(nb * P));
    if (!scratch) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d scratch of %lld floats",
                                      (long long)((CKK + O) * nb * P));
  }
  for (int64_t b0 = 0; b0 < B; b0 += nb) {
    const int64_t n = B - b0 < nb ? B - b0 : nb;
    const float *xb = x + b0 * C * H * W;
    float *yb = y + b0 * O * P;
    const float *col = xb;
    if (!(direct && nb == 1)) {
      im2col(scratch, xb, n, C, H, W, K, stride, pad, Ho, Wo);
      col = scratch;
    }
    if (n == 1) {
      /* one image: GEMM straight into y, bias pre-filled so the GEMM adds onto it */
      if (b) {
        for (int64_t o = 0; o < O; o++)
          for (int64_t p = 0; p < P; p++) yb[o * P + p] = b[o];
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)P, (int)CKK, 1.0f, w,
                  (int)CKK, col, (int)P, b ? 1.0f : 0.0f, yb, (int)P);
    } else {
      float *yw = scratch + CKK * n * P; /* [O, n*P] */
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)(n * P), (int)CKK,
                  1.0f, w, (int)CKK, col, (int)(n * P), 0.0f, yw, (int)(n * P));
      scatter_rows(yb, yw, b, n, O, P);
    }
  }
  return GC_OK;
}

/* dx[B,C,H,W] (=), dw[O,C,K,K] (+=), db[O] (+=), each optional; dy[B,O,Ho,Wo], x, w as forward */
gc_status be_conv2d_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t B, int64_t C, int64_t H,
                             int64_t W, int64_t O, int64_t K, int64_t stride, int64_t pad,
                             int64_t Ho, int64_t Wo) {
  (void)bc;
  const int64_t P = Ho * Wo, CKK = C * K * K;
  if (db) {
    /* db[o] += sum over images and pixels of dy[b,o,:], accumulated in double */
#pragma omp parallel for schedule(static) if (B * O * P > 65536)
    for (int64_t o = 0; o < O; o++) {
      double s = 0.0;
      for (int64_t i = 0; i < B; i++) {
        const float *row = dy + (i * O + o) * P;
        for (int64_t p = 0; p < P; p++) s += row[p];
      }
      db[o] += (float)s;
    }
  }
  if (!dx && !dw) return GC_OK;

  const int direct = K == 1 && stride == 1 && pad == 0;
  int64_t nb = chunk_images(B, P, (size_t)(CKK + O) * (size_t)P);
  if (direct && P >= CONV_TARGET_COLS / 4) nb = 1;
  float *scratch = NULL;
  if (!(direct && nb == 1)) {
    /* col (also reused as dcol) [CKK, nb*P], then dyw [O, nb*P] when chunks hold several images */
    scratch = scratch_get((size_t)(CKK + (nb > 1 ? O : 0)) * (size_t)(nb * P));
    if (!scratch) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d scratch of %lld floats",
                                      (long long)((CKK + O) * nb * P));
  }
  for (int64_t b0 = 0; b0 < B; b0 += nb) {
    const int64_t n = B - b0 < nb ? B - b0 : nb, N = n * P;
    const float *xb = x + b0 * C * H * W;
    const float *dyb = dy + b0 * O * P;
    const float *dyw = dyb; /* [O, n*P] */
    if (n > 1) {
      float *t = scratch + CKK * N;
      gather_rows(t, dyb, n, O, P);
      dyw = t;
    }
    if (dw) {
      /* dw[O,CKK] += dyw[O,N] col[CKK,N]^T */
      const float *col = xb;
      if (!(direct && nb == 1)) {
        im2col(scratch, xb, n, C, H, W, K, stride, pad, Ho, Wo);
        col = scratch;
      }
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)CKK, (int)N, 1.0f, dyw,
                  (int)N, col, (int)N, 1.0f, dw, (int)CKK);
    }
    if (dx) {
      float *dxb = dx + b0 * C * H * W;
      if (direct && nb == 1) {
        /* dx[C,P] = w[O,C]^T dy[O,P], no fold needed */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)N, (int)O, 1.0f, w,
                    (int)CKK, dyw, (int)N, 0.0f, dxb, (int)N);
      } else {
        /* dcol[CKK,N] = w[O,CKK]^T dyw[O,N], then fold back onto the images */
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)N, (int)O, 1.0f, w,
                    (int)CKK, dyw, (int)N, 0.0f, scratch, (int)N);
        col2im(dxb, scratch, n, C, H, W, K, stride, pad, Ho, Wo);
      }
    }
  }
  return GC_OK;
}
