/*
 * CUDA backend: elementwise ops, data movement and activations (mirrors cpu/elementwise.c).
 * Grid-stride loops, one thread per output element; transcendentals in double as on the CPU.
 */
#include "common.h"
#include "activation.h"

/* ---- fill, copy, axpby ---- */

__global__ void k_fill(float *y, int64_t n, float value) {
  GRID_STRIDE(i, n) y[i] = value;
}

// y is (n)
gc_status be_fill(be_ctx *bc, float *y, int64_t n, float value) {
  GC_CHECK(ctx_enter(bc));
  if (n <= 0) return GC_OK;
  k_fill<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, n, value);
  return launch_status("fill");
}

// y, x are (n). Views of one storage may overlap, which cudaMemcpy does not allow: then the copy
// goes through scratch.
gc_status be_copy(be_ctx *bc, float *y, const float *x, int64_t n) {
  GC_CHECK(ctx_enter(bc));
  if (y == x || n <= 0) return GC_OK;
  const size_t bytes = (size_t)n * sizeof(float);
  uintptr_t yb = (uintptr_t)y, xb = (uintptr_t)x;
  if (yb < xb + bytes && xb < yb + bytes) {
    void *tmp = scratch_get(bc, bytes);
    if (!tmp) return GC_ERR_OUT_OF_MEMORY;
    CU_CHECK(cudaMemcpyAsync(tmp, x, bytes, cudaMemcpyDeviceToDevice, bc->stream), "copy");
    x = (const float *)tmp;
  }
  return cuda_status(cudaMemcpyAsync(y, x, bytes, cudaMemcpyDeviceToDevice, bc->stream), "copy");
}

__global__ void k_axpby(float *y, double a, const float *x, double b, int64_t n, int read_y) {
  GRID_STRIDE(i, n) y[i] = read_y ? (float)(a * x[i] + b * y[i]) : (float)(a * x[i]);
}

// y, x are (n); beta == 0 does not read y (it may hold NaN)
gc_status be_axpby(be_ctx *bc, float *y, float alpha, const float *x, float beta, int64_t n) {
  GC_CHECK(ctx_enter(bc));
  if (n <= 0) return GC_OK;
  k_axpby<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, alpha, x, beta, n, beta != 0.0f);
  return launch_status("axpby");
}

/* ---- broadcast add ---- */

// y[i] = a[i] + b[r, c] for i = (r*S + s)*C + c (S == 1: same shapes, C == 1: b[r] over rows)
__global__ void k_add(float *y, const float *a, const float *b, int64_t n, int64_t S, int64_t C) {
  if (C == 1) {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i / S];
  } else {
    GRID_STRIDE(i, n) y[i] = a[i] + b[i / (S * C) * C + i % C];
  }
}

// y, a are (R, S, C); b is (R, C)
gc_status be_add_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t R,
                         int64_t S, int64_t C) {
  GC_CHECK(ctx_enter(bc));
  const int64_t n = R * S * C;
  if (n <= 0) return GC_OK;
  k_add<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, a, b, n, S, C);
  return launch_status("add_forward");
}

__global__ void k_double_to_float(float *y, const double *x, int64_t n) {
  GRID_STRIDE(i, n) y[i] = (float)x[i];
}

enum { ADD_ROWS_PER_CHUNK = 256 };

