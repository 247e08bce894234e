/*
 * 3x3 convolutions with stride 1 and padding 1 on channels-last images, by Winograd's minimal
 * filtering F(4x4, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016;
 * interpolation points 0, 1, -1, 2, -2 and infinity).
 *
 * Every 4x4 block of output pixels (a tile) comes from the 6x6 input patch around it. With
 *   B^T = [4 0 -5 0 1 0; 0 -4 -4 1 1 0; 0 4 -4 -1 1 0; 0 -2 -1 2 1 0; 0 2 -1 -2 1 0; 0 4 0 -5 0 1],
 *   G = [1/4 0 0; -1/6 -1/6 -1/6; -1/6 1/6 -1/6; 1/24 1/12 1/6; 1/24 -1/12 1/6; 0 0 1],
 *   A^T = [1 1 1 1 1 0; 0 1 -1 2 -2 0; 0 1 1 4 4 0; 0 1 -1 8 -8 1],
 * a tile's output for output channel o is  A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A,  so the
 * convolution becomes 36 independent products, one per position xi of the 6x6 transformed tile:
 *   M_xi[tiles, O] = V_xi[tiles, C] U_xi[C, O],   V = B^T d B (input), U = G g G^T (weights),
 * 36 C O multiply-adds per tile of 16 outputs against direct's 144 C O (4x fewer).
 * Accuracy: the transforms' coefficients (up to 8, and G's sixths) cost some rounding: against
 * the float64 reference the op table sees normalised errors of 6e-7 to 1.2e-6 (direct sums and
 * F(2x2, 3x3), whose transforms only add and halve: 1e-7; the op table allows 1e-5), unet_tiny's
 * output 2.1e-6 and worst gradient 1.3e-5 against diffusers (was 7.5e-7 / 2.9e-6; allowed 1e-4
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
 * Its dw would follow from the same identity (dw_oc = G^T [sum_t (A dy_t A^T) .* (B^T d_t B)] G,
 * products of depth = tiles), but measured at the UNet's shapes with F(2x2, 3x3) it beat
 * oneDNN's only at some (min of 40 calls at batch 32: 64->64ch 32x32 6.1 vs 7.2 ms, 96->32ch
 * 32x32 3.9 vs 5.1, 128->64ch 16x16 2.7 vs 3.2, but 32->32ch 32x32 2.2 vs 1.8 and the 8x8 ones
 * even): the transforms of x and dy read both tensors from memory without overlapping the
 * products, where the direct kernel streams them once. ~1.4% of a training step was not worth a
 * second algorithm for dw, so dw and db stay on oneDNN.
 *
 * The transform loops run across channels under `GCC ivdep`, not `omp simd`: GCC turns arrays
 * declared inside an `omp simd` body into per-lane arrays and then gives up on the 6x6 ones
 * (scatter stores), where a plain loop's arrays become registers.
 */
#include "winograd.h"

#include "scratch.h"
#include "small_gemm.h"

#include <omp.h>

/* A tile: 4x4 output pixels from a 6x6 input patch; 36 positions xi = 6i + j per tile. */
enum { TO = 4, TI = 6, NPOS = TI * TI };

/* Floats of V and M per block that should stay in L2 (1 MB of this machine's 2 MB). */
enum { WINO_BLOCK_FLOATS = 1 << 18 };

int wino_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                  int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  return cl && K == 3 && stride == 1 && pad == 1 && Ho == H && Wo == W && C >= WINO_MIN_CHANNELS &&
         O >= WINO_MIN_CHANNELS;
}

/* The three 1-D transforms (one row or column of six or three values). */
static inline void g_1d(float *u, int64_t ld, float g0, float g1, float g2) { /* G g */
  const float e = g0 + g2, s = (1.0f / 6.0f) * g1;
  u[0 * ld] = 0.25f * g0;
  u[1 * ld] = (-1.0f / 6.0f) * e - s;
  u[2 * ld] = (-1.0f / 6.0f) * e + s;
  u[3 * ld] = (1.0f / 24.0f) * g0 + (1.0f / 6.0f) * g2 + 0.5f * s;
  u[4 * ld] = (1.0f / 24.0f) * g0 + (1.0f / 6.0f) * g2 - 0.5f * s;
  u[5 * ld] = g2;
}

