/*
 * 3x3 convolutions with stride 1 and padding 1 on channels-last images, by Winograd's minimal
 * filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016),
 * with the interpolation points 0, 1, -1, 1/2, -2 and infinity (Barabasz et al., "Error analysis
 * and improving the accuracy of Winograd convolution for deep neural networks", 2020).
 *
 * Every 4x4 block of output pixels (a tile) comes from the 6x6 input patch around it. With
 *   B^T = [2 -3 -4 3 2 0; 0 -2 1 5 2 0; 0 2 -5 1 2 0; 0 -2 -1 2 1 0; 0 1 -2 -1 2 0; 0 2 -3 -4 3 2],
 *   G = [1/2 0 0; 1/6 1/6 1/6; -1/6 1/6 -1/6; -16/15 -8/15 -4/15; 1/30 -1/15 2/15; 0 0 1/2],
 *   A^T = [1 1 1 1 1 0; 0 1 -1 1/2 -2 0; 0 1 1 1/4 4 0; 0 1 -1 1/8 -8 1]
 * (the Toom-Cook construction for those points, rows of B^T doubled and of G halved where that
 * makes B^T whole), a tile's output for output channel o is  A^T [ sum_c (G g_oc G^T) .*
 * (B^T d_c B) ] A,  so the convolution becomes 36 independent products, one per position xi of
 * the 6x6 transformed tile:
 *   M_xi[tiles, O] = V_xi[tiles, C] U_xi[C, O],   V = B^T d B (input), U = G g G^T (weights),
 * 36 C O multiply-adds per tile of 16 outputs against direct's 144 C O (4x fewer).
 * Accuracy: the products' float sums over the channels carry most of the rounding (their terms
 * are larger than the outputs they cancel down to). Against the float64 reference the op table
 * sees normalised errors of 4e-7 to 8e-7 (direct sums and F(2x2, 3x3), whose transforms only add
 * and halve: 1e-7; the op table allows 1e-5); the points 0, +-1, +-2 gave 5e-7 to 1.2e-6 (an fp32
 * simulation of one 64-channel tile: 1.7e-6 RMS against 1.1e-6 for these points). unet_tiny
 * against diffusers: output 1.6e-6, worst gradient 9e-6 (direct: 7.5e-7 / 2.9e-6; allowed 1e-4
 * and 1e-3). Measured at batch 32, min of 40 calls, F(2x2) -> F(4x4): 32->32ch 32x32 1.54 ->
 * 1.04-1.13 ms, 64->64ch 16x16 1.30 -> 0.97-1.01, 64->64ch 32x32 5.1 -> 3.5-3.7, 96->32ch 32x32
 * 3.9 -> 2.6-3.0; the 8x8 images even (every tile touches the padding).
 *
 * Why here and not oneDNN: oneDNN 2.6 has a Winograd kernel only for its channel-blocked layout
 * (nhwc: unimplemented), so from the models' channels-last images it costs two reorders per call.
 * Channels-last suits the transforms: each one is the same arithmetic over a contiguous run of
 * channels, vectorised across channels.
 *
 * Blocking: tiles go in blocks of TB (a multiple of the GEMM kernel's MR rows) sized so that the
 * block's V [36,TB,C] and M [36,TB,Op] (Op = O rounded up to 16) stay in this core's L2 from the
 * input transform through the 36 products to the output transform; OpenMP threads take whole
 * blocks. U [36,C,Op] is built once per call by the team.
 *
 * The backward pass's dx is the same convolution of dy with the kernel flipped and its channel
 * roles swapped (stride 1, pad 1: w'[c][o][ky][kx] = w[o][c][2-ky][2-kx]), so it runs here too.
 * Its dw follows from the transpose of the same identity: dL/dU = sum over tiles of
 * (A dy_t A^T) .* (B^T d_t B), so per position xi  Z_xi[C,O] = sum_t V_xi[t,C]^T D_xi[t,O]
 * (depth = tiles, each thread summing its blocks into its own Z), then dw_oc = G^T Z_oc G. db
 * comes free: position (1,1) of A dy A^T is the sum of the tile's 16 dy pixels. Measured against
 * oneDNN's nhwc backward-weights kernel at batch 32 (min of 40 calls, dw + db): 32->32ch 32x32
 * 2.13 -> 1.29 ms, 64->64ch 16x16 1.97 -> 1.14, 64->64ch 32x32 8.2 -> 3.9, 96->32ch 32x32 6.0 ->
 * 3.1, 128->64ch 16x16 3.4 -> 2.0, 64->64ch 8x8 0.46-0.51 -> 0.41-0.43. (With F(2x2, 3x3) the
 * same dw was 1.2-1.3x oneDNN at three shapes and slower at the rest: four transformed values per
 * input pixel for x and again for dy against 2.25 here, and 16/36 of the direct products against
 * 1/4.) Blocks go to threads statically, so a call sums the same tiles in the same order every
 * time.
 *
 * The transform loops run across channels under `GCC ivdep`, not `omp simd`: GCC turns arrays
 * declared inside an `omp simd` body into per-lane arrays and then gives up on the 6x6 ones
 * (scatter stores), where a plain loop's arrays become registers, once the loops over the six
 * rows and columns inside are unrolled (`GCC unroll`: GCC's own limits left them rolled, and the
 * channel loop scalar, 3x slower).
 */
