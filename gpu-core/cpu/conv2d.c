/*
 * 2-D convolution on the CPU.
 *
 * Channels-last (NHWC, what the models use): oneDNN for every shape, its nhwc kernels (brgconv
 * forward, jit backward) reading and writing our tensors in place; only the weights are reordered
 * per call. Measured 2026-12-01 on the 2-core AVX-512 machine, the shipped UNet's 49 convolutions
 * at batch 32 (DNNL_VERBOSE exec times): forward 44.6 ms per pass against 52 ms for the NCHW
 * paths below (oneDNN blocked 3x3 at 40.5 ms + ~12 ms of activation reorders, before the 1x1
 * convs), backward 104 vs ~135 ms per step; nhwc's own kernels are ~7-9% slower than the blocked
 * ones, the reorders they save cost more. Geometries oneDNN rejects (a negative right padding) and
 * DNNL=0 builds transpose to NCHW copies and back.
 *
 * Channels-first (NCHW): 3x3 convolutions with at least 16 input and 16 output channels
 * (all of the UNet's but conv_in, 3->32, and conv_out, 32->3) go to oneDNN (conv2d_dnnl.c), on
 * its channel-blocked layouts with a reorder of each operand per call. Measured 2026-12-01 on the
 * 2-core AVX-512 machine at the UNet's batch-32 shapes (prototype outside the repo, CPU time of
 * one thread, the convs of one UNet pass summed): forward 1.43x, dx 1.26x, dw + db 1.72x faster
 * than the code below, reorders included; oneDNN on our plain NCHW layout (its GEMM fallback) was
 * slower than ours (0.77x, 0.56x, 0.70x). In the engine on 2 threads, per-call CPU time: 64->64ch
 * 32x32 forward 1.42x, backward 1.30x; the UNet step 11-12% less CPU (bench/RESULTS.md).
 *
 * What stays here, because oneDNN did not beat it by 1.2x: 1x1 convs (plain-layout oneDNN: the UNet
 * forward 4-7% less CPU, training step no different; blocked, the reorders cost more), fewer
 * than 16 channels on either side (a 16-block pads 3 channels to 16: conv_out ran 2x slower), and
 * kernel sizes other than 3 (not measured). The rest of this comment describes those paths.
 *
 * im2col + OpenBLAS sgemm, one GEMM per image (or per small group of images when the images
 * are tiny). One image's unfolded matrix (2.4 MB at 64 channels,
 * 32x32, 3x3) stays in cache between im2col and the GEMM; unfolding many images into one wide
 * matrix was measured slower at the UNet's shapes (64x32768x576 ran at ~0.8 of 64x1024x576).
 *
 * Threading: when OpenBLAS runs single-threaded, the images are spread over the OpenMP threads
 * and each thread unfolds its image and calls sgemm itself, so one thread pool does all the work
 * and threads meet once per call. When OpenBLAS is threaded it parallelises each GEMM on its own
 * and the loop over images stays on the calling thread: BLAS is never called from a team of more
 * than one thread, so the two pools never oversubscribe the cores (see blas_team.h).
 *
 * 3x3, stride 1, pad 1 with at least SHIFTED_MIN_C input channels (of the UNet's, now only
 * conv_out, 32->3; the figures below were measured before oneDNN took the others) skip the
 * unfolding: the image is copied once into a zero-bordered plane per channel, [C, (H+2)(W+2)],
 * and tap (ky,kx) of the kernel is then the plain matrix [C, H(W+2)] starting ky(W+2)+kx floats
 * into it (row stride (H+2)(W+2)). The output is nine GEMMs of depth C accumulated into
 * [O, H(W+2)], whose last two columns of each row are junk and dropped. It moves ~9x less
 * memory than im2col + one GEMM of depth 9C: forward 64->64ch 32x32 batch 32 went from 0.55 to
 * 0.71 of sgemm (bench engine). The backward's dx runs the same taps into bordered planes
 * (1.03-1.4x less CPU than GEMM + col2im at the UNet's shapes, per-thread CPU time); its dw stays
 * on im2col + one GEMM, which per tap measured 3-10% slower.
 */
#include "../core/backend.h"
#include "blas_team.h"
#include "scratch.h"
#include "conv2d_dnnl.h"
#include "winograd.h"

