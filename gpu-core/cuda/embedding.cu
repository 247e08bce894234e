/*
 * CUDA backend: token + position embedding, sinusoidal timestep embedding and the MSE loss
 * (mirrors cpu/embedding.c).
 */
#include "common.h"

/* ---- token + position embedding ---- */

// y is (B, L, D); ids (B, L) in [0, V); tok (V, D); pos (P, D), P >= L, optional
__global__ void k_embedding(float *y, const int32_t *ids, const float *tok, const float *pos,
                            int64_t L, int64_t D, int64_t n) {
  GRID_STRIDE(i, n) {
    const int64_t bl = i / D, d = i % D;
    const float t = tok[(int64_t)ids[bl] * D + d];
    y[i] = pos ? t + pos[(bl % L) * D + d] : t;
  }
}

gc_status be_embedding_forward(be_ctx *bc, float *y, const int32_t *ids, const float *tok,
                               const float *pos, int64_t B, int64_t L, int64_t D, int64_t V) {
  GC_CHECK(ctx_enter(bc));
  (void)V;
  const int64_t n = B * L * D;
  if (n <= 0) return GC_OK;
  k_embedding<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(y, ids, tok, pos, L, D, n);
  return launch_status("embedding_forward");
}

/* dtok += scatter of dy by id: a repeated id adds into one row from many positions, so each
 * thread owns one column d and walks the positions in order (the CPU's order: same sums, no
 * atomics). Parallel over D only, which is enough for a text encoder's few thousand tokens. */
__global__ void k_embedding_backward_tok(float *dtok, const float *dy, const int32_t *ids,
                                         int64_t BL, int64_t D) {
  GRID_STRIDE(d, D) {
    for (int64_t bl = 0; bl < BL; bl++) dtok[(int64_t)ids[bl] * D + d] += dy[bl * D + d];
  }
}

// dpos rows < L += sum over the batch, in double
__global__ void k_embedding_backward_pos(float *dpos, const float *dy, int64_t B, int64_t L,
                                         int64_t D) {
  GRID_STRIDE(i, L * D) {
    const int64_t l = i / D, d = i % D;
    double s = dpos[i];
    for (int64_t b = 0; b < B; b++) s += dy[(b * L + l) * D + d];
    dpos[i] = (float)s;
  }
}

gc_status be_embedding_backward(be_ctx *bc, float *dtok, float *dpos, const float *dy,
                                const int32_t *ids, int64_t B, int64_t L, int64_t D, int64_t V) {
  GC_CHECK(ctx_enter(bc));
  (void)V;
  if (B * L * D <= 0) return GC_OK;
  if (dtok) {
    k_embedding_backward_tok<<<grid_for(bc, D, 64), 64, 0, bc->stream>>>(dtok, dy, ids, B * L, D);
    GC_CHECK(launch_status("embedding_backward tok"));
  }
  if (dpos) {
    k_embedding_backward_pos<<<grid_for(bc, L * D), THREADS, 0, bc->stream>>>(dpos, dy, B, L, D);
    GC_CHECK(launch_status("embedding_backward pos"));
  }
  return GC_OK;
}

/* First index whose id lies outside [0, V): atomicMin over the candidates (the minimum does not
 * depend on the order). */
__global__ void k_check_ids(unsigned long long *first_bad, const int32_t *ids, int64_t n,
                            int64_t V) {
  GRID_STRIDE(i, n) {
    if (ids[i] < 0 || (int64_t)ids[i] >= V) atomicMin(first_bad, (unsigned long long)i);
  }
}