#include "winograd.h"

#include "scratch.h"
#include "small_gemm.h"

#include <omp.h>
#include <string.h>

/* A tile: 4x4 output pixels from a 6x6 input patch; 36 positions xi = 6i + j per tile. */
enum { TO = 4, TI = 6, NPOS = TI * TI };

/* Floats of V and M per block that should stay in L2 (1 MB of this machine's 2 MB). */
enum { WINO_BLOCK_FLOATS = 1 << 18 };

int wino_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                  int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  return cl && K == 3 && stride == 1 && pad == 1 && Ho == H && Wo == W && C >= WINO_MIN_CHANNELS &&
         O >= WINO_MIN_CHANNELS;
}

/* The 1-D transforms (one row or column of six, four or three values), written with a stride:
 * G g */
static inline void g_1d(float *u, int64_t ld, float g0, float g1, float g2) {
  const float e = g0 + g2, s = (1.0f / 6.0f) * g1;
  u[0 * ld] = 0.5f * g0;
  u[1 * ld] = (1.0f / 6.0f) * e + s;
  u[2 * ld] = s - (1.0f / 6.0f) * e;
  u[3 * ld] = (-16.0f / 15.0f) * g0 - (8.0f / 15.0f) * g1 - (4.0f / 15.0f) * g2;
  u[4 * ld] = (1.0f / 30.0f) * g0 - (1.0f / 15.0f) * g1 + (2.0f / 15.0f) * g2;
  u[5 * ld] = 0.5f * g2;
}

/* B^T d */
static inline void bt_1d(float *v, int64_t ld, float d0, float d1, float d2, float d3, float d4,
                         float d5) {
  const float e = 2.0f * d4 + d2;
  v[0 * ld] = 2.0f * d0 - 3.0f * d1 - 4.0f * d2 + 3.0f * d3 + 2.0f * d4;
  v[1 * ld] = 5.0f * d3 - 2.0f * d1 + e;
  v[2 * ld] = 2.0f * d1 + d3 + 2.0f * d4 - 5.0f * d2;
  v[3 * ld] = 2.0f * (d3 - d1) + d4 - d2;
  v[4 * ld] = d1 - d3 + 2.0f * (d4 - d2);
  v[5 * ld] = 2.0f * (d1 + d5) - 3.0f * d2 - 4.0f * d3 + 3.0f * d4;
}

/* A^T m */
static inline void at_1d(float *s, int64_t ld, float m0, float m1, float m2, float m3, float m4,
                         float m5) {
  const float a = m1 + m2, b = m1 - m2;
  s[0 * ld] = m0 + a + m3 + m4;
  s[1 * ld] = b + 0.5f * m3 - 2.0f * m4;
  s[2 * ld] = a + 0.25f * m3 + 4.0f * m4;
  s[3 * ld] = b + 0.125f * m3 - 8.0f * m4 + m5;
}

/* Row c of U[xi][c][o] for the convolution from Ci to Co channels, o < Op (o >= Co: 0): the kernel
 * of output o and input c is w[o][c] (dgrad = 0, w [Co,Ci,3,3]), or w[c][o] flipped (dgrad = 1,
 * w [Ci,Co,3,3]). g [9,Op] is scratch. */