static inline void bt_1d(float *v, int64_t ld, float d0, float d1, float d2, float d3, float d4, float d5) {
  const float a = d4 - 4.0f * d2, b = 4.0f * d1 - d3, c = d4 - d2, e = 2.0f * (d1 - d3);
  v[0 * ld] = 4.0f * d0 - 5.0f * d2 + d4;
  v[1 * ld] = a - b;
  v[2 * ld] = a + b;
  v[3 * ld] = c - e;
  v[4 * ld] = c + e;
  v[5 * ld] = 4.0f * d1 - 5.0f * d3 + d5;
}

static inline void at_1d(float *s, int64_t ld, float m0, float m1, float m2, float m3, float m4, float m5) {
  const float a = m1 + m2, b = m1 - m2, c = m3 + m4, d = m3 - m4;
  s[0 * ld] = m0 + a + c;
  s[1 * ld] = b + 2.0f * d;
  s[2 * ld] = a + 4.0f * c;
  s[3 * ld] = b + 8.0f * d + m5;
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
    for (int kx = 0; kx < 3; kx++) g_1d(t[kx], 1, g[kx * Op + o], g[(3 + kx) * Op + o], g[(6 + kx) * Op + o]);
    const int64_t ld = Ci * Op; /* from one position xi to the next */
    for (int i = 0; i < TI; i++) g_1d(U + (TI * i * Ci + c) * Op + o, ld, t[0][i], t[1][i], t[2][i]);
  }
}

/* V rows of a block: the transformed 6x6 patch of tile (image b, tile row ty, column tx) for
 * every input channel. v + xi * ldv is position xi's row. Tiles that reach past the image (the
 * padding) are first copied, zeros outside, into `patch` [36,Ci]; the transform then reads one
 * base pointer at constant strides (an array of 36 pointers kept GCC from vectorising it). */
static void transform_input(float *v, int64_t ldv, const float *x, float *patch, int64_t b,
                            int64_t ty, int64_t tx, int64_t H, int64_t W, int64_t Ci) {
  const int64_t y0 = TO * ty - 1, x0 = TO * tx - 1;
  const float *d = x + ((b * H + y0) * W + x0) * Ci; /* pixel (y0, x0), maybe outside */
  int64_t rs = W * Ci;                                 /* from one patch row to the next */
  if (!(y0 >= 0 && y0 + TI <= H && x0 >= 0 && x0 + TI <= W)) {
    for (int i = 0; i < TI; i++)
      for (int j = 0; j < TI; j++) {
        const int inside = y0 + i >= 0 && y0 + i < H && x0 + j >= 0 && x0 + j < W;
        float *dst = patch + (i * TI + j) * Ci;
        const float *src = d + (i * W + j) * Ci;
        for (int64_t c = 0; c < Ci; c++) dst[c] = inside ? src[c] : 0.0f;
      }
    d = patch;
    rs = TI * Ci;
  }
#pragma GCC ivdep
  for (int64_t c = 0; c < Ci; c++) {
    /* t[j] = B^T d[:, j] (down patch column j), then row i of (B^T d) B from t[.][i] */
    float t[TI][TI];
    for (int j = 0; j < TI; j++) {
      const float *dj = d + j * Ci + c;
      bt_1d(t[j], 1, dj[0], dj[rs], dj[2 * rs], dj[3 * rs], dj[4 * rs], dj[5 * rs]);
    }
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
    for (int j = 0; j < TI; j++) {
      const float *mj = m + j * ldm + o;
      at_1d(s[j], 1, mj[0], mj[TI * ldm], mj[2 * TI * ldm], mj[3 * TI * ldm], mj[4 * TI * ldm], mj[5 * TI * ldm]);
    }
    const float bo = bias ? bias[o] : 0.0f;
    for (int i = 0; i < TO; i++) {
      float r[TO];
      at_1d(r, 1, s[0][i], s[1][i], s[2][i], s[3][i], s[4][i], s[5][i]);
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
    for (int64_t o = 0; o < Op; o += NR)
      gemm_panel_rows(rows, Ci, 1.0f, V + xi * ldv, Ci, 1, U + xi * Ci * Op + o, Op, M + xi * ldm + o, Op);
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