#include <cblas.h>
#include <limits.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

/* Images narrower than this many output pixels are grouped side by side into one wide GEMM. */
enum { CONV_MIN_COLS = 256 };

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

/* col[C*K*K, nb*Ho*Wo] from x[nb,C,H,W]: row (c,kh,kw) holds the pixels kernel tap (kh,kw) of
 * channel c meets (zero outside the image); image i fills columns [i*Ho*Wo, (i+1)*Ho*Wo). */
static void im2col(float *col, const float *x, int64_t nb, int64_t C, int64_t H, int64_t W,
                   int64_t K, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  const int64_t P = Ho * Wo, ld = nb * P;
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t r = 0; r < C * K * K; r++) {
      const int64_t c = r / (K * K), kh = (r / K) % K, kw = r % K;
      const float *xc = x + (i * C + c) * H * W;
      float *row = col + r * ld + i * P;
      int64_t lo, hi;
      valid_range(W, Wo, kw, stride, pad, &lo, &hi);
      for (int64_t oh = 0; oh < Ho; oh++) {
        float *dst = row + oh * Wo;
        const int64_t ih = oh * stride - pad + kh;
        if (ih < 0 || ih >= H) {
          memset(dst, 0, (size_t)Wo * sizeof(float));
          continue;
        }
        const float *src = xc + ih * W - pad + kw; /* src[ow*stride] is pixel (ih, iw) */
        for (int64_t ow = 0; ow < lo; ow++) dst[ow] = 0.0f;
        if (stride == 1) {
          memcpy(dst + lo, src + lo, (size_t)(hi - lo) * sizeof(float));
        } else {
          for (int64_t ow = lo; ow < hi; ow++) dst[ow] = src[ow * stride];
        }
        for (int64_t ow = hi; ow < Wo; ow++) dst[ow] = 0.0f;
      }
    }
  }
}