static void transform_weights(float *U, const float *w, float *g, int64_t Ci, int64_t Co,
                              int64_t Op, int dgrad, int64_t c) {
  for (int64_t o = 0; o < Op; o++)
    for (int k = 0; k < 9; k++)
      g[k * Op + o] = o >= Co ? 0.0f : dgrad ? w[(c * Co + o) * 9 + 8 - k] : w[(o * Ci + c) * 9 + k];
#pragma GCC ivdep
  for (int64_t o = 0; o < Op; o++) {
    /* t[kx] = G g[:, kx] (down the kernel's rows), then row i of (G g) G^T from t[.][i] */
    float t[3][TI];
#pragma GCC unroll 6
    for (int kx = 0; kx < 3; kx++) g_1d(t[kx], 1, g[kx * Op + o], g[(3 + kx) * Op + o], g[(6 + kx) * Op + o]);
    const int64_t ld = Ci * Op; /* from one position xi to the next */
#pragma GCC unroll 6
    for (int i = 0; i < TI; i++) g_1d(U + (TI * i * Ci + c) * Op + o, ld, t[0][i], t[1][i], t[2][i]);
  }
}

/* The n x n pixels of image b's [H,W,C] from (y0, x0) on, for the transforms to read from one
 * base pointer at constant strides (an array of 36 pointers kept GCC from vectorising them):
 * returns the top-left pixel's address in the image and *rs its row stride, or, for a window
 * that reaches past the image (the padding, or a ragged last tile), `patch` [n*n,C] holding a
 * copy with zeros outside, and rs = n C. */
static const float *window(const float *img, float *patch, int64_t b, int64_t y0, int64_t x0, int n,
                           int64_t H, int64_t W, int64_t C, int64_t *rs) {
  const float *p = img + ((b * H + y0) * W + x0) * C; /* pixel (y0, x0), maybe outside */
  if (y0 >= 0 && y0 + n <= H && x0 >= 0 && x0 + n <= W) {
    *rs = W * C;
    return p;
  }
  for (int i = 0; i < n; i++)
    for (int j = 0; j < n; j++) {
      const int inside = y0 + i >= 0 && y0 + i < H && x0 + j >= 0 && x0 + j < W;
      float *dst = patch + (i * n + j) * C;
      const float *src = p + (i * W + j) * C;
      for (int64_t c = 0; c < C; c++) dst[c] = inside ? src[c] : 0.0f;
    }
  *rs = n * C;
  return patch;
}

/* V rows of a block: the transformed 6x6 patch of tile (image b, tile row ty, column tx) for
 * every input channel (padding through `patch` [36,Ci], see window). v + xi * ldv is position
 * xi's row. */
static void transform_input(float *v, int64_t ldv, const float *x, float *patch, int64_t b,
                            int64_t ty, int64_t tx, int64_t H, int64_t W, int64_t Ci) {
  int64_t rs; /* from one patch row to the next */
  const float *d = window(x, patch, b, TO * ty - 1, TO * tx - 1, TI, H, W, Ci, &rs);
#pragma GCC ivdep
  for (int64_t c = 0; c < Ci; c++) {
    /* t[j] = B^T d[:, j] (down patch column j), then row i of (B^T d) B from t[.][i] */
    float t[TI][TI];
#pragma GCC unroll 6
    for (int j = 0; j < TI; j++) {
      const float *dj = d + j * Ci + c;
      bt_1d(t[j], 1, dj[0], dj[rs], dj[2 * rs], dj[3 * rs], dj[4 * rs], dj[5 * rs]);
    }
#pragma GCC unroll 6
    for (int i = 0; i < TI; i++)
      bt_1d(v + TI * i * ldv + c, ldv, t[0][i], t[1][i], t[2][i], t[3][i], t[4][i], t[5][i]);
  }
}

/* The 4x4 output pixels of tile (b, ty, tx) from its M row (m + xi * ldm), plus the bias. Tiles
 * that reach past the image's edge (H or W not a multiple of 4) are written to `patch` [16,Co]
 * first and their pixels inside copied out. */
