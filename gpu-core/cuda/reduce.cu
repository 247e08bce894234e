/*
 * Reductions shared by several ops: per-row sums (add/conv bias gradients, group-norm sums) and
 * column sums in two passes (linear bias gradient, the channels-last add's bias gradient,
 * layer-norm parameter gradients): fixed chunks
 * of rows give partial sums in double, then a second kernel adds the partials in chunk order.
 * No atomics, so results are the same on every run.
 */
#include "common.h"

/* out[r] = sum_s x[r,s]: rows of at most 32 elements go one per thread, longer rows one per block. */
__global__ void k_row_sums_short(double *out, const float *x, int64_t R, int64_t S) {
  GRID_STRIDE(r, R) {
    const float *xr = x + r * S;
    double s = 0.0;
    for (int64_t i = 0; i < S; i++) s += xr[i];
    out[r] = s;
  }
}

__global__ void k_row_sums_block(double *out, const float *x, int64_t R, int64_t S) {
  for (int64_t r = blockIdx.x; r < R; r += gridDim.x) {
    const float *xr = x + r * S;
    double s = 0.0;
    for (int64_t i = threadIdx.x; i < S; i += blockDim.x) s += xr[i];
    s = block_sum(s);
    if (threadIdx.x == 0) out[r] = s;
  }
}

gc_status row_sums(be_ctx *bc, double *out, const float *x, int64_t R, int64_t S) {
  if (R <= 0) return GC_OK;
  if (S <= 32) {
    k_row_sums_short<<<grid_for(bc, R), THREADS, 0, bc->stream>>>(out, x, R, S);
  } else {
    unsigned blocks = (unsigned)(R < 65535 * 16 ? R : 65535 * 16);
    k_row_sums_block<<<blocks, THREADS, 0, bc->stream>>>(out, x, R, S);
  }
  return launch_status("row_sums");
}

/* Block (32, 8): 32 adjacent columns (coalesced), 8 row lanes; blockIdx.y is the row chunk,
 * blockIdx.z (grid-strided) the matrix of a batch of R matrices [N, C]. */
__global__ void k_col_partials(double *partial, const float *x, int64_t R, int64_t N, int64_t C,
                               int64_t rows_per) {
  __shared__ double acc[8][33];
  const int64_t c = (int64_t)blockIdx.x * 32 + threadIdx.x;
  const int64_t chunk = blockIdx.y;
  const int64_t r0 = chunk * rows_per, r1 = r0 + rows_per < N ? r0 + rows_per : N;
  for (int64_t m = blockIdx.z; m < R; m += gridDim.z) { /* uniform per block: syncs are safe */
    const float *xm = x + m * N * C;
    double s = 0.0;
    if (c < C)
      for (int64_t r = r0 + threadIdx.y; r < r1; r += 8) s += xm[r * C + c];
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    if (threadIdx.y == 0 && c < C) {
      double t = 0.0;
      for (int k = 0; k < 8; k++) t += acc[k][threadIdx.x];
      partial[(chunk * R + m) * C + c] = t;
    }
    __syncthreads(); /* acc is rewritten by the next matrix */
  }
}

gc_status col_partials_batched(be_ctx *bc, double *partial, const float *x, int64_t R, int64_t N,
                               int64_t C, int64_t rows_per) {
  const int64_t nchunks = (N + rows_per - 1) / rows_per;
  if (R <= 0 || nchunks <= 0 || C <= 0) return GC_OK;
  if (nchunks > 65535)
    return gc_set_error(GC_ERR_UNSUPPORTED, "column sums over %lld chunks", (long long)nchunks);
  if ((C + 31) / 32 > 0x7fffffff)
    return gc_set_error(GC_ERR_UNSUPPORTED, "column sums over %lld columns", (long long)C);
  dim3 grid((unsigned)((C + 31) / 32), (unsigned)nchunks, (unsigned)(R < 65535 ? R : 65535));
  k_col_partials<<<grid, dim3(32, 8), 0, bc->stream>>>(partial, x, R, N, C, rows_per);
  return launch_status("col_partials");
}

gc_status col_partials(be_ctx *bc, double *partial, const float *x, int64_t N, int64_t C,
                       int64_t rows_per) {
  return col_partials_batched(bc, partial, x, 1, N, C, rows_per);
}

__global__ void k_col_finish(float *out, const double *partial, int64_t nchunks, int64_t C,
                             int accumulate) {
  GRID_STRIDE(c, C) {
    double s = 0.0;
    for (int64_t k = 0; k < nchunks; k++) s += partial[k * C + c];
    out[c] = accumulate ? (float)((double)out[c] + s) : (float)s;
  }
}

gc_status col_finish(be_ctx *bc, float *out, const double *partial, int64_t nchunks, int64_t C,
                     int accumulate) {
  if (C <= 0) return GC_OK;
  k_col_finish<<<grid_for(bc, C), THREADS, 0, bc->stream>>>(out, partial, nchunks, C, accumulate);
  return launch_status("col_finish");
}