gc_status be_check_ids(be_ctx *bc, const int32_t *ids, int64_t n, int64_t V, int64_t *bad_index,
                       int32_t *bad_value) {
  GC_CHECK(ctx_enter(bc));
  unsigned long long first = ~0ull;
  if (n > 0) {
    unsigned long long *d = (unsigned long long *)scratch_get(bc, sizeof first);
    if (!d) return GC_ERR_OUT_OF_MEMORY;
    CU_CHECK(cudaMemcpyAsync(d, &first, sizeof first, cudaMemcpyHostToDevice, bc->stream),
             "check_ids");
    k_check_ids<<<grid_for(bc, n), THREADS, 0, bc->stream>>>(d, ids, n, V);
    GC_CHECK(launch_status("check_ids"));
    CU_CHECK(cudaMemcpyAsync(&first, d, sizeof first, cudaMemcpyDeviceToHost, bc->stream),
             "check_ids");
    CU_CHECK(cudaStreamSynchronize(bc->stream), "check_ids");
  }
  int64_t bad = first == ~0ull ? -1 : (int64_t)first;
  int32_t value = 0;
  if (bad >= 0) {
    CU_CHECK(cudaMemcpyAsync(&value, ids + bad, sizeof value, cudaMemcpyDeviceToHost, bc->stream),
             "check_ids");
    CU_CHECK(cudaStreamSynchronize(bc->stream), "check_ids");
  }
  if (bad_index) *bad_index = bad;
  if (bad_value) *bad_value = value;
  return GC_OK;
}

/* ---- sinusoidal timestep embedding (the CPU's fp32 rounding points, see cpu/embedding.c) ---- */

static gc_status timestep_check(int64_t half, float freq_shift, float max_period) {
  if (!(max_period > 0.0f))
    return gc_set_error(GC_ERR_INVALID_ARGUMENT, "timestep_embedding: max_period %g must be > 0",
                        (double)max_period);
  if (half > 0 && (float)((double)half - (double)freq_shift) == 0.0f)
    return gc_set_error(GC_ERR_INVALID_ARGUMENT,
                        "timestep_embedding: freq_shift %g equals half the width %lld",
                        (double)freq_shift, (long long)half);
  return GC_OK;
}

__device__ __forceinline__ float timestep_freq(int64_t j, int64_t half, float freq_shift,
                                               float max_period) {
  float neg_log = (float)-log((double)max_period);
  float denom = (float)((double)half - (double)freq_shift);
  float exponent = (float)((double)neg_log * (double)(float)j);
  exponent = (float)((double)exponent / (double)denom);
  return (float)exp((double)exponent);
}

// t is (B); y is (B, D) = [sin(t f) | cos(t f)], halves swapped when flip; odd D: last column 0
__global__ void k_timestep(float *y, const float *t, int64_t B, int64_t D, int flip,
                           float freq_shift, float max_period) {
  const int64_t half = D / 2;
  GRID_STRIDE(i, B * D) {
    const int64_t b = i / D, col = i % D;
    if (col >= 2 * half) {
      y[i] = 0.0f;
      continue;
    }
    const int first_half = col < half;
    const int64_t j = first_half ? col : col - half;
    const int is_sin = flip ? !first_half : first_half;
    const float arg = (float)((double)t[b] * timestep_freq(j, half, freq_shift, max_period));
    y[i] = is_sin ? (float)sin((double)arg) : (float)cos((double)arg);
  }
}

// dt (B) written: sum_j f_j (dy_sin_j cos(t f_j) - dy_cos_j sin(t f_j)), one thread per sample
__global__ void k_timestep_backward(float *dt, const float *dy, const float *t, int64_t B,
                                    int64_t D, int flip, float freq_shift, float max_period) {
  const int64_t half = D / 2;
  GRID_STRIDE(b, B) {
    const float *dyr = dy + b * D;
    const float *ds = flip ? dyr + half : dyr;
    const float *dc = flip ? dyr : dyr + half;
    double sum = 0.0;
    for (int64_t j = 0; j < half; j++) {
      double f = timestep_freq(j, half, freq_shift, max_period);
      double arg = (float)((double)t[b] * f);
      sum += f * ((double)ds[j] * cos(arg) - (double)dc[j] * sin(arg));
    }
    dt[b] = (float)sum;
  }
}

