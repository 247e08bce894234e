/*
 * Fully connected layer on the GPU: cuBLAS sgemm (mirrors cpu/linear.c).
 *
 * cuBLAS is column-major: a row-major [R,C] matrix is the column-major [C,R] matrix, i.e. its
 * transpose. So a row-major product Y = A B is computed as the column-major Y^T = B^T A^T, and
 * every call below is written in that form with the row-major shapes in its comment.
 * The bias gradient is a column sum of dy in double (reduce.cu), not a GEMM with ones, so it
 * accumulates like the CPU's.
 */
#include "common.h"

#include <climits>

static gc_status check_blas_sizes(int64_t N, int64_t I, int64_t O) {
  if (N > INT_MAX || I > INT_MAX || O > INT_MAX)
    return gc_set_error(GC_ERR_UNSUPPORTED, "linear sizes exceed the cuBLAS int range");
  return GC_OK;
}

__global__ void k_fill_rows(float *y, const float *b, int64_t N, int64_t O) {
  GRID_STRIDE(i, N * O) y[i] = b[i % O];
}

__global__ void k_add_rows(float *y, const float *b, int64_t N, int64_t O) {
  GRID_STRIDE(i, N * O) y[i] += b[i % O];
}

/* y[N,O] (= or += with accumulate), x[N,I], w[O,I], b[O] optional */
gc_status be_linear_forward(be_ctx *bc, float *y, const float *x, const float *w, const float *b,
                            int64_t N, int64_t I, int64_t O, int accumulate) {
  GC_CHECK(ctx_enter(bc));
  GC_CHECK(check_blas_sizes(N, I, O));
  if (N * O <= 0) return GC_OK;
  const float one = 1.0f, zero = 0.0f;
  if (b) {
    /* bias first, so the GEMM accumulates onto it (beta = 1), as the CPU does */
    if (accumulate)
      k_add_rows<<<grid_for(bc, N * O), THREADS, 0, bc->stream>>>(y, b, N, O);
    else
      k_fill_rows<<<grid_for(bc, N * O), THREADS, 0, bc->stream>>>(y, b, N, O);
    GC_CHECK(launch_status("linear_forward bias"));
  }
  /* y[N,O] (+)= x[N,I] w[O,I]^T: column-major y^T[O,N] = (w_cm[I,O])^T x_cm[I,N] */
  return cublas_status(cublasSgemm(bc->cublas, CUBLAS_OP_T, CUBLAS_OP_N, (int)O, (int)N, (int)I,
                                   &one, w, (int)I, x, (int)I, b || accumulate ? &one : &zero, y,
                                   (int)O),
                       "linear_forward sgemm");
}

/* dx[N,I] (= or += with accumulate), dw[O,I] (+=), db[O] (+=), each optional; dy[N,O], x[N,I],
 * w[O,I] */
gc_status be_linear_backward(be_ctx *bc, float *dx, float *dw, float *db, const float *dy,
                             const float *x, const float *w, int64_t N, int64_t I, int64_t O,
                             int accumulate) {
  GC_CHECK(ctx_enter(bc));
  if (!dx && !dw && !db) return GC_OK;
  GC_CHECK(check_blas_sizes(N, I, O));
  const float one = 1.0f, zero = 0.0f;
  if (dx) /* dx[N,I] (+)= dy[N,O] w[O,I]: column-major dx^T[I,N] = w_cm[I,O] dy_cm[O,N] */
    GC_CHECK(cublas_status(cublasSgemm(bc->cublas, CUBLAS_OP_N, CUBLAS_OP_N, (int)I, (int)N,
                                       (int)O, &one, w, (int)I, dy, (int)O,
                                       accumulate ? &one : &zero, dx, (int)I),
                           "linear_backward dx sgemm"));
  if (dw) /* dw[O,I] += dy^T[O,N] x[N,I]: column-major dw^T[I,O] += x_cm[I,N] (dy_cm[O,N])^T */
    GC_CHECK(cublas_status(cublasSgemm(bc->cublas, CUBLAS_OP_N, CUBLAS_OP_T, (int)I, (int)O,
                                       (int)N, &one, x, (int)I, dy, (int)O, &one, dw, (int)I),
                           "linear_backward dw sgemm"));
  if (db && N > 0) {
    int64_t rows_per = 1024;
    while ((N + rows_per - 1) / rows_per > 65535) rows_per *= 2;
    const int64_t nchunks = (N + rows_per - 1) / rows_per;
    double *p = (double *)scratch_get(bc, (size_t)(nchunks * O) * sizeof(double));
    if (!p) return GC_ERR_OUT_OF_MEMORY;
    GC_CHECK(col_partials(bc, p, dy, N, O, rows_per));
    GC_CHECK(col_finish(bc, db, p, nchunks, O, 1));
  }
  return GC_OK;
}