// da (R, S, C) = dy; db (R, C) = sum over S; both written, both optional. Sums in double: per
// row for C == 1, else column sums of each r's [S, C] in fixed chunks of rows.
gc_status be_add_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t R, int64_t S,
                          int64_t C) {
  GC_CHECK(ctx_enter(bc));
  if (da) GC_CHECK(be_copy(bc, da, dy, R * S * C));
  if (!db || R * C <= 0) return GC_OK;
  if (S == 1) return be_copy(bc, db, dy, R * C); /* a sum of one term: exact */
  if (C == 1) {
    double *sums = (double *)scratch_get(bc, (size_t)R * sizeof(double));
    if (!sums) return GC_ERR_OUT_OF_MEMORY;
    GC_CHECK(row_sums(bc, sums, dy, R, S));
    k_double_to_float<<<grid_for(bc, R), THREADS, 0, bc->stream>>>(db, sums, R);
    return launch_status("add_backward");
  }
  int64_t rows_per = ADD_ROWS_PER_CHUNK;
  while ((S + rows_per - 1) / rows_per > 65535) rows_per *= 2;
  const int64_t nchunks = (S + rows_per - 1) / rows_per; /* 0 when S == 0: db = 0 */
  const int64_t np = (nchunks > 0 ? nchunks : 1) * R * C;
  double *p = (double *)scratch_get(bc, (size_t)np * sizeof(double));
  if (!p) return GC_ERR_OUT_OF_MEMORY;
  GC_CHECK(col_partials_batched(bc, p, dy, R, S, C, rows_per)); // [nchunks][R,C]
  return col_finish(bc, db, p, nchunks, R * C, 0);
}

/* ---- transpose of the last two dims ---- */

enum { TILE = 32, TILE_ROWS = 8 };

/* x (B, M, N) -> y (B, N, M) through a 32x33 shared tile: both sides coalesced, no bank conflicts. */
__global__ void k_transpose(float *y, const float *x, int64_t B, int64_t M, int64_t N) {
  __shared__ float tile[TILE][TILE + 1];
  for (int64_t b = blockIdx.z; b < B; b += gridDim.z) {
    for (int64_t m0 = (int64_t)blockIdx.y * TILE; m0 < M; m0 += (int64_t)gridDim.y * TILE) {
      const int64_t n0 = (int64_t)blockIdx.x * TILE;
      const float *xb = x + b * M * N;
      float *yb = y + b * M * N;
      for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
        int64_t m = m0 + r, n = n0 + threadIdx.x;
        if (m < M && n < N) tile[r][threadIdx.x] = xb[m * N + n];
      }
      __syncthreads();
      for (int r = threadIdx.y; r < TILE; r += TILE_ROWS) {
        int64_t n = n0 + r, m = m0 + threadIdx.x;
        if (m < M && n < N) yb[n * M + m] = tile[threadIdx.x][r];
      }
      __syncthreads();
    }
  }
}

gc_status be_transpose(be_ctx *bc, float *y, const float *x, int64_t B, int64_t M, int64_t N) {
  GC_CHECK(ctx_enter(bc));
  if (B * M * N <= 0) return GC_OK;
  int64_t gx = (N + TILE - 1) / TILE, gy = (M + TILE - 1) / TILE;
  if (gx > 0x7fffffff)
    return gc_set_error(GC_ERR_UNSUPPORTED, "transpose: %lld columns", (long long)N);
  dim3 grid((unsigned)gx, (unsigned)(gy < 65535 ? gy : 65535), (unsigned)(B < 65535 ? B : 65535));
  k_transpose<<<grid, dim3(TILE, TILE_ROWS), 0, bc->stream>>>(y, x, B, M, N);
  return launch_status("transpose");
}

/* ---- channel concat ---- */

/* forward: y (B, Ca+Cb, S) from a, b; backward (dir = 1): da, db from dy, each optional. */
__global__ void k_concat(float *y, float *a, float *b, int64_t B, int64_t Ca, int64_t Cb,
                         int64_t S, int backward) {
  const int64_t C = Ca + Cb;
  GRID_STRIDE(i, B * C * S) {
    const int64_t row = i / S, s = i % S, bi = row / C, c = row % C;
    float *src = c < Ca ? (a ? a + (bi * Ca + c) * S + s : NULL)
                        : (b ? b + (bi * Cb + (c - Ca)) * S + s : NULL);
    if (!src) continue;
    if (backward) *src = y[i];
    else y[i] = *src;
  }
}

// a is (B, Ca, S), b is (B, Cb, S), y is (B, Ca+Cb, S)
gc_status be_concat_forward(be_ctx *bc, float *y, const float *a, const float *b, int64_t B,
                            int64_t Ca, int64_t Cb, int64_t S) {
  GC_CHECK(ctx_enter(bc));
  const int64_t n = B * (Ca + Cb) * S;
  if (n <= 0) return GC_OK;
  k_concat<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, (float *)a, (float *)b, B, Ca, Cb, S,
                                                         0);
  return launch_status("concat_forward");
}