static void transform_output(float *y, const float *m, int64_t ldm, const float *bias, float *patch,
                             int64_t b, int64_t ty, int64_t tx, int64_t H, int64_t W, int64_t Co) {
  const int64_t oy = TO * ty, ox = TO * tx;
  const int whole = oy + TO <= H && ox + TO <= W;
  float *q = whole ? y + ((b * H + oy) * W + ox) * Co : patch;
  const int64_t rs = whole ? W * Co : TO * Co;
#pragma GCC ivdep
  for (int64_t o = 0; o < Co; o++) {
    /* s[j] = A^T M[:, j] (down column j), then output row i from s[.][i] */
    float s[TI][TO];
#pragma GCC unroll 6
    for (int j = 0; j < TI; j++) {
      const float *mj = m + j * ldm + o;
      at_1d(s[j], 1, mj[0], mj[TI * ldm], mj[2 * TI * ldm], mj[3 * TI * ldm], mj[4 * TI * ldm], mj[5 * TI * ldm]);
    }
    const float bo = bias ? bias[o] : 0.0f;
#pragma GCC unroll 6
    for (int i = 0; i < TO; i++) {
      float r[TO];
      at_1d(r, 1, s[0][i], s[1][i], s[2][i], s[3][i], s[4][i], s[5][i]);
#pragma GCC unroll 6
      for (int j = 0; j < TO; j++) q[i * rs + j * Co + o] = r[j] + bo;
    }
  }
  if (!whole)
    for (int i = 0; i < TO && oy + i < H; i++)
      for (int j = 0; j < TO && ox + j < W; j++)
        for (int64_t o = 0; o < Co; o++) y[((b * H + oy + i) * W + ox + j) * Co + o] = patch[(i * TO + j) * Co + o];
}

/* M_xi[rows,Op] = V_xi[rows,Ci] U_xi[Ci,Op] for the 36 positions (V_xi = V + xi * ldv, rows at
 * stride Ci; M_xi = M + xi * ldm). */
static void products(int64_t rows, int64_t Ci, int64_t Op, const float *V, int64_t ldv,
                     const float *U, float *M, int64_t ldm) {
  for (int xi = 0; xi < NPOS; xi++)
    gemm_panels(rows, Op, Ci, 1.0f, V + xi * ldv, Ci, 1, U + xi * Ci * Op, M + xi * ldm, 0);
}

gc_status wino_conv3x3(float *y, const float *x, const float *w, const float *bias, int64_t B,
                       int64_t Ci, int64_t Co, int64_t H, int64_t W, int dgrad) {
  const int64_t Op = (Co + NR - 1) / NR * NR;
  const int64_t th = (H + TO - 1) / TO, tw = (W + TO - 1) / TO, T = B * th * tw;
  if (T == 0) return GC_OK;
  /* TB: V and M of a block within WINO_BLOCK_FLOATS, at least one kernel block of MR rows, and
   * small enough that every thread gets a few blocks */
  const int nt = omp_get_max_threads();
  int64_t TB = WINO_BLOCK_FLOATS / (NPOS * (Ci + Op)) / MR * MR;
  const int64_t fair = (T + 4 * nt - 1) / (4 * nt);
  if (TB > (fair + MR - 1) / MR * MR) TB = (fair + MR - 1) / MR * MR;
  if (TB < MR) TB = MR;
  const int64_t nblocks = (T + TB - 1) / TB;

  float *U = cpu_scratch_team((size_t)(NPOS * Ci * Op) * sizeof(float));
  if (!U) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d (Winograd): no memory for the weights");
  /* per thread: V [36,TB,Ci], M [36,TB,Op], an input patch [36,Ci] and an output one [16,Co] */
  const size_t need = (size_t)(NPOS * TB * (Ci + Op) + NPOS * Ci + TO * TO * Co);
  int oom = 0;

#pragma omp parallel
  {
    float *V = cpu_scratch(need * sizeof(float));
    if (!V) {
#pragma omp atomic write
      oom = 1;
    }
    float *M = V ? V + NPOS * TB * Ci : NULL, *in = M ? M + NPOS * TB * Op : NULL;
    float *out = in ? in + NPOS * Ci : NULL;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < Ci; c++)
      if (V) transform_weights(U, w, M, Ci, Co, Op, dgrad, c); /* M as scratch until the barrier */

#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < nblocks; blk++) {
      if (!V) continue;
      const int64_t t0 = blk * TB, n = T - t0 < TB ? T - t0 : TB, rows = (n + MR - 1) / MR * MR;
      for (int64_t tl = 0; tl < rows; tl++) {
        if (tl < n) {
          const int64_t t = t0 + tl, img = t / (th * tw), r = t % (th * tw);
          transform_input(V + tl * Ci, TB * Ci, x, in, img, r / tw, r % tw, H, W, Ci);
        } else { /* rows past the last tile: zeros, so the kernel runs on whole blocks */
          for (int xi = 0; xi < NPOS; xi++)
            for (int64_t c = 0; c < Ci; c++) V[(xi * TB + tl) * Ci + c] = 0.0f;
        }
      }
      products(rows, Ci, Op, V, TB * Ci, U, M, TB * Op);
      for (int64_t tl = 0; tl < n; tl++) {
        const int64_t t = t0 + tl, img = t / (th * tw), r = t % (th * tw);
        transform_output(y, M + tl * Op, TB * Op, bias, out, img, r / tw, r % tw, H, W, Co);
      }
    }
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d (Winograd) scratch of %zu floats per thread", need);
  return GC_OK;
}

