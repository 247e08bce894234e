/*
 * 3x3 convolutions with stride 1 and padding 1 on channels-last images, by Winograd's minimal
 * filtering F(2x2, 3x3) (Lavin & Gray, "Fast Algorithms for Convolutional Neural Networks", 2016).
 *
 * Every 2x2 block of output pixels (a tile) comes from the 4x4 input patch around it. With
 *   B^T = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1],  G = [1 0 0; .5 .5 .5; .5 -.5 .5; 0 0 1],
 *   A^T = [1 1 1 0; 0 1 -1 -1],
 * a tile's output for output channel o is  A^T [ sum_c (G g_oc G^T) .* (B^T d_c B) ] A,  so the
 * convolution becomes 16 independent products, one per position xi of the 4x4 transformed tile:
 *   M_xi[tiles, O] = V_xi[tiles, C] U_xi[C, O],   V = B^T d B (input), U = G g G^T (weights),
 * 16 C O multiply-adds per tile of 4 outputs against direct's 36 C O (2.25x fewer). The
 * transforms only add and halve (exact in binary but for the additions' rounding), so the result
 * is as accurate as a direct sum (op table: errors at 1e-7 against the float64 reference).
 *
 * Why here and not oneDNN: oneDNN 2.6 has a Winograd kernel only for its channel-blocked layout
 * (nhwc: unimplemented), so from the models' channels-last images it costs two reorders per call.
 * Channels-last suits the transforms: each one is the same adds over a contiguous run of
 * channels, vectorised across channels.
 *
 * Blocking: tiles go in blocks of TB (a multiple of the GEMM kernel's 12 rows) sized so that the
 * block's V [16,TB,C] and M [16,TB,Op] (Op = O rounded up to 16) stay in this core's L2 from the
 * input transform through the 16 products to the output transform; OpenMP threads take whole
 * blocks. U [16,C,Op] is built once per call by the team.
 *
 * The backward pass's dx is the same convolution of dy with the kernel flipped and its channel
 * roles swapped (stride 1, pad 1: w'[c][o][ky][kx] = w[o][c][2-ky][2-kx]), so it runs here too.
 * Its dw would follow from the same identity (dw_oc = G^T [sum_t (A dy_t A^T) .* (B^T d_t B)] G,
 * products of depth = tiles), but measured at the UNet's shapes it beat oneDNN's only at some
 * (min of 40 calls at batch 32: 64->64ch 32x32 6.1 vs 7.2 ms, 96->32ch 32x32 3.9 vs 5.1,
 * 128->64ch 16x16 2.7 vs 3.2, but 32->32ch 32x32 2.2 vs 1.8 and the 8x8 ones even): the
 * transforms of x and dy read both tensors from memory without overlapping the products, where
 * the direct kernel streams them once. ~1.4% of a training step was not worth a second
 * algorithm for dw, so dw and db stay on oneDNN.
 */
#include "winograd.h"

#include "scratch.h"
#include "small_gemm.h"

#include <omp.h>

/* Floats of V and M per block that should stay in L2 (1 MB of this machine's 2 MB). */
enum { WINO_BLOCK_FLOATS = 1 << 18 };

int wino_eligible(int64_t C, int64_t H, int64_t W, int64_t O, int64_t K, int64_t stride,
                  int64_t pad, int64_t Ho, int64_t Wo, int cl) {
  return cl && K == 3 && stride == 1 && pad == 1 && Ho == H && Wo == W && C >= WINO_MIN_CHANNELS &&
         O >= WINO_MIN_CHANNELS;
}

/* Row c of U[xi][c][o] (xi = 4i + j) for the convolution from Ci to Co channels, o < Op (o >= Co:
 * 0): the kernel of output o and input c is w[o][c] (dgrad = 0, w [Co,Ci,3,3]), or w[c][o]
 * flipped (dgrad = 1, w [Ci,Co,3,3]). g [9,Op] is scratch. */