/* dx[nb,C,H,W] (=) from dcol[C*K*K, nb*Ho*Wo]: the adjoint of im2col. */
static void col2im(float *dx, const float *dcol, int64_t nb, int64_t C, int64_t H, int64_t W,
                   int64_t K, int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  const int64_t P = Ho * Wo, ld = nb * P;
  memset(dx, 0, (size_t)(nb * C * H * W) * sizeof(float));
  for (int64_t i = 0; i < nb; i++) {
    for (int64_t r = 0; r < C * K * K; r++) {
      const int64_t c = r / (K * K), kh = (r / K) % K, kw = r % K;
      float *dxc = dx + (i * C + c) * H * W;
      const float *row = dcol + r * ld + i * P;
      int64_t lo, hi;
      valid_range(W, Wo, kw, stride, pad, &lo, &hi);
      for (int64_t oh = 0; oh < Ho; oh++) {
        const int64_t ih = oh * stride - pad + kh;
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

/* ---- 3x3 stride-1 pad-1 convolution by shifted GEMMs (see the top of the file) ---- */

enum { SHIFTED_MIN_C = 16 };

static int shifted_eligible(int64_t C, int64_t K, int64_t stride, int64_t pad, int64_t H,
                            int64_t W, int64_t O) {
  const int64_t PS = (H + 2) * (W + 2);
  return K == 3 && stride == 1 && pad == 1 && C >= SHIFTED_MIN_C && C * PS + 2 <= INT_MAX &&
         O * H * (W + 2) <= INT_MAX;
}

/* xp[C, PS] (+2 slack floats) = x[C,H,W] inside a one-pixel zero border */
static void border_copy(float *xp, const float *x, int64_t C, int64_t H, int64_t W) {
  const int64_t Wp = W + 2, PS = (H + 2) * Wp;
  memset(xp, 0, (size_t)(C * PS + 2) * sizeof(float));
  for (int64_t c = 0; c < C; c++)
    for (int64_t h = 0; h < H; h++)
      memcpy(xp + c * PS + (h + 1) * Wp + 1, x + (c * H + h) * W, (size_t)W * sizeof(float));
}

/* wt[9][O][C] from w[O][C][3][3]: each tap's weights as a plain [O, C] matrix */
static void taps_from_weights(float *wt, const float *w, int64_t O, int64_t C) {
  for (int64_t o = 0; o < O; o++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t k = 0; k < 9; k++) wt[(k * O + o) * C + c] = w[(o * C + c) * 9 + k];
}

/* The nine taps over a batch, one image per OpenMP task. Forward (backward == 0): out = y from
 * in = x, planes = x bordered, wide[O, H(W+2)] = sum_k w_k planes_k, cropped (+ b) into y.
 * Backward data (backward == 1): out = dx from in = dy, wide = dy widened with two zero columns
 * per row (so the junk columns add nothing), planes_k += w_k^T wide, the planes' interior is dx. */
static gc_status shifted_taps(int backward, float *out, const float *in, const float *w,
                              const float *b, int64_t B, int64_t C, int64_t H, int64_t W,
                              int64_t O) {
  const int64_t Wp = W + 2, PS = (H + 2) * Wp, N = H * Wp, P = H * W;
  float *wt = malloc((size_t)(9 * O * C) * sizeof(float));
  if (!wt) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d tap weights of %lld floats", (long long)(9 * O * C));
  taps_from_weights(wt, w, O, C);
  const size_t need = (size_t)(C * PS + 2 + O * N);
  int team = blas_team();
  if (team > B) team = (int)B;
  int oom = 0;
#pragma omp parallel num_threads(team)
  {
    float *scratch = cpu_scratch(need * sizeof(float));
    if (!scratch) {
#pragma omp atomic write
      oom = 1;
    }
#pragma omp for schedule(static)
    for (int64_t i = 0; i < B; i++) {
      if (!scratch) continue;
      float *planes = scratch, *wide = scratch + C * PS + 2;
      if (!backward) {
        border_copy(planes, in + i * C * P, C, H, W);
        for (int64_t k = 0; k < 9; k++)
          cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)N, (int)C, 1.0f,
                      wt + k * O * C, (int)C, planes + (k / 3) * Wp + k % 3, (int)PS,
                      k ? 1.0f : 0.0f, wide, (int)N);
        for (int64_t o = 0; o < O; o++) {
          const float bias = b ? b[o] : 0.0f;
          for (int64_t h = 0; h < H; h++) {
            const float *src = wide + o * N + h * Wp;
            float *dst = out + (i * O + o) * P + h * W;
            for (int64_t q = 0; q < W; q++) dst[q] = src[q] + bias;
          }
        }
      } else {
        for (int64_t o = 0; o < O; o++)
          for (int64_t h = 0; h < H; h++) {
            float *dst = wide + o * N + h * Wp;
            memcpy(dst, in + (i * O + o) * P + h * W, (size_t)W * sizeof(float));
            dst[W] = 0.0f;
            dst[W + 1] = 0.0f;
          }
        memset(planes, 0, (size_t)(C * PS + 2) * sizeof(float));
        for (int64_t k = 0; k < 9; k++)
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)C, (int)N, (int)O, 1.0f,
                      wt + k * O * C, (int)C, wide, (int)N, 1.0f, planes + (k / 3) * Wp + k % 3,
                      (int)PS);
        for (int64_t c = 0; c < C; c++)
          for (int64_t h = 0; h < H; h++)
            memcpy(out + (i * C + c) * P + h * W, planes + c * PS + (h + 1) * Wp + 1,
                   (size_t)W * sizeof(float));
      }
    }
  }
  free(wt);
  if (oom) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d scratch of %zu floats per thread", need);
  return GC_OK;
}

/* How a call is cut into chunks of images and what each chunk needs in scratch. */
typedef struct conv_plan {
  int64_t P, CKK;   /* output pixels per image, GEMM depth */
  int64_t nb;       /* images per chunk (> 1 only for tiny images) */
  int64_t nchunks;
  int direct;       /* 1x1, stride 1, no pad, one image per chunk: col is the image itself */
  size_t col_floats; /* col [CKK, nb*P]; 0 when direct */
  size_t wide_floats; /* chunk-wide y or dy [O, nb*P]; 0 when nb == 1 */
  int team;
} conv_plan;