gc_status be_concat_backward(be_ctx *bc, float *da, float *db, const float *dy, int64_t B,
                             int64_t Ca, int64_t Cb, int64_t S) {
  GC_CHECK(ctx_enter(bc));
  const int64_t n = B * (Ca + Cb) * S;
  if (n <= 0) return GC_OK;
  k_concat<<<grid_for(bc, n), THREADS, 0, bc->stream>>>((float *)dy, da, db, B, Ca, Cb, S, 1);
  return launch_status("concat_backward");
}

/* ---- nearest-neighbour 2x upsample ---- */

// x is (P, H, W, C), y is (P, 2H, 2W, C): one thread per output element
__global__ void k_upsample2x(float *y, const float *x, int64_t P, int64_t H, int64_t W, int64_t C) {
  const int64_t W2 = 2 * W, H2 = 2 * H;
  GRID_STRIDE(i, P * H2 * W2 * C) {
    const int64_t c = i % C, pix = i / C; /* pix = (p*2H + oh)*2W + ow */
    const int64_t ow = pix % W2, oh = (pix / W2) % H2, p = pix / (W2 * H2);
    y[i] = x[((p * H + oh / 2) * W + ow / 2) * C + c];
  }
}

// dx (P, H, W, C) collects its 2x2 block of dy, summed in double in the CPU's order
__global__ void k_upsample2x_backward(float *dx, const float *dy, int64_t P, int64_t H, int64_t W,
                                      int64_t C) {
  const int64_t row = W * C; /* floats in one input row */
  GRID_STRIDE(i, P * H * row) {
    const int64_t c = i % C, w = (i / C) % W, ph = i / row; /* ph = p*H + h */
    const float *d0 = dy + ph * 4 * row, *d1 = d0 + 2 * row;
    const int64_t j = 2 * w * C + c, k = j + C;
    double s = (double)d0[j] + d0[k] + d1[j] + d1[k];
    dx[i] = (float)s;
  }
}

gc_status be_upsample2x_forward(be_ctx *bc, float *y, const float *x, int64_t P, int64_t H,
                                int64_t W, int64_t C) {
  GC_CHECK(ctx_enter(bc));
  const int64_t n = P * H * W * C * 4;
  if (n <= 0) return GC_OK;
  k_upsample2x<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, x, P, H, W, C);
  return launch_status("upsample2x_forward");
}

gc_status be_upsample2x_backward(be_ctx *bc, float *dx, const float *dy, int64_t P, int64_t H,
                                 int64_t W, int64_t C) {
  GC_CHECK(ctx_enter(bc));
  const int64_t n = P * H * W * C;
  if (n <= 0) return GC_OK;
  k_upsample2x_backward<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(dx, dy, P, H, W, C);
  return launch_status("upsample2x_backward");
}

/* ---- activations (act_value, act_grad: activation.h) ---- */

static gc_status check_activation(gc_activation kind) {
  if (kind == GC_ACT_SILU || kind == GC_ACT_GELU || kind == GC_ACT_GELU_TANH ||
      kind == GC_ACT_QUICK_GELU)
    return GC_OK;
  return gc_set_error(GC_ERR_INVALID_ARGUMENT, "activation: unknown kind %d", (int)kind);
}

__global__ void k_activation(int kind, float *y, const float *x, int64_t n) {
  GRID_STRIDE(i, n) y[i] = (float)act_value(kind, x[i]);
}

__global__ void k_activation_backward(int kind, float *dx, const float *dy, const float *x,
                                      int64_t n) {
  GRID_STRIDE(i, n) dx[i] = (float)((double)dy[i] * act_grad(kind, x[i]));
}