static void transform_weights(float *U, const float *w, float *g, int64_t Ci, int64_t Co,
                              int64_t Op, int dgrad, int64_t c) {
  for (int64_t o = 0; o < Op; o++)
    for (int k = 0; k < 9; k++)
      g[k * Op + o] = o >= Co ? 0.0f : dgrad ? w[(c * Co + o) * 9 + 8 - k] : w[(o * Ci + c) * 9 + k];
  float *u = U + c * Op;
  const int64_t ld = Ci * Op; /* from one position xi to the next */
#pragma omp simd
  for (int64_t o = 0; o < Op; o++) {
    float t[4][3]; /* G g */
    for (int kx = 0; kx < 3; kx++) {
      const float g0 = g[kx * Op + o], g1 = g[(3 + kx) * Op + o], g2 = g[(6 + kx) * Op + o];
      t[0][kx] = g0;
      t[1][kx] = 0.5f * (g0 + g1 + g2);
      t[2][kx] = 0.5f * (g0 - g1 + g2);
      t[3][kx] = g2;
    }
    for (int i = 0; i < 4; i++) { /* (G g) G^T */
      u[(4 * i) * ld + o] = t[i][0];
      u[(4 * i + 1) * ld + o] = 0.5f * (t[i][0] + t[i][1] + t[i][2]);
      u[(4 * i + 2) * ld + o] = 0.5f * (t[i][0] - t[i][1] + t[i][2]);
      u[(4 * i + 3) * ld + o] = t[i][2];
    }
  }
}

/* V rows tl of a block: the transformed 4x4 patch of tile t (image b, tile row ty, column tx) for
 * every input channel. v + xi * ldv is position xi's row; `zero` is Ci zeros (the padding). */
static void transform_input(float *v, int64_t ldv, const float *x, const float *zero, int64_t b,
                            int64_t ty, int64_t tx, int64_t H, int64_t W, int64_t Ci) {
  const float *p[16];
  const int64_t y0 = 2 * ty - 1, x0 = 2 * tx - 1;
  const int64_t corner = ((b * H + y0) * W + x0) * Ci; /* offset of pixel (y0, x0), maybe outside */
  /* inner tiles (most) skip the 16 bounds checks, which GCC vectorised with masks at a cost
   * close to the transform's own at 32 channels */
  if (y0 >= 0 && y0 + 3 < H && x0 >= 0 && x0 + 3 < W) {
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 4; j++) p[i * 4 + j] = x + corner + (i * W + j) * Ci;
  } else {
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 4; j++) {
        const int inside = y0 + i >= 0 && y0 + i < H && x0 + j >= 0 && x0 + j < W;
        p[i * 4 + j] = inside ? x + corner + (i * W + j) * Ci : zero;
      }
  }
#pragma omp simd
  for (int64_t c = 0; c < Ci; c++) {
    float t[4][4]; /* B^T d: rows */
    for (int j = 0; j < 4; j++) {
      const float d0 = p[j][c], d1 = p[4 + j][c], d2 = p[8 + j][c], d3 = p[12 + j][c];
      t[0][j] = d0 - d2;
      t[1][j] = d1 + d2;
      t[2][j] = d2 - d1;
      t[3][j] = d1 - d3;
    }
    for (int i = 0; i < 4; i++) { /* (B^T d) B: columns */
      v[(i * 4 + 0) * ldv + c] = t[i][0] - t[i][2];
      v[(i * 4 + 1) * ldv + c] = t[i][1] + t[i][2];
      v[(i * 4 + 2) * ldv + c] = t[i][2] - t[i][1];
      v[(i * 4 + 3) * ldv + c] = t[i][1] - t[i][3];
    }
  }
}

/* The 2x2 output pixels of tile t from its M row (m + xi * ldm), plus the bias; pixels past the
 * image's edge (odd H or W) go to `junk`. */
static void transform_output(float *y, const float *m, int64_t ldm, const float *bias, float *junk,
                             int64_t b, int64_t ty, int64_t tx, int64_t H, int64_t W, int64_t Co) {
  float *q[4];
  for (int r = 0; r < 2; r++)
    for (int s = 0; s < 2; s++) {
      const int64_t oy = 2 * ty + r, ox = 2 * tx + s;
      q[r * 2 + s] = oy < H && ox < W ? y + ((b * H + oy) * W + ox) * Co : junk;
    }
  float *q0 = q[0], *q1 = q[1], *q2 = q[2], *q3 = q[3];
#pragma omp simd
  for (int64_t o = 0; o < Co; o++) {
    float s[2][4]; /* A^T M: rows */
    for (int j = 0; j < 4; j++) {
      const float m0 = m[j * ldm + o], m1 = m[(4 + j) * ldm + o], m2 = m[(8 + j) * ldm + o],
                  m3 = m[(12 + j) * ldm + o];
      s[0][j] = m0 + m1 + m2;
      s[1][j] = m1 - m2 - m3;
    }
    const float bo = bias ? bias[o] : 0.0f;
    q0[o] = s[0][0] + s[0][1] + s[0][2] + bo;
    q1[o] = s[0][1] - s[0][2] - s[0][3] + bo;
    q2[o] = s[1][0] + s[1][1] + s[1][2] + bo;
    q3[o] = s[1][1] - s[1][2] - s[1][3] + bo;
  }
}