/* ---- dw and db ------------------------------------------------------------------------------ */

/* A (6x4) on four values: dy's 1-D transform for the weight gradient. */
static inline void a_1d(float *r, int64_t ld, float e0, float e1, float e2, float e3) {
  const float p = e0 + e2, q = e1 + e3;
  r[0 * ld] = e0;
  r[1 * ld] = p + q;
  r[2 * ld] = p - q;
  r[3 * ld] = e0 + 0.5f * e1 + 0.25f * e2 + 0.125f * e3;
  r[4 * ld] = e0 - 2.0f * e1 + 4.0f * e2 - 8.0f * e3;
  r[5 * ld] = e3;
}

/* G^T (3x6) on six values: back from a transformed position to the 3 kernel taps. */
static inline void gt_1d(float *k, int64_t ld, float z0, float z1, float z2, float z3, float z4, float z5) {
  const float s12 = (1.0f / 6.0f) * (z1 + z2), d12 = (1.0f / 6.0f) * (z1 - z2);
  k[0 * ld] = 0.5f * z0 + d12 - (16.0f / 15.0f) * z3 + (1.0f / 30.0f) * z4;
  k[1 * ld] = s12 - (8.0f / 15.0f) * z3 - (1.0f / 15.0f) * z4;
  k[2 * ld] = d12 - (4.0f / 15.0f) * z3 + (2.0f / 15.0f) * z4 + 0.5f * z5;
}

/* D rows of a block: A dy A^T of tile (b, ty, tx)'s 4x4 dy pixels for every output channel
 * (d + xi * ldd is position xi's row). Pixels past the image's edge are zeros, through `patch`
 * [16,O] (window). */
static void transform_dy(float *d, int64_t ldd, const float *dy, float *patch, int64_t b,
                         int64_t ty, int64_t tx, int64_t H, int64_t W, int64_t O) {
  int64_t rs;
  const float *e = window(dy, patch, b, TO * ty, TO * tx, TO, H, W, O, &rs);
#pragma GCC ivdep
  for (int64_t o = 0; o < O; o++) {
    float t[TO][TI]; /* t[j] = A dy[:, j] (down tile column j), then row i of A dy A^T from t[.][i] */
#pragma GCC unroll 6
    for (int j = 0; j < TO; j++) {
      const float *ej = e + j * O + o;
      a_1d(t[j], 1, ej[0], ej[rs], ej[2 * rs], ej[3 * rs]);
    }
#pragma GCC unroll 6
    for (int i = 0; i < TI; i++) a_1d(d + TI * i * ldd + o, ldd, t[0][i], t[1][i], t[2][i], t[3][i]);
  }
}

/* dw[o][c] (+=) = G^T Z[.][c][o] G for input channel c: Z [36,Cp,Op] summed over the team's
 * partial sums zs[0..nz). k [9,O] is scratch. */
static void transform_dw(float *dw, float *const *zs, int nz, float *k, int64_t C, int64_t O,
                         int64_t Cp, int64_t Op, int64_t c) {
  const int64_t ld = Cp * Op; /* from one position to the next */
#pragma GCC ivdep
  for (int64_t o = 0; o < O; o++) {
    float z[NPOS], s[3][TI];
    for (int xi = 0; xi < NPOS; xi++) {
      float v = zs[0][xi * ld + c * Op + o];
      for (int p = 1; p < nz; p++) v += zs[p][xi * ld + c * Op + o];
      z[xi] = v;
    }
    /* s[.][j] = G^T Z[:, j] (down column j), then kernel row ky from s[ky][.] */
    for (int j = 0; j < TI; j++)
      gt_1d(&s[0][j], TI, z[j], z[TI + j], z[2 * TI + j], z[3 * TI + j], z[4 * TI + j], z[5 * TI + j]);
    for (int ky = 0; ky < 3; ky++)
      gt_1d(k + 3 * ky * O + o, O, s[ky][0], s[ky][1], s[ky][2], s[ky][3], s[ky][4], s[ky][5]);
  }
  for (int64_t o = 0; o < O; o++)
    for (int q = 0; q < 9; q++) dw[(o * C + c) * 9 + q] += k[q * O + o];
}