// y, x are (n); y may alias x
gc_status be_activation_forward(be_ctx *bc, gc_activation kind, float *y, const float *x,
                                int64_t n) {
  GC_CHECK(ctx_enter(bc));
  GC_CHECK(check_activation(kind));
  if (n <= 0) return GC_OK;
  k_activation<<<grid_for(bc, n), THREADS, 0, bc->stream>>>((int)kind, y, x, n);
  return launch_status("activation_forward");
}

// dx, dy, x are (n); dx may alias dy
gc_status be_activation_backward(be_ctx *bc, gc_activation kind, float *dx, const float *dy,
                                 const float *x, int64_t n) {
  GC_CHECK(ctx_enter(bc));
  GC_CHECK(check_activation(kind));
  if (n <= 0) return GC_OK;
  k_activation_backward<<<grid_for(bc, n), THREADS, 0, bc->stream>>>((int)kind, dx, dy, x, n);
  return launch_status("activation_backward");
}

/* ---- GEGLU: x = [h | g] along the last dim, y = h * gelu(g) ---- */

// x is (N, 2D), y is (N, D)
__global__ void k_geglu(float *y, const float *x, int64_t N, int64_t D) {
  GRID_STRIDE(i, N * D) {
    const int64_t r = i / D, j = i % D;
    const float *h = x + r * 2 * D;
    y[i] = (float)((double)h[j] * gelu_erf(h[D + j]));
  }
}

// dy is (N, D), x and dx are (N, 2D)
__global__ void k_geglu_backward(float *dx, const float *dy, const float *x, int64_t N, int64_t D) {
  GRID_STRIDE(i, N * D) {
    const int64_t r = i / D, j = i % D;
    const float *h = x + r * 2 * D;
    double hi = h[j], gi = h[D + j], d = dy[i];
    dx[r * 2 * D + j] = (float)(d * gelu_erf(gi));
    dx[r * 2 * D + D + j] = (float)(d * hi * gelu_erf_grad(gi));
  }
}

gc_status be_geglu_forward(be_ctx *bc, float *y, const float *x, int64_t N, int64_t D) {
  GC_CHECK(ctx_enter(bc));
  if (N * D <= 0) return GC_OK;
  k_geglu<<<grid_for(bc, N * D), THREADS, 0, bc->stream>>>(y, x, N, D);
  return launch_status("geglu_forward");
}

/* The fused feed-forward (mirrors cpu/elementwise.c): the same three steps as the unfused ops,
 * through the [N,2F] and [N,F] intermediates, the given h and g or the context scratch (a GPU
 * has the bandwidth the CPU's row blocks save). */
gc_status be_geglu_feedforward_forward(be_ctx *bc, float *y, const float *x, const float *w1,
                                       const float *b1, const float *w2, const float *b2, float *h,
                                       float *g, int64_t N, int64_t I, int64_t F, int64_t O) {
  GC_CHECK(ctx_enter(bc));
  if (N <= 0) return GC_OK;
  const size_t need = (size_t)((h ? 0 : 2 * N * F) + (g ? 0 : N * F)) * sizeof(float);
  float *scratch = need ? (float *)scratch_get(bc, need) : NULL;
  if (need && !scratch)
    return gc_set_error(GC_ERR_OUT_OF_MEMORY, "geglu feed-forward: no scratch of %zu bytes", need);
  float *hb = h ? h : scratch;
  float *gb = g ? g : scratch + (h ? 0 : 2 * N * F);
  GC_CHECK(be_linear_forward(bc, hb, x, w1, b1, N, I, 2 * F, 0));
  GC_CHECK(be_geglu_forward(bc, gb, hb, N, F));
  return be_linear_forward(bc, y, gb, w2, b2, N, F, O, 0);
}

gc_status be_geglu_backward(be_ctx *bc, float *dx, const float *dy, const float *x, int64_t N,
                            int64_t D) {
  GC_CHECK(ctx_enter(bc));
  if (N * D <= 0) return GC_OK;
  k_geglu_backward<<<grid_for(bc, N * D), THREADS, 0, bc->stream>>>(dx, dy, x, N, D);
  return launch_status("geglu_backward");
}