gc_status be_timestep_embedding_forward(be_ctx *bc, float *y, const float *t, int64_t B,
                                        int64_t D, int flip_sin_to_cos, float freq_shift,
                                        float max_period) {
  GC_CHECK(ctx_enter(bc));
  GC_CHECK(timestep_check(D / 2, freq_shift, max_period));
  if (B * D <= 0) return GC_OK;
  k_timestep<<<grid_for(bc, B * D), THREADS, 0, bc->stream>>>(y, t, B, D, flip_sin_to_cos,
                                                               freq_shift, max_period);
  return launch_status("timestep_embedding_forward");
}

gc_status be_timestep_embedding_backward(be_ctx *bc, float *dt, const float *dy, const float *t,
                                         int64_t B, int64_t D, int flip_sin_to_cos,
                                         float freq_shift, float max_period) {
  GC_CHECK(ctx_enter(bc));
  GC_CHECK(timestep_check(D / 2, freq_shift, max_period));
  if (B <= 0) return GC_OK;
  k_timestep_backward<<<grid_for(bc, B, 64), 64, 0, bc->stream>>>(dt, dy, t, B, D, flip_sin_to_cos,
                                                                 freq_shift, max_period);
  return launch_status("timestep_embedding_backward");
}

/* ---- weighted mean squared error ---- */

enum { MSE_BLOCKS = 256 };

// partial[blockIdx.x] = sum over the block's grid-stride share of w_b (a - b)^2, in double
__global__ void k_mse_partials(double *partial, const float *a, const float *b, const float *w,
                               int64_t B, int64_t M) {
  double s = 0.0;
  GRID_STRIDE(i, B * M) {
    double d = (double)a[i] - (double)b[i];
    s += (w ? (double)w[i / M] : 1.0) * d * d;
  }
  s = block_sum(s);
  if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

// loss[0] = sum of partials (in order) / count
__global__ void k_mean_of_partials(float *loss, const double *partial, int n, double count) {
  if (threadIdx.x != 0 || blockIdx.x != 0) return;
  double s = 0.0;
  for (int k = 0; k < n; k++) s += partial[k];
  *loss = count > 0 ? (float)(s / count) : 0.0f;
}

// a, b are (B, M); weights (B) optional; loss (1) = (1/B) sum_b w_b mean_i (a - b)^2
gc_status be_mse_forward(be_ctx *bc, float *loss, const float *a, const float *b,
                         const float *weights, int64_t B, int64_t M) {
  GC_CHECK(ctx_enter(bc));
  double *partial = (double *)scratch_get(bc, MSE_BLOCKS * sizeof(double));
  if (!partial) return GC_ERR_OUT_OF_MEMORY;
  k_mse_partials<<<MSE_BLOCKS, THREADS, 0, bc->stream>>>(partial, a, b, weights, B, M);
  GC_CHECK(launch_status("mse_forward"));
  k_mean_of_partials<<<1, 32, 0, bc->stream>>>(loss, partial, MSE_BLOCKS, (double)B * (double)M);
  return launch_status("mse_forward");
}

// da, db (B, M) written, each optional: da = dloss 2 w_b (a - b) / (B M), db = -da
__global__ void k_mse_backward(float *da, float *db, double scale, const float *a, const float *b,
                               const float *w, int64_t B, int64_t M) {
  GRID_STRIDE(i, B * M) {
    double g = scale * (w ? (double)w[i / M] : 1.0) * ((double)a[i] - (double)b[i]);
    if (da) da[i] = (float)g;
    if (db) db[i] = (float)-g;
  }
}

gc_status be_mse_backward(be_ctx *bc, float *da, float *db, float dloss, const float *a,
                          const float *b, const float *weights, int64_t B, int64_t M) {
  GC_CHECK(ctx_enter(bc));
  if ((!da && !db) || B * M <= 0) return GC_OK;
  double scale = 2.0 * (double)dloss / ((double)B * (double)M);
  k_mse_backward<<<grid_for(bc, B * M), THREADS, 0, bc->stream>>>(da, db, scale, a, b, weights, B,
                                                                   M);
  return launch_status("mse_backward");
}