gc_status wino_conv3x3_dw(float *dw, float *db, const float *dy, const float *x, int64_t B,
                          int64_t C, int64_t O, int64_t H, int64_t W) {
  const int64_t Cp = (C + MR - 1) / MR * MR, Op = (O + NR - 1) / NR * NR;
  const int64_t th = (H + TO - 1) / TO, tw = (W + TO - 1) / TO, T = B * th * tw;
  if (T == 0) return GC_OK;
  const int nt = omp_get_max_threads() < 64 ? omp_get_max_threads() : 64;
  int team = 1;
  /* TB: V [36,TB,Cp] and D [36,TB,Op] of a block within WINO_BLOCK_FLOATS (the products' depth:
   * the deeper the fewer passes over each thread's Z), a few blocks per thread */
  int64_t TB = WINO_BLOCK_FLOATS / (NPOS * (Cp + Op));
  const int64_t fair = (T + 4 * nt - 1) / (4 * nt);
  if (TB > fair) TB = fair;
  if (TB < 1) TB = 1;
  const int64_t nblocks = (T + TB - 1) / TB;
  /* per thread: Z [36,Cp,Op], V, D, an input patch [36,C], a dy patch [16,O], db in double [O],
   * then (kernel-tap scratch [9,O]) */
  const size_t zf = (size_t)(NPOS * Cp * Op);
  const size_t need = zf + (size_t)(NPOS * TB * (Cp + Op) + NPOS * C + TO * TO * O + 2 * O + 9 * O);
  float *zs[64];
  double *dbs[64];
  int oom = 0;

#pragma omp parallel num_threads(nt)
  {
    const int me = omp_get_thread_num();
#pragma omp single
    team = omp_get_num_threads(); /* 1 when called inside another parallel region */
    float *Z = cpu_scratch(need * sizeof(float));
    if (!Z) {
#pragma omp atomic write
      oom = 1;
    }
    float *V = Z ? Z + zf : NULL, *D = V ? V + NPOS * TB * Cp : NULL;
    float *in = D ? D + NPOS * TB * Op : NULL, *out = in ? in + NPOS * C : NULL;
    double *dbt = out ? (double *)(out + TO * TO * O) : NULL; /* 8-byte aligned: every size above is even */
    float *kt = dbt ? (float *)(dbt + O) : NULL;
    zs[me] = Z;
    dbs[me] = dbt;
    if (Z) {
      memset(Z, 0, zf * sizeof(float));
      memset(V, 0, (size_t)(NPOS * TB * Cp) * sizeof(float)); /* channels C..Cp stay 0 */
      memset(D, 0, (size_t)(NPOS * TB * Op) * sizeof(float)); /* and outputs O..Op */
      for (int64_t o = 0; o < O; o++) dbt[o] = 0.0;
    }

    /* static: the same blocks go into the same partial sums on every call (reproducible dw) */
#pragma omp for schedule(static)
    for (int64_t blk = 0; blk < nblocks; blk++) {
      if (!Z) continue;
      const int64_t t0 = blk * TB, n = T - t0 < TB ? T - t0 : TB;
      for (int64_t tl = 0; tl < n; tl++) {
        const int64_t t = t0 + tl, img = t / (th * tw), r = t % (th * tw);
        if (dw) transform_input(V + tl * Cp, TB * Cp, x, in, img, r / tw, r % tw, H, W, C);
        transform_dy(D + tl * Op, TB * Op, dy, out, img, r / tw, r % tw, H, W, O);
        /* position (1,1) of A dy A^T is the sum of the tile's 16 dy pixels: db's share */
        if (db)
          for (int64_t o = 0; o < O; o++) dbt[o] += D[(TI + 1) * TB * Op + tl * Op + o];
      }
      /* Z_xi[Cp,Op] += V_xi^T D_xi: depth n (this block's tiles) */
      for (int xi = 0; dw && xi < NPOS; xi++)
        gemm_panels(Cp, Op, n, 1.0f, V + xi * TB * Cp, 1, Cp, D + xi * TB * Op, Z + xi * Cp * Op, 1);
    }
    /* the implicit barrier: every thread's Z is complete */
    if (!oom) {
      if (dw) {
#pragma omp for schedule(static)
        for (int64_t c = 0; c < C; c++) transform_dw(dw, zs, team, kt, C, O, Cp, Op, c);
      }
      if (db && me == 0)
        for (int64_t o = 0; o < O; o++) {
          double s = 0.0;
          for (int p = 0; p < team; p++) s += dbs[p][o];
          db[o] += (float)s;
        }
    }
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d dw (Winograd) scratch of %zu floats per thread", need);
  return GC_OK;
}