/* M_xi[rows,Op] = V_xi[rows,Ci] U_xi[Ci,Op] for the 16 positions (V_xi = V + xi * ldv, rows at
 * stride Ci; M_xi = M + xi * ldm). */
static void products(int64_t rows, int64_t Ci, int64_t Op, const float *V, int64_t ldv,
                     const float *U, float *M, int64_t ldm) {
  for (int xi = 0; xi < 16; xi++)
    for (int64_t o = 0; o < Op; o += NR)
      gemm_panel_rows(rows, Ci, 1.0f, V + xi * ldv, Ci, 1, U + xi * Ci * Op + o, Op, M + xi * ldm + o, Op);
}

gc_status wino_conv3x3(float *y, const float *x, const float *w, const float *bias, int64_t B,
                       int64_t Ci, int64_t Co, int64_t H, int64_t W, int dgrad) {
  const int64_t Op = (Co + NR - 1) / NR * NR;
  const int64_t th = (H + 1) / 2, tw = (W + 1) / 2, T = B * th * tw;
  if (T == 0) return GC_OK;
  /* TB: V and M of a block within WINO_BLOCK_FLOATS, at least one kernel block of MR rows, and
   * small enough that every thread gets a few blocks */
  const int nt = omp_get_max_threads();
  int64_t TB = WINO_BLOCK_FLOATS / (16 * (Ci + Op)) / MR * MR;
  const int64_t fair = (T + 4 * nt - 1) / (4 * nt);
  if (TB > (fair + MR - 1) / MR * MR) TB = (fair + MR - 1) / MR * MR;
  if (TB < MR) TB = MR;
  const int64_t nblocks = (T + TB - 1) / TB;

  float *U = cpu_scratch_team((size_t)(16 * Ci * Op) * sizeof(float));
  if (!U) return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d (Winograd): no memory for the weights");
  /* per thread: V [16,TB,Ci], M [16,TB,Op], Ci zeros, Op junk floats */
  const size_t need = (size_t)(16 * TB * (Ci + Op) + Ci + Op);
  int oom = 0;

#pragma omp parallel
  {
    float *V = cpu_scratch(need * sizeof(float));
    if (!V) {
#pragma omp atomic write
      oom = 1;
    }
    float *M = V ? V + 16 * TB * Ci : NULL, *zero = M ? M + 16 * TB * Op : NULL, *junk = zero ? zero + Ci : NULL;
#pragma omp for schedule(static)
    for (int64_t c = 0; c < Ci; c++)
      if (V) transform_weights(U, w, M, Ci, Co, Op, dgrad, c); /* M as scratch until the barrier */
    if (zero)
      for (int64_t c = 0; c < Ci; c++) zero[c] = 0.0f;

#pragma omp for schedule(dynamic)
    for (int64_t blk = 0; blk < nblocks; blk++) {
      if (!V) continue;
      const int64_t t0 = blk * TB, n = T - t0 < TB ? T - t0 : TB, rows = (n + MR - 1) / MR * MR;
      for (int64_t tl = 0; tl < rows; tl++) {
        if (tl < n) {
          const int64_t t = t0 + tl, img = t / (th * tw), r = t % (th * tw);
          transform_input(V + tl * Ci, TB * Ci, x, zero, img, r / tw, r % tw, H, W, Ci);
        } else { /* rows past the last tile: zeros, so the kernel runs on whole blocks */
          for (int xi = 0; xi < 16; xi++)
            for (int64_t c = 0; c < Ci; c++) V[(xi * TB + tl) * Ci + c] = 0.0f;
        }
      }
      products(rows, Ci, Op, V, TB * Ci, U, M, TB * Op);
      for (int64_t tl = 0; tl < n; tl++) {
        const int64_t t = t0 + tl, img = t / (th * tw), r = t % (th * tw);
        transform_output(y, M + tl * Op, TB * Op, bias, junk, img, r / tw, r % tw, H, W, Co);
      }
    }
  }
  if (oom)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "conv2d (Winograd) scratch of %zu floats per thread", need);
  return GC_OK;
}