static conv_plan plan_conv(int64_t B, int64_t C, int64_t O, int64_t K, int64_t stride,
                           int64_t pad, int64_t Ho, int64_t Wo) {
  conv_plan p;
  p.P = Ho * Wo;
  p.CKK = C * K * K;
  p.nb = p.P >= CONV_MIN_COLS || p.P < 1 ? 1 : (CONV_MIN_COLS + p.P - 1) / p.P;
  if (p.nb > B) p.nb = B;
  if (p.nb < 1) p.nb = 1;
  p.nchunks = (B + p.nb - 1) / p.nb;
  p.direct = K == 1 && stride == 1 && pad == 0 && p.nb == 1;
  p.col_floats = p.direct ? 0 : (size_t)(p.CKK * p.nb * p.P);
  p.wide_floats = p.nb > 1 ? (size_t)(O * p.nb * p.P) : 0;
  p.team = blas_team();
  if (p.team > p.nchunks) p.team = (int)p.nchunks;
  if (p.team < 1) p.team = 1;
  return p;
}

static gc_status check_blas_sizes(const conv_plan *p, int64_t O) {
  if (p->CKK > INT_MAX || p->nb * p->P > INT_MAX || O > INT_MAX)
    return gc_set_error(GC_ERR_UNSUPPORTED, "conv2d sizes exceed the BLAS int range");
  return GC_OK;
}

/* Channels-last without oneDNN (a DNNL=0 build, or a geometry oneDNN rejects): the operands
 * transposed to NCHW in a heap copy, the channels-first path, the result transposed back. */
static gc_status cl_forward_via_nchw(be_ctx *bc, float *y, const float *x, const float *w,
                                     const float *b, int64_t B, int64_t C, int64_t H, int64_t W,
                                     int64_t O, int64_t K, int64_t stride, int64_t pad, int64_t Ho,
                                     int64_t Wo) {
  const int64_t nx = B * C * H * W, ny = B * O * Ho * Wo;
  float *xt = malloc((size_t)(nx + ny) * sizeof(float)), *yt = xt + nx;
  if (!xt) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d: no memory for a channels-first copy");
  be_transpose(bc, xt, x, B, H * W, C);
  gc_status st = be_conv2d_forward(bc, yt, xt, w, b, B, C, H, W, O, K, stride, pad, Ho, Wo, 0);
  if (st == GC_OK) be_transpose(bc, y, yt, B, O, Ho * Wo);
  free(xt);
  return st;
}

static gc_status cl_backward_via_nchw(be_ctx *bc, float *dx, float *dw, float *db,
                                      const float *dy, const float *x, const float *w, int64_t B,
                                      int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                                      int64_t stride, int64_t pad, int64_t Ho, int64_t Wo) {
  const int64_t nx = B * C * H * W, ny = B * O * Ho * Wo;
  float *xt = malloc((size_t)(2 * nx + ny) * sizeof(float)), *dyt = xt + nx, *dxt = dyt + ny;
  if (!xt) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d: no memory for a channels-first copy");
  be_transpose(bc, xt, x, B, H * W, C);
  be_transpose(bc, dyt, dy, B, Ho * Wo, O);
  gc_status st = be_conv2d_backward(bc, dx ? dxt : NULL, dw, db, dyt, xt, w, B, C, H, W, O, K,
                                    stride, pad, Ho, Wo, 0);
  if (st == GC_OK && dx) be_transpose(bc, dx, dxt, B, C, H * W);
  free(xt);
  return st;
}

/* y[B,O,Ho,Wo] (=), x[B,C,H,W], w[O,C,K,K], b[O] optional; cl: y[B,Ho,Wo,O], x[B,H,W,C] */
gc_status be_conv2d_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t B, int64_t C, int64_t H, int64_t W, int64_t O, int64_t K,
                            int64_t stride, int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  if (wino_eligible(C, H, W, O, K, stride, pad, Ho, Wo, cl))
    return wino_conv3x3(y, x, w, b, B, C, O, H, W, 0);
  if (dnnl_conv_eligible(C, H, W, O, K, stride, pad, Ho, Wo, cl))
    return dnnl_conv2d_forward(y, x, w, b, B, C, H, W, O, K, stride, pad, Ho, Wo, cl);
  if (cl) return cl_forward_via_nchw(bc, y, x, w, b, B, C, H, W, O, K, stride, pad, Ho, Wo);
  if (shifted_eligible(C, K, stride, pad, H, W, O)) return shifted_taps(0, y, x, w, b, B, C, H, W, O);
  const conv_plan p = plan_conv(B, C, O, K, stride, pad, Ho, Wo);
  gc_status st = check_blas_sizes(&p, O);
  if (st != GC_OK) return st;
  const int64_t P = p.P, CKK = p.CKK;
  const size_t need = p.col_floats + p.wide_floats;
  int oom = 0;

#pragma omp parallel num_threads(p.team)
  {
    float *scratch = need ? cpu_scratch(need * sizeof(float)) : NULL;
    if (need && !scratch) {
#pragma omp atomic write
      oom = 1;
    }
#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < p.nchunks; ch++) {
      if (need && !scratch) continue;
      const int64_t b0 = ch * p.nb, n = B - b0 < p.nb ? B - b0 : p.nb, N = n * P;
      const float *xb = x + b0 * C * H * W;
      float *yb = y + b0 * O * P;
      const float *col = xb;
      if (!p.direct) {
        im2col(scratch, xb, n, C, H, W, K, stride, pad, Ho, Wo);
        col = scratch;
      }
      if (n == 1) {
        /* y[O,P] = w[O,CKK] col[CKK,P] (+ b, pre-filled so the GEMM adds onto it) */
        if (b) {
          for (int64_t o = 0; o < O; o++)
            for (int64_t q = 0; q < P; q++) yb[o * P + q] = b[o];
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)P, (int)CKK, 1.0f, w,
                    (int)CKK, col, (int)P, b ? 1.0f : 0.0f, yb, (int)P);
      } else {
        /* yw[O,N] = w col, then each image's columns (+ b) into y[n,O,P] */
        float *yw = scratch + p.col_floats;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)O, (int)N, (int)CKK, 1.0f, w,
                    (int)CKK, col, (int)N, 0.0f, yw, (int)N);
        for (int64_t i = 0; i < n; i++) {
          for (int64_t o = 0; o < O; o++) {
            const float *src = yw + o * N + i * P;
            float *dst = yb + (i * O + o) * P;
            const float bias = b ? b[o] : 0.0f;
            for (int64_t q = 0; q < P; q++) dst[q] = src[q] + bias;
          }
        }
      }
    }
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d scratch of %zu floats per thread", need);
  return GC_OK;
}

/* dx[B,C,H,W] (=), dw[O,C,K,K] (+=), db[O] (+=), each optional; dy[B,O,Ho,Wo], x, w as forward
 * (cl: dx, x [B,H,W,C], dy [B,Ho,Wo,O]) */
gc_status be_conv2d_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t B, int64_t C, int64_t H,
                             int64_t W, int64_t O, int64_t K, int64_t stride, int64_t pad,
                             int64_t Ho, int64_t Wo, int cl) {
  if (!dx && !dw && !db) return GC_OK;
  if (wino_eligible(C, H, W, O, K, stride, pad, Ho, Wo, cl)) {
    gc_status st = dx ? wino_conv3x3(dx, dy, w, NULL, B, O, C, H, W, 1) : GC_OK;
    if (st != GC_OK || (!dw && !db)) return st;
    return wino_conv3x3_dw(dw, db, dy, x, B, C, O, H, W);
  }
  if (dnnl_conv_eligible(C, H, W, O, K, stride, pad, Ho, Wo, cl))
    return dnnl_conv2d_backward(dx, dw, db, dy, x, w, B, C, H, W, O, K, stride, pad, Ho, Wo, cl);
  if (cl)
    return cl_backward_via_nchw(bc, dx, dw, db, dy, x, w, B, C, H, W, O, K, stride, pad, Ho, Wo);
  if (dx && shifted_eligible(C, K, stride, pad, H, W, O)) {
    /* dw and db through im2col (faster for dw), dx through the shifted taps */
    if (dw || db) {
      gc_status st = be_conv2d_backward(bc, NULL, dw, db, dy, x, w, B, C, H, W, O, K, stride, pad,
                                        Ho, Wo, 0);
      if (st != GC_OK) return st;
    }
    return shifted_taps(1, dx, dy, w, NULL, B, C, H, W, O);
  }
  const conv_plan p = plan_conv(B, C, O, K, stride, pad, Ho, Wo);
  gc_status st = check_blas_sizes(&p, O);
  if (st != GC_OK) return st;
  const int64_t P = p.P, CKK = p.CKK;
  const int gemms = dx || dw;
  /* per thread: col (reused as dcol) [CKK,N], gathered dy [O,N], and for threads other than
   * the first a private dw [O,CKK], summed into dw at the end */
  const size_t dwp_floats = dw && p.team > 1 ? (size_t)(O * CKK) : 0;
  const size_t need = gemms ? p.col_floats + p.wide_floats + dwp_floats : 0;
  float *partial[256] = {0};
  const int team = p.team < 256 ? p.team : 256;
  int oom = 0;

#pragma omp parallel num_threads(team)
  {
    const int t = omp_get_thread_num();
    float *scratch = need ? cpu_scratch(need * sizeof(float)) : NULL;
    if (need && !scratch) {
#pragma omp atomic write
      oom = 1;
    }
    float *dwt = dw; /* thread 0 accumulates straight into dw */
    if (scratch && t > 0 && dwp_floats) {
      dwt = scratch + p.col_floats + p.wide_floats;
      memset(dwt, 0, dwp_floats * sizeof(float));
      partial[t] = dwt;
    }

    if (db) {
      /* db[o] += sum over images and pixels of dy[b,o,:], accumulated in double */
#pragma omp for schedule(static)
      for (int64_t o = 0; o < O; o++) {
        double s = 0.0;
        for (int64_t i = 0; i < B; i++) {
          const float *row = dy + (i * O + o) * P;
#pragma omp simd reduction(+ : s)
          for (int64_t q = 0; q < P; q++) s += row[q];
        }
        db[o] += (float)s;
      }
    }

#pragma omp for schedule(static)
    for (int64_t ch = 0; ch < (gemms ? p.nchunks : 0); ch++) {
      if (need && !scratch) continue;
      const int64_t b0 = ch * p.nb, n = B - b0 < p.nb ? B - b0 : p.nb, N = n * P;
      const float *xb = x + b0 * C * H * W;
      const float *dyw = dy + b0 * O * P; /* [O,N]: the image itself when n == 1 */
      if (n > 1) {
        float *t2 = scratch + p.col_floats;
        for (int64_t i = 0; i < n; i++)
          for (int64_t o = 0; o < O; o++)
            memcpy(t2 + o * N + i * P, dyw + (i * O + o) * P, (size_t)P * sizeof(float));
        dyw = t2;
      }
      if (dw) {
        /* dw[O,CKK] += dyw[O,N] col[CKK,N]^T */
        const float *col = xb;
        if (!p.direct) {
          im2col(scratch, xb, n, C, H, W, K, stride, pad, Ho, Wo);
          col = scratch;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)O, (int)CKK, (int)N, 1.0f, dyw,
                    (int)N, col, (int)N, 1.0f, dwt, (int)CKK);
      }
      if (dx) {
        float *dxb = dx + b0 * C * H * W;
        if (p.direct) {
          /* dx[C,P] = w[O,C]^T dy[O,P]: a 1x1 conv needs no fold */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)N, (int)O, 1.0f, w,
                      (int)CKK, dyw, (int)N, 0.0f, dxb, (int)N);
        } else {
          /* dcol[CKK,N] = w[O,CKK]^T dyw[O,N] (into col, done with), folded back onto dx */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)CKK, (int)N, (int)O, 1.0f, w,
                      (int)CKK, dyw, (int)N, 0.0f, scratch, (int)N);
          col2im(dxb, scratch, n, C, H, W, K, stride, pad, Ho, Wo);
        }
      }
    }

    if (dwp_floats) {
      /* the loop above ends in a barrier, so every private dw is complete */
#pragma omp for schedule(static)
      for (int64_t i = 0; i < O * CKK; i++) {
        float s = 0.0f;
        for (int u = 1; u < team; u++)
          if (partial[u]) s += partial[u][i];
        dw[i] += s;
      }
    }
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d scratch of %zu floats per thread", need);
  return GC_OK;
}
